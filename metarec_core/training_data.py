"""The pieces of a dataset a run trains and validates on: the split, validation users, encoded features and text."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.features import FeatureEncoder
from metarec_core.models import EntityTensors, FeatureContext
from metarec_core.splits import ColdStartSplit, SplitConfig, split_cold_start
from metarec_core.train_config import TrainConfig, resolve_scenario


@dataclass(frozen=True)
class TrainingData:
    """The pieces of a dataset that training and evaluation use, prepared once."""

    split: ColdStartSplit
    train: pd.DataFrame
    valid_support: pd.DataFrame
    valid_query: pd.DataFrame
    user_encoder: FeatureEncoder
    item_encoder: FeatureEncoder
    context: FeatureContext
    text_vectors: np.ndarray | None


def prepare_data(
    config: TrainConfig, dataset: Dataset, *, text_vectors: np.ndarray | None = None, split: ColdStartSplit | None = None,
) -> TrainingData:
    """Split a dataset (seeded; or take the given split), carve validation users from the training users and encode features.

    A config with ``scenario="auto"`` is resolved first (:func:`~metarec_core.train_config.resolve_scenario`).
    """
    config = resolve_scenario(config, dataset, split).config
    if split is None:
        split = split_cold_start(
            dataset,
            SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed),
        )
    train = split.train
    counts = train.groupby("user").size()
    eligible = counts.index[counts > config.eval_support_size].to_numpy(np.int64)
    rng = np.random.default_rng(config.seed + 1)
    n_valid = int(round(len(eligible) * config.valid_fraction))
    valid_users = np.sort(rng.choice(eligible, size=n_valid, replace=False)) if n_valid else np.zeros(0, np.int64)
    is_valid = train["user"].isin(valid_users).to_numpy()
    valid_rows = train[is_valid]
    train = train[~is_valid].reset_index(drop=True)
    # Validation tasks: a seeded support set of K ratings per validation user, the rest as query.
    order = rng.permutation(len(valid_rows))
    shuffled = valid_rows.iloc[order]
    rank = shuffled.groupby("user").cumcount().to_numpy()
    valid_support = shuffled[rank < config.eval_support_size].reset_index(drop=True)
    valid_query = shuffled[rank >= config.eval_support_size].reset_index(drop=True)
    user_encoder = FeatureEncoder.fit(dataset.user_table, dataset.user_features)
    item_encoder = FeatureEncoder.fit(dataset.item_table, tuple(s for s in dataset.item_features if s.kind != "text"))
    context = FeatureContext(
        EntityTensors.from_encoded(user_encoder.transform(dataset.user_table)),
        EntityTensors.from_encoded(item_encoder.transform(dataset.item_table), text=text_vectors),
    )
    return TrainingData(split, train, valid_support, valid_query, user_encoder, item_encoder, context, text_vectors)


def item_text_vectors(config: TrainConfig, dataset: Dataset) -> np.ndarray | None:
    """Encoded item texts when ``use_text`` is on (cached on disk by the text module)."""
    if not config.use_text:
        return None
    from metarec_core.text import encode_items, make_text_encoder

    columns = tuple(config.text_columns) or None
    return encode_items(dataset, make_text_encoder(config.text_encoder), columns=columns)


def whiten(vectors: np.ndarray, components: int) -> np.ndarray:
    """Project vectors on their top principal components and scale each to unit variance (PCA whitening).

    Fewer, decorrelated text dimensions keep the trainable adaptor from
    memorising individual items (which does not carry over to new items).
    """
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, singular, basis = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    k = int(min(components, basis.shape[0]))
    scale = singular[:k] / np.sqrt(max(len(vectors) - 1, 1))
    return (centred @ basis[:k].T / np.where(scale > 0, scale, 1.0)).astype(np.float32)
