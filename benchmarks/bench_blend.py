"""Benchmark of a blend: the default run's predictions averaged with tuned ALS fold-in, the weight picked on validation users.

What an ensemble with the strongest simple baseline would add to the default on
the cold-start protocol of ``bench_cold_start.py`` (the same splits, seeds and
validation users). Per seed: ``fit`` with ``TrainConfig(seed=s)`` (validation
users held out); ALS k = 10 with biases and ridge fold-in, its fold-in
penalties tuned on the validation users (``tune_fold_in``); both predict the
validation users' query from their support, and the blend weight ``w`` of ALS
in ``(1 − w)·model + w·ALS`` is the one of ``--weights`` with the lowest
validation MAE. ALS is then refitted on every training row (as in
``bench_cold_start.py``) and the blend with that ``w`` scores the new users'
query. Reported: MAE and nDCG@3 of the default, ALS and the blend, and per-user
paired differences blend − default and blend − ALS (mean over seeds ±
√(Σ SE²)/n_seeds).

Usage::

    python benchmarks/bench_blend.py --dataset movielens-1m --seeds 0,1,2
    python benchmarks/bench_blend.py --dataset movielens-100k --seeds 0,1,2,3,4,5
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_cold_start as cold  # noqa: E402  (benchmarks/bench_cold_start.py: the same protocol and scoring)
from machine import code_version, machine, machine_line, write_report  # noqa: E402

from metarec_core.artifacts import load_run  # noqa: E402
from metarec_core.baselines import MatrixFactorization, MFConfig, tune_fold_in  # noqa: E402
from metarec_core.scoring import predict_tasks  # noqa: E402
from metarec_core.tasks import tasks_from_frames  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402
from metarec_core.training_data import prepare_data  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
WEIGHTS = tuple(round(0.1 * n, 1) for n in range(11))  # 0, 0.1, …, 1 (1: ALS alone)
METHODS = ("default", "ALS k=10 + fold-in, tuned", "blend, weight picked on validation users")


def one_seed(dataset, seed: int, weights: tuple[float, ...], workdir: Path) -> dict:
    """The three methods' scores on one split, and the blend weight chosen."""
    lo, hi = dataset.rating_range
    config = TrainConfig(seed=seed)
    data = prepare_data(config, dataset)
    started = time.perf_counter()
    fit(config, dataset, out_dir=workdir)
    fit_s = time.perf_counter() - started
    test_model = cold.model_predictions(workdir, data)
    run = load_run(workdir)
    tasks, positions = tasks_from_frames(data.valid_support, data.valid_query, warm=False)
    valid_model = predict_tasks(run.model, run.inner_lr, run.config, tasks, run.context, run.loss).reshape(-1)[positions]
    best, _ = tune_fold_in(MFConfig(n_factors=10, seed=seed), data.train, data.valid_support, data.valid_query,
                           dataset.n_users, dataset.n_items)
    valid_als = MatrixFactorization(best).fit(data.train, dataset.n_users, dataset.n_items).predict_tasks(
        data.valid_support, data.valid_query)
    test_als = MatrixFactorization(best).fit(data.split.train, dataset.n_users, dataset.n_items).predict_tasks(
        data.split.support, data.split.query)
    truth = data.valid_query["rating"].to_numpy(float)
    valid_mae = {w: float(np.mean(np.abs(np.clip((1 - w) * valid_model + w * valid_als, lo, hi) - truth))) for w in weights}
    weight = min(weights, key=lambda w: (valid_mae[w], w))
    scores = {
        METHODS[0]: cold.scores_of(data.split.query, test_model, dataset.rating_range),
        METHODS[1]: cold.scores_of(data.split.query, test_als, dataset.rating_range),
        METHODS[2]: cold.scores_of(data.split.query, (1 - weight) * test_model + weight * test_als, dataset.rating_range),
    }
    return {
        "weight": weight, "valid_mae": valid_mae, "fit_s": fit_s, "load": os.getloadavg()[0],
        "metrics": {m: {k: s[k] for k in ("mae", "rmse", "ndcg@3")} for m, s in scores.items()},
        "paired": {"blend - default": cold.paired(scores[METHODS[2]], scores[METHODS[0]]),
                   "blend - ALS": cold.paired(scores[METHODS[2]], scores[METHODS[1]])},
    }


def summary(values: list[float]) -> str:
    """Mean ± std (ddof = 1) of per-seed values."""
    mean, std = cold.mean_std(values)
    return f"{mean:.4f} ± {std:.4f}" if len(values) > 1 else f"{mean:.4f}"


def render(report: dict) -> str:
    """The Markdown report."""
    seeds = report["per_seed"]
    lines = [
        f"# A blend of the default with tuned ALS fold-in on {report['dataset']}: new users, 10-shot", "",
        f"Written by `benchmarks/bench_blend.py --dataset {report['dataset']} --seeds {','.join(seeds)}` on "
        f"{report['date']} at commit {report['code']['commit']}. Machine: {report['machine_line']}. Load average (1 min) "
        f"{report['load_start']:.2f} at the start, {report['load_end']:.2f} at the end. Total {report['total_s'] / 60:.1f} min.",
        "", "Protocol: as `bench_cold_start.py` (same splits and validation users). The blend is "
        "`(1 − w)·default + w·ALS`, `w` from " + ", ".join(f"{w:g}" for w in report["weights"]) +
        " with the lowest validation MAE; ALS's fold-in penalties tuned on the same validation users, then refitted on every "
        "training row. Mean ± std over seeds.", "",
        "| method | MAE | RMSE | nDCG@3 |", "|---|---|---|---|",
    ]
    for m in METHODS:
        lines.append(f"| {m} | " + " | ".join(summary([s["metrics"][m][k] for s in seeds.values()]) for k in ("mae", "rmse", "ndcg@3")) + " |")
    lines += ["", "Paired per user (negative ΔMAE and positive ΔnDCG@3 favour the blend); mean over seeds ± √(Σ SE²)/n_seeds:", "",
              "| difference | ΔMAE | ΔnDCG@3 |", "|---|---|---|"]
    for name in ("blend - default", "blend - ALS"):
        cells = []
        for key in ("user_mae", "user_ndcg@3"):
            diffs = [s["paired"][name][f"{key}_diff"] for s in seeds.values()]
            errors = [s["paired"][name][f"{key}_se"] for s in seeds.values()]
            cells.append(f"{np.mean(diffs):+.4f} ± {math.sqrt(sum(e * e for e in errors)) / len(errors):.4f}")
        lines.append(f"| {name.replace(' - ', ' − ')} | {cells[0]} | {cells[1]} |")
    lines += ["", "| seed | w picked | validation MAE at w / at 0 | default MAE / nDCG@3 | ALS | blend | blend − default ΔMAE / ΔnDCG@3 |",
              "|---|---|---|---|---|---|---|"]
    for seed, s in seeds.items():
        mm = s["metrics"]
        p = s["paired"]["blend - default"]
        lines.append(
            f"| {seed} | {s['weight']:g} | {s['valid_mae'][str(s['weight'])]:.4f} / {s['valid_mae'][str(0.0)]:.4f} | "
            + " | ".join(f"{mm[m]['mae']:.4f} / {mm[m]['ndcg@3']:.4f}" for m in METHODS)
            + f" | {p['user_mae_diff']:+.4f} ± {p['user_mae_se']:.4f} / {p['user_ndcg@3_diff']:+.4f} ± {p['user_ndcg@3_se']:.4f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=cold.DATASETS, default="movielens-1m")
    parser.add_argument("--seeds", default="0,1,2", help="split seeds, comma-separated")
    parser.add_argument("--out", default=None, help="output path without extension (default benchmarks/results/blend_<data>)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = cold.load_dataset(args.dataset)
    load_start, started = os.getloadavg()[0], time.perf_counter()
    per_seed = {}
    with tempfile.TemporaryDirectory(prefix="bench_blend_") as tmp:
        for seed in seeds:
            s = one_seed(dataset, seed, WEIGHTS, Path(tmp) / f"default-{seed}")
            s["valid_mae"] = {str(w): v for w, v in s["valid_mae"].items()}
            per_seed[str(seed)] = s
            print(f"seed {seed}: w {s['weight']:g}  " + "  ".join(
                f"{m[:7]} {v['mae']:.4f}/{v['ndcg@3']:.4f}" for m, v in s["metrics"].items()), flush=True)
    report = {
        "dataset": args.dataset, "weights": list(WEIGHTS), "per_seed": per_seed,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
        "machine_line": machine_line(), "code": code_version(), "load_start": load_start, "load_end": os.getloadavg()[0],
        "total_s": time.perf_counter() - started,
    }
    short = {"movielens-1m": "ml1m", "movielens-100k": "ml100k"}[args.dataset]
    write_report(args.out or RESULTS / f"blend_{short}", report, render(report))


if __name__ == "__main__":
    main()
