"""Static gate geometry: small frozen dataclasses with one method, ``mask``.

A gate names its dimensions (markers or channels; the engine resolves them to columns)
and, given those columns as 1-D arrays, returns a boolean mask. Everything is vectorised
over events; no Python loop touches single events (polygons loop over their vertices).

Boundary conventions follow Gating-ML 2.0 (Spidlen et al., 2015, section 5): an interval
includes its minimum and excludes its maximum; a polygon uses the even-odd rule; an
ellipsoid includes its boundary.

One registry, ``GATE_TYPES``, maps the template's ``"type"`` string to the class, so
templates, GatingML import and plotting share the same gate objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from immunoprofile._json import jsonable
from immunoprofile.exceptions import TemplateError

GATE_TYPES: dict[str, type[Gate]] = {}


def register_gate(type_name: str):
    """Class decorator: make a gate class constructible from a template ``"type"``."""

    def deco(cls):
        cls.type_name = type_name
        GATE_TYPES[type_name] = cls
        return cls

    return deco


def _bound(v: float | None, default: float) -> float:
    return default if v is None else float(v)


def _cut(x: np.ndarray, t: float) -> Any:
    """Threshold ``t`` in ``x``'s precision such that ``x >= cut`` and ``x < cut`` give what
    the comparisons with ``t`` itself give on the exact values: for float32 data, the
    smallest float32 at or above ``t`` (numpy would round a float to the nearest float32,
    which can move an event lying between the two across the boundary)."""
    if x.dtype != np.float32 or not np.isfinite(t):
        return t
    c = np.float32(t)
    if float(c) < t:
        c = np.nextafter(c, np.float32(np.inf))
    return c


@dataclass(frozen=True)
class Gate:
    """Base class. ``dims`` are the names of the columns ``mask`` receives, in order."""

    dims: tuple[str, ...]
    type_name: ClassVar[str] = "gate"

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, the inverse of `gate_from_dict`."""
        out: dict[str, Any] = {"type": self.type_name}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = jsonable(v, finite=False)  # an open bound may be infinite
        return out


@register_gate("range")
@dataclass(frozen=True)
class RangeGate(Gate):
    """One dimension, ``min <= x < max``; either end may be open (None)."""

    min: float | None = None
    max: float | None = None

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        (x,) = columns
        lo, hi = _bound(self.min, -np.inf), _bound(self.max, np.inf)
        if self.min is None:
            return x < _cut(x, hi)
        if self.max is None:
            return x >= _cut(x, lo)
        return (x >= _cut(x, lo)) & (x < _cut(x, hi))


@register_gate("rectangle")
@dataclass(frozen=True)
class RectangleGate(Gate):
    """A box in any number of dimensions, ``min_i <= x_i < max_i``; None means open."""

    min: tuple[float | None, ...] = ()
    max: tuple[float | None, ...] = ()

    def __post_init__(self) -> None:
        n = len(self.dims)
        mins = tuple(self.min) if self.min else (None,) * n
        maxs = tuple(self.max) if self.max else (None,) * n
        if len(mins) != n or len(maxs) != n:
            raise TemplateError(f"rectangle on {self.dims}: need {n} min and max values")
        object.__setattr__(self, "min", mins)
        object.__setattr__(self, "max", maxs)

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        out = np.ones(len(columns[0]), dtype=bool)
        for x, lo, hi in zip(columns, self.min, self.max):
            if lo is not None:
                out &= x >= _cut(x, lo)
            if hi is not None:
                out &= x < _cut(x, hi)
        return out


@register_gate("quadrant")
@dataclass(frozen=True)
class QuadrantGate(Gate):
    """One quadrant of a 2-D split at ``thresholds``; ``signs`` like ``("+", "-")``.

    ``+`` means at or above the threshold, ``-`` below it.
    """

    thresholds: tuple[float, float] = (0.0, 0.0)
    signs: tuple[str, str] = ("+", "+")

    def __post_init__(self) -> None:
        if len(self.dims) != 2 or len(self.thresholds) != 2 or len(self.signs) != 2:
            raise TemplateError("quadrant gate needs two dims, two thresholds and two signs")
        if any(s not in ("+", "-") for s in self.signs):
            raise TemplateError(f"quadrant signs must be '+' or '-', got {self.signs}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        object.__setattr__(self, "signs", tuple(self.signs))

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        x, y = columns
        tx, ty = _cut(x, self.thresholds[0]), _cut(y, self.thresholds[1])
        mx = x >= tx if self.signs[0] == "+" else x < tx
        my = y >= ty if self.signs[1] == "+" else y < ty
        return mx & my


@register_gate("polygon")
@dataclass(frozen=True)
class PolygonGate(Gate):
    """A closed polygon in two dimensions, even-odd rule (vectorised ray casting)."""

    vertices: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        verts = tuple((float(a), float(b)) for a, b in self.vertices)
        if len(self.dims) != 2 or len(verts) < 3:
            raise TemplateError(
                f"polygon gate needs 2 dims and at least 3 vertices, got {self.dims}, {len(verts)}"
            )
        object.__setattr__(self, "vertices", verts)

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        x, y = columns
        v = np.asarray(self.vertices, dtype=np.float64)
        if len(x) >= _CELL_MIN_EVENTS and len(v) > _SORTED_POLYGON_MIN_VERTICES:
            out = _polygon_mask_cells(v, x, y)
            if out is not None:
                return out
        return _polygon_mask_exact(v, x, y)


def _polygon_mask_exact(v: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Even-odd test of every event (the definition, in float64)."""
    # bounding box first: most events are far from a small gate
    inside_box = (
        (x >= v[:, 0].min()) & (x <= v[:, 0].max()) & (y >= v[:, 1].min()) & (y <= v[:, 1].max())
    )
    idx = np.flatnonzero(inside_box)
    xs = x[idx].astype(np.float64)
    ys = y[idx].astype(np.float64)
    n = len(v)
    if n > _SORTED_POLYGON_MIN_VERTICES and len(xs) <= _PAIRS_MAX_EVENTS:
        odd = _polygon_odd_pairs(v, xs, ys)  # e.g. one seed point against a contour
    elif n > _SORTED_POLYGON_MIN_VERTICES:
        odd = _polygon_odd_sorted(v, xs, ys)
    else:
        odd = np.zeros(len(idx), dtype=bool)
        for i in range(n):
            x1, y1 = v[i]
            x2, y2 = v[(i + 1) % n]
            if y1 == y2:
                continue
            crosses = (y1 > ys) != (y2 > ys)
            odd ^= crosses & _left_of_edge(xs, ys, x1, y1, x2, y2)
    out = np.zeros(len(x), dtype=bool)
    out[idx[odd]] = True
    return out


# Large event sets are classified through a grid of cells over the polygon's bounding box
# (a cell is inside, outside or near an edge); only events in cells near an edge get the
# exact test. Exact: a cell is "pure" only when no edge passes within two cells of it.
_CELL_MIN_EVENTS = 20_000
# few events against many edges: list the crossing (edge, event) pairs at once
_PAIRS_MAX_EVENTS = 2_000
_PAIRS_PER_CHUNK = 1 << 20  # bounds the pairs' temporary arrays (tens of MB)
_CELL_GRID = 256  # cells per axis across the bounding box


def _polygon_mask_cells(v: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    """The even-odd mask of ``_polygon_mask_exact``, computed through a cell grid.

    The bounding box is cut into ``G x G`` cells (plus one margin cell on each side, which
    holds everything beyond the box). Cells within two cells of an edge are "boundary";
    every other cell lies in a connected region no edge crosses, whose class is the exact
    test of one cell centre per region. An event costs a few float32 operations and one
    table look-up; events of boundary cells get the exact test. The two-cell margin covers
    both the edge rasterisation (samples every half cell) and float32 rounding of the cell
    index (checked below to be under a quarter cell, else None: use the exact test)."""
    from scipy import ndimage

    g = _CELL_GRID
    lo, hi = v.min(axis=0), v.max(axis=0)
    width = hi - lo
    if not (np.all(width > 0) and np.all(np.isfinite(width))):
        return None
    scale = g / width
    # rounding of (x - lo) * scale in float32, in cells, for events near the box
    if float(np.max(2.0 * np.maximum(np.abs(lo), np.abs(hi)) * scale)) * 2.0**-22 > 0.25:
        return None
    # boundary cells: samples every half cell along each edge, dilated by two cells
    a = (v - lo) * scale + 1.0
    b = np.roll(a, -1, axis=0)
    steps = np.ceil(2.0 * np.abs(b - a).max(axis=1)).astype(np.intp) + 2  # both ends
    e = np.repeat(np.arange(len(a)), steps)
    t = (np.arange(len(e)) - np.repeat(np.cumsum(steps) - steps, steps)) / (steps[e] - 1.0)
    pts = a[e] + t[:, None] * (b[e] - a[e])
    m = g + 2
    cells = np.clip(pts.astype(np.intp), 0, m - 1)
    near = np.zeros((m, m), dtype=bool)  # [row = y cell, column = x cell]
    near[cells[:, 1], cells[:, 0]] = True
    near = ndimage.binary_dilation(near, structure=np.ones((5, 5), dtype=bool))
    # class of every pure region from one of its cells' centres
    labels, n_regions = ndimage.label(~near)
    code = np.full(m * m, 2, dtype=np.uint8)
    if n_regions:
        flat = labels.ravel()
        label, first = np.unique(flat, return_index=True)  # one cell per region
        first = first[label > 0]
        cy, cx = np.divmod(first, m)
        centre_x = lo[0] + (cx - 0.5) / scale[0]
        centre_y = lo[1] + (cy - 0.5) / scale[1]
        inside = _polygon_odd_pairs(v, centre_x, centre_y)
        region_code = np.concatenate([[2], inside.astype(np.uint8)])
        code = region_code[flat]
    # cell of every event (float32 arithmetic; NaN -> margin cell 0)
    ix = _cell_index(x, lo[0], scale[0], g)
    iy = _cell_index(y, lo[1], scale[1], g)
    iy *= m
    iy += ix
    ev_code = code[iy]
    out = ev_code == 1
    near_idx = np.flatnonzero(ev_code == 2)
    if len(near_idx):
        xs = x[near_idx].astype(np.float64)
        ys = y[near_idx].astype(np.float64)
        out[near_idx] = _polygon_odd_pairs(v, xs, ys)
    return out


def _polygon_odd_pairs(v: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd parity of each (float64) event, for a modest number of events: every
    (edge, event) pair whose event lies in the edge's half-open y-range is listed at once
    (events sorted by y, one ``searchsorted`` per edge end) and tested with
    `_left_of_edge`'s arithmetic; the parity is the count of passing pairs per event, mod 2.
    The same result as the plain loop, with no Python loop over the edges."""
    m = len(xs)
    if m == 0:
        return np.zeros(0, dtype=bool)
    x1, y1 = v[:, 0], v[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    keep = y1 != y2
    x1, y1, x2, y2 = x1[keep], y1[keep], x2[keep], y2[keep]
    order = np.argsort(ys, kind="stable")
    ys_s = ys[order]
    lo = np.searchsorted(ys_s, np.minimum(y1, y2), side="left")
    hi = np.searchsorted(ys_s, np.maximum(y1, y2), side="left")  # min <= y < max
    counts = hi - lo
    total = np.cumsum(counts)
    hits = np.zeros(m, dtype=np.intp)
    if not len(total) or total[-1] == 0:
        return hits.astype(bool)
    # edges in chunks of about _PAIRS_PER_CHUNK pairs each
    cuts = np.searchsorted(total, np.arange(_PAIRS_PER_CHUNK, int(total[-1]), _PAIRS_PER_CHUNK))
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(counts)]):
        c = counts[a:b]
        edge = np.repeat(np.arange(a, b), c)
        pos = np.arange(len(edge)) - np.repeat(np.cumsum(c) - c - lo[a:b], c)
        ev = order[pos]
        ex1, ey1, ex2, ey2 = x1[edge], y1[edge], x2[edge], y2[edge]
        cross = (ex2 - ex1) * (ys[ev] - ey1) - (xs[ev] - ex1) * (ey2 - ey1)
        left = np.where(ey2 > ey1, cross > 0, cross < 0)
        hits += np.bincount(ev[left], minlength=m)
    return (hits & 1).astype(bool)


def _cell_index(x: np.ndarray, lo: float, scale: float, g: int) -> np.ndarray:
    """Cell index 0 .. g + 1 of each value (1 .. g inside [lo, lo + g / scale])."""
    dtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
    t = np.subtract(x, dtype.type(lo), dtype=dtype)
    t *= dtype.type(scale)
    np.fmax(t, -1.0, out=t)  # NaN -> -1
    np.fmin(t, float(g), out=t)
    t += 1.0
    return t.astype(np.intp)


# Polygons with more vertices than this (density contours, e.g. a fitted lymphocyte gate
# with hundreds of vertices) sort the events by y once, so each edge only visits the events
# in its own y-range instead of every event: the cost drops from O(vertices x events) to
# about O(events x log(events) + events x edges crossed per horizontal line).
_SORTED_POLYGON_MIN_VERTICES = 12


def _left_of_edge(xs, ys, x1: float, y1: float, x2: float, y2: float) -> np.ndarray:
    """True where the event lies left of the edge's crossing point at its height.

    The sign of a cross product decides, with no division, so an event exactly on an edge
    gives exactly 0 and is decided the same way for every edge orientation (Gating-ML
    compliance suite, Polygon1: events on the diagonal edge are inside)."""
    cross = (x2 - x1) * (ys - y1) - (xs - x1) * (y2 - y1)
    return cross > 0 if y2 > y1 else cross < 0


def _polygon_odd_sorted(v: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd crossing parity of each event, visiting per edge only the events whose y
    lies in the edge's half-open y-range (the same test and arithmetic as the plain loop:
    edge (y1, y2) crosses the ray of an event at height y iff min <= y < max).

    Events are grouped by their slab between consecutive distinct vertex heights (slab
    ``s`` = number of vertex heights <= y), a small-integer key that a stable radix sort
    orders in linear time; an edge from height ``u[a]`` to ``u[b]`` then meets exactly the
    events of slabs ``a + 1 .. b``, one contiguous run of the ordered events."""
    u = np.unique(v[:, 1])
    slab = _count_at_or_below(u, ys)
    slab = slab.astype(np.uint16 if len(u) < 65_535 else np.int64)
    order = np.argsort(slab, kind="stable")
    start = np.searchsorted(slab[order], np.arange(len(u) + 2), side="left")
    ys_s = ys[order]
    xs_s = xs[order]
    odd_s = np.zeros(len(order), dtype=bool)
    n = len(v)
    for i in range(n):
        x1, y1 = v[i]
        x2, y2 = v[(i + 1) % n]
        if y1 == y2:
            continue
        lo, hi = (y1, y2) if y1 < y2 else (y2, y1)
        a = int(start[int(np.searchsorted(u, lo)) + 1])
        b = int(start[int(np.searchsorted(u, hi)) + 1])
        if a < b:
            odd_s[a:b] ^= _left_of_edge(xs_s[a:b], ys_s[a:b], x1, y1, x2, y2)
    odd = np.empty_like(odd_s)
    odd[order] = odd_s
    return odd


def _count_at_or_below(u: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``np.searchsorted(u, y, side="right")`` (how many of the sorted distinct ``u`` are
    <= each finite ``y``), exactly, in about a seventh of the time: a guess from uniform
    bins over ``u``'s range, then a fix-up of the few guesses a bin's own ``u`` makes wrong,
    until ``u[s - 1] <= y < u[s]`` holds for every event."""
    m = len(u)
    lo, hi = float(u[0]), float(u[-1])
    if m < 2 or not hi > lo:
        return np.searchsorted(u, y, side="right")
    n_bins = 4 * m
    scale = n_bins / (hi - lo)
    guess = np.searchsorted(u, lo + np.arange(n_bins) / scale, side="right")
    b = (y - lo) * scale
    np.clip(b, 0, n_bins - 1, out=b)
    s = guess[b.astype(np.intp)]
    above = np.append(u, np.inf)  # above[s] = u[s]: must be > y
    below = np.insert(u, 0, -np.inf)  # below[s] = u[s - 1]: must be <= y
    idx = np.flatnonzero((above[s] <= y) | (below[s] > y))
    while len(idx):
        si, yi = s[idx], y[idx]
        si = si + (above[si] <= yi) - (below[si] > yi)
        s[idx] = si
        idx = idx[(above[si] <= yi) | (below[si] > yi)]
    return s


@register_gate("ellipse")
@dataclass(frozen=True)
class EllipseGate(Gate):
    """An ellipse (2-D) or ellipsoid: ``(x - mean)^T C^-1 (x - mean) <= distance_square``."""

    mean: tuple[float, ...] = ()
    covariance: tuple[tuple[float, ...], ...] = ()
    distance_square: float = 1.0

    def __post_init__(self) -> None:
        n = len(self.dims)
        mean = tuple(float(m) for m in self.mean)
        cov = tuple(tuple(float(c) for c in row) for row in self.covariance)
        if len(mean) != n or len(cov) != n or any(len(r) != n for r in cov):
            raise TemplateError(f"ellipse on {self.dims}: mean/covariance do not match {n} dims")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "covariance", cov)

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        inv = np.linalg.inv(np.asarray(self.covariance, dtype=np.float64))
        d = [np.asarray(c, dtype=np.float64) - m for c, m in zip(columns, self.mean)]
        q = np.zeros(len(d[0]), dtype=np.float64)
        for i in range(len(d)):
            for j in range(len(d)):
                if inv[i, j] != 0.0:
                    q += inv[i, j] * d[i] * d[j]
        return q <= self.distance_square


@register_gate("boolean")
@dataclass(frozen=True)
class BooleanGate(Gate):
    """``and`` / ``or`` / ``not`` of other populations; ``dims`` are population names.

    ``complement[i]`` negates operand i before combining (Gating-ML's ``use-as-complement``).
    ``mask`` receives the operands' boolean masks in the order of ``dims``.
    """

    op: str = "and"
    complement: tuple[bool, ...] = ()

    def __post_init__(self) -> None:
        if self.op not in ("and", "or", "not"):
            raise TemplateError(f"boolean gate op must be and/or/not, got {self.op!r}")
        if self.op == "not" and len(self.dims) != 1:
            raise TemplateError("a 'not' gate takes exactly one population")
        comp = tuple(bool(c) for c in self.complement) or (False,) * len(self.dims)
        if len(comp) != len(self.dims):
            raise TemplateError("boolean gate: one complement flag per operand")
        object.__setattr__(self, "complement", comp)

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        ms = [~m if c else m for m, c in zip(columns, self.complement)]
        if self.op == "not":
            return ~ms[0]
        out = ms[0].copy()
        for m in ms[1:]:
            if self.op == "and":
                out &= m
            else:
                out |= m
        return out


def gate_from_dict(spec: dict[str, Any]) -> Gate:
    """Build a registered gate from its JSON description (``{"type": ..., "dims": ...}``)."""
    spec = dict(spec)
    type_name = spec.pop("type", None)
    cls = GATE_TYPES.get(type_name)
    if cls is None:
        raise TemplateError(f"unknown gate type {type_name!r}; known types: {sorted(GATE_TYPES)}")
    spec["dims"] = tuple(spec.get("dims", ()))
    known = {f.name for f in fields(cls)}
    unknown = set(spec) - known
    if unknown:
        raise TemplateError(f"{type_name} gate: unknown field(s) {sorted(unknown)}")
    try:
        return cls(**spec)
    except TypeError as exc:
        raise TemplateError(f"{type_name} gate: {exc}") from None


__all__ = [
    "GATE_TYPES",
    "BooleanGate",
    "EllipseGate",
    "Gate",
    "PolygonGate",
    "QuadrantGate",
    "RangeGate",
    "RectangleGate",
    "gate_from_dict",
    "register_gate",
]
