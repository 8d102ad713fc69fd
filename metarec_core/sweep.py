"""A sweep's specification: base settings, search space, metric, budget and early stopping, strictly validated.

A sweep trains many ordinary runs that differ in a few settings. Its search
space names dotted :class:`~metarec_core.train_config.TrainConfig` keys (the
keys ``--set`` takes) with either a list of grid values or a random
distribution: ``uniform(a, b)``, ``loguniform(a, b)`` (whole numbers for
whole-number settings) or ``choice(x, y, ...)``. Every grid point runs
``samples`` times (each time with fresh random draws), so a sweep has
``grid points × samples`` trials. This module knows nothing of the engine
that runs the trials (:mod:`metarec_core.sweep_driver` hands them to Ray
Tune); every check happens here, before anything is queued, and names the key
and what is allowed.
"""
from __future__ import annotations

import difflib
import itertools
import json
import math
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from metarec_core.configs import positive_int_env, config_from_dict, config_to_dict, flatten_settings, unflatten_settings
from metarec_core.errors import ConfigError

#: Metrics a sweep can optimise, with their direction.
METRICS = {"valid_mae": "min", "valid_ndcg@3": "max", "valid_auc": "max"}
#: Early stopping of poor trials: none, or ASHA on the per-epoch validation metric.
EARLY_STOPPING = ("none", "asha")
#: Random distributions of a search space.
DISTRIBUTIONS = ("uniform", "loguniform", "choice")
#: Trials a sweep may have unless ``METAREC_SWEEP_MAX_TRIALS`` or ``max_trials`` says otherwise.
DEFAULT_MAX_TRIALS = 64

_RANDOM = re.compile(r"^\s*(?P<kind>[a-z_]+)\s*\((?P<args>.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Distribution:
    """A random distribution of one setting.

    Attributes
    ----------
    kind
        ``uniform``, ``loguniform`` or ``choice``.
    args
        ``(a, b)`` with ``a < b`` (``a > 0`` for ``loguniform``), or the choices.
    integer
        Draw whole numbers (the setting is a whole number): ``a`` and ``b`` are included.
    """

    kind: str
    args: tuple
    integer: bool = False

    def describe(self) -> str:
        """The distribution as written on the command line, e.g. ``loguniform(0.01, 1)``."""
        return f"{self.kind}({', '.join(_text(a) for a in self.args)})"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"kind": self.kind, "args": list(self.args), "integer": self.integer}


@dataclass(frozen=True)
class SweepSpec:
    """Everything a sweep needs but the data: built by :func:`build_spec`, which checks it all.

    Attributes
    ----------
    base
        The full training config every trial starts from (nested, JSON-ready).
    grid
        ``(key, values)`` pairs: every combination is tried.
    random
        ``(key, distribution)`` pairs: drawn afresh for every trial.
    metric
        One of :data:`METRICS`; its direction is :attr:`mode`.
    samples
        Times each grid point is run (with new random draws each time).
    max_concurrent
        Trials at once (0: as many as the cluster's CPUs allow).
    early_stopping
        ``none`` or ``asha`` (stop poor trials on the per-epoch validation metric).
    seed
        Seed of the random draws.
    ray_address
        Ray cluster to run on (empty: a local Ray started for the sweep).
    """

    base: Mapping[str, Any]
    grid: tuple[tuple[str, tuple], ...] = ()
    random: tuple[tuple[str, Distribution], ...] = ()
    metric: str = "valid_mae"
    samples: int = 1
    max_concurrent: int = 0
    early_stopping: str = "none"
    seed: int = 0
    ray_address: str = ""
    max_trials: int = field(default=DEFAULT_MAX_TRIALS, compare=False)

    @property
    def mode(self) -> str:
        """``min`` or ``max``: the direction of :attr:`metric`."""
        return METRICS[self.metric]

    @property
    def keys(self) -> tuple[str, ...]:
        """The swept settings, grid first."""
        return tuple(k for k, _ in self.grid) + tuple(k for k, _ in self.random)

    @property
    def n_trials(self) -> int:
        """Grid points × samples."""
        return math.prod(len(v) for _, v in self.grid) * self.samples

    def grid_points(self) -> list[dict[str, Any]]:
        """Every combination of the grid values (one empty point without a grid)."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]

    def trial_config(self, settings: Mapping[str, Any]) -> Any:
        """The :class:`~metarec_core.train_config.TrainConfig` of a trial: the base with its swept settings."""
        from metarec_core.train_config import TrainConfig

        values = {**flatten_settings(self.base), **{k: _plain(v) for k, v in settings.items()}}
        return config_from_dict(TrainConfig, unflatten_settings(values))

    def describe(self) -> dict[str, str]:
        """Each swept key with its values or range, as text (``lambda_meta``: ``0.5, 1``)."""
        out = {k: ", ".join(_text(v) for v in values) for k, values in self.grid}
        out.update({k: d.describe() for k, d in self.random})
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (read back with :func:`spec_from_json`)."""
        return {
            "base": dict(self.base), "grid": [[k, list(v)] for k, v in self.grid],
            "random": [[k, d.to_json()] for k, d in self.random], "metric": self.metric, "samples": self.samples,
            "max_concurrent": self.max_concurrent, "early_stopping": self.early_stopping, "seed": self.seed,
            "ray_address": self.ray_address,
        }


def spec_from_json(values: Mapping[str, Any]) -> SweepSpec:
    """A spec saved by :meth:`SweepSpec.to_json` (as the run store keeps it); not checked again."""
    try:
        return SweepSpec(
            base=dict(values["base"]),
            grid=tuple((str(k), tuple(v)) for k, v in values.get("grid", [])),
            random=tuple((str(k), Distribution(d["kind"], tuple(d["args"]), bool(d.get("integer")))) for k, d in values.get("random", [])),
            metric=str(values.get("metric", "valid_mae")), samples=int(values.get("samples", 1)),
            max_concurrent=int(values.get("max_concurrent", 0)), early_stopping=str(values.get("early_stopping", "none")),
            seed=int(values.get("seed", 0)), ray_address=str(values.get("ray_address", "")), max_trials=10**9,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"the saved sweep specification cannot be read ({exc}); start the sweep again") from exc


def default_max_trials() -> int:
    """The most trials a sweep may have: ``METAREC_SWEEP_MAX_TRIALS`` if set, else :data:`DEFAULT_MAX_TRIALS`."""
    return positive_int_env("METAREC_SWEEP_MAX_TRIALS", DEFAULT_MAX_TRIALS)


# ---------------------------------------------------------------------- parsing the command line's forms
def parse_grid(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2,...`` -> ``(KEY, [V1, V2, ...])``; values are JSON when they parse (``[64,32]`` is one value), else text."""
    key, raw = _split_key(text, "--grid", "KEY=V1,V2,...")
    parts = _split_values(raw)
    if not raw.strip() or any(not p.strip() for p in parts):
        raise ConfigError(f"--grid {key}: empty value in '{raw}'; give KEY=V1,V2,... with at least one value, no empty ones")
    return key, [_value(p) for p in parts]


def parse_random(text: str) -> tuple[str, tuple[str, list[Any]]]:
    """``KEY=loguniform(A,B)`` -> ``(KEY, ("loguniform", [A, B]))`` (``uniform``, ``loguniform``, ``choice``)."""
    key, raw = _split_key(text, "--random", "KEY=uniform(A,B), KEY=loguniform(A,B) or KEY=choice(X,Y,...)")
    match = _RANDOM.match(raw)
    if not match:
        raise ConfigError(
            f"--random {key}: '{raw}' is not a distribution; write uniform(A,B), loguniform(A,B) or choice(X,Y,...)"
        )
    kind = match["kind"]
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"--random {key}: unknown distribution '{kind}'; use {', '.join(DISTRIBUTIONS)}")
    args = match["args"]
    values = [_value(p) for p in _split_values(args)] if args.strip() else []
    return key, (kind, values)


# ---------------------------------------------------------------------- building and checking a spec
def build_spec(
    base: Any,
    *,
    grid: Mapping[str, Sequence[Any]] | Sequence[tuple[str, Sequence[Any]]] = (),
    random: Mapping[str, Any] | Sequence[tuple[str, Any]] = (),
    metric: str = "valid_mae",
    samples: int | None = None,
    max_concurrent: int = 0,
    early_stopping: str = "none",
    seed: int = 0,
    ray_address: str = "",
    max_trials: int | None = None,
    fixed: Sequence[str] = (),
) -> SweepSpec:
    """Check a sweep's parts and build its :class:`SweepSpec`.

    Parameters
    ----------
    base
        A ``TrainConfig`` or a dict of its settings: what every trial starts from.
    grid
        Dotted key -> list of values.
    random
        Dotted key -> a :class:`Distribution`, or ``(kind, args)`` as :func:`parse_random` returns.
    metric
        One of :data:`METRICS`.
    samples
        Random trials (times each grid point runs); default 1. Only with a random part when above 1.
    max_concurrent
        Trials at once (0: as many as the CPUs allow).
    early_stopping
        ``none`` or ``asha``.
    seed
        Seed of the random draws.
    ray_address
        Ray cluster address (empty: a local Ray).
    max_trials
        The most trials allowed (default :func:`default_max_trials`).
    fixed
        Keys the caller set explicitly (``--set``): sweeping one of them is refused as ambiguous.

    Raises
    ------
    ConfigError
        One line naming the key (or option) and what is allowed: unknown keys, empty grids, values
        of the wrong type or out of range, ``A >= B``, too many trials, an unknown metric.
    """
    from metarec_core.train_config import TrainConfig

    base_config = base if isinstance(base, TrainConfig) else config_from_dict(TrainConfig, dict(base))
    base_dict = config_to_dict(base_config)
    known = flatten_settings(base_dict)
    hints = _setting_types()
    grid_items = list(grid.items()) if isinstance(grid, Mapping) else list(grid)
    random_items = list(random.items()) if isinstance(random, Mapping) else list(random)
    if metric not in METRICS:
        raise ConfigError(f"--metric: unknown metric '{metric}'; use one of {', '.join(METRICS)}")
    if early_stopping not in EARLY_STOPPING:
        raise ConfigError(f"--early-stop: unknown value '{early_stopping}'; use one of {', '.join(EARLY_STOPPING)}")
    if not grid_items and not random_items:
        raise ConfigError("a sweep needs at least one --grid KEY=V1,V2,... or --random KEY=DIST(...) setting to vary")
    seen: dict[str, str] = {}
    for option, items in (("--grid", grid_items), ("--random", random_items)):
        for key, _ in items:
            _check_key(key, option, known)
            if key in seen:
                raise ConfigError(f"{option} {key}: '{key}' is already swept by {seen[key]}; give each setting once")
            if key in fixed:
                raise ConfigError(f"{option} {key}: '{key}' is also fixed by --set; leave it out of one of them")
            seen[key] = option

    checked_grid: list[tuple[str, tuple]] = []
    for key, values in grid_items:
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values:
            raise ConfigError(f"--grid {key}: the grid is empty; give KEY=V1,V2,... with at least one value")
        converted = [_convert(key, v, hints[key], "--grid") for v in values]
        dupes = [v for i, v in enumerate(converted) if v in converted[:i]]
        if dupes:
            raise ConfigError(f"--grid {key}: value {_text(dupes[0])} is listed twice; list each value once")
        for value in converted:
            _try_config(base_dict, {key: value}, f"--grid {key}={_text(value)}")
        checked_grid.append((key, tuple(converted)))

    checked_random: list[tuple[str, Distribution]] = []
    for key, dist in random_items:
        checked_random.append((key, _check_distribution(key, dist, hints[key], base_dict)))

    if samples is None:
        samples = 1
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"--trials must be a whole number >= 1, got {samples!r}")
    if samples > 1 and not checked_random:
        raise ConfigError(
            f"--trials {samples} draws random settings but the sweep has no --random part; a grid runs each point once "
            "(add --random KEY=DIST(...) or leave out --trials)"
        )
    if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int) or max_concurrent < 0:
        raise ConfigError(f"--max-concurrent must be a whole number >= 1, got {max_concurrent!r}")
    limit = default_max_trials() if max_trials is None else int(max_trials)
    spec = SweepSpec(
        base=base_dict, grid=tuple(checked_grid), random=tuple(checked_random), metric=metric, samples=samples,
        max_concurrent=max_concurrent, early_stopping=early_stopping, seed=int(seed), ray_address=str(ray_address or ""),
        max_trials=limit,
    )
    if spec.n_trials > limit:
        sizes = " × ".join(str(len(v)) for _, v in checked_grid) or "1"
        raise ConfigError(
            f"the sweep has {spec.n_trials} trials (grid {sizes} × {samples} sample(s)); the maximum is {limit} "
            "(raise it with --max-trials or METAREC_SWEEP_MAX_TRIALS, or sweep fewer values)"
        )
    for point in spec.grid_points():  # a combination may be refused where each value alone is fine (both λ = 0)
        _try_config(base_dict, point, "the grid point " + ", ".join(f"{k}={_text(v)}" for k, v in point.items()))
    if float(flatten_settings(base_dict)["valid_fraction"]) <= 0 or any(
        k == "valid_fraction" and min(v) <= 0 for k, v in checked_grid
    ):
        raise ConfigError(f"the sweep optimises {metric} on validation users, but valid_fraction is 0; set valid_fraction > 0")
    return spec


def check_metric_for_data(spec: SweepSpec, implicit: bool) -> None:
    """Refuse a metric the data cannot give: ``valid_auc`` needs implicit data, ``valid_mae``/``valid_ndcg@3`` ratings."""
    if implicit and spec.metric != "valid_auc":
        raise ConfigError(f"--metric {spec.metric}: the dataset is implicit (no ratings), so validation gives valid_auc only; use --metric valid_auc")
    if not implicit and spec.metric == "valid_auc":
        raise ConfigError("--metric valid_auc: the dataset has ratings, so validation gives valid_mae and valid_ndcg@3; use one of those")


def settings_text(settings: Mapping[str, Any]) -> str:
    """``lambda_meta=0.5 lambda_trans=1``: a trial's swept settings in one line (numbers to 4 significant digits)."""
    return " ".join(f"{k}={_text(v)}" for k, v in settings.items())


# ---------------------------------------------------------------------- helpers
def _setting_types() -> dict[str, Any]:
    """Each dotted TrainConfig key with its field's type."""
    import dataclasses

    from metarec_core.train_config import TrainConfig

    out: dict[str, Any] = {}

    def walk(cls: Any, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, prefix + f.name + ".")
            else:
                out[prefix + f.name] = hint

    walk(TrainConfig, "")
    return out


def _check_key(key: str, option: str, known: Mapping[str, Any]) -> None:
    if key in known:
        return
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"{option} {key}: unknown setting '{key}'; {hint}settings are the dotted TrainConfig keys: {', '.join(sorted(known))}")


def _convert(key: str, value: Any, hint: Any, where: str) -> Any:
    """A value of the setting's type (an int widens to float; a whole float narrows to int), or a one-line refusal."""
    def refuse(expected: str) -> ConfigError:
        return ConfigError(f"{where} {key}: {_text(value)!s} is not {expected}; '{key}' takes {expected}")

    if hint is bool:
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise refuse("a whole number")
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise refuse("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise refuse("text")
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise refuse("a list such as [64,32]")
        return tuple(value)
    return value


def _check_distribution(key: str, dist: Any, hint: Any, base: Mapping[str, Any]) -> Distribution:
    if isinstance(dist, Distribution):
        kind, args = dist.kind, list(dist.args)
    else:
        kind, args = dist[0], list(dist[1])
    where = f"--random {key}={kind}({', '.join(_text(a) for a in args)})"
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"--random {key}: unknown distribution '{kind}'; use {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if len(args) < 2:
            raise ConfigError(f"{where}: choice needs at least two values, e.g. choice(0.5,1)")
        values = [_convert(key, v, hint, "--random") for v in args]
        dupes = [v for i, v in enumerate(values) if v in values[:i]]
        if dupes:
            raise ConfigError(f"{where}: value {_text(dupes[0])} is listed twice; list each choice once")
        for value in values:
            _try_config(base, {key: value}, where)
        return Distribution("choice", tuple(values))
    if hint not in (int, float):
        raise ConfigError(f"{where}: '{key}' is not a number, so it cannot be drawn from {kind}; use choice(X,Y,...)")
    if len(args) != 2 or any(isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) for a in args):
        raise ConfigError(f"{where}: {kind} takes two numbers A and B, e.g. {kind}(0.01,1)")
    low, high = (float(a) for a in args)
    if low >= high:
        raise ConfigError(f"{where}: {kind}(A,B) needs A < B, got A={_text(args[0])}, B={_text(args[1])}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{where}: loguniform(A,B) needs A > 0 (it draws on a log scale), got A={_text(args[0])}")
    integer = hint is int
    if integer:
        if not all(float(a).is_integer() for a in args):
            raise ConfigError(f"{where}: '{key}' is a whole number, so A and B must be whole numbers")
        low, high = int(low), int(high)
    for value in (low, high):
        _try_config(base, {key: value}, where)
    return Distribution(kind, (low, high), integer)


def _try_config(base: Mapping[str, Any], settings: Mapping[str, Any], where: str) -> None:
    """Build the config a trial would get; a refusal says where the value came from."""
    from metarec_core.train_config import TrainConfig

    values = {**flatten_settings(base), **{k: _plain(v) for k, v in settings.items()}}
    try:
        config_from_dict(TrainConfig, unflatten_settings(values))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {str(exc).removeprefix('TrainConfig: ')}") from exc


def _plain(value: Any) -> Any:
    """A tuple as a list (as JSON and config dicts keep them); numpy numbers as Python numbers."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _split_key(text: str, option: str, form: str) -> tuple[str, str]:
    if "=" not in str(text):
        raise ConfigError(f"{option} expects {form}, got '{text}'")
    key, raw = str(text).split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"{option} expects {form}, got '{text}' (no key before '=')")
    return key, raw


def _split_values(raw: str) -> list[str]:
    """Split on commas outside brackets and quotes (``[64,32],[32]`` is two values)."""
    parts, depth, quote, current = [], 0, "", []
    for char in raw:
        if quote:
            if char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _value(raw: str) -> Any:
    text = raw.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if len(text) >= 2 and text[0] == text[-1] == "'":
            return text[1:-1]
        return text


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(v) for v in value) + "]"
    return str(value)
