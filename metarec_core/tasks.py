"""Tasks: one user's support set (to adapt on) and query set (to evaluate), padded into batches."""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class TaskBatch:
    """A batch of ``T`` tasks with support and query padded to fixed sizes.

    Attributes
    ----------
    users
        ``(T,)`` user indices (their side features are used; warm-user ID
        parameters are used only when ``warm`` is true).
    support_items, support_ratings, support_mask
        ``(T, S)`` item indices, targets and validity mask of the support sets.
    query_items, query_ratings, query_mask
        ``(T, Q)`` the same for the query sets.
    warm
        Whether the users' learned ID parameters may be used (warm users), or
        the users are treated as new (cold) and known only through features and
        their support set.
    """

    users: torch.Tensor
    support_items: torch.Tensor
    support_ratings: torch.Tensor
    support_mask: torch.Tensor
    query_items: torch.Tensor
    query_ratings: torch.Tensor
    query_mask: torch.Tensor
    warm: bool = False

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def to(self, device: torch.device | str) -> "TaskBatch":
        """The same batch on ``device``."""
        return TaskBatch(
            **{f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "warm"},
            warm=self.warm,
        )

    def select(self, index: slice | list[int] | np.ndarray) -> "TaskBatch":
        """A sub-batch of some tasks (keeps padding widths)."""
        if isinstance(index, (list, np.ndarray)):
            index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return TaskBatch(
            **{f.name: getattr(self, f.name)[index] for f in fields(self) if f.name != "warm"},
            warm=self.warm,
        )

    def support(self) -> "Episode":
        """The support half as an :class:`Episode`."""
        return Episode(self.users, self.support_items, self.support_ratings, self.support_mask, self.warm)

    def query(self) -> "Episode":
        """The query half as an :class:`Episode`."""
        return Episode(self.users, self.query_items, self.query_ratings, self.query_mask, self.warm)


@dataclass(frozen=True)
class Episode:
    """Rated items of ``T`` users: ``(T, N)`` items, targets and mask, plus ``(T,)`` users."""

    users: torch.Tensor
    items: torch.Tensor
    ratings: torch.Tensor
    mask: torch.Tensor
    warm: bool = False


class UserRatings:
    """Every user's rated items and ratings in compressed rows, for fast task sampling.

    Parameters
    ----------
    ratings
        A frame with columns ``user``, ``item``, ``rating``.
    n_users
        Number of users (rows).
    """

    def __init__(self, ratings: pd.DataFrame, n_users: int) -> None:
        order = np.argsort(ratings["user"].to_numpy(np.int64), kind="stable")
        users = ratings["user"].to_numpy(np.int64)[order]
        self.items = ratings["item"].to_numpy(np.int64)[order]
        self.ratings = ratings["rating"].to_numpy(np.float32)[order]
        counts = np.bincount(users, minlength=n_users)
        self.indptr = np.concatenate([[0], np.cumsum(counts)])
        self.n_users = n_users

    def count(self, users: np.ndarray | None = None) -> np.ndarray:
        """Number of ratings of each user (all users when ``users`` is None)."""
        counts = np.diff(self.indptr)
        return counts if users is None else counts[users]

    def rows(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """Items and ratings of one user."""
        a, b = self.indptr[user], self.indptr[user + 1]
        return self.items[a:b], self.ratings[a:b]


def sample_tasks(
    user_ratings: UserRatings,
    users: np.ndarray,
    *,
    support_size: int,
    query_size: int,
    rng: np.random.Generator,
    n_items: int | None = None,
    negatives: int = 0,
    min_support: int | None = None,
) -> TaskBatch:
    """Sample one task per user: a random support set of ``support_size`` ratings and a query set of up to ``query_size`` others.

    Users must have at least ``support_size + 1`` ratings (callers filter them).

    Parameters
    ----------
    user_ratings
        Ratings in compressed rows.
    users
        The users to make tasks for.
    support_size, query_size
        Support size ``K`` and the largest query size.
    rng
        Random generator (seeded by the caller from the config).
    n_items, negatives
        For implicit data: add ``negatives`` random items per positive, with
        target 0, to support and query (``n_items`` is then required).
    min_support
        If given, each task's support size is drawn uniformly from
        ``[min_support, support_size]`` (so a meta-learned start serves 1-shot
        and many-shot users alike); padding and masks absorb the differences.
    """
    sup_i, sup_r, qry_i, qry_r, kept = [], [], [], [], []
    for u in users:
        items, ratings = user_ratings.rows(int(u))
        if len(items) <= support_size:
            continue
        size = support_size if min_support is None else int(rng.integers(min_support, support_size + 1))
        perm = rng.permutation(len(items))
        s, q = perm[:size], perm[size : size + query_size]
        sup_i.append(items[s]); sup_r.append(ratings[s])
        qry_i.append(items[q]); qry_r.append(ratings[q])
        kept.append(int(u))
    if negatives and n_items:
        sup_i, sup_r = _add_negatives(sup_i, sup_r, user_ratings, kept, n_items, negatives, rng)
        qry_i, qry_r = _add_negatives(qry_i, qry_r, user_ratings, kept, n_items, negatives, rng)
    return _pad(np.asarray(kept, dtype=np.int64), sup_i, sup_r, qry_i, qry_r, warm=False)


def catalogue_query(users: np.ndarray, n_items: int) -> pd.DataFrame:
    """Every (user, item) pair as query rows (rating 0): users in the given order, items ascending.

    Scoring it ranks each user's whole catalogue (recommendation lists, catalogue metrics).
    """
    return pd.DataFrame({
        "user": np.repeat(users, n_items),
        "item": np.tile(np.arange(n_items, dtype=np.int64), len(users)),
        "rating": np.zeros(len(users) * n_items, dtype=np.float32),
    })


def catalogue_tasks(support: pd.DataFrame, users: np.ndarray, n_items: int, *, warm: bool = False) -> TaskBatch:
    """One task per user of ``users`` whose query is the whole catalogue ``0..n_items-1``, in item order.

    The batch :func:`tasks_from_frames` makes of ``catalogue_query(users,
    n_items)``, with the query as broadcast views instead of ``T * n_items``
    padded rows (a sub-batch from :meth:`TaskBatch.select` copies only its own tasks).
    """
    users = np.asarray(users, dtype=np.int64)
    si, sr, sm, _, _ = _padded_rows(support, users)
    shape = (len(users), n_items)
    return TaskBatch(
        torch.as_tensor(users, dtype=torch.long), torch.from_numpy(si), torch.from_numpy(sr), torch.from_numpy(sm),
        torch.arange(n_items, dtype=torch.long).expand(shape), torch.zeros(1, dtype=torch.float32).expand(shape),
        torch.ones(1, dtype=torch.bool).expand(shape), warm=warm,
    )


def tasks_from_frames(
    support: pd.DataFrame,
    query: pd.DataFrame,
    *,
    users: np.ndarray | None = None,
    warm: bool = False,
) -> tuple[TaskBatch, np.ndarray]:
    """Fixed evaluation tasks from support and query rows (e.g. a cold-start split).

    Parameters
    ----------
    support, query
        Frames with ``user``, ``item``, ``rating``. A user may have an empty
        support set (scored from the meta-learned start) but needs a query.
    users
        Users to include, in this order; default: every user with query rows,
        sorted.
    warm
        Whether the users' ID parameters may be used.

    Returns
    -------
    TaskBatch, numpy.ndarray
        The tasks, and for each query row of ``query`` (in its original order)
        the flat position ``task * Q + slot`` of its prediction, so that
        ``predictions.reshape(-1)[positions]`` aligns with ``query``.
    """
    if users is None:
        users = np.unique(query["user"].to_numpy(np.int64))
    users = np.asarray(users, dtype=np.int64)
    si, sr, sm, _, _ = _padded_rows(support, users)
    qi, qr, qm, tasks, slot = _padded_rows(query, users)
    if (tasks < 0).any():
        raise ValueError("tasks_from_frames: query rows of users not in `users`")
    batch = TaskBatch(
        torch.as_tensor(users, dtype=torch.long), torch.from_numpy(si), torch.from_numpy(sr), torch.from_numpy(sm),
        torch.from_numpy(qi), torch.from_numpy(qr), torch.from_numpy(qm), warm=warm,
    )
    # Position of every query row inside the padded (T, Q) grid, in the frame's order.
    return batch, tasks * qi.shape[1] + slot


def _padded_rows(
    frame: pd.DataFrame, users: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each task's rows of ``frame`` padded into ``(T, W)`` items, ratings and mask, in the frame's row order per user.

    Task ``t`` holds the rows of user ``users[t]`` (a user listed twice gets
    its rows twice); ``W`` is the most rows of a listed user (at least 1).
    Also returns, for every row of ``frame``, its task (the last one listing
    its user, ``-1`` if none does) and its slot among its user's rows.
    """
    n = len(frame)
    if n == 0:
        width = 1
        return (np.zeros((len(users), width), np.int64), np.zeros((len(users), width), np.float32),
                np.zeros((len(users), width), bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
    row_users = frame["user"].to_numpy(np.int64)
    # Rank of each row among its user's rows, keeping the frame's order (one stable sort).
    order = np.argsort(row_users, kind="stable")
    sorted_users = row_users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    slot = np.empty(n, dtype=np.int64)
    slot[order] = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    # Task of each row: the last position of its user in `users`.
    by_user = np.argsort(users, kind="stable")
    listed = users[by_user]
    pos = np.searchsorted(listed, row_users, side="right") - 1
    if len(users):
        found = (pos >= 0) & (listed[np.maximum(pos, 0)] == row_users)
        task = np.where(found, by_user[np.maximum(pos, 0)], -1)
    else:
        task = np.full(n, -1, dtype=np.int64)
    # Rows of each distinct user, then copied to every task listing that user.
    group_ids = sorted_users[starts]
    counts = np.diff(np.r_[starts, n])
    g = np.searchsorted(group_ids, users)
    has = g < len(group_ids)
    has[has] = group_ids[g[has]] == users[has]
    per_task = np.where(has, counts[np.minimum(g, len(counts) - 1)], 0)
    width = max(int(per_task.max()) if len(per_task) else 0, 1)
    items = np.zeros((len(users), width), dtype=np.int64)
    ratings = np.zeros((len(users), width), dtype=np.float32)
    mask = np.zeros((len(users), width), dtype=bool)
    if len(users):
        # For each task, the sorted positions of its user's rows.
        t_rep = np.repeat(np.arange(len(users)), per_task)
        first = np.repeat(np.where(has, starts[np.minimum(g, len(starts) - 1)], 0), per_task)
        within = np.arange(len(t_rep)) - np.repeat(np.r_[0, np.cumsum(per_task)[:-1]], per_task)
        rows = order[first + within]
        items[t_rep, within] = frame["item"].to_numpy(np.int64)[rows]
        ratings[t_rep, within] = frame["rating"].to_numpy(np.float32)[rows]
        mask[t_rep, within] = True
    return items, ratings, mask, task.astype(np.int64), slot


def _add_negatives(item_lists, rating_lists, user_ratings, users, n_items, negatives, rng):
    out_i, out_r = [], []
    for items, ratings, u in zip(item_lists, rating_lists, users):
        seen = set(user_ratings.rows(u)[0].tolist())
        want = len(items) * negatives
        candidates = rng.integers(0, n_items, size=want * 2 + 8)
        neg = np.asarray([c for c in candidates if c not in seen][:want], dtype=np.int64)
        out_i.append(np.concatenate([items, neg]))
        out_r.append(np.concatenate([ratings, np.zeros(len(neg), np.float32)]))
    return out_i, out_r


def _pad(users, sup_i, sup_r, qry_i, qry_r, *, warm: bool) -> TaskBatch:
    def stack(item_lists, rating_lists):
        width = max([len(x) for x in item_lists] + [1])
        items = np.zeros((len(item_lists), width), dtype=np.int64)
        ratings = np.zeros((len(item_lists), width), dtype=np.float32)
        mask = np.zeros((len(item_lists), width), dtype=bool)
        for t, (i, r) in enumerate(zip(item_lists, rating_lists)):
            items[t, : len(i)] = i
            ratings[t, : len(r)] = r
            mask[t, : len(i)] = True
        return torch.from_numpy(items), torch.from_numpy(ratings), torch.from_numpy(mask)

    si, sr, sm = stack(sup_i, sup_r)
    qi, qr, qm = stack(qry_i, qry_r)
    return TaskBatch(torch.as_tensor(users, dtype=torch.long), si, sr, sm, qi, qr, qm, warm=warm)
