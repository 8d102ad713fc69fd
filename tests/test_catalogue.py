"""Tests of dataset references: built-in names checked, saved datasets resolved through the store, the store never loading built-ins."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from metarec_core.catalogue import dataset_fingerprint, parse_dataset_ref, resolve_dataset
from metarec_core.store import RunStore, StoreError
from tests.store_fakes import small_dataset


def test_dataset_refs() -> None:
    assert parse_dataset_ref("builtin:movielens-100k") == ("builtin", "movielens-100k")
    assert parse_dataset_ref("stored:0123456789") == ("stored", "0123456789")
    for bad in ("builtin:ml-1m", "stored:../x", "file:/etc/passwd", "movielens"):
        with pytest.raises(StoreError, match="not valid; use one of builtin:movielens-100k"):
            parse_dataset_ref(bad)


def test_saved_and_built_in_datasets_are_resolved(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    dataset = small_dataset()
    ref = "stored:" + store.save_dataset(dataset)
    assert resolve_dataset(store, ref).fingerprint == dataset.fingerprint
    assert dataset_fingerprint(store, ref) == dataset.fingerprint
    assert dataset_fingerprint(store, "builtin:synthetic") is None
    synthetic = resolve_dataset(store, "builtin:synthetic")
    assert (synthetic.n_users, synthetic.n_items) == (300, 200)
    with pytest.raises(StoreError, match="no saved dataset"):
        dataset_fingerprint(store, "stored:0123456789")


def test_the_store_never_imports_the_built_in_datasets(tmp_path: Path) -> None:
    code = (
        "import sys; from metarec_core.store import RunStore; s = RunStore(sys.argv[1]); "
        "r = s.create_run({'num_epochs': 1}, 'builtin:movielens-100k'); s.get_run(r); s.list_runs(); s.metrics_frame(r); "
        "assert 'metarec_core.builtin' not in sys.modules and 'metarec_core.movielens' not in sys.modules, sorted(sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
