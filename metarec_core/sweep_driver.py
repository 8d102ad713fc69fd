"""Sweeps on Ray Tune: the driver's side — starting, cancelling and watching a sweep, and what it found.

The driver (``python -m metarec_core sweep ...``, or ``sweeps drive ID`` in
the background) claims the sweep with its PID and beats its heartbeat every
second; connects to Ray (:mod:`metarec_core.cluster`); and hands the search
space to Ray Tune: grid values, random draws (``BasicVariantGenerator`` with
the sweep's seed), the metric and its direction, the number of samples, the
concurrency limit and, on request, ASHA early stopping on the per-epoch
validation metric. Every trial calls the one :func:`metarec_core.training.fit`
with one torch thread (one Ray CPU) and reports its validation metric to
Tune: every epoch's with ASHA, only the last epoch's without.

How a trial's run comes back to the run store — the driver collects it: a
:class:`~metarec_core.sweep_recorder.TrialRecorder` actor pinned to the driver's node (no CPU of its own)
owns the trials' records. A trial trains into a folder on whichever node Ray
placed it, and sends the recorder its progress, heartbeat and new
``metrics.jsonl`` lines every second and its checkpoint after every epoch
(the files that changed);
the recorder writes them into ``runs/<run_id>/`` of the driver's store. No
shared file system is needed, so a cluster runs the same trials unchanged.
The Ray side (the trial, Tune's callback and stopper) is
:mod:`metarec_core.sweep_trials`, imported only once a sweep runs; the
recorder's class is :mod:`metarec_core.sweep_recorder`.

Faults: ``sweeps cancel`` sets a flag the driver and every trial poll (trials
stop after the current step and keep their checkpoint; Ray Tune stops any
left after :data:`CANCEL_GRACE` seconds); a failed trial is marked failed
with its one-line error and the sweep goes on; a trial that ASHA stops is
marked cancelled with the reason; a killed driver is found by its PID or
heartbeat (:func:`mark_stale_sweeps`), its sweep is marked failed, its
finished trials are kept and its unfinished ones are marked failed.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from metarec_core.configs import flatten_settings
from metarec_core.errors import MetarecError, StoreError
from metarec_core.jobs import STALE_AFTER, pid_alive
from metarec_core.store import RunStore
from metarec_core.sweep import SweepSpec, check_metric_for_data, spec_from_json

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a sweep's driver.
HEARTBEAT_INTERVAL = 1.0
#: Seconds between two messages of a trial to the recorder (progress, heartbeat, new metric lines, the stop flag); an epoch's
#: metric lines go at once, with its checkpoint, so the page's refresh (every second) is what the trial table waits for.
TRIAL_PULSE = 1.0
#: Seconds between two looks of the driver at the sweep's cancel flag.
CANCEL_POLL = 0.5
#: The background driver's log file, in the sweep's folder.
DRIVER_LOG = "driver.log"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------- starting, cancelling, watching
def submit_sweep(store: RunStore, spec: SweepSpec, dataset_ref: str, *, name: str | None = None, background: bool = False) -> str:
    """Record a new sweep: ``running`` for a driver in this process (:func:`run_sweep`), else queued for :func:`start_background`."""
    return store.create_sweep(spec.to_json(), dataset_ref, name=name, status="queued" if background else "running")


def start_background(store: RunStore, sweep_id: str) -> subprocess.Popen:
    """Start ``python -m metarec_core sweeps drive SWEEP_ID`` in its own session, logging to the sweep's folder.

    If the process cannot start, the sweep is marked failed.
    """
    folder = store.sweep_dir(sweep_id)
    folder.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["METAREC_HOME"] = str(store.home.resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "metarec_core", "-v", "sweeps", "drive", sweep_id]
    try:
        with open(folder / DRIVER_LOG, "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=_PACKAGE_ROOT, env=env,
                start_new_session=True, close_fds=True,
            )
    except OSError as exc:
        store.finish_sweep(sweep_id, "failed", error=f"could not start the sweep's driver process: {exc}")
        raise StoreError(f"sweep '{sweep_id}': could not start its driver process: {exc}") from exc
    threading.Thread(target=process.wait, name=f"metarec-reap-{process.pid}", daemon=True).start()
    logger.info("started the driver %d of sweep %s", process.pid, sweep_id)
    return process


def cancel_sweep(store: RunStore, sweep_id: str, *, wait: bool = True, timeout: float = 30.0) -> str:
    """Ask a sweep to stop and, with ``wait``, wait until its driver has recorded the end; returns its status then.

    Raises
    ------
    StoreError
        If the sweep is still running after ``timeout`` seconds.
    """
    mark_stale_sweeps(store)
    status = store.request_sweep_cancel(sweep_id)
    if status != "running" or not wait:
        return status
    deadline = time.monotonic() + timeout
    while (sweep := store.get_sweep(sweep_id)).is_active:
        if time.monotonic() > deadline:
            raise StoreError(f"sweep '{sweep_id}' (driver process {sweep.pid}) did not stop within {timeout:g} s; try again")
        mark_stale_sweeps(store)
        time.sleep(0.1)
    return sweep.status


def mark_stale_sweeps(store: RunStore, *, stale_after: float = STALE_AFTER) -> list[str]:
    """Mark running sweeps whose driver is gone as failed, and their unfinished trials too; returns their IDs.

    A driver is gone when it ran on this host and its process no longer
    exists, or its heartbeat is older than ``stale_after`` seconds. The
    sweep's finished trials are kept as they are.
    """
    failed: list[str] = []
    now = time.time()
    for sweep in store.list_sweeps("running"):
        reason = None
        if sweep.host == socket.gethostname() and sweep.pid is not None and not pid_alive(sweep.pid):
            reason = f"process {sweep.pid} is gone"
        elif sweep.heartbeat is None or now - sweep.heartbeat > stale_after:
            reason = "last heartbeat " + ("never" if sweep.heartbeat is None else f"{now - sweep.heartbeat:.0f} s ago")
        if reason is None:
            continue
        trials = store.sweep_trials(sweep.id)
        done = sum(r.status == "completed" for r in trials)
        message = (
            f"the sweep's driver stopped unexpectedly (killed or machine restarted; {reason}); "
            f"its {done} completed trial(s) are kept; driver log: {store.sweep_dir(sweep.id) / DRIVER_LOG}"
        )
        if store.fail_sweep_if_stale(sweep.id, sweep.heartbeat, message):
            logger.warning("sweep %s: driver stopped unexpectedly (%s)", sweep.id, reason)
            failed.append(sweep.id)
            for run in trials:
                if run.status == "running":
                    store.fail_if_stale(run.id, run.heartbeat, f"stopped with its sweep's driver ({reason}); last checkpoint kept at {store.run_dir(run.id)}")
            store.set_sweep_best(sweep.id, best_trial(store, sweep.id, spec_from_json(sweep.spec)))
    return failed


# ---------------------------------------------------------------------- what a sweep found
def trial_settings(run: Any, spec: SweepSpec) -> dict[str, Any]:
    """A trial run's swept settings (the keys of the sweep's search space), from its config."""
    flat = flatten_settings(run.config)
    return {k: flat.get(k) for k in spec.keys}


def trial_metric(store: RunStore, run: Any, metric: str) -> float | None:
    """A trial's value of the sweep's metric: that of its kept weights (finished) or of its last epoch; None if none."""
    value = store.final_metrics(run.id).get(metric)
    return None if value is None or not math.isfinite(value) else float(value)


def best_trial(store: RunStore, sweep_id: str, spec: SweepSpec) -> dict[str, Any] | None:
    """``{"run_id", "settings", "metric"}`` of the best completed trial (or, if none completed, the best stopped one)."""
    trials = store.sweep_trials(sweep_id)
    return _best_of([(r, trial_metric(store, r, spec.metric)) for r in trials], spec)


def _best_of(scored_trials: list[tuple[Any, float | None]], spec: SweepSpec) -> dict[str, Any] | None:
    """:func:`best_trial` of trials whose metric is known already."""
    for statuses in (("completed",), ("cancelled",)):
        scored = [(m, r) for r, m in scored_trials if r.status in statuses and m is not None]
        if scored:
            metric, run = (min if spec.mode == "min" else max)(scored, key=lambda pair: pair[0])
            return {"run_id": run.id, "settings": trial_settings(run, spec), "metric": metric}
    return None


def trial_table(store: RunStore, sweep_id: str) -> Any:
    """One row per trial, oldest first: ``run_id``, ``status``, each swept setting, ``metric`` (the last epoch's while it
    runs), ``epoch``, ``fraction`` (of its steps done), ``error`` and ``best`` (True for the best trial).

    What the app draws (trial table, heatmap, parallel coordinates) while a sweep runs and after.
    """
    import pandas as pd

    sweep = store.get_sweep(sweep_id)
    spec = spec_from_json(sweep.spec)
    scored = [(run, trial_metric(store, run, spec.metric)) for run in store.sweep_trials(sweep_id)]
    best = _best_of(scored, spec)
    rows = []
    for run, metric in scored:
        progress = run.progress or {}
        total = int(progress.get("total_steps") or 0)
        fraction = 1.0 if run.status == "completed" else (min(1.0, int(progress.get("step", 0)) / total) if total else 0.0)
        rows.append({
            "run_id": run.id, "status": run.status, **trial_settings(run, spec), "metric": metric,
            "epoch": int(progress.get("epoch", 0) or 0), "fraction": fraction, "error": run.error,
            "best": best is not None and best["run_id"] == run.id,
        })
    columns = ["run_id", "status", *spec.keys, "metric", "epoch", "fraction", "error", "best"]
    return pd.DataFrame(rows, columns=columns)


def sweep_summary(store: RunStore, sweep_id: str) -> dict[str, Any]:
    """The sweep as ``sweep --json`` prints it: ``sweep_id``, ``status``, ``metric``, ``trials``, ``best`` (and more)."""
    sweep = store.get_sweep(sweep_id)
    spec = spec_from_json(sweep.spec)
    trials = [
        {"run_id": r.id, "status": r.status, "settings": trial_settings(r, spec), "metric": trial_metric(store, r, spec.metric),
         "error": r.error}
        for r in store.sweep_trials(sweep_id)
    ]
    best = sweep.best if sweep.status != "running" else best_trial(store, sweep_id, spec)
    return {
        "sweep_id": sweep.id, "name": sweep.name, "status": sweep.status, "metric": spec.metric, "mode": spec.mode,
        "dataset": sweep.dataset_ref, "space": spec.describe(), "n_trials": spec.n_trials, "error": sweep.error,
        "trials": trials, "best": best,
    }


# ---------------------------------------------------------------------- the driver
def run_sweep(
    store: RunStore, sweep_id: str, *, dataset: Any = None, echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Drive a sweep in this process until its trials are done, it is cancelled, or it fails; returns :func:`sweep_summary`.

    Parameters
    ----------
    store
        The run store.
    sweep_id
        A sweep created by :func:`submit_sweep` (queued, or running without a driver yet).
    dataset
        The sweep's dataset if the caller has it loaded (else it is loaded from the reference).
    echo
        Called with a line for each trial that starts or ends (the CLI prints them).

    Raises
    ------
    StoreError
        If another driver has the sweep.
    """
    from metarec_core.catalogue import resolve_dataset

    if not store.claim_sweep(sweep_id, pid=os.getpid()):
        sweep = store.get_sweep(sweep_id)
        raise StoreError(f"sweep '{sweep_id}' is {sweep.status}" + (f" with driver process {sweep.pid}" if sweep.pid else "") + "; a driver starts only a queued sweep")
    sweep = store.get_sweep(sweep_id)
    spec = spec_from_json(sweep.spec)
    pulse = DriverPulse(store, sweep_id)
    pulse.start()
    restore = _stop_on_signals(pulse.cancelled)
    status, error = "failed", None
    try:
        if dataset is None:
            dataset = resolve_dataset(store, sweep.dataset_ref)
        check_metric_for_data(spec, dataset.implicit)
        from metarec_core.sweep_trials import run_trials

        run_trials(store, sweep, spec, dataset, pulse, echo or (lambda _line: None))
        # The trials poll the store's cancel flag too, and may all stop before the pulse's next look at it.
        if not pulse.cancelled.is_set() and store.is_sweep_cancel_requested(sweep_id):
            pulse.cancelled.set()
        status = "cancelled" if pulse.cancelled.is_set() else "completed"
        error = pulse.reason if status == "cancelled" else None
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted"
    except MetarecError as exc:
        logger.error("sweep %s failed: %s", sweep_id, exc)
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded in one line, the traceback goes to the log
        logger.exception("sweep %s failed", sweep_id)
        error = f"{type(exc).__name__}: {exc} (full traceback in {store.sweep_dir(sweep_id) / DRIVER_LOG} for a background sweep, or rerun with -v)"
    finally:
        restore()
        pulse.finish()
    trials = store.sweep_trials(sweep_id)
    for run in trials:  # a trial Ray stopped before it could say so
        if run.status == "running":
            reason = "the sweep was cancelled" if status == "cancelled" else f"the sweep ended ({error or status})"
            store.finish(run.id, "cancelled" if status == "cancelled" else "failed", error=f"{reason} before this trial reported its end")
    trials = store.sweep_trials(sweep_id)
    if status == "completed" and trials and all(r.status == "failed" for r in trials):
        status, error = "failed", f"all {len(trials)} trial(s) failed; the first: {trials[0].error}"
    elif status == "completed" and not trials:
        status, error = "failed", "no trial ran (see the driver's log)"
    best = best_trial(store, sweep_id, spec)
    if not pulse.lost.is_set():
        store.finish_sweep(sweep_id, status, error=error, best=best)
    logger.info("sweep %s %s%s", sweep_id, status, f": {error}" if error else "")
    return sweep_summary(store, sweep_id)


class DriverPulse(threading.Thread):
    """The driver's heartbeat (every second) and its watch on the sweep's cancel flag (twice a second)."""

    def __init__(self, store: RunStore, sweep_id: str) -> None:
        super().__init__(name=f"metarec-sweep-{sweep_id}", daemon=True)
        self.echo: Callable[[str], None] = lambda _line: None
        self.store, self.sweep_id = store, sweep_id
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.reason = "cancelled"
        self._done = threading.Event()

    def run(self) -> None:
        last = 0.0
        try:
            while not self._done.wait(CANCEL_POLL):
                try:
                    if not self.cancelled.is_set() and self.store.is_sweep_cancel_requested(self.sweep_id):
                        self.cancelled.set()
                    if time.monotonic() - last >= HEARTBEAT_INTERVAL - 1e-3:
                        last = time.monotonic()
                        if not self.store.sweep_heartbeat(self.sweep_id):
                            self.lost.set()
                            self.reason = "the sweep is no longer marked running in the store"
                            self.cancelled.set()
                except MetarecError as exc:
                    logger.warning("sweep %s: cannot reach the run store (%s); retrying", self.sweep_id, exc)
        finally:
            self.store.close()

    def finish(self) -> None:
        self._done.set()
        self.join()


def _stop_on_signals(cancelled: threading.Event) -> Callable[[], None]:
    """SIGTERM (and a first SIGINT) cancel the sweep like ``sweeps cancel``; a second SIGINT interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: Any) -> None:
        if cancelled.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        logger.warning("received %s; cancelling the sweep", signal.Signals(signum).name)
        cancelled.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()] and None


