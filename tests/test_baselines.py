"""Tests for metarec_core.baselines on small synthetic rating matrices with a known low-rank structure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_core import baselines
from metarec_core.baselines import (
    ALSFits,
    BiasBaseline,
    BiasConfig,
    GlobalMean,
    ItemMean,
    ItemMeanConfig,
    MatrixFactorization,
    MFConfig,
    fold_in,
    fold_in_batch,
    grid_search,
    tune_bias,
    tune_fold_in,
    tune_mf,
    validation_mae,
)
from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError, DataError
from metarec_core.metrics import mae, mean_ndcg_at_k

N_USERS, N_ITEMS = 300, 200


def make_split(seed: int = 0, rank: int = 3, support_size: int = 10):
    """Ratings 1..5 from biases + a rank-``rank`` interaction; the last 20% of users are cold."""
    rng = np.random.default_rng(seed)
    p = rng.normal(0, 0.8, (N_USERS, rank))
    q = rng.normal(0, 0.8, (N_ITEMS, rank))
    b_u = rng.normal(0, 0.5, N_USERS)
    b_i = rng.normal(0, 0.5, N_ITEMS)
    users, items = np.nonzero(rng.random((N_USERS, N_ITEMS)) < 0.3)
    r = 3.3 + b_u[users] + b_i[items] + (p[users] * q[items]).sum(1) + rng.normal(0, 0.3, len(users))
    df = pd.DataFrame({"user": users, "item": items, "rating": np.clip(np.round(r), 1, 5).astype(np.float32)})
    cold = df["user"] >= int(N_USERS * 0.8)
    train = df[~cold].reset_index(drop=True)
    c = df[cold].sample(frac=1.0, random_state=seed)
    first = c.groupby("user").cumcount() < support_size
    return train, c[first].reset_index(drop=True), c[~first].reset_index(drop=True)


@pytest.fixture(scope="module")
def split():
    return make_split()


def evaluate(model, split) -> tuple[float, float]:
    train, support, query = split
    scores = model.fit(train, N_USERS, N_ITEMS).predict_tasks(support, query)
    return mae(query["rating"], scores), mean_ndcg_at_k(query["user"], query["rating"], scores, 3)


def test_bias_baseline_beats_global_and_item_mean(split) -> None:
    global_mae, _ = evaluate(GlobalMean(), split)
    item_mae, _ = evaluate(ItemMean(), split)
    bias_mae, _ = evaluate(BiasBaseline(), split)
    assert bias_mae < item_mae < global_mae
    assert bias_mae < global_mae - 0.1


def test_mf_fold_in_beats_item_mean_and_bias_on_low_rank_data(split) -> None:
    item_mae, item_ndcg = evaluate(ItemMean(), split)
    bias_mae, _ = evaluate(BiasBaseline(), split)
    mf_mae, mf_ndcg = evaluate(MatrixFactorization(MFConfig(n_factors=3)), split)
    assert mf_mae < bias_mae - 0.05
    assert mf_mae < item_mae - 0.1
    assert mf_ndcg > item_ndcg + 0.1


def test_fold_in_with_zero_support_gives_the_item_bias_prediction(split) -> None:
    train, _, _ = split
    model = MatrixFactorization(MFConfig(clip=False)).fit(train, N_USERS, N_ITEMS)
    items = np.arange(N_ITEMS)
    empty = np.zeros(0)
    np.testing.assert_allclose(model.predict(empty, empty, items), model.global_mean + model.item_bias)
    p, b = fold_in(empty, empty, model.item_factors, model.item_bias, model.global_mean, reg=1.0, bias_reg=1.0)
    assert b == 0.0 and np.all(p == 0.0)
    bias = BiasBaseline(BiasConfig(clip=False)).fit(train, N_USERS, N_ITEMS)
    np.testing.assert_allclose(bias.predict(empty, empty, items), bias.global_mean + bias.item_bias)


def test_fold_in_is_the_ridge_least_squares_solution() -> None:
    rng = np.random.default_rng(7)
    q, b_i = rng.normal(size=(30, 4)), rng.normal(size=30)
    tasks = np.array([0] * 6 + [2] * 9)
    items = rng.integers(0, 30, size=len(tasks))
    r = rng.normal(3, 1, size=len(tasks))
    reg, bias_reg = 0.7, 2.0
    p, b = fold_in_batch(tasks, items, r, 3, q, b_i, 3.5, reg=reg, bias_reg=bias_reg)
    for t in range(3):
        m = tasks == t
        x = np.c_[q[items[m]], np.ones(m.sum())]
        y = r[m] - 3.5 - b_i[items[m]]
        # ridge as an augmented least-squares problem
        xa = np.r_[x, np.diag(np.sqrt(np.r_[np.full(4, reg), bias_reg]))]
        ya = np.r_[y, np.zeros(5)]
        ref = np.linalg.lstsq(xa, ya, rcond=None)[0]
        np.testing.assert_allclose(np.r_[p[t], b[t]], ref, atol=1e-10)
    assert np.all(p[1] == 0) and b[1] == 0  # task 1 has no support rows


def test_als_is_deterministic_under_its_seed(split) -> None:
    train, support, query = split
    a = MatrixFactorization(MFConfig(seed=3, n_iter=3)).fit(train, N_USERS, N_ITEMS)  # a few sweeps show it
    b = MatrixFactorization(MFConfig(seed=3, n_iter=3)).fit(train, N_USERS, N_ITEMS)
    c = MatrixFactorization(MFConfig(seed=4, n_iter=3)).fit(train, N_USERS, N_ITEMS)
    np.testing.assert_array_equal(a.item_factors, b.item_factors)
    np.testing.assert_array_equal(a.predict_tasks(support, query), b.predict_tasks(support, query))
    assert not np.allclose(a.item_factors, c.item_factors)


def test_als_training_error_decreases(split) -> None:
    train, _, _ = split
    seen = []
    config = MFConfig(n_factors=3, n_iter=8, reg=0.01, bias_reg=0.01)
    model = MatrixFactorization(config, on_iteration=lambda it, err: seen.append((it, err)))
    model.fit(train, N_USERS, N_ITEMS)
    assert [it for it, _ in seen] == list(range(1, 9))
    assert model.train_rmse[-1] < model.train_rmse[0] < 1.0
    assert model.train_rmse[-1] < 0.45  # noise std 0.3 plus rounding
    quiet = MatrixFactorization(config).fit(train, N_USERS, N_ITEMS)  # nobody watches: only the last sweep's error
    assert quiet.train_rmse == [model.train_rmse[-1]]
    np.testing.assert_array_equal(quiet.item_factors, model.item_factors)


def test_als_training_error_is_the_same_in_chunks(split, monkeypatch) -> None:
    train, _, _ = split
    model = MatrixFactorization(MFConfig(n_factors=3, n_iter=4)).fit(train, N_USERS, N_ITEMS)
    users, items = train["user"].to_numpy(np.int64), train["item"].to_numpy(np.int64)
    residual = train["rating"].to_numpy(np.float64) - model.global_mean
    p, q, b_u, b_i = model.user_factors, model.item_factors, model.user_bias, model.item_bias
    direct = np.sqrt(np.mean((residual - b_u[users] - b_i[items] - np.sum(p[users] * q[items], axis=1)) ** 2))
    assert model.train_rmse[-1] == pytest.approx(direct, rel=1e-12)
    monkeypatch.setattr(baselines, "_ERROR_CHUNK", 37)  # many chunks and a shorter last one
    assert baselines._rmse_of_fit(residual, users, items, p, q, b_u, b_i) == pytest.approx(direct, rel=1e-12)


def test_predict_matches_predict_tasks_and_unseen_items(split) -> None:
    train, support, query = split
    model = MatrixFactorization().fit(train, N_USERS, N_ITEMS)
    batched = model.predict_tasks(support, query)
    u = query["user"].iloc[0]
    s, q = support[support["user"] == u], query[query["user"] == u]
    single = model.predict(s["item"].to_numpy(), s["rating"].to_numpy(), q["item"].to_numpy())
    np.testing.assert_allclose(single, batched[(query["user"] == u).to_numpy()])
    # a query user with no support rows is scored from the prior; support of other users is ignored
    lonely = pd.DataFrame({"user": [N_USERS - 1] * 3, "item": [0, 1, 2]})
    np.testing.assert_allclose(
        model.predict_tasks(support[support["user"] != N_USERS - 1], lonely),
        np.clip(model.global_mean + model.item_bias[:3], *model.rating_range),
    )


def test_with_fold_in_shares_factors_and_changes_penalties(split) -> None:
    train, support, query = split
    model = MatrixFactorization().fit(train, N_USERS, N_ITEMS)
    loose = model.with_fold_in(fold_in_reg=1e-3, fold_in_bias_reg=1e-3)
    assert loose.item_factors is model.item_factors
    assert not np.allclose(loose.predict_tasks(support, query), model.predict_tasks(support, query))
    with pytest.raises(ConfigError, match="without refitting"):
        model.with_fold_in(n_factors=4)


def test_item_mean_popularity_for_implicit_data() -> None:
    train = pd.DataFrame({"user": [0, 1, 2, 0], "item": [1, 1, 1, 2], "rating": np.ones(4, np.float32)})
    model = ItemMean().fit(train, 3, 4)
    np.testing.assert_array_equal(model.predict([], [], [0, 1, 2, 3]), [0.0, 3.0, 1.0, 0.0])
    with pytest.raises(DataError, match="implicit"):
        BiasBaseline().fit(train, 3, 4)
    with pytest.raises(DataError, match="popularity"):
        MatrixFactorization().fit(train, 3, 4)
    shrunk = ItemMean(ItemMeanConfig(shrinkage=1.0, score="mean"))
    explicit = train.assign(rating=[5.0, 5.0, 5.0, 1.0])
    # mu = 4; item 1: 4 + 3*1/(3+1); item 2: 4 + (-3)/(1+1)
    np.testing.assert_allclose(shrunk.fit(explicit, 3, 4).predict([], [], [1, 2, 3]), [4.75, 2.5, 4.0])


def test_bad_input_and_configs_are_rejected(split) -> None:
    train, support, query = split
    with pytest.raises(DataError, match="rating"):
        BiasBaseline().fit(train.drop(columns="rating"), N_USERS, N_ITEMS)
    with pytest.raises(DataError, match="item indices"):
        BiasBaseline().fit(train, N_USERS, 10)
    with pytest.raises(ConfigError, match="not fitted"):
        GlobalMean().predict_tasks(support, query)
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict(MFConfig, {"factors": 5})
    with pytest.raises(ConfigError, match="reg"):
        MFConfig(reg=-1.0)
    assert config_from_dict(BiasConfig, {"user_shrinkage": 2.0}).user_shrinkage == 2.0


def test_grid_search_picks_the_best_validation_config(split) -> None:
    train, support, query = split
    configs = [BiasConfig(user_shrinkage=s) for s in (0.0, 5.0, 1e6)]

    def objective(q: pd.DataFrame, scores: np.ndarray) -> float:
        return mae(q["rating"], scores)

    best, table = grid_search(BiasBaseline, configs, train, support, query, N_USERS, N_ITEMS, objective)
    assert [c for c, _ in table] == configs
    assert best.user_shrinkage != 1e6  # no user offset at all must lose on data with user biases
    assert min(v for _, v in table) == dict((c.user_shrinkage, v) for c, v in table)[best.user_shrinkage]


def test_with_fold_in_equals_a_fresh_fit_with_the_same_config(split) -> None:
    train, support, query = split
    fitted = MatrixFactorization(MFConfig(n_factors=3)).fit(train, N_USERS, N_ITEMS)
    shortcut = fitted.with_fold_in(fold_in_reg=0.5, fold_in_bias_reg=7.0)
    config = MFConfig(n_factors=3, fold_in_reg=0.5, fold_in_bias_reg=7.0)
    fresh = MatrixFactorization(config).fit(train, N_USERS, N_ITEMS)
    np.testing.assert_allclose(shortcut.predict_tasks(support, query), fresh.predict_tasks(support, query))


def test_tuning_picks_from_the_grid_and_beats_a_bad_setting(split) -> None:
    train, support, query = split
    best, table = tune_bias(train, support, query, N_USERS, N_ITEMS, grid={"user_shrinkage": (2.0, 1e6)})
    assert best.user_shrinkage == 2.0 and len(table) == 2
    grid = {"reg": (0.5, 1e4), "bias_reg": (1.0,), "fold_in_reg": (0.3, 3.0), "fold_in_bias_reg": (1.0,)}
    best_mf, table_mf = tune_mf(train, support, query, N_USERS, N_ITEMS, base=MFConfig(n_factors=3), grid=grid)
    assert len(table_mf) == 4
    assert best_mf.reg == 0.5  # 1e4 crushes the factors: no better than the bias model
    assert dict(((c.reg, c.fold_in_reg), v) for c, v in table_mf)[(best_mf.reg, best_mf.fold_in_reg)] == min(
        v for _, v in table_mf
    )


def test_baselines_on_the_project_splitter_and_synthetic_scenario() -> None:
    """The data layer's contract: split_cold_start frames go straight into fit / predict_tasks."""
    from metarec_core.splits import SplitConfig, split_cold_start
    from metarec_core.synthetic import SyntheticConfig, make_synthetic

    dataset = make_synthetic(SyntheticConfig(n_users=250, n_items=150, affinity=1.5, seed=1)).dataset
    split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=10, seed=0))
    scores = {}
    for model in (GlobalMean(), ItemMean(), BiasBaseline(), MatrixFactorization(MFConfig(reg=1.0))):
        model.fit(split.train, dataset.n_users, dataset.n_items)
        s = model.predict_tasks(split.support, split.query)
        assert s.shape == (len(split.query),) and np.isfinite(s).all()
        scores[model.name] = mae(split.query["rating"], s)
    # taste groups x categories is a low-rank signal that only the factor model can pick up from 10 ratings
    assert scores[MatrixFactorization.name] < scores[BiasBaseline.name] < scores[GlobalMean.name]


def validation_split(train: pd.DataFrame, support_size: int = 10, seed: int = 1):
    """Every 5th training user as a validation user: rows of the others, their support (seeded) and query."""
    is_valid = (train["user"] % 5 == 0).to_numpy()
    rows = train[is_valid].sample(frac=1.0, random_state=seed)
    first = (rows.groupby("user").cumcount() < support_size).to_numpy()
    return train[~is_valid].reset_index(drop=True), rows[first].reset_index(drop=True), rows[~first].reset_index(drop=True)


FOLD_GRID = {"fold_in_reg": (0.1, 3.0, 1e3), "fold_in_bias_reg": (1.0, 1e3)}


def test_tune_fold_in_picks_the_grid_point_with_the_lowest_validation_mae(split) -> None:
    train, _, _ = split
    fit_rows, v_support, v_query = validation_split(train)
    base = MFConfig(n_factors=3, n_iter=8)
    best, table = tune_fold_in(base, fit_rows, v_support, v_query, N_USERS, N_ITEMS, grid=FOLD_GRID)
    assert [(c.fold_in_reg, c.fold_in_bias_reg) for c, _ in table] == [
        (r, b) for r in FOLD_GRID["fold_in_reg"] for b in FOLD_GRID["fold_in_bias_reg"]
    ]
    assert all(c.n_factors == 3 and c.n_iter == 8 for c, _ in table)  # only the fold-in penalties change
    # each grid point scored from scratch: a fresh ALS fit with those penalties, MAE on the validation query
    direct = {}
    for config, value in table:
        model = MatrixFactorization(config).fit(fit_rows, N_USERS, N_ITEMS)
        direct[(config.fold_in_reg, config.fold_in_bias_reg)] = mae(v_query["rating"], model.predict_tasks(v_support, v_query))
        assert value == pytest.approx(direct[(config.fold_in_reg, config.fold_in_bias_reg)], abs=1e-12)
    assert (best.fold_in_reg, best.fold_in_bias_reg) == min(direct, key=direct.get)
    assert best.fold_in_reg != 1e3 and best.fold_in_bias_reg != 1e3  # no personalisation must lose on this data


def test_tuned_fold_in_beats_a_deliberately_bad_fixed_penalty_on_new_users(split) -> None:
    train, support, query = split
    fit_rows, v_support, v_query = validation_split(train)
    base = MFConfig(n_factors=3)
    best, _ = tune_fold_in(base, fit_rows, v_support, v_query, N_USERS, N_ITEMS)  # the default grid
    assert best.fold_in_reg in (1.0, 3.0, 10.0, 30.0) and best.fold_in_bias_reg in (1.0, 3.0, 10.0, 30.0)
    # refit on every training row, as the callers do, and score the held-out new users
    tuned = mae(query["rating"], MatrixFactorization(best).fit(train, N_USERS, N_ITEMS).predict_tasks(support, query))
    # a fixed penalty so strong that the 10 support ratings barely move the new user
    fixed = MatrixFactorization(MFConfig(n_factors=3, fold_in_reg=300.0, fold_in_bias_reg=300.0)).fit(train, N_USERS, N_ITEMS)
    assert tuned < mae(query["rating"], fixed.predict_tasks(support, query)) - 0.05


def test_tune_fold_in_rejects_an_empty_validation_set_and_other_settings(split) -> None:
    train, _, _ = split
    fit_rows, v_support, v_query = validation_split(train)
    with pytest.raises(ConfigError, match="no validation query rows"):
        tune_fold_in(MFConfig(), fit_rows, v_support, v_query.iloc[:0], N_USERS, N_ITEMS)
    with pytest.raises(ConfigError, match="tune_mf"):
        tune_fold_in(MFConfig(), fit_rows, v_support, v_query, N_USERS, N_ITEMS, grid={"reg": (1.0,)})
    assert validation_mae(v_query, v_query["rating"].to_numpy() + 0.5) == pytest.approx(0.5)


# --------------------------------------------------------------------------- genre baseline


def test_genre_baseline_scores_a_new_item_by_the_user_mean_and_its_genre_offsets() -> None:
    from metarec_core.baselines import GenreBaseline, GenreConfig

    # Items 0, 1: genre A; item 2: genre B; item 3: A and B, never rated. Users 0, 1 rate items 0-2.
    labels = np.array([[1, 0], [1, 0], [0, 1], [1, 1]], dtype=float)
    train = pd.DataFrame({"user": [0, 0, 0, 1, 1, 1], "item": [0, 1, 2, 0, 1, 2], "rating": [5.0, 4.0, 2.0, 4.0, 5.0, 1.0]})
    none = GenreConfig(user_shrinkage=0.0, genre_shrinkage=0.0, item_shrinkage=0.0, clip=False)
    model = GenreBaseline(labels, none).fit(train, 3, 4)
    user_mean = np.array([11 / 3, 10 / 3])
    offset_a = np.mean([5 - user_mean[0], 4 - user_mean[0], 4 - user_mean[1], 5 - user_mean[1]])
    offset_b = np.mean([2 - user_mean[0], 1 - user_mean[1]])
    # A known user (index 0): the training mean, whatever the support says; item 3 gets the mean of its genres' offsets.
    scores = model.predict(np.array([2]), np.array([1.0]), np.array([3]))
    assert scores[0] == pytest.approx(user_mean[0] + (offset_a + offset_b) / 2)
    # A user without training ratings (index 2) gets the mean of their support ratings.
    support = pd.DataFrame({"user": [2, 2], "item": [0, 2], "rating": [5.0, 3.0]})
    query = pd.DataFrame({"user": [2], "item": [3]})
    assert model.predict_tasks(support, query)[0] == pytest.approx(4.0 + (offset_a + offset_b) / 2)
    # A rated item's own deviation from its genres is shrunk: with a large pseudo-count it is scored by its genres.
    shrunk = GenreBaseline(labels, GenreConfig(user_shrinkage=0.0, genre_shrinkage=0.0, item_shrinkage=1e9, clip=False)).fit(train, 3, 4)
    assert shrunk.item_offset[0] == pytest.approx(offset_a) and model.item_offset[0] == pytest.approx(np.mean([5 - user_mean[0], 4 - user_mean[1]]))


def test_genre_baseline_beats_the_bias_baseline_on_new_items_of_a_movielens_like_catalogue() -> None:
    from metarec_core.baselines import GenreBaseline
    from metarec_core.splits import SplitConfig, split_cold_start
    from metarec_core.synthetic import SyntheticConfig, make_synthetic

    dataset = make_synthetic(SyntheticConfig(n_users=250, n_items=150, affinity=1.5, seed=1)).dataset
    split = split_cold_start(dataset, SplitConfig(scenario="item-cold", cold_fraction=0.2, support_size=10, seed=0))
    genre = GenreBaseline.from_dataset(dataset).fit(split.train, dataset.n_users, dataset.n_items)
    assert genre.item_labels.shape[0] == dataset.n_items and (genre.item_labels.sum(axis=1) >= 1).mean() > 0.9  # tags
    bias = BiasBaseline().fit(split.train, dataset.n_users, dataset.n_items)
    y, users = split.query["rating"], split.query["user"]
    g, b = genre.predict_tasks(split.support, split.query), bias.predict_tasks(split.support, split.query)
    assert mae(y, g) < mae(y, b) - 0.02
    assert mean_ndcg_at_k(users, y, g, 3) > mean_ndcg_at_k(users, y, b, 3) + 0.02


def test_genre_baseline_refuses_implicit_data_and_mismatched_labels() -> None:
    from metarec_core.baselines import GenreBaseline

    train = pd.DataFrame({"user": [0, 1], "item": [0, 1], "rating": [1.0, 1.0]})
    with pytest.raises(DataError, match="explicit ratings"):
        GenreBaseline(np.eye(2)).fit(train, 2, 2)
    train = train.assign(rating=[4.0, 2.0])
    with pytest.raises(DataError, match="item_labels has 3 rows but there are 2 items"):
        GenreBaseline(np.eye(3)).fit(train, 2, 2)
    assert GenreBaseline().fit(train, 2, 2).predict(np.array([0]), np.array([4.0]), np.array([1])).shape == (1,)


def test_als_fits_reuse_an_equal_fit_with_the_asked_fold_in_and_refit_when_rows_or_settings_differ(split) -> None:
    train, support, query = split
    fits = ALSFits()
    config = MFConfig(n_factors=3, n_iter=6)
    first = fits.fit(config, train, N_USERS, N_ITEMS)
    again = fits.fit(MFConfig(n_factors=3, n_iter=6, fold_in_reg=30.0), train.copy(), N_USERS, N_ITEMS)
    assert fits.hits == 1 and again.item_factors is first.item_factors and again.config.fold_in_reg == 30.0
    fresh = MatrixFactorization(MFConfig(n_factors=3, n_iter=6, fold_in_reg=30.0)).fit(train, N_USERS, N_ITEMS)
    assert np.allclose(again.predict_tasks(support, query), fresh.predict_tasks(support, query))
    changed = train.copy()
    changed.loc[0, "rating"] = changed.loc[0, "rating"] + 0.5
    other_rows = fits.fit(config, changed, N_USERS, N_ITEMS)
    other_settings = fits.fit(MFConfig(n_factors=4, n_iter=6), train, N_USERS, N_ITEMS)
    assert fits.hits == 1 and other_rows.item_factors is not first.item_factors
    assert other_settings.item_factors.shape[1] == 4


@pytest.mark.parametrize("slots", [1 << 18, 7 * N_ITEMS])  # one chunk; chunks of 7 users and a shorter last one
@pytest.mark.parametrize("make", [GlobalMean, ItemMean, BiasBaseline, lambda: MatrixFactorization(MFConfig(n_factors=3, n_iter=4))])
def test_catalogue_scores_equal_the_scores_of_every_user_item_pair(split, make, slots, monkeypatch) -> None:
    monkeypatch.setattr(baselines, "_CATALOGUE_SLOTS", slots)
    train, support, query = split
    model = make().fit(train, N_USERS, N_ITEMS)
    users = np.unique(query["user"].to_numpy(np.int64))[:25]
    pairs = pd.DataFrame({"user": np.repeat(users, N_ITEMS), "item": np.tile(np.arange(N_ITEMS), len(users))})
    expected = model.predict_tasks(support, pairs).reshape(len(users), N_ITEMS)
    scores = model.predict_catalogue(support, users)
    assert scores.shape == (len(users), N_ITEMS)
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="sorted and distinct"):
        model.predict_catalogue(support, users[::-1])
