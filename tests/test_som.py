"""SOM: shape contract, determinism, recovery of well-separated blobs, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.clustering.som import SOM, grid_coordinates
from immunoprofile.exceptions import ClusteringError


def blobs(n: int = 6000, k: int = 5, d: int = 6, sd: float = 0.04, seed: int = 1):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1, (k, d))
    lab = rng.integers(0, k, n)
    X = (centers[lab] + rng.normal(0, sd, (n, d))).astype(np.float32)
    return X, lab, centers


def test_grid_coordinates_row_major():
    g = grid_coordinates((2, 3))
    assert g.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_fit_predict_contract_and_dtypes():
    X, _, _ = blobs()
    som = SOM(grid=(4, 5), n_epochs=5, seed=0).fit(X)
    assert som.cluster_centers_.shape == (20, 6)
    assert som.cluster_centers_.dtype == np.float32
    pred = som.predict(X)
    assert pred.dtype == np.int32 and pred.shape == (X.shape[0],)
    assert pred.min() >= 0 and pred.max() < 20
    np.testing.assert_array_equal(pred, som.labels_)
    assert som.counts_.sum() == X.shape[0]
    np.testing.assert_array_equal(som.counts_, np.bincount(pred, minlength=20))


def test_predict_is_nearest_code_by_brute_force():
    X, _, _ = blobs(n=2000)
    som = SOM(grid=(3, 3), n_epochs=4, seed=0, chunk_size=333).fit(X)
    d = ((X[:, None, :].astype(np.float64) - som.cluster_centers_[None]) ** 2).sum(-1)
    brute = d.argmin(1)
    pred = som.predict(X)
    # ties aside (float32 rounding), every event goes to its nearest node
    same = pred == brute
    assert same.mean() > 0.999
    np.testing.assert_allclose(d[np.arange(len(X)), pred], d.min(1), rtol=1e-4, atol=1e-6)


def test_nodes_are_pure_on_separated_blobs():
    X, lab, centers = blobs()
    som = SOM(grid=(5, 5), seed=0).fit(X)
    pred = som.predict(X)
    # every node holds events of a single blob
    for node in np.unique(pred):
        assert np.unique(lab[pred == node]).size == 1
    # every blob centre has a node code close to it
    dist = np.linalg.norm(centers[:, None, :] - som.cluster_centers_[None], axis=2).min(1)
    assert dist.max() < 0.1


def test_deterministic_for_a_seed_and_random_init_differs():
    X, _, _ = blobs()
    a = SOM(grid=(4, 4), init="random", seed=3).fit(X).cluster_centers_
    b = SOM(grid=(4, 4), init="random", seed=3).fit(X).cluster_centers_
    c = SOM(grid=(4, 4), init="random", seed=4).fit(X).cluster_centers_
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_threads_give_the_same_map_bit_for_bit():
    # 7 chunks of 1,000 events (the last shorter), coarse epochs on 3,000 of them
    X, _, _ = blobs(n=6_500, d=7)
    kw = {"grid": (4, 4), "n_epochs": 6, "seed": 3, "chunk_size": 1_000, "coarse_events": 3_000}
    one = SOM(**kw).fit(X)
    for threads in (2, 3, 8):
        som = SOM(n_threads=threads, **kw).fit(X)
        assert som.cluster_centers_.tobytes() == one.cluster_centers_.tobytes()
        assert np.array_equal(som.labels_, one.labels_)
        assert np.array_equal(som.counts_, one.counts_)
        assert som.quantization_error_ == one.quantization_error_
        assert np.array_equal(som.predict(X[::-1]), one.predict(X[::-1]))
    assert one.counts_.sum() == 6_500 and (one.counts_ > 0).sum() >= 5


def test_threads_sharing_a_chunk_s_blocks_give_the_same_map(monkeypatch):
    """Blocks of 300 events: each 1,000-event chunk is 4 blocks, shared out between the
    threads and computed ahead of the sums of the chunk before."""
    from immunoprofile.clustering import som as som_module

    monkeypatch.setattr(som_module, "_BLOCK_VALUES", 16 * 300)
    X, _, _ = blobs(n=6_500, d=7)
    kw = {"grid": (4, 4), "n_epochs": 6, "seed": 5, "chunk_size": 1_000, "coarse_events": 2_500}
    one = SOM(**kw).fit(X)
    calls: list[int] = []
    block = som_module._bmu_block

    def counted(Xc, s, *a):  # noqa: ANN001, ANN002
        calls.append(s)
        return block(Xc, s, *a)

    monkeypatch.setattr(som_module, "_bmu_block", counted)
    for threads in (2, 3):
        calls.clear()
        som = SOM(n_threads=threads, **kw).fit(X)
        assert som.cluster_centers_.tobytes() == one.cluster_centers_.tobytes()
        assert np.array_equal(som.labels_, one.labels_)
        assert som.quantization_error_ == one.quantization_error_
        # 3 coarse epochs on 2,500 events (3 chunks: 10 blocks), 3 fine ones and the
        # final assignment on 6,500 (7 chunks: 26 blocks), all as blocks of the chunks
        assert len(calls) == 3 * 10 + 4 * 26 and sorted(set(calls)) == [0, 300, 600, 900]
        assert np.array_equal(som.predict(X), one.predict(X))
    assert one.counts_.sum() == 6_500


def test_units_computed_in_blocks_are_those_of_all_distances_at_once(monkeypatch):
    from immunoprofile.clustering import som as som_module

    X, _, _ = blobs(n=6_500, d=7)
    one = SOM(grid=(4, 4), seed=3).fit(X)
    d = ((X[:, None, :] - one.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
    assert (one.predict(X) == d.argmin(axis=1)).mean() > 0.999  # ties aside
    monkeypatch.setattr(som_module, "_BLOCK_VALUES", 16 * 300)  # blocks of 300 events
    blocked = SOM(grid=(4, 4), seed=3).fit(X)
    assert blocked.cluster_centers_.tobytes() == one.cluster_centers_.tobytes()
    assert np.array_equal(blocked.labels_, one.labels_)
    assert np.array_equal(blocked.predict(X), one.predict(X))


def test_topology_neighbouring_nodes_are_closer_than_far_nodes():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (20000, 2)).astype(np.float32)
    som = SOM(grid=(6, 6), seed=0).fit(X)
    W = som.cluster_centers_.reshape(6, 6, 2)
    near = np.linalg.norm(W[:, 1:] - W[:, :-1], axis=2).mean()
    far = np.linalg.norm(W[:, 5] - W[:, 0], axis=1).mean()
    assert far > 3 * near
    # a uniform square is covered: codes span most of it
    assert som.cluster_centers_.min(0).max() < 0.15 and som.cluster_centers_.max(0).min() > 0.85


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros(5, dtype=np.float32), "2-D"),
        (np.zeros((0, 3), dtype=np.float32), "no events"),
        (np.array([[0.0, np.nan], [1, 1]], dtype=np.float32), "NaN"),
    ],
)
def test_bad_input_raises_clustering_error(X, match):
    with pytest.raises(ClusteringError, match=match):
        SOM(grid=(2, 2)).fit(X)


def test_bad_parameters_and_unfitted_and_width_mismatch():
    X, _, _ = blobs(n=500)
    with pytest.raises(ClusteringError, match="grid"):
        SOM(grid=(0, 3)).fit(X)
    with pytest.raises(ClusteringError, match="init"):
        SOM(init="kmeans").fit(X)
    with pytest.raises(ClusteringError, match="not fitted"):
        SOM().predict(X)
    with pytest.raises(ClusteringError, match="n_threads"):
        SOM(n_threads=0).fit(X)
    som = SOM(grid=(2, 2), n_epochs=2).fit(X)
    with pytest.raises(ClusteringError, match="6 markers"):
        som.predict(X[:, :3])
