"""Loading benchmark: ML-100K from the cache (< 1 s target) and a 5-million-row CSV load + validate (< 20 s).

Run: ``python benchmarks/bench_loading.py [--rows 5000000] [--repeats 5]``. Results go to
``benchmarks/results/loading.md``. The first run fetches ML-100K into the cache if needed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine import machine_line  # noqa: E402  (benchmarks/machine.py, beside this script)

from metarec_core.loaders import build_dataset, read_table  # noqa: E402
from metarec_core.movielens import ensure_movielens_100k, load_movielens_100k  # noqa: E402
from metarec_core.splits import SplitConfig, split_cold_start  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "loading.md"



def write_csv(path: Path, rows: int, seed: int = 0) -> tuple[int, int]:
    """A synthetic ratings CSV: ~rows/70 users, 20k items, Zipf-like item popularity, 1-5 ratings, timestamps."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    n_users, n_items = max(rows // 70, 10), 20_000
    user = rng.integers(1, n_users + 1, rows)
    item = (rng.pareto(1.2, rows) * 200).astype(np.int64) % n_items + 1
    rating = rng.integers(1, 6, rows)
    ts = 1_500_000_000 + rng.integers(0, 10**8, rows)
    table = pa.table({"user_id": user, "item_id": item, "rating": rating, "timestamp": ts})
    pacsv.write_csv(table, path)
    return n_users, n_items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only; do not update results/loading.md")
    args = parser.parse_args()

    ensure_movielens_100k()
    ml_times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        data = load_movielens_100k()
        ml_times.append(time.perf_counter() - t0)
    assert len(data.ratings) == 100_000
    # A fresh process: the load itself, and the whole process including Python and pandas/pyarrow imports.
    import subprocess

    code = (
        "import time; t0 = time.perf_counter(); from metarec_core.movielens import load_movielens_100k; "
        "t1 = time.perf_counter(); load_movielens_100k(); print(time.perf_counter() - t1, t1 - t0)"
    )
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])
    fresh_process = time.perf_counter() - t0
    fresh_load, fresh_import = (float(x) for x in done.stdout.split())
    t0 = time.perf_counter()
    split_cold_start(data, SplitConfig(scenario="user-cold"))
    ml_split = time.perf_counter() - t0
    print(
        f"ML-100K from cache: first {ml_times[0]:.3f} s, median {statistics.median(ml_times):.3f} s; fresh process: "
        f"load {fresh_load:.3f} s after imports {fresh_import:.2f} s, whole process {fresh_process:.2f} s; "
        f"user-cold split {ml_split * 1000:.0f} ms"
    )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ratings.csv"
        t0 = time.perf_counter()
        write_csv(path, args.rows)
        gen = time.perf_counter() - t0
        size_mb = path.stat().st_size / 2**20
        t0 = time.perf_counter()
        frame = read_table(path)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        big = build_dataset(frame, name="bench")
        t_build = time.perf_counter() - t0
        t0 = time.perf_counter()
        big_split = split_cold_start(big, SplitConfig(scenario="user-cold"))
        t_split = time.perf_counter() - t0
    total = t_read + t_build
    dupes = next((w for w in big.warnings if "more than once" in w), "no duplicates")
    print(
        f"{args.rows:,}-row CSV ({size_mb:.0f} MB, written in {gen:.1f} s): read {t_read:.2f} s + validate/build "
        f"{t_build:.2f} s = {total:.2f} s; user-cold split {t_split:.2f} s; {big!r}; {dupes}"
    )

    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            "# Loading benchmark\n\n"
            f"- Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}\n"
            f"- Machine: {machine_line()}\n"
            f"- Command: `python benchmarks/bench_loading.py --rows {args.rows} --repeats {args.repeats}`\n"
            f"- Load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine: other jobs "
            "were running; numbers are single runs, ML-100K in-process: median of repeats).\n\n"
            "| what | time | target |\n|---|---|---|\n"
            f"| ML-100K from the Parquet cache (`load_movielens_100k()`, median of {args.repeats}) | "
            f"{statistics.median(ml_times):.3f} s (first call {ml_times[0]:.3f} s) | < 1 s |\n"
            f"| ML-100K in a fresh process: the load / importing metarec_core, pandas, pyarrow / whole process | "
            f"{fresh_load:.3f} s / {fresh_import:.2f} s / {fresh_process:.2f} s | |\n"
            f"| {args.rows:,}-row CSV ({size_mb:.0f} MB): `read_table` (pyarrow) | {t_read:.2f} s | |\n"
            f"| same: `build_dataset` (validation, ID maps, duplicates) | {t_build:.2f} s | |\n"
            f"| same: load + validate total | **{total:.2f} s** | < 20 s |\n"
            f"| same: user-cold split (`split_cold_start`) | {t_split:.2f} s | |\n"
            f"| ML-100K user-cold split | {ml_split * 1000:.0f} ms | |\n\n"
            f"Big dataset: {big.n_users:,} users, {big.n_items:,} items, {len(big.ratings):,} ratings after "
            f"duplicates ({dupes}); {big_split.n_evaluated:,} users evaluated in the user-cold split.\n"
        )
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
