"""Tests of the run registry: runs, their training and evaluation jobs, metrics read from run folders, comparison (no training)."""
from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from metarec_core.store import RunStore, StoreError
from metarec_core.store import metrics as metrics_module
from tests.store_fakes import CONFIG, append_events, event, finish_fake_run


def test_run_life_cycle_and_listing(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    first = store.create_run(CONFIG, "builtin:synthetic", name="first")
    second = store.create_run(CONFIG, "builtin:movielens-100k")
    assert store.get_run(first).status == "queued"
    assert store.run_dir(first).is_dir()
    assert [r.id for r in store.list_runs()] == [second, first]
    assert store.get_run(second).name.startswith("movielens-100k ")

    claimed = store.claim_next(max_running=1)
    assert claimed is not None and claimed.id == first and claimed.status == "running"
    assert store.claim_next(max_running=1) is None  # the one slot is taken
    assert store.request_cancel(second) == "cancelled"  # a queued run is cancelled at once
    assert store.request_cancel(first) == "running" and store.is_cancel_requested(first)
    assert store.heartbeat(first, progress={"step": 3, "total_steps": 10})
    assert store.get_run(first).progress == {"step": 3, "total_steps": 10}
    assert store.finish(first, "cancelled")
    assert not store.heartbeat(first)  # no longer running
    assert not store.finish(first, "completed")  # a finished run stays finished
    assert {r.status for r in store.list_runs()} == {"cancelled"}
    assert store.find_run(first[:5]).id == first

    store.rename(first, "  renamed \n run ")
    assert store.get_run(first).name == "renamed run"
    with pytest.raises(StoreError, match="no run"):
        store.get_run("0123456789")
    with pytest.raises(StoreError, match="not a valid run ID"):
        store.run_dir("../../etc")
    with pytest.raises(StoreError, match="not valid"):
        store.create_run(CONFIG, "file:/etc/passwd")


def test_an_evaluation_job_has_the_life_cycle_of_a_training_job(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    assert store.get_job(run_id, kind="evaluate") is None
    assert store.queue_job(run_id, kind="evaluate", params={"shots": [1, 5]})
    assert not store.queue_job(run_id, kind="evaluate")  # one at a time
    job = store.get_job(run_id, kind="evaluate")
    assert (job.status, job.params, job.pid) == ("queued", {"shots": [1, 5]}, None)
    assert store.claim_job(run_id, kind="evaluate", pid=4321)
    assert not store.claim_job(run_id, kind="evaluate", pid=1)  # already claimed
    assert store.heartbeat(run_id, kind="evaluate", progress={"done": 1, "total": 2})
    assert not store.is_cancel_requested(run_id, kind="evaluate")
    assert store.request_cancel(run_id, kind="evaluate") == "running"
    assert store.is_cancel_requested(run_id, kind="evaluate")
    assert not store.is_cancel_requested(run_id)  # the training job is another job
    with pytest.raises(StoreError, match="being evaluated"):
        store.delete(run_id)
    assert [j.kind for j in store.list_jobs("running")] == ["evaluate"]
    assert store.finish(run_id, "failed", kind="evaluate", error="boom\nsecond line")
    job = store.get_job(run_id, kind="evaluate")
    assert (job.status, job.error, job.progress, job.pid) == ("failed", "boom second line", {"done": 1, "total": 2}, 4321)
    assert store.get_run(run_id).status == "completed"  # the run's own state is its training job's
    assert store.queue_job(run_id, kind="evaluate")  # a finished evaluation is replaced by a new one
    assert store.get_job(run_id, kind="evaluate").error is None
    assert store.request_cancel(run_id, kind="evaluate") == "cancelled"
    with pytest.raises(StoreError, match="training job is queued with the run"):
        store.queue_job(run_id, kind="train")
    with pytest.raises(StoreError, match="unknown job kind"):
        store.get_job(run_id, kind="export")
    store.delete(run_id)
    assert store.list_jobs() == []


def test_metrics_are_read_from_the_run_folder_with_final_metrics(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create_run(CONFIG, "builtin:synthetic")
    b = store.create_run({**CONFIG, "num_epochs": 5}, "builtin:synthetic")
    finish_fake_run(store, a, valid_mae=0.8)
    store.claim_job(b)
    append_events(store.run_dir(b), [event("meta", 0, 1, losses={"total": 9.0, "meta": 8.0}, time=1.0)])
    frame = store.metrics_frame(a)
    assert list(frame.columns) == ["phase", "epoch", "step", "key", "value", "time"]
    assert len(frame) == 5 and frame["value"].iloc[0] == pytest.approx(1.5)
    assert str(frame["epoch"].dtype) == "int64" and str(frame["step"].dtype) == "int64"
    assert list(store.metrics_frame(a, phases=["validate"])["key"]) == ["valid_mae", "valid_mae", "valid_ndcg@3"]
    assert list(store.metrics_frame(b)["key"]) == ["total", "meta"]
    assert store.final_metrics(a) == {"valid_mae": pytest.approx(0.8), "valid_ndcg@3": pytest.approx(0.7)}
    append_events(store.run_dir(a), [event("done", 2, 4, metrics={"test_mae": 0.77, "valid_mae": 0.81}, time=5.0)])
    assert store.final_metrics(a) == {"test_mae": pytest.approx(0.77), "valid_mae": pytest.approx(0.81)}  # "done" wins
    assert store.final_metrics(b) == {}
    fresh = store.create_run(CONFIG, "builtin:synthetic")
    assert store.metrics_frame(fresh).empty and list(store.metrics_frame(fresh).columns) == list(metrics_module.METRIC_COLUMNS)
    assert store.final_metrics(fresh) == {}


def test_metrics_are_parsed_again_only_when_the_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    calls = []
    real = metrics_module.read_metrics_log
    monkeypatch.setattr(metrics_module, "read_metrics_log", lambda path: calls.append(path) or real(path))
    for _ in range(5):
        assert len(store.metrics_frame(run_id)) == 5
    store.final_metrics(run_id)
    assert len(calls) == 1
    changed = store.metrics_frame(run_id)
    changed.loc[0, "value"] = 99.0  # a caller changing its copy changes nothing
    assert store.metrics_frame(run_id)["value"].iloc[0] == pytest.approx(1.5)
    append_events(store.run_dir(run_id), [event("meta", 2, 5, losses={"total": 0.5}, time=6.0)])
    assert len(store.metrics_frame(run_id)) == 6 and len(calls) == 2


def test_half_written_metric_line_and_missing_artifact_are_reported_not_fatal(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    assert store.check_run(run_id) == ()
    run_dir = store.run_dir(run_id)
    append_events(run_dir, [event("validate", 3, 6, metrics={"valid_mae": "garb"}, time=9.0)])  # not a number
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"phase": "meta", "epoch": 3, "step": 7, "lo')  # a killed worker's last line
    (run_dir / "weights.safetensors").unlink()
    problems = store.check_run(run_id)
    assert any("1 value(s) that are not numbers (first on line 5)" in p for p in problems)
    assert any("line 6 is incomplete" in p for p in problems)
    assert any("weights.safetensors" in p and "missing" in p for p in problems)
    assert len(store.metrics_frame(run_id)) == 5  # the bad lines are left out, the rest read fine
    assert store.final_metrics(run_id)["valid_mae"] == pytest.approx(0.9)
    shutil.rmtree(run_dir)
    assert store.check_run(run_id) == (f"artifact directory '{run_dir}' is missing",)


def test_store_reopens_after_restart_with_every_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    ids = [store.create_run(CONFIG, "builtin:synthetic", name=f"run {i}") for i in range(4)]
    finish_fake_run(store, ids[0])
    store.claim_job(ids[1], pid=999_999)
    store.request_cancel(ids[2])
    store.close()
    del store
    reopened = RunStore(tmp_path)
    runs = {r.id: r for r in reopened.list_runs()}
    assert set(runs) == set(ids)
    assert [runs[i].status for i in ids] == ["completed", "running", "cancelled", "queued"]
    assert runs[ids[1]].pid == 999_999 and runs[ids[2]].cancel_requested
    assert len(reopened.metrics_frame(ids[0])) == 5
    with sqlite3.connect(reopened.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2


def test_two_sessions_write_concurrently_without_mixing(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    other_session = RunStore(tmp_path)
    errors: list[BaseException] = []
    created: dict[int, list[str]] = {1: [], 2: []}

    def work(s: RunStore, tag: int) -> None:
        try:
            for step in range(25):
                run_id = s.create_run({**CONFIG, "seed": tag}, "builtin:synthetic", name=f"session {tag}")
                assert s.claim_job(run_id, pid=tag)
                assert s.heartbeat(run_id, progress={"step": step, "session": tag})
                created[tag].append(run_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(store, 1)), threading.Thread(target=work, args=(other_session, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    runs = {r.id: r for r in store.list_runs()}
    assert len(runs) == 50
    for tag, ids in created.items():
        assert [runs[i].progress for i in ids] == [{"step": step, "session": tag} for step in range(25)]
        assert {runs[i].pid for i in ids} == {tag} and {runs[i].config["seed"] for i in ids} == {tag}


def test_compare_shows_only_differing_settings(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create_run(CONFIG, "builtin:synthetic", name="a")
    b = store.create_run({**CONFIG, "meta": {"inner_steps": 5, "inner_lr": 0.01}}, "builtin:movielens-100k", name="b")
    finish_fake_run(store, a, valid_mae=0.8)
    finish_fake_run(store, b, valid_mae=0.95)
    comparison = store.compare([a, b])
    assert list(comparison.params.index) == ["dataset", "meta.inner_steps"]
    assert comparison.params.loc["meta.inner_steps", a] == 3 and comparison.params.loc["meta.inner_steps", b] == 5
    assert comparison.metrics.loc[a, "valid_mae"] == pytest.approx(0.8)
    assert comparison.metrics.loc[b, "valid_mae"] == pytest.approx(0.95)
    assert comparison.metrics.loc[b, "name"] == "b"
    with pytest.raises(StoreError, match="at least one"):
        store.compare([])


def test_delete_refuses_a_running_run_and_removes_everything_else(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    done = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, done)
    running = store.create_run(CONFIG, "builtin:synthetic")
    store.claim_job(running)
    with pytest.raises(StoreError, match="cancel it first"):
        store.delete(running)
    store.delete(done)
    assert not store.run_dir(done).exists() and store.metrics_frame(done).empty
    assert [j.run_id for j in store.list_jobs()] == [running]
    with pytest.raises(StoreError, match="no run"):
        store.delete(done)


def test_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "h"))
    store = RunStore()
    assert store.home == tmp_path / "h" and store.db_path.is_file()
    assert json.loads(json.dumps(store.list_runs())) == []


def test_damaged_files_of_a_completed_run_are_listed_and_marked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import pickle

    from metarec_core.cli import main

    store = RunStore(tmp_path)
    ids = [store.create_run(CONFIG, "builtin:synthetic", name=f"run {i}") for i in range(3)]
    for run_id in ids:
        finish_fake_run(store, run_id)
    assert all(store.check_run(r) == () for r in ids)
    (store.run_dir(ids[0]) / "weights.safetensors").write_bytes(pickle.dumps({"w": [1.0]}))
    (store.run_dir(ids[1]) / "model.json").write_text("[]")
    shutil.rmtree(store.run_dir(ids[2]))
    assert any("'weights.safetensors'" in p and "is not a readable safetensors file" in p for p in store.check_run(ids[0]))
    assert any("'model.json'" in p and "holds a JSON list" in p for p in store.check_run(ids[1]))
    assert main(["runs", "show", ids[0], "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "completed, files damaged (see problems)" in out and "problem: 'weights.safetensors'" in out
    assert main(["runs", "list", "--home", str(tmp_path)]) == 0
    listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[2:]}
    assert "completed (folder missing)" in listed[ids[2]] and "(folder missing)" not in listed[ids[1]]
