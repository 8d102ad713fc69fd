"""The run store: runs, their metrics and artifacts, and saved datasets, in one SQLite home.

Layout of a store home (``METAREC_HOME``, default the user's data directory +
``metarec``)::

    store.sqlite3            runs, metrics and datasets tables (WAL mode)
    runs/<run_id>/           one artifact directory per run (weights, ID maps, logs)
    datasets/<dataset_id>/   Parquet tables and meta.json of a saved dataset

Every thread and process opens its own connection; writes are short
``BEGIN IMMEDIATE`` transactions, so a worker writes while the app reads.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import sqlite3
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from metarec_core.builtin import BUILTIN_DATASETS, load_builtin
from metarec_core.configs import config_to_dict
from metarec_core.dataset import Dataset
from metarec_core.errors import DataError, MetarecError
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap

logger = logging.getLogger(__name__)

#: Version of the SQLite schema (``PRAGMA user_version``).
SCHEMA_VERSION = 1
#: Run statuses, in life-cycle order.
RUN_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("completed", "failed", "cancelled")
#: Artifacts a completed (or cancelled) run directory is expected to hold.
EXPECTED_ARTIFACTS = ("config.json", "model.json", "weights.safetensors", "context.safetensors", "metrics.jsonl")
#: Largest total uncompressed size :meth:`RunStore.import_run` accepts.
MAX_IMPORT_BYTES = 4 * 1024**3
METRIC_COLUMNS = ("phase", "epoch", "step", "key", "value", "time")

#: SQL condition of a complete metric row (a worker killed mid-write or a damaged import leaves others).
_VALID_METRIC_ROW = (
    "typeof(value) IN ('real', 'integer', 'null') AND typeof(epoch) = 'integer' "
    "AND typeof(step) = 'integer' AND typeof(time) IN ('real', 'integer', 'null')"
)
_ID_PATTERN = re.compile(r"^[0-9a-f]{10}$")
_EXPORT_FORMAT = "metarec-run"
_DATASET_FORMAT = "metarec-dataset"
_DATASET_FILES = ("ratings.parquet", "user_table.parquet", "item_table.parquet", "meta.json")

_SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    config TEXT NOT NULL,
    dataset_ref TEXT NOT NULL,
    dataset_fingerprint TEXT,
    device TEXT,
    pid INTEGER,
    host TEXT,
    heartbeat REAL,
    progress TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_by_status ON runs (status, created);
CREATE TABLE metrics (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    phase TEXT NOT NULL,
    epoch INTEGER,
    step INTEGER,
    key TEXT NOT NULL,
    value REAL,
    time REAL
);
CREATE INDEX metrics_by_run ON metrics (run_id);
CREATE TABLE datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    fingerprint TEXT NOT NULL UNIQUE,
    created REAL NOT NULL,
    n_users INTEGER NOT NULL,
    n_items INTEGER NOT NULL,
    n_ratings INTEGER NOT NULL,
    implicit INTEGER NOT NULL
);
"""


class StoreError(MetarecError):
    """A run or dataset the store does not hold, an action its state forbids, or an unreadable store."""


class MetricPoint(NamedTuple):
    """One metric value of a run: a loss term or a validation metric at one step."""

    phase: str
    epoch: int
    step: int
    key: str
    value: float
    time: float


@dataclass(frozen=True)
class RunRecord:
    """One row of the runs table.

    Attributes
    ----------
    id, name, status
        Generated ID, display name, and one of :data:`RUN_STATUSES`.
    config
        The training config as a JSON-ready dict.
    dataset_ref
        ``builtin:<name>`` or ``stored:<dataset_id>``.
    dataset_fingerprint
        Fingerprint of the dataset the run was (or will be) trained on, once known.
    device
        Device the worker trains on (``cpu``, ``cuda``), once known.
    pid, host
        Worker process ID and host name while (or after) it runs.
    heartbeat
        Last time (epoch seconds) the worker reported it was alive.
    progress
        The worker's latest progress (phase, epoch, step, total_steps, elapsed, eta).
    created, started, finished
        Epoch seconds.
    error
        One-line reason of a failure (or of a stop by signal).
    cancel_requested
        True once someone asked the run to stop.
    """

    id: str
    name: str
    status: str
    config: dict[str, Any]
    dataset_ref: str
    dataset_fingerprint: str | None
    device: str | None
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
class DatasetRecord:
    """One saved dataset: its generated ID, name, fingerprint and size."""

    id: str
    name: str
    fingerprint: str
    created: float
    n_users: int
    n_items: int
    n_ratings: int
    implicit: bool

    @property
    def ref(self) -> str:
        """The dataset reference runs use (``stored:<id>``)."""
        return f"stored:{self.id}"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)


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


@dataclass(frozen=True)
class ImportedRun:
    """Result of :meth:`RunStore.import_run`: the new run's ID and what was wrong but not fatal."""

    run_id: str
    warnings: tuple[str, ...] = ()


def default_home() -> Path:
    """The store home: ``METAREC_HOME`` if set, else the user's data directory + ``metarec``."""
    env = os.environ.get("METAREC_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir()) / "metarec"


def parse_dataset_ref(ref: str) -> tuple[str, str]:
    """Split and check a dataset reference.

    Parameters
    ----------
    ref
        ``builtin:<name>`` with a name of :data:`metarec_core.builtin.BUILTIN_DATASETS`
        (``movielens-100k``, ``synthetic``, ...) or ``stored:<dataset_id>``.

    Returns
    -------
    tuple of str
        ``("builtin", name)`` or ``("stored", dataset_id)``.

    Raises
    ------
    StoreError
        If the reference is malformed or names an unknown built-in dataset.
    """
    kind, _, value = str(ref).partition(":")
    if kind == "builtin" and value in BUILTIN_DATASETS:
        return kind, value
    if kind == "stored" and _ID_PATTERN.match(value):
        return kind, value
    known = ", ".join(f"builtin:{b}" for b in BUILTIN_DATASETS)
    raise StoreError(f"dataset reference '{ref}' is not valid; use one of {known} or stored:<dataset id>")


class RunStore:
    """Runs, metrics, artifacts and saved datasets under one home directory.

    Parameters
    ----------
    home
        Directory of the store; created if missing. Default :func:`default_home`.

    Examples
    --------
    >>> store = RunStore(tmp_path)                                   # doctest: +SKIP
    >>> run_id = store.create_run({"num_epochs": 1}, "builtin:synthetic")  # doctest: +SKIP
    >>> store.get_run(run_id).status                                 # doctest: +SKIP
    'queued'
    """

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home).expanduser() if home is not None else default_home()
        self.runs_dir = self.home / "runs"
        self.datasets_dir = self.home / "datasets"
        self.db_path = self.home / "store.sqlite3"
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            self.datasets_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the run store at '{self.home}': {exc}; set METAREC_HOME to a writable directory") from exc
        self._local = threading.local()
        self._init_schema()

    def __repr__(self) -> str:
        return f"RunStore('{self.home}')"

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=30.0, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the run store database '{self.db_path}': {exc}; "
                "if it is damaged, move it away (runs/ and datasets/ keep the artifacts)"
            ) from exc
        return conn

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "conn", None) is None or local.pid != os.getpid():
            local.conn = self._connect()
            local.pid = os.getpid()
        return local.conn

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            conn.close()
        self._local.conn = None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def _init_schema(self) -> None:
        try:
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version > SCHEMA_VERSION:
                    raise StoreError(
                        f"the run store '{self.db_path}' was written by a newer metarec (schema {version}, "
                        f"this one reads {SCHEMA_VERSION}); upgrade metarec or set METAREC_HOME elsewhere"
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"the run store database '{self.db_path}' cannot be read: {exc}; "
                "if it is damaged, move it away (runs/ and datasets/ keep the artifacts)"
            ) from exc

    # ------------------------------------------------------------------ runs
    def run_dir(self, run_id: str) -> Path:
        """Artifact directory of a run (the path; it is created with the run)."""
        return self.runs_dir / _check_id(run_id, "run")

    def create_run(
        self,
        config: Mapping[str, Any] | Any,
        dataset_ref: str,
        *,
        name: str | None = None,
        dataset_fingerprint: str | None = None,
    ) -> str:
        """Add a queued run and create its artifact directory.

        Parameters
        ----------
        config
            The training config (a config dataclass or its JSON-ready dict).
        dataset_ref
            See :func:`parse_dataset_ref`.
        name
            Display name; default the dataset name and the time.
        dataset_fingerprint
            Fingerprint of the dataset, if known now (filled in by the worker otherwise).

        Returns
        -------
        str
            The generated run ID.
        """
        kind, value = parse_dataset_ref(dataset_ref)
        config_dict = config_to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
        config_json = json.dumps(config_dict, sort_keys=True)
        now = time.time()
        if name is None:
            name = f"{value if kind == 'builtin' else self._dataset_name(value)} {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}"
        name = _check_name(name)
        for _ in range(10):
            run_id = secrets.token_hex(5)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, name, status, config, dataset_ref, dataset_fingerprint, created) "
                        "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                        (run_id, name, config_json, dataset_ref, dataset_fingerprint, now),
                    )
                    self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
            except sqlite3.IntegrityError:
                continue
            logger.info("queued run %s (%s) on %s", run_id, name, dataset_ref)
            return run_id
        raise StoreError("could not generate a unique run ID; try again")

    def get_run(self, run_id: str) -> RunRecord:
        """One run; raises :class:`StoreError` if the store does not hold it."""
        row = self._conn().execute("SELECT * FROM runs WHERE id = ?", (str(run_id),)).fetchone()
        if row is None:
            raise StoreError(f"no run '{run_id}' in the store at '{self.home}'; list runs with `python -m metarec_core runs list`")
        return _run_from_row(row)

    def find_run(self, id_or_prefix: str) -> RunRecord:
        """A run by its full ID or a unique prefix of at least 4 characters."""
        text = str(id_or_prefix).strip().lower()
        if _ID_PATTERN.match(text):
            return self.get_run(text)
        if len(text) < 4 or not re.fullmatch(r"[0-9a-f]+", text):
            raise StoreError(f"'{id_or_prefix}' is not a run ID; give the ID or its first 4+ characters")
        rows = self._conn().execute("SELECT * FROM runs WHERE id LIKE ?", (text + "%",)).fetchall()
        if not rows:
            raise StoreError(f"no run ID starts with '{text}' in the store at '{self.home}'")
        if len(rows) > 1:
            raise StoreError(f"'{text}' matches {len(rows)} runs ({', '.join(r[0] for r in rows[:5])}); give more characters")
        return _run_from_row(rows[0])

    def list_runs(self, status: str | Sequence[str] | None = None) -> list[RunRecord]:
        """All runs, newest first, optionally only those with the given status(es)."""
        sql = "SELECT * FROM runs"
        params: tuple = ()
        if status is not None:
            statuses = (status,) if isinstance(status, str) else tuple(status)
            bad = [s for s in statuses if s not in RUN_STATUSES]
            if bad:
                raise StoreError(f"unknown run status {bad}; statuses are {', '.join(RUN_STATUSES)}")
            sql += f" WHERE status IN ({', '.join('?' * len(statuses))})"
            params = statuses
        sql += " ORDER BY created DESC, rowid DESC"
        return [_run_from_row(r) for r in self._conn().execute(sql, params).fetchall()]

    def rename(self, run_id: str, name: str) -> None:
        """Give a run a new display name."""
        name = _check_name(name)
        with self._write() as conn:
            if conn.execute("UPDATE runs SET name = ? WHERE id = ?", (name, run_id)).rowcount == 0:
                raise StoreError(f"no run '{run_id}' to rename")

    def delete(self, run_id: str) -> None:
        """Delete a run, its metrics and its artifact directory.

        Raises
        ------
        StoreError
            If the run is running (cancel it first) or unknown.
        """
        run_dir = self.run_dir(run_id)
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no run '{run_id}' to delete")
            if row[0] == "running":
                raise StoreError(f"run '{run_id}' is running; cancel it first (`python -m metarec_core runs cancel {run_id}`)")
            conn.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
            conn.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        failures: list[str] = []
        if run_dir.exists():
            shutil.rmtree(run_dir, onerror=lambda _f, path, info: failures.append(f"{path}: {info[1]}"))
        if failures:
            raise StoreError(f"run '{run_id}' deleted, but some files could not be removed ({failures[0]}); remove '{run_dir}' by hand")
        logger.info("deleted run %s", run_id)

    def request_cancel(self, run_id: str) -> str:
        """Ask a run to stop.

        A queued run is cancelled at once; a running run gets its cancel flag set
        (its worker stops within a couple of seconds); a finished run is left as is.

        Returns
        -------
        str
            The run's status after the request.
        """
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StoreError(f"no run '{run_id}' to cancel")
            status = row[0]
            if status == "queued":
                conn.execute(
                    "UPDATE runs SET status = 'cancelled', cancel_requested = 1, finished = ? WHERE id = ?", (now, run_id)
                )
                return "cancelled"
            if status == "running":
                conn.execute("UPDATE runs SET cancel_requested = 1 WHERE id = ?", (run_id,))
            return status

    def is_cancel_requested(self, run_id: str) -> bool:
        """True once :meth:`request_cancel` was called for the run (or the run is gone)."""
        row = self._conn().execute("SELECT cancel_requested FROM runs WHERE id = ?", (run_id,)).fetchone()
        return row is None or bool(row[0])

    # ------------------------------------------------------------------ worker life cycle
    def claim_run(self, run_id: str, *, pid: int | None = None) -> bool:
        """Mark a queued run running (atomically); False if it was not queued."""
        now = time.time()
        with self._write() as conn:
            return conn.execute(
                "UPDATE runs SET status = 'running', started = ?, heartbeat = ?, host = ?, pid = ? "
                "WHERE id = ? AND status = 'queued'",
                (now, now, socket.gethostname(), pid, run_id),
            ).rowcount == 1

    def claim_next(self, max_running: int) -> RunRecord | None:
        """Mark the oldest queued run running if fewer than ``max_running`` runs are running.

        Counting and claiming happen in one transaction, so two dispatchers (two
        app sessions) never start more runs than allowed.
        """
        if self._conn().execute("SELECT 1 FROM runs WHERE status = 'queued' LIMIT 1").fetchone() is None:
            return None  # nothing queued: no write lock taken (the app calls this on every poll)
        now = time.time()
        with self._write() as conn:
            running = conn.execute("SELECT COUNT(*) FROM runs WHERE status = 'running'").fetchone()[0]
            if running >= max_running:
                return None
            row = conn.execute(
                "SELECT id FROM runs WHERE status = 'queued' ORDER BY created, rowid LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE runs SET status = 'running', started = ?, heartbeat = ?, host = ?, pid = NULL WHERE id = ?",
                (now, now, socket.gethostname(), row[0]),
            )
        return self.get_run(row[0])

    def set_worker(
        self, run_id: str, *, pid: int, device: str | None = None, dataset_fingerprint: str | None = None
    ) -> None:
        """Record the worker process (and, once known, device and dataset fingerprint) of a running run."""
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET pid = ?, host = ?, heartbeat = ?, device = COALESCE(?, device), "
                "dataset_fingerprint = COALESCE(?, dataset_fingerprint) WHERE id = ? AND status = 'running'",
                (pid, socket.gethostname(), time.time(), device, dataset_fingerprint, run_id),
            )

    def heartbeat(self, run_id: str, *, progress: Mapping[str, Any] | None = None) -> bool:
        """Record that the worker is alive (and its latest progress); False if the run is no longer running."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE runs SET heartbeat = ?, progress = COALESCE(?, progress) WHERE id = ? AND status = 'running'",
                (time.time(), json.dumps(dict(progress)) if progress is not None else None, run_id),
            ).rowcount == 1

    def finish(self, run_id: str, status: str, *, error: str | None = None, device: str | None = None) -> bool:
        """Move a running run to a final status; False if it was not running any more."""
        if status not in FINISHED_STATUSES:
            raise StoreError(f"'{status}' is not a final run status ({', '.join(FINISHED_STATUSES)})")
        with self._write() as conn:
            return conn.execute(
                "UPDATE runs SET status = ?, error = ?, finished = ?, device = COALESCE(?, device) "
                "WHERE id = ? AND status = 'running'",
                (status, _one_line(error) if error else None, time.time(), device, run_id),
            ).rowcount == 1

    def fail_if_stale(self, run_id: str, heartbeat: float | None, error: str) -> bool:
        """Mark a running run failed if its heartbeat is still ``heartbeat`` (compare-and-set)."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE runs SET status = 'failed', error = ?, finished = ? "
                "WHERE id = ? AND status = 'running' AND heartbeat IS ?",
                (_one_line(error), time.time(), run_id, heartbeat),
            ).rowcount == 1

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, run_id: str, points: Iterable[MetricPoint | Sequence[Any]]) -> int:
        """Append metric points to a run in one transaction; returns how many were written."""
        rows = [tuple(p) for p in points]
        if not rows:
            return 0
        for row in rows:
            if len(row) != len(METRIC_COLUMNS):
                raise StoreError(f"a metric point has {len(row)} fields; expected {', '.join(METRIC_COLUMNS)}")
        try:
            with self._write() as conn:
                conn.executemany(
                    "INSERT INTO metrics (run_id, phase, epoch, step, key, value, time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(run_id, str(p), int(e), int(s), str(k), _float_or_none(v), float(t)) for p, e, s, k, v, t in rows],
                )
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"cannot add metrics to run '{run_id}': the store does not hold it ({exc})") from exc
        return len(rows)

    def metrics_frame(self, run_id: str, *, phases: Sequence[str] | None = None) -> pd.DataFrame:
        """All metric points of a run (optionally of some phases only), in write order.

        Columns ``phase``, ``epoch`` (int64), ``step`` (int64), ``key``,
        ``value`` (float; NaN where the metric was undefined) and ``time``.
        Incomplete rows are left out (see :meth:`check_run`).
        """
        sql = f"SELECT phase, epoch, step, key, value, time FROM metrics WHERE run_id = ? AND {_VALID_METRIC_ROW}"
        params: list[Any] = [run_id]
        if phases is not None:
            sql += f" AND phase IN ({', '.join('?' * len(phases))})"
            params += list(phases)
        rows = self._conn().execute(sql + " ORDER BY rowid", params).fetchall()
        frame = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
        return frame.astype({"phase": str, "epoch": "int64", "step": "int64", "key": str, "value": "float64", "time": "float64"})

    def final_metrics(self, run_id: str) -> dict[str, float]:
        """A run's final metrics: its ``final`` or ``done`` points if written, else its last validation values."""
        conn = self._conn()
        for phase in ("final", "done", "validate"):
            rows = conn.execute(
                f"SELECT key, value FROM metrics WHERE run_id = ? AND phase = ? AND {_VALID_METRIC_ROW} "
                "AND value IS NOT NULL ORDER BY rowid",
                (run_id, phase),
            ).fetchall()
            if rows:
                return {str(k): float(v) for k, v in rows}
        return {}

    def check_run(self, run_id: str) -> tuple[str, ...]:
        """Problems with a run's stored data and artifacts, as sentences (empty when all is well).

        Reports a missing artifact directory, expected artifacts missing or empty,
        unreadable lines of ``metrics.jsonl`` (e.g. half-written by a killed
        worker) and metric rows without a usable value. None of these stop
        listing, showing or exporting the run.
        """
        run = self.get_run(run_id)
        problems: list[str] = []
        bad = self._conn().execute(
            f"SELECT COUNT(*), MIN(rowid) FROM metrics WHERE run_id = ? AND NOT ({_VALID_METRIC_ROW})",
            (run_id,),
        ).fetchone()
        if bad[0]:
            problems.append(f"{bad[0]} metric row(s) in the store are incomplete or not numbers (first at row {bad[1]}); they are left out")
        run_dir = self.run_dir(run_id)
        if not run_dir.is_dir():
            problems.append(f"artifact directory '{run_dir}' is missing")
            return tuple(problems)
        if run.status in ("completed", "cancelled"):
            for name in EXPECTED_ARTIFACTS:
                path = run_dir / name
                if not path.is_file():
                    problems.append(f"artifact '{name}' is missing from '{run_dir}'")
                elif path.stat().st_size == 0:
                    problems.append(f"artifact '{name}' in '{run_dir}' is empty")
        jsonl = run_dir / "metrics.jsonl"
        if jsonl.is_file():
            problems.extend(check_jsonl(jsonl))
        return tuple(problems)

    def compare(self, run_ids: Sequence[str]) -> RunComparison:
        """Settings that differ between runs and their final metrics side by side."""
        if not run_ids:
            raise StoreError("compare needs at least one run ID")
        runs = [self.get_run(r) for r in run_ids]
        flat = {r.id: {"dataset": r.dataset_ref, **_flatten(r.config)} for r in runs}
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

    # ------------------------------------------------------------------ export / import
    def export_run(self, run_id: str, to_zip: str | Path, *, include_dataset: bool = True) -> Path:
        """Write a finished run to a zip file.

        The zip holds ``run.json`` (the run's record and any problems found),
        ``config.json``, ``metrics.csv``, ``artifacts/...`` (every file of the run
        directory: weights, ID maps, logs) and, for a run on a saved dataset,
        ``dataset/...`` so it can be reproduced elsewhere.

        Returns
        -------
        Path
            The zip file written.
        """
        run = self.get_run(run_id)
        if run.is_active:
            raise StoreError(f"run '{run_id}' is {run.status}; export it once it has finished (or cancel it)")
        problems = self.check_run(run_id)
        target = Path(to_zip).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        dataset_id = None
        kind, value = parse_dataset_ref(run.dataset_ref)
        if include_dataset and kind == "stored":
            if (self.datasets_dir / value / "meta.json").is_file():
                dataset_id = value
            else:
                problems = problems + (f"saved dataset '{value}' is missing; exported without it",)
        manifest = {
            "format": _EXPORT_FORMAT,
            "version": 1,
            "run": {k: v for k, v in run.to_json().items() if k not in ("pid", "host", "cancel_requested", "config")},
            "dataset_included": dataset_id is not None,
            "problems": list(problems),
        }
        fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".zip", dir=target.parent)
        os.close(fd)
        try:
            with zipfile.ZipFile(tmp_name, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("run.json", json.dumps(manifest, indent=2, sort_keys=True))
                zf.writestr("config.json", json.dumps(run.config, indent=2, sort_keys=True))
                zf.writestr("metrics.csv", self.metrics_frame(run_id).to_csv(index=False))
                run_dir = self.run_dir(run_id)
                if run_dir.is_dir():
                    for path in sorted(run_dir.rglob("*")):
                        if path.is_file() and not path.is_symlink():
                            zf.write(path, "artifacts/" + path.relative_to(run_dir).as_posix())
                if dataset_id is not None:
                    for name in _DATASET_FILES:
                        zf.write(self.datasets_dir / dataset_id / name, f"dataset/{name}")
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        for problem in problems:
            logger.warning("run %s exported with a problem: %s", run_id, problem)
        return target

    def import_run(self, zip_path: str | Path, *, max_bytes: int = MAX_IMPORT_BYTES) -> ImportedRun:
        """Add a run exported by :meth:`export_run` under a new run ID.

        Member names are checked (no absolute paths, no ``..``, only the known
        top-level entries) and the total size is bounded; incomplete metric
        lines are skipped and reported.

        Raises
        ------
        DataError
            If the file is not a metarec run export or holds unsafe entries.
        """
        source = Path(zip_path).name
        try:
            zf = zipfile.ZipFile(zip_path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"not a readable zip file ({exc}); choose a file written by `runs export`", source=source) from exc
        warnings: list[str] = []
        with zf:
            members = _safe_members(zf, source, max_bytes)
            for required in ("run.json", "config.json"):
                if required not in members:
                    raise DataError(f"'{required}' is missing; this is not a metarec run export", source=source)
            manifest = _read_json_member(zf, members["run.json"], source)
            config = _read_json_member(zf, members["config.json"], source)
            if not isinstance(manifest, dict) or manifest.get("format") != _EXPORT_FORMAT or not isinstance(manifest.get("run"), dict):
                raise DataError("'run.json' is not a metarec run manifest", source=source)
            if not isinstance(config, dict):
                raise DataError("'config.json' must hold a JSON object of settings", source=source)
            meta = manifest["run"]
            status = meta.get("status")
            if status not in FINISHED_STATUSES:
                raise DataError(f"'run.json' has status '{status}'; only finished runs can be imported", source=source)
            warnings.extend(f"at export: {p}" for p in manifest.get("problems", []) if isinstance(p, str))
            dataset_ref = str(meta.get("dataset_ref", ""))
            try:
                parse_dataset_ref(dataset_ref)
            except StoreError as exc:
                raise DataError(f"'run.json': {exc}", source=source) from exc
            if any(n.startswith("dataset/") for n in members):
                dataset_ref = "stored:" + self._import_dataset(zf, members, source)
            elif dataset_ref.startswith("stored:") and not (self.datasets_dir / dataset_ref[7:] / "meta.json").is_file():
                warnings.append(f"its dataset ({dataset_ref}) was not exported and is not in this store; the run cannot be re-trained here")
            points: list[MetricPoint] = []
            if "metrics.csv" in members:
                points, bad = _read_metrics_csv(zf.read(members["metrics.csv"]).decode("utf-8", "replace"))
                warnings.extend(bad)
            else:
                warnings.append("'metrics.csv' is missing; the run is imported without metrics")
            warnings.extend(_check_imported_config(config))

            run_id = self._insert_imported(meta, config, dataset_ref)
            run_dir = self.run_dir(run_id)
            try:
                for name, info in members.items():
                    if name.startswith("artifacts/"):
                        dest = run_dir.joinpath(*PurePosixPath(name).parts[1:])
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src, open(dest, "wb") as out:
                            shutil.copyfileobj(src, out)
                self.append_metrics(run_id, points)
            except OSError as exc:
                self.delete(run_id)
                raise DataError(f"cannot unpack the run's artifacts ({exc})", source=source) from exc
            except BaseException:
                self.delete(run_id)
                raise
        missing = [n for n in EXPECTED_ARTIFACTS if not (run_dir / n).is_file()]
        if missing and status == "completed":
            warnings.append(f"artifact(s) {', '.join(missing)} missing from the export")
        logger.info("imported run %s from %s", run_id, source)
        return ImportedRun(run_id=run_id, warnings=tuple(warnings))

    def _insert_imported(self, meta: dict[str, Any], config: dict[str, Any], dataset_ref: str) -> str:
        name = _check_name(str(meta.get("name") or "imported run"))
        now = time.time()

        def num(key: str) -> float | None:
            value = meta.get(key)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        fingerprint = meta.get("dataset_fingerprint")
        for _ in range(10):
            run_id = secrets.token_hex(5)
            try:
                with self._write() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, name, status, config, dataset_ref, dataset_fingerprint, device, "
                        "progress, created, started, finished, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            run_id,
                            name,
                            meta["status"],
                            json.dumps(config, sort_keys=True),
                            dataset_ref,
                            str(fingerprint) if isinstance(fingerprint, str) else None,
                            str(meta["device"]) if isinstance(meta.get("device"), str) else None,
                            json.dumps(meta["progress"]) if isinstance(meta.get("progress"), dict) else None,
                            num("created") or now,
                            num("started"),
                            num("finished"),
                            _one_line(str(meta["error"])) if meta.get("error") else None,
                        ),
                    )
                    self.run_dir(run_id).mkdir(parents=True, exist_ok=True)
                return run_id
            except sqlite3.IntegrityError:
                continue
        raise StoreError("could not generate a unique run ID; try again")

    def _import_dataset(self, zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], source: str) -> str:
        missing = [n for n in _DATASET_FILES if f"dataset/{n}" not in members]
        if missing:
            raise DataError(f"the exported dataset lacks {', '.join(missing)}", source=source)
        with tempfile.TemporaryDirectory(dir=self.datasets_dir, prefix=".import-") as tmp:
            for name in _DATASET_FILES:
                with zf.open(members[f"dataset/{name}"]) as src, open(Path(tmp) / name, "wb") as out:
                    shutil.copyfileobj(src, out)
            dataset = _read_dataset_dir(Path(tmp), label=f"{source}: dataset")
        return self.save_dataset(dataset, name=dataset.name)

    # ------------------------------------------------------------------ datasets
    def save_dataset(self, dataset: Dataset, *, name: str | None = None) -> str:
        """Save a dataset (Parquet tables + JSON) and return its ID.

        A dataset with the same fingerprint already saved is not saved again;
        its ID is returned.

        Raises
        ------
        DataError
            If a table cannot be written as Parquet or does not read back identically.
        """
        fingerprint = dataset.fingerprint
        existing = self._conn().execute("SELECT id FROM datasets WHERE fingerprint = ?", (fingerprint,)).fetchone()
        if existing:
            return existing[0]
        name = _check_name(name or dataset.name)
        tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=self.datasets_dir))
        try:
            _write_dataset_dir(dataset, tmp, name=name, fingerprint=fingerprint)
            reread = _read_dataset_dir(tmp, label=f"dataset '{name}'", verify=False)
            if reread.fingerprint != fingerprint:
                raise DataError(
                    f"dataset '{name}' does not read back identically from Parquet "
                    f"({_first_difference(dataset, reread)}); convert that column to plain text or numbers and try again"
                )
            for _ in range(10):
                dataset_id = secrets.token_hex(5)
                try:
                    with self._write() as conn:
                        row = conn.execute("SELECT id FROM datasets WHERE fingerprint = ?", (fingerprint,)).fetchone()
                        if row:
                            return row[0]
                        conn.execute(
                            "INSERT INTO datasets (id, name, fingerprint, created, n_users, n_items, n_ratings, implicit) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (dataset_id, name, fingerprint, time.time(), dataset.n_users, dataset.n_items, len(dataset.ratings), int(dataset.implicit)),
                        )
                        os.replace(tmp, self.datasets_dir / dataset_id)
                except sqlite3.IntegrityError:
                    continue
                logger.info("saved dataset %s (%s, fingerprint %s)", dataset_id, name, fingerprint)
                return dataset_id
            raise StoreError("could not generate a unique dataset ID; try again")
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def load_dataset(self, dataset_id: str) -> Dataset:
        """Read a saved dataset back (its fingerprint is checked)."""
        record = self.get_dataset(dataset_id)
        directory = self.datasets_dir / record.id
        dataset = _read_dataset_dir(directory, label=f"saved dataset '{record.id}'")
        if dataset.fingerprint != record.fingerprint:
            raise DataError(
                f"saved dataset '{record.id}' no longer matches its fingerprint ({record.fingerprint}); "
                "its files changed on disk; delete it and save the data again"
            )
        return dataset

    def get_dataset(self, dataset_id: str) -> DatasetRecord:
        """One saved dataset's record; raises :class:`StoreError` if unknown."""
        row = self._conn().execute("SELECT * FROM datasets WHERE id = ?", (str(dataset_id),)).fetchone()
        if row is None:
            raise StoreError(f"no saved dataset '{dataset_id}' in the store at '{self.home}'")
        return _dataset_from_row(row)

    def list_datasets(self) -> list[DatasetRecord]:
        """Saved datasets, newest first."""
        rows = self._conn().execute("SELECT * FROM datasets ORDER BY created DESC, rowid DESC").fetchall()
        return [_dataset_from_row(r) for r in rows]

    def runs_using_dataset(self, dataset_id: str) -> list[RunRecord]:
        """Runs whose dataset reference is ``stored:<dataset_id>``."""
        rows = self._conn().execute(
            "SELECT * FROM runs WHERE dataset_ref = ? ORDER BY created DESC", (f"stored:{dataset_id}",)
        ).fetchall()
        return [_run_from_row(r) for r in rows]

    def delete_dataset(self, dataset_id: str, *, force: bool = False) -> None:
        """Delete a saved dataset.

        Refused while runs use it, unless ``force`` (those runs keep their results
        but cannot be re-trained); always refused while a run on it is queued or running.
        """
        self.get_dataset(dataset_id)
        users = self.runs_using_dataset(dataset_id)
        active = [r.id for r in users if r.is_active]
        if active:
            raise StoreError(f"dataset '{dataset_id}' is used by queued or running run(s) {', '.join(active[:5])}; cancel them first")
        if users and not force:
            ids = ", ".join(r.id for r in users[:5]) + (", ..." if len(users) > 5 else "")
            raise StoreError(
                f"dataset '{dataset_id}' is used by {len(users)} run(s) ({ids}); delete those runs first, "
                "or force the deletion (--force): the runs keep their results but can no longer be re-trained"
            )
        with self._write() as conn:
            conn.execute("DELETE FROM datasets WHERE id = ?", (dataset_id,))
        shutil.rmtree(self.datasets_dir / _check_id(dataset_id, "dataset"), ignore_errors=True)
        logger.info("deleted dataset %s", dataset_id)

    def resolve_dataset(self, ref: str) -> Dataset:
        """Load the dataset a reference names (built-in datasets are loaded by their modules)."""
        kind, value = parse_dataset_ref(ref)
        if kind == "stored":
            return self.load_dataset(value)
        return load_builtin(value)

    def dataset_fingerprint(self, ref: str) -> str | None:
        """Fingerprint of a saved dataset reference without loading it; None for built-ins."""
        kind, value = parse_dataset_ref(ref)
        return self.get_dataset(value).fingerprint if kind == "stored" else None

    def _dataset_name(self, dataset_id: str) -> str:
        row = self._conn().execute("SELECT name FROM datasets WHERE id = ?", (dataset_id,)).fetchone()
        return row[0] if row else dataset_id


# ---------------------------------------------------------------------- helpers
def check_jsonl(path: Path) -> list[str]:
    """Sentences naming the lines of a JSON-lines file that are not complete JSON objects."""
    problems: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    ok = isinstance(json.loads(line), dict)
                except json.JSONDecodeError:
                    ok = False
                if not ok:
                    problems.append(f"'{path.name}' line {number} is incomplete or not a JSON object; it is skipped")
    except OSError as exc:
        problems.append(f"'{path.name}' cannot be read: {exc}")
    return problems


def _check_id(value: str, what: str) -> str:
    text = str(value)
    if not _ID_PATTERN.match(text):
        raise StoreError(f"'{value}' is not a valid {what} ID (10 hexadecimal characters)")
    return text


def _check_name(name: str) -> str:
    text = " ".join(str(name).split())
    if not text:
        raise StoreError("a name cannot be empty")
    if len(text) > 200:
        raise StoreError(f"a name can have at most 200 characters (got {len(text)})")
    return text


def _one_line(message: str, limit: int = 500) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _run_from_row(row: Sequence[Any]) -> RunRecord:
    (run_id, name, status, config, dataset_ref, fingerprint, device, pid, host, heartbeat, progress,
     created, started, finished, error, cancel_requested) = row
    try:
        config_dict = json.loads(config)
    except (TypeError, json.JSONDecodeError):
        config_dict = {}
    try:
        progress_dict = json.loads(progress) if progress else None
    except json.JSONDecodeError:
        progress_dict = None
    return RunRecord(
        id=run_id, name=name, status=status, config=config_dict, dataset_ref=dataset_ref,
        dataset_fingerprint=fingerprint, device=device, pid=pid, host=host, heartbeat=heartbeat,
        progress=progress_dict, created=created, started=started, finished=finished, error=error,
        cancel_requested=bool(cancel_requested),
    )


def _dataset_from_row(row: Sequence[Any]) -> DatasetRecord:
    dataset_id, name, fingerprint, created, n_users, n_items, n_ratings, implicit = row
    return DatasetRecord(dataset_id, name, fingerprint, created, n_users, n_items, n_ratings, bool(implicit))


def _write_dataset_dir(dataset: Dataset, directory: Path, *, name: str, fingerprint: str) -> None:
    for label, frame, filename in (
        ("ratings", dataset.ratings, "ratings.parquet"),
        ("user table", dataset.user_table, "user_table.parquet"),
        ("item table", dataset.item_table, "item_table.parquet"),
    ):
        try:
            frame.to_parquet(directory / filename)
        except (ValueError, TypeError, ImportError) as exc:
            column = _unstorable_column(frame)
            raise DataError(
                f"the {label} of dataset '{name}' cannot be stored as Parquet ({exc}); "
                "give that column one type (all text or all numbers) and try again",
                column=column,
            ) from exc
    meta = {
        "format": _DATASET_FORMAT,
        "version": 1,
        "name": name,
        "fingerprint": fingerprint,
        "implicit": bool(dataset.implicit),
        "warnings": list(dataset.warnings),
        "users": dataset.users.to_json(),
        "items": dataset.items.to_json(),
        "user_features": [dataclasses.asdict(s) for s in dataset.user_features],
        "item_features": [dataclasses.asdict(s) for s in dataset.item_features],
    }
    (directory / "meta.json").write_text(json.dumps(meta))


def _unstorable_column(frame: pd.DataFrame) -> str | None:
    import pyarrow as pa

    for column in frame.columns:
        try:
            pa.array(frame[column])
        except (pa.ArrowException, TypeError, ValueError):
            return str(column)
    return None


def _read_dataset_dir(directory: Path, *, label: str, verify: bool = True) -> Dataset:
    for filename in _DATASET_FILES:
        if not (directory / filename).is_file():
            raise DataError(f"{label}: file '{filename}' is missing; delete the dataset and save it again")
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("format") != _DATASET_FORMAT:
            raise DataError(f"{label}: 'meta.json' is not a metarec dataset description")
        users = IdMap.from_json(meta["users"])
        items = IdMap.from_json(meta["items"])
        ratings = pd.read_parquet(directory / "ratings.parquet")
        user_table = _read_table(directory / "user_table.parquet", len(users))
        item_table = _read_table(directory / "item_table.parquet", len(items))
        dataset = Dataset(
            name=str(meta["name"]),
            ratings=ratings,
            users=users,
            items=items,
            user_table=user_table,
            item_table=item_table,
            user_features=tuple(FeatureSpec(**s) for s in meta["user_features"]),
            item_features=tuple(FeatureSpec(**s) for s in meta["item_features"]),
            implicit=bool(meta["implicit"]),
            warnings=tuple(str(w) for w in meta["warnings"]),
        )
    except DataError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{label} cannot be read ({type(exc).__name__}: {exc}); delete it and save the data again") from exc
    if verify and dataset.fingerprint != meta["fingerprint"]:
        raise DataError(f"{label} does not match its recorded fingerprint {meta['fingerprint']}; its files were changed or damaged")
    return dataset


def _read_table(path: Path, n_rows: int) -> pd.DataFrame:
    table = pd.read_parquet(path)
    if len(table.columns) == 0 and len(table) != n_rows:
        table = pd.DataFrame(index=pd.RangeIndex(n_rows))
    return table


def _first_difference(a: Dataset, b: Dataset) -> str:
    for label, x, y in (("ratings", a.ratings, b.ratings), ("user table", a.user_table, b.user_table), ("item table", a.item_table, b.item_table)):
        for column in x.columns:
            if column not in y.columns or not x[column].astype(str).equals(y[column].astype(str)):
                return f"{label} column '{column}' changed"
        if not x.index.equals(y.index):
            return f"{label} row index changed"
    return "content changed"


def _safe_members(zf: zipfile.ZipFile, source: str, max_bytes: int) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in zf.infolist():
        name = info.filename
        if info.is_dir():
            continue
        parts = PurePosixPath(name).parts
        unsafe = (
            not name
            or "\\" in name
            or "\x00" in name
            or name.startswith("/")
            or re.match(r"^[A-Za-z]:", name) is not None
            or any(p in ("", ".", "..") for p in parts)
            or name != "/".join(parts)
        )
        if unsafe:
            raise DataError(f"entry '{name}' has an unsafe path; refusing to import", source=source)
        allowed = name in ("run.json", "config.json", "metrics.csv") or (
            len(parts) >= 2 and parts[0] in ("artifacts", "dataset")
        )
        if not allowed:
            raise DataError(f"unexpected entry '{name}'; a run export holds run.json, config.json, metrics.csv, artifacts/ and dataset/", source=source)
        if parts[0] == "dataset" and (len(parts) != 2 or parts[1] not in _DATASET_FILES):
            raise DataError(f"unexpected dataset entry '{name}'", source=source)
        if name in members:
            raise DataError(f"entry '{name}' appears twice", source=source)
        total += info.file_size
        if total > max_bytes:
            raise DataError(f"the export unpacks to more than {max_bytes / 1024**3:.1f} GiB; refusing to import", source=source)
        members[name] = info
    return members


def _read_json_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> Any:
    try:
        return json.loads(zf.read(info).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"'{info.filename}' is not valid JSON ({exc})", source=source) from exc


def _read_metrics_csv(text: str) -> tuple[list[MetricPoint], list[str]]:
    points: list[MetricPoint] = []
    problems: list[str] = []
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != list(METRIC_COLUMNS):
        return [], [f"'metrics.csv' has columns {header}, expected {', '.join(METRIC_COLUMNS)}; metrics not imported"]
    for row in reader:
        line = reader.line_num
        if not row:
            continue
        try:
            if len(row) != len(METRIC_COLUMNS) or not row[0] or not row[3]:
                raise ValueError("wrong number of fields")
            value = float(row[4]) if row[4] not in ("", "nan", "NaN") else float("nan")
            points.append(MetricPoint(row[0], int(row[1] or -1), int(row[2] or -1), row[3], value, float(row[5])))
        except ValueError:
            problems.append(f"'metrics.csv' line {line} is incomplete or malformed; it is skipped")
    return points, problems


def _check_imported_config(config: dict[str, Any]) -> list[str]:
    try:
        from metarec_core.configs import config_from_dict
        from metarec_core.train_config import TrainConfig
    except ImportError:
        return []
    try:
        config_from_dict(TrainConfig, config)
    except MetarecError as exc:
        return [f"its config does not fit this metarec version ({exc}); it can be viewed but not re-trained as is"]
    return []
