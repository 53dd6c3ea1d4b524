"""Bad input and bad output locations (issue rows B4-B10): formulas in identities, visit
labels that collide as file names, odd samplesheets, unwritable or interrupted output
folders, and inputs inside the output folder."""

from __future__ import annotations

import errno

import openpyxl
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile._files import (
    INCOMPLETE,
    atomic_write,
    check_output_dir,
    spreadsheet_safe,
    unescape_cell,
    write_owned,
)
from immunoprofile.cli import main
from immunoprofile.cohort import read_samplesheet
from immunoprofile.exceptions import IdentityError, OutputError
from immunoprofile.quantify import visit_file_names, write_population_tables


def _table(patients, visits) -> pd.DataFrame:
    rows = []
    for i, (p, v) in enumerate(zip(patients, visits)):
        for pop, parent, pct in (("lymphocytes", None, 60.0), ("T", "lymphocytes", 70.0 + i)):
            rows.append(
                {
                    "sample": f"s{i}",
                    "patient": p,
                    "visit": v,
                    "population": pop,
                    "parent": parent,
                    "count": 100 + i,
                    "parent_count": 150,
                    "percent_of_parent": pct,
                    "percent_of_lymphocytes": pct,
                }
            )
    return pd.DataFrame(rows)


# --- B4/B5: identities that a spreadsheet would run -----------------------------------------


def test_formula_patient_is_text_in_xlsx_and_escaped_in_csv(tmp_path):
    evil = '=HYPERLINK("http://x.example","click")'
    t = _table([evil, "+P2", "@P3", "-P4"], ["baseline"] * 4)
    write_population_tables(t, tmp_path)
    ws = openpyxl.load_workbook(tmp_path / "populations.xlsx")["baseline"]
    labels = {c.value: c.data_type for c in ws["A"][1:]}
    assert labels[evil] == "s"  # the text itself, stored as text, not a formula
    assert all(kind == "s" for kind in labels.values())
    wide = (tmp_path / "populations_baseline.csv").read_text()
    assert "'" + evil.replace('"', '""') in wide
    assert "\n'+P2," in wide and "\n'@P3," in wide and "\n'-P4," in wide
    tidy = pd.read_csv(tmp_path / "populations.csv", dtype=str)
    assert set(tidy["patient"]) == {"'" + evil, "'+P2", "'@P3", "'-P4"}
    # numbers, negative ones included, stay numbers
    assert pd.read_csv(tmp_path / "populations.csv")["count"].dtype.kind == "i"


def test_spreadsheet_safe_round_trip():
    df = pd.DataFrame({"patient": ["=1+1", "P2", None], "delta": [-1.5, 2.0, 0.0]})
    safe = spreadsheet_safe(df)
    assert list(safe["patient"][:2]) == ["'=1+1", "P2"]
    assert list(safe["delta"]) == [-1.5, 2.0, 0.0]
    assert unescape_cell("'=1+1") == "=1+1" and unescape_cell("'quoted") == "'quoted"
    assert spreadsheet_safe(pd.DataFrame({"a": ["x"]})) is not None


def test_compare_reads_back_escaped_patients(tmp_path):
    from immunoprofile.comparison import compare

    pats = ["=P1", "=P2", "=P3"] * 2
    visits = ["baseline"] * 3 + ["week24"] * 3
    t = _table(pats, visits)
    t["sample"] = [f"s{i // 2}" for i in range(len(t))]
    write_population_tables(t, tmp_path)
    cmp = compare(tmp_path / "populations.csv", baseline="baseline", followup="week24")
    assert set(cmp.changes["patient"]) == {"=P1", "=P2", "=P3"}


# --- B6: visit labels that share a file name --------------------------------------------------


def test_colliding_visit_labels_get_distinct_files(tmp_path):
    names = visit_file_names(["week 24", "week_24", "Week_24", "baseline"])
    assert names["baseline"] == "populations_baseline.csv"
    assert len({n.lower() for n in names.values()}) == 4
    assert names == visit_file_names(["week 24", "week_24", "Week_24", "baseline"])
    t = _table(["P1", "P1", "P1"], ["week 24", "week_24", "baseline"])
    write_population_tables(t, tmp_path)
    files = sorted(p.name for p in tmp_path.glob("populations_*.csv"))
    assert len(files) == 3
    values = set()
    for f in files:
        lab = pd.read_csv(tmp_path / f)  # lab table: "T (% of <parent>)", "T (events)"
        values |= set(lab[next(c for c in lab.columns if c.startswith("T (% of"))])
    assert values == {70.0, 71.0, 72.0}  # no table lost


# --- B7: samplesheets with a trailing comma --------------------------------------------------


def test_samplesheet_with_trailing_commas(tmp_path):
    p = tmp_path / "sheet.csv"
    p.write_text("file,patient,visit,\na.fcs,P01,baseline,\nb.fcs,P02,week24,\n")
    s = read_samplesheet(p)
    assert list(s["file"]) == ["a.fcs", "b.fcs"]
    assert list(s["patient"]) == ["P01", "P02"]
    assert list(s["visit"]) == ["baseline", "week24"]
    p.write_text("file,patient,visit\na.fcs,P01,baseline,\n")
    assert list(read_samplesheet(p)["visit"]) == ["baseline"]


def test_samplesheet_with_surplus_fields_is_refused(tmp_path):
    p = tmp_path / "sheet.csv"
    p.write_text("file,patient,visit\na.fcs,P01,baseline\nb.fcs,P02,week24,extra\n")
    with pytest.raises(IdentityError, match=r"line 3: 4 fields but the header has 3"):
        read_samplesheet(p)


# --- B8: output folder checked before the work; disk full named ------------------------------


def _fake_fcs(tmp_path, n=1):
    paths = []
    for i in range(n):
        f = tmp_path / f"P0{i}_baseline.fcs"
        f.write_bytes(b"never read")
        paths.append(str(f))
    return paths


def test_gate_refuses_unusable_out_before_any_work(tmp_path, monkeypatch):
    import immunoprofile.gating.run as run

    def no_work(*a, **k):
        raise AssertionError("gating started")

    monkeypatch.setattr(run, "gate", no_work)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    for out in (blocker, blocker / "sub"):
        res = CliRunner().invoke(
            main, ["gate", "--template", "tregs", *_fake_fcs(tmp_path), "--out", str(out)]
        )
        assert res.exit_code in (1, 2)  # 2: click's own check of a --out that is a file
        assert "afile" in res.output
        assert "Traceback" not in res.output


def test_disk_full_is_a_clear_error_and_leaves_no_temp(tmp_path):
    def full(p):
        p.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"populations.csv: No space left on device"):
        atomic_write(tmp_path / "populations.csv", full)
    assert list(tmp_path.iterdir()) == []


# --- B9: an interrupted write is marked, and its temporary files cleaned -----------------------


def test_interrupted_write_leaves_folder_marked_incomplete(tmp_path):
    from immunoprofile.comparison import compare

    t = _table(["P1", "P1"], ["baseline", "week24"])
    write_population_tables(t, tmp_path)
    assert not (tmp_path / INCOMPLETE).exists()
    # a write dies half-way (disk full, kill): the mark stays, readers refuse the folder
    (tmp_path / ".populations.csv.ab12cd34.tmp").write_text("half")

    def dies():
        (tmp_path / "populations.csv").write_text("garbage")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_owned(tmp_path, [], dies, writer="immunoprofile gate", stale="populations_*.csv")
    assert (tmp_path / INCOMPLETE).exists()
    assert not (tmp_path / ".populations.csv.ab12cd34.tmp").exists()
    with pytest.raises(OutputError, match="incomplete"):
        compare(tmp_path / "populations.csv", baseline="baseline")
    # the next complete write clears the mark
    write_population_tables(t, tmp_path)
    assert not (tmp_path / INCOMPLETE).exists()
    assert not list(tmp_path.glob(".*.tmp"))


# --- B10: an input inside --out under an output's name ---------------------------------------


def test_samplesheet_inside_out_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    sheet = out / "samples.csv"
    files = _fake_fcs(tmp_path)
    text = f"file,patient,visit\n{files[0]},P01,baseline\n"
    sheet.write_text(text)
    res = CliRunner().invoke(
        main,
        ["gate", "--template", "tregs", *files, "--samplesheet", str(sheet), "--out", str(out)],
    )
    assert res.exit_code == 1
    assert "would be overwritten" in res.output and "samples.csv" in res.output
    assert sheet.read_text() == text
    # another name inside --out is fine
    assert check_output_dir(out, [out / "my_sheet.csv"], ["samples.csv"]) == out


def test_compare_input_inside_out_is_refused(tmp_path):
    (tmp_path / "stats.csv").write_text("a\n1\n")
    res = CliRunner().invoke(
        main, ["compare", str(tmp_path / "stats.csv"), "--out", str(tmp_path), "--no-report"]
    )
    assert res.exit_code == 1 and "would be overwritten" in res.output
