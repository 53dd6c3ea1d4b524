"""Gating-ML 2.0 import/export, checked against the ISAC compliance suite event for event.

The suite (data1.fcs, the gml/*.xml gate files and the per-event truth Results_*.txt) lives
in ../shared/realdata/FlowKit/data/gate_ref and is used read-only; the tests that need it
skip, saying why, when it is absent. The mapping of gate file -> gate id -> truth file is
the one in MANIFEST.md section A.
"""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.gating.gates import BooleanGate, PolygonGate, QuadrantGate, RangeGate
from immunoprofile.interop.gatingml import (
    Dimension,
    GateEntry,
    GatingMLError,
    GatingMLStrategy,
    SpectrumMatrix,
    read_gatingml,
    write_gatingml,
)

# GML file -> [(gate id, truth file stem)] (MANIFEST.md section A)
SUITE: dict[str, list[tuple[str, str]]] = {
    "gml_range_gate.xml": [("Range1", "Range1")],
    "gml_rect1_gate.xml": [("Rectangle1", "Rectangle1")],
    "gml_rect2_gate.xml": [("Rectangle2", "Rectangle2")],
    "gml_poly1_gate.xml": [("Polygon1", "Polygon1")],
    "gml_poly2_gate.xml": [("Polygon2", "Polygon2")],
    "gml_poly3ns_gate.xml": [("Polygon3NS", "Polygon3NS")],
    "gml_ellipse1_gate.xml": [("Ellipse1", "Ellipse1")],
    "gml_ellipsoid3d_gate.xml": [("Ellipsoid3D", "Ellipsoid3D")],
    "gml_time_range_gate.xml": [("Range2", "Range2")],
    "gml_quadrant1_gate.xml": [
        (q, q) for q in ("FL2N-FL4N", "FL2N-FL4P", "FL2P-FL4N", "FL2P-FL4P")
    ],
    "gml_quadrant2_gate.xml": [
        (q, q)
        for q in ("FSCN-SSCN", "FSCD-SSCN-FL1N", "FSCP-SSCN-FL1N", "FSCD-FL1P", "FSCN-SSCP-FL1P")
    ],
    "gml_ratio_range1_gate.xml": [("RatRange1", "RatRange1")],
    "gml_ratio_range2_gate.xml": [("RatRange2", "RatRange2")],
    "gml_log_ratio_range1_gate.xml": [("RatRange1a", "RatRange1a")],
    "gml_boolean_and1_gate.xml": [("And1", "And1")],
    "gml_boolean_and2_gate.xml": [("And2", "And2")],
    "gml_boolean_or1_gate.xml": [("Or1", "Or1")],
    "gml_boolean_and3_complement_gate.xml": [("And3", "And3")],
    "gml_boolean_not1_gate.xml": [("Not1", "Not1")],
    "gml_boolean_and4_not_gate.xml": [("And4", "And4")],
    "gml_boolean_or2_gate.xml": [("Or2", "Or2")],
    "gml_matrix_poly4_gate.xml": [("Polygon4", "Polygon4")],
    "gml_matrix_rect3_gate.xml": [("Rectangle3", "Rectangle3")],
    "gml_matrix_rect4_gate.xml": [("Rectangle4", "Rectangle4")],
    "gml_matrix_rect5_gate.xml": [("Rectangle5", "Rectangle5")],
    "gml_transform_asinh_range1_gate.xml": [("ScaleRange1", "ScaleRange1")],
    "gml_transform_hyperlog_range2_gate.xml": [("ScaleRange2", "ScaleRange2")],
    "gml_transform_linear_range3_gate.xml": [("ScaleRange3", "ScaleRange3")],
    "gml_transform_logicle_range4_gate.xml": [("ScaleRange4", "ScaleRange4")],
    "gml_transform_logicle_range5_gate.xml": [("ScaleRange5", "ScaleRange5")],
    "gml_transform_log_range6_gate.xml": [("ScaleRange6", "ScaleRange6")],
    "gml_matrix_transform_asinh_range1c_gate.xml": [("ScaleRange1c", "ScaleRange1c")],
    "gml_matrix_transform_hyperlog_range2c_gate.xml": [("ScaleRange2c", "ScaleRange2c")],
    "gml_matrix_transform_linear_range3c_gate.xml": [("ScaleRange3c", "ScaleRange3c")],
    "gml_matrix_transform_logicle_range4c_gate.xml": [("ScaleRange4c", "ScaleRange4c")],
    "gml_matrix_transform_logicle_range5c_gate.xml": [("ScaleRange5c", "ScaleRange5c")],
    "gml_matrix_transform_asinh_range6c_gate.xml": [("ScaleRange6c", "ScaleRange6c")],
    "gml_matrix_transform_hyperlog_range7c_gate.xml": [("ScaleRange7c", "ScaleRange7c")],
    "gml_matrix_transform_logicle_range8c_gate.xml": [("ScaleRange8c", "ScaleRange8c")],
    "gml_matrix_transform_logicle_rect1_gate.xml": [("ScaleRect1", "ScaleRect1")],
    "gml_parent_poly1_boolean_and2_gate.xml": [("ParAnd2", "ParAnd2")],
    "gml_parent_range1_boolean_and3_gate.xml": [("ParAnd3", "ParAnd3")],
    "gml_parent_rect1_rect_par1_gate.xml": [("ScalePar1", "ScalePar1")],
    "gml_parent_quadrant_rect_gate.xml": [("ParRectangle1", "ParQuadRect")],
}

# every gate id of gml_all_gates.xml (MANIFEST.md section A); each has a Results file
ALL_GATES = [
    *"Range1 Rectangle1 Rectangle2 Polygon1 Ellipse1 Range2 Polygon2".split(),
    *"FL2N-FL4N FL2N-FL4P FL2P-FL4N FL2P-FL4P Polygon3NS RatRange1 RatRange2 RatRange1a".split(),
    *"FSCN-SSCN FSCD-SSCN-FL1N FSCP-SSCN-FL1N FSCD-FL1P FSCN-SSCP-FL1P".split(),
    *"And1 And2 Or1 And3 Not1 And4 Or2 Polygon4 Rectangle3 Rectangle4 Rectangle5".split(),
    *[f"ScaleRange{i}" for i in range(1, 7)],
    *[f"ScaleRange{i}c" for i in range(1, 9)],
    *"ScaleRect1 ParAnd2 ParAnd3 ScalePar1".split(),
]


@pytest.fixture(scope="module")
def suite(realdata):
    root = realdata / "FlowKit" / "data" / "gate_ref"
    if not (root / "data1.fcs").is_file():
        pytest.skip(f"ISAC Gating-ML compliance suite not found under {root}")
    return root


@pytest.fixture(scope="module")
def data1(suite):
    """data1.fcs as float64 columns on the 'channel to scale' (MANIFEST.md section A)."""
    from immunoprofile.interop.gatingml import scaled_columns
    from immunoprofile.io.fcs import read_fcs

    return scaled_columns(read_fcs(suite / "data1.fcs", scale=False))


def truth(suite, stem: str) -> np.ndarray:
    return np.loadtxt(suite / "truth" / f"Results_{stem}.txt", dtype=int).astype(bool)


def test_channel_to_scale_matches_flowio_truth(realdata, data1):
    want = np.load(realdata / "FlowIO" / "data" / "truth" / "data1_preprocessed.npy")
    names = ["FSC-H", "SSC-H", "FL1-H", "FL2-H", "FL3-H", "FL2-A", "FL4-H", "Time"]
    got = np.column_stack([data1[n] for n in names])
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)


@pytest.mark.parametrize("gml", sorted(SUITE))
def test_compliance_file(suite, data1, gml):
    strategy = read_gatingml(suite / "gml" / gml)
    masks = strategy.evaluate(data1)
    for gate_id, stem in SUITE[gml]:
        want = truth(suite, stem)
        got = masks[gate_id]
        assert got.shape == want.shape == (13367,)
        wrong = np.flatnonzero(got != want)
        assert wrong.size == 0, f"{gml} {gate_id}: {wrong.size} events differ, first {wrong[:5]}"


def test_compliance_all_gates(suite, data1):
    strategy = read_gatingml(suite / "gml" / "gml_all_gates.xml")
    assert sorted(strategy.gate_ids) == sorted(ALL_GATES)
    assert strategy.max_depth() == 2
    masks = strategy.evaluate(data1)
    bad = {g: int((masks[g] != truth(suite, g)).sum()) for g in ALL_GATES}
    assert {g: n for g, n in bad.items() if n} == {}
    # counts from MANIFEST.md: a few spot values, independent of the truth files read above
    assert int(masks["ScalePar1"].sum()) == 558
    assert int(masks["ParAnd2"].sum()) == 12
    assert int(masks["Not1"].sum()) == 13164


def test_all_gates_structure(suite):
    s = read_gatingml(suite / "gml" / "gml_all_gates.xml")
    assert s.gates["ParAnd2"].parent == "Polygon1"
    assert s.gates["ScalePar1"].parent == "ScaleRect1"
    assert isinstance(s.gates["And3"].gate, BooleanGate)
    assert s.gates["And3"].gate.complement == (False, True, False)
    assert isinstance(s.gates["FL2P-FL4N"].gate, QuadrantGate)
    assert s.gates["FL2P-FL4N"].gate.signs == ("+", "-")
    assert s.gates["FL2P-FL4N"].quadrant_group == "Quadrant1"
    # FSC divider has two values: the 'D' (dim) interval is [28.0654, 70.02725)
    fscd = s.gates["FSCD-FL1P"].gate
    assert fscd.min[0] == 28.0654 and fscd.max[0] == 70.02725
    assert s.matrices["MySpill"].fluorochromes == ("FITC", "PE", "PerCP")
    assert dict(s.transforms["Logicle_10000_1_4_0.5"].params) == {
        "T": 10000.0,
        "W": 1.0,
        "M": 4.0,
        "A": 0.5,
    }
    assert s.ratios["FL2Rat2"].A == 2.7
    assert s.channels_needed() == {
        "FSC-H",
        "SSC-H",
        "FL1-H",
        "FL2-H",
        "FL3-H",
        "FL2-A",
        "FL4-H",
        "Time",
    }


def test_export_reimports_to_same_membership(suite, data1, tmp_path):
    s = read_gatingml(suite / "gml" / "gml_all_gates.xml")
    out = tmp_path / "exported.xml"
    write_gatingml(s, out)
    again = read_gatingml(out)
    assert sorted(again.gate_ids) == sorted(s.gate_ids)
    a, b = s.evaluate(data1), again.evaluate(data1)
    for g in ALL_GATES:
        np.testing.assert_array_equal(a[g], b[g], err_msg=g)
        np.testing.assert_array_equal(b[g], truth(suite, g), err_msg=g)


def test_export_reads_in_flowkit(suite, data1, tmp_path):
    fk = pytest.importorskip("flowkit")
    s = read_gatingml(suite / "gml" / "gml_all_gates.xml")
    out = tmp_path / "exported.xml"
    write_gatingml(s, out)
    gs = fk.parse_gating_xml(str(out))
    res = gs.gate_sample(fk.Sample(str(suite / "data1.fcs")))
    ours = s.evaluate(data1)
    for g in ALL_GATES:
        theirs = np.asarray(res.get_gate_membership(g), dtype=bool)
        assert int(theirs.sum()) == int(ours[g].sum()), g
        np.testing.assert_array_equal(theirs, ours[g], err_msg=g)


# --- hand-worked cases (no real data needed) ---------------------------------------------


def _doc(body: str) -> str:
    return (
        '<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
        'xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations" '
        'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">'
        f"{body}</gating:Gating-ML>"
    )


def _dim(name: str, lo: str = "", hi: str = "", comp: str = "uncompensated") -> str:
    lim = (f' gating:min="{lo}"' if lo else "") + (f' gating:max="{hi}"' if hi else "")
    return (
        f'<gating:dimension gating:compensation-ref="{comp}"{lim}>'
        f'<data-type:fcs-dimension data-type:name="{name}"/></gating:dimension>'
    )


def test_evaluate_on_samples(suite, data1):
    from immunoprofile.compensation import Spillover, compensate
    from immunoprofile.exceptions import GatingError
    from immunoprofile.io.fcs import read_fcs

    s = read_gatingml(suite / "gml" / "gml_poly1_gate.xml")
    raw = read_fcs(suite / "data1.fcs", scale=False)  # scaled here in float64
    np.testing.assert_array_equal(s.evaluate(raw)["Polygon1"], s.evaluate(data1)["Polygon1"])
    spill = Spillover(["FL1-H", "FL2-H"], np.array([[1.0, 0.1], [0.0, 1.0]]))
    processed = compensate(read_fcs(suite / "data1.fcs"), spill)
    with pytest.raises(GatingError, match="already processed"):
        s.evaluate(processed)


def test_range_is_min_inclusive_max_exclusive():
    s = read_gatingml(
        _doc(f'<gating:RectangleGate gating:id="r">{_dim("a", "1", "2")}</gating:RectangleGate>')
    )
    m = s.evaluate({"a": np.array([0.999, 1.0, 1.5, 2.0, 2.5])})["r"]
    assert m.tolist() == [False, True, True, False, False]


def test_one_sided_and_parent_and_complement():
    body = (
        f'<gating:RectangleGate gating:id="lo">{_dim("a", lo="1")}</gating:RectangleGate>'
        f'<gating:RectangleGate gating:id="hi" gating:parent_id="lo">{_dim("b", hi="5")}</gating:RectangleGate>'
        '<gating:BooleanGate gating:id="x"><gating:and>'
        '<gating:gateReference gating:ref="lo"/>'
        '<gating:gateReference gating:ref="hi" gating:use-as-complement="true"/>'
        "</gating:and></gating:BooleanGate>"
    )
    s = read_gatingml(_doc(body))
    a = np.array([0.0, 1.0, 2.0, 3.0])
    b = np.array([1.0, 1.0, 9.0, 4.0])
    m = s.evaluate({"a": a, "b": b})
    assert m["lo"].tolist() == [False, True, True, True]
    assert m["hi"].tolist() == [False, True, False, True]  # b < 5 within its parent
    assert m["x"].tolist() == [False, False, True, False]  # lo and not hi


def test_polygon_event_on_edge_is_decided_exactly():
    g = PolygonGate(("x", "y"), vertices=((5, 5), (500, 5), (500, 500)))
    x = np.array([7.3, 123.456789, 499.9, 10.0, 600.0])
    y = np.array([7.3, 123.456789, 499.9, 20.0, 7.0])  # first three on the diagonal edge
    assert g.mask([x, y]).tolist() == [True, True, True, False, False]


def test_quadrant_divider_with_two_values():
    body = (
        '<gating:QuadrantGate gating:id="Q">'
        '<gating:divider gating:id="D" gating:compensation-ref="uncompensated">'
        '<data-type:fcs-dimension data-type:name="a"/>'
        "<gating:value>10</gating:value><gating:value>2</gating:value></gating:divider>"
        '<gating:Quadrant gating:id="low"><gating:position gating:divider_ref="D" gating:location="0"/></gating:Quadrant>'
        '<gating:Quadrant gating:id="mid"><gating:position gating:divider_ref="D" gating:location="5"/></gating:Quadrant>'
        '<gating:Quadrant gating:id="top"><gating:position gating:divider_ref="D" gating:location="99"/></gating:Quadrant>'
        "</gating:QuadrantGate>"
    )
    s = read_gatingml(_doc(body))
    assert isinstance(s.gates["mid"].gate, RangeGate)
    m = s.evaluate({"a": np.array([1.0, 2.0, 9.9, 10.0])})
    assert m["low"].tolist() == [True, False, False, False]
    assert m["mid"].tolist() == [False, True, True, False]
    assert m["top"].tolist() == [False, False, False, True]


def test_spectrum_matrix_unmixes_by_solving():
    sm = SpectrumMatrix("M", ("F1", "F2"), ("D1", "D2"), ((1.0, 0.5), (0.0, 1.0)))
    # true fluorochromes (10, 4) -> detectors (10, 5 + 4) = (10, 9)
    out = sm.apply([np.array([10.0]), np.array([9.0])])
    assert out["F1"][0] == pytest.approx(10.0) and out["F2"][0] == pytest.approx(4.0)
    s = GatingMLStrategy(matrices={"M": sm})
    s.gates["g"] = GateEntry("g", None, RangeGate(("F2[M]",), min=3.5), (Dimension("F2", "M"),))
    assert s.evaluate({"D1": np.array([10.0, 10.0]), "D2": np.array([9.0, 5.0])})["g"].tolist() == [
        True,
        False,
    ]


def test_fcs_compensation_uses_spillover():
    s = GatingMLStrategy()
    s.gates["g"] = GateEntry("g", None, RangeGate(("b[FCS]",), min=3.5), (Dimension("b", "FCS"),))
    data = {"a": np.array([10.0]), "b": np.array([9.0])}
    spill = (["a", "b"], np.array([[1.0, 0.5], [0.0, 1.0]]))
    assert s.evaluate(data, spillover=spill)["g"].tolist() == [True]  # b = 9 - 0.5*10 = 4
    s.gates["g"] = GateEntry("g", None, RangeGate(("b[FCS]",), max=5.0), (Dimension("b", "FCS"),))
    assert s.evaluate(data)["g"].tolist() == [False]  # no spillover: uncompensated 9


def test_fcs_compensation_reads_the_sample_keyword():
    from immunoprofile.sample import Sample, make_channel_table

    ch = make_channel_table(["a", "b"], ranges=[1024, 1024])
    smp = Sample(np.array([[10.0, 9.0]]), ch, {"$SPILLOVER": "2,a,b,1,0.5,0,1"}, name="x")
    s = GatingMLStrategy()
    s.gates["g"] = GateEntry(
        "g", None, RangeGate(("b[FCS]",), min=3.5, max=4.5), (Dimension("b", "FCS"),)
    )
    assert s.evaluate(smp)["g"].tolist() == [True]  # b = 9 - 0.5 * 10 = 4


def test_errors_name_the_place():
    with pytest.raises(GatingMLError, match="not well-formed"):
        read_gatingml("<gating:Gating-ML")
    with pytest.raises(GatingMLError, match="'missing'"):
        read_gatingml(
            _doc(
                '<gating:BooleanGate gating:id="b"><gating:not>'
                '<gating:gateReference gating:ref="missing"/></gating:not></gating:BooleanGate>'
            )
        )
    with pytest.raises(GatingMLError, match="unsupported transformation"):
        read_gatingml(
            _doc(
                '<transforms:transformation transforms:id="t"><transforms:fwhatever/></transforms:transformation>'
            )
        )
    with pytest.raises(GatingMLError, match="defined twice"):
        g = f'<gating:RectangleGate gating:id="r">{_dim("a", "1")}</gating:RectangleGate>'
        read_gatingml(_doc(g + g))
    s = read_gatingml(
        _doc(f'<gating:RectangleGate gating:id="r">{_dim("zz", "1")}</gating:RectangleGate>')
    )
    with pytest.raises(Exception, match="zz"):
        s.evaluate({"a": np.zeros(3)})


# --- export of a template's fitted gates ----------------------------------------------------


@pytest.fixture(scope="module")
def fitted_treg(tmp_path_factory):
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.io.write import write_fcs
    from immunoprofile.simulate.cohort import simulate_sample

    d = tmp_path_factory.mktemp("export")
    sample, _ = simulate_sample(events=10_000, seed=3)
    path = write_fcs(sample, d / "sim.fcs")
    return path, apply_template(read_fcs(path), "tregs")


def test_export_fitted_template_reimports_to_same_counts(fitted_treg, tmp_path):
    from immunoprofile.interop.gatingml import strategy_from_result
    from immunoprofile.io.fcs import read_fcs

    path, res = fitted_treg
    out = tmp_path / "tregs.xml"
    s = strategy_from_result(res)
    write_gatingml(s, out)
    assert "spillover" in s.matrices and s.transforms
    assert res.counts["Treg"] > 0
    again = read_gatingml(out).evaluate(read_fcs(path, scale=False))
    assert {p: int(m.sum()) for p, m in again.items()} == res.counts


def test_export_fitted_template_reads_in_flowkit(fitted_treg, tmp_path):
    fk = pytest.importorskip("flowkit")
    from immunoprofile.interop.gatingml import strategy_from_result

    path, res = fitted_treg
    out = tmp_path / "tregs.xml"
    write_gatingml(strategy_from_result(res), out)
    r = fk.parse_gating_xml(str(out)).gate_sample(fk.Sample(str(path)))
    theirs = {p: int(np.asarray(r.get_gate_membership(p)).sum()) for p in res.counts}
    assert theirs == res.counts


def test_cli_export_gates_and_import_back(fitted_treg, tmp_path):
    import json

    from click.testing import CliRunner

    from immunoprofile.cli import main

    path, res = fitted_treg
    xml = tmp_path / "g.xml"
    r = CliRunner().invoke(
        main, ["export-gates", "--template", "tregs", str(path), "--out", str(xml)]
    )
    assert r.exit_code == 0, r.output
    assert f"Treg\t{res.counts['Treg']}" in r.output
    tj = tmp_path / "g.json"
    r = CliRunner().invoke(main, ["import-gates", str(xml), "--out", str(tj)])
    assert r.exit_code == 0, r.output
    t = json.loads(tj.read_text())
    assert [p["name"] for p in t["populations"]] == list(res.counts)
    assert t["transforms"]["channels"]  # logicle per fluorescence channel gated
    # the spillover travels inside the template as its compensation matrix
    assert t["compensation"] == "spillover"
    assert sorted(t["matrices"]["spillover"]["detectors"]) == sorted(
        res.provenance["compensation"]["detectors"]
    )
    # and the imported template, applied by the engine, selects the same events
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.io.fcs import read_fcs

    assert apply_template(read_fcs(path), tj).counts == res.counts


def test_gatingml_to_template(suite, data1):
    from immunoprofile.gating.template import validate_template
    from immunoprofile.interop.gatingml import strategy_to_template

    t = strategy_to_template(read_gatingml(suite / "gml" / "gml_quadrant1_gate.xml"), "q")
    tmpl = validate_template(t)
    assert tmpl.names == ["FL2P-FL4P", "FL2N-FL4P", "FL2N-FL4N", "FL2P-FL4N"]
    assert t["compensation"] == "auto"  # compensation-ref="FCS": the file's, if any
    assert t["populations"][0]["gate"]["dims"] == ["FL2-H", "FL4-H"]
    # what a plain template cannot say becomes derived dimensions, gate by gate
    t = strategy_to_template(read_gatingml(suite / "gml" / "gml_all_gates.xml"), "all")
    tmpl = validate_template(t)
    rat = tmpl.population("RatRange1").gate
    (dim,) = rat.dims
    assert tmpl.dimensions[dim].ratio == ("FL2-H", "FL2-A")
    assert t["compensation"] == "none" and t["transforms"] is None
    assert set(t["matrices"]) == {"MySpill"}
    # FL1-H gated on several scales: one derived dimension per scale
    fl1 = {k for k, d in tmpl.dimensions.items() if d.channel == "FL1-H"}
    assert len({str(tmpl.dimensions[k].transform) for k in fl1}) >= 2
