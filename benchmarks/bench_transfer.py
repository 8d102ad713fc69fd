"""Benchmark of transfer on ML-100K: text features for new items, and pretraining on another domain for new users.

Protocols (every model and baseline of a seed sees the same split):

* **item-cold** — ``split_cold_start(ml100k, SplitConfig(scenario="item-cold",
  cold_fraction=0.2, support_size=10, seed=s))``: 20% of the rated items are new
  (no rating of them is trained on); every user who rated a new item adapts on
  10 of their ratings of existing items (support) and is scored on their
  ratings of new items (query). Models: ``fit`` with the item text (title +
  genres, encoded by the packaged all-MiniLM-L6-v2, through the trainable
  adaptor) and without it (genres and year only); the same pair with
  ``model.use_item_ids=False`` (every item, warm or new, described by its
  features alone, so training must put the item knowledge into the feature
  path that new items use); baselines ItemMean and
  BiasBaseline fitted on the same training rows (a new item has no bias, so
  they fall back to the global mean plus the user's offset).
* **both-cold** — the same with 20% new users *and* 20% new items; the query
  is new users' ratings of new items.
* **cross-domain** — ML-100K split by genres: source = movies with any of
  Comedy, Drama, Romance; target = all other movies (action, thriller, sci-fi,
  horror, children's, ...). Target-domain new users (user-cold, 20% of target
  users, 10-shot) scored by a model trained on the target only and by one
  trained on the source first and then on the target with L2-SP towards the
  source weights (``train_cross_domain``). Also: those new users who are known
  from the source, scored with their source ID parameters
  (``evaluate_returning_users``). And a young target market: the target's
  training users keep 20% of their ratings (new users untouched), target
  runs with and without the same source run.

For the item-cold split two content baselines show how much each item
representation says about a new item's appeal: BiasBaseline whose new items
get a bias predicted by ridge regression (fitted on the warm items' learned
biases) from genres + year, or from genres + year + the MiniLM text vector.

MAE pooled over query ratings; nDCG@3 per user within the user's query set
(gain 2^r−1), averaged over users. Mean ± std (ddof=1) over seeds.

Run:  python benchmarks/bench_transfer.py [--seeds 0,1,2] [--epochs 5] [--out benchmarks/results/transfer.md]
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from metarec_core.baselines import BiasBaseline, ItemMean, TaskRows  # noqa: E402
from metarec_core.configs import config_from_dict, config_to_dict, with_overrides  # noqa: E402
from metarec_core.features import FeatureEncoder  # noqa: E402
from metarec_core.domains import evaluate_returning_users, split_domains, train_cross_domain  # noqa: E402
from metarec_core.metrics import mae, mean_ndcg_at_k  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.splits import SplitConfig, split_cold_start  # noqa: E402
from metarec_core.text import default_text_columns, encode_items, item_texts, make_text_encoder  # noqa: E402
from metarec_core.presets import PRESETS  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402

SOURCE_GENRES = ("Comedy", "Drama", "Romance")
SPARSE_KEEP = 0.2


#: The inner loop of the "new items (text features)" preset (gradient steps), used by both item-cold and both-cold arms.
NEW_ITEMS_INNER_LOOP = {k: v for k, v in PRESETS["new items (text features)"].items() if k.startswith("inner_")}


def baseline_metrics(dataset, config: TrainConfig) -> dict[str, dict[str, float]]:
    """ItemMean and BiasBaseline on the split ``fit`` makes for ``config``."""
    split = split_cold_start(
        dataset,
        SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed),
    )
    truth = split.query["rating"].to_numpy(np.float64)
    users = split.query["user"].to_numpy(np.int64)
    out = {}
    for name, model in (("ItemMean", ItemMean()), ("BiasBaseline", BiasBaseline())):
        model.fit(split.train, dataset.n_users, dataset.n_items)
        scores = np.clip(model.predict_tasks(split.support, split.query), *dataset.rating_range)
        out[name] = {"mae": mae(truth, scores), "ndcg@3": mean_ndcg_at_k(users, truth, scores, 3)}
    out["_protocol"] = {"query_ratings": float(len(split.query)), "users": float(split.n_evaluated), "new_items": float(len(split.cold_items))}
    return out


def content_bias_metrics(dataset, config: TrainConfig, features: dict[str, np.ndarray], *, ridge: float = 10.0) -> dict[str, dict[str, float]]:
    """BiasBaseline whose new items get a bias predicted from their features by ridge regression on the warm items.

    Measures how much each item representation says about an item's average
    appeal (its bias): the part of a new item's rating a content model can know.
    """
    split = split_cold_start(
        dataset,
        SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed),
    )
    bias = BiasBaseline().fit(split.train, dataset.n_users, dataset.n_items)
    counts = np.bincount(split.train["item"].to_numpy(np.int64), minlength=dataset.n_items)
    warm = np.flatnonzero(counts > 0)
    rows = TaskRows.from_frames(split.support, split.query)
    truth = split.query["rating"].to_numpy(np.float64)
    users = split.query["user"].to_numpy(np.int64)
    out = {}
    for name, x in features.items():
        design = np.hstack([x, np.ones((len(x), 1))])
        weight = np.sqrt(np.minimum(counts[warm], 50.0))  # trust well-rated items more, not overwhelmingly
        gram = design[warm].T @ (design[warm] * weight[:, None]) + ridge * np.eye(design.shape[1])
        coef = np.linalg.solve(gram, design[warm].T @ (weight * bias.item_bias[warm]))
        item_bias = np.where(counts > 0, bias.item_bias, design @ coef)
        scores = bias.global_mean + bias.user_offsets(rows)[rows.query_task] + item_bias[rows.query_items]
        scores = np.clip(scores, *dataset.rating_range)
        out[name] = {"mae": mae(truth, scores), "ndcg@3": mean_ndcg_at_k(users, truth, scores, 3)}
    return out


def item_feature_matrix(dataset) -> np.ndarray:
    """Genres (one-hot) and standardised year of every item, as the model's feature encoder reads them."""
    encoder = FeatureEncoder.fit(dataset.item_table, tuple(s for s in dataset.item_features if s.kind != "text"))
    encoded = encoder.transform(dataset.item_table)
    blocks = []
    for labels, vocab in zip(encoded.multilabel, encoder.of_kind("multilabel")):
        onehot = np.zeros((dataset.n_items, vocab.size))
        for j in range(labels.shape[1]):
            onehot[np.arange(dataset.n_items), labels[:, j]] = 1.0
        blocks.append(onehot[:, 1:])
    blocks.append(encoded.numeric)
    return np.hstack(blocks)


def sparse_target(target, config: TrainConfig, keep: float):
    """The target with only ``keep`` of the training users' ratings (at least one each); new users' ratings untouched.

    Every user keeps a rating, so the seeded choice of new users is the one
    of the full target (their support/query draw differs: it is seeded per row).
    """
    settings = SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed)
    full = split_cold_start(target, settings)
    ratings = target.ratings
    users = ratings["user"].to_numpy(np.int64)
    rng = np.random.default_rng([config.seed, 7])
    kept = np.isin(users, full.cold_users) | (rng.random(len(ratings)) < keep)
    first = ~ratings["user"].duplicated().to_numpy()  # one rating per user survives
    sparse = dataclasses.replace(target, name=f"{target.name} ({keep:.0%} of training ratings)", ratings=ratings[kept | first].reset_index(drop=True))
    again = split_cold_start(sparse, settings)
    assert np.array_equal(again.cold_users, full.cold_users), "the sparse target must keep the same new users"
    return sparse


def model_metrics(result) -> dict[str, float]:
    m = result.final_metrics
    return {"mae": m["test_mae"], "ndcg@3": m["test_ndcg@3"]}


def timed_fit(config: TrainConfig, dataset, **kwargs):
    start = time.perf_counter()
    result = fit(config, dataset, **kwargs)
    out = model_metrics(result)
    out["seconds"] = time.perf_counter() - start
    return out


def encoding_benchmark(dataset, cache_dir: Path) -> tuple[np.ndarray, dict]:
    """Encode the ML-100K item texts with the packaged MiniLM (cache miss), then load them from the cache."""
    encoder = make_text_encoder("default")
    columns = default_text_columns(dataset)
    texts = item_texts(dataset, columns)
    start = time.perf_counter()
    encoder.dim  # imports sentence-transformers and loads the model
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    vectors = encode_items(dataset, encoder, cache_dir=cache_dir)
    miss = time.perf_counter() - start
    hits = []
    for _ in range(20):
        start = time.perf_counter()
        again = encode_items(dataset, encoder, cache_dir=cache_dir)
        hits.append(time.perf_counter() - start)
    assert np.array_equal(vectors, again)
    info = {
        "encoder": encoder.name, "columns": list(columns), "n_texts": len(texts),
        "mean_chars": float(np.mean([len(t) for t in texts])), "example": texts[0], "dim": int(vectors.shape[1]),
        "import_and_load_s": loaded, "cache_miss_s": miss, "texts_per_s": len(texts) / miss,
        "cache_hit_median_ms": 1000 * float(np.median(hits)), "cache_hit_max_ms": 1000 * float(np.max(hits)),
    }
    return vectors, info


def run(seeds: list[int], epochs: int, parts: list[str]) -> dict:
    torch.set_num_threads(1)
    data = load_movielens_100k()
    base = {"num_epochs": epochs, "device": "cpu"}
    results: dict = {"seeds": seeds, "config": {**config_to_dict(config_from_dict(TrainConfig, base))}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        vectors = None
        if "item-cold" in parts or "both-cold" in parts:
            vectors, results["encoding"] = encoding_benchmark(data, tmp_path / "text-cache")
            genre_year = item_feature_matrix(data)
            print(f"encoding: {results['encoding']}", flush=True)
        for scenario in ("item-cold", "both-cold"):
            if scenario not in parts:
                continue
            rows = results.setdefault(scenario, {})
            for seed in seeds:
                # Both arms hide item IDs half of the time in training and adapt as the "new items" preset does.
                config = config_from_dict(TrainConfig, {**base, **NEW_ITEMS_INNER_LOOP, "scenario": scenario, "seed": seed, "model": {"item_id_dropout": 0.5}})
                per = baseline_metrics(data, config)
                per.update(content_bias_metrics(data, config, {
                    "BiasBaseline + ridge bias from genres, year": genre_year,
                    "BiasBaseline + ridge bias from genres, year, text": np.hstack([genre_year, vectors]),
                }))
                per["with text"] = timed_fit(dataclasses.replace(config, use_text=True), data, text_vectors=vectors)
                per["without text"] = timed_fit(config, data)
                if scenario == "item-cold":
                    # Items described by features alone (no item ID embeddings): what the text adds when nothing else can.
                    no_ids = dataclasses.replace(config, model=dataclasses.replace(config.model, use_item_ids=False))
                    per["with text, no item IDs"] = timed_fit(dataclasses.replace(no_ids, use_text=True), data, text_vectors=vectors)
                    per["without text, no item IDs"] = timed_fit(no_ids, data)
                rows[str(seed)] = per
                print(scenario, seed, json.dumps(per), flush=True)
        if "cross-domain" in parts:
            split = split_domains(data, "genres", SOURCE_GENRES)
            results["cross-domain"] = {"split": split.description, "summary": split.summary(), "warnings": list(split.warnings)}
            for seed in seeds:
                config = config_from_dict(TrainConfig, {**base, "scenario": "user-cold", "seed": seed})
                per = baseline_metrics(split.target, config)
                per["target only"] = timed_fit(config, split.target)
                start = time.perf_counter()
                out = tmp_path / f"cross-{seed}"
                both = train_cross_domain(config, split, out)
                per["source → target (L2-SP)"] = model_metrics(both.target) | {"seconds": time.perf_counter() - start}
                per["source run (warm, source domain)"] = model_metrics(both.source)
                per["returning users"] = evaluate_returning_users(out / "target", out / "source", split.target)
                # A young market: the target's training users keep a fifth of their ratings; same new users and queries.
                sparse = sparse_target(split.target, config, SPARSE_KEEP)
                per["sparse: target only"] = timed_fit(config, sparse)
                per["sparse: source → target (L2-SP)"] = timed_fit(with_overrides(config, {"source_run": str(out / "source")}), sparse)
                per["sparse: BiasBaseline"] = baseline_metrics(sparse, config)["BiasBaseline"]
                results["cross-domain"][str(seed)] = per
                print("cross-domain", seed, json.dumps(per), flush=True)
    return results


def code_version() -> tuple[str, list[str]]:
    """The git commit the code runs from and the library files changed since (read when the run starts)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=root).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "metarec_core"], capture_output=True, text=True, check=True, cwd=root).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown", []
    return commit, [line[3:] for line in status.splitlines() if line.strip()]


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def table(block: dict, seeds: list[int], methods: list[str]) -> list[str]:
    lines = ["| method | MAE | nDCG@3 | " + " | ".join(f"seed {s} MAE / nDCG@3" for s in seeds) + " | fit s |",
             "|---|---|---|" + "---|" * len(seeds) + "---|"]
    for m in methods:
        per = [block[str(s)][m] for s in seeds]
        cells = " | ".join(f"{p['mae']:.3f} / {p['ndcg@3']:.3f}" for p in per)
        secs = [p.get("seconds") for p in per if p.get("seconds") is not None]
        lines.append(f"| {m} | {mean_std([p['mae'] for p in per])} | {mean_std([p['ndcg@3'] for p in per])} | {cells} | "
                     f"{mean_std(secs) if secs else '–'} |")
    return lines


def verdict(block: dict, seeds: list[int], a: str, b: str) -> str:
    wins_mae = sum(block[str(s)][a]["mae"] < block[str(s)][b]["mae"] for s in seeds)
    wins_ndcg = sum(block[str(s)][a]["ndcg@3"] > block[str(s)][b]["ndcg@3"] for s in seeds)
    d_mae = np.mean([block[str(s)][a]["mae"] - block[str(s)][b]["mae"] for s in seeds])
    d_ndcg = np.mean([block[str(s)][a]["ndcg@3"] - block[str(s)][b]["ndcg@3"] for s in seeds])
    better = wins_mae == len(seeds) and wins_ndcg == len(seeds)
    return (f"**{a}** vs **{b}**: MAE {d_mae:+.3f}, nDCG@3 {d_ndcg:+.3f} (mean difference); lower MAE in "
            f"{wins_mae}/{len(seeds)} seeds, higher nDCG@3 in {wins_ndcg}/{len(seeds)} — "
            + ("**better on both metrics in every seed**." if better else "**not better on both metrics in every seed**."))


def write_markdown(results: dict, path: Path, command: str) -> None:
    seeds = results["seeds"]
    load = results["load_average"]
    commit = results.get("commit", "unknown")
    if results.get("uncommitted"):
        commit += "` plus uncommitted changes to `" + "`, `".join(results["uncommitted"])
    lines = [
        "# Transfer on ML-100K: text features for new items, source-domain pretraining for new users",
        "",
        f"Written by `{command}` on {results['finished_utc']} UTC "
        f"(total {results['seconds'] / 60:.1f} min), code at commit `{commit}`.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, shared with other jobs "
        f"(load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}); Python {platform.python_version()}, "
        f"torch {torch.__version__}, 1 torch thread, CPU.",
        f"Seeds: {', '.join(map(str, seeds))}. Training: `TrainConfig` defaults except `num_epochs={results['config']['num_epochs']}` "
        "(default 8; shortened because the machine is shared) — alternating schedule, second-order MAML, "
        f"inner loop {TrainConfig().inner_steps} {TrainConfig().inner_solver} step(s) (item-cold and both-cold: the new-items preset's "
        f"{NEW_ITEMS_INNER_LOOP.get('inner_steps')} {NEW_ITEMS_INNER_LOOP.get('inner_solver')} steps), "
        "adapt scope `user`, keep_best. Mean ± std (ddof=1) over seeds. Protocols are in the script's docstring.",
        "",
    ]
    pairs = [("item-cold", "with text", "without text"), ("item-cold", "with text, no item IDs", "without text, no item IDs"),
             ("both-cold", "with text", "without text"), ("cross-domain", "source → target (L2-SP)", "target only"),
             ("cross-domain", "sparse: source → target (L2-SP)", "sparse: target only")]
    bottom = [f"- {scenario}: " + verdict(results[scenario], seeds, a, b) for scenario, a, b in pairs
              if scenario in results and a in results[scenario][str(seeds[0])]]
    if bottom:
        lines += ["## Does the transfer help? (same splits, per seed)", "", *bottom, ""]
    if "encoding" in results:
        e = results["encoding"]
        lines += [
            "## Text encoding",
            "",
            f"Encoder `{e['encoder']}` ({e['dim']} dimensions), item columns {e['columns']} joined per item "
            f"({e['n_texts']} texts, mean {e['mean_chars']:.0f} characters, e.g. `{e['example']}`).",
            "",
            "| step | time |",
            "|---|---|",
            f"| import sentence-transformers + load the packaged model | {e['import_and_load_s']:.1f} s |",
            f"| `encode_items`, cache miss (encode + write `.npy`) | {e['cache_miss_s']:.1f} s ({e['texts_per_s']:.0f} texts/s) |",
            f"| `encode_items`, cache hit (median of 20; max {e['cache_hit_max_ms']:.1f} ms) | {e['cache_hit_median_ms']:.1f} ms |",
            "",
        ]
    for scenario, title in (("item-cold", "Item cold start: 20% of items new"), ("both-cold", "Both cold: 20% new users rating 20% new items")):
        if scenario not in results:
            continue
        block = results[scenario]
        proto = block[str(seeds[0])]["_protocol"]
        methods = [m for m in (
            "with text", "without text", "with text, no item IDs", "without text, no item IDs", "BiasBaseline", "ItemMean",
            "BiasBaseline + ridge bias from genres, year", "BiasBaseline + ridge bias from genres, year, text",
        ) if m in block[str(seeds[0])]]
        lines += [
            f"## {title}",
            "",
            f"Seed {seeds[0]}: {int(proto['new_items'])} new items, {int(proto['users'])} evaluated users, "
            f"{int(proto['query_ratings'])} query ratings. 10-shot support of existing items.",
            "",
            *table(block, seeds, methods),
            "",
            verdict(block, seeds, "with text", "without text"),
            "",
        ]
        if "with text, no item IDs" in methods:
            lines += [verdict(block, seeds, "with text, no item IDs", "without text, no item IDs"), ""]
    if "cross-domain" in results:
        block = results["cross-domain"]
        s = block["summary"]
        lines += [
            "## Cross-domain: new users of a target domain",
            "",
            f"{block['split']}. Users with ratings in both: {s['shared_users']}.",
            "Source run: the same settings on the source domain with scenario `warm` (every source user keeps "
            "training ratings). Target runs: user-cold, 20% of target users new, 10-shot. Baselines fitted on the "
            "target domain's training rows only.",
            "",
            *table(block, seeds, ["source → target (L2-SP)", "target only", "BiasBaseline", "ItemMean"]),
            "",
            verdict(block, seeds, "source → target (L2-SP)", "target only"),
            "",
            "Returning customers — target-domain new users who rated source movies, scored by the target run "
            "without and with their source ID factor and bias (same support sets, same queries):",
            "",
            "| seed | users | MAE new → returning | nDCG@3 new → returning |",
            "|---|---|---|---|",
        ]
        for seed in seeds:
            r = block[str(seed)]["returning users"]
            if r:
                lines.append(f"| {seed} | {int(r['n_users'])} | {r['new_mae']:.3f} → {r['returning_mae']:.3f} | "
                             f"{r['new_ndcg@3']:.3f} → {r['returning_ndcg@3']:.3f} |")
        if "sparse: target only" in block[str(seeds[0])]:
            lines += [
                "",
                f"### A young target market: training users keep {SPARSE_KEEP:.0%} of their target ratings",
                "",
                "Same new users (their target ratings untouched; support/query redrawn), same source run.",
                "",
                *table(block, seeds, ["sparse: source → target (L2-SP)", "sparse: target only", "sparse: BiasBaseline"]),
                "",
                verdict(block, seeds, "sparse: source → target (L2-SP)", "sparse: target only"),
            ]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--parts", default="item-cold,both-cold,cross-domain")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "transfer.md"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.perf_counter()
    commit, uncommitted = code_version()
    results = run(seeds, args.epochs, args.parts.split(","))
    results["commit"], results["uncommitted"] = commit, uncommitted
    results["finished_utc"] = f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M}"
    results["load_average"] = list(os.getloadavg())
    results["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    command = "python benchmarks/bench_transfer.py " + " ".join(sys.argv[1:])
    write_markdown(results, out, command.strip())
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
