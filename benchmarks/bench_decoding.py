"""Benchmark of how much MAE depends on decoding: the same predictions scored as they are and rounded to whole stars.

Why: MAE is minimised by the *median* of the predicted rating distribution,
not its mean, and on whole-star ratings the median is a whole star. Every
method here predicts a mean (MSE training, ridge fold-in), so rounding its
predictions lowers its MAE without making the model any better. This script
measures that effect for the default run and the simple baselines on the
cold-start protocol of ``bench_cold_start.py`` (ML-100K, user-cold, 20% new
users, 10-shot), so that an absolute MAE figure is read together with how it
was decoded. Rankings (nDCG@3) use the unrounded scores and do not change.

For each seed ``s``: ``split_cold_start(ml100k, SplitConfig(scenario="user-cold",
cold_fraction=0.2, support_size=10, seed=s))``; the bias model and ALS k=10 +
fold-in are fitted on ``split.train``; ``training.fit`` trains the default
``TrainConfig(seed=s)`` and the transfer-only ablation (``lambda_meta=0``) on
that split. All predictions are clipped to 1–5, then scored as they are and
rounded (``np.rint``).

Run from the repository root (about 4 minutes on 2 cores)::

    python benchmarks/bench_decoding.py [--seeds 0,1,2,3,4,5]
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core.artifacts import load_run  # noqa: E402
from metarec_core.baselines import BiasBaseline, MatrixFactorization, MFConfig  # noqa: E402
from metarec_core.metrics import mae, mean_ndcg_at_k  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.splits import SplitConfig, split_cold_start  # noqa: E402
from metarec_core.tasks import tasks_from_frames  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402
from metarec_core.scoring import predict_tasks  # noqa: E402

from machine import code_version, machine_line, write_report  # noqa: E402  (benchmarks/machine.py, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"
#: The cold-start issue's MAE bar (its reference figures came from one seed of another split).
MAE_BAR = 0.75
#: Neural runs: table name -> overrides of the default TrainConfig.
RUNS = {"meta + transfer (default)": {}, "transfer only (λ1=0)": {"lambda_meta": 0.0}}


def run_predictions(overrides: dict, seed: int, dataset, split, folder: Path) -> np.ndarray:
    """Train one configuration on ``split`` and predict its query rows (adapting on the support)."""
    config = TrainConfig(**{**overrides, "seed": seed, "cpu_threads": 1})
    fit(config, dataset, split=split, out_dir=folder)
    run = load_run(folder)
    tasks, positions = tasks_from_frames(split.support, split.query)
    out = predict_tasks(run.model, run.inner_lr, run.config, tasks, run.context, run.loss)
    return np.asarray(out, dtype=np.float64).reshape(-1)[positions]


def score(split, predictions: np.ndarray) -> dict[str, float]:
    """MAE of the predictions as they are and rounded to whole stars; nDCG@3 of the unrounded ranking."""
    users = split.query["user"].to_numpy(np.int64)
    y = split.query["rating"].to_numpy(np.float64)
    p = np.clip(predictions, 1.0, 5.0)
    return {"mae": mae(y, p), "mae_rounded": mae(y, np.rint(p)), "ndcg@3": mean_ndcg_at_k(users, y, p, 3)}


def render(report: dict) -> str:
    """The Markdown report."""
    seeds = report["seeds"]
    per_seed = report["per_seed"]
    methods = list(per_seed[str(seeds[0])])
    lines = [
        "# MAE and decoding: the same predictions, as they are and rounded to whole stars",
        "",
        f"Written by `benchmarks/bench_decoding.py` on {report['date']} at commit {report['code']['commit']}. "
        f"Machine: {report['machine']}.",
        "",
        "Protocol: the one of `cold_start.md` (ML-100K, user-cold, 20% new users, 10-shot support, the rest as query), "
        f"seeds {', '.join(map(str, seeds))}, every method on the same split. Predictions clipped to 1–5; "
        "*rounded* = `np.rint` of them. nDCG@3 ranks by the unrounded scores. Mean ± std (ddof=1) over seeds.",
        "",
        "| method | MAE | MAE, rounded | change | nDCG@3 |",
        "|---|---|---|---|---|",
    ]
    for name in methods:
        a = np.array([per_seed[str(s)][name]["mae"] for s in seeds])
        r = np.array([per_seed[str(s)][name]["mae_rounded"] for s in seeds])
        n = np.array([per_seed[str(s)][name]["ndcg@3"] for s in seeds])
        sd = (lambda v: float(v.std(ddof=1)) if len(v) > 1 else 0.0)
        lines.append(
            f"| {name} | {a.mean():.4f} ± {sd(a):.4f} | {r.mean():.4f} ± {sd(r):.4f} | {(r - a).mean():+.4f} "
            f"| {n.mean():.4f} ± {sd(n):.4f} |"
        )
    mean_of = lambda key: [np.mean([per_seed[str(s)][n][key] for s in seeds]) for n in methods]  # noqa: E731
    same_order = list(np.argsort(mean_of("mae"))) == list(np.argsort(mean_of("mae_rounded")))
    order_kept = sum(
        list(np.argsort([per_seed[str(s)][n]["mae"] for n in methods]))
        == list(np.argsort([per_seed[str(s)][n]["mae_rounded"] for n in methods]))
        for s in seeds
    )
    changes = [per_seed[str(s)][n]["mae_rounded"] - per_seed[str(s)][n]["mae"] for s in seeds for n in methods]
    lines += [
        "",
        "Reading: MAE rewards the median of the rating distribution, and on whole-star data the median is a whole "
        f"star, so rounding lowers every method's MAE (per seed and method by {-max(changes):.3f} to {-min(changes):.3f}) "
        + ("and, on the mean over seeds, leaves the order of the methods as it was" if same_order else
           "and, on the mean over seeds, changes the order of the methods")
        + f" (seed by seed the order is kept on {order_kept} of {len(seeds)}: the top methods are closer than the "
        "differences in how much rounding helps each; rankings use unrounded scores and do not change). "
        + "An absolute MAE threshold therefore says as much about how predictions are "
        "decoded as about the model; metarec reports unrounded predictions everywhere (they are what the rankings "
        "use) and compares methods decoded the same way.",
    ]
    below = [name for name in methods if np.mean([per_seed[str(s)][name]["mae_rounded"] for s in seeds]) < MAE_BAR]
    lines.append("")
    lines.append(
        f"Against the cold-start issue's bar MAE < {MAE_BAR}: rounded, "
        + (", ".join(below) + (" is" if len(below) == 1 else " are") + " below it" if below else "no method is below it")
        + f"; unrounded, {'none is' if all(np.mean([per_seed[str(s)][n]['mae'] for s in seeds]) >= MAE_BAR for n in methods) else 'some are'}."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2,3,4,5", help="split seeds (the ones of cold_start.md)")
    parser.add_argument("--out", default=str(RESULTS / "decoding"), help="output path without extension (.md and .json)")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    dataset = load_movielens_100k()
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=seed))
            rows: dict[str, dict[str, float]] = {}
            for name, model in (("bias", BiasBaseline()), ("ALS k=10 + fold-in", MatrixFactorization(MFConfig(seed=seed)))):
                model.fit(split.train, dataset.n_users, dataset.n_items)
                rows[name] = score(split, np.asarray(model.predict_tasks(split.support, split.query), dtype=np.float64))
            for i, (name, overrides) in enumerate(RUNS.items()):
                rows[name] = score(split, run_predictions(overrides, seed, dataset, split, Path(tmp) / f"run{seed}_{i}"))
            for name, row in rows.items():
                print(f"seed {seed}  {name:28s} MAE {row['mae']:.4f}  rounded {row['mae_rounded']:.4f}  nDCG@3 {row['ndcg@3']:.4f}", flush=True)
            per_seed[str(seed)] = rows
    report = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine_line(), "code": code_version(), "seeds": seeds, "per_seed": per_seed,
    }
    write_report(args.out, report, render(report))


if __name__ == "__main__":
    main()
