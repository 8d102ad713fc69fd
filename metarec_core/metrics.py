"""Evaluation metrics: pure functions on NumPy arrays (rating error, ranking quality, AUC).

Every function here is pure (no state, no randomness) and documents its exact
definition, so a figure in a table can be recomputed by hand. Two families:

* **Rating error** over (true, predicted) pairs: :func:`mae`, :func:`rmse`
  (pooled over all pairs) and :func:`per_user_mean` (the metric computed per user,
  then averaged over users so every user weighs the same).
* **Ranking quality**, either *within a user's query set* (rank only the items the
  user rated in the query; :func:`ndcg_at_k`, :func:`mean_ndcg_at_k`) or over the
  *full catalogue* (rank every item the user has not already seen;
  :func:`ndcg_at_k_catalogue`, :func:`recall_at_k`, :func:`hit_rate_at_k`), and
  :func:`auc` / :func:`mean_auc` for implicit (0/1) feedback.

Ties in the predicted scores are never broken by input order (which could leak
information such as a timestamp or an item index): every ranking metric reports
its *expected value when tied items are put in uniformly random order*, which is
deterministic. For nDCG this is the tie-averaged DCG of McSherry & Najork (2008),
the same rule as ``sklearn.metrics.ndcg_score(..., ignore_ties=False)``.

Grouped functions take a ``users`` array and work on all users at once with one
sort and ``np.bincount``; there is no Python loop over rows.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from metarec_core.errors import ConfigError, DataError

#: The cut-offs the app and benchmarks report by default.
DEFAULT_KS = (1, 3, 5, 10)

__all__ = [
    "DEFAULT_KS",
    "auc",
    "catalogue_hits_per_user",
    "catalogue_ndcg_per_user",
    "dcg_gains",
    "hit_rate_at_k",
    "mae",
    "mean_auc",
    "mean_ndcg_at_k",
    "ndcg_at_k",
    "ndcg_at_k_catalogue",
    "ndcg_per_user",
    "per_user",
    "per_user_mean",
    "recall_at_k",
    "rmse",
]


# --------------------------------------------------------------------------- checks


def _as_1d(values: np.ndarray, name: str, dtype: type = np.float64) -> np.ndarray:
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim != 1:
        raise DataError(f"expected a 1-D array, got shape {arr.shape}; pass one value per row", column=name)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise DataError(f"value at position {bad} is {arr[bad]}; metrics need finite numbers", column=name)
    return arr


def _pair(y_true: np.ndarray, y_pred: np.ndarray, pred_name: str = "y_pred") -> tuple[np.ndarray, np.ndarray]:
    t = _as_1d(y_true, "y_true")
    p = _as_1d(y_pred, pred_name)
    if len(t) != len(p):
        raise DataError(f"y_true has {len(t)} values but {pred_name} has {len(p)}; pass one prediction per rating")
    if len(t) == 0:
        raise DataError("no values to evaluate (empty arrays)", column="y_true")
    return t, p


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in an already sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


# --------------------------------------------------------------------------- rating error


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error, pooled over all pairs.

    ``MAE = (1/n) * sum_j |y_true_j - y_pred_j|``. Users with many query ratings
    weigh more; see :func:`per_user_mean` for the per-user average.

    Parameters
    ----------
    y_true, y_pred
        True and predicted ratings, same length, finite.

    Returns
    -------
    float
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error, pooled over all pairs.

    ``RMSE = sqrt((1/n) * sum_j (y_true_j - y_pred_j)^2)``.

    Parameters
    ----------
    y_true, y_pred
        True and predicted ratings, same length, finite.

    Returns
    -------
    float
    """
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def per_user(
    metric: Callable[[np.ndarray, np.ndarray], float],
    users: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Compute ``metric`` separately on each user's rows.

    Rows are grouped by ``users`` with one stable sort; ``metric`` is called once
    per user (``mae`` and ``rmse`` are recognised and computed without any Python
    loop).

    Parameters
    ----------
    metric
        A function ``metric(y_true, y_pred) -> float`` such as :func:`mae`.
    users
        User index of each row.
    y_true, y_pred
        True and predicted values of each row.

    Returns
    -------
    user_ids, values
        The distinct users in increasing order and the metric of each.
    """
    t, p = _pair(y_true, y_pred)
    u = _as_1d(users, "users", np.int64)
    if len(u) != len(t):
        raise DataError(f"users has {len(u)} values but y_true has {len(t)}; pass one user per row")
    ids, inverse, counts = np.unique(u, return_inverse=True, return_counts=True)
    if metric is mae:
        return ids, np.bincount(inverse, weights=np.abs(t - p)) / counts
    if metric is rmse:
        return ids, np.sqrt(np.bincount(inverse, weights=(t - p) ** 2) / counts)
    order = np.argsort(inverse, kind="stable")
    bounds = np.cumsum(counts)[:-1]
    values = np.array(
        [metric(a, b) for a, b in zip(np.split(t[order], bounds), np.split(p[order], bounds), strict=True)],
        dtype=np.float64,
    )
    return ids, values


def per_user_mean(
    metric: Callable[[np.ndarray, np.ndarray], float],
    users: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
) -> float:
    """The metric computed per user, then averaged over users (every user weighs the same).

    ``per_user_mean(mae) = (1/|U|) * sum_u MAE(rows of u)``. Users whose metric is
    undefined (NaN, e.g. :func:`auc` with one class) are left out of the average.

    Parameters
    ----------
    metric
        A function ``metric(y_true, y_pred) -> float`` such as :func:`mae` or :func:`rmse`.
    users, y_true, y_pred
        One entry per row, as in :func:`per_user`.

    Returns
    -------
    float
        NaN only when the metric is undefined for every user.
    """
    _, values = per_user(metric, users, y_true, y_pred)
    return _nanmean(values)


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if len(finite) else float("nan")


# --------------------------------------------------------------------------- nDCG


def dcg_gains(ratings: np.ndarray, gain: str = "exponential") -> np.ndarray:
    """Gain of each rating: ``2**r - 1`` (``"exponential"``, the default) or ``r`` (``"linear"``).

    Ratings must be >= 0 (a rating of 0 has no gain). For implicit 0/1 feedback
    both gains coincide.

    Raises
    ------
    DataError
        If a rating is negative (shift the scale so the lowest rating is >= 0).
    ConfigError
        If ``gain`` is not one of the two names.
    """
    r = _as_1d(ratings, "y_true")
    if len(r) and r.min() < 0:
        raise DataError(
            f"ratings must be >= 0 for nDCG gains, found {r.min()}; shift the rating scale so the lowest is 0 or more",
            column="y_true",
        )
    if gain == "exponential":
        return np.exp2(r) - 1.0
    if gain == "linear":
        return r.copy()
    raise ConfigError(f"gain must be 'exponential' or 'linear', got {gain!r}")


def _positions(sorted_groups: np.ndarray) -> np.ndarray:
    """0-based position of each element within its run of equal groups (``sorted_groups`` sorted)."""
    starts = _group_starts(sorted_groups)
    return np.arange(len(sorted_groups)) - np.repeat(starts, np.diff(np.r_[starts, len(sorted_groups)]))


def _discount(positions: np.ndarray, k: int) -> np.ndarray:
    return np.where(positions < k, 1.0 / np.log2(positions + 2.0), 0.0)


def _ranked(g: np.ndarray, gains: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ranked by score within their group: each row's group, 0-based place, and the mean gain of its tie."""
    order = np.lexsort((-scores, g))
    g_s, s_s, gain_s = g[order], scores[order], gains[order]
    tie_new = np.r_[True, (g_s[1:] != g_s[:-1]) | (s_s[1:] != s_s[:-1])]
    tie_id = np.cumsum(tie_new) - 1
    return g_s, _positions(g_s), (np.bincount(tie_id, weights=gain_s) / np.bincount(tie_id))[tie_id]


def _ideal(g: np.ndarray, gains: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ranked by their true gain within their group: each row's group, 0-based place and gain."""
    ideal = np.lexsort((-gains, g))
    g_i = g[ideal]
    return g_i, _positions(g_i), gains[ideal]


def _grouped_dcg(g: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int, n_groups: int) -> np.ndarray:
    """Tie-averaged DCG@k of groups ``0..n_groups-1``: rank by score descending, tied items share their mean gain."""
    if len(g) == 0:
        return np.zeros(n_groups)
    g_s, places, tie_gain = _ranked(g, gains, scores)
    return np.bincount(g_s, weights=tie_gain * _discount(places, k), minlength=n_groups)


def _grouped_idcg(g: np.ndarray, gains: np.ndarray, k: int, n_groups: int) -> np.ndarray:
    """IDCG@k of groups ``0..n_groups-1``: the same items ranked by their true gain."""
    g_i, places, gain_i = _ideal(g, gains)
    return np.bincount(g_i, weights=gain_i * _discount(places, k), minlength=n_groups)


def _ratio_or_nan(dcg: np.ndarray, idcg: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)


def _grouped_ndcg(groups: np.ndarray, gains: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Tie-averaged nDCG@k of every group; returns (group ids, values with NaN where IDCG = 0)."""
    ids, values = _grouped_ndcg_at_ks(groups, gains, scores, (k,))
    return ids, values[k]


def _grouped_ndcg_at_ks(
    groups: np.ndarray, gains: np.ndarray, scores: np.ndarray, ks: Sequence[int]
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """:func:`_grouped_ndcg` at several cut-offs from one ranking and one ideal ranking of the rows."""
    ids, g = np.unique(groups, return_inverse=True)
    g_s, places, tie_gain = _ranked(g, gains, scores)
    g_i, ideal_places, gain_i = _ideal(g, gains)
    out = {}
    for k in ks:
        dcg = np.bincount(g_s, weights=tie_gain * _discount(places, k), minlength=len(ids))
        idcg = np.bincount(g_i, weights=gain_i * _discount(ideal_places, k), minlength=len(ids))
        out[k] = _ratio_or_nan(dcg, idcg)
    return ids, out


def ndcg_at_k(y_true: np.ndarray, y_score: np.ndarray, k: int, *, gain: str = "exponential") -> float:
    """nDCG@k of one user's query set: rank the query items by score, compare with the ideal order.

    Definition (positions ``i = 1..min(k, n)`` of the ranking by ``y_score``,
    highest first; ``g = 2**r - 1`` the gain of true rating ``r``)::

        DCG@k  = sum_{i<=k} g_(i) / log2(i + 1)
        IDCG@k = the same sum with items ordered by their true gain
        nDCG@k = DCG@k / IDCG@k

    Only the ``n`` items of the query set are ranked. When ``n < k`` the sums
    stop at ``n`` (so a one-item query set scores 1). **Ties:** items with equal
    scores share the mean gain of their tied group (the expected DCG under a
    uniformly random order of the tie; same as ``sklearn.metrics.ndcg_score``).
    **All-zero gain** (every true rating 0, so IDCG = 0): nDCG is undefined and
    NaN is returned; :func:`mean_ndcg_at_k` leaves such users out.

    Parameters
    ----------
    y_true
        True ratings (>= 0) of the query items.
    y_score
        Predicted scores of the same items (higher ranks first).
    k
        Cut-off, a positive integer.
    gain
        ``"exponential"`` (``2**r - 1``, default) or ``"linear"`` (``r``).

    Returns
    -------
    float
        In [0, 1], or NaN when IDCG is 0.

    Examples
    --------
    >>> round(ndcg_at_k(np.array([5.0, 3.0, 1.0]), np.array([0.1, 0.9, 0.5]), k=3), 4)
    0.644
    """
    k = _check_k(k)
    t, s = _pair(y_true, y_score, "y_score")
    _, values = _grouped_ndcg(np.zeros(len(t), dtype=np.int64), dcg_gains(t, gain), s, k)
    return float(values[0])


def ndcg_per_user(
    users: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, k: int, *, gain: str = "exponential"
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`ndcg_at_k` of every user's query set at once (vectorised: one sort, no per-user loop).

    Returns
    -------
    user_ids, values
        Distinct users in increasing order and their nDCG@k (NaN where all gains are 0).
    """
    k = _check_k(k)
    t, s = _pair(y_true, y_score, "y_score")
    u = _as_1d(users, "users", np.int64)
    if len(u) != len(t):
        raise DataError(f"users has {len(u)} values but y_true has {len(t)}; pass one user per row")
    return _grouped_ndcg(u, dcg_gains(t, gain), s, k)


def ndcg_per_user_at_ks(
    users: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, ks: Sequence[int], *, gain: str = "exponential"
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """:func:`ndcg_per_user` at several cut-offs at once (the rows are ranked once, not once per cut-off).

    Returns
    -------
    user_ids, values
        Distinct users in increasing order, and for each cut-off ``k`` their nDCG@k.
    """
    ks = tuple(_check_k(k) for k in ks)
    t, s = _pair(y_true, y_score, "y_score")
    u = _as_1d(users, "users", np.int64)
    if len(u) != len(t):
        raise DataError(f"users has {len(u)} values but y_true has {len(t)}; pass one user per row")
    return _grouped_ndcg_at_ks(u, dcg_gains(t, gain), s, ks)


def mean_ndcg_at_ks(
    users: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, ks: Sequence[int], *, gain: str = "exponential"
) -> dict[int, float]:
    """:func:`mean_ndcg_at_k` at several cut-offs from one ranking of the rows: ``{k: mean nDCG@k}``."""
    _, values = ndcg_per_user_at_ks(users, y_true, y_score, ks, gain=gain)
    return {k: _nanmean(v) for k, v in values.items()}


def mean_ndcg_at_k(
    users: np.ndarray, y_true: np.ndarray, y_score: np.ndarray, k: int, *, gain: str = "exponential"
) -> float:
    """nDCG@k per user over each user's query set (:func:`ndcg_at_k`), averaged over users.

    Users whose query ratings are all 0 (undefined nDCG) are left out of the
    average; NaN is returned only if that is every user.

    Parameters
    ----------
    users
        User index of each query row.
    y_true, y_score
        True rating and predicted score of each query row.
    k
        Cut-off.
    gain
        ``"exponential"`` (default) or ``"linear"``.

    Returns
    -------
    float
    """
    _, values = ndcg_per_user(users, y_true, y_score, k, gain=gain)
    return _nanmean(values)


# --------------------------------------------------------------------------- full-catalogue ranking


def _catalogue(
    scores: np.ndarray, relevant: np.ndarray, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores of the candidate items, a 'relevant' mask over them, and the candidate mask over the catalogue."""
    s = _as_1d(scores, "scores_over_catalogue")
    rel = _as_1d(relevant, "relevant_items", np.int64)
    n = len(s)
    if len(rel) and (rel.min() < 0 or rel.max() >= n):
        raise DataError(
            f"relevant item indices must lie in 0..{n - 1} (the catalogue size is {n})", column="relevant_items"
        )
    if len(np.unique(rel)) != len(rel):
        raise DataError("relevant items contain duplicates; list each item once", column="relevant_items")
    keep = np.ones(n, dtype=bool)
    if exclude is not None:
        ex = _as_1d(exclude, "exclude", np.int64)
        if len(ex) and (ex.min() < 0 or ex.max() >= n):
            raise DataError(f"excluded item indices must lie in 0..{n - 1}", column="exclude")
        keep[ex] = False
        if not keep[rel].all():
            bad = int(rel[~keep[rel]][0])
            raise DataError(
                f"item {bad} is both relevant and excluded; exclude only items already seen "
                "(support/train), not query items",
                column="exclude",
            )
    is_rel = np.zeros(n, dtype=bool)
    is_rel[rel] = True
    return s[keep], is_rel[keep], keep


def ndcg_at_k_catalogue(
    relevant_items_with_gains: tuple[np.ndarray, np.ndarray],
    scores_over_catalogue: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    gain: str = "exponential",
) -> float:
    """nDCG@k of one user over the full catalogue: every item not excluded is ranked.

    The candidates are all items ``0..n_items-1`` except ``exclude`` (usually the
    items the user rated in training/support). A candidate's gain is ``2**r - 1``
    if it is one of the user's held-out items with rating ``r``, else 0. DCG,
    IDCG, the tie rule and the NaN for IDCG = 0 are as in :func:`ndcg_at_k`, with
    the ranking taken over all candidates instead of the query set.

    Parameters
    ----------
    relevant_items_with_gains
        ``(items, ratings)``: the held-out item indices and their true ratings
        (>= 0; gains are computed from them as in :func:`dcg_gains`).
    scores_over_catalogue
        Predicted score of every item, shape ``(n_items,)``.
    k
        Cut-off.
    exclude
        Item indices removed from the ranking (must not include relevant items).
    gain
        ``"exponential"`` (default) or ``"linear"``.

    Returns
    -------
    float
    """
    k = _check_k(k)
    items, ratings = relevant_items_with_gains
    items = _as_1d(items, "relevant_items", np.int64)
    g = dcg_gains(ratings, gain)
    if len(g) != len(items):
        raise DataError(f"{len(items)} relevant items but {len(g)} ratings; pass one rating per item")
    s, _, keep = _catalogue(scores_over_catalogue, items, exclude)
    gain_by_item = np.zeros(len(keep))
    gain_by_item[items] = g
    _, values = _grouped_ndcg(np.zeros(len(s), dtype=np.int64), gain_by_item[keep], s, k)
    return float(values[0])


def _expected_hits(s: np.ndarray, is_rel: np.ndarray, k: int) -> tuple[float, float]:
    """Expected (#relevant in top k, P(at least one relevant in top k)) under random tie order."""
    k = min(k, len(s))
    if k == 0:
        return 0.0, 0.0
    threshold = np.partition(s, len(s) - k)[len(s) - k]  # the k-th largest score
    above = s > threshold
    tied = s == threshold
    slots = k - int(above.sum())  # how many of the tied items make the top k
    return _hits_from_counts(int(is_rel[above].sum()), slots, int(tied.sum()), int(is_rel[tied].sum()))


def _hits_from_counts(hits_above: int, slots: int, n_tied: int, rel_tied: int) -> tuple[float, float]:
    """:func:`_expected_hits` from its counts: relevant items above the k-th score, free slots, tied items, relevant tied ones."""
    expected = hits_above + slots * rel_tied / n_tied
    if hits_above > 0:
        p_hit = 1.0
    elif rel_tied == 0 or slots == 0:
        p_hit = 0.0
    else:  # 1 - C(n_tied - rel_tied, slots) / C(n_tied, slots)
        misses = n_tied - rel_tied
        if misses < slots:
            p_hit = 1.0
        else:
            log_p_miss = (
                math.lgamma(misses + 1)
                - math.lgamma(misses - slots + 1)
                - math.lgamma(n_tied + 1)
                + math.lgamma(n_tied - slots + 1)
            )
            p_hit = 1.0 - math.exp(log_p_miss)
    return float(expected), p_hit


def recall_at_k(
    relevant_items: np.ndarray, scores_over_catalogue: np.ndarray, k: int, *, exclude: np.ndarray | None = None
) -> float:
    """Recall@k of one user over the full catalogue.

    ``Recall@k = |top-k ∩ relevant| / |relevant|``, where top-k is taken over all
    items except ``exclude``, by score. Ties at the cut-off count in expectation
    (tied items fill the remaining slots in uniformly random order). NaN when the
    user has no relevant item. Note the denominator is ``|relevant|``, not
    ``min(k, |relevant|)``: with more relevant items than ``k`` the maximum is below 1.

    Parameters
    ----------
    relevant_items
        Item indices that count as hits (e.g. held-out items rated >= 4, or all
        held-out items for implicit data).
    scores_over_catalogue
        Predicted score of every item, shape ``(n_items,)``.
    k
        Cut-off.
    exclude
        Item indices removed from the ranking (items already seen).

    Returns
    -------
    float
    """
    k = _check_k(k)
    s, is_rel, _ = _catalogue(scores_over_catalogue, relevant_items, exclude)
    n_rel = int(is_rel.sum())
    if n_rel == 0:
        return float("nan")
    expected, _ = _expected_hits(s, is_rel, k)
    return expected / n_rel


def hit_rate_at_k(
    relevant_items: np.ndarray, scores_over_catalogue: np.ndarray, k: int, *, exclude: np.ndarray | None = None
) -> float:
    """HitRate@k of one user over the full catalogue: 1 if any relevant item is in the top k, else 0.

    Same candidates and ranking as :func:`recall_at_k`. When ties straddle the
    cut-off the value is the probability of a hit under a uniformly random order
    of the tie (hypergeometric), so it can lie strictly between 0 and 1. NaN when
    the user has no relevant item. Averaged over users it is the share of users
    with at least one hit.

    Returns
    -------
    float
    """
    k = _check_k(k)
    s, is_rel, _ = _catalogue(scores_over_catalogue, relevant_items, exclude)
    if not is_rel.any():
        return float("nan")
    _, p_hit = _expected_hits(s, is_rel, k)
    return p_hit


def _catalogue_rows(
    scores: np.ndarray, exclude: np.ndarray | None, tasks: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked ``(T, n)`` scores, candidate mask, and the relevant rows' tasks and items."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise DataError(f"expected a (users, items) score matrix, got shape {s.shape}", column="scores_over_catalogue")
    if not np.all(np.isfinite(s)):
        row, col = (int(v[0]) for v in np.nonzero(~np.isfinite(s)))
        raise DataError(f"score of user row {row}, item {col} is {s[row, col]}; metrics need finite numbers", column="scores_over_catalogue")
    n_tasks, n = s.shape
    t = _as_1d(tasks, "tasks", np.int64)
    rel = _as_1d(items, "relevant_items", np.int64)
    if len(t) != len(rel):
        raise DataError(f"{len(t)} tasks but {len(rel)} relevant items; pass one task per item")
    if len(rel) and (rel.min() < 0 or rel.max() >= n):
        raise DataError(f"relevant item indices must lie in 0..{n - 1} (the catalogue size is {n})", column="relevant_items")
    if len(t) and (t.min() < 0 or t.max() >= n_tasks):
        raise DataError(f"task indices must lie in 0..{n_tasks - 1}", column="tasks")
    cells = np.sort(t * n + rel)  # a sort: np.unique's hashing is slow on keys this spread out
    if (cells[1:] == cells[:-1]).any():
        raise DataError("relevant items contain duplicates; list each item once per user", column="relevant_items")
    keep = np.ones(s.shape, dtype=bool) if exclude is None else ~np.asarray(exclude, dtype=bool)
    if keep.shape != s.shape:
        raise DataError(f"exclude has shape {keep.shape} but the scores have {s.shape}", column="exclude")
    if not keep[t, rel].all():
        bad = int(np.flatnonzero(~keep[t, rel])[0])
        raise DataError(
            f"item {int(rel[bad])} is both relevant and excluded (user row {int(t[bad])}); exclude only items already "
            "seen (support/train), not query items",
            column="exclude",
        )
    return s, keep, t, rel


#: Scores per block of rows in :func:`_kth_largest` (8 MB of float64): its temporaries stay small whatever the catalogue.
_BLOCK_CELLS = 1 << 20


def _kth_largest(s: np.ndarray, keep: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``min(k, #candidates)``-th largest candidate score, and that cut-off ``min(k, #candidates)``."""
    n_cand = keep.sum(axis=1)
    k_row = np.minimum(k, n_cand)
    n = s.shape[1]
    kk = min(k, n)
    threshold = np.zeros(len(s))
    step = max(1, _BLOCK_CELLS // max(n, 1))
    for start in range(0, len(s) if n else 0, step):
        block = slice(start, start + step)
        masked = np.where(keep[block], s[block], -np.inf)
        threshold[block] = np.partition(masked, n - kk, axis=1)[:, n - kk]
    short = k_row < kk  # fewer candidates than k: the cut-off is the smallest candidate
    if short.any():
        threshold[short] = np.where(keep[short], s[short], np.inf).min(axis=1)
    return threshold, k_row


class _TopCut(NamedTuple):
    """Where each row's top k ends: the k-th largest candidate score, the cut-off ``min(k, #candidates)``, and how many
    candidates score above it and how many equal it."""

    threshold: np.ndarray
    k_row: np.ndarray
    n_above: np.ndarray
    n_tied: np.ndarray


def _top_cut(s: np.ndarray, keep: np.ndarray, k: int) -> _TopCut:
    threshold, k_row = _kth_largest(s, keep, k)
    n_above = (keep & (s > threshold[:, None])).sum(axis=1)
    n_tied = (keep & (s == threshold[:, None])).sum(axis=1)
    return _TopCut(threshold, k_row, n_above, n_tied)


def _held_out_gains(ratings: np.ndarray, rel: np.ndarray, gain: str) -> np.ndarray:
    """The DCG gain of each held-out row (one rating per relevant item)."""
    g = dcg_gains(ratings, gain)
    if len(g) != len(rel):
        raise DataError(f"{len(rel)} relevant items but {len(g)} ratings; pass one rating per item")
    return g


def _catalogue_ndcg(s: np.ndarray, keep: np.ndarray, t: np.ndarray, rel: np.ndarray, g: np.ndarray, k: int, cut: _TopCut) -> np.ndarray:
    """Per-user catalogue nDCG@k from each row's top-k cut.

    Candidates above the cut (fewer than k a user) are ranked by a sort; the
    candidates tied at it share the places left in the top k and their mean
    gain, so they need only be counted, not sorted.
    """
    n_tasks, n = s.shape
    rows, cols = np.nonzero(keep & (s > cut.threshold[:, None]))  # row-major: items ascending within a user
    # The gain of each ranked cell: its held-out rating's, 0 if it has none (looked up among the held-out cells).
    held_out = t * n + rel
    by_cell = np.argsort(held_out)
    ranked = rows * n + cols
    at = np.minimum(np.searchsorted(held_out[by_cell], ranked), max(len(held_out) - 1, 0))
    above_gains = np.where(held_out[by_cell][at] == ranked, g[by_cell][at], 0.0) if len(held_out) else np.zeros(len(ranked))
    dcg = _grouped_dcg(rows, above_gains, s[rows, cols], k, n_tasks)
    tied_gain = np.bincount(t, weights=np.where(s[t, rel] == cut.threshold[t], g, 0.0), minlength=n_tasks)
    # Places n_above .. min(k, n_above + n_tied) - 1 go to the tied candidates, each worth their mean gain.
    cumulative = np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))]
    places = cumulative[np.minimum(k, cut.n_above + cut.n_tied)] - cumulative[np.minimum(k, cut.n_above)]
    dcg = dcg + np.where(cut.n_tied > 0, tied_gain / np.maximum(cut.n_tied, 1) * places, 0.0)
    return _ratio_or_nan(dcg, _grouped_idcg(t, g, k, n_tasks))


def _catalogue_hits(s: np.ndarray, t: np.ndarray, rel: np.ndarray, cut: _TopCut) -> tuple[np.ndarray, np.ndarray]:
    """Per-user catalogue recall@k and hit rate@k from each row's top-k cut."""
    n_tasks = s.shape[0]
    at_rel = s[t, rel]
    rel_above = np.bincount(t, weights=at_rel > cut.threshold[t], minlength=n_tasks).astype(np.int64)
    rel_tied = np.bincount(t, weights=at_rel == cut.threshold[t], minlength=n_tasks).astype(np.int64)
    n_rel = np.bincount(t, minlength=n_tasks)
    recall = np.full(n_tasks, np.nan)
    hit = np.full(n_tasks, np.nan)
    for row in np.flatnonzero(n_rel):
        if cut.k_row[row] == 0:
            expected, p_hit = 0.0, 0.0
        else:
            expected, p_hit = _hits_from_counts(
                int(rel_above[row]), int(cut.k_row[row] - cut.n_above[row]), int(cut.n_tied[row]), int(rel_tied[row]),
            )
        recall[row] = expected / int(n_rel[row])
        hit[row] = p_hit
    return recall, hit


def catalogue_ndcg_per_user(
    scores: np.ndarray,
    exclude: np.ndarray | None,
    tasks: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    k: int,
    *,
    gain: str = "exponential",
) -> np.ndarray:
    """:func:`ndcg_at_k_catalogue` of many users at once: row ``t`` of ``scores`` is user ``t``'s catalogue.

    Only each user's candidates scoring above their k-th largest candidate
    score are sorted; those tied at it are counted (they share the remaining
    places and their mean gain), so the result equals the one-user function
    without sorting the whole catalogue.

    Parameters
    ----------
    scores
        ``(T, n_items)`` predicted scores.
    exclude
        ``(T, n_items)`` bool mask of items removed from each user's ranking (or ``None``).
    tasks, items, ratings
        The held-out rows: user row, item and true rating (>= 0) of each.
    k
        Cut-off.
    gain
        ``"exponential"`` (default) or ``"linear"``.

    Returns
    -------
    np.ndarray
        ``(T,)`` nDCG@k, NaN for users with no held-out item (or all gains 0).
    """
    k = _check_k(k)
    s, keep, t, rel = _catalogue_rows(scores, exclude, tasks, items)
    g = _held_out_gains(ratings, rel, gain)
    return _catalogue_ndcg(s, keep, t, rel, g, k, _top_cut(s, keep, k))


def catalogue_hits_per_user(
    scores: np.ndarray, exclude: np.ndarray | None, tasks: np.ndarray, items: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`recall_at_k` and :func:`hit_rate_at_k` of many users at once (row ``t`` of ``scores`` is user ``t``).

    Parameters
    ----------
    scores
        ``(T, n_items)`` predicted scores.
    exclude
        ``(T, n_items)`` bool mask of items removed from each user's ranking (or ``None``).
    tasks, items
        The relevant rows: user row and item of each.
    k
        Cut-off.

    Returns
    -------
    recall, hit_rate
        ``(T,)`` each, NaN for users with no relevant item.
    """
    k = _check_k(k)
    s, keep, t, rel = _catalogue_rows(scores, exclude, tasks, items)
    return _catalogue_hits(s, t, rel, _top_cut(s, keep, k))


def catalogue_metrics_per_user(
    scores: np.ndarray,
    exclude: np.ndarray | None,
    tasks: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    k: int,
    *,
    relevant: np.ndarray | None = None,
    gain: str = "exponential",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`catalogue_ndcg_per_user` and :func:`catalogue_hits_per_user` from one check and one top-k cut.

    ``relevant`` marks which held-out rows count as relevant for recall and
    hit rate (default: all of them); nDCG uses every held-out row's gain.

    Returns
    -------
    ndcg, recall, hit_rate
        ``(T,)`` each, NaN for users with nothing held out (or nothing relevant).
    """
    k = _check_k(k)
    s, keep, t, rel = _catalogue_rows(scores, exclude, tasks, items)
    g = _held_out_gains(ratings, rel, gain)
    liked = np.ones(len(rel), dtype=bool) if relevant is None else np.asarray(relevant, dtype=bool)
    if len(liked) != len(rel):
        raise DataError(f"{len(rel)} held-out items but {len(liked)} relevant flags; pass one flag per item")
    cut = _top_cut(s, keep, k)
    recall, hit = _catalogue_hits(s, t[liked], rel[liked], cut)
    return _catalogue_ndcg(s, keep, t, rel, g, k, cut), recall, hit


# --------------------------------------------------------------------------- AUC


def _grouped_auc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ids, g = np.unique(groups, return_inverse=True)
    order = np.lexsort((scores, g))
    g_s, s_s, y_s = g[order], scores[order], labels[order]
    starts = _group_starts(g_s)
    sizes = np.diff(np.r_[starts, len(g_s)])
    rank = np.arange(len(g_s)) - np.repeat(starts, sizes) + 1.0  # 1-based rank within group
    tie_new = np.r_[True, (g_s[1:] != g_s[:-1]) | (s_s[1:] != s_s[:-1])]
    tie_id = np.cumsum(tie_new) - 1
    avg_rank = (np.bincount(tie_id, weights=rank) / np.bincount(tie_id))[tie_id]
    n_pos = np.bincount(g_s, weights=y_s, minlength=len(ids))
    n_neg = np.bincount(g_s, minlength=len(ids)) - n_pos
    rank_sum = np.bincount(g_s, weights=avg_rank * y_s, minlength=len(ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    values[(n_pos == 0) | (n_neg == 0)] = np.nan
    return ids, values


def _labels(y_true: np.ndarray) -> np.ndarray:
    t = _as_1d(y_true, "y_true")
    if not np.isin(t, (0.0, 1.0)).all():
        raise DataError("AUC needs 0/1 labels (1 = interacted); binarise explicit ratings first", column="y_true")
    return t


def auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve for implicit feedback (labels 0/1), pooled over all rows.

    ``AUC = P(score of a random positive > score of a random negative)``, ties
    counting 1/2 (the Mann–Whitney statistic; equals ``sklearn.metrics.roc_auc_score``).
    NaN when only one class is present.

    Parameters
    ----------
    y_true
        0/1 labels.
    y_score
        Predicted scores, higher = more likely positive.

    Returns
    -------
    float
    """
    t, s = _pair(y_true, y_score, "y_score")
    _, values = _grouped_auc(np.zeros(len(t), dtype=np.int64), _labels(t), s)
    return float(values[0])


def mean_auc(users: np.ndarray, y_true: np.ndarray, y_score: np.ndarray) -> float:
    """:func:`auc` computed within each user's rows, averaged over users (a.k.a. GAUC, unweighted).

    Users with only positives or only negatives (AUC undefined) are left out;
    NaN only if that is every user.

    Parameters
    ----------
    users
        User index of each row.
    y_true, y_score
        0/1 label and predicted score of each row.

    Returns
    -------
    float
    """
    t, s = _pair(y_true, y_score, "y_score")
    u = _as_1d(users, "users", np.int64)
    if len(u) != len(t):
        raise DataError(f"users has {len(u)} values but y_true has {len(t)}; pass one user per row")
    _, values = _grouped_auc(u, _labels(t), s)
    return _nanmean(values)
