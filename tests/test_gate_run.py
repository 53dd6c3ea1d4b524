"""Batch gating: tables, errors, outputs, plots, parallel runs and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import immunoprofile.gating.run as run
from immunoprofile.gating.gates import (
    BooleanGate,
    EllipseGate,
    PolygonGate,
    QuadrantGate,
    RangeGate,
    RectangleGate,
)
from immunoprofile.sample import Sample, make_channel_table

# --- a stand-in engine over static gates: tests the batch logic without the real engine --


@dataclass
class _Pop:
    name: str
    parent: str | None
    gate: object


class _Template:
    name = "static"
    populations = [
        _Pop("lymphocytes", None, RectangleGate(("FSC-A", "SSC-A"), (0.2, 0.1), (0.8, 0.6))),
        _Pop("T", "lymphocytes", RangeGate(("CD3",), 0.5, None)),
        _Pop("CD4", "T", QuadrantGate(("CD4", "CD8"), (0.5, 0.5), ("+", "-"))),
        _Pop(
            "Treg", "CD4", PolygonGate(("CD25", "CD127"), ((0.6, 0), (1, 0), (1, 0.4), (0.6, 0.4)))
        ),
        _Pop("E", "CD4", EllipseGate(("CD25", "CD127"), (0.3, 0.6), ((0.01, 0), (0, 0.02)), 1.0)),
        _Pop("nonT", "lymphocytes", BooleanGate(("T",), "not")),
    ]


class _Result:
    def __init__(self, sample: Sample, template: _Template) -> None:
        self.sample, self.template, self.masks = sample, template, {}
        cols = {
            m or n: i for i, (n, m) in enumerate(zip(sample.channels.name, sample.channels.marker))
        }
        for p in template.populations:
            parent = self.masks[p.parent] if p.parent else np.ones(sample.n_events, bool)
            if isinstance(p.gate, BooleanGate):
                m = p.gate.mask([self.masks[d] for d in p.gate.dims])
            else:
                m = p.gate.mask([sample.events[:, cols[d]] for d in p.gate.dims])
            self.masks[p.name] = m & parent
        self.fitted = {}
        for p in template.populations:
            chans = (
                []
                if isinstance(p.gate, BooleanGate)
                else [sample.channel_names[cols[d]] for d in p.gate.dims]
            )
            self.fitted[p.name] = dict(p.gate.to_dict(), fallback=p.name == "T", channels=chans)
        self.qc = [{"population": "E", "flag": "low_count", "detail": "fewer than 100 events"}]

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.masks.items()}


def _sample(seed: int, name: str, **kw: str) -> Sample:
    ev = np.random.default_rng(seed).random((5000, 7), dtype=np.float32)
    ch = make_channel_table(
        ["FSC-A", "SSC-A", "B1-A", "B2-A", "B3-A", "B4-A", "B5-A"],
        [None, None, "CD3", "CD4", "CD8", "CD25", "CD127"],
    )
    return Sample(ev, ch, dict(kw), name=name)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(run, "_apply", lambda s, t, seed=0, *a, **k: _Result(s, t))
    return _Template()


def test_batch_with_a_bad_file(stand_in, tmp_path):
    bad = tmp_path / "P03_baseline.fcs"
    bad.write_bytes(b"this is not an FCS file")
    items = [
        _sample(1, "P01_baseline", PATIENT_ID="P01", VISIT="baseline"),
        str(bad),
        _sample(2, "P01_week24", PATIENT_ID="P01", VISIT="week24"),
    ]
    res = run.gate(items, stand_in)
    err = res.errors
    assert list(err.columns) == [
        "file", "sample", "error_type", "message", "patient", "visit", "tube", "other_files",
    ]  # fmt: skip
    assert len(err) == 1 and err.at[0, "file"] == str(bad)
    assert "P03_baseline.fcs" in err.at[0, "message"]
    t = res.table()
    assert list(t["sample"].unique()) == ["P01_baseline", "P01_week24"]
    # counts agree with an independent evaluation of the same gates
    s = items[0]
    lym = (
        (s.events[:, 0] >= 0.2)
        & (s.events[:, 0] < 0.8)
        & (s.events[:, 1] >= 0.1)
        & (s.events[:, 1] < 0.6)
    )
    tee = lym & (s.events[:, 2] >= 0.5)
    row = t[(t["sample"] == "P01_baseline") & (t["population"] == "T")].iloc[0]
    assert row["count"] == tee.sum() and row["parent_count"] == lym.sum()
    assert row["percent_of_parent"] == pytest.approx(100 * tee.sum() / lym.sum())
    nont = t[(t["sample"] == "P01_baseline") & (t["population"] == "nonT")].iloc[0]
    assert nont["count"] == (lym & ~tee).sum()
    wide = res.per_visit()
    assert set(wide) == {"baseline", "week24"} and list(wide["week24"].index) == ["P01"]
    qc = res.qc()
    assert len(qc) == 2 and set(qc["flag"]) == {"low_count"}


def test_write_outputs(stand_in, tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("file,patient,visit,lymphocytes_per_ul\nA,P01,baseline,2000\nB,P01,week24,\n")
    res = run.gate([_sample(1, "A"), _sample(2, "B")], stand_in, samplesheet=sheet)
    out = tmp_path / "out"
    res.write(out)
    names = {p.name for p in out.iterdir()}
    assert {
        "populations.csv", "populations.parquet", "populations_baseline.csv",
        "populations_week24.csv", "populations.xlsx", "gates.json", "qc.csv", "errors.csv",
    } <= names  # fmt: skip
    pop = pd.read_csv(out / "populations.csv")
    assert "cells_per_ul" in pop.columns
    lym = pop[(pop["sample"] == "A") & (pop["population"] == "T")].iloc[0]
    assert lym["cells_per_ul"] == pytest.approx(2000 * lym["percent_of_lymphocytes"] / 100)
    gates = json.loads((out / "gates.json").read_text())
    assert gates["samples"]["A"]["gates"]["T"] == {
        "type": "range", "dims": ["CD3"], "min": 0.5, "max": None, "fallback": True,
        "channels": ["B1-A"],
    }  # fmt: skip
    assert pd.read_csv(out / "errors.csv").empty


def test_plots(stand_in, tmp_path):
    res = run.gate([_sample(1, "A")], stand_in, plots_dir=tmp_path / "plots")
    pngs = sorted((tmp_path / "plots" / "A").glob("*.png"))
    names = [p.name for p in _Template.populations]
    assert [p.name for p in pngs] == [f"{i:02d}_{n}.png" for i, n in enumerate(names, 1)]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    fig = res.plot("A", "Treg")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("CD25") and ax.get_ylabel().startswith("CD127")
    assert "Treg" in ax.get_title()
    grid = res.plot("A")
    assert len(grid.axes) == len(_Template.populations)
    with pytest.raises(KeyError, match="no sample"):
        res.plot("nope")


# --- with the real reader and engine ------------------------------------------------------

TEMPLATE = {
    "name": "mini",
    "compensation": "none",
    "transforms": None,
    "populations": [
        {
            "name": "lymphocytes",
            "parent": None,
            "gate": {
                "type": "rectangle",
                "dims": ["FSC-A", "SSC-A"],
                "min": [0.2, 0.0],
                "max": [0.9, 0.5],
            },
        },
        {
            "name": "T",
            "parent": "lymphocytes",
            "gate": {"type": "density_min", "dims": ["CD3"], "side": "+"},
        },
        {
            "name": "CD4",
            "parent": "T",
            "gate": {
                "type": "quadrant",
                "dims": ["CD4", "CD8"],
                "thresholds": [0.5, 0.5],
                "signs": ["+", "-"],
            },
        },
        {
            "name": "nonT",
            "parent": "lymphocytes",
            "gate": {"type": "boolean", "dims": ["T"], "op": "not"},
        },
    ],
}


def _fcs_sample(seed: int, patient: str, visit: str, n: int = 4000) -> Sample:
    """Scatter in [0, 1], a bimodal CD3 (T and non-T), CD4/CD8 within T."""
    rng = np.random.default_rng(seed)
    ev = np.empty((n, 5), dtype=np.float32)
    ev[:, 0] = rng.uniform(0.0, 1.0, n)
    ev[:, 1] = rng.uniform(0.0, 1.0, n)
    is_t = rng.random(n) < 0.55 + 0.05 * (seed % 3)
    ev[:, 2] = np.where(is_t, rng.normal(0.75, 0.05, n), rng.normal(0.25, 0.05, n))
    cd4 = is_t & (rng.random(n) < 0.6)
    ev[:, 3] = np.where(cd4, rng.normal(0.8, 0.05, n), rng.normal(0.2, 0.05, n))
    ev[:, 4] = np.where(is_t & ~cd4, rng.normal(0.8, 0.05, n), rng.normal(0.2, 0.05, n))
    ch = make_channel_table(
        ["FSC-A", "SSC-A", "FL1-A", "FL2-A", "FL3-A"],
        [None, None, "CD3", "CD4", "CD8"],
        ranges=[4.0] * 5,
    )
    return Sample(ev, ch, {"PATIENT_ID": patient, "VISIT": visit}, name=f"{patient}_{visit}")


@pytest.fixture(scope="module")
def fcs_cohort(tmp_path_factory):
    from immunoprofile.io.write import write_fcs

    d = tmp_path_factory.mktemp("cohort")
    files = []
    for i, (p, v) in enumerate(
        [("P01", "baseline"), ("P01", "week24"), ("P02", "baseline"), ("P02", "week24")]
    ):
        files.append(str(write_fcs(_fcs_sample(i, p, v), d / f"{p}_{v}.fcs")))
    tpl = d / "mini.json"
    tpl.write_text(json.dumps(TEMPLATE))
    bad = d / "P03_baseline.fcs"
    bad.write_bytes(b"FCS3.1    garbage that ends before its TEXT segment")
    return d, files, str(tpl), str(bad)


def test_real_engine_jobs_identical_and_bad_file(fcs_cohort):
    d, files, tpl, bad = fcs_cohort
    one = run.gate([*files, bad], tpl, jobs=1)
    two = run.gate([*files, bad], tpl, jobs=2)
    pd.testing.assert_frame_equal(one.table(), two.table())
    assert one.fitted_gates() == two.fitted_gates()
    pd.testing.assert_frame_equal(one.errors, two.errors)
    assert list(one.table()["sample"].unique()) == [Path(f).stem for f in files]
    err = one.errors
    assert len(err) == 1 and err.at[0, "file"] == bad and "P03_baseline.fcs" in err.at[0, "message"]
    # identity came from the FCS keywords
    wide = one.per_visit()
    assert sorted(wide) == ["baseline", "week24"] and list(wide["baseline"].index) == ["P01", "P02"]
    # counts are the engine's, percentages follow from them
    t = one.table().set_index(["sample", "population"])
    lym = t.loc[("P01_baseline", "lymphocytes"), "count"]
    tee = t.loc[("P01_baseline", "T"), "count"]
    assert t.loc[("P01_baseline", "T"), "percent_of_parent"] == pytest.approx(100 * tee / lym)
    assert t.loc[("P01_baseline", "nonT"), "count"] == lym - tee
    # the adaptive CD3 cut lies between the two peaks (0.25 and 0.75)
    cut = one.fitted_gates()["P01_baseline"]["gates"]["T"]["min"]
    assert 0.35 < cut < 0.65


def test_dask_scheduler_identical(fcs_cohort):
    distributed = pytest.importorskip("dask.distributed")
    d, files, tpl, bad = fcs_cohort
    local = run.gate(files[:2], tpl)
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        remote = run.gate(files[:2], tpl, scheduler=cluster.scheduler_address)
    pd.testing.assert_frame_equal(local.table(), remote.table())


def test_cli_gate(fcs_cohort, tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    d, files, tpl, bad = fcs_cohort
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        "file,patient,visit,lymphocytes_per_ul\n"
        + "".join(
            f"{Path(f).name},{Path(f).stem.split('_')[0]},{Path(f).stem.split('_')[1]},1800\n"
            for f in files
        )
    )
    out = tmp_path / "results"
    r = CliRunner().invoke(
        main,
        [
            "gate",
            "--template",
            tpl,
            *files,
            bad,
            "--samplesheet",
            str(sheet),
            "--out",
            str(out),
            "--plots",
        ],
    )
    assert r.exit_code == 1, r.output
    assert "P03_baseline.fcs" in r.output
    for name in (
        "populations.csv", "populations.parquet", "populations_baseline.csv", "populations_week24.csv",
        "populations.xlsx", "gates.json", "qc.csv", "errors.csv",
    ):  # fmt: skip
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(Path(f).stem for f in files)
    errors = pd.read_csv(out / "errors.csv")
    assert list(errors["file"]) == [bad]
    pop = pd.read_csv(out / "populations.csv")
    assert set(pop["sample"]) == {Path(f).stem for f in files}
    assert "cells_per_ul" in pop.columns
    wide = pd.read_csv(out / "populations_week24.csv", index_col=0)
    assert list(wide.index) == ["P01", "P02"] and list(wide.columns) == [
        "lymphocytes (% of all events)", "lymphocytes (events)", "T (% of lymphocytes)",
        "T (events)", "CD4 (% of T)", "CD4 (events)", "nonT (% of lymphocytes)", "nonT (events)",
    ]  # fmt: skip
    tidy = pop[pop["visit"] == "week24"].set_index(["patient", "population"])
    np.testing.assert_allclose(
        wide["CD4 (% of T)"],
        tidy.loc[[("P01", "CD4"), ("P02", "CD4")], "percent_of_parent"].round(2),
    )
    assert list(wide["CD4 (events)"]) == list(tidy.loc[[("P01", "CD4"), ("P02", "CD4")], "count"])
    # a clean batch exits 0, identity from a filename pattern
    r2 = CliRunner().invoke(
        main,
        [
            "gate",
            "-t",
            tpl,
            *files,
            "-o",
            str(tmp_path / "r2"),
            "--pattern",
            r"(?P<patient>P\d+)_(?P<visit>\w+)\.fcs",
            "-j",
            "2",
        ],
    )
    assert r2.exit_code == 0, r2.output
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "r2" / "populations.csv").drop(
            columns="cells_per_ul", errors="ignore"
        ),
        pop.drop(columns="cells_per_ul"),
    )


def test_cli_bad_inputs(fcs_cohort, tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    d, files, tpl, bad = fcs_cohort
    r = CliRunner().invoke(
        main, ["gate", "-t", "no_such_template", *files, "-o", str(tmp_path / "x")]
    )
    assert r.exit_code == 1 and "no_such_template" in r.output
    r = CliRunner().invoke(
        main, ["gate", "-t", tpl, *files, "-o", str(tmp_path / "x"), "--pattern", r"(\d+)"]
    )
    assert r.exit_code == 1 and "named groups" in r.output


def test_cli_templates(tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    r = CliRunner().invoke(main, ["templates", "list"])
    assert r.exit_code == 0 and "tregs" in r.output
    r = CliRunner().invoke(main, ["templates", "show", "tregs"])
    assert r.exit_code == 0
    assert r.output.index("lymphocytes") < r.output.index("Treg_FOXP3")
    good = tmp_path / "good.json"
    good.write_text(json.dumps(TEMPLATE))
    r = CliRunner().invoke(main, ["templates", "validate", str(good)])
    assert r.exit_code == 0 and "valid (4 populations" in r.output
    broken = dict(
        TEMPLATE,
        populations=[
            *TEMPLATE["populations"],
            {"name": "x", "parent": "nope", "gate": TEMPLATE["populations"][0]["gate"]},
        ],
    )
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken))
    r = CliRunner().invoke(main, ["templates", "validate", str(bad)])
    assert r.exit_code == 1 and "nope" in r.output


def test_failed_plot_is_a_qc_flag_not_an_error(stand_in, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no ink")

    monkeypatch.setattr(run, "save_gate_plots", boom)
    res = run.gate([_sample(1, "A")], stand_in, plots_dir=tmp_path / "plots")
    assert res.errors.empty
    qc = res.qc()
    assert qc[qc["flag"] == "plot_failed"]["detail"].tolist() == ["RuntimeError: no ink"]
    assert len(res.table()) == len(_Template.populations)


def test_cli_on_a_simulated_cohort(tmp_path):
    """The documented command on a small simulated cohort: identities from the samplesheet,
    cells/uL from its lymphocyte counts, and the main populations close to the truth."""
    from click.testing import CliRunner

    from immunoprofile.cli import main
    from immunoprofile.simulate import simulate_cohort

    cohort = tmp_path / "cohort"
    simulate_cohort(cohort, patients=2, events=20_000, seed=3)
    files = sorted(str(p) for p in cohort.glob("*.fcs"))
    out = tmp_path / "results"
    r = CliRunner().invoke(
        main,
        [
            "gate",
            "--template",
            "tregs",
            *files,
            "--samplesheet",
            str(cohort / "samplesheet.csv"),
            "--out",
            str(out),
        ],
    )
    assert r.exit_code == 0, r.output
    pop = pd.read_csv(out / "populations.csv")
    sheet = pd.read_csv(cohort / "samplesheet.csv")
    sheet["sample"] = sheet["file"].str.replace(".fcs", "", regex=False)
    ids = pop[["sample", "patient", "visit"]].drop_duplicates().merge(sheet, on="sample")
    assert (ids["patient_x"] == ids["patient_y"]).all() and (ids["visit_x"] == ids["visit_y"]).all()
    lym = pop.merge(sheet[["sample", "lymphocytes_per_ul"]], on="sample")
    np.testing.assert_allclose(
        lym["cells_per_ul"], lym["lymphocytes_per_ul"] * lym["percent_of_lymphocytes"] / 100
    )
    truth = pd.read_csv(cohort / "truth_frequencies.csv")
    m = pop.merge(truth, on=["sample", "population"], suffixes=("", "_truth"))
    main_pops = m[m["population"].isin(["T", "CD4", "Treg"])]
    assert len(main_pops) == 3 * len(files)
    err = (main_pops["percent_of_parent"] - main_pops["percent_of_parent_truth"]).abs()
    assert err.max() < 1.5, main_pops[
        ["sample", "population", "percent_of_parent", "percent_of_parent_truth"]
    ]
    wide = pd.read_csv(out / "populations_week24.csv", index_col=0)
    assert list(wide.index) == ["P01", "P02"] and "Treg (% of CD4)" in wide.columns


def test_cli_mixed_batch_loses_nothing(fcs_cohort, tmp_path):
    """Good files beside a truncated FCS, a non-FCS file and a file lacking a marker of the
    template: the good ones are gated, each bad one is named in errors.csv with the place
    and the cause, the summary counts the failures and the exit status is 1."""
    from click.testing import CliRunner

    from immunoprofile.cli import main
    from immunoprofile.io.write import write_fcs

    d, files, tpl, _ = fcs_cohort
    trunc = tmp_path / "P05_baseline.fcs"
    whole = write_fcs(_fcs_sample(5, "P05", "baseline"), tmp_path / "whole.fcs")
    trunc.write_bytes(Path(whole).read_bytes()[:5000])
    text = tmp_path / "P06_baseline.fcs"
    text.write_text("file,patient\nthis is a CSV file,P06\n")
    s = _fcs_sample(7, "P07", "baseline")
    s.channels.loc[4, "marker"] = "CD99"  # CD8 is gone
    no_cd8 = write_fcs(s, tmp_path / "P07_baseline.fcs")
    bad = [str(trunc), str(text), str(no_cd8)]
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["gate", "-t", tpl, *files, *bad, "-o", str(out), "-q"])
    assert r.exit_code == 1, r.output
    assert f"3 of {len(files) + 3} file(s) failed" in r.output
    err = pd.read_csv(out / "errors.csv").set_index("file")
    assert list(err.index) == bad
    assert err.loc[str(trunc), "error_type"] == "TruncatedFCSError"
    assert "byte" in err.loc[str(trunc), "message"]
    assert err.loc[str(text), "error_type"] == "NotFCSError"
    assert err.loc[str(no_cd8), "error_type"] == "MarkerNotFoundError"
    msg = err.loc[str(no_cd8), "message"]
    assert "\n  CD4: CD8\n" in msg and "CD99 (FL3-A)" in msg
    for f, m in err["message"].items():
        assert Path(f).name in m
    pop = pd.read_csv(out / "populations.csv")
    assert list(pop["sample"].unique()) == [Path(f).stem for f in files]
    samples = pd.read_csv(out / "samples.csv", dtype={"events": "Int64"})
    assert samples["status"].tolist() == ["ok"] * len(files) + [
        "TruncatedFCSError", "NotFCSError", "MarkerNotFoundError",
    ]  # fmt: skip
    assert samples["events"].iloc[: len(files)].tolist() == [4000] * len(files)
    assert "4000.0" not in (out / "samples.csv").read_text()


def test_provenance_per_sample_written_and_tabulated(tmp_path):
    """Compensation source and transforms per file: on the result, in provenance.json, in
    the per-file and per-channel tables; identical from worker processes."""
    from immunoprofile.simulate import simulate_sample

    samples = []
    for i, (p, v) in enumerate([("P01", "baseline"), ("P01", "week24")]):
        s, _ = simulate_sample(events=3000, seed=10 + i)
        s.name = f"{p}_{v}"
        samples.append(s)
    res = run.gate(samples, "tregs")
    prov = res.provenance()
    assert list(prov) == ["P01_baseline", "P01_week24"]
    one = prov["P01_week24"]
    assert one["transforms"]["FITC-A"]["type"] == "logicle"
    assert len(one["compensation"]["matrix"]) == len(one["compensation"]["detectors"]) == 20
    assert prov == run.gate(samples, "tregs", jobs=2).provenance()
    res.write(tmp_path)
    back = json.loads((tmp_path / "provenance.json").read_text())
    assert back["template"] == "tregs" and back["samples"] == prov
    table = res.provenance_table()
    assert list(table.columns) == list(run.PROVENANCE_COLUMNS)
    assert table["detectors"].tolist() == [20, 20]
    assert table["transforms"].iloc[0] == (
        "linear(t=262144, a=0) on FSC-A, FSC-H, SSC-A, SSC-H; "
        "logicle(t=262144, w=0.5, m=4.5, a=0) on 20 channels"
    )
    per_channel = run.transform_table(back).set_index(["sample", "channel"])
    assert len(per_channel) == 2 * 24
    assert per_channel.loc[("P01_baseline", "PE-A"), "marker"] == "CD25"
    assert per_channel.loc[("P01_baseline", "PE-A"), "parameters"] == "t=262144, w=0.5, m=4.5, a=0"


def test_provenance_of_uncompensated_untransformed_files(fcs_cohort):
    d, files, tpl, bad = fcs_cohort
    res = run.gate([*files[:2], bad], tpl)
    table = res.provenance_table()
    assert table["sample"].tolist() == [Path(f).stem for f in files[:2]]
    assert (table["compensation"] == "none").all() and (table["transforms"] == "none").all()
    assert table["fcs_version"].tolist() == ["3.1", "3.1"]


def test_cli_gate_twice_into_one_folder_leaves_no_stale_visit_table(fcs_cohort, tmp_path):
    """A second `gate --out DIR` with other files: the per-visit table the first run wrote
    for a visit the second run has no rows for is removed; a user's file is not."""
    from click.testing import CliRunner

    from immunoprofile.cli import main

    d, files, tpl, _ = fcs_cohort
    out = tmp_path / "results"
    r = CliRunner().invoke(main, ["gate", "-t", tpl, *files, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.glob("populations_*.csv")} == {
        "populations_baseline.csv", "populations_week24.csv",
    }  # fmt: skip
    (out / "populations_my_notes.csv").write_text("patient,comment\nP01,kept\n")
    baseline = [f for f in files if "baseline" in f]
    r = CliRunner().invoke(main, ["gate", "-t", tpl, *baseline, "-o", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert {p.name for p in out.glob("populations_*.csv")} == {
        "populations_baseline.csv", "populations_my_notes.csv",
    }  # fmt: skip
    assert (out / "populations_my_notes.csv").read_text() == "patient,comment\nP01,kept\n"
    pop = pd.read_csv(out / "populations.csv")
    assert set(pop["visit"]) == {"baseline"}
    wide = pd.read_csv(out / "populations_baseline.csv", index_col=0)
    assert sorted(wide.index) == ["P01", "P02"]
    sheets = pd.read_excel(out / "populations.xlsx", sheet_name=None)
    assert list(sheets) == ["baseline", "metadata"]
    manifest = json.loads((out / "outputs.json").read_text())
    assert "populations_baseline.csv" in manifest["files"]
    assert "populations_week24.csv" not in manifest["files"]
    assert "populations_my_notes.csv" not in manifest["files"]
