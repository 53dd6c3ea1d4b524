"""A lean full-covariance Gaussian mixture (EM) for the few-dimensional fits of adaptive gates.

Adaptive gates fit mixtures on one or two markers and a few thousand events, many times per
file. scikit-learn's ``GaussianMixture`` spends most of that time on per-call overhead
(input validation, array-API dispatch, a Cholesky solve and a Python loop per component and
iteration). This module runs the same algorithm with a handful of whole-array numpy
operations per iteration:

* the same initialisation: scikit-learn's ``kmeans_plusplus`` seeding (the same draws
  from the same ``RandomState``, one seeding per initialisation, in order; written here
  with the same array operations, so that gating does not import scikit-learn), each
  component starting at its seed point with covariance ``reg_covar * I`` and weight
  ``1 / n``; or, with ``means_init``, those means (then every initialisation is the same, so
  one is run);
* the same EM: E-step with log-sum-exp, M-step with responsibilities, ``reg_covar`` added to
  the diagonal, stopping when the mean log-likelihood changes by less than ``tol``; the best
  of ``n_init`` initialisations by final mean log-likelihood;
* the same fitted attributes (``weights_``, ``means_``, ``covariances_``,
  ``precisions_cholesky_``, ``converged_``, ``n_iter_``, ``lower_bound_``) and the same
  ``predict_proba`` / ``predict`` / ``score_samples``.

Results agree with ``sklearn.mixture.GaussianMixture(covariance_type="full",
init_params="k-means++")`` to rounding (the tests compare them). Per iteration the E-step
is one matrix product (all components' Cholesky-whitened coordinates at once), one square,
one sum, one ``exp`` and one ``log`` over the (events x components) array; the M-step is two
matrix products against the events and their precomputed second moments (the events are
centred on their mean first, so the moment form loses no precision).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_LOG_2PI = math.log(2.0 * math.pi)
_COLLAPSED = "mixture could not be fitted: a component collapsed onto too few distinct values"


def _random_state(seed: Any) -> np.random.RandomState:
    """The generator of the k-means++ seeding, as scikit-learn's ``check_random_state``: the
    global one (None), a new ``RandomState(seed)`` (an int) or the ``RandomState`` given."""
    if seed is None or seed is np.random:
        return np.random.mtrand._rand
    if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
        return np.random.RandomState(seed)
    if isinstance(seed, np.random.RandomState):
        return seed
    raise ValueError(f"{seed!r} cannot be used to seed a numpy.random.RandomState instance")


def _sq_distances(C: np.ndarray, X: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(C), len(X)) as ``||c||^2 - 2 c.x + ||x||^2``,
    clipped at 0 (float64, the arithmetic of scikit-learn's ``euclidean_distances``)."""
    d = -2 * (C @ X.T)
    d += np.einsum("ij,ij->i", C, C)[:, None]
    d += x_sq[None, :]
    np.maximum(d, 0, out=d)
    return d


def kmeans_plusplus_indices(X: np.ndarray, k: int, rs: np.random.RandomState) -> np.ndarray:
    """Rows of ``X`` (float64, n x d) chosen as ``k`` k-means++ seeds, drawing from ``rs``:
    the first uniformly, each next one the best of ``2 + int(log k)`` candidates drawn with
    probability proportional to the squared distance to the nearest seed so far (the one
    that leaves the least total squared distance). The same rows, from the same draws, as
    ``sklearn.cluster.kmeans_plusplus(X, k, random_state=rs)`` (unit sample weights)."""
    n = X.shape[0]
    if n < k:
        raise ValueError(f"n_samples={n} should be >= n_clusters={k}.")
    x_sq = np.einsum("ij,ij->i", X, X)
    weight = np.ones(n, dtype=X.dtype)
    trials = 2 + int(np.log(k))
    first = rs.choice(n, p=weight / weight.sum())
    indices = np.full(k, -1, dtype=int)
    indices[0] = first
    closest = _sq_distances(X[first][None, :], X, x_sq)
    potential = closest @ weight
    for c in range(1, k):
        draws = rs.uniform(size=trials) * potential
        candidates = np.searchsorted(np.cumsum(weight * closest), draws)
        np.clip(candidates, None, closest.size - 1, out=candidates)
        dist = _sq_distances(X[candidates], X, x_sq)
        np.minimum(closest, dist, out=dist)
        pots = dist @ weight.reshape(-1, 1)
        best = np.argmin(pots)
        potential = pots[best]
        closest = dist[best]
        indices[c] = candidates[best]
    return indices


def chi2_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of the chi-squared distribution with ``df`` degrees of freedom:
    the squared Mahalanobis radius holding a fraction ``q`` of a ``df``-dimensional
    Gaussian (``scipy.stats.chi2.ppf(q, df)``, from ``scipy.special`` alone)."""
    from scipy.special import gammaincinv

    q = float(q)
    if not df > 0 or not 0 <= q <= 1:
        return math.nan
    if q == 0:
        return 0.0
    if q == 1:
        return math.inf
    return float(2 * gammaincinv(np.asarray(df) / 2, np.asarray(q)))


class MixtureFitError(Exception):
    """The mixture could not be fitted (too few events, a collapsed component, no
    convergence); the message says which."""


class GaussianMixtureEM:
    """Full-covariance Gaussian mixture fitted by EM (see the module docstring).

    Parameters
    ----------
    n_components : number of components ``k``.
    n_init : initialisations; the one with the highest mean log-likelihood is kept.
    means_init : optional (k, d) starting means (then one initialisation is run).
    reg_covar : added to the diagonal of every covariance (keeps them positive definite).
    tol : stop when the mean log-likelihood changes by less than this.
    max_iter : EM iterations per initialisation; not converging raises `MixtureFitError`.
    random_state : seed of the k-means++ seeding (int), as in scikit-learn.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.7, 0.05, 1000)])
    >>> gm = GaussianMixtureEM(2, random_state=0).fit(x[:, None])
    >>> np.round(np.sort(gm.means_[:, 0]), 2).tolist(), np.round(np.sort(gm.weights_), 2).tolist()
    ([0.2, 0.7], [0.25, 0.75])
    """

    covariance_type = "full"

    def __init__(
        self,
        n_components: int,
        *,
        n_init: int = 1,
        means_init: Any = None,
        reg_covar: float = 1e-6,
        tol: float = 1e-3,
        max_iter: int = 100,
        random_state: int | None = None,
    ) -> None:
        self.n_components = n_components
        self.n_init = n_init
        self.means_init = means_init
        self.reg_covar = reg_covar
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    # --- fitting -----------------------------------------------------------------------

    def fit(self, X: Any) -> GaussianMixtureEM:
        """Fit on ``X`` (n_events, n_dims), finite values; returns self."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise MixtureFitError(
                f"mixture could not be fitted: expected an (n_events, n_dims) array, got "
                f"shape {X.shape}"
            )
        n, d = X.shape
        k = int(self.n_components)
        if n < max(k, 2):
            raise MixtureFitError(f"mixture could not be fitted: {n} events for {k} components")
        center = X.mean(axis=0)
        X0 = X - center
        X0T = np.ascontiguousarray(X0.T)
        # second moments x_i x_j (i <= j) of the centred events, for the M-step
        iu = np.triu_indices(d)
        Q = X0[:, iu[0]] * X0[:, iu[1]]
        reg = float(self.reg_covar)
        best: tuple | None = None
        if self.means_init is not None:
            starts = [np.asarray(self.means_init, dtype=np.float64).reshape(k, d) - center]
        else:
            rs = _random_state(self.random_state)
            starts = []
            for _ in range(max(int(self.n_init), 1)):
                idx = kmeans_plusplus_indices(X, k, rs)
                starts.append(X0[idx].copy())
        for means0 in starts:
            covs = np.broadcast_to(reg * np.eye(d), (k, d, d)).copy()
            weights = np.full(k, 1.0 / n)
            lower = -np.inf
            converged = False
            n_iter = 0
            while n_iter < int(self.max_iter):
                n_iter += 1
                prev = lower
                prec = _precision_cholesky(covs)
                resp, lower = _e_step(X0T, weights, means0, prec)
                weights, means0, covs = _m_step(X0, Q, resp, reg, iu)
                if abs(lower - prev) < float(self.tol):
                    converged = True
                    break
            if best is None or lower > best[0]:
                best = (lower, weights, means0, covs, converged, n_iter)
        assert best is not None
        lower, weights, means0, covs, converged, n_iter = best
        if not converged:
            raise MixtureFitError(
                f"mixture did not converge: the best of {len(starts)} start(s) still changed "
                f"after {int(self.max_iter)} iterations"
            )
        self.weights_ = weights
        self.means_ = means0 + center
        self.covariances_ = covs
        self.precisions_cholesky_ = _precision_cholesky(covs)
        self.converged_ = converged
        self.n_iter_ = n_iter
        self.lower_bound_ = float(lower)
        return self

    # --- use ---------------------------------------------------------------------------

    def _weighted_log_prob(self, X: Any) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        XT = np.ascontiguousarray(X.reshape(-1, self.means_.shape[1]).T)
        w = _log_gaussian(XT, self.means_, self.precisions_cholesky_)
        w += np.log(self.weights_)[:, None]
        return w  # (k, n)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Posterior probability of each component for each row of ``X`` (n, k)."""
        resp, _ = _normalise(self._weighted_log_prob(X))
        return resp.T

    def predict(self, X: Any) -> np.ndarray:
        """Most probable component of each row of ``X``."""
        return np.argmax(self._weighted_log_prob(X), axis=0)

    def score_samples(self, X: Any) -> np.ndarray:
        """Log density of the mixture at each row of ``X``."""
        _, norm = _normalise(self._weighted_log_prob(X))
        return norm


def _precision_cholesky(covs: np.ndarray) -> np.ndarray:
    """Upper-triangular ``P`` with ``P P^T`` the precision, per component (scikit-learn's
    ``precisions_cholesky_``); a covariance that is not positive definite raises."""
    d = covs.shape[1]
    if d == 1:
        v = covs[:, 0, 0]
        if not np.all(v > 0):
            raise MixtureFitError(_COLLAPSED + " (non-positive variance)")
        return (1.0 / np.sqrt(v)).reshape(-1, 1, 1)
    if d == 2:
        a, b, c = covs[:, 0, 0], covs[:, 0, 1], covs[:, 1, 1]
        if not np.all(a > 0):
            raise MixtureFitError(_COLLAPSED + " (non-positive variance)")
        l11 = np.sqrt(a)
        l21 = b / l11
        r = c - l21 * l21
        if not np.all(r > 0):
            raise MixtureFitError(_COLLAPSED + " (singular covariance)")
        l22 = np.sqrt(r)
        # inverse of L = [[l11, 0], [l21, l22]], transposed
        P = np.zeros_like(covs)
        P[:, 0, 0] = 1.0 / l11
        P[:, 0, 1] = -l21 / (l11 * l22)
        P[:, 1, 1] = 1.0 / l22
        return P
    try:
        L = np.linalg.cholesky(covs)
    except np.linalg.LinAlgError:
        raise MixtureFitError(_COLLAPSED + " (singular covariance)") from None
    return np.transpose(np.linalg.inv(L), (0, 2, 1))


def _log_gaussian(XT: np.ndarray, means: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """log N(x | mean_j, cov_j) for every component and event, (k, n).

    Events are columns (``XT`` is (d, n)) so that every reduction over components or
    dimensions runs over whole rows (numpy reduces a short trailing axis slowly)."""
    d, n = XT.shape
    k = len(means)
    # all components' whitened coordinates in one product: (k*d, d) @ (d, n)
    PT = np.transpose(prec, (0, 2, 1)).reshape(k * d, d)
    offset = np.einsum("kd,kde->ke", means, prec).reshape(k * d, 1)
    y = PT @ XT
    y -= offset
    y *= y
    maha = y.reshape(k, d, n).sum(axis=1) if d > 1 else y
    log_det = np.log(np.einsum("kii->ki", prec)).sum(axis=1)
    maha *= -0.5
    maha += (log_det - 0.5 * d * _LOG_2PI)[:, None]
    return maha


def _normalise(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities ``exp(w - logsumexp(w))`` over components (axis 0 of the (k, n)
    array ``w``) and the per-event log-sum-exp."""
    top = w.max(axis=0)
    top[~np.isfinite(top)] = 0.0
    with np.errstate(divide="ignore", under="ignore", invalid="ignore"):
        e = np.exp(w - top)
        s = e.sum(axis=0)
        e /= s
        return e, np.log(s) + top


def _e_step(XT, weights, means0, prec) -> tuple[np.ndarray, float]:
    w = _log_gaussian(XT, means0, prec)
    w += np.log(weights)[:, None]
    resp, norm = _normalise(w)
    return resp, float(norm.mean())


def _m_step(X0, Q, resp, reg: float, iu) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weights, means and covariances from the (k, n) responsibilities."""
    d = X0.shape[1]
    nk = resp.sum(axis=1) + 10.0 * np.finfo(np.float64).eps
    means = (resp @ X0) / nk[:, None]
    moments = (resp @ Q) / nk[:, None]  # E[x_i x_j] per component, i <= j
    covs = np.empty((len(nk), d, d))
    covs[:, iu[0], iu[1]] = moments - means[:, iu[0]] * means[:, iu[1]]
    covs[:, iu[1], iu[0]] = covs[:, iu[0], iu[1]]
    covs[:, np.arange(d), np.arange(d)] += reg
    return nk / nk.sum(), means, covs


__all__ = ["GaussianMixtureEM", "MixtureFitError", "chi2_quantile", "kmeans_plusplus_indices"]
