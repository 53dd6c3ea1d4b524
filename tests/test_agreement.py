"""Agreement statistics against hand-worked numbers; ARI on separated blobs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from immunoprofile.clustering.agreement import (
    EVENT_TEMPLATE,
    adjusted_rand,
    agreement_table,
    bland_altman,
    by_construction,
    frequency_error,
    lins_ccc,
    naming_levels,
    pearson_r,
)
from immunoprofile.clustering.metacluster import ConsensusMetaclustering
from immunoprofile.clustering.som import SOM
from immunoprofile.exceptions import ClusteringError

X5 = [1, 2, 3, 4, 5]
Y5 = [2, 3, 4, 5, 7]


def test_lins_ccc_hand_worked():
    # means 3 and 4.2; 1/n variances 2 and 2.96; covariance 2.4
    # rho_c = 2 * 2.4 / (2 + 2.96 + 1.2^2) = 4.8 / 6.4
    assert lins_ccc(X5, Y5) == pytest.approx(0.75, abs=1e-12)
    assert lins_ccc(X5, X5) == pytest.approx(1.0)
    # a pure shift keeps Pearson at 1 but lowers concordance: 2*2/(2+2+1) = 0.8
    assert lins_ccc(X5, np.add(X5, 1)) == pytest.approx(0.8)
    assert pearson_r(X5, np.add(X5, 1)) == pytest.approx(1.0)


def test_pearson_hand_worked():
    assert pearson_r(X5, Y5) == pytest.approx(2.4 / math.sqrt(2 * 2.96), abs=1e-12)
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))


def test_bland_altman_hand_worked():
    # d = y - x = [1, 1, 1, 1, 2]: bias 1.2; sd = sqrt(0.8 / 4) = sqrt(0.2)
    ba = bland_altman(X5, Y5)
    sd = math.sqrt(0.2)
    assert ba["bias"] == pytest.approx(1.2)
    assert ba["sd"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(1.2 - 1.96 * sd)
    assert ba["loa_high"] == pytest.approx(1.2 + 1.96 * sd)
    assert ba["loa_low"] == pytest.approx(0.323461, abs=1e-6)


def test_agreement_table_pairs_by_sample_and_population():
    samples = [f"s{i}" for i in range(5)]
    gated = pd.DataFrame(
        {
            "sample": samples * 2,
            "population": ["Treg"] * 5 + ["B"] * 5,
            "percent_of_parent": X5 + [10, 20, 30, 40, 50],
        }
    )
    # clustered rows in another order, with one extra sample that has no gated partner
    clustered = pd.DataFrame(
        {
            "sample": samples[::-1] + samples + ["s9"],
            "population": ["Treg"] * 5 + ["B"] * 5 + ["B"],
            "percent_of_parent": Y5[::-1] + [10, 20, 30, 40, 50] + [99],
        }
    )
    tab = agreement_table(gated, clustered).set_index("population")
    assert tab.loc["Treg", "n"] == 5
    assert tab.loc["Treg", "lins_ccc"] == pytest.approx(0.75)
    assert tab.loc["Treg", "bias"] == pytest.approx(1.2)
    assert tab.loc["B", "lins_ccc"] == pytest.approx(1.0)
    assert tab.loc["B", "bias"] == pytest.approx(0.0)
    assert tab.loc["B", "n"] == 5
    # without a naming table the naming columns are there but unknown
    assert (tab["naming"] == "").all() and tab["naming_f1"].isna().all()


def test_naming_levels_and_agreement_naming_columns():
    resolution = pd.DataFrame(
        {
            "population": ["Treg", "Treg_naive", "B_transitional"],
            "parent": ["CD4", "Treg", "B"],
            "gate": ["per-sample", "per-sample", "rule"],
            "f1": [0.99, 0.62, 0.1],
            "level": ["cluster", "event", "event"],
        }
    )
    how = naming_levels(resolution, ["T", "Treg"], name_level="metacluster")
    assert how["population"].tolist() == ["Treg", "Treg_naive", "B_transitional", "T"]
    assert how["naming"].tolist() == ["metacluster", EVENT_TEMPLATE, "event (rule)",
                                      "metacluster"]  # fmt: skip
    assert how["naming_f1"].tolist()[:3] == [0.99, 0.62, 0.1] and math.isnan(how.at[3, "naming_f1"])
    gated = pd.DataFrame({"sample": ["a", "b"] * 2, "population": ["Treg"] * 2 + ["Treg_naive"] * 2,
                          "percent_of_parent": [5.0, 6.0, 30.0, 40.0]})  # fmt: skip
    tab = agreement_table(gated, gated, naming=how)
    assert tab["naming"].tolist() == ["metacluster", EVENT_TEMPLATE]
    assert tab["naming_f1"].tolist() == [0.99, 0.62]
    assert by_construction(tab).tolist() == [False, True]
    with pytest.raises(ClusteringError, match="naming"):
        agreement_table(gated, gated, naming=how.drop(columns="naming_f1"))
    with pytest.raises(ClusteringError, match="level"):
        naming_levels(resolution.drop(columns="level"))


def test_frequency_error():
    est = pd.DataFrame(
        {"sample": ["a", "b"], "population": ["B", "B"], "percent_of_parent": [10.5, 9.0]}
    )
    tru = pd.DataFrame(
        {"sample": ["b", "a"], "population": ["B", "B"], "percent_of_parent": [10.0, 10.0]}
    )
    err = frequency_error(est, tru).set_index("sample")
    assert err.loc["a", "error"] == pytest.approx(0.5)
    assert err.loc["b", "error"] == pytest.approx(-1.0)


def test_ari_of_som_plus_metaclusters_on_separated_blobs():
    rng = np.random.default_rng(11)
    k, d = 8, 7
    centers = rng.uniform(0, 1, (k, d))
    lab = rng.integers(0, k, 30000)
    X = (centers[lab] + rng.normal(0, 0.04, (lab.size, d))).astype(np.float32)
    som = SOM(grid=(8, 8), seed=0).fit(X)
    meta = ConsensusMetaclustering(k, n_resamples=50, seed=0)
    meta.fit(som.cluster_centers_, sample_weight=som.counts_)
    ari = adjusted_rand(lab, meta.labels_[som.predict(X)])
    assert ari >= 0.95
    assert adjusted_rand([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
