"""The EM kernel of mixture gates against scikit-learn's GaussianMixture (same algorithm,
same seeding, so the same fit to rounding) and on hand-made failure cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

from immunoprofile.gating.mixture import (
    GaussianMixtureEM,
    MixtureFitError,
    chi2_quantile,
    kmeans_plusplus_indices,
)


def _blobs(seed: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if d == 1:
        parts = [
            rng.normal(0.2, 0.05, 6000),
            rng.normal(0.45, 0.08, 1500),
            rng.normal(0.7, 0.04, 2500),
        ]
        return np.concatenate(parts)[:, None]
    cov = [[0.004, 0.0015], [0.0015, 0.002]]
    parts = [
        rng.multivariate_normal([0.2, 0.3], cov, 5000),
        rng.multivariate_normal([0.6, 0.25], np.diag([0.003, 0.001]), 2000),
        rng.multivariate_normal([0.55, 0.7], np.diag([0.002, 0.004]), 1000),
    ]
    return np.vstack(parts)


def _sklearn(X, k, seed, n_init=1, means_init=None):
    return GaussianMixture(
        n_components=k,
        covariance_type="full",
        random_state=seed,
        n_init=n_init,
        init_params="k-means++",
        means_init=means_init,
        reg_covar=1e-5,
        max_iter=200,
    ).fit(X)


@pytest.mark.parametrize(
    ("d", "k", "seed", "n_init"),
    [(1, 2, 0, 1), (1, 3, 5, 3), (2, 3, 1, 1), (2, 4, 7, 2), (2, 6, 3, 1)],
)
def test_same_fit_as_scikit_learn(d, k, seed, n_init):
    X = _blobs(seed, d)
    ref = _sklearn(X, k, seed, n_init)
    ours = GaussianMixtureEM(k, n_init=n_init, reg_covar=1e-5, max_iter=200, random_state=seed).fit(
        X
    )
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.means_, ref.means_, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, atol=1e-10)
    np.testing.assert_allclose(ours.weights_, ref.weights_, atol=1e-9)
    np.testing.assert_allclose(ours.precisions_cholesky_, ref.precisions_cholesky_, rtol=1e-7)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, abs=1e-10)
    grid = X[::7] + 0.01
    np.testing.assert_allclose(ours.predict_proba(grid), ref.predict_proba(grid), atol=1e-8)
    np.testing.assert_allclose(ours.score_samples(grid), ref.score_samples(grid), atol=1e-8)
    assert np.array_equal(ours.predict(X), ref.predict(X))


def test_means_init_matches_scikit_learn_and_runs_once():
    X = _blobs(2, 1)
    start = np.array([[0.15], [0.75]])
    ref = _sklearn(X, 2, 0, n_init=3, means_init=start)
    ours = GaussianMixtureEM(2, n_init=3, means_init=start, reg_covar=1e-5, max_iter=200).fit(X)
    np.testing.assert_allclose(ours.means_, ref.means_, atol=1e-9)
    np.testing.assert_allclose(ours.weights_, ref.weights_, atol=1e-9)


def test_recovers_known_components():
    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(-1.0, 0.2, 30_000), rng.normal(2.0, 0.5, 10_000)])[:, None]
    gm = GaussianMixtureEM(2, random_state=0).fit(X)
    order = np.argsort(gm.means_[:, 0])
    np.testing.assert_allclose(gm.means_[order, 0], [-1.0, 2.0], atol=0.02)
    np.testing.assert_allclose(np.sqrt(gm.covariances_[order, 0, 0]), [0.2, 0.5], atol=0.01)
    np.testing.assert_allclose(gm.weights_[order], [0.75, 0.25], atol=0.01)
    post = gm.predict_proba(np.array([[-1.0], [0.5], [2.0]]))
    np.testing.assert_allclose(post.sum(axis=1), 1.0)
    assert post[0, order[0]] > 0.999 and post[2, order[1]] > 0.999


def test_failures_raise_mixture_fit_error():
    with pytest.raises(MixtureFitError, match="3 events for 4 components"):
        GaussianMixtureEM(4).fit(np.zeros((3, 2)))
    with pytest.raises(MixtureFitError, match="expected an"):
        GaussianMixtureEM(2).fit(np.zeros(10))
    # two distinct values, three components: one component collapses onto a single value
    # (its variance falls to reg_covar = 0 and its precision is undefined)
    X = np.repeat([[0.0], [1.0]], 50, axis=0)
    with pytest.raises(MixtureFitError, match="collapsed"):
        GaussianMixtureEM(3, reg_covar=0.0, random_state=0).fit(X)
    rng = np.random.default_rng(0)
    with pytest.raises(MixtureFitError, match="did not converge"):
        GaussianMixtureEM(3, max_iter=2, tol=0.0, random_state=0).fit(rng.normal(size=(500, 2)))


@pytest.mark.parametrize(
    ("d", "k", "seed"), [(1, 2, 0), (1, 3, 4), (2, 3, 1), (2, 6, 3), (3, 9, 8)]
)
def test_kmeans_plusplus_seeds_are_scikit_learns(d, k, seed):
    from sklearn.cluster import kmeans_plusplus

    X = _blobs(seed, min(d, 2))
    if d == 3:
        X = np.column_stack([X, X[:, 0] * X[:, 1]])
    mine, theirs = np.random.RandomState(seed), np.random.RandomState(seed)
    for _ in range(3):  # successive seedings from one generator, as with n_init
        _, idx = kmeans_plusplus(X, k, random_state=theirs)
        assert np.array_equal(kmeans_plusplus_indices(X, k, mine), idx)


def test_chi2_quantile_is_scipys():
    from scipy.stats import chi2

    for df in (1, 2, 3, 5):
        for q in (0.0, 1e-9, 0.5, 0.9, 0.95, 0.99, 0.999999, 1.0):
            assert chi2_quantile(q, df) == float(chi2.ppf(q, df=df))
    assert np.isnan(chi2_quantile(1.5, 2))
