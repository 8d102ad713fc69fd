"""Tests of rebuilding a store's database from its run and dataset folders (``runs recover``)."""
from __future__ import annotations

import gc
import json
import sqlite3
from pathlib import Path

import pytest

from metarec_core.cli import main
from metarec_core.errors import StoreDamagedError
from metarec_core.store import RunStore
from metarec_core.store.recovery import UNKNOWN_DATASET_REF, recover_store
from metarec_core.store.runs import RUN_RECORD_FILE
from tests.store_fakes import CONFIG, append_events, event, finish_fake_run, small_dataset


def finished_store(home: Path) -> dict:
    """A store with a saved dataset, two completed runs (one renamed), a cancelled one and a queued one."""
    store = RunStore(home)
    dataset_id = store.save_dataset(small_dataset(), name="my ratings")
    ids = [store.create_run(CONFIG, f"stored:{dataset_id}", name=f"run {i}") for i in range(3)]
    ids.append(store.create_run(CONFIG, "builtin:synthetic", name="still queued"))
    for run_id in ids[:3]:
        finish_fake_run(store, run_id)
        append_events(store.run_dir(run_id), [event("done", 2, 4, time=5.0)])
    (store.run_dir(ids[2]) / "result.json").write_text(json.dumps({"final_metrics": {}, "stopped": True, "saved_at": 6.0}))
    store.rename(ids[0], "the good one")
    expected = {r.id: (r.name, r.dataset_ref, r.config, r.created) for r in store.list_runs()}
    store.close()
    del store
    gc.collect()
    return {"dataset": dataset_id, "ids": ids, "expected": expected}


@pytest.mark.parametrize("damage", ["zero length", "random bytes", "missing"])
def test_a_lost_database_is_rebuilt_from_the_folders_and_kept_aside(tmp_path: Path, damage: str) -> None:
    made = finished_store(tmp_path)
    db = tmp_path / "store.sqlite3"
    if damage == "zero length":
        db.write_bytes(b"")
    elif damage == "random bytes":
        db.write_bytes(b"\x8f\x13 junk " * 2000)
    else:
        db.unlink()
    before = db.read_bytes() if db.exists() else None
    with pytest.raises(StoreDamagedError):
        RunStore(tmp_path)
    report = recover_store(tmp_path)
    if before is None:
        assert report.kept_aside is None
    else:  # the damaged file is kept, byte for byte
        assert report.kept_aside is not None and report.kept_aside.name.startswith("store.sqlite3.damaged-")
        assert report.kept_aside.read_bytes() == before
    store = RunStore(tmp_path)
    runs = {r.id: r for r in store.list_runs()}
    assert set(runs) == set(made["ids"]) and set(report.runs) == set(made["ids"])
    for run_id, (name, ref, config, created) in made["expected"].items():
        assert (runs[run_id].name, runs[run_id].dataset_ref, runs[run_id].config) == (name, ref, config)
        assert runs[run_id].created == pytest.approx(created)
    ids = made["ids"]
    assert [runs[i].status for i in ids] == ["completed", "completed", "cancelled", "failed"]
    assert "training had not finished" in runs[ids[3]].error
    assert [d.id for d in store.list_datasets()] == [made["dataset"]] and report.datasets == (made["dataset"],)
    assert store.load_dataset(made["dataset"]).fingerprint == small_dataset().fingerprint
    assert store.final_metrics(ids[0])  # metrics come from the folder as before


def test_folders_without_their_own_record_are_recovered_from_what_they_hold(tmp_path: Path) -> None:
    made = finished_store(tmp_path)
    ids = made["ids"]
    store = RunStore(tmp_path)
    fingerprint = store.get_dataset(made["dataset"]).fingerprint
    (store.run_dir(ids[0]) / "model.json").write_text(json.dumps({"dataset_name": "my ratings", "fingerprint": fingerprint}))
    (store.run_dir(ids[1]) / "model.json").write_text(json.dumps({"dataset_name": "gone", "fingerprint": "0" * 16}))
    (store.run_dir(ids[2]) / "config.json").unlink()
    for run_id in ids:
        (store.run_dir(run_id) / RUN_RECORD_FILE).unlink()  # folders written before run.json existed
    store.close()
    (tmp_path / "store.sqlite3").write_bytes(b"")
    report = recover_store(tmp_path)
    runs = {r.id: r for r in RunStore(tmp_path).list_runs()}
    assert runs[ids[0]].dataset_ref == f"stored:{made['dataset']}" and runs[ids[0]].config == CONFIG
    assert "(recovered)" in runs[ids[0]].name
    assert runs[ids[1]].dataset_ref == UNKNOWN_DATASET_REF
    assert ids[2] not in runs and ids[3] not in runs  # nothing says how they were trained
    notes = " | ".join(report.notes)
    assert f"run {ids[1]}: its dataset ('gone')" in notes
    assert f"run folder '{tmp_path / 'runs' / ids[2]}' has neither a readable run.json nor config.json" in notes
    assert (tmp_path / "runs" / ids[2] / "weights.safetensors").is_file()  # left as it was


def test_a_healthy_store_gets_only_the_folders_it_lacks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    made = finished_store(tmp_path)
    lost = made["ids"][1]
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        conn.execute("DELETE FROM jobs WHERE run_id = ?", (lost,))
        conn.execute("DELETE FROM runs WHERE id = ?", (lost,))
    assert main(["runs", "list", "--home", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert lost not in captured.out
    assert f"runs/ holds 1 run folder(s) the store has no record of ({lost})" in captured.err and "runs recover" in captured.err
    assert main(["runs", "recover", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recovered 1 run(s) and 0 dataset(s)" in out and "kept as" not in out
    assert not list(tmp_path.glob("store.sqlite3.damaged-*"))
    assert RunStore(tmp_path).get_run(lost).name == "run 1"
    assert main(["runs", "list", "--home", str(tmp_path)]) == 0
    assert "no record of" not in capsys.readouterr().err


def test_recover_on_the_command_line_after_an_empty_database(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    made = finished_store(tmp_path)
    (tmp_path / "store.sqlite3").write_bytes(b"")
    assert main(["runs", "show", made["ids"][0], "--home", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "is empty but runs/ holds 4 run folder(s)" in err and "runs recover" in err and "no run" not in err
    assert main(["runs", "recover", "--home", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the old database is kept as" in out and "recovered 4 run(s) and 1 dataset(s)" in out
    assert main(["runs", "show", made["ids"][0], "--home", str(tmp_path)]) == 0
    assert "the good one" in capsys.readouterr().out


def test_an_imported_run_keeps_its_own_record(tmp_path: Path) -> None:
    made = finished_store(tmp_path / "a")
    store = RunStore(tmp_path / "a")
    store.export_run(made["ids"][0], tmp_path / "run.zip")
    other = RunStore(tmp_path / "b")
    imported = other.import_run(tmp_path / "run.zip").run_id
    record = json.loads((other.run_dir(imported) / RUN_RECORD_FILE).read_text())
    assert record["id"] == imported and record["dataset_ref"] == other.get_run(imported).dataset_ref
