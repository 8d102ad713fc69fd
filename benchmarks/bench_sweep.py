"""Benchmark of a sweep on Ray Tune against the same runs one after another.

Eight ML-100K trials (a 2 × 2 × 2 grid over λ1, λ2 and λ0, short runs) are
trained twice, interleaving nothing else:

* **one after another** — ``training.fit`` of each trial's config in this
  process, one torch thread each (the configs' ``cpu_threads = 1``);
* **sweep** — the same eight configs as a sweep (``sweep_driver.run_sweep``)
  with ``max_concurrent = 2`` on a local Ray with the machine's CPUs, each
  trial one Ray CPU and one torch thread. Ray's start-up (``ray.init``) is
  timed on its own and not counted in the sweep's time; the sweep's time
  includes Ray Tune's scheduling, each trial's worker start and the recorder
  writing every trial into a run store.

The target: sweep ≤ 0.7 × one after another on this 2-core machine. The
machine is shared: the load average (``os.getloadavg``) is recorded before and
after each part, and the report says when it was too high for the figure to
mean much.

Run from the repository root (one heavy job at a time)::

    python benchmarks/bench_sweep.py [--set num_epochs=2 ...] [--out benchmarks/results/sweep]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core.configs import parse_set_arguments  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.store import RunStore  # noqa: E402
from metarec_core.sweep import build_spec, settings_text  # noqa: E402
from metarec_core.sweep_driver import run_sweep, submit_sweep  # noqa: E402
from metarec_core.training import fit  # noqa: E402

from machine import code_version, machine, machine_line, write_report  # noqa: E402  (benchmarks/machine.py, beside this script)

#: The 2 x 2 x 2 grid of the eight trials.
GRID = {"lambda_meta": [0.5, 1.0], "lambda_trans": [0.5, 1.0], "lambda_l0": [0.01, 0.04]}
#: Trials of a few seconds (eight epochs, the default; early stopping as configured), one torch thread, CPU.
BASE = {"num_epochs": 8, "cpu_threads": 1, "device": "cpu"}


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a base setting of every trial")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sweep"))
    args = parser.parse_args()

    base = {**BASE, **parse_set_arguments(args.overrides)}
    spec = build_spec(base, grid=GRID, max_concurrent=args.max_concurrent)
    dataset = load_movielens_100k()
    points = spec.grid_points()
    print(f"{machine_line()}; {len(points)} trials, base {base}", file=sys.stderr)

    # One after another, in this process.
    load_before_sequential = load()
    started = time.perf_counter()
    sequential_runs = []
    for point in points:
        t0 = time.perf_counter()
        result = fit(spec.trial_config(point), dataset)
        sequential_runs.append({"settings": point, "seconds": round(time.perf_counter() - t0, 2), "valid_mae": result.final_metrics["valid_mae"]})
        print(f"one after another: {settings_text(point)} {sequential_runs[-1]['seconds']} s", file=sys.stderr)
    sequential = time.perf_counter() - started
    load_after_sequential = load()

    # Ray's start-up, then the sweep on it.
    import ray

    load_before_sweep = load()
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        sweep_id = submit_sweep(store, spec, "builtin:movielens-100k", name="benchmark")
        started = time.perf_counter()
        summary = run_sweep(store, sweep_id, dataset=dataset, echo=lambda line: print(line, file=sys.stderr))
        swept = time.perf_counter() - started
        trials = [{"settings": t["settings"], "status": t["status"], "valid_mae": t["metric"],
                   "seconds": round((store.get_run(t["run_id"]).finished or 0) - (store.get_run(t["run_id"]).started or 0), 2)}
                  for t in summary["trials"]]
    ray.shutdown()
    load_after_sweep = load()
    if summary["status"] != "completed" or any(t["status"] != "completed" for t in trials):
        raise SystemExit(f"the sweep did not complete every trial: {summary['status']} {[t['status'] for t in trials]}")

    ratio = swept / sequential
    busiest = max(load_before_sequential[0], load_after_sequential[0], load_before_sweep[0], load_after_sweep[0])
    cores = machine()["nproc"]
    verdict = "meets" if ratio <= 0.7 else "misses"
    caveat = (
        f"The 1-minute load reached {busiest:.1f} on {cores} cores while this ran (other jobs share the machine), so the two "
        "parts competed with those jobs for the CPUs by different amounts; treat the ratio as indicative only."
        if busiest > cores + 0.5 else
        f"The 1-minute load stayed at or below {busiest:.1f} on {cores} cores, so the two parts had the machine to themselves."
    )
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "code": code_version(),
        "base": base, "grid": GRID, "max_concurrent": args.max_concurrent,
        "sequential_seconds": round(sequential, 2), "sweep_seconds": round(swept, 2), "ray_startup_seconds": round(ray_startup, 2),
        "ratio": round(ratio, 3), "target": 0.7,
        "load": {"before_sequential": load_before_sequential, "after_sequential": load_after_sequential,
                 "before_sweep": load_before_sweep, "after_sweep": load_after_sweep},
        "sequential_runs": sequential_runs, "sweep_trials": trials,
    }
    rows = "\n".join(
        f"| {settings_text(s['settings'])} | {s['seconds']:.1f} | {t['seconds']:.1f} | {s['valid_mae']:.4f} | {t['valid_mae']:.4f} |"
        for s, t in zip(sequential_runs, sorted(trials, key=lambda t: points.index(t["settings"]) if t["settings"] in points else 99))
    )
    markdown = f"""# Sweep on Ray Tune vs the same runs one after another

`python benchmarks/bench_sweep.py{''.join(' --set ' + o for o in args.overrides)}` — {report['date']}, commit {report['code']['commit']}.
Machine: {machine_line()}.

Eight ML-100K trials (grid λ1 ∈ {{0.5, 1}} × λ2 ∈ {{0.5, 1}} × λ0 ∈ {{0.01, 0.04}}; base settings {base}), each with one torch thread.

| | seconds |
|---|---|
| the 8 runs one after another (`fit` in one process) | {sequential:.1f} |
| the 8 runs as a sweep, `--max-concurrent {args.max_concurrent}` (Ray start-up not included) | {swept:.1f} |
| Ray start-up (`ray.init`, local, {cores} CPUs), once per sweep | {ray_startup:.1f} |
| **sweep / one after another** | **{ratio:.2f}** (target ≤ 0.70: {verdict} it) |
| sweep + start-up / one after another | {(swept + ray_startup) / sequential:.2f} |

Load average (1, 5, 15 min): before the sequential part {load_before_sequential}, after it {load_after_sequential};
before the sweep {load_before_sweep}, after it {load_after_sweep}. {caveat}

The sweep's time includes, per trial, a Ray worker's start (importing torch), the dataset fetched from Ray's object
store, and the recorder writing the trial's progress, metric lines and checkpoint into the run store after every epoch.
Trial seconds below are each run's own time as the store recorded it (the sweep's column) and as `fit` took it (the other).

| trial | one after another (s) | in the sweep (s) | valid MAE (sequential) | valid MAE (sweep) |
|---|---|---|---|---|
{rows}

The two columns of validation MAE are equal trial by trial up to floating-point noise: a trial of a sweep is the same `fit` with the same seed.
"""
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
