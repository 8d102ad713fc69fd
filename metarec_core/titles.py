"""Display names of items and users: the chosen or detected name column, a run's saved names, else the external ID."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import pandas as pd

from metarec_core.dataset import Dataset

if TYPE_CHECKING:
    from metarec_core.artifacts import LoadedRun

#: Column names read as display names, best first (compared lower-case without separators).
NAME_COLUMNS = ("title", "name", "productname", "itemname", "displayname", "moviename", "bookname", "songname", "label")
#: Endings that make any other column a name column (``product_title``, ``brand_name``).
_NAME_ENDINGS = ("name", "title")
#: A text column is a name by its content when at least this share of its values are distinct ...
_DISTINCT_SHARE = 0.9
#: ... and its values are short (a median length up to this many characters; longer text is a description).
_MAX_NAME_LENGTH = 60


def _normalise(name: object) -> str:
    return re.sub(r"[\s_\-.]", "", str(name).strip().lower())


def name_column(table: pd.DataFrame) -> str | None:
    """The column of a side table that names its rows, or ``None``.

    Rules, in order: a column with a usual name (:data:`NAME_COLUMNS`: ``title``,
    ``name``, ``product_name``, ...); else the first whose name ends in ``name``
    or ``title`` (``brand_name``); else the first text column whose values are
    nearly all distinct, short and not numbers (a name that is unique per row,
    not a description).

    Parameters
    ----------
    table
        A side table (feature columns, no ID column), or any frame.

    Returns
    -------
    str or None
    """
    columns = [str(c) for c in table.columns]
    normalised = {c: _normalise(c) for c in columns}
    for wanted in NAME_COLUMNS:
        for column in columns:
            if normalised[column] == wanted:
                return column
    for column in columns:
        if normalised[column].endswith(_NAME_ENDINGS):
            return column
    for column in columns:
        values = table[column].dropna()
        if len(values) < 2 or pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            continue
        text = values.astype(str)
        if pd.to_numeric(text, errors="coerce").notna().mean() > 0.5:
            continue
        if text.str.len().median() > _MAX_NAME_LENGTH:
            continue
        if text.nunique() >= _DISTINCT_SHARE * len(text) and text.str.contains(r"[^\W\d_]", regex=True).mean() > 0.9:
            return column
    return None


def item_name_column(dataset: Dataset) -> str | None:
    """The item table's name column: the one chosen with the data (``""``: none), else :func:`name_column`'s."""
    return _chosen_or_detected(dataset.item_name_column, dataset.item_table)


def user_name_column(dataset: Dataset) -> str | None:
    """The user table's name column: the one chosen with the data (``""``: none), else :func:`name_column`'s."""
    return _chosen_or_detected(dataset.user_name_column, dataset.user_table)


def _chosen_or_detected(chosen: str | None, table: pd.DataFrame) -> str | None:
    if chosen is not None:
        return chosen if chosen in table.columns else None
    return name_column(table)


def _names(ids: list[str], table: pd.DataFrame, column: str | None) -> pd.Series:
    ids_series = pd.Series(ids, dtype=object)
    if column is None:
        return ids_series.astype(str)
    names = table[column].astype(object).reset_index(drop=True)
    blank = names.isna() | (names.astype(str).str.strip() == "")
    return names.where(~blank, ids_series).astype(str)


def dataset_titles(dataset: Dataset) -> pd.Series:
    """A display name per item index: the name column's value where there is one, else the external ID.

    Parameters
    ----------
    dataset
        Any dataset (with or without an item table).

    Returns
    -------
    pandas.Series
        ``n_items`` strings, position ``i`` naming item index ``i``.
    """
    return _names(list(dataset.items.external_ids), dataset.item_table, item_name_column(dataset))


def dataset_user_names(dataset: Dataset) -> pd.Series:
    """A display name per user index (the user table's name column), else the external ID; see :func:`dataset_titles`."""
    return _names(list(dataset.users.external_ids), dataset.user_table, user_name_column(dataset))


def has_item_names(dataset: Dataset) -> bool:
    """Whether the dataset's items have names besides their IDs."""
    return item_name_column(dataset) is not None


def run_titles(run: "LoadedRun", dataset: Dataset | None = None) -> list[str]:
    """A display name per item of a run, in the run's item order.

    The dataset's names (:func:`dataset_titles`) come first when it is at hand,
    so a name column chosen after training is used; then the names saved with
    the run; the external ID otherwise.

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
    if dataset is None or not has_item_names(dataset):
        return [str(saved.get(i, i)) for i in ids]
    titles = dataset_titles(dataset)
    positions = dataset.items.lookup(list(ids))
    return [titles.iloc[p] if p >= 0 else str(saved.get(i, i)) for p, i in zip(positions, ids)]
