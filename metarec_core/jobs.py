"""Background work on runs: the training queue, the dispatcher that starts worker processes, the worker body, and background evaluations.

A run is trained in its own process, ``python -m metarec_core worker RUN_ID``,
started with :class:`subprocess.Popen` in a new session (never a thread of the
caller, never :mod:`multiprocessing`), so a Streamlit rerun, a closed tab or an
app restart does not stop it. Workers report through the run store only:
progress rows, a heartbeat every second, and the final status.

Typical use (what ``train --background`` and the app do)::

    store = RunStore()
    run_id = submit(store, config, "builtin:movielens-100k", name="my run")
    dispatch(store)            # starts queued runs while slots are free

A finished run's shots-curve evaluation runs the same way, in its own process
(``python -m metarec_core runs evaluate RUN_ID``), writing into the run's
``evaluation/`` folder: :func:`start_evaluation`, :func:`evaluation_state`.
"""
from __future__ import annotations

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
from pathlib import Path
from typing import Any

from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError, DataError, MetarecError
from metarec_core.store import MetricPoint, RunRecord, RunStore, StoreError

logger = logging.getLogger(__name__)

#: Seconds between two heartbeats (and metric flushes) of a worker.
HEARTBEAT_INTERVAL = 1.0
#: Seconds between two reads of the cancel flag by a worker.
CANCEL_POLL_INTERVAL = 0.5
#: A running run whose heartbeat is older than this (seconds) is considered dead.
STALE_AFTER = 30.0
#: Name of the worker's log file in its run directory (stdout, stderr and tracebacks).
WORKER_LOG = "worker.log"

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
_children: dict[str, subprocess.Popen] = {}
_children_lock = threading.Lock()


def default_max_concurrent() -> int:
    """Concurrent workers allowed: ``METAREC_MAX_WORKERS`` if set, else 1."""
    raw = os.environ.get("METAREC_MAX_WORKERS", "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"METAREC_MAX_WORKERS must be a whole number >= 1, got '{raw}'")
    return value


def submit(store: RunStore, config: Any, dataset_ref: str, *, name: str | None = None) -> str:
    """Queue a training run.

    Parameters
    ----------
    store
        The run store.
    config
        A :class:`~metarec_core.training.TrainConfig` or a dict of its settings
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
    fingerprint = store.dataset_fingerprint(dataset_ref)  # also checks that a saved dataset exists
    return store.create_run(config, dataset_ref, name=name, dataset_fingerprint=fingerprint)


def start_worker(store: RunStore, run_id: str, *, max_concurrent: int | None = None) -> subprocess.Popen:
    """Start the worker process of one queued run now (whatever the number of running runs).

    Raises
    ------
    StoreError
        If the run is not queued, or the process cannot be started (the run is then marked failed).
    """
    if not store.claim_run(run_id):
        run = store.get_run(run_id)
        raise StoreError(f"run '{run_id}' is {run.status}; only a queued run can be started")
    return _spawn(store, store.get_run(run_id), max_concurrent or default_max_concurrent())


def dispatch(store: RunStore, max_concurrent: int | None = None, *, stale_after: float = STALE_AFTER) -> list[str]:
    """Start queued runs, oldest first, while fewer than ``max_concurrent`` runs are running.

    Also marks dead workers' runs failed (see :func:`mark_stale_runs`) and reaps
    finished worker processes this process started. Cheap enough to call on
    every poll of the app.

    Parameters
    ----------
    store
        The run store.
    max_concurrent
        Runs allowed at once (over every process using this store); default
        :func:`default_max_concurrent`.
    stale_after
        Heartbeat age (seconds) after which a running run counts as dead.

    Returns
    -------
    list of str
        IDs of the runs started.
    """
    limit = default_max_concurrent() if max_concurrent is None else int(max_concurrent)
    if limit < 1:
        raise ConfigError(f"max_concurrent must be >= 1, got {max_concurrent}")
    _reap_children()
    mark_stale_runs(store, stale_after=stale_after)
    started: list[str] = []
    while (run := store.claim_next(limit)) is not None:
        try:
            _spawn(store, run, limit)
        except StoreError as exc:
            logger.error("%s", exc)
            continue
        started.append(run.id)
    return started


def mark_stale_runs(store: RunStore, *, stale_after: float = STALE_AFTER) -> list[str]:
    """Mark running runs whose worker is gone as failed; returns their IDs.

    A run is stale when its worker ran on this host and its process no longer
    exists (or is a zombie, or the PID now belongs to another program), or when
    its heartbeat is older than ``stale_after`` seconds (any host, e.g. after a
    machine restart). Its last checkpoint stays in the run directory.
    """
    host = socket.gethostname()
    now = time.time()
    failed: list[str] = []
    for run in store.list_runs("running"):
        reason = None
        if run.host == host and run.pid is not None and not pid_alive(run.pid, run.id):
            reason = f"process {run.pid} is gone"
        elif run.heartbeat is None or now - run.heartbeat > stale_after:
            age = "never" if run.heartbeat is None else f"{now - run.heartbeat:.0f} s ago"
            reason = f"last heartbeat {age}"
        if reason and store.fail_if_stale(run.id, run.heartbeat, stale_message(store, run, reason)):
            logger.warning("run %s: worker stopped unexpectedly (%s)", run.id, reason)
            failed.append(run.id)
    return failed


def stale_message(store: RunStore, run: RunRecord, reason: str) -> str:
    """The one-line error stored for a run whose worker died."""
    run_dir = store.run_dir(run.id)
    if (run_dir / "weights.safetensors").is_file():
        checkpoint = f"last checkpoint kept at {run_dir}"
    else:
        checkpoint = "no checkpoint had been written yet"
    return f"worker stopped unexpectedly (killed or machine restarted; {reason}); {checkpoint}; worker log: {run_dir / WORKER_LOG}"


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


def wait(store: RunStore, run_id: str, *, timeout: float | None = None, poll: float = 0.25) -> RunRecord:
    """Block until a run has finished (completed, failed or cancelled); returns its record.

    Dead workers are detected while waiting. Raises :class:`StoreError` on timeout.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        _reap_children()
        run = store.get_run(run_id)
        if not run.is_active:
            return run
        if run.status == "running":
            mark_stale_runs(store)
        if deadline is not None and time.monotonic() > deadline:
            raise StoreError(f"run '{run_id}' is still {run.status} after {timeout:.0f} s")
        time.sleep(poll)


# ---------------------------------------------------------------------- the worker
class ProgressRecorder:
    """``on_progress`` callback of a worker: buffers events as metric points for batched writes.

    Called from the training thread; never touches the store itself. The
    worker's pulse thread drains it about once a second.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._points: list[MetricPoint] = []
        self._progress: dict[str, Any] | None = None

    def __call__(self, event: Any) -> None:
        now = time.time()
        points = [MetricPoint(event.phase, int(event.epoch), int(event.step), str(k), float(v), now) for k, v in event.losses.items()]
        points += [MetricPoint(event.phase, int(event.epoch), int(event.step), str(k), float(v), now) for k, v in event.metrics.items()]
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
            self._points.extend(points)
            if self._progress is not None and not event.losses:
                progress["losses"] = self._progress.get("losses", {})
            if event.metrics:
                progress["metrics"] = {str(k): float(v) for k, v in event.metrics.items()}
            elif self._progress is not None and "metrics" in self._progress:
                progress["metrics"] = self._progress["metrics"]
            self._progress = progress

    def drain(self) -> tuple[list[MetricPoint], dict[str, Any] | None]:
        """Take the buffered points (and the latest progress) out of the buffer."""
        with self._lock:
            points, self._points = self._points, []
            return points, self._progress

    def put_back(self, points: list[MetricPoint]) -> None:
        """Return points whose write failed to the front of the buffer."""
        with self._lock:
            self._points[:0] = points


class _Pulse(threading.Thread):
    """The worker's background thread: cancel flag, heartbeat and metric flushes."""

    def __init__(self, store: RunStore, run_id: str, recorder: ProgressRecorder, stop: threading.Event) -> None:
        super().__init__(name=f"metarec-pulse-{run_id}", daemon=True)
        self.store = store
        self.run_id = run_id
        self.recorder = recorder
        self.stop = stop
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        last_beat = 0.0
        try:
            while not self._done.wait(CANCEL_POLL_INTERVAL):
                try:
                    if self.store.is_cancel_requested(self.run_id):
                        if not self.stop.is_set():
                            logger.info("run %s: cancel requested", self.run_id)
                        self.stop.set()
                    if time.monotonic() - last_beat >= HEARTBEAT_INTERVAL - 1e-3:
                        last_beat = time.monotonic()
                        self.flush()
                except (sqlite3.Error, StoreError) as exc:
                    logger.warning("run %s: cannot reach the run store (%s); retrying", self.run_id, exc)
        finally:
            self.store.close()

    def flush(self) -> None:
        """Write buffered metric points and a heartbeat with the latest progress."""
        points, progress = self.recorder.drain()
        try:
            self.store.append_metrics(self.run_id, points)
        except BaseException:
            self.recorder.put_back(points)
            raise
        if not self.store.heartbeat(self.run_id, progress=progress):
            if not self.lost.is_set():
                logger.error("run %s is no longer marked running in the store; stopping", self.run_id)
            self.lost.set()
            self.stop.set()

    def finish(self) -> None:
        """Stop the thread and wait for it."""
        self._done.set()
        self.join()


def run_worker(store: RunStore, run_id: str) -> str:
    """Train one run in this process: the body of ``python -m metarec_core worker RUN_ID``.

    Marks the run running with this PID (claiming it if still queued), beats a
    heartbeat every second, writes progress as metric rows, stops when the
    run's cancel flag is set (or on SIGTERM / SIGINT), and ends the run
    ``completed``, ``cancelled`` or ``failed`` with a one-line error (the full
    traceback goes to the log). Then starts the next queued run if a slot is free.

    Returns
    -------
    str
        The run's final status.
    """
    pid = os.getpid()
    run = store.get_run(run_id)
    if run.status == "queued":
        if not store.claim_run(run_id, pid=pid):
            raise StoreError(f"run '{run_id}' was started by another worker")
    elif run.status != "running" or run.pid not in (None, pid):
        owner = f" by process {run.pid}" if run.status == "running" else ""
        raise StoreError(f"run '{run_id}' is {run.status}{owner}; a worker trains only a queued run")
    store.set_worker(run_id, pid=pid)
    run = store.get_run(run_id)
    run_dir = store.run_dir(run_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / WORKER_LOG
    logger.info("worker %d for run %s (%s) started at %s", pid, run_id, run.name, time.strftime("%Y-%m-%d %H:%M:%S"))

    stop = threading.Event()
    signals: list[str] = []
    recorder = ProgressRecorder()
    pulse = _Pulse(store, run_id, recorder, stop)
    pulse.start()
    restore_signals = _install_stop_handlers(stop, signals)
    status, error, device = "failed", None, None
    try:
        from metarec_core.train_config import TrainConfig
        from metarec_core.training import fit
        from metarec_core.device import resolve_device

        config = config_from_dict(TrainConfig, run.config)
        dataset = store.resolve_dataset(run.dataset_ref)
        fingerprint = dataset.fingerprint
        if run.dataset_fingerprint and fingerprint != run.dataset_fingerprint:
            raise DataError(
                f"dataset {run.dataset_ref} changed since the run was queued (fingerprint {fingerprint}, "
                f"expected {run.dataset_fingerprint}); queue the run again"
            )
        device = str(resolve_device(config.device))
        store.set_worker(run_id, pid=pid, device=device, dataset_fingerprint=fingerprint)
        _limit_torch_threads()
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
        error = f"{type(exc).__name__}: {exc} (full traceback in {log_path})"
    finally:
        pulse.finish()
        restore_signals()
        points, progress = recorder.drain()
        try:
            store.append_metrics(run_id, points)
            store.heartbeat(run_id, progress=progress)
        except (sqlite3.Error, StoreError) as exc:
            logger.error("run %s: %d metric points could not be written: %s", run_id, len(points), exc)
    if pulse.lost.is_set():
        logger.error("run %s was marked %s by someone else; leaving it", run_id, store.get_run(run_id).status)
        return store.get_run(run_id).status
    store.finish(run_id, status, error=error, device=device)
    logger.info("run %s %s%s", run_id, status, f": {error}" if error else "")
    try:
        dispatch(store)
    except MetarecError as exc:
        logger.warning("could not start the next queued run: %s", exc)
    return status


# ---------------------------------------------------------------------- evaluations
#: Folder of a run's evaluation (shots curves, per-user gains) inside its run directory.
EVALUATION_DIR = "evaluation"
#: The K values (support sizes) of a background evaluation.
EVALUATION_SHOTS = (1, 3, 5, 10, 20)
_EVALUATION_PID = "evaluation.pid"
_EVALUATION_ERROR = "evaluation.error"
_EVALUATION_LOG = "evaluation.log"


def evaluation_dir(store: RunStore, run_id: str) -> Path:
    """Where a run's evaluation is kept (read it with ``EvaluationResult.load``)."""
    return store.run_dir(run_id) / EVALUATION_DIR


def evaluation_state(store: RunStore, run_id: str) -> str:
    """``running``, ``done``, ``failed: <reason>`` or ``none`` — from files, so it survives an app restart."""
    _reap_children()
    run_dir = store.run_dir(run_id)
    pid = _read_pid(run_dir / _EVALUATION_PID)
    if pid is not None and pid_alive(pid, run_id):
        return "running"
    if (run_dir / _EVALUATION_ERROR).is_file():
        return "failed: " + (run_dir / _EVALUATION_ERROR).read_text().strip()
    if (evaluation_dir(store, run_id) / "results.parquet").is_file():
        return "done"
    if pid is not None:
        return f"failed: the evaluation process stopped without a result (see {run_dir / _EVALUATION_LOG})"
    return "none"


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
    if evaluation_state(store, run_id) == "running":
        return False
    run_dir = store.run_dir(run_id)
    (run_dir / _EVALUATION_ERROR).unlink(missing_ok=True)
    command = [sys.executable, "-m", "metarec_core", "-v", "runs", "evaluate", run_id, "--shots", ",".join(map(str, shots))]
    try:
        with open(run_dir / _EVALUATION_LOG, "ab") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=_PACKAGE_ROOT,
                env=_child_env(store), start_new_session=True, close_fds=True,
            )
    except OSError as exc:
        raise StoreError(f"run '{run_id}': could not start the evaluation process: {exc}") from exc
    _write_line(run_dir / _EVALUATION_PID, str(process.pid))
    with _children_lock:
        _children[f"evaluate-{run_id}"] = process
    logger.info("started evaluation %d for run %s", process.pid, run_id)
    return True


def run_evaluation(store: RunStore, run_id: str, *, shots: tuple[int, ...] = EVALUATION_SHOTS) -> Any:
    """Evaluate a completed run in this process and save the result into its ``evaluation/`` folder.

    The body of ``python -m metarec_core runs evaluate RUN_ID``. A failure is
    also written as one line beside the run, where :func:`evaluation_state`
    reports it, and raised.

    Returns
    -------
    EvaluationResult
    """
    from metarec_core.evaluation import EvaluationConfig, evaluate_run

    run_dir = store.run_dir(run_id)
    if not run_dir.is_dir():  # deleted meanwhile: do not bring its folder back
        raise StoreError(f"run '{run_id}' has no folder {run_dir} (deleted?); nothing to evaluate")
    pid_file = run_dir / _EVALUATION_PID
    _write_line(pid_file, str(os.getpid()))
    (run_dir / _EVALUATION_ERROR).unlink(missing_ok=True)
    try:
        run = store.get_run(run_id)
        if run.status != "completed":
            raise StoreError(f"run '{run_id}' is {run.status}; only a completed run can be evaluated")
        _limit_torch_threads()
        result = evaluate_run(run_dir, store.resolve_dataset(run.dataset_ref), EvaluationConfig(shots=tuple(shots)))
        result.save(evaluation_dir(store, run_id))
        return result
    except MetarecError as exc:
        _write_line(run_dir / _EVALUATION_ERROR, str(exc))
        raise
    except Exception as exc:
        logger.exception("evaluation of run %s failed", run_id)
        _write_line(run_dir / _EVALUATION_ERROR, f"{type(exc).__name__}: {exc} (full traceback in {run_dir / _EVALUATION_LOG})")
        raise
    finally:
        if _read_pid(pid_file) == os.getpid():
            pid_file.unlink(missing_ok=True)


def stop_evaluation(store: RunStore, run_id: str, *, timeout: float = 10.0) -> bool:
    """Stop a run's background evaluation, if one is running; wait until its process is gone.

    Returns
    -------
    bool
        True if an evaluation was running and has stopped.

    Raises
    ------
    StoreError
        If the process is still alive after ``timeout`` seconds.
    """
    pid_file = store.run_dir(run_id) / _EVALUATION_PID
    pid = _read_pid(pid_file)
    if pid is None or not pid_alive(pid, run_id):
        pid_file.unlink(missing_ok=True)
        return False
    too_slow = StoreError(f"the evaluation of run '{run_id}' (process {pid}) did not stop within {timeout:g} s; try again")
    with _children_lock:
        child = _children.get(f"evaluate-{run_id}")
    try:
        if child is not None and child.pid == pid:  # started here: its handle works on every platform
            child.terminate()
            child.wait(timeout=timeout)
        else:
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(pid, run_id):
                _reap_children()
                if time.monotonic() > deadline:
                    raise too_slow
                time.sleep(0.05)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired as exc:
        raise too_slow from exc
    except OSError as exc:
        raise StoreError(f"could not stop the evaluation of run '{run_id}' (process {pid}): {exc}") from exc
    pid_file.unlink(missing_ok=True)
    logger.info("stopped the evaluation of run %s", run_id)
    return True


def delete_run(store: RunStore, run_id: str) -> None:
    """Delete a run (see :meth:`RunStore.delete`), first stopping its background evaluation.

    An evaluation left running would write its results into the deleted
    run's folder and bring it back half-made.
    """
    stop_evaluation(store, run_id)
    store.delete(run_id)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _write_line(path: Path, text: str) -> None:
    """Write ``text`` as one line (newlines folded), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(" ".join(text.split("\n")) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------- helpers
def _spawn(store: RunStore, run: RunRecord, max_concurrent: int) -> subprocess.Popen:
    run_dir = store.run_dir(run.id)
    run_dir.mkdir(parents=True, exist_ok=True)
    env = _child_env(store)
    env["METAREC_MAX_WORKERS"] = str(max_concurrent)
    command = [sys.executable, "-m", "metarec_core", "-v", "worker", run.id]
    try:
        with open(run_dir / WORKER_LOG, "ab") as log:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=_PACKAGE_ROOT,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    except OSError as exc:
        store.finish(run.id, "failed", error=f"could not start the worker process: {exc}")
        raise StoreError(f"run '{run.id}': could not start the worker process: {exc}") from exc
    store.set_worker(run.id, pid=process.pid)
    with _children_lock:
        _children[run.id] = process
    logger.info("started worker %d for run %s", process.pid, run.id)
    return process


def _child_env(store: RunStore) -> dict[str, str]:
    """Environment of a background process: this store, and this checkout's package importable."""
    env = dict(os.environ)
    env["METAREC_HOME"] = str(store.home.resolve())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _reap_children() -> None:
    """Collect exit codes of finished workers this process started (no zombies left behind)."""
    with _children_lock:
        for run_id, process in list(_children.items()):
            if process.poll() is not None:
                del _children[run_id]


def _limit_torch_threads() -> None:
    """Share the CPU cores between concurrent workers unless the user set thread counts."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    import torch

    workers = default_max_concurrent()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _install_stop_handlers(stop: threading.Event, signals: list[str]) -> Callable[[], None]:
    """SIGTERM / SIGINT ask the run to stop (a second SIGINT interrupts at once)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if stop.is_set() and signum == signal.SIGINT and signals:
            raise KeyboardInterrupt
        signals.append(name)
        stop.set()
        logger.warning("received %s; stopping after the current step", name)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for s, h in previous.items():
            signal.signal(s, h)

    return restore

