"""Display names of items: a run's saved titles, else the dataset's ``title`` feature, else the external ID."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from metarec_core.dataset import Dataset

if TYPE_CHECKING:
    from metarec_core.artifacts import LoadedRun


def dataset_titles(dataset: Dataset) -> pd.Series:
    """A display name per item index: the ``title`` feature where there is one, else the external ID.

    Parameters
    ----------
    dataset
        Any dataset (with or without an item table).

    Returns
    -------
    pandas.Series
        ``n_items`` strings, position ``i`` naming item index ``i``.
    """
    ids = pd.Series(dataset.items.external_ids, dtype=object)
    if "title" in dataset.item_table.columns:
        titles = dataset.item_table["title"].astype(object).reset_index(drop=True)
        return titles.where(titles.notna(), ids).astype(str)
    return ids.astype(str)


def run_titles(run: "LoadedRun", dataset: Dataset | None = None) -> list[str]:
    """A display name per item of a run, in the run's item order.

    The titles saved with the run come first; without them the dataset's
    (:func:`dataset_titles`) for the items it has; the external ID otherwise.

    Parameters
    ----------
    run
        A loaded run (``Recommender.run``).
    dataset
        The dataset the run was trained on, if at hand.

    Returns
    -------
    list of str
        One name per item of ``run.items``.
    """
    ids = run.items.external_ids
    saved = run.meta.get("item_titles") or {}
    if saved:
        return [str(saved.get(i, i)) for i in ids]
    if dataset is None:
        return [str(i) for i in ids]
    titles = dataset_titles(dataset)
    positions = dataset.items.lookup(list(ids))
    return [titles.iloc[p] if p >= 0 else str(i) for p, i in zip(positions, ids)]
