"""Dataset references (``builtin:<name>``, ``stored:<dataset_id>``): checked, fingerprinted and loaded.

The one place that knows both the built-in datasets (:mod:`metarec_core.builtin`,
which may fetch MovieLens-100K) and the datasets saved in a run store; the
store itself only checks a reference's form.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from metarec_core.builtin import BUILTIN_DATASETS, load_builtin
from metarec_core.dataset import Dataset
from metarec_core.store import StoreError, split_dataset_ref

if TYPE_CHECKING:
    from metarec_core.store import RunStore


def parse_dataset_ref(ref: str) -> tuple[str, str]:
    """Split and check a dataset reference.

    Parameters
    ----------
    ref
        ``builtin:<name>`` with a name of :data:`metarec_core.builtin.BUILTIN_DATASETS`
        (``movielens-100k``, ``synthetic``, ...) or ``stored:<dataset_id>``.

    Returns
    -------
    tuple of str
        ``("builtin", name)`` or ``("stored", dataset_id)``.

    Raises
    ------
    StoreError
        If the reference is malformed or names an unknown built-in dataset.
    """
    try:
        kind, value = split_dataset_ref(ref)
    except StoreError:
        kind, value = "", ""
    if (kind == "builtin" and value in BUILTIN_DATASETS) or kind == "stored":
        return kind, value
    known = ", ".join(f"builtin:{b}" for b in BUILTIN_DATASETS)
    raise StoreError(f"dataset reference '{ref}' is not valid; use one of {known} or stored:<dataset id>")


def resolve_dataset(store: RunStore, ref: str) -> Dataset:
    """Load the dataset a reference names: a saved one from ``store``, a built-in one by its module."""
    kind, value = parse_dataset_ref(ref)
    return store.load_dataset(value) if kind == "stored" else load_builtin(value)


def dataset_fingerprint(store: RunStore, ref: str) -> str | None:
    """Fingerprint of a saved dataset reference without loading it (checking it exists); None for built-ins."""
    kind, value = parse_dataset_ref(ref)
    return store.get_dataset(value).fingerprint if kind == "stored" else None
