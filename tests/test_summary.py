"""Dataset summary: exact counts on a hand-made dataset, scenario counts that match the splits."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from metarec_core.loaders import build_dataset
from metarec_core.splits import SplitConfig, split_cold_start
from metarec_core.summary import summarize


def hand_made():
    interactions = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "item_id": [10, 11, 12, 10, 11, 10],
            "rating": [5, 4, 4, 1, 4, 3],
            "timestamp": [100, 200, 300, 400, 500, 600],
        }
    )
    users = pd.DataFrame({"user_id": [1, 2, 3, 4], "gender": ["F", "M", None, "F"]})
    items = pd.DataFrame({"item_id": [10, 11, 12, 13], "genres": ["A|B", "B", "C|A", None]})
    return build_dataset(interactions, users, items)


def test_counts_histogram_and_long_tail():
    s = summarize(hand_made(), support_size=1)
    assert (s.n_users, s.n_items, s.n_ratings) == (4, 4, 6)
    assert s.no_interaction_users == 1 and s.no_interaction_items == 1
    assert s.density == 6 / 16
    assert s.rating_histogram == {1.0: 1, 3.0: 1, 4.0: 3, 5.0: 1}
    assert s.ratings_per_user.tolist() == [3, 2, 1, 0]
    assert s.ratings_per_item.tolist() == [3, 2, 1, 0]
    assert s.top_item_share == 3 / 6  # top 20% of 4 items = 1 item
    assert s.time_range == (100, 600)
    assert s.rating_mean == np.mean([5, 4, 4, 1, 4, 3])
    features = {(f.table, f.name): f for f in s.features}
    assert features[("users", "gender")].n_missing == 1
    assert features[("items", "genres")].kind == "multilabel" and features[("items", "genres")].n_distinct == 3


def test_scenario_counts_match_the_splits(small_scenario):
    data = small_scenario.dataset
    s = summarize(data, support_size=20, cold_fraction=0.3)
    by_name = {c.scenario: c for c in s.scenarios}
    assert list(by_name) == ["warm", "user-cold", "item-cold", "both-cold"]
    for name, counts in by_name.items():
        split = split_cold_start(data, SplitConfig(scenario=name, support_size=20, cold_fraction=0.3))
        assert counts.cold_users == len(split.cold_users) and counts.cold_items == len(split.cold_items)
        assert counts.evaluated_users == split.n_evaluated and counts.excluded_users == len(split.excluded)
        assert counts.query_ratings == len(split.query) and counts.train_ratings == len(split.train)
    # 20-60 ratings per user and K=20: every user with fewer than 21 ratings is excluded from warm.
    per_user = data.ratings.groupby("user").size()
    assert by_name["warm"].excluded_users == int((per_user < 21).sum()) > 0
    assert s.scenarios_frame().shape == (4, 7)


def test_many_distinct_ratings_are_binned():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"user": rng.integers(0, 50, 500), "item": np.arange(500), "rating": rng.normal(size=500)})
    s = summarize(build_dataset(frame))
    assert len(s.rating_histogram) == 20 and sum(s.rating_histogram.values()) == 500
    assert s.time_range is None


def test_text_and_json():
    s = summarize(hand_made(), support_size=1)
    text = s.to_text()
    assert "4 users (1 with no interactions)" in text and "6 ratings" in text
    assert "items.genres: multilabel" in text and "Warnings:" in text and "both-cold" in text
    blob = json.loads(json.dumps(s.to_dict()))
    assert blob["ratings_per_user"]["max"] == 3 and blob["rating_histogram"]["4.0"] == 3
    assert s.features_frame().shape == (2, 6)


def test_implicit_summary():
    frame = pd.DataFrame({"user": [1, 1, 2], "item": [1, 2, 1]})
    s = summarize(build_dataset(frame))
    assert s.implicit and s.rating_histogram == {1.0: 3}
    assert "implicit interactions" in s.to_text()
