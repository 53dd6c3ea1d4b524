"""Two files claiming one patient and visit: found before gating, every file still gated
and written, the clash named in errors.csv and qc.csv, the files kept out of the per-visit
tables and the comparison, exit status 1 (API, `gate`, `compare` and `run`)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

import immunoprofile.gating.run as run
from immunoprofile.cli import main
from immunoprofile.exceptions import IdentityClashWarning


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three patients x two visits, simulated (PATIENT_ID and VISIT keywords in every file)."""
    from immunoprofile.simulate import simulate_cohort

    d = tmp_path_factory.mktemp("clash_cohort")
    simulate_cohort(d, patients=3, events=3000, seed=11)
    files = [str(d / f"{p}_{v}.fcs") for p in ("P01", "P02", "P03") for v in ("baseline", "week24")]
    return d, files


def _mislabelled_sheet(d: Path, tmp_path: Path) -> Path:
    """The simulator's samplesheet with P01's week-24 file labelled as P02's."""
    sheet = pd.read_csv(d / "samplesheet.csv")
    sheet.loc[sheet["file"] == "P01_week24.fcs", "patient"] = "P02"
    sheet["file"] = [str(d / f) for f in sheet["file"]]
    out = tmp_path / "sheet.csv"
    sheet.to_csv(out, index=False)
    return out


def _copy(cohort, tmp_path):
    """A byte-identical copy of P02's week-24 file under another name (same keywords)."""
    d, files = cohort
    copy = tmp_path / "P02_week24_again.fcs"
    shutil.copy(d / "P02_week24.fcs", copy)
    return [*files, str(copy)], str(d / "P02_week24.fcs"), str(copy)


def test_api_samplesheet_clash_gates_everything(cohort, tmp_path):
    d, files = cohort
    sheet = _mislabelled_sheet(d, tmp_path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = run.gate(files, "tregs", samplesheet=sheet)
    clash_warnings = [w for w in rec if issubclass(w.category, IdentityClashWarning)]
    assert len(clash_warnings) == 1
    msg = str(clash_warnings[0].message)
    assert msg.startswith("2 files share an identity: patient 'P02' visit 'week24' (")
    assert files[1] in msg and files[3] in msg

    # every file gated, every file's rows in the tidy table
    assert res.n_failed == 0
    t = res.table()
    assert list(t["sample"].unique()) == [Path(f).stem for f in files]
    clashing = t.groupby("sample")["identity_clash"].all()
    assert clashing[clashing].index.tolist() == ["P01_week24", "P02_week24"]
    assert len(clashing) == 6
    assert res.clashing_samples == ["P01_week24", "P02_week24"]
    # the clashing file's counts are the ones it gets when gated alone
    alone = run.gate(files[1], "tregs").table()
    mine = t[t["sample"] == "P01_week24"].reset_index(drop=True)
    pd.testing.assert_series_equal(mine["count"], alone["count"])

    err = res.errors
    assert err["file"].tolist() == [files[1], files[3]]
    assert err["error_type"].tolist() == ["IdentityClashError"] * 2
    assert err["other_files"].tolist() == [files[3], files[1]]
    assert (err["patient"] == "P02").all() and (err["visit"] == "week24").all()
    assert "patient 'P02' visit 'week24' (from its samplesheet)" in err.at[0, "message"]
    qc = res.qc()
    assert qc.loc[qc["flag"] == "identity_clash", "sample"].tolist() == ["P01_week24", "P02_week24"]
    status = res.summary().set_index("sample")["status"]
    assert status.tolist() == ["ok", "IdentityClashError", "ok", "IdentityClashError", "ok", "ok"]

    with pytest.warns(IdentityClashWarning, match="leave out 2 file"):
        wide = res.per_visit()
    assert list(wide["baseline"].index) == ["P01", "P02", "P03"]
    assert list(wide["week24"].index) == ["P03"]  # P01's file claims P02: neither is kept
    # the comparison leaves them out too, and says so
    from immunoprofile.comparison import compare

    cmp = compare(t, baseline="baseline", followup="week24")
    kinds = cmp.problems.groupby("kind")["sample"].apply(list).to_dict()
    assert kinds["identity_clash"] == ["P01_week24", "P02_week24"]
    assert kinds["missing_followup"] == ["", ""]
    has = cmp.changes.dropna(subset=["followup"])
    assert set(has["patient"]) == {"P03"}


def test_api_clash_found_before_gating(cohort, tmp_path, monkeypatch):
    """The warning comes before the first file is gated, from the samplesheet and from
    keywords read from HEADER+TEXT alone."""
    d, files = cohort
    with_copy, _, _ = _copy(cohort, tmp_path)
    for kwargs, paths in (
        ({"samplesheet": _mislabelled_sheet(d, tmp_path)}, files),
        ({}, with_copy),
    ):
        order: list[str] = []
        apply = run._apply

        def spy(sample, template, seed=0, *args, _apply=apply, _order=order, **kwargs):
            _order.append("gate")
            return _apply(sample, template, seed, *args, **kwargs)

        def note(message, category, *a, _order=order, **k):
            _order.append(category.__name__)

        monkeypatch.setattr(run, "_apply", spy)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            monkeypatch.setattr(warnings, "showwarning", note)
            run.gate(paths, "tregs", **kwargs)
        monkeypatch.setattr(run, "_apply", apply)
        assert order[0] == "IdentityClashWarning", order
        assert order.count("IdentityClashWarning") == 1 and order.count("gate") == len(paths)


def _check_outputs(out: Path, files: list[str], a: str, b: str, patient: str, visit: str):
    """populations.csv/.parquet hold every file; errors.csv names both files and the
    identity; qc.csv flags them; the per-visit csv and xlsx leave them out."""
    samples = [Path(f).stem for f in files]
    pop = pd.read_csv(out / "populations.csv", dtype={"patient": str, "visit": str})
    pop = pop.fillna({"qc": ""})  # a row without QC flags has an empty qc cell
    assert list(pop["sample"].unique()) == samples
    flagged = pop.groupby("sample", sort=False)["identity_clash"].all()
    assert flagged[flagged].index.tolist() == [Path(a).stem, Path(b).stem]
    pq = pd.read_parquet(out / "populations.parquet")
    pd.testing.assert_frame_equal(pq, pop, check_dtype=False)
    err = pd.read_csv(out / "errors.csv", dtype=str, keep_default_na=False)
    assert err["file"].tolist() == [a, b]
    assert err["other_files"].tolist() == [b, a]
    assert (err["error_type"] == "IdentityClashError").all()
    assert (err["patient"] == patient).all() and (err["visit"] == visit).all()
    for m in err["message"]:
        assert f"patient '{patient}' visit '{visit}'" in m and a in m and b in m
    qc = pd.read_csv(out / "qc.csv")
    assert qc.loc[qc["flag"] == "identity_clash", "file"].tolist() == [a, b]
    wide = pd.read_csv(out / f"populations_{visit}.csv", index_col=0)
    xlsx = pd.read_excel(out / "populations.xlsx", sheet_name=visit, index_col=0)
    kept_ids = set(pop[~pop["identity_clash"] & (pop["visit"] == visit)]["patient"])
    assert set(wide.index) == set(xlsx.index) == kept_ids
    assert patient not in kept_ids


def test_cli_samplesheet_clash(cohort, tmp_path):
    d, files = cohort
    sheet = _mislabelled_sheet(d, tmp_path)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["gate", "-t", "tregs", *files, "--samplesheet", str(sheet), "-o", str(out)]
    )
    assert r.exit_code == 1, r.output
    line = f"2 files share an identity: patient 'P02' visit 'week24' ({files[1]}, {files[3]})"
    assert f"warning: {line}" in r.output  # announced up front
    assert f"error: {line}" in r.output  # and in the final line
    assert "failed" not in r.output  # no file failed: nothing to count as a failure
    _check_outputs(out, files, files[1], files[3], "P02", "week24")
    wide = pd.read_csv(out / "populations_week24.csv", index_col=0)
    assert list(wide.index) == ["P03"]


def test_cli_keyword_clash_then_compare_and_jobs(cohort, tmp_path):
    """A copied file: identical keywords. jobs=2 writes the same outputs; `compare` on the
    written populations.csv leaves both files out and says why."""
    paths, a, b = _copy(cohort, tmp_path)
    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"out{jobs}"
        r = CliRunner().invoke(main, ["gate", "-t", "tregs", *paths, "-o", str(out), "-j", jobs])
        assert r.exit_code == 1, r.output
        assert "2 files share an identity: patient 'P02' visit 'week24' tube 'T B NK 20c'" in (
            r.output
        )
        _check_outputs(out, paths, a, b, "P02", "week24")
        outs.append(out)
    for name in ("populations.csv", "errors.csv", "qc.csv", "populations_week24.csv"):
        assert (outs[0] / name).read_text() == (outs[1] / name).read_text()
    # the copy's rows equal the original's: nothing lost, nothing invented
    pop = pd.read_csv(outs[0] / "populations.csv")
    one = pop[pop["sample"] == Path(a).stem]["count"].tolist()
    assert one == pop[pop["sample"] == Path(b).stem]["count"].tolist()

    cmp_dir = tmp_path / "cmp"
    r = CliRunner().invoke(
        main, ["compare", str(outs[0] / "populations.csv"), "-o", str(cmp_dir), "--no-report"]
    )
    assert r.exit_code == 0, r.output
    problems = pd.read_csv(cmp_dir / "problems.csv", dtype=str, keep_default_na=False)
    clash = problems[problems["kind"] == "identity_clash"]
    assert clash["sample"].tolist() == [Path(a).stem, Path(b).stem]
    changes = pd.read_csv(cmp_dir / "changes.csv", dtype={"patient": str})
    assert changes.loc[changes["patient"] == "P02", "followup"].isna().all()
    assert changes.loc[changes["patient"] != "P02", "followup"].notna().all()


def test_cli_run_clash_finishes_with_status_1(cohort, tmp_path):
    paths, a, b = _copy(cohort, tmp_path)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", *paths, "-t", "tregs", "-o", str(out), "-q"])
    assert r.exit_code == 1, r.output
    assert "2 files share an identity: patient 'P02' visit 'week24'" in r.output
    assert (out / "report.html").is_file()
    pop = pd.read_csv(out / "gating" / "populations.csv")
    assert len(pop["sample"].unique()) == len(paths)
    # clustering runs on the other files only
    clustered = pd.read_csv(out / "clustering" / "populations.csv")
    assert set(clustered["sample"]) == {Path(p).stem for p in paths} - {Path(a).stem, Path(b).stem}
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "Files that failed or share an identity (2)" in html
    problems = pd.read_csv(out / "comparison" / "problems.csv")
    assert set(problems.loc[problems["kind"] == "identity_clash", "sample"]) == {
        Path(a).stem, Path(b).stem,
    }  # fmt: skip


def test_contradictory_samplesheet_stops_before_gating(cohort, tmp_path, monkeypatch):
    d, files = cohort
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"file,patient,visit\n{files[0]},P01,baseline\n{files[0]},P09,baseline\n")

    def never(*a, **k):
        raise AssertionError("gated although the samplesheet contradicts itself")

    monkeypatch.setattr(run, "_gate_one", never)
    out = tmp_path / "out"
    r = CliRunner().invoke(
        main, ["gate", "-t", "tregs", files[0], "--samplesheet", str(sheet), "-o", str(out)]
    )
    assert r.exit_code == 1
    assert "contradictory identities" in r.output and not out.exists()


def test_failed_file_still_clashes(cohort, tmp_path):
    """A truncated copy cannot be gated, but its TEXT still claims the identity: both
    errors are listed for it, and the intact file is kept out of the per-visit tables
    (which of the two is that visit cannot be told)."""
    d, files = cohort
    cut = tmp_path / "P01_baseline_cut.fcs"
    cut.write_bytes(Path(files[0]).read_bytes()[:6000])
    with pytest.warns(IdentityClashWarning, match="P01_baseline_cut.fcs"):
        res = run.gate([*files, str(cut)], "tregs")
    err = res.errors
    assert err["file"].tolist() == [files[0], str(cut), str(cut)]
    assert err["error_type"].tolist() == [
        "IdentityClashError", "TruncatedFCSError", "IdentityClashError",
    ]  # fmt: skip
    assert "not gated" in err["message"].iloc[2]
    assert res.n_failed == 1
    assert "P01_baseline" in set(res.table()["sample"])
    assert "P01" not in res.unambiguous_table().query("visit == 'baseline'")["patient"].tolist()


def test_in_memory_samples_with_one_name_stay_apart():
    from immunoprofile.simulate import simulate_sample

    samples = []
    for seed in (1, 2):
        s, _ = simulate_sample(events=2000, seed=seed)
        s.name = "same"
        samples.append(s)
    res = run.gate(samples, "tregs")
    t = res.table()
    assert list(t["sample"].unique()) == ["same#1", "same#2"]
    a, b = (t[t["sample"] == n]["count"].to_numpy() for n in ("same#1", "same#2"))
    assert len(a) == len(b) and (a != b).any()


# --- clustering: the same behaviour as gating ---------------------------------------------


def test_api_cluster_clash_clusters_everything(cohort, tmp_path):
    from immunoprofile.clustering.api import cluster

    d, files = cohort
    sheet = _mislabelled_sheet(d, tmp_path)
    with pytest.warns(IdentityClashWarning, match=r"2 files share an identity: patient 'P02'"):
        res = cluster(files, template="tregs", samplesheet=sheet, seed=0, n_resamples=10)
    assert res.samples == [Path(f).stem for f in files] and res.n_failed == 0
    assert res.clashing_samples == ["P01_week24", "P02_week24"]
    t = res.table(include_metaclusters=False)
    flagged = t.groupby("sample", sort=False)["identity_clash"].all()
    assert flagged[flagged].index.tolist() == ["P01_week24", "P02_week24"]
    assert len(flagged) == 6
    err = res.errors
    assert err["file"].tolist() == [files[1], files[3]]
    assert err["error_type"].tolist() == ["IdentityClashError"] * 2
    assert err["other_files"].tolist() == [files[3], files[1]]
    assert (err["patient"] == "P02").all() and (err["visit"] == "week24").all()
    assert "patient 'P02' visit 'week24' (from its samplesheet)" in err.at[0, "message"]
    # written: populations.csv keeps every file, errors.csv names the clash
    res.write(tmp_path / "out")
    pop = pd.read_csv(tmp_path / "out" / "populations.csv")
    assert pop.groupby("sample")["identity_clash"].all().sum() == 2
    written = pd.read_csv(tmp_path / "out" / "errors.csv", dtype=str, keep_default_na=False)
    assert written["other_files"].tolist() == [files[3], files[1]]
    # without a clash: no flag column, no errors (the table is unchanged)
    clean = cluster(files[:2], template="tregs", seed=0, n_resamples=10)
    assert "identity_clash" not in clean.table().columns and clean.errors.empty


def test_cli_cluster_clash_finishes_with_status_1(cohort, tmp_path):
    paths, a, b = _copy(cohort, tmp_path)
    out = tmp_path / "clusters"
    r = CliRunner().invoke(main, ["cluster", *paths, "-t", "tregs", "-o", str(out), "--no-plots"])
    assert r.exit_code == 1, r.output
    line = f"2 files share an identity: patient 'P02' visit 'week24' tube 'T B NK 20c' ({a}, {b})"
    assert f"warning: {line}" in r.output  # announced
    assert f"error: {line} (clustered, in populations.csv with identity_clash)" in r.output
    assert "failed" not in r.output
    pop = pd.read_csv(out / "populations.csv")
    assert list(pop["sample"].unique()) == [Path(p).stem for p in paths]
    flagged = pop.groupby("sample", sort=False)["identity_clash"].all()
    assert flagged[flagged].index.tolist() == [Path(a).stem, Path(b).stem]
    # a byte-identical copy is clustered exactly as its original: nothing lost or invented
    one = pop[pop["sample"] == Path(a).stem]["count"].tolist()
    assert one == pop[pop["sample"] == Path(b).stem]["count"].tolist()
    err = pd.read_csv(out / "errors.csv", dtype=str, keep_default_na=False)
    assert err["file"].tolist() == [a, b] and (err["error_type"] == "IdentityClashError").all()
    for name in ("metaclusters.csv", "thresholds.csv", "resolution.csv"):
        assert (out / name).is_file(), name
    # a failed file and a clash: both counted in the last line
    junk = tmp_path / "junk.fcs"
    junk.write_bytes(b"not an FCS file" * 20)
    r = CliRunner().invoke(
        main, ["cluster", *paths, str(junk), "-t", "tregs", "-o", str(out), "--no-plots"]
    )
    assert r.exit_code == 1, r.output
    assert f"error: 1 of {len(paths) + 1} file(s) failed; {line}" in r.output
    err = pd.read_csv(out / "errors.csv", dtype=str, keep_default_na=False)
    assert err["file"].tolist() == [a, b, str(junk)]


def test_gate_again_when_every_file_of_a_visit_clashes(cohort, tmp_path):
    """The second run into the same folder has no unambiguous week-24 file: the week-24
    table of the first run is removed, not left to be read as this run's."""
    d, files = cohort
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["gate", "-t", "tregs", *files, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert (out / "populations_week24.csv").is_file()
    sheet = pd.read_csv(d / "samplesheet.csv")
    sheet.loc[sheet["visit"] == "week24", "patient"] = "P01"  # 3 files claim P01 week24
    sheet["file"] = [str(d / f) for f in sheet["file"]]
    sheet.to_csv(tmp_path / "sheet.csv", index=False)
    r = CliRunner().invoke(
        main, ["gate", "-t", "tregs", *files, "--samplesheet", str(tmp_path / "sheet.csv"),
               "-o", str(out), "-q"],
    )  # fmt: skip
    assert r.exit_code == 1 and "3 files share an identity" in r.output
    assert not (out / "populations_week24.csv").exists()
    assert (out / "populations_baseline.csv").is_file()
    pop = pd.read_csv(out / "populations.csv")
    assert pop.loc[pop["visit"] == "week24", "identity_clash"].all()
