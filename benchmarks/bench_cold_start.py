"""Benchmark of cold-start quality on ML-100K new users (user-cold, 10-shot): our training core against the baselines.

Protocol (the one in /work/shared/ANCHORS.md, the issue and the README): for each
seed ``s``, ``split_cold_start(ml100k, SplitConfig(scenario="user-cold",
cold_fraction=0.2, support_size=10, seed=s))``; every new user adapts on 10
random ratings (support) and is scored on the rest (query). MAE is pooled over
query ratings; nDCG@3 is computed per user within the query set (gain 2^r - 1,
ties averaged) and averaged over users. Predictions are clipped to the training
rating range by every method.

On the SAME split per seed this script runs:

* the simple baselines of ``metarec_core.baselines`` with their default
  settings (global mean, item mean, the bias model, ALS k=10 with ridge fold-in),
  fitted on ``split.train``;
* ``training.fit`` with the default :class:`TrainConfig` (meta + transfer) and
  three ablations: ``lambda_meta=0`` (transfer only), ``lambda_trans=0`` (meta
  only) and ``inner_steps=0`` (pretraining, no adaptation), the gradient inner
  loop, and the default once more from another initialisation on the same
  split (how far two runs that differ only by chance land apart: the yardstick
  for every gap). Their metrics are ``TrainResult.final_metrics['test_*']``.

The split ``fit`` builds internally is checked to be the one the baselines get
(same support and query rows, same cold users). ``fit`` holds out a further
``TrainConfig.valid_fraction`` of the training users for validation, so the baselines learn from slightly more
warm rows than the neural runs (the report gives both counts): a conservative
comparison for the neural model.

Run from the repository root (one heavy job at a time on this machine)::

    python benchmarks/bench_cold_start.py [--seeds 0,1,2,3,4,5] [--threads 1] [--extra-threads 2]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core.baselines import Baseline, BiasBaseline, GlobalMean, ItemMean, MatrixFactorization, MFConfig  # noqa: E402
from metarec_core.metrics import mae, mean_ndcg_at_k, rmse  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.splits import ColdStartSplit, SplitConfig, split_cold_start  # noqa: E402
from metarec_core.presets import GRADIENT_STEPS  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402
from metarec_core.training_data import prepare_data  # noqa: E402

from machine import code_version, machine, write_report  # noqa: E402  (benchmarks/machine.py, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT = "meta + transfer (default)"
#: A RUNS override that is not a TrainConfig field: train with seed + this on the seed's split.
INIT_OFFSET = "init_seed_offset"
#: The neural runs: command-line key -> (table name, overrides of the default TrainConfig).
RUNS: dict[str, tuple[str, dict]] = {
    "default": (DEFAULT, {}),
    "transfer-only": ("transfer only (λ1=0)", {"lambda_meta": 0.0}),
    "meta-only": ("meta only (λ2=0)", {"lambda_trans": 0.0}),
    "no-adapt": ("pretraining, no adaptation (inner_steps=0)", {"inner_steps": 0}),
    "gradient": ("gradient inner loop (5 MAML steps, the previous default)", GRADIENT_STEPS),
    # The default again on the same split from another initialisation (and validation draw):
    # how far two runs that differ only by chance land apart — the yardstick for every gap above.
    "other-init": ("default, another initialisation (init seed + 100, same split)", {INIT_OFFSET: 100}),
}
SAME_ROWS = " (fit's training rows)"
BASELINES = ("global mean", "item mean", "bias", "ALS k=10 + fold-in", "bias" + SAME_ROWS, "ALS k=10 + fold-in" + SAME_ROWS)
TARGETS = {"must": {"mae": 0.75, "ndcg@3": 0.71}, "aim": {"mae": 0.73, "ndcg@3": 0.72}, "wall_s": 45.0}





def make_baselines(seed: int) -> dict[str, Baseline]:
    """The simple baselines with their default settings (ALS seeded like the split)."""
    return {
        "global mean": GlobalMean(),
        "item mean": ItemMean(),
        "bias": BiasBaseline(),
        "ALS k=10 + fold-in": MatrixFactorization(MFConfig(seed=seed)),
    }


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    """Whether two frames hold the same rows (labels and user, item, rating values)."""
    cols = ["user", "item", "rating"]
    return len(a) == len(b) and a.index.equals(b.index) and a[cols].reset_index(drop=True).equals(b[cols].reset_index(drop=True))


def check_split(config: TrainConfig, dataset, split: ColdStartSplit) -> dict[str, object]:
    """Rebuild the split ``fit`` uses for ``config`` and compare it with the baselines' split; raises if they differ."""
    data = prepare_data(config, dataset)
    ok_query = same_rows(data.split.query, split.query)
    ok_support = same_rows(data.split.support, split.support)
    ok_users = np.array_equal(data.split.cold_users, split.cold_users)
    if not (ok_query and ok_support and ok_users):
        raise AssertionError(
            f"fit's split differs from the baselines' split (query {ok_query}, support {ok_support}, cold users {ok_users})"
        )
    return {"query_rows_equal": ok_query, "support_rows_equal": ok_support, "cold_users_equal": ok_users,
            "fit_train_rows": len(data.train), "baseline_train_rows": len(split.train)}


def run_baseline(model: Baseline, dataset, split: ColdStartSplit, train: pd.DataFrame | None = None) -> dict[str, float]:
    """Fit one baseline on the split's training rows (or ``train``) and score the split's query."""
    t0 = time.perf_counter()
    model.fit(split.train if train is None else train, dataset.n_users, dataset.n_items)
    scores = model.predict_tasks(split.support, split.query)
    wall = time.perf_counter() - t0
    users = split.query["user"].to_numpy(np.int64)
    y = split.query["rating"].to_numpy(np.float64)
    return {"mae": mae(y, scores), "rmse": rmse(y, scores), "ndcg@3": mean_ndcg_at_k(users, y, scores, 3), "wall_s": wall}


def run_fit(config: TrainConfig, dataset, split: ColdStartSplit, *, given_split: bool = False) -> dict[str, float]:
    """Train and evaluate one configuration; checks the result's cold users against the split.

    ``given_split`` hands ``split`` to ``fit`` (whose seed then only sets the
    initialisation and the validation users) instead of letting it split by seed.
    """
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = fit(config, dataset, split=split if given_split else None)
    wall = time.perf_counter() - t0
    threads = torch.get_num_threads()  # what fit ran with (it applies config.cpu_threads)
    if tuple(int(u) for u in split.cold_users) != tuple(result.artifacts.cold_users):
        raise AssertionError("the cold users of the trained run differ from the baselines' split")
    m = result.final_metrics
    return {
        "mae": m["test_mae"], "rmse": m["test_rmse"], "ndcg@3": m["test_ndcg@3"], "wall_s": wall,
        "valid_mae": m.get("valid_mae", float("nan")), "valid_ndcg@3": m.get("valid_ndcg@3", float("nan")),
        "epochs": result.epochs_completed, "best_epoch": m.get("best_epoch", float("nan")), "torch_threads": threads, "load_before": load,
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1) over seeds of each method's metrics."""
    methods = list(next(iter(per_seed.values())))
    out: dict[str, dict[str, float]] = {}
    for name in methods:
        row: dict[str, float] = {}
        for key in ("mae", "rmse", "ndcg@3", "wall_s"):
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([per_seed[s][name][key] for s in per_seed])
        out[name] = row
    return out


def compare(per_seed: dict[int, dict[str, dict[str, float]]], against: str) -> dict[str, object]:
    """The default run against one other method: mean paired difference and seeds won, per metric."""
    seeds = list(per_seed)
    out: dict[str, object] = {}
    for key, lower_better in (("mae", True), ("ndcg@3", False)):
        diffs = [per_seed[s][DEFAULT][key] - per_seed[s][against][key] for s in seeds]
        wins = sum((d < 0) if lower_better else (d > 0) for d in diffs)
        mean, std = mean_std(diffs)
        better = mean < 0 if lower_better else mean > 0
        out[key] = {"diff_mean": mean, "diff_std": std, "seeds_won": int(wins), "n_seeds": len(seeds), "better_on_mean": bool(better)}
    return out


def verdict_line(name: str, c: dict[str, object]) -> str:
    parts = []
    for key, label in (("mae", "MAE"), ("ndcg@3", "nDCG@3")):
        d = c[key]
        word = "beats it, better" if d["better_on_mean"] else "does NOT beat it, worse"
        parts.append(f"{label}: {word} by {abs(d['diff_mean']):.4f} (default − it = {d['diff_mean']:+.4f} ± {d['diff_std']:.4f}, better on {d['seeds_won']}/{d['n_seeds']} seeds)")
    return f"- vs **{name}** — " + "; ".join(parts) + "."


def render(report: dict) -> str:
    """The Markdown report."""
    seeds = report["seeds"]
    per_seed = {int(k): v for k, v in report["per_seed"].items()}
    summary = report["summary"]
    m = report["machine"]
    lines = [
        "# Cold-start quality on ML-100K: new users (user-cold), 10-shot",
        "",
        f"Written by `benchmarks/bench_cold_start.py` on {report['date']} at commit {report['code']['commit']}"
        f"{' (uncommitted changes in ' + ', '.join(report['code']['metarec_core_uncommitted']) + ')' if report['code']['metarec_core_uncommitted'] else ''}. Machine: {m['cpu']}, nproc {m['nproc']}, "
        f"Python {m['python']}, torch {m['torch']}; torch threads {report['torch_threads']} (`TrainConfig.cpu_threads`) "
        f"(interop {report['torch_interop_threads']}); load average at start {report['load_at_start']:.2f} "
        "(other engineers share the 2 cores, so wall times are upper-ish bounds).",
        "",
        "Protocol: `split_cold_start(ml100k, SplitConfig(scenario='user-cold', cold_fraction=0.2, support_size=10, seed=s))` "
        "— 20% of users are new, each adapts on 10 random ratings (support), scored on the rest (query). MAE pooled over "
        "query ratings; nDCG@3 per user within the query set (gain 2^r−1, ties averaged), averaged over users. "
        f"Mean ± std (ddof=1) over seeds {', '.join(map(str, seeds))}. Baselines use their default settings, fitted on "
        "`split.train` (rows marked *fit's training rows* get exactly the rows `fit` trains on: `split.train` minus "
        f"its {report['valid_fraction']:.0%} validation users); neural runs are `training.fit` with the default `TrainConfig` (plus the named override), "
        "metrics = `final_metrics['test_*']`. Wall time = the whole `fit` call (prepare, train, validate, test) or "
        "baseline fit + predict.",
        "",
        "Split check: for every run the split `fit` builds (`prepare_data(config, dataset).split`) has exactly the "
        "support and query rows (labels and values) and cold users of the baselines' split, and the trained run's "
        f"`cold_users` match. `fit` keeps {report['valid_fraction']:.0%} of the training users for validation, so it learns from fewer warm rows "
        f"than the baselines ({report['train_rows']}).",
        "",
        "| method | MAE | RMSE | nDCG@3 | wall s |",
        "|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        bold = "**" if name == DEFAULT else ""
        lines.append(
            f"| {bold}{name}{bold} | {row['mae_mean']:.4f} ± {row['mae_std']:.4f} | {row['rmse_mean']:.4f} ± {row['rmse_std']:.4f} "
            f"| {row['ndcg@3_mean']:.4f} ± {row['ndcg@3_std']:.4f} | {row['wall_s_mean']:.1f} ± {row['wall_s_std']:.1f} |"
        )
    lines += ["", "## Does the default beat each method?", ""]
    losses = [
        f"{name} on {' and '.join(label for key, label in (('mae', 'MAE'), ('ndcg@3', 'nDCG@3')) if not c[key]['better_on_mean'])}"
        for name, c in report["comparisons"].items()
        if not (c["mae"]["better_on_mean"] and c["ndcg@3"]["better_on_mean"])
    ]
    lines.append(
        "In short: the default beats every other method on both metrics (mean over seeds)." if not losses else
        "In short: on the mean over seeds the default beats every other method on both metrics except: " + "; ".join(losses) + "."
    )
    lines.append("")
    for name, c in report["comparisons"].items():
        lines.append(verdict_line(name, c))
    d = summary[DEFAULT]
    t = report["targets"]
    lines += [
        "",
        f"Issue targets: must beat MAE < {t['must']['mae']} and nDCG@3 > {t['must']['ndcg@3']} — "
        f"MAE {d['mae_mean']:.4f} {'meets' if d['mae_mean'] < t['must']['mae'] else 'MISSES'} it, nDCG@3 {d['ndcg@3_mean']:.4f} "
        f"{'meets' if d['ndcg@3_mean'] > t['must']['ndcg@3'] else 'MISSES'} it. "
        f"Aim MAE ≤ {t['aim']['mae']} / nDCG@3 ≥ {t['aim']['ndcg@3']}: "
        f"{'met' if d['mae_mean'] <= t['aim']['mae'] else 'not met'} / {'met' if d['ndcg@3_mean'] >= t['aim']['ndcg@3'] else 'not met'}. "
        f"Train + evaluate < {t['wall_s']:.0f} s: mean {d['wall_s_mean']:.1f} s "
        f"({'met' if d['wall_s_mean'] < t['wall_s'] else 'NOT met'} at {report['torch_threads']} thread(s)).",
        "",
        "## Per seed (MAE / nDCG@3 / wall s)",
        "",
        "| method | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---|" * len(seeds),
    ]
    for name in summary:
        cells = [f"{per_seed[s][name]['mae']:.4f} / {per_seed[s][name]['ndcg@3']:.4f} / {per_seed[s][name]['wall_s']:.1f}" for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if report.get("threads_check"):
        tc = report["threads_check"]
        lines += [
            "",
            f"## Torch threads: default config, seed {tc['seed']}",
            "",
            "| torch threads | wall s | load avg before | MAE | nDCG@3 |",
            "|---|---|---|---|---|",
        ]
        for r in tc["runs"]:
            lines.append(f"| {r['torch_threads']} | {r['wall_s']:.1f} | {r['load_before']:.2f} | {r['mae']:.4f} | {r['ndcg@3']:.4f} |")
        lines.append("")
        lines.append(
            f"{tc['threads']} threads / 1 thread wall time: {tc['ratio']:.2f}× "
            f"({'faster' if tc['ratio'] < 1 else 'slower'} with {tc['threads']}). Metrics differ by at most "
            f"{tc['max_metric_diff']:.2e} (thread count changes float summation order only)."
        )
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    if report.get("overrides"):
        lines += ["", f"**Smoke-test overrides in effect: {report['overrides']} — not the default configuration.**"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5", help="split seeds (six: on three, gaps between methods were within the seed-to-seed noise)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the main runs (1: tiny tensors, shared cores)")
    parser.add_argument("--extra-threads", type=int, default=2, help="rerun the default config (first seed) with this many threads; 0 skips")
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated subset of the neural runs (the default run is always included): {', '.join(RUNS)}")
    parser.add_argument("--num-epochs", type=int, default=None, help="smoke tests only: override num_epochs (reported)")
    parser.add_argument("--out", default=str(RESULTS / "cold_start"), help="output path without extension (.md and .json)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    # The report compares every method with the default run, so it is always trained.
    runs = dict(RUNS[key] for key in dict.fromkeys(["default", *args.runs.split(",")]))
    overrides = {} if args.num_epochs is None else {"num_epochs": args.num_epochs}
    torch.set_num_threads(args.threads)
    report: dict[str, object] = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "code": code_version(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "load_at_start": os.getloadavg()[0],
        "seeds": seeds,
        "valid_fraction": TrainConfig().valid_fraction,
        "overrides": overrides,
        "targets": TARGETS,
    }
    dataset = load_movielens_100k()
    # Warm-up (lazy imports, first-call allocations) so the first timed fit is not charged for them.
    fit(TrainConfig(num_epochs=0, seed=seeds[0], cpu_threads=args.threads), dataset)
    per_seed: dict[int, dict[str, dict[str, float]]] = {}
    checks: dict[int, dict[str, object]] = {}
    for seed in seeds:
        split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=seed))
        split.check_nonempty()
        results: dict[str, dict[str, float]] = {}
        # fit() trains on split.train minus its validation users: the strong baselines also get exactly those rows.
        fit_train = prepare_data(TrainConfig(seed=seed), dataset).train
        jobs = [(name, model, None) for name, model in make_baselines(seed).items()]
        jobs += [(name + SAME_ROWS, model, fit_train) for name, model in make_baselines(seed).items() if name in ("bias", "ALS k=10 + fold-in")]
        for name, model, train in jobs:
            results[name] = run_baseline(model, dataset, split, train)
            print(f"seed {seed}  {name:45s} MAE {results[name]['mae']:.4f}  nDCG@3 {results[name]['ndcg@3']:.4f}", flush=True)
        for name, over in runs.items():
            over = dict(over)
            offset = int(over.pop(INIT_OFFSET, 0))
            config = TrainConfig(**{**over, **overrides, "seed": seed + offset, "cpu_threads": args.threads})
            if not offset:
                checks[seed] = check_split(config, dataset, split)
            results[name] = run_fit(config, dataset, split, given_split=bool(offset))
            print(
                f"seed {seed}  {name:45s} MAE {results[name]['mae']:.4f}  nDCG@3 {results[name]['ndcg@3']:.4f}  "
                f"wall {results[name]['wall_s']:.1f}s  (load {results[name]['load_before']:.1f})",
                flush=True,
            )
        per_seed[seed] = results
    report["per_seed"] = {str(s): r for s, r in per_seed.items()}
    report["split_checks"] = {str(s): c for s, c in checks.items()}
    c0 = checks[seeds[0]]
    report["train_rows"] = (
        "seed-wise " + ", ".join(f"{checks[s]['fit_train_rows']} vs {checks[s]['baseline_train_rows']}" for s in seeds)
        if c0 else ""
    )
    report["summary"] = summarise(per_seed)
    report["comparisons"] = {name: compare(per_seed, name) for name in list(BASELINES) + [n for n in runs if n != DEFAULT]} if DEFAULT in runs else {}
    if args.extra_threads and DEFAULT in runs:
        seed = seeds[0]
        split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=seed))
        # fit sets torch's thread count from config.cpu_threads (default 1), so the thread count goes in the config.
        extra = run_fit(TrainConfig(**{**overrides, "seed": seed, "cpu_threads": args.extra_threads}), dataset, split)
        torch.set_num_threads(args.threads)
        base = per_seed[seed][DEFAULT]
        print(f"threads {args.extra_threads}: wall {extra['wall_s']:.1f}s vs {base['wall_s']:.1f}s at {args.threads}", flush=True)
        report["threads_check"] = {
            "seed": seed, "threads": args.extra_threads, "runs": [base, extra],
            "ratio": extra["wall_s"] / base["wall_s"],
            "max_metric_diff": max(abs(extra[k] - base[k]) for k in ("mae", "rmse", "ndcg@3")),
        }
    write_report(args.out, report, render(report))


if __name__ == "__main__":
    main()
