"""Tests of the upgrade of a schema-1 store (run state in ``runs``, a ``metrics`` table, evaluation files) to schema 2."""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from metarec_core import jobs
from metarec_core.store import RunStore, StoreError
from metarec_core.store import migration as migration_module

#: The CREATE statements of schema 1, as metarec wrote them.
V1_SCHEMA = """
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
)
"""
ONLY_SQL, BOTH, RUNNING, QUEUED, CANCELLED, EVAL_FAILED, EVAL_DONE = (
    "a000000001", "a000000002", "a000000003", "a000000004", "a000000005", "a000000006", "a000000007"
)
#: Metric rows of the run whose metrics exist only in the old table (one row is not a number: a damaged write).
OLD_ROWS = [
    ("meta", 0, 1, "total", 1.5, 10.0), ("meta", 0, 1, "meta", 1.25, 10.0), ("meta", 0, 2, "total", 1.2, 11.0),
    ("validate", 1, 2, "valid_mae", 0.95, 12.0), ("validate", 1, 2, "valid_ndcg@3", 0.6, 12.0),
    ("validate", 2, 4, "valid_mae", "garbage", 13.0),
    ("done", 2, 4, "valid_mae", 0.9, 14.0), ("done", 2, 4, "test_mae", 0.85, 14.0),
]


def make_v1_store(home: Path) -> None:
    """A schema-1 store with runs in every state, metrics in the old table and evaluation files beside runs."""
    (home / "runs").mkdir(parents=True)
    (home / "datasets").mkdir()
    conn = sqlite3.connect(home / "store.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in V1_SCHEMA.split(";"):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    now = time.time()
    runs = [
        (ONLY_SQL, "only in sqlite", "completed", None, None, None, json.dumps({"step": 4, "total_steps": 4}), 0),
        (BOTH, "both", "completed", None, None, None, None, 0),
        (RUNNING, "running", "running", 4242, "somehost", now - 5, json.dumps({"step": 2, "total_steps": 9}), 1),
        (QUEUED, "queued", "queued", None, None, None, None, 0),
        (CANCELLED, "cancelled", "cancelled", None, None, None, None, 1),
        (EVAL_FAILED, "eval failed", "completed", None, None, None, None, 0),
        (EVAL_DONE, "eval done", "completed", None, None, None, None, 0),
    ]
    for i, (run_id, name, status, pid, host, heartbeat, progress, cancel) in enumerate(runs):
        conn.execute(
            "INSERT INTO runs (id, name, status, config, dataset_ref, dataset_fingerprint, device, pid, host, heartbeat, progress, "
            "created, started, finished, error, cancel_requested) VALUES (?, ?, ?, ?, 'builtin:synthetic', 'f00d', 'cpu', ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run_id, name, status, json.dumps({"num_epochs": 2, "seed": i}), pid, host, heartbeat, progress, 1000.0 + i,
             1001.0 + i, None if status in ("running", "queued") else 1002.0 + i, "boom" if status == "cancelled" else None, cancel),
        )
        (home / "runs" / run_id).mkdir()
    conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", [(ONLY_SQL, *row) for row in OLD_ROWS])
    conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?, ?, ?)", [(BOTH, "meta", 0, 1, "total", 7.0, 1.0)])
    conn.execute("INSERT INTO datasets VALUES ('d000000001', 'upload', 'beef', 1.0, 3, 4, 5, 0)")
    conn.close()
    (home / "runs" / BOTH / "metrics.jsonl").write_text(
        json.dumps({"phase": "done", "epoch": 1, "step": 3, "total_steps": 3, "losses": {}, "metrics": {"test_mae": 0.5},
                    "elapsed": 1.0, "eta": 0.0, "time": 3.0}) + "\n"
    )
    (home / "runs" / EVAL_FAILED / "evaluation.error").write_text("RuntimeError: boom (full traceback in evaluation.log)\n")
    (home / "runs" / EVAL_FAILED / "evaluation.pid").write_text("999999999\n")
    (home / "runs" / EVAL_DONE / "evaluation").mkdir()
    (home / "runs" / EVAL_DONE / "evaluation" / "results.parquet").write_bytes(b"PAR1")


def test_a_schema_1_store_is_upgraded_in_place(tmp_path: Path) -> None:
    make_v1_store(tmp_path)
    both_before = (tmp_path / "runs" / BOTH / "metrics.jsonl").read_bytes()
    store = RunStore(tmp_path)
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == {"runs", "jobs", "datasets", "sweeps"}  # the metrics table is gone
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []

    runs = {r.id: r for r in store.list_runs()}
    assert [runs[i].status for i in (ONLY_SQL, BOTH, RUNNING, QUEUED, CANCELLED)] == ["completed", "completed", "running", "queued", "cancelled"]
    running = runs[RUNNING]
    assert (running.pid, running.host, running.progress, running.started) == (4242, "somehost", {"step": 2, "total_steps": 9}, 1003.0)
    assert runs[CANCELLED].cancel_requested and runs[CANCELLED].error == "boom"
    assert (runs[ONLY_SQL].config, runs[ONLY_SQL].dataset_fingerprint, runs[ONLY_SQL].device) == ({"num_epochs": 2, "seed": 0}, "f00d", "cpu")
    assert [r.id for r in store.list_runs()][:2] == [EVAL_DONE, EVAL_FAILED]  # newest first, as before
    assert store.list_datasets()[0].name == "upload"

    # The run whose metrics were only in the table got its metrics.jsonl, with the same values (the damaged row left out).
    frame = store.metrics_frame(ONLY_SQL)
    expected = pd.DataFrame([r for r in OLD_ROWS if r[4] != "garbage"], columns=list(frame.columns))
    pd.testing.assert_frame_equal(frame, expected.astype(frame.dtypes.to_dict()))
    assert store.final_metrics(ONLY_SQL) == {"valid_mae": pytest.approx(0.9), "test_mae": pytest.approx(0.85)}
    lines = [json.loads(l) for l in (tmp_path / "runs" / ONLY_SQL / "metrics.jsonl").read_text().splitlines()]
    assert set(lines[0]) == {"phase", "epoch", "step", "total_steps", "losses", "metrics", "elapsed", "eta", "time"}
    assert lines[0]["losses"] == {"total": 1.5, "meta": 1.25} and lines[0]["total_steps"] == 4
    assert lines[-1]["metrics"] == {"valid_mae": 0.9, "test_mae": 0.85}
    # fit's own file is the record where there was one.
    assert (tmp_path / "runs" / BOTH / "metrics.jsonl").read_bytes() == both_before
    assert not (tmp_path / "runs" / QUEUED / "metrics.jsonl").exists()

    # Evaluation files became evaluation jobs.
    state = jobs.evaluation_state(store, EVAL_FAILED)
    assert (state.status, state.error) == ("failed", "RuntimeError: boom (full traceback in evaluation.log)")
    assert not (tmp_path / "runs" / EVAL_FAILED / "evaluation.error").exists()
    assert not (tmp_path / "runs" / EVAL_FAILED / "evaluation.pid").exists()
    assert jobs.evaluation_state(store, EVAL_DONE).status == "done"
    assert store.get_job(EVAL_DONE, kind="evaluate").status == "completed"
    assert jobs.evaluation_state(store, ONLY_SQL).status == "none"

    # Opening again changes nothing.
    mtime = (tmp_path / "runs" / ONLY_SQL / "metrics.jsonl").stat().st_mtime_ns
    again = RunStore(tmp_path)
    assert {r.id: r.status for r in again.list_runs()} == {r.id: r.status for r in runs.values()}
    assert (tmp_path / "runs" / ONLY_SQL / "metrics.jsonl").stat().st_mtime_ns == mtime


def test_an_upgrade_that_cannot_write_metrics_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_v1_store(tmp_path)

    def disk_full(run_dir, events):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(migration_module, "write_events", disk_full)
    with pytest.raises(StoreError, match=rf"cannot write '.*{ONLY_SQL}.*metrics.jsonl' \(.*No space left.*\); make runs/ writable"):
        RunStore(tmp_path)
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == len(OLD_ROWS) + 1
        assert conn.execute("SELECT status FROM runs WHERE id = ?", (RUNNING,)).fetchone()[0] == "running"
    assert (tmp_path / "runs" / EVAL_FAILED / "evaluation.error").exists()
    monkeypatch.undo()
    assert len(RunStore(tmp_path).list_runs()) == 7  # and it upgrades once it can
