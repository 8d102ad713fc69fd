"""Session state: the keys pages share, their first values, and the session's current dataset and run."""
from __future__ import annotations

from typing import Any

import streamlit as st

from ui import cache

#: Session-state keys shared between pages.
LANG = "lang"
DATASET = "dataset_key"
RUN = "run_id"
#: True while ``app.py`` runs the page (see :func:`ui.navigation.enter_page`).
ENTRY = "_through_app"

#: The dataset a new session starts on, and the one used when it cannot be fetched.
DEFAULT_DATASET = "builtin:movielens-100k"
FALLBACK_DATASET = "builtin:synthetic"


def init_state() -> None:
    """Give the shared session-state keys their first values."""
    st.session_state.setdefault(LANG, "en")
    st.session_state.setdefault(DATASET, None)
    st.session_state.setdefault(RUN, None)


def dataset_ref() -> str:
    """The reference of the session's dataset (``builtin:…`` or ``stored:…``)."""
    return st.session_state.get(DATASET) or DEFAULT_DATASET


def current_run() -> Any:
    """The session's run record (``None`` when there is none, or it was deleted meanwhile)."""
    run_id = st.session_state.get(RUN)
    if not run_id:
        return None
    from metarec_core.store import StoreError

    try:
        return cache.store().get_run(run_id)
    except StoreError:
        st.session_state[RUN] = None
        return None


def current_recommender() -> Any:
    """The :class:`~metarec_core.recommender.Recommender` of the session's run, or ``None`` before it has weights."""
    run = current_run()
    stamp = None if run is None else cache.weights_stamp(run.id)
    return None if stamp is None else cache.recommender(run.id, stamp)


def current_embeddings() -> Any:
    """The :class:`~metarec_core.embedding_views.RunEmbeddings` of the session's run, or ``None`` before it has weights."""
    run = current_run()
    stamp = None if run is None else cache.weights_stamp(run.id)
    return None if stamp is None else cache.run_embeddings(run.id, stamp)
