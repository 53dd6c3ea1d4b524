"""What the command line does is in the API: export (each file read once, a bad file
reported and the others exported), the cluster outputs with agreement and figures, and a
template's outline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main
from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.interop import export as export_mod
from immunoprofile.interop.export import export_events


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    from immunoprofile.simulate import simulate_cohort

    d = tmp_path_factory.mktemp("thin_cli")
    simulate_cohort(d, patients=1, visits=("baseline", "week24"), events=3000, seed=9)
    good = sorted(str(p) for p in d.glob("*.fcs"))
    bad = d / "P05_baseline.fcs"
    bad.write_bytes(Path(good[0]).read_bytes()[:4000])  # truncated
    return [good[0], str(bad), good[1]]


def test_export_reads_each_file_once_and_goes_on_past_a_bad_one(files, tmp_path, monkeypatch):
    from immunoprofile.io import fcs

    reads: list[str] = []
    real = fcs.read_fcs

    def counting(path, *a, **k):
        reads.append(str(path))
        return real(path, *a, **k)

    monkeypatch.setattr(fcs, "read_fcs", counting)
    res = export_events(files, "tregs", "fcs", tmp_path, population="CD4")
    assert reads == files  # once each, in order
    assert res.errors["file"].tolist() == [files[1]]
    assert res.errors["error_type"].iloc[0] == "TruncatedFCSError"
    assert res.exported["file"].tolist() == [files[0], files[2]]
    # the CD4 events of each exported file, counted independently by gating it
    from immunoprofile.gating.engine import apply_template

    for row in res.exported.itertuples():
        n = int(apply_template(real(row.file), "tregs").masks["CD4"].sum())
        assert row.events == n
        back = real(row.path)
        assert back.n_events == n and back.channel_names[-1] == "population"


def test_export_checks_what_it_can_before_reading(files, tmp_path):
    with pytest.raises(ImmunoprofileError, match="no population 'nope'"):
        export_events(files, "tregs", "fcs", tmp_path, population="nope")
    with pytest.raises(ImmunoprofileError, match="format must be one of"):
        export_events(files, "tregs", "csv", tmp_path)
    with pytest.raises(ImmunoprofileError, match="no file could be exported"):
        export_events(files[1:2], "tregs", "fcs", tmp_path)


def test_cli_export_reports_the_bad_file_and_exits_1(files, tmp_path):
    r = CliRunner().invoke(
        main, ["export", "--format", "fcs", "-t", "tregs", *files, "--out", str(tmp_path)]
    )
    assert r.exit_code == 1
    assert f"failed: {files[1]}" in r.output and "1 of 3 file(s) failed" in r.output
    assert sorted(p.name for p in tmp_path.glob("*.fcs")) == sorted(
        Path(f).name for f in (files[0], files[2])
    )
    assert export_mod.EXPORT_FORMATS == ("h5ad", "fcs")


def test_template_outline_is_what_templates_show_prints():
    from immunoprofile.gating.template import load_template

    t = load_template("tregs")
    rows = t.outline()
    assert [r["population"] for r in rows] == t.names  # parents first, template order
    treg = next(r for r in rows if r["population"] == "Treg")
    assert treg["parent"] == "CD4" and treg["gate"].endswith("CD25+ CD127-")
    assert treg["depth"] == 1 + next(r["depth"] for r in rows if r["population"] == "CD4")
    out = CliRunner().invoke(main, ["templates", "show", "tregs"]).output
    assert "Treg" in out and "CD25+ CD127-" in out


def test_cluster_write_with_gating_and_figures(files, tmp_path):
    from immunoprofile.clustering.api import cluster
    from immunoprofile.gating.run import gate

    ok = [files[0], files[2]]
    gated = gate(ok, "immune_profile").table()
    cl = cluster(ok, template="immune_profile", parent="live", grid=(4, 4), n_metaclusters=4,
                 n_resamples=5)  # fmt: skip
    written = cl.write(tmp_path, gating=gated, plots=True)
    names = {p.name for p in written}
    assert {"agreement.csv", "agreement_pairs.csv", "heatmap.png", "som_grid.png"} <= names
    agree = pd.read_csv(tmp_path / "agreement.csv")
    expect, _ = cl.agreement(gated)
    assert agree["population"].tolist() == expect["population"].tolist()
    # the manifest lists exactly what was written
    import json

    manifest = json.loads((tmp_path / "outputs.json").read_text())
    assert sorted(manifest["files"]) == sorted(names)


def test_import_gates_api_on_the_shipped_workspace(tmp_path):
    import immunoprofile as ip
    from immunoprofile.interop.importing import import_gates

    wsp, fcs = ip.example_path("example.wsp"), ip.example_path("example.fcs")
    res = import_gates(wsp, fcs=[fcs], spillover_csv=tmp_path / "ws.spillover.csv")
    # the workspace's 13 populations; example.fcs has its own Treg gate
    assert res.n_populations == 13
    assert res.sample_gates == [{"name": "example.fcs", "populations": 1,
                                 "match": {"$FIL": "example.fcs", "$TOT": "4000"}}]  # fmt: skip
    assert res.magnetic == [] and res.missing == [] and res.unused == []
    # immunoprofile counts every population as FlowJo stored it (87 Treg, 287 B cells)
    counts = res.counts.set_index("population")
    assert (counts["flowjo"] == counts["immunoprofile"]).all() and len(counts) == 13
    assert counts.loc[counts.index.str.endswith("Treg") & ~counts.index.str.contains("not"),
                      "flowjo"].tolist() == [87]  # fmt: skip
    saved = res.save(tmp_path / "ws.json")
    assert ip.load_template(saved).names == ip.load_template(res.template).names
    # Gating-ML and openCyto files come in through the same function
    assert import_gates(ip.example_path("example_gates.xml")).n_populations > 0
    assert import_gates(ip.example_path("example_opencyto.csv")).n_populations > 0
    with pytest.raises(ImmunoprofileError, match="unknown gate file type '.txt'"):
        import_gates(tmp_path / "gates.txt")


def test_describe_fcs_is_what_inspect_prints(files):
    import immunoprofile as ip
    from immunoprofile.io.fcs import read_fcs

    d = ip.describe_fcs(files[0])
    s = read_fcs(files[0])
    assert (d.n_events, d.n_channels) == (s.n_events, len(s.channel_names)) == (3000, 25)
    assert (d.version, d.dataset, d.n_datasets) == ("3.1", 0, 1)
    assert d.spillover == "$SPILLOVER" and d.cytometer == s.keywords["$CYT"]
    assert d.acquired == f"{s.keywords['$DATE']} {s.keywords['$BTIM']}"
    assert d.channels["channel"].tolist() == list(s.channel_names)
    assert d.channels.index[0] == 1 and d.channels.loc[1, "scale"] == "lin"
    assert d.channels.loc[d.channels["channel"] == "BUV395-A", "marker"].item() == "CD3"
    described, errors = ip.describe_files(files)
    assert [x.file for x in described] == [files[0], files[2]]
    assert errors["file"].tolist() == [files[1]]
    assert errors["error_type"].tolist() == ["TruncatedFCSError"]
    r = CliRunner().invoke(main, ["inspect", *files])
    assert r.exit_code == 1
    assert "FCS 3.1 | 3000 events | 25 channels | data set 1 of 1" in r.output
    assert "spillover: yes ($SPILLOVER)" in r.output
    assert f"error: {errors['message'].iloc[0]}" in r.output
    assert "1 of 3 file(s) could not be read" in r.output


def test_templates_table_is_what_templates_list_prints():
    import immunoprofile as ip

    t = ip.templates_table()
    assert t["name"].tolist() == ip.list_templates()
    assert (t["error"] == "").all()
    tregs = t.set_index("name").loc["tregs"]
    loaded = ip.load_template("tregs")
    assert tregs["populations"] == len(loaded.populations)
    assert tregs["markers"] == ", ".join(loaded.markers())
    out = CliRunner().invoke(main, ["templates", "list"], terminal_width=400).output
    assert "tregs" in out and str(len(loaded.populations)) in out


def test_export_gates_api_writes_what_the_command_writes(files, tmp_path):
    from immunoprofile.interop.gatingml import export_gates, read_gatingml

    res, strategy = export_gates(files[0], "tregs", tmp_path / "api.xml")
    r = CliRunner().invoke(
        main, ["export-gates", "-t", "tregs", files[0], "-o", str(tmp_path / "cli.xml")]
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "api.xml").read_bytes() == (tmp_path / "cli.xml").read_bytes()
    assert f"{len(strategy.gates)} gates -> " in r.output
    assert f"CD4\t{res.counts['CD4']}" in r.output and res.counts["CD4"] > 0
    assert len(read_gatingml(tmp_path / "api.xml").gates) == len(strategy.gates)


def test_compare_to_folder_writes_what_compare_writes(files, tmp_path):
    from immunoprofile.comparison import Comparison, compare
    from immunoprofile.gating.run import gate
    from immunoprofile.pipeline import compare_to_folder

    table = tmp_path / "populations.csv"
    gate([files[0], files[2]], "tregs").table().to_csv(table, index=False)
    cmp, html = compare_to_folder(table, tmp_path / "api", report=False)
    assert html is None and not (tmp_path / "api" / "report.html").exists()
    expect = compare(str(table))
    pd.testing.assert_frame_equal(cmp.stats, expect.stats)
    back = Comparison.read(tmp_path / "api")
    assert back.meta["populations"] == str(table.resolve())
    assert back.stats["population"].tolist() == expect.stats["population"].tolist()
    r = CliRunner().invoke(main, ["compare", str(table), "--out", str(tmp_path / "cli"), "-q"])
    assert r.exit_code == 0, r.output
    for name in ("changes.csv", "stats.csv", "problems.csv"):
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()
    assert f"report: {tmp_path / 'cli' / 'report.html'}" in r.output


def test_gate_to_folder_is_what_gate_writes(files, tmp_path, monkeypatch):
    from immunoprofile.exceptions import OutputError
    from immunoprofile.pipeline import gate_to_folder
    from immunoprofile.results import failures

    res, out = gate_to_folder(files, "tregs", tmp_path / "api", seed=3)
    assert out == tmp_path / "api"
    # the truncated file failed; its header names the first file's patient and visit, so
    # both are listed as sharing an identity too, and only the failure is a failure
    assert failures(res.errors)["file"].tolist() == [files[1]]
    errors = pd.read_csv(out / "errors.csv")
    assert sorted(errors["error_type"]) == ["IdentityClashError"] * 2 + ["TruncatedFCSError"]
    table = pd.read_csv(out / "populations.csv")
    assert (
        table["sample"].nunique() == 2 and table["count"].tolist() == res.table()["count"].tolist()
    )
    # the command writes the same tables through it (samples.csv also holds timings)
    r = CliRunner().invoke(
        main, ["gate", "-t", "tregs", *files, "--out", str(tmp_path / "cli"), "--seed", "3"]
    )
    assert r.exit_code == 1 and "1 of 3 file(s) failed; 2 files share an identity" in r.output
    for name in ("populations.csv", "qc.csv", "errors.csv", "gates.json", "provenance.json"):
        assert (tmp_path / "cli" / name).read_bytes() == (out / name).read_bytes(), name
    # without a folder: the default one in the current folder, as `gate` without --out
    from immunoprofile.cli import DEFAULT_OUT
    from immunoprofile.folder import DEFAULT_OUT as FOLDER_DEFAULT

    assert DEFAULT_OUT == FOLDER_DEFAULT == "immunoprofile-results"
    monkeypatch.chdir(tmp_path)
    _, default = gate_to_folder(files[:1], "tregs")
    assert default == tmp_path / "immunoprofile-results"
    assert (default / "populations.csv").is_file()
    # an input inside the folder under a name gate writes is refused before any gating
    sheet = out / "samples.csv"
    with pytest.raises(OutputError, match="samples.csv"):
        gate_to_folder(files[:1], "tregs", out, samplesheet=sheet)


def test_cluster_to_folder_checks_the_gating_table_before_clustering(files, tmp_path, monkeypatch):
    from immunoprofile import pipeline
    from immunoprofile.clustering.api import ClusterResult
    from immunoprofile.exceptions import ClusteringError
    from immunoprofile.gating.run import gate

    ok = [files[0], files[2]]
    gate(ok, "immune_profile").write(tmp_path / "g")
    bad = tmp_path / "bad.csv"
    bad.write_text("sample,visit\nx,baseline\n")
    calls = []
    real = pipeline.run_cluster
    monkeypatch.setattr(pipeline, "run_cluster", lambda *a, **k: calls.append(a) or real(*a, **k))
    with pytest.raises(ClusteringError, match=f"gating table {bad}"):
        pipeline.cluster_to_folder(ok, tmp_path / "c", gating=bad, template="immune_profile")
    assert calls == []
    res, written = pipeline.cluster_to_folder(
        files, tmp_path / "c", gating=tmp_path / "g" / "populations.csv",
        template="immune_profile", parent="live", grid=(4, 4), n_metaclusters=4,
        n_resamples=5,
    )  # fmt: skip
    assert isinstance(res, ClusterResult) and len(calls) == 1
    names = {p.name for p in written}
    assert {"agreement.csv", "heatmap.png", "errors.csv", "populations.csv"} <= names
    # the truncated file is left out and listed (on_error="skip", as the command does)
    assert pd.read_csv(tmp_path / "c" / "errors.csv")["file"].tolist() == [files[1]]
    assert sorted(pd.read_csv(tmp_path / "c" / "populations.csv")["sample"].unique()) == sorted(
        Path(f).stem for f in ok
    )


def test_simulate_effects_and_truth_summary(tmp_path):
    from immunoprofile.exceptions import SimulationError
    from immunoprofile.simulate import follow_up_effects, parse_effect, simulate_cohort

    assert parse_effect("Treg=+0.3") == ("Treg", 1.3)
    assert parse_effect(" Th17 = -0.3") == ("Th17", 0.7)
    assert parse_effect("NK=x1.5") == parse_effect("NK=1.5") == ("NK", 1.5)
    with pytest.raises(SimulationError, match="'NK=xy': 'xy' is not a number"):
        parse_effect("NK=xy")
    assert follow_up_effects() == {"Treg": 1.3, "Th17": 0.7}
    assert follow_up_effects(["NK=x1.5", "Treg=1"]) == {"Treg": 1.0, "Th17": 0.7, "NK": 1.5}
    assert follow_up_effects({"NK": 2.0}, defaults=False) == {"NK": 2.0}
    with pytest.raises(SimulationError, match="effect on 'Tregs' is not supported"):
        follow_up_effects(["Tregs=+0.3"])
    info = simulate_cohort(tmp_path, patients=2, visits=("baseline", "week24"), events=500,
                           seed=4)  # fmt: skip
    med = info.median_truth(["Treg", "B", "nope"])
    assert list(med.index) == ["baseline", "week24"] and list(med.columns) == ["Treg", "B"]
    f = info.frequencies
    treg = f[(f["population"] == "Treg") & (f["visit"] == "week24")]["percent_of_parent"]
    assert med.loc["week24", "Treg"] == pytest.approx(treg.median())
