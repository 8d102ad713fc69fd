"""Top-K lists for many users: the same lists as one user at a time, chunked, written whole."""
from __future__ import annotations

import pandas as pd
import pytest

from metarec_core.errors import DataError
from metarec_core.recommender import Recommender
from metarec_core.top_lists import cohort_users, top_lists, write_top_lists


@pytest.fixture(scope="module")
def rec(tiny_run) -> Recommender:
    return Recommender.from_run_dir(tiny_run[1])


def test_chunks_hold_chunk_size_users_and_match_single_lists(rec) -> None:
    users = list(rec.users.external_ids)[:7]
    support = pd.DataFrame({"user_id": [users[0], users[0]], "item_id": list(rec.items.external_ids)[:2], "rating": [5.0, 1.0]})
    chunks = list(top_lists(rec, users, k=3, support=support, chunk_size=3))
    assert [c["user_id"].nunique() for c in chunks] == [3, 3, 1]
    frame = pd.concat(chunks, ignore_index=True)
    adapted = rec.recommend(rec.adapt_user(support, user_id=users[0]), k=3)
    assert frame.loc[frame["user_id"] == users[0], "item_id"].tolist() == adapted["item_id"].tolist()
    assert not set(support["item_id"]) & set(frame.loc[frame["user_id"] == users[0], "item_id"])


def test_cohorts_split_the_run_users(rec) -> None:
    parts = [cohort_users(rec, c) for c in ("new", "warm", "validation")]
    assert sorted(sum(parts, [])) == sorted(rec.users.external_ids) and all(parts[:2])
    with pytest.raises(DataError, match="unknown cohort"):
        cohort_users(rec, "cold")


def test_unknown_support_items_are_named_before_any_work(rec) -> None:
    support = pd.DataFrame({"user_id": ["x"], "item_id": ["no-such-item"], "rating": [3.0]})
    with pytest.raises(DataError, match="no-such-item"):
        next(top_lists(rec, ["x"], support=support))


def test_the_csv_appears_whole_or_not_at_all(rec, tmp_path) -> None:
    path = tmp_path / "recs.csv"
    assert write_top_lists(top_lists(rec, list(rec.users.external_ids)[:5], k=2, chunk_size=2), path) == 10
    assert len(pd.read_csv(path)) == 10

    def broken():
        yield from top_lists(rec, list(rec.users.external_ids)[:2], k=2, chunk_size=1)
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        write_top_lists(broken(), tmp_path / "half.csv")
    assert not (tmp_path / "half.csv").exists() and not list(tmp_path.glob(".*partial"))
