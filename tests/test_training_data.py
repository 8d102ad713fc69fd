"""Tests of metarec_core.training_data: validation users carved from training users, encoded features, text whitening."""
import dataclasses

import numpy as np
import pandas as pd

from metarec_core.splits import SplitConfig, split_cold_start
from metarec_core.train_config import TrainConfig
from metarec_core.training_data import item_text_vectors, prepare_data, whiten


def rows(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(map(tuple, frame[["user", "item"]].to_numpy().tolist()))


def test_validation_users_are_training_users_held_out_with_k_support_ratings(small_scenario):
    dataset = small_scenario.dataset
    config = TrainConfig(valid_fraction=0.1, eval_support_size=7, seed=3)
    data = prepare_data(config, dataset)
    valid_users = set(data.valid_support["user"])
    assert valid_users == set(data.valid_query["user"]) and len(valid_users) > 0
    assert valid_users.isdisjoint(data.split.cold_users) and valid_users.isdisjoint(data.train["user"])
    assert (data.valid_support.groupby("user").size() == 7).all()
    # The split's training rows are exactly the training rows plus the validation users' rows, none twice.
    assert len(data.train) + len(data.valid_support) + len(data.valid_query) == len(data.split.train)
    assert rows(data.train) | rows(data.valid_support) | rows(data.valid_query) == rows(data.split.train)
    assert not rows(data.valid_support) & rows(data.valid_query)
    # About valid_fraction of the eligible training users (those with more than K ratings).
    counts = data.split.train.groupby("user").size()
    assert len(valid_users) == round(0.1 * int((counts > 7).sum()))


def test_prepare_data_is_seeded(small_scenario):
    dataset = small_scenario.dataset
    a = prepare_data(TrainConfig(seed=1), dataset)
    b = prepare_data(TrainConfig(seed=1), dataset)
    c = prepare_data(TrainConfig(seed=2), dataset)
    pd.testing.assert_frame_equal(a.valid_support, b.valid_support)
    pd.testing.assert_frame_equal(a.train, b.train)
    assert set(a.valid_support["user"]) != set(c.valid_support["user"]) or not a.split.query.equals(c.split.query)


def test_item_cold_validation_holds_out_items_as_the_item_cold_test_does(small_scenario):
    dataset = small_scenario.dataset
    config = TrainConfig(scenario="item-cold", valid_fraction=0.1, eval_support_size=7, seed=3)
    data = prepare_data(config, dataset)
    trained_items = set(data.train["item"])
    valid_items = set(data.valid_query["item"])
    # About a tenth of the split's training items are validation items; none of their ratings is trained on.
    split_items = set(data.split.train["item"])
    assert valid_items and valid_items.isdisjoint(trained_items) and valid_items.isdisjoint(data.split.cold_items)
    assert len(split_items - trained_items) == round(0.1 * len(split_items))
    # Validation users are known users: K support ratings of trained items, which stay training rows.
    assert (data.valid_support.groupby("user").size() == 7).all()
    assert set(data.valid_support["user"]) == set(data.valid_query["user"])
    assert rows(data.valid_support) <= rows(data.train) and not rows(data.valid_query) & rows(data.train)
    assert rows(data.train) | rows(data.valid_query) <= rows(data.split.train)
    assert len(data.train) + len(data.valid_query) <= len(data.split.train)
    # Every rating of a validation item by a user with K other ratings is in the query.
    held = data.split.train[data.split.train["item"].isin(valid_items)]
    enough = data.train.groupby("user").size() >= 7
    assert len(data.valid_query) == int(held["user"].map(enough).fillna(False).sum())


def test_no_validation_users_when_the_fraction_is_zero(tiny_scenario):
    data = prepare_data(TrainConfig(valid_fraction=0.0), tiny_scenario.dataset)
    assert len(data.valid_support) == len(data.valid_query) == 0
    pd.testing.assert_frame_equal(data.train, data.split.train.reset_index(drop=True))


def test_a_given_split_is_used_as_it_is(tiny_scenario):
    dataset = tiny_scenario.dataset
    split = split_cold_start(dataset, SplitConfig(scenario="warm", support_size=3, seed=9))
    data = prepare_data(TrainConfig(scenario="user-cold", valid_fraction=0.0), dataset, split=split)
    assert data.split is split


def test_features_cover_every_user_and_item_and_carry_text_vectors(tiny_scenario):
    dataset = tiny_scenario.dataset
    text = np.arange(dataset.n_items * 3, dtype=np.float32).reshape(dataset.n_items, 3)
    data = prepare_data(TrainConfig(), dataset, text_vectors=text)
    assert data.context.users.categorical.shape[0] == dataset.n_users
    assert data.context.items.categorical.shape[0] == dataset.n_items
    assert np.array_equal(data.context.items.text.numpy(), text) and data.text_vectors is text
    # Text columns are not categorical item features: they go in as vectors only.
    assert all(v.spec.kind != "text" for v in data.item_encoder.vocabs)


def test_item_text_vectors_only_when_text_is_on(tiny_scenario, tmp_path, monkeypatch):
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path))  # the encoded texts are cached there
    assert item_text_vectors(TrainConfig(use_text=False), tiny_scenario.dataset) is None
    vectors = item_text_vectors(dataclasses.replace(TrainConfig(), use_text=True, text_encoder="hashing"), tiny_scenario.dataset)
    assert vectors.shape[0] == tiny_scenario.dataset.n_items and np.isfinite(vectors).all()
    assert list((tmp_path / "text").glob("*.npy"))


def test_whiten_gives_decorrelated_unit_variance_components():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 40))  # rank 12, correlated columns
    out = whiten(vectors.astype(np.float32), 8)
    assert out.shape == (200, 8) and out.dtype == np.float32
    cov = np.cov(out, rowvar=False)
    assert np.allclose(cov, np.eye(8), atol=1e-3)
    # The components are the top ones: 8 of them keep more of the variance than any other 8 directions.
    centred = vectors - vectors.mean(axis=0)
    kept = np.linalg.lstsq(out, centred, rcond=None)[0]
    residual = centred - out @ kept
    assert np.linalg.norm(residual) ** 2 < 0.5 * np.linalg.norm(centred) ** 2


def test_whiten_keeps_at_most_the_available_components():
    vectors = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    assert whiten(vectors, 32).shape == (5, 3)


def test_absurd_ratings_of_a_dataset_built_in_python_are_a_data_error_before_training(tiny_scenario):
    import pytest

    from metarec_core.errors import DataError

    ratings = tiny_scenario.dataset.ratings.copy()
    ratings.loc[3, "rating"] = 1e30
    bad = dataclasses.replace(tiny_scenario.dataset, ratings=ratings)
    with pytest.raises(DataError, match=r"dataset '.*': column 'rating', row 4: 1 rating\(s\) are beyond ±1,000,000"):
        prepare_data(TrainConfig(device="cpu"), bad)


def test_a_dataset_too_small_for_a_cold_start_split_is_refused_with_what_it_needs(tiny_scenario):
    import pytest

    from metarec_core.errors import DataError

    data = tiny_scenario.dataset
    one_user = dataclasses.replace(data, ratings=data.ratings[data.ratings["user"] == 0].reset_index(drop=True))
    with pytest.raises(DataError, match=r"has ratings of 1 user\(s\); a cold-start split needs at least 2 users with ratings"):
        prepare_data(TrainConfig(device="cpu", eval_support_size=3), one_user)
    few = data.ratings.groupby("user").head(3).reset_index(drop=True)  # 3 ratings per user: none reaches K=5 + 1 query
    with pytest.raises(DataError, match=r"no user can be evaluated in the user-cold scenario with support 5"):
        prepare_data(TrainConfig(device="cpu", eval_support_size=5, scenario="user-cold"), dataclasses.replace(data, ratings=few))
