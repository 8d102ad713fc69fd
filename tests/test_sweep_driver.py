"""Tests of sweeps on a real Ray: the known-best λ setting is found, trials are runs of the store, faults (failed trial, cancel, killed driver).

Each test runs Ray Tune trials (tens of seconds on a busy 2-core machine): they are marked ``slow``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from metarec_core.artifacts import load_run
from metarec_core.recommender import Recommender
from metarec_core.store import RunStore
from metarec_core.sweep import build_spec
from metarec_core.sweep_driver import cancel_sweep, mark_stale_sweeps, run_sweep, submit_sweep
from metarec_core.synthetic import SyntheticConfig, make_synthetic

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
#: Short trials: two epochs, first order, small batches, 20% of the users for validation.
BASE = {"num_epochs": 2, "trans_epochs": 1, "first_order": True, "meta_batch_size": 8, "batch_size": 256, "device": "cpu", "valid_fraction": 0.2}


@pytest.fixture(scope="module")
def scenario_dataset():
    """Strong taste groups with 15-30 ratings per user: adapting from a meta-learned start (λ1 > 0) clearly helps new users here."""
    return make_synthetic(SyntheticConfig(n_users=120, n_items=60, ratings_per_user=(15, 30), affinity=1.5, noise=0.3, seed=0)).dataset


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "home")


def wait_for(condition, timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_a_four_trial_sweep_finds_the_known_best_lambda_setting(local_ray, store: RunStore, scenario_dataset) -> None:
    # Known best by construction: λ0 = 30 pulls every weight to zero (the model can only predict the mean), and without a
    # meta phase (λ1 = 0) new users start from a start nobody learned for them; λ1 = 1 with λ0 = 0.04 beats the other three
    # by more than 0.15 MAE on this scenario (measured with fit alone on seeds 0 and 1).
    ref = "stored:" + store.save_dataset(scenario_dataset, name="groups")
    spec = build_spec(BASE, grid={"lambda_meta": [0.0, 1.0], "lambda_l0": [0.04, 30.0]}, max_concurrent=2)
    lines: list[str] = []
    summary = run_sweep(store, submit_sweep(store, spec, ref, name="λ grid"), dataset=scenario_dataset, echo=lines.append)

    assert summary["status"] == "completed" and len(summary["trials"]) == 4
    assert summary["best"]["settings"] == {"lambda_meta": 1.0, "lambda_l0": 0.04}
    others = [t["metric"] for t in summary["trials"] if t["run_id"] != summary["best"]["run_id"]]
    assert min(others) - summary["best"]["metric"] > 0.05
    assert sorted(json.dumps(t["settings"], sort_keys=True) for t in summary["trials"]) == sorted(
        json.dumps({"lambda_meta": a, "lambda_l0": b}, sort_keys=True) for a in (0.0, 1.0) for b in (0.04, 30.0)
    )
    sweep = store.get_sweep(summary["sweep_id"])
    assert sweep.status == "completed" and sweep.best == summary["best"] and sweep.pid == os.getpid()
    assert sum(line.startswith("trial ") for line in lines) == 4
    # Every trial is an ordinary run: its record, its metrics per epoch, its run directory that the pages load.
    for trial in summary["trials"]:
        run = store.get_run(trial["run_id"])
        assert run.status == "completed" and run.sweep_id == sweep.id and run.config["lambda_meta"] == trial["settings"]["lambda_meta"]
        assert store.check_run(run.id) == ()
        validations = store.metrics_frame(run.id, phases=["validate"])
        assert sorted(set(validations["epoch"])) == [1, 2]
        assert load_run(store.run_dir(run.id)).config.lambda_l0 == trial["settings"]["lambda_l0"]
    best = Recommender.from_run_dir(store.run_dir(summary["best"]["run_id"]))
    assert len(best.recommend(best.adapt_user([("1", 5), ("2", 1)]), k=5)) == 5


def test_a_failing_trial_is_marked_with_its_error_and_the_sweep_goes_on(local_ray, store: RunStore, scenario_dataset) -> None:
    ref = "stored:" + store.save_dataset(scenario_dataset, name="groups")
    spec = build_spec({**BASE, "num_epochs": 1}, grid={"lr": [0.005, 1e9]}, max_concurrent=2)
    summary = run_sweep(store, submit_sweep(store, spec, ref), dataset=scenario_dataset)
    by_lr = {t["settings"]["lr"]: t for t in summary["trials"]}
    assert by_lr[1e9]["status"] == "failed" and "loss became nan" in by_lr[1e9]["error"] and "\n" not in by_lr[1e9]["error"]
    assert by_lr[0.005]["status"] == "completed" and by_lr[0.005]["metric"] is not None
    assert summary["status"] == "completed" and summary["best"]["run_id"] == by_lr[0.005]["run_id"]


def test_cancelling_a_sweep_stops_all_its_trials_within_seconds(local_ray, store: RunStore, scenario_dataset) -> None:
    ref = "stored:" + store.save_dataset(scenario_dataset, name="groups")
    long = {**BASE, "num_epochs": 500, "patience": 0}
    spec = build_spec(long, grid={"lambda_meta": [0.5, 1.0, 1.5, 2.0]}, max_concurrent=2)
    sweep_id = submit_sweep(store, spec, ref)
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(run_sweep(store, sweep_id, dataset=scenario_dataset)), daemon=True)
    driver.start()
    wait_for(lambda: len([r for r in store.sweep_trials(sweep_id) if r.status == "running" and (r.progress or {}).get("epoch", 0) >= 2]) == 2,
             180, "two trials past their first epoch")
    started = time.monotonic()
    assert cancel_sweep(store, sweep_id, timeout=30) == "cancelled"
    took = time.monotonic() - started
    driver.join(60)
    assert took < 15, f"the sweep took {took:.1f} s to stop"
    trials = store.sweep_trials(sweep_id)
    assert len(trials) == 2 and all(r.status == "cancelled" for r in trials)  # the two queued trials never started
    for run in trials:  # each stopped after a step and kept its last checkpoint
        assert (store.run_dir(run.id) / "weights.safetensors").is_file() and store.final_metrics(run.id).get("valid_mae")
    assert result["status"] == "cancelled"


def _child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(METAREC_HOME=str(home), PYTHONPATH=str(ROOT))
    return env


def test_a_killed_driver_leaves_the_sweep_failed_with_its_finished_trials_kept(tmp_path: Path) -> None:
    home = tmp_path / "home"
    command = [
        sys.executable, "-m", "metarec_core", "sweep", "--dataset", "synthetic", "--grid", "num_epochs=1,400",
        "--set", "patience=0", "--set", "trans_epochs=1", "--set", "first_order=true", "--set", "device=cpu",
        "--max-concurrent", "1", "--background", "--json",
    ]
    done = subprocess.run(command, cwd=ROOT, env=_child_env(home), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sweep_id = json.loads(done.stdout)["sweep_id"]
    store = RunStore(home)
    try:
        wait_for(lambda: [r.status for r in store.sweep_trials(sweep_id)] == ["completed", "running"], 300, "one trial done, the next running")
    finally:
        driver = store.get_sweep(sweep_id).pid
        if driver:
            os.kill(driver, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{driver}") or "Z" in Path(f"/proc/{driver}/stat").read_text().rsplit(")", 1)[1][:3], 10, "the driver to die")
    assert mark_stale_sweeps(store) == [sweep_id]
    sweep = store.get_sweep(sweep_id)
    assert sweep.status == "failed" and "driver stopped unexpectedly" in sweep.error
    finished, unfinished = store.sweep_trials(sweep_id)
    assert finished.status == "completed" and store.check_run(finished.id) == ()
    assert unfinished.status == "failed" and "stopped with its sweep's driver" in unfinished.error
    assert sweep.best["run_id"] == finished.id
    listed = subprocess.run([sys.executable, "-m", "metarec_core", "sweeps", "list", "--json"], cwd=ROOT, env=_child_env(home),
                            capture_output=True, text=True, timeout=60)
    assert [s["status"] for s in json.loads(listed.stdout)] == ["failed"]


def test_asha_stops_poor_trials_early_and_they_keep_their_checkpoint(local_ray, store: RunStore, scenario_dataset) -> None:
    ref = "stored:" + store.save_dataset(scenario_dataset, name="groups")
    spec = build_spec({**BASE, "num_epochs": 4, "patience": 0}, grid={"lambda_meta": [1.0, 0.0], "lambda_l0": [0.04, 30.0]},
                      max_concurrent=1, early_stopping="asha")
    summary = run_sweep(store, submit_sweep(store, spec, ref), dataset=scenario_dataset)
    stopped = [t for t in summary["trials"] if t["status"] == "cancelled"]
    assert summary["status"] == "completed" and stopped, [t["status"] for t in summary["trials"]]
    for trial in stopped:  # stopped at a rung, before its last epoch, with that rung's checkpoint and a reason
        assert "stopped early by ASHA" in trial["error"]
        epochs = set(store.metrics_frame(trial["run_id"], phases=["validate"])["epoch"])
        assert epochs and max(epochs) < 4 and (store.run_dir(trial["run_id"]) / "weights.safetensors").is_file()
    assert summary["best"]["settings"] == {"lambda_meta": 1.0, "lambda_l0": 0.04}
    assert next(t for t in summary["trials"] if t["run_id"] == summary["best"]["run_id"])["status"] == "completed"
