"""Runs in the store: listing, typed configs, starting training, background evaluations, deleting."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from metarec_core.errors import ConfigError
from ui import cache
from ui.i18n import t
from ui.state import RUN, dataset_ref

logger = logging.getLogger(__name__)


def runs_for(dataset_ref: str | None = None) -> list[Any]:
    """Runs in the store, newest first; only those on ``dataset_ref`` when given."""
    runs = cache.store().list_runs()
    return [r for r in runs if dataset_ref is None or r.dataset_ref == dataset_ref]


def has_weights(run_id: str) -> bool:
    """Whether a run has saved weights (completed, or stopped after a checkpoint)."""
    return cache.weights_stamp(run_id) is not None


def run_label(run: Any) -> str:
    """``name · status`` of a run record, in the current language; a finished run without its weights says so."""
    missing = run.status in ("completed", "cancelled") and not has_weights(run.id)
    return f"{run.name} · {t(f'status.{run.status}')}" + (f" · {t('status.files_missing')}" if missing else "")


def run_config(run: Any) -> Any:
    """A run record's settings as a :class:`~metarec_core.training.TrainConfig`, or ``None`` when they do not fit this version.

    Settings a run's ``config.json`` predates get the values it was trained
    with (:func:`metarec_core.artifacts.saved_config_values`), as when the run is loaded.
    """
    from metarec_core.artifacts import saved_config_values
    from metarec_core.configs import config_from_dict
    from metarec_core.train_config import TrainConfig

    try:
        return config_from_dict(TrainConfig, saved_config_values(dict(run.config)))
    except ConfigError as exc:  # an imported run of another version: shown, not described
        logger.info("run %s: settings do not fit this version (%s)", run.id, exc)
        return None


def run_kind(run: Any) -> str | None:
    """What a run record's objective keeps (:attr:`TrainConfig.kind <metarec_core.training.TrainConfig.kind>`), ``None`` when unknown."""
    config = run_config(run)
    return None if config is None else config.kind


def validation_key(metrics: pd.DataFrame) -> str:
    """The validation metric a run records: ``valid_mae`` on ratings, ``valid_auc`` on implicit data."""
    keys = set(metrics.loc[metrics["phase"] == "validate", "key"]) if len(metrics) else set()
    return "valid_auc" if "valid_auc" in keys and "valid_mae" not in keys else "valid_mae"


def comparison_run(run: Any, kind: str, runs: list[Any]) -> Any:
    """The newest completed run with weights whose objective is ``kind`` among ``runs`` (newest first; not ``run``), or ``None``."""
    for other in runs:
        if other.id != run.id and other.status == "completed" and run_kind(other) == kind and has_weights(other.id):
            return other
    return None


def start_run(config: Any, *, name: str | None = None) -> str:
    """Queue a training run on the session's dataset, start workers, and make it the current run.

    Parameters
    ----------
    config
        A ``TrainConfig`` or a dict of its settings (validated by the core).
    name
        Display name (default: the dataset and the time).

    Returns
    -------
    str
        The run ID.
    """
    from metarec_core import jobs

    ref = dataset_ref()
    run_id = jobs.submit(cache.store(), config, ref, name=name)
    jobs.dispatch(cache.store())
    st.session_state[RUN] = run_id
    return run_id


def evaluation_dir(run_id: str) -> Path:
    """Where a run's evaluation (shots curve, per-user gains) is kept."""
    from metarec_core.jobs import evaluation_dir as folder

    return folder(cache.store(), run_id)


def start_evaluation(run: Any) -> None:
    """Evaluate a run in a background process (it outlives this server); the page polls :func:`evaluation_state`."""
    from metarec_core.jobs import start_evaluation as start

    start(cache.store(), run.id)


def delete_run(run_id: str) -> None:
    """Delete a run and its files, stopping its background evaluation first."""
    from metarec_core.jobs import delete_run as delete

    delete(cache.store(), run_id)


def evaluation_state(run_id: str) -> Any:
    """The run's :class:`~metarec_core.jobs.EvaluationState`: ``status`` ``done``, ``running``, ``failed`` (with ``error``) or ``none``."""
    from metarec_core.jobs import evaluation_state as state

    return state(cache.store(), run_id)


def load_evaluation(run_id: str) -> Any:
    """The saved :class:`~metarec_core.evaluation_report.EvaluationResult` of a run, or ``None``."""
    return cache.evaluation(evaluation_dir(run_id))


def run_baselines(run_id: str) -> dict[str, dict[str, float]]:
    """The bias and ALS baselines scored on a run's own split when it completed (``{}`` before that, or on implicit data)."""
    from metarec_core.split_baselines import read_run_baselines

    return read_run_baselines(cache.store().run_dir(run_id))


def active_runs() -> list[Any]:
    """Queued and running runs, oldest first (the order the queue starts them)."""
    return list(reversed(cache.store().list_runs(("queued", "running"))))
