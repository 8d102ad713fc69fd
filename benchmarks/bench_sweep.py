"""Benchmark of a sweep on Ray Tune against the same runs one after another.

Eight ML-100K trials (a 2 × 2 × 2 grid over λ1, λ2 and λ0, short runs) are
trained three ways, one after the other, interleaving nothing else; the three
are repeated (``--repeats``, default 3) and each ratio is the median over repeats:

* **one after another** — ``training.fit`` of each trial's config in this
  process, one torch thread each (the configs' ``cpu_threads = 1``): torch
  imported and the data loaded once, nothing recorded (the strictest reference);
* **as ``train`` commands** — ``python -m metarec_core train`` of each trial's
  settings, one after another: what a user runs without a sweep (each command
  imports torch, loads the data and writes its run directory, as a trial does);
* **sweep** — the same eight configs as a sweep (``sweep_driver.run_sweep``)
  with ``max_concurrent = 2`` on a local Ray with the machine's CPUs, each
  trial one Ray CPU and one torch thread. Ray's start-up (``ray.init``) is
  timed on its own and not counted in the sweep's time; the sweep's time
  includes Ray Tune's scheduling, each trial's worker start and the recorder
  writing every trial into a run store.

While the sweep runs, a thread reads the trial table the Train page draws
(``sweep_driver.trial_table``, the page's sweep view re-reads it every second)
four times a second, and notes when each trial's new epoch first shows in it;
against the time ``fit`` wrote that epoch's validation event, that is how late
the page's data is. The page shows it at its next refresh (at most one second
later). Target: the heatmap and trial table refresh within 2 s of an epoch.

Where the sweep's time goes: each trial's start and end (the store's
``started``/``finished``) give the slots' time before their first trial,
between trials and after their last one (:func:`slot_timeline`); and the CPU
seconds of every process under this one (a local Ray's GCS, raylet, agents
and workers) and of this process's threads, sampled while the sweep runs
(``process_cpu.py``), say what else competed with the trials for the CPUs.

The target: sweep ≤ 0.7 × the same runs one after another on this 2-core machine (both references are reported). The
machine is shared: the load average (``os.getloadavg``) is recorded before and
after each part, and the report says when it was too high for the figure to
mean much.

Run from the repository root (one heavy job at a time)::

    python benchmarks/bench_sweep.py [--repeats 3] [--set num_epochs=2 ...] [--out benchmarks/results/sweep]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from metarec_core.configs import flatten_settings, parse_set_arguments  # noqa: E402
from metarec_core.movielens import load_movielens_100k  # noqa: E402
from metarec_core.store import RunStore  # noqa: E402
from metarec_core.sweep import build_spec, settings_text  # noqa: E402
from metarec_core.sweep_driver import run_sweep, submit_sweep, trial_table  # noqa: E402
from metarec_core.training import fit  # noqa: E402

from machine import code_version, machine, machine_line, write_report  # noqa: E402  (benchmarks/machine.py, beside this script)
from process_cpu import ProcessCPU  # noqa: E402

#: The 2 x 2 x 2 grid of the eight trials.
GRID = {"lambda_meta": [0.5, 1.0], "lambda_trans": [0.5, 1.0], "lambda_l0": [0.01, 0.04]}
#: Trials of a few seconds (eight epochs, the default; early stopping as configured), one torch thread, CPU.
BASE = {"num_epochs": 8, "cpu_threads": 1, "device": "cpu"}


def load() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


#: How often the latency thread reads the trial table (seconds), and the app's sweep view refresh period.
POLL_S = 0.25
PAGE_REFRESH_S = 1.0


class EpochWatch(threading.Thread):
    """Reads a sweep's trial table every :data:`POLL_S` seconds and records when each trial's metric takes a new value."""

    def __init__(self, store: RunStore, sweep_id: str, metric: str) -> None:
        super().__init__(name="epoch-watch", daemon=True)
        self.store, self.sweep_id, self.metric = store, sweep_id, metric
        self.seen: list[tuple[str, float, float]] = []  # (run_id, metric value, first seen)
        self.done = threading.Event()

    def run(self) -> None:
        last: dict[str, float] = {}
        while not self.done.is_set():
            try:
                table = trial_table(self.store, self.sweep_id)
            except Exception:  # noqa: BLE001 - the sweep's row may not exist yet
                table = None
            now = time.time()
            if table is not None:
                for run_id, value in zip(table["run_id"], table["metric"]):
                    if value is not None and value == value and last.get(run_id) != value:
                        last[run_id] = value
                        self.seen.append((run_id, float(value), now))
            self.done.wait(POLL_S)

    def latencies(self) -> list[float]:
        """Seconds from each epoch's validation event (as ``fit`` timed it) to its value's first sight in the trial table."""
        out = []
        for run_id in {r for r, _, _ in self.seen}:
            frame = self.store.metrics_frame(run_id, phases=["validate"])
            events = frame[frame["key"] == self.metric]
            for written, value in zip(events["time"], events["value"]):
                sights = [at for r, v, at in self.seen if r == run_id and abs(v - value) <= 1e-12 and at >= written - POLL_S]
                if sights:
                    out.append(min(sights) - float(written))
        return out


def slot_timeline(spans: list[tuple[float, float]], slots: int, wall: float) -> dict[str, float]:
    """Where a sweep's slot-seconds (``slots`` × ``wall``) went, from each trial's (start, end) in seconds since the sweep began.

    Each trial is put in the slot that freed last before it started;
    ``start`` is the slots' time before their first trial, ``between`` the
    gaps between a slot's trials, ``tail`` the time after a slot's last
    trial, ``trials`` the trials' own time.
    """
    ends = [0.0] * slots
    first: list[float | None] = [None] * slots
    between = 0.0
    for start, end in sorted(spans):
        free = [i for i in range(slots) if ends[i] <= start + 1e-6] or list(range(slots))
        slot = max(free, key=lambda i: ends[i])
        if first[slot] is None:
            first[slot] = start
        else:
            between += max(0.0, start - ends[slot])
        ends[slot] = max(ends[slot], end)
    return {
        "slot_seconds": round(slots * wall, 2), "trials": round(sum(e - s for s, e in spans), 2),
        "start": round(sum(f if f is not None else wall for f in first), 2), "between": round(between, 2),
        "tail": round(sum(wall - e for e, f in zip(ends, first) if f is not None), 2),
    }


def sequential_part(spec, dataset, points) -> dict:
    """The trials one after another in this process: seconds in all and per trial, validation MAE, load before and after."""
    before = load()
    started = time.perf_counter()
    runs = []
    for point in points:
        t0 = time.perf_counter()
        result = fit(spec.trial_config(point), dataset)
        runs.append({"settings": point, "seconds": round(time.perf_counter() - t0, 2), "valid_mae": result.final_metrics["valid_mae"]})
        print(f"one after another: {settings_text(point)} {runs[-1]['seconds']} s", file=sys.stderr)
    return {"sequential": time.perf_counter() - started, "sequential_runs": runs,
            "load_before_sequential": before, "load_after_sequential": load()}


def commands_part(base: dict, points) -> dict:
    """The trials as ordinary ``train`` commands one after another (what a user runs without a sweep): seconds in all and per run."""
    before = load()
    started = time.perf_counter()
    runs = []
    with tempfile.TemporaryDirectory() as out:
        for n, point in enumerate(points):
            settings = {**flatten_settings(base), **point}
            command = [sys.executable, "-m", "metarec_core", "train", "--dataset", "movielens-100k", "--quiet", "--out", f"{out}/{n}"]
            for key, value in settings.items():
                command += ["--set", f"{key}={value}"]
            t0 = time.perf_counter()
            subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds = time.perf_counter() - t0
            valid = json.loads(Path(f"{out}/{n}/result.json").read_text())["final_metrics"]["valid_mae"]
            runs.append({"settings": point, "seconds": round(seconds, 2), "valid_mae": valid})
            print(f"train commands: {settings_text(point)} {runs[-1]['seconds']} s", file=sys.stderr)
    return {"commands": time.perf_counter() - started, "command_runs": runs, "load_before_commands": before, "load_after_commands": load()}


def sweep_part(spec, dataset, max_concurrent: int) -> dict:
    """Ray's start-up, then the trials as one sweep on it: seconds, the trials' spans, epoch lags and CPU by process."""
    import ray

    before = load()
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as home:
        store = RunStore(home)
        sweep_id = submit_sweep(store, spec, "builtin:movielens-100k", name="benchmark")
        watch = EpochWatch(store, sweep_id, spec.metric)
        watch.start()
        cpu = ProcessCPU()
        cpu.start()
        started, wall_start = time.perf_counter(), time.time()
        summary = run_sweep(store, sweep_id, dataset=dataset, echo=lambda line: print(line, file=sys.stderr))
        swept = time.perf_counter() - started
        cpu.stop()
        watch.done.set()
        watch.join()
        lags = sorted(watch.latencies())
        runs = [store.get_run(t["run_id"]) for t in summary["trials"]]
        trials = [{"settings": t["settings"], "status": t["status"], "valid_mae": t["metric"],
                   "seconds": round((r.finished or 0) - (r.started or 0), 2),
                   "start_s": round((r.started or wall_start) - wall_start, 2), "end_s": round((r.finished or wall_start) - wall_start, 2)}
                  for t, r in zip(summary["trials"], runs)]
        slots = slot_timeline([(t["start_s"], t["end_s"]) for t in trials], max_concurrent, swept)
        cpu_by_role = cpu.by_role()
    ray.shutdown()
    if summary["status"] != "completed" or any(t["status"] != "completed" for t in trials):
        raise SystemExit(f"the sweep did not complete every trial: {summary['status']} {[t['status'] for t in trials]}")
    return {"sweep": swept, "ray_startup": ray_startup, "trials": trials, "lags": lags, "slots": slots, "cpu_by_role": cpu_by_role,
            "load_before_sweep": before, "load_after_sweep": load()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a base setting of every trial")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="times the three parts (in-process, train commands, sweep) in turn this often; the ratios reported are medians")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sweep"))
    args = parser.parse_args()

    base = {**BASE, **parse_set_arguments(args.overrides)}
    spec = build_spec(base, grid=GRID, max_concurrent=args.max_concurrent)
    dataset = load_movielens_100k()
    points = spec.grid_points()
    print(f"{machine_line()}; {len(points)} trials, base {base}, {args.repeats} repeat(s)", file=sys.stderr)
    repeats = []
    for repeat in range(args.repeats):  # pair by pair: the machine's load drifts, a ratio within a pair holds better
        part = sequential_part(spec, dataset, points)
        part.update(commands_part(base, points))
        part.update(sweep_part(spec, dataset, args.max_concurrent))
        part["ratio"] = part["sweep"] / part["sequential"]
        part["ratio_commands"] = part["sweep"] / part["commands"]
        print(f"repeat {repeat + 1}: one after another {part['sequential']:.1f} s, as train commands {part['commands']:.1f} s, "
              f"sweep {part['sweep']:.1f} s, ratio {part['ratio']:.3f} (to the commands {part['ratio_commands']:.3f})", file=sys.stderr)
        repeats.append(part)
    ratio = statistics.median(r["ratio"] for r in repeats)
    median_commands = statistics.median(r["ratio_commands"] for r in repeats)
    shown = min(repeats, key=lambda r: abs(r["ratio"] - ratio))  # the repeat whose details the tables below show
    sequential, swept, ray_startup = shown["sequential"], shown["sweep"], shown["ray_startup"]
    sequential_runs, trials, lags = shown["sequential_runs"], shown["trials"], shown["lags"]
    slots, cpu_by_role = shown["slots"], shown["cpu_by_role"]
    load_before_sequential, load_after_sequential = shown["load_before_sequential"], shown["load_after_sequential"]
    load_before_sweep, load_after_sweep = shown["load_before_sweep"], shown["load_after_sweep"]
    busiest = max(r[key][0] for r in repeats for key in r if key.startswith("load_"))
    cores = machine()["nproc"]
    verdict = "meets" if ratio <= 0.7 else "misses"
    caveat = (
        f"The 1-minute load reached {busiest:.1f} on {cores} cores while this ran (other jobs share the machine), so the "
        "parts competed with those jobs for the CPUs by different amounts; treat the ratio as indicative only."
        if busiest > cores + 0.5 else
        f"The 1-minute load stayed at or below {busiest:.1f} on {cores} cores, so the parts had the machine to themselves."
    )
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(), "code": code_version(),
        "base": base, "grid": GRID, "max_concurrent": args.max_concurrent,
        "sequential_seconds": round(sequential, 2), "sweep_seconds": round(swept, 2), "ray_startup_seconds": round(ray_startup, 2),
        "ratio": round(ratio, 3), "ratio_commands": round(median_commands, 3), "target": 0.7,
        "repeats": [{"sequential_seconds": round(r["sequential"], 2), "sweep_seconds": round(r["sweep"], 2),
                     "commands_seconds": round(r["commands"], 2), "ratio_commands": round(r["ratio_commands"], 3),
                     "ray_startup_seconds": round(r["ray_startup"], 2), "ratio": round(r["ratio"], 3),
                     "load": [r["load_before_sequential"], r["load_after_sweep"]]} for r in repeats],
        "load": {"before_sequential": load_before_sequential, "after_sequential": load_after_sequential,
                 "before_sweep": load_before_sweep, "after_sweep": load_after_sweep},
        "sequential_runs": sequential_runs, "command_runs": shown["command_runs"], "sweep_trials": trials, "slot_seconds": slots, "sweep_cpu_seconds": cpu_by_role,
        "epoch_to_table_seconds": [round(v, 3) for v in lags], "poll_seconds": POLL_S, "page_refresh_seconds": PAGE_REFRESH_S,
    }
    if lags:
        p95 = lags[min(len(lags) - 1, int(round(0.95 * (len(lags) - 1))))]
        worst = lags[-1] + PAGE_REFRESH_S
        lag_text = (
            f"A trial's new epoch reached the trial table {lags[len(lags) // 2]:.2f} s (median), {p95:.2f} s (p95), {lags[-1]:.2f} s (max) "
            f"after `fit` wrote it, over {len(lags)} epochs (read every {POLL_S:g} s, so each figure is up to {POLL_S:g} s late); "
            f"with the page's {PAGE_REFRESH_S:g} s refresh, the heatmap and trial table show it within {worst:.2f} s at worst "
            f"(target 2 s: {'meets' if worst <= 2.0 else 'misses'} it)."
        )
    else:
        lag_text = "No epoch was seen in the trial table while the sweep ran (the latency could not be measured)."
    timeline = "\n".join(
        f"| {settings_text(t['settings'])} | {t['start_s']:.1f} | {t['end_s']:.1f} | {t['seconds']:.1f} |"
        for t in sorted(trials, key=lambda t: t["start_s"])
    )
    cpu_rows = "\n".join(f"| {name} | {value:.1f} |" for name, value in cpu_by_role.items())
    rows = "\n".join(
        f"| {settings_text(s['settings'])} | {s['seconds']:.1f} | {t['seconds']:.1f} | {s['valid_mae']:.4f} | {t['valid_mae']:.4f} |"
        for s, t in zip(sequential_runs, sorted(trials, key=lambda t: points.index(t["settings"]) if t["settings"] in points else 99))
    )
    gaps = [abs(c["valid_mae"] - q["valid_mae"]) for c, q in zip(shown["command_runs"], sequential_runs)]
    commands_same = (f"equal the in-process runs' within {max(gaps):.1e}" if max(gaps) < 1e-6
                     else f"differ from the in-process runs' by up to {max(gaps):.4f}")
    repeat_rows = "\n".join(
        f"| {n + 1} | {r['sequential']:.1f} | {r['commands']:.1f} | {r['sweep']:.1f} | {r['ray_startup']:.1f} | {r['ratio']:.3f} | {r['ratio_commands']:.3f} | "
        f"{r['load_before_sequential'][0]:.2f} → {r['load_after_sweep'][0]:.2f} |" for n, r in enumerate(repeats)
    )
    markdown = f"""# Sweep on Ray Tune vs the same runs one after another

`python benchmarks/bench_sweep.py{f' --repeats {args.repeats}' if args.repeats != 3 else ''}{''.join(' --set ' + o for o in args.overrides)}` — {report['date']}, commit {report['code']['commit']}.
Machine: {machine_line()}.

Eight ML-100K trials (grid λ1 ∈ {{0.5, 1}} × λ2 ∈ {{0.5, 1}} × λ0 ∈ {{0.01, 0.04}}; base settings {base}), each with one torch thread.

| | seconds |
|---|---|
| the 8 runs one after another (`fit` in one process) | {sequential:.1f} |
| the 8 runs as a sweep, `--max-concurrent {args.max_concurrent}` (Ray start-up not included) | {swept:.1f} |
| Ray start-up (`ray.init`, local, {cores} CPUs), once per sweep | {ray_startup:.1f} |
| sweep / one after another, this repeat | {swept / sequential:.2f} |
| sweep + start-up / one after another, this repeat | {(swept + ray_startup) / sequential:.2f} |
| **sweep / one after another, median of {len(repeats)} repeat(s)** | **{ratio:.3f}** (target ≤ 0.70: {verdict} it) |
| sweep / the same runs as `train` commands one after another, median of {len(repeats)} | {median_commands:.3f} |

Each repeat times the eight runs one after another in this process (`fit`: torch imported and the data loaded once, nothing
recorded: the strictest reference), then as eight `python -m metarec_core train` commands one after another (what a user
runs without a sweep: each command imports torch, loads the data and writes its run directory, as each trial does), then
(Ray started afresh) the sweep; the seconds in the table above are those of the repeat whose first ratio is nearest the median.

| repeat | one after another, `fit` (s) | one after another, `train` commands (s) | sweep (s) | Ray start-up (s) | sweep / `fit` | sweep / commands | load (1 min) before → after |
|---|---|---|---|---|---|---|---|
{repeat_rows}

Load average (1, 5, 15 min): before the sequential part {load_before_sequential}, after it {load_after_sequential};
before the sweep {load_before_sweep}, after it {load_after_sweep}. {caveat}

The sweep's time includes, per trial, a Ray worker's start (importing torch), the dataset fetched from Ray's object
store, and the recorder writing the trial's progress, metric lines and checkpoint into the run store after every epoch.
Trial seconds below are each run's own time as the store recorded it (the sweep's column) and as `fit` took it (the other).

| trial | one after another (s) | in the sweep (s) | valid MAE (sequential) | valid MAE (sweep) |
|---|---|---|---|---|
{rows}

The two columns of validation MAE are equal trial by trial up to floating-point noise: a trial of a sweep is the same `fit` with the same seed.
The `train` commands' validation MAE {commands_same}.

## Where the sweep's time goes

Each trial's start and end (the store's `started` and `finished`, seconds after `run_sweep` began), in the order they started:

| trial | start (s) | end (s) | seconds |
|---|---|---|---|
{timeline}

Of the {slots['slot_seconds']:.1f} slot-seconds ({args.max_concurrent} slots × {swept:.1f} s), the trials ran {slots['trials']:.1f};
the slots waited {slots['start']:.1f} s for their first trial (Ray Tune starting, the trial workers importing torch and
Ray Tune), {slots['between']:.1f} s between trials and {slots['tail']:.1f} s after their last one (one slot idle while the other finishes).

CPU seconds used while the sweep ran, by process (this process is the driver: Ray Tune's loop, the sweep's heartbeat,
Ray's own threads and the benchmark's table reader):

| process | CPU seconds |
|---|---|
{cpu_rows}

## How soon the page sees an epoch

{lag_text}
"""
    write_report(args.out, report, markdown)


if __name__ == "__main__":
    main()
