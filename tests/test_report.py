"""Tests of the HTML report and of the `compare` / `report` commands (hand-made tables)."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main
from immunoprofile.comparison import Comparison, compare
from immunoprofile.report import (
    build_report,
    embedded_images,
    exact_test_statement,
    fitted_gates_table,
    report_from_dir,
)


def population_table(seed: int = 0, visits=("baseline", "week24", "week48")) -> pd.DataFrame:
    """7 patients: Treg +1.5 pp, Th17 -2 pp, B and NK unchanged; P3 misses week48."""
    rng = np.random.default_rng(seed)
    pops = {
        "CD4": ("T", 60.0, 0.0),
        "Treg": ("CD4", 5.0, 1.5),
        "Th17": ("CD4_memory", 8.0, -2.0),
        "B": ("nonT", 12.0, 0.0),
        "NK": ("nonT", 10.0, 0.0),
    }
    rows = []
    for i in range(1, 8):
        for v in visits:
            if (i, v) == (3, "week48"):
                continue
            for pop, (parent, base, eff) in pops.items():
                val = base + (eff if v != "baseline" else 0.0) + rng.normal(0, 0.3)
                rows.append(
                    {
                        "sample": f"P{i:02d}_{v}",
                        "patient": f"P{i:02d}",
                        "visit": v,
                        "population": pop,
                        "parent": parent,
                        "count": int(val * 100),
                        "parent_count": 10000,
                        "percent_of_parent": val,
                        "percent_of_lymphocytes": val / 3,
                    }
                )
    return pd.DataFrame(rows)


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def test_exact_test_statement_numbers():
    s = exact_test_statement(7, 4)
    assert "2/128 = 0.0156" in s
    assert "0.05/4 = 0.0125" in s and "cannot happen" in s
    big = exact_test_statement(12, 4)
    assert "2/4096" in big and "attainable" in big


def test_report_is_self_contained_and_numbers_match(tmp_path):
    t = population_table()
    cmp = compare(t, followup=None)
    qc = pd.DataFrame(
        {"sample": ["P01_week24"], "file": ["x.fcs"], "population": ["Treg"], "flag": ["low"]}
    )
    gates = {"samples": {"P01_baseline": {"patient": "P01", "visit": "baseline",
                                          "gates": {"Treg": {"threshold": 0.41}}}}}  # fmt: skip
    from immunoprofile.plots.paired import figure_bytes, forest_plot

    thumb = figure_bytes(forest_plot(cmp.stats), dpi=30)
    path = build_report(
        tmp_path / "r.html",
        cmp,
        t,
        qc=qc,
        fitted_gates=fitted_gates_table(gates),
        gating_images={"P01_baseline": thumb},
        provenance={"template": {"name": "immune_profile"}, "compensation": "from $SPILLOVER"},
        command="immunoprofile compare pop.csv --out x",
    )
    html = path.read_text()
    # self-contained: no external resources
    assert not re.search(r'(src|href)="(http|//|file:)', html)
    assert "<link" not in html and "<script" not in html
    imgs = embedded_images(html)
    assert len(imgs) >= 6  # forest, paired, 2 heatmaps, all-populations, thumbnail
    assert all(b[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    text = _text(html)
    assert "2/128 = 0.0156" in text
    # headline numbers are those of the stats table
    s = cmp.stats.set_index(["population", "measure", "followup_visit"])
    tr = s.loc[("Treg", "percent_of_parent", "week24")]
    assert f"{tr['hl_ci_low']:+.2f} to {tr['hl_ci_high']:+.2f}" in text
    assert f"{tr['hl_estimate']:.2f}" in text
    assert "7 up, 0 down" in text
    assert "Treg (% of CD4) increased" in text and "Th17 (% of CD4_memory) decreased" in text
    assert "B (% of lymphocytes) no clear change" in text
    assert "NK (% of lymphocytes) no clear change" in text
    # cohort, problems, QC, provenance
    assert "— missing —" in html and "patient P03 has no week48 visit" in text
    assert "immunoprofile compare pop.csv --out x" in text
    assert "0.41" in text and "from $SPILLOVER" in text and "low" in text
    assert "scipy" in text and "numpy" in text


def test_cli_compare_and_report(tmp_path):
    t = population_table(1)
    t.to_csv(tmp_path / "populations.csv", index=False)
    r = CliRunner().invoke(
        main,
        ["compare", str(tmp_path / "populations.csv"), "--baseline", "baseline",
         "--followup", "week24", "--out", str(tmp_path / "cmp")],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "report:" in r.output
    stats = pd.read_csv(tmp_path / "cmp" / "stats.csv")
    assert set(stats["followup_visit"]) == {"week24"}
    direct = compare(t, followup="week24").stats
    np.testing.assert_allclose(stats["hl_estimate"], direct["hl_estimate"])
    np.testing.assert_allclose(stats["p_value"], direct["p_value"])
    html = (tmp_path / "cmp" / "report.html").read_text()
    assert "Per-visit tables" in html and "P07_week24" in html  # table found via comparison.json
    # `report DIR` rebuilds it elsewhere
    r2 = CliRunner().invoke(
        main, ["report", str(tmp_path / "cmp"), "--out", str(tmp_path / "b.html")]
    )
    assert r2.exit_code == 0, r2.output
    assert (tmp_path / "b.html").stat().st_size > 10000


def test_cli_compare_errors_are_clear(tmp_path):
    t = population_table()
    t.to_csv(tmp_path / "p.csv", index=False)
    r = CliRunner().invoke(main, ["compare", str(tmp_path / "p.csv"), "--followup", "week99",
                                  "--out", str(tmp_path / "o")])  # fmt: skip
    assert r.exit_code == 1
    assert "week99" in r.output and "Traceback" not in r.output


def test_report_from_gate_style_directory(tmp_path):
    """A `gate` output folder (populations.csv, gates.json, qc.csv, samples.csv, plots/)."""
    t = population_table(2)
    d = tmp_path / "res"
    (d / "plots").mkdir(parents=True)
    t.to_csv(d / "populations.csv", index=False)
    samples = t[["sample", "patient", "visit"]].drop_duplicates().assign(events=50000)
    samples.to_csv(d / "samples.csv", index=False)
    pd.DataFrame(columns=["sample", "file", "population", "flag", "detail"]).to_csv(
        d / "qc.csv", index=False
    )
    (d / "gates.json").write_text(json.dumps({"template": "t", "samples": {}}))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    (d / "plots" / "P01_baseline.png").write_bytes(buf.getvalue())
    path = report_from_dir(d, baseline="baseline", followup=["week24"])
    html = path.read_text()
    assert path == d / "report.html"
    assert "50,000 events" in html
    assert "P01_baseline" in _text(html) and len(embedded_images(html)) >= 5
    with pytest.raises(Exception, match="no populations.csv"):
        report_from_dir(tmp_path)


def test_comparison_roundtrip_keeps_meta(tmp_path):
    cmp = compare(population_table(), followup="week24")
    cmp.meta["populations"] = "/x/populations.csv"
    cmp.write(tmp_path)
    back = Comparison.read(tmp_path)
    assert back.meta["populations"] == "/x/populations.csv"
    assert back.changes["patient"].tolist() == cmp.changes["patient"].tolist()


def test_simulated_truth_effect_recovered_by_compare(tmp_path):
    """compare() on the simulator's true frequencies finds the effect it was built with."""
    from immunoprofile.simulate import simulate_cohort

    simulate_cohort(tmp_path, patients=7, visits=("baseline", "week24"), events=20_000, seed=0)
    truth = pd.read_csv(tmp_path / "truth_frequencies.csv", dtype={"patient": str})
    st = compare(truth, value="percent_of_parent").stats.set_index("population")
    assert st.loc["Treg", "direction"] == "up" and st.loc["Th17", "direction"] == "down"
    assert st.loc["Treg", "p_value"] == pytest.approx(2 / 128)
    assert st.loc["Th17", "p_value"] == pytest.approx(2 / 128)


@pytest.mark.slow
def test_demo_recovers_known_effect(tmp_path):
    """The demo pipeline (7 patients, 20k events, FCS files gated by the built-in template):
    Treg up, Th17 down, B and NK without a clear change, the truth inside every endpoint CI,
    and the report's headline numbers are those of stats.csv. Covered by
    benchmarks/bench_demo.py (which also times it)."""
    from immunoprofile.pipeline import run_demo

    r = run_demo(tmp_path / "demo", visits=("baseline", "week24"), cluster=False, jobs=2)
    st = pd.read_csv(tmp_path / "demo" / "comparison" / "stats.csv")
    ep = st[
        (st["measure"] == "percent_of_parent") & st["population"].isin(["Treg", "Th17", "B", "NK"])
    ]
    d = ep.set_index("population")["direction"].to_dict()
    assert d["Treg"] == "up" and d["Th17"] == "down"
    assert d["B"] == "CI includes 0" and d["NK"] == "CI includes 0"
    truth = pd.read_csv(tmp_path / "demo" / "truth_check.csv")
    t = truth[(truth["measure"] == "percent_of_parent") & truth["population"].isin(d)]
    assert t["true_in_ci"].all(), t
    html = r.report.read_text()
    for row in ep.itertuples():
        assert f"{row.hl_ci_low:+.2f} to {row.hl_ci_high:+.2f}" in html
    assert "2/128 = 0.0156" in html


def test_report_lists_per_file_compensation_and_transforms(tmp_path):
    """provenance.json of a `gate` folder becomes the per-file processing table."""
    d = tmp_path / "res"
    d.mkdir()
    population_table(3).to_csv(d / "populations.csv", index=False)
    logicle = {"type": "logicle", "t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0}
    samples = {
        "P01_baseline": {
            "file": "cohort/P01_baseline.fcs",
            "patient": "P01",
            "visit": "baseline",
            "read": {"file": "cohort/P01_baseline.fcs", "version": "3.1"},
            "compensation": {
                "source": "$SPILLOVER of cohort/P01_baseline.fcs",
                "detectors": ["PE-A", "APC-A"],
                "matrix": [[1.0, 0.1], [0.0, 1.0]],
            },
            "transforms": {
                "FSC-A": {"type": "linear", "t": 262144.0, "a": 0.0},
                "PE-A": logicle,
                "APC-A": dict(logicle, w=0.87),
            },
            "markers": {"CD25": "PE-A", "FSC-A": "FSC-A"},
        },
        "P01_week24": {
            "file": "cohort/P01_week24.fcs",
            "patient": "P01",
            "visit": "week24",
            "compensation": None,
            "transforms": None,
        },
    }
    (d / "provenance.json").write_text(json.dumps({"template": "t", "samples": samples}))
    html = report_from_dir(d, baseline="baseline", followup=["week24"]).read_text()
    text = _text(html)
    assert "Per-file processing: compensation and transforms" in text
    assert "$SPILLOVER of cohort/P01_baseline.fcs" in text
    assert (
        "linear(t=262144, a=0) on FSC-A; logicle(t=262144, w=0.5, m=4.5, a=0) on PE-A; "
        "logicle(t=262144, w=0.87, m=4.5, a=0) on APC-A"
    ) in text
    assert "Transform parameters per channel (3 rows)" in text
    section = text[text.index("Per-file processing") :]
    assert re.search(r"P01_week24\s+P01\s+week24\s+none\s+0\s+none", section)
    # without provenance.json, no such section
    (d / "provenance.json").unlink()
    assert "Per-file processing" not in report_from_dir(d, followup=["week24"]).read_text()


# --- key results: counts, QC state, caveats; Hodges–Lehmann vs medians; gating pages ------


def _hl_vs_medians_table() -> pd.DataFrame:
    """7 patients whose B medians fall (40 -> 39) while every Walsh-average median is
    +0.5: four patients +2, three -1 (hand-worked: 6 averages of -1, 12 of +0.5, 10 of +2;
    the 14th and 15th are +0.5)."""
    base = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    delta = [2.0, 2.0, -1.0, -1.0, -1.0, 2.0, 2.0]
    rows = []
    for i, (b, d) in enumerate(zip(base, delta), 1):
        for v, val in (("baseline", b), ("week24", b + d)):
            for pop, parent, value, count in (
                ("B", "nonT", val, 30 if (i, v) == (2, "week24") else 400),
                ("Treg", "CD4", 5.0 + (i % 3) + (1.0 if v == "week24" else 0.0), 200),
            ):
                rows.append(
                    {
                        "sample": f"P{i:02d}_{v}", "patient": f"P{i:02d}", "visit": v,
                        "population": pop, "parent": parent, "count": count,
                        "parent_count": 5000, "percent_of_parent": value,
                        "percent_of_lymphocytes": value / 4,
                    }
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_key_results_counts_qc_caveat_and_hl_note(tmp_path):
    t = _hl_vs_medians_table()
    cmp = compare(t)
    qc = pd.DataFrame(
        {
            "sample": ["P03_baseline", "P04_week24", "P05_week24"],
            "file": ["a.fcs", "b.fcs", "c.fcs"],
            "population": ["B", "nonT", "CD4"],
            "flag": ["outlier", "fallback", "too_few_events"],
            "detail": ["", "", ""],
        }
    )
    # B's parent nonT has no row of its own: its flag counts through B's parent column;
    # the flag on CD4 (another branch) does not count for B
    html = build_report(tmp_path / "r.html", cmp, t, qc=qc, measure="percent_of_parent").read_text()
    text = _text(html)
    st = cmp.stats.set_index(["population", "measure"]).loc[("B", "percent_of_parent")]
    assert st["median_baseline"] == 40.0 and st["median_followup"] == 39.0
    assert st["hl_estimate"] == pytest.approx(0.5)
    # the note explains the opposite signs with the numbers
    assert "Why the Hodges–Lehmann change can differ" in text
    assert "B at week24: the medians go 40.00 → 39.00 (-1.00)" in text
    assert "Hodges–Lehmann change is +0.50 pp (4 up, 3 down)" in text
    # B events per file: 13 files at 400 and one at 30 -> min 30, median 400; caveat
    assert "B at week24 rests on fewer than 50 events in 1 of 14 files (minimum 30)" in text
    key = html.split('id="key"')[1].split("</table>")[0]
    b_row = [r for r in key.split("<tr>") if ">B<" in r][0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", b_row)
    assert cells[1] == "% of nonT"
    assert cells[-3] == "30" and cells[-2] == "400.00"
    assert cells[-1] == "2 files: fallback, outlier"
    treg = [r for r in key.split("<tr>") if ">Treg<" in r][0]
    # Treg sits under CD4, flagged in one file
    assert re.findall(r"<td[^>]*>([^<]*)</td>", treg)[-1] == "1 file: too_few_events"
    assert 'class="small"' in b_row  # the small count is highlighted
    # no caveat for Treg (200 events everywhere)
    assert "Treg at week24 rests" not in text


def test_b_and_nk_default_to_percent_of_lymphocytes(tmp_path):
    t = population_table()
    cmp = compare(t)
    html = build_report(tmp_path / "r.html", cmp, t).read_text()
    text = _text(html)
    s = cmp.stats.set_index(["population", "measure", "followup_visit"])
    b = s.loc[("B", "percent_of_lymphocytes", "week24")]
    assert "B (% of lymphocytes)" in text and "Treg (% of CD4)" in text
    assert f"{b['hl_ci_low']:+.2f} to {b['hl_ci_high']:+.2f}" in text


def test_gating_pages_flagged_first_with_one_zoomable_figure_per_gate(tmp_path):
    t = population_table()
    cmp = compare(t)
    from immunoprofile.plots.paired import figure_bytes, forest_plot

    png = figure_bytes(forest_plot(cmp.stats), dpi=20)
    images = {
        "P01_baseline": {"01_lymphocytes": png, "02_T": png, "03_Treg": png},
        "P02_baseline": {"01_lymphocytes": png, "02_T": png, "03_Treg": png},
    }
    qc = pd.DataFrame(
        {"sample": ["P02_baseline"], "file": ["x"], "population": ["Treg"],
         "flag": ["fallback"], "detail": ["no valley"]}
    )  # fmt: skip
    html = build_report(tmp_path / "r.html", cmp, t, qc=qc, gating_images=images).read_text()
    gating = html.split('<section id="gating">')[1].split("</section>")[0]
    pages = re.findall(r'<details id="(gate-[^"]+)" class="page"( open)?>', gating)
    assert pages == [("gate-P02_baseline", " open"), ("gate-P01_baseline", "")]
    assert gating.count('<input type="checkbox" class="zoom">') == 6
    assert "Treg: fallback (no valley)" in gating
    # Files to review comes first and links to the page
    review = html.split('<section id="review">')[1].split("</section>")[0]
    assert html.index('<section id="review">') < html.index('<section id="key">')
    assert '<a href="#gate-P02_baseline">P02_baseline</a>' in review


def test_per_visit_tables_are_rounded_with_unit_parent_and_counts(tmp_path):
    t = population_table()
    cmp = compare(t)
    html = build_report(tmp_path / "r.html", cmp, t, measure="percent_of_parent").read_text()
    visits = html.split('<section id="visits">')[1].split("</section>")[0]
    assert '<th class="grp" colspan="2">Treg</th>' in visits
    assert "% of CD4" in visits and "% of CD4_memory" in visits
    v = t[(t["visit"] == "baseline") & (t["patient"] == "P01")].set_index("population")
    row = visits.split("<h3>baseline</h3>")[1].split("</table>")[0].split("<tr>")
    p01 = [r for r in row if ">P01<" in r][0]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", p01)
    # patient, then per population (CD4, Treg, Th17, B, NK): value (2 decimals), events
    assert cells[1:3] == [f"{v.loc['CD4', 'percent_of_parent']:.2f}", str(v.loc["CD4", "count"])]
    assert cells[3:5] == [f"{v.loc['Treg', 'percent_of_parent']:.2f}", str(v.loc["Treg", "count"])]


def test_key_statistics_are_the_rows_the_key_results_and_the_terminal_show():
    from immunoprofile.report import key_statistics

    cmp = compare(population_table(), baseline="baseline", followup=["week24", "week48"])
    st = key_statistics(cmp)
    # the endpoints, each in its measure (B and NK as % of lymphocytes), visit by visit
    assert st["population"].tolist() == ["Treg", "Th17", "B", "NK"] * 2
    assert st["followup_visit"].tolist() == ["week24"] * 4 + ["week48"] * 4
    measure = dict(zip(st["population"], st["measure"]))
    assert measure == {"Treg": "percent_of_parent", "Th17": "percent_of_parent",
                       "B": "percent_of_lymphocytes", "NK": "percent_of_lymphocytes"}  # fmt: skip
    treg = cmp.stats.set_index(["population", "measure", "followup_visit"])
    row = st.iloc[0]
    assert row["hl_estimate"] == treg.loc[("Treg", "percent_of_parent", "week24"), "hl_estimate"]
    assert set(key_statistics(cmp, "percent_of_lymphocytes")["measure"]) == {
        "percent_of_lymphocytes"
    }
    # no endpoint compared: every population in the first measure
    only_cd4 = compare(population_table().query("population == 'CD4'"), baseline="baseline",
                       followup=["week24", "week48"])  # fmt: skip
    st = key_statistics(only_cd4)
    assert st["population"].tolist() == ["CD4", "CD4"] and set(st["measure"]) == {
        only_cd4.measures[0]
    }
