"""Data-adaptive gates on synthetic 1-D and 2-D data with known answers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from immunoprofile.exceptions import GatingError, TemplateError
from immunoprofile.gating.adaptive import (
    ADAPTIVE_TYPES,
    BlobGate,
    DensityMinimumGate,
    HighLowGate,
    MixtureGate,
    QuantileGate,
    SingletGate,
    TailGate,
    ThresholdsGate,
    adaptive_from_dict,
    binned_density,
)
from immunoprofile.gating.gates import EllipseGate, PolygonGate, QuadrantGate, RangeGate


def bimodal(seed=0, n_neg=30_000, n_pos=70_000, shift=0.0):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal(0.2 + shift, 0.05, n_neg), rng.normal(0.7 + shift, 0.06, n_pos)]
    ).astype(np.float32)


def test_binned_density_integrates_to_one_and_peaks_at_mode():
    x = np.random.default_rng(1).normal(3.0, 0.5, 20_000)
    grid, dens, bw = binned_density(x)
    step = grid[1] - grid[0]
    assert dens.sum() * step == pytest.approx(1.0, abs=0.01)
    assert grid[np.argmax(dens)] == pytest.approx(3.0, abs=0.05)
    # Silverman's rule for a normal sample: 0.9 * 0.5 * n^-1/5
    assert bw == pytest.approx(0.9 * 0.5 * 20_000**-0.2, rel=0.05)


def test_density_minimum_finds_valley_and_follows_drift():
    for shift in (0.0, 0.15, -0.1):
        x = bimodal(shift=shift)
        g = DensityMinimumGate(("CD3",), side="+").fit(x)
        assert not g.fallback_
        # the valley of two equal-width normals at 0.2 and 0.7 (unequal weights) lies
        # near the midpoint, shifted towards the smaller peak
        assert 0.38 + shift < g.threshold_ < 0.48 + shift
        assert isinstance(g.gate_, RangeGate) and g.gate_.min == pytest.approx(g.threshold_)
        assert g.params_["peaks"][0] == pytest.approx(0.2 + shift, abs=0.03)
        pos = g.mask([x])
        assert abs(pos.sum() - 70_000) < 300


def test_density_minimum_side_minus_and_search_range():
    x = bimodal()
    g = DensityMinimumGate(("V",), side="-", search=(0.3, 0.6)).fit(x)
    assert g.gate_.max == pytest.approx(g.threshold_) and g.gate_.min is None
    # a search range with no valley in it gives the fallback (its middle by default)
    g2 = DensityMinimumGate(("V",), search=(0.6, 0.9)).fit(x)
    assert g2.fallback_ and "search range" in g2.reason_
    assert g2.threshold_ == pytest.approx(0.75)
    g3 = DensityMinimumGate(("V",), search=(0.6, 0.9), fallback=0.5).fit(x)
    assert g3.gate_.min == 0.5


def test_density_minimum_falls_back_on_one_peak_and_few_events():
    x = np.random.default_rng(2).normal(0.5, 0.1, 10_000)
    g = DensityMinimumGate(("CD3",), fallback=0.42).fit(x)
    assert g.fallback_ and "1 density peak" in g.reason_ and g.threshold_ == 0.42
    g = DensityMinimumGate(("CD3",), fallback=0.42).fit(x[:5])
    assert g.fallback_ and "too few" in g.reason_
    assert g.fitted_dict()["fallback"] is True


def test_density_minimum_ignores_a_ripple_on_one_peak():
    # one tight, large population whose kernel estimate dips by ~3 % between two humps
    # (two normals 2.2 sd apart), plus a small bright one: the cut belongs between the
    # large and the small population, not in the ripple (issue-4 CD38 on B cells, seed 20)
    rng = np.random.default_rng(0)
    x = np.concatenate(
        [rng.normal(0.43, 0.018, 45_000), rng.normal(0.47, 0.018, 45_000)]
        + [rng.normal(0.72, 0.03, 5_000)]
    ).astype(np.float32)
    kw = dict(search=(0.2, 0.75), min_prominence=0.005, valley="first", max_events=200_000)
    ripple = DensityMinimumGate(("CD38",), min_depth=0.0, **kw).fit(x)
    assert len(ripple.params_["peaks"]) == 3 and ripple.threshold_ < 0.47
    assert ripple.params_["valley_density"] > 0.9  # the cut lies on top of the main peak
    g = DensityMinimumGate(("CD38",), **kw).fit(x)
    assert not g.fallback_ and len(g.params_["peaks"]) == 2
    assert 0.53 < g.threshold_ < 0.63
    assert g.params_["valley_density"] < 0.01
    assert abs(int(g.mask([x]).sum()) - 5_000) < 50
    # a real, shallow valley (a small population on a large one's flank) is kept
    y = np.concatenate([rng.normal(0.3, 0.05, 20_000), rng.normal(0.5, 0.05, 4_000)])
    h = DensityMinimumGate(("FOXP3",), search=(0.3, 0.6), min_prominence=0.005).fit(y)
    assert not h.fallback_ and 0.4 < h.threshold_ < 0.5
    with pytest.raises(TemplateError, match="min_depth"):
        DensityMinimumGate(("CD38",), min_depth=1.0)


def test_subsampling_is_seeded_and_bounded():
    x = bimodal(n_neg=60_000, n_pos=140_000)
    a = DensityMinimumGate(("CD3",), max_events=5_000, random_state=3).fit(x)
    b = DensityMinimumGate(("CD3",), max_events=5_000, random_state=3).fit(x)
    c = DensityMinimumGate(("CD3",), max_events=5_000, random_state=4).fit(x)
    assert a.n_fit_ == 5_000
    assert a.threshold_ == b.threshold_
    assert a.threshold_ != c.threshold_
    assert abs(a.threshold_ - c.threshold_) < 0.05


def test_nonfinite_values_are_ignored():
    x = bimodal()
    x[:100] = np.nan
    x[100:200] = np.inf
    g = DensityMinimumGate(("CD3",)).fit(x)
    assert not g.fallback_ and g.n_fit_ == 50_000


def test_quantile_gate_matches_numpy_and_bounds():
    x = np.random.default_rng(5).uniform(0, 1, 40_000)
    g = QuantileGate(("CD4",), q=0.9, max_events=100_000).fit(x)
    assert g.threshold_ == pytest.approx(np.quantile(x, 0.9))
    assert g.mask([x]).mean() == pytest.approx(0.1, abs=0.001)
    g = QuantileGate(("CD4",), q=0.9, bounds=(0.0, 0.5), max_events=100_000).fit(x)
    assert g.fallback_ and g.threshold_ == 0.25


def test_tail_gate_cuts_where_density_falls_below_tol():
    rng = np.random.default_rng(6)
    x = np.concatenate([rng.normal(0.3, 0.05, 40_000), rng.uniform(0.6, 1.0, 1_000)])
    g = TailGate(("Viability",), side="+", tol=0.01).fit(x)
    # the normal's density falls to 1 % of its peak at mu + sqrt(2 ln 100) sd = 0.3 + 3.03 sd
    assert g.threshold_ == pytest.approx(0.3 + 3.03 * 0.05, abs=0.02)
    g_left = TailGate(("Viability",), side="-", tail="left", tol=0.01).fit(x)
    assert g_left.threshold_ == pytest.approx(0.3 - 3.03 * 0.05, abs=0.02)
    assert isinstance(g_left.gate_, RangeGate) and g_left.gate_.max is not None


def test_tail_gate_mirror_stops_at_a_broad_shoulder():
    """Live cells N(0.3, 0.05) with a broad shoulder of dim events (debris, dying cells:
    20 % of the events, uniform over 0.35-0.8) and a bright dead cloud: the plain walk
    stays above 1 % of the peak through the shoulder; with ``mirror=1.5`` the cut is
    where a peak 1.5 times as wide on its right half as on its left falls to 1 %:
    0.3 + 1.5 x 3.03 x 0.05 (the left half's RMS distance from the peak is the SD)."""
    rng = np.random.default_rng(16)
    x = np.concatenate(
        [
            rng.normal(0.3, 0.05, 40_000),
            rng.uniform(0.35, 0.8, 10_000),
            rng.normal(0.9, 0.04, 2_000),
        ]
    )
    plain = TailGate(("Viability",), side="-", tol=0.01, max_events=60_000).fit(x)
    mirrored = TailGate(("Viability",), side="-", tol=0.01, mirror=1.5, max_events=60_000).fit(x)
    assert plain.threshold_ > 0.75
    assert mirrored.threshold_ == pytest.approx(0.3 + 1.5 * 3.03 * 0.05, abs=0.015)
    assert mirrored.params_["walked"] == pytest.approx(plain.threshold_)
    assert mirrored.params_["half_width"] == pytest.approx(0.05, abs=0.004)
    assert mirrored.params_["shoulder"] is True
    # a clean peak ends before the mirrored limit: the walk's cut is kept
    clean = np.concatenate([rng.normal(0.3, 0.05, 40_000), rng.normal(0.9, 0.04, 2_000)])
    a = TailGate(("Viability",), side="-", tol=0.01).fit(clean)
    b = TailGate(("Viability",), side="-", tol=0.01, mirror=1.5).fit(clean)
    assert a.threshold_ == b.threshold_ and b.params_["shoulder"] is False
    with pytest.raises(TemplateError, match="mirror"):
        TailGate(("Viability",), mirror=0.5)


def test_tail_gate_walk_ends_before_the_next_population():
    """Live cells N(0.2, 0.05), dye-dim debris filling the valley above 1 % of the live
    peak (uniform over 0.35-0.8, under the dead cells too) and a dead cloud N(0.82, 0.04) of 4 % of the events: the
    density never falls to 1 % before the dead peak, so the plain walk used to end beyond
    it (every dead cell counted live). The walk now ends at the lowest density between
    the live peak and the dead cells' mode, which it records."""
    rng = np.random.default_rng(23)
    live = rng.normal(0.2, 0.05, 40_000)
    debris = rng.uniform(0.35, 0.8, 3_000)
    dead = rng.normal(0.82, 0.04, 1_800)
    x = np.concatenate([live, debris, dead])
    g = TailGate(("Viability",), side="-", tol=0.01, max_events=60_000).fit(x)
    # without the stop, the walk ends at 0.89, past nearly every dead cell
    assert g.params_["next_mode"] == pytest.approx(0.82, abs=0.04)
    # the valley lies in the debris, above every live cell and below all but a few
    # dead ones
    assert 0.4 < g.threshold_ < 0.76
    assert (dead < g.threshold_).mean() < 0.01
    assert (live < g.threshold_).mean() > 0.9999
    # one dead cell in a hundred: no mode of its own above 1 % of the peak, the walk
    # ends where the density falls to 1 % as before
    sparse = np.concatenate([rng.normal(0.2, 0.05, 40_000), rng.normal(0.82, 0.04, 400)])
    h = TailGate(("Viability",), side="-", tol=0.01).fit(sparse)
    assert "next_mode" not in h.params_
    assert h.threshold_ == pytest.approx(0.2 + 3.03 * 0.05, abs=0.02)


def test_tail_gate_mirror_allows_for_a_live_peak_in_two_modes():
    """A live peak split in two modes of nearly the same height (N(0, 0.05) and
    N(0.12, 0.05), as strong drift made on a simulated file): measured from the higher
    mode alone, the mirrored end (0 + 3.03 x 0.05) cut into the second mode (live
    -18 pp on that file; here 16 % of the second mode). The peak stays above half its
    height about 0.09 farther on the walked side than on the other (`params.plateau`),
    and the mirrored end moves out by as much: the second mode is kept whole, while the
    dead cells stay out."""
    rng = np.random.default_rng(31)
    first, second = rng.normal(0.0, 0.05, 34_000), rng.normal(0.12, 0.05, 26_000)
    dead = rng.normal(0.8, 0.04, 2_000)
    x = np.concatenate([first, second, dead])
    g = TailGate(("Viability",), side="-", tol=0.01, mirror=1.0, max_events=70_000).fit(x)
    assert 0.06 < g.params_["plateau"] < 0.14
    assert g.params_["shoulder"] is False
    assert (second < g.threshold_).mean() > 0.99
    assert (dead < g.threshold_).mean() < 0.01
    # one mode: no plateau, the mirrored end as before
    one = TailGate(("Viability",), side="-", tol=0.01, mirror=1.0).fit(first)
    assert one.params_["plateau"] < 0.01


def test_density_min_absent_positive_population_is_not_a_fallback():
    """CD14 in a lymphocyte gate that left every monocyte out: one peak, below the
    search range. With ``absent`` the positive population is taken as absent and the cut
    put where the peak tails off, but not below the search range (here 0.4 > the tail
    at 0.13 + 3.03 x 0.05); without it the gate falls back. A single peak inside the
    search range (which could be a unimodal marker) still falls back."""
    rng = np.random.default_rng(21)
    x = rng.normal(0.13, 0.05, 30_000)
    kw = {"side": "-", "search": (0.4, 0.9), "fallback": 0.5}
    g = DensityMinimumGate(("CD14",), absent=True, **kw).fit(x)
    assert not g.fallback_
    assert g.threshold_ == pytest.approx(0.4)
    assert g.params_["tail"] == pytest.approx(0.13 + 3.03 * 0.05, abs=0.02)
    assert "no positive population" in g.params_["control"]
    assert DensityMinimumGate(("CD14",), **kw).fit(x).fallback_
    narrow = DensityMinimumGate(("CD14",), absent=True, side="-", search=(0.15, 0.9)).fit(x)
    assert narrow.threshold_ == pytest.approx(narrow.params_["tail"])
    inside = DensityMinimumGate(("CD14",), absent=True, **kw).fit(x + 0.45)
    assert inside.fallback_ and inside.threshold_ == 0.5


def test_mixture_1d_threshold_is_posterior_crossing():
    # equal weights and variances: the posterior crosses 0.5 at the midpoint
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0.0, 1.0, 20_000), rng.normal(6.0, 1.0, 20_000)])
    g = MixtureGate(("CD19",), n_components=2).fit(x)
    assert g.threshold_ == pytest.approx(3.0, abs=0.1)
    assert g.params_["weights"] == pytest.approx([0.5, 0.5], abs=0.02)


def _bayes_point(m_lo, m_hi, sd, w_lo, w_hi, level=0.5):
    """Where w_hi N(m_hi, sd) / (w_lo N(m_lo, sd) + w_hi N(m_hi, sd)) equals ``level``
    (equal variances: the log posterior ratio is linear in x)."""
    log_odds = np.log(w_lo / w_hi) + np.log(level / (1.0 - level))
    return 0.5 * (m_lo + m_hi) + sd**2 * log_odds / (m_hi - m_lo)


def test_mixture_1d_cut_is_the_bayes_boundary_of_unequal_groups():
    # a large negative and a small positive group that overlap: the equal-posterior cut
    # lies 0.5 + 0.06^2 ln(3) / 0.3 = 0.4632 (not at the valley, not at the midpoint);
    # at posterior 0.4 the cut moves to where the odds are 2:3
    rng = np.random.default_rng(70)
    x = np.concatenate([rng.normal(0.35, 0.06, 150_000), rng.normal(0.65, 0.06, 50_000)])
    rng.shuffle(x)
    for level in (0.5, 0.4):
        g = MixtureGate(("CD45RA",), side="-", posterior=level).fit(x)
        assert not g.fallback_
        assert g.threshold_ == pytest.approx(
            _bayes_point(0.35, 0.65, 0.06, 0.75, 0.25, level), abs=0.004
        )
        assert g.to_dict()["posterior"] == level
    assert _bayes_point(0.35, 0.65, 0.06, 0.75, 0.25, 0.4) > 0.4632 + 0.004
    with pytest.raises(TemplateError, match="posterior"):
        MixtureGate(("CD45RA",), posterior=1.0)


def test_mixture_cut_is_unbiased_where_the_valley_is_not():
    # a wide lower peak (memory, 55 %) and a narrow upper one (naive): the density
    # minimum sits on the narrow peak's flank and keeps too few of the lower group; the
    # equal-posterior cut misclassifies fewer events and its count is closer
    rng = np.random.default_rng(71)
    low, high = rng.normal(0.42, 0.07, 110_000), rng.normal(0.68, 0.037, 90_000)
    x = rng.permutation(np.concatenate([low, high]))
    truth = 100.0 * len(low) / len(x)
    valley = DensityMinimumGate(("CD45RA",), side="-", search=(0.3, 0.75)).fit(x)
    bayes = MixtureGate(("CD45RA",), side="-").fit(x)
    err_valley = 100.0 * valley.mask([x]).mean() - truth
    err_bayes = 100.0 * bayes.mask([x]).mean() - truth
    assert err_valley < -0.6 and abs(err_bayes) < 0.5
    assert abs(err_valley) > 1.5 * abs(err_bayes)

    def wrong(t: float) -> int:
        return int(np.count_nonzero(low >= t) + np.count_nonzero(high < t))

    assert wrong(bayes.threshold_) < wrong(valley.threshold_)


def test_hilo_projection_cut_is_the_bayes_point_along_the_discriminant():
    # two isotropic groups: the discriminant is the line through the means, and along it
    # the projections are N(z, sd) with the groups' weights, so the cut is analytic
    rng = np.random.default_rng(72)
    sd, mu_r, mu_t = 0.05, np.array([0.40, 0.60]), np.array([0.62, 0.38])
    X = np.vstack([rng.normal(mu_r, sd, (92_000, 2)), rng.normal(mu_t, sd, (8_000, 2))])
    fb = {"type": "rectangle", "min": [0.5, None], "max": [None, 0.45]}
    for level in (0.5, 0.7):
        g = HighLowGate(
            ("CD25", "CD127"), fallback=fb, cut="projection", posterior=level, max_events=50_000
        ).fit(X)
        assert not g.fallback_ and g.params_["cut"] == "projection"
        w = np.asarray(g.params_["direction"])
        expected = _bayes_point(mu_r @ w, mu_t @ w, sd, 0.92, 0.08, level)
        assert g.params_["offset"] == pytest.approx(expected, abs=0.004)
    assert HighLowGate(("a", "b"), fallback=fb).fit(X).params_["cut"] == "groups"
    with pytest.raises(TemplateError, match="cut"):
        HighLowGate(("a", "b"), fallback=fb, cut="valley")


def test_mixture_2d_ellipse_of_selected_component():
    rng = np.random.default_rng(8)
    a = rng.multivariate_normal([0, 0], [[1, 0], [0, 1]], 20_000)
    b = rng.multivariate_normal([8, 8], [[1, 0.5], [0.5, 1]], 5_000)
    X = np.vstack([a, b])
    fb = {"type": "rectangle", "min": [0, 0], "max": [1, 1]}
    g = MixtureGate(("x", "y"), n_components=2, select="max:0", quantile=0.95, fallback=fb).fit(X)
    assert isinstance(g.gate_, EllipseGate)
    assert g.gate_.mean == pytest.approx((8, 8), abs=0.05)
    inside = g.mask([X[:, 0], X[:, 1]])
    assert inside[20_000:].mean() == pytest.approx(0.95, abs=0.01)
    assert inside[:20_000].sum() == 0
    g2 = MixtureGate(("x", "y"), select=[0.5, -0.5], fallback=fb).fit(X)
    assert g2.gate_.mean == pytest.approx((0, 0), abs=0.05)


def _lda_side(X, mu0, mu1, cov, w0, w1):
    """Analytic Bayes assignment of two Gaussians with a shared covariance: the side of
    the line w.x = c with w = C^-1 (mu1 - mu0), c = w.(mu0 + mu1)/2 + ln(w0/w1); returns
    (w.x - c) / |w| (signed distance; > 0: component 1), w and c."""
    w = np.linalg.solve(cov, mu1 - mu0)
    c = float(w @ (mu0 + mu1) / 2 + np.log(w0 / w1))
    return (X @ w - c) / np.linalg.norm(w), w, c


def test_mixture_2d_posterior_region_is_the_bayes_boundary():
    # two populations with one shared, correlated covariance and unequal weights: the
    # equal-posterior boundary is the analytic line w.x = c; the fitted polygon keeps the
    # side of the CD45RA-high component, and where it crosses the segment between the
    # means is known too
    rng = np.random.default_rng(73)
    cov = np.array([[0.0025, -0.0008], [-0.0008, 0.0020]])
    mu_mem, mu_naive = np.array([0.42, 0.70]), np.array([0.62, 0.57])
    X = np.vstack(
        [
            rng.multivariate_normal(mu_mem, cov, 14_000),
            rng.multivariate_normal(mu_naive, cov, 6_000),
        ]
    )
    fb = {"type": "rectangle", "min": [0.55, None], "max": [None, None]}
    g = MixtureGate(
        ("CD45RA", "CD25"), select="max:0", region="posterior", fallback=fb, max_events=20_000
    ).fit(X)
    assert not g.fallback_ and isinstance(g.gate_, PolygonGate)
    dist, w, c = _lda_side(X, mu_mem, mu_naive, cov, 0.7, 0.3)
    inside = g.mask([X[:, 0], X[:, 1]])
    # the fitted boundary sits a little off the true line (sampling noise of the fitted
    # covariances, ~0.005 along the means' segment at 20,000 events)
    clear = np.abs(dist) > 0.015
    assert np.array_equal(inside[clear], dist[clear] > 0)
    assert np.mean(inside != (dist > 0)) < 0.01
    s = (c - w @ mu_mem) / (w @ (mu_naive - mu_mem))
    cross = mu_mem + s * (mu_naive - mu_mem)
    assert g.threshold_ == pytest.approx(cross[0], abs=0.01)
    assert g.params_["crossing"] == pytest.approx(cross.tolist(), abs=0.01)
    assert g.params_["level"] == 0.5 and g.params_["init"] == "kmeans++"


def test_mixture_2d_posterior_polygon_matches_the_fitted_posterior_on_every_event():
    # unequal covariances (a curved boundary): the polygon reproduces the fitted
    # mixture's own equal-posterior assignment, evaluated on all events, to rounding
    rng = np.random.default_rng(74)
    X = np.vstack(
        [
            rng.multivariate_normal([0.45, 0.70], [[0.004, 0.0], [0.0, 0.002]], 7_000),
            rng.multivariate_normal([0.63, 0.56], [[0.0016, -0.0006], [-0.0006, 0.0022]], 3_000),
        ]
    )
    fb = {"type": "rectangle", "min": [0.55, None], "max": [None, None]}
    g = MixtureGate(
        ("CD45RA", "CD25"), select="max:0", region="posterior", init="marginal", fallback=fb
    ).fit(X)
    assert not g.fallback_ and g.params_["init"] == "marginal"
    from immunoprofile.gating.mixture import GaussianMixtureEM

    gm = GaussianMixtureEM(2)
    gm.weights_ = np.asarray(g.params_["weights"])
    gm.means_ = np.asarray(g.params_["means"])
    gm.precisions_cholesky_ = np.linalg.inv(
        np.linalg.cholesky(np.asarray(g.params_["covariances"]))
    ).transpose(0, 2, 1)
    exact = gm.predict_proba(X)[:, g.params_["component"]] >= 0.5
    inside = g.mask([X[:, 0], X[:, 1]])
    assert np.count_nonzero(inside != exact) <= 3
    assert inside.mean() == pytest.approx(g.params_["share"], abs=1e-3)
    # the naive-like component holds ~30 %; the equal-posterior region about as much
    assert g.params_["weight"] == pytest.approx(0.3, abs=0.02)
    assert inside.mean() == pytest.approx(0.3, abs=0.02)


def test_mixture_2d_marginal_start_and_bounds_fall_back():
    rng = np.random.default_rng(75)
    X = np.vstack(
        [
            rng.multivariate_normal([0.42, 0.70], np.diag([0.003, 0.002]), 4_000),
            rng.multivariate_normal([0.64, 0.56], np.diag([0.0016, 0.002]), 2_000),
        ]
    )
    fb = {"type": "rectangle", "min": [0.55, None], "max": [None, None]}
    spec = dict(select="max:0", region="posterior", fallback=fb)
    a = MixtureGate(("CD45RA", "CD25"), init="marginal", **spec).fit(X)
    b = MixtureGate(("CD45RA", "CD25"), n_init=5, **spec).fit(X)
    # the 1-D start lands where five k-means++ starts do, in a few EM iterations
    assert a.threshold_ == pytest.approx(b.threshold_, abs=0.002)
    assert a.params_["n_iter"] <= 10
    assert 0.5 < a.threshold_ < 0.56
    out = MixtureGate(("CD45RA", "CD25"), bounds=(0.6, 0.8), **spec).fit(X)
    assert out.fallback_ and "outside bounds" in out.reason_
    assert out.gate_.to_dict()["min"] == [0.55, None]


def test_singlet_gate_separates_doublets():
    rng = np.random.default_rng(9)
    h = rng.lognormal(np.log(60_000), 0.15, 40_000)
    a = 1.08 * h * np.exp(0.03 * rng.standard_normal(40_000))  # multiplicative jitter
    hd = rng.lognormal(np.log(70_000), 0.15, 4_000)
    ad = 1.9 * hd * np.exp(0.05 * rng.standard_normal(4_000))
    A, H = np.concatenate([a, ad]), np.concatenate([h, hd])
    g = SingletGate(("FSC-A", "FSC-H")).fit([A, H])
    assert isinstance(g.gate_, PolygonGate) and not g.fallback_
    assert g.ratio_ == pytest.approx(1.08, abs=0.005)
    assert g.scale_ == pytest.approx(0.03, rel=0.1)
    assert g.params_["ratio_high"] == pytest.approx(1.08 * np.exp(3.5 * 0.03), rel=0.02)
    m = g.mask([A, H])
    assert m[:40_000].mean() > 0.998
    assert m[40_000:].mean() < 0.001
    # the band is multiplicative: large and small cells are kept alike
    big = h > np.quantile(h, 0.9)
    assert m[:40_000][big].mean() > 0.998


def test_singlet_gate_bounds_give_fallback_ratio_band():
    rng = np.random.default_rng(10)
    h = rng.normal(60_000, 12_000, 5_000)
    g = SingletGate(bounds=(0.5, 2.0)).fit([3.0 * h, h])
    assert g.fallback_ and "ratio" in g.reason_
    # fallback band: area/height within (0.8, 1.3)
    pts_a = np.array([1.0e5, 1.5e5, 0.5e5])
    pts_h = np.array([1.0e5, 1.0e5, 1.0e5])
    assert g.mask([pts_a, pts_h]).tolist() == [True, False, False]


def scatter_mix(seed=11, gain=(1.0, 1.0)):
    """Log-normal scatter clouds like PBMC on a linear 0..1 scale."""
    rng = np.random.default_rng(seed)
    gx, gy = gain

    def cloud(fsc, ssc, sf, ss, n):
        z = rng.standard_normal((n, 2))
        return np.column_stack(
            [
                fsc * gx * np.exp(sf * z[:, 0]),
                ssc * gy * np.exp(ss * (0.45 * z[:, 0] + 0.89 * z[:, 1])),
            ]
        )

    return {
        "lym": cloud(0.23, 0.05, 0.11, 0.22, 50_000),
        "nk": cloud(0.25, 0.075, 0.12, 0.25, 8_000),
        "mono": cloud(0.38, 0.17, 0.13, 0.25, 12_000),
        "gran": cloud(0.44, 0.48, 0.11, 0.20, 3_000),
        "debris": cloud(0.05, 0.03, 0.55, 0.75, 6_000),
    }


def test_blob_gate_finds_lymphocytes_under_scatter_drift():
    fractions = []
    for gain in ((1.0, 1.0), (1.15, 0.85)):
        parts = scatter_mix(gain=gain)
        X = np.vstack(list(parts.values()))
        g = BlobGate(("FSC-A", "SSC-A")).fit(X)
        assert isinstance(g.gate_, PolygonGate) and not g.fallback_
        core = np.asarray(g.params_["means"])[g.params_["core"]]
        assert core[0] == pytest.approx(0.23 * gain[0], rel=0.05)
        assert core[1] == pytest.approx(0.05 * gain[1], rel=0.2)
        frac = {k: g.mask([v[:, 0], v[:, 1]]).mean() for k, v in parts.items()}
        # generous defaults: every lymphocyte, most of the larger NK cells, little else
        assert frac["lym"] > 0.999 and frac["nk"] > 0.95
        assert frac["mono"] < 0.06 and frac["gran"] == 0 and frac["debris"] < 0.03
        fractions.append(frac)
        strict = BlobGate(posterior=0.5, radius=4.0).fit(X)
        m = strict.mask([parts["mono"][:, 0], parts["mono"][:, 1]])
        assert m.mean() < 0.005
    # on log scatter a gain only shifts the clouds: the same events are gated
    for k in fractions[0]:
        assert fractions[0][k] == pytest.approx(fractions[1][k], abs=0.002)


def test_blob_gate_exclude_larger_leaves_out_the_monocyte_cloud():
    parts = scatter_mix(seed=12)
    X = np.vstack(list(parts.values()))
    frac = {}
    for ex in (None, 0.67):
        g = BlobGate(("FSC-A", "SSC-A"), exclude_larger=ex).fit(X)
        frac[ex] = {k: g.mask([v[:, 0], v[:, 1]]).mean() for k, v in parts.items()}
    # the generous contour reaches into the monocyte cloud (about a tenth of it here)
    assert frac[None]["mono"] > 0.08
    assert frac[0.67]["mono"] < 0.03
    # lymphocytes and most large (NK-like) cells stay; debris is not a larger cloud
    assert frac[0.67]["lym"] > 0.999 and frac[0.67]["nk"] > 0.95
    assert frac[0.67]["debris"] == pytest.approx(frac[None]["debris"], abs=0.002)
    # the left-out components are the monocyte and granulocyte clouds, recorded
    means = np.asarray(g.params_["means"])
    out = means[g.params_["excluded"]]
    assert len(out) == 2 and (out > means[g.params_["core"]]).all()
    assert out[:, 0].min() > 0.33 and out[:, 1].min() > 0.15  # monocytes (0.38, 0.17), granulocytes
    assert "excluded" not in BlobGate(("FSC-A", "SSC-A")).fit(X).params_


def test_blob_gate_exclude_larger_spares_a_bridging_component():
    # here the mixture puts a component between the lymphocytes and the monocytes (the
    # large cells' tail): it is not a larger-cell cloud, and no lymphocyte is cut
    parts = scatter_mix(seed=11)
    X = np.vstack(list(parts.values()))
    g = BlobGate(("FSC-A", "SSC-A"), exclude_larger=0.67).fit(X)
    generous = BlobGate(("FSC-A", "SSC-A")).fit(X)
    for v in parts.values():
        assert g.mask([v[:, 0], v[:, 1]]).mean() >= generous.mask([v[:, 0], v[:, 1]]).mean() - 0.01
    with pytest.raises(TemplateError, match="exclude_larger"):
        BlobGate(("FSC-A", "SSC-A"), exclude_larger=1.0)


def test_hilo_gate_treg_like():
    rng = np.random.default_rng(12)
    conv = rng.multivariate_normal([0.35, 0.65], [[0.004, 0.001], [0.001, 0.004]], 46_000)
    treg = rng.multivariate_normal([0.65, 0.35], [[0.003, 0], [0, 0.003]], 4_000)
    X = np.vstack([conv, treg])
    fb = {"type": "rectangle", "min": [0.5, None], "max": [None, 0.5]}
    g = HighLowGate(("CD25", "CD127"), signs=("+", "-"), fallback=fb).fit(X)
    assert not g.fallback_ and isinstance(g.gate_, PolygonGate)
    w = np.asarray(g.params_["direction"])
    assert w[0] > 0 and w[1] < 0
    m = g.mask([X[:, 0], X[:, 1]])
    assert m[46_000:].mean() > 0.99
    assert m[:46_000].mean() < 0.002
    assert g.params_["target_weight"] == pytest.approx(0.08, abs=0.01)


def test_hilo_gate_fallback_when_too_few_events():
    fb = {"type": "rectangle", "min": [0.5, None], "max": [None, 0.5]}
    g = HighLowGate(("CD25", "CD127"), fallback=fb).fit(np.zeros((10, 2)))
    assert g.fallback_
    assert g.mask([np.array([0.6, 0.4]), np.array([0.4, 0.4])]).tolist() == [True, False]


def test_thresholds_gate_quadrant_and_per_dim():
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.normal(0.2, 0.05, 30_000), rng.normal(0.7, 0.05, 20_000)])
    y = rng.permutation(
        np.concatenate([rng.normal(0.1, 0.05, 40_000), rng.normal(0.6, 0.05, 10_000)])
    )
    g = ThresholdsGate(
        ("CXCR3", "CCR6"),
        signs=("-", "+"),
        per_dim={"CCR6": {"type": "quantile", "q": 0.8}},
    ).fit([x, y])
    assert isinstance(g.gate_, QuadrantGate)
    assert 0.35 < g.thresholds_[0] < 0.55
    assert g.thresholds_[1] == pytest.approx(np.quantile(y, 0.8), abs=0.01)
    m = g.mask([x, y])
    assert m.sum() == np.count_nonzero((x < g.thresholds_[0]) & (y >= g.thresholds_[1]))
    assert g.params_["CCR6"]["q"] == 0.8
    d = g.to_dict()
    assert d["type"] == "thresholds" and d["signs"] == ["-", "+"]


def test_to_dict_roundtrip_and_clone_for_every_type():
    fb = {"type": "rectangle", "min": [0, 0], "max": [1, 1]}
    examples = [
        DensityMinimumGate(("a",), search=(0.1, 0.9)),
        QuantileGate(("a",), q=0.3),
        TailGate(("a",), tol=0.05),
        MixtureGate(("a",), n_components=3, n_upper=2),
        MixtureGate(("a", "b"), fallback=fb),
        MixtureGate(("a", "b"), select="max:0", region="posterior", init="marginal", fallback=fb),
        ThresholdsGate(("a", "b"), signs=("+", "-")),
        SingletGate(),
        BlobGate(),
        HighLowGate(("a", "b"), fallback=fb),
    ]
    assert {type(e) for e in examples} == set(ADAPTIVE_TYPES.values())
    for e in examples:
        d = e.to_dict()
        again = adaptive_from_dict(d)
        assert again.to_dict() == d
        assert e.clone(random_state=5).random_state == 5


@pytest.mark.parametrize(
    "spec, msg",
    [
        ({"type": "density_min", "dims": ["a", "b"]}, "takes 1 dimension"),
        ({"type": "density_min", "dims": ["a"], "side": "up"}, "'+' or '-'"),
        ({"type": "density_min", "dims": ["a"], "search": [0.9, 0.1]}, "low < high"),
        ({"type": "density_min", "dims": ["a"], "colour": "red"}, "no field(s) ['colour']"),
        ({"type": "quantile", "dims": ["a"], "q": 1.5}, "q must be in"),
        ({"type": "hilo", "dims": ["a", "b"]}, "fallback"),
        ({"type": "thresholds", "dims": ["a", "b"], "signs": ["+"]}, "one sign per"),
        (
            {"type": "thresholds", "dims": ["a"], "signs": ["+"], "method": {"type": "blob"}},
            "method for a",
        ),
        ({"type": "wobble", "dims": ["a"]}, "unknown adaptive gate type"),
        (
            {"type": "gmm", "dims": ["a", "b"], "region": "box", "fallback": {"type": "range"}},
            "region must be",
        ),
        ({"type": "gmm", "dims": ["a"], "region": "posterior"}, "two dimensions only"),
        ({"type": "gmm", "dims": ["a"], "init": "marginal"}, "two dimensions only"),
    ],
)
def test_bad_specs_raise_template_error(spec, msg):
    with pytest.raises(TemplateError, match=re.escape(msg)) as info:
        adaptive_from_dict(spec, where="populations[0] (x)")
    assert str(info.value).startswith("populations[0] (x)")


def test_unfitted_mask_and_wrong_columns_raise():
    g = DensityMinimumGate(("a",))
    with pytest.raises(GatingError, match="not fitted"):
        g.mask([np.zeros(3)])
    with pytest.raises(GatingError, match="expected 1 column"):
        g.fit([np.zeros(3), np.zeros(3)])


def test_fit_cache_shares_one_dimensional_cuts_between_sides():
    x = bimodal()
    cache: dict = {}
    pos = DensityMinimumGate(("CD3",), side="+").fit(x, cache=cache)
    neg = DensityMinimumGate(("CD3",), side="-").fit(x[:10], cache=cache)  # data not reused

    def n_fits(c: dict) -> int:  # shared fits have string keys; subsamples tuple keys
        return sum(isinstance(k, str) for k in c)

    assert n_fits(cache) == 1
    # the seeded subsample of the 100,000 events (max_events 50,000) was drawn once
    assert [k for k in cache if isinstance(k, tuple)] == [("subsample", len(x), 50_000, 0)]
    assert neg.threshold_ == pos.threshold_
    assert neg.gate_.max == pos.gate_.min and neg.gate_.min is None
    # other hyperparameters give another fit
    DensityMinimumGate(("CD3",), side="+", adjust=2.0).fit(x, cache=cache)
    assert n_fits(cache) == 2
    # a thresholds gate shares its per-dimension cuts through the same cache
    th = ThresholdsGate(("CD3", "CD3"), signs=("+", "-")).fit([x, x], cache=cache)
    assert th.thresholds_ == [pos.threshold_, pos.threshold_]
    assert n_fits(cache) == 2 and len(cache) == 3


def test_density_minimum_valley_at_the_edge_of_the_mode():
    # a minor dim peak (0.2), the majority (0.45) and a minor bright peak (0.75): 'first'
    # cuts below the majority, 'above_mode' at its upper edge, 'below_mode' at its lower
    rng = np.random.default_rng(3)
    x = np.concatenate(
        [rng.normal(0.2, 0.03, 1500), rng.normal(0.45, 0.04, 12000), rng.normal(0.75, 0.04, 1500)]
    ).astype(np.float32)
    kw = dict(search=(0.1, 0.9), min_prominence=0.01)
    first = DensityMinimumGate(("CD38",), valley="first", **kw).fit(x).threshold_
    above = DensityMinimumGate(("CD38",), valley="above_mode", **kw).fit(x).threshold_
    below = DensityMinimumGate(("CD38",), valley="below_mode", **kw).fit(x).threshold_
    assert 0.27 < first < 0.36 and 0.27 < below < 0.36
    assert 0.56 < above < 0.66
    # no valley above the mode inside the search range: fall back, flagged
    g = DensityMinimumGate(("CD38",), valley="above_mode", search=(0.1, 0.5), fallback=0.4)
    g.fit(x)
    assert g.fallback_ and g.threshold_ == 0.4
    with pytest.raises(TemplateError, match="above_mode"):
        DensityMinimumGate(("CD38",), valley="middle")


def test_density_minimum_no_valley_beyond_the_mode_without_search_falls_back():
    # the larger peak is the upper one: there is no valley above it; with no search range
    # the gate must fall back (and say why), not fail while describing the range
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(0.2, 0.04, 2000), rng.normal(0.7, 0.04, 8000)])
    g = DensityMinimumGate(("CD38",), valley="above_mode", fallback=0.45).fit(x.astype(np.float32))
    assert g.fallback_ and g.threshold_ == 0.45
    assert "no valley above the highest peak on CD38" in g.reason_
    below = DensityMinimumGate(("CD38",), valley="below_mode").fit(x.astype(np.float32))
    assert not below.fallback_ and 0.3 < below.threshold_ < 0.6


def test_density_min_absent_ignores_ripples_but_not_a_second_population():
    """CD14 in the singlets of a clean lymphocyte gate: the lymphocytes' peak, a small
    group pushed below it by compensation (a peak of its own at 1 % of the main height,
    as on simulated drift-2 files) and 30 events at 0.33: two peaks, no valley inside the
    search range. The peak below the negative one says nothing of a positive population,
    so the cut goes where the negative peak ends (at the search range's 0.4), no
    fallback. A second population of 20 % at 0.3, whose valley with the first lies at
    ~0.22, outside the search range, is no ripple: fallback."""
    rng = np.random.default_rng(4)
    neg = rng.normal(0.13, 0.05, 75_000)
    x = np.concatenate([neg, rng.normal(-0.05, 0.03, 400), rng.normal(0.33, 0.01, 30)])
    kw = {"side": "-", "search": (0.4, 0.9), "fallback": 0.5, "min_prominence": 0.0002}
    g = DensityMinimumGate(("CD14",), absent=True, **kw).fit(x)
    assert not g.fallback_
    assert g.threshold_ == pytest.approx(0.4)
    assert "no positive population" in g.params_["control"]
    two = np.concatenate([neg, rng.normal(0.3, 0.05, 18_750)])
    assert DensityMinimumGate(("CD14",), absent=True, **kw).fit(two).fallback_
