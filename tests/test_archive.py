"""Tests of run exports: zip round trip with the saved dataset, damaged metrics, unsafe or foreign zip files (no training)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from metarec_core.catalogue import resolve_dataset
from metarec_core.errors import DataError
from metarec_core.store import RunStore, StoreError
from tests.store_fakes import CONFIG, finish_fake_run, small_dataset


def rewrite_zip(source: Path, target: Path, *, change: dict[str, bytes | None]) -> Path:
    """A copy of a zip file with some members replaced (or left out, for None)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = change.get(info.filename, src.read(info))
            if data is not None:
                dst.writestr(info.filename, data)
    return target


def test_export_import_round_trip_with_saved_dataset(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "home")
    dataset = small_dataset()
    dataset_id = store.save_dataset(dataset, name="upload")
    run_id = store.create_run(CONFIG, f"stored:{dataset_id}", name="exported", dataset_fingerprint=dataset.fingerprint)
    with pytest.raises(StoreError, match="finished"):
        store.export_run(run_id, tmp_path / "early.zip")
    finish_fake_run(store, run_id)
    zip_path = store.export_run(run_id, tmp_path / "run.zip")
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        exported_csv = pd.read_csv(zf.open("metrics.csv"))
    assert {"run.json", "config.json", "metrics.csv", "artifacts/weights.safetensors", "artifacts/metrics.jsonl",
            "artifacts/sub/embeddings.npy", "dataset/ratings.parquet"} <= names
    assert len(exported_csv) == 5 and list(exported_csv.columns) == ["phase", "epoch", "step", "key", "value", "time"]

    other = RunStore(tmp_path / "elsewhere")
    imported = other.import_run(zip_path)
    # (a warning about the config not fitting TrainConfig is expected: these tests use a made-up config)
    assert [w for w in imported.warnings if "config" not in w] == []
    run = other.get_run(imported.run_id)
    original = store.get_run(run_id)
    assert imported.run_id != run_id
    assert (run.name, run.status, run.config, run.device) == (original.name, original.status, original.config, original.device)
    assert (run.created, run.started, run.finished) == (original.created, original.started, original.finished)
    assert run.dataset_ref.startswith("stored:")
    assert resolve_dataset(other, run.dataset_ref).fingerprint == dataset.fingerprint
    pd.testing.assert_frame_equal(other.metrics_frame(run.id), store.metrics_frame(run_id))
    for name in ("weights.safetensors", "model.json", "metrics.jsonl", "sub/embeddings.npy"):
        assert (other.run_dir(run.id) / name).read_bytes() == (store.run_dir(run_id) / name).read_bytes()
    # Importing into the same store dedupes the dataset and makes a second run.
    again = store.import_run(zip_path)
    assert store.get_run(again.run_id).dataset_ref == f"stored:{dataset_id}"
    assert len(store.list_datasets()) == 1 and len(store.list_runs()) == 2


def test_problems_at_export_travel_with_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "home")
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    (store.run_dir(run_id) / "weights.safetensors").unlink()
    with open(store.run_dir(run_id) / "metrics.jsonl", "a") as handle:
        handle.write('{"phase": "meta", "ep')
    exported = store.export_run(run_id, tmp_path / "out" / "run.zip")
    with zipfile.ZipFile(exported) as zf:
        manifest = json.loads(zf.read("run.json"))
        assert "artifacts/weights.safetensors" not in zf.namelist()
    assert len(manifest["problems"]) == 2
    imported = RunStore(tmp_path / "other").import_run(exported)
    assert sum(w.startswith("at export: ") for w in imported.warnings) == 2
    assert any("weights.safetensors missing from the export" in w for w in imported.warnings)


def test_import_skips_truncated_metric_lines(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "home")
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    zip_path = store.export_run(run_id, tmp_path / "run.zip")
    jsonl = (store.run_dir(run_id) / "metrics.jsonl").read_bytes()
    damaged = rewrite_zip(zip_path, tmp_path / "damaged.zip", change={"artifacts/metrics.jsonl": jsonl[: jsonl.rstrip().rfind(b",")]})
    imported = store.import_run(damaged)
    assert any("'metrics.jsonl' line 4 is incomplete" in w for w in imported.warnings)
    assert len(store.metrics_frame(imported.run_id)) == 3  # the last line (two values) is left out


def test_an_export_without_metrics_jsonl_gets_it_from_metrics_csv(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "home")
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    zip_path = store.export_run(run_id, tmp_path / "run.zip")
    with zipfile.ZipFile(zip_path) as zf:
        csv_text = zf.read("metrics.csv")
    cut = rewrite_zip(zip_path, tmp_path / "cut.zip", change={"artifacts/metrics.jsonl": None, "metrics.csv": csv_text[: csv_text.rstrip().rfind(b",")]})
    imported = store.import_run(cut)
    assert any("metrics.csv' line 6" in w for w in imported.warnings)
    frame = store.metrics_frame(imported.run_id)
    pd.testing.assert_frame_equal(frame, store.metrics_frame(run_id).iloc[:4])
    assert store.final_metrics(imported.run_id) == {"valid_mae": pytest.approx(0.9)}  # from the rebuilt file
    bare = rewrite_zip(zip_path, tmp_path / "bare.zip", change={"artifacts/metrics.jsonl": None, "metrics.csv": None})
    imported = store.import_run(bare)
    assert any("without metrics" in w for w in imported.warnings) and store.metrics_frame(imported.run_id).empty


@pytest.mark.parametrize(
    "member",
    ["../evil.txt", "/abs/path", "artifacts/../../evil", "C:/windows/evil", "artifacts\\..\\evil", "other/file", "dataset/x.parquet"],
)
def test_import_refuses_unsafe_member_names(tmp_path: Path, member: str) -> None:
    store = RunStore(tmp_path / "home")
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    zip_path = store.export_run(run_id, tmp_path / "run.zip")
    with zipfile.ZipFile(zip_path, "a") as zf:
        zf.writestr(member, b"x")
    with pytest.raises(DataError):
        store.import_run(zip_path)
    assert len(store.list_runs()) == 1
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "home" / "evil").exists()


def test_import_refuses_non_exports(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        store.import_run(tmp_path / "junk.zip")
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("config.json", "{}")
    with pytest.raises(DataError, match="run.json"):
        store.import_run(tmp_path / "empty.zip")
    assert store.list_runs() == []


def _flip_member_byte(path: Path, member: str) -> None:
    """Change one byte of a stored (uncompressed) member's data: its CRC-32 no longer matches."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(data[info.header_offset + 26: info.header_offset + 28], "little"), int.from_bytes(
        data[info.header_offset + 28: info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("member", ["config.json", "artifacts/weights.safetensors", "dataset/ratings.parquet"])
def test_a_member_whose_checksum_lies_is_refused_naming_it(tmp_path: Path, member: str) -> None:
    store = RunStore(tmp_path / "home")
    dataset_id = store.save_dataset(small_dataset(), name="upload")
    run_id = store.create_run(CONFIG, f"stored:{dataset_id}")
    finish_fake_run(store, run_id)
    exported = store.export_run(run_id, tmp_path / "run.zip")
    stored = rewrite_zip(exported, tmp_path / "stored.zip", change={})  # writestr stores members uncompressed
    _flip_member_byte(stored, member)
    other = RunStore(tmp_path / "other")
    with pytest.raises(DataError) as caught:
        other.import_run(stored)
    message = str(caught.value)
    assert message.startswith("file 'stored.zip': ") and f"entry '{member}' cannot be read (BadZipFile: Bad CRC-32" in message
    assert "export the run again" in message and "nothing was imported" in message
    assert other.list_runs() == [] and list(other.runs_dir.iterdir()) == []
