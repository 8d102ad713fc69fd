"""The RecBole-MetaRec user-cold protocol on ML-100K: our default model beside the simple baselines.

Protocol (``metarec_core.evaluation.recbole_protocol_split``): users with 13–100
ratings, shuffled 8:1:1 into training / validation / test users (seeded); each
test user's query is 10 random ratings and the support every other rating.
The model is trained by ``fit`` on the split's training rows (``split=``), so no
test user is seen in training, and evaluated with the shared harness
(``evaluate_split``) together with the baselines on the same split.

nDCG@5 here ranks the 10 query items with gain 2^r−1. RecBole-MetaRec reports
nDCG@5 0.533 (MeLU), 0.593 (MAMO), 0.599 (TaNP) on this protocol, but its metric
is defined differently (a random order already scores about 0.64 under ours),
so the published figures are quoted for orientation only, not compared.

Usage: ``python benchmarks/bench_recbole.py [--seeds 0,1,2]``; writes
``benchmarks/results/recbole_protocol.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from metarec_core.artifacts import load_run
from metarec_core.evaluation_report import EvaluationConfig
from metarec_core.evaluation import evaluate_split
from metarec_core.splits import recbole_protocol_split
from metarec_core.movielens import load_movielens_100k
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("mae", "ndcg@3", "ndcg@5")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    dataset = load_movielens_100k()
    frames = []
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            split = recbole_protocol_split(dataset, seed)
            started = time.perf_counter()
            fit(TrainConfig(seed=seed), dataset, out_dir=Path(tmp) / f"run{seed}", split=split)
            seconds.append(time.perf_counter() - started)
            run = load_run(Path(tmp) / f"run{seed}")
            result = evaluate_split(split, dataset, EvaluationConfig(ks=(3, 5), no_adaptation=False), run=run, label="meta + transfer (default)", seed=seed)
            frames.append(result.frame)
            print(f"seed {seed}: {len(split.query)} query ratings of {split.query['user'].nunique()} test users, fit {seconds[-1]:.1f}s", flush=True)
    import pandas as pd

    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["metric"].isin(METRICS)]
    summary = frame.groupby(["method", "metric"])["value"].agg(["mean", "std"]).reset_index()
    table = summary.pivot(index="method", columns="metric", values="mean")
    spread = summary.pivot(index="method", columns="metric", values="std")
    table = table.sort_values("mae")
    lines = [
        "# RecBole-MetaRec protocol on ML-100K (user-cold, query 10, support = the rest)",
        "",
        f"Written by `benchmarks/bench_recbole.py` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), torch {torch.__version__}, 1 thread; load average {os.getloadavg()[0]:.2f}. "
        f"Seeds {', '.join(map(str, seeds))}; mean ± std. Fit (train + test) {sum(seconds) / len(seconds):.1f} s per seed.",
        "",
        "Users with 13–100 ratings, split 8:1:1 by seed; each test user's query is 10 random ratings, the support all others. "
        "nDCG@k ranks the 10 query items (gain 2^r−1). **Not comparable with RecBole-MetaRec's published nDCG@5 "
        "(MeLU 0.533, MAMO 0.593, TaNP 0.599)**: under our definition a random order already scores about 0.64.",
        "",
        "| method | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    for method, row in table.iterrows():
        cells = [f"{row[m]:.4f} ± {spread.loc[method, m]:.4f}" for m in METRICS]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "recbole_protocol.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "recbole_protocol.json").write_text(json.dumps({"seeds": seeds, "fit_seconds": seconds, "rows": frame.to_dict(orient="records")}, indent=1, default=str))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
