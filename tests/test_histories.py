"""A user's history in time order with support / query roles, and the example user."""
from __future__ import annotations

import numpy as np

from metarec_core.histories import HISTORY_COLUMNS, example_user, user_history


def test_the_first_k_in_time_are_the_support_set(tiny_scenario) -> None:
    data = tiny_scenario.dataset
    user = data.users.external(int(data.ratings["user"].iloc[0]))
    history = user_history(data, user, support_size=3)
    rows = data.ratings[data.ratings["user"] == data.users.index(user)].sort_values(["timestamp", "item"])
    assert tuple(history.columns) == HISTORY_COLUMNS
    assert list(history["item_id"]) == data.items.externals(rows["item"])
    assert list(history["rating"]) == list(rows["rating"])
    assert list(history["role"]) == ["support"] * 3 + ["query"] * (len(rows) - 3)
    assert history["title"].iloc[0] == data.item_table["title"].iloc[int(rows["item"].iloc[0])]
    assert set(user_history(data, user, support_size=None)["role"]) == {"training"}
    assert user_history(data, "no such user", support_size=3).empty


def test_example_user_has_a_median_count_above_twice_k(tiny_scenario) -> None:
    data = tiny_scenario.dataset
    counts = data.ratings.groupby("user").size()
    user = example_user(data, support_size=3)
    eligible = counts[counts > 6]
    count = counts[data.users.index(user)]
    assert count > 6 and abs(count - eligible.median()) == np.abs(eligible - eligible.median()).min()
    assert example_user(data, support_size=3) == user  # the same user every time
    assert example_user(data, support_size=100) is None
