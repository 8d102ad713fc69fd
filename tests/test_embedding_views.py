"""A run's entity frames beside its vectors: one row per vector, the right cohorts and counts, search, trails."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_core.embedding_views import BASE_COLUMNS, run_embeddings, run_users, search, user_trail
from metarec_core.projection import fit_pca
from metarec_core.recommender import Recommender
from metarec_core.titles import run_titles


@pytest.fixture(scope="module")
def rec(tiny_run) -> Recommender:
    return Recommender.from_run_dir(tiny_run[1])


def test_run_users_count_interactions_and_mark_cohorts(tiny_scenario, rec) -> None:
    data = tiny_scenario.dataset
    users = run_users(rec, data)
    counts = data.ratings.groupby("user").size()
    assert list(users["id"]) == list(rec.users.external_ids)
    assert list(users["n_ratings"]) == [int(counts.get(data.users.index(u), 0)) for u in users["id"]]
    known = rec.model.user_known.numpy()
    assert (users["cohort"] == "warm").sum() == known.sum()
    assert set(users.loc[users["n_ratings"] == 0, "cohort"]) == {"new"}  # side-table-only users


def test_run_embeddings_describe_every_vector(tiny_scenario, rec) -> None:
    data = tiny_scenario.dataset
    views = run_embeddings(rec, data)
    assert tuple(views.items.columns[:4]) == BASE_COLUMNS and tuple(views.users.columns[:4]) == BASE_COLUMNS
    assert views.item_vectors.shape == (len(rec.items), rec.model.config.factor_dim) == (len(views.items), views.item_vectors.shape[1])
    assert views.user_vectors.shape[0] == len(views.users) == len(rec.users)
    assert list(views.items["label"]) == run_titles(rec.run, data)
    assert {"price", "tags"} <= set(views.items.columns) and {"age", "gender"} <= set(views.users.columns)
    known = rec.model.item_known.numpy()
    assert list(views.items["cohort"] == "new") == list(~known)  # side-table-only items were never trained on
    counts = data.ratings.groupby("item").size()
    assert list(views.items["n_ratings"]) == [int(counts.get(data.items.index(i), 0)) for i in views.items["id"]]


def test_new_users_sit_where_their_first_k_ratings_in_time_put_them(tiny_scenario, rec) -> None:
    data = tiny_scenario.dataset
    views = run_embeddings(rec, data)
    k = rec.run.config.eval_support_size
    new = views.users.index[(views.users["cohort"] != "warm") & (views.users["n_ratings"] > k)][0]
    user_id = views.users["id"].iloc[new]
    rows = data.ratings[data.ratings["user"] == data.users.index(user_id)].sort_values(["timestamp", "item"]).head(k)
    state = rec.adapt_user(list(zip(data.items.externals(rows["item"]), rows["rating"])), user_id=user_id, use_known=False)
    assert np.allclose(rec.user_vector(state), views.user_vectors[new], atol=1e-5)


def test_search_finds_ids_and_labels_and_can_rank_by_popularity() -> None:
    frame = pd.DataFrame({"id": ["7", "17", "70", "x"], "label": ["Seven", "Toy Story 7", "Alien", "toy soldiers"], "n_ratings": [1, 5, 9, 3]})
    assert search(frame, "7") == [0, 1]  # the exact ID first, then labels that contain it
    assert search(frame, "  TOY ") == [1, 3]
    assert search(frame, "toy", most_rated_first=True) == [1, 3] and search(frame, "7", most_rated_first=True) == [1, 0]
    assert search(frame, "t", limit=1) == [1] and search(frame, "") == [] and search(frame, "zzz") == []


def test_user_trail_projects_every_prefix_and_reuses_the_memo(rec, monkeypatch) -> None:
    ratings = [(rec.items.external(i), 5.0 if i % 2 else 1.0) for i in range(3)]
    pca = fit_pca(rec.item_vectors())
    memo: dict = {}
    trail = user_trail(rec, ratings, pca, upto=2, memo=memo)
    assert list(trail["label"]) == ["0", "1", "2"] and len(memo) == 3
    for n in range(3):
        expected = pca.transform(rec.user_vector(rec.adapt_user(ratings[:n])))[0]
        assert trail[["x", "y"]].iloc[n].to_numpy() == pytest.approx(expected, abs=1e-6)
    assert np.ptp(trail[["x", "y"]].to_numpy(), axis=0).max() > 0  # the ratings move the user

    def fail(*args, **kwargs):
        raise AssertionError("adapted again instead of reading the memo")

    monkeypatch.setattr(rec, "adapt_user", fail)
    pd.testing.assert_frame_equal(user_trail(rec, ratings, pca, upto=2, memo=memo), trail)
    monkeypatch.undo()
    assert len(user_trail(rec, ratings, pca, memo=memo)) == 4  # upto defaults to every rating


def test_item_blurbs_give_the_year_and_category_where_the_data_has_them() -> None:
    import pandas as pd

    from metarec_core.embedding_views import item_blurbs

    movies = pd.DataFrame({"label": ["Toy Story (1995)", "Heat"], "year": pd.array([1995, 1995], dtype="Int64"),
                           "genres": ["Animation|Children's|Comedy", None]})
    assert item_blurbs(movies) == ["Animation, Children's", "1995"]  # the year is not repeated after a title that shows it
    shop = pd.DataFrame({"label": ["a", "b"], "category": ["music", "books"]})
    assert item_blurbs(shop) == ["music", "books"]
    assert item_blurbs(pd.DataFrame({"label": ["x"]})) == [""]


def test_user_trail_reads_its_last_step_from_a_given_state(rec, monkeypatch) -> None:
    ratings = [(rec.items.external(i), 5.0 if i % 2 else 1.0) for i in range(3)]
    pca = fit_pca(rec.item_vectors())
    expected = user_trail(rec, ratings, pca)
    state = rec.adapt_user(ratings)
    adapted = []
    original = rec.adapt_user
    monkeypatch.setattr(rec, "adapt_user", lambda shown, **kw: adapted.append(len(shown)) or original(shown, **kw))
    trail = user_trail(rec, ratings, pca, last_state=state)
    assert adapted == [0, 1, 2]  # every step but the last
    np.testing.assert_allclose(trail[["x", "y"]].to_numpy(), expected[["x", "y"]].to_numpy(), atol=1e-6)
