"""Which file is which patient and visit."""

from __future__ import annotations

import pytest

from immunoprofile.cohort import (
    clash_summary,
    compile_pattern,
    find_clashes,
    header_keywords,
    identity_from_keywords,
    identity_table,
    make_unique,
    read_samplesheet,
    resolve_identities,
    sample_names,
)
from immunoprofile.exceptions import IdentityClashError, IdentityError

PATTERN = r"(?P<patient>P\d+)_(?P<visit>\w+)\.fcs"


def _sheet(tmp_path, text, name="samplesheet.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_samplesheet_by_name_and_by_path(tmp_path):
    (tmp_path / "d").mkdir()
    sheet = _sheet(
        tmp_path,
        "file,patient,visit,lymphocytes_per_ul\na.fcs,P01,baseline,1500\nd/b.fcs,P01,week24,\n",
    )
    files = [str(tmp_path / "a.fcs"), str(tmp_path / "d" / "b.fcs"), str(tmp_path / "c.fcs")]
    ids = resolve_identities(files, samplesheet=sheet)
    assert [(i.patient, i.visit, i.source) for i in ids] == [
        ("P01", "baseline", "samplesheet"),
        ("P01", "week24", "samplesheet"),
        ("", "", "none"),
    ]
    assert ids[0].lymphocytes_per_ul == 1500.0 and ids[1].lymphocytes_per_ul is None
    assert [i.sample for i in ids] == ["a", "b", "c"]
    tab = identity_table(ids)
    assert list(tab["source"]) == ["samplesheet", "samplesheet", "none"]


def test_precedence_samplesheet_then_pattern_then_keywords(tmp_path):
    sheet = _sheet(tmp_path, "file,patient,visit\nP01_baseline.fcs,P99,screening\n")
    files = ["x/P01_baseline.fcs", "x/P02_week24.fcs", "x/other.fcs", "x/none.fcs"]
    kws = [
        {"PATIENT_ID": "K1", "VISIT": "v1"},
        {"PATIENT_ID": "K2", "VISIT": "v2"},
        {"patient_id": "K3", "visit": "v3"},  # keyword names are case-insensitive
        {"$FIL": "none.fcs"},
    ]
    ids = resolve_identities(files, samplesheet=sheet, pattern=PATTERN, keywords=kws)
    assert [(i.patient, i.visit, i.source) for i in ids] == [
        ("P99", "screening", "samplesheet"),
        ("P02", "week24", "pattern"),
        ("K3", "v3", "keywords"),
        ("", "", "none"),
    ]


def test_configurable_keyword_names():
    kw = {"SUBJ": "S7", "TP": "d0", "PATIENT_ID": "ignored"}
    assert identity_from_keywords(kw, "SUBJ", "TP")["patient"] == "S7"
    assert identity_from_keywords(kw, ["NOPE", "subj"], ["tp"])["visit"] == "d0"
    assert identity_from_keywords({"PATIENT_ID": "P1"}) is None  # no visit
    # BD FACSDiva writes the tube as "TUBE NAME"
    bd = identity_from_keywords({"PATIENT_ID": "P1", "VISIT": "v", "TUBE NAME": "Tube_002"})
    assert bd == {"patient": "P1", "visit": "v", "tube": "Tube_002"}


def test_pattern_needs_named_groups():
    with pytest.raises(IdentityError, match="named groups"):
        compile_pattern(r"(P\d+)_(\w+)")
    with pytest.raises(IdentityError, match="not a valid regex"):
        compile_pattern(r"(?P<patient>")
    ids = resolve_identities(
        ["P3_wk4_tube2.fcs"], pattern=r"(?P<patient>P\d)_(?P<visit>wk\d)_tube(?P<tube>\d)"
    )
    assert (ids[0].patient, ids[0].visit, ids[0].tube) == ("P3", "wk4", "2")


def test_duplicate_identity_names_both_files():
    with pytest.raises(IdentityError, match=r"a/P01_baseline\.fcs.*b/P01_baseline\.fcs"):
        resolve_identities(["a/P01_baseline.fcs", "b/P01_baseline.fcs"], pattern=PATTERN)
    kws = [{"PATIENT_ID": "P1", "VISIT": "v"}, {"PATIENT_ID": "P1", "VISIT": "v"}]
    with pytest.raises(IdentityError, match="one.fcs.*two.fcs"):
        resolve_identities(["one.fcs", "two.fcs"], keywords=kws)
    # different tubes of one patient and visit are fine
    sheet_ids = resolve_identities(
        ["t1.fcs", "t2.fcs"],
        pattern=r"t(?P<tube>\d)(?P<patient>)(?P<visit>)",
    )
    assert all(not i.known for i in sheet_ids)  # empty groups do not count as identity


def test_contradictory_samplesheet_rows(tmp_path):
    sheet = _sheet(tmp_path, "file,patient,visit\na.fcs,P01,baseline\na.fcs,P02,baseline\n")
    with pytest.raises(IdentityError, match=r"'a\.fcs'.*lines \[2, 3\].*contradictory"):
        read_samplesheet(sheet)
    same = _sheet(tmp_path, "file,patient,visit\na.fcs,P01,b\na.fcs,P01,b\n", "s2.csv")
    assert len(read_samplesheet(same)) == 1


def test_samplesheet_errors(tmp_path):
    with pytest.raises(IdentityError, match="does not exist"):
        read_samplesheet(tmp_path / "missing.csv")
    bad = _sheet(tmp_path, "file,subject\na.fcs,P1\n")
    with pytest.raises(IdentityError, match=r"missing column\(s\) \['patient', 'visit'\]"):
        read_samplesheet(bad)
    bad2 = _sheet(tmp_path, "file,patient,visit,lymphocytes_per_ul\na.fcs,P1,v,lots\n", "b.csv")
    with pytest.raises(IdentityError, match="line 2: lymphocytes_per_ul 'lots'"):
        read_samplesheet(bad2)
    bad3 = _sheet(tmp_path, "file,patient,visit\n,P1,v\n", "c.csv")
    with pytest.raises(IdentityError, match=r"line\(s\) \[2\] have no file"):
        read_samplesheet(bad3)


def test_ambiguous_base_name_in_samplesheet(tmp_path):
    sheet = _sheet(tmp_path, "file,patient,visit\nx/a.fcs,P1,v\ny/a.fcs,P2,v\n")
    ids = resolve_identities([str(tmp_path / "y" / "a.fcs")], samplesheet=sheet)
    assert ids[0].patient == "P2"  # resolved by path
    with pytest.raises(IdentityError, match="matches lines"):
        resolve_identities(["elsewhere/a.fcs"], samplesheet=sheet)


def test_sample_names_unique():
    assert sample_names(["a/x.fcs", "b/x.fcs", "c/y.fcs"]) == ["a/x", "b/x", "y"]
    assert sample_names(["a/x.fcs", "a/x.fcs"]) == ["a/x#1", "a/x#2"]


def test_clashes_kept_and_described():
    """clashes="keep" returns every identity; find_clashes groups the files per identity,
    in input order, with where each identity came from; unknown identities never clash."""
    files = ["a/P01_wk4.fcs", "x.fcs", "b/P01_wk4.fcs", "y.fcs", "z.fcs", "n1.fcs", "n2.fcs"]
    kws = [None, {"PATIENT_ID": "P01", "VISIT": "wk4"}, None, {"PATIENT": "P2", "VISIT": "b"},
           {"SUBJECT": "P2", "TIMEPOINT": "b"}, {}, {}]  # fmt: skip
    with pytest.raises(IdentityClashError, match=r"P01.*wk4.*a/P01_wk4\.fcs.*x\.fcs"):
        resolve_identities(files, pattern=PATTERN, keywords=kws)
    ids = resolve_identities(files, pattern=PATTERN, keywords=kws, clashes="keep")
    assert len(ids) == 7
    found = find_clashes(ids)
    assert [(c.patient, c.visit, c.tube) for c in found] == [("P01", "wk4", ""), ("P2", "b", "")]
    assert found[0].files == ("a/P01_wk4.fcs", "x.fcs", "b/P01_wk4.fcs")
    assert found[0].samples == ("a/P01_wk4", "x", "b/P01_wk4")
    assert found[0].sources == ("pattern", "keywords", "pattern")
    assert found[0].others("x.fcs") == ["a/P01_wk4.fcs", "b/P01_wk4.fcs"]
    assert found[1].files == ("y.fcs", "z.fcs")
    assert (
        clash_summary(found[1:])
        == "2 files share an identity: patient 'P2' visit 'b' (y.fcs, z.fcs)"
    )
    assert clash_summary(found).startswith("5 files share identities: patient 'P01' visit 'wk4' (")
    # an IdentityClashError is an IdentityError (callers catching the old class still do)
    assert issubclass(IdentityClashError, IdentityError)
    with pytest.raises(ValueError, match="clashes must be"):
        resolve_identities(files, clashes="ignore")


def test_tube_separates_identities(tmp_path):
    sheet = _sheet(
        tmp_path, "file,patient,visit,tube\na.fcs,P1,v1,1\nb.fcs,P1,v1,2\nc.fcs,P1,v1,2\n"
    )
    ids = resolve_identities(["a.fcs", "b.fcs", "c.fcs"], samplesheet=sheet, clashes="keep")
    (clash,) = find_clashes(ids)
    assert (
        clash.files == ("b.fcs", "c.fcs") and clash.identity == "patient 'P1' visit 'v1' tube '2'"
    )


def test_header_keywords_without_reading_events(tmp_path):
    from immunoprofile.io.write import write_fcs
    from immunoprofile.simulate import simulate_sample

    s, _ = simulate_sample(events=500, seed=1)
    s.keywords["PATIENT_ID"] = "P7"
    s.keywords["VISIT"] = "week24"
    good = write_fcs(s, tmp_path / "good.fcs")
    cut = tmp_path / "cut.fcs"
    cut.write_bytes(good.read_bytes()[:4000])  # TEXT intact, DATA cut short
    junk = tmp_path / "junk.fcs"
    junk.write_text("not an FCS file")
    kws = header_keywords([good, str(cut), junk, s, tmp_path / "missing.fcs"])
    assert identity_from_keywords(kws[0]) == {"patient": "P7", "visit": "week24", "tube": ""}
    assert identity_from_keywords(kws[1])["patient"] == "P7"
    assert kws[2:] == [None, None, None]


def test_make_unique():
    assert make_unique(["a", "b", "a", "c", "a"]) == ["a#1", "b", "a#2", "c", "a#3"]
    assert make_unique(["x", "y"]) == ["x", "y"]
