"""The sweep registry: sweeps (their specification, status, driver, best trial) and which runs are their trials.

A sweep's trials are ordinary runs whose ``sweep_id`` names it. A sweep goes
through the life cycle of a job: queued (``--background``, until its driver
starts) → running (the driver's PID, host and a heartbeat every second) →
``completed``, ``failed`` or ``cancelled``, with a one-line error and its
best trial. A cancel request is a flag the driver polls; a dead driver is
found by its PID or its heartbeat (:mod:`metarec_core.sweep_driver`).
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import socket
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metarec_core.store.database import Database, StoreError, check_id, check_name, one_line
from metarec_core.store.datasets import split_dataset_ref

#: Sweep statuses, in life-cycle order (those of a job).
SWEEP_STATUSES = ("queued", "running", "completed", "failed", "cancelled")
_COLUMNS = "id, name, spec, dataset_ref, status, pid, host, heartbeat, created, started, finished, error, best, cancel_requested"


@dataclass(frozen=True)
class SweepRecord:
    """One sweep as the store keeps it.

    Attributes
    ----------
    id, name
        Generated ID and display name.
    spec
        The :class:`~metarec_core.sweep.SweepSpec` as JSON (``SweepSpec.to_json``).
    dataset_ref
        ``builtin:<name>`` or ``stored:<dataset_id>``.
    status
        One of :data:`SWEEP_STATUSES`.
    pid, host, heartbeat
        The driver process, its host and its last sign of life (epoch seconds).
    created, started, finished
        Epoch seconds.
    error
        One-line reason of a failure or a cancel.
    best
        ``{"run_id", "settings", "metric"}`` of the best trial once known, else None.
    cancel_requested
        True once someone asked the sweep to stop.
    """

    id: str
    name: str
    spec: dict[str, Any]
    dataset_ref: str
    status: str
    pid: int | None
    host: str | None
    heartbeat: float | None
    created: float
    started: float | None
    finished: float | None
    error: str | None
    best: dict[str, Any] | None
    cancel_requested: bool

    @property
    def is_active(self) -> bool:
        """True while queued or running."""
        return self.status in ("queued", "running")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        return dataclasses.asdict(self)


class SweepRegistry(Database):
    """Sweeps and their trials (mixed into :class:`~metarec_core.store.RunStore`)."""

    @property
    def sweeps_dir(self) -> Path:
        """``sweeps/`` of the home: one folder per sweep (its driver's log and Ray Tune's own records)."""
        return self.home / "sweeps"

    def sweep_dir(self, sweep_id: str) -> Path:
        """The folder of one sweep (created by its driver)."""
        return self.sweeps_dir / check_id(sweep_id, "sweep")

    def create_sweep(self, spec: Mapping[str, Any], dataset_ref: str, *, name: str | None = None, status: str = "queued") -> str:
        """Add a sweep (queued for a background driver, or ``running`` for the caller's own) and return its ID."""
        split_dataset_ref(dataset_ref)
        if status not in ("queued", "running"):
            raise StoreError(f"a new sweep is queued or running, not '{status}'")
        now = time.time()
        name = check_name(name or f"sweep {time.strftime('%Y-%m-%d %H:%M', time.localtime(now))}")
        running = status == "running"
        for _ in range(10):
            sweep_id = secrets.token_hex(5)
            try:
                with self._write() as conn:
                    conn.execute(
                        f"INSERT INTO sweeps ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, 0)",
                        (sweep_id, name, json.dumps(dict(spec), sort_keys=True), dataset_ref, status,
                         None, socket.gethostname() if running else None, now if running else None, now, now if running else None),
                    )
            except sqlite3.IntegrityError:
                continue
            return sweep_id
        raise StoreError("could not generate a unique sweep ID; try again")

    def get_sweep(self, sweep_id: str) -> SweepRecord:
        """One sweep; :class:`StoreError` if the store does not hold it."""
        row = self._read_one(f"SELECT {_COLUMNS} FROM sweeps WHERE id = ?", (str(sweep_id),))
        if row is None:
            raise StoreError(f"no sweep '{sweep_id}' in the store at '{self.home}'; list sweeps with `python -m metarec_core sweeps list`")
        return _sweep_from_row(row)

    def find_sweep(self, id_or_prefix: str) -> SweepRecord:
        """A sweep by its full ID or a unique prefix of at least 4 characters."""
        sweep_id, row = self._by_prefix("sweep", id_or_prefix, f"SELECT {_COLUMNS} FROM sweeps WHERE id LIKE ?")
        return self.get_sweep(sweep_id) if row is None else _sweep_from_row(row)

    def list_sweeps(self, status: str | Sequence[str] | None = None) -> list[SweepRecord]:
        """Every sweep, newest first, optionally only those with the given status(es)."""
        sql, params = f"SELECT {_COLUMNS} FROM sweeps", ()
        if status is not None:
            params = (status,) if isinstance(status, str) else tuple(status)
            bad = [s for s in params if s not in SWEEP_STATUSES]
            if bad:
                raise StoreError(f"unknown sweep status {bad}; statuses are {', '.join(SWEEP_STATUSES)}")
            sql += f" WHERE status IN ({', '.join('?' * len(params))})"
        return [_sweep_from_row(r) for r in self._read(sql + " ORDER BY created DESC, rowid DESC", params)]

    def claim_sweep(self, sweep_id: str, *, pid: int) -> bool:
        """Make process ``pid`` on this host the driver of a queued (or its own running) sweep; False if it is not."""
        now = time.time()
        with self._write() as conn:
            return conn.execute(
                "UPDATE sweeps SET status = 'running', pid = ?, host = ?, heartbeat = ?, started = COALESCE(started, ?) "
                "WHERE id = ? AND (status = 'queued' OR (status = 'running' AND pid IS NULL))",
                (pid, socket.gethostname(), now, now, check_id(sweep_id, "sweep")),
            ).rowcount == 1

    def sweep_heartbeat(self, sweep_id: str) -> bool:
        """Record that a sweep's driver is alive; False if the sweep is no longer running."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE sweeps SET heartbeat = ? WHERE id = ? AND status = 'running'", (time.time(), sweep_id)
            ).rowcount == 1

    def set_sweep_best(self, sweep_id: str, best: Mapping[str, Any] | None) -> None:
        """Record the best trial so far."""
        with self._write() as conn:
            conn.execute("UPDATE sweeps SET best = ? WHERE id = ?", (json.dumps(dict(best)) if best else None, sweep_id))

    def finish_sweep(self, sweep_id: str, status: str, *, error: str | None = None, best: Mapping[str, Any] | None = None) -> bool:
        """Move an active sweep to a final status; False if it had finished already."""
        if status not in ("completed", "failed", "cancelled"):
            raise StoreError(f"'{status}' is not a final status (completed, failed, cancelled)")
        with self._write() as conn:
            return conn.execute(
                "UPDATE sweeps SET status = ?, error = ?, finished = ?, best = COALESCE(?, best) "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (status, one_line(error) if error else None, time.time(), json.dumps(dict(best)) if best else None, sweep_id),
            ).rowcount == 1

    def fail_sweep_if_stale(self, sweep_id: str, heartbeat: float | None, error: str) -> bool:
        """Mark a running sweep failed if its heartbeat is still ``heartbeat`` (compare-and-set)."""
        with self._write() as conn:
            return conn.execute(
                "UPDATE sweeps SET status = 'failed', error = ?, finished = ? WHERE id = ? AND status = 'running' AND heartbeat IS ?",
                (one_line(error), time.time(), sweep_id, heartbeat),
            ).rowcount == 1

    def request_sweep_cancel(self, sweep_id: str) -> str:
        """Ask a sweep to stop: a queued one is cancelled at once, a running one gets its flag set; returns its status after."""
        with self._write() as conn:
            row = conn.execute("SELECT status FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
            if row is None:
                raise StoreError(f"no sweep '{sweep_id}' to cancel")
            if row[0] == "queued":
                conn.execute(
                    "UPDATE sweeps SET status = 'cancelled', cancel_requested = 1, finished = ?, error = 'cancelled before it started' "
                    "WHERE id = ?", (time.time(), sweep_id),
                )
                return "cancelled"
            if row[0] == "running":
                conn.execute("UPDATE sweeps SET cancel_requested = 1 WHERE id = ?", (sweep_id,))
            return row[0]

    def is_sweep_cancel_requested(self, sweep_id: str) -> bool:
        """True once :meth:`request_sweep_cancel` was called (or the sweep is gone, or no longer running)."""
        row = self._read_one("SELECT cancel_requested, status FROM sweeps WHERE id = ?", (sweep_id,))
        return row is None or bool(row[0]) or row[1] != "running"

    def sweep_trials(self, sweep_id: str) -> list[Any]:
        """The runs of a sweep (its trials), oldest first."""
        return list(reversed(self.list_runs(sweep_id=check_id(sweep_id, "sweep"))))  # type: ignore[attr-defined]


def _sweep_from_row(row: Sequence[Any]) -> SweepRecord:
    (sweep_id, name, spec, dataset_ref, status, pid, host, heartbeat, created, started, finished, error, best, cancel) = row
    return SweepRecord(
        id=sweep_id, name=name, spec=_json_or(spec, {}), dataset_ref=dataset_ref, status=status, pid=pid, host=host,
        heartbeat=heartbeat, created=created, started=started, finished=finished, error=error, best=_json_or(best, None),
        cancel_requested=bool(cancel),
    )


def _json_or(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return default
