"""The run a new session opens on, per dataset: the one pinned as default, else the newest completed run of the default kind."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from metarec_core.artifacts import WEIGHTS_FILE, saved_config_values
from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError, StoreError
from metarec_core.store import RunStore
from metarec_core.train_config import TrainConfig

logger = logging.getLogger(__name__)

#: The file in a store's home that holds the pins: ``{dataset reference: run ID}``.
PINS_FILE = "default_runs.json"


def _pins(store: RunStore) -> dict[str, str]:
    try:
        pins = json.loads((store.home / PINS_FILE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        logger.warning("%s unreadable (%s); no run is pinned", PINS_FILE, exc)
        return {}
    return {str(k): str(v) for k, v in pins.items()} if isinstance(pins, dict) else {}


def _usable(store: RunStore, run: Any) -> bool:
    return run.status == "completed" and (store.run_dir(run.id) / WEIGHTS_FILE).is_file()


def pin_default_run(store: RunStore, run_id: str) -> str:
    """Make a completed run with weights the default of its dataset; returns the dataset reference.

    Raises
    ------
    StoreError
        The store has no such run, or it has not completed with weights.
    """
    run = store.get_run(run_id)
    if not _usable(store, run):
        raise StoreError(f"run {run.id} is {run.status} without saved weights; only a completed run can be the default")
    pins = _pins(store) | {run.dataset_ref: run.id}
    partial = store.home / f".{PINS_FILE}.{os.getpid()}.partial"
    partial.write_text(json.dumps(pins, indent=1, sort_keys=True))
    os.replace(partial, store.home / PINS_FILE)
    return run.dataset_ref


def pinned_run(store: RunStore, dataset_ref: str) -> str | None:
    """The run pinned as the dataset's default, if it is still there and usable."""
    run_id = _pins(store).get(dataset_ref)
    if run_id is None:
        return None
    try:
        run = store.get_run(run_id)
    except StoreError:
        return None
    return run.id if _usable(store, run) else None


def _kind(run: Any) -> str | None:
    try:
        return config_from_dict(TrainConfig, saved_config_values(dict(run.config))).kind
    except (ConfigError, TypeError, ValueError):
        return None


def default_run(store: RunStore, dataset_ref: str) -> str | None:
    """The run a new session on ``dataset_ref`` opens on.

    The pinned run (:func:`pin_default_run`); else the newest completed run with
    weights of the default kind (meta + transfer, as ``TrainConfig()`` trains), so
    a transfer-only experiment does not become every visitor's run; else the
    newest completed run with weights; else ``None``.
    """
    pinned = pinned_run(store, dataset_ref)
    if pinned is not None:
        return pinned
    usable = [r for r in store.list_runs("completed") if r.dataset_ref == dataset_ref and _usable(store, r)]
    default_kind = TrainConfig().kind
    for run in usable:
        if _kind(run) == default_kind:
            return run.id
    return usable[0].id if usable else None
