"""Synthetic scenarios: seeded, the declared shape, and a latent group structure that few ratings reveal."""
from __future__ import annotations

import numpy as np
import pytest

from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError
from metarec_core.synthetic import THEMES, SyntheticConfig, make_synthetic


def test_shape_and_kinds(small_scenario):
    data = small_scenario.dataset
    assert (data.n_users, data.n_items) == (300, 200)
    per_user = data.ratings.groupby("user").size()
    assert per_user.min() >= 20 and per_user.max() <= 60
    assert set(np.unique(data.ratings["rating"])) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert len(np.unique(data.ratings["rating"])) == 5
    assert not data.ratings.duplicated(["user", "item"]).any()
    assert (data.ratings["timestamp"] > 0).all()
    kinds = {s.name: s.kind for s in data.user_features + data.item_features}
    assert kinds == {
        "age": "numeric", "gender": "categorical", "occupation": "categorical",
        "title": "text", "description": "text", "tags": "multilabel", "price": "numeric",
    }
    assert list(data.item_table.columns) == ["title", "description", "tags", "price"]
    assert len(small_scenario.user_group) == data.n_users and len(small_scenario.item_category) == data.n_items
    assert small_scenario.item_domain is None


def test_seeded():
    a = make_synthetic(SyntheticConfig(n_users=40, n_items=30, ratings_per_user=(5, 10), seed=3))
    b = make_synthetic(SyntheticConfig(n_users=40, n_items=30, ratings_per_user=(5, 10), seed=3))
    c = make_synthetic(SyntheticConfig(n_users=40, n_items=30, ratings_per_user=(5, 10), seed=4))
    assert a.dataset.fingerprint == b.dataset.fingerprint
    assert a.dataset.fingerprint != c.dataset.fingerprint


def test_few_ratings_reveal_a_users_group(small_scenario):
    """From 5 ratings, the group whose affinities best explain them is the true group far above chance,
    and predicting the user's other ratings with that group beats the global mean."""
    s = small_scenario
    r = s.dataset.ratings
    rng = np.random.default_rng(0)
    mid = 3.5
    global_mean = r["rating"].mean()
    correct, err_group, err_mean = 0, [], []
    users = np.unique(r["user"])
    for u, rows in r.groupby("user", sort=True):  # each user's rows in frame order, users ascending
        items, ratings = rows["item"].to_numpy(), rows["rating"].to_numpy(np.float64)
        pick = rng.permutation(len(rows))
        sup, qry = pick[:5], pick[5:]
        base = mid + s.item_bias[items[sup]]
        # Least squares over groups: residual of support ratings under each group's affinities.
        pred = base + s.affinity[0][:, s.item_category[items[sup]]]  # (groups, 5)
        offset = np.mean(ratings[sup] - pred, axis=1, keepdims=True)
        g_hat = int(np.argmin(np.mean((ratings[sup] - pred - offset) ** 2, axis=1)))
        correct += g_hat == s.user_group[u]
        pred_q = mid + s.item_bias[items[qry]] + s.affinity[0, g_hat, s.item_category[items[qry]]] + offset[g_hat, 0]
        err_group.append(np.abs(ratings[qry] - pred_q))
        err_mean.append(np.abs(ratings[qry] - global_mean))
    accuracy = correct / len(users)
    assert accuracy > 0.6, accuracy  # chance is 0.25
    assert np.concatenate(err_group).mean() < 0.8 * np.concatenate(err_mean).mean()


def test_demographics_and_text_carry_signal(small_scenario):
    s = small_scenario
    # Occupation predicts the group above chance.
    occ = s.dataset.user_table["occupation"].to_numpy()
    majority = {o: np.bincount(s.user_group[occ == o]).argmax() for o in np.unique(occ)}
    acc = np.mean([majority[o] == g for o, g in zip(occ, s.user_group)])
    assert acc > 0.5
    # Descriptions use their category's words more than other categories'.
    hits = 0
    for desc, cat in zip(s.dataset.item_table["description"], s.item_category):
        words = set(desc.lower().strip(".").split())
        own = len(words & set(THEMES[cat][1]))
        other = max(len(words & set(THEMES[c][1])) for c in range(s.config.n_categories) if c != cat)
        hits += own > other
    assert hits / s.dataset.n_items > 0.9
    tags = s.dataset.item_table["tags"].dropna().str.split("|")
    assert tags.map(len).max() >= 2


def test_two_domains_share_users():
    s = make_synthetic(SyntheticConfig(two_domains=True, seed=2))
    data = s.dataset
    assert set(data.item_table["domain"]) == {"source", "target"}
    assert {sp.name: sp.kind for sp in data.item_features}["domain"] == "categorical"
    dom = data.item_table["domain"].to_numpy()[data.ratings["item"]]
    both = data.ratings.assign(dom=dom).groupby("user")["dom"].nunique()
    assert (both == 2).mean() > 0.9
    assert s.affinity.shape == (2, 4, 5)
    corr = np.corrcoef(s.affinity[0].ravel(), s.affinity[1].ravel())[0, 1]
    assert 0.0 < corr < 0.99


def test_implicit_follows_taste():
    s = make_synthetic(SyntheticConfig(implicit=True, seed=0))
    data = s.dataset
    assert data.implicit and (data.ratings["rating"] == 1.0).all()
    r = data.ratings
    aff = s.affinity[0, s.user_group[r["user"]], s.item_category[r["item"]]]
    assert aff.mean() > 0.3  # users pick items of the categories they like


def test_side_only_entities():
    s = make_synthetic(SyntheticConfig(n_users=30, n_items=20, ratings_per_user=(3, 5), cold_users=4, cold_items=2))
    data = s.dataset
    assert (data.n_users, data.n_items) == (34, 22)
    assert data.ratings["user"].max() == 29 and data.ratings["item"].max() <= 19
    assert len(data.user_table) == 34 and data.user_table["age"].notna().all()


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict(SyntheticConfig, {"n_user": 5})
    with pytest.raises(ConfigError, match="ratings_per_user"):
        config_from_dict(SyntheticConfig, {"ratings_per_user": [10, 5]})
    with pytest.raises(ConfigError, match="exceeds n_items"):
        config_from_dict(SyntheticConfig, {"n_items": 10, "ratings_per_user": [5, 20]})
    assert config_from_dict(SyntheticConfig, {"ratings_per_user": [2, 4]}).ratings_per_user == (2, 4)


def test_large_sizes_draw_per_rating_in_bounded_memory():
    import tracemalloc

    config = SyntheticConfig(n_users=20_000, n_items=10_000, ratings_per_user=(5, 30), seed=4)
    tracemalloc.start()
    try:
        scenario = make_synthetic(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    ratings = scenario.dataset.ratings
    # Ranking every item for every user would hold 1,024 x 10,000 float64 keys at once (80 MB each, several of them).
    assert peak < 120 * 2**20, f"{peak / 2**20:.0f} MB"
    per_user = ratings.groupby("user").size()
    assert per_user.min() >= 5 and per_user.max() <= 30 and len(per_user) == 20_000
    assert not ratings.duplicated(["user", "item"]).any()
    share = ratings["item"].value_counts().to_numpy()
    assert share[: len(share) // 10].sum() / share.sum() > 0.4  # the popularity long tail
    expected = scenario.expected_rating(ratings["user"].to_numpy(), ratings["item"].to_numpy())
    assert np.corrcoef(expected, ratings["rating"].to_numpy())[0, 1] > 0.6


@pytest.mark.parametrize("implicit", [False, True])
def test_the_per_rating_draw_follows_the_exact_sampler(monkeypatch, implicit):
    from metarec_core import synthetic

    config = SyntheticConfig(n_users=3000, n_items=400, ratings_per_user=(5, 25), implicit=implicit, seed=5)
    exact = make_synthetic(config)
    monkeypatch.setattr(synthetic, "LARGE_CELLS", 0)
    drawn = make_synthetic(config)
    a, b = (s.dataset.ratings["item"].value_counts().reindex(range(400), fill_value=0).to_numpy() for s in (exact, drawn))
    assert len(exact.dataset.ratings) == len(drawn.dataset.ratings)  # the same counts per user
    assert np.corrcoef(a, b)[0, 1] > 0.95  # items are picked with the same weights
    assert not drawn.dataset.ratings.duplicated(["user", "item"]).any()
    if implicit:  # users pick the categories their group likes, as in the exact sampler
        def liked(s):
            r = s.dataset.ratings
            return s.affinity[0, s.user_group[r["user"]], s.item_category[r["item"]]].mean()
        assert abs(liked(exact) - liked(drawn)) < 0.1 and liked(drawn) > 0.3
