"""One definition of a results folder (immunoprofile.folder): the writers use its names,
`ResultsFolder` finds each stage and output by them, and the report reads what was
written."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from immunoprofile.clustering.api import CLUSTER_OUTPUTS, cluster
from immunoprofile.comparison import compare
from immunoprofile.folder import CLUSTERING, GATING, MANIFEST, ResultsFolder, outputs
from immunoprofile.gating.run import GATE_OUTPUTS, gate
from immunoprofile.report import report_from_dir


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """gating/, clustering/ and comparison/ as `immunoprofile run` lays them out."""
    from immunoprofile.simulate import simulate_cohort

    d = tmp_path_factory.mktemp("folder")
    simulate_cohort(d / "cohort", patients=3, visits=("baseline", "week24"), events=3000,
                    seed=21)  # fmt: skip
    files = sorted(str(p) for p in (d / "cohort").glob("*.fcs"))
    sheet = str(d / "cohort" / "samplesheet.csv")
    res = gate(files, "immune_profile", samplesheet=sheet)
    res.write(d / "out" / "gating")
    cl = cluster(files, template="immune_profile", parent="live", grid=(4, 4),
                 n_metaclusters=4, n_resamples=5, samplesheet=sheet)  # fmt: skip
    cl.write(d / "out" / "clustering", gating=res.table())
    compare(res.table()).write(d / "out" / "comparison")
    return d / "out"


def test_writers_use_the_folder_names(written):
    assert GATE_OUTPUTS == outputs("gating") and CLUSTER_OUTPUTS == outputs("clustering")
    for stage, names in (("gating", GATING), ("clustering", CLUSTERING)):
        manifest = json.loads((written / stage / MANIFEST).read_text())
        plain = {n for n in names.values() if "*" not in n}
        # every file a writer recorded is one of the names the folder defines
        assert (
            set(manifest["files"]) - {"populations_baseline.csv", "populations_week24.csv"} <= plain
        )


def test_results_folder_finds_every_stage_and_output(written):
    f = ResultsFolder.read(written)
    assert f.stages == {s: written / s for s in ("gating", "clustering", "comparison")}
    assert f.path("gating", "qc") == written / "gating" / "qc.csv"
    assert f.path("clustering", "agreement") == written / "clustering" / "agreement.csv"
    assert f.path("comparison", "stats") == written / "comparison" / "stats.csv"
    assert f.path("gating", "plots") is None  # not drawn
    # a stage's own folder is found by its manifest
    g = ResultsFolder.read(written / "gating")
    assert g.stages == {"gating": written / "gating"}
    c = ResultsFolder.read(written / "clustering")
    assert list(c.stages) == ["clustering"]


def test_report_reads_what_was_written(written, tmp_path):
    # the saved comparison is read, not recomputed: a p-value changed on disk shows up
    stats = pd.read_csv(written / "comparison" / "stats.csv")
    row = stats.index[stats["population"] == "Treg"][0]
    stats.loc[row, "p_value"] = 0.0123456
    stats.to_csv(written / "comparison" / "stats.csv", index=False)
    html = report_from_dir(written, out=tmp_path / "r.html").read_text(encoding="utf-8")
    assert "0.0123" in html
    # a file beside the outputs that no writer wrote is not taken for one: without qc.csv
    # the report has no QC table, although qc_backup.csv holds the same rows
    import re

    def page(name: str) -> str:
        text = report_from_dir(written, out=tmp_path / name).read_text(encoding="utf-8")
        return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "", text)

    with_qc = page("r1.html")
    (written / "gating" / "qc.csv").rename(written / "gating" / "qc_backup.csv")
    try:
        without = page("r2.html")
    finally:
        (written / "gating" / "qc_backup.csv").rename(written / "gating" / "qc.csv")
    assert with_qc != without and "too_few_events" in with_qc


def _page(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_report_of_a_gate_or_cluster_folder_computes_no_comparison(
    written, tmp_path, caplog, monkeypatch
):
    import logging

    from click.testing import CliRunner

    from immunoprofile import report
    from immunoprofile.cli import main

    def no_compare(*a, **k):
        raise AssertionError("the report computed a comparison")

    monkeypatch.setattr(report, "compare", no_compare)
    # a gate folder: its tables as written; no key results, plots, statistics or changes
    with caplog.at_level(logging.WARNING, logger="immunoprofile"):
        html = _page(report_from_dir(written / "gating", out=tmp_path / "g.html"))
    assert caplog.text == ""
    table = written / "gating" / "populations.csv"
    assert "No comparison was written in this folder (the folder of `immunoprofile gate`)" in html
    assert f"`immunoprofile compare {table} --out DIR` writes a comparison" in html
    assert "<title>Immune profiling: population tables</title>" in html
    for section in ("plots", "stats", "changes"):
        assert f'id="{section}"' not in html and f'href="#{section}"' not in html
    assert "Every patient has every visit" not in html  # only a comparison checks that
    # what was written is there: the per-visit tables, the QC flags, the files
    assert "<h3>baseline</h3>" in html and "<h3>week24</h3>" in html
    assert "too_few_events" in html and 'id="gating"' in html
    # a cluster folder: its own table and its agreement with gating, no comparison
    html = _page(report_from_dir(written / "clustering", out=tmp_path / "c.html"))
    assert "(the folder of `immunoprofile cluster`)" in html and 'id="stats"' not in html
    assert "Agreement between template gating and unsupervised clustering" in html
    assert "<h3>baseline</h3>" in html
    # the command warns of nothing: it says where the report is
    r = CliRunner().invoke(
        main, ["-q", "report", str(written / "gating"), "-o", str(tmp_path / "cli.html")]
    )
    assert r.exit_code == 0 and r.output.strip() == f"report: {tmp_path / 'cli.html'}"


def test_report_of_a_run_folder_and_a_comparison_asked_for(written, tmp_path, caplog):
    import logging

    # the run folder's own comparison is read as written: statistics, no note
    run_html = _page(report_from_dir(written, out=tmp_path / "r.html"))
    assert "<title>Immune profiling: change from baseline</title>" in run_html
    assert 'id="stats"' in run_html and "Comparison:</b>" not in run_html
    assert "No comparison" not in run_html
    # a gate folder with the visits asked for: computed, and the report says so
    with caplog.at_level(logging.WARNING, logger="immunoprofile"):
        html = _page(report_from_dir(written / "gating", out=tmp_path / "g.html",
                                     baseline="baseline"))  # fmt: skip
    table = written / "gating" / "populations.csv"
    said = (f"No comparison was written in this folder: the statistics of this report were "
            f"computed for it from {table} (baseline baseline, follow-up week24)")  # fmt: skip
    assert said in html and said in caplog.text
    assert html.index(said) < html.index('id="cohort"') and 'id="stats"' in html
    # another follow-up than the one written: the written one is not used, and it says so
    again = report_from_dir(written, out=tmp_path / "a.html", followup="week24")
    assert f"Not the comparison written in {written / 'comparison'}" in _page(again)
