"""The store's SQLite database: where the home is, one connection per thread, the schema and its upgrades, and store errors.

Every thread and process opens its own connection; writes are short
``BEGIN IMMEDIATE`` transactions, so a worker writes while the app reads.
Opening a store reads ``PRAGMA user_version`` without a lock and takes the
write lock only when the schema has to be created or upgraded, so read-only
commands never wait for a busy writer.
"""
from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from metarec_core.errors import StoreError

logger = logging.getLogger(__name__)

#: Version of the SQLite schema (``PRAGMA user_version``); see :mod:`metarec_core.store.migration` for older ones.
SCHEMA_VERSION = 3
#: Seconds a connection waits for another process's write lock.
BUSY_TIMEOUT = 30.0
#: Generated run and dataset IDs: 10 hexadecimal characters.
ID_PATTERN = re.compile(r"^[0-9a-f]{10}$")

SCHEMA = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    dataset_ref TEXT NOT NULL,
    dataset_fingerprint TEXT,
    device TEXT,
    created REAL NOT NULL,
    sweep_id TEXT REFERENCES sweeps (id)
);
CREATE INDEX runs_by_dataset ON runs (dataset_ref);
CREATE INDEX runs_by_sweep ON runs (sweep_id);
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
);
CREATE INDEX jobs_by_status ON jobs (status, kind, created);
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
"""


def default_home() -> Path:
    """The store home: ``METAREC_HOME`` if set, else the user's data directory + ``metarec``."""
    env = os.environ.get("METAREC_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir()) / "metarec"


def check_id(value: str, what: str) -> str:
    """``value`` if it is a generated ID (10 hexadecimal characters); else :class:`StoreError` naming ``what``."""
    text = str(value)
    if not ID_PATTERN.match(text):
        raise StoreError(f"'{value}' is not a valid {what} ID (10 hexadecimal characters)")
    return text


def check_name(name: str) -> str:
    """A display name with its whitespace folded; :class:`StoreError` if empty or longer than 200 characters."""
    text = " ".join(str(name).split())
    if not text:
        raise StoreError("a name cannot be empty")
    if len(text) > 200:
        raise StoreError(f"a name can have at most 200 characters (got {len(text)})")
    return text


def one_line(message: str, limit: int = 500) -> str:
    """``message`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Database:
    """A store home (``store.sqlite3``, ``runs/``, ``datasets/``) and its per-thread SQLite connections.

    Parameters
    ----------
    home
        Directory of the store; created if missing. Default :func:`default_home`.

    Raises
    ------
    StoreError
        If the home cannot be created, the database is damaged or empty while
        ``runs/`` holds run folders, or it was written by a newer metarec.
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
        self._open()

    def __repr__(self) -> str:
        return f"{type(self).__name__}('{self.home}')"

    # ------------------------------------------------------------------ connections
    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.db_path, timeout=BUSY_TIMEOUT, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
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

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Rows of a read-only query (no lock taken); a damaged database raises :class:`StoreError`."""
        try:
            return self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc

    def _read_one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        rows = self._read(sql, params)
        return rows[0] if rows else None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success; :class:`sqlite3.IntegrityError` passes through."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        try:
            yield conn
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.IntegrityError):
                raise self._translate(exc) from exc
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.DatabaseError) -> StoreError:
        """One line saying what is wrong with the database and what to do."""
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return StoreError(
                f"the run store '{self.db_path}' stayed locked by another process for {BUSY_TIMEOUT:.0f} s ({text}); "
                "try again once the other command has finished"
            )
        if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
            return StoreError(f"cannot write the run store '{self.db_path}' ({text}); make it writable or set METAREC_HOME elsewhere")
        return StoreError(
            f"{self.db_path.name} in '{self.home}' is damaged ({text}); move it away to start an empty store "
            "(runs/ and datasets/ keep the artifacts) or restore it from a backup"
        )

    # ------------------------------------------------------------------ schema
    def run_folders(self) -> list[str]:
        """Names of the run folders under ``runs/`` (whatever the database says)."""
        try:
            return sorted(p.name for p in self.runs_dir.iterdir() if p.is_dir() and ID_PATTERN.match(p.name))
        except OSError:
            return []

    def _open(self) -> None:
        self._refuse_lost_records()
        conn = self._conn()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        if version == SCHEMA_VERSION:
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the run store '{self.db_path}' was written by a newer metarec (schema {version}, "
                f"this one reads {SCHEMA_VERSION}); upgrade metarec or set METAREC_HOME elsewhere"
            )
        self._upgrade(conn)

    def _refuse_lost_records(self) -> None:
        """A missing or zero-length database beside run folders means the records are lost: say so, create nothing."""
        wal = self.db_path.with_name(self.db_path.name + "-wal")
        try:
            exists = self.db_path.exists()
            empty = exists and self.db_path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0)
        except OSError as exc:
            raise StoreError(f"cannot read the run store '{self.db_path}': {exc}") from exc
        if exists and not empty:
            return
        folders = self.run_folders()
        if not folders:
            return
        shown = ", ".join(folders[:3]) + (", ..." if len(folders) > 3 else "")
        state = "empty" if exists else "missing"
        raise StoreError(
            f"{self.db_path.name} in '{self.home}' is {state} but runs/ holds {len(folders)} run folder(s) ({shown}); "
            "their records are lost: restore store.sqlite3 from a backup, or move runs/ and datasets/ away to start an empty store"
        )

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Create or migrate the schema under the write lock (foreign keys off while tables are rebuilt)."""
        from metarec_core.store.migration import migrate

        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = OFF")
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        obsolete: list[Path] = []
        try:
            with self._write() as tx:
                version = tx.execute("PRAGMA user_version").fetchone()[0]
                if version == SCHEMA_VERSION:
                    return  # another process got there first
                if version == 0:
                    if tx.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                        raise StoreError(
                            f"{self.db_path.name} in '{self.home}' holds tables but no schema version; it is not a metarec "
                            "store: move it away or set METAREC_HOME elsewhere"
                        )
                    for statement in SCHEMA.split(";"):
                        if statement.strip():
                            tx.execute(statement)
                else:
                    logger.info("upgrading the run store %s from schema %d to %d", self.db_path, version, SCHEMA_VERSION)
                    obsolete = migrate(tx, self.home, version)
                problems = tx.execute("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise StoreError(f"upgrading '{self.db_path}' left {len(problems)} dangling reference(s); the store was left as it was")
                tx.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            try:
                conn.execute("PRAGMA foreign_keys = ON")
            except sqlite3.DatabaseError:
                pass
        for path in obsolete:  # only once the upgrade has committed
            path.unlink(missing_ok=True)
