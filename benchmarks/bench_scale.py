"""Benchmark of how training cost grows with the data: ML-100K, ML-1M and synthetic sets of 3M and 10M ratings.

Sizes (``--sizes``, comma-separated, default all, smallest first):

* ``ml-100k`` — MovieLens-100K (943 users, 1,682 movies, 100,000 ratings);
* ``ml-1m`` — MovieLens-1M (6,040 users, 3,883 movies, 1,000,209 ratings);
* ``synthetic-3m`` — ``SyntheticConfig(n_users=100_000, n_items=50_000,
  ratings_per_user=(10, 50))``, about 3 million ratings;
* ``synthetic-10m`` — the same with ``ratings_per_user=(50, 150)``, about 10 million.

Every size trains ``TrainConfig(num_epochs=--epochs)`` (the defaults otherwise:
alternating schedule, one meta pass and two transfer passes per epoch, batch
2048, meta-batch 32 tasks, Newton inner step, ``cpu_threads=1``) in its own
subprocess, so that each has a fresh heap; the parent reads that child's peak
resident memory from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (through
a one-child wrapper process, so the number is that child's alone). From
``fit``'s progress events (phase, elapsed) the child sums the time of each
phase: ``meta`` and ``transfer`` steps, the end-of-epoch ``validate`` passes,
and ``evaluation`` (from the last validation to the ``done`` event: the final
validation and the held-out test). The first step's gap also holds the
set-up (split, feature encoding, model); it is counted at the median step
time of its phase and the rest is ``setup``. Throughput: transfer ratings/s =
steps x batch rows / transfer seconds; meta tasks/s = steps x tasks per batch
/ meta seconds. The report also sets ``metarec_core.footprint.estimate``'s
predicted peak beside the measured one, and tabulates time and memory against
the number of ratings (growth exponents between consecutive sizes: 1 means
linear).

Run from the repository root (one heavy job at a time on a shared machine)::

    python benchmarks/bench_scale.py [--sizes ml-100k,ml-1m] [--epochs 2] [--device auto] [--out benchmarks/results/scale]
    python benchmarks/bench_scale.py --sizes synthetic-3m --set table_updates=rows --out /tmp/scale_rows  # a setting changed

``--set KEY=VALUE`` (repeatable) overrides a ``TrainConfig`` setting for every
size (the value is read as JSON, else as a string); the report names it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import code_version, machine, write_report  # noqa: E402  (benchmarks/machine.py, beside this script)

RESULTS = Path(__file__).resolve().parent / "results"
#: Size name -> how to build it.
SIZES = {
    "ml-100k": {"kind": "movielens-100k"},
    "ml-1m": {"kind": "movielens-1m"},
    "synthetic-3m": {"kind": "synthetic", "n_users": 100_000, "n_items": 50_000, "ratings_per_user": [10, 50]},
    "synthetic-10m": {"kind": "synthetic", "n_users": 100_000, "n_items": 50_000, "ratings_per_user": [50, 150]},
}
MB = 2**20


def load_size(spec: dict):
    """The dataset of one size."""
    if spec["kind"] == "movielens-100k":
        from metarec_core.movielens import load_movielens_100k

        return load_movielens_100k()
    if spec["kind"] == "movielens-1m":
        from metarec_core.movielens_1m import load_movielens_1m

        return load_movielens_1m()
    from metarec_core.configs import config_from_dict
    from metarec_core.synthetic import SyntheticConfig, make_synthetic

    values = {k: v for k, v in spec.items() if k != "kind"}
    return make_synthetic(config_from_dict(SyntheticConfig, {**values, "seed": 0})).dataset


def phase_times(events: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Seconds and counts per phase from ``(phase, elapsed)`` progress events (see the module docstring).

    Each event's gap since the one before goes to its phase (``done`` to
    ``evaluation``); the first gap, which also holds the set-up, is split
    into one step at the median step time of its phase and ``setup``.
    """
    gaps: list[tuple[str, float]] = []
    previous = 0.0
    for phase, elapsed in events:
        gaps.append(("evaluation" if phase == "done" else phase, elapsed - previous))
        previous = elapsed
    if not gaps:
        return {}
    steps: dict[str, list[float]] = {}
    for name, gap in gaps[1:]:
        steps.setdefault(name, []).append(gap)
    first_phase, first_gap = gaps[0]
    typical = statistics.median(steps[first_phase]) if steps.get(first_phase) else 0.0
    steps.setdefault(first_phase, []).append(min(typical, first_gap))
    out = {"setup": {"seconds": max(first_gap - typical, 0.0), "count": 1}}
    for name, values in steps.items():
        out[name] = {"seconds": float(sum(values)), "count": len(values)}
    return out


def child(size: str, epochs: int, device: str, out: Path, overrides: dict | None = None) -> None:
    """Train one size and write its measurements as JSON to ``out`` (run in a fresh process)."""
    import torch

    from metarec_core.configs import config_from_dict
    from metarec_core.footprint import data_shape, estimate
    from metarec_core.memory import current_rss, peak_rss
    from metarec_core.train_config import TrainConfig
    from metarec_core.training import fit

    started = time.perf_counter()
    runtime_rss = current_rss()
    dataset = load_size(SIZES[size])
    load_s = time.perf_counter() - started
    loaded_rss = current_rss()
    config = config_from_dict(TrainConfig, {**(overrides or {}), "num_epochs": epochs, "device": device, "seed": 0})
    footprint = estimate(config, data_shape(dataset, config))
    events: list[tuple[str, float]] = []
    t0 = time.perf_counter()
    result = fit(config, dataset, on_progress=lambda e: events.append((e.phase, e.elapsed)))
    fit_s = time.perf_counter() - t0
    phases = phase_times(events)
    # Batches are full unless there are fewer tasks (users with more than support_size ratings) or rows than a batch.
    counts = dataset.ratings.groupby("user").size()
    n_meta_users = int((counts > config.support_size).sum() * (1 - config.cold_fraction - config.valid_fraction))
    tasks_per_batch = min(config.meta_batch_size, n_meta_users)
    rows_per_batch = min(config.batch_size, len(dataset.ratings))
    meta, transfer = phases.get("meta", {}), phases.get("transfer", {})
    record = {
        "size": size,
        "n_users": dataset.n_users, "n_items": dataset.n_items, "n_ratings": len(dataset.ratings),
        "n_meta_users_about": n_meta_users,
        "device": result.device, "torch_threads": torch.get_num_threads(), "epochs": result.epochs_completed,
        "load_s": load_s, "fit_s": fit_s, "phases": phases,
        "transfer_ratings_per_s": transfer.get("count", 0) * rows_per_batch / transfer["seconds"] if transfer.get("seconds") else None,
        "meta_tasks_per_s": meta.get("count", 0) * tasks_per_batch / meta["seconds"] if meta.get("seconds") else None,
        "evaluation_s": phases.get("evaluation", {}).get("seconds"),
        "runtime_rss": runtime_rss, "loaded_rss": loaded_rss, "peak_rss_self": peak_rss(),
        "estimated_peak": footprint.peak_bytes, "estimated_device": footprint.device_bytes, "n_parameters": footprint.n_parameters,
        "test_metrics": {k: v for k, v in result.final_metrics.items() if k.startswith("test_")},
        "load_avg_end": os.getloadavg()[0],
    }
    if result.device == "cuda":
        record["cuda_peak_allocated"] = int(torch.cuda.max_memory_allocated())
    out.write_text(json.dumps(record, indent=2))


#: Runs one command and prints the peak RSS of that one child (RUSAGE_CHILDREN of a process with a single child).
_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('peak-rss-kb', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)\n"
    "sys.exit(code)\n"
)


def run_size(size: str, epochs: int, device: str, timeout: float | None, overrides: dict | None = None) -> dict:
    """One size in a fresh subprocess; its record plus the peak RSS read from RUSAGE_CHILDREN."""
    with tempfile.TemporaryDirectory(prefix="metarec-scale-") as tmp:
        out = Path(tmp) / "record.json"
        command = [sys.executable, "-c", _WRAPPER, sys.executable, __file__, "--child", size, "--epochs", str(epochs),
                   "--device", device, "--record", str(out)]
        command += [arg for key, value in (overrides or {}).items() for arg in ("--set", f"{key}={json.dumps(value)}")]
        started = time.perf_counter()
        # Its own process group, so that a timeout stops the training grandchild too, not only the wrapper.
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            return {"size": size, "error": f"stopped after the {timeout:.0f}s timeout"}
        done = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        wall = time.perf_counter() - started
        peak = next((int(line.split()[1]) * 1024 for line in done.stdout.splitlines() if line.startswith("peak-rss-kb")), None)
        if done.returncode != 0 or not out.is_file():
            lines = [ln for ln in (done.stderr or "").splitlines() if ln.strip()]
            return {"size": size, "error": (lines[-1] if lines else f"exit code {done.returncode}")[:300], "peak_rss": peak}
        record = json.loads(out.read_text())
    record["peak_rss"] = peak
    record["wall_s"] = wall
    return record


def _exponent(a: float, b: float, x: float, y: float) -> float | None:
    """log(b / a) / log(y / x): how cost grows with size between two sizes (1 = linear)."""
    if not (a and b and x and y) or y == x or a <= 0 or b <= 0:
        return None
    return math.log(b / a) / math.log(y / x)


def render(report: dict) -> str:
    def fmt(v, spec: str | None = None) -> str:
        if v is None:
            return "–"
        return format(v, spec or (".2f" if abs(v) < 10 else ".1f"))

    ok = [r for r in report["results"] if "error" not in r]
    lines = [
        "# Training cost against data size",
        "",
        f"Written by `benchmarks/bench_scale.py` on {report['date']} at commit {report['code']['commit']}. Machine: "
        f"{report['machine']['cpu']}, nproc {report['machine']['nproc']}, Python {report['machine']['python']}, torch "
        f"{report['machine']['torch']}. Load average {report['load_at_start']:.2f} at the start, "
        f"{report['load_at_end']:.2f} at the end. `TrainConfig(num_epochs={report['epochs']}"
        + "".join(f", {k}={v!r}" for k, v in report.get("overrides", {}).items())
        + f")`, device `{report['device']}`, "
        "every size in its own process.",
        "",
        "## Per size",
        "",
        "| size | users | items | ratings | device | load s | setup s | meta s | transfer s | validate s | evaluation s | fit s | transfer ratings/s | meta tasks/s | peak RSS MB | estimated MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['size']} | – | – | – | – | error: {r['error']} |" + " |" * 10)
            continue
        p = r["phases"]
        sec = lambda name: p.get(name, {}).get("seconds")  # noqa: E731
        lines.append(
            f"| {r['size']} | {r['n_users']:,} | {r['n_items']:,} | {r['n_ratings']:,} | {r['device']} | {fmt(r['load_s'])} | "
            f"{fmt(sec('setup'))} | {fmt(sec('meta'))} | {fmt(sec('transfer'))} | {fmt(sec('validate'))} | {fmt(sec('evaluation'))} | "
            f"{fmt(r['fit_s'])} | {fmt(r['transfer_ratings_per_s'], ',.0f')} | {fmt(r['meta_tasks_per_s'], ',.0f')} | "
            f"{fmt(r['peak_rss'] / MB if r.get('peak_rss') else None, ',.0f')} | {fmt(r['estimated_peak'] / MB, ',.0f')} |"
        )
    lines += [
        "",
        "Steps: " + "; ".join(
            f"{r['size']}: {r['phases'].get('meta', {}).get('count', 0)} meta, {r['phases'].get('transfer', {}).get('count', 0)} transfer"
            for r in ok
        ) + ".",
        "",
        "## Cost growth",
        "",
        "Each row against the one above it: the growth exponent is log(cost ratio) / log(ratings ratio) (1 = linear in the ratings).",
        "",
        "| size | ratings | × ratings | fit s | × time | time exponent | s per epoch | peak RSS MB | × memory | memory exponent |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    previous = None
    for r in ok:
        per_epoch = r["fit_s"] / max(r["epochs"], 1)
        row = f"| {r['size']} | {r['n_ratings']:,} | "
        if previous is None:
            row += f"1 | {fmt(r['fit_s'])} | 1 | – | {fmt(per_epoch)} | {fmt(r['peak_rss'] / MB if r.get('peak_rss') else None, ',.0f')} | 1 | – |"
        else:
            x = r["n_ratings"] / previous["n_ratings"]
            t = r["fit_s"] / previous["fit_s"]
            m = (r["peak_rss"] / previous["peak_rss"]) if r.get("peak_rss") and previous.get("peak_rss") else None
            row += (
                f"{x:.1f} | {fmt(r['fit_s'])} | {t:.1f} | {fmt(_exponent(previous['fit_s'], r['fit_s'], previous['n_ratings'], r['n_ratings']), '.2f')} | "
                f"{fmt(per_epoch)} | {fmt(r['peak_rss'] / MB if r.get('peak_rss') else None, ',.0f')} | {fmt(m, '.1f')} | "
                f"{fmt(_exponent(previous.get('peak_rss'), r.get('peak_rss'), previous['n_ratings'], r['n_ratings']), '.2f')} |"
            )
        lines.append(row)
        previous = r
    lines += [
        "",
        "Peak RSS includes the runtime (Python, torch, pandas: about 300 MB before any data), so the memory exponent of small "
        "sizes is well below 1.",
    ]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(SIZES), help=f"comma-separated sizes among {', '.join(SIZES)}")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs per size (default 2)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--timeout", type=float, default=None, help="seconds allowed per size (default: no limit)")
    parser.add_argument("--out", default=str(RESULTS / "scale"), help="output path without extension (.md and .json)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a TrainConfig setting (repeatable)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--record", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--set needs KEY=VALUE, got '{item}'")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.child:
        child(args.child, args.epochs, args.device, Path(args.record), overrides)
        return
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or not sizes:
        parser.error(f"unknown size(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(SIZES)}")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    load_at_start = os.getloadavg()[0]
    results = []
    for size in sizes:
        print(f"{size}: training {args.epochs} epoch(s)...", flush=True)
        record = run_size(size, args.epochs, args.device, args.timeout, overrides)
        results.append(record)
        if "error" in record:
            print(f"{size}: {record['error']}", flush=True)
        else:
            print(f"{size}: fit {record['fit_s']:.1f}s, peak RSS {record['peak_rss'] / MB:,.0f} MB", flush=True)
    report = {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(), "code": code_version(), "load_at_start": load_at_start, "load_at_end": os.getloadavg()[0],
        "epochs": args.epochs, "device": args.device, "sizes": sizes, "results": results, "overrides": overrides,
    }
    write_report(args.out, report, render(report))


if __name__ == "__main__":
    main()
