"""Several tubes per patient and visit: the simulator writes tubes, `gate` maps tubes to
templates, one tidy table keeps a population per tube, and compare and report run on it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main
from immunoprofile.compensation import Spillover
from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.run import ANY_TUBE, gate, parse_template_args
from immunoprofile.io.fcs import read_fcs
from immunoprofile.simulate.cohort import simulate_cohort

TUBES = {
    "tcell": ["CD3", "CD4", "CD8", "CD25", "CD127", "FOXP3", "CD45RA", "Viability", "CD14"],
    "bcell": ["CD3", "CD19", "CD20", "IgD", "CD27", "CD38", "CD24", "Viability"],
}
MAPPING = {"tcell": "tregs", "bcell": "b_cells"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("tubes")
    info = simulate_cohort(out, patients=3, events=6000, seed=11, tubes=TUBES)
    return info


def test_simulator_writes_one_file_per_tube(cohort):
    sheet = pd.read_csv(cohort.samplesheet)
    assert list(sheet.columns) == ["file", "patient", "visit", "tube", "lymphocytes_per_ul"]
    assert len(sheet) == 3 * 2 * 2
    assert sorted(sheet["tube"].unique()) == ["bcell", "tcell"]
    # one blood sample per visit: both tubes share its lymphocyte count
    assert (sheet.groupby(["patient", "visit"])["lymphocytes_per_ul"].nunique() == 1).all()
    b = read_fcs(cohort.out_dir / "P01_baseline_bcell.fcs")
    assert b.keywords["TUBE NAME"] == "bcell"
    markers = [m for m in b.markers if m]
    assert len(markers) == len(TUBES["bcell"]) and "CD4" not in markers
    sp = Spillover.from_sample(b)
    fl = [n for n, k in zip(b.channel_names, b.channels["kind"]) if k == "fluorescence"]
    assert list(sp.detectors) == fl
    t = read_fcs(cohort.out_dir / "P01_baseline_tcell.fcs")
    assert t.n_events == b.n_events == 6000
    # separate aliquots: different events, not one file's columns twice
    assert not np.array_equal(t.events[:, 0], b.events[:, 0])


def test_simulator_tube_takes_out_the_unstained_dyes(cohort):
    """In the B tube nothing is stained with CD4's dye, so compensation with the tube's own
    (recorded) matrix leaves T helper cells at the unstained level in B-tube detectors that
    the full panel's CD4 dye would spill into: the CD19 detector median of CD4 T cells
    equals that of CD8 T cells (both CD19-negative, neither carries a dye there)."""
    from immunoprofile.compensation import compensate
    from immunoprofile.simulate.cohort import read_truth

    path = cohort.out_dir / "P02_week24_bcell.fcs"
    s = compensate(read_fcs(path))
    labels = np.asarray(read_truth(path))
    col = s.channel_names.index(
        next(n for n, m in zip(s.channel_names, s.markers) if m and m.startswith("CD19"))
    )
    cd4 = np.isin(labels, [x for x in set(labels) if "CD4" in x or "Treg" in x or "Th" in x])
    cd8 = np.isin(labels, [x for x in set(labels) if "CD8" in x])
    assert cd4.sum() > 100 and cd8.sum() > 50
    a, c = np.median(s.events[cd4, col]), np.median(s.events[cd8, col])
    assert abs(a - c) < 0.1 * max(abs(a), abs(c), 100.0)


def test_parse_template_args():
    assert parse_template_args(["tregs"]) == "tregs"
    assert parse_template_args(["tcell=tregs", "bcell=b_cells", "nk_cells"]) == {
        "tcell": "tregs", "bcell": "b_cells", ANY_TUBE: "nk_cells",
    }  # fmt: skip
    with pytest.raises(ImmunoprofileError, match="several templates without a tube"):
        parse_template_args(["tregs", "b_cells"])
    with pytest.raises(ImmunoprofileError, match="two templates"):
        parse_template_args(["t=tregs", "t=b_cells"])
    with pytest.raises(ImmunoprofileError, match="TUBE=TEMPLATE"):
        parse_template_args(["=tregs"])


def test_two_tube_cohort_through_gate_compare_report(cohort, tmp_path):
    files = [str(p) for p in cohort.fcs]
    out = tmp_path / "res"
    r = CliRunner().invoke(
        main,
        ["gate", "-t", "tcell=tregs", "-t", "bcell=b_cells", *files,
         "--samplesheet", str(cohort.samplesheet), "-o", str(out), "-q"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    pop = pd.read_csv(out / "populations.csv")
    assert list(pop.columns[:5]) == ["sample", "patient", "visit", "tube", "population"]
    # lymphocytes measured in both tubes: two rows per patient and visit, never merged
    lym = pop[pop["population"] == "lymphocytes"]
    assert len(lym) == 12 and sorted(lym["tube"].value_counts()) == [6, 6]
    assert set(pop.loc[pop["tube"] == "bcell", "population"]) >= {"B", "B_naive"}
    assert "Treg" not in set(pop.loc[pop["tube"] == "bcell", "population"])
    # each row is what the tube's template gives on that file alone
    for f, tube in [("P01_baseline_bcell", "bcell"), ("P03_week24_tcell", "tcell")]:
        alone = apply_template(read_fcs(cohort.out_dir / f"{f}.fcs"), MAPPING[tube]).counts
        got = pop[pop["sample"] == f].set_index("population")["count"].to_dict()
        assert got == alone
    # the B tube has no CD14: live used viability alone, recorded per file
    import json

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["template"] == "tregs, b_cells" or prov["template"] == "b_cells, tregs"
    b = prov["samples"]["P01_baseline_bcell"]
    assert b["tube"] == "bcell" and b["template"] == "b_cells"
    assert b["gating"]["live"]["dims"] == ["Viability"]
    assert prov["samples"]["P01_baseline_tcell"]["gating"]["live"]["dims"] == [
        "Viability", "CD14",
    ]  # fmt: skip
    # per-visit tables: one row per patient, a column per tube for shared populations
    wide = pd.read_csv(out / "populations_baseline.csv", index_col=0)
    assert list(wide.index) == ["P01", "P02", "P03"]
    # lab tables: value columns name unit and parent, the events beside each
    assert {
        "lymphocytes [tcell] (% of all events)", "lymphocytes [bcell] (% of all events)",
        "B_naive (% of B)", "Treg (% of CD4)", "Treg (events)",
        "singlets [tcell] (% of lymphocytes)",  # a tube's column names its parent too
    } <= set(wide.columns)  # fmt: skip
    want = pop[(pop["sample"] == "P02_baseline_tcell") & (pop["population"] == "lymphocytes")]
    assert wide.loc["P02", "lymphocytes [tcell] (% of all events)"] == pytest.approx(
        want["percent_of_parent"].item(), abs=0.005
    )  # rounded to 2 decimals

    cmp_dir = tmp_path / "cmp"
    r = CliRunner().invoke(
        main,
        ["compare", str(out / "populations.csv"), "--baseline", "baseline",
         "--followup", "week24", "--out", str(cmp_dir)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    changes = pd.read_csv(cmp_dir / "changes.csv")
    ch = changes[
        (changes["population"] == "lymphocytes [bcell]")
        & (changes["measure"] == "percent_of_parent")
        & (changes["patient"] == "P03")
    ]
    b0 = pop[(pop["sample"] == "P03_baseline_bcell") & (pop["population"] == "lymphocytes")]
    b1 = pop[(pop["sample"] == "P03_week24_bcell") & (pop["population"] == "lymphocytes")]
    diff = b1["percent_of_parent"].item() - b0["percent_of_parent"].item()
    assert ch["difference"].item() == pytest.approx(diff)
    stats = pd.read_csv(cmp_dir / "stats.csv")
    assert {"lymphocytes [tcell]", "lymphocytes [bcell]", "B", "Treg"} <= set(stats["population"])
    problems = pd.read_csv(cmp_dir / "problems.csv")
    assert not problems["message"].astype(str).str.contains("mean is used").any()

    r = CliRunner().invoke(main, ["report", str(out), "--baseline", "baseline",
                                  "--followup", "week24"])  # fmt: skip
    assert r.exit_code == 0, r.output
    html = (out / "report.html").read_text()
    assert "lymphocytes [bcell]" in html and "B_naive" in html


def test_samplesheet_template_column_and_tube_without_template(cohort, tmp_path):
    sheet = pd.read_csv(cohort.samplesheet)
    sheet["file"] = [str(cohort.out_dir / f) for f in sheet["file"]]
    sheet["template"] = sheet["tube"].map(MAPPING)
    sheet.loc[sheet["patient"] == "P03", "template"] = ""
    path = tmp_path / "sheet.csv"
    sheet.to_csv(path, index=False)
    files = list(sheet["file"])
    # P03's files have no template column value and no mapping entry for their tube
    res = gate(files, {"tcell": "tregs"}, samplesheet=path)
    err = res.errors
    assert sorted(err["sample"]) == ["P03_baseline_bcell", "P03_week24_bcell"]
    assert err["error_type"].eq("TemplateError").all()
    assert "no template for tube 'bcell'" in err["message"].iloc[0]
    table = res.table()
    assert set(table["sample"]) == {Path_stem(f) for f in files} - set(err["sample"])
    by_col = table[table["sample"] == "P01_week24_bcell"].set_index("population")["count"]
    alone = apply_template(read_fcs(cohort.out_dir / "P01_week24_bcell.fcs"), "b_cells").counts
    assert by_col.to_dict() == alone


def Path_stem(f: str) -> str:
    from pathlib import Path

    return Path(f).stem


def test_tube_from_the_keyword_and_from_a_pattern(cohort):
    files = [str(p) for p in cohort.fcs]
    # no samplesheet: patient, visit and tube from the PATIENT_ID, VISIT, TUBE NAME keywords
    res = gate(files, MAPPING)
    assert res.errors.empty
    ids = res.identity_table().set_index("sample")
    assert ids.loc["P02_week24_bcell", "tube"] == "bcell"
    assert ids.loc["P02_week24_bcell", "source"] == "keywords"
    # a filename pattern's tube group
    pat = r"(?P<patient>P\d+)_(?P<visit>[a-z0-9]+)_(?P<tube>[a-z]+)\.fcs"
    res2 = gate(files, MAPPING, pattern=pat)
    t1 = res.table().drop(columns=["cells_per_ul"], errors="ignore")
    t2 = res2.table().drop(columns=["cells_per_ul"], errors="ignore")
    pd.testing.assert_frame_equal(t1, t2)
    assert res2.identity_table()["source"].eq("pattern").all()
