"""Cold-start splits: no leakage in any scenario, exclusions reported, determinism, time splits."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError, DataError
from metarec_core.loaders import build_dataset
from metarec_core.splits import SCENARIOS, SplitConfig, split_cold_start, split_users


def pairs(frame: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user"].tolist(), frame["item"].tolist()))


@pytest.mark.parametrize("by", ["random", "time"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_query_row_in_train_or_support(small_scenario, scenario, by):
    data = small_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario=scenario, by=by, support_size=5))
    assert len(split.query) > 0
    query = pairs(split.query)
    assert not query & pairs(split.train)
    assert not query & pairs(split.support)
    assert not set(split.query.index) & set(split.train.index)
    assert not set(split.query.index) & set(split.support.index)
    # Every row is accounted for: in train, support, query, or counted as unused.
    used = set(split.train.index) | set(split.support.index) | set(split.query.index)
    assert len(used) + split.n_unused == len(data.ratings)
    # Cold entities never reach training data.
    assert not np.isin(split.train["user"], split.cold_users).any()
    assert not np.isin(split.train["item"], split.cold_items).any()
    # Each evaluated user has exactly K support rows.
    counts = split.support.groupby("user").size()
    assert set(counts.index) == set(split.eval_users.tolist())
    assert (counts == 5).all()


def test_user_cold_semantics(small_scenario):
    data = small_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=3))
    n_active = data.ratings["user"].nunique()
    assert len(split.cold_users) == round(0.2 * n_active)
    assert set(split.eval_users.tolist()) <= set(split.cold_users.tolist())
    assert len(split.cold_items) == 0
    # Support + query = all of an evaluated cold user's ratings.
    cold_rows = data.ratings[data.ratings["user"].isin(split.eval_users)]
    assert len(split.support) + len(split.query) == len(cold_rows)
    assert len(split.train) == int((~data.ratings["user"].isin(split.cold_users)).sum())


def test_item_cold_semantics(small_scenario):
    data = small_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario="item-cold", support_size=5))
    assert split.query["item"].isin(split.cold_items).all()
    assert not split.support["item"].isin(split.cold_items).any()
    # The support rows of existing items are also training rows (the users are warm).
    assert set(split.support.index) <= set(split.train.index)
    assert len(split.cold_users) == 0


def test_both_cold_semantics(small_scenario):
    data = small_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario="both-cold", support_size=5))
    assert split.query["user"].isin(split.cold_users).all()
    assert split.query["item"].isin(split.cold_items).all()
    assert split.support["user"].isin(split.cold_users).all()
    assert not split.support["item"].isin(split.cold_items).any()
    assert not set(split.support.index) & set(split.train.index)
    assert split.n_unused > 0


def test_warm_semantics(small_scenario):
    data = small_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario="warm", support_size=5, query_fraction=0.25))
    assert set(split.support.index) <= set(split.train.index)
    assert len(split.train) + len(split.query) == len(data.ratings)
    per_user = data.ratings.groupby("user").size()
    q = split.query.groupby("user").size()
    expected = np.maximum(1, np.round(0.25 * per_user[q.index]).astype(int))
    assert (q.to_numpy() == expected.to_numpy()).all()


def test_users_with_too_few_ratings_are_reported_not_dropped():
    frame = pd.DataFrame(
        {
            "user_id": [1] * 12 + [2] * 3 + [3] * 11 + [4] * 12,
            "item_id": list(range(12)) + list(range(3)) + list(range(11)) + list(range(12)),
            "rating": [1, 2, 3, 4, 5, 4] * 2 + [3, 4, 5] + [2] * 11 + [5, 4] * 6,
        }
    )
    data = build_dataset(frame)
    split = split_cold_start(data, SplitConfig(scenario="warm", support_size=10, min_query=1))
    assert split.excluded["user"].tolist() == [data.users.index(2)]
    assert split.excluded["n_ratings"].tolist() == [3]
    assert "needs at least 11" in split.excluded["reason"].iloc[0]
    # The excluded warm user's ratings still train the model.
    assert (split.train["user"] == data.users.index(2)).sum() == 3
    assert data.users.index(2) not in split.eval_users


def test_excluded_cold_users_are_listed(tiny_scenario):
    data = tiny_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario="user-cold", support_size=15, cold_fraction=0.5))
    per_user = data.ratings.groupby("user").size()
    cold_counts = per_user[split.cold_users]
    short = sorted(cold_counts[cold_counts < 16].index.tolist())
    assert sorted(split.excluded["user"].tolist()) == short
    assert (split.excluded["n_ratings"].to_numpy() == per_user[split.excluded["user"]].to_numpy()).all()
    excluded_rows = int(per_user[short].sum())
    assert split.n_unused == excluded_rows


def test_same_seed_same_split_other_seed_differs(small_scenario):
    data = small_scenario.dataset
    for scenario in SCENARIOS:
        a = split_cold_start(data, SplitConfig(scenario=scenario, seed=7))
        b = split_cold_start(data, SplitConfig(scenario=scenario, seed=7))
        c = split_cold_start(data, SplitConfig(scenario=scenario, seed=8))
        assert a.query.index.equals(b.query.index) and a.support.index.equals(b.support.index)
        assert not a.query.index.equals(c.query.index)
    # user-cold and both-cold share the cold users of a seed.
    uc = split_cold_start(data, SplitConfig(scenario="user-cold", seed=5))
    bc = split_cold_start(data, SplitConfig(scenario="both-cold", seed=5))
    assert np.array_equal(uc.cold_users, bc.cold_users)


def test_time_split_makes_late_entities_cold(small_scenario):
    data = small_scenario.dataset
    split = split_cold_start(data, SplitConfig(scenario="both-cold", by="time", time_cutoff=0.7, support_size=3))
    r = data.ratings
    cutoff = np.quantile(r["timestamp"], 0.7)
    first_user = r.groupby("user")["timestamp"].min()
    first_item = r.groupby("item")["timestamp"].min()
    assert sorted(split.cold_users.tolist()) == sorted(first_user[first_user > cutoff].index.tolist())
    assert sorted(split.cold_items.tolist()) == sorted(first_item[first_item > cutoff].index.tolist())
    assert len(split.cold_items) > 0
    # A new user's support is their earliest ratings of existing items.
    user = split.eval_users[0]
    s = split.support[split.support["user"] == user]["timestamp"]
    rest = r[(r["user"] == user) & ~r["item"].isin(split.cold_items) & ~r.index.isin(s.index)]["timestamp"]
    assert s.max() <= rest.min()


def test_time_split_needs_timestamps():
    frame = pd.DataFrame({"user": [1, 1, 2, 2], "item": [1, 2, 1, 2], "rating": [1, 2, 3, 4]})
    data = build_dataset(frame)
    with pytest.raises(DataError, match="needs timestamps"):
        split_cold_start(data, SplitConfig(by="time"))


def test_support_all_but_fixed_query(small_scenario):
    split = split_cold_start(
        small_scenario.dataset, SplitConfig(scenario="user-cold", support_size=None, query_size=10)
    )
    assert (split.query.groupby("user").size() == 10).all()
    per_user = small_scenario.dataset.ratings.groupby("user").size()
    s = split.support.groupby("user").size()
    assert (s.to_numpy() == per_user[s.index].to_numpy() - 10).all()


def test_query_size_caps_the_query(small_scenario):
    split = split_cold_start(small_scenario.dataset, SplitConfig(scenario="user-cold", support_size=5, query_size=4))
    assert (split.query.groupby("user").size() == 4).all()


def test_check_nonempty_explains(tiny_scenario):
    split = split_cold_start(tiny_scenario.dataset, SplitConfig(scenario="user-cold", support_size=50))
    assert split.n_evaluated == 0 and len(split.excluded) > 0
    with pytest.raises(DataError, match="support 50"):
        split.check_nonempty()


def test_config_validation():
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict(SplitConfig, {"scenario": "warm", "shots": 5})
    with pytest.raises(ConfigError, match="scenario"):
        config_from_dict(SplitConfig, {"scenario": "cold"})
    with pytest.raises(ConfigError, match="cold_fraction"):
        config_from_dict(SplitConfig, {"cold_fraction": 1.5})
    with pytest.raises(ConfigError, match="query_size"):
        config_from_dict(SplitConfig, {"support_size": None})
    assert config_from_dict(SplitConfig, {"scenario": "item-cold", "support_size": 3}).support_size == 3


def test_split_users_partitions_deterministically():
    users = np.arange(100, 200)
    train, val, test = split_users(users, (0.8, 0.1, 0.1), seed=4)
    assert (len(train), len(val), len(test)) == (80, 10, 10)
    assert np.array_equal(np.sort(np.concatenate([train, val, test])), users)
    again = split_users(users, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip((train, val, test), again))
    assert not np.array_equal(split_users(users, (0.8, 0.2), seed=5)[1], split_users(users, (0.8, 0.2), seed=4)[1])
    with pytest.raises(ConfigError):
        split_users(users, (0.5, 0.4))
