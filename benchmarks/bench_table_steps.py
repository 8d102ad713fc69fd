"""Benchmark of one training step's cost as the catalogue grows: dense against row-wise ID-table updates.

For each size (``--sizes``: ``ml-1m``, ``synthetic-3m`` = 100,000 users ×
50,000 items, the sizes of ``bench_scale.py``) and each ``table_updates``
setting (``dense``, ``rows``), a ``Trainer`` of ``TrainConfig(table_updates=…)``
(defaults otherwise) is built in this process and takes ``--warmup`` steps,
then ``--steps`` timed steps, of the meta phase and then of the transfer
phase (the steps ``fit`` takes, with their losses, optimiser, ``L0`` and
weight average). Reported per step: process CPU time (``time.process_time``,
which a busy shared machine inflates far less than wall time) and wall time,
and the ratio dense / rows of the CPU times. One torch thread.

Run from the repository root::

    python benchmarks/bench_table_steps.py [--sizes ml-1m,synthetic-3m] [--steps 40] [--out benchmarks/results/table_steps]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scale import SIZES, load_size  # noqa: E402  (benchmarks/bench_scale.py, beside this script)
from machine import code_version, machine, write_report  # noqa: E402

from metarec_core.train_config import TABLE_UPDATES, TrainConfig  # noqa: E402
from metarec_core.training import Trainer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def time_steps(dataset, table_updates: str, steps: int, warmup: int) -> dict:
    """CPU and wall milliseconds per step of each phase for one setting."""
    trainer = Trainer(TrainConfig(num_epochs=1, table_updates=table_updates, seed=0), dataset)
    meta_order = trainer.rng.permutation(trainer.meta_users)
    warm_order = torch.as_tensor(trainer.rng.permutation(len(trainer.warm_users)), device=trainer.device)
    out = {}
    b = 0
    for phase in ("meta", "transfer"):
        for _ in range(warmup):
            trainer.train_step(phase, 0, b, meta_order, warm_order)
            b += 1
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(steps):
            trainer.train_step(phase, 0, b, meta_order, warm_order)
            b += 1
        out[phase] = {"cpu_ms": (time.process_time() - cpu) / steps * 1e3, "wall_ms": (time.perf_counter() - wall) / steps * 1e3}
    return out


def render(report: dict) -> str:
    lines = [
        "# One training step: dense against row-wise ID-table updates",
        "",
        f"Written by `benchmarks/bench_table_steps.py` on {report['date']} at commit {report['code']['commit']}. Machine: "
        f"{report['machine']['cpu']}, nproc {report['machine']['nproc']}, torch {report['machine']['torch']}, 1 thread. "
        f"Load average {report['load_at_start']:.2f} at the start, {report['load_at_end']:.2f} at the end. "
        f"{report['steps']} timed steps per phase after {report['warmup']} untimed ones; CPU = process CPU time per step.",
        "",
        "| size | users | items | table_updates | meta CPU ms | meta wall ms | transfer CPU ms | transfer wall ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['size']} | {r['n_users']:,} | {r['n_items']:,} | {r['table_updates']} | {r['meta']['cpu_ms']:.1f} | "
            f"{r['meta']['wall_ms']:.1f} | {r['transfer']['cpu_ms']:.1f} | {r['transfer']['wall_ms']:.1f} |"
        )
    lines += ["", "Dense / rows, CPU time per step: " + "; ".join(
        f"{size}: meta {ratio['meta']:.2f}×, transfer {ratio['transfer']:.2f}×" for size, ratio in report["ratios"].items()
    ) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="ml-1m,synthetic-3m", help=f"comma-separated sizes among {', '.join(SIZES)}")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per phase (default 40)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per phase first (default 3)")
    parser.add_argument("--out", default=str(RESULTS / "table_steps"), help="output path without extension (.md and .json)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        parser.error(f"unknown size(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(SIZES)}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    torch.set_num_threads(1)
    load_at_start = os.getloadavg()[0]
    results, ratios = [], {}
    for size in sizes:
        dataset = load_size(SIZES[size])
        by_mode = {}
        for mode in TABLE_UPDATES:
            record = {"size": size, "n_users": dataset.n_users, "n_items": dataset.n_items, "table_updates": mode,
                      **time_steps(dataset, mode, args.steps, args.warmup)}
            by_mode[mode] = record
            results.append(record)
            print(f"{size} {mode}: meta {record['meta']['cpu_ms']:.1f} ms, transfer {record['transfer']['cpu_ms']:.1f} ms CPU per step", flush=True)
        ratios[size] = {p: by_mode["dense"][p]["cpu_ms"] / by_mode["rows"][p]["cpu_ms"] for p in ("meta", "transfer")}
    report = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"), "machine": machine(), "code": code_version(),
        "load_at_start": load_at_start, "load_at_end": os.getloadavg()[0], "steps": args.steps, "warmup": args.warmup,
        "results": results, "ratios": ratios,
    }
    write_report(args.out, report, render(report))


if __name__ == "__main__":
    main()
