"""Projections: 2-D maps of user and item embeddings (PCA at once, UMAP on request), cached per run."""
from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from metarec_core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: Where a run directory keeps its cached coordinates.
PROJECTION_DIR = "projections"
METHODS = ("pca", "umap")
METRICS = ("cosine", "euclidean")


def _check_vectors(vectors: np.ndarray, name: str = "vectors") -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float64)
    if array.ndim != 2 or len(array) == 0:
        raise DataError(f"{name}: expected a non-empty (n, d) matrix of embeddings, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise DataError(f"{name}: embeddings contain NaN or infinite values; the run's weights are broken — retrain it")
    return array


@dataclass(frozen=True)
class PCAProjection:
    """A fitted 2-D principal-component projection.

    Attributes
    ----------
    mean
        ``(d,)`` mean of the fitted vectors.
    components
        ``(2, d)`` unit principal axes (sign fixed so the largest loading is positive).
    explained
        Share of the variance along each axis.
    """

    mean: np.ndarray
    components: np.ndarray
    explained: tuple[float, float]

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """``(n, 2)`` coordinates of ``vectors`` (also new ones, e.g. an adapting user)."""
        array = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
        return (array - self.mean) @ self.components.T


def fit_pca(vectors: np.ndarray) -> PCAProjection:
    """Fit a 2-D PCA by SVD (deterministic; no scikit-learn import needed).

    Parameters
    ----------
    vectors
        ``(n, d)`` embeddings; with ``d == 1`` the second axis is zero.

    Returns
    -------
    PCAProjection
    """
    array = _check_vectors(vectors)
    mean = array.mean(axis=0)
    centred = array - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    components = np.zeros((2, array.shape[1]))
    n_axes = min(2, vt.shape[0])
    components[:n_axes] = vt[:n_axes]
    for axis in range(n_axes):
        if components[axis, np.argmax(np.abs(components[axis]))] < 0:
            components[axis] *= -1
    variance = singular**2
    total = float(variance.sum()) or 1.0
    explained = tuple(float(variance[a] / total) if a < len(variance) else 0.0 for a in range(2))
    return PCAProjection(mean=mean, components=components, explained=explained)  # type: ignore[arg-type]


def view_window(
    points: np.ndarray,
    path: np.ndarray,
    *,
    nearest: int = 20,
    include: np.ndarray | None = None,
    margin: float = 0.08,
    min_share: float = 0.15,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis ranges of a map zoomed on a path that still hold the path's whole length and the items nearest to it.

    The box holds every point of ``path``, the ``nearest`` rows of ``points``
    closest to the path (each item's distance to its nearest path point) and
    any ``include`` points, widened by ``margin`` of its size on every side
    and to at least ``min_share`` of the whole map's extent on each axis. A
    path far outside the items (a new user's taste on a small dataset) still
    shows items beside it.

    Parameters
    ----------
    points
        ``(n, 2)`` item coordinates.
    path
        ``(m, 2)`` positions of the moving point, ``m >= 1``.
    nearest
        How many items nearest to the path the view holds.
    include
        ``(k, 2)`` further points that must be in view (e.g. outlined items).
    margin
        Padding, as a share of the box's size.
    min_share
        Smallest view, as a share of the extent of points and path together.

    Returns
    -------
    ((x0, x1), (y0, y1))
        The ranges, ``x0 < x1`` and ``y0 < y1``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    trail = np.asarray(path, dtype=np.float64).reshape(-1, 2)
    if not len(trail):
        raise DataError("view_window needs a path of at least one point")
    held = [trail]
    if len(pts) and nearest > 0:
        gaps = np.sqrt(((pts[:, None, :] - trail[None, :, :]) ** 2).sum(-1)).min(axis=1)
        held.append(pts[np.argsort(gaps, kind="stable")[: int(nearest)]])
    if include is not None and len(include):
        held.append(np.asarray(include, dtype=np.float64).reshape(-1, 2))
    box = np.concatenate(held)
    everything = np.concatenate([pts, trail]) if len(pts) else trail
    full = np.ptp(everything, axis=0)
    full = np.where(full > 0, full, 1.0)
    lo, hi = box.min(axis=0), box.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * (1 + 2 * margin)
    half = np.maximum(half, full * min_share / 2)
    return (float(centre[0] - half[0]), float(centre[0] + half[0])), (float(centre[1] - half[1]), float(centre[1] + half[1]))


def _frame(coordinates: np.ndarray, ids: Sequence[str] | None) -> pd.DataFrame:
    ids = [str(i) for i in ids] if ids is not None else [str(i) for i in range(len(coordinates))]
    if len(ids) != len(coordinates):
        raise DataError(f"got {len(ids)} IDs for {len(coordinates)} embeddings; pass one ID per row")
    return pd.DataFrame({"id": ids, "x": coordinates[:, 0].astype(np.float32), "y": coordinates[:, 1].astype(np.float32)})


def pca_frame(vectors: np.ndarray, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """PCA coordinates as a frame with columns ``id``, ``x``, ``y`` (row order kept)."""
    return _frame(fit_pca(vectors).transform(vectors), ids)


def distance_matrix(vectors: np.ndarray, *, metric: str = "cosine") -> np.ndarray:
    """Pairwise distances (scikit-learn's ``pairwise_distances``), non-negative with a zero diagonal."""
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got '{metric}'")
    from sklearn.metrics import pairwise_distances

    distances = pairwise_distances(_check_vectors(vectors), metric=metric)
    np.maximum(distances, 0.0, out=distances)
    np.fill_diagonal(distances, 0.0)
    return distances


def umap_frame(
    vectors: np.ndarray,
    ids: Sequence[str] | None = None,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    metric: str = "cosine",
    seed: int = 0,
) -> pd.DataFrame:
    """UMAP coordinates (``id``, ``x``, ``y``) from a precomputed distance matrix.

    A precomputed matrix is about 3x faster than letting UMAP compute
    distances on sets of a few thousand points. The first call in a process
    compiles numba code (about 20 s); later calls take seconds.

    Parameters
    ----------
    vectors
        ``(n, d)`` embeddings, ``n >= 4``.
    n_neighbors, min_dist
        UMAP's settings (``n_neighbors`` is capped at ``n - 1``).
    metric
        ``cosine`` or ``euclidean``.
    seed
        UMAP's ``random_state`` (results are reproducible, single-threaded).
    """
    array = _check_vectors(vectors)
    if len(array) < 4:
        raise DataError(f"UMAP needs at least 4 points, got {len(array)}; use PCA for tiny sets")
    import umap  # noqa: PLC0415 - heavy (numba); imported only on request

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(int(n_neighbors), len(array) - 1)),
        min_dist=float(min_dist),
        metric="precomputed",
        random_state=int(seed),
        n_jobs=1,
    )
    distances = distance_matrix(array, metric=metric)
    with warnings.catch_warnings():  # "inverse_transform will be unavailable" is expected with precomputed
        warnings.filterwarnings("ignore", message=".*precomputed metric.*", category=UserWarning)
        coordinates = reducer.fit_transform(distances)
    return _frame(np.asarray(coordinates, dtype=np.float64), ids)


def nearest_neighbours(
    vectors: np.ndarray,
    query: np.ndarray,
    *,
    k: int = 10,
    metric: str = "cosine",
    exclude: Sequence[int] = (),
) -> pd.DataFrame:
    """The ``k`` rows of ``vectors`` nearest to ``query`` in the original embedding space.

    Parameters
    ----------
    vectors
        ``(n, d)`` embeddings.
    query
        ``(d,)`` vector (e.g. one item's embedding or an adapted user's taste vector).
    k
        How many neighbours.
    metric
        ``cosine`` or ``euclidean``.
    exclude
        Row indices never returned (e.g. the query item itself).

    Returns
    -------
    pandas.DataFrame
        ``index`` (row of ``vectors``) and ``distance``, nearest first.
    """
    if metric not in METRICS:
        raise ConfigError(f"metric must be one of {', '.join(METRICS)}, got '{metric}'")
    array = _check_vectors(vectors)
    q = np.asarray(query, dtype=np.float64).reshape(-1)
    if q.shape[0] != array.shape[1]:
        raise DataError(f"query vector has {q.shape[0]} values but the embeddings have {array.shape[1]}")
    if metric == "cosine":
        norms = np.linalg.norm(array, axis=1) * (np.linalg.norm(q) or 1.0)
        distances = 1.0 - (array @ q) / np.where(norms > 0, norms, 1.0)
    else:
        distances = np.linalg.norm(array - q, axis=1)
    distances[list(exclude)] = np.inf
    k = max(0, min(int(k), int(np.isfinite(distances).sum())))
    order = np.argsort(distances, kind="stable")[:k]
    return pd.DataFrame({"index": order.astype(np.int64), "distance": distances[order]})


def projection_key(vectors: np.ndarray, method: str, params: dict) -> str:
    """A short hash of the vectors and the settings: a cache key that changes when either does."""
    h = hashlib.sha256()
    array = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    h.update(str(array.shape).encode())
    h.update(array.tobytes())
    h.update(json.dumps({"method": method, **params}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _check_name(name: str, method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"projection method must be one of {', '.join(METHODS)}, got '{method}'")
    if not name.isidentifier():
        raise ConfigError(f"projection name must be a plain word, got '{name}'")


def cache_path(run_dir: str | Path, name: str, method: str, vectors: np.ndarray, **params: object) -> Path:
    """Where :func:`cached_projection` keeps the coordinates of ``vectors`` by ``method`` with ``params``.

    Parameters
    ----------
    run_dir
        The run directory.
    name
        What is projected (``items``, ``users``): a plain word.
    method
        ``pca`` or ``umap``.
    vectors
        The embeddings (part of the file name's key, with ``params``).
    **params
        The projection's settings, as given to :func:`cached_projection`.

    Returns
    -------
    pathlib.Path
        ``run_dir/projections/<name>-<method>-<key>.parquet`` (it may not exist yet).

    Raises
    ------
    ConfigError
        If ``method`` is unknown or ``name`` is not a plain word.
    """
    _check_name(name, method)
    return Path(run_dir) / PROJECTION_DIR / f"{name}-{method}-{projection_key(vectors, method, params)}.parquet"


def cached_projection(
    run_dir: str | Path | None,
    name: str,
    method: str,
    vectors: np.ndarray,
    ids: Sequence[str] | None = None,
    **params: object,
) -> pd.DataFrame:
    """Coordinates of ``vectors`` by ``method``, read from or written to ``run_dir/projections``.

    Parameters
    ----------
    run_dir
        The run directory (``None``: compute without caching).
    name
        What is projected (``items``, ``users``); part of the file name, must be a
        plain word.
    method
        ``pca`` or ``umap``.
    vectors, ids
        Embeddings and their IDs.
    **params
        Settings passed to :func:`umap_frame` (part of the cache key).

    Returns
    -------
    pandas.DataFrame
        ``id``, ``x``, ``y``.
    """
    _check_name(name, method)
    path = None if run_dir is None else cache_path(run_dir, name, method, vectors, **params)
    if path is not None and path.exists():
        try:
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:  # a half-written cache file is recomputed
            logger.warning("cannot read cached projection %s (%s); recomputing", path, exc)
    frame = pca_frame(vectors, ids) if method == "pca" else umap_frame(vectors, ids, **params)  # type: ignore[arg-type]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        frame.to_parquet(partial, index=False)
        partial.replace(path)
    return frame
