"""Benchmark of brand-new items with the default settings: a catalogue where a fifth of the items has no interactions yet.

Protocol (ML-100K; for each seed ``s``):

1. ``split_cold_start(ml100k, SplitConfig(scenario="item-cold", cold_fraction=0.2,
   support_size=10, seed=s))`` picks 20 % of the rated items as brand-new items.
2. The data a user would upload: ML-100K without any rating of those items
   (``ratings = split.train``); the items stay in the catalogue, known only by
   title, year and genres.
3. Every method learns from that data only. The test: every user who rated a
   new item (a known user of the catalogue) adapts on 10 of their ratings of
   existing items (``split.support``) and is scored on their ratings of the new
   items (``split.query``).

Methods:

* **default** — ``fit(TrainConfig(seed=s), data)``: the default
  ``scenario="auto"`` sees the items without interactions and trains for new
  items (``resolve_scenario``; what it switched on is printed in the report);
* **default without text** — the same settings with ``use_text=False``;
* **previous default** — ``scenario="user-cold"`` (what the default did
  before ``auto``: trained and validated for new users);
* **new-items settings on a user-cold split** — the new-items settings with the
  run's own split made of new users instead of new items (every rated item's
  ratings stay in training);
* **genre baseline** — ``GenreBaseline``: the user's shrunk mean training
  rating plus the shrunk offset of the item's genres (new items have no own
  offset); **bias baseline** — ``BiasBaseline`` (a new item has no bias: the
  global mean plus the user's offset from the support).

Runs are scored from their saved directory (``load_run``), users adapted on
their support with their learned ID parameters (known users), exactly as
``scoring.evaluate_held_out`` scores the item-cold test. Predictions are
clipped to the training rating range. MAE pooled over query ratings; nDCG@3
within each user's query items (gain 2^r − 1), averaged over users. Mean ± std
over seeds; paired differences (default − method) on the same query rows:
of pooled MAE (standard error clustered by user) and per user of per-user
MAE and nDCG@3 (std/√n_users), mean over seeds of the per-seed differences ±
their standard errors combined as √(Σ se²)/n_seeds.

The new-users protocol is unchanged by ``auto`` when the rule does not
trigger; the report counts, for every built-in dataset, the items without
interactions and what ``auto`` resolves to.

Run from the repository root::

    python benchmarks/bench_new_items.py                        # 3 seeds -> benchmarks/results/new_items.md
    python benchmarks/bench_new_items.py --seeds 0 --num-epochs 1 --out /tmp/new_items  # smoke test
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from metarec_core.artifacts import load_run  # noqa: E402
from metarec_core.baselines import BiasBaseline, GenreBaseline  # noqa: E402
from metarec_core.builtin import BUILTIN_DATASETS, load_builtin  # noqa: E402
from metarec_core.configs import config_to_dict, flatten_settings  # noqa: E402
from metarec_core.metrics import mae, mean_ndcg_at_k, ndcg_per_user, per_user  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.presets import NEW_ITEMS  # noqa: E402
from metarec_core.scoring import predict_tasks  # noqa: E402
from metarec_core.splits import SplitConfig, split_cold_start  # noqa: E402
from metarec_core.tasks import tasks_from_frames  # noqa: E402
from metarec_core.train_config import AUTO_NEW_ITEM_SHARE, TrainConfig, items_without_interactions, resolve_scenario  # noqa: E402
from metarec_core.training import fit  # noqa: E402

from machine import code_version, machine, machine_line, write_report  # noqa: E402  (benchmarks/machine.py)

DEFAULT = "default (scenario auto)"
NO_TEXT = "default without text"
PREVIOUS = "previous default (user-cold)"
USER_SPLIT = "new-items settings on a user-cold split"
GENRE = "genre baseline (user mean + genre offset)"
BIAS = "bias baseline"
RUNS = (DEFAULT, NO_TEXT, PREVIOUS, USER_SPLIT)


def new_item_data(dataset, seed: int):
    """The item-cold split of ``seed`` and the catalogue without any rating of its new items."""
    split = split_cold_start(dataset, SplitConfig(scenario="item-cold", cold_fraction=0.2, support_size=10, seed=seed))
    data = dataclasses.replace(dataset, name=f"{dataset.name} (20% new items, seed {seed})", ratings=split.train.reset_index(drop=True))
    return split, data


def scores_of(query, predictions: np.ndarray, rating_range) -> dict:
    """Pooled MAE, nDCG@3 and the per-user values (users in increasing order)."""
    p = np.clip(np.asarray(predictions, dtype=np.float64), *rating_range)
    y = query["rating"].to_numpy(np.float64)
    users = query["user"].to_numpy(np.int64)
    ids, user_mae = per_user(mae, users, y, p)
    ids_n, user_ndcg = ndcg_per_user(users, y, p, 3)
    assert np.array_equal(ids, ids_n)
    position = np.searchsorted(ids, users)
    return {
        "mae": mae(y, p), "ndcg@3": mean_ndcg_at_k(users, y, p, 3), "users": ids, "user_mae": user_mae, "user_ndcg@3": user_ndcg,
        "user_abs_error": np.bincount(position, weights=np.abs(y - p), minlength=len(ids)),
        "user_n": np.bincount(position, minlength=len(ids)),
    }


def run_predictions(run_dir: Path, split) -> np.ndarray:
    """A saved run's predictions of the query rows: known users adapted on their support, as the item-cold test scores them."""
    run = load_run(run_dir)
    tasks, positions = tasks_from_frames(split.support, split.query, warm=True)
    out = predict_tasks(run.model, run.inner_lr, run.config, tasks, run.context, run.loss)
    return out.reshape(-1)[positions]


def arm_configs(seed: int, epochs: int | None) -> dict[str, TrainConfig]:
    """The training configurations compared (``epochs`` None: the default number)."""
    base = {"seed": seed, "device": "cpu", **({"num_epochs": epochs} if epochs else {})}
    new_items = dict(NEW_ITEMS)
    model = new_items.pop("model")
    settings = {**new_items, "model": dataclasses.replace(TrainConfig().model, **model)}
    return {
        DEFAULT: TrainConfig(**base),
        NO_TEXT: TrainConfig(**base, scenario="item-cold", use_text=False, **settings),
        PREVIOUS: TrainConfig(**base, scenario="user-cold"),
        USER_SPLIT: TrainConfig(**base, scenario="user-cold", use_text=True, **settings),
    }


def paired(a: dict, b: dict) -> dict[str, float]:
    """Per-user (a − b) of MAE and nDCG@3: mean, SE = std/√n, n."""
    assert np.array_equal(a["users"], b["users"]), "paired differences need the same query users"
    out: dict[str, float] = {"n_users": int(len(a["users"]))}
    for key in ("user_mae", "user_ndcg@3"):
        d = np.asarray(a[key]) - np.asarray(b[key])
        d = d[np.isfinite(d)]
        out[f"{key}_diff"] = float(d.mean())
        out[f"{key}_se"] = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    # Pooled MAE (every query rating counts once): its difference and a standard error clustered by user.
    s, n = np.asarray(a["user_abs_error"]) - np.asarray(b["user_abs_error"]), np.asarray(a["user_n"], dtype=np.float64)
    diff = float(s.sum() / n.sum())
    out["pooled_mae_diff"] = diff
    out["pooled_mae_se"] = float(math.sqrt(len(s) / (len(s) - 1) * np.sum((s - diff * n) ** 2)) / n.sum()) if len(s) > 1 else float("nan")
    return out


def builtin_counts() -> list[dict]:
    """Items without interactions in every built-in dataset and what ``scenario="auto"`` resolves to there."""
    rows = []
    for name in BUILTIN_DATASETS:
        dataset = load_builtin(name)
        choice = resolve_scenario(TrainConfig(), dataset)
        rows.append({
            "dataset": name, "items": dataset.n_items, "without_interactions": items_without_interactions(dataset),
            "resolved": choice.config.scenario, "switched_on": choice.switched_on,
        })
    return rows


def mean_std(values) -> str:
    v = np.asarray(list(values), dtype=np.float64)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def render(report: dict) -> str:
    seeds = report["seeds"]
    per_seed = report["per_seed"]
    methods = [m for m in (*RUNS, GENRE, BIAS) if m in per_seed[str(seeds[0])]]
    lines = [
        "# New items with the default settings (ML-100K, 20 % of items without interactions)",
        "",
        f"Written by `{report['command']}` on {report['finished_utc']} UTC (total {report['seconds'] / 60:.1f} min), "
        f"code at commit `{report['code']['commit']}`"
        + (f" plus uncommitted changes to {', '.join(report['code']['metarec_core_uncommitted'])}" if report["code"]["metarec_core_uncommitted"] else "")
        + ".",
        f"Machine: {report['machine_line']}; shared, load average {report['load_start']:.1f} at the start and "
        f"{report['load_end']:.1f} at the end.",
        f"Seeds {', '.join(map(str, seeds))}; training epochs: {report['epochs'] or 'the default'}. Protocol in the script's docstring.",
        "",
        f"What `scenario=\"auto\"` picked on the seed-{seeds[0]} data: **{report['resolved'][str(seeds[0])]['message']}**.",
        "",
        "| method | MAE | nDCG@3 | " + " | ".join(f"seed {s}" for s in seeds) + " | fit s |",
        "|---|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for m in methods:
        rows = [per_seed[str(s)][m] for s in seeds]
        cells = " | ".join(f"{r['mae']:.3f} / {r['ndcg@3']:.3f}" for r in rows)
        secs = [r["wall_s"] for r in rows if "wall_s" in r]
        lines.append(f"| {m} | {mean_std(r['mae'] for r in rows)} | {mean_std(r['ndcg@3'] for r in rows)} | {cells} | "
                     f"{mean_std(secs) if secs else '–'} |")
    split = report["splits"][str(seeds[0])]
    lines += [
        "",
        f"Seed {seeds[0]}: {split['new_items']} new items, {split['users']} evaluated users, {split['query']} query ratings; "
        f"training data {split['train']} ratings.",
        "",
        "## Paired differences (default − method on the same query ratings; negative ΔMAE and positive ΔnDCG@3 favour the default)",
        "",
        "ΔMAE pooled: over query ratings, standard error clustered by user; ΔMAE per user: each user's MAE, averaged over users.",
        "",
        "| method | ΔMAE pooled ± se | ΔMAE per user ± se | ΔnDCG@3 ± se | better MAE / nDCG@3 in seeds |",
        "|---|---|---|---|---|",
    ]
    for name, p in report["paired"].items():
        m = p["mean"]
        lines.append(
            f"| {name} | {m['pooled_mae_diff']:+.4f} ± {m['pooled_mae_se']:.4f} | {m['user_mae_diff']:+.4f} ± {m['user_mae_se']:.4f} | "
            f"{m['user_ndcg@3_diff']:+.4f} ± {m['user_ndcg@3_se']:.4f} | "
            f"{p['wins_mae']}/{len(seeds)} / {p['wins_ndcg']}/{len(seeds)} |"
        )
    lines += [
        "",
        f"## When `auto` switches (rule: at least {AUTO_NEW_ITEM_SHARE:.0%} of the catalogue's items without interactions, explicit ratings, item features)",
        "",
        "| built-in dataset | items | without interactions | auto resolves to |",
        "|---|---|---|---|",
    ]
    for row in report["builtin"]:
        share = row["without_interactions"] / max(row["items"], 1)
        lines.append(f"| {row['dataset']} | {row['items']:,} | {row['without_interactions']:,} ({share:.1%}) | {row['resolved']} |")
    lines += [
        "",
        "On every built-in dataset `auto` resolves to `user-cold` with nothing else changed, so the default new-users "
        "runs (and the figures of `cold_start_ml100k.md` / `cold_start_ml1m.md`) are the ones `scenario=\"user-cold\"` gives.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--num-epochs", type=int, default=None, help="training epochs (default: TrainConfig's)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "new_items"), help="report path without extension")
    parser.add_argument("--arms", default=",".join(RUNS), help="comma list of the training arms to run")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    arms = [a for a in RUNS if a in args.arms.split(",")]
    torch.set_num_threads(1)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    dataset = load_movielens_100k()
    report: dict = {
        "command": "python benchmarks/bench_new_items.py" + (f" {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip()),
        "seeds": seeds, "epochs": args.num_epochs, "code": code_version(), "machine": machine(),
        "per_seed": {}, "splits": {}, "resolved": {}, "load_start": load_start,
    }
    scores: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            split, data = new_item_data(dataset, seed)
            rating_range = (float(split.train["rating"].min()), float(split.train["rating"].max()))
            report["splits"][str(seed)] = {"new_items": int(len(split.cold_items)), "users": int(split.n_evaluated),
                                           "query": int(len(split.query)), "train": int(len(split.train))}
            choice = resolve_scenario(TrainConfig(seed=seed), data)
            report["resolved"][str(seed)] = {"message": choice.message, "switched_on": choice.switched_on}
            per: dict[str, dict] = {}
            for name, config in arm_configs(seed, args.num_epochs).items():
                if name not in arms:
                    continue
                out = Path(tmp) / f"{seed}-{len(per)}"
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                result = fit(config, data, out_dir=out)
                wall = time.perf_counter() - t0
                per[name] = scores_of(split.query, run_predictions(out, split), rating_range)
                per[name].update(wall_s=wall, load_before=load, epochs=result.epochs_completed,
                                 resolved=flatten_settings(config_to_dict(result.artifacts.config)))
                print(f"seed {seed} {name}: MAE {per[name]['mae']:.4f} nDCG@3 {per[name]['ndcg@3']:.4f} ({wall:.0f} s, load {load:.1f})", flush=True)
            for name, model in ((GENRE, GenreBaseline.from_dataset(data)), (BIAS, BiasBaseline())):
                model.fit(data.ratings, data.n_users, data.n_items)
                per[name] = scores_of(split.query, model.predict_tasks(split.support, split.query), rating_range)
                print(f"seed {seed} {name}: MAE {per[name]['mae']:.4f} nDCG@3 {per[name]['ndcg@3']:.4f}", flush=True)
            scores[seed] = per
            report["per_seed"][str(seed)] = {m: {k: v for k, v in r.items() if not k.startswith("user") } for m, r in per.items()}
    report["paired"] = {}
    if DEFAULT in scores[seeds[0]]:
        for name in [m for m in scores[seeds[0]] if m != DEFAULT]:
            rows = [paired(scores[s][DEFAULT], scores[s][name]) for s in seeds]
            mean = {k: float(np.mean([r[k] for r in rows])) for k in ("pooled_mae_diff", "user_mae_diff", "user_ndcg@3_diff")}
            mean.update({k: float(math.sqrt(sum(r[k] ** 2 for r in rows)) / len(rows)) for k in ("pooled_mae_se", "user_mae_se", "user_ndcg@3_se")})
            report["paired"][name] = {
                "per_seed": rows, "mean": mean,
                "wins_mae": int(sum(scores[s][DEFAULT]["mae"] < scores[s][name]["mae"] for s in seeds)),
                "wins_ndcg": int(sum(scores[s][DEFAULT]["ndcg@3"] > scores[s][name]["ndcg@3"] for s in seeds)),
            }
    report["builtin"] = builtin_counts()
    report["machine_line"] = machine_line()
    report["load_end"] = os.getloadavg()[0]
    report["seconds"] = time.perf_counter() - started
    report["finished_utc"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
    write_report(args.out, report, render(report))


if __name__ == "__main__":
    main()
