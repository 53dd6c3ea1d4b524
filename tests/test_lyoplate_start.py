"""The built-in B-cell and NK templates run on the real HIPC Lyoplate tubes from the command
line as typed (no --out, no edits), and the default output folder is never one that
another writer made."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main


@pytest.fixture
def lyoplate(realdata):
    d = realdata / "lyoplate"
    if not (d / "12828_1_Bcell_C01.fcs").is_file():
        pytest.skip(f"{d} lacks the Lyoplate files")
    return d


def _run(args, cwd, monkeypatch):
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, args)


def test_b_cells_starts_on_the_bcell_tube_as_typed(lyoplate, tmp_path, monkeypatch):
    f = str(lyoplate / "12828_1_Bcell_C01.fcs")
    r = _run(["gate", "--template", "b_cells", f], tmp_path, monkeypatch)
    assert r.exit_code == 0, r.output
    out = tmp_path / "immunoprofile-results"
    assert f"results written to {out}/ (no --out given)" in r.output
    pop = pd.read_csv(out / "populations.csv").set_index("population")
    assert list(pop.index) == [
        "lymphocytes", "live", "nonT", "B", "B_naive", "B_memory", "B_transitional",
        "plasmablasts",
    ]  # fmt: skip
    assert pop.loc["lymphocytes", "parent_count"] == 81_638
    assert pop.loc["live", "parent"] == "lymphocytes"  # singlets skipped, re-hung
    prov = json.loads((out / "provenance.json").read_text())["samples"]["12828_1_Bcell_C01"]
    assert prov["compensation"]["status"] == "already"
    assert "ALREADY_COMPENSATED=TRUE" in prov["compensation"]["reason"]
    assert prov["gating"]["singlets"]["status"] == "skipped"
    assert prov["gating"]["live"]["dims"] == ["Viability"]  # the tube has no CD14
    assert prov["gating"]["nonT"]["dims"] == ["CD3"]
    qc = pd.read_csv(out / "qc.csv")
    assert ((qc["population"] == "singlets") & (qc["flag"] == "step_skipped")).sum() == 1


def test_nk_cells_starts_on_the_dc_mono_nk_tube_as_typed(lyoplate, tmp_path, monkeypatch):
    f = str(lyoplate / "DC_MONO_NK_12828001_001.fcs")
    r = _run(["gate", "--template", "nk_cells", f], tmp_path, monkeypatch)
    assert r.exit_code == 0, r.output
    out = tmp_path / "immunoprofile-results"
    pop = pd.read_csv(out / "populations.csv").set_index("population")
    assert {"NK", "NK_CD56bright", "NK_CD56dim"} <= set(pop.index)
    assert (
        pop.loc["NK_CD56bright", "count"] + pop.loc["NK_CD56dim", "count"]
        == (pop.loc["NK", "count"])
    )
    prov = json.loads((out / "provenance.json").read_text())["samples"]
    gating = prov["DC_MONO_NK_12828001_001"]["gating"]
    assert gating["nonT"] == {
        "status": "alternative", "option": 1, "dims": ["Lineage"], "reason": "the file lacks CD3",
    }  # fmt: skip
    assert gating["NK"]["dims"] == ["CD56"] and gating["live"]["dims"] == ["Viability", "CD14"]


def test_missing_markers_of_a_tube_listed_at_once(lyoplate, tmp_path, monkeypatch):
    f = str(lyoplate / "DC_MONO_NK_12828001_001.fcs")
    r = _run(["gate", "--template", "b_cells", f, "-q"], tmp_path, monkeypatch)
    assert r.exit_code == 1
    err = pd.read_csv(tmp_path / "immunoprofile-results" / "errors.csv")
    msg = err.loc[0, "message"]
    assert "needs markers this file lacks (CD19, CD20, CD24, CD27, CD38, IgD)" in msg
    assert "\n  B: CD19\n" in msg and "\n  B_naive: IgD, CD27\n" in msg
    assert "Markers in this file: Live (Alexa Fluor 488-A), CD56 (PE YG-A)" in msg


def test_default_out_never_takes_another_writers_folder(tmp_path, monkeypatch):
    from immunoprofile._files import default_output_folder, record_outputs

    base = tmp_path / "immunoprofile-results"
    assert default_output_folder(base, "immunoprofile gate") == base  # absent
    base.mkdir()
    assert default_output_folder(base, "immunoprofile gate") == base  # empty
    (base / "notes.txt").write_text("mine")
    assert default_output_folder(base, "immunoprofile gate") == tmp_path / (
        "immunoprofile-results-2"
    )
    other = tmp_path / "immunoprofile-results-2"
    other.mkdir()
    record_outputs(other, ["clusters.csv"], "immunoprofile cluster")
    assert default_output_folder(base, "immunoprofile gate") == tmp_path / (
        "immunoprofile-results-3"
    )
    ours = tmp_path / "immunoprofile-results-3"
    ours.mkdir()
    record_outputs(ours, ["populations.csv"], "immunoprofile gate")
    assert default_output_folder(base, "immunoprofile gate") == ours  # our earlier run
    assert (base / "notes.txt").read_text() == "mine"


def test_template_json_name_resolves_to_the_builtin(tmp_path, monkeypatch):
    from immunoprofile.gating.template import load_template

    monkeypatch.chdir(tmp_path)
    assert load_template("tregs.json").name == "tregs"
    own = json.loads(json.dumps(load_template("tregs").to_dict()))
    own["name"] = "my_tregs"
    (tmp_path / "tregs.json").write_text(json.dumps(own))
    assert load_template("tregs.json").name == "my_tregs"  # a file here wins
