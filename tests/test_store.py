"""Tests of the run store: runs, metrics, artifacts, export/import and saved datasets (no training)."""
from __future__ import annotations

import json
import sqlite3
import threading
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec_core.dataset import Dataset
from metarec_core.errors import DataError
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap
from metarec_core.store import MetricPoint, RunStore, StoreError, parse_dataset_ref

CONFIG = {"num_epochs": 2, "seed": 0, "device": "cpu", "meta": {"inner_steps": 3, "inner_lr": 0.01}}


def small_dataset(seed: int = 0, *, with_tables: bool = True) -> Dataset:
    rng = np.random.default_rng(seed)
    n_users, n_items = 7, 9  # user u6 occurs only in the user table (a cold user)
    pairs = sorted({(int(u), int(i)) for u, i in zip(rng.integers(0, 6, 40), rng.integers(0, n_items, 40))})
    ratings = pd.DataFrame(
        {
            "user": np.array([p[0] for p in pairs], dtype=np.int64),
            "item": np.array([p[1] for p in pairs], dtype=np.int64),
            "rating": rng.integers(1, 6, len(pairs)).astype(np.float32),
            "timestamp": rng.integers(10**9, 2 * 10**9, len(pairs)).astype(np.int64),
        }
    )
    users = IdMap([f"u{i}" for i in range(n_users)])
    items = IdMap([str(100 + i) for i in range(n_items)])
    if with_tables:
        user_table = pd.DataFrame(
            {"gender": rng.choice(["M", "F"], n_users), "age": [23.0, np.nan, 41.0, 35.0, 19.0, 60.0, 30.0]}
        )
        item_table = pd.DataFrame(
            {
                "genres": rng.choice(["Action|Comedy", "Drama", "Comedy|Drama|Romance"], n_items),
                "title": [f"A film number {i} about things" for i in range(n_items)],
                "year": rng.integers(1950, 2000, n_items),
            }
        )
        user_specs = (FeatureSpec("gender", "categorical"), FeatureSpec("age", "numeric"))
        item_specs = (FeatureSpec("genres", "multilabel"), FeatureSpec("title", "text"), FeatureSpec("year", "numeric"))
    else:
        user_table = pd.DataFrame(index=pd.RangeIndex(n_users))
        item_table = pd.DataFrame(index=pd.RangeIndex(n_items))
        user_specs = item_specs = ()
    return Dataset(
        name=f"tiny-{seed}",
        ratings=ratings,
        users=users,
        items=items,
        user_table=user_table,
        item_table=item_table,
        user_features=user_specs,
        item_features=item_specs,
        warnings=("2 duplicate ratings resolved by keeping the last",),
    )


def finish_fake_run(store: RunStore, run_id: str, *, valid_mae: float = 0.9) -> None:
    """Drive a run through its life cycle by hand, as a worker would, with its artifacts."""
    assert store.claim_run(run_id, pid=12345)
    store.append_metrics(
        run_id,
        [
            MetricPoint("meta", 0, 1, "total", 1.5, 1.0),
            MetricPoint("meta", 0, 2, "total", 1.2, 2.0),
            MetricPoint("validate", 0, 2, "valid_mae", valid_mae + 0.1, 2.5),
            MetricPoint("validate", 1, 4, "valid_mae", valid_mae, 4.5),
            MetricPoint("validate", 1, 4, "valid_ndcg@3", 0.7, 4.5),
        ],
    )
    run_dir = store.run_dir(run_id)
    (run_dir / "config.json").write_text(json.dumps(store.get_run(run_id).config))
    (run_dir / "weights.safetensors").write_bytes(b"\x00weights" * 10)
    (run_dir / "context.safetensors").write_bytes(b"\x00context")
    (run_dir / "model.json").write_text('{"users": []}')
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (run_dir / "sub").mkdir()
    (run_dir / "sub" / "embeddings.npy").write_bytes(b"emb")
    assert store.finish(run_id, "completed", device="cpu")


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


def test_metrics_are_kept_per_run_and_final_metrics(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create_run(CONFIG, "builtin:synthetic")
    b = store.create_run({**CONFIG, "num_epochs": 5}, "builtin:synthetic")
    finish_fake_run(store, a, valid_mae=0.8)
    store.claim_run(b)
    store.append_metrics(b, [MetricPoint("meta", 0, 1, "total", 9.0, 1.0)])
    frame = store.metrics_frame(a)
    assert list(frame.columns) == ["phase", "epoch", "step", "key", "value", "time"]
    assert len(frame) == 5 and frame["value"].iloc[0] == pytest.approx(1.5)
    assert str(frame["epoch"].dtype) == "int64"
    assert list(store.metrics_frame(a, phases=["validate"])["key"]) == ["valid_mae", "valid_mae", "valid_ndcg@3"]
    assert len(store.metrics_frame(b)) == 1
    assert store.final_metrics(a) == {"valid_mae": pytest.approx(0.8), "valid_ndcg@3": pytest.approx(0.7)}
    store.append_metrics(a, [MetricPoint("final", 1, 4, "test_mae", 0.77, 5.0)])
    assert store.final_metrics(a) == {"test_mae": pytest.approx(0.77)}  # "final" points win
    assert store.final_metrics(b) == {}


def test_half_written_metric_row_and_missing_artifact_are_reported_not_fatal(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    assert store.check_run(run_id) == ()
    # A metric row with a value that is not a number, and a truncated JSON line.
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("INSERT INTO metrics VALUES (?, 'validate', 2, 6, 'valid_mae', 'garb', 9.0)", (run_id,))
        conn.execute("INSERT INTO metrics VALUES (?, 'validate', NULL, NULL, 'valid_mae', 0.5, NULL)", (run_id,))
    (store.run_dir(run_id) / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')
    (store.run_dir(run_id) / "weights.safetensors").unlink()
    problems = store.check_run(run_id)
    assert any("2 metric row(s)" in p for p in problems)
    assert any("line 2" in p for p in problems)
    assert any("weights.safetensors" in p and "missing" in p for p in problems)
    assert len(store.metrics_frame(run_id)) == 5  # the bad row is left out, the rest read fine
    assert store.final_metrics(run_id)["valid_mae"] == pytest.approx(0.9)
    # Export still works and carries the problems along.
    exported = store.export_run(run_id, tmp_path / "out" / "run.zip")
    with zipfile.ZipFile(exported) as zf:
        manifest = json.loads(zf.read("run.json"))
        assert "artifacts/weights.safetensors" not in zf.namelist()
    assert len(manifest["problems"]) == 3
    # A missing artifact directory is reported too.
    import shutil

    shutil.rmtree(store.run_dir(run_id))
    assert any("directory" in p and "missing" in p for p in store.check_run(run_id))


def test_store_reopens_after_restart_with_every_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    ids = [store.create_run(CONFIG, "builtin:synthetic", name=f"run {i}") for i in range(4)]
    finish_fake_run(store, ids[0])
    store.claim_run(ids[1], pid=999_999)
    store.request_cancel(ids[2])
    store.close()
    del store
    reopened = RunStore(tmp_path)
    runs = {r.id: r for r in reopened.list_runs()}
    assert set(runs) == set(ids)
    assert [runs[i].status for i in ids] == ["completed", "running", "cancelled", "queued"]
    assert len(reopened.metrics_frame(ids[0])) == 5
    with sqlite3.connect(reopened.db_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    RunStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "store.sqlite3") as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="newer metarec"):
        RunStore(tmp_path)


def test_two_threads_write_concurrently_without_mixing(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    a = store.create_run(CONFIG, "builtin:synthetic")
    b = store.create_run(CONFIG, "builtin:synthetic")
    other_session = RunStore(tmp_path)
    errors: list[BaseException] = []

    def write(s: RunStore, run_id: str, value: float) -> None:
        try:
            for step in range(50):
                s.append_metrics(run_id, [MetricPoint("meta", 0, step, "total", value, float(step))])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(store, a, 1.0)), threading.Thread(target=write, args=(other_session, b, 2.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fa, fb = store.metrics_frame(a), store.metrics_frame(b)
    assert len(fa) == len(fb) == 50
    assert set(fa["value"]) == {1.0} and set(fb["value"]) == {2.0}
    assert list(fa["step"]) == list(range(50))


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
    assert {"run.json", "config.json", "metrics.csv", "artifacts/weights.safetensors", "artifacts/sub/embeddings.npy"} <= names
    assert "dataset/ratings.parquet" in names

    other = RunStore(tmp_path / "elsewhere")
    imported = other.import_run(zip_path)
    # (a warning about the config not fitting TrainConfig is expected: these tests use a made-up config)
    assert [w for w in imported.warnings if "config" not in w] == []
    run = other.get_run(imported.run_id)
    original = store.get_run(run_id)
    assert imported.run_id != run_id
    assert (run.name, run.status, run.config, run.device) == (original.name, original.status, original.config, original.device)
    assert run.dataset_ref.startswith("stored:")
    assert other.resolve_dataset(run.dataset_ref).fingerprint == dataset.fingerprint
    pd.testing.assert_frame_equal(other.metrics_frame(run.id), store.metrics_frame(run_id))
    for name in ("weights.safetensors", "model.json", "sub/embeddings.npy"):
        assert (other.run_dir(run.id) / name).read_bytes() == (store.run_dir(run_id) / name).read_bytes()
    # Importing into the same store dedupes the dataset and makes a second run.
    again = store.import_run(zip_path)
    assert store.get_run(again.run_id).dataset_ref == f"stored:{dataset_id}"
    assert len(store.list_datasets()) == 1 and len(store.list_runs()) == 2


def test_import_skips_truncated_metric_lines(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "home")
    run_id = store.create_run(CONFIG, "builtin:synthetic")
    finish_fake_run(store, run_id)
    zip_path = store.export_run(run_id, tmp_path / "run.zip")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(damaged, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "metrics.csv":
                data = data[: data.rstrip().rfind(b",")]  # cut the last line in half
            dst.writestr(info.filename, data)
    imported = store.import_run(damaged)
    assert any("metrics.csv' line 6" in w for w in imported.warnings)
    assert len(store.metrics_frame(imported.run_id)) == 4


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


@pytest.mark.parametrize("with_tables", [True, False])
def test_dataset_round_trip(tmp_path: Path, with_tables: bool) -> None:
    store = RunStore(tmp_path)
    dataset = small_dataset(with_tables=with_tables)
    dataset_id = store.save_dataset(dataset, name="my upload")
    loaded = store.load_dataset(dataset_id)
    pd.testing.assert_frame_equal(loaded.ratings, dataset.ratings)
    pd.testing.assert_frame_equal(loaded.user_table, dataset.user_table)
    pd.testing.assert_frame_equal(loaded.item_table, dataset.item_table)
    assert loaded.users == dataset.users and loaded.items == dataset.items
    assert loaded.user_features == dataset.user_features and loaded.item_features == dataset.item_features
    assert loaded.warnings == dataset.warnings and loaded.implicit == dataset.implicit
    assert loaded.fingerprint == dataset.fingerprint
    assert "u6" in loaded.users  # the cold user survives
    record = store.get_dataset(dataset_id)
    assert (record.name, record.n_users, record.n_ratings) == ("my upload", 7, len(dataset.ratings))
    assert store.save_dataset(dataset, name="same data again") == dataset_id  # deduped by fingerprint
    assert store.save_dataset(small_dataset(seed=1)) != dataset_id
    assert len(store.list_datasets()) == 2


def test_damaged_dataset_files_are_reported(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    dataset_id = store.save_dataset(small_dataset())
    ratings_path = store.datasets_dir / dataset_id / "ratings.parquet"
    frame = pd.read_parquet(ratings_path)
    frame.loc[0, "rating"] = 99.0
    frame.to_parquet(ratings_path)
    with pytest.raises(DataError, match="fingerprint"):
        store.load_dataset(dataset_id)
    ratings_path.unlink()
    with pytest.raises(DataError, match="ratings.parquet"):
        store.load_dataset(dataset_id)


def test_mixed_type_column_cannot_be_saved_and_says_which(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    good = small_dataset()
    table = good.item_table.copy()
    table["year"] = pd.Series([1990, "nineties"] + [2000] * (len(table) - 2), dtype=object)
    bad = Dataset(good.name, good.ratings, good.users, good.items, good.user_table, table, good.user_features, good.item_features)
    with pytest.raises(DataError, match="year"):
        store.save_dataset(bad)
    assert store.list_datasets() == []
    assert [p.name for p in store.datasets_dir.iterdir()] == []  # no half-saved directory left


def test_delete_run_and_dataset(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    dataset_id = store.save_dataset(small_dataset())
    run_id = store.create_run(CONFIG, f"stored:{dataset_id}")
    with pytest.raises(StoreError, match="queued or running"):
        store.delete_dataset(dataset_id, force=True)
    finish_fake_run(store, run_id)
    with pytest.raises(StoreError, match="used by 1 run"):
        store.delete_dataset(dataset_id)
    running = store.create_run(CONFIG, "builtin:synthetic")
    store.claim_run(running)
    with pytest.raises(StoreError, match="cancel it first"):
        store.delete(running)
    store.delete(run_id)
    assert not store.run_dir(run_id).exists()
    assert store.metrics_frame(run_id).empty
    store.delete_dataset(dataset_id)
    assert store.list_datasets() == [] and not (store.datasets_dir / dataset_id).exists()


def test_dataset_refs() -> None:
    assert parse_dataset_ref("builtin:movielens-100k") == ("builtin", "movielens-100k")
    assert parse_dataset_ref("stored:0123456789") == ("stored", "0123456789")
    for bad in ("builtin:ml-1m", "stored:../x", "file:/etc/passwd", "movielens"):
        with pytest.raises(StoreError, match="not valid"):
            parse_dataset_ref(bad)


def test_home_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "h"))
    store = RunStore()
    assert store.home == tmp_path / "h" and store.db_path.is_file()
