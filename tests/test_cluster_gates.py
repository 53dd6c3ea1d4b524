"""Naming with per-sample template gates and per-event naming of small sub-populations,
on simulated tubes with per-event truth (default and drifted instruments)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from immunoprofile.clustering.api import cluster
from immunoprofile.simulate import simulate_sample, truth_frequencies


def _cohort(drift: float):
    samples, truths = [], []
    for i in range(4):
        s, lab = simulate_sample(events=30_000, seed=100 + i, drift=drift, name=f"P{i}_baseline")
        samples.append(s)
        truths.append(truth_frequencies(lab, s.name).set_index("population"))
    return samples, truths


@pytest.fixture(scope="module", params=[1.0, 2.0], ids=["default", "drifted"])
def gated(request):
    samples, truths = _cohort(request.param)
    res = cluster(samples, parent="live", template="immune_profile", seed=0, n_resamples=20,
                  subsample_per_sample=10_000, pattern=r"(?P<patient>P\d)_(?P<visit>\w+)")  # fmt: skip
    return res, truths


def _errors(res, truths, population):
    tab = res.table(include_metaclusters=False).set_index(["sample", "population"])
    return np.array(
        [
            tab.loc[(s, population), "percent_of_parent"] - t.loc[population, "percent_of_parent"]
            for s, t in zip(res.samples, truths)
        ]
    )


def test_small_subsets_named_per_event(gated):
    res, truths = gated
    # the nodes do not resolve transitional B (no node of its own) nor naive/memory Treg
    # (mixed in the few Treg nodes): those parents' children are named per event
    rs = res.resolution.set_index("population")
    assert rs.loc["B_transitional", "f1"] < 0.5 and rs.loc["Treg_naive", "f1"] < 0.95
    for pop in ("Treg_naive", "Treg_memory", "Treg_FOXP3", "B_transitional", "B_naive"):
        assert pop in res.event_level and rs.loc[pop, "level"] == "event"
    # lineages are resolved by the nodes and named per node
    for pop in ("CD4", "CD8", "Treg", "B", "NK"):
        assert pop not in res.event_level and rs.loc[pop, "f1"] >= 0.95
    assert set(res.event_level) == set(rs.index[rs["level"] == "event"])
    # transitional B cells (CD24hi CD38hi, ~5 % of B) get no node of their own; named per
    # event they are found (named per node they were 0 %)
    err = _errors(res, truths, "B_transitional")
    assert np.all(np.abs(err) < 1.0), err
    # naive vs memory Treg (CD45RA) split inside Treg nodes: per node it was 6-13 pp off
    err = _errors(res, truths, "Treg_naive")
    assert np.all(np.abs(err) < 3.0), err
    # event-level masks agree with the table and stay inside their parent
    t0 = res.table(include_metaclusters=False).set_index(["sample", "population"])
    for pop, par in (("B_transitional", "B"), ("Treg_naive", "Treg")):
        m, p = res.population_mask(0, pop), res.population_mask(0, par)
        assert m.sum() == t0.loc[(res.samples[0], pop), "count"]
        assert not (m & ~p).any()


def test_cd8_excludes_cd8_dim_t_cells(gated):
    res, truths = gated
    # CD3+ CD8-dim double-negative T cells are not CD8 T cells (before: +3-4 pp)
    err = _errors(res, truths, "CD8")
    assert np.all(np.abs(err) < 1.0), err


def test_targets_within_t_and_b(gated):
    res, truths = gated
    for pop, tol in (("Treg", 1.5), ("Th17", 2.0)):
        err = _errors(res, truths, pop)
        assert np.all(np.abs(err) < tol), (pop, err)


def test_sample_gates_recorded_and_used(gated):
    res, _ = gated
    sg = res.sample_gates
    assert set(sg["sample"]) == set(res.samples)
    treg = sg[(sg["population"] == "Treg") & (sg["sample"] == res.samples[0])].iloc[0]
    assert treg["parent"] == "CD4" and treg["type"] == "hilo"
    assert "CD25" in treg["position"] and ">=" in treg["position"]
    th = res.naming.thresholds
    decided = th[th["fitted_on"].str.startswith("per-sample gates")]["population"]
    assert {"T", "CD4", "Treg", "B", "NK", "Treg_naive"} <= set(decided)
    # shares are fractions, known for clusters with events in the gate's parent
    sh = res.naming.shares["Treg"]
    known = sh[np.isfinite(sh)]
    assert known.size > 10 and (known >= 0).all() and (known <= 1).all()
    # Treg nodes are those where most events passed their own sample's Treg gate
    treg_nodes = res.naming.membership["Treg"].to_numpy()
    assert treg_nodes.any() and (sh[treg_nodes] >= 0.5).all()
    # and per file, the file's own gates decide (one membership table per file)
    assert len(res.sample_members) == len(res.samples)
    for m in res.sample_members:
        assert m.shape == res.naming.membership.shape
        assert (m["Treg"] <= m["CD4"]).all() and (m["CD4"] <= m["T"]).all()


def test_without_sample_gates_pooled_rules_still_name():
    samples, truths = _cohort(1.0)
    plain = cluster(samples, parent="live", template="immune_profile", seed=0,
                    n_resamples=10, subsample_per_sample=10_000, sample_gates=False)  # fmt: skip
    assert plain.sample_gates.empty and not plain.naming.shares and not plain.sample_members
    assert set(plain.resolution["gate"]) == {"rule"}
    names = set(plain.naming.names)
    assert {"CD8", "Treg_FOXP3", "NK_CD56dim"} <= names
    # rules were written for cluster medians: populations the nodes carry stay per node
    # (per-event rule verdicts would miss e.g. CD56dim CD16+ NK by tens of points) ...
    err = _errors(plain, truths, "NK_CD56dim")
    assert np.all(np.abs(err) < 1.0), err
    # ... and only a population no node carries is named per event, by its rule
    assert plain.event_level == ["B_transitional"]
    how = plain.naming_table().set_index("population")["naming"]
    assert how["B_transitional"] == "event (rule)" and (how.drop("B_transitional") == "node").all()
    err = _errors(plain, truths, "B_transitional")
    assert np.all(np.abs(err) < 1.5), err


def test_deterministic_with_sample_gates():
    samples, _ = _cohort(2.0)
    kw = dict(parent="live", template="immune_profile", seed=3, n_resamples=10,
              subsample_per_sample=4000)  # fmt: skip
    a = cluster(samples[:2], **kw)
    b = cluster(samples[:2], **kw)
    pd.testing.assert_frame_equal(a.table(), b.table())
    pd.testing.assert_frame_equal(a.sample_gates, b.sample_gates)
    assert a.event_level == b.event_level and a.event_level
    for x, y in zip(a.event_bits, b.event_bits):
        assert x is not None and x.dtype.kind == "u" and np.array_equal(x, y)


def test_agreement_says_how_each_population_was_named(gated, tmp_path):
    """The agreement table's ``naming``/``naming_f1`` are `resolution`'s level and F1;
    event-named populations are flagged in the table, the report and the plot."""
    from immunoprofile.clustering.agreement import (
        EVENT_TEMPLATE,
        agreement_pairs,
        agreement_table,
        by_construction,
    )
    from immunoprofile.plots.clustering import agreement_plot
    from immunoprofile.report import _naming_note

    res, _ = gated
    ctab = res.table(include_metaclusters=False)
    gtab = ctab.copy()
    gtab["percent_of_parent"] += 0.5  # a stand-in for the gated table (pairs by sample)
    agree = agreement_table(gtab, ctab, naming=res.naming_table()).set_index("population")
    rs = res.resolution.set_index("population")
    assert set(rs.index) <= set(agree.index)
    for pop, r in rs.iterrows():
        want = (
            EVENT_TEMPLATE
            if r["level"] == "event" and r["gate"] == "per-sample"
            else "event (rule)"
            if r["level"] == "event"
            else "node"
        )
        assert agree.loc[pop, "naming"] == want, pop
        assert agree.loc[pop, "naming_f1"] == pytest.approx(r["f1"], abs=1e-12)
    # top-level populations have no resolution row: named per node, no F1
    top = [p for p, par in res.naming.parents.items() if par is None and p in agree.index]
    assert top and (agree.loc[top, "naming"] == "node").all()
    assert agree.loc[top, "naming_f1"].isna().all()
    # the per-event Treg subsets here are named by their samples' template gates
    flagged = set(agree.index[by_construction(agree.reset_index()).to_numpy()])
    assert {"Treg_naive", "Treg_memory", "B_transitional"} <= flagged
    assert flagged == set(res.event_level) & set(rs.index[rs["gate"] == "per-sample"])
    assert not flagged & {"T", "CD4", "CD8", "Treg", "B", "NK"}
    # the bias is the +0.5 put on the stand-in, whatever the naming
    assert agree["bias"].to_numpy() == pytest.approx(-0.5)

    # the report names them and says their agreement is by construction
    note = _naming_note(agree.reset_index())
    assert "by construction" in note and "<b>Treg_naive</b>" in note
    assert "<b>Treg</b>" not in note and "named per node are the independent check" in note
    # the plot marks them (and only them)
    pairs = agreement_pairs(gtab, ctab)
    shown = agree.reset_index()
    shown = shown[shown["population"].isin(["Treg", "Treg_naive"])]
    fig = agreement_plot(pairs, shown)
    titles = [ax.get_title() for ax in fig.axes if "CCC" in ax.get_title()]
    assert len(titles) == 2
    assert "by construction" not in titles[0] and titles[0].startswith("Treg:")
    assert "by construction" in titles[1] and titles[1].startswith("Treg_naive:")
