"""Gating-ML 2.0 import and export, evaluated by immunoprofile's own gate objects.

A Gating-ML 2.0 document (Spidlen et al., Cytometry A 87:683, 2015) holds gates,
transformations and spectrum matrices. `read_gatingml` turns it into a `GatingMLStrategy`:
every gate becomes one of the frozen gate classes of `immunoprofile.gating.gates`
(range, rectangle, polygon, ellipse, quadrant, boolean), and every gate dimension becomes a
`Dimension` that says how its column is computed from the events:

    channel (scaled) --compensation--> --ratio (fratio)--> --scale transform--> column

Columns are computed in float64 so that values on a gate boundary compare exactly as the
specification (and the ISAC compliance suite) expects; each column is computed once per
evaluation and shared by every gate that uses it.

Boundary conventions (section 5 of the specification): an interval includes its minimum
and excludes its maximum; quadrant dividers split a dimension into such intervals; a
boolean gate references other gates by id, each with its full membership (its own
ancestors included), and is itself restricted to its parent.

`write_gatingml` writes a strategy back; `strategy_from_gates` builds one from gates fitted
on a sample (for example a template's adaptive gates at their fitted positions).
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from immunoprofile._files import atomic_write_text
from immunoprofile._xml import attr, child, children, local_name, number, parse
from immunoprofile.exceptions import CompensationError, GatingError, GatingMLError
from immunoprofile.gating.dimensions import scaled_columns, unmixing_matrix
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.gates import (
    BooleanGate,
    EllipseGate,
    Gate,
    PolygonGate,
    QuadrantGate,
    RangeGate,
    RectangleGate,
    gate_from_dict,
)
from immunoprofile.gating.plan import resolve_name
from immunoprofile.io.fcs import read_fcs
from immunoprofile.sample import Sample, make_channel_table
from immunoprofile.transforms import transform_from_dict

NS_GATING = "http://www.isac-net.org/std/Gating-ML/v2.0/gating"
NS_TRANSFORMS = "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
NS_DATATYPE = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"

UNCOMPENSATED = "uncompensated"
FCS_COMPENSATION = "FCS"

# Gating-ML transform element -> (kind used here, parameter names in constructor order)
_SCALE_TRANSFORMS: dict[str, tuple[str, ...]] = {
    "flin": ("T", "A"),
    "flog": ("T", "M"),
    "fasinh": ("T", "M", "A"),
    "logicle": ("T", "W", "M", "A"),
    "hyperlog": ("T", "W", "M", "A"),
}


# --------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaleTransform:
    """One Gating-ML scale transformation (``flin``, ``flog``, ``fasinh``, ``logicle``,
    ``hyperlog``) with its parameters as named in the specification (T, W, M, A)."""

    id: str
    kind: str
    params: tuple[tuple[str, float], ...]

    def build(self) -> Any:
        """The `immunoprofile.transforms` object computing this transformation."""

        return transform_from_dict({"type": self.kind, **dict(self.params)})

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform in float64 (the exact path; boundaries are compared exactly)."""
        out = self.build().apply(np.asarray(x, dtype=np.float64), dtype=np.float64)
        return np.asarray(out, dtype=np.float64)

    def spec(self) -> dict[str, Any]:
        """The transform as a template/`immunoprofile.transforms` dict."""
        return {"type": self.kind, **{k.lower(): v for k, v in self.params}}


@dataclass(frozen=True)
class RatioTransform:
    """Gating-ML ``fratio``: ``A * (x - B) / (y - C)`` of two FCS dimensions."""

    id: str
    numerator: str
    denominator: str
    A: float = 1.0
    B: float = 0.0
    C: float = 0.0

    def apply(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.A * (x - self.B) / (y - self.C)


@dataclass(frozen=True)
class SpectrumMatrix:
    """A Gating-ML ``spectrumMatrix``: rows are fluorochromes, columns detectors.

    Compensated (unmixed) fluorochrome values are the least-squares solution of
    ``detectors = fluorochromes @ matrix``; for a square matrix that is ``x @ inv(matrix)``.
    """

    id: str
    fluorochromes: tuple[str, ...]
    detectors: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    inverted_already: bool = False

    def __post_init__(self) -> None:
        m = np.asarray(self.matrix, dtype=np.float64)
        if m.shape != (len(self.fluorochromes), len(self.detectors)):
            raise CompensationError(
                f"spectrum matrix {self.id!r}: shape {m.shape} does not match "
                f"{len(self.fluorochromes)} fluorochromes x {len(self.detectors)} detectors"
            )

    def unmixing(self) -> np.ndarray:
        """Detectors x fluorochromes matrix ``U`` with ``fluorochromes = detectors @ U``."""
        return unmixing_matrix(self.matrix, self.inverted_already, self.id)

    def apply(self, detector_columns: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """Unmix: detector columns in ``detectors`` order -> ``{fluorochrome: values}``."""
        x = np.column_stack([np.asarray(c, dtype=np.float64) for c in detector_columns])
        out = x @ self.unmixing()
        return {f: out[:, i] for i, f in enumerate(self.fluorochromes)}


@dataclass(frozen=True)
class Dimension:
    """How one gate dimension's column is computed.

    ``name`` is an FCS dimension ($PnN, or a fluorochrome of a spectrum matrix), or, when
    ``ratio`` is set, the id of an ``fratio`` transformation. ``compensation`` is
    ``"uncompensated"``, ``"FCS"`` (the file's own spillover) or a spectrum matrix id;
    ``transform`` the id of a scale transformation, or None.
    """

    name: str
    compensation: str = UNCOMPENSATED
    transform: str | None = None
    ratio: bool = False

    @property
    def key(self) -> str:
        """A unique, readable column label, used as the gate's ``dims`` entry."""
        base = f"ratio:{self.name}" if self.ratio else self.name
        if self.compensation != UNCOMPENSATED:
            base = f"{base}[{self.compensation}]"
        if self.transform:
            base = f"{self.transform}({base})"
        return base


@dataclass(frozen=True)
class GateEntry:
    """One gate of a strategy: its id, parent id, gate object and dimension recipes.

    For boolean gates ``dimensions`` is empty and ``gate.dims`` holds referenced gate ids.
    ``quadrant_group`` names the Gating-ML ``QuadrantGate`` a quadrant came from.
    """

    id: str
    parent: str | None
    gate: Gate
    dimensions: tuple[Dimension, ...] = ()
    quadrant_group: str | None = None


@dataclass
class GatingMLStrategy:
    """Gates, transformations and spectrum matrices read from (or for) Gating-ML 2.0."""

    gates: dict[str, GateEntry] = field(default_factory=dict)
    transforms: dict[str, ScaleTransform] = field(default_factory=dict)
    ratios: dict[str, RatioTransform] = field(default_factory=dict)
    matrices: dict[str, SpectrumMatrix] = field(default_factory=dict)
    source: str = ""
    # dividers of each quadrant group, kept for faithful export: group -> [(id, Dimension, values)]
    quadrant_dividers: dict[str, list[tuple[str, Dimension, tuple[float, ...]]]] = field(
        default_factory=dict
    )

    # --- structure --------------------------------------------------------------------

    @property
    def gate_ids(self) -> list[str]:
        return list(self.gates)

    def ancestors(self, gate_id: str) -> list[str]:
        """Ids from the root down to (not including) ``gate_id``."""
        out: list[str] = []
        seen = {gate_id}
        cur = self._entry(gate_id).parent
        while cur is not None:
            if cur in seen:
                raise GatingMLError(f"{self.source}: parent cycle through gate {cur!r}")
            seen.add(cur)
            out.append(cur)
            cur = self._entry(cur).parent
        return out[::-1]

    def max_depth(self) -> int:
        """Depth of the deepest gate (a root gate has depth 1)."""
        return max((len(self.ancestors(g)) + 1 for g in self.gates), default=0)

    def channels_needed(self) -> set[str]:
        """The FCS dimension names this strategy reads from the events."""
        need: set[str] = set()
        for e in self.gates.values():
            for d in e.dimensions:
                if d.ratio:
                    r = self.ratios[d.name]
                    names = [r.numerator, r.denominator]
                else:
                    names = [d.name]
                for n in names:
                    m = self.matrices.get(d.compensation)
                    if m is not None and n in m.fluorochromes:
                        need.update(m.detectors)
                    else:
                        need.add(n)
        return need

    def _entry(self, gate_id: str) -> GateEntry:
        try:
            return self.gates[gate_id]
        except KeyError:
            raise GatingMLError(
                f"{self.source}: gate {gate_id!r} is referenced but not defined; "
                f"gates are {sorted(self.gates)}"
            ) from None

    # --- evaluation -------------------------------------------------------------------

    def evaluate(
        self,
        data: Any,
        gate_ids: Sequence[str] | None = None,
        spillover: tuple[Sequence[str], np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """Membership of every gate (or of ``gate_ids``) as boolean masks over all events.

        The strategy becomes a template (`strategy_to_template` with every dimension
        derived) and the template engine (`immunoprofile.gating.engine.apply_template`)
        gates the events: this is a thin adapter, not a second evaluator.

        Parameters
        ----------
        data : a `Sample` as read, or a mapping of FCS dimension name -> 1-D array of
            channel values (used in float64). A Sample read with ``scale=False`` is brought
            to the channel scale in float64, which exact agreement on gate boundaries
            needs; a scaled Sample's float32 values are widened as they are.
        gate_ids : the gates wanted (all are evaluated).
        spillover : ``(detectors, matrix)`` used for ``compensation-ref="FCS"``; by default
            the sample's ``$SPILLOVER``/``SPILL`` keyword. Without any, ``"FCS"`` means
            uncompensated, as the specification says.

        Returns
        -------
        dict mapping gate id -> bool array (absolute membership: parents applied).
        """

        sample, values = _as_sample(data)
        tmpl, names = _template_and_names(self, "gatingml", derive_all=True, spillover=spillover)
        res = apply_template(sample, tmpl, min_events=0, exact_values=values)
        wanted = list(self.gates) if gate_ids is None else list(gate_ids)
        for g in wanted:
            self._entry(g)
        return {g: res.masks[names[g]] for g in wanted}

    def counts(self, data: Any, **kw: Any) -> dict[str, int]:
        """Number of events in each gate (see `evaluate`)."""
        return {k: int(v.sum()) for k, v in self.evaluate(data, **kw).items()}


def _as_sample(data: Any) -> tuple[Any, dict[str, np.ndarray] | None]:
    """A Sample for the engine, and float64 channel values when the caller gave them."""

    if isinstance(data, Sample):
        return data, None
    if hasattr(data, "columns") and hasattr(data, "__getitem__") and not isinstance(data, Mapping):
        data = {str(c): np.asarray(data[c]) for c in data.columns}  # a DataFrame
    if not isinstance(data, Mapping):
        raise GatingError(
            f"cannot evaluate gates on a {type(data).__name__}: expected a Sample or a mapping "
            "of channel name -> values"
        )
    values = {str(k): np.asarray(v, dtype=np.float64).ravel() for k, v in data.items()}
    lengths = {len(v) for v in values.values()}
    if len(lengths) > 1:
        raise GatingError(f"channel columns differ in length: {sorted(lengths)}")
    names = list(values)
    events = np.column_stack([values[n] for n in names]) if names else np.empty((0, 0), np.float64)
    sample = Sample(events, make_channel_table(names), {}, name="<columns>", history=[])
    return sample, values


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------


def _float(text: str | None, where: str) -> float:
    return number(text, where, GatingMLError)


class _Reader:
    def __init__(self, source: str) -> None:
        self.src = source
        self.s = GatingMLStrategy(source=source)

    # transforms and matrices
    def transformation(self, el: ET.Element) -> None:
        tid = attr(el, "id")
        if not tid:
            raise GatingMLError(f"{self.src}: a transformation has no id")
        if len(el) == 0:
            raise GatingMLError(f"{self.src}: transformation {tid!r} is empty")
        body = next(c for c in el if local_name(c.tag) != "custom_info")
        kind = local_name(body.tag)
        where = f"{self.src}: transformation {tid!r}"
        if kind == "fratio":
            dims = [attr(d, "name") for d in children(body, "fcs-dimension")]
            if len(dims) != 2 or not all(dims):
                raise GatingMLError(f"{where}: fratio needs two fcs-dimensions")
            self.s.ratios[tid] = RatioTransform(
                tid,
                dims[0],  # type: ignore[arg-type]
                dims[1],  # type: ignore[arg-type]
                _float(attr(body, "A", "1"), where),
                _float(attr(body, "B", "0"), where),
                _float(attr(body, "C", "0"), where),
            )
            return
        names = _SCALE_TRANSFORMS.get(kind)
        if names is None:
            raise GatingMLError(
                f"{where}: unsupported transformation <{kind}>; supported: "
                f"{sorted([*_SCALE_TRANSFORMS, 'fratio'])}"
            )
        params = []
        for p in names:
            v = attr(body, p)
            if v is None:
                raise GatingMLError(f"{where}: <{kind}> lacks parameter {p}")
            params.append((p, _float(v, f"{where} parameter {p}")))
        self.s.transforms[tid] = ScaleTransform(tid, kind, tuple(params))

    def spectrum_matrix(self, el: ET.Element) -> None:
        mid = attr(el, "id")
        where = f"{self.src}: spectrumMatrix {mid!r}"
        if not mid:
            raise GatingMLError(f"{self.src}: a spectrumMatrix has no id")
        fl_el, det_el = child(el, "fluorochromes"), child(el, "detectors")
        if fl_el is None or det_el is None:
            raise GatingMLError(f"{where}: needs <fluorochromes> and <detectors>")
        fl = tuple(attr(d, "name") or "" for d in fl_el if local_name(d.tag) == "fcs-dimension")
        det = tuple(attr(d, "name") or "" for d in det_el if local_name(d.tag) == "fcs-dimension")
        rows = []
        for sp in children(el, "spectrum"):
            rows.append(tuple(_float(attr(c, "value"), where) for c in children(sp, "coefficient")))
        inv = (attr(el, "matrix-inverted-already", "false") or "false").lower() == "true"
        self.s.matrices[mid] = SpectrumMatrix(mid, fl, det, tuple(rows), inv)

    # gates
    def dimension(self, el: ET.Element, where: str) -> Dimension:
        comp = attr(el, "compensation-ref") or UNCOMPENSATED
        tref = attr(el, "transformation-ref")
        fcs = child(el, "fcs-dimension")
        if fcs is not None:
            name = attr(fcs, "name")
            if not name:
                raise GatingMLError(f"{where}: fcs-dimension without a name")
            return Dimension(name, comp, tref, False)
        new = child(el, "new-dimension")
        if new is not None:
            ref = attr(new, "transformation-ref")
            if not ref:
                raise GatingMLError(f"{where}: new-dimension without a transformation-ref")
            return Dimension(ref, comp, tref, True)
        raise GatingMLError(f"{where}: dimension has neither fcs-dimension nor new-dimension")

    def add(self, entry: GateEntry) -> None:
        if entry.id in self.s.gates:
            raise GatingMLError(f"{self.src}: gate id {entry.id!r} is defined twice")
        self.s.gates[entry.id] = entry

    def gate(self, el: ET.Element) -> None:
        kind = local_name(el.tag)
        gid = attr(el, "id")
        if not gid:
            raise GatingMLError(f"{self.src}: a <{kind}> has no id")
        parent = attr(el, "parent_id")
        where = f"{self.src}: gate {gid!r}"
        if kind == "QuadrantGate":
            self.quadrants(el, gid, parent, where)
            return
        if kind == "BooleanGate":
            self.add(GateEntry(gid, parent, self.boolean(el, where)))
            return
        dims = tuple(self.dimension(d, where) for d in children(el, "dimension"))
        if not dims:
            raise GatingMLError(f"{where}: no dimensions")
        keys = tuple(d.key for d in dims)
        if len(set(keys)) != len(keys):
            raise GatingMLError(f"{where}: the same dimension is used twice")
        if kind == "RectangleGate":
            mins, maxs = [], []
            for d in children(el, "dimension"):
                lo, hi = attr(d, "min"), attr(d, "max")
                if lo is None and hi is None:
                    raise GatingMLError(f"{where}: a dimension has neither min nor max")
                mins.append(None if lo is None else _float(lo, where))
                maxs.append(None if hi is None else _float(hi, where))
            if len(dims) == 1:
                gate: Gate = RangeGate(keys, min=mins[0], max=maxs[0])
            else:
                gate = RectangleGate(keys, min=tuple(mins), max=tuple(maxs))
        elif kind == "PolygonGate":
            verts = []
            for v in children(el, "vertex"):
                c = [_float(attr(x, "value"), where) for x in children(v, "coordinate")]
                if len(c) != 2:
                    raise GatingMLError(f"{where}: a vertex needs 2 coordinates")
                verts.append((c[0], c[1]))
            gate = PolygonGate(keys, vertices=tuple(verts))
        elif kind == "EllipsoidGate":
            mean_el, cov_el = child(el, "mean"), child(el, "covarianceMatrix")
            ds_el = child(el, "distanceSquare")
            if mean_el is None or cov_el is None or ds_el is None:
                raise GatingMLError(f"{where}: needs mean, covarianceMatrix and distanceSquare")
            mean = tuple(_float(attr(c, "value"), where) for c in children(mean_el, "coordinate"))
            cov = tuple(
                tuple(_float(attr(e, "value"), where) for e in children(r, "entry"))
                for r in children(cov_el, "row")
            )
            gate = EllipseGate(
                keys,
                mean=mean,
                covariance=cov,
                distance_square=_float(attr(ds_el, "value"), where),
            )
        else:
            raise GatingMLError(f"{where}: unsupported gate type <{kind}>")
        self.add(GateEntry(gid, parent, gate, dims))

    def boolean(self, el: ET.Element, where: str) -> BooleanGate:
        ops = [c for c in el if local_name(c.tag) in ("and", "or", "not")]
        if len(ops) != 1:
            raise GatingMLError(f"{where}: a BooleanGate needs exactly one of and/or/not")
        op = local_name(ops[0].tag)
        refs, comp = [], []
        for r in children(ops[0], "gateReference"):
            ref = attr(r, "ref")
            if not ref:
                raise GatingMLError(f"{where}: gateReference without ref")
            refs.append(ref)
            comp.append((attr(r, "use-as-complement", "false") or "").lower() == "true")
        if op == "not" and len(refs) != 1:
            raise GatingMLError(f"{where}: <not> takes exactly one gateReference")
        if op != "not" and len(refs) < 2:
            raise GatingMLError(f"{where}: <{op}> needs at least two gateReferences")
        return BooleanGate(tuple(refs), op=op, complement=tuple(comp))

    def quadrants(self, el: ET.Element, gid: str, parent: str | None, where: str) -> None:
        dividers: dict[str, tuple[Dimension, tuple[float, ...]]] = {}
        for dv in children(el, "divider"):
            did = attr(dv, "id")
            if not did:
                raise GatingMLError(f"{where}: a divider has no id")
            dim = self.dimension(dv, f"{where} divider {did!r}")
            vals = tuple(sorted(_float(v.text, where) for v in children(dv, "value")))
            if not vals:
                raise GatingMLError(f"{where}: divider {did!r} has no value")
            dividers[did] = (dim, vals)
        self.s.quadrant_dividers[gid] = [(k, d, v) for k, (d, v) in dividers.items()]
        for q in children(el, "Quadrant"):
            qid = attr(q, "id")
            if not qid:
                raise GatingMLError(f"{where}: a Quadrant has no id")
            dims, mins, maxs = [], [], []
            for pos in children(q, "position"):
                ref = attr(pos, "divider_ref")
                if ref not in dividers:
                    raise GatingMLError(f"{where} quadrant {qid!r}: unknown divider {ref!r}")
                dim, vals = dividers[ref]  # type: ignore[index]
                loc = _float(attr(pos, "location"), where)
                k = int(np.searchsorted(np.asarray(vals), loc, side="right"))
                dims.append(dim)
                mins.append(vals[k - 1] if k > 0 else None)
                maxs.append(vals[k] if k < len(vals) else None)
            if not dims:
                raise GatingMLError(f"{where} quadrant {qid!r}: no positions")
            keys = tuple(d.key for d in dims)
            single = all(
                len(dividers[attr(p, "divider_ref")][1]) == 1 for p in children(q, "position")
            )  # type: ignore[index]
            if len(dims) == 2 and single:
                thr = tuple(lo if lo is not None else hi for lo, hi in zip(mins, maxs))
                signs = tuple("+" if lo is not None else "-" for lo in mins)
                gate: Gate = QuadrantGate(keys, thresholds=thr, signs=signs)  # type: ignore[arg-type]
            elif len(dims) == 1:
                gate = RangeGate(keys, min=mins[0], max=maxs[0])
            else:
                gate = RectangleGate(keys, min=tuple(mins), max=tuple(maxs))
            self.add(GateEntry(qid, parent, gate, tuple(dims), quadrant_group=gid))


def _gate_elements(root: ET.Element) -> list[ET.Element]:
    """Gate elements under the root, and under wrapper elements some writers add around
    them (such as ``<sample>``), never inside another gate."""
    out = []
    for el in root:
        tag = local_name(el.tag)
        if tag.endswith("Gate"):
            out.append(el)
        elif tag not in ("transformation", "spectrumMatrix", "custom_info"):
            out.extend(_gate_elements(el))
    return out


def read_gatingml(source: str | os.PathLike | bytes) -> GatingMLStrategy:
    """Read a Gating-ML 2.0 document into a `GatingMLStrategy` of immunoprofile gates.

    Parameters
    ----------
    source : a path, or the XML itself as bytes or a string starting with ``<``.

    Raises
    ------
    GatingMLError : the XML is malformed or uses an unsupported element; the message
        names the file and the gate or transformation.
    """
    root, name = parse(source, GatingMLError, text_name="<gating-ml>")
    if local_name(root.tag) != "Gating-ML":
        raise GatingMLError(f"{name}: root element is <{local_name(root.tag)}>, not <Gating-ML>")
    r = _Reader(name)
    for el in root:  # transforms first: gates refer to them by id
        tag = local_name(el.tag)
        if tag == "transformation":
            r.transformation(el)
        elif tag == "spectrumMatrix":
            r.spectrum_matrix(el)
    for el in _gate_elements(root):
        r.gate(el)
    s = r.s
    if not s.gates:
        raise GatingMLError(
            f"{name}: no gates found (Gating-ML gates are <gating:RectangleGate>, "
            "<gating:PolygonGate>, ... elements under the root)"
        )
    for e in s.gates.values():  # check references now that every gate is known
        if e.parent is not None:
            s._entry(e.parent)
        if isinstance(e.gate, BooleanGate):
            for ref in e.gate.dims:
                s._entry(ref)
        for d in e.dimensions:
            if d.transform is not None and d.transform not in s.transforms:
                raise GatingMLError(
                    f"{name}: gate {e.id!r} uses undefined transformation {d.transform!r}"
                )
            if d.ratio and d.name not in s.ratios:
                raise GatingMLError(f"{name}: gate {e.id!r} uses undefined fratio {d.name!r}")
            if (
                d.compensation not in (UNCOMPENSATED, FCS_COMPENSATION)
                and d.compensation not in s.matrices
            ):
                raise GatingMLError(
                    f"{name}: gate {e.id!r} uses undefined spectrumMatrix {d.compensation!r}"
                )
    for g in s.gates:
        s.ancestors(g)  # raises on parent cycles
    return s


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------


def _num(v: float) -> str:
    v = float(v)
    if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


class _Writer:
    def __init__(self, s: GatingMLStrategy) -> None:
        self.s = s
        ET.register_namespace("gating", NS_GATING)
        ET.register_namespace("transforms", NS_TRANSFORMS)
        ET.register_namespace("data-type", NS_DATATYPE)
        self.root = ET.Element(f"{{{NS_GATING}}}Gating-ML")

    @staticmethod
    def g(name: str) -> str:
        return f"{{{NS_GATING}}}{name}"

    @staticmethod
    def t(name: str) -> str:
        return f"{{{NS_TRANSFORMS}}}{name}"

    @staticmethod
    def d(name: str) -> str:
        return f"{{{NS_DATATYPE}}}{name}"

    def fcs_dim(self, parent: ET.Element, name: str) -> None:
        ET.SubElement(parent, self.d("fcs-dimension"), {self.d("name"): name})

    def header(self) -> None:
        for m in self.s.matrices.values():
            el = ET.SubElement(self.root, self.t("spectrumMatrix"), {self.t("id"): m.id})
            if m.inverted_already:
                el.set(self.t("matrix-inverted-already"), "true")
            fl = ET.SubElement(el, self.t("fluorochromes"))
            for f in m.fluorochromes:
                self.fcs_dim(fl, f)
            det = ET.SubElement(el, self.t("detectors"))
            for f in m.detectors:
                self.fcs_dim(det, f)
            for row in m.matrix:
                sp = ET.SubElement(el, self.t("spectrum"))
                for v in row:
                    ET.SubElement(sp, self.t("coefficient"), {self.t("value"): _num(v)})
        for tr in self.s.transforms.values():
            el = ET.SubElement(self.root, self.t("transformation"), {self.t("id"): tr.id})
            ET.SubElement(el, self.t(tr.kind), {self.t(k): _num(v) for k, v in tr.params})
        for r in self.s.ratios.values():
            el = ET.SubElement(self.root, self.t("transformation"), {self.t("id"): r.id})
            body = ET.SubElement(
                el,
                self.t("fratio"),
                {self.t("A"): _num(r.A), self.t("B"): _num(r.B), self.t("C"): _num(r.C)},
            )
            self.fcs_dim(body, r.numerator)
            self.fcs_dim(body, r.denominator)

    def dim_attrs(self, dim: Dimension) -> dict[str, str]:
        a = {self.g("compensation-ref"): dim.compensation}
        if dim.transform:
            a[self.g("transformation-ref")] = dim.transform
        return a

    def dim_body(self, el: ET.Element, dim: Dimension) -> None:
        if dim.ratio:
            ET.SubElement(el, self.d("new-dimension"), {self.d("transformation-ref"): dim.name})
        else:
            self.fcs_dim(el, dim.name)

    def gate_el(self, kind: str, e: GateEntry) -> ET.Element:
        a = {self.g("id"): e.id}
        if e.parent is not None:
            a[self.g("parent_id")] = e.parent
        return ET.SubElement(self.root, self.g(kind), a)

    def gate(self, e: GateEntry) -> None:
        gt = e.gate
        if isinstance(gt, BooleanGate):
            el = self.gate_el("BooleanGate", e)
            op = ET.SubElement(el, self.g(gt.op))
            for ref, c in zip(gt.dims, gt.complement):
                a = {self.g("ref"): ref}
                if c:
                    a[self.g("use-as-complement")] = "true"
                ET.SubElement(op, self.g("gateReference"), a)
            return
        if isinstance(gt, RangeGate | RectangleGate | QuadrantGate):
            if isinstance(gt, RangeGate):
                lims = [(gt.min, gt.max)]
            elif isinstance(gt, RectangleGate):
                lims = list(zip(gt.min, gt.max))
            else:
                lims = [
                    (t, None) if s == "+" else (None, t) for t, s in zip(gt.thresholds, gt.signs)
                ]
            el = self.gate_el("RectangleGate", e)
            for dim, (lo, hi) in zip(e.dimensions, lims):
                a = self.dim_attrs(dim)
                if lo is not None and math.isfinite(lo):
                    a[self.g("min")] = _num(lo)
                if hi is not None and math.isfinite(hi):
                    a[self.g("max")] = _num(hi)
                self.dim_body(ET.SubElement(el, self.g("dimension"), a), dim)
            return
        if isinstance(gt, PolygonGate):
            el = self.gate_el("PolygonGate", e)
            for dim in e.dimensions:
                self.dim_body(ET.SubElement(el, self.g("dimension"), self.dim_attrs(dim)), dim)
            for vx in gt.vertices:
                v = ET.SubElement(el, self.g("vertex"))
                for c in vx:
                    ET.SubElement(v, self.g("coordinate"), {self.d("value"): _num(c)})
            return
        if isinstance(gt, EllipseGate):
            el = self.gate_el("EllipsoidGate", e)
            for dim in e.dimensions:
                self.dim_body(ET.SubElement(el, self.g("dimension"), self.dim_attrs(dim)), dim)
            mean = ET.SubElement(el, self.g("mean"))
            for c in gt.mean:
                ET.SubElement(mean, self.g("coordinate"), {self.d("value"): _num(c)})
            cov = ET.SubElement(el, self.g("covarianceMatrix"))
            for row in gt.covariance:
                r = ET.SubElement(cov, self.g("row"))
                for c in row:
                    ET.SubElement(r, self.g("entry"), {self.d("value"): _num(c)})
            ET.SubElement(el, self.g("distanceSquare"), {self.d("value"): _num(gt.distance_square)})
            return
        raise GatingMLError(
            f"gate {e.id!r}: a {type(gt).__name__} has no Gating-ML 2.0 form; "
            "fit it on a sample first (adaptive gates export at their fitted position)"
        )


def write_gatingml(strategy: GatingMLStrategy, path: str | os.PathLike | None = None) -> str:
    """Serialise ``strategy`` as Gating-ML 2.0; write it to ``path`` if given.

    Quadrants are written as rectangle gates with one-sided intervals (same membership,
    and every reader understands them). Returns the XML text.
    """
    w = _Writer(strategy)
    w.header()
    for e in strategy.gates.values():
        w.gate(e)
    ET.indent(w.root, space="    ")
    text = ET.tostring(w.root, encoding="unicode", xml_declaration=False)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + text + "\n"
    if path is not None:
        atomic_write_text(path, text)
    return text


# --------------------------------------------------------------------------------------
# from and to immunoprofile templates
# --------------------------------------------------------------------------------------

_RECORD_ONLY = ("fallback", "reason", "params", "method", "channels")


def export_gates(
    fcs: str | os.PathLike | Sample, template: Any, out: str | os.PathLike, seed: int = 0
) -> tuple[Any, GatingMLStrategy]:
    """Gate one FCS file (or raw `Sample`) with ``template`` and write its gates, at the
    positions fitted to it, as Gating-ML 2.0 to ``out`` (`strategy_from_result`,
    `write_gatingml`); returns the `GatingResult` (``.counts``) and the strategy written.
    What ``immunoprofile export-gates`` runs."""
    sample = fcs if isinstance(fcs, Sample) else read_fcs(fcs)
    res = apply_template(sample, template, seed=seed)
    strategy = strategy_from_result(res)
    write_gatingml(strategy, out)
    return res, strategy


def strategy_from_result(result: Any) -> GatingMLStrategy:
    """A `GatingMLStrategy` of a template's gates as fitted on one sample.

    ``result`` is a `GatingResult` (`immunoprofile.gating.engine.apply_template`):
    adaptive gates are written at their fitted positions, dimensions name the channels
    they resolved to, and each dimension carries the compensation (as a spectrumMatrix
    built from the matrix the sample was compensated with) and the transform (as a
    Gating-ML transformation) recorded in the sample's history. Evaluated on the raw file
    (ours or flowkit's), it selects the same events as the template did, up to events
    lying within float32 rounding of a boundary.
    """
    sample, template = result.sample, result.template
    comp_rec = next((h for h in reversed(sample.history) if h.get("step") == "compensate"), None)
    tr_rec = next((h for h in reversed(sample.history) if h.get("step") == "transform"), None)
    s = GatingMLStrategy(source=f"{template.name} fitted on {sample.name}")
    comp_id = UNCOMPENSATED
    dets: set[str] = set()
    if comp_rec is not None:
        d = tuple(comp_rec["detectors"])
        comp_id = "spillover"
        s.matrices[comp_id] = SpectrumMatrix(
            comp_id, d, d, tuple(tuple(float(v) for v in row) for row in comp_rec["matrix"])
        )
        dets = set(d)
    tr_of: dict[str, str] = {}
    for ch, spec in ((tr_rec or {}).get("channels") or {}).items():
        kind = str(spec["type"]).lower()
        kind = {"linear": "flin", "log": "flog", "arcsinh": "fasinh"}.get(kind, kind)
        if kind not in _SCALE_TRANSFORMS:
            raise GatingMLError(
                f"{s.source}: channel {ch!r} uses a {spec['type']} transform, which Gating-ML "
                "2.0 cannot express; use a Gating-ML transform (linear, log, arcsinh, logicle, "
                "hyperlog) to export"
            )
        params = tuple((k, float(spec[k.lower()])) for k in _SCALE_TRANSFORMS[kind])
        tid = f"{kind}_{ch}"
        s.transforms[tid] = ScaleTransform(tid, kind, params)
        tr_of[ch] = tid

    for pop in template.populations:
        rec = result.fitted.get(pop.name)
        if rec is None:
            raise GatingMLError(f"{s.source}: no fitted gate for population {pop.name!r}")
        spec = {k: v for k, v in rec.items() if k not in _RECORD_ONLY}
        gate = gate_from_dict(spec)
        if isinstance(gate, BooleanGate):
            s.gates[pop.name] = GateEntry(pop.name, pop.parent, gate)
            continue
        channels = rec.get("channels") or list(gate.dims)
        dims = tuple(
            _derived_dimension(s, template, result.sample, ch)
            if ch in template.dimensions
            else Dimension(ch, comp_id if ch in dets else UNCOMPENSATED, tr_of.get(ch))
            for ch in channels
        )
        from dataclasses import replace as _replace

        gate = _replace(gate, dims=tuple(d.key for d in dims))
        s.gates[pop.name] = GateEntry(pop.name, pop.parent, gate, dims)
    return s


def _gml_transform(s: GatingMLStrategy, spec: dict[str, Any], where: str) -> str:
    """Register a template transform spec as a Gating-ML scale transformation; its id."""

    kind = str(spec.get("type", "")).lower()
    kind = {"linear": "flin", "log": "flog", "arcsinh": "fasinh", "asinh": "fasinh"}.get(kind, kind)
    if kind not in _SCALE_TRANSFORMS:
        raise GatingMLError(
            f"{where}: a {spec.get('type')} transform has no Gating-ML 2.0 form (linear, log, "
            "arcsinh, logicle, hyperlog)"
        )
    t = transform_from_dict(dict(spec))
    params = tuple((k, float(getattr(t, k.lower()))) for k in _SCALE_TRANSFORMS[kind])
    tid = f"{kind}_" + "_".join(f"{v:g}" for _, v in params)
    s.transforms.setdefault(tid, ScaleTransform(tid, kind, params))
    return tid


def _derived_dimension(s: GatingMLStrategy, template: Any, sample: Any, name: str) -> Dimension:
    """A template's derived dimension as a Gating-ML dimension (its compensation, ratio and
    transform; markers resolved to the file's channels)."""

    dim = template.dimensions[name]
    where = f"{s.source}: dimension {name!r}"
    if dim.clip is not None:
        raise GatingMLError(f"{where}: a clipped dimension has no Gating-ML 2.0 form")
    matrix = template.matrices.get(dim.compensation)

    def channel(src: str) -> str:
        if matrix is not None and src in matrix.fluorochromes:
            return src
        return sample.channel_names[resolve_name(sample, template, src)]

    comp = {"none": UNCOMPENSATED, "file": FCS_COMPENSATION}.get(dim.compensation)
    if comp is None:
        assert matrix is not None
        s.matrices.setdefault(
            matrix.id,
            SpectrumMatrix(
                matrix.id, matrix.fluorochromes, matrix.detectors, matrix.matrix, matrix.inverted
            ),
        )
        comp = matrix.id
    tid = _gml_transform(s, dict(dim.transform), where) if dim.transform is not None else None
    if dim.ratio is not None:
        a, b, c = dim.coefficients
        rid = f"ratio_{channel(dim.ratio[0])}_{channel(dim.ratio[1])}_{a:g}_{b:g}_{c:g}"
        s.ratios.setdefault(
            rid, RatioTransform(rid, channel(dim.ratio[0]), channel(dim.ratio[1]), a, b, c)
        )
        return Dimension(rid, comp, tid, True)
    return Dimension(channel(dim.channel), comp, tid)  # type: ignore[arg-type]


def strategy_to_template(
    strategy: GatingMLStrategy, name: str = "gatingml", *, derive_all: bool = False
) -> dict[str, Any]:
    """An immunoprofile template (dict) with the gates of a Gating-ML strategy.

    Every Gating-ML construct has a template form, so the template engine gates exactly
    as the specification says: a dimension read as stored (uncompensated, no transform)
    names its channel; any other (a compensation, a transformation, a ratio) becomes a
    derived dimension of the template (`immunoprofile.gating.dimensions`) carrying its own
    compensation (``"file"`` for ``FCS``, or a spectrum matrix copied into ``matrices``)
    and transform; booleans and quadrants map onto the template's gates. With
    ``derive_all`` every dimension is derived (computed in float64 from the values as read).

    A strategy that a plain template can say (no ratios or spectrum matrices, one scale per
    channel, compensation by the file's matrix or none) keeps that plainer form: the
    template's ``compensation`` and per-channel ``transforms``, gates naming channels.
    """
    if not derive_all:
        plain = _plain_template(strategy, name)
        if plain is not None:
            return plain
    return _template_and_names(strategy, name, derive_all=derive_all)[0]


def _plain_template(strategy: GatingMLStrategy, name: str) -> dict[str, Any] | None:
    """The template with one compensation and one transform per channel, or None when
    the strategy needs derived dimensions."""
    from dataclasses import replace as _replace

    channel_tr: dict[str, str | None] = {}
    comp_of: dict[str, str] = {}
    for e in strategy.gates.values():
        for d in e.dimensions:
            if d.ratio:
                return None
            if channel_tr.setdefault(d.name, d.transform) != d.transform:
                return None
            if comp_of.setdefault(d.name, d.compensation) != d.compensation:
                return None
    comps = set(comp_of.values()) - {UNCOMPENSATED}
    if len(comps) > 1:
        return None
    matrix = strategy.matrices.get(next(iter(comps))) if comps else None
    if matrix is not None:
        # a square matrix over the channels themselves is the template's compensation;
        # then no uncompensated dimension may gate one of its detectors
        if matrix.fluorochromes != matrix.detectors or matrix.inverted_already:
            return None
        plain = {ch for ch, c in comp_of.items() if c == UNCOMPENSATED}
        if plain & set(matrix.detectors):
            return None
    tmpl, names = _template_and_names(strategy, name, derive_all=False)
    pops = []
    for gid, e in strategy.gates.items():
        pop = next(p for p in tmpl["populations"] if p["name"] == names[gid])
        if not isinstance(e.gate, BooleanGate):
            pop = {
                **pop,
                "gate": _replace(e.gate, dims=tuple(d.name for d in e.dimensions)).to_dict(),
            }
        pops.append(pop)
    tmpl.pop("dimensions", None)
    tmpl.pop("matrices", None)
    # Gating-ML: "FCS" compensation of a file without a spillover is no compensation
    tmpl["compensation"] = "auto" if comps == {FCS_COMPENSATION} else "none"
    if matrix is not None:
        tmpl["compensation"] = matrix.id
        tmpl["matrices"] = {
            matrix.id: {
                "fluorochromes": list(matrix.fluorochromes),
                "detectors": list(matrix.detectors),
                "matrix": [list(r) for r in matrix.matrix],
            }
        }
    tmpl["transforms"] = {
        "default": None,
        "scatter": None,
        "time": None,
        "channels": {
            ch: strategy.transforms[t].spec() for ch, t in sorted(channel_tr.items()) if t
        },
    }
    tmpl["populations"] = pops
    return tmpl


def _safe(x: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", x).strip("_") or "population"


def _template_and_names(
    strategy: GatingMLStrategy,
    name: str,
    *,
    derive_all: bool = False,
    spillover: tuple[Sequence[str], np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """`strategy_to_template`, plus gate id -> population name. ``spillover`` replaces
    the file's own matrix for ``compensation-ref="FCS"``."""
    from dataclasses import replace as _replace

    names: dict[str, str] = {}
    taken: set[str] = set()
    for gid in strategy.gates:
        n = _safe(gid)
        while n in taken:
            n += "_"
        taken.add(n)
        names[gid] = n
    matrices: dict[str, Any] = {}
    dimensions: dict[str, Any] = {}
    fcs_comp = "file"
    if spillover is not None:
        dets = [str(d) for d in spillover[0]]
        mat = np.asarray(spillover[1], dtype=np.float64)
        fcs_comp = "FCS"
        matrices[fcs_comp] = {"fluorochromes": dets, "detectors": dets, "matrix": mat.tolist()}

    def comp_of(d: Dimension) -> str:
        if d.compensation == UNCOMPENSATED:
            return "none"
        if d.compensation == FCS_COMPENSATION:
            return fcs_comp
        m = strategy.matrices[d.compensation]
        matrices[m.id] = {
            "fluorochromes": list(m.fluorochromes),
            "detectors": list(m.detectors),
            "matrix": [list(r) for r in m.matrix],
            **({"inverted": True} if m.inverted_already else {}),
        }
        return m.id

    def dim_name(d: Dimension) -> str:
        if not derive_all and not d.ratio and d.compensation == UNCOMPENSATED:
            if d.transform is None:
                return d.name
        spec: dict[str, Any] = {}
        if d.ratio:
            r = strategy.ratios[d.name]
            spec["ratio"] = {
                "numerator": r.numerator,
                "denominator": r.denominator,
                "a": r.A,
                "b": r.B,
                "c": r.C,
            }
        else:
            spec["channel"] = d.name
        spec["compensation"] = comp_of(d)
        spec["transform"] = strategy.transforms[d.transform].spec() if d.transform else None
        key = d.key
        dimensions[key] = spec
        return key

    pops = []
    for gid, e in strategy.gates.items():
        if isinstance(e.gate, BooleanGate):
            g = _replace(e.gate, dims=tuple(names[d] for d in e.gate.dims)).to_dict()
        else:
            g = _replace(e.gate, dims=tuple(dim_name(d) for d in e.dimensions)).to_dict()
        pops.append(
            {
                "name": names[gid],
                "parent": names[e.parent] if e.parent else None,
                "description": f"Gating-ML gate {gid}",
                "gate": g,
            }
        )
    out: dict[str, Any] = {
        "name": _safe(name),
        "description": f"imported from Gating-ML {strategy.source}",
        "version": 1,
        "compensation": "none",
        "transforms": None,
    }
    if matrices:
        out["matrices"] = matrices
    if dimensions:
        out["dimensions"] = dimensions
    out["populations"] = pops
    return out, names


__all__ = [
    "Dimension",
    "GateEntry",
    "GatingMLError",
    "GatingMLStrategy",
    "RatioTransform",
    "ScaleTransform",
    "SpectrumMatrix",
    "export_gates",
    "read_gatingml",
    "scaled_columns",
    "strategy_from_result",
    "strategy_to_template",
    "write_gatingml",
]
