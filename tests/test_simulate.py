"""Tests of the cohort simulator: determinism, truth consistency, frequencies, spillover,
drift and effects."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.exceptions import SimulationError
from immunoprofile.simulate import (
    CHANNELS,
    COMPONENTS,
    LEAVES,
    PANEL,
    PHENOTYPES,
    POPULATION_LEAVES,
    POPULATION_PARENTS,
    read_truth,
    simulate_cohort,
    simulate_sample,
    truth_frequencies,
    truth_mask,
)
from immunoprofile.simulate.panel import FLUORESCENCE_CHANNELS, reference_spillover

flowio = pytest.importorskip("flowio")


def _read(path):
    fd = flowio.FlowData(str(path))
    ev = np.reshape(np.array(fd.events, dtype=np.float32), (-1, fd.channel_count))
    return fd, ev


def _spill(text: str) -> tuple[list[str], np.ndarray]:
    parts = text.split(",")
    n = int(parts[0])
    return parts[1 : n + 1], np.array(parts[n + 1 :], dtype=float).reshape(n, n)


def _compensated(sample) -> np.ndarray:
    names, s = _spill(sample.keywords["$SPILLOVER"])
    idx = [sample.channel_names.index(c) for c in names]
    ev = sample.events.copy()
    ev[:, idx] = ev[:, idx] @ np.linalg.inv(s).astype(np.float32)
    return ev


def _marker(sample, events, marker):
    return events[:, sample.channel_names.index(PANEL[marker][0])]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    out = tmp_path_factory.mktemp("cohort")
    return simulate_cohort(out, patients=7, events=20_000, seed=0)


@pytest.fixture(scope="module")
def big_sample():
    return simulate_sample(events=60_000, seed=5)


# --- structure -------------------------------------------------------------------------


def test_sample_shape_channels_and_labels(big_sample):
    sample, labels = big_sample
    assert sample.events.shape == (60_000, len(CHANNELS))
    assert sample.events.dtype == np.float32
    assert sample.channel_names == list(CHANNELS)
    assert len(labels) == 60_000
    assert set(labels.categories) == set(LEAVES)
    assert not labels.isna().any()
    # every leaf appears in a 60k-event tube
    assert set(pd.Series(labels).unique()) == set(LEAVES)
    markers = dict(zip(sample.channel_names, sample.markers))
    assert markers["PE-A"] == "CD25 PE" and markers["BV510-A"] == "CD4"
    assert markers["FSC-A"] is None and markers["Time"] is None
    t = sample.column("Time")
    assert np.all(np.diff(t) >= 0)


def test_population_hierarchy_is_consistent():
    for pop, parent in POPULATION_PARENTS.items():
        assert pop in POPULATION_LEAVES
        if parent:
            assert POPULATION_LEAVES[pop] <= POPULATION_LEAVES[parent], pop
        assert POPULATION_LEAVES[pop] <= set(LEAVES)
    assert POPULATION_LEAVES["lymphocytes"] - POPULATION_LEAVES["singlets"] == {"doublet"}
    assert POPULATION_LEAVES["singlets"] - POPULATION_LEAVES["live"] == {"dead"}
    assert POPULATION_LEAVES["T"].isdisjoint(POPULATION_LEAVES["nonT"])
    assert POPULATION_LEAVES["live"] == POPULATION_LEAVES["T"] | POPULATION_LEAVES["nonT"]


def test_phenotype_table_matches_population_definitions():
    def level(label, marker):
        return {PHENOTYPES[c.name][marker][0] for c in COMPONENTS if c.label == label}

    for leaf in POPULATION_LEAVES["Treg"]:
        assert level(leaf, "CD25") <= {"positive", "bright"}
        assert level(leaf, "CD127") == {"dim"}
    for leaf in POPULATION_LEAVES["T"]:
        assert "negative" not in level(leaf, "CD3")
    assert level("Th17", "CCR6") == {"positive"} and level("Th17", "CXCR3") == {"negative"}
    assert level("Th1", "CXCR3") == {"positive"} and level("Th1", "CCR6") == {"negative"}
    assert level("NK_CD56bright", "CD56") == {"bright"}
    assert level("NK_CD56dim", "CD16") == {"bright"}
    assert PHENOTYPES["Treg_memory"]["CD25"] == ("bright", 9000.0)


def test_truth_mask_accepts_arrays_categoricals_and_leaves(big_sample):
    _, labels = big_sample
    as_str = np.asarray(labels, dtype=object)
    for pop in ("T", "Treg", "B_naive", "lymphocytes"):
        m1 = truth_mask(labels, pop)
        np.testing.assert_array_equal(m1, truth_mask(as_str, pop))
        np.testing.assert_array_equal(m1, truth_mask(pd.Series(labels), pop))
    np.testing.assert_array_equal(truth_mask(labels, "CD8"), as_str == "CD8")
    with pytest.raises(SimulationError, match="unknown population"):
        truth_mask(labels, "Tregs")


# --- spillover, compensation and drift -----------------------------------------------


def test_spillover_present_invertible_and_needed(big_sample):
    sample, labels = big_sample
    names, s = _spill(sample.keywords["$SPILLOVER"])
    assert names == list(FLUORESCENCE_CHANNELS)
    assert np.allclose(np.diag(s), 1.0)
    assert np.linalg.cond(s) < 100
    assert (s > 0.1).sum() - len(names) >= 8  # several strong off-diagonal terms
    comp = _compensated(sample)
    treg = truth_mask(labels, "Treg_memory")
    # CD25 (PE) bright memory Tregs show in the CD24 (PE-CF594) detector only without compensation
    raw_cd24 = _marker(sample, sample.events, "CD24")[treg]
    comp_cd24 = _marker(sample, comp, "CD24")[treg]
    assert np.median(raw_cd24) > 1000
    assert abs(np.median(comp_cd24)) < 300
    # compensated negatives spread below zero (detector noise), positives stay positive
    t = truth_mask(labels, "T")
    cd19_t = _marker(sample, comp, "CD19")[t]
    assert 0.05 < (cd19_t < 0).mean() < 0.8
    assert np.median(_marker(sample, comp, "CD3")[t]) > 4000


def test_drift_moves_populations_between_files():
    meds, spills = [], []
    for seed in range(6):
        s, lab = simulate_sample(events=8000, seed=seed, drift=2.0)
        comp = _compensated(s)
        meds.append(np.median(_marker(s, comp, "CD3")[truth_mask(lab, "T")]))
        spills.append(_spill(s.keywords["$SPILLOVER"])[1])
    meds = np.array(meds)
    assert meds.max() / meds.min() > 1.4
    assert not np.allclose(spills[0], spills[1])
    s0, _ = simulate_sample(events=1000, seed=0, drift=0.0)
    np.testing.assert_allclose(
        _spill(s0.keywords["$SPILLOVER"])[1], reference_spillover(), atol=1e-6
    )


def test_phenotypes_separate_after_compensation(big_sample):
    sample, labels = big_sample
    comp = _compensated(sample)
    cd4 = truth_mask(labels, "CD4")
    treg = truth_mask(labels, "Treg")
    conv = cd4 & ~treg
    cd127 = _marker(sample, comp, "CD127")
    cd25 = _marker(sample, comp, "CD25")
    assert np.median(cd127[conv]) > 4 * np.median(cd127[treg])
    assert np.median(cd25[treg]) > 3 * np.median(cd25[conv])
    b = truth_mask(labels, "B")
    assert np.median(_marker(sample, comp, "CD19")[b]) > 20 * max(
        np.median(_marker(sample, comp, "CD19")[truth_mask(labels, "T")]), 50
    )
    # lymphocytes: low side scatter; granulocytes: high
    ssc = sample.column("SSC-A")
    assert np.median(ssc[truth_mask(labels, "live")]) * 5 < np.median(
        ssc[truth_mask(labels, "granulocyte")]
    )
    # doublets: FSC-A/FSC-H clearly above singlets
    ratio = sample.column("FSC-A") / np.maximum(sample.column("FSC-H"), 1)
    assert np.median(ratio[truth_mask(labels, "doublet")]) > 1.3 * np.median(
        ratio[truth_mask(labels, "singlets")]
    )
    # dead cells: bright viability dye
    viab = _marker(sample, comp, "Viability")
    assert np.median(viab[truth_mask(labels, "dead")]) > 30 * max(
        np.median(viab[truth_mask(labels, "live")]), 30
    )


# --- cohort files ------------------------------------------------------------------------


def test_cohort_files_and_truth_consistent(cohort):
    assert len(cohort.fcs) == 14 and len(cohort.truth) == 14
    sheet = pd.read_csv(cohort.samplesheet)
    assert list(sheet.columns) == ["file", "patient", "visit", "lymphocytes_per_ul"]
    assert sheet["file"].tolist() == [p.name for p in cohort.fcs]
    assert sheet["visit"].tolist() == ["baseline", "week24"] * 7
    assert sheet["lymphocytes_per_ul"].between(300, 8000).all()
    freqs = pd.read_csv(cohort.frequencies_path)
    pd.testing.assert_frame_equal(
        freqs[["sample", "population", "count"]],
        cohort.frequencies[["sample", "population", "count"]],
    )
    for fcs, truth in zip(cohort.fcs[:4], cohort.truth[:4]):
        fd, ev = _read(fcs)
        assert fd.event_count == 20_000
        assert fd.text["patient_id"] == fcs.stem.split("_")[0]
        assert fd.text["visit"] == fcs.stem.split("_")[1]
        assert fd.text["$fil" if "$fil" in fd.text else "fil"] == fcs.name
        assert "spillover" in fd.text and "cyt" in fd.text and "date" in fd.text
        labels = pd.read_parquet(truth)["label"]
        assert isinstance(labels.dtype, pd.CategoricalDtype) and len(labels) == fd.event_count
        table = truth_frequencies(read_truth(fcs), fcs.stem)
        mine = freqs[freqs["sample"] == fcs.stem].set_index("population")
        for pop in ("lymphocytes", "T", "Treg", "Th17", "B", "NK"):
            n = int(truth_mask(labels, pop).sum())
            assert mine.loc[pop, "count"] == n
            assert table.set_index("population").loc[pop, "count"] == n
        # the truth follows the events: T cells are CD3 bright in the file itself
        cd3 = ev[:, CHANNELS.index(PANEL["CD3"][0])]
        t = truth_mask(labels, "T")
        assert np.median(cd3[t]) > 10 * np.median(np.abs(cd3[truth_mask(labels, "B")]))


def test_percentages_are_computed_from_counts(cohort):
    f = cohort.frequencies
    np.testing.assert_allclose(f["percent_of_parent"], 100 * f["count"] / f["parent_count"])
    one = f[f["sample"] == "P01_baseline"].set_index("population")
    assert one.loc["Treg", "parent_count"] == one.loc["CD4", "count"]
    assert one.loc["lymphocytes", "parent"] == "root"
    assert one.loc["lymphocytes", "parent_count"] == 20_000
    assert one.loc["lymphocytes", "percent_of_lymphocytes"] == 100.0


def test_frequencies_within_promised_ranges(cohort):
    f = cohort.frequencies
    wide = f.pivot_table(index="sample", columns="population", values="count")
    live = wide["live"]
    pct = {
        "Treg of CD4": 100 * wide["Treg"] / wide["CD4"],
        "Th17 of CD4 memory": 100 * wide["Th17"] / wide["CD4_memory"],
        "B of live lymphocytes": 100 * wide["B"] / live,
        "NK of live lymphocytes": 100 * wide["NK"] / live,
        "CD56bright of NK": 100 * wide["NK_CD56bright"] / wide["NK"],
        "T of live lymphocytes": 100 * wide["T"] / live,
        "CD4:CD8": wide["CD4"] / wide["CD8"],
        "transitional of B": 100 * wide["B_transitional"] / wide["B"],
        "plasmablasts of B": 100 * wide["plasmablasts"] / wide["B"],
        "live of lymphocytes": 100 * live / wide["lymphocytes"],
    }
    ranges = {
        "Treg of CD4": (3.5, 14),
        "Th17 of CD4 memory": (0.6, 4.5),
        "B of live lymphocytes": (3.5, 18),
        "NK of live lymphocytes": (3.5, 24),
        "CD56bright of NK": (3, 13),
        "T of live lymphocytes": (55, 88),
        "CD4:CD8": (1.2, 4.0),
        "transitional of B": (0.5, 12),
        "plasmablasts of B": (0.0, 5),
        "live of lymphocytes": (85, 97),
    }
    for name, values in pct.items():
        lo, hi = ranges[name]
        assert values.between(lo, hi).all(), (name, values.round(2).to_dict())
    # patients differ from each other
    assert pct["Treg of CD4"].std() > 0.5 and pct["B of live lymphocytes"].std() > 1


def test_default_effect_direction_recoverable(cohort):
    f = cohort.frequencies
    w = f.pivot_table(index=["patient", "visit"], columns="population", values="percent_of_parent")
    change = np.log(w.xs("week24", level="visit") / w.xs("baseline", level="visit"))
    assert (change["Treg"] > 0).sum() >= 6 and change["Treg"].median() > 0.15
    assert (change["Th17"] < 0).sum() >= 6 and change["Th17"].median() < -0.15
    assert abs(change["B"].median()) < 0.12 and abs(change["NK"].median()) < 0.12
    eff = pd.read_csv(cohort.out_dir / "truth_effects.csv")
    assert set(eff["population"]) == {"Treg", "Th17"} and set(eff["visit"]) == {"week24"}
    assert (eff.loc[eff["population"] == "Treg", "multiplier"] > 1).all()


def test_custom_effects_and_no_effects(tmp_path):
    info = simulate_cohort(
        tmp_path / "a", patients=5, events=20_000, seed=3, effects={"NK": 1.8, "Treg": 1.0}
    )
    w = info.frequencies.pivot_table(
        index=["patient", "visit"], columns="population", values="percent_of_lymphocytes"
    )
    change = np.log(w.xs("week24", level="visit") / w.xs("baseline", level="visit"))
    assert (change["NK"] > 0.2).all() and change["NK"].median() > 0.4
    # Treg share of CD4 is untouched (its share of lymphocytes falls as NK take room)
    wp = info.frequencies.pivot_table(
        index=["patient", "visit"], columns="population", values="percent_of_parent"
    )
    treg = np.log(wp.xs("week24", level="visit") / wp.xs("baseline", level="visit"))["Treg"]
    assert abs(treg.median()) < 0.1
    none = simulate_cohort(tmp_path / "b", patients=2, events=2000, seed=3, effects={})
    assert none.effects.empty


def test_same_seed_gives_identical_files(tmp_path):
    def digests(out):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}

    kw = dict(patients=2, visits=("baseline", "week24", "week48"), events=3000, seed=11)
    a = simulate_cohort(tmp_path / "a", **kw)
    b = simulate_cohort(tmp_path / "b", **kw)
    c = simulate_cohort(tmp_path / "c", **{**kw, "seed": 12})
    da, db, dc = digests(a.out_dir), digests(b.out_dir), digests(c.out_dir)
    assert len(da) == 2 * 3 * 2 + 3
    assert da == db
    assert da["P01_baseline.fcs"] != dc["P01_baseline.fcs"]
    s1, l1 = simulate_sample(events=2000, seed=4)
    s2, l2 = simulate_sample(events=2000, seed=4)
    np.testing.assert_array_equal(s1.events, s2.events)
    assert (l1 == l2).all()


def test_visit_dates_follow_visit_names(tmp_path):
    info = simulate_cohort(tmp_path, patients=1, visits=("baseline", "week24"), events=500)
    dates = [pd.Timestamp(_read(p)[0].text["date"]) for p in info.fcs]
    assert (dates[1] - dates[0]).days == 168


def test_bad_parameters_raise_named_errors(tmp_path):
    with pytest.raises(SimulationError, match="patients"):
        simulate_cohort(tmp_path, patients=0)
    with pytest.raises(SimulationError, match="distinct"):
        simulate_cohort(tmp_path, visits=("baseline", "baseline"))
    with pytest.raises(SimulationError, match="not supported"):
        simulate_cohort(tmp_path, effects={"Tregs": 1.2})
    with pytest.raises(SimulationError, match="positive"):
        simulate_cohort(tmp_path, effects={"Treg": -1})
    with pytest.raises(SimulationError, match="no room"):
        simulate_cohort(tmp_path, patients=1, events=100, effects={"B": 20.0})
    with pytest.raises(SimulationError, match="unknown frequencies"):
        simulate_sample(frequencies={"Tregs": 0.1})


# --- command line --------------------------------------------------------------------------


def test_cli_simulate(tmp_path):
    from immunoprofile.cli import main

    out = tmp_path / "c"
    args = ["simulate", "--out", str(out), "--patients", "2", "--events", "2000"]
    res = CliRunner().invoke(
        main, [*args, "--visits", "baseline,week24,week48", "--effect", "NK=x1.5"]
    )
    assert res.exit_code == 0, res.output
    assert len(list(out.glob("*.fcs"))) == 6
    eff = pd.read_csv(out / "truth_effects.csv")
    assert set(eff["population"]) == {"Treg", "Th17", "NK"}
    assert np.allclose(eff.groupby("population")["multiplier"].median().loc["NK"], 1.5, rtol=0.25)
    res = CliRunner().invoke(main, [*args, "--effect", "Tregs=+0.3"])
    assert res.exit_code == 1 and "not supported" in res.output
    res = CliRunner().invoke(main, [*args, "--effect", "Treg"])
    assert res.exit_code == 2
    res = CliRunner().invoke(main, [*args, "--no-effects", "--plain-markers"])
    assert res.exit_code == 0
    assert _read(out / "P01_baseline.fcs")[0].text["p7s"] == "CD25"


def test_files_read_resolve_and_compensate_with_the_package(cohort):
    import immunoprofile as ip

    sample = ip.read_fcs(cohort.fcs[0])
    labels = read_truth(cohort.fcs[0])
    assert sample.n_events == len(labels) == 20_000
    for marker, (channel, _) in PANEL.items():
        assert sample.channel_names[ip.resolve_marker(sample, marker)] == channel
    comp = ip.compensate(sample)
    np.testing.assert_allclose(comp.events, _compensated(sample), rtol=1e-3, atol=0.5)
    treg = truth_mask(labels, "Treg_memory")
    assert abs(np.median(_marker(comp, comp.events, "CD24")[treg])) < 300


def test_recorded_spillover_has_realistic_measurement_error():
    from immunoprofile.simulate.engine import InstrumentState

    state = InstrumentState.draw(np.random.default_rng(0), drift=1.0)
    true, rec = state.spillover(), state.recorded_spillover()
    np.testing.assert_allclose(np.diag(rec), 1.0)
    off = (true > 0) & ~np.eye(len(true), dtype=bool)
    rel = rec[off] / true[off] - 1
    assert 0.02 < rel.std() < 0.06
    assert np.array_equal(rec == 0, true == 0)  # no spillover invented where there is none
    ideal = InstrumentState.draw(np.random.default_rng(0), drift=0.0)
    np.testing.assert_array_equal(ideal.recorded_spillover(), reference_spillover())
