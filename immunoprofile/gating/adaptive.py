"""Data-adaptive gates: estimators whose position is fitted to each sample.

Fixed gate coordinates do not transfer between files acquired on different days (voltage
drift, staining intensity, scatter scale). An adaptive gate is an estimator in the
scikit-learn sense: its hyperparameters are given in ``__init__`` and stored as given,
``fit(X)`` learns the position (``threshold_``, ``mean_`` ...) from the parent population's
events, and the fitted result is a *static* gate from `immunoprofile.gating.gates`
(``gate_``) that is used for the mask, written out per sample and drawn on plots.

Every estimator has

* **bounds** (``search``/``bounds``): where the fitted position may lie;
* a **fallback**: a documented default position used when the data give no answer (too few
  events, one peak where two were expected, a fit outside its bounds). ``fallback_`` and
  ``reason_`` say whether and why it was used;
* a record of what was fitted (``params_``), JSON-ready.

Fits run on at most ``max_events`` events drawn without replacement with a seeded
generator (``random_state``), so a gate on a million-event parent costs the same as one on
50,000 events and results are reproducible. Everything is vectorised over events; densities
are Gaussian-smoothed histograms on a fixed grid (a binned kernel density estimate).

Estimators (``type`` in templates):

==================  =====  ==============================================================
``density_min``     1-D    lowest density between the two main peaks (after openCyto's
                           ``mindensity``), searched inside ``search``
``quantile``        1-D    a quantile of the parent's values
``tail``            1-D    where the density of the main peak falls below ``tol`` times its
                           height, on one side (after openCyto's ``tailgate``)
``gmm``             1-D    Gaussian mixture; the cut where the posterior of the upper
                           components reaches ``posterior`` (0.5: the Bayes cut)
``gmm``             2-D    Gaussian mixture; ellipse of one chosen component
``thresholds``      n-D    one 1-D method per dimension combined by signs into a quadrant
                           (2-D) or rectangle, e.g. CXCR3- CCR6+
``singlets``        2-D    FSC-A against FSC-H: robust line through the singlet diagonal
                           and a band around it (doublets have excess area)
``blob``            2-D    the lymphocyte cloud on FSC/SSC: mixture component -> ellipse
``hilo``            2-D    "high/low" populations such as CD25hi CD127lo: a two-group
                           mixture, the discriminant line between the target group and
                           the rest, as a polygon (``cut="projection"``: placed at the
                           Bayes point of a 1-D mixture on the projections)
==================  =====  ==============================================================
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import statistics
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from immunoprofile._json import jsonable
from immunoprofile._peaks import find_peaks
from immunoprofile._threads import one_thread
from immunoprofile.exceptions import GatingError, TemplateError
from immunoprofile.gating.gates import (
    EllipseGate,
    Gate,
    PolygonGate,
    QuadrantGate,
    RangeGate,
    RectangleGate,
    gate_from_dict,
)
from immunoprofile.gating.mixture import GaussianMixtureEM, MixtureFitError, chi2_quantile
from immunoprofile.gating.qc import all_finite

ADAPTIVE_TYPES: dict[str, type[AdaptiveGate]] = {}
_PARAM_NAMES: dict[type, tuple[str, ...]] = {}  # class -> its __init__ parameter names

_MIN_FIT_EVENTS = 10  # below this no estimator tries to learn anything


def register_adaptive(type_name: str):
    """Class decorator: make an adaptive gate constructible from a template ``"type"``."""

    def deco(cls):
        cls.type_name = type_name
        ADAPTIVE_TYPES[type_name] = cls
        return cls

    return deco


def _as_columns(X: Any, n_dims: int | None) -> list[np.ndarray]:
    """Accept a 1-D array, an (n, d) array or a sequence of d 1-D arrays; return columns."""
    if isinstance(X, np.ndarray):
        if X.ndim == 1:
            cols = [X]
        elif X.ndim == 2:
            cols = [X[:, j] for j in range(X.shape[1])]
        else:
            raise GatingError(f"expected 1-D or 2-D values, got shape {X.shape}")
    else:
        cols = [np.asarray(c) for c in X]
    if n_dims is not None and len(cols) != n_dims:
        raise GatingError(f"expected {n_dims} column(s) of values, got {len(cols)}")
    if len({len(c) for c in cols}) > 1:
        raise GatingError("columns of values have different lengths")
    return cols


def _sign_ok(sign: str, where: str) -> str:
    if sign not in ("+", "-"):
        raise TemplateError(f"{where}: side/sign must be '+' or '-', got {sign!r}")
    return sign


def _range_gate(dim: str, threshold: float, side: str) -> RangeGate:
    t = float(threshold)
    return RangeGate(dims=(dim,), min=t) if side == "+" else RangeGate(dims=(dim,), max=t)


class AdaptiveGate:
    """Base class of data-adaptive gates (see the module docstring).

    Subclasses set ``n_dims`` (an int, or None for any number), implement ``_fit`` (learn
    from finite, subsampled columns; return the static gate and the fitted parameters, or
    raise `_NoFit` with a reason) and ``_fallback_gate`` (the documented default).
    """

    type_name: ClassVar[str] = "adaptive"
    n_dims: ClassVar[int | None] = 1

    # hyperparameters every estimator takes (set by subclasses' __init__)
    dims: tuple[str, ...]
    max_events: int
    random_state: int | None

    # --- scikit-learn style plumbing -------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        # inspect.signature costs tens of microseconds and every clone, to_dict and shared
        # fit key asks for it: read it once per class
        names = _PARAM_NAMES.get(cls)
        if names is None:
            sig = inspect.signature(cls.__init__)
            names = _PARAM_NAMES[cls] = tuple(p for p in sig.parameters if p != "self")
        return list(names)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Hyperparameters as given to ``__init__`` (scikit-learn's estimator contract, so
        `sklearn.base.clone` and grid searches work; no parameter is itself an estimator,
        so ``deep`` changes nothing)."""
        return {p: getattr(self, p) for p in self._param_names()}

    def set_params(self, **params: Any) -> AdaptiveGate:
        """Set hyperparameters by name (scikit-learn's contract); returns the gate, unfitted
        parameters checked as ``__init__`` checks them."""
        names = set(self._param_names())
        unknown = sorted(set(params) - names)
        if unknown:
            raise TemplateError(
                f"{type(self).__name__}: unknown parameter(s) {unknown}; it has {sorted(names)}"
            )
        merged = {**self.get_params(), **params}
        fresh = type(self)(**merged)
        self.__dict__.update(fresh.__dict__)
        return self

    def clone(self, **overrides: Any) -> AdaptiveGate:
        """An unfitted copy with the same hyperparameters (``overrides`` replace some)."""
        params = copy.deepcopy(self.get_params())
        params.update(overrides)
        return type(self)(**params)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready hyperparameters (the template form); ``random_state`` is left out."""
        out: dict[str, Any] = {"type": self.type_name}
        for k, v in self.get_params().items():
            if k == "random_state":
                continue
            out[k] = jsonable(v)
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_common(self) -> None:
        # keep the very object given when it is already a tuple of names: scikit-learn's
        # clone checks that __init__ stores its parameters unchanged
        if not (isinstance(self.dims, tuple) and all(isinstance(d, str) for d in self.dims)):
            self.dims = tuple(str(d) for d in self.dims)
        if self.n_dims is not None and len(self.dims) != self.n_dims:
            raise TemplateError(
                f"{self.type_name} gate takes {self.n_dims} dimension(s), got {list(self.dims)}"
            )
        if not self.dims:
            raise TemplateError(f"{self.type_name} gate: no dimensions given")
        if int(self.max_events) < _MIN_FIT_EVENTS:
            raise TemplateError(f"{self.type_name} gate: max_events must be >= {_MIN_FIT_EVENTS}")

    # --- fitting --------------------------------------------------------------------------

    def fit(
        self,
        X: Any,
        y: None = None,
        *,
        cache: dict | None = None,
        controls: dict[str, np.ndarray] | None = None,
        fmo: dict[str, tuple[str, np.ndarray]] | None = None,
    ) -> AdaptiveGate:
        """Learn the gate position from the parent population's values.

        Parameters
        ----------
        X : a 1-D array (one dimension), an (n_events, n_dims) array, or a sequence of
            ``n_dims`` 1-D arrays, in the order of ``dims``.
        cache : optional dict shared by gates fitted on the same events (the engine keeps
            one per parent population). A 1-D cut does not depend on the side it keeps, so
            sibling gates such as CD45RA+ and CD45RA- reuse one fit.
        controls : dimension -> the values of that marker on the gate's internal control
            population (see `control_specs`), for gates that name one.
        fmo : dimension -> ``(label, values)``: the marker's values on the same parent
            population in a fluorescence-minus-one control file (stained with everything
            but that marker), and the file's name for the record.

        Returns
        -------
        self, with ``gate_``, ``fallback_``, ``reason_``, ``params_`` and ``n_fit_`` set.
        """
        self._controls = controls or {}
        self._fmo = fmo or {}
        key = self._shared_key() if cache is not None and not self._fmo else None
        if key is not None and key in cache:
            return self._restore(cache[key])
        self._fit_columns(X, cache)
        if key is not None:
            cache[key] = {
                "threshold": self.threshold_,
                "params": self.params_,
                "fallback": self.fallback_,
                "reason": self.reason_,
                "n_fit": self.n_fit_,
            }
        return self

    def _shared_key(self) -> str | None:
        """Key under which a fit can be shared: 1-D cuts only, side left out."""
        if len(self.dims) != 1 or not hasattr(self, "side"):
            return None
        d = self.to_dict()
        d.pop("side", None)
        d["random_state"] = self.random_state
        return json.dumps(d, sort_keys=True, default=str)

    def _restore(self, rec: dict[str, Any]) -> AdaptiveGate:
        self.threshold_ = float(rec["threshold"])
        self.params_ = rec["params"]
        self.fallback_ = bool(rec["fallback"])
        self.reason_ = rec["reason"]
        self.n_fit_ = int(rec["n_fit"])
        self.gate_ = _range_gate(self.dims[0], self.threshold_, self.side)
        return self

    def _fit_columns(self, X: Any, cache: dict | None = None) -> AdaptiveGate:
        cols = _as_columns(X, len(self.dims))
        n = len(cols[0])
        finite: np.ndarray | None = None  # None: every value is finite (the usual case)
        for c in cols:
            if all_finite(c):
                continue
            ok = np.isfinite(c)
            if not ok.all():
                finite = ok if finite is None else finite & ok
        # rows to fit on: None for all of them
        idx: np.ndarray | None = None if finite is None else np.flatnonzero(finite)
        n_ok = n if idx is None else len(idx)
        if n_ok > self.max_events:
            # with every value finite the subsample depends only on (n, size, seed): gates
            # on the same parent (the parts of a thresholds gate, siblings) draw it once
            shared = cache is not None and finite is None
            key = ("subsample", n, int(self.max_events), self.random_state)
            sample = cache.get(key) if shared else None
            if sample is None:
                # Generator.choice(n) draws what choice(np.arange(n)) draws
                rng = np.random.default_rng(self.random_state)
                pool = n if idx is None else idx
                sample = np.sort(rng.choice(pool, size=int(self.max_events), replace=False))
                if shared:
                    cache[key] = sample
            idx = sample
        sub = [np.asarray(c if idx is None else c[idx], dtype=np.float64) for c in cols]
        self.n_fit_ = n_ok if idx is None else len(idx)
        if self.n_fit_ < max(_MIN_FIT_EVENTS, self._min_fit_events()):
            return self._use_fallback(f"too few events to fit ({self.n_fit_})")
        try:
            gate, params = self._fit(sub)
        except _NoFit as exc:
            return self._use_fallback(str(exc))
        self.gate_ = gate
        self.params_ = jsonable(params)
        self.fallback_ = False
        self.reason_ = None
        return self

    def control_specs(self) -> dict[str, dict[str, Any]]:
        """Dimension -> internal control spec (``population``, optional ``exclude``) for
        the dimensions whose cut may come from a control population of the same file."""
        spec = getattr(self, "control", None)
        return {self.dims[0]: spec} if spec and len(self.dims) == 1 else {}

    def use_fallback(self, reason: str) -> AdaptiveGate:
        """Set the fitted state to the documented default position, with ``reason``."""
        self.n_fit_ = 0
        return self._use_fallback(reason)

    def _use_fallback(self, reason: str) -> AdaptiveGate:
        self.gate_ = self._fallback_gate()
        self.params_ = {"fallback_position": jsonable(self.gate_.to_dict())}
        self.fallback_ = True
        self.reason_ = reason
        return self

    def mask(self, columns: Sequence[np.ndarray]) -> np.ndarray:
        """Boolean mask of the fitted gate (``fit`` must have been called)."""
        return self._fitted().mask(columns)

    def _fitted(self) -> Gate:
        gate = getattr(self, "gate_", None)
        if gate is None:
            raise GatingError(f"{type(self).__name__} is not fitted; call fit() first")
        return gate

    def fitted_dict(self) -> dict[str, Any]:
        """The fitted static gate's ``to_dict()`` plus ``fallback``, ``reason`` and ``params``."""
        out = self._fitted().to_dict()
        out["fallback"] = bool(self.fallback_)
        out["reason"] = self.reason_
        out["params"] = self.params_
        out["method"] = self.type_name
        return out

    # --- for subclasses -------------------------------------------------------------------

    def _min_fit_events(self) -> int:
        return _MIN_FIT_EVENTS

    def _fit(self, cols: list[np.ndarray]) -> tuple[Gate, dict[str, Any]]:  # pragma: no cover
        raise NotImplementedError

    def _fallback_gate(self) -> Gate:  # pragma: no cover
        raise NotImplementedError


class _NoFit(Exception):
    """Raised inside ``_fit`` when the data give no answer; the message is the reason."""


# --- density on a grid --------------------------------------------------------------------


def binned_density(
    x: np.ndarray,
    *,
    adjust: float = 1.0,
    n_grid: int = 512,
    span: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian kernel density of ``x`` on an even grid (binned KDE).

    The bandwidth is Silverman's rule of thumb, ``0.9 min(sd, IQR/1.34) n^-1/5``, times
    ``adjust``. The histogram is smoothed with a Gaussian filter of that width, which equals
    a kernel density estimate up to the bin width.

    Returns
    -------
    grid, density (integrating to ~1 over the grid), bandwidth.
    """
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    # one partition pass for all the quantiles needed (same values as separate calls)
    qs = np.percentile(x, [25, 75, 0.05, 99.95] if span is None else [25, 75])
    q25, q75 = qs[0], qs[1]
    sd = float(np.std(x))
    spread = min(sd, (q75 - q25) / 1.34) if q75 > q25 else sd
    if not spread > 0:
        spread = max(abs(float(np.median(x))) * 0.01, 1e-6)
    bw = 0.9 * spread * n ** (-0.2) * float(adjust)
    if span is None:
        lo, hi = float(qs[2]) - 3 * bw, float(qs[3]) + 3 * bw
    else:
        lo, hi = float(span[0]), float(span[1])
    if hi <= lo:
        hi = lo + 1e-6
    # equal bins given by count and range: numpy bins them by arithmetic, not by sorting
    # the values, and returns the counts of np.histogram(x, np.linspace(lo, hi, n_grid + 1))
    counts, edges = np.histogram(x, bins=n_grid, range=(lo, hi))
    width = edges[1] - edges[0]
    dens = gaussian_filter1d(counts.astype(np.float64), sigma=max(bw / width, 0.5), mode="constant")
    dens /= max(n * width, 1e-300)
    grid = 0.5 * (edges[:-1] + edges[1:])
    return grid, dens, bw


def _peaks(dens: np.ndarray, min_prominence: float) -> np.ndarray:
    """Indices of density peaks whose prominence is at least ``min_prominence`` x the max."""
    padded = np.concatenate([[0.0], dens, [0.0]])  # so that edge maxima count as peaks
    idx, _ = find_peaks(padded, min_prominence * float(dens.max()))
    return idx - 1


def _merge_shallow(dens: np.ndarray, peaks: np.ndarray, min_depth: float) -> np.ndarray:
    """Drop peaks separated from a neighbour by a valley shallower than ``min_depth``.

    A valley between two populations dips well below the lower of its two flanking peaks;
    one at, say, 97 % of it is a ripple of the kernel estimate on top of a single
    population (a narrow bandwidth on a large, tight peak makes them). Such a ripple passes
    a prominence test scaled to the highest peak when that test is set low enough to keep a
    small population's peak. While some valley has ``dens[valley] > (1 - min_depth) x``
    the lower flanking peak, the lower peak of the shallowest such pair is dropped.
    """
    peaks = [int(p) for p in peaks]
    if min_depth <= 0:
        return np.asarray(peaks, dtype=np.intp)
    while len(peaks) > 1:
        ratios = []
        for a, b in zip(peaks[:-1], peaks[1:]):
            low = float(dens[a : b + 1].min())
            ratios.append(low / max(min(float(dens[a]), float(dens[b])), 1e-300))
        worst = int(np.argmax(ratios))
        if ratios[worst] <= 1.0 - min_depth:
            break
        a, b = peaks[worst], peaks[worst + 1]
        peaks.remove(a if dens[a] < dens[b] else b)
    return np.asarray(peaks, dtype=np.intp)


# --- 1-D estimators ----------------------------------------------------------------------


class _OneDimGate(AdaptiveGate):
    n_dims = 1

    def _check_1d(self) -> None:
        self._check_common()
        _sign_ok(self.side, f"{self.type_name} gate on {self.dims[0]}")
        for name in ("search", "bounds"):
            rng = getattr(self, name, None)
            if rng is not None:
                if len(rng) != 2 or not float(rng[0]) < float(rng[1]):
                    raise TemplateError(
                        f"{self.type_name} gate on {self.dims[0]}: {name} must be [low, high] "
                        f"with low < high, got {rng}"
                    )

    def _fallback_gate(self) -> Gate:
        return _range_gate(self.dims[0], self._fallback_threshold(), self.side)

    def _fallback_threshold(self) -> float:
        if self.fallback is not None:
            return float(self.fallback)
        rng = getattr(self, "search", None) or getattr(self, "bounds", None)
        if rng is not None:
            return 0.5 * (float(rng[0]) + float(rng[1]))
        return 0.5

    def _finish(self, threshold: float, params: dict[str, Any]) -> tuple[Gate, dict[str, Any]]:
        bounds = getattr(self, "bounds", None)
        if bounds is not None and not (float(bounds[0]) <= threshold <= float(bounds[1])):
            raise _NoFit(f"fitted threshold {threshold:.4g} outside bounds {list(bounds)}")
        self.threshold_ = float(threshold)
        params = {"threshold": float(threshold), **params}
        return _range_gate(self.dims[0], threshold, self.side), params

    def _use_fallback(self, reason: str) -> AdaptiveGate:
        super()._use_fallback(reason)
        self.threshold_ = self._fallback_threshold()
        return self


#: The ways `DensityMinimumGate` picks one valley among several.
_VALLEYS = ("lowest", "first", "last", "above_mode", "below_mode")
#: ``absent``: peaks above the negative one lower than this share of its height are
#: taken for ripples or a small positive group (66 monocytes among 75,000 singlets reach
#: 0.08 % of the lymphocytes' CD14 peak): the cut goes where the negative peak tails
#: off, which leaves such a group out as well. A taller peak above it with no valley in
#: the search range means the marker does not look as the template expects: fallback,
#: flagged
ABSENT_PEAK_SHARE = 0.01


@register_adaptive("density_min")
class DensityMinimumGate(_OneDimGate):
    """Threshold at the lowest density between the two main peaks of one marker.

    After openCyto's ``mindensity``: a Gaussian kernel density (binned, Silverman bandwidth
    times ``adjust``); peaks with prominence below ``min_prominence`` of the highest are
    ignored; among the valleys between consecutive peaks that lie inside ``search``, the
    lowest wins (``valley="lowest"``), or the first or last along the axis (``"first"``:
    the cut right above the lowest population, e.g. negatives against dim and bright
    positives), or the first valley above / last below the highest peak (``"above_mode"``
    / ``"below_mode"``: the edge of the dominant population, e.g. CD38hi B cells against the
    CD38lo majority, whatever minor peaks sit on the mode's other side). Peaks whose valley to a neighbour is shallower than ``min_depth`` (the
    valley density above ``1 - min_depth`` of the lower flanking peak) are merged into the
    higher one first, so a ripple on top of one population is never taken for a valley
    between two. With fewer than two peaks, or no valley inside ``search``, the gate
    falls back to ``fallback`` (default: the middle of ``search``, or 0.5).

    Parameters
    ----------
    dims : the one marker, e.g. ``("CD3",)``.
    side : ``"+"`` keeps events at or above the threshold, ``"-"`` below it.
    search : ``(low, high)`` range the threshold must lie in (None: anywhere).
    adjust : bandwidth multiplier (larger smooths more).
    min_prominence : peaks lower than this fraction of the highest peak are ignored.
    valley : which valley inside ``search`` wins: ``"lowest"``, ``"first"``, ``"last"``,
        ``"above_mode"`` or ``"below_mode"``.
    min_depth : a valley must lie at least this fraction below the lower of its two
        flanking peaks (0 turns the check off).
    control : where the parent shows no valley, an internal control: ``{"population":
        name, "exclude": [names], "kind": "negative" | "positive", "quantile": 0.99}``,
        a population of the same file known negative (cut at its ``quantile``) or
        positive (cut at its ``1 - quantile``) for the marker; the engine passes its
        values (``fit(..., controls={dim: values})``). With ``"mirror": true`` the
        quantile is that of the control's main peak mirrored from its far half
        (`_mirrored_peak_cut`), so the parent itself can be the control of a "hi"
        subset. See `_control_cut`.
    mixture : where neither a valley nor a control gives a cut, the Bayes cut of a
        two-component mixture of the parent, if the data support two (`_mixture_cut`).
    absent : where the parent shows a single peak lying below ``search``, take it for
        the negative population with no positive one present and cut where it tails off
        (`_absent_cut`) instead of falling back: e.g. CD14 in a lymphocyte gate that left
        every monocyte out. Tried right after the valley.
    fallback : default threshold (the last resort; ``params_["control"]`` records which
        source gave the cut, ``reason_`` every reason the others failed).
    max_events, random_state : subsampling for the fit.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = np.concatenate([rng.normal(0.2, 0.05, 5000), rng.normal(0.7, 0.05, 5000)])
    >>> g = DensityMinimumGate(("CD3",), side="+", search=(0.3, 0.6)).fit(x)
    >>> 0.4 < g.threshold_ < 0.5
    True
    """

    def __init__(
        self,
        dims: Sequence[str],
        side: str = "+",
        search: Sequence[float] | None = None,
        adjust: float = 1.0,
        min_prominence: float = 0.03,
        valley: str = "lowest",
        min_depth: float = 0.1,
        control: dict[str, Any] | list[dict[str, Any]] | None = None,
        mixture: bool = False,
        absent: bool = False,
        fallback: float | None = None,
        max_events: int = 50_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.side = side
        self.search = search
        self.adjust = adjust
        self.min_prominence = min_prominence
        self.valley = valley
        self.min_depth = min_depth
        self.control = control
        self.mixture = mixture
        self.absent = absent
        self.fallback = fallback
        self.max_events = max_events
        self.random_state = random_state
        self._check_1d()
        _check_control(control, f"density_min gate on {self.dims[0]}")
        if valley not in _VALLEYS:
            raise TemplateError(
                f"density_min gate on {self.dims[0]}: valley must be one of "
                f"{', '.join(repr(v) for v in _VALLEYS)}, got {valley!r}"
            )
        if not 0.0 <= float(min_depth) < 1.0:
            raise TemplateError(
                f"density_min gate on {self.dims[0]}: min_depth must be in [0, 1), got {min_depth!r}"
            )

    def _fit(self, cols):
        try:
            return self._fit_valley(cols)
        except _NoFit as exc:
            valley_reason = str(exc)
        if self.absent:
            try:
                return self._finish(*self._absent_cut(cols[0]))
            except _NoFit:
                pass
        # one peak (or no valley where one must be): an FMO control file, an internal
        # control population, then a mixture
        tried = [valley_reason]
        if self.dims[0] in getattr(self, "_fmo", {}):
            try:
                return self._finish(*_fmo_cut(self, valley_reason))
            except _NoFit as exc:
                tried.append(str(exc))
        if self.control:
            try:
                return self._finish(*_control_cut(self, valley_reason))
            except _NoFit as exc:
                tried.append(str(exc))
        if self.mixture:
            try:
                return self._finish(*_mixture_cut(cols[0], self.dims[0], self.random_state))
            except _NoFit as exc:
                tried.append(str(exc))
        raise _NoFit("; ".join(tried))

    def _absent_cut(self, x: np.ndarray) -> tuple[float, dict[str, Any]]:
        """With ``absent``: the parent's highest peak lies below ``search`` and no peak
        above it reaches `ABSENT_PEAK_SHARE` of its height: it is the negative population
        and no positive one worth a valley is present (e.g. a few dozen monocytes left on
        CD14 among 75,000 lymphocytes, whose ripples gave no valley in the range; peaks
        below the negative one, such as events pushed down by compensation, say nothing
        of a positive population). The cut is where that peak tails off, as
        `TailGate` with ``tol`` 0.01 and ``mirror`` 1.5 finds it, but not below the
        search range (where the template expects a valley: the whole negative peak, with
        the spillover spreading of its brighter cells, stays on its side)."""
        grid, dens, _ = binned_density(x, adjust=self.adjust)
        peaks = _merge_shallow(dens, _peaks(dens, self.min_prominence), float(self.min_depth))
        if len(peaks) == 0 or self.search is None:
            raise _NoFit("no peak below the search range")
        main = peaks[int(np.argmax(dens[peaks]))]
        if grid[main] >= float(self.search[0]):
            raise _NoFit("the highest peak is not below the search range")
        if any(dens[p] > ABSENT_PEAK_SHARE * dens[main] for p in peaks if p > main):
            raise _NoFit("a peak above the negative one")
        tail = TailGate(
            self.dims, side="-", tol=0.01, mirror=1.5, adjust=self.adjust, max_events=len(x)
        )
        _, params = tail._fit([x])
        cut = max(float(params["threshold"]), float(self.search[0]))
        return cut, {
            **{k: v for k, v in params.items() if k != "threshold"},
            "tail": float(params["threshold"]),
            "control": "tail of the negative peak (no positive population present)",
        }

    def _fit_valley(self, cols):
        grid, dens, bw = binned_density(cols[0], adjust=self.adjust)
        peaks = _merge_shallow(dens, _peaks(dens, self.min_prominence), float(self.min_depth))
        if len(peaks) < 2:
            raise _NoFit(f"{len(peaks)} density peak(s) on {self.dims[0]}, need 2")
        lo, hi = (-np.inf, np.inf) if self.search is None else map(float, self.search)
        valleys = [a + int(np.argmin(dens[a : b + 1])) for a, b in zip(peaks[:-1], peaks[1:])]
        mode = peaks[int(np.argmax(dens[peaks]))]
        if self.valley == "above_mode":
            valleys = [v for v in valleys if v > mode][:1]
        elif self.valley == "below_mode":
            valleys = [v for v in valleys if v < mode][-1:]
        valleys = [v for v in valleys if lo <= grid[v] <= hi]
        if not valleys:
            where = "" if self.search is None else f" inside search range {list(self.search)}"
            side = {"above_mode": " above", "below_mode": " below"}.get(self.valley, "")
            raise _NoFit(
                f"no valley{side} {'the highest peak' if side else 'between peaks'}{where} "
                f"on {self.dims[0]}"
            )
        if self.valley == "lowest":
            best = min(valleys, key=lambda v: dens[v])
        elif self.valley == "last":
            best = valleys[-1]
        else:  # "first"; "above_mode"/"below_mode" kept at most one valley above
            best = valleys[0]
        return self._finish(
            float(grid[best]),
            {
                "peaks": [float(grid[p]) for p in peaks],
                "valley_density": float(dens[best] / dens.max()),
                "bandwidth": bw,
                "control": "density valley of the parent",
            },
        )


def _check_control(control: Any, where: str) -> None:
    """Validate an internal control spec, or a list of them (see `DensityMinimumGate`)."""
    if control is None:
        return
    if isinstance(control, list):
        if not control:
            raise TemplateError(f"{where}: control list is empty")
        for one in control:
            _check_control(one, where)
        return
    if not isinstance(control, dict) or not isinstance(control.get("population"), str):
        raise TemplateError(f"{where}: control must be a dict with a 'population' name")
    unknown = set(control) - {"population", "exclude", "kind", "quantile", "mirror"}
    if unknown:
        raise TemplateError(f"{where}: control has no field(s) {sorted(unknown)}")
    if control.get("kind", "negative") not in ("negative", "positive"):
        raise TemplateError(f"{where}: control kind must be 'negative' or 'positive'")
    q = float(control.get("quantile", 0.99))
    if not 0.5 <= q < 1.0:
        raise TemplateError(f"{where}: control quantile must be in [0.5, 1), got {q}")
    ex = control.get("exclude", [])
    if not isinstance(ex, list) or not all(isinstance(e, str) for e in ex):
        raise TemplateError(f"{where}: control exclude must be a list of population names")
    if not isinstance(control.get("mirror", False), bool):
        raise TemplateError(f"{where}: control mirror must be true or false")


#: a control population needs at least this many events to place a cut
_MIN_CONTROL_EVENTS = 200


def _control_cut(gate: _OneDimGate, why: str) -> tuple[float, dict[str, Any]]:
    """Cut from an internal control population of the same file.

    A population known negative for the marker (``kind="negative"``, e.g. T cells for IgD
    or CD24 on B cells) sets the cut at its ``quantile`` (default 0.99): the level above
    which only 1 % of certainly negative cells lie, the way an expert reads a fluorescence
    minus one or an unstained control. A known-positive population (``"positive"``) sets
    it at its ``1 - quantile`` quantile. The control's values come from the engine
    (``fit(..., controls=)``); `_NoFit` when it gave none or too few. With a list of
    controls (one array of values each), every one must be cleared: the strictest cut
    for the gate's side wins, e.g. IgD+ B cells above the T cells' IgD and inside the
    B cells' own IgD+ peak.
    """
    specs = gate.control if isinstance(gate.control, list) else [gate.control or {}]
    given = getattr(gate, "_controls", {}).get(gate.dims[0])
    if len(specs) == 1:
        return _one_control_cut(gate, specs[0], given, why)
    if given is None:
        given = [None] * len(specs)
    cuts = [_one_control_cut(gate, sp, v, why) for sp, v in zip(specs, given)]
    # every control must be cleared: the strictest cut for the side kept
    pick = max if gate.side == "+" else min
    t, params = pick(cuts, key=lambda c: c[0])
    return t, {
        **params,
        "control": " and ".join(c[1]["control"] for c in cuts) + " (the stricter cut)",
        "control_cuts": [c[0] for c in cuts],
    }


def _one_control_cut(
    gate: _OneDimGate, spec: dict[str, Any], values: Any, why: str
) -> tuple[float, dict[str, Any]]:
    """The cut from one control spec and its values (see `_control_cut`)."""
    dim = gate.dims[0]
    name = spec.get("population", "?")
    if spec.get("exclude"):
        name += " not " + " or ".join(spec["exclude"])
    if values is None:
        raise _NoFit(f"no values of control population {name} on {dim}")
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < _MIN_CONTROL_EVENTS:
        raise _NoFit(f"control population {name} has {len(values)} events on {dim}")
    kind = spec.get("kind", "negative")
    q = float(spec.get("quantile", 0.99))
    extra: dict[str, Any] = {}
    if spec.get("mirror"):
        t, extra = _mirrored_peak_cut(values, q, kind, dim, name)
        source = (
            f"main peak of {kind} control population {name}, mirrored from its "
            f"{'dim' if kind == 'negative' else 'bright'} half ({100 * q:g}th percentile"
            f"{'' if kind == 'negative' else ' from the top'})"
        )
    else:
        t = float(np.quantile(values, q if kind == "negative" else 1.0 - q))
        source = (
            f"{kind} control population {name} ({100 * q:g}th percentile"
            f"{'' if kind == 'negative' else ' from the top'})"
        )
    lo, hi = (None, None) if gate.search is None else map(float, gate.search)
    return t, {
        "control": source,
        **extra,
        "control_events": int(len(values)),
        "why": why,
        "search": None if lo is None else [lo, hi],
    }


def _mirrored_peak_cut(
    values: np.ndarray, q: float, kind: str, dim: str, name: str
) -> tuple[float, dict[str, Any]]:
    """Cut at the ``q`` quantile of a control's main peak taken as a normal curve whose
    width is read on the peak's far side from the cut (its dim half for a ``negative``
    control, bright half for a ``positive`` one): the half width at half maximum of the
    density, over sqrt(2 ln 2). The events on the near side (a shoulder of brighter
    cells without a valley of their own, e.g. CD38hi transitional B cells above the
    mature naive B cells) do not widen it, so the control may be the parent population
    itself: the cut then says "brighter than the bulk of the parent", the way an expert
    reads a "hi" subset off the main population when no valley separates them."""
    grid, dens, _ = binned_density(values)
    top = int(np.argmax(dens))
    half = 0.5 * float(dens[top])
    step = -1 if kind == "negative" else 1
    j = top
    while 0 <= j + step < len(dens) and dens[j + step] > half:
        j += step
    k = j + step
    if not 0 <= k < len(dens):
        raise _NoFit(f"the main peak of control population {name} on {dim} has no half width")
    # linear interpolation of where the density crosses half the peak height
    frac = (float(dens[j]) - half) / max(float(dens[j]) - float(dens[k]), 1e-300)
    crossing = float(grid[j]) + frac * float(grid[k] - grid[j])
    sd = abs(float(grid[top]) - crossing) / math.sqrt(2.0 * math.log(2.0))
    if not sd > 0:
        raise _NoFit(f"the main peak of control population {name} on {dim} has no width")
    z = statistics.NormalDist().inv_cdf(q)
    t = float(grid[top]) - step * z * sd
    return t, {"control_peak": float(grid[top]), "control_sd": sd}


#: the share of a negative control's events left above a cut taken from it
_CONTROL_QUANTILE = 0.99


def _fmo_cut(gate: _OneDimGate, why: str) -> tuple[float, dict[str, Any]]:
    """Cut from a fluorescence-minus-one control: the 99th percentile of the marker on the
    same parent population gated in the FMO file (every event there is negative for it,
    with the spillover spread of all the other stains), as clinical labs set gates."""
    dim = gate.dims[0]
    label, values = gate._fmo[dim]
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < _MIN_CONTROL_EVENTS:
        raise _NoFit(f"FMO control {label} has {len(values)} events in the parent on {dim}")
    t = float(np.quantile(values, _CONTROL_QUANTILE))
    return t, {
        "control": f"FMO control {label} ({100 * _CONTROL_QUANTILE:g}th percentile)",
        "control_events": int(len(values)),
        "why": why,
    }


def _mixture_cut(x: np.ndarray, dim: str, seed) -> tuple[float, dict[str, Any]]:
    """Cut at the equal-posterior point of a two-component mixture of the parent, when the
    data support two components: BIC lower than one Gaussian's and the components
    separated (Ashman's D >= 2, Ashman, Bird & Zepke 1994). `_NoFit` otherwise."""
    x = np.asarray(x, dtype=np.float64)
    gm = _gaussian_mixture(x[:, None], 2, seed, 2)
    m = gm.means_[:, 0]
    sd = np.sqrt(gm.covariances_[:, 0, 0])
    d = abs(m[1] - m[0]) * math.sqrt(2.0) / math.sqrt(sd[0] ** 2 + sd[1] ** 2)
    n = len(x)
    var1 = max(float(np.var(x)), 1e-12)
    ll1 = -0.5 * n * (math.log(2 * math.pi * var1) + 1.0)
    bic1 = -2 * ll1 + 2 * math.log(n)
    bic2 = -2 * float(gm.score_samples(x[:, None]).sum()) + 5 * math.log(n)
    if bic2 >= bic1 or d < 2.0:
        raise _NoFit(
            f"a two-component mixture on {dim} is not supported (Ashman D {d:.2f}, "
            f"BIC {bic2:.0f} vs {bic1:.0f} for one)"
        )
    upper = np.array([int(np.argmax(m))])
    t = _crossing_1d(gm, upper, float(m.min()), float(m.max()), 0.5)
    return t, {"control": "two-component mixture of the parent", "ashman_d": d, "means": m}


@register_adaptive("quantile")
class QuantileGate(_OneDimGate):
    """Threshold at the ``q`` quantile of the parent's values (``bounds`` limit it).

    Falls back to ``fallback`` (default: middle of ``bounds``, or 0.5) with too few events
    or when the quantile lies outside ``bounds``.
    """

    def __init__(
        self,
        dims: Sequence[str],
        q: float = 0.5,
        side: str = "+",
        bounds: Sequence[float] | None = None,
        fallback: float | None = None,
        max_events: int = 50_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.q = q
        self.side = side
        self.bounds = bounds
        self.fallback = fallback
        self.max_events = max_events
        self.random_state = random_state
        self._check_1d()
        if not 0.0 <= float(q) <= 1.0:
            raise TemplateError(f"quantile gate on {self.dims[0]}: q must be in [0, 1], got {q}")

    def _fit(self, cols):
        q = float(self.q)
        return self._finish(
            float(np.quantile(cols[0], q)),
            {"q": q, "control": f"{100 * q:g}th percentile of the parent"},
        )


@register_adaptive("tail")
class TailGate(_OneDimGate):
    """Cut where the main peak's density tails off (after openCyto's ``tailgate``).

    The highest density peak inside ``search`` (or anywhere) is the main, negative (for
    ``side="+"``) population; walking away from it towards ``side``, the threshold is the
    first point where the density falls below ``tol`` times the peak height. Useful for a
    rare positive population that shows as a shoulder rather than a second peak (e.g. a
    viability dye's dead cells, FOXP3+ cells).

    Parameters
    ----------
    side : ``"+"`` keeps the tail above the cut (the events beyond the main peak),
        ``"-"`` keeps the events below the cut (the main peak and everything under it).
    tail : the direction walked from the peak: ``"right"`` (default) or ``"left"``.
    tol : fraction of the peak height that ends the peak.
    mirror : a number r >= 1, or None (off): also end the peak where a peak whose walked
        half is r times as wide as its other half would have fallen to ``tol``, i.e. at
        ``r * sqrt(2 ln(1/tol))`` times the other half's width (the root mean square
        distance from the peak of the events on the side not walked), when the walk
        ran on more than one such half-width beyond that limit. The side walked may hold a broad population without a valley of its own
        (debris and dying cells between the live and the dead cells on a viability dye,
        in PBMC whose debris reaches into the lymphocyte gate); the density then stays
        above ``tol`` far beyond the peak and the plain walk lets that population in. The
        other half is not touched by it: the peak's own width is read there (as a
        negative population's spread is judged from its mirrored half). ``r`` allows for
        a peak that is skewed towards the side walked (autofluorescence, spillover
        spreading from bright markers).
    """

    def __init__(
        self,
        dims: Sequence[str],
        side: str = "+",
        tail: str = "right",
        tol: float = 0.01,
        adjust: float = 1.0,
        search: Sequence[float] | None = None,
        bounds: Sequence[float] | None = None,
        fallback: float | None = None,
        mirror: float | None = None,
        max_events: int = 50_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.side = side
        self.tail = tail
        self.tol = tol
        self.mirror = mirror
        self.adjust = adjust
        self.search = search
        self.bounds = bounds
        self.fallback = fallback
        self.max_events = max_events
        self.random_state = random_state
        self._check_1d()
        if tail not in ("right", "left"):
            raise TemplateError(f"tail gate on {self.dims[0]}: tail must be 'right' or 'left'")
        if not 0.0 < float(tol) < 1.0:
            raise TemplateError(f"tail gate on {self.dims[0]}: tol must be in (0, 1), got {tol}")
        if mirror is not None and (isinstance(mirror, bool) or not float(mirror) >= 1.0):
            raise TemplateError(
                f"tail gate on {self.dims[0]}: mirror must be a number >= 1 or null, got {mirror}"
            )

    def _fit(self, cols):
        grid, dens, bw = binned_density(cols[0], adjust=self.adjust)
        if self.search is not None:
            inside = (grid >= float(self.search[0])) & (grid <= float(self.search[1]))
            if not inside.any():
                raise _NoFit(f"search range {list(self.search)} lies outside the data")
            cand = np.flatnonzero(inside)
            peak = int(cand[np.argmax(dens[cand])])
        else:
            peak = int(np.argmax(dens))
        level = float(self.tol) * dens[peak]
        if self.tail == "right":
            below = np.flatnonzero(dens[peak:] < level)
            if not len(below):
                raise _NoFit("density never falls below tol right of the main peak")
            cut = peak + int(below[0])
        else:
            below = np.flatnonzero(dens[: peak + 1][::-1] < level)
            if not len(below):
                raise _NoFit("density never falls below tol left of the main peak")
            cut = peak - int(below[0])
        params: dict[str, Any] = {"peak": float(grid[peak]), "bandwidth": bw}
        cut, mode = _stop_before_mode(dens, peak, cut, level)
        if mode is not None:
            params["next_mode"] = float(grid[mode])
        threshold = float(grid[cut])
        if self.mirror is not None:
            x, top = cols[0], float(grid[peak])
            other = x[x <= top] if self.tail == "right" else x[x >= top]
            if len(other) >= 10:
                width = float(np.sqrt(np.mean((other - top) ** 2)))
                reach = (
                    float(self.mirror) * width * math.sqrt(2.0 * math.log(1.0 / float(self.tol)))
                )
                plateau = _plateau(grid, dens, peak, cut)
                reach += plateau
                mirrored = top + reach if self.tail == "right" else top - reach
                # a shoulder: the walk ran on more than one half-width beyond the limit
                # (a peak merely a little more skewed than r allows keeps its cut)
                beyond = (threshold - mirrored) if self.tail == "right" else (mirrored - threshold)
                shoulder = beyond > width
                params.update(
                    {
                        "walked": threshold,
                        "mirrored": mirrored,
                        "half_width": width,
                        "plateau": plateau,
                        "shoulder": bool(shoulder),
                    }
                )
                if shoulder:
                    threshold = mirrored
        return self._finish(threshold, params)


def _plateau(grid: np.ndarray, dens: np.ndarray, peak: int, cut: int) -> float:
    """How much farther the peak stays above half its height on the side walked (up to
    the walk's end ``cut``) than on the other side: a second mode of the same population
    next to the highest one (a live peak split in two by autofluorescence or drift) widens
    the peak on that side, and its mirrored end moves out by as much. A shoulder of debris
    or dying cells stays under half the peak's height and adds nothing."""
    half = 0.5 * dens[peak]
    # both sides read outwards from the peak
    if cut >= peak:
        walked, other = dens[peak : cut + 1], dens[peak::-1]
    else:
        walked, other = dens[cut : peak + 1][::-1], dens[peak:]
    far = int(np.flatnonzero(walked >= half)[-1])
    below = np.flatnonzero(other < half)
    near = int(below[0]) if len(below) else len(other) - 1
    spacing = float(grid[1] - grid[0])
    return max(0.0, far - near) * spacing


#: a mode met on a tail walk is a population of its own when its density is at least this
#: many times the lowest density between it and the main peak (a ripple in a broad
#: shoulder rises by far less)
MODE_OVER_VALLEY = 2.0


def _stop_before_mode(
    dens: np.ndarray, peak: int, cut: int, level: float
) -> tuple[int, int | None]:
    """End a tail walk before the next population: where the density between the main
    ``peak`` and the walk's end ``cut`` rises again to a mode of prominence at least
    ``level`` (the walk's own stopping height, ``tol`` times the peak) and of at least
    `MODE_OVER_VALLEY` times the valley before it, that mode is a population of its own
    (the dead cells' peak on a viability dye when dye-dim debris fills the valley above
    ``tol``), and the walk ends at the lowest density between the peak and it. Returns
    the cut and the mode's index (None when the walk met no such mode)."""
    lo, hi = sorted((peak, cut))
    seg = dens[lo : hi + 1]
    idx, _ = find_peaks(seg, level)
    idx = idx[(idx > 0) & (idx < len(seg) - 1)] + lo
    for mode in sorted(idx.tolist(), key=lambda i: abs(i - peak)):
        between = dens[min(peak, mode) : max(peak, mode) + 1]
        valley = int(np.argmin(between)) + min(peak, mode)
        if dens[mode] >= MODE_OVER_VALLEY * dens[valley]:
            return valley, mode
    return cut, None


def _gaussian_mixture(
    X: np.ndarray, k: int, random_state: int | None, n_init: int = 1, means_init=None
):
    """Fit a full-covariance Gaussian mixture, raising `_NoFit` on failure.

    The kernel is `immunoprofile.gating.mixture.GaussianMixtureEM`: scikit-learn's
    algorithm (k-means++ seeding from ``random_state``, ``n_init`` starts, EM to
    ``tol=1e-3``) with the same results to rounding, several times faster on the few
    thousand 1-D/2-D events of a gate. The returned object has scikit-learn's fitted
    attributes (``weights_``, ``means_``, ``covariances_``, ``precisions_cholesky_``) and
    ``predict_proba``/``predict``/``score_samples``. One BLAS thread: on a few thousand
    events threading only adds overhead, and parallel batches would oversubscribe.
    """

    if len(X) < 5 * k:
        raise _NoFit(f"too few events ({len(X)}) for a {k}-component mixture")
    gm = GaussianMixtureEM(
        k,
        n_init=n_init,
        means_init=means_init,
        reg_covar=1e-5,
        max_iter=200,
        random_state=random_state,
    )
    with one_thread():
        try:
            gm.fit(X)
        except MixtureFitError as exc:
            raise _NoFit(str(exc)) from None
    return gm


def _crossing_1d(gm, upper: np.ndarray, lo: float, hi: float, level: float = 0.5) -> float:
    """Point in [lo, hi] where the posterior of the ``upper`` components crosses ``level``
    (0.5: the equal-posterior, i.e. Bayes, boundary of the fitted mixture)."""
    grid = np.linspace(lo, hi, 2001)
    post = gm.predict_proba(grid[:, None])[:, upper].sum(axis=1)
    above = post >= level
    change = np.flatnonzero(above[1:] != above[:-1])
    if not len(change):
        raise _NoFit(f"mixture posterior never crosses {level:g} between the component means")
    i = int(change[0])
    # linear interpolation between grid points
    p0, p1 = post[i], post[i + 1]
    return float(grid[i] + (level - p0) * (grid[i + 1] - grid[i]) / (p1 - p0))


@register_adaptive("gmm")
class MixtureGate(AdaptiveGate):
    """Gaussian mixture gate on one or two markers (EM as scikit-learn's ``GaussianMixture``).

    One dimension: the components are sorted by mean; the ``n_upper`` highest form the
    positive group, and the threshold is where the positive group's posterior crosses
    ``posterior`` between the groups (``side`` says which side is kept). At the default 0.5
    this is the equal-posterior (Bayes) cut, which misclassifies the fewest events; it is
    not biased towards the lower of two overlapping peaks as the density minimum is
    (the valley between a wide and a narrow peak lies on the narrow one's flank). Another
    level weighs the two errors unequally: 0.4 calls an event positive once the positive
    group is 40 % likely, i.e. a false negative costs 1.5 times a false positive (with
    ``side="-"``: the kept, lower group must be 60 % likely). With ``cut="weight"`` it is
    instead the quantile that leaves the positive group's mixture weight above it, so
    that the count matches the mixture's estimate of the population's size even where
    the groups overlap unevenly (the posterior cut misclassifies more events of the larger
    group than of the smaller one). ``bounds`` limit it, the fallback is ``fallback``
    (default: middle of ``bounds``, or 0.5).

    Two dimensions: ``select`` chooses a component: ``"max:<dim index>"``/``"min:<dim
    index>"`` (the component with the highest/lowest mean on that dimension),
    ``"heaviest"``, or a target point ``[x, y]`` (the nearest component). With
    ``region="ellipse"`` (default) the gate is that component's ellipse,
    ``(x - mean)^T C^-1 (x - mean) <= chi2_2(quantile)``. With ``region="posterior"`` it
    is the set of points whose posterior for that component reaches ``posterior`` (0.5:
    the equal-posterior, Bayes, assignment, e.g. naive vs memory Tregs on CD45RA x CD25),
    traced as a polygon on a fine grid of the fitted mixture's posterior around the data
    (so it exports and draws like a hand-drawn gate), the connected part holding the
    component's mean. Its one-number summary ``threshold_`` is the coordinate, on the
    dimension ``select`` names (the first for ``"heaviest"`` or a point), where the
    boundary crosses the segment from the nearest other component's mean to the chosen
    one; ``bounds`` limit it. ``init="marginal"`` starts EM from a 1-D mixture on that
    dimension (started at its density peaks): the events are split by their most likely
    1-D component and the groups' 2-D means are the starting means, so that the fit
    separates the populations that dimension already tells apart instead of splitting
    one skewed cloud (``"kmeans++"``: scikit-learn's seeding, ``n_init`` starts).
    The fallback is the static gate ``fallback`` (a gate dict), required for 2-D.
    """

    n_dims = None

    def __init__(
        self,
        dims: Sequence[str],
        n_components: int = 2,
        side: str = "+",
        n_upper: int = 1,
        select: str | Sequence[float] = "heaviest",
        quantile: float = 0.95,
        bounds: Sequence[float] | None = None,
        fallback: float | dict[str, Any] | None = None,
        cut: str = "posterior",
        posterior: float = 0.5,
        region: str = "ellipse",
        init: str = "kmeans++",
        n_init: int = 1,
        max_events: int = 20_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.n_components = n_components
        self.side = side
        self.n_upper = n_upper
        self.select = select
        self.quantile = quantile
        self.bounds = bounds
        self.fallback = fallback
        self.cut = cut
        self.posterior = posterior
        self.region = region
        self.init = init
        self.n_init = n_init
        self.max_events = max_events
        self.random_state = random_state
        self._check_common()
        where = f"gmm gate on {list(self.dims)}"
        if not 0.0 < float(posterior) < 1.0:
            raise TemplateError(f"{where}: posterior must be in (0, 1), got {posterior}")
        if len(self.dims) not in (1, 2):
            raise TemplateError(f"{where}: takes one or two dimensions")
        if int(n_components) < 1 or (len(self.dims) == 1 and int(n_components) < 2):
            raise TemplateError(f"{where}: n_components must be >= 2 in 1-D, >= 1 in 2-D")
        if cut not in ("posterior", "weight"):
            raise TemplateError(f"{where}: cut must be 'posterior' or 'weight', got {cut!r}")
        if region not in ("ellipse", "posterior"):
            raise TemplateError(f"{where}: region must be 'ellipse' or 'posterior', got {region!r}")
        if init not in ("kmeans++", "marginal"):
            raise TemplateError(f"{where}: init must be 'kmeans++' or 'marginal', got {init!r}")
        if bounds is not None and (len(bounds) != 2 or not float(bounds[0]) < float(bounds[1])):
            raise TemplateError(f"{where}: bounds must be [low, high] with low < high")
        if len(self.dims) == 1 and (region != "ellipse" or init != "kmeans++"):
            raise TemplateError(f"{where}: region and init apply to two dimensions only")
        if len(self.dims) == 2 and region == "posterior" and int(n_components) < 2:
            raise TemplateError(f"{where}: a posterior region needs n_components >= 2")
        if len(self.dims) == 1:
            _sign_ok(side, where)
            if not 1 <= int(n_upper) < int(n_components):
                raise TemplateError(f"{where}: n_upper must be in 1..n_components-1")
            if fallback is not None and not isinstance(fallback, int | float):
                raise TemplateError(f"{where}: 1-D fallback must be a number")
        else:
            if not 0.0 < float(quantile) < 1.0:
                raise TemplateError(f"{where}: quantile must be in (0, 1)")
            if fallback is None or not isinstance(fallback, dict):
                raise TemplateError(f"{where}: a 2-D mixture gate needs a fallback gate (a dict)")
            _parse_select(select, 2, where)

    def _min_fit_events(self) -> int:
        return 10 * int(self.n_components)

    def _fallback_threshold(self) -> float:
        if self.fallback is not None:
            return float(self.fallback)
        if self.bounds is not None:
            return 0.5 * (float(self.bounds[0]) + float(self.bounds[1]))
        return 0.5

    def _fallback_gate(self) -> Gate:
        if len(self.dims) == 1:
            return _range_gate(self.dims[0], self._fallback_threshold(), self.side)
        return _static_fallback(self.fallback, self.dims, "gmm")

    def _fit(self, cols):
        X = np.column_stack(cols)
        k = int(self.n_components)
        means_init = None
        if len(self.dims) == 1:
            # start from the density's main peaks: EM started elsewhere can split one
            # skewed population in two instead of separating two populations
            start = _peak_starts(cols[0], k)
            if start is not None:
                means_init = start[:, None]
        init = "peaks" if means_init is not None else "kmeans++"
        if len(self.dims) == 2 and self.init == "marginal":
            means_init = _marginal_means(X, k, _select_dim(self.select), self.random_state)
            init = "kmeans++" if means_init is None else "marginal"
        gm = _gaussian_mixture(X, k, self.random_state, int(self.n_init), means_init)
        means = gm.means_
        if len(self.dims) == 1:
            order = np.argsort(means[:, 0])
            upper = order[-int(self.n_upper) :]
            lower = order[: -int(self.n_upper)]
            lo, hi = float(means[lower, 0].max()), float(means[upper, 0].min())
            t = _crossing_1d(gm, upper, lo, hi, float(self.posterior))
            w_upper = float(gm.weights_[upper].sum())
            if self.cut == "weight":
                # the cut that keeps the upper components' share of events above it; a
                # mixture that fits badly can put it anywhere, so it must stay between
                # the groups' means, else the posterior cut is kept
                tw = float(np.quantile(cols[0], 1.0 - w_upper))
                if lo + 0.1 * (hi - lo) <= tw <= hi - 0.1 * (hi - lo):
                    t = tw
            bounds = self.bounds
            if bounds is not None and not (float(bounds[0]) <= t <= float(bounds[1])):
                raise _NoFit(f"fitted threshold {t:.4g} outside bounds {list(bounds)}")
            self.threshold_ = t
            return _range_gate(self.dims[0], t, self.side), {
                "threshold": t,
                "upper_weight": w_upper,
                "means": means[:, 0],
                "weights": gm.weights_,
            }
        comp = _choose_component(gm.means_, gm.weights_, self.select)
        if self.region == "ellipse":
            return _ellipse_from_component(gm, comp, self.dims, float(self.quantile))
        gate, params = _posterior_region(
            gm, comp, X, self.dims, float(self.posterior), _select_dim(self.select)
        )
        t = float(params["threshold"])
        if self.bounds is not None and not (float(self.bounds[0]) <= t <= float(self.bounds[1])):
            raise _NoFit(
                f"boundary crosses {self.dims[_select_dim(self.select)]} at {t:.4g}, outside "
                f"bounds {list(self.bounds)}"
            )
        self.threshold_ = t
        return gate, {**params, "init": init, "n_iter": int(gm.n_iter_)}

    def _use_fallback(self, reason: str) -> AdaptiveGate:
        super()._use_fallback(reason)
        if len(self.dims) == 1:
            self.threshold_ = self._fallback_threshold()
        return self


def _select_dim(select: Any) -> int:
    """The dimension a ``select`` of the form ``"max:<i>"``/``"min:<i>"`` names (else 0)."""
    if isinstance(select, str) and ":" in select:
        return int(select.partition(":")[2])
    return 0


def _peak_starts(x: np.ndarray, k: int) -> np.ndarray | None:
    """Positions of the ``k`` highest peaks of ``x``'s density, in increasing order (the
    starting means of a k-component 1-D mixture), or None when it has fewer peaks."""
    grid, dens, _ = binned_density(x)
    peaks = _peaks(dens, 0.01)
    if len(peaks) < k:
        return None
    return grid[np.sort(peaks[np.argsort(dens[peaks])[::-1][:k]])]


def _marginal_means(X: np.ndarray, k: int, dim: int, seed) -> np.ndarray | None:
    """Starting means for a k-component 2-D mixture from a 1-D mixture on column ``dim``.

    The 1-D mixture starts at the ``k`` highest peaks of the column's density (at its
    quantiles when there are fewer peaks); each event joins its most likely 1-D component
    and the groups' means over both columns are returned, (k, 2). None when the 1-D fit
    fails or a group holds fewer than five events (the caller then seeds with k-means++).
    """
    x = X[:, dim]
    start = _peak_starts(x, k)
    if start is None:
        start = np.quantile(x, (np.arange(k) + 0.5) / k)
    try:
        g1 = _gaussian_mixture(x[:, None], k, seed, 1, start[:, None])
    except _NoFit:
        return None
    label = g1.predict(x[:, None])
    counts = np.bincount(label, minlength=k)
    if counts.min() < 5:
        return None
    sums = np.stack([np.bincount(label, weights=X[:, j], minlength=k) for j in range(2)], 1)
    return sums / counts[:, None]


def _posterior_region(gm, comp: int, X: np.ndarray, dims, level: float, dim: int):
    """Polygon of the points where component ``comp``'s posterior reaches ``level``.

    The posterior is evaluated on a 241 x 241 grid over the data's box widened by half its
    range on every side, and the ``level`` contour (linear interpolation between grid
    points) holding ``comp``'s mean is the polygon; points beyond the widened box are
    outside. Also returns where the boundary crosses the segment from the nearest other
    component's mean to ``comp``'s (``crossing``; ``threshold`` is its coordinate on
    ``dim``). `_NoFit` when the component's own mean lies below the level or the segment
    has no crossing.
    """
    means = gm.means_
    mu = means[comp]
    if float(gm.predict_proba(mu[None, :])[0, comp]) < level:
        raise _NoFit(f"the selected component's posterior at its own mean is below {level:g}")
    others = [j for j in range(len(means)) if j != comp]
    near = others[int(np.argmin(((means[others] - mu) ** 2).sum(axis=1)))]
    s = np.linspace(0.0, 1.0, 2001)[:, None]
    seg = means[near] + s * (mu - means[near])
    post = gm.predict_proba(seg)[:, comp]
    above = post >= level
    change = np.flatnonzero(above[1:] != above[:-1])
    if not len(change):
        raise _NoFit(f"posterior never crosses {level:g} between the components' means")
    i = int(change[-1])  # the last crossing before the chosen mean
    f = (level - post[i]) / (post[i + 1] - post[i])
    crossing = seg[i] + f * (seg[i + 1] - seg[i])
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 0.5 * (hi - lo) + 1e-6
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 241)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 241)
    G = np.column_stack([np.repeat(gx, len(gy)), np.tile(gy, len(gx))])
    z = gm.predict_proba(G)[:, comp].reshape(len(gx), len(gy)).T  # rows: y
    poly = _region_polygon(gx, gy, z, mu, level=level, what="posterior region")
    gate = PolygonGate(dims=tuple(dims), vertices=tuple(map(tuple, poly)))
    share = float(np.mean(gm.predict_proba(X)[:, comp] >= level))
    return gate, {
        "threshold": float(crossing[dim]),
        "crossing": crossing,
        "component": int(comp),
        "level": level,
        "weight": float(gm.weights_[comp]),
        "share": share,
        "means": means,
        "covariances": gm.covariances_,
        "weights": gm.weights_,
    }


def _parse_select(select: Any, n_dims: int, where: str) -> None:
    if isinstance(select, str):
        if select == "heaviest":
            return
        kind, _, dim = select.partition(":")
        if kind in ("max", "min") and dim.isdigit() and int(dim) < n_dims:
            return
        raise TemplateError(
            f"{where}: select must be 'heaviest', 'max:<i>', 'min:<i>' or a point, got {select!r}"
        )
    if len(select) != n_dims:
        raise TemplateError(f"{where}: select point must have {n_dims} coordinates")


def _choose_component(means: np.ndarray, weights: np.ndarray, select: Any) -> int:
    if isinstance(select, str):
        if select == "heaviest":
            return int(np.argmax(weights))
        kind, _, dim = select.partition(":")
        col = means[:, int(dim)]
        return int(np.argmax(col) if kind == "max" else np.argmin(col))
    target = np.asarray(select, dtype=np.float64)
    return int(np.argmin(((means - target) ** 2).sum(axis=1)))


def _ellipse_from_component(gm, comp: int, dims, quantile: float):
    mean = gm.means_[comp]
    cov = gm.covariances_[comp]
    d2 = chi2_quantile(quantile, len(dims))
    gate = EllipseGate(
        dims=tuple(dims),
        mean=tuple(float(m) for m in mean),
        covariance=tuple(tuple(float(c) for c in row) for row in cov),
        distance_square=d2,
    )
    return gate, {
        "component": int(comp),
        "weight": float(gm.weights_[comp]),
        "means": gm.means_,
        "weights": gm.weights_,
    }


def _static_fallback(spec: Any, dims: Sequence[str], where: str) -> Gate:
    if isinstance(spec, Gate):
        return spec
    spec = dict(spec)
    spec.setdefault("dims", list(dims))
    try:
        return gate_from_dict(spec)
    except TemplateError as exc:
        raise TemplateError(f"{where} gate on {list(dims)}: bad fallback gate: {exc}") from None


# --- n-D threshold combination --------------------------------------------------------


_ONE_D = ("density_min", "quantile", "tail", "gmm")


@register_adaptive("thresholds")
class ThresholdsGate(AdaptiveGate):
    """One fitted threshold per dimension, combined by ``signs`` into a quadrant (2-D) or
    rectangle (n-D), e.g. Th17 = CXCR3- CCR6+ on memory CD4 T cells.

    ``method`` is a 1-D estimator spec (``{"type": "density_min", ...}`` without ``dims``)
    used for every dimension; ``per_dim`` maps a dimension name to extra or overriding
    arguments for it (e.g. its own ``search`` range), or to a whole spec of another
    ``type`` (which then replaces ``method`` for that dimension). Each dimension falls back on its own;
    the gate as a whole is marked as fallen back if any dimension did.
    """

    n_dims = None

    def __init__(
        self,
        dims: Sequence[str],
        signs: Sequence[str] = ("+", "+"),
        method: dict[str, Any] | None = None,
        per_dim: dict[str, dict[str, Any]] | None = None,
        max_events: int = 50_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.signs = signs
        self.method = method
        self.per_dim = per_dim
        self.max_events = max_events
        self.random_state = random_state
        self._check_common()
        where = f"thresholds gate on {list(self.dims)}"
        if len(signs) != len(self.dims):
            raise TemplateError(f"{where}: one sign per dimension needed, got {list(signs)}")
        for s in signs:
            _sign_ok(s, where)
        unknown = set(per_dim or {}) - set(self.dims)
        if unknown:
            raise TemplateError(f"{where}: per_dim names unknown dimension(s) {sorted(unknown)}")
        self._parts = [self._part(i) for i in range(len(self.dims))]

    def _part(self, i: int) -> AdaptiveGate:
        dim = self.dims[i]
        spec = dict(self.method or {"type": "density_min"})
        spec.setdefault("type", "density_min")
        own = dict((self.per_dim or {}).get(dim, {}))
        if own.get("type", spec["type"]) != spec["type"]:
            spec = own  # another method for this dimension: its own arguments only
        else:
            spec.update(own)
        type_name = spec.pop("type", "density_min")
        if type_name not in _ONE_D:
            raise TemplateError(
                f"thresholds gate on {list(self.dims)}: method for {dim} must be one of "
                f"{list(_ONE_D)}, got {type_name!r}"
            )
        spec.pop("dims", None)
        spec["side"] = self.signs[i]
        spec.setdefault("max_events", self.max_events)
        spec["random_state"] = self.random_state
        return _construct(type_name, {"dims": [dim], **spec}, "thresholds")

    def _combine(self, thresholds: list[float]) -> Gate:
        if len(self.dims) == 2:
            return QuadrantGate(
                dims=tuple(self.dims), thresholds=tuple(thresholds), signs=tuple(self.signs)
            )
        mins = tuple(t if s == "+" else None for t, s in zip(thresholds, self.signs))
        maxs = tuple(t if s == "-" else None for t, s in zip(thresholds, self.signs))
        return RectangleGate(dims=tuple(self.dims), min=mins, max=maxs)

    def control_specs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for p in self._parts:
            out.update(p.control_specs())
        return out

    def fit(
        self,
        X: Any,
        y: None = None,
        *,
        cache: dict | None = None,
        controls: dict[str, np.ndarray] | None = None,
        fmo: dict[str, tuple[str, np.ndarray]] | None = None,
    ) -> ThresholdsGate:
        cols = _as_columns(X, len(self.dims))
        parts = [
            p.clone().fit(c, cache=cache, controls=controls, fmo=fmo)
            for p, c in zip(self._parts, cols)
        ]
        self.thresholds_ = [float(p.threshold_) for p in parts]
        self.gate_ = self._combine(self.thresholds_)
        self.fallback_ = any(p.fallback_ for p in parts)
        reasons = [f"{d}: {p.reason_}" for d, p in zip(self.dims, parts) if p.fallback_]
        self.reason_ = "; ".join(reasons) if reasons else None
        self.params_ = {d: {**p.params_, "fallback": p.fallback_} for d, p in zip(self.dims, parts)}
        self.n_fit_ = max(p.n_fit_ for p in parts)
        return self

    def _fallback_gate(self) -> Gate:
        return self._combine([p._fallback_threshold() for p in self._parts])

    def _use_fallback(self, reason: str) -> AdaptiveGate:
        super()._use_fallback(reason)
        self.thresholds_ = [p._fallback_threshold() for p in self._parts]
        return self


# --- scatter gates -------------------------------------------------------------------------


@register_adaptive("singlets")
class SingletGate(AdaptiveGate):
    """Singlets from the FSC-A / FSC-H relation: a band around the singlet ratio.

    A doublet passing the laser has about twice the pulse area of a singlet but a similar
    height, so its area/height ratio is higher. The spread of the ratio is multiplicative
    (pulse-shape jitter), so the band is fitted on ``log(area / height)``: its centre is
    the median and its scale ``s`` the robust standard deviation (1.4826 MAD), both
    re-estimated once on the events within 3 ``s`` of the centre (so the doublets do not
    widen it). Events with a log ratio in ``[centre - k_low s, centre + k_high s]`` are
    singlets; the gate is the wedge between the two lines ``area = ratio * height`` as a
    polygon. ``dims`` are ``(area, height)``, e.g. ``("FSC-A", "FSC-H")``.

    ``bounds`` limits the fitted ratio. The fallback is the ratio band ``ratio_fallback``.
    """

    n_dims = 2

    def __init__(
        self,
        dims: Sequence[str] = ("FSC-A", "FSC-H"),
        k_low: float = 4.0,
        k_high: float = 3.5,
        bounds: Sequence[float] = (0.5, 2.0),
        ratio_fallback: Sequence[float] = (0.8, 1.3),
        max_events: int = 50_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.k_low = k_low
        self.k_high = k_high
        self.bounds = bounds
        self.ratio_fallback = ratio_fallback
        self.max_events = max_events
        self.random_state = random_state
        self._check_common()
        if float(k_low) <= 0 or float(k_high) <= 0:
            raise TemplateError("singlets gate: k_low and k_high must be positive")
        if len(ratio_fallback) != 2 or not 0 < float(ratio_fallback[0]) < float(ratio_fallback[1]):
            raise TemplateError("singlets gate: ratio_fallback must be [low, high], 0 < low < high")

    def _fit(self, cols):
        area, height = cols
        ok = (height > 0) & (area > 0)
        if ok.sum() < _MIN_FIT_EVENTS:
            raise _NoFit("too few events with a positive area and height")
        lr = np.log(area[ok] / height[ok])
        center = float(np.median(lr))
        s = 1.4826 * float(np.median(np.abs(lr - center)))
        core = lr[np.abs(lr - center) <= 3.0 * max(s, 1e-12)]
        if len(core) < _MIN_FIT_EVENTS:
            raise _NoFit("too few events near the singlet ratio")
        center = float(np.median(core))
        s = 1.4826 * float(np.median(np.abs(core - center)))
        ratio = math.exp(center)
        lo_b, hi_b = map(float, self.bounds)
        if not lo_b <= ratio <= hi_b:
            raise _NoFit(f"fitted area/height ratio {ratio:.3g} outside bounds {[lo_b, hi_b]}")
        r_lo = math.exp(center - float(self.k_low) * s)
        r_hi = math.exp(center + float(self.k_high) * s)
        self.ratio_, self.scale_ = ratio, s
        gate = self._wedge(r_lo, r_hi, float(height[ok].max()))
        return gate, {"ratio": ratio, "log_sd": s, "ratio_low": r_lo, "ratio_high": r_hi}

    def _wedge(self, r_lo: float, r_hi: float, h_max: float) -> PolygonGate:
        top = 2.0 * h_max
        return PolygonGate(
            dims=tuple(self.dims), vertices=((0.0, 0.0), (r_lo * top, top), (r_hi * top, top))
        )

    def _fallback_gate(self) -> Gate:
        lo, hi = map(float, self.ratio_fallback)
        return self._wedge(lo, hi, 1e9)


@register_adaptive("blob")
class BlobGate(AdaptiveGate):
    """The lymphocyte cloud on forward/side scatter, fitted per sample.

    Scatter of a cell population is close to log-normal, so by default (``log=True``) the
    fit runs on log10 values (values below 1/1000 of the 99th percentile are raised to
    it); instrument gains then only shift the clouds, they do not change their shapes.
    A Gaussian mixture with ``n_components`` components is fitted and the core component
    chosen by ``select``: ``"lymphocytes"`` (the biological choice, see `_scatter_clouds`:
    the major cloud of lowest side scatter, whatever the scale; ``min_cloud`` is the share
    of events a major cloud holds), ``"heaviest"`` (default: the heaviest component, which
    in whole blood or when the mixture splits the lymphocytes can be another cloud), a
    point ``[fsc, ssc]`` on the data scale (the nearest component), or
    ``"max:<i>"``/``"min:<i>"``. With ``"lymphocytes"`` the joined components are the
    lymphocyte cloud's, and the larger-cell clouds of ``exclude_larger`` include every
    component of a cloud found above the lymphocytes. Components whose mean lies within ``merge``
    Mahalanobis units of the core join it (larger, more granular NK and B cells often get
    a component of their own).

    The gate is the region within ``radius`` Mahalanobis units of the core (or, when
    ``quantile`` is given, within the core's ellipse holding that share) where the
    joined components' posterior is at least ``posterior``, traced as a contour on a
    256 x 256 grid and returned as a polygon on the data scale: a contour that follows the
    valleys towards the other clouds (debris, dying cells, monocytes, granulocytes). The
    defaults are generous (radius 6, posterior 0.005) so that no lymphocyte subset is cut;
    a template removes what remains of dead cells and monocytes with the viability dye
    and CD14 (see the built-in templates).

    ``exclude_larger`` (default None: off) also leaves out the region where the clouds
    of larger cells have a posterior of at least that value. A larger-cell cloud (on
    FSC/SSC: monocytes, granulocytes) is a component above the core on every dimension
    that is more than ``2 * merge`` Mahalanobis units from the core, or more than
    ``merge`` with its centre outside the generous region (joined posterior below
    ``posterior`` there), together with any component above the core, not joined, at least
    twice as near to one of those clouds as to the core (a cloud the mixture split in
    parts); a component bridging the core and such a cloud holds the large lymphocytes'
    tail and is left alone. Why: the generous contour follows the valley towards the
    monocyte cloud deep into it, and CD14 removes only the CD14-bright part
    of what it lets in, so CD14-dim (CD16+, non-classical) monocytes stay in every CD3-
    population and dilute B and NK percentages. A value above 0.5 (e.g. 0.67: odds of
    2:1 for the larger cells) gives the large lymphocytes (NK, activated cells) the
    benefit of the doubt. Smaller components (debris, dying cells) are not affected.
    ``exclude_debris`` (default None: off) also leaves out, below the core on side
    scatter, the region where debris components have a posterior of at least that value;
    debris components (`_debris_components`: centred below the core on forward scatter by
    more than ``merge`` of its standard deviations and at least `DEBRIS_SPREAD` times as
    spread on both scatters) are then never joined. With ``select="lymphocytes"`` only
    those the lymphocyte cloud took in count: debris reaching into the lymphocytes without
    a valley (PBMC with lymphocytes low on FSC), which the generous contour otherwise
    keeps down to the forward-scatter floor; debris with a mode of its own is left out by
    the valley the contour follows. Dying cells, shrunken but more granular than the
    lymphocytes, lie above the core on side scatter and stay for the viability dye.
    ``valleys`` (with ``select="lymphocytes"``; default False) also ends the gate at the
    side scatter of the density valley between the lymphocytes and the nearest cloud of
    larger, granular cells (see `_ssc_valley`; recorded as ``params.ssc_valley``): the
    generous contour otherwise climbs above the lymphocytes at low forward scatter, where
    no larger-cell component dominates, into dying cells and the bridge towards the
    monocytes; and below on forward scatter at `FSC_FLOOR_SD` of the lymphocyte cloud's
    own standard deviations under its mode (`_fsc_floor`, ``params.fsc_floor``): the
    contour otherwise follows debris that reaches into the lymphocytes down to the
    acquisition threshold. ``fallback`` is a static gate dict (default: all events).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> lym = rng.lognormal(np.log([0.23, 0.05]), [0.05, 0.2], (8000, 2))
    >>> mono = rng.lognormal(np.log([0.38, 0.17]), [0.06, 0.25], (2000, 2))
    >>> g = BlobGate(n_components=2, posterior=0.5, radius=4).fit(np.vstack([lym, mono]))
    >>> bool(g.mask([lym[:, 0], lym[:, 1]]).mean() > 0.98)
    True
    >>> g = BlobGate(n_components=2, exclude_larger=0.67).fit(np.vstack([lym, mono]))
    >>> bool(g.mask([mono[:, 0], mono[:, 1]]).mean() < 0.02)
    True
    """

    n_dims = 2

    def __init__(
        self,
        dims: Sequence[str] = ("FSC-A", "SSC-A"),
        n_components: int = 6,
        select: str | Sequence[float] = "heaviest",
        radius: float = 6.0,
        quantile: float | None = None,
        merge: float = 3.0,
        posterior: float = 0.005,
        exclude_larger: float | None = None,
        exclude_debris: float | None = None,
        valleys: bool = False,
        min_cloud: float = 0.05,
        log: bool = True,
        fallback: dict[str, Any] | None = None,
        n_init: int = 1,
        max_events: int = 10_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.n_components = n_components
        self.select = select
        self.radius = radius
        self.quantile = quantile
        self.merge = merge
        self.posterior = posterior
        self.exclude_larger = exclude_larger
        self.exclude_debris = exclude_debris
        self.valleys = valleys
        self.min_cloud = min_cloud
        self.log = log
        self.fallback = fallback
        self.n_init = n_init
        self.max_events = max_events
        self.random_state = random_state
        self._check_common()
        where = f"blob gate on {list(self.dims)}"
        if not float(radius) > 0:
            raise TemplateError(f"{where}: radius must be > 0")
        if quantile is not None and not 0.0 < float(quantile) < 1.0:
            raise TemplateError(f"{where}: quantile must be in (0, 1)")
        if int(n_components) < 1:
            raise TemplateError(f"{where}: n_components must be >= 1")
        if float(merge) < 0:
            raise TemplateError(f"{where}: merge must be >= 0")
        if not 0.0 < float(posterior) < 1.0:
            raise TemplateError(f"{where}: posterior must be in (0, 1)")
        if exclude_larger is not None and not 0.0 < float(exclude_larger) < 1.0:
            raise TemplateError(f"{where}: exclude_larger must be in (0, 1) or null")
        if exclude_debris is not None and not 0.0 < float(exclude_debris) < 1.0:
            raise TemplateError(f"{where}: exclude_debris must be in (0, 1) or null")
        if not 0.0 < float(min_cloud) < 0.5:
            raise TemplateError(f"{where}: min_cloud must be in (0, 0.5)")
        if select != "lymphocytes":
            _parse_select(select, 2, where)
        if fallback is not None and not isinstance(fallback, dict):
            raise TemplateError(f"{where}: fallback must be a gate dict")

    def _min_fit_events(self) -> int:
        return 10 * int(self.n_components)

    def _fit(self, cols):
        X = np.column_stack(cols)
        floor = None
        if self.log:
            floor = np.maximum(np.percentile(X, 99, axis=0) * 1e-3, 1e-12)
            X = np.log10(np.maximum(X, floor))
        gm = _gaussian_mixture(X, int(self.n_components), self.random_state, int(self.n_init))
        select = self.select
        if not isinstance(select, str) and self.log:
            select = np.log10(np.maximum(np.asarray(select, dtype=np.float64), floor))
        clouds = None
        if select == "lymphocytes":
            clouds = _scatter_clouds(gm, X, float(self.min_cloud), bool(self.log))
            core = clouds["core"]
        else:
            core = _choose_component(gm.means_, gm.weights_, select)
        dist = _mahalanobis(gm.means_, gm.means_[core], gm.covariances_[core])
        debris = np.zeros(len(gm.weights_), dtype=bool)
        if self.exclude_debris is not None:
            debris = _debris_components(gm, core, float(self.merge))
        joined = np.flatnonzero((dist <= float(self.merge)) & ~debris)
        if clouds is not None:
            # the lymphocyte cloud's components, and near ones of no larger-cell cloud;
            # never a debris component that the cloud took in for want of a valley (debris
            # with a mode of its own is left out by the valley the contour follows)
            own = clouds["member"] == clouds["member"][core]
            debris &= own
            joined = np.flatnonzero(
                (own | ((dist <= float(self.merge)) & ~clouds["larger"])) & ~debris
            )
        radius = self._radius()
        r2 = radius**2
        # grid covering the core's ellipse with a margin
        pts = _ellipse_points(gm.means_[core], gm.covariances_[core], radius)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        pad = 0.05 * (hi - lo)
        gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 256)
        gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 256)
        G = np.column_stack([np.repeat(gx, len(gy)), np.tile(gy, len(gx))])
        proba = gm.predict_proba(G)
        post = proba[:, joined].sum(axis=1)
        near = _mahalanobis(G, gm.means_[core], gm.covariances_[core]) ** 2
        keep = (post >= float(self.posterior)) & (near <= r2)
        # clouds of larger cells: above the core on every dimension, not joined to it, and
        # either far from it or centred outside the generous region (a component that
        # bridges the core and such a cloud holds the large lymphocytes' tail)
        centre_out = gm.predict_proba(gm.means_)[:, joined].sum(axis=1) < float(self.posterior)
        far = (dist > 2.0 * float(self.merge)) | ((dist > float(self.merge)) & centre_out)
        above = np.all(gm.means_ > gm.means_[core], axis=1)
        larger = _with_neighbours(gm, core, joined, above & far, above & (dist > float(self.merge)))
        if clouds is not None:
            # every component of a larger-cell cloud, and what the distance rule finds
            # outside the lymphocyte cloud
            rule = np.zeros(len(gm.weights_), dtype=bool)
            rule[larger] = True
            larger = np.flatnonzero(clouds["larger"] | (rule & ~own))
        if self.exclude_larger is not None and len(larger):
            keep &= proba[:, larger].sum(axis=1) < float(self.exclude_larger)
        if self.exclude_debris is not None and debris.any():
            # below the core on side scatter only: dying cells are shrunken too but more
            # granular, and lie above the lymphocytes on SSC (they leave by the dye)
            small = proba[:, debris].sum(axis=1) >= float(self.exclude_debris)
            keep &= ~(small & (G[:, 1] <= gm.means_[core][1]))
        ceiling = floor = None
        if clouds is not None and self.valleys:
            ceiling = _ssc_valley(gm, clouds, bool(self.log))
            if ceiling is not None:
                keep &= G[:, 1] <= ceiling
            floor = _fsc_floor(gm, clouds, X)
            if floor is not None:
                keep &= G[:, 0] >= floor
        inside = keep.reshape(len(gx), len(gy)).T
        poly = _region_polygon(gx, gy, inside, gm.means_[core])
        if self.log:
            poly = 10.0**poly
        gate = PolygonGate(dims=tuple(self.dims), vertices=tuple(map(tuple, poly)))
        params = {
            "core": int(core),
            "joined": joined,
            "weight": float(gm.weights_[joined].sum()),
            "means": (10.0**gm.means_) if self.log else gm.means_,
            "weights": gm.weights_,
            "space": "log10" if self.log else "linear",
        }
        if self.exclude_larger is not None:
            params["excluded"] = larger  # the larger-cell components left out
        if self.exclude_debris is not None:
            params["debris"] = np.flatnonzero(debris)  # the debris components left out
        if clouds is not None and self.valleys:
            # on the data scale: the side scatter above which nothing is kept (None: the
            # file has no cloud of larger cells)
            params["ssc_valley"] = (
                None if ceiling is None else float(10.0**ceiling if self.log else ceiling)
            )
            # the forward scatter below which nothing is kept (None: too few events)
            params["fsc_floor"] = (
                None if floor is None else float(10.0**floor if self.log else floor)
            )
        if clouds is not None:
            params["clouds"] = [
                {**c, "mode": (10.0 ** np.asarray(c["mode"])) if self.log else c["mode"]}
                for c in clouds["clouds"]
            ]
        return gate, params

    def _radius(self) -> float:
        if self.quantile is None:
            return float(self.radius)
        return math.sqrt(chi2_quantile(float(self.quantile), 2))

    def _fallback_gate(self) -> Gate:
        if self.fallback is None:
            # everything: a huge ellipse, so a failed fit never silently drops events
            return EllipseGate(
                dims=tuple(self.dims),
                mean=(0.0, 0.0),
                covariance=((1e18, 0.0), (0.0, 1e18)),
                distance_square=1.0,
            )
        return _static_fallback(self.fallback, self.dims, "blob")


#: side-scatter step, in the lymphocyte cloud's standard deviations, from the lymphocytes
#: to a cloud of larger (granular) cells; a larger-FSC cloud nearer than that in SSC is
#: the lymphocytes seen from a debris cloud below them
_SSC_STEP = 3.0


#: forward-scatter step, in the lymphocyte cloud's standard deviations, from the
#: lymphocytes to a shoulder of larger cells (see `_split_shoulders`)
_FSC_STEP = 2.0


#: a debris component is at least this many times as spread as the lymphocyte core on
#: both scatters (see `_debris_components`)
DEBRIS_SPREAD = 2.0


def _debris_components(gm, core: int, merge: float) -> np.ndarray:
    """Per component: debris (boolean).

    Debris is small and diffuse: fragments of every size and granularity. A component
    centred below the lymphocyte core on forward scatter by more than ``merge`` of the
    core's standard deviations and at least `DEBRIS_SPREAD` times as spread as the core on
    both scatters is debris."""
    means, covs = gm.means_, gm.covariances_
    sd = np.sqrt(np.stack([np.diag(c) for c in covs]))
    csd = sd[core]
    below = means[:, 0] < means[core, 0] - merge * csd[0]
    diffuse = np.all(sd >= DEBRIS_SPREAD * csd, axis=1)
    out = below & diffuse
    out[core] = False
    return out


def _scatter_clouds(gm, X: np.ndarray, min_cloud: float, log: bool = True) -> dict[str, Any]:
    """The clouds of a scatter mixture and which of them are lymphocytes and larger cells.

    A cloud is a mode of the fitted mixture density: each component climbs the density
    (steepest ascent on a 160 x 160 grid over the data) from its mean, and components that
    reach the same mode form one cloud (a population the mixture split in parts, or a
    shoulder without a valley of its own, stays whole; after the modal clustering of Li,
    Ray & Lindsay 2007, JMLR 8:1687). Clouds holding at least ``min_cloud`` of the events
    are the major ones. The lymphocytes are the major cloud of lowest side scatter (small,
    agranular cells), unless another major cloud has larger cells (forward scatter higher by
    more than the candidate's standard deviation) at about the same side scatter (less
    than ``_SSC_STEP`` of its standard deviations higher): the candidate then is debris or
    dying cells below the lymphocytes, and the next one up is taken. Clouds whose mode
    lies above the lymphocytes' on forward scatter and on side scatter by at least
    ``_SSC_STEP`` standard deviations hold larger, granular cells (monocytes,
    granulocytes), and so does a granular shoulder of the lymphocyte cloud
    (`_split_shoulders`: a component of larger cells without a mode of its own; marked
    ``shoulder``). Every position is relative to the clouds of the
    file: no scatter value of one instrument enters.

    Returns ``core`` (the heaviest component of the lymphocyte cloud), ``member`` (cloud
    index per component), ``larger`` (per component: in a larger-cell cloud) and
    ``clouds`` (per cloud: ``mode``, ``weight``, ``role``).
    """
    means, weights, covs = gm.means_, gm.weights_, gm.covariances_
    lo = np.percentile(X, 0.5, axis=0)
    hi = np.percentile(X, 99.5, axis=0)
    lo, hi = np.minimum(lo, means.min(axis=0)), np.maximum(hi, means.max(axis=0))
    pad = 0.05 * (hi - lo) + 1e-9
    n = 160
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], n)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], n)
    G = np.column_stack([np.repeat(gx, n), np.tile(gy, n)])
    dens = gm.score_samples(G).reshape(n, n)  # [ix, iy]
    # each cell points at the highest cell of its 3 x 3 neighbourhood (itself included)
    padded = np.full((n + 2, n + 2), -np.inf)
    padded[1:-1, 1:-1] = dens
    best = np.full((n, n), -np.inf)
    step = np.zeros((n, n, 2), dtype=np.intp)
    for dx in (-1, 0, 1):
        for dy in (-1, 0, 1):
            nb = padded[1 + dx : n + 1 + dx, 1 + dy : n + 1 + dy]
            better = nb > best
            best[better] = nb[better]
            step[better] = (dx, dy)
    modes = []
    for m in means:
        ix = int(np.clip(np.searchsorted(gx, m[0]), 0, n - 1))
        iy = int(np.clip(np.searchsorted(gy, m[1]), 0, n - 1))
        for _ in range(4 * n):
            dx, dy = step[ix, iy]
            if dx == 0 and dy == 0:
                break
            ix, iy = ix + int(dx), iy + int(dy)
        modes.append((ix, iy))
    uniq = sorted(set(modes))
    member = np.array([uniq.index(m) for m in modes], dtype=np.intp)
    k = len(uniq)
    cw = np.bincount(member, weights=weights, minlength=k)
    mode_xy = np.array([(gx[ix], gy[iy]) for ix, iy in uniq])
    # each cloud's spread: the standard deviations of its heaviest component
    spread = np.zeros((k, 2))
    for c in range(k):
        comps = np.flatnonzero(member == c)
        top = comps[int(np.argmax(weights[comps]))]
        spread[c] = np.sqrt(np.diag(covs[top]))
    major = np.flatnonzero(cw >= min_cloud)
    if not len(major):
        major = np.array([int(np.argmax(cw))])
    order = major[np.argsort(mode_xy[major, 1])]
    lym = int(order[0])
    for c in order:
        c = int(c)
        debris = any(
            mode_xy[d, 0] - mode_xy[c, 0] > spread[c, 0]
            and mode_xy[d, 1] - mode_xy[c, 1] < _SSC_STEP * spread[c, 1]
            for d in major
            if d != c
        )
        if not debris:
            lym = c
            break
    n_modes = k
    member, mode_xy, cw, spread = _split_shoulders(
        gm, member, mode_xy, cw, spread, lym, float(min_cloud), log
    )
    k = len(cw)
    larger_cloud = (
        (mode_xy[:, 0] > mode_xy[lym, 0])
        & (mode_xy[:, 1] - mode_xy[lym, 1] >= _SSC_STEP * spread[lym, 1])
        & (np.arange(k) != lym)
    )
    comps = np.flatnonzero(member == lym)
    core = int(comps[int(np.argmax(weights[comps]))])
    roles = []
    for c in range(k):
        if c == lym:
            roles.append("lymphocytes")
        elif larger_cloud[c]:
            roles.append("larger cells")
        elif mode_xy[c, 1] <= mode_xy[lym, 1] + spread[lym, 1] and mode_xy[c, 0] < mode_xy[lym, 0]:
            roles.append("smaller (debris)")
        else:
            roles.append("other")
    return {
        "core": core,
        "member": member,
        "larger": larger_cloud[member],
        "clouds": [
            {"mode": mode_xy[c], "weight": float(cw[c]), "role": roles[c]}
            | ({"shoulder": True} if c >= n_modes else {})
            for c in range(k)
        ],
    }


def _split_shoulders(gm, member, mode_xy, cw, spread, lym: int, min_cloud: float, log: bool):
    """The clouds with every granular shoulder of the lymphocyte cloud made a cloud of its
    own (``member``, ``mode_xy``, ``cw``, ``spread`` extended; the shoulder's mode is its
    component's mean).

    A shoulder is a component the modes put in the lymphocyte cloud that holds at least
    ``min_cloud`` of the events and is centred above the lymphocytes' mode by at least
    `_FSC_STEP` of their standard deviations on forward scatter (larger cells) and
    `_SSC_STEP` on side scatter, with the step of granular cells (`_granular`). Such a
    component is a cloud of larger cells the mixture could not give a mode of its own:
    monocytes spread widely on side scatter (PBMC with lymphocytes low on FSC, monocytes
    only ~1.3 x their FSC) climb into the lymphocytes without a valley, and the gate then
    took the monocyte cloud (3,600 to 7,600 monocytes in the lymphocyte gate of 5 of 112
    simulated low-FSC files; NK of nonT up to 9 pp low from the CD14-dim monocytes the
    CD14 cut leaves, live of singlets up to 6.5 pp off). The large lymphocytes' own
    components (NK cells, activated cells) lie within a few of the lymphocytes' standard
    deviations on side scatter, and a broad component of dying cells and of the bridge
    towards the monocytes is centred at about the lymphocytes' forward scatter: neither
    is a shoulder (taking such a bridge cut 12 % of the NK cells of a file). A shoulder
    has no valley towards the lymphocytes, so no side-scatter bound comes from it
    (`_ssc_valley`); its posterior (``exclude_larger``) leaves it out."""
    means, weights = gm.means_, gm.weights_
    lym_mode = mode_xy[lym]
    member = member.copy()
    modes, weights_c, spreads = list(mode_xy), list(cw), list(spread)
    for i in np.flatnonzero(member == lym):
        step = means[i] - lym_mode
        if (
            weights[i] >= min_cloud
            and step[0] >= _FSC_STEP * spread[lym][0]
            and step[1] >= _SSC_STEP * spread[lym][1]
            and _granular(lym_mode, means[i], log)
        ):
            member[i] = len(modes)
            modes.append(means[i].copy())
            weights_c.append(float(weights[i]))
            weights_c[lym] -= float(weights[i])
            spreads.append(np.sqrt(np.diag(gm.covariances_[i])))
    return member, np.asarray(modes), np.asarray(weights_c), np.asarray(spreads)


def _ssc_valley(gm, clouds: dict[str, Any], log: bool = True) -> float | None:
    """Side scatter at which the lymphocyte cloud ends below the clouds of larger,
    granular cells (monocytes, granulocytes): the lowest of the density valleys of the
    fitted mixture on the straight paths from the lymphocytes' mode to each such cloud's
    mode (the saddle a density-minimum cut finds in one dimension). Only granular clouds
    count (`_granular`): a cloud of lymphocyte doublets lies above the lymphocytes on both
    scatters too, but its valley sits inside the large lymphocytes. None without such a
    cloud (``log``: the mixture was fitted on log scatter).

    Lymphocytes are agranular, so nothing above that level of side scatter is one,
    whatever its forward scatter. Without this bound the generous contour keeps the region
    above the lymphocytes at low forward scatter (dying cells, and the bridge of events
    between debris and monocytes) wherever no larger-cell component dominates the mixture
    there: on the real Lyoplate NK tube that region held 4,000 events (+5 pp of all
    events), lineage+ and CD14-dim alike. The position is relative to the clouds of the
    file: no scatter value of one instrument enters. The price, on the simulator: the
    granular tail of the NK cells and dead lymphocytes (shrunken, more granular) above
    the valley go too, about 0.4 pp of NK of nonT and +0.25 pp on live of singlets (dead
    cells then leave by scatter rather than by the viability dye).

    Applying the bound only below some forward scatter (where the dying cells are, not
    the larger NK cells) was measured and not taken: ending it 0.5 of the lymphocytes'
    FSC standard deviations above their mode kept a further 1.2 % of the NK cells on 64
    fresh simulated files (3.4 to 2.2 % lost at this gate) but let 1.2 pp more events
    into the gate on the Lyoplate NK tube (+1.47 pp against openCyto, F1 0.978).
    """
    modes = [np.asarray(c["mode"], dtype=np.float64) for c in clouds["clouds"]]
    roles = [c["role"] for c in clouds["clouds"]]
    lym = modes[roles.index("lymphocytes")]
    t = np.linspace(0.0, 1.0, 201)[:, None]
    found = None
    shoulders = [bool(c.get("shoulder", False)) for c in clouds["clouds"]]
    for mode, role, shoulder in zip(modes, roles, shoulders):
        # a shoulder has no valley towards the lymphocytes: its posterior leaves it out
        if role != "larger cells" or shoulder or not _granular(lym, mode, log):
            continue
        path = lym + t * (mode - lym)
        y = float(path[int(np.argmin(gm.score_samples(path))), 1])
        found = y if found is None else min(found, y)
    return found


#: a larger-cell cloud is granular when its side scatter exceeds the lymphocytes' by a
#: factor at least this power of its forward-scatter factor (see `_granular`)
GRANULAR_RATIO = 1.5


def _granular(lym: np.ndarray, mode: np.ndarray, log: bool) -> bool:
    """Whether a cloud of larger cells at ``mode`` is granular cells rather than
    aggregates of lymphocytes: its step from the lymphocyte mode ``lym`` on log side
    scatter is at least `GRANULAR_RATIO` times its step on log forward scatter.

    Pulse areas add, so a doublet or triplet of lymphocytes multiplies forward and side
    scatter by the same factor (2, 3: a step ratio of 1); monocytes and granulocytes are
    granular, their side scatter grows much more than their size. Measured on 64 fresh
    simulated files (default and widened conditions: whole blood, other voltages, low-FSC
    PBMC) and the two real Lyoplate tubes, every cloud the mixture called larger cells had
    a step ratio of 1.02-1.17 (three doublet clouds) or 1.93-3.91 (monocytes,
    granulocytes; 2.33 and 2.10 for the two larger-cell clouds of the Lyoplate NK tube,
    3.76 on the B tube): 1.5 lies in the gap. The valley towards a doublet cloud lies
    about halfway up its side-scatter step, inside the large lymphocytes' tail (NK cells
    above all): on two of those files the doublets (3 % of events) formed a cloud of their
    own and their valley put the bound 1.8 lymphocyte standard deviations above the mode,
    cutting 18 % of the NK cells (NK of nonT 3-4 pp low). Singlet gates below this gate
    remove the doublets."""
    step = np.asarray(mode, dtype=np.float64) - np.asarray(lym, dtype=np.float64)
    if not log:
        step = np.log10(np.maximum(mode, 1e-12)) - np.log10(np.maximum(lym, 1e-12))
    return bool(step[0] > 0 and step[1] >= GRANULAR_RATIO * step[0])


_MAD_SD = 1.4826  # MAD of a normal distribution -> its standard deviation

#: the lymphocyte gate's lower bound on forward scatter lies this many of the lymphocyte
#: cloud's standard deviations below its mode: a log-normal cloud holds all but 3 in
#: 100,000 of its cells above it (resting lymphocytes have a narrow size distribution)
FSC_FLOOR_SD = 4.0


def _fsc_floor(gm, clouds: dict[str, Any], X: np.ndarray) -> float | None:
    """Forward scatter below which no event is a lymphocyte: `FSC_FLOOR_SD` standard
    deviations of the lymphocyte cloud below its mode (``X``: the fit's events, on the
    fit scale).

    The spread is measured on the cloud's upper side (the events the mixture gives to
    the lymphocyte cloud's components, above its mode: 1.4826 x their median distance from
    it), the side away from the debris: when debris, dead cells or platelets reach into
    the lymphocytes without a valley of their own (PBMC with lymphocytes low on FSC, the
    real Lyoplate tubes), the mixture often joins them to the lymphocyte cloud and its
    lower side is then theirs. On the real Lyoplate NK tube the generous contour reached
    down to the acquisition threshold (FSC-A 0.19 of the range) through that debris;
    this bound lies at 0.26-0.28, where openCyto's density cut on FSC-A lies (0.276),
    for every subsample seed tried. None when fewer than 50 events lie above the mode.
    """
    cloud = clouds["member"] == clouds["member"][clouds["core"]]
    mode = [c["mode"] for c in clouds["clouds"] if c["role"] == "lymphocytes"][0]
    x = X[cloud[gm.predict(X)], 0]
    up = x[x > mode[0]] - mode[0]
    if len(up) < 50:
        return None
    return float(mode[0] - FSC_FLOOR_SD * _MAD_SD * float(np.median(up)))


def _with_neighbours(
    gm, core: int, joined: np.ndarray, seeds: np.ndarray, candidates: np.ndarray
) -> np.ndarray:
    """Indices of the larger-cell components: ``seeds`` (boolean per component) plus every
    candidate at least twice as near to one of them as to the core (Mahalanobis distances
    between means, in the candidate's own covariance), repeated until none joins.

    The mixture often splits one cloud of larger cells (monocytes) into two or three
    components. One part then sits closer to the core than the ``far`` rule asks, with its
    centre inside the generous region when a broad joined component (dying cells and the
    large lymphocytes' tail, spread over the whole valley) reaches it; taken on its own it
    looks like a bridge and was kept, letting half the monocyte cloud into the gate (seed
    30, strong drift: +7.7 pp lymphocytes, 1,400 CD14-dim monocytes left in ``live``; that
    part lay 1.6 units from the rest of the cloud and 6.9 from the core). A bridge holding
    the large lymphocytes' tail lies between the two at comparable distances (e.g. 3.0 from
    the core, 2.1 from the monocytes) and stays.
    """
    means, covs = gm.means_, gm.covariances_
    larger = np.asarray(seeds, dtype=bool).copy()
    cand = np.asarray(candidates, dtype=bool) & ~larger
    cand[np.asarray(joined, dtype=np.intp)] = False
    cand[core] = False
    changed = True
    while changed and larger.any():
        changed = False
        for i in np.flatnonzero(cand & ~larger):
            d = _mahalanobis(means, means[i], covs[i])
            if 2.0 * float(d[larger].min()) <= float(d[core]):
                larger[i] = changed = True
    return np.flatnonzero(larger)


def _mahalanobis(X: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    d = np.atleast_2d(X) - mean
    inv = np.linalg.inv(cov)
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, inv, d), 0.0))


def _region_polygon(
    gx,
    gy,
    inside: np.ndarray,
    seed_point: np.ndarray,
    level: float = 0.5,
    what: str = "lymphocyte region around the core component",
) -> np.ndarray:
    """Outline (polygon vertices) of the connected region of the grid ``inside`` (rows: y,
    columns: x; boolean, or values in [0, 1] contoured at ``level``) that holds
    ``seed_point``. The grid is ringed with zeros, so regions reaching its edge close."""
    import contourpy

    z = np.zeros((len(gy) + 2, len(gx) + 2))
    z[1:-1, 1:-1] = inside
    dx, dy = gx[1] - gx[0], gy[1] - gy[0]
    ex = np.concatenate([[gx[0] - dx], gx, [gx[-1] + dx]])
    ey = np.concatenate([[gy[0] - dy], gy, [gy[-1] + dy]])
    lines = contourpy.contour_generator(x=ex, y=ey, z=z, name="serial").lines(level)
    best, best_area = None, 0.0
    for line in lines:
        if len(line) < 4:
            continue
        poly = PolygonGate(dims=("x", "y"), vertices=tuple(map(tuple, line)))
        if not poly.mask([np.array([seed_point[0]]), np.array([seed_point[1]])])[0]:
            continue
        x, y = line[:, 0], line[:, 1]
        area = 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
        if area > best_area:
            best, best_area = line, area
    if best is None:
        raise _NoFit(f"no {what}")
    if np.allclose(best[0], best[-1]):
        best = best[:-1]
    return best


def _ellipse_points(mean, cov, radius: float, n: int = 72):
    """Boundary of the ``radius`` Mahalanobis ellipse of a 2-D Gaussian, ``n`` points."""
    r = float(radius)
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    circle = np.column_stack([np.cos(t), np.sin(t)]) * (r * np.sqrt(np.maximum(vals, 0.0)))
    return mean + circle @ vecs.T


# --- high/low ----------------------------------------------------------------------------


@register_adaptive("hilo")
class HighLowGate(AdaptiveGate):
    """A "high/low" population on two markers, e.g. CD25hi CD127lo Tregs within CD4.

    A Gaussian mixture with ``n_components`` components is fitted on the two markers. The
    target component is the one furthest towards ``signs`` (``"+"`` high, ``"-"`` low) in
    standardised units; with ``join`` (default), components whose score along the signs
    lies nearer the target's than the largest component's join it; the rest form the
    other group. The boundary is the line
    perpendicular to Fisher's discriminant direction (pooled covariance of the two
    groups) where the target group's posterior, projected on that direction, reaches
    ``posterior`` (0.5). With ``cut="projection"`` the position along that direction is
    instead the equal-posterior (Bayes) point of a two-component Gaussian mixture fitted
    to the events' projections (started at the two groups' projected means): a component
    that mixes the target with the tail of the rest (e.g. CD25-intermediate naive Tregs
    with CD25-bright conventional cells) then cannot drag the line into the rest, because
    the cut depends only on how the projected values split, not on which components
    joined the target. If that mixture gives no crossing between its means, the group
    posterior's crossing is used (``params_["cut"]`` says which).
    The gate is that half-plane clipped to a generous box around the data, as a polygon,
    so it exports and draws like a hand-drawn gate. Optional ``min``/``max`` corners
    (per dimension, None to leave open) intersect it with a rectangle.

    With ``strict_signs`` the target group's mean must lie on the side of the rest's mean
    that ``signs`` name on every marker (a CD56bright group has more CD56 than the rest),
    else the fit gives no answer and the fallback is used (flagged): on a donor whose NK
    cells show no CD56-brighter group, a split along CD16 alone is not CD56bright.

    ``fallback`` is a static gate dict (required): the documented default position.
    """

    n_dims = 2

    def __init__(
        self,
        dims: Sequence[str],
        signs: Sequence[str] = ("+", "-"),
        n_components: int = 2,
        min_weight: float = 0.002,
        posterior: float = 0.5,
        join: bool = True,
        cut: str = "groups",
        strict_signs: bool = False,
        fallback: dict[str, Any] | None = None,
        n_init: int = 2,
        max_events: int = 10_000,
        random_state: int | None = 0,
    ) -> None:
        self.dims = dims
        self.signs = signs
        self.n_components = n_components
        self.min_weight = min_weight
        self.posterior = posterior
        self.join = join
        self.cut = cut
        self.strict_signs = strict_signs
        self.fallback = fallback
        self.n_init = n_init
        self.max_events = max_events
        self.random_state = random_state
        self._check_common()
        where = f"hilo gate on {list(self.dims)}"
        if len(signs) != 2:
            raise TemplateError(f"{where}: two signs needed")
        for s in signs:
            _sign_ok(s, where)
        if int(n_components) < 2:
            raise TemplateError(f"{where}: n_components must be >= 2")
        if not 0.0 < float(posterior) < 1.0:
            raise TemplateError(f"{where}: posterior must be in (0, 1)")
        if cut not in ("groups", "projection"):
            raise TemplateError(f"{where}: cut must be 'groups' or 'projection', got {cut!r}")
        if fallback is None or not isinstance(fallback, dict):
            raise TemplateError(f"{where}: a fallback gate (dict) is required")

    def _min_fit_events(self) -> int:
        return 20 * int(self.n_components)

    def _fallback_gate(self) -> Gate:
        return _static_fallback(self.fallback, self.dims, "hilo")

    def _fit(self, cols):
        X = np.column_stack(cols)
        gm = _gaussian_mixture(X, int(self.n_components), self.random_state, int(self.n_init))
        sd = X.std(axis=0)
        sd[sd == 0] = 1.0
        direction = np.array([1.0 if s == "+" else -1.0 for s in self.signs])
        score = ((gm.means_ - X.mean(axis=0)) / sd) @ direction
        score[gm.weights_ < float(self.min_weight)] = -np.inf
        target = int(np.argmax(score))
        bulk = int(np.argmax(gm.weights_))
        group = [target]
        if self.join and bulk != target:
            # components nearer the target than the bulk along the signs join the target
            # (e.g. CD25-intermediate naive Tregs next to CD25-bright memory Tregs)
            mid = 0.5 * (score[target] + score[bulk])
            group = [k for k in range(len(score)) if k != bulk and score[k] >= mid]
        post = gm.predict_proba(X)
        p_t = post[:, group].sum(axis=1)
        w_t = p_t.sum()
        w_r = len(X) - w_t
        if w_t < 5 or w_r < 5:
            raise _NoFit("target group or rest is empty")
        mu_t = (p_t[:, None] * X).sum(axis=0) / w_t
        mu_r = ((1 - p_t)[:, None] * X).sum(axis=0) / w_r
        if self.strict_signs:
            # the target must differ from the rest the way its name says on EVERY marker
            # (CD56bright: brighter on CD56 than the rest, not only lower on CD16)
            wrong = [
                f"{d} ({'higher' if sg == '+' else 'lower'} expected)"
                for d, sg, a, b in zip(self.dims, self.signs, mu_t, mu_r)
                if (a - b) * (1.0 if sg == "+" else -1.0) <= 0
            ]
            if wrong:
                raise _NoFit(
                    "the mixture's target group does not differ from the rest on "
                    + ", ".join(wrong)
                )
        d_t, d_r = X - mu_t, X - mu_r
        cov_t = (p_t[:, None] * d_t).T @ d_t / w_t
        cov_r = ((1 - p_t)[:, None] * d_r).T @ d_r / w_r
        pooled = (w_t * cov_t + w_r * cov_r) / len(X) + 1e-9 * np.eye(2)
        w = np.linalg.solve(pooled, mu_t - mu_r)
        w /= np.linalg.norm(w)
        if float(w @ direction) <= 0:
            raise _NoFit("discriminant direction points away from the requested signs")
        # project and find where posterior(target | projection) crosses the level, using
        # the mixture's own per-event posteriors binned along the projection
        z = X @ w
        zt, zr = float(mu_t @ w), float(mu_r @ w)
        how = "groups"
        if self.cut == "projection":
            try:
                c = _projection_cut(z, zr, zt, float(self.posterior), self.random_state)
                how = "projection"
            except _NoFit:
                c = _posterior_crossing(z, p_t, zr, zt, float(self.posterior))
        else:
            c = _posterior_crossing(z, p_t, zr, zt, float(self.posterior))
        verts = _halfplane_polygon(w, c, X)
        gate = PolygonGate(dims=tuple(self.dims), vertices=verts)
        return gate, {
            "direction": w,
            "offset": c,
            "cut": how,
            "target_component": target,
            "target_group": group,
            "target_weight": float(w_t / len(X)),
            "target_mean": mu_t,
            "rest_mean": mu_r,
        }


def _projection_cut(z: np.ndarray, z_rest: float, z_target: float, level: float, seed) -> float:
    """Equal-posterior (``level``) point of a two-component 1-D mixture fitted to the
    projections ``z``, started at the groups' projected means; `_NoFit` unless the
    crossing lies between the fitted means, with the upper component on the target side."""
    gm = _gaussian_mixture(z[:, None], 2, seed, 1, np.array([[z_rest], [z_target]]))
    m = gm.means_[:, 0]
    lower, upper = int(np.argmin(m)), int(np.argmax(m))
    if lower == upper or (z_target > z_rest) != (m[upper] > m[lower]):
        raise _NoFit("projected mixture components do not separate the groups")
    return _crossing_1d(gm, np.array([upper]), float(m[lower]), float(m[upper]), level)


def _posterior_crossing(z: np.ndarray, p: np.ndarray, z_rest: float, z_target: float, level):
    """Position along ``z`` (between the group means) where the binned mean of the target
    posterior ``p`` crosses ``level``."""
    lo, hi = min(z_rest, z_target), max(z_rest, z_target)
    edges = np.linspace(lo, hi, 101)
    which = np.clip(np.searchsorted(edges, z) - 1, 0, 99)
    inside = (z >= lo) & (z <= hi)
    num = np.bincount(which[inside], weights=p[inside], minlength=100)
    den = np.bincount(which[inside], minlength=100).astype(np.float64)
    centers = 0.5 * (edges[:-1] + edges[1:])
    ok = den > 0
    if ok.sum() < 3:
        return 0.5 * (lo + hi)
    pc = num[ok] / den[ok]
    cc = centers[ok]
    above = pc >= level
    change = np.flatnonzero(above[1:] != above[:-1])
    if not len(change):
        raise _NoFit("target posterior never crosses the level between the groups")
    # the last crossing before the target mean (z increases towards the target)
    i = int(change[-1])
    p0, p1 = pc[i], pc[i + 1]
    return float(cc[i] + (level - p0) * (cc[i + 1] - cc[i]) / (p1 - p0))


def _halfplane_polygon(w: np.ndarray, c: float, X: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Polygon of ``{x : w.x >= c}`` clipped to a box well beyond the data."""
    lo, hi = X.min(axis=0), X.max(axis=0)
    pad = 2.0 * (hi - lo) + 1.0
    lo, hi = lo - pad, hi + pad
    box = [(lo[0], lo[1]), (hi[0], lo[1]), (hi[0], hi[1]), (lo[0], hi[1])]
    out: list[tuple[float, float]] = []
    for i in range(4):
        p, q = np.asarray(box[i]), np.asarray(box[(i + 1) % 4])
        fp, fq = float(w @ p) - c, float(w @ q) - c
        if fp >= 0:
            out.append((float(p[0]), float(p[1])))
        if (fp >= 0) != (fq >= 0):
            t = fp / (fp - fq)
            r = p + t * (q - p)
            out.append((float(r[0]), float(r[1])))
    if len(out) < 3:
        raise _NoFit("discriminant line does not cross the data box")
    return tuple(out)


# --- construction from templates --------------------------------------------------------


def _construct(type_name: str, spec: dict[str, Any], where: str) -> AdaptiveGate:
    cls = ADAPTIVE_TYPES[type_name]
    allowed = set(cls._param_names())
    unknown = set(spec) - allowed
    if unknown:
        raise TemplateError(
            f"{where}: {type_name} gate has no field(s) {sorted(unknown)}; "
            f"allowed: {sorted(allowed - {'random_state'})}"
        )
    if "dims" not in spec and "dims" not in _defaults(cls):
        raise TemplateError(f"{where}: {type_name} gate needs 'dims'")
    spec = dict(spec)
    if "dims" in spec:
        spec["dims"] = tuple(spec["dims"])
    try:
        return cls(**spec)
    except TemplateError as exc:
        raise TemplateError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"{where}: {type_name} gate: {exc}") from None


def _defaults(cls) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {
        k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty
    }


def is_adaptive(spec: dict[str, Any] | Any) -> bool:
    """True when a gate spec (dict) or object is a data-adaptive gate."""
    if isinstance(spec, AdaptiveGate):
        return True
    return isinstance(spec, dict) and spec.get("type") in ADAPTIVE_TYPES


def adaptive_from_dict(spec: dict[str, Any], where: str = "gate") -> AdaptiveGate:
    """Build an (unfitted) adaptive gate from its template description."""
    spec = dict(spec)
    type_name = spec.pop("type", None)
    if type_name not in ADAPTIVE_TYPES:
        raise TemplateError(
            f"{where}: unknown adaptive gate type {type_name!r}; known: {sorted(ADAPTIVE_TYPES)}"
        )
    return _construct(type_name, spec, where)


def spec_key(est: AdaptiveGate) -> str:
    """A canonical string of an estimator's hyperparameters (for caching and comparison)."""
    return json.dumps(est.to_dict(), sort_keys=True)


__all__ = [
    "ADAPTIVE_TYPES",
    "AdaptiveGate",
    "BlobGate",
    "DensityMinimumGate",
    "HighLowGate",
    "MixtureGate",
    "QuantileGate",
    "SingletGate",
    "TailGate",
    "ThresholdsGate",
    "adaptive_from_dict",
    "binned_density",
    "is_adaptive",
    "register_adaptive",
]
