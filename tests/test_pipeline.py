"""Tests of `immunoprofile run` (config loading, the whole pipeline on a tiny cohort)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main
from immunoprofile.exceptions import ConfigError
from immunoprofile.pipeline import expand_files, load_config


def test_load_config_yaml_json_relative_paths(tmp_path):
    (tmp_path / "a.fcs").write_bytes(b"")
    y = tmp_path / "run.yaml"
    y.write_text("files: ['*.fcs']\nsamplesheet: sheet.csv\nfollowup: [week24]\njobs: 2\n")
    cfg = load_config(y)
    assert cfg["files"] == [str(tmp_path / "*.fcs")]
    assert cfg["samplesheet"] == str(tmp_path / "sheet.csv")
    assert cfg["followup"] == ["week24"] and cfg["jobs"] == 2
    assert expand_files(cfg["files"]) == [str(tmp_path / "a.fcs")]
    j = tmp_path / "run.json"
    j.write_text(json.dumps({"files": "a.fcs", "out": "res"}))
    assert load_config(j)["out"] == str(tmp_path / "res")
    j.write_text(json.dumps({"fils": []}))
    with pytest.raises(ConfigError, match="unknown setting.*fils"):
        load_config(j)
    j.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid"):
        load_config(j)
    with pytest.raises(ConfigError, match="no file matches"):
        expand_files([str(tmp_path / "*.nothing")])


def test_cli_run_from_config_tiny_cohort(tmp_path):
    """gate + compare + report from a YAML config (clustering off to stay quick)."""
    from immunoprofile.simulate import simulate_cohort

    simulate_cohort(tmp_path / "c", patients=3, visits=("baseline", "week24"), events=3000)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        "files: ['c/*.fcs']\nsamplesheet: c/samplesheet.csv\ntemplate: immune_profile\n"
        "out: res\ncluster: false\n"
    )
    r = CliRunner().invoke(main, ["run", "--config", str(cfg), "--quiet"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "res"
    assert r.output.strip().endswith(str(out / "report.html"))
    run = json.loads((out / "run.json").read_text())
    assert run["command"].startswith("immunoprofile run --config")
    assert run["settings"]["files"] == 6
    st = pd.read_csv(out / "comparison" / "stats.csv")
    assert set(st["followup_visit"]) == {"week24"} and (st["n_pairs"] <= 3).all()
    assert "cells_per_ul" in set(st["measure"])  # the samplesheet gives lymphocytes_per_ul
    html = (out / "report.html").read_text()
    assert "2/8 = 0.2500" in html and "immune_profile" in html
    # per-file processing from gating/provenance.json, and parent "root" in every table
    assert "Per-file processing: compensation and transforms" in html
    assert html.count("$SPILLOVER of ") >= 6
    pop = pd.read_csv(out / "gating" / "populations.csv")
    assert set(pop.loc[pop["population"] == "lymphocytes", "parent"]) == {"root"}
    assert pop["parent"].notna().all()
    bad = CliRunner().invoke(main, ["run", str(tmp_path / "missing.fcs"), "--out", str(out)])
    assert bad.exit_code == 1 and "not found" in bad.output


def test_cli_run_goes_on_past_a_bad_file(tmp_path):
    """A non-FCS file among good ones: gated, compared and reported without it; the
    report names it as failed; exit status 1 with the count of failures."""
    from immunoprofile.simulate import simulate_cohort

    simulate_cohort(tmp_path / "c", patients=2, visits=("baseline", "week24"), events=2000)
    (tmp_path / "c" / "P03_baseline.fcs").write_text("not an FCS file\n")
    files = sorted(str(p) for p in (tmp_path / "c").glob("*.fcs"))
    out = tmp_path / "res"
    r = CliRunner().invoke(
        main,
        ["run", *files, "--pattern", r"(?P<patient>P\d+)_(?P<visit>\w+)\.fcs",
         "--template", "tregs", "--out", str(out), "--quiet", "--no-cluster"],
    )  # fmt: skip
    assert r.exit_code == 1, r.output
    assert "1 of 5 file(s) failed" in r.output
    err = pd.read_csv(out / "gating" / "errors.csv")
    assert err["error_type"].tolist() == ["NotFCSError"]
    html = (out / "report.html").read_text()
    assert "P03_baseline (failed: NotFCSError)" in html
    assert "P01_baseline (2,000 events)" in html


def test_run_from_config_puts_the_given_settings_over_the_file(tmp_path, monkeypatch):
    from immunoprofile import pipeline

    seen = {}
    monkeypatch.setattr(pipeline, "run_pipeline", lambda **kw: seen.update(kw) or "result")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("files: [a.fcs, b.fcs]\nseed: 5\njobs: 2\nbaseline: day0\n")
    out = pipeline.run_from_config(cfg, jobs=1, seed=None, baseline=None, command="run x")
    assert out == "result"
    assert seen == {"files": [str(tmp_path / "a.fcs"), str(tmp_path / "b.fcs")], "seed": 5,
                    "jobs": 1, "baseline": "day0", "command": "run x"}  # fmt: skip
    seen.clear()
    pipeline.run_from_config(None, files=["c.fcs"], cluster=False)
    assert seen == {"files": ["c.fcs"], "cluster": False}
