"""Elicitation: the suggested next items carry the most expected information, shift away from what was rated, and favour known items."""
from __future__ import annotations

import numpy as np
import pytest

from metarec_core.elicitation import next_items, posterior_covariance, taste_prior
from metarec_core.errors import DataError


def axes_items() -> np.ndarray:
    """Items 0, 1 along the first axis (1 twice as long), 2 along the second, 3 along the third, 4 tiny."""
    return np.array([[1.0, 0, 0], [2.0, 0, 0], [0, 1.5, 0], [0, 0, 1.2], [0.1, 0.1, 0]])


def test_the_first_suggestion_is_the_item_with_the_largest_predictive_variance() -> None:
    out = next_items(axes_items(), np.ones(5), k=5)
    assert out["item"].tolist() == [1, 2, 3, 0, 4]  # |q|² = 4, 2.25, 1.44, 1, 0.02 under an identity prior
    np.testing.assert_allclose(out["variance"], [4.0, 2.25, 1.44, 1.0, 0.02])
    np.testing.assert_allclose(out["information"], 0.5 * np.log1p(out["variance"]))


def test_rating_an_item_moves_the_suggestions_to_other_directions() -> None:
    out = next_items(axes_items(), np.ones(5), rated=[1], k=4)
    assert 1 not in out["item"].tolist()  # never suggested again
    assert out["item"].tolist()[:2] == [2, 3]  # item 0 points where item 1 already told the model
    before = next_items(axes_items(), np.ones(5), k=5).set_index("item")["variance"]
    after = out.set_index("item")["variance"]
    assert after[0] < before[0] / 4 and after[2] == pytest.approx(before[2])  # only the rated direction shrinks


def test_items_few_people_know_are_asked_about_later() -> None:
    share = np.array([1.0, 0.01, 1.0, 1.0, 1.0])  # item 1: long, but almost nobody rated it
    out = next_items(axes_items(), share, k=5)
    assert out["item"].tolist()[0] == 2 and out["item"].tolist().index(1) > out["item"].tolist().index(0)


def test_candidates_and_k_are_respected() -> None:
    out = next_items(axes_items(), np.ones(5), rated=[2], among=[0, 2, 4], k=10)
    assert out["item"].tolist() == [0, 4]
    assert next_items(axes_items(), np.ones(5), k=0).empty


def test_the_posterior_matches_bayesian_linear_regression() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(20, 4))
    prior = taste_prior(rng.normal(size=(200, 4)) * [1.0, 2.0, 0.5, 1.0])
    sigma = posterior_covariance(q, [3, 7, 9], prior, noise_var=0.8)
    expected = np.linalg.inv(np.linalg.inv(prior) + q[[3, 7, 9]].T @ q[[3, 7, 9]] / 0.8)
    np.testing.assert_allclose(sigma, expected)
    assert np.all(np.linalg.eigvalsh(prior - sigma) > -1e-12)  # ratings never add uncertainty
    np.testing.assert_allclose(np.diag(prior), [1.0, 4.0, 0.25, 1.0], rtol=0.25)


def test_bad_shapes_say_what_was_expected() -> None:
    with pytest.raises(DataError, match="one share per item"):
        next_items(axes_items(), np.ones(3))
    with pytest.raises(DataError, match="at least two users"):
        taste_prior(np.ones((1, 3)))
