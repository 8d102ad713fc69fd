"""The sidebar every page shares: language switch, dataset picker (with its size) and run picker."""
from __future__ import annotations

import streamlit as st

from ui import cache, datasets, runs
from ui.errors import guard
from ui.i18n import LANGUAGES, t
from ui.state import DATASET, DEFAULT_DATASET, LANG, RUN, dataset_ref


def language_switch() -> None:
    """The EN / 简体中文 switch; it keeps its value across pages."""
    st.segmented_control(
        "Language · 语言",
        list(LANGUAGES),
        format_func=LANGUAGES.__getitem__,
        key=LANG,
        required=True,
        persist_state="session",
    )


def _sync_choice(widget_key: str, state_key: str) -> None:
    st.session_state[state_key] = st.session_state[widget_key]


def dataset_picker() -> None:
    """Select box of datasets; choosing one makes it the session's dataset."""
    options = datasets.dataset_options()
    current = dataset_ref()
    if current not in options:
        current = DEFAULT_DATASET
    st.session_state[DATASET] = current
    st.session_state["sidebar_dataset"] = current  # the widget follows the session's choice
    st.selectbox(
        t("sidebar.dataset"),
        list(options),
        format_func=options.__getitem__,
        key="sidebar_dataset",
        on_change=_sync_choice,
        args=("sidebar_dataset", DATASET),
    )


def run_picker() -> None:
    """Select box of the current dataset's runs; a new session starts on the dataset's default run (:mod:`metarec_core.default_runs`)."""
    ref = dataset_ref()
    listed = runs.runs_for(ref)
    if not listed:
        st.session_state[RUN] = None
        st.caption(t("sidebar.no_runs"))
        return
    ids = [r.id for r in listed]
    labels = {r.id: runs.run_label(r) for r in listed}
    current = st.session_state.get(RUN)
    if current not in ids:
        from metarec_core.default_runs import default_run

        usable = [r.id for r in listed if r.status == "completed" and runs.has_weights(r.id)] or ids
        current = default_run(cache.store(), ref) or usable[0]
    st.session_state[RUN] = current
    st.session_state["sidebar_run"] = current
    st.selectbox(
        t("sidebar.run"), ids, format_func=labels.__getitem__, key="sidebar_run",
        on_change=_sync_choice, args=("sidebar_run", RUN),
    )


def sidebar() -> None:
    """Draw the shared sidebar: language, current dataset (with its size), current run."""
    with st.sidebar:
        language_switch()
        with guard():
            dataset_picker()
            dataset = datasets.current_dataset()
            if dataset is not None:
                st.caption(t("sidebar.counts", users=dataset.n_users, items=dataset.n_items, ratings=len(dataset.ratings)))
            note = st.session_state.get(datasets.NOTE)
            if note:
                st.info(note, icon=":material/info:")
            run_picker()
