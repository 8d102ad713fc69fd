"""A run's users and items beside their vectors: labels, cohorts, counts and features for maps, search and trails."""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.idmap import IdMap
from metarec_core.popularity import item_counts
from metarec_core.projection import PCAProjection
from metarec_core.titles import run_titles

if TYPE_CHECKING:
    from metarec_core.recommender import Recommender

#: Columns every entity frame starts with; the side features follow.
BASE_COLUMNS = ("id", "label", "cohort", "n_ratings")


@dataclass(frozen=True)
class RunEmbeddings:
    """Item and user vectors of a run with one descriptive row each (for maps and neighbour search).

    Attributes
    ----------
    items, users
        Frames with :data:`BASE_COLUMNS` (``id``, ``label``, ``cohort``,
        ``n_ratings``) then the side features; row ``i`` describes vector ``i``.
    item_vectors, user_vectors
        ``(n, factor_dim)`` float64 vectors in the item-factor space.
    """

    items: pd.DataFrame
    item_vectors: np.ndarray
    users: pd.DataFrame
    user_vectors: np.ndarray


def _side_rows(table: pd.DataFrame, idmap: IdMap, external_ids: Sequence[str]) -> pd.DataFrame:
    """Side-table rows aligned to a run's external IDs (IDs the dataset lacks give empty rows)."""
    if table.shape[1] == 0:
        return pd.DataFrame(index=range(len(external_ids)))
    return table.reindex(idmap.lookup(list(external_ids))).reset_index(drop=True)


def _user_counts(rec: "Recommender", dataset: Dataset) -> np.ndarray:
    positions = dataset.users.lookup(list(rec.users.external_ids))
    counts = np.bincount(dataset.ratings["user"].to_numpy(np.int64), minlength=dataset.n_users)
    return np.where(positions >= 0, counts[np.maximum(positions, 0)], 0)


def run_users(rec: "Recommender", dataset: Dataset) -> pd.DataFrame:
    """Every user of a run with its cohort and number of interactions (cheap: no adaptation).

    Parameters
    ----------
    rec
        The run's recommender.
    dataset
        The dataset it was trained on.

    Returns
    -------
    pandas.DataFrame
        ``id``, ``cohort`` (``warm`` / ``new`` / ``meta-test``, see
        :meth:`Recommender.user_cohorts`) and ``n_ratings``, in the run's user order.
    """
    n_ratings = _user_counts(rec, dataset)
    return pd.DataFrame({"id": list(rec.users.external_ids), "cohort": rec.user_cohorts(n_ratings), "n_ratings": n_ratings})


def run_embeddings(rec: "Recommender", dataset: Dataset) -> RunEmbeddings:
    """Vectors of every item (factor ``q_i``) and user (taste vector) of a run, with a row describing each.

    Warm users keep their learned parameters; other users are adapted on their
    first K interactions in time (K = the run's ``eval_support_size``); users
    without any sit at the meta-learned start. Items are ``new`` when the run
    held them out or never saw them, ``warm`` otherwise.

    Parameters
    ----------
    rec
        The run's recommender.
    dataset
        The dataset it was trained on (side features, interaction counts, supports).

    Returns
    -------
    RunEmbeddings
    """
    item_ids = rec.items.external_ids
    items = _side_rows(dataset.item_table, dataset.items, item_ids)
    known = rec.model.item_known.cpu().numpy()
    held_out = set(rec.run.meta.get("cold_items", []))
    positions = dataset.items.lookup(list(item_ids))
    counts = item_counts(dataset)
    items.insert(0, "id", list(item_ids))
    items.insert(1, "label", run_titles(rec.run, dataset))
    items.insert(2, "cohort", ["new" if i in held_out or not known[i] else "warm" for i in range(len(item_ids))])
    items.insert(3, "n_ratings", np.where(positions >= 0, counts[np.maximum(positions, 0)], 0))

    k = int(rec.run.config.eval_support_size)
    first = dataset.ratings.sort_values(["timestamp", "item"], kind="stable").groupby("user").head(k)
    vectors = rec.user_vectors(pd.DataFrame({
        "user_id": dataset.users.externals(first["user"]), "item_id": dataset.items.externals(first["item"]),
        "rating": first["rating"].to_numpy(),
    }))
    user_ids = rec.users.external_ids
    described = run_users(rec, dataset)
    users = _side_rows(dataset.user_table, dataset.users, user_ids)
    users.insert(0, "id", list(user_ids))
    users.insert(1, "label", [f"user {u}" for u in user_ids])
    users.insert(2, "cohort", described["cohort"].to_numpy())
    users.insert(3, "n_ratings", described["n_ratings"].to_numpy())
    return RunEmbeddings(items, rec.item_vectors().astype(np.float64), users, vectors.astype(np.float64))


def search(frame: pd.DataFrame, query: str, *, limit: int | None = 20, most_rated_first: bool = False) -> list[int]:
    """Row positions of ``frame`` whose ``id`` equals ``query`` or whose ``label`` contains it (case-insensitive).

    Parameters
    ----------
    frame
        An entity frame of :class:`RunEmbeddings` (``id``, ``label``, ``n_ratings``).
    query
        The text searched for; blank finds nothing.
    limit
        At most this many rows (``None``: all).
    most_rated_first
        Order the hits by ``n_ratings`` (most first) instead of exact ID
        matches first, then the rest in row order.

    Returns
    -------
    list of int
        Positions (``iloc``), each once.
    """
    needle = query.strip().lower()
    if not needle:
        return []
    frame = frame.reset_index(drop=True)
    exact = frame.index[frame["id"].astype(str).str.lower() == needle].tolist()
    contains = frame.index[frame["label"].astype(str).str.lower().str.contains(needle, regex=False)].tolist()
    hits = list(dict.fromkeys(exact + contains))
    if most_rated_first:
        counts = frame["n_ratings"].to_numpy()
        hits.sort(key=lambda row: -counts[row])
    return hits if limit is None else hits[:limit]


def user_trail(
    rec: "Recommender",
    ratings: Sequence[tuple[str, float]],
    pca: PCAProjection,
    *,
    upto: int | None = None,
    user_features: Mapping[str, object] | None = None,
    memo: MutableMapping[tuple, tuple[float, float]] | None = None,
    last_state: Any = None,
) -> pd.DataFrame:
    """A new user's taste vector after 0, 1, ..., ``upto`` of their ratings, projected with ``pca``.

    With the items' own PCA the positions are exact on the item map (PCA is linear).

    Parameters
    ----------
    rec
        The run's recommender.
    ratings
        ``(item_id, rating)`` pairs in the order given.
    pca
        The projection of the item map.
    upto
        The last number of ratings shown (default: all of them).
    user_features
        The user's side features (fixed along the trail).
    memo
        Positions already computed, keyed by ``(ratings so far, features)``;
        new ones are added (pass one per run and weights version).
    last_state
        The user already adapted to the first ``upto`` ratings (``rec.adapt_user``),
        if the caller has it: the last step is read from it, not adapted again.

    Returns
    -------
    pandas.DataFrame
        ``x``, ``y`` and ``label`` (the number of ratings, as text), one row per step.
    """
    features = dict(user_features or {})
    memo = {} if memo is None else memo
    upto = len(ratings) if upto is None else upto
    rows = []
    for n in range(upto + 1):
        key = (tuple(ratings[:n]), tuple(sorted(features.items())))
        if key not in memo:
            state = last_state if n == upto and last_state is not None else rec.adapt_user(list(ratings[:n]), user_features=features)
            x, y = pca.transform(rec.user_vector(state))[0]
            memo[key] = (float(x), float(y))
        rows.append((*memo[key], str(n)))
    return pd.DataFrame(rows, columns=["x", "y", "label"])


#: Side columns read as an item's year, and as its category (first found), by :func:`item_blurbs`.
YEAR_COLUMNS = ("year", "release_year")
CATEGORY_COLUMNS = ("genres", "genre", "category", "categories", "tags")


def item_blurbs(frame: pd.DataFrame, *, max_categories: int = 2) -> list[str]:
    """A short description of every item of an entity frame: its year and category, where the data has them.

    The year comes from a ``year`` column (left out when the label already
    shows it, as MovieLens titles do), the category from the first of
    :data:`CATEGORY_COLUMNS` present (multi-label values ``a|b|c`` give their
    first ``max_categories``). Items with neither get ``""``.

    Parameters
    ----------
    frame
        The ``items`` frame of :class:`RunEmbeddings` (``label`` and side features).
    max_categories
        How many labels of a multi-label category to keep.

    Returns
    -------
    list of str
        One description per row, e.g. ``"Animation, Children's"`` or ``"1995 · music"``.
    """
    labels = frame["label"].astype(str).tolist()
    year_col = next((c for c in YEAR_COLUMNS if c in frame.columns), None)
    cat_col = next((c for c in CATEGORY_COLUMNS if c in frame.columns), None)
    years = frame[year_col].tolist() if year_col else [None] * len(frame)
    cats = frame[cat_col].tolist() if cat_col else [None] * len(frame)
    out = []
    for label, year, cat in zip(labels, years, cats):
        parts = []
        if year is not None and not pd.isna(year):
            text = str(int(year)) if isinstance(year, (int, float, np.integer, np.floating)) else str(year)
            if text not in label:
                parts.append(text)
        if cat is not None and not (isinstance(cat, float) and np.isnan(cat)) and str(cat).strip():
            parts.append(", ".join([c.strip() for c in str(cat).split("|") if c.strip()][:max_categories]))
        out.append(" · ".join(parts))
    return out
