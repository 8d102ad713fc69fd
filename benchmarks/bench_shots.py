"""Shots curve on ML-100K, new users: the default run, its no-adaptation start, bias and ALS baselines, K = 1..20.

Protocol: for each seed s in 0, 1, 2 one run is trained with the default
``TrainConfig(seed=s)`` (user-cold, 20% of users held out, meta + transfer).
``evaluate_run`` then splits ML-100K with the run's own seed for every K in
{1, 3, 5, 10, 20} (``SplitConfig(scenario="user-cold", cold_fraction=0.2,
support_size=K, seed=s)``: the held-out users are exactly the run's), adapts the
run on each new user's first K support ratings and scores the rest (query). The
same split feeds the baselines, fitted on its training rows with their default
settings: the bias model (shrunk item bias + shrunk user offset from the
support) and ALS (k=10) with ridge fold-in. Metrics are defined in
``metarec_core.evaluation``; mean ± std (ddof=1) over the three seeds.

Run:  python benchmarks/bench_shots.py [--seeds 0,1,2] [--shots 1,3,5,10,20] [--runs-dir DIR] [--set key=value ...]
(about 5 minutes on 2 cores; one torch thread.)
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import machine_line  # noqa: E402  (benchmarks/machine.py, beside this script)

from metarec_core.configs import parse_set_arguments, with_overrides  # noqa: E402
from metarec_core.evaluation_report import EvaluationConfig, EvaluationResult  # noqa: E402
from metarec_core.evaluation import evaluate_run  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
TABLE_METRICS = ("mae", "rmse", "ndcg@3", "ndcg@10", "catalogue_ndcg@10", "recall@10", "hit_rate@10")
ANCHORS = "ANCHORS.md (one seed, K=10): bias tuned 0.751 / 0.691, ALS k=10 + fold-in tuned 0.749 / 0.709 (MAE / nDCG@3)"



def markdown_table(result: EvaluationResult, metric: str) -> list[str]:
    """One metric as a Markdown table: methods × K, ``mean ± std``."""
    wide = result.table([metric])
    columns = list(wide.columns)
    lines = ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for (_, _, method), row in wide.iterrows():
        lines.append(f"| {method} | " + " | ".join(row[c] for c in columns) + " |")
    return lines


def adaptation_gains(result: EvaluationResult, method: str, shots: int) -> dict[str, float]:
    """Share of new users whose MAE adaptation lowered, and the median gain, over all seeds."""
    pu = result.per_user(method, shots)
    return {
        "users": int(len(pu)),
        "share_improved": float((pu["gain"] > 0).mean()),
        "median_gain": float(pu["gain"].median()),
        "top_decile_gain": float(pu["gain"].quantile(0.9)),
    }


def verdict(result: EvaluationResult, run: str, shots: int) -> list[str]:
    """Plain statements: does the run beat each baseline at K on MAE and nDCG@3 (means over seeds)?"""
    s = result.summary()
    s = s[s["shots"] == shots].set_index(["metric", "method"])["mean"]
    lines = []
    for other in [m for m in result.methods if m != run]:
        mae_ok = s[("mae", run)] < s[("mae", other)]
        ndcg_ok = s[("ndcg@3", run)] > s[("ndcg@3", other)]
        lines.append(
            f"- vs {other}: MAE {s[('mae', run)]:.3f} vs {s[('mae', other)]:.3f} ({'better' if mae_ok else 'NOT better'}), "
            f"nDCG@3 {s[('ndcg@3', run)]:.3f} vs {s[('ndcg@3', other)]:.3f} ({'better' if ndcg_ok else 'NOT better'})"
        )
    return lines


def render(result: EvaluationResult, timings: list[dict[str, float]], seeds: list[int], run: str, overrides: dict | None = None) -> str:
    """The Markdown report."""
    trained = f"`TrainConfig(seed=s)` with {', '.join(f'`{k}={v!r}`' for k, v in overrides.items())}" if overrides else "the default `TrainConfig(seed=s)`"
    lines = [
        "# Shots curve on ML-100K, new users (user-cold)",
        "",
        f"Written by `benchmarks/bench_shots.py` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        f"Machine: {machine_line()}.",
        "",
        f"Protocol: one run per seed with {trained} ({run}, user-cold, 20% of users "
        "held out); `evaluate_run` splits ML-100K with the run's own seed for every K (the held-out users are exactly "
        "the run's), adapts each new user on their first K support ratings (nested: the 3-shot support is part of the "
        "5-shot one) and scores the rest of their ratings (query). `no adaptation` is the run with 0 inner steps. "
        "`bias` and `mf` (ALS k=10 + ridge fold-in) use their default settings, fitted on the same split's training "
        "rows. Predictions are clipped to 1–5. MAE/RMSE pooled over query ratings; nDCG@k per user within the query "
        "set (gain 2^r−1, ties averaged); catalogue metrics rank all 1,682 items except the user's support items "
        "(nDCG@10 with query ratings as gains; Recall@10 / HitRate@10 with query items rated ≥ 4 as relevant). "
        f"Mean ± std (ddof=1) over seeds {', '.join(map(str, seeds))}.",
        "",
    ]
    for metric in TABLE_METRICS:
        lines += [f"## {metric}", "", *markdown_table(result, metric), ""]
    lines += [f"## Does the default run beat the baselines at K=10? (mean over seeds; {ANCHORS})", ""]
    lines += verdict(result, run, 10)
    lines += ["", "## Which new users gain from adaptation (per-user MAE, no adaptation − adapted)", ""]
    lines += ["| K | users (all seeds) | share improved | median gain | 90th percentile gain |", "|---|---|---|---|---|"]
    for k in sorted({int(k) for k in result.frame["shots"]}):
        g = adaptation_gains(result, run, k)
        lines.append(f"| {k} | {g['users']} | {g['share_improved']:.2f} | {g['median_gain']:.3f} | {g['top_decile_gain']:.3f} |")
    lines += ["", "## Split sizes and time", "", "| seed | K | users | query rows | excluded |", "|---|---|---|---|---|"]
    for _, row in result.splits.iterrows():
        lines.append(f"| {row['seed']} | {row['shots']} | {row['n_users']} | {row['n_query']} | {row['n_excluded']} |")
    lines.append("")
    for t in timings:
        lines.append(f"- seed {t['seed']}: training {t['train_s']:.1f} s, evaluation (all K, all methods) {t['eval_s']:.1f} s")
    if result.warnings:
        lines += ["", "Warnings:", *[f"- {w}" for w in result.warnings]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--shots", default="1,3,5,10,20")
    parser.add_argument("--runs-dir", help="keep the trained runs here (default: a temporary folder)")
    parser.add_argument("--out", default=str(RESULTS / "shots.md"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig field (repeatable)")
    args = parser.parse_args(argv)
    overrides = parse_set_arguments(args.set)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    shots = tuple(int(k) for k in args.shots.split(","))
    dataset = load_movielens_100k()
    runs_dir = Path(args.runs_dir) if args.runs_dir else Path(tempfile.mkdtemp(prefix="bench-shots-"))
    results, timings = [], []
    for seed in seeds:
        config = with_overrides(TrainConfig(seed=seed), overrides)
        run_dir = runs_dir / f"seed-{seed}"
        t0 = time.perf_counter()
        fit(config, dataset, out_dir=run_dir)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = evaluate_run(run_dir, dataset, EvaluationConfig(shots=shots, baselines=("bias", "mf")))
        eval_s = time.perf_counter() - t0
        results.append(result)
        timings.append({"seed": seed, "train_s": train_s, "eval_s": eval_s})
        print(f"seed {seed}: trained in {train_s:.1f}s, evaluated in {eval_s:.1f}s", flush=True)
        print(result.table(["mae", "ndcg@3"]).to_string(), flush=True)
    combined = EvaluationResult.concat(results)
    run = combined.methods[0]
    report = render(combined, timings, seeds, run, overrides)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    payload = {
        "written": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine_line(),
        "train_config": f"TrainConfig() defaults with {overrides}, seed per run" if overrides else "TrainConfig() defaults, seed per run",
        "timings": timings,
        "adaptation_gains": {str(k): adaptation_gains(combined, run, k) for k in shots},
        **combined.to_dict(),
    }
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1) + "\n")
    print()
    print(report)


if __name__ == "__main__":
    main()
