"""Tests of background jobs: the training queue, worker processes, evaluations, cancel, dead workers, and the ``runs`` CLI."""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from metarec_core import jobs
from metarec_core.cli import main
from metarec_core.store import RunStore, StoreError
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from tests.store_fakes import append_events, event

#: A run of a few seconds: one epoch, first order, one inner step.
TINY = {"num_epochs": 1, "trans_epochs": 1, "inner_steps": 1, "first_order": True, "meta_batch_size": 8, "batch_size": 256, "device": "cpu"}
#: A run that would take minutes; tests cancel or kill it.
LONG = {**TINY, "num_epochs": 500, "patience": 0}  # no early stopping: it must still be running when cancelled


@pytest.fixture(scope="module")
def tiny_dataset():
    return make_synthetic(SyntheticConfig(n_users=40, n_items=30, ratings_per_user=(12, 20), seed=1)).dataset


@pytest.fixture
def store(tmp_path: Path):
    store = RunStore(tmp_path / "home")
    yield store
    for job in store.list_jobs("running"):  # never leave a worker behind when a test fails
        if job.pid and job.pid != os.getpid() and job.host == socket.gethostname() and jobs.pid_alive(job.pid, job.run_id):
            os.kill(job.pid, signal.SIGKILL)


@pytest.fixture
def dataset_ref(store: RunStore, tiny_dataset) -> str:
    return "stored:" + store.save_dataset(tiny_dataset, name="tiny")


def wait_for(condition, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def worker_log(store: RunStore, run_id: str, name: str = jobs.WORKER_LOG) -> str:
    path = store.run_dir(run_id) / name
    return path.read_text() if path.exists() else f"(no {name})"


def trained_run(store: RunStore, dataset_ref: str, name: str = "trained") -> str:
    """A completed TINY run, trained in this process (no worker to start)."""
    run_id = jobs.submit(store, TINY, dataset_ref, name=name)
    assert jobs.run_worker(store, run_id) == "completed", worker_log(store, run_id)
    return run_id


# ---------------------------------------------------------------------- training workers (real processes)
@pytest.mark.slow
def test_cancel_a_killed_worker_and_the_next_run(store: RunStore, dataset_ref: str, tmp_path: Path) -> None:
    """Two workers side by side: one is cancelled, one is killed; the queued run behind them then completes."""
    cancelled = jobs.submit(store, LONG, dataset_ref, name="to cancel")
    doomed = jobs.submit(store, LONG, dataset_ref, name="doomed")
    run_id = jobs.submit(store, TINY, dataset_ref, name="tiny run")
    assert jobs.dispatch(store, max_concurrent=2) == [cancelled, doomed]
    assert store.get_run(run_id).status == "queued"
    wait_for(lambda: len(store.metrics_frame(cancelled)) > 0 and len(store.metrics_frame(doomed)) > 0, 90, "the first metrics")

    asked = time.monotonic()
    assert store.request_cancel(cancelled) == "running"
    pid = store.get_run(doomed).pid
    assert pid and jobs.pid_alive(pid, doomed)
    os.kill(pid, signal.SIGKILL)
    run = jobs.wait(store, cancelled, timeout=30, poll=0.05)
    latency = time.monotonic() - asked
    assert run.status == "cancelled", worker_log(store, cancelled)
    assert latency < 5.0, f"cancel took {latency:.1f} s"
    assert (store.run_dir(cancelled) / "weights.safetensors").is_file()  # the checkpoint stays usable
    assert store.check_run(cancelled) == ()

    wait_for(lambda: jobs.mark_stale_jobs(store) is not None and store.get_run(doomed).status == "failed", 10, "the dead worker to be noticed")
    run = store.get_run(doomed)
    assert run.error.startswith("worker stopped unexpectedly (killed or machine restarted")
    assert "\n" not in run.error
    with sqlite3.connect(store.db_path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(store.metrics_frame(doomed)) > 0  # what it wrote before dying is kept

    # The queued run is unaffected: dispatched once a slot is free -> completed, with its metrics.
    jobs.dispatch(store, max_concurrent=2)
    run = jobs.wait(store, run_id, timeout=120)
    assert run.status == "completed", worker_log(store, run_id)
    assert run.error is None and run.device == "cpu" and run.pid and run.started <= run.finished
    assert run.progress["step"] == run.progress["total_steps"] > 0
    frame = store.metrics_frame(run_id)
    assert {"meta", "transfer", "done"} <= set(frame["phase"])
    assert set(frame.loc[frame["phase"] == "meta", "key"]) >= {"total", "meta"}
    final = store.final_metrics(run_id)
    result = json.loads((store.run_dir(run_id) / "result.json").read_text())
    assert final == pytest.approx(result["final_metrics"])
    assert 0.3 < final["valid_mae"] < 2.0
    assert store.check_run(run_id) == ()
    assert store.get_run(doomed).status == "failed"

    # Export, import elsewhere, and load the imported checkpoint.
    zip_path = store.export_run(run_id, tmp_path / "tiny.zip")
    other = RunStore(tmp_path / "other")
    imported = other.import_run(zip_path)
    assert imported.warnings == ()
    assert other.final_metrics(imported.run_id) == pytest.approx(final)
    from metarec_core.artifacts import load_run

    loaded = load_run(other.run_dir(imported.run_id))
    assert loaded.users == store.load_dataset(dataset_ref.split(":")[1]).users


@pytest.mark.slow
def test_two_sessions_queue_runs_that_never_mix(store: RunStore, tiny_dataset) -> None:
    session_a, session_b = store, RunStore(store.home)
    ref = "stored:" + session_a.save_dataset(tiny_dataset)
    run_a = jobs.submit(session_a, {**TINY, "seed": 1}, ref, name="from A")
    run_b = jobs.submit(session_b, {**TINY, "seed": 2, "num_epochs": 2}, ref, name="from B")
    started = jobs.dispatch(session_a, max_concurrent=1) + jobs.dispatch(session_b, max_concurrent=1)
    assert started == [run_a]  # one slot: B waits; A's worker starts B when it finishes
    assert session_b.get_run(run_b).status == "queued"
    for session, run_id in ((session_a, run_a), (session_b, run_b)):
        assert jobs.wait(session, run_id, timeout=180).status == "completed", worker_log(session, run_id)
    a, b = session_a.get_run(run_a), session_b.get_run(run_b)
    assert b.started >= a.finished - 0.5  # never both running with one slot
    for run_id, epochs in ((run_a, 1), (run_b, 2)):
        frame = session_b.metrics_frame(run_id)
        assert frame["epoch"].max() == epochs
        result = json.loads((session_a.run_dir(run_id) / "result.json").read_text())
        done = frame[frame["phase"] == "done"]
        assert dict(zip(done["key"], done["value"])) == pytest.approx(result["final_metrics"])
        steps = frame.loc[frame["key"] == "total", "step"].tolist()
        assert steps == sorted(steps) and len(steps) == len(set(steps))  # one series per run, in order


# ---------------------------------------------------------------------- the worker body (in this process)
def test_worker_failure_is_stored_as_one_line(store: RunStore, dataset_ref: str, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import metarec_core.training as training

    def broken_fit(*args, **kwargs):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(training, "fit", broken_fit)
    run_id = jobs.submit(store, TINY, dataset_ref)
    assert jobs.run_worker(store, run_id) == "failed"
    run = store.get_run(run_id)
    assert run.error.startswith("RuntimeError: boom with a second line (full traceback in")
    assert "Traceback" not in run.error
    assert any(r.exc_info for r in caplog.records)  # the traceback goes to the worker log

    def nan_fit(*args, **kwargs):
        from metarec_core.errors import TrainingError

        raise TrainingError("the meta loss became nan in the meta phase, epoch 1, step 3; lower the learning rate")

    monkeypatch.setattr(training, "fit", nan_fit)
    second = jobs.submit(store, TINY, dataset_ref)
    assert jobs.run_worker(store, second) == "failed"
    assert store.get_run(second).error == "the meta loss became nan in the meta phase, epoch 1, step 3; lower the learning rate"
    with pytest.raises(StoreError, match="failed"):
        jobs.run_worker(store, second)  # a finished run is not trained again
    with pytest.raises(StoreError, match="no run"):
        jobs.run_worker(store, "0123456789")


def test_changed_dataset_fails_the_run_clearly(store: RunStore, tiny_dataset) -> None:
    dataset_id = store.save_dataset(tiny_dataset)
    run_id = store.create_run({**TINY}, f"stored:{dataset_id}", dataset_fingerprint="0000000000000000")
    assert jobs.run_worker(store, run_id) == "failed"
    assert "changed since the run was queued" in store.get_run(run_id).error


def test_cuda_without_a_gpu_fails_with_a_clear_message(store: RunStore, dataset_ref: str) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: device=cuda would train")
    run_id = jobs.submit(store, {**TINY, "device": "cuda"}, dataset_ref)
    assert jobs.run_worker(store, run_id) == "failed"
    assert "no CUDA GPU" in store.get_run(run_id).error


def test_stale_jobs_are_detected_without_training(store: RunStore) -> None:
    config = {"num_epochs": 1}
    silent = store.create_run(config, "builtin:synthetic")
    store.claim_job(silent)
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("UPDATE jobs SET heartbeat = ? WHERE run_id = ?", (time.time() - 100, silent))
    reused = store.create_run(config, "builtin:synthetic")
    store.claim_job(reused, pid=os.getpid())  # a live PID that is not this run's worker (PID reuse after a restart)
    alive = store.create_run(config, "builtin:synthetic")
    store.claim_job(alive)
    elsewhere = store.create_run(config, "builtin:synthetic")
    store.claim_job(elsewhere, pid=999_999_998)
    with sqlite3.connect(store.db_path) as conn:  # a worker on another machine, beating 20 s ago
        conn.execute("UPDATE jobs SET host = 'other-host', heartbeat = ? WHERE run_id = ?", (time.time() - 20, elsewhere))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", alive])
    try:
        store.set_worker(alive, pid=sleeper.pid)
        stale = jobs.mark_stale_jobs(store)
        assert sorted(j.run_id for j in stale) == sorted([silent, reused]) and {j.kind for j in stale} == {"train"}
        assert "last heartbeat 100 s ago" in store.get_run(silent).error
        assert "no checkpoint had been written yet" in store.get_run(silent).error
        assert f"process {os.getpid()} is gone" in store.get_run(reused).error
        assert store.get_run(alive).status == "running" and store.get_run(elsewhere).status == "running"
        assert [j.run_id for j in jobs.mark_stale_jobs(store, stale_after=10.0)] == [elsewhere]  # the age limit is a parameter
        assert "last heartbeat 20 s ago" in store.get_run(elsewhere).error
        sleeper.kill()
        wait_for(lambda: not jobs.pid_alive(sleeper.pid, alive), 5, "the zombie to count as gone")
        assert [j.run_id for j in jobs.mark_stale_jobs(store)] == [alive]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_dispatch_respects_the_limit_and_rejects_bad_settings(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    running = store.create_run({"num_epochs": 1}, "builtin:synthetic")
    queued = store.create_run({"num_epochs": 1}, "builtin:synthetic")
    store.claim_job(running, pid=None)
    assert jobs.dispatch(store, max_concurrent=1) == []
    assert store.get_run(queued).status == "queued"
    with pytest.raises(Exception, match="max_concurrent"):
        jobs.dispatch(store, max_concurrent=0)
    monkeypatch.setenv("METAREC_MAX_WORKERS", "many")
    with pytest.raises(Exception, match="METAREC_MAX_WORKERS"):
        jobs.default_max_concurrent()
    with pytest.raises(Exception, match="unknown setting"):
        jobs.submit(store, {"num_epoch": 1}, "builtin:synthetic")
    with pytest.raises(StoreError, match="no saved dataset"):
        jobs.submit(store, TINY, "stored:0123456789")
    with pytest.raises(StoreError, match="not valid; use one of builtin:movielens-100k"):
        jobs.submit(store, TINY, "builtin:ml-1m")


# ---------------------------------------------------------------------- CLI
def fake_finished_run(store: RunStore, name: str, mae: float) -> str:
    run_id = store.create_run({**TINY, "seed": int(mae * 10)}, "builtin:synthetic", name=name)
    store.claim_job(run_id, pid=None)
    append_events(store.run_dir(run_id), [event("done", 1, 5, metrics={"valid_mae": mae}, time=time.time())])
    store.finish(run_id, "completed", device="cpu")
    return run_id


def test_runs_cli(store: RunStore, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = ["--home", str(store.home)]
    first = fake_finished_run(store, "first", 0.8)
    second = fake_finished_run(store, "second", 0.9)

    assert main(["runs", "list", *home]) == 0
    out = capsys.readouterr().out
    assert first in out and "second" in out and "completed" in out
    assert main(["runs", "list", "--json", *home]) == 0
    assert {r["id"] for r in json.loads(capsys.readouterr().out)} == {first, second}

    assert main(["runs", "show", first[:6], *home]) == 0
    out = capsys.readouterr().out
    assert "valid_mae" in out and "0.8000" in out and "num_epochs" in out
    assert main(["runs", "compare", first, second, "--json", *home]) == 0
    comparison = json.loads(capsys.readouterr().out)
    assert comparison["params"][first] == {"seed": 8} and comparison["metrics"][second]["valid_mae"] == pytest.approx(0.9)

    assert main(["runs", "rename", first, "best run", *home]) == 0
    assert main(["runs", "export", first, "--to", str(tmp_path / "x.zip"), *home]) == 0
    capsys.readouterr()
    assert main(["runs", "import", str(tmp_path / "x.zip"), "--json", *home]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["run_id"] != first and store.get_run(imported["run_id"]).name == "best run"

    queued = store.create_run(TINY, "builtin:synthetic")
    assert main(["runs", "cancel", queued, *home]) == 0
    assert store.get_run(queued).status == "cancelled"
    assert main(["runs", "delete", second, *home]) == 0
    assert second not in {r.id for r in store.list_runs()}
    capsys.readouterr()

    assert main(["runs", "show", "ffffffffff", *home]) == 1
    assert "error: no run" in capsys.readouterr().err
    assert main(["worker", first, *home]) == 1
    assert "only a queued run" in capsys.readouterr().err
    assert main(["runs", "datasets", *home]) == 0
    assert "no saved datasets" in capsys.readouterr().out


# ---------------------------------------------------------------------- evaluations
@pytest.mark.slow
def test_evaluation_runs_in_its_own_process_and_its_state_survives_a_restart(store: RunStore, dataset_ref: str) -> None:
    from metarec_core.evaluation_report import EvaluationResult

    run_id = trained_run(store, dataset_ref, "to evaluate")
    assert jobs.evaluation_state(store, run_id).status == "none"
    assert jobs.start_evaluation(store, run_id, shots=(1, 5)) is True
    assert jobs.start_evaluation(store, run_id, shots=(1, 5)) is False  # one at a time per run
    job = store.get_job(run_id, kind="evaluate")
    assert job.status == "running" and job.pid and job.params == {"shots": [1, 5]}
    wait_for(lambda: jobs.evaluation_state(store, run_id).status != "running", 120, "the evaluation process")
    restarted = RunStore(store.home)  # what a restarted app sees: the store and the files
    state = jobs.evaluation_state(restarted, run_id)
    assert (state.status, state.error) == ("done", None), worker_log(store, run_id, jobs.EVALUATION_LOG)
    assert state.job.status == "completed" and state.job.progress["done"] == state.job.progress["total"] > 0
    result = EvaluationResult.load(jobs.evaluation_dir(restarted, run_id))
    assert set(result.frame["shots"]) == {1, 5}
    assert {"bias", "mf"} <= set(result.methods) and len(result.methods) >= 4
    assert jobs.stop_evaluation(store, run_id) is False  # nothing running any more


def test_evaluation_failures_are_one_line_states(store: RunStore, dataset_ref: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import metarec_core.evaluation as evaluation

    queued = jobs.submit(store, TINY, dataset_ref)
    with pytest.raises(StoreError, match="only a completed run"):
        jobs.start_evaluation(store, queued)
    run_id = trained_run(store, dataset_ref)

    def broken(*args, **kwargs):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(evaluation, "evaluate_run", broken)
    with pytest.raises(RuntimeError):
        jobs.run_evaluation(store, run_id)
    state = jobs.evaluation_state(store, run_id)
    assert state.status == "failed" and state.error.startswith("RuntimeError: boom with a second line (full traceback in")
    assert "\n" not in state.error and state.job.pid == os.getpid()
    home = ["--home", str(store.home)]
    assert main(["runs", "evaluate", run_id, "--state", *home]) == 1
    assert capsys.readouterr().out.startswith("failed: RuntimeError: boom")
    assert main(["runs", "evaluate", run_id, "--state", "--json", *home]) == 1
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "failed" and shown["error"] == state.error

    # A process that died without a word (killed, machine restarted) is a failure too, not "running" forever.
    assert store.queue_job(run_id, kind="evaluate") and store.claim_job(run_id, kind="evaluate", pid=999_999_999)
    state = jobs.evaluation_state(store, run_id)
    assert state.status == "failed" and state.error.startswith("the evaluation process stopped without a result")
    assert "process 999999999 is gone" in state.error
    # So is one on another machine that stopped beating.
    assert store.queue_job(run_id, kind="evaluate") and store.claim_job(run_id, kind="evaluate", pid=999_999_998)
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("UPDATE jobs SET host = 'other-host', heartbeat = ? WHERE kind = 'evaluate'", (time.time() - 5,))
    assert jobs.evaluation_state(store, run_id).status == "running"
    assert "last heartbeat 5 s ago" in jobs.evaluation_state(store, run_id, stale_after=2.0).error


def test_a_cancel_request_stops_an_evaluation(store: RunStore, dataset_ref: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import metarec_core.evaluation as evaluation

    run_id = trained_run(store, dataset_ref)
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        for _ in range(400):  # 20 s unless stopped
            time.sleep(0.05)
        raise AssertionError("the evaluation was not stopped")

    monkeypatch.setattr(evaluation, "evaluate_run", slow)
    monkeypatch.setattr(jobs, "CANCEL_POLL_INTERVAL", 0.05)
    canceller = threading.Thread(target=lambda: started.wait(10) and store.request_cancel(run_id, kind="evaluate"))
    canceller.start()
    asked = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        jobs.run_evaluation(store, run_id)
    canceller.join()
    assert time.monotonic() - asked < 5.0
    job = store.get_job(run_id, kind="evaluate")
    assert job.status == "cancelled" and job.cancel_requested
    assert jobs.evaluation_state(store, run_id).status == "none"  # stopped before a result


@pytest.mark.slow
def test_deleting_a_run_stops_its_evaluation_so_the_folder_stays_gone(store: RunStore, dataset_ref: str, capsys) -> None:
    run_id = trained_run(store, dataset_ref, "delete me")
    assert jobs.start_evaluation(store, run_id, shots=(1, 3, 5, 10)) is True
    pid = store.get_job(run_id, kind="evaluate").pid
    assert jobs.evaluation_state(store, run_id).status == "running"
    assert main(["runs", "delete", run_id, "--home", str(store.home)]) == 0
    assert "deleted run" in capsys.readouterr().out
    assert not jobs.pid_alive(pid, run_id)
    time.sleep(1.0)  # a surviving evaluation would write its log or results back by now
    assert not store.run_dir(run_id).exists()
    assert all(run.id != run_id for run in store.list_runs())
    assert store.list_jobs(kind="evaluate") == []
    assert jobs.stop_evaluation(store, "0123456789") is False  # nothing to stop


def test_an_evaluation_started_by_hand_with_an_id_prefix_is_seen_and_stopped(store: RunStore, dataset_ref: str) -> None:
    run_id = trained_run(store, dataset_ref, "prefix")
    # Stands in for `python -m metarec_core runs evaluate <prefix>`, which claims the run's evaluation job itself.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "runs", "evaluate", run_id[:6]])
    try:
        assert store.queue_job(run_id, kind="evaluate") and store.claim_job(run_id, kind="evaluate", pid=process.pid)
        assert jobs.evaluation_state(store, run_id).status == "running"
        with pytest.raises(StoreError, match="already being evaluated by process"):
            jobs.run_evaluation(store, run_id)  # a second one by hand is refused
        jobs.delete_run(store, run_id)
        assert process.wait(timeout=10) is not None
        assert not store.run_dir(run_id).exists()
    finally:
        process.kill()
        process.wait()
    # A job naming some other live process is not this run's evaluation: nothing to stop, and it is marked failed.
    other = trained_run(store, dataset_ref, "other")
    assert store.queue_job(other, kind="evaluate") and store.claim_job(other, kind="evaluate", pid=os.getpid())
    assert jobs.stop_evaluation(store, other) is False
    assert store.get_job(other, kind="evaluate").status == "failed"


def test_evaluating_a_deleted_run_does_not_bring_its_folder_back(store: RunStore, dataset_ref: str) -> None:
    run_id = trained_run(store, dataset_ref)
    import shutil

    shutil.rmtree(store.run_dir(run_id))
    with pytest.raises(StoreError, match="deleted"):
        jobs.run_evaluation(store, run_id)
    assert not store.run_dir(run_id).exists()


def test_a_completed_run_keeps_its_baselines_measured_once_per_split(store: RunStore, dataset_ref: str) -> None:
    from metarec_core.split_baselines import read_run_baselines

    first = trained_run(store, dataset_ref, name="first")
    kept = read_run_baselines(store.run_dir(first))
    assert set(kept) == {"bias", "mf"} and 0.0 < kept["bias"]["test_mae"] < 3.0
    assert len(list((store.home / jobs.BASELINE_CACHE).glob("*.json"))) == 1
    second = trained_run(store, dataset_ref, name="second")  # the same split: the cached measurement
    assert read_run_baselines(store.run_dir(second)) == kept
    assert len(list((store.home / jobs.BASELINE_CACHE).glob("*.json"))) == 1


def test_a_new_process_starts_its_own_line_in_a_log_a_killed_one_left_unfinished(tmp_path):
    from metarec_core.jobs import _start_log_section

    path = tmp_path / "worker.log"
    path.write_bytes(b"INFO epoch 3 of 5, step 1")  # killed in the middle of a line
    with open(path, "ab") as log:
        _start_log_section(log, "worker")
        log.write(b"INFO worker 2 started\n")
    lines = path.read_text().splitlines()
    assert lines[0] == "INFO epoch 3 of 5, step 1" and lines[1].startswith("--- worker started at ") and lines[2] == "INFO worker 2 started"
    with open(path, "ab") as log:  # a complete last line gets no blank line
        _start_log_section(log, "evaluation")
    assert path.read_text().splitlines()[3].startswith("--- evaluation started at ")
