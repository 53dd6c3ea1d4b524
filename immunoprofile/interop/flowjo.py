"""FlowJo workspace (.wsp) import: groups, samples, gates, transforms and compensation.

A FlowJo 10 workspace is XML. Each ``<Sample>`` holds its file (``DataSet uri``), its
keywords, its compensation (``transforms:spilloverMatrix``, prefix ``Comp-``), its display
transforms (``<Transformations>``, one per channel) and its gating tree (``SampleNode`` >
``Subpopulations`` > ``Population``/``AndNode``/``OrNode``/``NotNode``). Groups hold the
shared copy of a tree. Gates are Gating-ML 2.0 elements in data units, except ellipses,
whose foci and edge points FlowJo keeps in its 256-bin display space.

`read_wsp` parses the XML itself (no flowkit needed) and `FlowJoWorkspace` converts each
sample's tree into a `GatingMLStrategy` of immunoprofile gates, evaluated by
immunoprofile: geometric gates are evaluated on the channel's transformed scale (FlowJo
draws polygons in display space), with compensation applied in float64. `compare_counts`
sets the resulting counts beside the counts FlowJo stored in the workspace, and
`to_template` turns a group's tree into an immunoprofile template.

FlowJo's own ``biex`` transform is undocumented; it is approximated here by logicle with
T = maxRange, W = log10(-width) / 2, M = pos and A = neg. Rectangle, quadrant and boolean
gates do not depend on the approximation (a monotone transform keeps their membership);
polygons and ellipses drawn on a biex axis may differ at their edges.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile._files import atomic_write_text
from immunoprofile._xml import attr, child, children, local_name, number, parse
from immunoprofile.exceptions import WorkspaceError
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.gates import (
    BooleanGate,
    EllipseGate,
    Gate,
    PolygonGate,
    RangeGate,
    RectangleGate,
)
from immunoprofile.gating.template import validate_template
from immunoprofile.interop.flowjo9 import is_flowjo9, read_flowjo9
from immunoprofile.interop.gatingml import (
    UNCOMPENSATED,
    Dimension,
    GateEntry,
    GatingMLStrategy,
    ScaleTransform,
    SpectrumMatrix,
    _as_sample,
)
from immunoprofile.interop.wsp import (
    BOOL_NODES,
    WspGate,
    WspGroup,
    WspPopulation,
    WspSample,
    boolean_gate,
    read_groups,
)
from immunoprofile.io.fcs import read_fcs

# --------------------------------------------------------------------------------------
# parsing
# --------------------------------------------------------------------------------------


def _num(v: str | None, where: str) -> float:
    return number(v, where, WorkspaceError)


def _count(el: ET.Element) -> int | None:
    c = attr(el, "count")
    try:
        n = int(c) if c is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


def _coords(vertex: ET.Element, where: str) -> tuple[float, ...]:
    return tuple(_num(attr(c, "value"), where) for c in children(vertex, "coordinate"))


def _parse_gate(el: ET.Element, where: str) -> WspGate:
    kind = local_name(el.tag)
    dims = []
    mins: list[float | None] = []
    maxs: list[float | None] = []
    for d in children(el, "dimension"):
        fcs = child(d, "fcs-dimension")
        if fcs is None or not attr(fcs, "name"):
            raise WorkspaceError(f"{where}: a gate dimension names no channel")
        dims.append(attr(fcs, "name") or "")
        lo, hi = attr(d, "min"), attr(d, "max")
        mins.append(None if lo is None else _num(lo, where))
        maxs.append(None if hi is None else _num(hi, where))
    inside = (attr(el, "eventsInside", "1") or "1") != "0"
    if kind == "RectangleGate":
        return WspGate("rectangle", tuple(dims), tuple(mins), tuple(maxs), inside=inside)
    if kind == "PolygonGate":
        verts = tuple(_coords(v, where) for v in children(el, "vertex"))
        return WspGate("polygon", tuple(dims), vertices=verts, inside=inside)
    if kind == "EllipsoidGate":
        foci_el, edge_el = child(el, "foci"), child(el, "edge")
        if foci_el is None or edge_el is None:
            raise WorkspaceError(f"{where}: ellipse gate without foci/edge points")
        foci = tuple(_coords(v, where) for v in children(foci_el, "vertex"))
        edges = tuple(_coords(v, where) for v in children(edge_el, "vertex"))
        if len(foci) != 2 or len(edges) != 4:
            raise WorkspaceError(f"{where}: ellipse needs 2 foci and 4 edge points")
        return WspGate("ellipse", tuple(dims), foci=foci, edges=edges, inside=inside)
    raise WorkspaceError(
        f"{where}: FlowJo gate type <{kind}> is not supported "
        "(supported: rectangle, polygon, ellipse, quadrant, and/or/not)"
    )


def _parse_tree(node: ET.Element, prefix: tuple[str, ...], where: str) -> list[WspPopulation]:
    out: list[WspPopulation] = []
    subs = child(node, "Subpopulations")
    if subs is None:
        return out
    for pop in subs:
        tag = local_name(pop.tag)
        if tag not in ("Population", *BOOL_NODES):
            continue
        name = attr(pop, "name") or ""
        path = (*prefix, name)
        here = f"{where} population {'/'.join(path)!r}"
        if tag in BOOL_NODES:
            gate = boolean_gate(pop, here)
        else:
            gate_el = child(pop, "Gate")
            if gate_el is None or len(gate_el) == 0:
                raise WorkspaceError(f"{here}: population without a gate")
            gate = _parse_gate(gate_el[0], here)
        out.append(WspPopulation(path, gate, _count(pop)))
        out.extend(_parse_tree(pop, path, where))
    return out


def _flowjo_transform(el: ET.Element, where: str) -> tuple[str, ScaleTransform] | None:
    kind = local_name(el.tag)
    p = child(el, "parameter")
    name = attr(p, "name") if p is not None else None
    if not name:
        raise WorkspaceError(f"{where}: a transform names no parameter")
    tid = f"{kind}:{name}"

    def a(key: str, default: str | None = None) -> float:
        return _num(attr(el, key, default), f"{where} {kind} {key}")

    if kind == "linear":
        lo, hi = a("minRange", "0"), a("maxRange", "262144")
        # FlowJo's linear axis maps [minRange, maxRange] to [0, 1]: Gating-ML flin with
        # T = maxRange and A = -minRange, (x + A) / (T + A).
        return name, ScaleTransform(tid, "flin", (("T", hi), ("A", -lo)))
    if kind == "log":
        offset, decades = a("offset", "1"), a("decades", "4.5")
        # FlowJo log: log10(x / offset) / decades == flog(T = offset * 10**decades, M = decades)
        return name, ScaleTransform(tid, "flog", (("T", offset * 10.0**decades), ("M", decades)))
    if kind == "logicle":
        return name, ScaleTransform(
            tid, "logicle", (("T", a("T")), ("W", a("W")), ("M", a("M")), ("A", a("A", "0")))
        )
    if kind == "fasinh":
        # FlowJo writes Gating-ML fasinh parameters (plus display-only length/W)
        return name, ScaleTransform(
            tid, "fasinh", (("T", a("T")), ("M", a("M")), ("A", a("A", "0")))
        )
    if kind == "hyperlog":
        return name, ScaleTransform(
            tid, "hyperlog", (("T", a("T")), ("W", a("W")), ("M", a("M")), ("A", a("A", "0")))
        )
    if kind == "biex":
        width = a("width", "-10")
        w = math.log10(abs(width)) / 2.0 if width != 0 else 0.0
        return name, ScaleTransform(
            tid,
            "logicle",
            (
                ("T", a("maxRange", "262144")),
                ("W", w),
                ("M", a("pos", "4.418539922")),
                ("A", a("neg", "0")),
            ),
        )
    raise WorkspaceError(
        f"{where}: FlowJo transform <{kind}> on {name!r} is not supported; save the "
        "workspace with linear, log, logicle, biex, hyperlog or arcsinh axes"
    )


def _flowjo_matrix(el: ET.Element, where: str) -> tuple[SpectrumMatrix, str, str, str]:
    mid = attr(el, "id") or attr(el, "name") or "matrix"
    name = attr(el, "name") or mid
    params_el = child(el, "parameters")
    params = [
        attr(p, "name") or ""
        for p in (params_el if params_el is not None else [])
        if local_name(p.tag) == "parameter"
    ]
    rows: dict[str, dict[str, float]] = {}
    for sp in children(el, "spillover"):
        src = attr(sp, "parameter") or ""
        rows[src] = {
            attr(c, "parameter") or "": _num(attr(c, "value"), where)
            for c in children(sp, "coefficient")
        }
    if not params:
        params = list(rows)
    try:
        m = tuple(tuple(rows[r][c] for c in params) for r in params)
    except KeyError as exc:
        raise WorkspaceError(
            f"{where}: spillover matrix {name!r} lacks coefficient {exc}"
        ) from None
    sm = SpectrumMatrix(str(mid), tuple(params), tuple(params), m)
    return sm, name, attr(el, "prefix", "Comp-") or "", attr(el, "suffix", "") or ""


def read_wsp(path: str | os.PathLike) -> FlowJoWorkspace:
    """Read a FlowJo workspace (FlowJo 10 .wsp, or the FlowJo 9 layout, .wsp or .xml)
    into a `FlowJoWorkspace`.

    Raises
    ------
    WorkspaceError : malformed XML, a gate/transform type that is not supported (the
        message names the file, the sample and the population), or a workspace from
        which no sample and no gate can be read (the message says what it holds).
    """
    path = Path(path)
    root, _ = parse(path, WorkspaceError)
    if local_name(root.tag) != "Workspace":
        raise WorkspaceError(
            f"{path}: root element is <{local_name(root.tag)}>, not a FlowJo <Workspace>"
        )
    if is_flowjo9(root):
        samples, groups = read_flowjo9(path, root)
        version = attr(root, "flowJoVersion", "") or ""
        ws = FlowJoWorkspace(path=path, version=version, samples=samples, layout="9", groups=groups)
    else:
        ws = _read_flowjo10(path, root)
    _check_readable(ws, root)
    return ws


def _check_readable(ws: FlowJoWorkspace, root: ET.Element) -> None:
    """A workspace that yields no sample or no gate is an error saying why, not an empty
    result."""
    where = f"{ws.path} (FlowJo {ws.version or 'version unknown'})"
    if not ws.samples:
        tags = sorted({local_name(c.tag) for c in root})
        raise WorkspaceError(
            f"{where}: no <Sample> with a sample node found under <SampleList>; the "
            f"workspace's top-level elements are {tags}"
        )
    n_pops = sum(len(s.populations) for s in ws.samples.values()) + sum(
        len(g.populations) for g in ws.groups.values()
    )
    if n_pops == 0:
        raise WorkspaceError(
            f"{where}: {len(ws.samples)} sample(s) but no gated population in any sample "
            "or group: nothing to import"
        )


def _read_flowjo10(path: Path, root: ET.Element) -> FlowJoWorkspace:
    """The FlowJo 10 layout (see the module docstring)."""
    ws = FlowJoWorkspace(path=path, version=attr(root, "flowJoVersion", "") or "")
    sl = child(root, "SampleList")
    for s_el in children(sl, "Sample") if sl is not None else []:
        ds = child(s_el, "DataSet")
        node = child(s_el, "SampleNode")
        if ds is None or node is None:
            raise WorkspaceError(f"{path}: a <Sample> lacks DataSet or SampleNode")
        sid = attr(ds, "sampleID") or attr(node, "sampleID") or str(len(ws.samples) + 1)
        where = f"{path} sample {attr(node, 'name')!r}"
        smp = WspSample(sid, attr(node, "name") or "", attr(ds, "uri") or "", _count(node))
        kw_el = child(s_el, "Keywords")
        for k in children(kw_el, "Keyword") if kw_el is not None else []:
            smp.keywords[(attr(k, "name") or "").upper()] = attr(k, "value") or ""
        tr_el = child(s_el, "Transformations")
        for t in tr_el if tr_el is not None else []:
            got = _flowjo_transform(t, where)
            if got is not None:
                smp.transforms[got[0]] = got[1]
        m_el = child(s_el, "spilloverMatrix")
        if m_el is not None:
            smp.matrix, smp.matrix_name, smp.prefix, smp.suffix = _flowjo_matrix(m_el, where)
        smp.populations = _parse_tree(node, (), where)
        ws.samples[sid] = smp
    ws.groups.update(read_groups(root, path, _parse_tree))
    return ws


# --------------------------------------------------------------------------------------
# conversion to immunoprofile gates
# --------------------------------------------------------------------------------------


@dataclass
class FlowJoWorkspace:
    """A parsed FlowJo workspace: its samples (by sample id) and groups (by name)."""

    path: Path | None = None
    version: str = ""
    samples: dict[str, WspSample] = field(default_factory=dict)
    layout: str = "10"  # "9": the FlowJo 9 XML (`immunoprofile.interop.flowjo9`)
    groups: dict[str, WspGroup] = field(default_factory=dict)

    # --- lookup -----------------------------------------------------------------------

    def sample(self, key: str) -> WspSample:
        """A sample by id, file name or node name (a node name several samples share is
        an error naming their files)."""
        if key in self.samples:
            return self.samples[key]
        for s in self.samples.values():
            if key == s.file_name:
                return s
        named = [s for s in self.samples.values() if key == s.name]
        if len(named) > 1:
            files = ", ".join(f"{s.file_name} (id {s.id})" for s in named)
            raise WorkspaceError(
                f"{self.path}: {len(named)} samples are named {key!r}: {files}; name one by "
                "its file name or id"
            )
        if named:
            return named[0]
        raise WorkspaceError(
            f"{self.path}: no sample {key!r}; samples are {[s.name for s in self.samples.values()]}"
        )

    def group_samples(self, group: str) -> list[WspSample]:
        if group not in self.groups:
            raise WorkspaceError(
                f"{self.path}: no group {group!r}; groups are {sorted(self.groups)}"
            )
        return [self.samples[i] for i in self.groups[group].sample_ids if i in self.samples]

    def match_files(
        self, files: Iterable[str | os.PathLike]
    ) -> tuple[dict[str, Path], list[str], list[Path]]:
        """Match workspace samples to FCS files by file name (then by node name).

        Returns ``(matched sample id -> path, unmatched sample names, unused files)``.
        """
        files = [Path(f) for f in files]
        by_name = {f.name: f for f in files}
        by_lower = {f.name.lower(): f for f in files}
        matched: dict[str, Path] = {}
        unmatched: list[str] = []
        for s in self.samples.values():
            f = by_name.get(s.file_name) or by_lower.get(s.file_name.lower())
            if f is None and not s.keywords.get("$FIL"):
                f = by_name.get(s.name) or by_lower.get(s.name.lower())
            if f is None:
                unmatched.append(s.name if s.name == s.file_name else f"{s.name} ({s.file_name})")
            else:
                matched[s.id] = f
        used = set(matched.values())
        return matched, unmatched, [f for f in files if f not in used]

    # --- gates ------------------------------------------------------------------------

    def strategy(
        self, sample: str | WspSample, populations: Sequence[WspPopulation] | None = None
    ) -> GatingMLStrategy:
        """The sample's gating tree as a `GatingMLStrategy` of immunoprofile gates.

        Gate ids are population paths joined by ``/`` (as FlowJo's boolean dependents
        name them). ``populations`` overrides the tree (a group's tree applied with the
        sample's transforms and compensation).
        """
        smp = sample if isinstance(sample, WspSample) else self.sample(sample)
        pops = smp.populations if populations is None else populations
        s = GatingMLStrategy(source=f"{self.path} sample {smp.name!r}")
        if smp.matrix is not None:
            s.matrices[smp.matrix.id] = smp.matrix
        for pop in pops:
            where = f"{self.path} sample {smp.name!r} population {pop.id!r}"
            entry = _convert(pop, smp, s, where)
            s.gates[pop.id] = entry
        return s

    def analyze(self, sample: str | WspSample, data: Any) -> dict[str, np.ndarray]:
        """Masks of every population of ``sample`` on ``data`` (a Sample, a path, or a
        mapping channel -> values of the sample's events on the channel scale)."""
        smp = sample if isinstance(sample, WspSample) else self.sample(sample)
        if isinstance(data, str | os.PathLike):
            data = read_fcs(data, scale=False)  # scaled to channel values in float64
        if self.layout == "9":
            return self._analyze_template(smp, data)
        return self.strategy(smp).evaluate(data)

    def _analyze_template(self, smp: WspSample, data: Any) -> dict[str, np.ndarray]:
        """The sample's tree as the template `import-gates` writes (FlowJo 9 axes clipped to
        the plot range), applied by the template engine: the counts `gate` gives."""

        tmpl = self.to_template(sample=smp.id)
        sample, values = _as_sample(data)
        res = apply_template(sample, validate_template(tmpl), min_events=0, exact_values=values)
        out: dict[str, np.ndarray] = {}
        for p in tmpl["populations"]:
            pid = p["description"].removeprefix("FlowJo population ")
            if pid in {q.id for q in smp.populations}:
                out[pid] = res.masks[p["name"]]
        return out

    def compare_counts(self, sample: str | WspSample, data: Any) -> list[dict[str, Any]]:
        """Our count beside FlowJo's stored count for every population of ``sample``.

        Each row: ``population`` (path), ``flowjo`` (None when FlowJo stored none),
        ``immunoprofile``, ``difference``, and ``magnetic``: True when the population's
        gate or one above it is a FlowJo 9 magnetic gate, whose stored count FlowJo took
        at a position moved onto this sample's events (the workspace keeps the drawn one).
        """
        smp = sample if isinstance(sample, WspSample) else self.sample(sample)
        masks = self.analyze(smp, data)
        moved = set(self.magnetic_populations(smp))
        rows = []
        for pop in smp.populations:
            ours = int(masks[pop.id].sum())
            rows.append(
                {
                    "sample": smp.name,
                    "population": pop.id,
                    "flowjo": pop.count,
                    "immunoprofile": ours,
                    "difference": None if pop.count is None else ours - pop.count,
                    "magnetic": any(
                        "/".join(pop.path[:i]) in moved for i in range(1, len(pop.path) + 1)
                    ),
                }
            )
        return rows

    def magnetic_populations(self, sample: str | WspSample | None = None) -> list[str]:
        """Paths of populations whose gate is magnetic (FlowJo 9: FlowJo moves the gate
        onto each sample's events before counting and saves only the drawn position), in
        one sample or, without ``sample``, in any sample or group of the workspace."""
        if sample is not None:
            smp = sample if isinstance(sample, WspSample) else self.sample(sample)
            trees = [smp.populations]
        else:
            trees = [s.populations for s in self.samples.values()]
            trees += [g.populations for g in self.groups.values()]
        out: dict[str, None] = {}
        for pops in trees:
            for p in pops:
                if p.gate.magnetic:
                    out.setdefault(p.id)
        return list(out)

    # --- templates ----------------------------------------------------------------------

    def to_template(
        self,
        group: str | None = None,
        sample: str | None = None,
        name: str | None = None,
        spillover_csv: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        """An immunoprofile template from a group's tree (or one sample's).

        Gates name channels (``$PnN``, without FlowJo's ``Comp-`` prefix) and their
        coordinates are on each channel's FlowJo display transform, which the template's
        ``transforms`` section records. Compensation is the file's own spillover when
        FlowJo used the acquisition-defined matrix; a matrix made in FlowJo is written to
        ``spillover_csv`` (header of detectors, one row each) and the template points at
        it (without ``spillover_csv`` it is left out, and the description says so).
        """
        smp, pops = self._tree(group, sample)
        strat = self.strategy(smp, pops)
        populations, used_tr, ids = _template_populations(strat, pops)
        tname = name or re.sub(
            r"[^A-Za-z0-9_.+-]+", "_", (self.path.stem if self.path else "flowjo")
        )
        comp = "none"
        note = ""
        if smp.matrix is not None:
            if smp.matrix_name.lower().startswith("acquisition"):
                comp = "file"
            elif spillover_csv is not None:
                comp = str(_write_spillover_csv(smp.matrix, Path(spillover_csv)))
            else:
                note = f"; FlowJo matrix {smp.matrix_name!r} not carried (no spillover_csv given)"
        tmpl: dict[str, Any] = {
            "name": tname,
            "description": f"imported from FlowJo workspace {self.path.name if self.path else ''}"
            + (f" group {group!r}" if group else "")
            + note,
            "version": 1,
            "compensation": comp,
            # every channel a gate uses gets its FlowJo axis transform; others stay as read
            "transforms": {
                "default": None,
                "scatter": None,
                "time": None,
                "channels": {ch: t.spec() for ch, t in sorted(used_tr.items())},
            },
            "populations": populations,
        }
        if self.layout == "9":
            _flowjo9_axes(tmpl, strat, ids, populations)
        if sample is None:
            entries = self._sample_entries(smp, dict(zip(ids, populations)), tmpl)
            if entries:
                tmpl["samples"] = entries
        return tmpl

    def _sample_entries(
        self, rep: WspSample, group_pops: dict[str, dict[str, Any]], tmpl: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Per-sample entries of a template: each workspace sample whose own gates (or
        axis transforms, or compensation) differ from the group's, matched to files by
        ``$FIL`` (else the file name) and ``$TOT``."""
        out: list[dict[str, Any]] = []
        taken: set[str] = set()
        for smp in self.samples.values():
            if not smp.populations:
                continue
            strat = self.strategy(smp)
            pops, used_tr, ids = _template_populations(strat, smp.populations)
            if self.layout == "9":
                _flowjo9_axes(tmpl, strat, ids, pops)
                used_tr = {}
            gates = {}
            for pid, p in zip(ids, pops):
                mine = group_pops.get(pid)
                if mine is not None and p["gate"] != mine["gate"] and not _is_boolean(p):
                    gates[mine["name"]] = p["gate"]
            entry: dict[str, Any] = {"name": _entry_name(smp, taken), "match": _match_of(smp)}
            entry["gates"] = gates
            channels = {ch: t.spec() for ch, t in sorted(used_tr.items())}
            if tmpl["transforms"] is not None and channels != tmpl["transforms"]["channels"]:
                entry["transforms"] = {**tmpl["transforms"], "channels": channels}
            if self.layout != "9" and not _same_matrix(smp.matrix, rep.matrix):
                if smp.matrix is None:
                    entry["compensation"] = "none"
                elif smp.matrix_name.lower().startswith("acquisition"):
                    entry["compensation"] = "file"
                else:
                    mid = f"{entry['name']}_matrix"
                    tmpl.setdefault("matrices", {})[mid] = {
                        "fluorochromes": list(smp.matrix.detectors),
                        "detectors": list(smp.matrix.detectors),
                        "matrix": [list(r) for r in smp.matrix.matrix],
                    }
                    entry["compensation"] = mid
            if gates or "transforms" in entry or "compensation" in entry:
                out.append(entry)
        return out

    def sample_gates(self, sample: str) -> dict[str, dict[str, Any]]:
        """Per-sample gates (FlowJo lets each sample's gates move): population -> gate dict."""
        smp = self.sample(sample)
        populations, _, _ = _template_populations(self.strategy(smp), smp.populations)
        return {p["name"]: p["gate"] for p in populations}

    def _tree(self, group: str | None, sample: str | None) -> tuple[WspSample, list[WspPopulation]]:
        if sample is not None:
            smp = self.sample(sample)
            return smp, smp.populations
        candidates = [group] if group else [g for g in self.groups if self.groups[g].populations]
        for g in candidates:
            grp = self.groups.get(g)  # type: ignore[arg-type]
            if grp is None:
                raise WorkspaceError(
                    f"{self.path}: no group {g!r}; groups are {sorted(self.groups)}"
                )
            members = [self.samples[i] for i in grp.sample_ids if i in self.samples]
            if grp.populations and members:
                return members[0], grp.populations
            if members and members[0].populations:
                return members[0], members[0].populations
        if not self.samples:
            raise WorkspaceError(f"{self.path}: the workspace has no samples")
        smp = next(iter(self.samples.values()))
        return smp, smp.populations


def _write_spillover_csv(m: SpectrumMatrix, path: Path) -> Path:
    """A spillover matrix as CSV (header of detector names, one row per detector), the
    form `immunoprofile.compensation.Spillover.from_file` reads; written atomically."""

    lines = [",".join(m.detectors)] + [",".join(repr(float(v)) for v in row) for row in m.matrix]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _flowjo9_axes(
    tmpl: dict[str, Any],
    strat: GatingMLStrategy,
    ids: Sequence[str],
    populations: list[dict[str, Any]],
) -> None:
    """FlowJo 9 gates on its plot axes: each compensated or scaled axis becomes a derived
    dimension (its matrix, its fitted scale, and the plot's range as ``clip``: FlowJo 9
    draws events beyond an axis on its edge, and gates them there). The template then
    compensates nothing itself; its matrices carry the workspace's."""
    tmpl["compensation"] = "none"
    tmpl["transforms"] = None
    dims = tmpl.setdefault("dimensions", {})
    mats = tmpl.setdefault("matrices", {})
    for gid, pop in zip(ids, populations):
        e = strat.gates[gid]
        if isinstance(e.gate, BooleanGate):
            continue
        names = []
        for d in e.dimensions:
            if d.compensation == UNCOMPENSATED and d.transform is None:
                names.append(d.name)
                continue
            comp = "none"
            if d.compensation != UNCOMPENSATED:
                m = strat.matrices[d.compensation]
                mats[m.id] = {
                    "fluorochromes": list(m.detectors),
                    "detectors": list(m.detectors),
                    "matrix": [list(r) for r in m.matrix],
                }
                comp = m.id
            t = strat.transforms.get(d.transform) if d.transform else None
            key = f"{comp} <{d.name}>" if comp != "none" else f"{d.name} (FlowJo scale)"
            spec: dict[str, Any] = {"channel": d.name, "compensation": comp}
            spec["transform"] = t.spec() if t is not None else None
            if t is not None:
                spec["clip"] = [0.0, 1.0]
            dims[key] = spec
            names.append(key)
        pop["gate"] = {**pop["gate"], "dims": names}
    if not dims:
        del tmpl["dimensions"]
    if not mats:
        del tmpl["matrices"]
    tmpl["description"] += "; FlowJo 9 axes as derived dimensions"


def _entry_name(smp: WspSample, taken: set[str]) -> str:
    """A unique label of a sample's entry: its file name (node names may repeat)."""
    name = smp.file_name or smp.name or smp.id
    if name in taken:
        name = f"{name} (sample {smp.id})"
    taken.add(name)
    return name


def _match_of(smp: WspSample) -> dict[str, str]:
    """How a file is recognised as this sample: ``$FIL`` when the workspace recorded it
    (names repeat across samples; a copied file keeps its $FIL), else the file name; and
    ``$TOT`` when known."""
    match: dict[str, str] = {}
    fil = smp.keywords.get("$FIL", "").strip()
    if fil:
        match["$FIL"] = fil
    else:
        match["file"] = smp.file_name
    tot = smp.keywords.get("$TOT", "").strip() or (str(smp.count) if smp.count else "")
    if tot:
        match["$TOT"] = tot
    return match


def _is_boolean(pop: dict[str, Any]) -> bool:
    return pop["gate"].get("type") == "boolean"


def _same_matrix(a: SpectrumMatrix | None, b: SpectrumMatrix | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.detectors == b.detectors and np.allclose(a.matrix, b.matrix, rtol=0, atol=1e-12)


def _template_populations(
    strat: GatingMLStrategy, pops: Sequence[WspPopulation]
) -> tuple[list[dict[str, Any]], dict[str, ScaleTransform], list[str]]:
    """Template populations of a converted tree, in tree order, with the FlowJo path
    (``#inside`` appended for the drawn gate of an outside population) of each.

    A FlowJo gate kept as its outside (``eventsInside="0"``) becomes two populations: the
    drawn gate as ``<name>_inside`` and the population itself as its ``not``.
    """
    names = _unique_names([p.path for p in pops])
    by_id = {p.id: names[p.path] for p in pops}
    for p in pops:
        inner = p.id + "#inside"
        if inner in strat.gates:
            by_id[inner] = names[p.path] + "_inside"
    used_tr: dict[str, ScaleTransform] = {}
    out: list[dict[str, Any]] = []
    ids: list[str] = []
    for pop in pops:
        parent = names[pop.path[:-1]] if len(pop.path) > 1 else None
        for gid in (pop.id + "#inside", pop.id):
            e = strat.gates.get(gid)
            if e is None:
                continue
            out.append(
                {
                    "name": by_id[gid],
                    "parent": parent,
                    "description": f"FlowJo population {pop.id}"
                    + (" (the drawn gate; the population is outside it)" if gid != pop.id else ""),
                    "gate": _template_gate(e, by_id, used_tr, strat.transforms),
                }
            )
            ids.append(gid)
    return out, used_tr, ids


def _unique_names(paths: Sequence[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """Template-safe, unique population names: the leaf name, prefixed by ancestors on clash."""

    def clean(s: str) -> str:
        s = re.sub(r"[^A-Za-z0-9_.+-]+", "_", s).strip("_")
        return s or "population"

    out: dict[tuple[str, ...], str] = {}
    taken: set[str] = set()
    for p in paths:
        for k in range(1, len(p) + 1):
            cand = "_".join(clean(x) for x in p[-k:])
            if cand not in taken:
                break
        i = 2
        base = cand
        while cand in taken:
            cand = f"{base}_{i}"
            i += 1
        taken.add(cand)
        out[p] = cand
    return out


def _dimension(smp: WspSample, name: str, transformed: bool, strat: GatingMLStrategy) -> Dimension:
    comp = UNCOMPENSATED
    base = name
    if smp.matrix is not None and smp.prefix and name.startswith(smp.prefix):
        cand = name[len(smp.prefix) :]
        if smp.suffix and cand.endswith(smp.suffix):
            cand = cand[: -len(smp.suffix)]
        if cand in smp.matrix.detectors:
            base, comp = cand, smp.matrix.id
    tid = None
    if transformed:
        # a compensated axis may have its own scale (FlowJo 9: one table per matrix channel)
        first, second = (name, base) if comp != UNCOMPENSATED else (base, name)
        t = smp.transforms.get(first) or smp.transforms.get(second)
        if t is not None:
            strat.transforms[t.id] = t
            tid = t.id
    return Dimension(base, comp, tid)


def _convert(pop: WspPopulation, smp: WspSample, strat: GatingMLStrategy, where: str) -> GateEntry:
    g = pop.gate
    parent = pop.parent_id
    if g.kind in ("and", "or", "not"):
        refs = tuple(r.strip("/") for r in g.refs)  # an unknown id raises at evaluation
        gate: Gate = BooleanGate(refs, op=g.kind)
        return GateEntry(pop.id, parent, gate)
    dims = tuple(_dimension(smp, d, True, strat) for d in g.dims)
    tr = [strat.transforms.get(d.transform) if d.transform else None for d in dims]

    def fwd(i: int, v: float | None) -> float | None:
        if v is None or tr[i] is None:
            return v
        return float(tr[i].apply(np.array([v], dtype=np.float64))[0])  # type: ignore[union-attr]

    keys = tuple(d.key for d in dims)
    if g.kind == "rectangle":
        mins = tuple(fwd(i, v) for i, v in enumerate(g.mins))
        maxs = tuple(fwd(i, v) for i, v in enumerate(g.maxs))
        gate = (
            RangeGate(keys, min=mins[0], max=maxs[0])
            if len(keys) == 1
            else RectangleGate(keys, min=mins, max=maxs)
        )
    elif g.kind == "polygon":
        verts = tuple(tuple(fwd(i, c) for i, c in enumerate(v)) for v in g.vertices)
        gate = PolygonGate(keys, vertices=verts)  # type: ignore[arg-type]
    elif g.kind == "ellipse4":
        # FlowJo 9: the ends of the two axes, in data units; the ellipse is drawn on the
        # display (transformed) scale of each axis
        pts = np.array([[fwd(i, c) for i, c in enumerate(v)] for v in g.edges], dtype=float)
        gate = _ellipse_from_axes(pts, keys, where)
    elif g.kind == "ellipse":
        # foci and edge points are in FlowJo's 256-bin display space, linear over each
        # axis's transform (0..1 on the transformed scale; a linear axis needs one too)
        dims = tuple(d if d.transform else _linear_display(smp, d, strat) for d in dims)
        keys = tuple(d.key for d in dims)
        gate = _ellipse(g, keys, where)
    else:  # pragma: no cover - _parse_gate only makes the kinds above
        raise WorkspaceError(f"{where}: unknown gate kind {g.kind}")
    if not g.inside:
        inner = GateEntry(pop.id + "#inside", parent, gate, dims)
        strat.gates[inner.id] = inner
        return GateEntry(pop.id, parent, BooleanGate((inner.id,), op="not"))
    return GateEntry(pop.id, parent, gate, dims)


def _linear_display(smp: WspSample, d: Dimension, strat: GatingMLStrategy) -> Dimension:
    t = ScaleTransform(f"linear:{d.name}", "flin", (("T", 262144.0), ("A", 0.0)))
    strat.transforms[t.id] = t
    return replace(d, transform=t.id)


def _ellipse_from_axes(pts: np.ndarray, keys: tuple[str, ...], where: str) -> EllipseGate:
    """An ellipse from the two ends of each of its axes (points 0-1 and 2-3)."""
    center = pts.mean(axis=0)
    ax1, ax2 = pts[0] - pts[1], pts[2] - pts[3]
    a, b = np.linalg.norm(ax1) / 2.0, np.linalg.norm(ax2) / 2.0
    if a <= 0 or b <= 0:
        raise WorkspaceError(f"{where}: ellipse with a zero-length axis")
    theta = math.atan2(ax1[1], ax1[0])
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = r @ np.diag([a * a, b * b]) @ r.T
    return EllipseGate(
        keys, mean=tuple(map(float, center)), covariance=tuple(map(tuple, cov)), distance_square=1.0
    )


def _ellipse(g: WspGate, keys: tuple[str, ...], where: str) -> EllipseGate:
    f = np.asarray(g.foci, dtype=np.float64) / 256.0
    e = np.asarray(g.edges, dtype=np.float64) / 256.0
    center = f.mean(axis=0)
    half1 = np.linalg.norm(e[0] - e[1]) / 2.0
    half2 = np.linalg.norm(e[2] - e[3]) / 2.0
    a = max(half1, half2)  # semi-major axis
    c = np.linalg.norm(f[1] - f[0]) / 2.0  # centre-to-focus distance
    if a <= 0 or c > a:
        raise WorkspaceError(f"{where}: ellipse foci lie outside its edge points")
    b = math.sqrt(
        max(a * a - c * c, 0.0)
    )  # minor axis from foci (FlowJo's own minor points are unreliable)
    if c > 0:
        theta = math.atan2(f[1][1] - f[0][1], f[1][0] - f[0][0])
    else:
        major = e[0] - e[1] if half1 >= half2 else e[2] - e[3]
        theta = math.atan2(major[1], major[0])
    r = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    cov = r @ np.diag([a * a, b * b]) @ r.T
    return EllipseGate(
        keys, mean=tuple(center), covariance=tuple(map(tuple, cov)), distance_square=1.0
    )


def _template_gate(
    e: GateEntry,
    by_id: dict[str, str],
    used_tr: dict[str, ScaleTransform],
    transforms: dict[str, ScaleTransform],
) -> dict[str, Any]:
    g = e.gate
    if isinstance(g, BooleanGate):
        refs = []
        for r in g.dims:
            if r not in by_id:
                raise WorkspaceError(
                    f"population {e.id!r}: boolean dependent {r!r} is not in the tree"
                )
            refs.append(by_id[r])
        return replace(g, dims=tuple(refs)).to_dict()
    for d in e.dimensions:
        if d.transform is not None:
            used_tr.setdefault(d.name, transforms[d.transform])
    return replace(g, dims=tuple(d.name for d in e.dimensions)).to_dict()


__all__ = [
    "FlowJoWorkspace",
    "WorkspaceError",
    "WspGate",
    "WspGroup",
    "WspPopulation",
    "WspSample",
    "read_wsp",
]
