"""Phenotype naming: rule parsing, split points, level semantics, hierarchy walk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cluster_synthetic import MARKERS, PHENOTYPES, synthetic_events

from immunoprofile.clustering.naming import (
    DEFAULT_RULES,
    UNASSIGNED,
    PhenotypeRule,
    event_membership,
    name_clusters,
    own_gate,
    parse_conditions,
    sample_membership,
    split_points,
)
from immunoprofile.exceptions import ClusteringError


def test_parse_conditions():
    assert parse_conditions("CD25hi CD127lo") == [[("CD25", "hi", False)], [("CD127", "lo", False)]]
    assert parse_conditions("CD19+|CD20+ CD161+?") == [
        [("CD19", "+", False), ("CD20", "+", False)],
        [("CD161", "+", True)],
    ]
    assert parse_conditions("CD56bright CD16-") == [
        [("CD56", "bright", False)],
        [("CD16", "-", False)],
    ]
    with pytest.raises(ClusteringError, match="CD25high"):
        parse_conditions("CD25high", where="Treg")


def test_default_rules_cover_the_canonical_populations_in_order():
    names = [r.population for r in DEFAULT_RULES]
    for p in ("T", "CD4", "CD8", "Treg", "Th1", "Th2", "Th17", "B", "NK", "NK_CD56bright",
              "NK_CD56dim", "plasmablasts", "B_transitional"):  # fmt: skip
        assert p in names
    for r in DEFAULT_RULES:  # parents come first
        assert r.parent is None or names.index(r.parent) < names.index(r.population)


def test_split_points_bimodal_and_trimodal_and_unimodal():
    rng = np.random.default_rng(0)
    two = np.r_[rng.normal(0.2, 0.04, 8000), rng.normal(0.7, 0.04, 2000)]
    (cut,) = split_points(two)
    assert 0.3 < cut < 0.6
    three = np.r_[two, rng.normal(1.2, 0.04, 1000)]
    cuts = split_points(three)
    assert len(cuts) == 2 and 0.3 < cuts[0] < 0.6 and 0.8 < cuts[1] < 1.1
    one = rng.normal(0.5, 0.05, 5000)
    assert split_points(one, unimodal="none") is None
    (otsu,) = split_points(one)
    assert abs(otsu - 0.5) < 0.05


def _clusters_from_truth(n=20000, seed=0):
    X, lab = synthetic_events(n, seed)
    leaves = list(PHENOTYPES)
    cl = np.array([leaves.index(x) for x in lab])
    med = pd.DataFrame(
        [np.median(X[cl == i], axis=0) for i in range(len(leaves))],
        index=leaves,
        columns=list(MARKERS),
    )
    return med, X, cl


def test_true_populations_get_their_names():
    med, X, cl = _clusters_from_truth()
    nm = name_clusters(med, X, cl)
    expect = {
        "CD4_naive": "CD4", "Th1": "Th1", "Th2": "Th2", "Th17": "Th17", "Treg": "Treg_memory",
        "CD8": "CD8", "B_naive": "B_naive", "B_memory": "B_memory",
        "NK_CD56bright": "NK_CD56bright", "NK_CD56dim": "NK_CD56dim",
    }  # fmt: skip
    assert nm.names.to_dict() == expect
    # memberships follow the hierarchy: the Treg cluster is also CD4, T and CD4_memory
    row = nm.membership.loc["Treg"]
    assert row["T"] and row["CD4"] and row["Treg"] and row["CD4_memory"] and not row["CD8"]
    assert not nm.membership.loc["CD8", "CD4"]
    # rules on markers the panel lacks are reported, not guessed
    assert "Treg_FOXP3" in nm.skipped and "plasmablasts" in nm.skipped
    # CD45RA is unimodal inside the Treg cluster: its cut comes from a wider population
    fitted = nm.thresholds.set_index(["population", "marker"]).loc[("Treg_memory", "CD45RA")]
    assert fitted["fitted_on"] != "Treg"


def test_unmatched_cluster_stays_unassigned_and_fixed_thresholds_apply():
    med, X, cl = _clusters_from_truth()
    odd = pd.DataFrame([np.full(len(MARKERS), 0.15)], index=["odd"], columns=list(MARKERS))
    odd["CD3"] = 0.7  # CD3+ but CD4-CD8-: T, nothing below
    med2 = pd.concat([med, odd])
    nm = name_clusters(med2, X, cl)
    assert nm.names["odd"] == "T"
    # with a CD3 threshold above everything, nothing is T and no cluster is CD3- ... below 0
    nm2 = name_clusters(med2, X, cl, thresholds={"CD3": [2.0]})
    assert nm2.names["odd"] == UNASSIGNED or nm2.names["odd"] != "T"
    assert not nm2.membership["T"].any()
    rules = [PhenotypeRule("X", None, "CD3+ CD4+")]
    nm3 = name_clusters(med2, X, cl, rules=rules)
    assert nm3.names["CD8"] == UNASSIGNED and nm3.names["Th1"] == "X"


def test_bad_inputs():
    med, X, cl = _clusters_from_truth(n=2000)
    with pytest.raises(ClusteringError, match="columns"):
        name_clusters(med, X[:, :3], cl)
    with pytest.raises(ClusteringError, match="not defined before"):
        name_clusters(med, X, cl, rules=[PhenotypeRule("A", "nope", "CD3+")])


def test_per_sample_gate_shares_decide_where_known():
    med, X, cl = _clusters_from_truth()
    n = len(med)
    # the gates put only 20 % of the CD8 cluster's events in T: it is not T (nor CD8),
    # whatever its median; NaN elsewhere: the rule decides
    share = np.full(n, np.nan)
    share[list(med.index).index("CD8")] = 0.2
    nm = name_clusters(med, X, cl, shares={"T": share})
    assert nm.names["CD8"] == "nonT" or nm.names["CD8"] == UNASSIGNED
    assert not nm.membership.loc["CD8", "T"] and not nm.membership.loc["CD8", "CD8"]
    assert nm.names["Th1"] == "Th1"  # decided by the rule, as without shares
    share[list(med.index).index("CD8")] = 0.5
    assert name_clusters(med, X, cl, shares={"T": share}).names["CD8"] == "CD8"
    row = nm.thresholds[nm.thresholds["population"] == "T"].iloc[-1]
    assert row["fitted_on"] == f"per-sample gates (1 of {n} clusters)"
    with pytest.raises(ClusteringError, match="one value per cluster"):
        name_clusters(med, X, cl, shares={"T": share[:3]})


def _treg_naming(seed: int = 1):
    """Two clusters of T cells (900 events of CD3+, 300 of CD3-), 100 of the first CD25hi;
    rules T = CD3+ and Treg = CD25hi within T; the naming, events, clusters and the rng."""
    med = pd.DataFrame({"CD3": [0.7, 0.1], "CD25": [0.3, 0.3]}, index=["a", "b"])
    rng = np.random.default_rng(seed)
    X = np.c_[np.r_[rng.normal(0.7, 0.03, 900), rng.normal(0.1, 0.03, 300)],
              np.r_[rng.normal(0.3, 0.04, 800), rng.normal(0.8, 0.04, 100),
                    rng.normal(0.3, 0.04, 300)]].astype(np.float32)  # fmt: skip
    cl = np.r_[np.zeros(900, int), np.ones(300, int)]
    rules = [PhenotypeRule("T", None, "CD3+"), PhenotypeRule("Treg", "T", "CD25hi")]
    return name_clusters(med, X, cl, rules=rules), X, cl, rng


def test_event_membership_by_rule_and_by_gate():
    # two clusters of T cells; rule Treg = CD25hi within T. Events named one by one.
    nm, X, cl, _ = _treg_naming(seed=0)
    assert nm.names.to_dict() == {"a": "T", "b": UNASSIGNED}  # Treg is too small for a cluster
    (cut,) = nm.conditions["Treg"][0][0][2][-1:]
    assert 0.4 < cut < 0.7
    ev = event_membership(nm, X, cl, ["Treg"])
    assert ev["Treg"].sum() == 100 and ev["Treg"][800:900].all()
    # a per-sample gate overrides the rule where it applies (its parent): there it says
    # the first 10 events are Treg too
    gate = np.zeros(1200, bool)
    gate[:10] = True
    known = np.zeros(1200, bool)
    known[:50] = True
    ev = event_membership(nm, X, cl, ["Treg"], gate_in={"Treg": gate},
                          gate_known={"Treg": known})  # fmt: skip
    assert ev["Treg"].sum() == 110 and ev["Treg"][:10].all() and not ev["Treg"][10:800].any()
    with pytest.raises(ClusteringError, match="no named population"):
        event_membership(nm, X, cl, ["B"])


def test_own_gate_is_the_gate_where_known_and_the_rule_elsewhere():
    nm, X, cl, rng = _treg_naming()
    by_rule = own_gate(nm, X, "Treg")
    assert by_rule.sum() == 100 and by_rule[800:900].all()
    gate = rng.random(1200) < 0.3
    for known in (np.ones(1200, bool), np.zeros(1200, bool), rng.random(1200) < 0.5):
        got = own_gate(nm, X, "Treg", {"Treg": gate}, {"Treg": known})
        assert np.array_equal(got, np.where(known, gate, by_rule))
        assert got is not gate
    # no gate_known: the gate applies everywhere
    assert np.array_equal(own_gate(nm, X, "Treg", {"Treg": gate}), gate)


def test_event_membership_is_the_parent_and_the_own_gate_of_every_event():
    nm, X, cl, rng = _treg_naming()
    gate, known = rng.random(1200) < 0.3, rng.random(1200) < 0.5
    ev = event_membership(nm, X, cl, ["Treg"], gate_in={"Treg": gate},
                          gate_known={"Treg": known})  # fmt: skip
    inside = nm.membership["T"].to_numpy()[cl]
    want = inside & own_gate(nm, X, "Treg", {"Treg": gate}, {"Treg": known})
    assert inside.sum() == 900 and np.array_equal(ev["Treg"], want)
    assert 0 < want.sum() < 900


def test_hi_is_the_main_bright_mode_not_a_dim_shoulder():
    # T cells: CD4 T (CD8-), CD8 T (CD8 bright) and 6 % CD8-dim double-negative T cells
    rng = np.random.default_rng(1)
    parts = [(6000, 0.25), (3000, 0.72), (600, 0.52)]
    cd8 = np.concatenate([rng.normal(m, 0.04, n) for n, m in parts])
    cd4 = np.concatenate([rng.normal(m, 0.04, n) for (n, _), m in zip(parts, (0.65, 0.2, 0.22))])
    X = np.c_[np.full(cd8.size, 0.7), cd4, cd8].astype(np.float32)
    cl = np.repeat([0, 1, 2], [n for n, _ in parts])
    med = pd.DataFrame(
        [np.median(X[cl == k], axis=0) for k in range(3)],
        index=["CD4T", "CD8T", "DNT"],
        columns=["CD3", "CD4", "CD8"],
    )
    nm = name_clusters(med, X, cl)
    assert nm.names.to_dict() == {"CD4T": "CD4", "CD8T": "CD8", "DNT": "T"}
    row = nm.thresholds.set_index(["population", "marker"]).loc[("CD8", "CD8")]
    assert "main-mode edge" in row["fitted_on"] and 0.55 < row["cuts"][-1] < 0.66


def test_sample_membership_follows_each_samples_own_gates():
    med, X, cl = _clusters_from_truth()
    n = len(med)
    k_th1 = list(med.index).index("Th1")
    pooled = np.full(n, np.nan)
    pooled[k_th1] = 0.9  # pooled over samples: the Th1 cluster is memory CD4
    nm = name_clusters(med, X, cl, shares={"CD4_memory": pooled})
    assert nm.membership.loc["Th1", "CD4_memory"] and nm.membership.loc["Th1", "Th1"]
    # in one sample its own gate put only 30 % of the cluster's events in CD4_memory:
    # there the cluster is CD4 but not memory (nor Th1, a child of memory)
    mine = np.full(n, np.nan)
    mine[k_th1] = 0.3
    m = sample_membership(nm, {"CD4_memory": mine})
    assert m.loc["Th1", "CD4"] and not m.loc["Th1", "CD4_memory"] and not m.loc["Th1", "Th1"]
    # unknown in this sample (NaN) or no share at all: the pooled verdict stands
    pd.testing.assert_frame_equal(sample_membership(nm, {"CD4_memory": np.full(n, np.nan)}),
                                  nm.membership)  # fmt: skip
    pd.testing.assert_frame_equal(sample_membership(nm, {}), nm.membership)


def test_cuts_are_split_points_of_each_population_s_events_computed_once(monkeypatch):
    """Every fitted cut is `split_points` of its marker on the events of the population it
    was fitted on (by cluster), as reported in ``fitted_on``; one marker on one
    population's events is split once however many rules ask."""
    from immunoprofile.clustering import naming

    med, X, cl = _clusters_from_truth()
    calls: list[tuple[int, str]] = []
    real = naming.split_points

    def counted(x, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls.append((x.size, k.get("unimodal", "otsu")))
        return real(x, *a, **k)

    monkeypatch.setattr(naming, "split_points", counted)
    nm = name_clusters(med, X, cl)
    monkeypatch.setattr(naming, "split_points", real)
    fitted = nm.thresholds[nm.thresholds["marker"] != ""]
    assert len(fitted) > len(calls) >= 10  # shared splits computed once
    seen = 0
    for _, row in fitted.iterrows():
        j = list(MARKERS).index(row["marker"])
        on = row["fitted_on"].split(";")[0]
        if on == "all events":
            x, mode = X[:, j], "otsu"
        else:
            level, otsu = on.split(" (")[0], on.endswith("(otsu)")
            x, mode = X[nm.membership[level].to_numpy()[cl], j], "otsu" if otsu else "none"
        cuts = real(x, unimodal=mode)
        assert row["cuts"][: len(cuts)] == cuts  # "main-mode edge" appends one
        seen += 1
    assert seen == len(fitted)
