"""Evaluation: a trained run and the baselines on the same cold-start splits, across K shots and seeds.

One harness serves the app, the CLI and the benchmarks. For every seed and every
K in ``shots`` the dataset is split with
``split_cold_start(dataset, SplitConfig(scenario, cold_fraction, support_size=K, seed))``;
each evaluated user adapts on their K support ratings and is scored on their
query ratings. The support of K shots is the first K of the user's seeded
support order, so the 3-shot support is part of the 5-shot one; the query is
every other usable rating, so it shrinks a little as K grows (users with fewer
than K + 1 usable ratings are excluded and counted in :attr:`EvaluationResult.splits`).

Methods compared on each split:

* the run (adapted with the core's ``adapt`` via :func:`metarec_core.training.predict_tasks`,
  the run's own inner steps, scope and learned inner learning rates);
* the run with no adaptation (``inner_steps = 0``: the meta-learned starting point);
* baselines fitted on the split's training rows (:data:`BASELINES`); the
  ``mf`` baseline's fold-in penalties are chosen first on validation users
  drawn from the training users as ``fit`` draws its own (:func:`mf_validation`).

A trained run is evaluated **only on its own split** (its ``seed``,
``cold_fraction`` and ``scenario``): another seed would put users the run was
trained on among the test users. Mean ± std over seeds therefore comes from
one run per seed, combined with :meth:`EvaluationResult.concat`.

Metrics (see :mod:`metarec_core.metrics` for exact definitions):

* explicit ratings: ``mae``, ``rmse`` (pooled over query ratings),
  ``mae_per_user`` (averaged over users), ``ndcg@k`` for each k of ``ks``
  (within each user's query set, gain ``2^r − 1``), and over the full catalogue
  (every item except those the user rated outside the query):
  ``catalogue_ndcg@10`` (gains ``2^r − 1`` of the query ratings),
  ``recall@10`` and ``hit_rate@10`` (relevant = query items rated
  ``>= relevant_rating``, 4 by default; users with no such item are left out);
* implicit data: ``auc`` (per user over the catalogue: query items against
  every item the user never interacted with, averaged over users) and the
  catalogue metrics with every query item relevant.

Predictions of explicit ratings are clipped to the range of training ratings
before any metric, as the recommender does when it ranks items; tied scores
count in expectation (see :mod:`metarec_core.metrics`).

Examples
--------
>>> result = evaluate_run("runs/demo", dataset, EvaluationConfig(shots=(1, 5, 10)))  # doctest: +SKIP
>>> result.table(["mae", "ndcg@3"])  # doctest: +SKIP
>>> result.shots_curve("mae")  # doctest: +SKIP
>>> result.per_user(result.methods[0], 10)  # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec_core.artifacts import LoadedRun, load_run
from metarec_core.baselines import (
    ALSFits, Baseline, GenreBaseline, GlobalMean, ItemMean, MatrixFactorization, MFConfig, tune_fold_in,
)
from metarec_core.dataset import Dataset
from metarec_core.device import cpu_threads, flush_denormals
from metarec_core.errors import ConfigError, DataError
from metarec_core.evaluation_report import _EXPLICIT_ONLY, BASELINES, PER_USER_COLUMNS, RESULT_COLUMNS, EvaluationConfig, EvaluationResult
from metarec_core.metrics import (
    auc,
    catalogue_metrics_per_user,
    mae,
    mean_ndcg_at_ks,
    per_user,
    rmse,
)
from metarec_core.splits import ColdStartSplit, SplitConfig, split_cold_start
from metarec_core.tasks import TaskBatch, catalogue_tasks, tasks_from_frames
from metarec_core.train_config import TrainConfig
from metarec_core.training_data import TrainingData, prepare_data

log = logging.getLogger(__name__)

__all__ = ["UnadaptedScores", "evaluate_baselines", "evaluate_run", "evaluate_split", "mf_validation", "run_label"]


def run_label(run: LoadedRun) -> str:
    """A method name for a run from its objective: ``meta+transfer``, ``meta only`` or ``transfer only``."""
    return {"both": "meta+transfer", "meta": "meta only", "transfer": "transfer only"}[run.config.kind]


# --------------------------------------------------------------------------- scoring


class UnadaptedScores:
    """Each user's catalogue scores from a run's starting point (no adaptation), kept across the splits of one evaluation.

    Before adaptation a user's scores do not depend on the support set (an
    empty support keeps the starting point, as ``inner_steps = 0`` does), so
    the splits of several K, which share their new users, score them once.
    The scores serve the "no adaptation" method and every adapting run's
    per-user metric before adaptation. Keyed by run and scenario; kept in
    float32, the precision of the model's scores.
    """

    def __init__(self) -> None:
        self._kept: list[tuple[LoadedRun, str, np.ndarray, np.ndarray]] = []  # run, scenario, sorted users, their rows

    def get(self, run: LoadedRun, scenario: str, users: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """The ``(len(users), n_items)`` scores of ``users``, computing (``compute(users)``) only those not kept."""
        users = np.asarray(users, dtype=np.int64)
        at = next((i for i, (r, sc, _, _) in enumerate(self._kept) if r is run and sc == scenario), None)
        known, rows = (self._kept[at][2], self._kept[at][3]) if at is not None else (np.zeros(0, np.int64), None)
        missing = np.setdiff1d(users, known)
        if len(missing):
            new = np.asarray(compute(missing), dtype=np.float32)  # the precision the model scores in: kept exactly
            known = np.concatenate([known, missing])
            rows = new if rows is None else np.concatenate([rows, new])
            order = np.argsort(known, kind="stable")
            known, rows = known[order], rows[order]
            entry = (run, scenario, known, rows)
            if at is None:
                self._kept.append(entry)
            else:
                self._kept[at] = entry
        return rows[np.searchsorted(known, users)].astype(np.float64)


class _Scorer:
    """One method: scores of every item for every evaluated user, after adapting on a support frame.

    ``scores(support, users)`` scores each user's whole catalogue ``(T, n_items)``;
    ``query_scores(support, query)`` scores only the rows of a query frame
    (the same numbers, for the per-user metric before adaptation, which reads
    only the query). ``adapts`` is False for methods that ignore the support
    set (their score before adaptation is their score after).
    """

    def __init__(
        self,
        name: str,
        scores: Callable[[pd.DataFrame, np.ndarray], np.ndarray],
        query_scores: Callable[[pd.DataFrame, pd.DataFrame], np.ndarray],
        *,
        adapts: bool = True,
    ) -> None:
        self.name = name
        self.scores = scores
        self.query_scores = query_scores
        self.adapts = adapts


def _baseline_scorer(name: str, model: Baseline) -> _Scorer:
    def scores(support: pd.DataFrame, users: np.ndarray) -> np.ndarray:
        return model.predict_catalogue(support, users)

    return _Scorer(name, scores, model.predict_tasks, adapts=not isinstance(model, (GlobalMean, ItemMean)))


def _run_scorer(
    name: str, run: LoadedRun, scenario: str, *, steps: int | None, unadapted: UnadaptedScores, chunk: int = 64,
) -> _Scorer:
    from metarec_core.scoring import predict_tasks

    config = run.config if steps is None else dataclasses.replace(run.config, inner_steps=steps)
    device = run.context.items.categorical.device
    n_items = len(run.items)
    warm = scenario in ("warm", "item-cold")
    inner_lr = run.inner_lr or run.config.inner_lr

    def predict(tasks: TaskBatch) -> np.ndarray:
        return predict_tasks(run.model, inner_lr, config, tasks.to(device), run.context, run.loss, chunk=chunk)

    def catalogue(support: pd.DataFrame, users: np.ndarray) -> np.ndarray:
        out = np.empty((len(users), n_items))
        out[...] = predict(catalogue_tasks(support, users, n_items, warm=warm)).reshape(len(users), n_items)
        return out

    def unadapted_scores(users: np.ndarray) -> np.ndarray:
        return unadapted.get(run, scenario, users, lambda missing: catalogue(support_of_none, missing))

    def scores(support: pd.DataFrame, users: np.ndarray) -> np.ndarray:
        return unadapted_scores(users) if steps == 0 else catalogue(support, users)

    def query_scores(support: pd.DataFrame, query: pd.DataFrame) -> np.ndarray:
        if len(support) == 0:  # the starting point: the kept catalogue scores at the query rows
            users, task = np.unique(query["user"].to_numpy(np.int64), return_inverse=True)
            return unadapted_scores(users)[task, query["item"].to_numpy(np.int64)]
        tasks, positions = tasks_from_frames(support, query, warm=warm)
        return np.asarray(predict(tasks).reshape(-1)[positions], dtype=np.float64)

    support_of_none = pd.DataFrame({"user": np.zeros(0, np.int64), "item": np.zeros(0, np.int64), "rating": np.zeros(0)})
    return _Scorer(name, scores, query_scores, adapts=steps != 0)


@dataclass(frozen=True)
class _SplitView:
    """A split reduced to what metrics need: evaluated users, query rows by task, seen items."""

    users: np.ndarray
    support: pd.DataFrame
    query: pd.DataFrame  # user, item, rating of each query row, in the order of the arrays below
    query_task: np.ndarray
    query_items: np.ndarray
    query_ratings: np.ndarray
    seen: np.ndarray  # (T, n_items) bool: rated outside the query (excluded from catalogue rankings)
    n_support: np.ndarray
    n_query: np.ndarray

    @classmethod
    def build(cls, split: ColdStartSplit, dataset: Dataset) -> "_SplitView":
        users = split.eval_users
        query = split.query
        q_users = query["user"].to_numpy(np.int64)
        task = np.searchsorted(users, q_users)
        items = query["item"].to_numpy(np.int64)
        support = split.support[split.support["user"].isin(users)]
        seen = np.zeros((len(users), dataset.n_items), dtype=bool)
        all_rows = dataset.ratings[dataset.ratings["user"].isin(users)]
        seen[np.searchsorted(users, all_rows["user"].to_numpy(np.int64)), all_rows["item"].to_numpy(np.int64)] = True
        seen[task, items] = False
        return cls(
            users=users,
            support=support,
            query=pd.DataFrame({"user": q_users, "item": items, "rating": query["rating"].to_numpy(np.float64)}),
            query_task=task,
            query_items=items,
            query_ratings=query["rating"].to_numpy(np.float64),
            seen=seen,
            n_support=np.bincount(np.searchsorted(users, support["user"].to_numpy(np.int64)), minlength=len(users)),
            n_query=np.bincount(task, minlength=len(users)),
        )


def _user_metric(view: _SplitView, scores: np.ndarray, *, implicit: bool) -> np.ndarray:
    """Each evaluated user's MAE on the query (explicit) or AUC over the catalogue (implicit), in task order."""
    t, items = view.query_task, view.query_items
    if implicit:
        rows, cols = np.nonzero(~view.seen)
        labels = np.zeros_like(view.seen)
        labels[t, items] = True
        _, values = per_user(auc, rows, labels[rows, cols].astype(np.float64), scores[rows, cols])
        return values
    return _query_mae(view, scores[t, items])


def _query_mae(view: _SplitView, predictions: np.ndarray) -> np.ndarray:
    """Each evaluated user's MAE over their query rows, in task order (``predictions`` aligned with the query rows)."""
    _, values = per_user(mae, view.query_task, view.query_ratings, predictions)
    return values


def _metrics(
    view: _SplitView, scores: np.ndarray, *, implicit: bool, config: EvaluationConfig
) -> tuple[dict[str, float], np.ndarray, int]:
    """All metrics of one method on one split, the per-user metric (MAE or AUC) and the users with a relevant item.

    ``scores`` are already clipped to the rating range on explicit data.
    """
    t, items, y = view.query_task, view.query_items, view.query_ratings
    pred = scores[t, items]
    out: dict[str, float] = {}
    user_values = _user_metric(view, scores, implicit=implicit)
    if implicit:
        finite = user_values[~np.isnan(user_values)]
        out["auc"] = float(finite.mean()) if len(finite) else float("nan")
    else:
        out["mae"] = mae(y, pred)
        out["rmse"] = rmse(y, pred)
        out["mae_per_user"] = float(user_values.mean())
        out.update({f"ndcg@{k}": value for k, value in mean_ndcg_at_ks(t, y, pred, config.ks).items()})
    k = config.catalogue_k
    liked = np.ones(len(t), dtype=bool) if implicit else y >= config.relevant_rating
    ndcg, recall, hit = catalogue_metrics_per_user(scores, view.seen, t, items, y, k, relevant=liked)
    has_liked = np.bincount(t[liked], minlength=len(view.users)) > 0
    recall, hit = recall[has_liked], hit[has_liked]
    out[f"catalogue_ndcg@{k}"] = float(np.nanmean(ndcg)) if np.isfinite(ndcg).any() else float("nan")
    out[f"recall@{k}"] = float(np.mean(recall)) if len(recall) else float("nan")
    out[f"hit_rate@{k}"] = float(np.mean(hit)) if len(hit) else float("nan")
    return out, user_values, len(recall)


# --------------------------------------------------------------------------- evaluation


def _check_run_split(run: LoadedRun, split: ColdStartSplit) -> None:
    """Refuse splits whose test users or items the run was trained on."""
    scenario = split.config.scenario
    users = split.eval_users
    if scenario in ("user-cold", "both-cold") and len(users):
        known = run.model.user_known.cpu().numpy()
        leaked = users[known[users]] if len(known) > users.max() else users[:0]
        if len(leaked):
            raise DataError(
                f"{len(leaked)} of the {len(users)} test users of this split (e.g. user index {int(leaked[0])}) were "
                f"training users of run '{run.run_dir}'; evaluate a run only on its own split "
                f"(seed {run.config.seed}, cold_fraction {run.config.cold_fraction}) or train a run for this split"
            )
    if scenario in ("item-cold", "both-cold") and len(split.query):
        known_items = run.model.item_known.cpu().numpy()
        q_items = np.unique(split.query["item"].to_numpy(np.int64))
        leaked = q_items[known_items[q_items]]
        if len(leaked):
            raise DataError(
                f"{len(leaked)} new item(s) of this split (e.g. item index {int(leaked[0])}) were trained on by run "
                f"'{run.run_dir}'; evaluate a run only on its own split (seed {run.config.seed})"
            )


def mf_validation(
    split: ColdStartSplit, dataset: Dataset, run_config: TrainConfig | None = None, shots: int | None = None,
) -> TrainingData | None:
    """The validation users on which the ``mf`` baseline chooses its fold-in penalties for one split.

    They are drawn from the split's training users exactly as ``fit`` draws
    its own (:func:`metarec_core.training_data.prepare_data` with the run's
    ``valid_fraction`` and ``seed``; without a run, the default
    :class:`~metarec_core.train_config.TrainConfig` with the split's seed),
    with ``shots`` support ratings each (default: the split's support size,
    else the run's ``eval_support_size``). ``None`` when no validation user
    can be drawn (``valid_fraction`` 0, ``shots`` 0 or too few ratings).
    """
    if run_config is None:
        c = split.config
        run_config = TrainConfig(scenario=c.scenario, cold_fraction=c.cold_fraction, seed=c.seed)
    k = split.config.support_size if shots is None else shots
    k = run_config.eval_support_size if k is None else int(k)
    if k < 1 or run_config.valid_fraction <= 0:
        return None
    data = prepare_data(dataclasses.replace(run_config, eval_support_size=k), dataset, split=split)
    return data if len(data.valid_query) else None


def _tuned_mf(
    split: ColdStartSplit, dataset: Dataset, run_config: TrainConfig | None, shots: int | None, warnings: list[str],
    fits: ALSFits,
) -> MatrixFactorization:
    """ALS fitted on the split's training rows, fold-in penalties chosen on :func:`mf_validation` users.

    ``fits`` keeps the ALS fits, so the splits of several K (same training rows) fit ALS once.
    """
    config = MFConfig()
    data = mf_validation(split, dataset, run_config, shots)
    if data is not None:
        config, _ = tune_fold_in(
            config, data.train, data.valid_support, data.valid_query, dataset.n_users, dataset.n_items, fits=fits,
        )
    elif shots != 0:
        warnings.append(
            f"baseline 'mf' kept its default fold-in penalties (K={shots}, seed {split.config.seed}): no validation "
            "users to choose them on (valid_fraction 0 or too few ratings per training user)"
        )
    return fits.fit(config, split.train, dataset.n_users, dataset.n_items)


def evaluate_split(
    split: ColdStartSplit,
    dataset: Dataset,
    config: EvaluationConfig | None = None,
    *,
    run: LoadedRun | None = None,
    label: str | None = None,
    shots: int | None = None,
    seed: int | None = None,
    fits: ALSFits | None = None,
    unadapted: UnadaptedScores | None = None,
) -> EvaluationResult:
    """Evaluate the chosen baselines (and optionally a run) on one given split.

    The building block of :func:`evaluate_run` and :func:`evaluate_baselines`,
    also usable on other protocols such as :func:`recbole_protocol_split`.

    Parameters
    ----------
    split
        Training rows (baselines are fitted on them), support and query.
    dataset
        The dataset the split came from.
    config
        Baselines, metric cut-offs (scenario, shots, seeds are taken from the split).
    run
        A loaded run to evaluate too; refused (:class:`DataError`) if it was
        trained on the split's test users (or, for new items, test items).
    label
        The run's method name (default :func:`run_label`).
    shots
        The K recorded in the results (default: the split's ``support_size``;
        missing (``<NA>``) when the support is "every rating not in the query").
    seed
        The seed recorded in the results (default: the split's).
    fits
        ALS fits to reuse and keep (:class:`~metarec_core.baselines.ALSFits`; default fresh ones).
    unadapted
        The run's scores before adaptation to reuse and keep (:class:`UnadaptedScores`; default fresh ones).

    Returns
    -------
    EvaluationResult
    """
    config = config or EvaluationConfig()
    split.check_nonempty()
    scenario = split.config.scenario
    shots = split.config.support_size if shots is None else shots
    seed = split.config.seed if seed is None else seed
    warnings: list[str] = []
    scorers: list[_Scorer] = []
    if run is not None:
        _check_run_split(run, split)
        name = label or run_label(run)
        unadapted = unadapted or UnadaptedScores()
        scorers.append(_run_scorer(name, run, scenario, steps=None, unadapted=unadapted))
        if config.no_adaptation:
            scorers.append(_run_scorer(f"{name}, no adaptation", run, scenario, steps=0, unadapted=unadapted))
    train = split.train
    view = _SplitView.build(split, dataset)
    empty = view.support.iloc[:0]
    rating_range = (float(train["rating"].min()), float(train["rating"].max())) if len(train) else dataset.rating_range
    user_ids = np.asarray(dataset.users.externals(view.users), dtype=object)
    rows, user_rows = [], []
    n_relevant = 0

    def fitted_baseline(bname: str) -> tuple[_Scorer | None, list[str]]:
        notes: list[str] = []
        if dataset.implicit and bname in _EXPLICIT_ONLY:
            return None, [f"baseline '{bname}' needs explicit ratings and was skipped on implicit data"]
        if bname == "mf":
            model = _tuned_mf(split, dataset, run.config if run is not None else None, shots, notes, fits or ALSFits())
        elif bname == "genre":
            genre = GenreBaseline.from_dataset(dataset)
            if genre.item_labels is None:
                return None, ["baseline 'genre' needs a categorical or multi-label item feature (such as genres) and was skipped"]
            model = genre.fit(train, dataset.n_users, dataset.n_items)
        else:
            model = BASELINES[bname]().fit(train, dataset.n_users, dataset.n_items)
        return _baseline_scorer(bname, model), notes

    def scores_of(scorer: _Scorer, support: pd.DataFrame) -> np.ndarray:
        raw = scorer.scores(support, view.users)
        if dataset.implicit:
            return raw
        own = raw.flags.owndata and raw.flags.writeable and raw.dtype == np.float64  # a fresh array: clip it in place
        return np.clip(raw, *rating_range, out=raw if own else None)

    def before_of(scorer: _Scorer) -> np.ndarray:
        if dataset.implicit:  # AUC ranks the whole catalogue
            return _user_metric(view, scores_of(scorer, empty), implicit=True)
        return _query_mae(view, np.clip(scorer.query_scores(empty, view.query), *rating_range))  # MAE reads the query only

    def record(name: str, measured: Future, user_before: np.ndarray | None) -> None:
        nonlocal n_relevant
        after, user_after, n_relevant = measured.result()
        rows.extend((name, scenario, shots, seed, metric, value) for metric, value in after.items())
        user_rows.append(pd.DataFrame({
            "method": name, "scenario": scenario, "shots": shots, "seed": seed,
            "user": view.users, "user_id": user_ids, "n_support": view.n_support, "n_query": view.n_query,
            "metric": "auc" if dataset.implicit else "mae",
            "before": user_after if user_before is None else user_before, "after": user_after,
        }))

    # A second thread fits the baselines while this one scores the run, then computes each method's metrics while
    # this one scores the next method (NumPy, SciPy and torch release the GIL in their kernels). One method's metrics
    # at most wait at a time, so at most two score matrices are alive.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="evaluation") as helper:
        baselines = [helper.submit(fitted_baseline, bname) for bname in config.baselines]
        waiting: tuple[str, Future, np.ndarray | None] | None = None

        def measure(scorer: _Scorer) -> None:
            nonlocal waiting
            scores = scores_of(scorer, view.support)
            user_before = before_of(scorer) if scorer.adapts else None
            if waiting is not None:
                record(*waiting)
            waiting = (scorer.name, helper.submit(_metrics, view, scores, implicit=dataset.implicit, config=config), user_before)

        for scorer in scorers:
            measure(scorer)
        for fitting in baselines:
            scorer, notes = fitting.result()
            warnings.extend(notes)
            if scorer is not None:
                measure(scorer)
        if waiting is not None:
            record(*waiting)
    frame = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    frame["shots"] = frame["shots"].astype("Int64")
    per_user_frame = pd.concat(user_rows, ignore_index=True) if user_rows else pd.DataFrame(columns=list(PER_USER_COLUMNS))
    per_user_frame["shots"] = per_user_frame["shots"].astype("Int64")
    splits = pd.DataFrame([{
        "scenario": scenario, "shots": shots, "seed": seed, "n_users": len(view.users), "n_query": len(split.query),
        "n_excluded": len(split.excluded), "n_users_relevant": n_relevant, "n_train": len(train),
    }])
    splits["shots"] = splits["shots"].astype("Int64")
    if len(split.excluded):
        warnings.append(
            f"{scenario}, K={shots}, seed {seed}: {len(split.excluded)} user(s) with too few ratings were not evaluated "
            f"({len(view.users)} were)"
        )
    resolved = dataclasses.replace(config, scenario=scenario, seeds=(seed,), cold_fraction=split.config.cold_fraction)
    return EvaluationResult(frame, per_user_frame, splits, resolved, tuple(warnings))


def _splits_for(
    dataset: Dataset, config: EvaluationConfig, scenario: str, cold_fraction: float, seeds: Sequence[int]
) -> list[tuple[int, int, ColdStartSplit]]:
    """One split per seed and K; the splits of one seed share one training frame when their training rows are equal."""
    out = []
    for seed in seeds:
        train = None
        for k in config.shots:
            split = split_cold_start(
                dataset, SplitConfig(scenario=scenario, cold_fraction=cold_fraction, support_size=k, seed=seed)
            )
            if train is not None and train.index.equals(split.train.index):
                split = dataclasses.replace(split, train=train)  # the same rows of the dataset: keep one copy
            train = split.train
            out.append((seed, k, split))
    return out


def _evaluate_all(
    jobs: list[tuple[int, int, ColdStartSplit]],
    dataset: Dataset,
    config: EvaluationConfig,
    *,
    run: LoadedRun | None,
    label: str | None,
    on_progress: Callable[[int, int], None] | None,
) -> EvaluationResult:
    results = []
    started = time.perf_counter()
    fits = ALSFits()  # the splits of one seed share their training rows: ALS is fitted once for all K
    unadapted = UnadaptedScores()  # and their new users: the run's starting point scores them once
    for done, (seed, k, split) in enumerate(jobs, start=1):
        if len(split.query) == 0:
            raise DataError(
                f"no user can be evaluated with K={k} shots (seed {seed}): every candidate user has at most {k} "
                "usable ratings; drop that K from shots or use a larger dataset"
            )
        results.append(evaluate_split(
            split, dataset, config, run=run, label=label, shots=k, seed=seed, fits=fits, unadapted=unadapted,
        ))
        log.info("evaluated K=%d seed %d (%d/%d) after %.1fs", k, seed, done, len(jobs), time.perf_counter() - started)
        if on_progress is not None:
            on_progress(done, len(jobs))
    combined = EvaluationResult.concat(results)
    seeds = tuple(dict.fromkeys(seed for seed, _, _ in jobs))
    return dataclasses.replace(combined, config=dataclasses.replace(combined.config, seeds=seeds))


def evaluate_run(
    run: str | Path | LoadedRun,
    dataset: Dataset,
    config: EvaluationConfig | None = None,
    *,
    label: str | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvaluationResult:
    """Evaluate a trained run, its no-adaptation variant and baselines on the run's own split, for every K.

    For each K of ``config.shots`` the dataset is split with the run's seed,
    cold fraction and scenario and ``support_size=K``; the cold users (and
    items) are checked to be exactly the run's held-out ones, so no test user
    was trained on. Each test user's K support ratings adapt the model (the
    run's inner steps and learned rates) and the query ratings are scored.

    Parameters
    ----------
    run
        A run directory or a :class:`~metarec_core.artifacts.LoadedRun`.
    dataset
        The dataset the run was trained on (its fingerprint must match the run's).
    config
        Shots, baselines and metric settings. ``scenario``, ``seeds`` and
        ``cold_fraction`` default to the run's and must equal them if given.
    label
        The run's method name (default :func:`run_label`).
    on_progress
        Called with ``(splits done, splits total)`` after each split.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    DataError
        If the dataset is not the run's, or the split does not reproduce the run's held-out users.
    ConfigError
        If the scenario, seeds or cold fraction differ from the run's.
    """
    config = config or EvaluationConfig()
    loaded = run if isinstance(run, LoadedRun) else load_run(run)
    tc = loaded.config
    expected = loaded.meta.get("fingerprint")
    if expected and dataset.fingerprint != expected:
        raise DataError(
            f"dataset '{dataset.name}' (fingerprint {dataset.fingerprint}) is not the data run '{loaded.run_dir}' was "
            f"trained on ('{loaded.meta.get('dataset_name', '?')}', fingerprint {expected}); pass the same dataset"
        )
    scenario = config.scenario or tc.scenario
    if scenario != tc.scenario:
        raise ConfigError(
            f"run '{loaded.run_dir}' was trained for the {tc.scenario} scenario; evaluating it as {scenario} would test "
            f"it on data it was trained on. Train a run with scenario={scenario}"
        )
    cold_fraction = tc.cold_fraction if config.cold_fraction is None else config.cold_fraction
    if not math.isclose(cold_fraction, tc.cold_fraction):
        raise ConfigError(
            f"run '{loaded.run_dir}' held out cold_fraction={tc.cold_fraction}; another fraction ({cold_fraction}) "
            "would test it on users it was trained on"
        )
    seeds = config.seeds or (tc.seed,)
    other = [s for s in seeds if s != tc.seed]
    if other:
        raise ConfigError(
            f"run '{loaded.run_dir}' can only be evaluated on its own split (seed {tc.seed}); with seed {other[0]} some "
            "test users were training users. Train one run per seed and combine them with EvaluationResult.concat"
        )
    jobs = _splits_for(dataset, config, scenario, cold_fraction, (tc.seed,))
    cold_users = loaded.meta.get("cold_users")
    cold_items = loaded.meta.get("cold_items")
    for _, k, split in jobs:
        for what, mine, theirs in (("users", split.cold_users, cold_users), ("items", split.cold_items, cold_items)):
            if theirs is not None and not np.array_equal(np.asarray(mine, np.int64), np.asarray(theirs, np.int64)):
                raise DataError(
                    f"the K={k} split does not hold out the same {what} as run '{loaded.run_dir}' "
                    f"({len(mine)} vs {len(theirs)}); the split code or the data changed since training — retrain the run"
                )
    notes: list[str] = []
    if scenario == "warm":
        jobs, notes = _held_out_queries(jobs, dataset, tc, cold_fraction)
    full = dataclasses.replace(config, scenario=scenario, seeds=(tc.seed,), cold_fraction=cold_fraction)
    with cpu_threads(tc.cpu_threads), flush_denormals():
        result = _evaluate_all(jobs, dataset, full, run=loaded, label=label, on_progress=on_progress)
    return dataclasses.replace(result, warnings=tuple(notes) + result.warnings)


def _held_out_queries(
    jobs: list[tuple[int, int, ColdStartSplit]], dataset: Dataset, tc: Any, cold_fraction: float
) -> tuple[list[tuple[int, int, ColdStartSplit]], list[str]]:
    """Warm scenario: keep only query rows the run never trained on.

    In a warm split the query depends a little on K (a user needs K support
    rows besides the query), so with K below the run's ``eval_support_size``
    some query rows can be rows the run trained on. Those are removed, and
    the count is reported.
    """
    own = split_cold_start(
        dataset, SplitConfig(scenario="warm", cold_fraction=cold_fraction, support_size=tc.eval_support_size, seed=tc.seed)
    )
    held_out = own.query.index
    out, notes = [], []
    for seed, k, split in jobs:
        keep = split.query.index.isin(held_out)
        if not keep.all():
            notes.append(
                f"warm, K={k}: {int((~keep).sum())} of {len(keep)} query rows were training rows of the run "
                f"(its split used K={tc.eval_support_size}) and are not evaluated"
            )
            split = dataclasses.replace(split, query=split.query[keep])
        out.append((seed, k, split))
    return out, notes


def evaluate_baselines(
    dataset: Dataset, config: EvaluationConfig | None = None, *, on_progress: Callable[[int, int], None] | None = None
) -> EvaluationResult:
    """Evaluate only the baselines, for every seed and K (no run, so any seed is allowed).

    ``scenario`` defaults to ``user-cold``, ``seeds`` to ``(0,)`` and ``cold_fraction`` to 0.2.
    """
    config = config or EvaluationConfig()
    full = dataclasses.replace(
        config,
        scenario=config.scenario or "user-cold",
        seeds=config.seeds or (0,),
        cold_fraction=0.2 if config.cold_fraction is None else config.cold_fraction,
        no_adaptation=False,
    )
    if not full.baselines:
        raise ConfigError("no baselines chosen; name at least one of " + ", ".join(BASELINES))
    jobs = _splits_for(dataset, full, full.scenario, full.cold_fraction, full.seeds)  # type: ignore[arg-type]
    return _evaluate_all(jobs, dataset, full, run=None, label=None, on_progress=on_progress)
