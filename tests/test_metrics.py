"""Tests for metarec_core.metrics: hand-computed cases and cross-checks against scikit-learn."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, ndcg_score, roc_auc_score

from metarec_core.errors import ConfigError, DataError
from metarec_core import metrics
from metarec_core.metrics import (
    auc,
    catalogue_hits_per_user,
    catalogue_metrics_per_user,
    catalogue_ndcg_per_user,
    dcg_gains,
    hit_rate_at_k,
    mae,
    mean_auc,
    mean_ndcg_at_k,
    ndcg_at_k,
    ndcg_at_k_catalogue,
    ndcg_per_user,
    ndcg_per_user_at_ks,
    per_user,
    per_user_mean,
    recall_at_k,
    rmse,
)


@pytest.fixture()
def grouped() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled query rows of 60 users with 1..15 ratings each, integer ratings 1..5, some tied scores."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 16, size=60)
    users = np.repeat(np.arange(60) * 7 + 3, sizes)  # non-contiguous user ids
    y = rng.integers(1, 6, size=len(users)).astype(np.float64)
    score = np.round(y + rng.normal(0, 1.2, size=len(users)), 1)  # rounding makes ties
    perm = rng.permutation(len(users))
    return users[perm], y[perm], score[perm]


# --------------------------------------------------------------------------- rating error


def test_mae_rmse_hand_and_sklearn() -> None:
    t = np.array([1.0, 2.0, 4.0, 5.0])
    p = np.array([2.0, 2.0, 3.0, 3.0])
    assert mae(t, p) == pytest.approx(1.0)  # (1+0+1+2)/4
    assert rmse(t, p) == pytest.approx(math.sqrt(6 / 4))
    rng = np.random.default_rng(1)
    t, p = rng.normal(size=500), rng.normal(size=500)
    assert mae(t, p) == pytest.approx(mean_absolute_error(t, p))
    assert rmse(t, p) == pytest.approx(math.sqrt(mean_squared_error(t, p)))


def test_per_user_mean_weighs_users_equally() -> None:
    users = np.array([0, 0, 0, 1])
    t = np.array([1.0, 1.0, 1.0, 5.0])
    p = np.array([1.0, 1.0, 1.0, 1.0])
    assert mae(t, p) == pytest.approx(1.0)  # pooled: 4 / 4
    assert per_user_mean(mae, users, t, p) == pytest.approx(2.0)  # (0 + 4) / 2
    assert per_user_mean(rmse, users, t, p) == pytest.approx(2.0)


def test_per_user_fast_path_equals_generic_loop(grouped) -> None:
    users, y, s = grouped
    ids, fast = per_user(mae, users, y, s)
    _, generic = per_user(lambda a, b: mae(a, b), users, y, s)
    _, fast_rmse = per_user(rmse, users, y, s)
    loop = [rmse(y[users == u], s[users == u]) for u in ids]
    np.testing.assert_allclose(fast, generic)
    np.testing.assert_allclose(fast_rmse, loop)
    np.testing.assert_array_equal(ids, np.unique(users))


def test_rating_error_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="y_pred"):
        mae(np.array([1.0, 2.0]), np.array([1.0]))
    with pytest.raises(DataError, match="finite"):
        rmse(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(DataError, match="empty"):
        mae(np.array([]), np.array([]))


# --------------------------------------------------------------------------- nDCG


def test_ndcg_hand_computed() -> None:
    # true ratings 5,3,1 -> gains 31,7,1; scores rank them 3,1,5.
    t = np.array([5.0, 3.0, 1.0])
    s = np.array([0.1, 0.9, 0.5])
    dcg = 7 / math.log2(2) + 1 / math.log2(3) + 31 / math.log2(4)
    idcg = 31 / math.log2(2) + 7 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(t, s, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k(t, s, 1) == pytest.approx(7 / 31)
    assert ndcg_at_k(t, -s + 10, 3) < ndcg_at_k(t, t, 3) == pytest.approx(1.0)
    # linear gain
    assert ndcg_at_k(t, s, 1, gain="linear") == pytest.approx(3 / 5)


def test_ndcg_ties_are_averaged_not_input_order() -> None:
    t = np.array([5.0, 1.0])
    s = np.array([2.0, 2.0])  # a tie: expected DCG of a random order
    expected_dcg = (31 + 1) / 2 * (1 + 1 / math.log2(3))
    assert ndcg_at_k(t, s, 2) == pytest.approx(expected_dcg / (31 + 1 / math.log2(3)))
    assert ndcg_at_k(t, s, 2) == pytest.approx(ndcg_at_k(t[::-1], s[::-1], 2))
    assert ndcg_at_k(t, s, 1) == pytest.approx((31 + 1) / 2 / 31)


def test_ndcg_edge_cases() -> None:
    assert ndcg_at_k(np.array([3.0]), np.array([0.0]), 3) == pytest.approx(1.0)  # n < k
    assert math.isnan(ndcg_at_k(np.array([0.0, 0.0]), np.array([1.0, 2.0]), 2))  # all-zero gain
    users = np.array([0, 0, 1, 1])
    t = np.array([0.0, 0.0, 5.0, 1.0])
    s = np.array([1.0, 2.0, 2.0, 1.0])
    assert mean_ndcg_at_k(users, t, s, 2) == pytest.approx(1.0)  # user 0 (undefined) left out
    with pytest.raises(ConfigError):
        ndcg_at_k(t, s, 0)
    with pytest.raises(DataError, match=">= 0"):
        ndcg_at_k(np.array([-1.0, 2.0]), np.array([0.0, 1.0]), 2)


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_ndcg_matches_sklearn_per_user(grouped, k: int) -> None:
    users, y, s = grouped
    ids, values = ndcg_per_user(users, y, s, k)
    for u, v in zip(ids, values, strict=True):
        mask = users == u
        if mask.sum() == 1:
            assert v == pytest.approx(1.0)  # sklearn refuses single-item inputs
            continue
        ref = ndcg_score([dcg_gains(y[mask])], [s[mask]], k=k)
        assert v == pytest.approx(ref, abs=1e-12)
        assert ndcg_at_k(y[mask], s[mask], k) == pytest.approx(ref, abs=1e-12)
    assert mean_ndcg_at_k(users, y, s, k) == pytest.approx(values.mean())


def test_ndcg_of_a_perfect_and_a_constant_ranking(grouped) -> None:
    users, y, s = grouped
    assert mean_ndcg_at_k(users, y, y, 3) == pytest.approx(1.0)
    constant = mean_ndcg_at_k(users, y, np.zeros_like(y), 3)
    assert 0.3 < constant < mean_ndcg_at_k(users, y, s, 3) < 1.0


# --------------------------------------------------------------------------- full catalogue


def test_ndcg_catalogue_hand_computed_and_exclusion() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    items, ratings = np.array([2, 4]), np.array([5.0, 3.0])
    dcg = 31 / math.log2(4) + 7 / math.log2(6)
    idcg = 31 + 7 / math.log2(3)
    assert ndcg_at_k_catalogue((items, ratings), scores, 5) == pytest.approx(dcg / idcg)
    # excluding the two seen items 0, 1 moves item 2 to the top
    dcg_ex = 31 + 7 / math.log2(4)
    assert ndcg_at_k_catalogue((items, ratings), scores, 5, exclude=np.array([0, 1])) == pytest.approx(dcg_ex / idcg)
    assert ndcg_at_k_catalogue((items, ratings), scores, 2) == pytest.approx(0.0)
    with pytest.raises(DataError, match="both relevant and excluded"):
        ndcg_at_k_catalogue((items, ratings), scores, 5, exclude=np.array([2]))


def test_ndcg_catalogue_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.normal(size=200), 1)
    items = rng.choice(200, size=12, replace=False)
    ratings = rng.integers(1, 6, size=12).astype(float)
    exclude = np.setdiff1d(rng.choice(200, size=30, replace=False), items)
    keep = np.setdiff1d(np.arange(200), exclude)
    gains = np.zeros(200)
    gains[items] = dcg_gains(ratings)
    for k in (1, 5, 10, 50):
        ref = ndcg_score([gains[keep]], [scores[keep]], k=k)
        assert ndcg_at_k_catalogue((items, ratings), scores, k, exclude=exclude) == pytest.approx(ref)


@pytest.mark.parametrize("gain", ["exponential", "linear"])
def test_ndcg_at_several_cutoffs_equals_each_cutoff_alone(grouped, gain) -> None:
    users, y, score = grouped
    y = y.copy()
    y[users == users[0]] = 0.0  # one user with all-zero gains (undefined nDCG)
    ids, at = ndcg_per_user_at_ks(users, y, score, (1, 3, 5, 10, 40), gain=gain)
    for k, values in at.items():
        alone_ids, alone = ndcg_per_user(users, y, score, k, gain=gain)
        np.testing.assert_array_equal(ids, alone_ids)
        np.testing.assert_array_equal(values, alone)  # bitwise, NaN where undefined
    assert np.isnan(at[3][ids == users[0]]).all() and np.isfinite(at[3][ids != users[0]]).all()


def _catalogue_case(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """30 users over 40 items: tied scores, ragged held-out sets (some empty, some one item), excluded seen items."""
    rng = np.random.default_rng(seed)
    n_tasks, n_items = 30, 40
    scores = np.round(rng.normal(size=(n_tasks, n_items)), 1)  # coarse: many ties, also across the k-th place
    exclude = rng.random((n_tasks, n_items)) < 0.3
    exclude[5, :] = True  # a user with almost no candidates (fewer than k)
    exclude[5, :2] = False
    tasks, items, ratings = [], [], []
    for t in range(n_tasks):
        candidates = np.flatnonzero(~exclude[t])
        size = 0 if t % 7 == 3 else (1 if t % 5 == 1 else int(rng.integers(1, min(8, len(candidates)) + 1)))
        chosen = rng.choice(candidates, size=min(size, len(candidates)), replace=False)
        tasks += [t] * len(chosen)
        items += list(chosen)
        ratings += list(rng.integers(0, 6, size=len(chosen)))
    perm = rng.permutation(len(tasks))
    return scores, exclude, np.asarray(tasks)[perm], np.asarray(items)[perm], np.asarray(ratings, dtype=np.float64)[perm]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_catalogue_metrics_of_all_users_equal_the_one_user_functions(seed, k, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "_BLOCK_CELLS", 90)  # blocks of 2 users: the block edges are exercised too
    scores, exclude, tasks, items, ratings = _catalogue_case(seed)
    ndcg = catalogue_ndcg_per_user(scores, exclude, tasks, items, ratings, k)
    liked = ratings >= 4
    recall, hit = catalogue_hits_per_user(scores, exclude, tasks[liked], items[liked], k)
    together = catalogue_metrics_per_user(scores, exclude, tasks, items, ratings, k, relevant=liked)
    for mine, theirs in zip(together, (ndcg, recall, hit)):
        np.testing.assert_array_equal(mine, theirs)
    for t in range(len(scores)):
        mine, seen = tasks == t, np.flatnonzero(exclude[t])
        if not mine.any():
            assert np.isnan(ndcg[t])
        else:
            expected = ndcg_at_k_catalogue((items[mine], ratings[mine]), scores[t], k, exclude=seen)
            assert ndcg[t] == pytest.approx(expected, abs=1e-12) or (np.isnan(ndcg[t]) and np.isnan(expected)), t
        good = mine & liked
        if not good.any():
            assert np.isnan(recall[t]) and np.isnan(hit[t])
        else:
            assert recall[t] == pytest.approx(recall_at_k(items[good], scores[t], k, exclude=seen), abs=1e-12), t
            assert hit[t] == pytest.approx(hit_rate_at_k(items[good], scores[t], k, exclude=seen), abs=1e-12), t
    assert np.isfinite(ndcg).sum() > 15 and np.isfinite(recall).sum() > 10  # the case is not degenerate


def test_recall_and_hit_rate_hand_computed() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    relevant = np.array([1, 5])
    assert recall_at_k(relevant, scores, 2) == pytest.approx(0.5)
    assert hit_rate_at_k(relevant, scores, 2) == pytest.approx(1.0)
    assert hit_rate_at_k(relevant, scores, 1) == pytest.approx(0.0)
    assert recall_at_k(relevant, scores, 6) == pytest.approx(1.0)
    assert recall_at_k(relevant, scores, 1, exclude=np.array([0])) == pytest.approx(0.5)
    assert math.isnan(recall_at_k(np.array([], dtype=np.int64), scores, 3))


def test_recall_and_hit_rate_ties_are_expectations() -> None:
    # 4 items tied, 1 of them relevant, 2 slots: expected hits = 2 * 1/4, P(hit) = 1 - C(3,2)/C(4,2) = 1/2
    scores = np.zeros(4)
    assert recall_at_k(np.array([3]), scores, 2) == pytest.approx(0.5)
    assert hit_rate_at_k(np.array([3]), scores, 2) == pytest.approx(0.5)
    # brute force over all orders of a tie with 2 relevant of 5 tied and 1 item above
    scores = np.array([1.0, 0, 0, 0, 0, 0])
    relevant = np.array([2, 4])
    hits, any_hit = [], []
    for perm in itertools.permutations(range(1, 6)):
        top = {0, *perm[:2]}
        hits.append(len(top & {2, 4}))
        any_hit.append(bool(top & {2, 4}))
    assert recall_at_k(relevant, scores, 3) == pytest.approx(np.mean(hits) / 2)
    assert hit_rate_at_k(relevant, scores, 3) == pytest.approx(np.mean(any_hit))


# --------------------------------------------------------------------------- AUC


def test_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, size=300).astype(float)
    s = np.round(y * 0.5 + rng.normal(size=300), 1)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s))
    assert auc(np.array([0.0, 1.0]), np.array([0.3, 0.3])) == pytest.approx(0.5)
    assert math.isnan(auc(np.ones(3), np.arange(3.0)))
    with pytest.raises(DataError, match="0/1"):
        auc(np.array([0.0, 2.0]), np.array([0.0, 1.0]))


def test_mean_auc_per_user_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    users = rng.integers(0, 20, size=400)
    y = rng.integers(0, 2, size=400).astype(float)
    y[users == 7] = 1.0  # one user with a single class: left out
    s = np.round(y + rng.normal(size=400), 1)
    refs = [roc_auc_score(y[users == u], s[users == u]) for u in np.unique(users) if u != 7]
    assert mean_auc(users, y, s) == pytest.approx(np.mean(refs))
    assert per_user_mean(auc, users, y, s) == pytest.approx(np.mean(refs))
