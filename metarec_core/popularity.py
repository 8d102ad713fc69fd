"""Popularity: how many interactions each item has, and the most-interacted items (the cold-start fallback)."""
from __future__ import annotations

from collections.abc import Collection, Container

import numpy as np

from metarec_core.dataset import Dataset


def item_counts(dataset: Dataset) -> np.ndarray:
    """Interactions per item index (``n_items`` counts; 0 for items nobody rated)."""
    return np.bincount(dataset.ratings["item"].to_numpy(np.int64), minlength=dataset.n_items)


def most_popular(
    dataset: Dataset, k: int, *, exclude: Collection[str] = (), among: Container[str] | None = None
) -> list[str]:
    """The external IDs of the ``k`` most-interacted items, most first (ties by item index).

    Parameters
    ----------
    dataset
        Where the interactions are counted.
    k
        How many items.
    exclude
        External IDs never returned (e.g. what the user already rated).
    among
        Only IDs in this container (e.g. a run's item ID map); all items when ``None``.

    Returns
    -------
    list of str
        At most ``k`` IDs of items with at least one interaction.
    """
    counts = item_counts(dataset)
    order = np.argsort(-counts, kind="stable")
    chosen: list[str] = []
    for index in order[counts[order] > 0]:
        item_id = dataset.items.external(int(index))
        if item_id in exclude or (among is not None and item_id not in among):
            continue
        chosen.append(item_id)
        if len(chosen) == k:
            break
    return chosen
