"""The datasets a session can pick, and the session's current one (fetched with a visible status on first use)."""
from __future__ import annotations

from typing import Any

import streamlit as st

from metarec_core.errors import MetarecError
from ui import cache
from ui.errors import show_error
from ui.i18n import t
from ui.markup import plain
from ui.state import DATASET, FALLBACK_DATASET, dataset_ref

#: Built-in dataset references and the UI string key of their names.
BUILTIN_DATASETS: dict[str, str] = {
    "builtin:movielens-100k": "dataset.movielens",
    "builtin:movielens-1m": "dataset.movielens_1m",
    "builtin:synthetic": "dataset.synthetic",
    "builtin:synthetic-two-domains": "dataset.synthetic_two",
}
#: Session-state key of the note shown when MovieLens-100K could not be fetched.
NOTE = "dataset_note"


def movielens_cached() -> bool:
    """Whether MovieLens-100K is already in the local cache (no fetch needed)."""
    from metarec_core.movielens import movielens_cache_dir

    return movielens_cache_dir().is_dir()


def dataset_options() -> dict[str, str]:
    """Every dataset a user can pick: reference -> display name (built-ins first, then saved ones)."""
    options = {ref: t(key) for ref, key in BUILTIN_DATASETS.items()}
    for record in cache.store().list_datasets():
        options[record.ref] = t("dataset.saved", name=record.name, n=record.n_ratings)
    return options


def current_dataset() -> Any:
    """The session's dataset, loading it on first use.

    The first start fetches MovieLens-100K with a visible status; if that
    fails the synthetic scenario is used and the reason is kept as a note
    for the sidebar. Returns ``None`` (after showing an error) when the
    chosen dataset cannot be loaded.
    """
    ref = dataset_ref()
    if ref == "builtin:movielens-100k" and not movielens_cached():
        with st.status(t("dataset.fetching"), expanded=False) as status:
            try:
                dataset = cache.load_dataset_ref(ref)
            except MetarecError as exc:
                status.update(label=t("dataset.fetch_failed"), state="error")
                st.session_state[NOTE] = t("dataset.fallback_note", reason=plain(exc))
                st.session_state[DATASET] = ref = FALLBACK_DATASET
            else:
                status.update(label=t("dataset.fetched"), state="complete")
                st.session_state[DATASET] = ref
                return dataset
    try:
        dataset = cache.load_dataset_ref(ref)
    except MetarecError as exc:
        show_error(exc)
        return None
    st.session_state[DATASET] = ref
    return dataset


def run_dataset(run: Any) -> Any:
    """The dataset a run was trained on (loaded once per server)."""
    return cache.load_dataset_ref(run.dataset_ref)
