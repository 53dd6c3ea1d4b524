import numpy as np
import pytest

from immunoprofile.exceptions import TemplateError
from immunoprofile.gating.gates import (
    BooleanGate,
    EllipseGate,
    PolygonGate,
    QuadrantGate,
    RangeGate,
    RectangleGate,
    gate_from_dict,
)


def test_range_includes_min_excludes_max():
    x = np.array([0.0, 1.0, 1.5, 2.0, 3.0], dtype=np.float32)
    assert RangeGate(("a",), 1.0, 2.0).mask([x]).tolist() == [False, True, True, False, False]
    assert RangeGate(("a",), min=1.5).mask([x]).tolist() == [False, False, True, True, True]
    assert RangeGate(("a",), max=1.5).mask([x]).tolist() == [True, True, False, False, False]


def test_rectangle_open_side():
    x = np.array([0.0, 5.0, 5.0, 10.0])
    y = np.array([0.0, 0.0, 9.0, 9.0])
    g = RectangleGate(("x", "y"), (1.0, None), (None, 5.0))
    assert g.mask([x, y]).tolist() == [False, True, False, False]


def test_quadrant_partitions_plane():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 1000))
    masks = [QuadrantGate(("x", "y"), (0.1, -0.2), (a, b)).mask([x, y]) for a in "+-" for b in "+-"]
    total = np.sum(masks, axis=0)
    assert (total == 1).all()
    assert masks[0].sum() == int(((x >= 0.1) & (y >= -0.2)).sum())


def test_polygon_square_and_concave():
    sq = PolygonGate(("x", "y"), ((0, 0), (2, 0), (2, 2), (0, 2)))
    x = np.array([1.0, 3.0, -0.5, 1.9])
    y = np.array([1.0, 1.0, 1.0, 0.1])
    assert sq.mask([x, y]).tolist() == [True, False, False, True]
    # a "U" shape: the notch (1..2 x 1..3) is outside
    u = PolygonGate(("x", "y"), ((0, 0), (3, 0), (3, 3), (2, 3), (2, 1), (1, 1), (1, 3), (0, 3)))
    assert u.mask([np.array([1.5, 0.5, 2.5]), np.array([2.0, 2.0, 2.0])]).tolist() == [
        False,
        True,
        True,
    ]


def test_polygon_matches_matplotlib_path():
    from matplotlib.path import Path

    rng = np.random.default_rng(1)
    verts = rng.uniform(0, 10, size=(9, 2))
    pts = rng.uniform(-1, 11, size=(20000, 2))
    ours = PolygonGate(("x", "y"), tuple(map(tuple, verts))).mask([pts[:, 0], pts[:, 1]])
    ref = Path(verts).contains_points(pts)
    # matplotlib uses the same even-odd crossing test; only exact-boundary points may differ
    assert (ours != ref).sum() == 0


def test_ellipse_circle_radius():
    g = EllipseGate(("x", "y"), (1.0, 1.0), ((4.0, 0.0), (0.0, 4.0)), 1.0)  # radius 2
    x = np.array([1.0, 2.9, 3.1, 1.0])
    y = np.array([1.0, 1.0, 1.0, 3.0])
    assert g.mask([x, y]).tolist() == [True, True, False, True]


def test_boolean_ops():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    assert BooleanGate(("a", "b"), "and").mask([a, b]).tolist() == [True, False, False, False]
    assert BooleanGate(("a", "b"), "or").mask([a, b]).tolist() == [True, True, True, False]
    assert BooleanGate(("a",), "not").mask([a]).tolist() == [False, False, True, True]
    g = BooleanGate(("a", "b"), "and", (False, True))
    assert g.mask([a, b]).tolist() == [False, True, False, False]


def test_round_trip_dict_and_unknown_type():
    g = PolygonGate(("CD4", "CD8"), ((0, 0), (1, 0), (1, 1)))
    assert gate_from_dict(g.to_dict()) == g
    with pytest.raises(TemplateError, match="unknown gate type 'blob'"):
        gate_from_dict({"type": "blob", "dims": ["x"]})
    with pytest.raises(TemplateError, match="unknown field"):
        gate_from_dict({"type": "range", "dims": ["x"], "lo": 1})


def _polygon_parity_reference(vertices, x, y):
    """Plain even-odd loop over every edge and every event (the definition)."""
    v = np.asarray(vertices, dtype=np.float64)
    xs, ys = np.asarray(x, np.float64), np.asarray(y, np.float64)
    odd = np.zeros(len(xs), dtype=bool)
    for i in range(len(v)):
        (x1, y1), (x2, y2) = v[i], v[(i + 1) % len(v)]
        if y1 == y2:
            continue
        cross = (x2 - x1) * (ys - y1) - (xs - x1) * (y2 - y1)
        left = cross > 0 if y2 > y1 else cross < 0
        odd ^= ((y1 > ys) != (y2 > ys)) & left
    return odd


def test_many_vertex_polygon_matches_the_plain_loop():
    from immunoprofile.gating.gates import _SORTED_POLYGON_MIN_VERTICES, PolygonGate

    rng = np.random.default_rng(7)
    for trial in range(5):
        k = 40 + 100 * trial
        # a wiggly star-shaped contour on a coarse grid, so events fall on vertices and edges
        t = np.sort(rng.uniform(0, 2 * np.pi, k))
        r = 1 + 0.4 * rng.random(k)
        verts = np.round(np.c_[r * np.cos(t), r * np.sin(t)] * 8) / 8
        assert len(verts) > _SORTED_POLYGON_MIN_VERTICES
        x = (np.round(rng.uniform(-1.6, 1.6, 20_000) * 8) / 8).astype(np.float32)
        y = (np.round(rng.uniform(-1.6, 1.6, 20_000) * 8) / 8).astype(np.float32)
        x[:40], y[:40] = verts[:40, 0], verts[:40, 1]  # exactly on vertices
        got = PolygonGate(("a", "b"), tuple(map(tuple, verts))).mask([x, y])
        np.testing.assert_array_equal(got, _polygon_parity_reference(verts, x, y))
        assert 0 < got.sum() < len(x)


def test_count_at_or_below_equals_searchsorted():
    from immunoprofile.gating.gates import _count_at_or_below

    rng = np.random.default_rng(3)
    for decimals in (2, 12):
        u = np.unique(np.round(np.r_[rng.normal(0, 1, 500), rng.normal(0, 1e-3, 50)], decimals))
        y = np.r_[rng.normal(0, 2, 50_000), u, np.nextafter(u, -np.inf), np.nextafter(u, np.inf)]
        np.testing.assert_array_equal(_count_at_or_below(u, y), np.searchsorted(u, y, side="right"))
    assert _count_at_or_below(np.array([1.0]), np.array([0.0, 1.0, 2.0])).tolist() == [0, 1, 1]


def test_polygon_pairs_in_chunks_and_degenerate(monkeypatch):
    from immunoprofile.gating import gates

    rng = np.random.default_rng(5)
    t = np.sort(rng.uniform(0, 2 * np.pi, 200))
    verts = np.c_[np.cos(t), np.sin(t)] * (1 + 0.3 * rng.random(200))[:, None]
    x, y = rng.uniform(-1.5, 1.5, (2, 1500))
    want = _polygon_parity_reference(verts, x, y)
    np.testing.assert_array_equal(gates._polygon_odd_pairs(verts, x, y), want)
    monkeypatch.setattr(gates, "_PAIRS_PER_CHUNK", 997)
    np.testing.assert_array_equal(gates._polygon_odd_pairs(verts, x, y), want)
    # a few events against many edges (the exact path lists pairs), and a flat polygon
    got = PolygonGate(("a", "b"), tuple(map(tuple, verts))).mask([x[:20], y[:20]])
    np.testing.assert_array_equal(got, want[:20])
    flat = np.c_[np.linspace(0, 1, 30), np.zeros(30)]
    assert not gates._polygon_odd_pairs(flat, np.array([0.5]), np.array([0.0])).any()


def test_cell_grid_polygon_mask_is_exact():
    """The cell-grid path (many vertices, many events) gives the definition's mask, also
    for events on vertices and edges, in a narrow band along the edges, non-finite events,
    and a polygon far from the origin (where float32 cell indices would be too coarse)."""
    from immunoprofile.gating.gates import _polygon_mask_cells, _polygon_odd_pairs

    rng = np.random.default_rng(11)
    k = 300
    t = np.sort(rng.uniform(0, 2 * np.pi, k))
    r = 1 + 0.5 * rng.random(k)
    verts = np.c_[r * np.cos(t), r * np.sin(t)]
    verts[::7] = np.round(verts[::7] * 64) / 64  # some vertices exactly on float32 values
    n = 60_000
    x = rng.uniform(-1.7, 1.7, n).astype(np.float32)
    y = rng.uniform(-1.7, 1.7, n).astype(np.float32)
    # events on vertices, on edge midpoints and within a hair of the edges
    m = len(verts)
    mid = 0.5 * (verts + np.roll(verts, -1, axis=0))
    x[:m], y[:m] = verts[:, 0], verts[:, 1]
    x[m : 2 * m], y[m : 2 * m] = mid[:, 0], mid[:, 1]
    jitter = rng.normal(0, 1e-6, (m, 2))
    x[2 * m : 3 * m], y[2 * m : 3 * m] = (mid + jitter).T
    x[3 * m : 3 * m + 4] = [np.nan, np.inf, -np.inf, 0.0]
    y[3 * m : 3 * m + 4] = [0.0, 0.0, 0.0, np.nan]
    for offset in (0.0, 3.0, 1e7):
        vv = verts + offset
        xx, yy = x + np.float32(offset), y + np.float32(offset)
        want = _polygon_parity_reference(vv, xx, yy)
        got = PolygonGate(("a", "b"), tuple(map(tuple, vv))).mask([xx, yy])
        np.testing.assert_array_equal(got, want)
        assert 0.2 * n < got.sum() < 0.8 * n
        np.testing.assert_array_equal(
            _polygon_odd_pairs(vv, xx[:5000].astype(float), yy[:5000].astype(float)), want[:5000]
        )
    assert _polygon_mask_cells(verts + 1e7, x + np.float32(1e7), y) is None  # too coarse


def test_thresholds_on_float32_data_compare_as_exact_values():
    # t lies between two float32 values; numpy would round it to the nearer (the lower)
    # one and count x == that float32 as above t. Compared exactly, x < t.
    from immunoprofile.gating.gates import QuadrantGate, RangeGate, RectangleGate

    below = np.float32(1.0)
    t = float(below) + 1e-9  # not a float32; nearest float32 is 1.0
    x = np.array([below, np.nextafter(below, np.float32(2))], dtype=np.float32)
    assert RangeGate(("a",), min=t).mask([x]).tolist() == [False, True]
    assert RangeGate(("a",), max=t).mask([x]).tolist() == [True, False]
    assert RectangleGate(("a", "b"), min=(t, None), max=(None, None)).mask([x, x]).tolist() == [
        False,
        True,
    ]
    q = QuadrantGate(("a", "b"), thresholds=(t, t), signs=("+", "-"))
    assert q.mask([x, x]).tolist() == [False, False]
    # float64 data keep the threshold as given
    assert RangeGate(("a",), min=t).mask([x.astype(np.float64)]).tolist() == [False, True]
