"""Frozen dataclass configs: built from dicts or JSON, unknown keys rejected."""
from __future__ import annotations

import dataclasses
import os
import json
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from metarec_core.errors import ConfigError

C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Build a frozen config dataclass from a dict, rejecting unknown keys.

    Nested dataclass fields may be given as dicts. Lists are turned into tuples so
    the config stays hashable.

    Parameters
    ----------
    cls
        The dataclass type.
    values
        Field values; keys must be field names of ``cls``.

    Returns
    -------
    C
        The config, validated by its ``__post_init__``.

    Raises
    ------
    ConfigError
        If a key is unknown or a value is rejected.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{cls.__name__}: expected a mapping of settings, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{cls.__name__}: unknown setting(s) {', '.join(unknown)}; "
            f"known settings are {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        hint = hints.get(name)
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = _checked(cls.__name__, name, hint, value)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def _checked(owner: str, name: str, hint: Any, value: Any) -> Any:
    """``value`` if it fits a plain ``bool``/``int``/``float``/``str`` or ``tuple[...]`` field (ints widen to float).

    A string such as ``"no"`` for a ``bool`` (a non-empty string is true in
    Python) or ``"abc"`` for an ``int`` is refused with the setting's name,
    instead of being passed on or failing far from the cause.
    """
    def refuse(expected: str) -> ConfigError:
        return ConfigError(f"{owner}: setting '{name}' must be {expected}, got {value!r}")

    if hint is bool:
        if not isinstance(value, bool):
            raise refuse("true or false")
    elif hint is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise refuse("a whole number")
        value = int(value)
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise refuse("a number")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str):
            raise refuse("text")
    elif typing.get_origin(hint) is tuple and not isinstance(value, tuple):
        raise refuse("a list, e.g. [64, 32]")
    return value


def config_to_dict(config: Any) -> dict[str, Any]:
    """Return a JSON-ready dict of a config dataclass (tuples become lists)."""
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (tuple, list)):
            return [convert(v) for v in value]
        return value

    return convert(config)


def with_overrides(config: C, overrides: dict[str, Any]) -> C:
    """Return a copy of ``config`` with ``overrides`` applied (unknown keys rejected)."""
    merged = config_to_dict(config)
    merged.update(overrides)
    return config_from_dict(type(config), merged)


def flatten_settings(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level of dotted keys: ``{"model": {"hidden": [64]}}`` -> ``{"model.hidden": [64]}``.

    The inverse of :func:`unflatten_settings`; every place that shows, compares
    or parses settings by dotted key (``--set model.hidden=[64]``, the Train
    page, the run comparison) goes through this pair.
    """
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = prefix + str(key)
        if isinstance(value, Mapping):
            out.update(flatten_settings(value, name + "."))
        else:
            out[name] = value
    return out


def unflatten_settings(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys back to nested dicts: ``{"model.hidden": [64]}`` -> ``{"model": {"hidden": [64]}}``.

    Raises
    ------
    ConfigError
        If a key is both a value and a group (``model=1`` beside ``model.hidden=...``).
    """
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"setting '{part}' is given both as a value and as a group ('{key}')")
            node = child
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, Mapping):
            raise ConfigError(f"setting '{key}' is given both as a value and as a group")
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


def parse_set_arguments(pairs: list[str]) -> dict[str, Any]:
    """Parse CLI ``key=value`` pairs; values are read as JSON when they parse, else as strings.

    Raises
    ------
    ConfigError
        If a pair has no ``=``.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def load_config(cls: type[C], path: str | Path) -> C:
    """Read a config JSON file into ``cls`` (unknown keys rejected)."""
    try:
        values = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read config file '{path}': {exc}") from exc
    return config_from_dict(cls, values)


def positive_int_env(name: str, default: int) -> int:
    """A whole number >= 1 from environment variable ``name`` (``default`` when unset or empty).

    Raises
    ------
    ConfigError
        If the variable is set to anything else, naming it and the value.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{name} must be a whole number >= 1, got '{raw}'")
    return value
