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
    name_clusters,
    parse_conditions,
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
