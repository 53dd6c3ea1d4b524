"""Display transforms (logicle, hyperlog, arcsinh, log, linear) and per-channel specs.

Parameterisation follows Gating-ML 2.0 (Spidlen et al., Cytometry A 2015; ISAC
Gating-ML 2.0 specification, section 6): ``flin(T, A)``, ``flog(T, M)``,
``fasinh(T, M, A)``, ``logicle(T, W, M, A)`` and ``hyperlog(T, W, M, A)`` all map the top
of scale ``T`` to 1.0, so transformed fluorescence sits on a 0..1-ish display scale on
which template gates are written. ``AsinhCofactor`` is the cytometry-style
``asinh(x / cofactor)`` used by mass and spectral cytometry pipelines.

Logicle (Parks, Roederer & Moore, Cytometry A 2006; Moore & Parks, Cytometry A 2012) and
hyperlog (Bagwell, Cytometry A 2005) have no closed form in the data-to-display
direction: the display value ``y`` solves ``B(y) = x`` for a biexponential (logicle) or
exponential-plus-linear (hyperlog) ``B``. Existing tools run an iterative solver per
event. Here, the solve is done once per parameter set, on the edges of a table indexed by
the float32 bit pattern of ``x``: the top bits of an IEEE-754 float (sign, exponent and
the first ``_TABLE_BITS`` mantissa bits) are a monotone, piecewise-linear approximation
of ``log2|x|``, so ``bits >> shift`` selects a bin of relative width at most
``2**-_TABLE_BITS`` in O(1) integer operations, for every float32 from denormals to
infinity. Inside a bin ``x`` is linear in the remaining mantissa bits, and ``y`` is
interpolated linearly there; the bin is narrow enough that the interpolation error is
below 1e-7 on the display scale (the second derivative of ``y`` against ``log x`` is
bounded by ``1 / ((M + A) ln 10)``). Per event this is one shift, one mask, one gather
and one multiply-add, evaluated in cache-sized blocks. ``dtype=np.float64`` gives the
full-precision path instead: a vectorised Newton solve in float64 that converges to
machine precision (used for round trips and reference checks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from immunoprofile.exceptions import TransformError
from immunoprofile.panel import Panel

LN10 = math.log(10.0)

# --- bit-indexed lookup table ---------------------------------------------------------

_TABLE_BITS = 9  # mantissa bits that select a bin: bins of relative width <= 2**-9
_SHIFT = 23 - _TABLE_BITS  # low mantissa bits that give the position inside a bin
_N_SIGN = 1 << (31 - _SHIFT)  # bins per sign (including the inf/nan bins)
_N_FINITE = 255 << _TABLE_BITS  # bins of finite magnitude per sign
_FRAC_MASK = np.uint32((1 << _SHIFT) - 1)
_FRAC_SCALE = np.float32(2.0**-_SHIFT)
_BLOCK = 32768  # events per block: the temporaries of one block stay in cache


def _bin_edges() -> np.ndarray:
    """Magnitudes (float64) at which the finite bins start, plus the top edge 2**128."""
    i = np.arange(_N_FINITE + 1, dtype=np.uint64)
    bits = (i << np.uint64(_SHIFT)).astype(np.uint32)
    edges = bits.view(np.float32).astype(np.float64)
    edges[-1] = 2.0**128
    return edges


def _build_table(solve_abs, x1: float) -> np.ndarray:
    """Table of (start, slope) pairs, packed as complex64, for an odd-around-x1 transform.

    ``solve_abs(m)`` returns the exact display offset ``y - x1`` for magnitudes ``m``;
    negative inputs are the reflection ``y(-x) = 2 x1 - y(x)`` (logicle and hyperlog are
    defined that way).
    """
    edges = _bin_edges()
    delta = solve_abs(edges)
    y_pos = x1 + delta
    y_neg = x1 - delta
    table = np.full(2 * _N_SIGN, np.nan + 0j, dtype=np.complex128)
    table.real[:_N_FINITE] = y_pos[:-1]
    table.imag[:_N_FINITE] = np.diff(y_pos)
    table.real[_N_SIGN : _N_SIGN + _N_FINITE] = y_neg[:-1]
    table.imag[_N_SIGN : _N_SIGN + _N_FINITE] = np.diff(y_neg)
    # +inf and -inf (mantissa zero) sit at the start of the exponent-255 bins
    table[_N_FINITE] = np.inf
    table[_N_SIGN + _N_FINITE] = -np.inf
    return table.astype(np.complex64)


def _table_block(
    table: np.ndarray, x: np.ndarray, out: np.ndarray, scratch: dict, offset=None
) -> None:
    """Evaluate a bit-indexed table on one block of float32 values (views allowed).

    ``offset``: per-column start of each column's own table within ``table`` (several
    tables concatenated), for a flat row-major block whose length is a multiple of it."""
    m = x.shape[0]
    u = x.view(np.uint32)
    idx = scratch["idx"][:m]
    np.right_shift(u, _SHIFT, out=idx, casting="unsafe")
    if offset is not None:
        idx2 = idx.reshape(-1, len(offset))
        np.add(idx2, offset, out=idx2)
    g = scratch["g"][:m]
    np.take(table, idx, out=g, mode="clip")  # indices are in range; "raise" buffers out
    frac = scratch["frac"][:m]
    ubuf = scratch["ubuf"][:m]
    np.bitwise_and(u, _FRAC_MASK, out=ubuf)
    # both steps exact (a 14-bit integer; a power of two), and twice as fast as one mixed
    # uint32 x float32 product, which numpy computes in float64
    np.copyto(frac, ubuf, casting="unsafe")
    np.multiply(frac, _FRAC_SCALE, out=frac)
    gv = g.view(np.float32)
    np.multiply(frac, gv[1::2], out=out)
    np.add(out, gv[0::2], out=out)


def _new_scratch(n: int) -> dict:
    return {
        "idx": np.empty(n, dtype=np.intp),
        "g": np.empty(n, dtype=np.complex64),
        "frac": np.empty(n, dtype=np.float32),
        "ubuf": np.empty(n, dtype=np.uint32),
    }


def _as_float32_1d(x: Any) -> tuple[np.ndarray, tuple[int, ...]]:
    arr = np.asarray(x)
    if arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    return np.ascontiguousarray(arr).reshape(-1), arr.shape


# --- base class -----------------------------------------------------------------------

TRANSFORM_TYPES: dict[str, type[Transform]] = {}
_TYPE_ALIASES = {
    "flin": "linear",
    "lin": "linear",
    "flog": "log",
    "fasinh": "arcsinh",
    "asinh": "arcsinh",
    "asinh_cofactor": "arcsinh_cofactor",
    "cofactor": "arcsinh_cofactor",
}


def register_transform(type_name: str):
    """Class decorator: make a transform constructible from a ``{"type": ...}`` dict."""

    def deco(cls):
        cls.type_name = type_name
        TRANSFORM_TYPES[type_name] = cls
        return cls

    return deco


@dataclass(frozen=True)
class Transform:
    """A monotone map from data values to display values, with its inverse.

    ``apply`` and ``inverse`` take any array shape. With the default ``dtype=np.float32``
    they compute in float32 (the fast path, accurate to about 1e-7 on the display scale);
    ``dtype=np.float64`` computes in float64 to machine precision.
    """

    type_name: ClassVar[str] = "transform"

    def apply(self, x: Any, dtype: Any = np.float32) -> np.ndarray:
        """Data values to display values."""
        if np.dtype(dtype) == np.float64:
            arr = np.asarray(x, dtype=np.float64)
            return self._forward64(arr)
        flat, shape = _as_float32_1d(x)
        out = np.empty_like(flat)
        self._forward_blocks(flat, out)
        return out.reshape(shape)

    def inverse(self, y: Any, dtype: Any = np.float32) -> np.ndarray:
        """Display values back to data values."""
        arr = np.asarray(y, dtype=np.float64)
        res = self._inverse64(arr)
        return res if np.dtype(dtype) == np.float64 else res.astype(np.float32)

    # subclasses implement these three
    def _forward32(self, x: np.ndarray, out: np.ndarray, scratch: dict) -> None:
        out[...] = self._forward64(x.astype(np.float64))

    def _forward64(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _inverse64(self, y: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _forward_blocks(self, x: np.ndarray, out: np.ndarray) -> None:
        """Apply the float32 path block by block (``x``, ``out``: 1-D, may be strided)."""
        n = x.shape[0]
        scratch = _new_scratch(min(n, _BLOCK))
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            self._forward32(x[start:stop], out[start:stop], scratch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready parameters, the inverse of `transform_from_dict`."""
        out: dict[str, Any] = {"type": self.type_name}
        for f in fields(self):
            out[f.name] = float(getattr(self, f.name))
        return out

    def __call__(self, x: Any, dtype: Any = np.float32) -> np.ndarray:
        return self.apply(x, dtype=dtype)


def _transform_type(name: Any) -> tuple[str, type[Transform]]:
    """Canonical type name (aliases resolved) and class of a transform ``type`` value."""
    kind = str(name).strip().lower()
    kind = _TYPE_ALIASES.get(kind, kind)
    cls = TRANSFORM_TYPES.get(kind)
    if cls is None:
        raise TransformError(
            f"unknown transform type {name!r}; known types: {sorted(TRANSFORM_TYPES)}"
        )
    return kind, cls


def transform_from_dict(d: Mapping[str, Any] | Transform) -> Transform:
    """Build a transform from ``{"type": "logicle", "t": 262144, "w": 0.5, ...}``.

    Parameter names are case-insensitive (``"T"`` or ``"t"``); ``type`` also accepts the
    Gating-ML names ``flin``, ``flog``, ``fasinh`` and ``asinh``.
    """
    if isinstance(d, Transform):
        return d
    if not isinstance(d, Mapping) or "type" not in d:
        raise TransformError(f"a transform must be a mapping with a 'type' key, got {d!r}")
    kind, cls = _transform_type(d["type"])
    names = {f.name for f in fields(cls)}
    kwargs = {}
    for key, value in d.items():
        k = str(key).lower()
        if k == "type":
            continue
        if k not in names:
            raise TransformError(
                f"{kind} transform has no parameter {key!r}; parameters are {sorted(names)}"
            )
        try:
            kwargs[k] = float(value)
        except (TypeError, ValueError):
            raise TransformError(
                f"{kind} transform parameter {key!r} must be a number, got {value!r}"
            ) from None
    return cls(**kwargs)


#: the largest float32 value: events are float32, so a top of scale beyond it means nothing
_F32_MAX = float(np.finfo(np.float32).max)


def _check_top(obj: Any) -> None:
    """T (top of scale) must be a finite positive number a float32 event can reach."""
    t = float(obj.t)
    _check(
        math.isfinite(t) and 0 < t <= _F32_MAX,
        f"T must be positive and at most {_F32_MAX:.3g}, the largest float32 event value "
        f"(got {t:g})",
        obj,
    )


def _check(cond: bool, what: str, obj: Any) -> None:
    if not cond:
        raise TransformError(f"invalid {type(obj).__name__} parameters {asdict(obj)}: {what}")


# --- closed-form transforms -------------------------------------------------------------


@register_transform("linear")
@dataclass(frozen=True)
class Linear(Transform):
    """Gating-ML ``flin(x, T, A) = (x + A) / (T + A)``: maps ``[-A, T]`` onto ``[0, 1]``."""

    t: float = 262144.0
    a: float = 0.0

    def __post_init__(self) -> None:
        _check_top(self)
        _check(self.t > 0, "T must be > 0", self)
        # Gating-ML 2.0 asks for 0 <= A <= T; any A with T + A > 0 is a valid affine map
        # (FlowJo linear axes with a negative minimum need A < 0)
        _check(self.t + self.a > 0, "T + A must be > 0", self)

    def _forward32(self, x, out, scratch) -> None:
        np.add(x, np.float32(self.a), out=out)
        np.multiply(out, np.float32(1.0 / (self.t + self.a)), out=out)

    def _forward64(self, x):
        return (x + self.a) / (self.t + self.a)

    def _inverse64(self, y):
        return y * (self.t + self.a) - self.a


@register_transform("log")
@dataclass(frozen=True)
class Log(Transform):
    """Gating-ML ``flog(x, T, M) = log10(x / T) / M + 1``; ``-inf`` at 0, NaN below."""

    t: float = 262144.0
    m: float = 4.5

    def __post_init__(self) -> None:
        _check_top(self)
        _check(self.t > 0, "T must be > 0", self)
        _check(self.m > 0, "M must be > 0", self)

    def _forward32(self, x, out, scratch) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            np.log10(x, out=out)
        np.subtract(out, np.float32(math.log10(self.t)), out=out)
        np.multiply(out, np.float32(1.0 / self.m), out=out)
        np.add(out, np.float32(1.0), out=out)

    def _forward64(self, x):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(x / self.t) / self.m + 1.0

    def _inverse64(self, y):
        return self.t * 10.0 ** ((y - 1.0) * self.m)


@register_transform("arcsinh")
@dataclass(frozen=True)
class Arcsinh(Transform):
    """Gating-ML ``fasinh(x, T, M, A)``:
    ``(asinh(x sinh(M ln10) / T) + A ln10) / ((M + A) ln10)``."""

    t: float = 262144.0
    m: float = 4.5
    a: float = 0.0

    def __post_init__(self) -> None:
        _check_top(self)
        _check(self.t > 0, "T must be > 0", self)
        _check(self.m > 0, "M must be > 0", self)
        _check(0 <= self.a <= self.m, "A must be in [0, M]", self)

    @property
    def _scale(self) -> float:
        return math.sinh(self.m * LN10) / self.t

    def _forward32(self, x, out, scratch) -> None:
        np.multiply(x, np.float32(self._scale), out=out)
        np.arcsinh(out, out=out)
        np.add(out, np.float32(self.a * LN10), out=out)
        np.multiply(out, np.float32(1.0 / ((self.m + self.a) * LN10)), out=out)

    def _forward64(self, x):
        return (np.arcsinh(x * self._scale) + self.a * LN10) / ((self.m + self.a) * LN10)

    def _inverse64(self, y):
        return np.sinh(y * (self.m + self.a) * LN10 - self.a * LN10) / self._scale


@register_transform("arcsinh_cofactor")
@dataclass(frozen=True)
class AsinhCofactor(Transform):
    """Cytometry-style ``asinh(x / cofactor)`` (cofactor 150 for flow, 5 for mass cytometry).

    Not on the 0..1 scale: ``asinh(262144 / 150)`` is about 8.2.
    """

    cofactor: float = 150.0

    def __post_init__(self) -> None:
        _check(self.cofactor > 0, "cofactor must be > 0", self)

    def _forward32(self, x, out, scratch) -> None:
        np.multiply(x, np.float32(1.0 / self.cofactor), out=out)
        np.arcsinh(out, out=out)

    def _forward64(self, x):
        return np.arcsinh(x / self.cofactor)

    def _inverse64(self, y):
        return np.sinh(y) * self.cofactor


# --- logicle and hyperlog ----------------------------------------------------------------


class _OddSolver:
    """Exact solver for a display transform that is odd around ``x1``.

    ``F(delta)`` (``delta = y - x1 >= 0``) is increasing and convex with ``F(0) = 0``; the
    data value is ``x = sign(y - x1) F(|y - x1|)``. Both ``|x| / F'(0)`` (the tangent at
    0) and ``log1p(|x| / P) / b`` (dropping the slower term) bound the root from above,
    so Newton's method started at their minimum decreases monotonically to the root.
    """

    x1: float
    P: float
    b: float

    def F(self, delta: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def dF(self, delta: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def solve_abs(self, m: np.ndarray) -> np.ndarray:
        """``delta >= 0`` with ``F(delta) = m`` for magnitudes ``m >= 0`` (float64)."""
        m = np.asarray(m, dtype=np.float64)
        out = np.full(m.shape, np.inf)
        finite = np.isfinite(m)
        mf = m[finite]
        with np.errstate(over="ignore"):
            d = np.minimum(mf / float(self.dF(np.zeros(1))[0]), np.log1p(mf / self.P) / self.b)
        active = np.arange(mf.size)
        for _ in range(200):
            if active.size == 0:
                break
            da = d[active]
            step = (self.F(da) - mf[active]) / self.dF(da)
            new = np.maximum(da - step, 0.0)
            d[active] = new
            done = ~(np.abs(new - da) > 4e-16 * np.maximum(new, 1e-300))
            active = active[~done]
        out[finite] = d
        return out

    def forward64(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        delta = self.solve_abs(np.abs(x))
        res = self.x1 + np.copysign(delta, x)
        res[np.isnan(x)] = np.nan
        return res

    def inverse64(self, y: np.ndarray) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        delta = y - self.x1
        with np.errstate(over="ignore"):
            return np.copysign(self.F(np.abs(delta)), delta)


class _LogicleSolver(_OddSolver):
    """Moore & Parks (2012) logicle: ``B(y) = a e^(b y) - c e^(-d y) + f`` for ``y >= x1``.

    With ``P = a e^(b x1)`` and ``Q = c e^(-d x1)``,
    ``F(delta) = P expm1(b delta) - Q expm1(-d delta)``, which has no cancellation near 0.
    """

    def __init__(self, t: float, w: float, m: float, a: float) -> None:
        # Moore & Parks 2012, "Update for the logicle data scale", equations for w, x0..x2
        self.w = w / (m + a)
        self.x2 = a / (m + a)
        self.x1 = self.x2 + self.w
        self.x0 = self.x2 + 2 * self.w
        self.b = (m + a) * LN10
        self.d = _solve_logicle_d(self.b, self.w)
        c_a = math.exp(self.x0 * (self.b + self.d))
        mf_a = math.exp(self.b * self.x1) - c_a * math.exp(-self.d * self.x1)
        self.a = t / ((math.exp(self.b) - mf_a) - c_a * math.exp(-self.d))
        self.c = c_a * self.a
        self.f = -mf_a * self.a
        self.P = self.a * math.exp(self.b * self.x1)
        self.Q = self.c * math.exp(-self.d * self.x1)

    def F(self, delta):
        with np.errstate(over="ignore"):
            return self.P * np.expm1(self.b * delta) - self.Q * np.expm1(-self.d * delta)

    def dF(self, delta):
        with np.errstate(over="ignore"):
            return self.P * self.b * np.exp(self.b * delta) + self.Q * self.d * np.exp(
                -self.d * delta
            )


def _solve_logicle_d(b: float, w: float) -> float:
    """Root ``d`` in (0, b] of ``2 (ln d - ln b) + w (b + d) = 0`` (Moore & Parks 2012).

    The equation places the inflection point of the biexponential at ``x1``, which
    makes the reflected scale smooth there. Safeguarded Newton iteration on a bracket.
    """
    if w == 0:
        return b
    lo, hi = 0.0, b
    d = b / 2
    for _ in range(200):
        g = 2 * (math.log(d) - math.log(b)) + w * (b + d)
        if g > 0:
            hi = d
        else:
            lo = d
        dg = 2 / d + w
        new = d - g / dg
        if not lo < new < hi:
            new = 0.5 * (lo + hi)
        if abs(new - d) <= 1e-15 * d:
            return new
        d = new
    return d


class _HyperlogSolver(_OddSolver):
    """Bagwell (2005) hyperlog in Gating-ML 2.0 form: ``EH(y) = a e^(b y) + c y - f``.

    With ``P = a e^(b x1)``, ``F(delta) = P expm1(b delta) + c delta``.
    """

    def __init__(self, t: float, w: float, m: float, a: float) -> None:
        # Gating-ML 2.0 specification, section on the hyperlog transformation
        self.w = w / (m + a)
        self.x2 = a / (m + a)
        self.x1 = self.x2 + self.w
        self.x0 = self.x2 + 2 * self.w
        self.b = (m + a) * LN10
        e0 = math.exp(self.b * self.x0)
        c_a = e0 / self.w
        f_a = math.exp(self.b * self.x1) + c_a * self.x1
        self.a = t / ((math.exp(self.b) + c_a) - f_a)
        self.c = c_a * self.a
        self.f = f_a * self.a
        self.P = self.a * math.exp(self.b * self.x1)

    def F(self, delta):
        with np.errstate(over="ignore"):
            return self.P * np.expm1(self.b * delta) + self.c * delta

    def dF(self, delta):
        with np.errstate(over="ignore"):
            return self.P * self.b * np.exp(self.b * delta) + self.c


@lru_cache(maxsize=16)
def _logicle_solver(t: float, w: float, m: float, a: float) -> _LogicleSolver:
    return _LogicleSolver(t, w, m, a)


@lru_cache(maxsize=16)
def _hyperlog_solver(t: float, w: float, m: float, a: float) -> _HyperlogSolver:
    return _HyperlogSolver(t, w, m, a)


@lru_cache(maxsize=16)  # 2 MB per table
def _logicle_table(t: float, w: float, m: float, a: float) -> np.ndarray:
    s = _logicle_solver(t, w, m, a)
    return _build_table(s.solve_abs, s.x1)


@lru_cache(maxsize=16)  # 2 MB per table
def _hyperlog_table(t: float, w: float, m: float, a: float) -> np.ndarray:
    s = _hyperlog_solver(t, w, m, a)
    return _build_table(s.solve_abs, s.x1)


@dataclass(frozen=True)
class _Biexponential(Transform):
    t: float = 262144.0
    w: float = 0.5
    m: float = 4.5
    a: float = 0.0

    def _params(self) -> tuple[float, float, float, float]:
        return (float(self.t), float(self.w), float(self.m), float(self.a))

    def _solver(self) -> _OddSolver:  # pragma: no cover
        raise NotImplementedError

    def _table(self) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _forward32(self, x, out, scratch) -> None:
        _table_block(self._table(), x, out, scratch)

    def _forward_blocks(self, x, out) -> None:
        table = self._table()
        n = x.shape[0]
        scratch = _new_scratch(min(n, _BLOCK))
        for start in range(0, n, _BLOCK):
            stop = min(start + _BLOCK, n)
            _table_block(table, x[start:stop], out[start:stop], scratch)

    def _forward64(self, x):
        return self._solver().forward64(x)

    def _inverse64(self, y):
        return self._solver().inverse64(y)

    @property
    def x1(self) -> float:
        """Display value of data value 0."""
        return self._solver().x1


@register_transform("logicle")
@dataclass(frozen=True)
class Logicle(_Biexponential):
    """Logicle ``logicle(x, T, W, M, A)``: the root ``y`` of ``B(y) = x`` (Moore & Parks 2012).

    ``T`` top of scale (mapped to 1.0), ``M`` decades of the full log scale, ``W``
    decades of the near-linear zone around 0, ``A`` extra negative decades.
    """

    def __post_init__(self) -> None:
        _check_top(self)
        _check(self.t > 0, "T must be > 0", self)
        _check(self.m > 0, "M must be > 0", self)
        _check(0 <= self.w <= self.m / 2, "W must be in [0, M/2]", self)
        _check(-self.w <= self.a <= self.m - 2 * self.w, "A must be in [-W, M - 2W]", self)

    def _solver(self):
        return _logicle_solver(*self._params())

    def _table(self):
        return _logicle_table(*self._params())


@register_transform("hyperlog")
@dataclass(frozen=True)
class Hyperlog(_Biexponential):
    """Hyperlog ``hyperlog(x, T, W, M, A)``: the root ``y`` of ``EH(y) = x`` (Bagwell 2005,
    Gating-ML 2.0 parameterisation; same meaning of T, W, M, A as logicle)."""

    def __post_init__(self) -> None:
        _check_top(self)
        _check(self.t > 0, "T must be > 0", self)
        _check(self.m > 0, "M must be > 0", self)
        _check(0 < self.w <= self.m / 2, "W must be in (0, M/2]", self)
        _check(-self.w <= self.a <= self.m - 2 * self.w, "A must be in [-W, M - 2W]", self)

    def _solver(self):
        return _hyperlog_solver(*self._params())

    def _table(self):
        return _hyperlog_table(*self._params())


def estimate_logicle_w(
    values: np.ndarray, t: float = 262144.0, m: float = 4.5, a: float = 0.0, quantile=0.05
) -> float:
    """Logicle ``W`` from the data (Parks, Roederer & Moore 2006, "a new Logicle display").

    ``W = (M - log10(T / |r|)) / 2`` with ``r`` the ``quantile`` (5 %) point of the
    negative values: the linear zone is made just wide enough to hold the spread of
    compensated negatives. Clipped to ``[0, (M - A) / 2]`` and rounded up to 0.01 so that
    samples with similar spread share a table. 0 when there are no negative values.
    """
    v = np.asarray(values).reshape(-1)
    neg = v[v < 0]
    if neg.size == 0:
        return 0.0
    r = float(np.quantile(neg, quantile))
    if r >= 0 or not math.isfinite(r):
        return 0.0
    w = (m - math.log10(t / abs(r))) / 2
    w = min(max(w, 0.0), (m - a) / 2)
    return math.ceil(w * 100 - 1e-9) / 100


# --- per-channel transform specs -----------------------------------------------------------

DEFAULT_SPEC: dict[str, Any] = {
    "default": {"type": "logicle", "t": "range", "w": 0.5, "m": 4.5, "a": 0},
    "scatter": {"type": "linear", "t": "range", "a": 0},
    "time": None,
    "channels": {},
}


@dataclass(frozen=True)
class TransformSpec:
    """Which transform each channel gets, as a small JSON-able spec.

    Keys: ``default`` (fluorescence channels), ``scatter`` (FSC/SSC), ``time``, and
    ``channels`` mapping a marker or channel name (resolved with `immunoprofile.panel`) to
    a transform dict, a bare type name (``"logicle"``: its default parameters with T from
    the channel), or None (left untouched). In a transform dict, ``"t": "range"`` takes
    T from the channel's range (``$PnR``, or ``10**decades`` for log-amplified channels)
    and a logicle ``"w": "auto"`` estimates W per channel from the data
    (`estimate_logicle_w`). The default spec: fluorescence logicle(T=range, W=0.5, M=4.5,
    A=0); scatter linear with T=range (about 0..1); time untouched.
    """

    default: Mapping[str, Any] | None = field(default_factory=lambda: DEFAULT_SPEC["default"])
    scatter: Mapping[str, Any] | None = field(default_factory=lambda: DEFAULT_SPEC["scatter"])
    time: Mapping[str, Any] | None = None
    channels: Mapping[str, Mapping[str, Any] | None] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any] | str | None) -> TransformSpec:
        """Build from a dict, a JSON string, or None (the defaults)."""
        if spec is None:
            return cls()
        if isinstance(spec, TransformSpec):
            return spec
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except json.JSONDecodeError as e:
                raise TransformError(f"transform spec is not valid JSON: {e}") from None
        if not isinstance(spec, Mapping):
            raise TransformError(f"transform spec must be a mapping, got {type(spec).__name__}")
        unknown = set(spec) - {"default", "fluorescence", "scatter", "time", "channels"}
        if unknown:
            raise TransformError(
                f"unknown transform spec keys {sorted(unknown)}; "
                "use default, scatter, time, channels"
            )
        kw: dict[str, Any] = {}
        if "default" in spec or "fluorescence" in spec:
            kw["default"] = spec.get("default", spec.get("fluorescence"))
        for key in ("scatter", "time"):
            if key in spec:
                kw[key] = spec[key]
        if "channels" in spec:
            ch = spec["channels"] or {}
            if not isinstance(ch, Mapping):
                raise TransformError("transform spec 'channels' must map names to transforms")
            kw["channels"] = dict(ch)
        out = cls(**kw)
        # validate the transform dicts now (placeholders are filled per channel later)
        for d in [out.default, out.scatter, out.time, *out.channels.values()]:
            if d is not None:
                _resolve_params(d, 262144.0, None, "<spec>")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "scatter": self.scatter,
            "time": self.time,
            "channels": dict(self.channels),
        }

    def resolve(self, sample) -> dict[int, Transform]:
        """Concrete transform per channel index of ``sample`` (channels left out stay as is)."""

        table = sample.channels
        out: dict[int, Transform] = {}
        explicit: dict[int, Mapping[str, Any] | None] = {}
        if self.channels:
            panel = Panel(sample)
            for name, d in self.channels.items():
                explicit[panel.index(name)] = d
        for i in range(len(table)):
            kind = str(table["kind"].iloc[i])
            if i in explicit:
                d = explicit[i]
            elif kind == "scatter":
                d = self.scatter
            elif kind == "time":
                d = self.time
            else:
                d = self.default
            if d is None:
                continue
            out[i] = _resolve_params(d, _channel_top(table.iloc[i]), sample, i)
        return out


def _channel_top(row) -> float:
    """Top of scale T for one channel-table row."""
    decades = float(row.get("log_decades", 0.0) or 0.0)
    if decades > 0:
        offset = float(row.get("log_offset", 0.0) or 0.0)
        return 10.0**decades * (offset if offset > 0 else 1.0)
    rng = float(row.get("range", 0.0) or 0.0)
    return rng if rng > 0 else 262144.0


def _resolve_params(d: Mapping[str, Any] | Transform, top: float, sample, col) -> Transform:
    """Fill ``"range"``/``"auto"`` placeholders and build the transform."""
    if isinstance(d, Transform):
        return d
    if isinstance(d, str):  # shorthand: "logicle" = that type with T from the channel
        kind, cls = _transform_type(d)
        d = {"type": kind, **({"t": "range"} if "t" in {f.name for f in fields(cls)} else {})}
    if not isinstance(d, Mapping):
        raise TransformError(f"a transform must be a mapping, a type name or None, got {d!r}")
    concrete = {}
    for k, v in d.items():
        key = str(k).lower()
        if isinstance(v, str) and key != "type":
            if v.lower() == "range" and key == "t":
                v = top
            elif v.lower() == "auto" and key == "w":
                continue  # filled below
            else:
                raise TransformError(
                    f"transform parameter {k!r}={v!r}: only 't': 'range' and 'w': 'auto' "
                    "are allowed as words"
                )
        concrete[k] = v
    auto_w = any(str(k).lower() == "w" and str(v).lower() == "auto" for k, v in d.items())
    if auto_w:
        t = float(concrete.get("t", concrete.get("T", 262144.0)))
        m = float(concrete.get("m", concrete.get("M", 4.5)))
        a = float(concrete.get("a", concrete.get("A", 0.0)))
        if sample is not None and isinstance(col, int):
            concrete["w"] = estimate_logicle_w(sample.events[:, col], t, m, a)
        else:
            concrete["w"] = 0.5
    return transform_from_dict(concrete)


def transform(
    sample,
    spec: Mapping[str, Any] | TransformSpec | str | None = None,
    *,
    overwrite: bool = False,
):
    """Apply per-channel display transforms to a `Sample` (float32, vectorised).

    Parameters
    ----------
    sample : the (usually compensated) Sample.
    spec : a `TransformSpec`, its dict or JSON form, or None for the defaults
        (fluorescence logicle T=range W=0.5 M=4.5 A=0, scatter linear to about 0..1,
        time untouched).
    overwrite : write the result into ``sample.events`` instead of a new array: for a
        caller that made that array itself (e.g. by compensating) and drops ``sample``;
        saves one events-sized allocation (memory and time). Same values either way.

    Returns
    -------
    A new Sample whose history ends with
    ``{"step": "transform", "channels": {channel name: transform.to_dict()}}``.
    """
    spec = TransformSpec.from_dict(spec)
    per_channel = spec.resolve(sample)
    ev = sample.events
    new = ev if overwrite and ev.dtype == np.float32 else np.empty_like(ev)
    if not _transform_rows(ev, per_channel, new):
        _transform_columns(ev, per_channel, new)
    names = sample.channel_names
    step = {
        "step": "transform",
        "channels": {names[i]: tr.to_dict() for i, tr in per_channel.items()},
    }
    return sample.with_events(new, step=step)


#: at most this many distinct lookup tables go through the row-major path at once
_ROW_TABLES_MAX = 4


def _transform_rows(ev: np.ndarray, per_channel: dict[int, Transform], new: np.ndarray) -> bool:
    """Row-major path of `transform` when the table transforms (logicle, hyperlog) use few
    distinct tables (e.g. one logicle for every fluorescence channel).

    A table lookup is elementwise, so a row block of the events matrix can go through it as
    one flat array, each column's bins offset into its own table: no transposes. Columns
    with another transform (scatter: linear) or none (time) are then redone from a copy of
    their input, onto strided views. The same per-value arithmetic as the column path, so
    the same values; ``new`` may be ``ev`` (in place). Returns False (nothing done) when it
    does not apply."""
    n, n_ch = ev.shape
    tables: list[np.ndarray] = []
    slot: dict[int, int] = {}  # id of a table -> its position in ``tables``
    column_table = np.zeros(n_ch, dtype=np.intp)
    for i, tr in per_channel.items():
        if isinstance(tr, _Biexponential):
            table = tr._table()
            if id(table) not in slot:
                slot[id(table)] = len(tables)
                tables.append(table)
            column_table[i] = slot[id(table)]
    if not tables or len(tables) > _ROW_TABLES_MAX or n == 0 or not ev.flags.c_contiguous:
        return False
    if len(tables) == 1:
        table, offset = tables[0], None
    else:  # each column's bins offset into its own table of the concatenation
        table, offset = np.concatenate(tables), column_table * len(tables[0])
    # columns without a table: kept aside before the table pass (which may overwrite them
    # when ``new`` is ``ev``), then transformed or copied back from there
    rest = [i for i in range(n_ch) if not isinstance(per_channel.get(i), _Biexponential)]
    rows = max(1, _BLOCK // n_ch)
    scratch = _new_scratch(rows * n_ch)
    kept = np.empty((len(rest), rows), dtype=np.float32)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        m = stop - start
        block_in, block_out = ev[start:stop], new[start:stop]
        if rest:
            np.copyto(kept[:, :m], block_in[:, rest].T)
        _table_block(table, block_in.reshape(-1), block_out.reshape(-1), scratch, offset)
        for j, i in enumerate(rest):
            tr = per_channel.get(i)
            if tr is None:
                block_out[:, i] = kept[j, :m]
            else:
                tr._forward32(kept[j, :m], block_out[:, i], scratch)
    return True


def _transform_columns(ev: np.ndarray, per_channel: dict[int, Transform], new: np.ndarray) -> None:
    """Column path of `transform`: row blocks transposed so each channel is contiguous."""
    n, n_ch = ev.shape
    block = min(max(n, 1), _BLOCK // 2)
    scratch = _new_scratch(block)
    cols = np.empty((n_ch, block), dtype=np.float32)
    done = np.empty((n_ch, block), dtype=np.float32)
    tables = {i: tr._table() for i, tr in per_channel.items() if isinstance(tr, _Biexponential)}
    # Row blocks, transposed so that each channel is contiguous while it is transformed
    # (a column of the events matrix is strided); the block stays in cache throughout.
    for start in range(0, n, block):
        stop = min(start + block, n)
        m = stop - start
        c, d = cols[:, :m], done[:, :m]
        np.copyto(c, ev[start:stop].T)
        np.copyto(d, c)
        for i, tr in per_channel.items():
            if i in tables:
                _table_block(tables[i], c[i], d[i], scratch)
            else:
                tr._forward32(c[i], d[i], scratch)
        np.copyto(new[start:stop], d.T)


def inverse_transform(sample):
    """Undo the most recent `transform` step using the parameters it recorded."""
    record = None
    for h in reversed(sample.history):
        step = h.get("step")
        if step == "transform":
            record = h
            break
        if step in ("inverse_transform", "compensate", "decompensate"):
            break
    if record is None:
        raise TransformError(
            f"{sample.name or '<sample>'}: no transform step to undo in its history "
            f"{[h.get('step') for h in sample.history]}"
        )
    names = sample.channel_names
    new = sample.events.copy()
    for name, d in record["channels"].items():
        if name not in names:
            raise TransformError(
                f"{sample.name or '<sample>'}: recorded transform channel {name!r} is not in "
                f"the sample"
            )
        i = names.index(name)
        new[:, i] = transform_from_dict(d).inverse(sample.events[:, i])
    return sample.with_events(
        new, step={"step": "inverse_transform", "channels": dict(record["channels"])}
    )


def transforms_from_history(sample) -> dict[str, Transform]:
    """The transforms of the most recent transform step, by channel name (may be empty)."""
    for h in reversed(sample.history):
        if h.get("step") == "transform":
            return {k: transform_from_dict(v) for k, v in h["channels"].items()}
    return {}


__all__ = [
    "TRANSFORM_TYPES",
    "Arcsinh",
    "AsinhCofactor",
    "Hyperlog",
    "Linear",
    "Log",
    "Logicle",
    "Transform",
    "TransformSpec",
    "estimate_logicle_w",
    "inverse_transform",
    "transform",
    "transform_from_dict",
    "transforms_from_history",
]
