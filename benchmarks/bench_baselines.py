"""Benchmark of the simple baselines on ML-100K, new users (user-cold), 10-shot, over three seeds.

Protocol (the one in /work/shared/ANCHORS.md and the README): for each seed,
``split_cold_start(ml100k, SplitConfig(scenario="user-cold", cold_fraction=0.2,
support_size=10, seed=seed))``; every new user adapts on 10 random ratings
(support) and is scored on the rest (query). MAE and RMSE are pooled over query
ratings; nDCG@k is computed per user within the query set (gain 2^r - 1, ties
averaged) and averaged over users. Full-catalogue figures rank all 1,682 items
except the user's support items.

Settings of the bias baseline and of ALS are chosen on a *validation* split of
the training users only (the same splitter applied to the training rows with
another seed), by MAE - nDCG@3; the test query is never looked at for tuning.
The chosen model is then refitted on all training rows.

Run:  python benchmarks/bench_baselines.py [--seeds 0,1,2] [--out benchmarks/results/baselines.md]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import machine_line  # noqa: E402  (benchmarks/machine.py, beside this script)

from metarec_core.baselines import (  # noqa: E402
    Baseline,
    BiasBaseline,
    GlobalMean,
    ItemMean,
    MatrixFactorization,
    MFConfig,
    tune_bias,
    tune_mf,
)
from metarec_core.configs import config_to_dict  # noqa: E402
from metarec_core.metrics import (  # noqa: E402
    hit_rate_at_k,
    mae,
    mean_ndcg_at_k,
    ndcg_at_k_catalogue,
    per_user_mean,
    recall_at_k,
    rmse,
)
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.splits import SplitConfig, split_cold_start  # noqa: E402

ANCHORS = {  # ANCHORS.md, one seed, same protocol
    "global mean": ("0.95–0.97", "–"),
    "bias (tuned)": ("0.751", "0.691"),
    "ALS k=10 + fold-in (tuned)": ("0.749", "0.709"),
}
COLUMNS = (
    "MAE", "RMSE", "per-user MAE", "nDCG@1", "nDCG@3", "nDCG@5", "nDCG@10", "cat nDCG@10", "cat Recall@10", "cat HR@10"
)


def catalogue_metrics(model: Baseline, support: pd.DataFrame, query: pd.DataFrame, n_items: int) -> dict[str, float]:
    """Rank every item except the user's support items; relevant = query items (Recall/HR: rated >= 4)."""
    users = np.unique(query["user"].to_numpy(np.int64))
    grid = pd.DataFrame({"user": np.repeat(users, n_items), "item": np.tile(np.arange(n_items), len(users))})
    scores = model.predict_tasks(support, grid).reshape(len(users), n_items)
    s_by_user = dict(tuple(support.groupby("user")["item"]))
    ndcg, recall, hit = [], [], []
    for row, (u, q) in enumerate(query.groupby("user", sort=True)):
        assert users[row] == u
        seen = s_by_user[u].to_numpy(np.int64) if u in s_by_user else None
        items, ratings = q["item"].to_numpy(np.int64), q["rating"].to_numpy(np.float64)
        ndcg.append(ndcg_at_k_catalogue((items, ratings), scores[row], 10, exclude=seen))
        liked = items[ratings >= 4]
        if len(liked):
            recall.append(recall_at_k(liked, scores[row], 10, exclude=seen))
            hit.append(hit_rate_at_k(liked, scores[row], 10, exclude=seen))
    return {
        "cat nDCG@10": float(np.nanmean(ndcg)),
        "cat Recall@10": float(np.mean(recall)),
        "cat HR@10": float(np.mean(hit)),
    }


def evaluate(model: Baseline, support: pd.DataFrame, query: pd.DataFrame, n_items: int) -> dict[str, float]:
    """Every metric of the table for one fitted model on one split."""
    scores = model.predict_tasks(support, query)
    users = query["user"].to_numpy(np.int64)
    y = query["rating"].to_numpy(np.float64)
    out = {"MAE": mae(y, scores), "RMSE": rmse(y, scores), "per-user MAE": per_user_mean(mae, users, y, scores)}
    for k in (1, 3, 5, 10):
        out[f"nDCG@{k}"] = mean_ndcg_at_k(users, y, scores, k)
    out.update(catalogue_metrics(model, support, query, n_items))
    return out


def run_seed(dataset, seed: int) -> tuple[dict[str, dict[str, float]], dict[str, object]]:
    """Split, tune on validation users, refit, evaluate every baseline; returns metrics and chosen settings."""
    split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=seed))
    split.check_nonempty()
    nu, ni = dataset.n_users, dataset.n_items
    valid = split_cold_start(
        dataclasses.replace(dataset, ratings=split.train),
        SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=10_000 + seed),
    )
    t0 = time.perf_counter()
    bias_cfg, _ = tune_bias(valid.train, valid.support, valid.query, nu, ni)
    t_bias = time.perf_counter() - t0
    t0 = time.perf_counter()
    mf_cfg, _ = tune_mf(valid.train, valid.support, valid.query, nu, ni, base=MFConfig(seed=seed))
    t_mf = time.perf_counter() - t0
    models: dict[str, Baseline] = {
        "global mean": GlobalMean(),
        "item mean": ItemMean(),
        "bias (defaults)": BiasBaseline(),
        "bias (tuned)": BiasBaseline(bias_cfg),
        "ALS k=10 + fold-in (defaults)": MatrixFactorization(MFConfig(seed=seed)),
        "ALS k=10 + fold-in (tuned)": MatrixFactorization(mf_cfg),
    }
    results: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(split.train, nu, ni)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        model.predict_tasks(split.support, split.query)
        predict_s = time.perf_counter() - t0
        results[name] = evaluate(model, split.support, split.query, ni) | {"fit s": fit_s, "predict s": predict_s}
        print(
            f"seed {seed}  {name:32s} MAE {results[name]['MAE']:.4f}  nDCG@3 {results[name]['nDCG@3']:.4f}  "
            f"fit {fit_s:.2f}s",
            flush=True,
        )
    chosen = {
        "split": repr(split),
        "validation": repr(valid),
        "bias": config_to_dict(bias_cfg),
        "mf": config_to_dict(mf_cfg),
        "tune bias s": t_bias,
        "tune mf s": t_mf,
    }
    return results, chosen



def render(per_seed: list[dict[str, dict[str, float]]], chosen: list[dict[str, object]], seeds: list[int]) -> str:
    """The Markdown report."""
    names = list(per_seed[0])
    lines = [
        "# Baselines on ML-100K, new users (user-cold), 10-shot",
        "",
        f"Written by `benchmarks/bench_baselines.py` on {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}.",
        f"Machine: {machine_line()}.",
        "",
        "Protocol: 20% of users held out as new users (`split_cold_start(..., SplitConfig(scenario='user-cold', "
        "cold_fraction=0.2, support_size=10, seed=s))`), each adapting on 10 random ratings (support) and scored "
        "on the rest (query). MAE/RMSE pooled over query ratings; per-user MAE averaged over users; nDCG@k per "
        "user within the query set (gain 2^r−1, ties averaged), averaged over users. `cat` columns rank the full "
        "catalogue (1,682 items minus the user's support items): nDCG@10 with the query ratings as gains, "
        "Recall@10 / HitRate@10 with query items rated ≥ 4 as relevant. "
        f"Mean ± std (sample, ddof=1) over seeds {', '.join(map(str, seeds))}.",
        "",
        "Bias and ALS settings are chosen on a validation split of the *training* users (the same splitter on the "
        "training rows, seed 10000+s) by MAE − nDCG@3, then refitted on all training rows; `defaults` rows use the "
        "config defaults untouched.",
        "",
        "| method | " + " | ".join(COLUMNS) + " | fit s |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    for name in names:
        cells = []
        for col in (*COLUMNS, "fit s"):
            v = np.array([r[name][col] for r in per_seed])
            sd = v.std(ddof=1) if len(v) > 1 else 0.0
            cells.append(f"{v.mean():.2f}" if col == "fit s" else f"{v.mean():.3f} ± {sd:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    header = "| method | " + " | ".join(f"seed {s}" for s in seeds) + " | ANCHORS (one seed) |"
    lines += ["", "## Per seed (MAE / nDCG@3)", "", header]
    lines.append("|---|" + "---|" * (len(seeds) + 1))
    for name in names:
        cells = [f"{r[name]['MAE']:.3f} / {r[name]['nDCG@3']:.3f}" for r in per_seed]
        anchor = ANCHORS.get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {' / '.join(anchor) if anchor else ''} |")
    lines += ["", "## Settings chosen on validation users", ""]
    for s, c in zip(seeds, chosen, strict=True):
        lines.append(f"- seed {s}: {c['split']}; validation {c['validation']}")
        lines.append(f"  - bias: {c['bias']} (search {c['tune bias s']:.1f} s)")
        lines.append(f"  - ALS: {c['mf']} (search {c['tune mf s']:.1f} s)")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "baselines.md"))
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    dataset = load_movielens_100k()
    per_seed, chosen = [], []
    for seed in seeds:
        results, c = run_seed(dataset, seed)
        per_seed.append(results)
        chosen.append(c)
    report = render(per_seed, chosen, seeds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print()
    print(report)


if __name__ == "__main__":
    main()
