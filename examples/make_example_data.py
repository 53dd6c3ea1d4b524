"""Author the example files shipped in ``immunoprofile/example_data/``.

    python examples/make_example_data.py

They let every README block run on a plain ``pip install .``, with no other data:

* ``example.fcs``: one simulated tube (``immunoprofile simulate``, seed 1515, 4,000
  events; CD3, CD4, CD8, CD25, CD127, CD19 and a viability dye on the simulated
  FACSymphony, with its ``$SPILLOVER``).
* ``example.wsp``: a FlowJo 10 workspace on ``example.fcs`` (linear scatter, logicle
  fluorescence axes, the acquisition-defined compensation): polygons, one- and two-sided
  rectangles, quadrant-style rectangles and and/or/not nodes. The counts stored under
  each population are computed by flowkit (an independent implementation of FlowJo's
  gating), as FlowJo would store its own.
* ``example_gates.xml``: a Gating-ML 2.0 file on ``example.fcs``: polygon, rectangle,
  ratio (``fratio``) range, quadrant, ellipsoid and boolean gates, ``fasinh`` scales and
  the file's own compensation (``compensation-ref="FCS"``).
* ``example_opencyto.csv``: an openCyto gating template for the same panel.

The FlowJo and Gating-ML files are written here as XML by this script (their layout
follows the FlowJo 10 workspace format and the ISAC Gating-ML 2.0 schema); rerunning
the script gives the same files.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from immunoprofile.compensation import Spillover  # noqa: E402
from immunoprofile.io.fcs import read_fcs  # noqa: E402
from immunoprofile.io.write import write_fcs  # noqa: E402

OUT = REPO / "immunoprofile" / "example_data"
MARKERS = "CD3,CD4,CD8,CD25,CD127,CD19,Viability"
SCATTER = ("FSC-A", "FSC-H", "SSC-A", "SSC-H")

NS = {
    "gating": "http://www.isac-net.org/std/Gating-ML/v2.0/gating",
    "transforms": "http://www.isac-net.org/std/Gating-ML/v2.0/transformations",
    "data-type": "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes",
}
for _p, _u in NS.items():
    ET.register_namespace(_p, _u)


def q(prefix: str, tag: str) -> str:
    return f"{{{NS[prefix]}}}{tag}"


# --------------------------------------------------------------------------------------
# the FCS file
# --------------------------------------------------------------------------------------


def make_fcs() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "immunoprofile", "-q", "simulate", "--out", tmp,
             "--patients", "1", "--visits", "baseline", "--events", "4000", "--seed", "1515",
             "--no-effects", "--tube", f"ex={MARKERS}"],
            check=True, cwd=REPO,
        )  # fmt: skip
        sample = read_fcs(Path(tmp) / "P01_baseline_ex.fcs", scale=False)
    keep = {k: v for k, v in sample.keywords.items() if k not in ("$SRC",)}
    sample.keywords.clear()
    sample.keywords.update(keep)
    return write_fcs(sample, OUT / "example.fcs", extra_keywords={"$SRC": "example"})


# --------------------------------------------------------------------------------------
# FlowJo 10 workspace
# --------------------------------------------------------------------------------------

# channel of each marker on the simulated instrument
CH = {
    "CD3": "BUV395-A", "CD4": "BV510-A", "CD8": "BUV496-A", "CD25": "PE-A",
    "CD127": "PE-Cy7-A", "CD19": "BUV563-A", "Viability": "APC-Cy7-A",
}  # fmt: skip


def comp(marker: str) -> str:
    return f"Comp-{CH[marker]}"


# The sample's Treg polygon was moved from the group's (FlowJo keeps both): `gate` uses the
# sample's own gates for example.fcs and the group's for any other file.
TREG_SAMPLE = [(1500, -2000), (80000, -2000), (80000, 1500), (1500, 1000)]
TREG_GROUP = [(1200, -2000), (80000, -2000), (80000, 1800), (1200, 1200)]


def tree(treg: list[tuple[float, float]]) -> list:
    """The gating tree, with the Treg polygon ``treg``."""
    return [_tree(treg)]


# (name, gate, children); gate: ("polygon", dims, vertices) | ("rect", {dim: (lo, hi)})
# | ("and"/"or"/"not", [population paths]). Coordinates are in the data's units
# (compensated for Comp- channels), as FlowJo 10 stores them.
# fmt: off
def _tree(treg: list[tuple[float, float]]) -> tuple:
    return (
        "Lymphocytes", ("polygon", ("FSC-A", "SSC-A"),
                        [(25000, 2000), (90000, 2000), (95000, 30000), (60000, 38000), (25000, 25000)]),
        [("Singlets", ("polygon", ("FSC-A", "FSC-H"),
                       [(20000, 16000), (130000, 104000), (130000, 143000), (20000, 26000)]),
          [("Live", ("rect", {comp("Viability"): (None, 3000.0)}),
            [("CD3+", ("rect", {comp("CD3"): (1500.0, None)}),
              [("CD4+", ("rect", {comp("CD4"): (1200.0, None), comp("CD8"): (None, 3000.0)}),
                [("Treg", ("polygon", (comp("CD25"), comp("CD127")), treg), []),
                 ("CD25+", ("rect", {comp("CD25"): (1500.0, None)}), []),
                 ("CD127+", ("rect", {comp("CD127"): (1200.0, None)}), []),
                 ("CD25+ and CD127+", ("and", ["CD25+", "CD127+"]), []),
                 ("not Treg", ("not", ["Treg"]), [])]),
               ("CD8+", ("rect", {comp("CD4"): (None, 1200.0), comp("CD8"): (3000.0, None)}), []),
               ("CD4+ or CD8+", ("or", ["CD4+", "CD8+"]), [])]),
             ("B cells", ("rect", {comp("CD3"): (None, 1500.0), comp("CD19"): (2000.0, None)}),
              [])])])],
    )
# fmt: on


def _dimension(parent: ET.Element, name: str, lo: float | None, hi: float | None) -> None:
    d = ET.SubElement(parent, q("gating", "dimension"))
    if lo is not None:
        d.set(q("gating", "min"), repr(float(lo)))
    if hi is not None:
        d.set(q("gating", "max"), repr(float(hi)))
    ET.SubElement(d, q("data-type", "fcs-dimension"), {q("data-type", "name"): name})


def _population(parent: ET.Element, path: tuple[str, ...], node, counts, ids) -> None:
    name, gate, kids = node
    kind = gate[0]
    here = (*path, name)
    tag = {"and": "AndNode", "or": "OrNode", "not": "NotNode"}.get(kind, "Population")
    attrs = {"name": name, "annotation": "", "owningGroup": "", "expanded": "1"}
    attrs["count"] = str(counts["/".join(here)]) if counts is not None else "-1"
    pop = ET.SubElement(parent, tag, attrs)
    if kind in ("and", "or", "not"):
        deps = ET.SubElement(pop, "Dependents")
        for ref in gate[1]:  # a sibling population, named by its full path
            full = "/".join((*path, ref))
            ET.SubElement(deps, "Dependent", {"name": full})
    else:
        gid = f"ID{len(ids) + 1000}"
        ids["/".join(here)] = gid
        g_attrs = {q("gating", "id"): gid}
        parent_id = ids.get("/".join(path))
        if parent_id:
            g_attrs[q("gating", "parent_id")] = parent_id
        g = ET.SubElement(pop, "Gate", g_attrs)
        if kind == "polygon":
            el = ET.SubElement(g, q("gating", "PolygonGate"), {"eventsInside": "1", "quadId": "-1",
                                                               "gateResolution": "256"})  # fmt: skip
            for dim in gate[1]:
                _dimension(el, dim, None, None)
            for x, y in gate[2]:
                v = ET.SubElement(el, q("gating", "vertex"))
                for c in (x, y):
                    ET.SubElement(
                        v, q("gating", "coordinate"), {q("data-type", "value"): repr(float(c))}
                    )
        else:
            el = ET.SubElement(g, q("gating", "RectangleGate"), {"eventsInside": "1"})
            for dim, (lo, hi) in gate[1].items():
                _dimension(el, dim, lo, hi)
    if kids:
        subs = ET.SubElement(pop, "Subpopulations")
        for k in kids:
            _population(subs, here, k, counts, ids)


def _transforms(parent: ET.Element, channels: list[str], fluor: list[str]) -> None:
    tr = ET.SubElement(parent, "Transformations")
    for ch in channels:
        if ch in fluor:
            el = ET.SubElement(tr, q("transforms", "logicle"), {
                q("transforms", "length"): "256", q("transforms", "T"): "262144",
                q("transforms", "A"): "0", q("transforms", "W"): "0.5", q("transforms", "M"): "4.5",
            })  # fmt: skip
        else:
            el = ET.SubElement(tr, q("transforms", "linear"), {
                q("transforms", "minRange"): "0",
                q("transforms", "maxRange"): "262144" if ch != "Time" else "200", "gain": "1",
            })  # fmt: skip
        ET.SubElement(el, q("data-type", "parameter"), {q("data-type", "name"): ch})


def _spillover(parent: ET.Element, sp: Spillover) -> None:
    m = ET.SubElement(parent, q("transforms", "spilloverMatrix"), {
        "spectral": "0", "prefix": "Comp-", "name": "Acquisition-defined", "editable": "0",
        "status": "FINALIZED", q("transforms", "id"): "acquisition-defined", "suffix": "",
    })  # fmt: skip
    params = ET.SubElement(m, q("data-type", "parameters"))
    dets = list(sp.detectors)
    for d in dets:
        ET.SubElement(params, q("data-type", "parameter"), {q("data-type", "name"): d})
    for i, src in enumerate(dets):
        row = ET.SubElement(m, q("transforms", "spillover"), {q("data-type", "parameter"): src})
        for j, dst in enumerate(dets):
            ET.SubElement(row, q("transforms", "coefficient"), {
                q("data-type", "parameter"): dst, q("transforms", "value"): repr(float(sp.matrix[i][j])),
            })  # fmt: skip


def write_workspace(fcs: Path, path: Path, counts: dict[str, int] | None) -> Path:
    sample = read_fcs(fcs, scale=False)
    sp = Spillover.from_sample(sample)
    assert sp is not None
    channels = list(sample.channel_names)
    root = ET.Element("Workspace", {"version": "20.0", "flowJoVersion": "10.8.1",
                                    "curGroup": "All Samples"})  # fmt: skip
    groups = ET.SubElement(root, "Groups")
    gn = ET.SubElement(groups, "GroupNode", {"name": "All Samples", "owningGroup": "All Samples",
                                             "expanded": "1", "count": "-1"})  # fmt: skip
    grp = ET.SubElement(gn, "Group", {"name": "All Samples"})
    ET.SubElement(grp, "Criteria")
    refs = ET.SubElement(grp, "SampleRefs")
    ET.SubElement(refs, "SampleRef", {"sampleID": "1"})
    subs = ET.SubElement(gn, "Subpopulations")
    for node in tree(TREG_GROUP):
        _population(subs, (), node, None, {})
    sl = ET.SubElement(root, "SampleList")
    s_el = ET.SubElement(sl, "Sample")
    ET.SubElement(s_el, "DataSet", {"uri": fcs.name, "sampleID": "1"})
    _spillover(s_el, sp)
    _transforms(s_el, channels, list(sp.detectors))
    kw = ET.SubElement(s_el, "Keywords")
    for k in ("$FIL", "$TOT", "$CYT", "$DATE", "$SPILLOVER"):
        ET.SubElement(kw, "Keyword", {"name": k, "value": sample.keywords[k]})
    node = ET.SubElement(s_el, "SampleNode", {
        "name": fcs.name, "annotation": "", "owningGroup": "", "expanded": "1",
        "count": sample.keywords["$TOT"], "sampleID": "1",
    })  # fmt: skip
    subs = ET.SubElement(node, "Subpopulations")
    for n in tree(TREG_SAMPLE):
        _population(subs, (), n, counts, {})
    ET.indent(root, space="  ")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def flowkit_counts(wsp: Path, fcs: Path) -> dict[str, int]:
    """Each population's count as flowkit gates the workspace (independent of
    immunoprofile), keyed by its path below the sample node."""
    import flowkit as fk

    ws = fk.Workspace(str(wsp), fcs_samples=str(fcs))
    ws.analyze_samples(group_name="All Samples")
    rep = ws.get_gating_results(fcs.name).report
    out = {}
    for row in rep.itertuples(index=False):
        path = [p for p in str(row.gate_path).strip("()").replace("'", "").split(", ") if p]
        key = "/".join([*path[1:], row.gate_name])
        out[key] = int(row.count)
    return out


# --------------------------------------------------------------------------------------
# Gating-ML 2.0
# --------------------------------------------------------------------------------------


def write_gatingml(path: Path) -> Path:
    root = ET.Element(q("gating", "Gating-ML"))
    asinh = ET.SubElement(root, q("transforms", "transformation"), {q("transforms", "id"): "asinh"})
    ET.SubElement(asinh, q("transforms", "fasinh"),
                  {q("transforms", "T"): "262144", q("transforms", "M"): "4.5",
                   q("transforms", "A"): "0.5"})  # fmt: skip
    ratio = ET.SubElement(
        root, q("transforms", "transformation"), {q("transforms", "id"): "FSC_H_A"}
    )
    fr = ET.SubElement(ratio, q("transforms", "fratio"), {q("transforms", "A"): "1",
                                                          q("transforms", "B"): "0",
                                                          q("transforms", "C"): "0"})  # fmt: skip
    for ch in ("FSC-H", "FSC-A"):
        ET.SubElement(fr, q("data-type", "fcs-dimension"), {q("data-type", "name"): ch})

    def dim(gate: ET.Element, name: str, lo=None, hi=None, fluor=False, ratio=False) -> None:
        d = ET.SubElement(gate, q("gating", "dimension"), {
            q("gating", "compensation-ref"): "FCS" if fluor else "uncompensated",
        })  # fmt: skip
        if fluor:
            d.set(q("gating", "transformation-ref"), "asinh")
        if lo is not None:
            d.set(q("gating", "min"), repr(float(lo)))
        if hi is not None:
            d.set(q("gating", "max"), repr(float(hi)))
        if ratio:
            ET.SubElement(
                d, q("data-type", "new-dimension"), {q("data-type", "transformation-ref"): name}
            )
        else:
            ET.SubElement(d, q("data-type", "fcs-dimension"), {q("data-type", "name"): name})

    def gate(kind: str, gid: str, parent: str | None = None, **attrs) -> ET.Element:
        a = {q("gating", "id"): gid, **attrs}
        if parent:
            a[q("gating", "parent_id")] = parent
        return ET.SubElement(root, q("gating", kind), a)

    def vertex(gate_el: ET.Element, pts, tag="vertex") -> None:
        for pt in pts:
            v = ET.SubElement(gate_el, q("gating", tag))
            for c in pt:
                ET.SubElement(
                    v, q("gating", "coordinate"), {q("data-type", "value"): repr(float(c))}
                )

    g = gate("PolygonGate", "Lymphocytes")
    dim(g, "FSC-A")
    dim(g, "SSC-A")
    vertex(g, [(25000, 2000), (90000, 2000), (95000, 30000), (60000, 38000), (25000, 25000)])
    g = gate("RectangleGate", "Singlets", "Lymphocytes")
    dim(g, "FSC_H_A", 0.8, 1.2, ratio=True)
    g = gate("RectangleGate", "Live", "Singlets")
    dim(g, CH["Viability"], None, 0.55, fluor=True)
    g = gate("RectangleGate", "T", "Live")
    dim(g, CH["CD3"], 0.55, None, fluor=True)
    g = gate("RectangleGate", "B", "Live")
    dim(g, CH["CD3"], None, 0.55, fluor=True)
    dim(g, CH["CD19"], 0.6, None, fluor=True)
    # quadrants of CD4 x CD8 on the T cells
    g = gate("QuadrantGate", "CD4CD8", "T")
    for did, ch, cut in (("cd4", CH["CD4"], 0.58), ("cd8", CH["CD8"], 0.62)):
        div = ET.SubElement(g, q("gating", "divider"), {
            q("gating", "id"): did, q("gating", "compensation-ref"): "FCS",
            q("gating", "transformation-ref"): "asinh",
        })  # fmt: skip
        ET.SubElement(div, q("data-type", "fcs-dimension"), {q("data-type", "name"): ch})
        ET.SubElement(div, q("gating", "value")).text = repr(cut)
    for qid, (x, y) in {"CD4pos_CD8neg": (0.8, 0.3), "CD4neg_CD8pos": (0.3, 0.8),
                         "CD4pos_CD8pos": (0.8, 0.8), "CD4neg_CD8neg": (0.3, 0.3)}.items():  # fmt: skip
        quad = ET.SubElement(g, q("gating", "Quadrant"), {q("gating", "id"): qid})
        for did, v in (("cd4", x), ("cd8", y)):
            ET.SubElement(quad, q("gating", "position"), {
                q("gating", "divider_ref"): did, q("gating", "location"): repr(v),
            })  # fmt: skip
    g = gate("PolygonGate", "Treg", "CD4pos_CD8neg")
    dim(g, CH["CD25"], fluor=True)
    dim(g, CH["CD127"], fluor=True)
    vertex(g, [(0.58, 0.0), (1.0, 0.0), (1.0, 0.56), (0.58, 0.53)])
    # monocyte-sized cells: an ellipse on scatter (mean, covariance, distance squared)
    g = gate("EllipsoidGate", "Monocytes")
    dim(g, "FSC-A")
    dim(g, "SSC-A")
    mean = ET.SubElement(g, q("gating", "mean"))
    for c in (92000.0, 48000.0):
        ET.SubElement(mean, q("gating", "coordinate"), {q("data-type", "value"): repr(c)})
    cov = ET.SubElement(g, q("gating", "covarianceMatrix"))
    for row in ((1.6e8, 4.0e7), (4.0e7, 1.0e8)):
        r = ET.SubElement(cov, q("gating", "row"))
        for c in row:
            ET.SubElement(r, q("gating", "entry"), {q("data-type", "value"): repr(c)})
    ET.SubElement(g, q("gating", "distanceSquare"), {q("data-type", "value"): "4.0"})
    # boolean gates
    g = gate("BooleanGate", "T_or_B", "Live")
    or_ = ET.SubElement(g, q("gating", "or"))
    for ref in ("T", "B"):
        ET.SubElement(or_, q("gating", "gateReference"), {q("gating", "ref"): ref})
    g = gate("BooleanGate", "CD4_not_Treg")
    and_ = ET.SubElement(g, q("gating", "and"))
    ET.SubElement(and_, q("gating", "gateReference"), {q("gating", "ref"): "CD4pos_CD8neg"})
    ET.SubElement(and_, q("gating", "gateReference"), {q("gating", "ref"): "Treg",
                                                       q("gating", "use-as-complement"): "true"})  # fmt: skip
    ET.indent(root, space="  ")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


# --------------------------------------------------------------------------------------
# openCyto gating template
# --------------------------------------------------------------------------------------

OPENCYTO = """\
alias,pop,parent,dims,gating_method,gating_args,collapseDataForGating,groupBy,preprocessing_method,preprocessing_args
nonDebris,+,root,FSC-A,mindensity,,,,,
singlets,+,nonDebris,"FSC-A,FSC-H",singletGate,,,,,
lymph,+,singlets,"FSC-A,SSC-A",flowClust,"K = 3, target = c(55000, 14000)",,,prior_flowClust,K = 3
live,-,lymph,Viability,tailgate,,,,,
CD3,+,live,CD3,mindensity,,,,,
*,+/-+/-,CD3,"CD4,CD8",mindensity,,,,,
CD4,+,CD3,,boolGate,CD4+CD8-,,,,
CD8,+,CD3,,boolGate,CD4-CD8+,,,,
CD25+,+,CD4,CD25,mindensity,,,,,
CD127-,-,CD4,CD127,mindensity,,,,,
Treg,+,CD4,,boolGate,CD25+&CD127-,,,,
B,-+,live,"CD3,CD19",mindensity,,,,,
"""


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fcs = make_fcs()
    wsp = OUT / "example.wsp"
    write_workspace(fcs, wsp, None)
    counts = flowkit_counts(wsp, fcs)
    write_workspace(fcs, wsp, counts)
    write_gatingml(OUT / "example_gates.xml")
    (OUT / "example_opencyto.csv").write_text(OPENCYTO, encoding="utf-8")
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(REPO)}: {p.stat().st_size} bytes")
    print(counts)


if __name__ == "__main__":
    main()
