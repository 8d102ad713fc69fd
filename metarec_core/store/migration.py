"""Upgrades of an older ``store.sqlite3`` to the current schema, run once under the write lock when a store is opened.

Schema 1 kept each run's training state (status, worker PID, heartbeat, ...)
in the ``runs`` table, a second copy of every metric in a ``metrics`` table,
and the state of a run's evaluation in files beside the run
(``evaluation.pid``, ``evaluation.error``). Schema 2 keeps a run's training
and its evaluation as rows of one ``jobs`` table and its metrics only in the
run directory's ``metrics.jsonl``. Schema 3 adds a ``sweeps`` table and each
run's ``sweep_id`` (the sweep a run is a trial of, NULL for other runs).
"""
from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

from metarec_core.errors import StoreError
from metarec_core.store.metrics import METRICS_FILE, events_from_rows, write_events

logger = logging.getLogger(__name__)

#: Schema 2's ``runs`` and ``jobs`` tables, frozen here (later schemas migrate from these).
_V2_TABLES = """
CREATE TABLE runs_v2 (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    dataset_ref TEXT NOT NULL,
    dataset_fingerprint TEXT,
    device TEXT,
    created REAL NOT NULL
);
CREATE TABLE jobs (
    run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('train', 'evaluate')),
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    params TEXT,
    pid INTEGER,
    host TEXT,
    heartbeat REAL,
    progress TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, kind)
)
"""
#: Schema 3's additions to schema 2: the sweeps table and each run's sweep.
_V3_ADDITIONS = """
CREATE TABLE sweeps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    dataset_ref TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    pid INTEGER,
    host TEXT,
    heartbeat REAL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    best TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE runs ADD COLUMN sweep_id TEXT REFERENCES sweeps (id);
CREATE INDEX runs_by_sweep ON runs (sweep_id)
"""
#: Schema 1's test for a complete metric row (a worker killed mid-write or a damaged import left others).
_V1_VALID_METRIC_ROW = (
    "typeof(value) IN ('real', 'integer', 'null') AND typeof(epoch) = 'integer' "
    "AND typeof(step) = 'integer' AND typeof(time) IN ('real', 'integer', 'null')"
)


def migrate(conn: sqlite3.Connection, home: Path, version: int) -> list[Path]:
    """Upgrade the schema from ``version`` inside the caller's transaction (foreign keys off).

    Returns
    -------
    list of Path
        Files the upgrade made obsolete, to delete once the transaction has committed.

    Raises
    ------
    StoreError
        If ``version`` is unknown, or a run's metrics cannot be written (nothing is changed then).
    """
    if version == 1:
        obsolete = _v1_to_v2(conn, home)
        _v2_to_v3(conn)
        return obsolete
    if version == 2:
        _v2_to_v3(conn)
        return []
    raise StoreError(f"the run store in '{home}' has schema {version}, which this metarec cannot upgrade; set METAREC_HOME elsewhere")


def _v1_to_v2(conn: sqlite3.Connection, home: Path) -> list[Path]:
    runs_dir = home / "runs"
    written = _metrics_to_files(conn, runs_dir)
    for statement in _V2_TABLES.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(
        "INSERT INTO runs_v2 (id, name, config, dataset_ref, dataset_fingerprint, device, created) "
        "SELECT id, name, config, dataset_ref, dataset_fingerprint, device, created FROM runs"
    )
    conn.execute(
        "INSERT INTO jobs (run_id, kind, status, params, pid, host, heartbeat, progress, created, started, finished, error, cancel_requested) "
        "SELECT id, 'train', status, NULL, pid, host, heartbeat, progress, created, started, finished, error, cancel_requested FROM runs"
    )
    obsolete = _evaluations_to_jobs(conn, runs_dir)
    conn.execute("DROP TABLE metrics")
    conn.execute("DROP TABLE runs")
    conn.execute("ALTER TABLE runs_v2 RENAME TO runs")
    conn.execute("CREATE INDEX runs_by_dataset ON runs (dataset_ref)")
    conn.execute("CREATE INDEX jobs_by_status ON jobs (status, kind, created)")
    logger.info("store upgraded to schema 2: %d run(s) got a %s from the old metrics table", written, METRICS_FILE)
    return obsolete


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    for statement in _V3_ADDITIONS.split(";"):
        if statement.strip():
            conn.execute(statement)
    logger.info("store upgraded to schema 3: sweeps table, and each run's sweep")


def _metrics_to_files(conn: sqlite3.Connection, runs_dir: Path) -> int:
    """Write ``metrics.jsonl`` for each run whose metrics exist only in the old table; returns how many were written."""
    written = 0
    runs = conn.execute("SELECT id, progress FROM runs WHERE id IN (SELECT DISTINCT run_id FROM metrics)").fetchall()
    for run_id, progress in runs:
        run_dir = runs_dir / run_id
        target = run_dir / METRICS_FILE
        if target.is_file() and target.stat().st_size > 0:
            continue  # fit's own record is there: it is the one kept
        rows = conn.execute(
            f"SELECT phase, epoch, step, key, value, time FROM metrics WHERE run_id = ? AND {_V1_VALID_METRIC_ROW} ORDER BY rowid",
            (run_id,),
        ).fetchall()
        try:
            total = int((json.loads(progress) if progress else {}).get("total_steps") or 0)
        except (ValueError, TypeError, AttributeError):
            total = 0
        try:
            write_events(run_dir, events_from_rows(rows, total_steps=total))
        except OSError as exc:
            raise StoreError(
                f"upgrading the run store: cannot write '{target}' ({exc}); make runs/ writable and open the store again "
                "(nothing was changed)"
            ) from exc
        written += 1
    return written


def _evaluations_to_jobs(conn: sqlite3.Connection, runs_dir: Path) -> list[Path]:
    """An evaluation's error file or saved result becomes an ``evaluate`` job row; returns the files made obsolete."""
    obsolete: list[Path] = []
    for (run_id,) in conn.execute("SELECT id FROM runs").fetchall():
        run_dir = runs_dir / run_id
        error_file, pid_file = run_dir / "evaluation.error", run_dir / "evaluation.pid"
        results = run_dir / "evaluation" / "results.parquet"
        try:
            if error_file.is_file():
                status, error, when = "failed", " ".join(error_file.read_text(errors="replace").split()) or "failed", error_file.stat().st_mtime
            elif results.is_file():
                status, error, when = "completed", None, results.stat().st_mtime
            else:
                status = None
        except OSError:
            status = None
        if status is not None:
            conn.execute(
                "INSERT INTO jobs (run_id, kind, status, created, started, finished, error) VALUES (?, 'evaluate', ?, ?, ?, ?, ?)",
                (run_id, status, when, when, when, error),
            )
        obsolete += [p for p in (error_file, pid_file) if p.exists()]
    return obsolete
