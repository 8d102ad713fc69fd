"""The run a new session opens on: the pinned one, else the newest completed run of the default kind, never a side experiment."""
from __future__ import annotations

import time

import pytest

from metarec_core.cli import main
from metarec_core.default_runs import default_run, pin_default_run, pinned_run
from metarec_core.errors import StoreError
from metarec_core.store import RunStore
from tests.store_fakes import finish_fake_run

CONFIG = {"num_epochs": 2, "seed": 0, "device": "cpu"}

REF = "builtin:synthetic"


def completed(store: RunStore, config: dict, name: str) -> str:
    run_id = store.create_run(config, REF, name=name)
    finish_fake_run(store, run_id)
    time.sleep(0.01)  # distinct creation times: newest first is well defined
    return run_id


def test_a_newer_transfer_only_run_does_not_become_the_default(tmp_path) -> None:
    store = RunStore(tmp_path)
    assert default_run(store, REF) is None
    both = completed(store, CONFIG, "default model")
    transfer = completed(store, {**CONFIG, "lambda_meta": 0.0}, "transfer only")
    assert default_run(store, REF) == both
    assert pin_default_run(store, transfer) == REF
    assert default_run(store, REF) == transfer == pinned_run(store, REF)
    assert default_run(store, "builtin:movielens-100k") is None  # pins are per dataset


def test_only_completed_runs_can_be_pinned_and_a_deleted_pin_falls_back(tmp_path) -> None:
    store = RunStore(tmp_path)
    queued = store.create_run(CONFIG, REF, name="queued")
    with pytest.raises(StoreError, match="only a completed run"):
        pin_default_run(store, queued)
    only_transfer = completed(store, {**CONFIG, "lambda_meta": 0.0}, "transfer only")
    assert default_run(store, REF) == only_transfer  # no run of the default kind: the newest completed one
    pin_default_run(store, only_transfer)
    store.delete(only_transfer)
    assert pinned_run(store, REF) is None and default_run(store, REF) is None


def test_cli_shows_and_pins_the_default(tmp_path, capsys) -> None:
    store = RunStore(tmp_path)
    both = completed(store, CONFIG, "default model")
    other = completed(store, {**CONFIG, "lambda_meta": 0.0}, "transfer only")
    assert main(["runs", "default", "--home", str(tmp_path), "--dataset", REF]) == 0
    assert both in capsys.readouterr().out
    assert main(["runs", "default", other, "--home", str(tmp_path)]) == 0
    assert default_run(store, REF) == other
