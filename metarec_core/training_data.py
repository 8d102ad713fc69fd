"""The pieces of a dataset a run trains and validates on: the split, validation users, encoded features and text."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.features import FeatureEncoder
from metarec_core.models import EntityTensors, FeatureContext
from metarec_core.errors import DataError
from metarec_core.loaders import check_rating_values
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
    In the item-cold scenario validation mirrors the test: ``valid_fraction``
    of the training items become validation items (:func:`validation_items`).
    """
    try:
        check_rating_values(dataset.ratings["rating"].to_numpy(), column="rating")
    except DataError as exc:  # a dataset built in Python skips the loader's checks
        raise DataError(f"dataset '{dataset.name}': {exc}") from exc
    active_users = int(dataset.ratings["user"].nunique())
    if active_users < 2:
        raise DataError(
            f"dataset '{dataset.name}' has ratings of {active_users} user(s); a cold-start split needs at least 2 users with "
            "ratings (some to train on, one new to test on); use a larger dataset"
        )
    config = resolve_scenario(config, dataset, split).config
    if split is None:
        split = split_cold_start(
            dataset,
            SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed),
        )
    if len(split.train) == 0:
        raise DataError(
            f"dataset '{dataset.name}' ({dataset.n_users} users, {dataset.n_items} items, {len(dataset.ratings)} ratings) leaves "
            f"nothing to train on in the {config.scenario} split: every rating belongs to a new user or item; a cold-start "
            "split needs at least 2 users and items with ratings beside the new ones; use a larger dataset or lower cold_fraction"
        )
    try:
        split.check_nonempty()
    except DataError as exc:
        raise DataError(f"dataset '{dataset.name}' ({dataset.n_users} users, {len(dataset.ratings)} ratings): {exc}") from exc
    if split.config.scenario == "item-cold":
        train, valid_support, valid_query = validation_items(split.train, config)
        return _encoded(dataset, split, train, valid_support, valid_query, text_vectors)
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
    return _encoded(dataset, split, train, valid_support, valid_query, text_vectors)


def validation_items(train: pd.DataFrame, config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Item-cold validation: training rows, and validation tasks on held-out items, as the item-cold test has them.

    ``valid_fraction`` of the items rated in ``train`` (seeded by
    ``config.seed + 1``) become validation items: none of their ratings is
    trained on. Every user who rated one and has at least
    ``eval_support_size`` other training ratings is a validation user: their
    support is that many of those other ratings (seeded; they stay in the
    training rows, as a test user's support does), their query their ratings
    of validation items. The epoch kept (``keep_best``) and early stopping
    then follow how well items never trained on are scored.

    Returns
    -------
    tuple of pandas.DataFrame
        The training rows, the validation support and the validation query.
    """
    rng = np.random.default_rng(config.seed + 1)
    items = np.unique(train["item"].to_numpy(np.int64))
    n_valid = int(round(len(items) * config.valid_fraction))
    if n_valid == 0 or n_valid >= len(items):
        empty = train.iloc[:0].reset_index(drop=True)
        return train.reset_index(drop=True), empty, empty
    held = train["item"].isin(rng.choice(items, size=n_valid, replace=False)).to_numpy()
    rest = train[~held].reset_index(drop=True)
    shuffled = rest.iloc[rng.permutation(len(rest))]
    rank = shuffled.groupby("user").cumcount().to_numpy()
    support = shuffled[rank < config.eval_support_size]
    counts = rest.groupby("user").size()
    eligible = counts.index[counts >= config.eval_support_size]
    query = train[held & train["user"].isin(eligible).to_numpy()].reset_index(drop=True)
    support = support[support["user"].isin(query["user"].unique())].reset_index(drop=True)
    return rest, support, query


def _encoded(
    dataset: Dataset, split: ColdStartSplit, train: pd.DataFrame, valid_support: pd.DataFrame, valid_query: pd.DataFrame,
    text_vectors: np.ndarray | None,
) -> TrainingData:
    """The :class:`TrainingData` of these rows, with the dataset's features encoded."""
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
