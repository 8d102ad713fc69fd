"""Benchmark of the item text encoders: import, model load, throughput and cache-hit load time.

Encodes the 1,682 ML-100K item texts (title + genres) when
``metarec_core.movielens.load_movielens_100k`` is available and can load the
data, else 1,682 synthetic title-like strings of the same shape (the report
says which). Writes ``benchmarks/results/text_encoder.md``.

Run from the repository root::

    python benchmarks/bench_text.py [--threads 1] [--device cpu] [--out benchmarks/results/text_encoder.md]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from machine import cpu_name  # noqa: E402  (benchmarks/machine.py, beside this script)

from metarec_core.dataset import Dataset  # noqa: E402
from metarec_core.features import FeatureSpec  # noqa: E402
from metarec_core.idmap import IdMap  # noqa: E402
from metarec_core.text import (  # noqa: E402
    HashingTextEncoder,
    SentenceTransformerEncoder,
    encode_items,
    item_texts,
)

N_ITEMS = 1682
GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
WORDS = ("Star", "Wars", "Story", "Night", "Day", "Love", "Dead", "Man", "Woman", "City", "Last", "First", "Return",
         "King", "Heat", "Lost", "Dark", "Blue", "House", "Game", "Dream", "River", "Heart", "Secret", "Ghost",
         "Wild", "Little", "Big", "American", "Summer", "Winter", "Island", "Moon", "Street", "Angel", "Fire")


def synthetic_dataset(seed: int = 0) -> Dataset:
    """1,682 items with ML-100K-like titles ("Word Word (1995)") and 1-3 genres."""
    rng = np.random.default_rng(seed)
    titles, genres = [], []
    for i in range(N_ITEMS):
        words = rng.choice(WORDS, size=int(rng.integers(1, 5)), replace=False)
        titles.append(f"{' '.join(words)} ({int(rng.integers(1930, 1999))})")
        genres.append("|".join(rng.choice(GENRES, size=int(rng.integers(1, 4)), replace=False)))
    ratings = pd.DataFrame({"user": np.zeros(1, np.int64), "item": np.zeros(1, np.int64),
                            "rating": np.ones(1, np.float32), "timestamp": np.full(1, -1, np.int64)})
    return Dataset(
        name="synthetic-titles", ratings=ratings, users=IdMap(["u0"]),
        items=IdMap([str(i) for i in range(N_ITEMS)]), user_table=pd.DataFrame(index=range(1)),
        item_table=pd.DataFrame({"title": titles, "genres": genres}),
        item_features=(FeatureSpec("title", "text"), FeatureSpec("genres", "multilabel")),
    )


def load_data() -> tuple[Dataset, str]:
    """ML-100K if its loader exists and works here, else synthetic titles; and a note saying which."""
    try:
        from metarec_core.movielens import load_movielens_100k  # type: ignore[import-not-found]
    except ImportError:
        return synthetic_dataset(), "synthetic titles (metarec_core.movielens does not exist yet)"
    try:
        dataset = load_movielens_100k()
    except Exception as exc:  # offline, no cache: fall back, and say so
        return synthetic_dataset(), f"synthetic titles (ML-100K could not be loaded: {exc})"
    return dataset, "ML-100K item table"


def fresh_import_seconds() -> float:
    """Seconds to import sentence_transformers (with torch and transformers) in a fresh interpreter."""
    code = ("import os, time; os.environ.setdefault('HF_HUB_OFFLINE', '1'); t = time.perf_counter(); "
            "import sentence_transformers; print(time.perf_counter() - t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--device", default="cpu", help="device of the sentence-transformers model")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "text_encoder.md")
    args = parser.parse_args()

    dataset, data_note = load_data()
    texts = item_texts(dataset)
    lengths = [len(t) for t in texts]
    print(f"data: {data_note}; {len(texts)} texts, mean {np.mean(lengths):.0f} chars, e.g. {texts[0]!r}")

    import_fresh = fresh_import_seconds()
    print(f"import sentence_transformers (fresh interpreter): {import_fresh:.2f} s")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t = time.perf_counter()
    import sentence_transformers  # noqa: F401
    import torch

    import_here = time.perf_counter() - t
    torch.set_num_threads(args.threads)

    encoder = SentenceTransformerEncoder("default", device=args.device)
    t = time.perf_counter()
    dim = encoder.dim  # loads the model
    load_s = time.perf_counter() - t
    print(f"model load: {load_s:.2f} s (dim {dim}, threads {torch.get_num_threads()})")

    with tempfile.TemporaryDirectory() as cache:
        cache_dir = Path(cache)
        t = time.perf_counter()
        first = encode_items(dataset, encoder, cache_dir=cache_dir, batch_size=args.batch_size)
        cold_s = time.perf_counter() - t
        print(f"encode_items, cold (encode + write cache): {cold_s:.2f} s = {len(texts) / cold_s:.0f} texts/s")

        t = time.perf_counter()
        again = encoder.encode(texts, batch_size=args.batch_size)
        warm_s = time.perf_counter() - t
        print(f"encode again: {warm_s:.2f} s = {len(texts) / warm_s:.0f} texts/s")
        max_diff = float(np.abs(first - again).max())

        hits = []
        for _ in range(20):
            t = time.perf_counter()
            cached = encode_items(dataset, encoder, cache_dir=cache_dir)
            hits.append(time.perf_counter() - t)
        assert np.array_equal(cached, first)
        fingerprints = []
        for _ in range(5):
            t = time.perf_counter()
            _ = dataset.fingerprint
            fingerprints.append(time.perf_counter() - t)
        cache_bytes = sum(p.stat().st_size for p in cache_dir.iterdir())
        print(f"cache hit: median {1000 * statistics.median(hits):.1f} ms, max {1000 * max(hits):.1f} ms")

        hashing = HashingTextEncoder(dim=64)
        t = time.perf_counter()
        hashing.encode(texts)
        hash_s = time.perf_counter() - t
        print(f"hashing encoder: {hash_s:.3f} s = {len(texts) / hash_s:.0f} texts/s")

    now = dt.datetime.now().astimezone()
    load = os.getloadavg()
    lines = [
        "# Text encoder benchmark",
        "",
        f"- Date: {now:%Y-%m-%d %H:%M %Z}; command: `python benchmarks/bench_text.py --threads {args.threads}"
        f" --device {args.device}`",
        f"- Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}; load average at the end "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}",
        f"- Torch intra-op threads: {torch.get_num_threads()}; device: {args.device}; batch size {args.batch_size}",
        f"- Data: {data_note}; {len(texts)} texts (title + genres), mean {np.mean(lengths):.0f} characters, "
        f"e.g. `{texts[0]}`",
        f"- Model: `{encoder.name}`, {dim} dimensions",
        "",
        "| step | time | rate |",
        "|---|---|---|",
        f"| import sentence-transformers (fresh interpreter, includes torch + transformers) | {import_fresh:.2f} s | |",
        f"| same import in the benchmark process (files in the OS cache) | {import_here:.2f} s | |",
        f"| model load (packaged all-MiniLM-L6-v2, offline) | {load_s:.2f} s | |",
        f"| `encode_items`, cache miss: encode {len(texts)} texts + write the cache | {cold_s:.2f} s |"
        f" {len(texts) / cold_s:.0f} texts/s |",
        f"| `encode`, second pass | {warm_s:.2f} s | {len(texts) / warm_s:.0f} texts/s |",
        f"| `encode_items`, cache hit (median of 20; max {1000 * max(hits):.1f} ms) |"
        f" {1000 * statistics.median(hits):.1f} ms | |",
        f"| of which `dataset.fingerprint` (part of the cache key; median of 5) |"
        f" {1000 * statistics.median(fingerprints):.1f} ms | |",
        f"| `HashingTextEncoder(dim=64)`, for comparison | {hash_s:.3f} s | {len(texts) / hash_s:.0f} texts/s |",
        "",
        f"Cache on disk: {cache_bytes / 1024:.0f} KiB (float32 `.npy` + JSON sidecar). The two encoding passes "
        f"agree to {max_diff:.1e} (max abs difference).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
