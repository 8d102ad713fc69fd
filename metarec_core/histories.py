"""One user's interactions in time order, the first K as the support set and the rest as the query set."""
from __future__ import annotations

import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.titles import dataset_titles

#: Columns of :func:`user_history`.
HISTORY_COLUMNS = ("item_id", "title", "rating", "role")


def user_history(dataset: Dataset, user_id: str, *, support_size: int | None) -> pd.DataFrame:
    """A user's interactions in time order (ties by item), each with its role.

    Parameters
    ----------
    dataset
        The dataset.
    user_id
        The user's external ID (a user with no interactions gives an empty frame).
    support_size
        K: the first K interactions are ``support`` and the rest ``query``, as a
        new user is adapted and tested; ``None`` marks every one ``training``
        (a warm user).

    Returns
    -------
    pandas.DataFrame
        :data:`HISTORY_COLUMNS`: ``item_id``, ``title`` (see
        :func:`metarec_core.titles.dataset_titles`), ``rating`` and ``role``.
    """
    index = dataset.users.get(user_id)
    rows = dataset.ratings[dataset.ratings["user"] == index].sort_values(["timestamp", "item"], kind="stable")
    items = rows["item"].to_numpy()
    roles = ["training"] * len(rows) if support_size is None else ["support" if n < support_size else "query" for n in range(len(rows))]
    return pd.DataFrame({
        "item_id": dataset.items.externals(items),
        "title": dataset_titles(dataset).iloc[items].to_numpy(),
        "rating": rows["rating"].to_numpy(),
        "role": roles,
    }, columns=list(HISTORY_COLUMNS))


def example_user(dataset: Dataset, *, support_size: int) -> str | None:
    """A typical user to show a support and a query set with: more than ``2 K`` interactions, count nearest the median.

    Parameters
    ----------
    dataset
        The dataset.
    support_size
        K.

    Returns
    -------
    str or None
        The user's external ID (the same every time); ``None`` when no user has enough interactions.
    """
    counts = dataset.ratings.groupby("user").size()
    eligible = counts[counts > 2 * support_size]
    if eligible.empty:
        return None
    user = int((eligible - eligible.median()).abs().sort_values(kind="stable").index[0])
    return dataset.users.external(user)


def has_times(dataset: Dataset) -> bool:
    """Whether the dataset's interactions carry timestamps (else histories are in file order)."""
    return bool((dataset.ratings["timestamp"] >= 0).any())


def first_interactions(dataset: Dataset, user_ids: list[str], *, support_size: int) -> pd.DataFrame:
    """Each user's first ``support_size`` interactions in time order (ties by item), as :func:`user_history` orders them.

    Parameters
    ----------
    dataset
        The dataset.
    user_ids
        External user IDs (unknown ones have no rows).
    support_size
        K.

    Returns
    -------
    pandas.DataFrame
        ``user_id``, ``item_id``, ``rating`` (the support sets of new users, ready for
        :meth:`metarec_core.recommender.Recommender.adapt_user` or :func:`metarec_core.top_lists.top_lists`).
    """
    index = dataset.users.lookup(list(user_ids))
    rows = dataset.ratings[dataset.ratings["user"].isin(index[index >= 0])]
    rows = rows.sort_values(["user", "timestamp", "item"], kind="stable")
    rows = rows[rows.groupby("user").cumcount() < support_size]
    return pd.DataFrame({
        "user_id": dataset.users.externals(rows["user"].to_numpy()),
        "item_id": dataset.items.externals(rows["item"].to_numpy()),
        "rating": rows["rating"].to_numpy(),
    })
