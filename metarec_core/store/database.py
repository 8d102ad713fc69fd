"""The store's SQLite database: where the home is, one connection per thread, the schema and its upgrades, and store errors.

Every thread and process opens its own connection; writes are short
``BEGIN IMMEDIATE`` transactions, so a worker writes while the app reads.
Opening a store reads ``PRAGMA user_version`` without a lock and takes the
write lock only when the schema has to be created or upgraded, so read-only
commands never wait for a busy writer (WAL readers). Opening also checks the
database (``PRAGMA quick_check`` and the expected tables): a damaged, empty or
missing database beside run folders raises
:class:`~metarec_core.errors.StoreDamagedError`, whose message names the file
and ``python -m metarec_core runs recover`` (:mod:`metarec_core.store.recovery`).
A write that waits longer than :data:`WRITE_BUSY_TIMEOUT` for another process
raises :class:`~metarec_core.errors.StoreBusyError`, naming that process when
the operating system says which one holds the lock.
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

from metarec_core.errors import StoreBusyError, StoreDamagedError, StoreError

logger = logging.getLogger(__name__)

#: Version of the SQLite schema (``PRAGMA user_version``); see :mod:`metarec_core.store.migration` for older ones.
SCHEMA_VERSION = 3
#: Seconds a read waits for another process (WAL readers rarely wait: only while a writer checkpoints or recovers).
READ_BUSY_TIMEOUT = 5.0
#: Seconds a write waits for another process's write lock (SQLite retries with back-off meanwhile).
WRITE_BUSY_TIMEOUT = 30.0
#: The file name of the database in a store home.
DB_NAME = "store.sqlite3"
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


def recover_advice(home: Path) -> str:
    """The next step for a damaged or lost database: the command that rebuilds it from the folders."""
    return (
        f"run `python -m metarec_core runs recover --home '{home}'` to keep the old file aside and rebuild the "
        "store from runs/ and datasets/ (or restore store.sqlite3 from a backup)"
    )


def expected_tables() -> tuple[str, ...]:
    """The tables the current schema creates."""
    return tuple(re.findall(r"CREATE TABLE (\w+)", SCHEMA))


def lock_holder(db_path: Path) -> str | None:
    """The process holding the write lock of a SQLite database, as ``PID n: command``, if the system says.

    Reads ``/proc/locks`` (Linux): in WAL mode the writer holds byte 120 of the
    ``-shm`` file, in rollback mode the reserved byte of the database. None
    where that cannot be known.
    """
    targets = []
    for path, byte in ((db_path.with_name(db_path.name + "-shm"), 120), (db_path, 0x40000001)):
        try:
            st = path.stat()
        except OSError:
            continue
        targets.append((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino, byte))
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 8 or fields[3] != "WRITE":
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            start, end = int(fields[6]), (None if fields[7] == "EOF" else int(fields[7]))
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        for t_major, t_minor, t_inode, byte in targets:
            if key == (t_major, t_minor, t_inode) and start <= byte and (end is None or byte <= end):
                return f"PID {pid}{_command_of(pid)}"
    return None


def _command_of(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    text = " ".join(a.decode("utf-8", "replace") for a in argv if a)
    return f": {one_line(text, 120)}" if text else ""


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
        self.db_path = self.home / DB_NAME
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
            conn = sqlite3.connect(self.db_path, timeout=READ_BUSY_TIMEOUT, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(READ_BUSY_TIMEOUT * 1000)}")
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

    def _by_prefix(self, kind: str, id_or_prefix: str, select: str) -> tuple[str, tuple | None]:
        """Look up a ``kind`` (``run``, ``sweep``) by its full ID or a unique prefix of 4+ hex characters.

        ``select`` is the query with a ``LIKE ?`` on the ID at its end. Returns
        ``(id, None)`` for a full ID (the caller fetches it its own way) or
        ``(id, row)`` for the one row a prefix matches; a prefix that is too
        short, matches nothing or matches several raises :class:`StoreError` naming it.
        """
        text = str(id_or_prefix).strip().lower()
        if ID_PATTERN.match(text):
            return text, None
        if len(text) < 4 or not re.fullmatch(r"[0-9a-f]+", text):
            raise StoreError(f"'{id_or_prefix}' is not a {kind} ID; give the ID or its first 4+ characters")
        rows = self._read(select, (text + "%",))
        if not rows:
            raise StoreError(f"no {kind} ID starts with '{text}' in the store at '{self.home}'")
        if len(rows) > 1:
            raise StoreError(f"'{text}' matches {len(rows)} {kind}s ({', '.join(r[0] for r in rows[:5])}); give more characters")
        return text, rows[0]

    @contextmanager
    def _write(self, *, wait: float | None = None) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction, committed on success; :class:`sqlite3.IntegrityError` passes through.

        ``wait``: seconds to wait for another writer (default :data:`WRITE_BUSY_TIMEOUT`).
        """
        conn = self._conn()
        try:
            conn.execute(f"PRAGMA busy_timeout = {int((WRITE_BUSY_TIMEOUT if wait is None else wait) * 1000)}")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(READ_BUSY_TIMEOUT * 1000)}")
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
            holder = lock_holder(self.db_path)
            return StoreBusyError(
                f"another process{f' ({holder})' if holder else ''} is writing to the run store '{self.db_path}' and "
                "kept it locked longer than this command waits; the store is not damaged: retry once that process has finished"
            )
        if isinstance(exc, sqlite3.OperationalError) and "disk is full" in text:
            return StoreError(
                f"the disk holding the run store '{self.db_path}' is full ({text}); nothing was written and the store is "
                "not damaged: free some space and retry"
            )
        if isinstance(exc, sqlite3.OperationalError) and "disk I/O error" in text:
            return StoreError(
                f"the system could not read or write the run store '{self.db_path}' ({text}); check the disk and its free "
                "space, then retry"
            )
        if isinstance(exc, sqlite3.OperationalError) and ("readonly" in text or "unable to open" in text):
            return StoreError(f"cannot write the run store '{self.db_path}' ({text}); make it writable or set METAREC_HOME elsewhere")
        return self.damaged(text)

    def damaged(self, reason: str) -> StoreDamagedError:
        """The error of a damaged database: names the file and the command that rebuilds it (nothing is changed here)."""
        return StoreDamagedError(
            f"{self.db_path.name} in '{self.home}' is damaged ({reason}); nothing was changed: "
            f"{recover_advice(self.home)}",
            home=self.home,
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
            self._check_integrity(conn)
            return
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the run store '{self.db_path}' was written by a newer metarec (schema {version}, "
                f"this one reads {SCHEMA_VERSION}); upgrade metarec or set METAREC_HOME elsewhere"
            )
        if version == 0:
            try:
                foreign = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            except sqlite3.DatabaseError as exc:
                raise self._translate(exc) from exc
            if foreign:  # checked before anything is written (not even the journal mode)
                raise self._not_ours()
        self._upgrade(conn)

    def _not_ours(self) -> StoreError:
        return StoreError(
            f"{self.db_path.name} in '{self.home}' holds tables but no schema version; it is not a metarec "
            "store: move it away or set METAREC_HOME elsewhere"
        )

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        """A quick check of the database's pages and indexes and of the tables the schema creates; no lock taken."""
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()}
        except sqlite3.DatabaseError as exc:
            raise self._translate(exc) from exc
        if problems != ["ok"]:
            raise self.damaged(one_line("integrity check: " + "; ".join(p for p in problems if not p.startswith("***")), 200))
        missing = [name for name in expected_tables() if name not in tables]
        if missing:
            raise self.damaged(f"table(s) {', '.join(missing)} missing")

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
        raise StoreDamagedError(
            f"{self.db_path.name} in '{self.home}' is {state} but runs/ holds {len(folders)} run folder(s) ({shown}); "
            f"their records are lost, the folders are intact: {recover_advice(self.home)}",
            home=self.home,
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
                        raise self._not_ours()
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
