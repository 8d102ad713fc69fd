"""Dataset summary: counts, rating histogram, long tail and cold-start shares, ready to plot or print."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.splits import SCENARIOS, SplitConfig, split_cold_start

#: Above this many distinct rating values the histogram is binned.
MAX_HISTOGRAM_VALUES = 20


@dataclass(frozen=True)
class ScenarioCounts:
    """What one cold-start scenario does to the dataset (K-shot, seeded split with seed 0)."""

    scenario: str
    cold_users: int
    cold_items: int
    evaluated_users: int
    excluded_users: int
    train_ratings: int
    query_ratings: int


@dataclass(frozen=True)
class FeatureInfo:
    """One side feature: its table, name, kind, missing values and distinct values."""

    table: str
    name: str
    kind: str
    n_missing: int
    n_distinct: int
    example: str


@dataclass(frozen=True)
class DatasetSummary:
    """Plot-ready description of a dataset.

    Attributes
    ----------
    rating_histogram
        Rating value (or bin centre, for many distinct values) -> count.
    ratings_per_user, ratings_per_item
        Interactions per user / item index (zeros included): the long tail.
    no_interaction_users, no_interaction_items
        Users / items with no interactions (side-table-only: cold by nature).
    top_item_share
        Share of interactions on the most popular 20% of items.
    scenarios
        Per scenario, how many users and items it makes cold and how many
        users it evaluates or excludes for too few ratings.
    features
        One row per side feature.
    """

    name: str
    n_users: int
    n_items: int
    n_ratings: int
    implicit: bool
    density: float
    rating_min: float
    rating_max: float
    rating_mean: float
    rating_histogram: dict[float, int]
    ratings_per_user: np.ndarray
    ratings_per_item: np.ndarray
    no_interaction_users: int
    no_interaction_items: int
    top_item_share: float
    time_range: tuple[int, int] | None
    support_size: int
    cold_fraction: float
    scenarios: tuple[ScenarioCounts, ...]
    features: tuple[FeatureInfo, ...]
    warnings: tuple[str, ...]

    def features_frame(self) -> pd.DataFrame:
        """The feature table as a DataFrame (for display)."""
        return pd.DataFrame([f.__dict__ for f in self.features], columns=["table", "name", "kind", "n_missing", "n_distinct", "example"])

    def scenarios_frame(self) -> pd.DataFrame:
        """The scenario table as a DataFrame (for display and plots)."""
        return pd.DataFrame([s.__dict__ for s in self.scenarios])

    def to_dict(self) -> dict:
        """JSON-ready dict; per-user/per-item counts are given as distribution statistics."""
        return {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_ratings": self.n_ratings,
            "implicit": self.implicit,
            "density": self.density,
            "rating_min": self.rating_min,
            "rating_max": self.rating_max,
            "rating_mean": self.rating_mean,
            "rating_histogram": {str(k): v for k, v in self.rating_histogram.items()},
            "ratings_per_user": _stats(self.ratings_per_user),
            "ratings_per_item": _stats(self.ratings_per_item),
            "no_interaction_users": self.no_interaction_users,
            "no_interaction_items": self.no_interaction_items,
            "top_item_share": self.top_item_share,
            "time_range": list(self.time_range) if self.time_range else None,
            "support_size": self.support_size,
            "cold_fraction": self.cold_fraction,
            "scenarios": [s.__dict__ for s in self.scenarios],
            "features": [f.__dict__ for f in self.features],
            "warnings": list(self.warnings),
        }

    def to_text(self) -> str:
        """A readable multi-line report (used by ``data describe``)."""
        kind = "implicit interactions" if self.implicit else "ratings"
        lines = [
            f"Dataset '{self.name}': {self.n_users:,} users ({self.no_interaction_users:,} with no interactions), "
            f"{self.n_items:,} items ({self.no_interaction_items:,} with none), {self.n_ratings:,} {kind}",
        ]
        line = f"Density {100 * self.density:.3g}%"
        if not self.implicit:
            line += f"; ratings {self.rating_min:g} to {self.rating_max:g}, mean {self.rating_mean:.3f}"
        if self.time_range:
            lo, hi = (datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d") for t in self.time_range)
            line += f"; time {lo} to {hi}"
        else:
            line += "; no timestamps"
        lines.append(line)
        total = max(self.n_ratings, 1)
        hist = ", ".join(f"{k:g}: {v:,} ({100 * v / total:.1f}%)" for k, v in self.rating_histogram.items())
        lines.append(f"Rating histogram: {hist}")
        for label, counts in (("user", self.ratings_per_user), ("item", self.ratings_per_item)):
            s = _stats(counts)
            lines.append(
                f"Interactions per {label}: min {s['min']}, median {s['median']:g}, mean {s['mean']:.1f}, "
                f"90th percentile {s['p90']:g}, max {s['max']}"
            )
        lines.append(f"Long tail: the most popular 20% of items hold {100 * self.top_item_share:.1f}% of interactions")
        lines.append(f"Cold-start scenarios (support K={self.support_size}, {100 * self.cold_fraction:g}% cold, seed 0):")
        header = f"  {'scenario':<10} {'cold users':>10} {'cold items':>10} {'evaluated':>10} {'excluded':>9} {'train':>10} {'query':>9}"
        lines.append(header)
        for s in self.scenarios:
            lines.append(
                f"  {s.scenario:<10} {s.cold_users:>10,} {s.cold_items:>10,} {s.evaluated_users:>10,} "
                f"{s.excluded_users:>9,} {s.train_ratings:>10,} {s.query_ratings:>9,}"
            )
        if self.features:
            lines.append("Features:")
            for f in self.features:
                lines.append(
                    f"  {f.table}.{f.name}: {f.kind} ({f.n_distinct:,} distinct, {f.n_missing:,} missing; e.g. {f.example})"
                )
        else:
            lines.append("Features: none (no user or item table)")
        if self.warnings:
            lines.append("Warnings:")
            lines.extend(f"  - {w}" for w in self.warnings)
        return "\n".join(lines)


def _stats(counts: np.ndarray) -> dict:
    if len(counts) == 0:
        return {"min": 0, "median": 0.0, "mean": 0.0, "p90": 0.0, "max": 0}
    return {
        "min": int(counts.min()),
        "median": float(np.median(counts)),
        "mean": float(counts.mean()),
        "p90": float(np.percentile(counts, 90)),
        "max": int(counts.max()),
    }


def _histogram(rating: np.ndarray) -> dict[float, int]:
    values, counts = np.unique(rating, return_counts=True)
    if len(values) <= MAX_HISTOGRAM_VALUES:
        return {float(v): int(c) for v, c in zip(values, counts)}
    counts, edges = np.histogram(rating, bins=MAX_HISTOGRAM_VALUES)
    centres = (edges[:-1] + edges[1:]) / 2
    return {float(np.round(c, 4)): int(n) for c, n in zip(centres, counts)}


def _feature_rows(table_name: str, table: pd.DataFrame, specs) -> list[FeatureInfo]:
    rows = []
    for spec in specs:
        column = table[spec.name] if spec.name in table.columns else pd.Series([], dtype=object)
        present = column.dropna()
        if spec.kind == "multilabel":
            labels = present.astype(str).str.split(spec.separator).explode().str.strip()
            distinct = int(labels[labels != ""].nunique())
        else:
            distinct = int(present.nunique())
        first = present.iloc[0] if len(present) else ""
        if isinstance(first, (float, np.floating)) and float(first).is_integer():
            first = int(first)
        example = str(first)
        rows.append(FeatureInfo(table_name, spec.name, spec.kind, int(column.isna().sum()), distinct, example[:40]))
    return rows


def summarize(dataset: Dataset, *, support_size: int = 10, cold_fraction: float = 0.2) -> DatasetSummary:
    """Summarise a dataset for the Data page and ``data describe``.

    Parameters
    ----------
    dataset
        The data.
    support_size
        K used to count, per scenario, which users have enough ratings.
    cold_fraction
        Share of users / items each scenario makes cold.

    Returns
    -------
    DatasetSummary
    """
    r = dataset.ratings
    rating = r["rating"].to_numpy(np.float64)
    per_user = np.bincount(r["user"].to_numpy(np.int64), minlength=dataset.n_users)
    per_item = np.bincount(r["item"].to_numpy(np.int64), minlength=dataset.n_items)
    n = len(r)
    sorted_items = np.sort(per_item)[::-1]
    top = max(1, int(np.ceil(0.2 * dataset.n_items))) if dataset.n_items else 0
    times = r["timestamp"].to_numpy(np.int64)
    known = times[times >= 0]
    scenarios = []
    for scenario in SCENARIOS:
        split = split_cold_start(
            dataset, SplitConfig(scenario=scenario, support_size=support_size, cold_fraction=cold_fraction, seed=0)
        )
        scenarios.append(
            ScenarioCounts(
                scenario=scenario,
                cold_users=len(split.cold_users),
                cold_items=len(split.cold_items),
                evaluated_users=split.n_evaluated,
                excluded_users=len(split.excluded),
                train_ratings=len(split.train),
                query_ratings=len(split.query),
            )
        )
    features = _feature_rows("users", dataset.user_table, dataset.user_features)
    features += _feature_rows("items", dataset.item_table, dataset.item_features)
    return DatasetSummary(
        name=dataset.name,
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        n_ratings=n,
        implicit=dataset.implicit,
        density=n / max(dataset.n_users * dataset.n_items, 1),
        rating_min=float(rating.min()) if n else 0.0,
        rating_max=float(rating.max()) if n else 0.0,
        rating_mean=float(rating.mean()) if n else 0.0,
        rating_histogram=_histogram(rating) if n else {},
        ratings_per_user=per_user,
        ratings_per_item=per_item,
        no_interaction_users=int((per_user == 0).sum()),
        no_interaction_items=int((per_item == 0).sum()),
        top_item_share=float(sorted_items[:top].sum() / n) if n else 0.0,
        time_range=(int(known.min()), int(known.max())) if len(known) else None,
        support_size=support_size,
        cold_fraction=cold_fraction,
        scenarios=tuple(scenarios),
        features=tuple(features),
        warnings=dataset.warnings,
    )
