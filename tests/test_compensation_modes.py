"""Compensation modes auto | keyword | none | FILE: what each applies, the signs of a
compensated export, never compensating twice, and the record in provenance and qc."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main
from immunoprofile.compensation import (
    Spillover,
    choose_compensation,
    compensate,
    compensated_signs,
)
from immunoprofile.exceptions import CompensationError, CompensationWarning
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.run import gate
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table

SPILL = "2,FITC-A,PE-A,1,0.2,0.1,1"
# true FITC=1000, PE=500 -> measured FITC = 1000 + 0.1*500, PE = 0.2*1000 + 500
MEASURED = [50000.0, 20000.0, 1050.0, 700.0]
TRUE = [50000.0, 20000.0, 1000.0, 500.0]


def _sample(keywords=None, names=("FSC-A", "SSC-A", "FITC-A", "PE-A"), n=1) -> Sample:
    table = make_channel_table(list(names), [None, None, "CD3", "CD4"])
    ev = np.tile(np.asarray(MEASURED, dtype=np.float32), (n, 1))
    return Sample(ev, table, dict(keywords or {}), name="hand")


def _template(mode):
    return {
        "name": "comp",
        "compensation": mode,
        "transforms": None,
        "populations": [{"name": "T", "gate": {"type": "range", "dims": ["CD3"], "min": 0}}],
    }


def _values(res):
    return res.sample.events[0].tolist()


def test_auto_applies_the_keyword():
    res = apply_template(_sample({"$SPILLOVER": SPILL}), _template("auto"))
    np.testing.assert_allclose(_values(res), TRUE, rtol=1e-6)
    comp = res.provenance["compensation"]
    assert comp["mode"] == "auto" and comp["status"] == "applied"
    assert "$SPILLOVER" in comp["source"] and comp["detectors"] == ["FITC-A", "PE-A"]
    assert not [q for q in res.qc if q["flag"] == "compensation_assumed"]


def test_auto_without_keyword_assumes_compensated_with_qc_line():
    res = apply_template(_sample(), _template("auto"))
    assert _values(res) == MEASURED
    comp = res.provenance["compensation"]
    assert comp["status"] == "assumed" and comp["source"] is None
    assert "no spillover keyword" in comp["reason"]
    flags = [q for q in res.qc if q["flag"] == "compensation_assumed"]
    assert len(flags) == 1 and flags[0]["population"] is None


@pytest.mark.parametrize(
    "names, keywords, sign",
    [
        (("FSC-A", "SSC-A", "Comp-FITC-A", "Comp-PE-A"), {}, "Comp-"),
        (("FSC-A", "SSC-A", "FITC-A", "PE-A"), {"ALREADY_COMPENSATED": "TRUE"}, "ALREADY"),
    ],
)
def test_auto_never_compensates_a_compensated_export(names, keywords, sign):
    spill = SPILL.replace("FITC-A", names[2]).replace("PE-A", names[3])
    s = _sample({"$SPILLOVER": spill, **keywords}, names=names)
    assert any(sign in text for text in compensated_signs(s))
    res = apply_template(s, _template("auto"))
    assert _values(res) == MEASURED  # the keyword is there but not applied a second time
    comp = res.provenance["compensation"]
    assert comp["status"] == "already" and sign in comp["reason"]
    # keyword and an explicit matrix refuse instead of compensating twice
    with pytest.raises(CompensationError, match="compensate it twice"):
        apply_template(s, _template("keyword"))


def test_diva_export_with_spill_is_not_taken_as_compensated():
    s = _sample({"SPILL": SPILL, "CREATOR": "BD FACSDiva Software Version 8.0"})
    assert compensated_signs(s) == []
    np.testing.assert_allclose(_values(apply_template(s, _template("auto"))), TRUE, rtol=1e-6)


def test_keyword_mode_and_its_old_name():
    for mode in ("keyword", "file"):
        res = apply_template(_sample({"SPILL": SPILL}), _template(mode))
        np.testing.assert_allclose(_values(res), TRUE, rtol=1e-6)
        assert res.provenance["compensation"]["mode"] == "keyword"
        with pytest.raises(CompensationError, match=r"hand: no spillover keyword.*'auto'"):
            apply_template(_sample(), _template(mode))


def test_none_leaves_values_even_with_a_keyword():
    res = apply_template(_sample({"$SPILLOVER": SPILL}), _template("none"))
    assert _values(res) == MEASURED
    assert res.provenance["compensation"]["status"] == "off"


def test_matrix_file_mode(tmp_path):
    m = tmp_path / "m.csv"
    # a different matrix from the keyword: the file wins
    m.write_text("FITC-A,PE-A\n1,0.5\n0,1\n")
    s = _sample({"$SPILLOVER": SPILL})
    res = apply_template(s, _template(str(m)))
    # inverse of [[1, .5], [0, 1]]: FITC = 1050, PE = 700 - 0.5 * 1050
    np.testing.assert_allclose(_values(res)[2:], [1050.0, 700.0 - 525.0], rtol=1e-6)
    assert res.provenance["compensation"]["source"] == str(m)
    # relative to the template file
    tpl = tmp_path / "t.json"
    import json

    tpl.write_text(json.dumps(_template("m.csv")))
    res2 = apply_template(s, str(tpl))
    np.testing.assert_array_equal(res2.sample.events, res.sample.events)
    # the override of apply_template wins over the template's mode
    res3 = apply_template(s, _template("none"), compensation=str(m))
    np.testing.assert_array_equal(res3.sample.events, res.sample.events)
    comp_names = ("FSC-A", "SSC-A", "Comp-FITC-A", "Comp-PE-A")
    with pytest.raises(CompensationError, match="already compensated"):
        apply_template(_sample(names=comp_names), _template(str(m)))


def test_a_sample_compensated_before_is_not_compensated_again():
    s = _sample({"$SPILLOVER": SPILL})
    once = compensate(s)
    for mode in ("auto", "keyword"):
        res = apply_template(once, _template(mode))
        np.testing.assert_allclose(_values(res), TRUE, rtol=1e-6)
        assert [h["step"] for h in res.sample.history].count("compensate") == 1
        assert res.provenance["compensation"]["status"] == "already"
    choice = choose_compensation(once, Spillover.from_keyword(SPILL))
    assert choice.spillover is None and choice.status == "already"


def test_gate_warns_once_and_cli_reports_assumed_files(tmp_path):
    files = []
    for i, kw in enumerate([{}, {"$SPILLOVER": SPILL}, {}]):
        s = _sample(kw, n=200)
        s.events[:, 2] += np.arange(200, dtype=np.float32)
        files.append(str(write_fcs(s, tmp_path / f"f{i}.fcs")))
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        res = gate(files, _template("auto"))
    comp_w = [w for w in got if issubclass(w.category, CompensationWarning)]
    assert len(comp_w) == 1 and "2 file(s)" in str(comp_w[0].message)
    assert "f0.fcs" in str(comp_w[0].message) and "f1.fcs" not in str(comp_w[0].message)
    qc = res.qc()
    assert sorted(qc.loc[qc["flag"] == "compensation_assumed", "sample"]) == ["f0", "f2"]
    prov = res.provenance_table().set_index("sample")
    assert prov.loc["f0", "compensation"].startswith("none (no spillover keyword")
    assert "$SPILLOVER" in prov.loc["f1", "compensation"]

    import json

    tpl = tmp_path / "t.json"
    tpl.write_text(json.dumps(_template("auto")))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["gate", "-t", str(tpl), *files, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "2 file(s) have no spillover keyword" in r.output
    r = CliRunner().invoke(
        main, ["gate", "-t", str(tpl), *files, "-o", str(out), "-q", "--compensation", "none"]
    )
    assert r.exit_code == 0 and "spillover" not in r.output
    r = CliRunner().invoke(
        main, ["gate", "-t", str(tpl), *files, "-o", str(out), "-q", "--compensation", "keyword"]
    )
    assert r.exit_code == 1 and "2 of 3 file(s) failed" in r.output
    r = CliRunner().invoke(
        main, ["gate", "-t", str(tpl), *files, "-o", str(out), "--compensation", "nosuch.csv"]
    )
    assert r.exit_code != 0 and "neither auto, keyword, none nor" in r.output
