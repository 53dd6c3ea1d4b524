"""FlowJo 9 (and earlier Mac/PC 7-9) workspaces: the older XML layout, read into the same
model as FlowJo 10 (`immunoprofile.interop.wsp`).

The older layout differs from FlowJo 10 in every part that matters for gating:

* a ``<Population>`` holds its child populations directly (no ``<Subpopulations>``);
* its gate is ``<PolygonGate>`` wrapping one shape, ``<Polygon>``, ``<PolyRect>``,
  ``<Range>`` (one axis) or ``<Ellipse>`` (four points: the ends of its two axes), each
  with ``xAxisName``/``yAxisName`` and ``<Polygon><Vertex x= y=/>`` in data units;
* compensation matrices live at the top (``<CompensationMatrices>``, rows ``<Channel>`` of
  ``<ChannelValue>``), and a sample's ``compensationID`` picks one (1-based); compensated
  axes are the channel name inside the matrix's prefix and suffix (``<FITC-A>``);
* display scales are lookup tables (``<CalibrationTables><Table>``: pairs of display
  channel 0..4096 and data value). A channel's ``<Parameter calibrationIndex=>`` names its
  table (1-based); a compensated channel's table is ``"<matrix name> <prefix>channel<suffix>"``.
  FlowJo 9's biexponential tables are smooth logicle-like curves: each is replaced by
  the logicle (Parks et al., Cytometry A 69:541, 2006) fitted to it by least squares
  (T = the table's top value, A = 0); the fit's largest error, in display channels of
  4096, is kept with the transform (`FLOWJO9_FIT_ERRORS`) and is far below one channel
  on the workspaces seen;
* samples carry no file path, only ``$FIL`` among their keywords, and two samples may
  share a node name: files are matched by ``$FIL``;
* a gate may be "magnetic" (``<PolygonGate magnetic="1">``): FlowJo moves it onto each
  sample's events before counting and saves only the drawn position, which is what can
  be imported. Such gates are marked (`WspGate.magnetic`) so that callers can say that
  FlowJo's counts for them, and for the populations below them, came from a moved gate.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from immunoprofile._xml import attr, child, children, local_name, number
from immunoprofile.exceptions import WorkspaceError
from immunoprofile.interop.gatingml import ScaleTransform, SpectrumMatrix
from immunoprofile.interop.wsp import (
    BOOL_NODES,
    WspGate,
    WspGroup,
    WspPopulation,
    WspSample,
    boolean_gate,
    read_groups,
)
from immunoprofile.transforms import transform_from_dict

#: table name -> largest difference (display channels of 4096) between FlowJo's table and
#: the logicle fitted to it, for the tables read in this process
FLOWJO9_FIT_ERRORS: dict[str, float] = {}

_SHAPES = {"Polygon": "polygon", "PolyRect": "polygon", "Range": "range", "Ellipse": "ellipse4"}


def is_flowjo9(root: ET.Element) -> bool:
    """True for the pre-10 layout: version below 10, or populations without Subpopulations."""
    version = attr(root, "flowJoVersion", "") or ""
    m = re.match(r"\s*(\d+)", version)
    if m and int(m.group(1)) < 10:
        return True
    sl = child(root, "SampleList")
    for s in children(sl, "Sample") if sl is not None else []:
        node = child(s, "SampleNode")
        if node is not None and child(node, "Population") is not None:
            return True
    return False


def read_flowjo9(path: Path, root: ET.Element) -> tuple[dict[str, WspSample], dict[str, WspGroup]]:
    """Read the pre-10 layout (see the module docstring): its samples (by sample id) and
    groups (by name), for `immunoprofile.interop.flowjo.read_wsp`'s `FlowJoWorkspace`."""
    samples: dict[str, WspSample] = {}
    tables = _tables(root, path)
    matrices = _matrices(root, path)
    sl = child(root, "SampleList")
    for s_el in children(sl, "Sample") if sl is not None else []:
        node = child(s_el, "SampleNode")
        if node is None:
            raise WorkspaceError(f"{path}: a <Sample> lacks its <SampleNode>")
        sid = attr(s_el, "sampleID") or attr(node, "sampleID") or str(len(samples) + 1)
        name = attr(node, "name") or ""
        where = f"{path} sample {name!r} (id {sid})"
        ds = child(s_el, "DataSet")
        uri = (attr(ds, "uri") or "") if ds is not None else ""
        count = _int(attr(node, "count")) or _int(attr(s_el, "eventCount"))
        smp = WspSample(sid, name, uri, count)
        kw_el = child(s_el, "Keywords")
        for k in children(kw_el, "Keyword") if kw_el is not None else []:
            smp.keywords[(attr(k, "name") or "").upper()] = attr(k, "value") or ""
        comp_id = _int(attr(s_el, "compensationID"))
        if comp_id is not None and 1 <= comp_id <= len(matrices):
            smp.matrix, smp.prefix, smp.suffix = matrices[comp_id - 1]
            smp.matrix_name = smp.matrix.id
        for p in children(s_el, "Parameter"):
            ch = attr(p, "name") or ""
            idx = _int(attr(p, "calibrationIndex"))
            if ch and idx is not None and 1 <= idx <= len(tables):
                smp.transforms[ch] = tables[idx - 1]
        if smp.matrix is not None:
            by_name = {t.id: t for t in tables}
            for det in smp.matrix.detectors:
                key = f"{smp.prefix}{det}{smp.suffix}"
                t = by_name.get(f"{smp.matrix.id} {key}")
                if t is not None:
                    smp.transforms[key] = t
        smp.populations = _tree(node, (), where)
        samples[sid] = smp
    return samples, read_groups(root, path, _tree)


def _int(v: str | None) -> int | None:
    try:
        n = int(str(v).strip()) if v is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


def _tables(root: ET.Element, path: Path) -> list[ScaleTransform]:
    """The calibration tables, in file order, each as its fitted logicle."""
    out = []
    ct = child(root, "CalibrationTables")
    for t in children(ct, "Table") if ct is not None else []:
        name = attr(t, "name") or f"table {len(out) + 1}"
        values = [v for v in re.split(r"[,\s]+", (t.text or "").strip()) if v]
        try:
            pairs = np.asarray([float(v) for v in values], dtype=np.float64).reshape(-1, 2)
        except ValueError:
            raise WorkspaceError(
                f"{path}: calibration table {name!r} is not pairs of numbers"
            ) from None
        if len(pairs) < 16:
            raise WorkspaceError(f"{path}: calibration table {name!r} has {len(pairs)} points")
        out.append(_fit_logicle(name, pairs, path))
    return out


def _fit_logicle(name: str, pairs: np.ndarray, path: Path) -> ScaleTransform:
    """The logicle (T = top value, A = 0; W and M fitted) closest to a display table."""
    from scipy.optimize import least_squares

    chan, x = pairs[:, 0], pairs[:, 1]
    top = float(chan.max())
    target = chan / top if top > 0 else chan
    t_top = float(x.max())

    def residual(p: np.ndarray) -> np.ndarray:
        spec = {"type": "logicle", "t": t_top, "w": float(p[0]), "m": float(p[1]), "a": 0.0}
        try:
            y = transform_from_dict(spec).apply(x, dtype=np.float64)
        except Exception:  # noqa: BLE001 - an invalid corner of the search: a large residual
            return np.full(len(x), 10.0)
        return np.asarray(y, dtype=np.float64) - target

    best = None
    for w0 in (0.25, 0.75, 1.25):
        fit = least_squares(residual, [w0, 4.5], bounds=([0.0, 2.0], [3.0, 8.0]))
        if best is None or fit.cost < best.cost:
            best = fit
    assert best is not None
    err = float(np.abs(best.fun).max() * top)
    FLOWJO9_FIT_ERRORS[name] = err
    if err > 8.0:  # eight display channels of 4096: not a biexponential-like table
        raise WorkspaceError(
            f"{path}: calibration table {name!r} is not a biexponential scale "
            f"(the closest logicle is {err:.1f} display channels off)"
        )
    w, m = (float(v) for v in best.x)
    return ScaleTransform(name, "logicle", (("T", t_top), ("W", w), ("M", m), ("A", 0.0)))


def _matrices(root: ET.Element, path: Path) -> list[tuple[SpectrumMatrix, str, str]]:
    """Compensation matrices in file order: (matrix, prefix, suffix)."""
    out = []
    cm = child(root, "CompensationMatrices")
    for m_el in children(cm, "CompensationMatrix") if cm is not None else []:
        name = attr(m_el, "name") or f"matrix {len(out) + 1}"
        where = f"{path}: compensation matrix {name!r}"
        rows: dict[str, dict[str, float]] = {}
        for ch in children(m_el, "Channel"):
            src = attr(ch, "name") or ""
            rows[src] = {
                attr(v, "name") or "": number(attr(v, "value"), where, WorkspaceError)
                for v in children(ch, "ChannelValue")
            }
        params = list(rows)
        try:
            mat = tuple(tuple(rows[r][c] for c in params) for r in params)
        except KeyError as exc:
            raise WorkspaceError(f"{where}: lacks the coefficient for {exc}") from None
        sm = SpectrumMatrix(name, tuple(params), tuple(params), mat)
        out.append((sm, attr(m_el, "prefix", "") or "", attr(m_el, "suffix", "") or ""))
    return out


def _tree(node: ET.Element, prefix: tuple[str, ...], where: str) -> list[WspPopulation]:
    out: list[WspPopulation] = []
    for pop in node:
        tag = local_name(pop.tag)
        if tag not in ("Population", *BOOL_NODES):
            continue
        name = attr(pop, "name") or ""
        path = (*prefix, name)
        here = f"{where} population {'/'.join(path)!r}"
        if tag in BOOL_NODES:
            gate = boolean_gate(pop, here)
        else:
            gate = _gate(pop, here)
        out.append(WspPopulation(path, gate, _int(attr(pop, "count"))))
        out.extend(_tree(pop, path, where))
    return out


def _gate(pop: ET.Element, where: str) -> WspGate:
    holder = child(pop, "PolygonGate")
    shape = None
    if holder is not None:
        shape = next((c for c in holder if local_name(c.tag) in _SHAPES), None)
    if shape is None:
        kinds = sorted({local_name(c.tag) for c in (holder if holder is not None else pop)})
        raise WorkspaceError(
            f"{where}: no gate shape found (FlowJo 9 gates are Polygon, PolyRect, Range or "
            f"Ellipse inside <PolygonGate>; found {kinds})"
        )
    kind = _SHAPES[local_name(shape.tag)]
    magnetic = (attr(holder, "magnetic") or "").strip() == "1"
    dims = [attr(shape, "xAxisName") or ""]
    if kind != "range":
        dims.append(attr(shape, "yAxisName") or "")
    if not all(dims):
        raise WorkspaceError(f"{where}: the gate names no axis channel")
    poly = child(shape, "Polygon")
    verts = [
        (
            number(attr(v, "x"), where, WorkspaceError),
            number(attr(v, "y", "0"), where, WorkspaceError),
        )
        for v in (children(poly, "Vertex") if poly is not None else [])
    ]
    if kind == "range":
        if len(verts) != 2:
            raise WorkspaceError(f"{where}: a Range gate needs 2 vertices, has {len(verts)}")
        lo, hi = sorted(v[0] for v in verts)
        return WspGate("rectangle", tuple(dims), (lo,), (hi,), magnetic=magnetic)
    if kind == "ellipse4":
        if len(verts) != 4:
            raise WorkspaceError(f"{where}: an Ellipse gate needs 4 points, has {len(verts)}")
        return WspGate("ellipse4", tuple(dims), edges=tuple(verts), magnetic=magnetic)
    if len(verts) < 3:
        raise WorkspaceError(f"{where}: a polygon needs 3 vertices, has {len(verts)}")
    return WspGate("polygon", tuple(dims), vertices=tuple(verts), magnetic=magnetic)


__all__ = ["FLOWJO9_FIT_ERRORS", "is_flowjo9", "read_flowjo9"]
