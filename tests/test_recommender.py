"""Tests of metarec_core.recommender: adapting one user, ranking, and batched user vectors."""
import numpy as np
import pandas as pd
import pytest

from metarec_core.errors import DataError
from metarec_core.recommender import Recommender


@pytest.fixture(scope="module")
def trained(tiny_run):
    """The shared tiny run (three inner steps), loaded as a recommender."""
    _, run_dir, dataset = tiny_run
    return dataset, Recommender.from_run_dir(run_dir)


def test_batched_user_vectors_equal_one_by_one(trained):
    dataset, rec = trained
    first = dataset.ratings.groupby("user").head(5)
    support = pd.DataFrame({
        "user_id": dataset.users.externals(first["user"]), "item_id": dataset.items.externals(first["item"]), "rating": first["rating"],
    })
    vectors = rec.user_vectors(support)
    known = rec.model.user_known.numpy()
    assert vectors.shape == (len(rec.users), rec.model.config.factor_dim)
    for u in (int(np.flatnonzero(known)[0]), int(np.flatnonzero(~known)[0]), int(np.flatnonzero(~known)[-1])):
        ext = rec.users.external(u)
        if known[u]:
            state = rec.adapt_user([], user_id=ext, steps=0)
        else:
            rows = support[support["user_id"] == ext]
            state = rec.adapt_user(list(zip(rows["item_id"], rows["rating"])), user_id=ext, use_known=False)
        assert np.allclose(rec.user_vector(state), vectors[u], atol=1e-5)


def test_recommend_skips_a_known_users_history_and_support(trained):
    dataset, rec = trained
    user = int(np.flatnonzero(rec.model.user_known.numpy())[0])
    ext = rec.users.external(user)
    seen = set(rec.items.externals(rec.run.seen_items(user)))
    state = rec.adapt_user([(rec.items.external(0), 5.0)], user_id=ext)
    top = rec.recommend(state, k=20)
    assert not (set(top["item_id"]) & seen) and rec.items.external(0) not in set(top["item_id"])
    assert list(top["rank"]) == list(range(1, len(top) + 1))
    assert np.isfinite(top["score"]).all()


def test_adapting_changes_the_ranking_and_records_losses(trained):
    _, rec = trained
    start = rec.start_state()
    state = rec.adapt_user([(rec.items.external(i), 5.0 if i % 2 else 1.0) for i in range(8)])
    assert len(state.losses) == rec.run.config.inner_steps + 1 and state.losses[-1] < state.losses[0]
    assert not np.allclose(rec.score_items(start), rec.score_items(state))


def test_unknown_items_and_features_are_clear_errors(trained):
    _, rec = trained
    with pytest.raises(DataError, match="not in this run's catalogue"):
        rec.adapt_user([("no-such-item", 4.0)])
    with pytest.raises(DataError, match="unknown user feature"):
        rec.adapt_user([], user_features={"shoe_size": 44})


def test_step_scores_follow_the_inner_loop(trained):
    _, rec = trained
    ratings = [(rec.items.external(i), 5.0) for i in range(6)]
    state = rec.adapt_user(ratings)
    items = np.arange(10)
    path = rec.step_scores(state, items)
    steps = rec.run.config.inner_steps
    assert path.shape == (steps + 1, 10)
    assert np.allclose(path[0], rec.score_items(rec.adapt_user(ratings, steps=0), items), atol=1e-5)
    assert np.allclose(path[-1], rec.score_items(state, items), atol=1e-5)
    assert np.allclose(path[2], rec.score_items(rec.adapt_user(ratings, steps=2), items), atol=1e-5)


def test_user_cohorts(trained):
    dataset, rec = trained
    counts = dataset.ratings.groupby("user").size().reindex(range(len(rec.users)), fill_value=0).to_numpy()
    cohorts = rec.user_cohorts(counts)
    known = rec.model.user_known.numpy()
    assert (cohorts[known] == "warm").all()
    held_out = np.asarray(rec.run.meta["cold_users"])
    assert (cohorts[held_out] == "new").all()
    assert set(cohorts[~known]) == {"new", "meta-test"}  # validation users are the meta-test cohort


def test_score_pairs_equals_adapting_each_user_alone(tiny_run):
    """Batched scoring (the CLI's score) gives the per-user adapt + score numbers for known, cold and unknown users."""
    rec = Recommender.from_run_dir(tiny_run[1])
    rng = np.random.default_rng(0)
    users = list(rec.users.external_ids[:6]) + ["brand-new-1", "brand-new-2"]
    items = list(rec.items.external_ids)
    support = pd.DataFrame(
        [(u, items[i], float(rng.integers(1, 6))) for u in users[2:7] for i in rng.choice(len(items), 4, replace=False)],
        columns=["user_id", "item_id", "rating"],
    )
    pairs = pd.DataFrame([(u, items[i]) for u in users for i in rng.choice(len(items), 7, replace=False)], columns=["user_id", "item_id"])
    batched = rec.score_pairs(support, pairs, chunk=3)
    one_by_one = np.zeros(len(pairs))
    for user, rows in pairs.groupby("user_id"):
        state = rec.adapt_user(support[support["user_id"] == user], user_id=user)
        one_by_one[rows.index] = rec.score_items(state, rec.item_indices(rows["item_id"].tolist()))
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert len(np.unique(np.round(batched, 4))) > 5  # not a constant


def test_step_losses_are_the_support_trace_and_the_newest_ratings_error_before_it_was_given(trained):
    _, rec = trained
    ratings = [(rec.items.external(i), 5.0 if i % 2 else 1.0) for i in range(4)]
    state = rec.adapt_user(ratings)
    losses = rec.step_losses(ratings, state=state)
    support = losses[losses["set"] == "support"]
    assert list(support["loss"]) == pytest.approx(list(state.losses)) and list(support["step"]) == list(range(len(state.losses)))
    query = losses[losses["set"] == "query"]
    before = rec.adapt_user(ratings[:-1])
    predicted = rec.step_scores(before, rec.item_indices([ratings[-1][0]]))[:, 0]
    assert list(query["loss"]) == pytest.approx(list((predicted - ratings[-1][1]) ** 2))
    assert len(query) == rec.run.config.inner_steps + 1
    pd.testing.assert_frame_equal(rec.step_losses(ratings), losses)  # the state is only a shortcut
    first = rec.step_losses(ratings[:1])  # one rating: predicted from the meta-learned start
    start = rec.step_scores(rec.adapt_user([]), rec.item_indices([ratings[0][0]]))[:, 0]
    assert list(first.loc[first["set"] == "query", "loss"]) == pytest.approx(list((start - ratings[0][1]) ** 2))
    assert len(first[first["set"] == "query"]) == rec.run.config.inner_steps + 1


def test_query_quality_scores_the_adapted_user_on_held_out_ratings(trained):
    from metarec_core.metrics import mae, ndcg_at_k

    _, rec = trained
    state = rec.adapt_user([(rec.items.external(i), 4.0) for i in range(3)])
    query = pd.DataFrame({"item_id": [rec.items.external(i) for i in (10, 11, 12, 13)], "rating": [5.0, 1.0, 3.0, 4.0]})
    predicted = rec.score_items(state, np.array([10, 11, 12, 13]))
    quality = rec.query_quality(state, query)
    assert quality == {"mae": pytest.approx(mae(query["rating"].to_numpy(), predicted)),
                       "ndcg@3": pytest.approx(ndcg_at_k(query["rating"].to_numpy(), predicted, k=3))}
    assert 0.0 <= quality["ndcg@3"] <= 1.0
    with pytest.raises(DataError, match="not in this run's catalogue"):
        rec.query_quality(state, pd.DataFrame({"item_id": ["nope"], "rating": [3.0]}))


def test_a_run_adapts_and_scores_with_its_cpu_threads_and_gives_them_back(trained, monkeypatch):
    import torch

    from metarec_core import recommender

    _, rec = trained
    seen = []
    real_adapt, real_score = recommender.adapt, recommender.score
    monkeypatch.setattr(recommender, "adapt", lambda *a, **k: seen.append(torch.get_num_threads()) or real_adapt(*a, **k))
    monkeypatch.setattr(recommender, "score", lambda *a, **k: seen.append(torch.get_num_threads()) or real_score(*a, **k))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert rec.run.config.cpu_threads == 1
        rec.recommend(rec.adapt_user([(rec.items.external(0), 5.0)]), k=3)
        assert seen and set(seen) == {1}  # the run's setting while it computes
        assert torch.get_num_threads() == 2  # the caller's afterwards
    finally:
        torch.set_num_threads(before)
