"""Compensation: keyword and file parsing, validation errors, a hand-computed example,
and FlowUtils' reference data (round trip to 1e-10, missing-row matrix, 100715 SPILL)."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.compensation import (
    Spillover,
    compensate,
    compensate_array,
    decompensate,
    decompensate_array,
)
from immunoprofile.exceptions import CompensationError
from immunoprofile.sample import Sample, make_channel_table
from immunoprofile.transforms import transform

NAMES = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "Time"]
SPILL = "2,FITC-A,PE-A,1,0.2,0.1,1"


def _sample(events, keywords=None) -> Sample:
    table = make_channel_table(NAMES, [None, None, "CD3", "CD4", None])
    return Sample(np.asarray(events, dtype=np.float32), table, keywords or {}, name="hand")


def test_hand_computed_example():
    # true signals FITC=1000, PE=500; FITC spills 20 % into PE, PE 10 % into FITC:
    # measured FITC = 1000 + 0.1*500 = 1050, PE = 0.2*1000 + 500 = 700
    s = _sample([[50000, 20000, 1050, 700, 1.5]], {"$SPILLOVER": SPILL})
    c = compensate(s)
    np.testing.assert_allclose(c.events[0], [50000, 20000, 1000, 500, 1.5], rtol=1e-6)
    step = c.history[-1]
    assert step["step"] == "compensate"
    assert step["detectors"] == ["FITC-A", "PE-A"]
    assert step["matrix"] == [[1.0, 0.2], [0.1, 1.0]]
    assert "$SPILLOVER" in step["source"]
    back = decompensate(c)
    np.testing.assert_allclose(back.events, s.events, rtol=1e-6)
    assert s.history == []


def test_keyword_formats():
    a = Spillover.from_keyword(SPILL)
    b = Spillover.from_keyword(" 2 , FITC-A ,PE-A,\n1, 0.2, 0.1, 1 ,")
    assert a.detectors == b.detectors == ("FITC-A", "PE-A")
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.matrix.dtype == np.float64
    assert Spillover.from_keyword(a.to_keyword()).detectors == a.detectors
    np.testing.assert_array_equal(Spillover.from_keyword(a.to_keyword()).matrix, a.matrix)
    # $COMP without names: the first n fluorescence channels
    comp = Spillover.from_keyword("2,1,0.2,0.1,1", keyword="$COMP")
    s = _sample([[0, 0, 1050, 700, 0]], {"$COMP": "2,1,0.2,0.1,1"})
    assert comp.indices(s) == [2, 3]
    np.testing.assert_allclose(compensate(s).events[0, 2:4], [1000, 500], rtol=1e-6)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("x,FITC-A", "number of detectors"),
        ("2,FITC-A,PE-A,1,0.2,0.1", "expected 2 names and 4 values"),
        ("2,FITC-A,PE-A,1,0.2,zero,1", "non-numeric"),
        ("2,FITC-A,FITC-A,1,0.2,0.1,1", "duplicate"),
    ],
)
def test_keyword_errors(text, match):
    with pytest.raises(CompensationError, match=match):
        Spillover.from_keyword(text, path="a.fcs")


def test_validation_errors():
    s = _sample([[0, 0, 1, 1, 0]])
    with pytest.raises(CompensationError, match="no spillover keyword"):
        compensate(s)
    assert compensate(s, "auto") is s
    assert compensate(s, None) is s
    missing = Spillover(("FITC-A", "APC-A"), np.eye(2), source="m.csv")
    with pytest.raises(CompensationError, match=r"\['APC-A'\].*m.csv.*channels"):
        missing.validate(s)
    with pytest.raises(CompensationError, match="marker|\\$PnN"):
        Spillover(("CD3", "CD4"), np.eye(2)).validate(s)  # markers are not detectors
    singular = Spillover(("FITC-A", "PE-A"), [[1, 1], [1, 1]], source="sing")
    with pytest.raises(CompensationError, match="singular"):
        singular.validate(s)
    with pytest.raises(CompensationError, match="non-fluorescence"):
        Spillover(("FSC-A", "PE-A"), np.eye(2)).validate(s)
    with pytest.raises(CompensationError, match="square"):
        Spillover(("FITC-A", "PE-A"), np.ones((2, 3)))
    assert issubclass(CompensationError, ValueError)


def test_history_guards():
    s = _sample([[0, 0, 1050, 700, 0]], {"$SPILLOVER": SPILL})
    c = compensate(s)
    with pytest.raises(CompensationError, match="already compensated"):
        compensate(c)
    assert compensate(decompensate(c)).history[-1]["step"] == "compensate"
    t = transform(s)
    with pytest.raises(CompensationError, match="transformed"):
        compensate(t)


def test_names_folded_and_reordered():
    # detectors in another order than the channels, FlowJo-style "Comp-" names
    sp = Spillover(("Comp-PE-A", "fitc-a"), [[1, 0.1], [0.2, 1]])
    s = _sample([[1, 2, 1050, 700, 3]])
    c = compensate(s, sp)
    np.testing.assert_allclose(c.events[0], [1, 2, 1000, 500, 3], rtol=1e-6)


def test_nan_outside_detectors_stays_put():
    s = _sample([[np.nan, np.inf, 1050, 700, 1]], {"$SPILLOVER": SPILL})
    c = compensate(s)
    assert np.isnan(c.events[0, 0]) and np.isinf(c.events[0, 1])
    np.testing.assert_allclose(c.events[0, 2:], [1000, 500, 1], rtol=1e-6)


def test_file_formats(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("FITC-A,PE-A\n1,0.2\n0.1,1\n")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("\tFITC-A\tPE-A\nFITC-A\t1\t0.2\nPE-A\t0.1\t1\n")
    hashed = tmp_path / "h.csv"
    hashed.write_text("# FITC-A,PE-A\n1.0,0.2\n0.1,1.0\n")
    for p in (csv, tsv, hashed):
        sp = Spillover.from_file(p)
        assert sp.detectors == ("FITC-A", "PE-A")
        np.testing.assert_array_equal(sp.matrix, [[1, 0.2], [0.1, 1]])
    s = _sample([[0, 0, 1050, 700, 0]])
    np.testing.assert_allclose(compensate(s, csv).events[0, 2:4], [1000, 500], rtol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("FITC-A,PE-A\n1,0.2\n0.1\n")
    with pytest.raises(CompensationError, match="bad.csv: line 3 has 1 values"):
        Spillover.from_file(bad)
    with pytest.raises(CompensationError, match="cannot read"):
        Spillover.from_file(tmp_path / "absent.csv")


def test_flowutils_matrix_round_trip(realdata):
    d = realdata / "FlowUtils/tests/test_data"
    sp = Spillover.from_file(d / "test_comp_matrix.csv")
    assert sp.matrix.shape == (14, 14)
    assert sp.detectors[0] == "Ax488-A" and sp.detectors[-1] == "Qdot705-A"
    events = np.load(d / "test_comp_event_data.npy")
    # columns as in test_comp_example.fcs: FSC-A, FSC-W, SSC-A, the 14 detectors, Time
    assert events.shape == (10703, 18)
    idx = list(range(3, 17))
    comp = compensate_array(events, sp, idx, dtype=np.float64)
    ref = events.copy()
    ref[:, idx] = events[:, idx] @ np.linalg.inv(sp.matrix)
    np.testing.assert_allclose(comp, ref, rtol=1e-12, atol=1e-9)
    back = decompensate_array(comp, sp, idx, dtype=np.float64)
    np.testing.assert_array_almost_equal(back, events, decimal=10)
    fc = pytest.importorskip("flowutils.compensate")
    np.testing.assert_allclose(comp, fc.compensate(events, sp.matrix, idx), rtol=1e-10, atol=1e-8)


def test_flowutils_missing_row(realdata):
    p = realdata / "FlowUtils/tests/test_data/test_comp_matrix_missing_row.csv"
    with pytest.raises(CompensationError, match="14 detector names.*13 matrix rows"):
        Spillover.from_file(p)
    with pytest.raises(ValueError):
        Spillover.from_file(p)


def test_100715_spill(realdata):
    path = realdata / "FlowIO/data/fcs_files/100715.fcs"
    try:
        import immunoprofile

        sample = immunoprofile.read_fcs(path)
    except (AttributeError, ImportError):
        flowio = pytest.importorskip("flowio")
        fd = flowio.FlowData(str(path))
        names = list(fd.pnn_labels)
        ev = np.reshape(np.asarray(fd.events, dtype=np.float32), (-1, fd.channel_count))
        sample = Sample(ev, make_channel_table(names), {"SPILL": fd.text["spill"]}, path=path)
    sp = Spillover.from_sample(sample)
    assert sp.matrix.shape == (13, 13)
    assert "SPILL" in sp.source and "100715" in sp.source
    np.testing.assert_array_equal(np.diag(sp.matrix), np.ones(13))
    c = compensate(sample)
    idx = sp.indices(sample)
    ref = sample.events.astype(np.float64)[:, idx] @ np.linalg.inv(sp.matrix)
    np.testing.assert_allclose(c.events[:, idx], ref, rtol=1e-4, atol=0.05)


def test_den_comp_header(realdata):
    sp = Spillover.from_file(realdata / "FlowKit/data/8_color_data_set/den_comp.csv")
    assert sp.detectors[0] == "TNFa FITC FLR-A" and sp.matrix.shape == (8, 8)


def _truth(realdata, name):
    path = realdata / f"FlowKit/data/gate_ref/truth/Results_{name}.txt"
    return np.loadtxt(path, dtype=int).astype(bool)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gatingml_scale_par1_end_to_end(realdata, dtype):
    """Gating-ML compliance ScaleRect1 -> ScalePar1 built by hand (as FlowKit's
    test_absolute_percent does): spectrum matrix MySpill over FL1-H..FL3-H, logicle on the
    compensated PE/PerCP, hyperlog on FITC. Event-by-event equal to the ISAC results."""
    from immunoprofile.transforms import Hyperlog, Logicle

    # data1.fcs after gain/log scaling (FlowIO's truth array); columns FSC-H, SSC-H,
    # FL1-H, FL2-H, FL3-H, FL2-A, FL4-H, Time
    ev = np.load(realdata / "FlowIO/data/truth/data1_preprocessed.npy")
    spill = [[1, 0.02, 0.06], [0.11, 1, 0.07], [0.09, 0.01, 1]]
    sp = Spillover(("FL1-H", "FL2-H", "FL3-H"), spill, source="MySpill")
    comp = compensate_array(ev, sp, [2, 3, 4], dtype=dtype)
    lg, hl = Logicle(10000, 0.5, 4.5, 0), Hyperlog(10000, 1, 4.5, 0)
    pe, percp = lg.apply(comp[:, 3], dtype=dtype), lg.apply(comp[:, 4], dtype=dtype)
    fitc = hl.apply(comp[:, 2], dtype=dtype)
    rect = (pe >= 0.31) & (pe < 0.69) & (percp >= 0.27) & (percp < 0.73)
    par = rect & (fitc >= 0.12) & (fitc < 0.43)
    assert rect.sum() == 809 and par.sum() == 558
    np.testing.assert_array_equal(rect, _truth(realdata, "ScaleRect1"))
    np.testing.assert_array_equal(par, _truth(realdata, "ScalePar1"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gatingml_scale_ranges(realdata, dtype):
    """ScaleRange1-6: one transform each on uncompensated FL1-H, range gate [min, max)."""
    from immunoprofile.transforms import Arcsinh, Hyperlog, Linear, Log, Logicle

    fl1 = np.load(realdata / "FlowIO/data/truth/data1_preprocessed.npy")[:, 2]
    cases = {
        "ScaleRange1": (Arcsinh(10000, 4, 1), 0.37, 0.63),
        "ScaleRange2": (Hyperlog(10000, 1, 4.5, 0), 0.37, 0.63),
        "ScaleRange3": (Linear(10000, 500), 0.049, 0.055),
        "ScaleRange4": (Logicle(10000, 0.5, 4.5, 0), 0.37, 0.63),
        "ScaleRange5": (Logicle(10000, 1, 4, 0.5), 0.37, 0.63),
        "ScaleRange6": (Log(10000, 5), 0.37, 0.63),
    }
    for name, (tr, lo, hi) in cases.items():
        y = tr.apply(fl1, dtype=dtype)
        got = (y >= lo) & (y < hi)
        np.testing.assert_array_equal(got, _truth(realdata, name), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gatingml_compensated_scale_ranges(realdata, dtype):
    """ScaleRange1c-8c: MySpill compensation, then one transform on FITC or PE."""
    from immunoprofile.transforms import Arcsinh, Hyperlog, Linear, Logicle

    ev = np.load(realdata / "FlowIO/data/truth/data1_preprocessed.npy")
    spill = [[1, 0.02, 0.06], [0.11, 1, 0.07], [0.09, 0.01, 1]]
    sp = Spillover(("FL1-H", "FL2-H", "FL3-H"), spill, source="MySpill")
    comp = compensate_array(ev, sp, [2, 3, 4], dtype=dtype)
    fitc, pe = comp[:, 2], comp[:, 3]
    cases = {
        "ScaleRange1c": (Arcsinh(10000, 4, 1), fitc, 0.37, 0.63),
        "ScaleRange2c": (Hyperlog(10000, 1, 4.5, 0), fitc, 0.37, 0.63),
        "ScaleRange3c": (Linear(10000, 500), fitc, 0.049, 0.055),
        "ScaleRange4c": (Logicle(10000, 0.5, 4.5, 0), fitc, 0.37, 0.63),
        "ScaleRange5c": (Logicle(10000, 1, 4, 0.5), fitc, 0.37, 0.63),
        "ScaleRange6c": (Arcsinh(10000, 4, 1), pe, 0.09, 0.36),
        "ScaleRange7c": (Hyperlog(10000, 1, 4.5, 0), pe, 0.09, 0.36),
        "ScaleRange8c": (Logicle(10000, 1, 4, 0.5), pe, 0.09, 0.36),
    }
    for name, (tr, x, lo, hi) in cases.items():
        y = tr.apply(x, dtype=dtype)
        np.testing.assert_array_equal((y >= lo) & (y < hi), _truth(realdata, name), err_msg=name)


def test_keyword_parser_never_fails_otherwise():
    """Any text gives a Spillover or a CompensationError, never another exception."""
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    fields = st.one_of(
        st.integers(-3, 5).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["FITC-A", "PE-A", "", " ", "x", "\n", "1e400", "nan"]),
    )

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.lists(fields, max_size=12), st.booleans())
    def check(parts, trailing):
        text = ",".join(parts) + ("," if trailing else "")
        try:
            sp = Spillover.from_keyword(text)
        except CompensationError:
            return
        assert sp.matrix.shape == (len(sp.detectors), len(sp.detectors))
        assert np.all(np.isfinite(sp.matrix))

    check()
