"""One definition of the population table: parent label and percent of lymphocytes agree
between `GatingResult.table`, `quantify.population_table`, `gate(...).table()`, the
clustering table and the simulator's truth table (hand-worked counts)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from immunoprofile.exceptions import TemplateError
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.run import gate
from immunoprofile.gating.template import validate_template
from immunoprofile.hierarchy import ROOT, hierarchy_table, in_subtree
from immunoprofile.quantify import population_table
from immunoprofile.sample import Sample, make_channel_table


def _block_sample(name: str = "s1") -> Sample:
    """1000 events in blocks with known membership:
    100 debris (FSC 0.05); 900 cells (FSC 0.5), of which 600 lymphocytes (SSC 0.2) and 300
    not (SSC 0.8); of the lymphocytes 450 CD3+ (0.8) and 150 CD3- (0.2)."""
    fsc = np.r_[np.full(100, 0.05), np.full(900, 0.5)]
    ssc = np.r_[np.full(100, 0.2), np.full(600, 0.2), np.full(300, 0.8)]
    cd3 = np.r_[np.full(100, 0.2), np.full(450, 0.8), np.full(150, 0.2), np.full(300, 0.2)]
    ev = np.ascontiguousarray(np.c_[fsc, ssc, cd3], dtype=np.float32)
    ch = make_channel_table(["FSC-A", "SSC-A", "FL1-A"], [None, None, "CD3"], ranges=[4.0] * 3)
    return Sample(ev, ch, {"PATIENT_ID": "P01", "VISIT": "baseline"}, name=name)


def _template(reference: str | None = None) -> dict:
    t = {
        "name": "blocks",
        "compensation": "none",
        "transforms": None,
        "populations": [
            {"name": "cells", "parent": None,
             "gate": {"type": "range", "dims": ["FSC-A"], "min": 0.1, "max": None}},
            {"name": "lymphocytes", "parent": "cells",
             "gate": {"type": "range", "dims": ["SSC-A"], "min": None, "max": 0.5}},
            {"name": "T", "parent": "lymphocytes",
             "gate": {"type": "range", "dims": ["CD3"], "min": 0.5, "max": None}},
            {"name": "debris", "parent": None,
             "gate": {"type": "range", "dims": ["FSC-A"], "min": None, "max": 0.1}},
        ],
    }  # fmt: skip
    if reference is not None:
        t["reference"] = reference
    return t


# population -> (parent, count, parent_count, % of parent, % of lymphocytes), by hand
EXPECTED = {
    "cells": ("root", 900, 1000, 90.0, math.nan),  # an ancestor of the reference
    "lymphocytes": ("cells", 600, 900, 100 * 600 / 900, 100.0),  # the reference itself
    "T": ("lymphocytes", 450, 600, 75.0, 75.0),
    "debris": ("root", 100, 1000, 10.0, math.nan),  # a side branch
}


def _check(tab: pd.DataFrame, expected: dict) -> None:
    t = tab.set_index("population")
    assert list(t.index) == list(expected)
    for pop, (parent, count, pc, pop_pct, pol) in expected.items():
        assert t.at[pop, "parent"] == parent, pop
        assert t.at[pop, "count"] == count and t.at[pop, "parent_count"] == pc, pop
        assert t.at[pop, "percent_of_parent"] == pytest.approx(pop_pct), pop
        if math.isnan(pol):
            assert math.isnan(t.at[pop, "percent_of_lymphocytes"]), pop
        else:
            assert t.at[pop, "percent_of_lymphocytes"] == pytest.approx(pol), pop


def test_engine_table_hand_worked():
    res = apply_template(_block_sample(), validate_template(_template()))
    _check(res.table(), EXPECTED)


def test_engine_quantify_and_batch_tables_agree():
    s = _block_sample()
    tpl = validate_template(_template())
    one = apply_template(s, tpl).table()
    q = population_table(
        apply_template(s, tpl).counts,
        {p.name: p.parent for p in tpl.populations},
        s.n_events,
        sample="s1",
    )
    batch = gate([s], tpl).table()
    _check(q, EXPECTED)
    _check(batch, EXPECTED)
    cols = list(one.columns)
    pd.testing.assert_frame_equal(q[cols], one)
    pd.testing.assert_frame_equal(batch[cols], one)
    assert batch.at[0, "patient"] == "P01"


def test_reference_population_from_the_template():
    # reference = cells: cells 100, lymphocytes 600/900, T 450/900; debris still NaN
    res = apply_template(_block_sample(), validate_template(_template(reference="cells")))
    expected = {
        "cells": ("root", 900, 1000, 90.0, 100.0),
        "lymphocytes": ("cells", 600, 900, 100 * 600 / 900, 100 * 600 / 900),
        "T": ("lymphocytes", 450, 600, 75.0, 50.0),
        "debris": ("root", 100, 1000, 10.0, math.nan),
    }
    _check(res.table(), expected)
    _check(gate([_block_sample()], res.template).table(), expected)


def test_csv_round_trip_keeps_root(tmp_path):
    res = gate([_block_sample()], validate_template(_template()))
    res.write(tmp_path)
    back = pd.read_csv(tmp_path / "populations.csv")
    assert back["parent"].notna().all()
    assert list(back["parent"]) == [v[0] for v in EXPECTED.values()]
    pq = pd.read_parquet(tmp_path / "populations.parquet")
    assert list(pq["parent"]) == list(back["parent"])


def test_hierarchy_helpers():
    parents = {"cells": None, "lymphocytes": "cells", "T": "lymphocytes", "debris": ""}
    assert in_subtree("T", "lymphocytes", parents)
    assert in_subtree("lymphocytes", "lymphocytes", parents)
    assert not in_subtree("cells", "lymphocytes", parents)
    assert not in_subtree("debris", "lymphocytes", parents)
    assert not in_subtree("T", None, parents)
    # a cycle ends the walk instead of looping
    assert not in_subtree("a", "z", {"a": "b", "b": "a"})
    cols = hierarchy_table({"cells": 9, "lymphocytes": 0, "T": 0}, parents, 10, "lymphocytes")
    assert cols["parent"] == [ROOT, "cells", "lymphocytes"]
    # an empty reference population: NaN, never a division by zero
    assert np.isnan(cols["percent_of_lymphocytes"]).all()
    assert np.isnan(cols["percent_of_parent"][2])


def test_root_cannot_name_a_population():
    t = _template()
    t["populations"][3]["name"] = "root"
    with pytest.raises(TemplateError, match="'root' cannot name a population"):
        validate_template(t)


def test_truth_table_uses_root():
    from immunoprofile.simulate import simulate_sample
    from immunoprofile.simulate.cohort import truth_frequencies

    _, labels = simulate_sample(events=3000, seed=2)
    t = truth_frequencies(labels, "x").set_index("population")
    assert t.at["lymphocytes", "parent"] == ROOT
    assert t.at["lymphocytes", "percent_of_lymphocytes"] == 100.0
    np.testing.assert_allclose(
        t["percent_of_lymphocytes"], 100 * t["count"] / t.at["lymphocytes", "count"]
    )


def test_clustering_table_percent_of_lymphocytes_only_inside_the_reference():
    from immunoprofile.clustering.api import cluster
    from immunoprofile.gating.template import load_template
    from immunoprofile.simulate import simulate_sample

    samples = [simulate_sample(events=4000, seed=s)[0] for s in (1, 2)]
    for i, s in enumerate(samples):
        s.name = f"S{i}"
    d = load_template("tregs").to_dict()
    d["reference"] = "live"
    tpl = validate_template(d)
    kw = dict(markers=["CD3", "CD4", "CD8"], grid=(3, 3), n_metaclusters=3, n_resamples=5)
    below = cluster(samples, parent="T", template=tpl, **kw)
    above = cluster(samples, parent="lymphocytes", template=tpl, **kw)
    gated = apply_template(samples[0], tpl).counts
    tb = below.table().query("sample == 'S0'")
    mc = tb[tb["population"].str.match(r"MC\d\d")]
    np.testing.assert_allclose(mc["percent_of_lymphocytes"], 100 * mc["count"] / gated["live"])
    assert (mc["parent"] == "T").all()
    ta = above.table()
    assert ta["percent_of_lymphocytes"].isna().all()
