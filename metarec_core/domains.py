"""Domains: a source and a target dataset on one shared index space, for cross-domain transfer.

Knowledge moves from the source domain to the target domain in two ways, and
both need the two datasets to share their index spaces:

* **Shared feature vocabularies and dense weights.** Both domains use the same
  user and item side tables, so the feature embeddings (e.g. the genre, age,
  gender and occupation embeddings), the feature-to-factor projections, the
  text adaptor, the MLP head and the meta-learned start of a new user all have
  the same shapes. The target run starts from the source run's weights and
  ``L0 = λ0·‖θ − θ_source‖²`` (L2-SP) keeps every tensor near them.
* **Shared users.** A user who rated source items has a learned ID factor and
  bias in the source run. In the target run they are the starting point (and
  the L2-SP anchor) of that user's ID parameters; a user who is new to the
  target domain but known from the source ("a returning customer in a new
  market") can be scored with them (:func:`evaluate_returning_users`).

Item ID embeddings of one domain's items carry nothing to the other domain's
items (they are different items); they stay at the source values only for
items rated in both datasets (:func:`align_domains` with shared item IDs).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metarec_core.artifacts import load_run, load_weights
from metarec_core.configs import with_overrides
from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap, normalise_id
from metarec_core.splits import SplitConfig, split_cold_start
from metarec_core.tasks import tasks_from_frames
from metarec_core.progress import ProgressEvent
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit, TrainResult
from metarec_core.training_data import item_text_vectors
from metarec_core.scoring import predict_tasks, query_metrics

log = logging.getLogger(__name__)

#: How a multi-label item joins the source domain: ``any`` of its labels, or ``all`` of them, in ``source_values``.
MATCH_RULES = ("any", "all")


@dataclass(frozen=True)
class DomainSplit:
    """A source domain and a target domain sharing user and item ID maps and side tables.

    Attributes
    ----------
    source, target
        The two datasets. ``source.users == target.users``,
        ``source.items == target.items`` and their side tables are identical;
        only the ratings differ. A model built for one fits the other, so a
        source run's weights initialise and anchor every tensor of a target run.
    description
        How the domains were made, in one sentence (shown in the app and reports).
    warnings
        Things worth knowing that did not stop the split, as sentences.
    """

    source: Dataset
    target: Dataset
    description: str = ""
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        same = (
            self.source.users == self.target.users and self.source.items == self.target.items
            and self.source.user_features == self.target.user_features
            and self.source.item_features == self.target.item_features
        )
        if not same:
            raise DataError(
                f"'{self.source.name}' and '{self.target.name}' do not share user/item ID maps and feature columns, "
                "so a source model would not fit the target; build the pair with split_domains or align_domains"
            )

    def __repr__(self) -> str:
        return (
            f"DomainSplit(source {len(self.source.ratings)} ratings of {self.source_items().size} items, "
            f"target {len(self.target.ratings)} ratings of {self.target_items().size} items, "
            f"{self.shared_users().size} shared users)"
        )

    def source_items(self) -> np.ndarray:
        """Sorted indices of items rated in the source domain."""
        return np.unique(self.source.ratings["item"].to_numpy(np.int64))

    def target_items(self) -> np.ndarray:
        """Sorted indices of items rated in the target domain."""
        return np.unique(self.target.ratings["item"].to_numpy(np.int64))

    def shared_users(self) -> np.ndarray:
        """Sorted indices of users with ratings in both domains (they carry ID knowledge across)."""
        return np.intersect1d(self.source.ratings["user"].to_numpy(np.int64), self.target.ratings["user"].to_numpy(np.int64))

    def summary(self) -> dict[str, int]:
        """Counts of ratings, rated users and rated items per domain, and of shared users and items."""
        out: dict[str, int] = {}
        for name, ds in (("source", self.source), ("target", self.target)):
            out[f"{name}_ratings"] = len(ds.ratings)
            out[f"{name}_users"] = int(ds.ratings["user"].nunique())
            out[f"{name}_items"] = int(ds.ratings["item"].nunique())
        out["shared_users"] = int(self.shared_users().size)
        out["shared_items"] = int(np.intersect1d(self.source_items(), self.target_items()).size)
        return out


def split_domains(
    dataset: Dataset,
    column: str,
    source_values: Iterable[object] | str,
    *,
    match: str = "any",
) -> DomainSplit:
    """Split one dataset into a source and a target domain by an item column.

    Items whose ``column`` value is in ``source_values`` form the source
    domain, all other items the target domain; every rating goes to the
    domain of its item. For a multi-label column (e.g. ML-100K ``genres``)
    an item is a source item when ``any`` of its labels is in
    ``source_values`` (``match="any"``, the default: mixed items such as
    ``Action|Drama`` with source genre Drama are source items, so the labels of
    target genres are seen in the source too and their embeddings carry over),
    or only when ``all`` of them are (``match="all"``). Items with no value go
    to the target domain (reported in ``warnings``).

    Both domains keep the full user and item ID maps and side tables; only
    the ratings are filtered. Nothing is dropped: every rating is in exactly
    one domain.

    Parameters
    ----------
    dataset
        The dataset to split.
    column
        An item column (categorical, multi-label, numeric or text; values are
        compared as strings, ``3.0`` as ``3``).
    source_values
        Values (or labels) of the source domain; a single string is one value.
    match
        ``any`` or ``all`` (multi-label columns only; one value is both).

    Returns
    -------
    DomainSplit

    Raises
    ------
    DataError
        If the column is not in the item table, a value never occurs in it, or
        a domain would have no ratings.
    ConfigError
        If ``match`` is not ``any`` or ``all``, or no source value is given.

    Examples
    --------
    >>> split = split_domains(movielens, "genres", ["Drama", "Romance"])  # doctest: +SKIP
    >>> split.source.items == split.target.items  # doctest: +SKIP
    True
    """
    if match not in MATCH_RULES:
        raise ConfigError(f"split_domains: match must be one of {MATCH_RULES}, got '{match}'")
    values = (source_values,) if isinstance(source_values, str) else tuple(source_values)
    wanted = {normalise_id(v) for v in values}
    if not wanted:
        raise ConfigError("split_domains: give at least one value of the source domain")
    if column not in dataset.item_table.columns:
        raise DataError(
            f"not in the item table, which has columns {list(map(str, dataset.item_table.columns))}; "
            "choose an item column to split the domains by",
            source=dataset.name, column=column,
        )
    spec = next((s for s in dataset.item_features if s.name == column), None)
    separator = spec.separator if spec is not None and spec.kind == "multilabel" else None
    labels = _item_labels(dataset.item_table[column], separator)
    present = set().union(*labels) if labels else set()
    unknown = sorted(wanted - present)
    if unknown:
        shown = ", ".join(sorted(present)[:30]) + (", ..." if len(present) > 30 else "")
        raise DataError(
            f"value(s) {', '.join(repr(v) for v in unknown)} never occur; values present are: {shown}",
            source=dataset.name, column=column,
        )
    rule = any if match == "any" else all
    is_source = np.fromiter((bool(item) and rule(v in wanted for v in item) for item in labels), dtype=bool, count=len(labels))
    row_source = is_source[dataset.ratings["item"].to_numpy(np.int64)]
    source = _with_ratings(dataset, dataset.ratings[row_source], "source")
    target = _with_ratings(dataset, dataset.ratings[~row_source], "target")
    for name, part in (("source", source), ("target", target)):
        if len(part.ratings) == 0:
            raise DataError(
                f"the {name} domain has no ratings when source values are {sorted(wanted)} (match='{match}'); "
                "choose values that leave rated items on both sides",
                source=dataset.name, column=column,
            )
    warnings: list[str] = []
    n_missing = sum(1 for item in labels if not item)
    if n_missing:
        warnings.append(f"{n_missing} item(s) have no '{column}' value; they are in the target domain")
    description = (
        f"{dataset.name} split by item column '{column}': source = items with {match} of their values in "
        f"{sorted(wanted)} ({int(is_source.sum())} items, {len(source.ratings)} ratings); "
        f"target = the other {int((~is_source).sum())} items ({len(target.ratings)} ratings)"
    )
    log.info("%s", description)
    return DomainSplit(source, target, description, tuple(warnings))


def _item_labels(values: pd.Series, separator: str | None) -> list[frozenset[str]]:
    """Each item's set of values: labels of a multi-label value, else the one value (empty when missing)."""
    out: list[frozenset[str]] = []
    for v in values:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            out.append(frozenset())
        elif separator is not None:
            out.append(frozenset(t.strip() for t in str(v).split(separator) if t.strip()))
        else:
            text = normalise_id(v)
            out.append(frozenset([text]) if text else frozenset())
    return out


def _with_ratings(dataset: Dataset, ratings: pd.DataFrame, domain: str) -> Dataset:
    return dataclasses.replace(dataset, name=f"{dataset.name}[{domain}]", ratings=ratings.reset_index(drop=True))


def align_domains(source: Dataset, target: Dataset) -> DomainSplit:
    """Put two separately loaded datasets on one index space, so a model trained on one fits the other.

    The user and item ID maps are unioned (``source`` IDs first, in their
    order, then the target's new IDs: source indices do not change), and so
    are the side tables: feature columns of either dataset, one row per
    unioned ID. A user or item present in both keeps the source's value where
    it has one and takes the target's where the source's is missing;
    disagreements are counted in ``warnings``. Ratings are re-indexed, not
    changed.

    Knowledge can carry over only through something the datasets share:
    users (same external user IDs), items (same item IDs), or item feature
    columns (same name and kind, e.g. ``genres`` or a description).

    Parameters
    ----------
    source, target
        The two datasets (both explicit or both implicit).

    Returns
    -------
    DomainSplit

    Raises
    ------
    DataError
        If they share no users, no items and no item feature column (nothing
        could transfer); if one is implicit and the other explicit; if a
        feature column has a different kind (or multi-label separator) in each.
    """
    if source.implicit != target.implicit:
        kinds = {True: "implicit (interactions only)", False: "explicit (ratings)"}
        raise DataError(
            f"'{source.name}' is {kinds[source.implicit]} but '{target.name}' is {kinds[target.implicit]}; "
            "both domains must be the same kind of feedback — load both with ratings or both as implicit"
        )
    src_users, tgt_users = set(source.users.external_ids), set(target.users.external_ids)
    src_items, tgt_items = set(source.items.external_ids), set(target.items.external_ids)
    n_shared_users, n_shared_items = len(src_users & tgt_users), len(src_items & tgt_items)
    user_specs = _union_specs(source.user_features, target.user_features, source.name, target.name)
    item_specs = _union_specs(source.item_features, target.item_features, source.name, target.name)
    shared_columns = sorted({s.name for s in source.item_features} & {s.name for s in target.item_features})
    if not n_shared_users and not n_shared_items and not shared_columns:
        raise DataError(
            f"'{source.name}' and '{target.name}' share no user IDs, no item IDs and no item feature column, "
            "so nothing learned on the source can carry over to the target; use the same user IDs for the same "
            "people, or give both item tables a common column (e.g. genres or a description)"
        )
    users = source.users.extended(target.users.external_ids)
    items = source.items.extended(target.items.external_ids)
    warnings: list[str] = [
        f"shared: {n_shared_users} user(s), {n_shared_items} item(s), item feature column(s) {shared_columns or 'none'}"
    ]
    user_table, n_user_conflicts = _union_table(source.users, source.user_table, target.users, target.user_table, users, user_specs)
    item_table, n_item_conflicts = _union_table(source.items, source.item_table, target.items, target.item_table, items, item_specs)
    for n, what in ((n_user_conflicts, "user"), (n_item_conflicts, "item")):
        if n:
            warnings.append(f"{n} {what} feature value(s) differ between the datasets for shared {what}s; the source's were kept")
    for spec in item_specs:
        if spec.kind in ("categorical", "multilabel") and spec.name in source.item_table and spec.name in target.item_table:
            sep = spec.separator if spec.kind == "multilabel" else None
            a = set().union(*_item_labels(source.item_table[spec.name], sep), set())
            b = set().union(*_item_labels(target.item_table[spec.name], sep), set())
            if a and b and not a & b:
                warnings.append(f"item column '{spec.name}' has no value in common between the datasets; its embeddings cannot carry over")
    lo_s, hi_s = source.rating_range if len(source.ratings) else (0.0, 0.0)
    lo_t, hi_t = target.rating_range if len(target.ratings) else (0.0, 0.0)
    if not source.implicit and (lo_s, hi_s) != (lo_t, hi_t):
        warnings.append(f"rating ranges differ: source {lo_s:g}..{hi_s:g}, target {lo_t:g}..{hi_t:g}")

    user_of = users.lookup(target.users.external_ids)
    item_of = items.lookup(target.items.external_ids)
    target_ratings = target.ratings.copy()
    target_ratings["user"] = user_of[target.ratings["user"].to_numpy(np.int64)]
    target_ratings["item"] = item_of[target.ratings["item"].to_numpy(np.int64)]

    def build(ds: Dataset, ratings: pd.DataFrame) -> Dataset:
        return Dataset(
            name=ds.name, ratings=ratings.reset_index(drop=True), users=users, items=items,
            user_table=user_table, item_table=item_table, user_features=user_specs, item_features=item_specs,
            implicit=ds.implicit, warnings=ds.warnings,
        )

    src_name, tgt_name = source.name, target.name if target.name != source.name else f"{target.name} (target)"
    aligned_source = build(source, source.ratings)
    aligned_target = dataclasses.replace(build(target, target_ratings), name=tgt_name)
    description = (
        f"'{src_name}' (source, {len(source.ratings)} ratings) and '{tgt_name}' (target, {len(target.ratings)} ratings) "
        f"aligned on {len(users)} users and {len(items)} items"
    )
    return DomainSplit(aligned_source, aligned_target, description, tuple(warnings))


def _union_specs(a: tuple[FeatureSpec, ...], b: tuple[FeatureSpec, ...], name_a: str, name_b: str) -> tuple[FeatureSpec, ...]:
    """Feature specs of both datasets (``a``'s order, then ``b``'s new ones); a kind clash is an error."""
    out = list(a)
    known = {s.name: s for s in a}
    for spec in b:
        other = known.get(spec.name)
        if other is None:
            out.append(spec)
            known[spec.name] = spec
        elif other.kind != spec.kind or (spec.kind == "multilabel" and other.separator != spec.separator):
            raise DataError(
                f"is {other.kind} (separator '{other.separator}') in '{name_a}' but {spec.kind} (separator "
                f"'{spec.separator}') in '{name_b}'; override the feature kind of one dataset so they agree",
                column=spec.name,
            )
    return tuple(out)


def _union_table(
    map_a: IdMap, table_a: pd.DataFrame, map_b: IdMap, table_b: pd.DataFrame, union: IdMap, specs: tuple[FeatureSpec, ...]
) -> tuple[pd.DataFrame, int]:
    """One side table over ``union``: ``table_a``'s values, ``table_b``'s where ``a`` has none; and the clash count."""
    n = len(union)
    columns = [s.name for s in specs]
    index = pd.RangeIndex(n)
    left = table_a.reindex(columns=columns).set_axis(np.arange(len(map_a)), axis=0).reindex(index)
    right = table_b.reindex(columns=columns).set_axis(union.lookup(map_b.external_ids), axis=0).reindex(index)
    conflicts = 0
    for column in columns:
        both = left[column].notna() & right[column].notna()
        if both.any():
            a = left.loc[both, column].map(normalise_id)
            b = right.loc[both, column].map(normalise_id)
            conflicts += int((a != b).sum())
    if not columns:
        return pd.DataFrame(index=index), 0
    merged = left.combine_first(right)[columns]
    return merged.reset_index(drop=True), conflicts


@dataclass(frozen=True)
class CrossDomainResult:
    """The two runs of :func:`train_cross_domain`: the source run and the target run started from it."""

    source: TrainResult
    target: TrainResult | None


def train_cross_domain(
    config: TrainConfig,
    split: DomainSplit,
    out_dir: str | Path,
    *,
    source_overrides: dict | None = None,
    text_vectors: np.ndarray | None = None,
    on_progress: Callable[[str, ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> CrossDomainResult:
    """Train on the source domain, then on the target domain starting from (and anchored to) the source weights.

    1. ``fit`` on ``split.source`` with ``config`` plus ``source_overrides``
       (default ``{"scenario": "warm"}``: every source user keeps training
       ratings and so an ID factor; pass e.g. ``{"lambda_meta": 0.0}`` for a
       pure transfer-phase pretraining). Written to ``out_dir/source``.
    2. ``fit`` on ``split.target`` with ``config`` and
       ``source_run=out_dir/source``: the target model starts from the source
       weights and ``L0 = lambda_l0·‖θ − θ_source‖²`` (L2-SP) keeps it near
       them. Written to ``out_dir/target``; its test metrics are the target
       domain's (e.g. new users with ``scenario="user-cold"``).

    Parameters
    ----------
    config
        Settings of the target run (and, with ``source_overrides``, of the source run).
    split
        From :func:`split_domains` or :func:`align_domains`.
    out_dir
        Directory for the two run directories ``source`` and ``target``.
    source_overrides
        Settings that differ for the source run.
    text_vectors
        Item text vectors; by default encoded once (cached) when ``config.use_text``
        is on and used by both runs, so the text adaptor has the same shape.
    on_progress
        Called as ``on_progress(domain, event)`` with ``domain`` ``"source"`` or ``"target"``.
    should_stop
        Checked at every step of both runs; a stopped source run skips the target run.

    Returns
    -------
    CrossDomainResult
        ``target`` is ``None`` when the source run was stopped.

    Raises
    ------
    ConfigError
        If ``config.source_run`` is already set (this function sets it).
    """
    if config.source_run:
        raise ConfigError("train_cross_domain sets source_run itself; leave it empty in the config")
    out = Path(out_dir)
    source_config = with_overrides(config, {"scenario": "warm", **(source_overrides or {})})
    if text_vectors is None and (config.use_text or source_config.use_text):
        # The two domains share the item table, so one encoding serves both runs.
        text_vectors = item_text_vectors(config if config.use_text else source_config, split.source)

    def relay(domain: str):
        return None if on_progress is None else (lambda event: on_progress(domain, event))

    source_result = fit(
        source_config, split.source, out_dir=out / "source", on_progress=relay("source"),
        should_stop=should_stop, text_vectors=text_vectors,
    )
    if source_result.stopped:
        log.info("source run stopped; the target run is not started")
        return CrossDomainResult(source_result, None)
    # The target shares the item index space, so the source's items have no target interactions: "auto" would read
    # them as brand-new items. The target run is for the target's new users.
    scenario = "user-cold" if config.scenario == "auto" else config.scenario
    target_config = with_overrides(config, {"source_run": str(out / "source"), "scenario": scenario})
    target_result = fit(
        target_config, split.target, out_dir=out / "target", on_progress=relay("target"),
        should_stop=should_stop, text_vectors=text_vectors,
    )
    return CrossDomainResult(source_result, target_result)


def evaluate_returning_users(
    target_run: str | Path,
    source_run: str | Path,
    target: Dataset,
) -> dict[str, float]:
    """Target-domain new users who are known from the source: scored with and without their source ID parameters.

    A target run trained by :func:`train_cross_domain` keeps, for users with no
    target training ratings, the ID factor and bias of the source run (they
    start there and get no target gradient, so L2-SP holds them). This scores
    the target run's held-out new users that have source ratings twice on the
    run's own split: as strangers (features, the meta-learned start and their
    K support ratings: what ``fit`` reports) and as returning customers (the
    same, plus their source ID factor and bias).

    Parameters
    ----------
    target_run, source_run
        Run directories (``out_dir/target`` and ``out_dir/source``).
    target
        The target dataset the target run was trained on.

    Returns
    -------
    dict
        ``n_users``, ``n_query``, and ``mae``, ``rmse``, ``ndcg@3`` for ``new_*``
        (without ID parameters) and ``returning_*`` (with). Empty when no
        evaluated user is known from the source.
    """
    run = load_run(target_run)
    if run.meta.get("fingerprint") != target.fingerprint:
        raise DataError(f"run '{target_run}' was not trained on dataset '{target.name}' (fingerprints differ); pass the target dataset of that run")
    config = run.config
    if config.scenario not in ("user-cold", "both-cold"):
        raise ConfigError(
            f"returning users are new users of the target domain; run '{target_run}' has scenario "
            f"'{config.scenario}', not user-cold or both-cold"
        )
    source_known = load_weights(Path(source_run)).get("user_known")
    if source_known is None or source_known.shape != run.model.user_known.shape:
        raise DataError(f"run '{source_run}' does not match run '{target_run}' (different users); pass the source run of this target run")
    split = split_cold_start(
        target,
        SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed),
    )
    # The split's new users who rated in the source (fit marks them known from the source run).
    returning = np.intersect1d(np.flatnonzero(source_known.numpy()), np.asarray(split.cold_users, dtype=np.int64))
    query = split.query[split.query["user"].isin(returning)]
    if len(query) == 0:
        return {}
    support = split.support[split.support["user"].isin(returning)]
    out: dict[str, float] = {"n_users": float(query["user"].nunique()), "n_query": float(len(query))}
    rating_range = run.rating_range
    for label, warm in (("new", False), ("returning", True)):
        model = run.model
        if warm:
            with torch.no_grad():
                model.user_known[torch.as_tensor(returning, dtype=torch.long)] = True
        tasks, positions = tasks_from_frames(support, query, warm=warm)
        predictions = predict_tasks(model, run.inner_lr, config, tasks, run.context, run.loss).reshape(-1)[positions]
        out.update({f"{label}_{k}": v for k, v in query_metrics(query, predictions, run.loss, rating_range).items()})
    return out
