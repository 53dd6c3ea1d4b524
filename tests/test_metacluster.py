"""Consensus metaclustering: recovers separated groups, CDF area, choice of k, checks."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.clustering.metacluster import (
    ConsensusMetaclustering,
    consensus_cdf_area,
    proportion_ambiguous,
)
from immunoprofile.exceptions import ClusteringError


def groups(k: int = 4, per: int = 10, d: int = 5, sd: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.uniform(0, 1, (k, d)) * 3
    lab = np.repeat(np.arange(k), per)
    return centers[lab] + rng.normal(0, sd, (k * per, d)), lab


def test_recovers_groups_exactly_and_labels_by_first_appearance():
    X, lab = groups()
    perm = np.random.default_rng(1).permutation(len(lab))
    mc = ConsensusMetaclustering(4, n_resamples=30, seed=0).fit(X[perm])
    got = mc.labels_
    # same partition as the truth
    for g in range(4):
        assert np.unique(got[lab[perm] == g]).size == 1
    assert np.unique(got).size == 4
    # first point is metacluster 0, labels appear in increasing order
    first = [got.tolist().index(v) for v in range(4)]
    assert first == sorted(first) and got[0] == 0
    assert mc.consensus_.shape == (40, 40)
    np.testing.assert_allclose(np.diag(mc.consensus_), 1.0)
    np.testing.assert_allclose(mc.consensus_, mc.consensus_.T)


def test_consensus_is_one_within_and_zero_between_separated_groups():
    X, lab = groups(k=3)
    mc = ConsensusMetaclustering(3, n_resamples=25, seed=0).fit(X)
    same = lab[:, None] == lab[None, :]
    np.testing.assert_allclose(mc.consensus_[same], 1.0)
    np.testing.assert_allclose(mc.consensus_[~same], 0.0)
    assert mc.pac_[3] == 0.0


def test_cdf_area_hand_worked():
    # off-diagonal values 0, 0.5, 1 -> CDF(0)=1/3, CDF(0.5)=2/3, CDF(1)=1
    # A = (0.5 - 0) * 2/3 + (1 - 0.5) * 1 = 5/6
    c = np.array([[1, 0.0, 0.5], [0.0, 1, 1.0], [0.5, 1.0, 1]])
    assert consensus_cdf_area(c) == pytest.approx(5 / 6)
    # perfectly clean consensus (only 0 and 1): A = CDF(1) * 1 = 1
    c2 = np.array([[1, 0.0, 1.0], [0.0, 1, 0.0], [1.0, 0.0, 1]])
    assert consensus_cdf_area(c2) == pytest.approx(1.0)
    # PAC counts values strictly inside (0.1, 0.9): one of three pairs
    assert proportion_ambiguous(c) == pytest.approx(1 / 3)


def test_choice_of_k_from_a_range_on_clear_structure():
    X, _ = groups(k=5, per=12, sd=0.01, seed=3)
    mc = ConsensusMetaclustering((2, 9), n_resamples=40, seed=0).fit(X)
    assert set(mc.cdf_area_) == set(range(2, 10))
    assert set(mc.delta_area_) == set(range(3, 10))
    assert mc.n_clusters_ == 5
    assert np.unique(mc.labels_).size == 5


def test_deterministic_by_seed():
    X, _ = groups(k=6, sd=0.4, seed=5)
    a = ConsensusMetaclustering(6, n_resamples=20, seed=7).fit(X)
    b = ConsensusMetaclustering(6, n_resamples=20, seed=7).fit(X)
    np.testing.assert_array_equal(a.consensus_, b.consensus_)
    np.testing.assert_array_equal(a.labels_, b.labels_)


def test_errors():
    X, _ = groups()
    with pytest.raises(ClusteringError, match="only 40 nodes"):
        ConsensusMetaclustering(50).fit(X)
    with pytest.raises(ClusteringError, match=">= 1"):
        ConsensusMetaclustering(0).fit(X)
    with pytest.raises(ClusteringError, match="linkage"):
        ConsensusMetaclustering(3, linkage="nope").fit(X)
    with pytest.raises(ClusteringError, match="NaN"):
        ConsensusMetaclustering(3).fit(np.full((5, 2), np.nan))


def test_zero_weight_points_join_their_nearest_group():
    X, lab = groups(k=3, per=8, seed=2)
    # a point half-way between groups 0 and 1, slightly nearer group 1, with weight 0
    mid = X[lab == 0].mean(0) * 0.45 + X[lab == 1].mean(0) * 0.55
    Xa = np.vstack([X, mid])
    w = np.r_[np.ones(len(X)), 0.0]
    mc = ConsensusMetaclustering(3, n_resamples=20, seed=0).fit(Xa, sample_weight=w)
    assert not mc.used_[-1] and mc.used_[:-1].all()
    assert mc.labels_[-1] == mc.labels_[np.flatnonzero(lab == 1)[0]]
    assert np.unique(mc.labels_).size == 3
    with pytest.raises(ClusteringError, match="weights"):
        ConsensusMetaclustering(3).fit(Xa, sample_weight=w[:-2])
