"""Benchmark of every user's top-K as CSV (``recommend --all-users``): time per user, and memory with chunks against all at once.

A small run is trained once on a synthetic dataset (``--users`` users x ``--items`` items,
one epoch); then, each in a fresh process so that peak memory is its own, every
user's top-K is written to a CSV with :func:`metarec_core.top_lists.top_lists`
in chunks of 256 users (what ``recommend --all-users`` does) and with one chunk
holding every user (the rows all in memory before writing). Reported: seconds,
users per second and the child's peak RSS above the same process that only loads the run.

Run from the repository root::

    python benchmarks/bench_top_lists.py [--users 5000] [--items 1000] [--k 10]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core.synthetic import SyntheticConfig, make_synthetic  # noqa: E402
from metarec_core.train_config import TrainConfig  # noqa: E402
from metarec_core.training import fit  # noqa: E402

from machine import code_version, machine, write_report  # noqa: E402  (benchmarks/machine.py, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"
#: The child: load the run, then (unless chunk is 0) write every user's top-K; prints seconds and peak RSS in bytes.
CHILD = """
import sys, time
from metarec_core.memory import peak_rss
from metarec_core.recommender import Recommender
from metarec_core.top_lists import top_lists, write_top_lists
run, out, k, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rec = Recommender.from_run_dir(run)
users = list(rec.users.external_ids)
started = time.perf_counter()
rows = write_top_lists(top_lists(rec, users, k=k, chunk_size=chunk), out) if chunk else 0
print(time.perf_counter() - started, peak_rss(), rows, len(users))
"""


def child(run: Path, out: Path, k: int, chunk: int) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", CHILD, str(run), str(out), str(k), str(chunk)], cwd=REPO,
                            capture_output=True, text=True, check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    seconds, peak, rows, users = result.stdout.split()
    return {"seconds": float(seconds), "peak_rss_mb": int(peak) / 2**20, "rows": int(rows), "users": int(users)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "top_lists")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    data = make_synthetic(SyntheticConfig(n_users=args.users, n_items=args.items, ratings_per_user=(10, 30), seed=0)).dataset
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        fit(TrainConfig(num_epochs=1, device="cpu"), data, out_dir=run)
        base = child(run, Path(tmp) / "none.csv", args.k, 0)
        results = {}
        for name, chunk in (("chunks of 256 users", 256), ("one chunk of every user", args.users)):
            measured = child(run, Path(tmp) / "recs.csv", args.k, chunk)
            measured["above_load_mb"] = measured["peak_rss_mb"] - base["peak_rss_mb"]
            measured["users_per_second"] = measured["users"] / measured["seconds"]
            results[name] = measured
    report = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "code": code_version(),
        "load_at_start": load, "load_at_end": os.getloadavg()[0], "users": args.users, "items": args.items, "k": args.k,
        "loaded_run_peak_rss_mb": base["peak_rss_mb"], "results": results,
    }
    lines = [
        "# Every user's top-K as CSV", "",
        f"{args.users:,} users x {args.items:,} items (synthetic), top {args.k}; a fresh process per row; "
        f"load average {load:.1f} at the start, {report['load_at_end']:.1f} at the end (2 cores shared: read the ratio, not the seconds).", "",
        "| how | rows | seconds | users / s | peak RSS MB | above loading the run MB |", "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['rows']:,} | {r['seconds']:.1f} | {r['users_per_second']:.0f} | {r['peak_rss_mb']:.0f} | {r['above_load_mb']:.1f} |")
    lines += ["", f"Loading the run alone peaks at {base['peak_rss_mb']:.0f} MB.", ""]
    write_report(args.out, report, "\n".join(lines))


if __name__ == "__main__":
    main()
