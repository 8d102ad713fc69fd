"""Cold-start splits: warm, user-cold, item-cold and both-cold train / support / query sets."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError

Scenario = Literal["warm", "user-cold", "item-cold", "both-cold"]
SCENARIOS: tuple[str, ...] = ("warm", "user-cold", "item-cold", "both-cold")
SPLIT_BY: tuple[str, ...] = ("random", "time")

_EXCLUDED_COLUMNS = ("user", "n_ratings", "reason")


@dataclass(frozen=True)
class SplitConfig:
    """How to split a dataset into training data and evaluated users' tasks.

    Parameters
    ----------
    scenario
        ``warm`` (existing users and items), ``user-cold`` (new users),
        ``item-cold`` (new items) or ``both-cold`` (new users rating new items).
    cold_fraction
        Share of users (user-cold, both-cold) and of items (item-cold,
        both-cold) made cold when ``by="random"``.
    support_size
        K, the ratings a user's model adapts on. ``None`` means every usable
        rating not in the query (then ``query_size`` must be set).
    min_query
        Fewest query ratings an evaluated user must have.
    query_size
        At most this many query ratings per user (``None``: all available).
    query_fraction
        Warm scenario only: share of each user's ratings held out as query.
    by
        ``random`` (seeded) or ``time``: entities first seen after the cut-off
        are cold, supports are each user's earliest ratings (warm: the query
        is each user's latest ratings and the support the latest before it).
    time_cutoff
        Quantile of the interaction times used as the cut-off (default
        ``1 - cold_fraction``).
    seed
        Seed of the ``numpy.random.Generator`` streams.
    """

    scenario: str = "user-cold"
    cold_fraction: float = 0.2
    support_size: int | None = 10
    min_query: int = 1
    query_size: int | None = None
    query_fraction: float = 0.2
    by: str = "random"
    time_cutoff: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}, got '{self.scenario}'")
        if self.by not in SPLIT_BY:
            raise ValueError(f"by must be one of {', '.join(SPLIT_BY)}, got '{self.by}'")
        if not 0.0 < self.cold_fraction < 1.0:
            raise ValueError(f"cold_fraction must be between 0 and 1 (exclusive), got {self.cold_fraction}")
        if self.support_size is not None and (not isinstance(self.support_size, int) or self.support_size < 0):
            raise ValueError(f"support_size must be a whole number >= 0 or None, got {self.support_size!r}")
        if not isinstance(self.min_query, int) or self.min_query < 1:
            raise ValueError(f"min_query must be a whole number >= 1, got {self.min_query!r}")
        if self.query_size is not None and (not isinstance(self.query_size, int) or self.query_size < self.min_query):
            raise ValueError(f"query_size must be None or a whole number >= min_query, got {self.query_size!r}")
        if self.support_size is None and self.query_size is None:
            raise ValueError("support_size=None (support = all but the query) needs a query_size")
        if not 0.0 < self.query_fraction < 1.0:
            raise ValueError(f"query_fraction must be between 0 and 1 (exclusive), got {self.query_fraction}")
        if self.time_cutoff is not None and not 0.0 < self.time_cutoff < 1.0:
            raise ValueError(f"time_cutoff is a quantile of interaction times, between 0 and 1, got {self.time_cutoff}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")


@dataclass(frozen=True)
class ColdStartSplit:
    """The result of :func:`split_cold_start`.

    All frames have the columns of :attr:`Dataset.ratings` and keep its row
    labels, so a row can be traced back. A query row is never in ``train`` or
    ``support``.

    Attributes
    ----------
    train
        What models may learn from (transfer phase, meta-training tasks).
    support
        Evaluated users' adaptation rows (K per user). In warm and item-cold
        splits they are also in ``train``; in user-cold and both-cold they are not.
    query
        Evaluated users' held-out rows, the test.
    cold_users, cold_items
        Indices made cold by the scenario (kept out of ``train``), sorted.
    excluded
        Users who would have been evaluated but have too few usable ratings:
        columns ``user``, ``n_ratings``, ``reason``.
    n_unused
        Rows in none of train, support and query (e.g. cold users' ratings of
        warm items beyond the support in both-cold, or excluded cold users).
    config
        The settings used.
    """

    train: pd.DataFrame
    support: pd.DataFrame
    query: pd.DataFrame
    cold_users: np.ndarray
    cold_items: np.ndarray
    excluded: pd.DataFrame
    n_unused: int
    config: SplitConfig

    def __repr__(self) -> str:
        return (
            f"ColdStartSplit({self.config.scenario}, K={self.config.support_size}: {len(self.train)} train rows, "
            f"{self.n_evaluated} evaluated users, {len(self.query)} query rows, {len(self.excluded)} excluded)"
        )

    @property
    def eval_users(self) -> np.ndarray:
        """Sorted indices of the evaluated users (those with query rows)."""
        return np.unique(self.query["user"].to_numpy(np.int64))

    @property
    def n_evaluated(self) -> int:
        """Number of evaluated users."""
        return len(self.eval_users)

    def check_nonempty(self) -> None:
        """Raise :class:`DataError` when no user can be evaluated under this protocol."""
        if len(self.query) == 0:
            c = self.config
            raise DataError(
                f"no user can be evaluated in the {c.scenario} scenario with support {c.support_size} and at least "
                f"{c.min_query} query rating(s): {len(self.excluded)} user(s) were excluded for too few ratings; "
                "lower the support size, raise the cold fraction or use a larger dataset"
            )


def split_cold_start(dataset: Dataset, config: SplitConfig | None = None) -> ColdStartSplit:
    """Split a dataset for one cold-start scenario (as in the MeLU paper).

    - ``warm``: every user with enough ratings is evaluated; a share of their
      ratings is the query, the rest is training data; the support is K of
      those training rows.
    - ``user-cold``: a share of users is new; none of their rows is in train;
      support = K of their ratings, query = the rest.
    - ``item-cold``: a share of items is new; no rating of them is in train;
      each user who rated new items is evaluated on those (query), adapting on
      K of their ratings of existing items (support, also in train).
    - ``both-cold``: new users and new items; train excludes both; query = new
      users' ratings of new items, support = K of their ratings of existing items.

    Users with too few usable ratings (``support_size + min_query``) are listed
    in ``excluded`` with the reason, never dropped silently.

    Parameters
    ----------
    dataset
        The data.
    config
        Scenario, K, seed, ...

    Returns
    -------
    ColdStartSplit

    Raises
    ------
    DataError
        A time split on data without timestamps.
    """
    config = config or SplitConfig()
    ratings = dataset.ratings
    users = ratings["user"].to_numpy(np.int64)
    items = ratings["item"].to_numpy(np.int64)
    times = ratings["timestamp"].to_numpy(np.int64)
    n_rows = len(ratings)
    by_time = config.by == "time"
    if by_time and (n_rows == 0 or times.max() < 0):
        raise DataError(
            "a split by time needs timestamps, and this dataset has none; split by random instead "
            "or load a timestamp column",
            column="timestamp",
        )
    order_key = np.random.default_rng([config.seed, 3]).random(n_rows)
    cutoff = None
    if by_time:
        q = config.time_cutoff if config.time_cutoff is not None else 1.0 - config.cold_fraction
        cutoff = float(np.quantile(times, q))

    scenario = config.scenario
    cold_users = np.zeros(0, dtype=np.int64)
    cold_items = np.zeros(0, dtype=np.int64)
    if scenario in ("user-cold", "both-cold"):
        cold_users = _cold_entities(users, times, dataset.n_users, config, cutoff, stream=1)
    if scenario in ("item-cold", "both-cold"):
        cold_items = _cold_entities(items, times, dataset.n_items, config, cutoff, stream=2)
    user_is_cold = np.zeros(dataset.n_users, dtype=bool)
    user_is_cold[cold_users] = True
    item_is_cold = np.zeros(dataset.n_items, dtype=bool)
    item_is_cold[cold_items] = True
    row_user_cold = user_is_cold[users]
    row_item_cold = item_is_cold[items]

    if scenario == "warm":
        train_mask, support_mask, query_mask, excluded = _warm(users, times, order_key, config)
    elif scenario == "user-cold":
        train_mask = ~row_user_cold
        support_mask, query_mask, excluded = _same_pool(users, times, order_key, row_user_cold, config)
    else:
        if scenario == "item-cold":
            train_mask = ~row_item_cold
            candidate = np.zeros(dataset.n_users, dtype=bool)
            candidate[users[row_item_cold]] = True  # users who rated a cold item
            row_candidate = candidate[users]
        else:
            train_mask = ~row_user_cold & ~row_item_cold
            row_candidate = row_user_cold
        support_mask, query_mask, excluded = _separate_pools(
            users,
            times,
            order_key,
            support_pool=row_candidate & ~row_item_cold,
            query_pool=row_candidate & row_item_cold,
            config=config,
        )
    n_unused = int(np.count_nonzero(~(train_mask | support_mask | query_mask)))
    return ColdStartSplit(
        train=ratings.iloc[np.flatnonzero(train_mask)],
        support=ratings.iloc[np.flatnonzero(support_mask)],
        query=ratings.iloc[np.flatnonzero(query_mask)],
        cold_users=cold_users,
        cold_items=cold_items,
        excluded=excluded,
        n_unused=n_unused,
        config=config,
    )


def _cold_entities(
    entity: np.ndarray, times: np.ndarray, n: int, config: SplitConfig, cutoff: float | None, *, stream: int
) -> np.ndarray:
    """Cold users or items: a seeded share of those with interactions, or those first seen after the cut-off."""
    active = np.flatnonzero(np.bincount(entity, minlength=n) > 0)
    if cutoff is not None:
        first = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(first, entity, times)
        return active[first[active] > cutoff].astype(np.int64)
    n_cold = max(1, int(round(config.cold_fraction * len(active)))) if len(active) else 0
    n_cold = min(n_cold, max(len(active) - 1, 0))
    rng = np.random.default_rng([config.seed, stream])
    return np.sort(rng.permutation(active)[:n_cold]).astype(np.int64)


def _rank(users: np.ndarray, key: np.ndarray, tiebreak: np.ndarray, mask: np.ndarray, *, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each masked row within its user by ``key`` (then ``tiebreak``), and per-row group size.

    Unmasked rows get rank -1 and size 0.
    """
    n = len(users)
    rank = np.full(n, -1, dtype=np.int64)
    size = np.zeros(n, dtype=np.int64)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return rank, size
    k = key[idx].astype(np.float64)
    if descending:
        k = -k
    order = idx[np.lexsort((tiebreak[idx], k, users[idx]))]
    u = users[order]
    starts = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    lengths = np.diff(np.r_[starts, len(order)])
    rank[order] = np.arange(len(order)) - np.repeat(starts, lengths)
    size[order] = np.repeat(lengths, lengths)
    return rank, size


def _excluded_frame(users: np.ndarray, n_ratings: np.ndarray, reasons: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": np.asarray(users, dtype=np.int64),
            "n_ratings": np.asarray(n_ratings, dtype=np.int64),
            "reason": pd.Series(reasons, dtype=object) if reasons else pd.Series([], dtype=object),
        },
        columns=list(_EXCLUDED_COLUMNS),
    )


def _needed(config: SplitConfig) -> tuple[int, str]:
    if config.support_size is None:
        need = int(config.query_size or 0) + 1
        return need, f"needs at least {need} (query {config.query_size} + 1 support)"
    need = config.support_size + config.min_query
    return need, f"needs at least {need} (support {config.support_size} + query {config.min_query})"


def _per_user_first(users: np.ndarray, values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique users among masked rows and the value of their first masked row."""
    idx = np.flatnonzero(mask)
    uniq, first = np.unique(users[idx], return_index=True)
    return uniq, values[idx[first]]


def _same_pool(
    users: np.ndarray, times: np.ndarray, order_key: np.ndarray, pool: np.ndarray, config: SplitConfig
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Support and query from one pool of rows per user (user-cold)."""
    key = times if config.by == "time" else order_key
    rank, size = _rank(users, key, order_key, pool)
    need, why = _needed(config)
    eligible = pool & (size >= need)
    if config.support_size is None:
        q = int(config.query_size)  # type: ignore[arg-type]
        query = eligible & (rank >= size - q)
        support = eligible & ~query
    else:
        k = config.support_size
        support = eligible & (rank < k)
        query = eligible & (rank >= k)
        if config.query_size is not None:
            query &= rank < k + config.query_size
    bad = pool & (size < need)
    ex_users, ex_n = _per_user_first(users, size, bad)
    reasons = [f"{n} rating(s); {why}" for n in ex_n]
    return support, query, _excluded_frame(ex_users, ex_n, reasons)


def _separate_pools(
    users: np.ndarray,
    times: np.ndarray,
    order_key: np.ndarray,
    *,
    support_pool: np.ndarray,
    query_pool: np.ndarray,
    config: SplitConfig,
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Support from one pool (existing items), query from another (new items), per user."""
    key = times if config.by == "time" else order_key
    s_rank, s_size = _rank(users, key, order_key, support_pool)
    q_rank, q_size = _rank(users, key, order_key, query_pool)
    n_users = int(users.max()) + 1 if len(users) else 0
    s_count = np.bincount(users[support_pool], minlength=n_users)
    q_count = np.bincount(users[query_pool], minlength=n_users)
    k_needed = 1 if config.support_size is None else config.support_size
    ok_user = (s_count >= k_needed) & (q_count >= config.min_query)
    ok_row = ok_user[users]
    if config.support_size is None:
        support = support_pool & ok_row
    else:
        support = support_pool & ok_row & (s_rank < config.support_size)
    query = query_pool & ok_row
    if config.query_size is not None:
        query &= q_rank < config.query_size
    candidates = np.flatnonzero(((s_count + q_count) > 0) & (q_count > 0) & ~ok_user)
    reasons = [
        f"{s_count[u]} rating(s) of existing items (support needs {k_needed}) and {q_count[u]} of new items "
        f"(query needs {config.min_query})"
        for u in candidates
    ]
    return support, query, _excluded_frame(candidates, s_count[candidates] + q_count[candidates], reasons)


def _warm(
    users: np.ndarray, times: np.ndarray, order_key: np.ndarray, config: SplitConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
    """Per user: the query is held out of train, the support is K of the user's training rows."""
    everything = np.ones(len(users), dtype=bool)
    by_time = config.by == "time"
    # Query = the last ranks: the latest ratings by time, or a random share.
    key = times if by_time else order_key
    rank, size = _rank(users, key, order_key, everything, descending=True)  # rank 0 = latest / first drawn
    need, why = _needed(config)
    k = config.support_size
    n_query = np.maximum(config.min_query, np.round(config.query_fraction * size).astype(np.int64))
    if config.query_size is not None:
        n_query = np.minimum(n_query, config.query_size)
    if k is not None:
        n_query = np.minimum(n_query, size - k)
    eligible = size >= need
    query = eligible & (rank < n_query)
    train = ~query
    if k is None:
        support = eligible & ~query
    else:
        # Support = K of the user's training rows: the most recent ones by time, else the next random draws.
        support = eligible & (rank >= n_query) & (rank < n_query + k)
    bad = ~eligible
    ex_users, ex_n = _per_user_first(users, size, bad)
    reasons = [f"{n} rating(s); {why}" for n in ex_n]
    return train, support, query, _excluded_frame(ex_users, ex_n, reasons)


def split_users(
    user_indices: np.ndarray | list[int], fractions: tuple[float, ...] | list[float], seed: int = 0
) -> tuple[np.ndarray, ...]:
    """Shuffle users (seeded) and cut them into parts of the given fractions.

    Parameters
    ----------
    user_indices
        The users to split.
    fractions
        Positive shares summing to 1, e.g. ``(0.9, 0.1)`` for train / validation.
    seed
        Seed of the ``numpy.random.Generator``.

    Returns
    -------
    tuple of numpy.ndarray
        One sorted int64 array per fraction.

    Raises
    ------
    ConfigError
        If fractions are not positive or do not sum to 1.

    Examples
    --------
    >>> train, val = split_users(np.arange(10), (0.8, 0.2), seed=0)
    >>> len(train), len(val)
    (8, 2)
    """
    shares = np.asarray(list(fractions), dtype=np.float64)
    if len(shares) == 0 or np.any(shares <= 0) or not np.isclose(shares.sum(), 1.0):
        raise ConfigError(f"split_users: fractions must be positive and sum to 1, got {tuple(fractions)}")
    users = np.asarray(user_indices, dtype=np.int64)
    perm = np.random.default_rng(seed).permutation(users)
    bounds = np.round(np.cumsum(shares)[:-1] * len(users)).astype(np.int64)
    return tuple(np.sort(part) for part in np.split(perm, bounds))


# --------------------------------------------------------------------------- RecBole-MetaRec protocol


def recbole_protocol_split(
    dataset: Dataset,
    seed: int = 0,
    *,
    min_ratings: int = 13,
    max_ratings: int = 100,
    query_size: int = 10,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> ColdStartSplit:
    """The RecBole-MetaRec user-cold protocol: users with 13–100 ratings, split 8:1:1, query 10, support the rest.

    Users whose number of ratings lies outside ``[min_ratings, max_ratings]``
    are left out (listed in ``excluded`` with the reason). The others are
    shuffled (seeded) into training, validation and test users by
    ``fractions``; for each test user ``query_size`` random ratings (seeded)
    form the query and every other rating the support. ``train`` holds the
    training users' ratings; the validation users' ratings are in no frame
    (they are ``cold_users`` that are not evaluated: use them for model
    selection). ``config`` records ``support_size=None, query_size=10``.

    Not comparable: RecBole-MetaRec reports nDCG@5 on ML-100K of 0.533 (MeLU),
    0.593 (MAMO), 0.599 (TaNP), but with gain ``2^r − 1`` and ranking within
    the 10 query items (our ``ndcg@5`` on this split) a random order already
    scores about 0.64 and the bias baseline about 0.77, so their metric is
    defined differently. Do not claim to beat those figures unless their
    metric definition is reproduced exactly (see ``/work/shared/ANCHORS.md``).

    Parameters
    ----------
    dataset
        The data (ML-100K for the published figures).
    seed
        Seed of the user shuffle and of the query draw.
    min_ratings, max_ratings
        Inclusive range of ratings per user kept.
    query_size
        Query ratings per test user.
    fractions
        Shares of training, validation and test users.

    Returns
    -------
    ColdStartSplit
        ``train``, test users' ``support`` and ``query``; ``cold_users`` are the
        validation and test users.

    Raises
    ------
    ConfigError
        If the range is empty, ``query_size >= min_ratings`` or the fractions are not three positive shares summing to 1.
    """
    if not 1 <= min_ratings <= max_ratings:
        raise ConfigError(f"need 1 <= min_ratings <= max_ratings, got {min_ratings}..{max_ratings}")
    if not 1 <= query_size < min_ratings:
        raise ConfigError(f"query_size must be between 1 and min_ratings - 1 ({min_ratings - 1}), got {query_size}")
    if len(fractions) != 3:
        raise ConfigError(f"fractions must be three shares (train, validation, test), got {fractions}")
    ratings = dataset.ratings
    users = ratings["user"].to_numpy(np.int64)
    counts = np.bincount(users, minlength=dataset.n_users)
    active = np.flatnonzero(counts > 0)
    kept = active[(counts[active] >= min_ratings) & (counts[active] <= max_ratings)]
    dropped = active[(counts[active] < min_ratings) | (counts[active] > max_ratings)]
    train_users, valid_users, test_users = split_users(kept, fractions, seed=seed)
    is_test = np.zeros(dataset.n_users, dtype=bool)
    is_test[test_users] = True
    is_train = np.zeros(dataset.n_users, dtype=bool)
    is_train[train_users] = True
    test_rows = np.flatnonzero(is_test[users])
    key = np.random.default_rng([seed, 4]).random(len(test_rows))
    order = test_rows[np.lexsort((key, users[test_rows]))]
    starts = np.flatnonzero(np.r_[True, users[order][1:] != users[order][:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    query_rows = np.sort(order[rank < query_size])
    support_rows = np.sort(order[rank >= query_size])
    train_rows = np.flatnonzero(is_train[users])
    excluded = pd.DataFrame({
        "user": dropped.astype(np.int64),
        "n_ratings": counts[dropped].astype(np.int64),
        "reason": pd.Series(
            [f"{counts[u]} rating(s); the protocol keeps users with {min_ratings}-{max_ratings}" for u in dropped],
            dtype=object,
        ),
    })
    return ColdStartSplit(
        train=ratings.iloc[train_rows],
        support=ratings.iloc[support_rows],
        query=ratings.iloc[query_rows],
        cold_users=np.sort(np.concatenate([valid_users, test_users])).astype(np.int64),
        cold_items=np.zeros(0, dtype=np.int64),
        excluded=excluded,
        n_unused=len(ratings) - len(train_rows) - len(test_rows),
        config=SplitConfig(
            scenario="user-cold", cold_fraction=float(fractions[1] + fractions[2]), support_size=None,
            min_query=query_size, query_size=query_size, seed=seed,
        ),
    )
