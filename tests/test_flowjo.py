"""FlowJo workspace import: structure of every workspace under FlowKit/data, and FlowJo's
own stored counts reproduced for the workspaces whose FCS file is present."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.gating.gates import BooleanGate, EllipseGate, PolygonGate
from immunoprofile.interop.flowjo import WorkspaceError, read_wsp

# workspace -> {population path: FlowJo's count stored in the sample node}
STORED = {
    "simple_diamond_example/simple_diamond_example_quad_gate.wsp": {
        "Q1: channel_A- , channel_B+": 49671,
        "Q2: channel_A+ , channel_B+": 50596,
        "Q3: channel_A+ , channel_B-": 50330,
        "Q4: channel_A- , channel_B-": 49403,
    },
    "simple_diamond_example/test_data_diamond_asinh_rect.wsp": {"upper_right": 50559},
    "simple_diamond_example/test_data_diamond_asinh_rect2.wsp": {"upper_right": 50699},
    "simple_diamond_example/test_data_diamond_biex_rect.wsp": {"upper_right": 50605},
    "simple_line_example/single_ellipse_51_events.wsp": {"ellipse1": 51},
}


@pytest.fixture(scope="module")
def fkdata(realdata):
    root = realdata / "FlowKit" / "data"
    if not root.is_dir():
        pytest.skip(f"FlowKit data folder {root} is absent")
    return root


def _read(path):
    from immunoprofile.io.fcs import read_fcs

    return read_fcs(path, scale=False)


@pytest.mark.parametrize("wsp", sorted(STORED))
def test_flowjo_counts_reproduced(fkdata, wsp):
    ws = read_wsp(fkdata / wsp)
    (smp,) = ws.samples.values()
    rows = ws.compare_counts(smp, _read(fkdata / wsp.split("/")[0] / smp.file_name))
    got = {r["population"]: (r["flowjo"], r["immunoprofile"]) for r in rows}
    for pop, n in STORED[wsp].items():
        assert got[pop] == (n, n), f"{wsp} {pop}: FlowJo {n}, ours {got[pop][1]}"


def test_polygon_workspaces_agree_with_flowkit(fkdata):
    """FlowJo stored no counts here (count -1/0); flowkit's evaluation is the reference."""
    fk = pytest.importorskip("flowkit")
    fcs = fkdata / "simple_line_example" / "data_set_simple_line_100.fcs"
    for name, poly_count in [
        ("simple_poly_and_rect.wsp", 0),
        ("simple_poly_and_rect_v2_poly50.wsp", 50),
    ]:
        wsp = fkdata / "simple_line_example" / name
        ws = read_wsp(wsp)
        (smp,) = ws.samples.values()
        ours = {r["population"]: r["immunoprofile"] for r in ws.compare_counts(smp, _read(fcs))}
        fws = fk.Workspace(str(wsp), fcs_samples=str(fcs))
        fws.analyze_samples()
        rep = fws.get_gating_results(smp.name).report
        theirs = dict(zip(rep["gate_name"], rep["count"]))
        assert ours == {k: int(v) for k, v in theirs.items()}
        assert ours["poly1"] == poly_count


def test_ellipse_is_converted_from_display_space(fkdata):
    ws = read_wsp(fkdata / "simple_line_example" / "single_ellipse_51_events.wsp")
    s = ws.strategy(next(iter(ws.samples.values())))
    g = s.gates["ellipse1"].gate
    assert isinstance(g, EllipseGate)
    # centre = mean of the foci / 256 bins: (62.77 + 94.23) / 2 / 256
    assert g.mean[0] == pytest.approx(78.5 / 256) and g.mean[1] == pytest.approx(125.5 / 256)


def test_eight_colour_structure_and_template(fkdata):
    from immunoprofile.gating.template import validate_template

    ws = read_wsp(fkdata / "8_color_data_set" / "8_color_ICS.wsp")
    assert len(ws.samples) == 3
    assert {s.count for s in ws.samples.values()} == {290172, 283969, 285290}
    assert len(ws.groups["DEN"].sample_ids) == 3
    smp = ws.sample("101_DEN084Y5_15_E01_008_clean.fcs")
    assert smp.matrix is not None and len(smp.matrix.detectors) == 8
    assert smp.transforms["CD3 APC-H7 FLR-A"].kind == "logicle"
    strat = ws.strategy(smp)
    dims = strat.gates["Time/Singlets/aAmine-/CD3+"].dimensions
    assert dims[0].compensation == smp.matrix.id and dims[0].name == "CD3 APC-H7 FLR-A"
    t = ws.to_template(group="DEN")
    tmpl = validate_template(t)
    assert tmpl.names[:4] == ["Time", "Singlets", "aAmine-", "CD3+"]
    assert t["compensation"] == "file"
    assert t["transforms"]["channels"]["CD3 APC-H7 FLR-A"] == {
        "type": "logicle",
        "t": 262144.0,
        "w": 1.0,
        "m": 4.418539922,
        "a": 0.0,
    }
    assert t["transforms"]["default"] is None  # channels no gate uses stay as read


def test_boolean_nodes(fkdata):
    ws = read_wsp(fkdata / "8_color_data_set" / "8_color_ICS_boolean_gate_testing.wsp")
    smp = ws.sample("101_DEN084Y5_15_E01_008_clean.fcs")
    strat = ws.strategy(smp)
    kinds = {e.gate.op for e in strat.gates.values() if isinstance(e.gate, BooleanGate)}
    assert kinds == {"and", "or", "not"}
    e = strat.gates["Time/Singlets/aAmine-/CD3+/CD4+/CD107a+ or IFNg+"]
    assert e.gate.dims == (
        "Time/Singlets/aAmine-/CD3+/CD4+/CD107a+",
        "Time/Singlets/aAmine-/CD3+/CD4+/IFNg+",
    )
    assert e.parent == "Time/Singlets/aAmine-/CD3+/CD4+"
    polys = [e for e in strat.gates.values() if isinstance(e.gate, PolygonGate)]
    assert polys and all(d.transform for e in polys for d in e.dimensions)


def test_boolean_evaluation_on_synthetic_events(fkdata):
    """The boolean node's mask is and/or/not of its dependents within its parent."""
    ws = read_wsp(fkdata / "8_color_data_set" / "8_color_ICS_boolean_gate_testing.wsp")
    smp = ws.sample("101_DEN084Y5_15_E01_008_clean.fcs")
    rng = np.random.default_rng(0)
    names = list(smp.matrix.detectors) + [
        "FSC-A",
        "FSC-H",
        "FSC-W",
        "SSC-A",
        "SSC-H",
        "SSC-W",
        "Time",
    ]
    data = {n: rng.uniform(-200, 150000, 5000) for n in names}
    m = ws.strategy(smp).evaluate(data)
    base = "Time/Singlets/aAmine-/CD3+/CD4+/"
    np.testing.assert_array_equal(
        m[base + "CD107a+ or IFNg+"], m[base + "CD107a+"] | m[base + "IFNg+"]
    )
    np.testing.assert_array_equal(m[base + "IL2+-"], m[base[:-1]] & ~m[base + "IL2+"])


def test_match_files_reports_unmatched(fkdata, tmp_path):
    ws = read_wsp(fkdata / "8_color_data_set" / "8_color_ICS.wsp")
    present = tmp_path / "101_DEN084Y5_15_E03_009_clean.fcs"
    other = tmp_path / "unrelated.fcs"
    matched, missing, unused = ws.match_files([present, other])
    assert list(matched.values()) == [present]
    assert sorted(missing) == [
        "101_DEN084Y5_15_E01_008_clean.fcs",
        "101_DEN084Y5_15_E05_010_clean.fcs",
    ]
    assert unused == [other]


def test_errors(tmp_path):
    with pytest.raises(WorkspaceError, match="no such file"):
        read_wsp(tmp_path / "missing.wsp")
    bad = tmp_path / "bad.wsp"
    bad.write_text("<Workspace><SampleList><Sample/></SampleList></Workspace>")
    with pytest.raises(WorkspaceError, match="lacks DataSet"):
        read_wsp(bad)
    other = tmp_path / "x.wsp"
    other.write_text("<Gating-ML/>")
    with pytest.raises(WorkspaceError, match="not a FlowJo"):
        read_wsp(other)


def test_cli_import_gates_wsp_with_fcs(fkdata, tmp_path):
    import json

    from click.testing import CliRunner

    from immunoprofile.cli import main

    d = fkdata / "simple_diamond_example"
    out = tmp_path / "quad.json"
    r = CliRunner().invoke(
        main,
        [
            "import-gates",
            str(d / "simple_diamond_example_quad_gate.wsp"),
            "--out",
            str(out),
            "--fcs",
            str(d / "test_data_diamond_01.fcs"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "FlowJo 49671\timmunoprofile 49671" in r.output
    t = json.loads(out.read_text())
    assert [p["name"] for p in t["populations"]] == [
        "Q1_channel_A-_channel_B+",
        "Q2_channel_A+_channel_B+",
        "Q3_channel_A+_channel_B-",
        "Q4_channel_A-_channel_B-",
    ]
    # the sample's gates equal its group's here: no per-sample entry
    assert "samples" not in t


@pytest.mark.parametrize("wsp", sorted(STORED))
def test_imported_template_through_the_engine_gives_flowjo_counts(fkdata, wsp):
    """The workspace as an immunoprofile template (channels, FlowJo axis transforms as the
    template's transforms), applied by the gating engine on its float32 path."""
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.gating.template import validate_template
    from immunoprofile.io.fcs import read_fcs

    ws = read_wsp(fkdata / wsp)
    (smp,) = ws.samples.values()
    tmpl = validate_template(ws.to_template(sample=smp.id))
    res = apply_template(read_fcs(fkdata / wsp.split("/")[0] / smp.file_name), tmpl)
    names = {p.id: tmpl.populations[i].name for i, p in enumerate(smp.populations)}
    got = {pop: res.counts[names[pop]] for pop in STORED[wsp]}
    assert got == STORED[wsp]


SYNTHETIC_WSP = """<?xml version="1.0" encoding="UTF-8"?>
<Workspace version="20.0" flowJoVersion="10.7.1"
  xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
  xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
  xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
 <Groups><GroupNode name="All Samples"><Group name="All Samples">
  <SampleRefs><SampleRef sampleID="1"/></SampleRefs></Group></GroupNode></Groups>
 <SampleList><Sample>
  <DataSet uri="file:/somewhere/syn.fcs" sampleID="1"/>
  <transforms:spilloverMatrix prefix="Comp-" name="Acquisition-defined" suffix="" transforms:id="m1">
   <data-type:parameters><data-type:parameter data-type:name="A"/><data-type:parameter data-type:name="B"/></data-type:parameters>
   <transforms:spillover data-type:parameter="A">
    <transforms:coefficient data-type:parameter="A" transforms:value="1"/>
    <transforms:coefficient data-type:parameter="B" transforms:value="0.5"/></transforms:spillover>
   <transforms:spillover data-type:parameter="B">
    <transforms:coefficient data-type:parameter="A" transforms:value="0"/>
    <transforms:coefficient data-type:parameter="B" transforms:value="1"/></transforms:spillover>
  </transforms:spilloverMatrix>
  <Transformations>
   <transforms:log transforms:offset="1" transforms:decades="2"><data-type:parameter data-type:name="X"/></transforms:log>
   <transforms:log transforms:offset="1" transforms:decades="2"><data-type:parameter data-type:name="Y"/></transforms:log>
  </Transformations>
  <Keywords/>
  <SampleNode name="syn.fcs" count="3" sampleID="1"><Subpopulations>
   <Population name="B4" count="1"><Gate gating:id="g1">
    <gating:RectangleGate eventsInside="1" gating:id="g1">
     <gating:dimension gating:min="3.5" gating:max="4.5"><data-type:fcs-dimension data-type:name="Comp-B"/></gating:dimension>
    </gating:RectangleGate></Gate></Population>
   <Population name="notB4" count="2"><Gate gating:id="g2">
    <gating:RectangleGate eventsInside="0" gating:id="g2">
     <gating:dimension gating:min="3.5" gating:max="4.5"><data-type:fcs-dimension data-type:name="Comp-B"/></gating:dimension>
    </gating:RectangleGate></Gate></Population>
   <Population name="tri" count="1"><Gate gating:id="g3">
    <gating:PolygonGate eventsInside="1" gating:id="g3">
     <gating:dimension><data-type:fcs-dimension data-type:name="X"/></gating:dimension>
     <gating:dimension><data-type:fcs-dimension data-type:name="Y"/></gating:dimension>
     <gating:vertex><gating:coordinate data-type:value="1"/><gating:coordinate data-type:value="1"/></gating:vertex>
     <gating:vertex><gating:coordinate data-type:value="100"/><gating:coordinate data-type:value="1"/></gating:vertex>
     <gating:vertex><gating:coordinate data-type:value="1"/><gating:coordinate data-type:value="100"/></gating:vertex>
    </gating:PolygonGate></Gate></Population>
  </Subpopulations></SampleNode>
 </Sample></SampleList>
</Workspace>
"""


def test_synthetic_workspace_compensation_complement_and_display_space(tmp_path):
    """Hand-worked: Comp-B = B - 0.5 A; eventsInside=0 is the complement; a polygon drawn
    on log axes is straight in log space (x*y <= 100), not in data space (x+y <= 101)."""
    p = tmp_path / "syn.wsp"
    p.write_text(SYNTHETIC_WSP)
    ws = read_wsp(p)
    assert ws.groups["All Samples"].sample_ids == ["1"]
    smp = ws.sample("syn.fcs")
    data = {
        "A": np.array([10.0, 10.0, 0.0]),
        "B": np.array([9.0, 20.0, 4.0]),  # compensated B: 4, 15, 4
        "X": np.array([5.0, 50.0, 2.0]),
        "Y": np.array([5.0, 10.0, 80.0]),  # x*y: 25, 500, 160; x+y: 10, 60, 82
    }
    m = ws.strategy(smp).evaluate(data)
    assert m["B4"].tolist() == [True, False, True]
    assert m["notB4"].tolist() == [False, True, False]
    assert m["tri"].tolist() == [True, False, False]
    t = ws.to_template()
    assert t["compensation"] == "file"
    assert t["transforms"]["channels"]["X"] == {"type": "flog", "t": 100.0, "m": 2.0}
    from immunoprofile.gating.template import validate_template

    # a matrix made in FlowJo travels as a CSV the template points at
    custom = tmp_path / "custom.wsp"
    custom.write_text(SYNTHETIC_WSP.replace('name="Acquisition-defined"', 'name="my comp"'))
    t2 = read_wsp(custom).to_template(spillover_csv=tmp_path / "m.csv")
    assert t2["compensation"] == str(tmp_path / "m.csv")
    from immunoprofile.compensation import Spillover

    sp = Spillover.from_file(tmp_path / "m.csv")
    assert list(sp.detectors) == ["A", "B"]
    np.testing.assert_array_equal(sp.matrix, [[1.0, 0.5], [0.0, 1.0]])
    assert "not carried" in read_wsp(custom).to_template()["description"]
    pops = {p.name: p for p in validate_template(t).populations}
    assert pops["notB4"].gate.op == "not" and pops["notB4"].gate.dims == ("notB4_inside",)
    assert pops["notB4_inside"].gate.dims == ("B",)
