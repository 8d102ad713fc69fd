"""Top-K lists for many users: one row per (user, rank), produced a chunk of users at a time and written as CSV."""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from metarec_core.errors import DataError

if TYPE_CHECKING:
    from metarec_core.recommender import Recommender

logger = logging.getLogger(__name__)

#: Columns of every top-list frame and of the CSV.
TOP_LIST_COLUMNS = ("user_id", "rank", "item_id", "name", "score")
#: Cohorts a list of users can be taken from (``validation`` is the run's ``meta-test`` cohort).
COHORTS = ("new", "warm", "validation")
#: Users per chunk: a chunk's rows (``chunk_size * k``) are all that is held in memory at once.
DEFAULT_CHUNK = 256


def cohort_users(rec: "Recommender", cohort: str | None = None, *, n_ratings: np.ndarray | None = None) -> list[str]:
    """The run's users, or those of one cohort (:meth:`Recommender.user_cohorts`), in the run's user order.

    Parameters
    ----------
    rec
        The run's recommender.
    cohort
        ``new`` (the run's held-out test users), ``warm`` (trained on),
        ``validation`` (held out for validation) or ``None`` for everyone.
    n_ratings
        Each user's number of interactions in the dataset, if at hand (users
        with none count as new); without it only the run's own record is used.

    Returns
    -------
    list of str
        External user IDs.
    """
    ids = list(rec.users.external_ids)
    if cohort is None:
        return ids
    if cohort not in COHORTS:
        raise DataError(f"unknown cohort '{cohort}'; use one of {', '.join(COHORTS)}")
    counts = np.ones(len(ids), dtype=np.int64) if n_ratings is None else np.asarray(n_ratings)
    wanted = "meta-test" if cohort == "validation" else cohort
    cohorts = rec.user_cohorts(counts)
    return [u for u, c in zip(ids, cohorts) if c == wanted]


def top_lists(
    rec: "Recommender",
    user_ids: Iterable[str],
    *,
    k: int = 10,
    support: pd.DataFrame | None = None,
    names: Sequence[str] | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[pd.DataFrame]:
    """Each user's top-``k`` unseen items, yielded as one frame per ``chunk_size`` users.

    A user is adapted on their rows of ``support`` (a known user keeps their
    learned parameters too), as ``recommend --user`` does; a user with no
    rows gets the meta-learned start (and their features, when the run knows them).

    Parameters
    ----------
    rec
        The run's recommender.
    user_ids
        External user IDs (known to the run or not).
    k
        Items per user (at least 1).
    support
        ``user_id``, ``item_id``, ``rating`` rows to adapt on (optional).
    names
        A display name per item of the run (:func:`metarec_core.titles.run_titles`); default: the item IDs.
    chunk_size
        Users per yielded frame.

    Yields
    ------
    pandas.DataFrame
        :data:`TOP_LIST_COLUMNS`, ranks from 1.

    Raises
    ------
    DataError
        ``k`` or ``chunk_size`` below 1, or a support item the run does not know.
    """
    if int(k) < 1 or int(chunk_size) < 1:
        raise DataError(f"k and the chunk size must be at least 1 (got k={k}, chunk size={chunk_size})")
    by_user: dict[str, pd.DataFrame] = {}
    if support is not None and len(support):
        rec.item_indices(support["item_id"].tolist(), source="support")  # every unknown item named at once, before any work
        by_user = {str(u): rows for u, rows in support.groupby(support["user_id"].astype(str), sort=False)}
    item_names = np.asarray(list(names) if names is not None else list(rec.items.external_ids), dtype=object)
    empty: list = []
    chunk: list[pd.DataFrame] = []
    n_users = 0
    for user in user_ids:
        user = str(user)
        state = rec.adapt_user(by_user.get(user, empty), user_id=user)
        top = rec.recommend(state, k=int(k))
        chunk.append(pd.DataFrame({
            "user_id": user, "rank": top["rank"].to_numpy(), "item_id": top["item_id"].to_numpy(),
            "name": item_names[top["item"].to_numpy()], "score": top["score"].to_numpy(),
        }, columns=list(TOP_LIST_COLUMNS)))
        n_users += 1
        if len(chunk) == chunk_size:
            yield pd.concat(chunk, ignore_index=True)
            chunk = []
    if chunk:
        yield pd.concat(chunk, ignore_index=True)
    logger.info("top-%d lists for %d user(s)", k, n_users)


def write_top_lists(frames: Iterable[pd.DataFrame], path: str | Path) -> int:
    """Write top-list frames to one CSV as they come (header once); the file appears whole or not at all.

    Parameters
    ----------
    frames
        Frames of :data:`TOP_LIST_COLUMNS` (e.g. :func:`top_lists`).
    path
        The CSV to write (its folder is created).

    Returns
    -------
    int
        Rows written.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"'{path}' is a folder; give a file name for the recommendations, e.g. {path / 'recs.csv'}")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    rows = 0
    try:
        with open(partial, "w", encoding="utf-8", newline="") as out:
            out.write(",".join(TOP_LIST_COLUMNS) + "\n")
            for frame in frames:
                frame.to_csv(out, header=False, index=False, float_format="%.4f", lineterminator="\n")
                rows += len(frame)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return rows


def top_lists_csv(frames: Iterable[pd.DataFrame]) -> bytes:
    """The CSV bytes of top-list frames (for a download of a few thousand rows; files use :func:`write_top_lists`)."""
    parts = [",".join(TOP_LIST_COLUMNS) + "\n"]
    parts += [f.to_csv(header=False, index=False, float_format="%.4f", lineterminator="\n") for f in frames]
    return "".join(parts).encode("utf-8")
