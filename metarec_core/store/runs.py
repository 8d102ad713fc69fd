"""The run registry: runs, the jobs that work on them (training and evaluation), and what a run's folder holds.

Every run has one ``train`` job, created with it and queued; a completed run
may also have an ``evaluate`` job (the latest evaluation). Both kinds go
through the same life cycle and the same calls: queued → claimed (running,
with the worker's PID and host) → heartbeats → finished (``completed``,
``failed`` or ``cancelled``); a cancel request is a flag the worker polls, a
dead worker is found by its PID or its heartbeat (:mod:`metarec_core.jobs`).
A :class:`RunRecord` shows a run with its training job's state.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import shutil
import socket
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from metarec_core.configs import config_to_dict, flatten_settings
from metarec_core.store.database import Database, StoreError, check_id, check_name, one_line
from metarec_core.store.datasets import split_dataset_ref
from metarec_core.store.metrics import MetricsReader

logger = logging.getLogger(__name__)

#: Run and job statuses, in life-cycle order.
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("completed", "failed", "cancelled")
#: Kinds of job: a run's training, and the evaluation of a completed run.
JOB_KINDS = ("train", "evaluate")
#: Artifacts a completed (or cancelled) run directory is expected to hold.
EXPECTED_ARTIFACTS = ("config.json", "model.json", "weights.safetensors", "context.safetensors", "metrics.jsonl")
#: Seconds marking a dead worker's job failed waits for another writer (it is retried on the next look).
STALE_WRITE_WAIT = 2.0
#: The run's own record in its folder (name, config, dataset, creation time), from which ``runs recover`` rebuilds it.
RUN_RECORD_FILE = "run.json"

_RUN_SELECT = (
    "SELECT r.id, r.name, j.status, r.config, r.dataset_ref, r.dataset_fingerprint, r.device, j.pid, j.host, "
    "j.heartbeat, j.progress, r.created, j.started, j.finished, j.error, j.cancel_requested, r.sweep_id "
    "FROM runs r JOIN jobs j ON j.run_id = r.id AND j.kind = 'train'"
)


@dataclass(frozen=True)
class WorkState:
    """Where a job stands and the process working on it: the part a run's training and an evaluation share.

    Attributes
    ----------
    status
        One of :data:`RUN_STATUSES`.
    pid, host, heartbeat, progress
        The worker process, its host, its last sign of life (epoch seconds) and latest progress
        (phase, epoch, step, total_steps, elapsed, eta).
    created, started, finished
        Epoch seconds.
    error
        One-line reason of a failure (or of a stop by signal).
    cancel_requested
        True once someone asked the job to stop.
    """

    status: str
    pid: int | None
    host: str | None
    heartbeat: float | None
    progress: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None
    error: str | None
    cancel_requested: bool

    @property
    def is_active(self) -> bool:
        """True while queued or running."""
        return self.status in ACTIVE_STATUSES

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunRecord(WorkState):
    """One run with the state of its training job (the :class:`WorkState` fields).

    Attributes
    ----------
    id, name
        Generated ID and display name.
    config
        The training config as a JSON-ready dict.
    dataset_ref
        ``builtin:<name>`` or ``stored:<dataset_id>``.
    dataset_fingerprint
        Fingerprint of the dataset the run was (or will be) trained on, once known.
    device
        Device the worker trains on (``cpu``, ``cuda``), once known.
    sweep_id
        The sweep the run is a trial of (None for a run of its own).
    """

    id: str
    name: str
    config: dict[str, Any]
    dataset_ref: str
    dataset_fingerprint: str | None
    device: str | None
    sweep_id: str | None = None


@dataclass(frozen=True)
class JobRecord(WorkState):
    """One job: a run's training or its evaluation (the :class:`WorkState` fields) and what it was asked to do.

    Attributes
    ----------
    run_id, kind
        The run and one of :data:`JOB_KINDS`.
    params
        What the job was asked to do beyond the run's config (an evaluation's ``shots``).
    """

    run_id: str
    kind: str
    params: dict[str, Any]


@dataclass(frozen=True)
class RunComparison:
    """Side-by-side view of runs.

    Attributes
    ----------
    params
        Settings that differ between the runs: one row per (flattened, dotted)
        config key plus ``dataset``, one column per run ID.
    metrics
        Final metrics: one row per run ID, columns ``name``, ``status`` and one per metric.
    """

    params: pd.DataFrame
    metrics: pd.DataFrame


class RunRegistry(Database):
    """Runs, their jobs and their run folders (mixed into :class:`~metarec_core.store.RunStore`)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self._metrics = MetricsReader()
        super().__init__(home)

    # ------------------------------------------------------------------ runs
    def run_dir(self, run_id: str) -> Path:
        """Artifact directory of a run (the path; it is created with the run)."""
        return self.runs_dir / check_id(run_id, "run")

    def create_run(
        self,
        config: Mapping[str, Any] | Any,
        dataset_ref: str,
        *,
        name: str | None = None,
        dataset_fingerprint: str | None = None,
    ) -> str:
        """Add a run with a queued training job and create its artifact directory.

        Parameters
        ----------
        config
            The training config (a config dataclass or its JSON-ready dict).
        dataset_ref
            ``builtin:<name>`` or ``stored:<dataset_id>``; its form is checked here,
            a built-in name by :func:`metarec_core.catalogue.parse_dataset_ref`.
        name
            Display name; default the dataset name and the time.
        dataset_fingerprint
            Fingerprint of the dataset, if known now (filled in by the worker otherwise).

        Returns
        -------
        str
            The generated run ID.
        """
        kind, value = split_dataset_ref(dataset_ref)
        config_dict = config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
        now = time.time()
        if name is None:
            row = self._read_one("SELECT name FROM datasets WHERE id = ?", (value,)) if kind == "stored" else None
            name = f"{row[0] if row else value} {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}"
        run_id = self.insert_run(name, config_dict, dataset_ref, dataset_fingerprint=dataset_fingerprint, created=now)
        logger.info("queued run %s (%s) on %s", run_id, name, dataset_ref)
        return run_id

    def insert_run(
        self,
        name: str,
        config: Mapping[str, Any],
        dataset_ref: str,
        *,
        status: str = "queued",
        dataset_fingerprint: str | None = None,
        device: str | None = None,
        progress: Mapping[str, Any] | None = None,
        created: float | None = None,
        started: float | None = None,
        finished: float | None = None,
        error: str | None = None,
        sweep_id: str | None = None,
        heartbeat: float | None = None,
    ) -> str:
        """Add a run record as given, with its training job in ``status``, and create its folder; returns the new ID.

        :meth:`create_run` adds a queued run; an import adds a finished one; a
        sweep adds each trial running (``sweep_id`` and a first ``heartbeat``,
        no worker PID: the sweep's driver beats for it).
        """
        split_dataset_ref(dataset_ref)
        if status not in RUN_STATUSES:
            raise StoreError(f"'{status}' is not a run status ({', '.join(RUN_STATUSES)})")
        name = check_name(name)
        created = time.time() if created is None else created
        for _ in range(10):
            run_id = secrets.token_hex(5)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, name, config, dataset_ref, dataset_fingerprint, device, created, sweep_id) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, name, json.dumps(dict(config), sort_keys=True), dataset_ref, dataset_fingerprint, device, created, sweep_id),
                    )
                    conn.execute(
                        "INSERT INTO jobs (run_id, kind, status, progress, created, started, finished, error, heartbeat, host) "
                        "VALUES (?, 'train', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, status, json.dumps(dict(progress)) if progress is not None else None, created, started, finished,
                         one_line(error) if error else None, heartbeat, socket.gethostname() if heartbeat is not None else None),
                    )
                    self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
                    write_run_record(self.run_dir(run_id), {
                        "id": run_id, "name": name, "config": dict(config), "dataset_ref": dataset_ref,
                        "dataset_fingerprint": dataset_fingerprint, "created": created,
                    })
            except sqlite3.IntegrityError:
                continue
            return run_id
        raise StoreError("could not generate a unique run ID; try again")

    def get_run(self, run_id: str) -> RunRecord:
        """One run; raises :class:`StoreError` if the store does not hold it."""
        row = self._read_one(_RUN_SELECT + " WHERE r.id = ?", (str(run_id),))
        if row is None:
            raise StoreError(f"no run '{run_id}' in the store at '{self.home}'; list runs with `python -m metarec_core runs list`")
        return _run_from_row(row)

    def find_run(self, id_or_prefix: str) -> RunRecord:
        """A run by its full ID or a unique prefix of at least 4 characters."""
        run_id, row = self._by_prefix("run", id_or_prefix, _RUN_SELECT + " WHERE r.id LIKE ?")
        return self.get_run(run_id) if row is None else _run_from_row(row)

    def list_runs(self, status: str | Sequence[str] | None = None, *, sweep_id: str | None = None) -> list[RunRecord]:
        """All runs, newest first, optionally only those with the given status(es) or the trials of one sweep."""
        clauses, params = [], []
        if status is not None:
            statuses = _check_statuses(status)
            clauses.append(f"j.status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        if sweep_id is not None:
            clauses.append("r.sweep_id = ?")
            params.append(sweep_id)
        sql = _RUN_SELECT + (" WHERE " + " AND ".join(clauses) if clauses else "")
        return [_run_from_row(r) for r in self._read(sql + " ORDER BY r.created DESC, r.rowid DESC", params)]

    def unrecorded_run_folders(self) -> list[str]:
        """Run folders under ``runs/`` the database has no record of (``runs recover`` adds them back)."""
        known = {row[0] for row in self._read("SELECT id FROM runs")}
        return [name for name in self.run_folders() if name not in known]

    def runs_using_dataset(self, dataset_id: str) -> list[RunRecord]:
        """Runs whose dataset reference is ``stored:<dataset_id>``, newest first."""
        rows = self._read(_RUN_SELECT + " WHERE r.dataset_ref = ? ORDER BY r.created DESC", (f"stored:{dataset_id}",))
        return [_run_from_row(r) for r in rows]

    def rename(self, run_id: str, name: str) -> None:
        """Give a run a new display name."""
        name = check_name(name)
        with self._write() as conn:
            if conn.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id)).rowcount == 0:
                raise StoreError(f"no run '{run_id}' to rename")
            record = read_run_record(self.run_dir(run_id))
            if record is not None:
                write_run_record(self.run_dir(run_id), {**record, "name": name})

    def delete(self, run_id: str) -> None:
        """Delete a run, its jobs and its artifact directory.

        Raises
        ------
        StoreError
            If the run is training or being evaluated (stop that first), or unknown.
        """
        run_dir = self.run_dir(run_id)
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"no run '{run_id}' to delete")
            busy = dict(conn.execute("SELECT kind, pid FROM jobs WHERE run_id = ? AND status = 'running'", (run_id,)).fetchall())
            if "train" in busy:
                raise StoreError(f"run '{run_id}' is running; cancel it first (`python -m metarec_core runs cancel {run_id}`)")
            if "evaluate" in busy:
                raise StoreError(f"run '{run_id}' is being evaluated (process {busy['evaluate']}); stop the evaluation first")
            conn.execute("DELETE FROM jobs WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        failures: list[str] = []
        if run_dir.exists():
            shutil.rmtree(run_dir, onerror=lambda _f, path, info: failures.append(f"{path}: {info[1]}"))
        if failures:
            raise StoreError(f"run '{run_id}' deleted, but some files could not be removed ({failures[0]}); remove '{run_dir}' by hand")
        logger.info("deleted run %s", run_id)

    # ------------------------------------------------------------------ jobs
    def get_job(self, run_id: str, *, kind: str = "train") -> JobRecord | None:
        """A run's job of one kind, or None if it has none."""
        row = self._read_one("SELECT * FROM jobs WHERE run_id = ? AND kind = ?", (str(run_id), _check_kind(kind)))
        return None if row is None else _job_from_row(row)

    def list_jobs(self, status: str | Sequence[str] | None = None, *, kind: str | None = None) -> list[JobRecord]:
        """Jobs, oldest first, optionally only those with the given status(es) or of one kind."""
        clauses, params = [], []
        if status is not None:
            statuses = _check_statuses(status)
            clauses.append(f"status IN ({', '.join('?' * len(statuses))})")
            params += statuses
        if kind is not None:
            clauses.append("kind = ?")
            params.append(_check_kind(kind))
        sql = "SELECT * FROM jobs" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY created, rowid"
        return [_job_from_row(r) for r in self._read(sql, params)]

    def queue_job(self, run_id: str, *, kind: str, params: Mapping[str, Any] | None = None) -> bool:
        """Queue a new job of a kind that can be repeated (an evaluation), replacing the run's finished one.

        Returns
        -------
        bool
            False if the run already has a queued or running job of that kind (nothing changed).
        """
        if _check_kind(kind) == "train":
            raise StoreError("a run's training job is queued with the run; create a new run to train again")
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"no run '{run_id}' in the store at '{self.home}'")
            row = conn.execute("SELECT status FROM jobs WHERE run_id = ? AND kind = ?", (run_id, kind)).fetchone()
            if row is not None and row[0] in ACTIVE_STATUSES:
                return False
            conn.execute("DELETE FROM jobs WHERE run_id = ? AND kind = ?", (run_id, kind))
            conn.execute(
                "INSERT INTO jobs (run_id, kind, status, params, created) VALUES (?, ?, 'queued', ?, ?)",
                (run_id, kind, json.dumps(dict(params or {}), sort_keys=True), time.time()),
            )
        return True

    def claim_job(self, run_id: str, *, kind: str = "train", pid: int | None = None) -> bool:
        """Mark a queued job running (atomically) for process ``pid`` on this host; False if it was not queued."""
        now = time.time()
        with self._write() as conn:
            return conn.execute(
                "UPDATE jobs SET status = 'running', started = ?, heartbeat = ?, host = ?, pid = ? "
                "WHERE run_id = ? AND kind = ? AND status = 'queued'",
                (now, now, socket.gethostname(), pid, run_id, _check_kind(kind)),
            ).rowcount == 1

    def claim_next(self, max_running: int) -> RunRecord | None:
        """Mark the oldest queued training job running if fewer than ``max_running`` runs are training.

        Counting and claiming happen in one transaction, so two dispatchers (two
        app sessions) never start more runs than allowed.
        """
        if self._read_one("SELECT 1 FROM jobs WHERE kind = 'train' AND status = 'queued' LIMIT 1") is None:
            return None  # nothing queued: no write lock taken (the app calls this on every poll)
        now = time.time()
        with self._write() as conn:
            running = conn.execute(  # a sweep's trials run on its Ray cluster, not in these worker slots
                "SELECT COUNT(*) FROM jobs WHERE kind = 'train' AND status = 'running' "
                "AND run_id NOT IN (SELECT id FROM runs WHERE sweep_id IS NOT NULL)"
            ).fetchone()[0]
            if running >= max_running:
                return None
            row = conn.execute(
                "SELECT run_id FROM jobs WHERE kind = 'train' AND status = 'queued' ORDER BY created, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = 'running', started = ?, heartbeat = ?, host = ?, pid = NULL WHERE run_id = ? AND kind = 'train'",
                (now, now, socket.gethostname(), row[0]),
            )
        return self.get_run(row[0])

    def set_worker(
        self, run_id: str, *, kind: str = "train", pid: int, device: str | None = None, dataset_fingerprint: str | None = None
    ) -> None:
        """Record the worker process of a running job (and, for training, once known, device and dataset fingerprint)."""
        with self._write() as conn:
            updated = conn.execute(
                "UPDATE jobs SET pid = ?, host = ?, heartbeat = ? WHERE run_id = ? AND kind = ? AND status = 'running'",
                (pid, socket.gethostname(), time.time(), run_id, _check_kind(kind)),
            ).rowcount
            if updated and (device is not None or dataset_fingerprint is not None):
                conn.execute(
                    "UPDATE runs SET device = COALESCE(?, device), dataset_fingerprint = COALESCE(?, dataset_fingerprint) WHERE id = ?",
                    (device, dataset_fingerprint, run_id),
                )

    def heartbeat(self, run_id: str, *, kind: str = "train", progress: Mapping[str, Any] | None = None) -> bool:
        """Record that a job's worker is alive (and its latest progress); False if the job is no longer running."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE jobs SET heartbeat = ?, progress = COALESCE(?, progress) WHERE run_id = ? AND kind = ? AND status = 'running'",
                (time.time(), json.dumps(dict(progress)) if progress is not None else None, run_id, _check_kind(kind)),
            ).rowcount == 1

    def finish(
        self,
        run_id: str,
        status: str,
        *,
        kind: str = "train",
        error: str | None = None,
        device: str | None = None,
        progress: Mapping[str, Any] | None = None,
    ) -> bool:
        """Move a running job to a final status (with its last progress, if given); False if it was not running any more."""
        if status not in FINISHED_STATUSES:
            raise StoreError(f"'{status}' is not a final status ({', '.join(FINISHED_STATUSES)})")
        with self._write() as conn:
            done = conn.execute(
                "UPDATE jobs SET status = ?, error = ?, finished = ?, progress = COALESCE(?, progress) "
                "WHERE run_id = ? AND kind = ? AND status = 'running'",
                (status, one_line(error) if error else None, time.time(),
                 json.dumps(dict(progress)) if progress is not None else None, run_id, _check_kind(kind)),
            ).rowcount == 1
            if done and device is not None:
                conn.execute("UPDATE runs SET device = ? WHERE id = ?", (device, run_id))
            return done

    def fail_if_stale(self, run_id: str, heartbeat: float | None, error: str, *, kind: str = "train") -> bool:
        """Mark a running job failed if its heartbeat is still ``heartbeat`` (compare-and-set).

        Waits at most :data:`STALE_WRITE_WAIT` seconds for another writer (listing
        calls it and must not hang on a busy store); :class:`StoreBusyError` after that.
        """
        with self._write(wait=STALE_WRITE_WAIT) as conn:
            return conn.execute(
                "UPDATE jobs SET status = 'failed', error = ?, finished = ? "
                "WHERE run_id = ? AND kind = ? AND status = 'running' AND heartbeat IS ?",
                (one_line(error), time.time(), run_id, _check_kind(kind), heartbeat),
            ).rowcount == 1

    def request_cancel(self, run_id: str, *, kind: str = "train") -> str:
        """Ask a job to stop.

        A queued job is cancelled at once; a running one gets its cancel flag set
        (its worker stops within a couple of seconds); a finished one is left as is.

        Returns
        -------
        str
            The job's status after the request.
        """
        with self._write() as conn:
            row = conn.execute("SELECT status FROM jobs WHERE run_id = ? AND kind = ?", (run_id, _check_kind(kind))).fetchone()
            if row is None:
                raise StoreError(f"no run '{run_id}' to cancel" if kind == "train" else f"run '{run_id}' has no {kind} job to cancel")
            status = row[0]
            if status == "queued":
                conn.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, finished = ? WHERE run_id = ? AND kind = ?",
                    (time.time(), run_id, kind),
                )
                return "cancelled"
            if status == "running":
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE run_id = ? AND kind = ?", (run_id, kind))
            return status

    def is_cancel_requested(self, run_id: str, *, kind: str = "train") -> bool:
        """True once :meth:`request_cancel` was called for the job (or the job is gone)."""
        row = self._read_one("SELECT cancel_requested FROM jobs WHERE run_id = ? AND kind = ?", (run_id, _check_kind(kind)))
        return row is None or bool(row[0])

    # ------------------------------------------------------------------ metrics and artifacts
    def metrics_frame(self, run_id: str, *, phases: Sequence[str] | None = None) -> pd.DataFrame:
        """All metric values of a run (optionally of some phases only), in write order, from its ``metrics.jsonl``.

        Columns ``phase``, ``epoch`` (int64), ``step`` (int64), ``key``,
        ``value`` (float; NaN where the metric was undefined) and ``time``.
        Incomplete lines are left out (see :meth:`check_run`).
        """
        return self._metrics.frame(self.run_dir(run_id), phases)

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """A run's final metrics: its ``final`` or ``done`` values if written, else its last validation values."""
        return self._metrics.final(self.run_dir(run_id))

    def check_run(self, run_id: str) -> tuple[str, ...]:
        """Problems with a run's stored data and artifacts, as sentences (empty when all is well).

        Reports a missing artifact directory, expected artifacts missing, empty
        or damaged (:func:`metarec_core.artifacts.check_run_files`: headers and
        JSON only), and lines of ``metrics.jsonl`` that are incomplete (e.g.
        half-written by a killed worker) or hold values that are not numbers.
        None of these stop listing, showing or exporting the run.
        """
        run = self.get_run(run_id)
        run_dir = self.run_dir(run_id)
        if not run_dir.is_dir():
            return (f"artifact directory '{run_dir}' is missing",)
        problems: list[str] = []
        if run.status in ("completed", "cancelled"):
            from metarec_core.artifacts import check_run_files  # here: torch loads only when a run is checked

            for name in EXPECTED_ARTIFACTS:
                path = run_dir / name
                if not path.is_file():
                    problems.append(f"artifact '{name}' is missing from '{run_dir}'")
                elif path.stat().st_size == 0:
                    problems.append(f"artifact '{name}' in '{run_dir}' is empty")
            problems.extend(check_run_files(run_dir))
        problems.extend(self._metrics.log(run_dir).problems)
        return tuple(problems)

    def compare(self, run_ids: Sequence[str]) -> RunComparison:
        """Settings that differ between runs and their final metrics side by side."""
        if not run_ids:
            raise StoreError("compare needs at least one run ID")
        runs = [self.get_run(r) for r in run_ids]
        flat = {r.id: {"dataset": r.dataset_ref, **flatten_settings(r.config)} for r in runs}
        keys = sorted(set().union(*(f.keys() for f in flat.values())))
        missing = object()
        differing = [k for k in keys if len({json.dumps(flat[r.id].get(k, missing), sort_keys=True, default=str) for r in runs}) > 1]
        params = pd.DataFrame(
            {r.id: [flat[r.id].get(k) for k in differing] for r in runs}, index=pd.Index(differing, name="setting"), dtype=object
        )
        finals = {r.id: self.final_metrics(r.id) for r in runs}
        metric_keys = sorted(set().union(*(f.keys() for f in finals.values())))
        metrics = pd.DataFrame(
            [{"name": r.name, "status": r.status, **{k: finals[r.id].get(k, np.nan) for k in metric_keys}} for r in runs],
            index=pd.Index([r.id for r in runs], name="run"),
        )
        return RunComparison(params=params, metrics=metrics)


def write_run_record(run_dir: Path, record: Mapping[str, Any]) -> None:
    """Write a run's own record (``run.json``) atomically; a failure is logged, the database stays the source of truth."""
    path = run_dir / RUN_RECORD_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(dict(record), sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(path)
    except (OSError, TypeError, ValueError) as exc:
        logger.warning("could not write %s: %s", path, exc)


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """A run's ``run.json`` as a dict, or None when it is missing or not a JSON object."""
    try:
        record = json.loads((run_dir / RUN_RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _check_kind(kind: str) -> str:
    if kind not in JOB_KINDS:
        raise StoreError(f"unknown job kind '{kind}'; kinds are {', '.join(JOB_KINDS)}")
    return kind


def _check_statuses(status: str | Sequence[str]) -> tuple[str, ...]:
    statuses = (status,) if isinstance(status, str) else tuple(status)
    bad = [s for s in statuses if s not in RUN_STATUSES]
    if bad:
        raise StoreError(f"unknown run status {bad}; statuses are {', '.join(RUN_STATUSES)}")
    return statuses


def _json_or(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return default


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    (run_id, name, status, config, dataset_ref, fingerprint, device, pid, host, heartbeat, progress,
     created, started, finished, error, cancel_requested, sweep_id) = row
    return RunRecord(
        id=run_id, name=name, status=status, config=_json_or(config, {}), dataset_ref=dataset_ref,
        dataset_fingerprint=fingerprint, device=device, pid=pid, host=host, heartbeat=heartbeat,
        progress=_json_or(progress, None), created=created, started=started, finished=finished, error=error,
        cancel_requested=bool(cancel_requested), sweep_id=sweep_id,
    )


def _job_from_row(row: Sequence[Any]) -> JobRecord:
    (run_id, kind, status, params, pid, host, heartbeat, progress, created, started, finished, error, cancel_requested) = row
    return JobRecord(
        run_id=run_id, kind=kind, status=status, params=_json_or(params, {}), pid=pid, host=host, heartbeat=heartbeat,
        progress=_json_or(progress, None), created=created, started=started, finished=finished, error=error,
        cancel_requested=bool(cancel_requested),
    )
