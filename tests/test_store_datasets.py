"""Tests of saved datasets: Parquet round trip, dedupe by fingerprint, damaged files, deletion rules (no training)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from metarec_core.dataset import Dataset
from metarec_core.errors import DataError
from metarec_core.store import RunStore, StoreError, split_dataset_ref
from tests.store_fakes import CONFIG, finish_fake_run, small_dataset


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
    assert (record.name, record.n_users, record.n_ratings, record.ref) == ("my upload", 7, len(dataset.ratings), f"stored:{dataset_id}")
    assert store.save_dataset(dataset, name="same data again") == dataset_id  # deduped by fingerprint
    assert store.save_dataset(small_dataset(seed=1)) != dataset_id
    assert len(store.list_datasets()) == 2
    run_id = store.create_run(CONFIG, f"stored:{dataset_id}")
    assert store.get_run(run_id).name.startswith("my upload ")  # a run is named after its dataset by default


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
    with pytest.raises(StoreError, match="no saved dataset"):
        store.load_dataset("0123456789")


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


def test_a_dataset_in_use_is_deleted_only_when_allowed(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    dataset_id = store.save_dataset(small_dataset())
    run_id = store.create_run(CONFIG, f"stored:{dataset_id}")
    with pytest.raises(StoreError, match="queued or running"):
        store.delete_dataset(dataset_id, force=True)
    finish_fake_run(store, run_id)
    assert [r.id for r in store.runs_using_dataset(dataset_id)] == [run_id]
    with pytest.raises(StoreError, match="used by 1 run"):
        store.delete_dataset(dataset_id)
    store.delete(run_id)
    store.delete_dataset(dataset_id)
    assert store.list_datasets() == [] and not (store.datasets_dir / dataset_id).exists()
    other = store.save_dataset(small_dataset(seed=2))
    finish_fake_run(store, store.create_run(CONFIG, f"stored:{other}"))
    store.delete_dataset(other, force=True)  # the run keeps its results
    assert len(store.list_runs()) == 1 and store.list_datasets() == []


def test_dataset_refs_are_checked_for_form() -> None:
    assert split_dataset_ref("builtin:movielens-100k") == ("builtin", "movielens-100k")
    assert split_dataset_ref("builtin:some-future-set") == ("builtin", "some-future-set")  # names: metarec_core.catalogue
    assert split_dataset_ref("stored:0123456789") == ("stored", "0123456789")
    for bad in ("stored:../x", "builtin:../x", "file:/etc/passwd", "movielens", "builtin:"):
        with pytest.raises(StoreError, match="not valid"):
            split_dataset_ref(bad)
