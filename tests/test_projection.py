"""Projections: PCA keeps the geometry, neighbours are exact, UMAP separates clusters, caching works."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_core import projection
from metarec_core.errors import ConfigError, DataError


def plane_points(n: int = 50, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Points on a random 2-D plane inside R^d, and their plane coordinates."""
    rng = np.random.default_rng(seed)
    plane = np.linalg.qr(rng.normal(size=(d, 2)))[0].T  # (2, d) orthonormal
    coords = rng.normal(size=(n, 2)) * [3.0, 1.0]
    return coords @ plane + 5.0, coords


def test_pca_preserves_distances_of_planar_data() -> None:
    vectors, coords = plane_points()
    fitted = projection.fit_pca(vectors)
    xy = fitted.transform(vectors)
    original = np.linalg.norm(coords[:, None] - coords[None], axis=-1)
    projected = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    np.testing.assert_allclose(projected, original, atol=1e-8)
    assert fitted.explained[0] > fitted.explained[1] > 0.0
    assert sum(fitted.explained) == pytest.approx(1.0)


def test_pca_frame_keeps_ids_and_new_points_follow_the_same_map() -> None:
    vectors, _ = plane_points()
    frame = projection.pca_frame(vectors, [f"i{k}" for k in range(len(vectors))])
    assert list(frame.columns) == ["id", "x", "y"] and frame["id"].iloc[3] == "i3"
    fitted = projection.fit_pca(vectors)
    np.testing.assert_allclose(fitted.transform(vectors[7]), frame[["x", "y"]].to_numpy()[[7]], atol=1e-5)
    with pytest.raises(DataError, match="one ID per row"):
        projection.pca_frame(vectors, ["a"])
    with pytest.raises(DataError, match="NaN"):
        projection.pca_frame(np.full((3, 2), np.nan))


def test_nearest_neighbours_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(40, 5))
    query = vectors[4]
    near = projection.nearest_neighbours(vectors, query, k=5, metric="euclidean", exclude=[4])
    brute = np.argsort(np.linalg.norm(vectors - query, axis=1))[1:6]
    assert list(near["index"]) == list(brute)
    assert near["distance"].is_monotonic_increasing
    cos = projection.nearest_neighbours(vectors, 3.0 * vectors[9], k=1)
    assert cos["index"].iloc[0] == 9 and cos["distance"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ConfigError):
        projection.nearest_neighbours(vectors, query, metric="manhattan")


def test_cached_projection_reads_the_file_and_invalidates_on_new_vectors(tmp_path, monkeypatch) -> None:
    vectors, _ = plane_points()
    first = projection.cached_projection(tmp_path, "items", "pca", vectors)
    files = list((tmp_path / projection.PROJECTION_DIR).glob("items-pca-*.parquet"))
    assert len(files) == 1

    def fail(*args, **kwargs):
        raise AssertionError("recomputed instead of reading the cache")

    monkeypatch.setattr(projection, "pca_frame", fail)
    pd.testing.assert_frame_equal(projection.cached_projection(tmp_path, "items", "pca", vectors), first)
    monkeypatch.undo()
    projection.cached_projection(tmp_path, "items", "pca", vectors * 2)
    assert len(list((tmp_path / projection.PROJECTION_DIR).glob("items-pca-*.parquet"))) == 2
    with pytest.raises(ConfigError):
        projection.cached_projection(tmp_path, "../items", "pca", vectors)
    with pytest.raises(ConfigError):
        projection.cached_projection(tmp_path, "items", "tsne", vectors)


def test_cache_path_is_where_the_cached_projection_is_kept(tmp_path) -> None:
    vectors, _ = plane_points()
    path = projection.cache_path(tmp_path, "users", "pca", vectors)
    assert not path.exists()
    projection.cached_projection(tmp_path, "users", "pca", vectors)
    assert path.is_file() and path.parent == tmp_path / projection.PROJECTION_DIR
    assert projection.cache_path(tmp_path, "users", "umap", vectors, n_neighbors=15) != projection.cache_path(
        tmp_path, "users", "umap", vectors, n_neighbors=5
    )  # the settings are part of the key
    with pytest.raises(ConfigError):
        projection.cache_path(tmp_path, "users", "tsne", vectors)


@pytest.mark.slow
def test_umap_separates_clusters_from_a_precomputed_matrix(tmp_path) -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 8)) * 10
    labels = np.repeat(np.arange(3), 25)
    vectors = centres[labels] + rng.normal(size=(75, 8))
    frame = projection.cached_projection(tmp_path, "items", "umap", vectors, n_neighbors=10, metric="euclidean")
    xy = frame[["x", "y"]].to_numpy()
    means = np.stack([xy[labels == c].mean(axis=0) for c in range(3)])
    within = max(np.linalg.norm(xy[labels == c] - means[c], axis=1).mean() for c in range(3))
    between = min(np.linalg.norm(means[a] - means[b]) for a in range(3) for b in range(a + 1, 3))
    assert between > 3 * within


def test_the_zoomed_view_holds_the_whole_path_and_the_items_nearest_to_it() -> None:
    rng = np.random.default_rng(1)
    items = rng.uniform(-0.6, 0.8, size=(60, 2))
    path = np.array([[-1.2, 0.1], [-1.05, 0.05], [-1.01, 0.0]])  # outside the items' range, as on a small upload
    (x0, x1), (y0, y1) = projection.view_window(items, path, nearest=8)
    inside = (items[:, 0] >= x0) & (items[:, 0] <= x1) & (items[:, 1] >= y0) & (items[:, 1] <= y1)
    assert np.all((path[:, 0] > x0) & (path[:, 0] < x1) & (path[:, 1] > y0) & (path[:, 1] < y1))
    nearest = np.argsort(np.linalg.norm(items[:, None] - path[None], axis=-1).min(1))[:8]
    assert inside[nearest].all() and inside.sum() >= 8
    assert inside.sum() < len(items)  # still a zoom, not the whole map


def test_the_view_is_never_a_point_and_holds_extra_points() -> None:
    items = np.array([[0.0, 0.0], [10.0, 10.0]])
    (x0, x1), (y0, y1) = projection.view_window(items, np.array([[5.0, 5.0]]), nearest=0)
    assert x1 - x0 == pytest.approx(1.5) and y1 - y0 == pytest.approx(1.5)  # min_share of the 10-wide map
    (x0, x1), _ = projection.view_window(items, np.array([[5.0, 5.0]]), nearest=0, include=np.array([[9.0, 5.0]]))
    assert x0 < 5.0 < 9.0 < x1
    with pytest.raises(DataError):
        projection.view_window(items, np.zeros((0, 2)))
