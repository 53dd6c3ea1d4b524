"""Consensus hierarchical metaclustering of SOM nodes.

FlowSOM groups its map nodes into metaclusters with consensus clustering (Monti et al.,
2003, Machine Learning 52:91; as used by Van Gassen et al., 2015): the nodes are
resampled many times (90 % of them each time), each resample is clustered
hierarchically, and the consensus matrix records, for every pair of nodes, the fraction
of resamples containing both in which they fell in the same cluster. The final
metaclusters are a hierarchical clustering of ``1 - consensus``, cut at ``k``.

The number of metaclusters is either fixed or chosen from a range by the area under the
empirical CDF of the consensus values, ``A(K)`` (Monti et al., section 3.3). ``A(K)`` is
1 when every pair of nodes is grouped always or never (a stable partition) and drops
when ``K`` splits a group at random; the largest ``K`` whose area is within ``tol`` of
the best area is taken. The relative gains ``Delta(K) = (A(K) - A(K-1)) / A(K-1)`` and
the proportion of ambiguous pairs (PAC) are kept as diagnostics.

All of this works on the node codes only (typically 100 x markers), so it costs
milliseconds, whatever the number of events.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from immunoprofile.exceptions import ClusteringError

__all__ = ["ConsensusMetaclustering", "consensus_cdf_area"]

_LINKAGES = ("average", "complete", "single", "ward", "weighted", "centroid", "median")


def consensus_cdf_area(consensus: np.ndarray) -> float:
    """Area under the empirical CDF of the off-diagonal consensus values (Monti's A(K)).

    ``A = sum_i (x_i - x_{i-1}) * CDF(x_i)`` over the sorted distinct values ``x_i``.
    """
    iu = np.triu_indices(consensus.shape[0], k=1)
    vals = np.sort(consensus[iu])
    if vals.size == 0:
        return 0.0
    x, idx = np.unique(vals, return_index=True)
    # CDF(x_i) = fraction of values <= x_i
    last = np.append(idx[1:], vals.size)
    cdf = last / vals.size
    return float(np.sum(np.diff(x) * cdf[1:]))


def proportion_ambiguous(consensus: np.ndarray, lo: float = 0.1, hi: float = 0.9) -> float:
    """Proportion of ambiguously clustered pairs, ``CDF(hi) - CDF(lo)``.

    Senbabaoglu et al. (2014, Sci. Rep. 4:6207): a low PAC means node pairs are almost
    always or almost never grouped together, i.e. a stable ``k``.
    """
    iu = np.triu_indices(consensus.shape[0], k=1)
    vals = consensus[iu]
    if vals.size == 0:
        return 0.0
    return float(np.mean((vals > lo) & (vals < hi)))


def _relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """Labels 0..k-1 in order of first appearance (deterministic naming of clusters)."""
    _, first = np.unique(labels, return_index=True)
    order = np.argsort(first)
    mapping = np.empty(labels.max() + 1, dtype=np.int32)
    mapping[np.unique(labels)[order]] = np.arange(order.size, dtype=np.int32)
    return mapping[labels]


class ConsensusMetaclustering:
    """Group SOM nodes (or any small set of points) into metaclusters by consensus.

    Parameters
    ----------
    n_clusters : the number of metaclusters, or a (min, max) range or sequence of
        candidates to choose from by the consensus-CDF criterion.
    n_resamples : resampling rounds (FlowSOM/ConsensusClusterPlus default: 100).
    resample_fraction : fraction of points drawn, without replacement, per round (0.9).
    linkage : linkage of the hierarchical clustering inside each round.
    final_linkage : linkage of the final clustering of ``1 - consensus``.
    tol : how far below the best CDF area a larger ``k`` may fall and still be chosen.
    seed : seeds the resampling.

    Attributes
    ----------
    labels_ : int32 (n_points,), metacluster of each point, 0..k-1 in order of first
        appearance.
    n_clusters_ : the chosen (or fixed) k.
    consensus_ : float (n_points, n_points) consensus matrix for ``n_clusters_``.
    cdf_area_ : dict k -> A(k) for every candidate.
    delta_area_ : dict k -> relative gain Delta(k) (candidates after the first).
    pac_ : dict k -> proportion of ambiguously clustered pairs (diagnostic).
    used_ : bool (n_points,), the points that took part in the consensus.

    Examples
    --------
    >>> pts = np.repeat(np.eye(3), 5, axis=0) + np.linspace(0, 0.01, 15)[:, None]
    >>> ConsensusMetaclustering(3, n_resamples=20).fit(pts).labels_.tolist()
    [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    """

    def __init__(
        self,
        n_clusters: int | tuple[int, int] | Sequence[int] = 20,
        n_resamples: int = 100,
        resample_fraction: float = 0.9,
        linkage: str = "average",
        final_linkage: str = "average",
        tol: float = 0.005,
        seed: int = 0,
    ) -> None:
        self.n_clusters = n_clusters
        self.n_resamples = n_resamples
        self.resample_fraction = resample_fraction
        self.linkage = linkage
        self.final_linkage = final_linkage
        self.tol = tol
        self.seed = seed

    def _candidates(self, n_points: int) -> list[int]:
        nc = self.n_clusters
        if isinstance(nc, int | np.integer):
            ks = [int(nc)]
        elif isinstance(nc, tuple) and len(nc) == 2:
            ks = list(range(int(nc[0]), int(nc[1]) + 1))
        else:
            ks = sorted({int(k) for k in nc})
        if not ks or min(ks) < 1:
            raise ClusteringError(f"metaclustering: n_clusters must be >= 1, got {nc!r}")
        if max(ks) > n_points:
            raise ClusteringError(
                f"metaclustering: asked for up to {max(ks)} metaclusters but there are only "
                f"{n_points} nodes to group"
            )
        return ks

    def fit(
        self, X: np.ndarray, y: None = None, sample_weight: np.ndarray | None = None
    ) -> ConsensusMetaclustering:
        """Cluster the rows of ``X`` (e.g. SOM codes, n_nodes x n_markers).

        ``sample_weight`` (e.g. the SOM's per-node event counts): points of weight 0,
        such as map nodes that won no event and sit between populations, take no part in
        the consensus and join the metacluster of their nearest weighted point.
        """
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[0] < 2:
            raise ClusteringError(f"metaclustering needs a 2-D array of >= 2 points, got {X.shape}")
        if not np.isfinite(X).all():
            raise ClusteringError("metaclustering: node codes hold NaN or infinite values")
        if sample_weight is not None:
            w = np.asarray(sample_weight, dtype=np.float64).ravel()
            if w.shape[0] != X.shape[0]:
                raise ClusteringError(
                    f"metaclustering: {w.shape[0]} weights for {X.shape[0]} points"
                )
            keep = w > 0
            if keep.sum() < X.shape[0] and keep.sum() >= max(self._candidates(X.shape[0])):
                self._fit(X[keep])
                sub_labels, sub_cons = self.labels_, self.consensus_
                near = np.flatnonzero(keep)[
                    ((X[:, None, :] - X[keep][None, :, :]) ** 2).sum(-1).argmin(1)
                ]
                pos = np.cumsum(keep) - 1
                self.labels_ = _relabel_by_first_appearance(sub_labels[pos[near]].astype(np.int64))
                self.consensus_ = sub_cons[np.ix_(pos[near], pos[near])]
                self.used_ = keep
                return self
        self._fit(X)
        self.used_ = np.ones(X.shape[0], dtype=bool)
        return self

    def _fit(self, X: np.ndarray) -> None:
        # imported here: only the process that metaclusters needs it (a quarter of a
        # second to import), not every worker that imports `cluster`'s module
        from scipy.cluster.hierarchy import fcluster, linkage
        from scipy.spatial.distance import pdist

        for name in ("linkage", "final_linkage"):
            if getattr(self, name) not in _LINKAGES:
                raise ClusteringError(f"metaclustering: {name} must be one of {_LINKAGES}")
        if not 0 < self.resample_fraction <= 1:
            raise ClusteringError(
                f"metaclustering: resample_fraction must be in (0, 1], got {self.resample_fraction}"
            )
        n = X.shape[0]
        ks = self._candidates(n)
        rng = np.random.default_rng(self.seed)
        m = max(2, int(round(self.resample_fraction * n)))
        together = {k: np.zeros((n, n), dtype=np.float64) for k in ks}
        sampled = np.zeros((n, n), dtype=np.float64)
        for _ in range(int(self.n_resamples)):
            idx = np.sort(rng.choice(n, size=m, replace=False))
            Z = linkage(X[idx], method=self.linkage, metric="euclidean")
            sampled[np.ix_(idx, idx)] += 1.0
            for k in ks:
                lab = fcluster(Z, t=min(k, m), criterion="maxclust")
                onehot = (lab[:, None] == np.unique(lab)[None, :]).astype(np.float64)
                together[k][np.ix_(idx, idx)] += onehot @ onehot.T
        with np.errstate(invalid="ignore", divide="ignore"):
            cons = {k: np.where(sampled > 0, together[k] / sampled, 0.0) for k in ks}
        for c in cons.values():
            np.fill_diagonal(c, 1.0)
        self.cdf_area_ = {k: consensus_cdf_area(cons[k]) for k in ks}
        self.pac_ = {k: proportion_ambiguous(cons[k]) for k in ks}
        self.delta_area_ = {}
        for a, b in zip(ks[:-1], ks[1:]):
            prev = self.cdf_area_[a]
            self.delta_area_[b] = (self.cdf_area_[b] - prev) / prev if prev > 0 else np.inf
        best = max(self.cdf_area_.values())
        chosen = max(k for k in ks if self.cdf_area_[k] >= best - self.tol)
        self.n_clusters_ = chosen
        self.consensus_ = cons[chosen]
        dist = 1.0 - self.consensus_
        np.fill_diagonal(dist, 0.0)
        iu = np.triu_indices(n, k=1)
        # pdist order == upper triangle, row by row
        Z = linkage(dist[iu], method=self.final_linkage)
        labels = fcluster(Z, t=chosen, criterion="maxclust")
        if np.unique(labels).size < chosen:
            # ties in the consensus can leave fewer clusters; split on the codes instead
            Z = linkage(pdist(X), method=self.final_linkage)
            labels = fcluster(Z, t=chosen, criterion="maxclust")
        self.labels_ = _relabel_by_first_appearance(labels.astype(np.int64))

    def fit_predict(
        self, X: np.ndarray, y: None = None, sample_weight: np.ndarray | None = None
    ) -> np.ndarray:
        """Fit and return the metacluster of every point."""
        return self.fit(X, sample_weight=sample_weight).labels_
