"""`immunoprofile.cluster` end to end on synthetic samples with known populations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cluster_synthetic import synthetic_sample, truth_percent

import immunoprofile
from immunoprofile.clustering.agreement import adjusted_rand
from immunoprofile.clustering.api import ClusterResult, cluster, default_markers
from immunoprofile.exceptions import ClusteringError, MarkerNotFoundError

PARENTS = {
    "T": None, "CD4": "T", "CD8": "T", "Treg": "CD4", "CD4_memory": "CD4",
    "Th1": "CD4_memory", "Th2": "CD4_memory", "Th17": "CD4_memory", "B": "nonT",
    "B_naive": "B", "B_memory": "B", "NK": "nonT", "NK_CD56bright": "NK", "NK_CD56dim": "NK",
}  # fmt: skip


@pytest.fixture(scope="module")
def cohort():
    samples, labels = [], []
    for i, (p, v) in enumerate([("P1", "baseline"), ("P1", "week24"), ("P2", "baseline"),
                                ("P2", "week24")]):  # fmt: skip
        s, lab = synthetic_sample(8000, seed=i, name=f"{p}_{v}", shift=0.02 * (i % 2))
        samples.append(s)
        labels.append(lab)
    res = cluster(samples, seed=0, pattern=r"(?P<patient>P\d)_(?P<visit>\w+)", n_resamples=50)
    return samples, labels, res


def test_public_name_and_default_markers(cohort):
    samples, _, res = cohort
    assert immunoprofile.cluster is cluster
    assert isinstance(res, ClusterResult)
    # viability and scatter are not clustered on
    assert res.markers == default_markers(samples[0])
    assert "Viability" not in res.markers and len(res.markers) == 13


def test_table_shape_and_identities(cohort):
    samples, _, res = cohort
    tab = res.table()
    assert list(tab.columns) == [
        "sample", "patient", "visit", "population", "parent", "count", "parent_count",
        "percent_of_parent", "percent_of_lymphocytes", "method",
    ]  # fmt: skip
    assert (tab["method"] == "clustering").all()
    assert set(tab["visit"]) == {"baseline", "week24"} and set(tab["patient"]) == {"P1", "P2"}
    mc = tab[tab["population"].str.match(r"MC\d\d")]
    assert (mc.groupby("sample")["count"].sum() == 8000).all()
    assert (mc["parent"] == "root").all()
    # counts and masks agree; percent_of_parent = count / parent_count
    t0 = tab[tab["sample"] == "P1_baseline"].set_index("population")
    for pop in ("T", "Treg", "B", "NK"):
        assert res.population_mask(0, pop).sum() == t0.loc[pop, "count"]
    assert t0.loc["Treg", "parent"] == "CD4"
    assert t0.loc["Treg", "parent_count"] == t0.loc["CD4", "count"]
    np.testing.assert_allclose(
        t0["percent_of_parent"], 100 * t0["count"] / t0["parent_count"], rtol=1e-12
    )
    assert t0["percent_of_lymphocytes"].isna().all()  # no pre-gate, no lymphocyte count


def test_frequencies_match_truth(cohort):
    _, labels, res = cohort
    tab = res.table().set_index(["sample", "population"])
    errors = []
    for i, name in enumerate(res.samples):
        for pop, par in PARENTS.items():
            est = tab.loc[(name, pop), "percent_of_parent"]
            errors.append(abs(est - truth_percent(labels[i], pop, par)))
            if pop in ("Treg", "B", "NK", "Th17"):
                assert abs(est - truth_percent(labels[i], pop, par)) < 1.0, (name, pop)
    assert np.median(errors) < 0.5


def test_metacluster_summary_and_ari(cohort):
    _, labels, res = cohort
    summ = res.metaclusters()
    assert len(summ) == 20 and summ["count"].sum() == 4 * 8000
    assert summ["percent"].sum() == pytest.approx(100.0)
    assert {"metacluster", "name", "nodes", "CD3", "CD25"} <= set(summ.columns)
    assert summ["nodes"].sum() == 100
    # metaclusters merged by name against the true leaves
    names = res.metacluster_names().to_numpy()
    pred = np.concatenate([names[res.metacluster_labels(i)] for i in range(4)])
    truth = np.concatenate(labels)
    assert adjusted_rand(truth, pred) > 0.95
    # every event of a Treg-named metacluster is a true Treg, nearly
    treg = pred == "Treg_memory"
    assert (truth[treg] == "Treg").mean() > 0.97


def test_deterministic_and_seed_matters(cohort):
    samples, _, res = cohort
    again = cluster(samples, seed=0, pattern=r"(?P<patient>P\d)_(?P<visit>\w+)", n_resamples=50)
    pd.testing.assert_frame_equal(res.table(), again.table())
    np.testing.assert_array_equal(res.som.cluster_centers_, again.som.cluster_centers_)


def test_node_level_naming_and_subsample(cohort):
    samples, labels, _ = cohort
    res = cluster(samples[:2], seed=1, name_level="node", subsample_per_sample=3000,
                  n_resamples=20, n_metaclusters=12)  # fmt: skip
    assert res.train_events.shape[0] == 6000
    assert res.naming.names.shape[0] == 100
    tab = res.table().set_index(["sample", "population"])
    est = tab.loc[(res.samples[0], "B"), "percent_of_parent"]
    assert abs(est - truth_percent(labels[0], "B", "nonT")) < 1.0
    assert len(res.metacluster_names()) == 12


@pytest.mark.parametrize("level", ["node", "metacluster"])
def test_table_counts_are_those_of_the_events(cohort, level):
    """The table adds up each file's per-node counts into clusters and metaclusters: the
    counts of counting every event's metacluster and population mask."""
    samples, _, _ = cohort
    res = cluster(samples[:2], seed=2, name_level=level, subsample_per_sample=2000,
                  n_resamples=10, n_metaclusters=8)  # fmt: skip
    tab = res.table().set_index(["sample", "population"])["count"]
    for i, name in enumerate(res.clustered_samples):
        mc = np.bincount(res.node_metacluster[res.nodes[i]], minlength=res.n_metaclusters)
        for j, c in enumerate(mc):
            assert tab[(name, f"MC{j + 1:02d}")] == c
        for pop in res.naming.membership.columns:
            assert tab[(name, pop)] == int(res.population_mask(i, pop).sum())
    assert tab.sum() > 0


def test_write_outputs(cohort, tmp_path):
    _, _, res = cohort
    paths = res.write(tmp_path / "out")
    names = {p.name for p in paths}
    assert {"populations.csv", "metaclusters.csv", "thresholds.csv", "unassigned.csv"} <= names
    back = pd.read_csv(tmp_path / "out" / "populations.csv")
    assert len(back) == len(res.table())


def test_errors(cohort):
    samples, _, _ = cohort
    with pytest.raises(ClusteringError, match="no files"):
        cluster([])
    with pytest.raises(MarkerNotFoundError, match="CD999"):
        cluster(samples[:1], markers=["CD3", "CD999"])
    with pytest.raises(ClusteringError, match="needs a template"):
        cluster(samples[:1], parent="live")
    with pytest.raises(ClusteringError, match="smaller grid"):
        cluster(samples[:1], subsample_per_sample=50)
    with pytest.raises(ClusteringError, match="name_level"):
        cluster(samples[:1], name_level="cells")


def test_cli_cluster_writes_tables_figures_and_agreement(cohort, tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main
    from immunoprofile.io.write import write_fcs

    samples, _, res = cohort
    files = []
    for s in samples:
        files.append(str(write_fcs(s, tmp_path / f"{s.name}.fcs")))
    # a "gating" table: the clustering table itself, shifted by +1 point for Treg
    gated = res.table(include_metaclusters=False).copy()
    gated.loc[gated["population"] == "Treg", "percent_of_parent"] += 1.0
    gpath = tmp_path / "gated.csv"
    gated.to_csv(gpath, index=False)
    out = tmp_path / "out"
    args = ["cluster", *files, "--out", str(out), "--template", "none", "--seed", "0",
            "--pattern", r"(?P<patient>P\d)_(?P<visit>[a-z0-9]+)", "--gating", str(gpath)]  # fmt: skip
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "20 metaclusters" in r.output
    for f in ("populations.csv", "metaclusters.csv", "heatmap.png", "som_grid.png",
              "agreement.csv", "agreement.png"):  # fmt: skip
        assert (out / f).is_file(), f
    tab = pd.read_csv(out / "populations.csv")
    assert set(tab["visit"]) == {"baseline", "week24"}
    agree = pd.read_csv(out / "agreement.csv").set_index("population")
    # same files, same seed: the only disagreement is the +1 point put on Treg
    assert agree.loc["Treg", "bias"] == pytest.approx(-1.0, abs=1e-6)
    assert agree.loc["B", "bias"] == pytest.approx(0.0, abs=1e-6)
    bad = CliRunner().invoke(main, ["cluster", files[0], "--out", str(out), "--template",
                                    "none", "--markers", "CD3,NOPE"])  # fmt: skip
    assert bad.exit_code == 1 and "NOPE" in bad.output
    grid = CliRunner().invoke(main, ["cluster", files[0], "--out", str(out), "--grid", "10by10"])
    assert grid.exit_code == 2 and "ROWSxCOLS" in grid.output


def test_bad_file_is_skipped_or_raised(cohort, tmp_path):
    from immunoprofile.exceptions import FCSError

    samples, _, _ = cohort
    junk = tmp_path / "junk.fcs"
    junk.write_bytes(b"this is not an FCS file at all" * 10)
    with pytest.raises(FCSError):
        cluster([samples[0], str(junk)], n_resamples=5)
    res = cluster([samples[0], str(junk), samples[1]], n_resamples=5, on_error="skip")
    # every input is a sample of the result; the clustered ones are the two good files
    assert res.samples == [samples[0].name, "junk", samples[1].name]
    assert res.clustered_samples == [samples[0].name, samples[1].name]
    assert list(res.errors["file"]) == [str(junk)] and "junk.fcs" in res.errors["message"][0]
    paths = res.write(tmp_path / "o")
    assert any(p.name == "errors.csv" for p in paths)


def test_gate_position_of_rectangles_and_mixture_regions():
    # a fitted 2-D gate that fell back to its rectangle, and a 2-D mixture's posterior
    # region, are described per dimension instead of failing the sample_gates table
    from immunoprofile.clustering.api import _gate_position

    rect = {"type": "rectangle", "dims": ["CD45RA", "CD25"], "min": [0.55, None],
            "max": [None, 0.9], "params": {}}  # fmt: skip
    assert _gate_position(rect) == "0.55 <= CD45RA, CD25 < 0.9"
    assert _gate_position({"type": "range", "dims": ["CD3"], "min": 0.45}) == "0.45 <= CD3"
    region = {"type": "polygon", "dims": ["CD45RA", "CD25"],
              "params": {"crossing": [0.52, 0.61], "threshold": 0.52}}  # fmt: skip
    assert "(0.52, 0.61)" in _gate_position(region)


def test_cli_cluster_again_into_one_folder_removes_its_stale_optional_outputs(cohort, tmp_path):
    """errors.csv, agreement.* and figures of an earlier run into the same folder go when
    the new run does not write them; files the run never wrote stay."""
    from click.testing import CliRunner

    from immunoprofile.cli import main
    from immunoprofile.io.write import write_fcs

    samples, _, res = cohort
    files = [str(write_fcs(s, tmp_path / f"{s.name}.fcs")) for s in samples]
    gpath = tmp_path / "gated.csv"
    res.table(include_metaclusters=False).to_csv(gpath, index=False)
    junk = tmp_path / "junk.fcs"
    junk.write_bytes(b"not an FCS file" * 20)
    out = tmp_path / "out"
    base = ["cluster", "--out", str(out), "--template", "none", "--seed", "0"]
    r = CliRunner().invoke(main, [*base, *files, str(junk), "--gating", str(gpath)])
    assert r.exit_code == 1, r.output
    first = {"errors.csv", "agreement.csv", "agreement_pairs.csv", "agreement.png",
             "heatmap.png", "som_grid.png", "populations.csv", "outputs.json"}  # fmt: skip
    assert first <= {p.name for p in out.iterdir()}
    (out / "agreement_mine.csv").write_text("kept\n")
    r = CliRunner().invoke(main, [*base, *files, "--no-plots"])
    assert r.exit_code == 0, r.output
    names = {p.name for p in out.iterdir()}
    gone = {"errors.csv", "agreement.csv", "agreement_pairs.csv", "agreement.png",
            "heatmap.png", "som_grid.png"}  # fmt: skip
    assert not names & gone, names & gone
    assert {"populations.csv", "metaclusters.csv", "outputs.json", "agreement_mine.csv"} <= names
    assert (out / "agreement_mine.csv").read_text() == "kept\n"
    assert set(pd.read_csv(out / "populations.csv")["sample"]) == {s.name for s in samples}
