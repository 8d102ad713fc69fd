"""Held-out scoring shared by ``fit`` and evaluation: adapt on each task's support, score its query, compute metrics."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from metarec_core import metrics
from metarec_core.meta import adapt, score
from metarec_core.models import FeatureContext, PreferenceModel
from metarec_core.tasks import TaskBatch, catalogue_tasks, tasks_from_frames
from metarec_core.train_config import TrainConfig
from metarec_core.training_data import TrainingData


#: Scored (task, query item) slots per chunk of :func:`predict_tasks`: bounds its memory whatever the longest query.
SLOTS_PER_CHUNK = 65_536


def predict_tasks(model: PreferenceModel, inner_lr, config: TrainConfig, tasks: TaskBatch, context: FeatureContext, kind: str, *, chunk: int = 256) -> np.ndarray:
    """Adapt to each task's support set and score its query items -> ``(T, Q)`` numpy array.

    Tasks are scored in chunks of at most ``chunk`` tasks of similar query
    length, each cut to the width of its longest query and to at most
    :data:`SLOTS_PER_CHUNK` scored slots, so a few users with thousands of
    ratings neither pad everyone else's query to their length nor set the
    memory of a chunk. Padding slots of the result are 0.
    """
    model.eval()
    n = len(tasks)
    if n == 0:
        return np.zeros((0, 0), np.float32)
    out = np.zeros(tuple(tasks.query_items.shape), np.float32)
    query_lengths = tasks.query_mask.sum(dim=1).cpu().numpy()
    support_lengths = tasks.support_mask.sum(dim=1).cpu().numpy()
    order = np.argsort(query_lengths, kind="stable")
    with torch.no_grad():
        start = 0
        while start < n:
            stop = start + 1
            while stop < n and stop - start < chunk and (stop + 1 - start) * max(int(query_lengths[order[stop]]), 1) <= SLOTS_PER_CHUNK:
                stop += 1
            rows = order[start:stop]
            width = max(int(query_lengths[rows].max()), 1)
            support_width = max(int(support_lengths[rows].max()), 1)
            part = tasks.select(rows)
            part = dataclasses.replace(
                part,
                support_items=part.support_items[:, :support_width], support_ratings=part.support_ratings[:, :support_width],
                support_mask=part.support_mask[:, :support_width],
                query_items=part.query_items[:, :width], query_ratings=part.query_ratings[:, :width], query_mask=part.query_mask[:, :width],
            )
            adapted = adapt(
                model, dict(model.named_parameters()), part.support(), context, lr=inner_lr, loss=kind, **config.inner_loop(),
            )
            out[rows, :width] = score(model, adapted, part.query(), context).cpu().numpy()
            start = stop
    return out


def query_metrics(query: pd.DataFrame, predictions: np.ndarray, kind: str, rating_range: tuple[float, float]) -> dict[str, float]:
    """MAE, RMSE and nDCG@3 (explicit) or AUC (implicit) of predictions aligned with ``query`` rows."""
    users = query["user"].to_numpy()
    truth = query["rating"].to_numpy(np.float64)
    if kind == "bce":
        return {"auc": metrics.mean_auc(users, truth, predictions)} if len(np.unique(truth)) > 1 else {}
    clipped = np.clip(predictions, *rating_range)
    return {
        "mae": metrics.mae(truth, clipped),
        "rmse": metrics.rmse(truth, clipped),
        "ndcg@3": metrics.mean_ndcg_at_k(users, truth, clipped, 3),
    }


def evaluate_held_out(
    model: PreferenceModel, inner_lr, config: TrainConfig, data: TrainingData, context: FeatureContext, kind: str,
    rating_range: tuple[float, float],
) -> dict[str, float]:
    """Test metrics on the split's held-out tasks (adapt on support, score query).

    Users are warm (their ID parameters used) in the warm and item-cold
    scenarios; predictions are clipped to the training ``rating_range``.
    """
    query = data.split.query
    if len(query) == 0:
        return {}
    warm = config.scenario in ("warm", "item-cold")
    if kind == "bce":
        return {"test_auc": catalogue_auc(model, inner_lr, config, data.split.support, query, context, kind, warm=warm, seen=data.split.train)}
    tasks, positions = tasks_from_frames(data.split.support, query, warm=warm)
    predictions = predict_tasks(model, inner_lr, config, tasks.to(context.items.categorical.device), context, kind).reshape(-1)[positions]
    return {f"test_{k}": v for k, v in query_metrics(query, predictions, kind, rating_range).items()}


def catalogue_auc(
    model: PreferenceModel, inner_lr, config: TrainConfig, support: pd.DataFrame, query: pd.DataFrame,
    context: FeatureContext, kind: str, *, warm: bool = False, seen: pd.DataFrame | None = None, chunk: int = 64,
) -> float:
    """Mean per-user AUC of implicit feedback: each user's query items against every item they never interacted with.

    On implicit data every query row is a positive, so an AUC within the query
    is undefined; each user is adapted on their support rows and the whole
    catalogue is scored. Support items, and the user's rows in ``seen`` (their
    training interactions in the warm and item-cold scenarios), are left out
    of the ranking. NaN when no user has both a positive and a negative.
    """
    users = np.unique(query["user"].to_numpy(np.int64))
    n_items = int(model.shape.n_items)
    values: list[float] = []
    device = context.items.categorical.device
    for start in range(0, len(users), chunk):
        part = users[start:start + chunk]
        tasks = catalogue_tasks(support[support["user"].isin(part)], part, n_items, warm=warm)
        scores = predict_tasks(model, inner_lr, config, tasks.to(device), context, kind).reshape(len(part), n_items)
        for t, user in enumerate(part):
            labels = np.zeros(n_items)
            labels[query.loc[query["user"] == user, "item"].to_numpy(np.int64)] = 1.0
            keep = np.ones(n_items, dtype=bool)
            keep[support.loc[support["user"] == user, "item"].to_numpy(np.int64)] = False
            if seen is not None:
                keep[seen.loc[seen["user"] == user, "item"].to_numpy(np.int64)] = False
            value = metrics.auc(labels[keep], scores[t, keep])
            if np.isfinite(value):
                values.append(float(value))
    return float(np.mean(values)) if values else float("nan")
