"""Benchmark of cold-start quality on new users (user-cold, 10-shot): the default training run against tuned baselines and outside peers.

Protocol. For each seed ``s`` the default ``TrainConfig(seed=s)`` fixes the
split: ``prepare_data(config, dataset)`` holds out ``cold_fraction`` of the
users as new users, each with ``eval_support_size`` random ratings as support
and every other rating as query, and carves ``valid_fraction`` of the training
users out as validation users (support of the same size, rest as query). Every
method below runs on that same split:

* ``fit`` with the default ``TrainConfig()`` and its ``lambda_meta=0``
  ablation (transfer only). ``fit`` learns from the training users minus the
  validation users and chooses its epoch on the validation users. Its
  per-user predictions come from the saved run (``load_run``) scored exactly as
  ``metarec_core.scoring.evaluate_held_out`` scores it; the script checks that
  their MAE is ``final_metrics['test_mae']``.
* the bias baseline, shrinkage constants chosen by ``tune_bias`` (its grid) by
  validation MAE on those validation users, then refitted on every training row;
* ALS k=10 with biases and ridge fold-in, fold-in penalties chosen by
  ``tune_fold_in`` (its grid) by validation MAE on those validation users, then
  refitted on every training row;
* outside peers, when installed (never dependencies of the project; a row is
  skipped with a note otherwise): LensKit's ``BiasedMFScorer`` (ALS, k=10,
  new users folded in from their support ratings), regularisation and bias
  damping chosen by validation MAE on the same validation users, refitted on
  every training row; Surprise's ``SVD`` (no fold-in: trained on the
  training rows plus the new users' support), regularisation chosen on the
  training users only (trained on the training rows without the validation
  users plus their support, scored on their query), retrained on the
  training rows plus the new users' support.

Predictions are clipped to the rating range. MAE is pooled over query ratings;
nDCG@3 is per user within the query set (gain 2^r - 1, ties averaged), averaged
over users. The report gives mean ± std over seeds and, for the default against
each other method, paired per-user differences on the same query users: per
seed the mean of (default − method) of per-user MAE and per-user nDCG@3 with
its standard error std/√n_users, and the mean over seeds.

Run from the repository root (one heavy job at a time on this machine)::

    python benchmarks/bench_cold_start.py --dataset movielens-1m --seeds 0,1,2
    python benchmarks/bench_cold_start.py --dataset movielens-100k --seeds 0,1,2
    python benchmarks/bench_cold_start.py --dataset movielens-100k --seeds 0 --num-epochs 1 --out /tmp/smoke  # smoke test
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core.artifacts import load_run  # noqa: E402
from metarec_core.baselines import (  # noqa: E402
    BIAS_GRID,
    FOLD_IN_GRID,
    BiasBaseline,
    MatrixFactorization,
    MFConfig,
    tune_bias,
    tune_fold_in,
    validation_mae,
)
from metarec_core.builtin import BUILTIN_DATASETS, load_builtin  # noqa: E402
from metarec_core.configs import config_to_dict  # noqa: E402
from metarec_core.dataset import Dataset  # noqa: E402
from metarec_core.metrics import mae, mean_ndcg_at_k, ndcg_per_user, per_user, rmse  # noqa: E402
from metarec_core.scoring import predict_tasks, query_metrics  # noqa: E402
from metarec_core.tasks import tasks_from_frames  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402
from metarec_core.training_data import TrainingData, prepare_data  # noqa: E402

from machine import code_version, machine, machine_line, write_report  # noqa: E402  (benchmarks/machine.py)

RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {"movielens-1m": ("ML-1M", "cold_start_ml1m"), "movielens-100k": ("ML-100K", "cold_start_ml100k")}
DEFAULT = "default TrainConfig (fit)"
TRANSFER = "lambda_meta=0 (transfer only)"
BIAS = "bias, shrinkage tuned"
ALS = "ALS k=10 + fold-in, penalties tuned"
LENSKIT = "LensKit BiasedMF (ALS k=10) + fold-in, tuned"
SURPRISE = "Surprise SVD, retrained on train + support, tuned"
#: Short names of the methods, for ``--methods``.
METHOD_KEYS = {"default": DEFAULT, "transfer": TRANSFER, "bias": BIAS, "als": ALS, "lenskit": LENSKIT, "surprise": SURPRISE}
#: LensKit BiasedMFScorer settings searched on the validation users (every pair; one ALS fit each).
LENSKIT_GRID = {"regularization": (0.03, 0.1, 0.3, 1.0), "damping": (2.0, 5.0, 10.0, 25.0)}
#: Surprise SVD regularisation searched on the training users (one fit each; other settings Surprise's defaults).
SURPRISE_GRID = {"reg_all": (0.02, 0.05, 0.1, 0.2)}


# --------------------------------------------------------------------------- data


def load_dataset(name: str) -> Dataset:
    """A built-in dataset by name (fetched once, then cached)."""
    if name in BUILTIN_DATASETS:
        return load_builtin(name)
    raise SystemExit(f"error: unknown dataset '{name}'; choose one of {', '.join(DATASETS)}")


# --------------------------------------------------------------------------- scoring


def scores_of(split_query: pd.DataFrame, predictions: np.ndarray, rating_range: tuple[float, float]) -> dict[str, object]:
    """Pooled metrics and per-user MAE / nDCG@3 (users in increasing order) of query-aligned predictions."""
    p = np.clip(np.asarray(predictions, dtype=np.float64), *rating_range)
    y = split_query["rating"].to_numpy(np.float64)
    users = split_query["user"].to_numpy(np.int64)
    ids, user_mae = per_user(mae, users, y, p)
    ids_n, user_ndcg = ndcg_per_user(users, y, p, 3)
    assert np.array_equal(ids, ids_n)
    return {
        "mae": mae(y, p), "rmse": rmse(y, p), "ndcg@3": mean_ndcg_at_k(users, y, p, 3),
        "users": ids, "user_mae": user_mae, "user_ndcg@3": user_ndcg,
    }


def model_predictions(run_dir: Path, data: TrainingData) -> np.ndarray:
    """The saved run's predictions of the split's query rows, computed as ``scoring.evaluate_held_out`` does."""
    run = load_run(run_dir)
    warm = run.config.scenario in ("warm", "item-cold")
    tasks, positions = tasks_from_frames(data.split.support, data.split.query, warm=warm)
    out = predict_tasks(run.model, run.inner_lr, run.config, tasks, run.context, run.loss)
    return out.reshape(-1)[positions]


def run_fit(config: TrainConfig, dataset: Dataset, data: TrainingData, workdir: Path) -> tuple[np.ndarray, dict]:
    """Train one configuration, check its split and test metrics, and return its query predictions."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = fit(config, dataset, out_dir=workdir)
    wall = time.perf_counter() - t0
    if tuple(int(u) for u in data.split.cold_users) != tuple(result.artifacts.cold_users):
        raise AssertionError("the cold users of the trained run differ from the benchmark's split")
    predictions = model_predictions(workdir, data)
    m = result.final_metrics
    again = query_metrics(data.split.query, predictions, result.artifacts.loss, result.artifacts.rating_range)
    if abs(again["mae"] - m["test_mae"]) > 1e-6 or abs(again["ndcg@3"] - m["test_ndcg@3"]) > 1e-6:
        raise AssertionError(f"per-user predictions do not reproduce fit's test metrics ({again} vs {m})")
    info = {
        "wall_s": wall, "load_before": load, "epochs": result.epochs_completed,
        "best_epoch": m.get("best_epoch"), "valid_mae": m.get("valid_mae"), "valid_ndcg@3": m.get("valid_ndcg@3"),
        "test_mae_of_fit": m["test_mae"],
    }
    return predictions, info


def run_bias(dataset: Dataset, data: TrainingData) -> tuple[np.ndarray, dict]:
    """Bias baseline: shrinkage tuned by validation MAE on the validation users, refitted on every training row."""
    t0 = time.perf_counter()
    best, table = tune_bias(
        data.train, data.valid_support, data.valid_query, dataset.n_users, dataset.n_items, objective=validation_mae,
    )
    model = BiasBaseline(best).fit(data.split.train, dataset.n_users, dataset.n_items)
    predictions = model.predict_tasks(data.split.support, data.split.query)
    chosen = {k: getattr(best, k) for k in BIAS_GRID}
    return predictions, {"wall_s": time.perf_counter() - t0, "chosen": chosen, "valid_mae": min(v for _, v in table)}


def run_als(dataset: Dataset, data: TrainingData, seed: int) -> tuple[np.ndarray, dict]:
    """ALS k=10: fold-in penalties tuned by validation MAE on the validation users, refitted on every training row."""
    t0 = time.perf_counter()
    best, table = tune_fold_in(
        MFConfig(n_factors=10, seed=seed), data.train, data.valid_support, data.valid_query, dataset.n_users, dataset.n_items,
    )
    model = MatrixFactorization(best).fit(data.split.train, dataset.n_users, dataset.n_items)
    predictions = model.predict_tasks(data.split.support, data.split.query)
    chosen = {k: getattr(best, k) for k in FOLD_IN_GRID}
    return predictions, {"wall_s": time.perf_counter() - t0, "chosen": chosen, "valid_mae": min(v for _, v in table)}


# --------------------------------------------------------------------------- outside peers


def lenskit_peer() -> tuple[Callable | None, str]:
    """The LensKit row's runner, or None and why it is skipped."""
    try:
        import lenskit
        import lenskit.parallel
        from lenskit.als import BiasedMFScorer
        from lenskit.data import ItemList, RecQuery, from_interactions_df
        from lenskit.training import TrainingOptions
    except ImportError as exc:
        return None, f"LensKit row skipped: lenskit is not installed ({exc})"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lenskit.parallel.initialize(threads=1, backend_threads=1)  # one thread, like fit (it sets torch's too)

    def train(rows: pd.DataFrame, seed: int, regularization: float, damping: float) -> tuple:
        frame = rows[["user", "item", "rating"]].copy()
        model = BiasedMFScorer(embedding_size=10, regularization=regularization, damping=damping)
        model.train(from_interactions_df(frame, user_col="user", item_col="item", rating_col="rating"), TrainingOptions(rng=seed))
        return model, float(rows["rating"].mean())

    def predict(trained: tuple, support: pd.DataFrame, query: pd.DataFrame) -> np.ndarray:
        model, fallback = trained
        out = np.full(len(query), np.nan)
        s_items, s_ratings = support["item"].to_numpy(), support["rating"].to_numpy(np.float64)
        s_pos = support.groupby("user").indices
        q_items = query["item"].to_numpy()
        for user, rows in query.groupby("user").indices.items():
            s = s_pos.get(user, np.zeros(0, np.int64))
            history = ItemList(item_ids=s_items[s], rating=s_ratings[s])
            out[rows] = model(RecQuery(history_items=history), ItemList(item_ids=q_items[rows])).scores()
        return np.where(np.isfinite(out), out, fallback)  # items unseen in training: the mean rating

    def run(dataset: Dataset, data: TrainingData, seed: int) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        table = []
        for reg in LENSKIT_GRID["regularization"]:
            for damping in LENSKIT_GRID["damping"]:
                trained = train(data.train, seed, reg, damping)
                table.append(((reg, damping), validation_mae(data.valid_query, np.clip(
                    predict(trained, data.valid_support, data.valid_query), *dataset.rating_range))))
        (reg, damping), value = min(table, key=lambda pair: pair[1])
        final = train(data.split.train, seed, reg, damping)
        predictions = predict(final, data.split.support, data.split.query)
        chosen = {"regularization": reg, "damping": damping, "embedding_size": 10}
        return predictions, {"wall_s": time.perf_counter() - t0, "chosen": chosen, "valid_mae": value,
                             "version": lenskit.__version__}

    return run, ""


def surprise_peer() -> tuple[Callable | None, str]:
    """The Surprise row's runner, or None and why it is skipped."""
    try:
        import surprise
        from surprise import SVD, Reader
        from surprise import Dataset as SurpriseData
    except ImportError as exc:
        return None, f"Surprise row skipped: scikit-surprise is not installed ({exc})"

    def train(rows: pd.DataFrame, seed: int, reg_all: float, rating_range: tuple[float, float]):
        data = SurpriseData.load_from_df(rows[["user", "item", "rating"]], Reader(rating_scale=rating_range))
        algo = SVD(reg_all=reg_all, random_state=seed)
        algo.fit(data.build_full_trainset())
        return algo

    def predict(algo, query: pd.DataFrame) -> np.ndarray:
        """SVD's estimate for each query row, vectorised (unknown users or items drop their terms, as SVD does)."""
        ts = algo.trainset
        u = np.array([ts._raw2inner_id_users.get(x, -1) for x in query["user"].tolist()])
        i = np.array([ts._raw2inner_id_items.get(x, -1) for x in query["item"].tolist()])
        ku, ki = u >= 0, i >= 0
        est = np.full(len(query), ts.global_mean)
        est[ku] += algo.bu[u[ku]]
        est[ki] += algo.bi[i[ki]]
        both = ku & ki
        est[both] += np.einsum("nk,nk->n", algo.pu[u[both]], algo.qi[i[both]])
        lo, hi = ts.rating_scale
        est = np.clip(est, lo, hi)
        sample = range(min(50, len(query)))  # the vectorised form is Surprise's own predict
        ref = [algo.predict(query["user"].iloc[j], query["item"].iloc[j]).est for j in sample]
        np.testing.assert_allclose(est[: len(ref)], ref, rtol=1e-9, atol=1e-9)
        return est

    def run(dataset: Dataset, data: TrainingData, seed: int) -> tuple[np.ndarray, dict]:
        t0 = time.perf_counter()
        table = []
        valid_rows = pd.concat([data.train, data.valid_support], ignore_index=True)
        for reg in SURPRISE_GRID["reg_all"]:
            algo = train(valid_rows, seed, reg, dataset.rating_range)
            table.append((reg, validation_mae(data.valid_query, predict(algo, data.valid_query))))
        reg, value = min(table, key=lambda pair: pair[1])
        final = train(pd.concat([data.split.train, data.split.support], ignore_index=True), seed, reg, dataset.rating_range)
        predictions = predict(final, data.split.query)
        chosen = {"reg_all": reg, "n_factors": final.n_factors, "n_epochs": final.n_epochs, "lr_all": final.lr_bu}
        return predictions, {"wall_s": time.perf_counter() - t0, "chosen": chosen, "valid_mae": value,
                             "version": surprise.__version__}

    return run, ""


# --------------------------------------------------------------------------- summaries


def mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def paired(a: dict, b: dict) -> dict[str, float]:
    """Per-user (a − b) of MAE and nDCG@3 on the same query users: mean, SE = std/√n, n."""
    assert np.array_equal(a["users"], b["users"]), "paired differences need the same query users"
    out: dict[str, float] = {"n_users": int(len(a["users"]))}
    for key in ("user_mae", "user_ndcg@3"):
        d = np.asarray(a[key]) - np.asarray(b[key])
        d = d[np.isfinite(d)]
        out[f"{key}_diff"] = float(d.mean())
        out[f"{key}_se"] = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return out


def render(report: dict) -> str:
    """The Markdown report."""
    p = report["protocol"]
    seeds = report["seeds"]
    methods = report["methods"]
    code = report["code"]
    dirty = code["metarec_core_uncommitted"]
    lines = [
        f"# Cold-start quality on {report['dataset_label']}: new users (user-cold), {p['support']}-shot",
        "",
        f"Written by `benchmarks/bench_cold_start.py --dataset {report['dataset']} --seeds {','.join(map(str, seeds))}"
        f"{_override_args(report['overrides'])}` on {report['date']} "
        f"at commit {code['commit']}{' (uncommitted changes in ' + ', '.join(dirty) + ')' if dirty else ''}.",
        f"Machine: {report['machine_line']}. Load average (1 min) {report['load_start']:.2f} at the start and "
        f"{report['load_end']:.2f} at the end; the cores are shared, so wall times are upper bounds. "
        f"Total {report['total_s'] / 60:.1f} min.",
        "",
        "## Protocol",
        "",
        f"Data: {report['dataset_label']}, {p['n_users']} users, {p['n_items']} items, {p['n_ratings']} ratings. "
        f"For each seed s, `prepare_data(TrainConfig(seed=s), dataset)` makes the split every method uses: "
        f"{p['cold_fraction']:.0%} of the users are new, each with {p['support']} random ratings as support and the rest as "
        f"query; {p['valid_fraction']:.0%} of the training users are validation users (support {p['support']}, rest query). "
        "`fit` learns from the training users without the validation users and picks its epoch on them; its predictions "
        "are those of the saved run scored as `fit` scores its test users (their MAE equals `final_metrics['test_mae']`, "
        "checked). The baselines and peers choose their settings by validation MAE on the same validation users and are "
        "then refitted on every training row (Surprise SVD, which has no fold-in, is tuned on the training users and "
        "retrained on the training rows plus the new users' support). Predictions are clipped to the rating range. "
        "MAE is pooled over query ratings; nDCG@3 per user within the query set (gain 2^r − 1, ties averaged), averaged "
        f"over users. Mean ± std (ddof = 1) over seeds {', '.join(map(str, seeds))}.",
        "",
        "| method | MAE | RMSE | nDCG@3 | wall s | settings chosen (per seed) |",
        "|---|---|---|---|---|---|",
    ]
    for name in methods:
        rows = [report["per_seed"][str(s)][name] for s in seeds]
        cells = []
        for key in ("mae", "rmse", "ndcg@3", "wall_s"):
            m, sd = mean_std([r[key] for r in rows])
            digits = 1 if key == "wall_s" else 4
            cells.append(f"{m:.{digits}f}" + ("" if math.isnan(sd) else f" ± {sd:.{digits}f}"))
        chosen = "; ".join(
            f"seed {s}: " + ", ".join(f"{k} {v:g}" for k, v in r["chosen"].items()) for s, r in zip(seeds, rows) if r.get("chosen")
        )
        bold = "**" if name == DEFAULT else ""
        lines.append(f"| {bold}{name}{bold} | " + " | ".join(cells) + f" | {chosen or '–'} |")
    lines += [
        "",
        "## Paired differences, per user: default − method",
        "",
        "On the same query users: the difference of each user's MAE (negative: the default errs less) and of each "
        "user's nDCG@3 (positive: the default ranks better); per seed its mean ± standard error (std/√n_users), then the "
        "mean over seeds ± √(Σ SE²)/n_seeds. The mean of per-user MAE weighs every user equally, so it differs a little "
        "from the difference of pooled MAE.",
        "",
        "| method | " + " | ".join(f"seed {s}: ΔMAE / ΔnDCG@3" for s in seeds) + " | mean over seeds: ΔMAE / ΔnDCG@3 |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for name, c in report["paired"].items():
        cells = [
            f"{c['per_seed'][str(s)]['user_mae_diff']:+.4f} ± {c['per_seed'][str(s)]['user_mae_se']:.4f} / "
            f"{c['per_seed'][str(s)]['user_ndcg@3_diff']:+.4f} ± {c['per_seed'][str(s)]['user_ndcg@3_se']:.4f}"
            for s in seeds
        ]
        m = c["mean"]
        cells.append(
            f"{m['user_mae_diff']:+.4f} ± {m['user_mae_se']:.4f} / {m['user_ndcg@3_diff']:+.4f} ± {m['user_ndcg@3_se']:.4f}"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    sizes = report["splits"]
    lines += ["", "Split sizes per seed: " + "; ".join(
        f"seed {s}: {sizes[str(s)]['test_users']} new users ({sizes[str(s)]['query_rows']} query ratings), "
        f"{sizes[str(s)]['valid_users']} validation users, {sizes[str(s)]['train_rows']} training rows "
        f"({sizes[str(s)]['fit_train_rows']} without the validation users)"
        for s in seeds
    ) + "."]
    lines += [
        "",
        "## Per seed (MAE / nDCG@3 / wall s)",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for name in methods:
        cells = []
        for s in seeds:
            r = report["per_seed"][str(s)][name]
            cells.append(f"{r['mae']:.4f} / {r['ndcg@3']:.4f} / {r['wall_s']:.1f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    runs = [(s, name, report["per_seed"][str(s)][name]) for s in seeds for name in (DEFAULT, TRANSFER) if name in methods]
    if runs:
        lines += ["", "Training runs: " + "; ".join(
            f"seed {s} {name}: {r['epochs']} epochs, kept epoch {r['best_epoch']:g}, load {r['load_before']:.1f} before"
            for s, name, r in runs if r.get("best_epoch") is not None
        ) + "."]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report["overrides"]:
        lines += ["", f"**Settings overridden (--num-epochs, --set): {report['overrides']}; these are not the default configuration's figures.**"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def _override_args(overrides: dict) -> str:
    """The command-line options that set ``overrides`` (``--num-epochs``, ``--set``), as the report's command shows them."""
    return "".join(
        f" --num-epochs {v}" if k == "num_epochs" else f" --set {k}={json.dumps(v) if not isinstance(v, str) else v}"
        for k, v in overrides.items()
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="movielens-1m", choices=list(DATASETS), help="movielens-1m (default) or movielens-100k")
    parser.add_argument("--seeds", default="0,1,2", help="split seeds, comma-separated (at least 3 for a mean ± std)")
    parser.add_argument("--num-epochs", type=int, default=None, help="smoke tests only: override num_epochs of both runs (reported)")
    parser.add_argument("--no-peers", action="store_true", help="skip the LensKit and Surprise rows")
    parser.add_argument("--out", default=None, help="output path without extension (default benchmarks/results/cold_start_<data>)")
    parser.add_argument(
        "--methods", default=",".join(METHOD_KEYS),
        help=f"comma-separated methods to run, among {', '.join(METHOD_KEYS)} (default all; the default is always run)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig setting of both runs (repeatable; reported)")
    args = parser.parse_args(argv)
    wanted = {k.strip() for k in args.methods.split(",") if k.strip()} | {"default"}
    unknown = wanted - set(METHOD_KEYS)
    if unknown:
        parser.error(f"unknown method(s) {', '.join(sorted(unknown))}; choose among {', '.join(METHOD_KEYS)}")
    chosen = {METHOD_KEYS[k] for k in wanted}
    seeds = [int(s) for s in args.seeds.split(",")]
    label, stem = DATASETS[args.dataset]
    out = args.out or str(RESULTS / stem)
    overrides = {} if args.num_epochs is None else {"num_epochs": args.num_epochs}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key or not hasattr(TrainConfig, key):
            parser.error(f"--set needs KEY=VALUE with a TrainConfig setting as KEY, got '{item}'")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    torch.set_num_threads(1)  # scoring the saved runs; fit sets its own (TrainConfig.cpu_threads)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    dataset = load_dataset(args.dataset)
    notes: list[str] = []
    peers: dict[str, Callable] = {}
    if len(chosen) < len(METHOD_KEYS):
        notes.append(f"Only these methods were run (--methods): {', '.join(k for k in METHOD_KEYS if METHOD_KEYS[k] in chosen)}.")
    if args.no_peers:
        notes.append("Outside peers (LensKit, Surprise) were skipped (--no-peers).")
    else:
        for name, (runner, why) in ((LENSKIT, lenskit_peer()), (SURPRISE, surprise_peer())):
            if name not in chosen:
                continue
            if runner is None:
                notes.append(why)
            else:
                peers[name] = runner
    per_seed: dict[str, dict[str, dict]] = {}
    scores: dict[int, dict[str, dict]] = {}
    split_sizes: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench_cold_start_") as tmp:
        for seed in seeds:
            config = TrainConfig(**{**overrides, "seed": seed})
            data = prepare_data(config, dataset)
            data.split.check_nonempty()
            split_sizes[str(seed)] = {
                "train_rows": len(data.split.train), "fit_train_rows": len(data.train),
                "valid_users": int(data.valid_query["user"].nunique()), "test_users": int(data.split.query["user"].nunique()),
                "support_rows": len(data.split.support), "query_rows": len(data.split.query),
                "excluded_users": len(data.split.excluded),
            }
            jobs: list[tuple[str, Callable[[], tuple[np.ndarray, dict]]]] = [
                (DEFAULT, lambda: run_fit(config, dataset, data, Path(tmp) / f"default-{seed}")),
                (TRANSFER, lambda: run_fit(dataclasses.replace(config, lambda_meta=0.0), dataset, data, Path(tmp) / f"transfer-{seed}")),
                (BIAS, lambda: run_bias(dataset, data)),
                (ALS, lambda: run_als(dataset, data, seed)),
            ]
            jobs += [(name, (lambda r=runner: r(dataset, data, seed))) for name, runner in peers.items()]
            jobs = [(name, job) for name, job in jobs if name in chosen]
            per_seed[str(seed)], scores[seed] = {}, {}
            for name, job in jobs:
                predictions, info = job()
                s = scores_of(data.split.query, predictions, dataset.rating_range)
                scores[seed][name] = s
                per_seed[str(seed)][name] = {"mae": s["mae"], "rmse": s["rmse"], "ndcg@3": s["ndcg@3"], **info}
                print(f"seed {seed}  {name:52s} MAE {s['mae']:.4f}  nDCG@3 {s['ndcg@3']:.4f}  {info['wall_s']:.1f}s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    methods = list(per_seed[str(seeds[0])])
    paired_report: dict[str, dict] = {}
    for name in methods[1:]:
        rows = {str(s): paired(scores[s][DEFAULT], scores[s][name]) for s in seeds}
        mean = {}
        for key in ("user_mae", "user_ndcg@3"):
            mean[f"{key}_diff"] = float(np.mean([rows[str(s)][f"{key}_diff"] for s in seeds]))
            mean[f"{key}_se"] = float(math.sqrt(sum(rows[str(s)][f"{key}_se"] ** 2 for s in seeds)) / len(seeds))
        paired_report[name] = {"per_seed": rows, "mean": mean}
    c = TrainConfig()
    report = {
        "dataset": args.dataset, "dataset_label": label,
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "machine_line": machine_line(), "code": code_version(),
        "load_start": load_start, "load_end": os.getloadavg()[0], "total_s": time.perf_counter() - started,
        "seeds": seeds, "overrides": overrides, "methods": methods,
        "protocol": {
            "scenario": c.scenario, "cold_fraction": c.cold_fraction, "support": c.eval_support_size,
            "valid_fraction": c.valid_fraction, "n_users": dataset.n_users, "n_items": dataset.n_items,
            "n_ratings": len(dataset.ratings),
        },
        "train_config": config_to_dict(c),
        "grids": {"bias": {k: list(v) for k, v in BIAS_GRID.items()}, "als_fold_in": {k: list(v) for k, v in FOLD_IN_GRID.items()},
                  "lenskit": {k: list(v) for k, v in LENSKIT_GRID.items()}, "surprise": {k: list(v) for k, v in SURPRISE_GRID.items()}},
        "splits": split_sizes, "per_seed": per_seed, "paired": paired_report, "notes": notes,
    }
    write_report(out, report, render(report))


if __name__ == "__main__":
    main()
