"""Tests of the sweep registry: a sweep's life cycle in the store, its trials, dead drivers, and the upgrade to schema 3."""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest

from metarec_core.store import RunStore, StoreError
from metarec_core.sweep import build_spec
from metarec_core.sweep_driver import best_trial, mark_stale_sweeps, sweep_summary
from tests.store_fakes import append_events, event

SPEC = build_spec({"num_epochs": 1}, grid={"lambda_meta": [0.5, 1.0]}).to_json()


def test_a_sweep_goes_through_its_life_cycle(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    sweep_id = store.create_sweep(SPEC, "builtin:synthetic", name="λ sweep")
    sweep = store.get_sweep(sweep_id)
    assert (sweep.status, sweep.pid, sweep.name, sweep.spec) == ("queued", None, "λ sweep", SPEC)
    assert store.claim_sweep(sweep_id, pid=4242) and not store.claim_sweep(sweep_id, pid=4343)
    assert store.get_sweep(sweep_id).pid == 4242 and store.sweep_heartbeat(sweep_id)
    assert not store.is_sweep_cancel_requested(sweep_id)
    assert store.request_sweep_cancel(sweep_id) == "running" and store.is_sweep_cancel_requested(sweep_id)
    assert store.finish_sweep(sweep_id, "cancelled", error="cancelled\nby hand", best={"run_id": "x", "settings": {}, "metric": 1.0})
    done = store.get_sweep(sweep_id)
    assert (done.status, done.error, done.best["metric"]) == ("cancelled", "cancelled by hand", 1.0)
    assert not store.finish_sweep(sweep_id, "failed") and not store.sweep_heartbeat(sweep_id)
    assert store.find_sweep(sweep_id[:5]).id == sweep_id
    with pytest.raises(StoreError, match="is not a sweep ID"):
        store.find_sweep("xy")


def test_a_queued_sweep_is_cancelled_at_once_and_every_sweep_is_listed_after_a_restart(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    queued = store.create_sweep(SPEC, "builtin:synthetic")
    running = store.create_sweep(SPEC, "builtin:synthetic", status="running")
    assert store.request_sweep_cancel(queued) == "cancelled"
    store.close()
    reopened = RunStore(tmp_path)
    assert {s.id: s.status for s in reopened.list_sweeps()} == {queued: "cancelled", running: "running"}
    assert [s.id for s in reopened.list_sweeps("running")] == [running]


def test_trials_are_runs_with_the_sweeps_id_and_do_not_take_worker_slots(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    sweep_id = store.create_sweep(SPEC, "builtin:synthetic", status="running")
    trial = store.insert_run("t", {"lambda_meta": 0.5}, "builtin:synthetic", status="running", heartbeat=time.time(), sweep_id=sweep_id)
    other = store.create_run({"lambda_meta": 1.0}, "builtin:synthetic")
    assert store.get_run(trial).sweep_id == sweep_id and store.get_run(other).sweep_id is None
    assert [r.id for r in store.list_runs(sweep_id=sweep_id)] == [trial]
    assert [r.id for r in store.sweep_trials(sweep_id)] == [trial]
    claimed = store.claim_next(1)  # the running trial does not count against the one local worker slot
    assert claimed is not None and claimed.id == other


def test_the_best_trial_follows_the_metrics_direction(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    sweep_id = store.create_sweep(SPEC, "builtin:synthetic", status="running")
    for value, lam, status in ((0.9, 0.5, "completed"), (0.7, 1.0, "completed"), (0.5, 1.0, "failed")):
        run_id = store.insert_run(f"t{lam}", {"lambda_meta": lam}, "builtin:synthetic", status=status, sweep_id=sweep_id)
        append_events(store.run_dir(run_id), [event("done", 1, 3, metrics={"valid_mae": value})])
    best = best_trial(store, sweep_id, build_spec({}, grid={"lambda_meta": [0.5, 1.0]}))
    assert best["metric"] == 0.7 and best["settings"] == {"lambda_meta": 1.0}  # the failed trial's value does not count
    summary = sweep_summary(store, sweep_id)
    assert [t["metric"] for t in summary["trials"]] == [0.9, 0.7, 0.5] and summary["best"] == best


def test_a_dead_driver_fails_its_sweep_and_unfinished_trials_and_keeps_finished_ones(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    sweep_id = store.create_sweep(SPEC, "builtin:synthetic", status="running")
    dead = 2**22 + 12345  # above the kernel's PID limit: no such process
    assert store.claim_sweep(sweep_id, pid=dead)
    finished = store.insert_run("done", {"lambda_meta": 0.5}, "builtin:synthetic", status="completed", sweep_id=sweep_id)
    append_events(store.run_dir(finished), [event("done", 1, 3, metrics={"valid_mae": 0.8})])
    running = store.insert_run("busy", {"lambda_meta": 1.0}, "builtin:synthetic", status="running", heartbeat=time.time(), sweep_id=sweep_id)
    alive = store.create_sweep(SPEC, "builtin:synthetic", status="running")
    store.claim_sweep(alive, pid=os.getpid())
    assert mark_stale_sweeps(store) == [sweep_id]
    sweep = store.get_sweep(sweep_id)
    assert sweep.status == "failed" and "driver stopped unexpectedly" in sweep.error and "1 completed trial(s) are kept" in sweep.error
    assert store.get_run(finished).status == "completed" and store.get_run(running).status == "failed"
    assert sweep.best["run_id"] == finished and store.get_sweep(alive).status == "running"


def test_a_schema_2_store_gets_the_sweeps_table(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run({"lambda_meta": 1.0}, "builtin:synthetic", name="old run")
    store.close()
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:  # back to schema 2, as a store written before sweeps
        conn.execute("DROP INDEX runs_by_sweep")
        conn.execute("ALTER TABLE runs DROP COLUMN sweep_id")
        conn.execute("DROP TABLE sweeps")
        conn.execute("PRAGMA user_version = 2")
    upgraded = RunStore(tmp_path)
    assert upgraded.get_run(run_id).name == "old run" and upgraded.get_run(run_id).sweep_id is None
    assert upgraded.list_sweeps() == []
    sweep_id = upgraded.create_sweep(SPEC, "builtin:synthetic")
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    assert upgraded.get_sweep(sweep_id).status == "queued"
