"""Benchmark of onboarding: which K items to ask a new user about first, scored on the rest of their ratings.

A default run on ML-100K (trained here, or ``--run DIR``). Its held-out new
users are onboarded in simulation: each user's ratings are split in time, the
earlier half is the pool of items the user could be asked about (items they
know) and the later half is held out. A strategy picks K = 1, 3, 5, 10 items
from the pool, the run adapts on the user's true ratings of those items, and
the held-out half is scored (MAE, nDCG@3). Every strategy is scored on the
same held-out ratings of the same users.

Strategies:

- ``informative`` — :func:`metarec_core.elicitation.next_items` (the lab's
  "ask me next"): expected information of a rating under the fold-in
  posterior, times the share of users who know the item, greedy;
- ``variance`` — the same without the popularity weight (uncertainty sampling);
- ``popular`` — the most-rated items first (the usual onboarding screen);
- ``random`` — uniformly at random (three seeds, averaged).

Run from the repository root (one heavy job at a time on this machine)::

    python benchmarks/bench_elicitation.py [--run RUN_DIR] [--users 200]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core import elicitation  # noqa: E402
from metarec_core.embedding_views import run_embeddings  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.popularity import item_counts  # noqa: E402
from metarec_core.recommender import Recommender  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402

from machine import code_version, machine, write_report  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LIMITS = (
    "**What this protocol cannot see.** Every pool item is one the user rated, so every question gets an answer: the "
    "popularity weight of `informative` (the chance the user knows the item) is only a handicap here, while random "
    "questions on a real onboarding screen would often be about items the user does not know (no answer, a wasted "
    "question). The comparison with `popular` is the fair one for the weight; the one with `random` and `variance` "
    "shows what the uncertainty term alone buys. The pool is the earlier half of the user's history, the held-out half "
    "the later: a drift in taste counts against every strategy alike."
)
SHOTS = (1, 3, 5, 10)
STRATEGIES = ("informative", "variance", "popular", "random")


def load() -> str:
    """The machine's load averages (``/proc/loadavg``)."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pick(strategy: str, k: int, pool: np.ndarray, share: np.ndarray, vectors: np.ndarray, prior: np.ndarray, noise: float,
         rng: np.random.Generator) -> list[int]:
    """``k`` item indices of ``pool`` in the order the strategy asks about them."""
    if strategy == "popular":
        return pool[np.argsort(-share[pool], kind="stable")][:k].tolist()
    if strategy == "random":
        return rng.permutation(pool)[:k].tolist()
    weights = share if strategy == "informative" else np.ones_like(share)
    chosen: list[int] = []
    for _ in range(k):  # greedy: each pick shrinks the posterior along its direction
        chosen += elicitation.next_items(vectors, weights, chosen, prior=prior, noise_var=noise, k=1, among=pool)["item"].tolist()
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a run directory trained on ML-100K (default: train one here)")
    parser.add_argument("--users", type=int, default=200)
    args = parser.parse_args()
    dataset = load_movielens_100k()
    started = time.time()
    load_before = load()
    if args.run is None:
        folder = Path(tempfile.mkdtemp())
        fit(TrainConfig(device="cpu"), dataset, out_dir=folder)
        args.run = folder
    rec = Recommender.from_run_dir(args.run)
    emb = run_embeddings(rec, dataset)
    counts = item_counts(dataset)
    positions = dataset.items.lookup(list(rec.items.external_ids))
    share = np.where(positions >= 0, counts[np.maximum(positions, 0)], 0) / dataset.n_users
    prior = elicitation.taste_prior(emb.user_vectors)
    noise = float(np.var(dataset.ratings["rating"].to_numpy(float)))
    vectors = emb.item_vectors

    cold = [rec.users.external(int(u)) for u in rec.run.meta.get("cold_users", [])]
    ratings = dataset.ratings.sort_values(["timestamp", "item"], kind="stable")
    ratings = ratings.assign(user_id=dataset.users.externals(ratings["user"]), item_id=dataset.items.externals(ratings["item"]))
    by_user = {u: rows for u, rows in ratings.groupby("user_id", sort=False)}
    users = [u for u in cold if u in by_user and len(by_user[u]) >= 2 * max(SHOTS)][: args.users]
    rows = []
    for n, user in enumerate(users):
        history = by_user[user]
        half = len(history) // 2
        pool_rows, held = history.iloc[:half], history.iloc[half:]
        pool = rec.item_indices(pool_rows["item_id"].tolist())
        truth = dict(zip(pool, pool_rows["rating"].astype(float)))
        query = held[["item_id", "rating"]]
        for strategy in STRATEGIES:
            for seed in (range(3) if strategy == "random" else range(1)):
                order = pick(strategy, max(SHOTS), pool, share, vectors, prior, noise, np.random.default_rng(1000 * seed + n))
                for k in SHOTS:
                    support = [(rec.items.external(i), truth[i]) for i in order[:k]]
                    quality = rec.query_quality(rec.adapt_user(support), query)
                    rows.append({"strategy": strategy, "k": k, "user": user, "seed": seed, **quality})
    frame = pd.DataFrame(rows).groupby(["strategy", "k", "user"], as_index=False)[["mae", "ndcg@3"]].mean()
    curve = frame.groupby(["strategy", "k"])[["mae", "ndcg@3"]].agg(["mean", "sem"])
    elapsed = time.time() - started

    def table(metric: str) -> list[str]:
        lines = ["| strategy | " + " | ".join(f"K = {k}" for k in SHOTS) + " |", "|---|" + "---|" * len(SHOTS)]
        for strategy in STRATEGIES:
            cells = [f"{curve.loc[(strategy, k), (metric, 'mean')]:.4f} ± {curve.loc[(strategy, k), (metric, 'sem')]:.4f}" for k in SHOTS]
            lines.append(f"| {strategy} | " + " | ".join(cells) + " |")
        return lines

    wide = frame.pivot_table(index=["user", "k"], columns="strategy", values=["mae", "ndcg@3"])
    paired = []
    for other in ("popular", "random", "variance"):
        for k in SHOTS:
            part = wide.xs(k, level="k")
            d = part[("mae", "informative")] - part[("mae", other)]
            paired.append(f"| informative − {other} | {k} | {d.mean():+.4f} ± {d.sem():.4f} | "
                          f"{(part[('ndcg@3', 'informative')] - part[('ndcg@3', other)]).mean():+.4f} |")
    lines = [
        "# Onboarding: which items to ask a new user about first",
        "",
        f"`python benchmarks/bench_elicitation.py --users {args.users}` · {elapsed:.0f} s · load before/after: {load_before} / {load()}",
        "",
        f"ML-100K, a default run (`TrainConfig()`, its seed-0 user-cold split); {len(users)} of its held-out new users with at least "
        f"{2 * max(SHOTS)} ratings. Each user's ratings in time order: the earlier half is the pool a strategy asks about "
        "(items the user knows), the later half is held out and scored after adapting on the K answers. Mean ± standard error "
        "over users (random: three seeds averaged per user first).",
        "",
        "## MAE on the held-out half (lower is better)",
        "", *table("mae"), "",
        "## nDCG@3 on the held-out half (higher is better)",
        "", *table("ndcg@3"), "",
        "## Paired differences (same users, same held-out ratings)",
        "",
        "| difference | K | MAE (± s.e.) | nDCG@3 |", "|---|---|---|---|", *paired, "",
        LIMITS, "",
        "## Machine", "", "```", json.dumps({**machine(), "code": code_version()}, indent=1, default=str), "```", "",
    ]
    report = {"users": len(users), "curve": {f"{s}|{k}|{m}|{a}": float(v) for (m, a), col in curve.items() for (s, k), v in col.items()}}
    write_report(RESULTS / "elicitation", report, "\n".join(lines))


if __name__ == "__main__":
    main()
