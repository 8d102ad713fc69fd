"""Popularity: counts per item and the most-interacted items, with exclusions."""
from __future__ import annotations

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.idmap import IdMap
from metarec_core.popularity import item_counts, most_popular


def dataset(items: list[int]) -> Dataset:
    """Ratings of item indices ``items`` by one user each, on five items (``a`` .. ``e``)."""
    n = len(items)
    ratings = pd.DataFrame({"user": np.arange(n), "item": items, "rating": np.ones(n, np.float32), "timestamp": np.zeros(n, np.int64)})
    return Dataset("d", ratings, IdMap([str(u) for u in range(n)]), IdMap(list("abcde")),
                   pd.DataFrame(index=range(n)), pd.DataFrame(index=range(5)))


def test_item_counts_has_a_count_for_every_item() -> None:
    assert list(item_counts(dataset([1, 1, 3, 1, 3, 0]))) == [1, 3, 0, 2, 0]


def test_most_popular_orders_by_count_then_index_and_skips_what_it_must() -> None:
    data = dataset([1, 1, 3, 1, 3, 0, 4, 4])  # b: 3, d: 2, e: 2, a: 1, c: 0
    assert most_popular(data, 10) == ["b", "d", "e", "a"]  # never an item nobody rated
    assert most_popular(data, 2) == ["b", "d"]
    assert most_popular(data, 2, exclude={"b"}) == ["d", "e"]
    assert most_popular(data, 3, among={"a", "e"}) == ["e", "a"]
