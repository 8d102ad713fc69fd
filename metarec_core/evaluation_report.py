"""What an evaluation is asked and what it gives back: its settings, the baselines by name, and its result tables."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec_core.baselines import Baseline, BiasBaseline, GenreBaseline, GlobalMean, ItemMean, MatrixFactorization
from metarec_core.configs import config_to_dict
from metarec_core.errors import ConfigError, DataError
from metarec_core.metrics import DEFAULT_KS
from metarec_core.splits import SCENARIOS


#: Baselines by the short name used in configs, the CLI and result tables.
BASELINES: dict[str, Callable[[], Baseline]] = {
    "global-mean": GlobalMean,
    "item-mean": ItemMean,
    "bias": BiasBaseline,
    "genre": GenreBaseline,
    "mf": MatrixFactorization,
}
#: Baselines that need explicit ratings (skipped, with a warning, on implicit data).
_EXPLICIT_ONLY = ("bias", "genre", "mf")
#: Columns of :attr:`EvaluationResult.frame`.
RESULT_COLUMNS = ("method", "scenario", "shots", "seed", "metric", "value")
#: Columns of :attr:`EvaluationResult.per_user_frame`.
PER_USER_COLUMNS = (
    "method", "scenario", "shots", "seed", "user", "user_id", "n_support", "n_query", "metric", "before", "after",
)


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate: scenario, K shots, seeds, baselines and metric cut-offs.

    Build from a dict with :func:`~metarec_core.configs.config_from_dict` (unknown keys are rejected).

    Attributes
    ----------
    scenario
        ``warm``, ``user-cold``, ``item-cold`` or ``both-cold``. ``None``: the
        run's own scenario (``user-cold`` when there is no run). A run can only
        be evaluated in the scenario it was trained for.
    shots
        The support sizes K of the shots curve (each >= 0).
    seeds
        Split seeds. Empty: the run's own seed (``0`` when there is no run). A
        run accepts only its own seed (see the module docstring).
    cold_fraction
        Share of users/items made cold. ``None``: the run's (0.2 without a run).
    baselines
        Names from :data:`BASELINES`, fitted on each split's training rows.
    no_adaptation
        Also report the run with ``inner_steps = 0`` (its starting point).
    ks
        Cut-offs of the query-set nDCG@k.
    catalogue_k
        Cut-off of the full-catalogue nDCG, Recall and HitRate.
    relevant_rating
        On explicit data, query items rated at least this count as relevant
        for Recall@k / HitRate@k over the catalogue.
    """

    scenario: str | None = None
    shots: tuple[int, ...] = (1, 3, 5, 10, 20)
    seeds: tuple[int, ...] = ()
    cold_fraction: float | None = None
    baselines: tuple[str, ...] = tuple(BASELINES)
    no_adaptation: bool = True
    ks: tuple[int, ...] = DEFAULT_KS
    catalogue_k: int = 10
    relevant_rating: float = 4.0

    def __post_init__(self) -> None:
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise ConfigError(f"scenario must be one of {', '.join(SCENARIOS)}, got '{self.scenario}'")
        for name, values, low in (("shots", self.shots, 0), ("ks", self.ks, 1)):
            if not isinstance(values, tuple) or not values:
                raise ConfigError(f"{name} must be a non-empty tuple of whole numbers, got {values!r}")
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < low]
            if bad:
                raise ConfigError(f"{name} must be whole numbers >= {low}, got {bad[0]!r}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} lists a value twice: {values}")
        if not isinstance(self.seeds, tuple) or any(isinstance(s, bool) or not isinstance(s, int) for s in self.seeds):
            raise ConfigError(f"seeds must be a tuple of integers, got {self.seeds!r}")
        if self.cold_fraction is not None and not (
            isinstance(self.cold_fraction, (int, float)) and 0.0 < self.cold_fraction < 1.0
        ):
            raise ConfigError(f"cold_fraction must be between 0 and 1 (exclusive), got {self.cold_fraction!r}")
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ConfigError(f"unknown baseline(s) {', '.join(map(str, unknown))}; choose from {', '.join(BASELINES)}")
        if isinstance(self.catalogue_k, bool) or not isinstance(self.catalogue_k, int) or self.catalogue_k < 1:
            raise ConfigError(f"catalogue_k must be a whole number >= 1, got {self.catalogue_k!r}")
        if not isinstance(self.relevant_rating, (int, float)) or not math.isfinite(self.relevant_rating):
            raise ConfigError(f"relevant_rating must be a number, got {self.relevant_rating!r}")


def parse_baselines(text: str) -> tuple[str, ...]:
    """Baseline names from ``all``, ``none`` or a comma list such as ``bias,mf``.

    Raises
    ------
    ConfigError
        For a name not in :data:`BASELINES`.
    """
    text = text.strip().lower()
    if text == "all":
        return tuple(BASELINES)
    if text in ("none", ""):
        return ()
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"unknown baseline(s) {', '.join(unknown)}; choose all, none or from {', '.join(BASELINES)}")
    return names


# --------------------------------------------------------------------------- result


def _ordered(frame: pd.DataFrame, column: str) -> list[Any]:
    return list(dict.fromkeys(frame[column].tolist()))


@dataclass(frozen=True)
class EvaluationResult:
    """Metrics of every method × K shots × seed, with per-user detail and split sizes.

    Attributes
    ----------
    frame
        Tidy results, columns :data:`RESULT_COLUMNS` (one row per method,
        scenario, shots, seed and metric).
    per_user_frame
        Per evaluated user, method, K and seed: the user's metric (``mae``, or
        ``auc`` on implicit data) before adaptation (the method with an empty
        support set; for the run, ``inner_steps = 0``) and after.
    splits
        One row per (scenario, shots, seed): evaluated users, query rows,
        excluded users, users with at least one relevant query item, training rows.
    config
        The configuration, with the run's scenario, seeds and cold fraction filled in.
    warnings
        Things the reader must know (excluded users, skipped baselines), as sentences.
    """

    frame: pd.DataFrame
    per_user_frame: pd.DataFrame = field(repr=False)
    splits: pd.DataFrame = field(repr=False)
    config: EvaluationConfig
    warnings: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return (
            f"EvaluationResult({', '.join(map(str, self.methods))}; shots {sorted({int(k) for k in self.frame['shots'].dropna()})}; "
            f"seeds {sorted({int(s) for s in self.frame['seed']})}; {len(self.frame)} rows)"
        )

    @property
    def methods(self) -> list[str]:
        """Method names in the order they were evaluated (run first, then baselines)."""
        return _ordered(self.frame, "method")

    @property
    def metrics(self) -> list[str]:
        """Metric names in the order they were computed."""
        return _ordered(self.frame, "metric")

    @classmethod
    def concat(cls, results: Sequence["EvaluationResult"]) -> "EvaluationResult":
        """Combine results (e.g. one run per seed) so that :meth:`summary` averages over their seeds."""
        if not results:
            raise ConfigError("EvaluationResult.concat needs at least one result")
        return cls(
            frame=pd.concat([r.frame for r in results], ignore_index=True),
            per_user_frame=pd.concat([r.per_user_frame for r in results], ignore_index=True),
            splits=pd.concat([r.splits for r in results], ignore_index=True),
            config=dataclasses.replace(results[0].config, seeds=tuple(s for r in results for s in r.config.seeds)),
            warnings=tuple(dict.fromkeys(w for r in results for w in r.warnings)),
        )

    def summary(self) -> pd.DataFrame:
        """Mean and standard deviation over seeds of every metric, method, scenario and K.

        Returns
        -------
        pandas.DataFrame
            Columns ``scenario``, ``metric``, ``method``, ``shots``, ``mean``,
            ``std`` (sample standard deviation, ddof = 1; NaN with one seed) and
            ``n_seeds`` (seeds where the metric is defined), in evaluation order.
        """
        f = self.frame
        grouped = f.groupby(["scenario", "metric", "method", "shots"], sort=False, dropna=False)["value"]
        out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), n_seeds="count").reset_index()
        out["metric"] = pd.Categorical(out["metric"], categories=self.metrics, ordered=True)
        out["method"] = pd.Categorical(out["method"], categories=self.methods, ordered=True)
        out = out.sort_values(["scenario", "metric", "method", "shots"], kind="stable").reset_index(drop=True)
        out["metric"] = out["metric"].astype(str)
        out["method"] = out["method"].astype(str)
        return out

    def table(self, metrics: Sequence[str] | None = None, *, digits: int = 3) -> pd.DataFrame:
        """A readable table: rows (scenario, metric, method), one column per K, cells ``mean ± std``.

        With one seed the cells hold the value alone.
        """
        s = self.summary()
        if metrics is not None:
            unknown = [m for m in metrics if m not in self.metrics]
            if unknown:
                raise ConfigError(f"unknown metric(s) {', '.join(unknown)}; this result has {', '.join(self.metrics)}")
            s = s[s["metric"].isin(list(metrics))]

        def cell(row: pd.Series) -> str:
            if pd.isna(row["mean"]):
                return "–"
            if pd.isna(row["std"]):
                return f"{row['mean']:.{digits}f}"
            return f"{row['mean']:.{digits}f} ± {row['std']:.{digits}f}"

        def column(k: Any) -> str:
            return "K=rest" if pd.isna(k) else f"K={k}"

        columns = list(dict.fromkeys(column(k) for k in s["shots"].tolist()))
        cells: dict[tuple[str, str, str], dict[str, str]] = {}
        for _, row in s.iterrows():
            key = (row["scenario"], row["metric"], row["method"])
            cells.setdefault(key, {})[column(row["shots"])] = cell(row)
        index = pd.MultiIndex.from_tuples(list(cells), names=["scenario", "metric", "method"])
        return pd.DataFrame([[c.get(col, "") for col in columns] for c in cells.values()], index=index, columns=columns)

    def shots_curve(self, metric: str, *, scenario: str | None = None) -> pd.DataFrame:
        """Metric against K for every method, for plotting (one line per method, error bars from ``std``).

        Returns
        -------
        pandas.DataFrame
            Columns ``method``, ``shots``, ``mean``, ``std``, ``n_seeds``.
        """
        if metric not in self.metrics:
            raise ConfigError(f"unknown metric '{metric}'; this result has {', '.join(self.metrics)}")
        s = self.summary()
        s = s[s["metric"] == metric]
        if scenario is not None:
            s = s[s["scenario"] == scenario]
        return s[["method", "shots", "mean", "std", "n_seeds"]].reset_index(drop=True)

    def per_user(self, method: str, shots: int, *, seed: int | None = None) -> pd.DataFrame:
        """Which users gain most from adaptation: their metric before and after adapting on K shots.

        Parameters
        ----------
        method
            One of :attr:`methods`.
        shots
            One K of the evaluation.
        seed
            Restrict to one seed (default: every seed, with a ``seed`` column).

        Returns
        -------
        pandas.DataFrame
            Columns ``seed``, ``user`` (index), ``user_id`` (external ID),
            ``n_support``, ``n_query``, ``<metric>_before``, ``<metric>_after``
            and ``gain`` (how much adaptation improved the metric: ``before −
            after`` for MAE, ``after − before`` for AUC), largest gain first.
            Rows are the evaluated users of that split, one per user and seed.
        """
        f = self.per_user_frame
        if method not in set(f["method"]):
            raise ConfigError(f"unknown method '{method}'; this result has {', '.join(self.methods)}")
        rows = f[(f["method"] == method) & (f["shots"] == shots)]
        if not len(rows):
            raise ConfigError(f"no per-user results for K={shots}; this result has K in {sorted({int(k) for k in f['shots'].dropna()})}")
        if seed is not None:
            rows = rows[rows["seed"] == seed]
        metric = str(rows["metric"].iloc[0]) if len(rows) else "mae"
        sign = -1.0 if metric == "mae" else 1.0
        out = pd.DataFrame({
            "seed": rows["seed"].to_numpy(),
            "user": rows["user"].to_numpy(),
            "user_id": rows["user_id"].to_numpy(),
            "n_support": rows["n_support"].to_numpy(),
            "n_query": rows["n_query"].to_numpy(),
            f"{metric}_before": rows["before"].to_numpy(),
            f"{metric}_after": rows["after"].to_numpy(),
        })
        out["gain"] = sign * (out[f"{metric}_after"] - out[f"{metric}_before"])
        return out.sort_values(["gain", "seed", "user"], ascending=[False, True, True], kind="stable").reset_index(drop=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: config, tidy results, summary, split sizes and warnings (no per-user rows)."""

        def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
            clean = frame.astype(object).where(frame.notna(), None)
            return [{k: _plain(v) for k, v in row.items()} for row in clean.to_dict(orient="records")]

        return {
            "config": config_to_dict(self.config),
            "results": records(self.frame),
            "summary": records(self.summary()),
            "splits": records(self.splits),
            "warnings": list(self.warnings),
        }

    def save(self, folder: str | Path) -> None:
        """Write the result to ``folder`` (Parquet tables + JSON), replacing it atomically."""
        import json
        import shutil

        out = Path(folder)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.frame.to_parquet(tmp / "results.parquet", index=False)
        self.per_user_frame.to_parquet(tmp / "per_user.parquet", index=False)
        self.splits.to_parquet(tmp / "splits.parquet", index=False)
        (tmp / "config.json").write_text(json.dumps({"config": config_to_dict(self.config), "warnings": list(self.warnings)}))
        if out.exists():
            shutil.rmtree(out)
        tmp.replace(out)

    @classmethod
    def load(cls, folder: str | Path) -> "EvaluationResult":
        """Read a result written by :meth:`save`.

        Raises
        ------
        DataError
            If the folder is missing or incomplete.
        """
        import json

        from metarec_core.configs import config_from_dict
        from metarec_core.errors import ConfigError

        folder = Path(folder)
        try:
            meta = json.loads((folder / "config.json").read_text())
            return cls(
                frame=pd.read_parquet(folder / "results.parquet"),
                per_user_frame=pd.read_parquet(folder / "per_user.parquet"),
                splits=pd.read_parquet(folder / "splits.parquet"),
                config=config_from_dict(EvaluationConfig, meta["config"]),
                warnings=tuple(meta.get("warnings", ())),
            )
        except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:  # missing, truncated or edited files
            raise DataError(f"cannot read the evaluation in '{folder}' ({type(exc).__name__}: {exc}); evaluate the run again") from exc


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


