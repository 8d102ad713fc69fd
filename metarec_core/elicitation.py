"""Which items a new user should be asked to rate next: the expected information of a rating, from the fold-in posterior."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from metarec_core.errors import DataError


def taste_prior(user_vectors: np.ndarray, *, ridge: float = 1e-6) -> np.ndarray:
    """The covariance of users' taste vectors: the prior of a new user's taste before any rating.

    Parameters
    ----------
    user_vectors
        ``(n_users, d)`` taste vectors of a run's users.
    ridge
        Added to the diagonal (relative to the mean variance) so the matrix is invertible.

    Returns
    -------
    numpy.ndarray
        ``(d, d)`` positive definite covariance.
    """
    vectors = np.asarray(user_vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) < 2:
        raise DataError("the taste prior needs the vectors of at least two users, as an (n_users, d) array")
    cov = np.atleast_2d(np.cov(vectors, rowvar=False))
    scale = float(np.trace(cov)) / len(cov) or 1.0
    return cov + ridge * scale * np.eye(len(cov))


def posterior_covariance(item_vectors: np.ndarray, rated: Sequence[int], prior: np.ndarray, noise_var: float) -> np.ndarray:
    """The covariance of a user's taste after rating ``rated`` (Bayesian linear fold-in).

    With a rating modelled as ``r_i = q_i · t + b_i + ε``, ``t ~ N(μ, Σ0)`` and
    ``ε ~ N(0, σ²)``, the posterior covariance after rating the items ``S`` is
    ``Σ = (Σ0⁻¹ + Q_Sᵀ Q_S / σ²)⁻¹`` — it depends on which items were rated,
    not on the ratings given.
    """
    q = np.asarray(item_vectors, dtype=np.float64)[np.asarray(list(rated), dtype=np.int64)]
    precision = np.linalg.inv(prior) + q.T @ q / noise_var
    return np.linalg.inv(precision)


def next_items(
    item_vectors: np.ndarray,
    known_share: np.ndarray,
    rated: Sequence[int] = (),
    *,
    prior: np.ndarray | None = None,
    noise_var: float = 1.0,
    k: int = 6,
    among: Sequence[int] | None = None,
) -> pd.DataFrame:
    """The ``k`` unrated items whose rating is expected to tell the model the most about this user.

    A rating of item ``i`` tells ``½·log(1 + v_i/σ²)`` nats about the user's
    taste, where ``v_i = q_iᵀ Σ q_i`` is the predictive variance of the rating
    under the posterior ``Σ`` after the ratings so far
    (:func:`posterior_covariance`). The user can only rate items they know:
    the expected information is that times the chance they know the item,
    estimated by the share of users who rated it. Rating an item shrinks the
    variance along its direction, so the next suggestions point elsewhere in
    the taste space (a greedy, popularity-weighted D-optimal design).

    Parameters
    ----------
    item_vectors
        ``(n_items, d)`` item factors ``q_i``.
    known_share
        ``(n_items,)`` chance a user knows each item, in [0, 1] (e.g. raters / users).
    rated
        Item indices already rated (never suggested; they shape the posterior).
    prior
        ``(d, d)`` prior covariance of a new user's taste (:func:`taste_prior`);
        default: the identity.
    noise_var
        ``σ²``, the variance of a rating around the model's prediction.
    k
        How many suggestions.
    among
        Only these item indices are candidates (default: all).

    Returns
    -------
    pandas.DataFrame
        ``item`` (index), ``variance`` (``v_i``), ``known`` (the share),
        ``information`` (expected nats), best first; at most ``k`` rows.
    """
    q = np.asarray(item_vectors, dtype=np.float64)
    share = np.asarray(known_share, dtype=np.float64)
    if q.ndim != 2 or share.shape != (len(q),):
        raise DataError(f"next_items needs (n_items, d) item vectors and one share per item; got {q.shape} and {share.shape}")
    if noise_var <= 0:
        raise DataError(f"noise_var must be positive, not {noise_var}")
    prior = np.eye(q.shape[1]) if prior is None else np.asarray(prior, dtype=np.float64)
    sigma = posterior_covariance(q, rated, prior, noise_var)
    candidates = np.arange(len(q)) if among is None else np.unique(np.asarray(list(among), dtype=np.int64))
    candidates = np.setdiff1d(candidates, np.asarray(list(rated), dtype=np.int64))
    variance = np.einsum("nd,de,ne->n", q[candidates], sigma, q[candidates])
    information = np.clip(share[candidates], 0.0, 1.0) * 0.5 * np.log1p(np.maximum(variance, 0.0) / noise_var)
    order = np.lexsort((candidates, -information))[: max(0, int(k))]
    return pd.DataFrame({
        "item": candidates[order], "variance": variance[order], "known": share[candidates][order], "information": information[order],
    })
