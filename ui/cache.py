"""What the server keeps between reruns and sessions: the run store, datasets, recommenders, embeddings, evaluations."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import streamlit as st

from metarec_core.artifacts import WEIGHTS_FILE


@st.cache_resource(show_spinner=False)
def _store_at(home: str) -> Any:
    from metarec_core.store import RunStore

    return RunStore(home)


def store() -> Any:
    """The run store (``METAREC_HOME``), opened once per home; connections are per thread."""
    from metarec_core.store import default_home

    return _store_at(str(default_home()))


def forget_store() -> None:
    """Drop the opened stores and what was read from them (after the store was rebuilt)."""
    st.cache_resource.clear()


@st.cache_resource(show_spinner=False, max_entries=6)
def load_dataset_ref(ref: str) -> Any:
    """Load a dataset by reference once per server process (shared by every session).

    Parameters
    ----------
    ref
        ``builtin:<name>`` or ``stored:<dataset id>``.
    """
    from metarec_core.catalogue import resolve_dataset

    return resolve_dataset(store(), ref)


def weights_stamp(run_id: str) -> float | None:
    """When a run's weights were last written (``None``: none yet); part of every cache key of a run.

    A training run rewrites its weights every epoch, so a cached model of it is
    replaced as soon as newer weights are on disk.
    """
    path = store().run_dir(run_id) / WEIGHTS_FILE
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


@st.cache_resource(show_spinner=False, max_entries=4)
def recommender(run_id: str, weights_mtime: float) -> Any:
    """A :class:`~metarec_core.recommender.Recommender` of a run, for one version of its weights."""
    from metarec_core.recommender import Recommender

    return Recommender.from_run_dir(store().run_dir(run_id))


@st.cache_resource(show_spinner=False, max_entries=3)
def run_embeddings(run_id: str, weights_mtime: float) -> Any:
    """The run's :func:`~metarec_core.embedding_views.run_embeddings`, once per run and weights version."""
    from metarec_core.embedding_views import run_embeddings as compute

    run = store().get_run(run_id)
    return compute(recommender(run_id, weights_mtime), load_dataset_ref(run.dataset_ref))


@st.cache_resource(show_spinner=False, max_entries=8)
def _evaluation_at(path: str, mtime: float) -> Any:
    from metarec_core.evaluation_report import EvaluationResult

    return EvaluationResult.load(path)


def evaluation(folder: Path) -> Any:
    """The :class:`~metarec_core.evaluation_report.EvaluationResult` saved in ``folder`` (re-read when it changes), or ``None``."""
    results = folder / "results.parquet"
    if not results.is_file():
        return None
    return _evaluation_at(str(folder), results.stat().st_mtime)


@functools.cache
def gpu_name() -> str:
    """The CUDA device's name, or ``""`` when this machine has no usable GPU."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
