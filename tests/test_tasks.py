"""Tests of metarec_core.tasks: sampled training tasks, fixed evaluation tasks from frames, and catalogue queries."""
import numpy as np
import pandas as pd
import pytest
import torch

from metarec_core.tasks import UserRatings, catalogue_query, catalogue_tasks, sample_tasks, tasks_from_frames

N_USERS, N_ITEMS = 20, 50


@pytest.fixture(scope="module")
def ratings() -> pd.DataFrame:
    """User u rated 3 + u distinct items (so users 0-2 have too few for K = 5 plus a query), ratings 1-5."""
    rng = np.random.default_rng(0)
    rows = [(u, int(i), float(rng.integers(1, 6))) for u in range(N_USERS) for i in rng.choice(N_ITEMS, 3 + u, replace=False)]
    return pd.DataFrame(rows, columns=["user", "item", "rating"]).sample(frac=1.0, random_state=0)


def pairs(items: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor) -> set[tuple[int, float]]:
    return {(int(i), float(r)) for i, r, m in zip(items, ratings, mask) if m}


def test_user_ratings_hold_each_users_rows(ratings):
    table = UserRatings(ratings, N_USERS)
    assert table.count().tolist() == [3 + u for u in range(N_USERS)]
    items, values = table.rows(7)
    own = ratings[ratings["user"] == 7]
    assert sorted(zip(items.tolist(), values.tolist())) == sorted(zip(own["item"], own["rating"]))


def test_sampled_tasks_have_k_support_disjoint_queries_and_true_ratings(ratings):
    table = UserRatings(ratings, N_USERS)
    tasks = sample_tasks(table, np.arange(N_USERS), support_size=5, query_size=6, rng=np.random.default_rng(1))
    kept = tasks.users.tolist()
    assert kept == [u for u in range(N_USERS) if 3 + u > 5]  # users with too few ratings are left out
    assert tasks.support_items.shape == (len(kept), 5) and tasks.query_items.shape == (len(kept), 6)
    assert tasks.support_mask.all()
    assert tasks.query_mask.sum(dim=1).tolist() == [min(6, 3 + u - 5) for u in kept]
    for t, user in enumerate(kept):
        truth = set(zip(*[x.tolist() for x in table.rows(user)]))
        support = pairs(tasks.support_items[t], tasks.support_ratings[t], tasks.support_mask[t])
        query = pairs(tasks.query_items[t], tasks.query_ratings[t], tasks.query_mask[t])
        assert len(support) == 5 and support <= truth and query <= truth
        assert not {i for i, _ in support} & {i for i, _ in query}
    assert not tasks.warm


def test_sampling_is_reproducible_under_a_seed(ratings):
    table = UserRatings(ratings, N_USERS)
    draw = lambda seed: sample_tasks(table, np.arange(N_USERS), support_size=4, query_size=5, rng=np.random.default_rng(seed))  # noqa: E731
    a, b, c = draw(3), draw(3), draw(4)
    assert torch.equal(a.support_items, b.support_items) and torch.equal(a.query_items, b.query_items)
    assert not torch.equal(a.support_items, c.support_items)


def test_min_support_draws_sizes_in_the_range_with_padding_masked(ratings):
    table = UserRatings(ratings, N_USERS)
    tasks = sample_tasks(table, np.arange(6, N_USERS), support_size=6, query_size=4, rng=np.random.default_rng(0), min_support=2)
    sizes = tasks.support_mask.sum(dim=1)
    assert sizes.min() >= 2 and sizes.max() <= 6 and len(set(sizes.tolist())) > 1
    assert (tasks.support_ratings[~tasks.support_mask] == 0).all()


def test_implicit_tasks_add_negatives_the_user_never_touched(ratings):
    table = UserRatings(ratings.assign(rating=1.0), N_USERS)
    tasks = sample_tasks(table, np.arange(10, 14), support_size=3, query_size=4, rng=np.random.default_rng(0), n_items=N_ITEMS, negatives=2)
    for t, user in enumerate(tasks.users.tolist()):
        seen = set(table.rows(user)[0].tolist())
        items, targets = tasks.support_items[t][tasks.support_mask[t]], tasks.support_ratings[t][tasks.support_mask[t]]
        assert (targets == 1).sum() == 3 and (targets == 0).sum() == 6
        assert {int(i) for i in items[targets == 0]}.isdisjoint(seen)


def test_tasks_from_frames_positions_align_predictions_with_query_rows():
    support = pd.DataFrame({"user": [2, 2, 5], "item": [1, 3, 4], "rating": [5.0, 1.0, 3.0]})
    query = pd.DataFrame({"user": [5, 2, 7, 5, 2], "item": [0, 6, 2, 8, 9], "rating": [1.0, 2.0, 3.0, 4.0, 5.0]})
    tasks, positions = tasks_from_frames(support, query)
    assert tasks.users.tolist() == [2, 5, 7]  # every user with query rows, sorted
    assert tasks.support_mask.sum(dim=1).tolist() == [2, 1, 0]  # user 7 has no support: scored from the start
    # Any per-slot array read back through the positions gives the query rows in the frame's order.
    assert tasks.query_items.reshape(-1)[positions].tolist() == query["item"].tolist()
    assert tasks.query_ratings.reshape(-1)[positions].tolist() == query["rating"].tolist()
    assert tasks.query_mask.reshape(-1)[positions].all()


def test_tasks_from_frames_keeps_the_given_user_order_and_rejects_missing_users():
    support = pd.DataFrame({"user": [1], "item": [0], "rating": [4.0]})
    query = pd.DataFrame({"user": [1, 3], "item": [2, 5], "rating": [2.0, 3.0]})
    tasks, positions = tasks_from_frames(support, query, users=np.array([3, 1, 9]), warm=True)
    assert tasks.users.tolist() == [3, 1, 9] and tasks.warm
    assert tasks.query_items.reshape(-1)[positions].tolist() == [2, 5]
    with pytest.raises(ValueError, match="not in `users`"):
        tasks_from_frames(support, query, users=np.array([1]))


def test_select_and_halves_keep_the_tasks_together():
    support = pd.DataFrame({"user": [0, 1, 1], "item": [3, 4, 5], "rating": [1.0, 2.0, 3.0]})
    query = pd.DataFrame({"user": [0, 1], "item": [6, 7], "rating": [4.0, 5.0]})
    tasks, _ = tasks_from_frames(support, query, warm=True)
    one = tasks.select([1])
    assert len(one) == 1 and one.users.tolist() == [1] and one.support_items.tolist() == [[4, 5]] and one.warm
    assert one.support().items.tolist() == [[4, 5]] and one.query().ratings.tolist() == [[5.0]] and one.query().warm


def test_catalogue_query_is_every_user_item_pair_in_order():
    frame = catalogue_query(np.array([4, 2]), 3)
    assert list(frame.columns) == ["user", "item", "rating"]
    assert frame["user"].tolist() == [4, 4, 4, 2, 2, 2]
    assert frame["item"].tolist() == [0, 1, 2, 0, 1, 2]
    assert (frame["rating"] == 0).all()
    tasks, positions = tasks_from_frames(pd.DataFrame(columns=["user", "item", "rating"]), frame, users=np.array([4, 2]))
    assert tasks.query_items.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert positions.tolist() == list(range(6))  # scores reshape straight to (users, items)


def test_catalogue_tasks_equal_the_tasks_of_the_catalogue_query(ratings):
    users = np.array([1, 4, 7, 19])  # user 1 has support rows below, user 19 none
    support = ratings[ratings["user"].isin([1, 4, 7])].groupby("user").head(3)
    expected, _ = tasks_from_frames(support, catalogue_query(users, N_ITEMS), users=users, warm=True)
    tasks = catalogue_tasks(support, users, N_ITEMS, warm=True)
    assert tasks.warm and len(tasks) == 4
    for name in ("users", "support_items", "support_ratings", "support_mask", "query_items", "query_ratings", "query_mask"):
        assert torch.equal(getattr(tasks, name), getattr(expected, name)), name
    part = tasks.select(np.array([3, 0]))  # a sub-batch owns its rows
    assert part.query_items.is_contiguous() and part.users.tolist() == [19, 1]
