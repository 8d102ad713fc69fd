"""The baselines beside every run: bias and ALS fold-in scored once per dataset and split, kept with each run."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from metarec_core.dataset import Dataset
from metarec_core.evaluation import evaluate_baselines
from metarec_core.evaluation_report import EvaluationConfig
from metarec_core.train_config import TrainConfig, resolve_scenario

logger = logging.getLogger(__name__)

#: The baselines every run is shown beside: the bias model and ALS with its fold-in (explicit ratings only).
SPLIT_BASELINES = ("bias", "mf")
#: The file in a run directory holding its baselines' test metrics.
BASELINES_FILE = "baselines.json"
#: Metrics kept, under the names of a run's final metrics.
_KEPT = ("mae", "rmse", "ndcg@3", "ndcg@10", "auc")


def split_key(dataset: Dataset, config: TrainConfig) -> str:
    """What the baselines' scores depend on: the data and the split (not the model's settings); ``scenario="auto"`` resolved as training does."""
    config = resolve_scenario(config, dataset).config
    parts = (dataset.fingerprint, config.scenario, f"{config.cold_fraction:g}", str(config.seed), str(config.eval_support_size))
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def score_split_baselines(dataset: Dataset, config: TrainConfig, *, cache_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """The baselines' test metrics on the split a run with ``config`` holds out, as the run's own final metrics are named.

    Each baseline is fitted on the split's training rows and folds in every new
    user's ``eval_support_size`` support ratings (:func:`metarec_core.evaluation.evaluate_baselines`
    at K = ``eval_support_size``, the run's seed, scenario and cold fraction), so its
    ``test_mae`` is measured on the same users and query rows as the run's. On ML-100K
    this takes about 10 s on two CPU cores, so the result is cached per :func:`split_key`:
    runs that differ only in model settings share one measurement.

    Parameters
    ----------
    dataset
        The run's dataset.
    config
        The run's settings (only the split's fields matter).
    cache_dir
        Folder of cached results (``<split key>.json``); ``None`` computes every time.

    Returns
    -------
    dict
        ``{baseline: {"test_mae": ..., "test_ndcg@3": ..., ...}}``; empty on implicit data
        (both baselines need ratings).
    """
    if dataset.implicit:
        return {}
    config = resolve_scenario(config, dataset).config  # the split the run trained on, as fit resolves it
    key = split_key(dataset, config)
    path = Path(cache_dir) / f"{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())["baselines"]
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("cached baselines %s unreadable (%s); measuring again", path, exc)
    evaluation = EvaluationConfig(
        scenario=config.scenario, shots=(config.eval_support_size,), seeds=(config.seed,),
        cold_fraction=config.cold_fraction, baselines=SPLIT_BASELINES, no_adaptation=False,
    )
    result = evaluate_baselines(dataset, evaluation)
    frame = result.frame
    scores: dict[str, dict[str, float]] = {}
    for method, rows in frame.groupby("method", sort=False):
        values = rows.groupby("metric")["value"].mean()
        scores[str(method)] = {f"test_{m}": float(values[m]) for m in _KEPT if m in values.index}
    if path is not None:
        _write_json(path, {"key": key, "baselines": scores})
    return scores


def write_run_baselines(run_dir: str | Path, scores: dict[str, dict[str, float]]) -> None:
    """Keep the baselines' scores in a run directory (:data:`BASELINES_FILE`)."""
    _write_json(Path(run_dir) / BASELINES_FILE, {"baselines": scores})


def read_run_baselines(run_dir: str | Path) -> dict[str, dict[str, float]]:
    """A run's baselines (``{}`` when it has none yet: still training, implicit data, or measured before this existed)."""
    path = Path(run_dir) / BASELINES_FILE
    try:
        return dict(json.loads(path.read_text())["baselines"])
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("baselines of %s unreadable: %s", run_dir, exc)
        return {}


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(payload))
    os.replace(partial, path)
