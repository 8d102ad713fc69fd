"""Background work on runs: training and evaluation jobs, the processes that do them, and the dispatcher of the training queue.

A run is trained in its own process, ``python -m metarec_core worker RUN_ID``;
a completed run is evaluated in its own process, ``python -m metarec_core
runs evaluate RUN_ID``. Both are started with :class:`subprocess.Popen` in a
new session (never a thread of the caller, never :mod:`multiprocessing`), so
a Streamlit rerun, a closed tab or an app restart does not stop them. Both
are jobs of the run store (:mod:`metarec_core.store.runs`) with one life
cycle: claimed with the worker's PID, a heartbeat with progress every second,
a cancel flag polled twice a second, a final status with a one-line error,
and the same detection of a dead worker. Metrics are not a job's business:
``fit`` writes them to the run directory's ``metrics.jsonl``.

Typical use (what ``train --background`` and the app do)::

    store = RunStore()
    run_id = submit(store, config, "builtin:movielens-100k", name="my run")
    dispatch(store)            # starts queued runs while slots are free
    ...
    start_evaluation(store, run_id)
    evaluation_state(store, run_id).status   # "running", then "done"
"""
from __future__ import annotations

import _thread
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec_core.catalogue import dataset_fingerprint, resolve_dataset
from metarec_core.configs import positive_int_env, config_from_dict
from metarec_core.errors import ConfigError, DataError, MetarecError
from metarec_core.store import JobRecord, RunRecord, RunStore, StoreError

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats of a worker.
HEARTBEAT_INTERVAL = 1.0
#: Seconds between two reads of the cancel flag by a worker.
CANCEL_POLL_INTERVAL = 0.5
#: A running job whose heartbeat is older than this (seconds) is considered dead.
STALE_AFTER = 30.0
#: Name of the training worker's log file in its run directory (stdout, stderr and tracebacks).
WORKER_LOG = "worker.log"
#: Folder of a run's evaluation (shots curves, per-user gains) inside its run directory.
EVALUATION_DIR = "evaluation"
#: Log file of a run's background evaluation, in its run directory.
EVALUATION_LOG = "evaluation.log"
#: The K values (support sizes) of a background evaluation.
EVALUATION_SHOTS = (1, 3, 5, 10, 20)

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def default_max_concurrent() -> int:
    """Concurrent training workers allowed: ``METAREC_MAX_WORKERS`` if set, else 1."""
    return positive_int_env("METAREC_MAX_WORKERS", 1)


def submit(store: RunStore, config: Any, dataset_ref: str, *, name: str | None = None) -> str:
    """Queue a training run.

    Parameters
    ----------
    store
        The run store.
    config
        A :class:`~metarec_core.train_config.TrainConfig` or a dict of its settings
        (validated; unknown keys rejected).
    dataset_ref
        ``builtin:<name>`` or ``stored:<dataset_id>`` (see
        :meth:`RunStore.save_dataset` to store an uploaded dataset first).
    name
        Display name of the run.

    Returns
    -------
    str
        The new run's ID (status ``queued``); call :func:`dispatch` to start it.
    """
    from metarec_core.train_config import TrainConfig

    if isinstance(config, Mapping):
        config = config_from_dict(TrainConfig, dict(config))
    elif not isinstance(config, TrainConfig):
        raise ConfigError(f"submit expects a TrainConfig or a dict of its settings, got {type(config).__name__}")
    fingerprint = dataset_fingerprint(store, dataset_ref)  # also checks the reference and that a saved dataset exists
    return store.create_run(config, dataset_ref, name=name, dataset_fingerprint=fingerprint)


def dispatch(store: RunStore, max_concurrent: int | None = None, *, stale_after: float = STALE_AFTER) -> list[str]:
    """Start queued runs, oldest first, while fewer than ``max_concurrent`` runs are training.

    Also marks dead workers' jobs failed (see :func:`mark_stale_jobs`). Cheap
    enough to call on every poll of the app.

    Parameters
    ----------
    store
        The run store.
    max_concurrent
        Runs allowed to train at once (over every process using this store);
        default :func:`default_max_concurrent`.
    stale_after
        Heartbeat age (seconds) after which a running job counts as dead.

    Returns
    -------
    list of str
        IDs of the runs started.
    """
    limit = default_max_concurrent() if max_concurrent is None else int(max_concurrent)
    if limit < 1:
        raise ConfigError(f"max_concurrent must be >= 1, got {max_concurrent}")
    mark_stale_jobs(store, stale_after=stale_after)
    started: list[str] = []
    while (run := store.claim_next(limit)) is not None:
        try:
            _start_process(store, run.id, "train", ["worker", run.id], WORKER_LOG, extra_env={"METAREC_MAX_WORKERS": str(limit)})
        except StoreError as exc:
            logger.error("%s", exc)
            continue
        started.append(run.id)
    return started


def mark_stale_jobs(store: RunStore, *, stale_after: float = STALE_AFTER) -> list[JobRecord]:
    """Mark running jobs (training or evaluation) whose worker is gone as failed; returns them as they were.

    A job is stale when its worker ran on this host and its process no longer
    exists (or is a zombie, or the PID now belongs to another program), or when
    its heartbeat is older than ``stale_after`` seconds (any host, e.g. after a
    machine restart). A training run's last checkpoint stays in its run directory.
    """
    return [job for job in store.list_jobs("running") if _fail_if_dead(store, job, stale_after)]


def pid_alive(pid: int, run_id: str | None = None) -> bool:
    """Whether a process with this PID exists on this host (and, if ``run_id`` is given, is working on that run).

    A zombie (exited, not yet reaped) counts as gone. Where ``/proc`` exists, a
    PID reused by a program whose command line does not name ``run_id`` (in
    full, or as an argument that is a prefix of at least 4 characters, as
    ``runs evaluate <prefix>`` takes it) counts as gone too. On Windows this
    always answers True (heartbeats decide there).
    """
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return run_id is None
    except OSError:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state in ("Z", "X"):
                return False
            if run_id is not None:
                cmdline = (proc / "cmdline").read_bytes()
                target = run_id.encode()
                if cmdline and target not in cmdline and not any(len(a) >= 4 and target.startswith(a) for a in cmdline.split(b"\0")):
                    return False
        except (OSError, IndexError):
            return False
    return True


def wait(
    store: RunStore, run_id: str, *, timeout: float | None = None, poll: float = 0.25, stale_after: float = STALE_AFTER
) -> RunRecord:
    """Block until a run has finished training (completed, failed or cancelled); returns its record.

    Dead workers are detected while waiting. Raises :class:`StoreError` on timeout.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        run = store.get_run(run_id)
        if not run.is_active:
            return run
        if run.status == "running":
            mark_stale_jobs(store, stale_after=stale_after)
        if deadline is not None and time.monotonic() > deadline:
            raise StoreError(f"run '{run_id}' is still {run.status} after {timeout:.0f} s")
        time.sleep(poll)


# ---------------------------------------------------------------------- the training worker
class ProgressRecorder:
    """``on_progress`` callback of a training worker: keeps the latest progress for the next heartbeat.

    Called from the training thread; never touches the store itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: dict[str, Any] | None = None

    def __call__(self, event: Any) -> None:
        progress = {
            "phase": event.phase,
            "epoch": int(event.epoch),
            "step": int(event.step),
            "total_steps": int(event.total_steps),
            "elapsed": float(event.elapsed),
            "eta": None if event.eta is None else float(event.eta),
            "losses": {str(k): float(v) for k, v in event.losses.items()},
        }
        with self._lock:
            previous = self._progress or {}
            if not event.losses:
                progress["losses"] = previous.get("losses", {})
            if event.metrics:
                progress["metrics"] = {str(k): float(v) for k, v in event.metrics.items()}
            elif "metrics" in previous:
                progress["metrics"] = previous["metrics"]
            self._progress = progress

    def latest(self) -> dict[str, Any] | None:
        """The latest progress (None before the first event)."""
        with self._lock:
            return None if self._progress is None else dict(self._progress)


def run_worker(store: RunStore, run_id: str) -> str:
    """Train one run in this process: the body of ``python -m metarec_core worker RUN_ID``.

    Claims the run's training job with this PID (if still queued; or takes it
    over from the dispatcher that started this process), beats a heartbeat
    every second, stops when the job's cancel flag is set (or on SIGTERM /
    SIGINT), and ends the job ``completed``, ``cancelled`` or ``failed`` with a
    one-line error (the full traceback goes to the log). Then starts the next
    queued run if a slot is free.

    Returns
    -------
    str
        The run's final status.
    """
    from metarec_core.train_config import TrainConfig
    from metarec_core.training import fit
    from metarec_core.device import resolve_device

    pid = os.getpid()
    _take_job(store, run_id, "train", pid)
    run = store.get_run(run_id)
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    logger.info("worker %d for run %s (%s) started at %s", pid, run_id, run.name, time.strftime("%Y-%m-%d %H:%M:%S"))

    stop = threading.Event()
    signals: list[str] = []
    recorder = ProgressRecorder()
    pulse = _Pulse(store, run_id, "train", recorder.latest, on_stop=stop.set)
    pulse.start()
    restore_signals = _install_stop_handlers(signals, on_signal=stop.set)
    status, error, device = "failed", None, None
    try:
        config = config_from_dict(TrainConfig, run.config)
        dataset = resolve_dataset(store, run.dataset_ref)
        fingerprint = dataset.fingerprint
        if run.dataset_fingerprint and fingerprint != run.dataset_fingerprint:
            raise DataError(
                f"dataset {run.dataset_ref} changed since the run was queued (fingerprint {fingerprint}, "
                f"expected {run.dataset_fingerprint}); queue the run again"
            )
        device = str(resolve_device(config.device))
        store.set_worker(run_id, pid=pid, device=device, dataset_fingerprint=fingerprint)
        result = fit(config, dataset, out_dir=run_dir, on_progress=recorder, should_stop=stop.is_set)
        device = result.device
        status = "cancelled" if result.stopped else "completed"
        if result.stopped and signals:
            error = f"stopped by {signals[0]}"
    except KeyboardInterrupt:
        status, error = "cancelled", "interrupted"
    except MetarecError as exc:
        logger.error("run %s failed: %s", run_id, exc, exc_info=True)
        error = str(exc)
    except Exception as exc:
        logger.exception("run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc} (full traceback in {run_dir / WORKER_LOG})"
    finally:
        pulse.finish()
        restore_signals()
    if pulse.lost.is_set():
        status = store.get_run(run_id).status
        logger.error("run %s was marked %s by someone else; leaving it", run_id, status)
        return status
    store.finish(run_id, status, error=error, device=device, progress=recorder.latest())
    logger.info("run %s %s%s", run_id, status, f": {error}" if error else "")
    try:
        dispatch(store)
    except MetarecError as exc:
        logger.warning("could not start the next queued run: %s", exc)
    if status == "completed":
        _keep_baselines(store, run_dir, config, dataset)
    return status


#: Where the store keeps the baselines measured per dataset and split (see :mod:`metarec_core.split_baselines`).
BASELINE_CACHE = "baselines"


def _keep_baselines(store: RunStore, run_dir: Path, config: Any, dataset: Any) -> None:
    """Score the bias and ALS baselines on the run's split (once per split, cached in the store) and keep them with the run.

    Done after the run is marked completed, so its weights are usable at once; a
    failure here is logged and leaves the run without baselines, never failed.
    """
    from metarec_core.split_baselines import score_split_baselines, write_run_baselines

    try:
        write_run_baselines(run_dir, score_split_baselines(dataset, config, cache_dir=store.home / BASELINE_CACHE))
    except (MetarecError, OSError, ValueError) as exc:
        logger.warning("baselines for %s not measured: %s", run_dir.name, exc)


# ---------------------------------------------------------------------- evaluations
@dataclass(frozen=True)
class EvaluationState:
    """Where a run's evaluation stands, from the store's ``evaluate`` job and the saved result.

    Attributes
    ----------
    status
        ``none`` (never evaluated, or stopped before a result), ``running``,
        ``done`` (a result is saved) or ``failed``.
    error
        One-line reason of a failure (None otherwise).
    job
        The evaluation job behind it, if there is one.
    """

    status: str
    error: str | None = None
    job: JobRecord | None = None


def evaluation_dir(store: RunStore, run_id: str) -> Path:
    """Where a run's evaluation is kept (read it with ``EvaluationResult.load``)."""
    return store.run_dir(run_id) / EVALUATION_DIR


def evaluation_state(store: RunStore, run_id: str, *, stale_after: float = STALE_AFTER) -> EvaluationState:
    """The state of a run's evaluation (it survives an app restart: it is kept in the store)."""
    job = store.get_job(run_id, kind="evaluate")
    if job is not None and job.status == "running" and _fail_if_dead(store, job, stale_after):
        job = store.get_job(run_id, kind="evaluate")
    saved = (evaluation_dir(store, run_id) / "results.parquet").is_file()
    if job is not None and job.is_active:
        return EvaluationState("running", job=job)
    if job is not None and job.status == "failed":
        return EvaluationState("failed", error=job.error or "the evaluation failed", job=job)
    if job is not None and job.status == "completed" and not saved:
        missing = f"the evaluation finished but its result is missing from {evaluation_dir(store, run_id)}; evaluate the run again"
        return EvaluationState("failed", error=missing, job=job)
    return EvaluationState("done" if saved else "none", job=job)


def start_evaluation(store: RunStore, run_id: str, *, shots: tuple[int, ...] = EVALUATION_SHOTS) -> bool:
    """Evaluate a completed run in a background process (the run, its no-adaptation start and the baselines, every K).

    Returns
    -------
    bool
        False if an evaluation of this run is already running (nothing started).

    Raises
    ------
    StoreError
        If the run is not completed, or the process cannot be started.
    """
    run = store.get_run(run_id)
    if run.status != "completed":
        raise StoreError(f"run '{run_id}' is {run.status}; only a completed run can be evaluated")
    if evaluation_state(store, run_id).status == "running":
        return False
    if not store.queue_job(run_id, kind="evaluate", params={"shots": list(shots)}):
        return False
    if not store.claim_job(run_id, kind="evaluate"):
        return False
    arguments = ["runs", "evaluate", run_id, "--shots", ",".join(map(str, shots))]
    process = _start_process(store, run_id, "evaluate", arguments, EVALUATION_LOG)
    logger.info("started evaluation %d for run %s", process.pid, run_id)
    return True


def run_evaluation(store: RunStore, run_id: str, *, shots: tuple[int, ...] = EVALUATION_SHOTS) -> Any:
    """Evaluate a completed run in this process and save the result into its ``evaluation/`` folder.

    The body of ``python -m metarec_core runs evaluate RUN_ID``: takes over the
    run's evaluation job started by :func:`start_evaluation`, or starts one
    with this PID; beats its heartbeat; stops on its cancel flag (or SIGTERM);
    ends it ``completed``, ``cancelled`` or ``failed`` with a one-line error
    (what :func:`evaluation_state` reports), and raises the failure.

    Returns
    -------
    EvaluationResult
    """
    from metarec_core.evaluation_report import EvaluationConfig
    from metarec_core.evaluation import evaluate_run

    run_dir = store.run_dir(run_id)
    if not run_dir.is_dir():  # deleted meanwhile: do not bring its folder back
        raise StoreError(f"run '{run_id}' has no folder {run_dir} (deleted?); nothing to evaluate")
    run = store.get_run(run_id)
    if run.status != "completed":
        raise StoreError(f"run '{run_id}' is {run.status}; only a completed run can be evaluated")
    evaluation_state(store, run_id)  # a job left by a dead process is failed first, so a new one can start
    store.queue_job(run_id, kind="evaluate", params={"shots": list(shots)})  # no-op while one is active
    _take_job(store, run_id, "evaluate", os.getpid())

    progress: dict[str, int] = {}
    in_main = threading.current_thread() is threading.main_thread()
    interrupt = _thread.interrupt_main if in_main else (lambda: None)
    pulse = _Pulse(store, run_id, "evaluate", lambda: dict(progress) or None, on_stop=interrupt)
    pulse.start()
    restore_signals = _install_stop_handlers([], on_signal=None)
    status, error = "failed", None
    try:
        config = EvaluationConfig(shots=tuple(shots))
        result = evaluate_run(run_dir, resolve_dataset(store, run.dataset_ref), config, on_progress=lambda d, t: progress.update(done=d, total=t))
        if not run_dir.is_dir():
            raise StoreError(f"run '{run_id}' was deleted while it was evaluated; its result is not kept")
        result.save(evaluation_dir(store, run_id))
        status = "completed"
        return result
    except KeyboardInterrupt:
        status, error = "cancelled", "stopped"
        raise
    except MetarecError as exc:
        error = str(exc)
        raise
    except Exception as exc:
        logger.exception("evaluation of run %s failed", run_id)
        error = f"{type(exc).__name__}: {exc} (full traceback in {run_dir / EVALUATION_LOG})"
        raise
    finally:
        pulse.finish()
        restore_signals()
        if not pulse.lost.is_set():
            store.finish(run_id, status, kind="evaluate", error=error, progress=dict(progress) or None)


def stop_evaluation(store: RunStore, run_id: str, *, timeout: float = 10.0) -> bool:
    """Stop a run's evaluation, if one is running; wait until its process is gone.

    Sets the job's cancel flag and, for a process on this host, sends it
    SIGTERM; the job ends ``cancelled``.

    Returns
    -------
    bool
        True if an evaluation was running and has stopped.

    Raises
    ------
    StoreError
        If the process is still alive after ``timeout`` seconds.
    """
    job = store.get_job(run_id, kind="evaluate")
    if job is None or not job.is_active or (job.status == "running" and _fail_if_dead(store, job, STALE_AFTER)):
        return False
    if store.request_cancel(run_id, kind="evaluate") != "running":
        return True  # it was queued (now cancelled), or it has just finished
    deadline = time.monotonic() + timeout
    too_slow = StoreError(f"the evaluation of run '{run_id}' (process {job.pid}) did not stop within {timeout:g} s; try again")
    if job.pid is not None and job.host == socket.gethostname():
        try:
            os.kill(job.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        except OSError as exc:
            raise StoreError(f"could not stop the evaluation of run '{run_id}' (process {job.pid}): {exc}") from exc
        while pid_alive(job.pid, run_id):
            if time.monotonic() > deadline:
                raise too_slow
            time.sleep(0.05)
    else:  # another host (or no PID yet): its worker sees the flag
        while (current := store.get_job(run_id, kind="evaluate")) is not None and current.status == "running":
            if time.monotonic() > deadline:
                raise too_slow
            time.sleep(0.1)
    store.finish(run_id, "cancelled", kind="evaluate", error="stopped")  # if the process could not record it
    logger.info("stopped the evaluation of run %s", run_id)
    return True


def delete_run(store: RunStore, run_id: str) -> None:
    """Delete a run (see :meth:`RunStore.delete`), first stopping its background evaluation.

    An evaluation left running would write its results into the deleted
    run's folder and bring it back half-made.
    """
    stop_evaluation(store, run_id)
    store.delete(run_id)


# ---------------------------------------------------------------------- one life cycle for every job
class _Pulse(threading.Thread):
    """A worker's background thread: polls the job's cancel flag and beats its heartbeat with the latest progress.

    Calls ``on_stop`` once, when a cancel is requested or the job is no longer
    running in the store (``lost`` is set then).
    """

    def __init__(
        self, store: RunStore, run_id: str, kind: str, progress: Callable[[], dict[str, Any] | None], *, on_stop: Callable[[], None]
    ) -> None:
        super().__init__(name=f"metarec-pulse-{kind}-{run_id}", daemon=True)
        self.store, self.run_id, self.kind = store, run_id, kind
        self.progress = progress
        self.on_stop = on_stop
        self.lost = threading.Event()
        self._stopping = False
        self._done = threading.Event()

    def run(self) -> None:
        last_beat = 0.0
        try:
            while not self._done.wait(CANCEL_POLL_INTERVAL):
                try:
                    if self.store.is_cancel_requested(self.run_id, kind=self.kind):
                        self._request_stop(f"{self.kind} job of run {self.run_id}: cancel requested")
                    if time.monotonic() - last_beat >= HEARTBEAT_INTERVAL - 1e-3:
                        last_beat = time.monotonic()
                        if not self.store.heartbeat(self.run_id, kind=self.kind, progress=self.progress()):
                            self.lost.set()
                            self._request_stop(f"{self.kind} job of run {self.run_id} is no longer marked running in the store; stopping")
                except (sqlite3.Error, StoreError) as exc:
                    logger.warning("%s job of run %s: cannot reach the run store (%s); retrying", self.kind, self.run_id, exc)
        finally:
            self.store.close()

    def _request_stop(self, message: str) -> None:
        if not self._stopping and not self._done.is_set():
            self._stopping = True
            logger.info("%s", message)
            self.on_stop()

    def finish(self) -> None:
        """Stop the thread and wait for it."""
        self._done.set()
        self.join()


def _take_job(store: RunStore, run_id: str, kind: str, pid: int) -> None:
    """Make this process the worker of a run's job: claim it if queued, or take it over from the process that started it."""
    job = store.get_job(run_id, kind=kind)
    if job is None:
        store.get_run(run_id)  # says "no run ..." for an unknown ID
        raise StoreError(f"run '{run_id}' has no {kind} job; start one first")
    if job.status == "queued":
        if not store.claim_job(run_id, kind=kind, pid=pid):
            raise StoreError(f"run '{run_id}' was started by another worker")
    elif job.status != "running" or job.pid not in (None, pid):
        owner = f" by process {job.pid}" if job.status == "running" else ""
        if kind == "train":
            raise StoreError(f"run '{run_id}' is {job.status}{owner}; a worker trains only a queued run")
        raise StoreError(f"run '{run_id}' is already being evaluated{owner}; wait for it or stop it first")
    store.set_worker(run_id, kind=kind, pid=pid)


def _fail_if_dead(store: RunStore, job: JobRecord, stale_after: float) -> bool:
    """Mark a running job failed if its process is gone or its heartbeat is too old; True if it was."""
    now = time.time()
    reason = None
    if job.host == socket.gethostname() and job.pid is not None and not pid_alive(job.pid, job.run_id):
        reason = f"process {job.pid} is gone"
    elif job.heartbeat is None or now - job.heartbeat > stale_after:
        reason = "last heartbeat " + ("never" if job.heartbeat is None else f"{now - job.heartbeat:.0f} s ago")
    if reason and store.fail_if_stale(job.run_id, job.heartbeat, _stale_message(store, job, reason), kind=job.kind):
        logger.warning("%s job of run %s: worker stopped unexpectedly (%s)", job.kind, job.run_id, reason)
        return True
    return False


def _stale_message(store: RunStore, job: JobRecord, reason: str) -> str:
    """The one-line error stored for a job whose worker died."""
    run_dir = store.run_dir(job.run_id)
    if job.kind == "evaluate":
        return f"the evaluation process stopped without a result (killed or machine restarted; {reason}); its log: {run_dir / EVALUATION_LOG}"
    if (run_dir / "weights.safetensors").is_file():
        checkpoint = f"last checkpoint kept at {run_dir}"
    else:
        checkpoint = "no checkpoint had been written yet"
    return f"worker stopped unexpectedly (killed or machine restarted; {reason}); {checkpoint}; worker log: {run_dir / WORKER_LOG}"


def _start_process(
    store: RunStore, run_id: str, kind: str, arguments: list[str], log_name: str, *, extra_env: Mapping[str, str] | None = None
) -> subprocess.Popen:
    """Start ``python -m metarec_core ARGUMENTS`` for a claimed job, in a new session, logging to the run directory.

    The process is recorded as the job's worker; a daemon thread waits for it,
    so it never lingers as a zombie. If it cannot start, the job is marked failed.
    """
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {**_child_env(store), **(extra_env or {})}
    command = [sys.executable, "-m", "metarec_core", "-v", *arguments]
    what = "worker" if kind == "train" else "evaluation"
    try:
        with open(run_dir / log_name, "ab") as log:
            _start_log_section(log, what)
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=_PACKAGE_ROOT,
                env=env, start_new_session=True, close_fds=True,
            )
    except OSError as exc:
        store.finish(run_id, "failed", kind=kind, error=f"could not start the {what} process: {exc}")
        raise StoreError(f"run '{run_id}': could not start the {what} process: {exc}") from exc
    store.set_worker(run_id, kind=kind, pid=process.pid)
    threading.Thread(target=process.wait, name=f"metarec-reap-{process.pid}", daemon=True).start()
    logger.info("started %s %d for run %s", what, process.pid, run_id)
    return process


def _start_log_section(log: Any, what: str) -> None:
    """End a line a killed process left unfinished, then mark where this process's lines begin."""
    if log.tell() > 0:
        with open(log.name, "rb") as previous:
            previous.seek(-1, os.SEEK_END)
            if previous.read(1) != b"\n":
                log.write(b"\n")
    log.write(f"--- {what} started at {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
    log.flush()


def _child_env(store: RunStore) -> dict[str, str]:
    """Environment of a background process: this store, and this checkout's package importable."""
    env = dict(os.environ)
    env["METAREC_HOME"] = str(store.home.resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _install_stop_handlers(signals: list[str], *, on_signal: Callable[[], None] | None) -> Callable[[], None]:
    """SIGTERM / SIGINT stop the job: call ``on_signal`` (a second SIGINT interrupts at once), or, without one, interrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if on_signal is None:
            if not signals:
                signals.append(name)
                logger.warning("received %s; stopping", name)
                raise KeyboardInterrupt
            return
        if signals and signum == signal.SIGINT:
            raise KeyboardInterrupt
        signals.append(name)
        on_signal()
        logger.warning("received %s; stopping after the current step", name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore
