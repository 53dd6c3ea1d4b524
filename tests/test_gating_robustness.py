"""The summary, per-population and miss-list builders of benchmarks/gating_robustness.py
(and the target helpers of benchmarks/gating_accuracy.py) on a small hand-made per-file
table; the real multi-seed run is the benchmark itself (docs/gating_robustness.md)."""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks import gating_accuracy as acc
from benchmarks import gating_robustness as gr

COLS = ["seed", "cohort", "template", "file", "population", "parent", "f1", "error"]


def _table() -> pd.DataFrame:
    """Two seeds x one cohort x two files. Seed 0: B misses F1 on b.fcs (0.93 < 0.95),
    Treg_naive misses the |error| median (0.65 pp); seed 10: T misses the |error| max on
    b.fcs (2.0 pp) and so its median (1.05 pp). `live` (trunk) and a second copy of T from
    a later template (F1 0.1) must be ignored."""
    rows = [
        (0, "default", "tregs", "a.fcs", "live", "singlets", 0.50, 9.0),
        (0, "default", "tregs", "a.fcs", "T", "live", 0.99, 0.1),
        (0, "default", "tregs", "b.fcs", "T", "live", 0.97, -0.2),
        (0, "default", "tregs", "a.fcs", "Treg_naive", "Treg", 0.95, 0.6),
        (0, "default", "tregs", "b.fcs", "Treg_naive", "Treg", 0.95, -0.7),
        (0, "default", "th17", "a.fcs", "T", "live", 0.10, 9.0),
        (0, "default", "b_cells", "a.fcs", "B", "nonT", 0.96, 0.2),
        (0, "default", "b_cells", "b.fcs", "B", "nonT", 0.93, 0.3),
        (10, "default", "tregs", "a.fcs", "T", "live", 0.99, 0.1),
        (10, "default", "tregs", "b.fcs", "T", "live", 0.99, 2.0),
        (10, "default", "tregs", "a.fcs", "Treg_naive", "Treg", 0.96, 0.1),
        (10, "default", "tregs", "b.fcs", "Treg_naive", "Treg", 0.97, 0.1),
        (10, "default", "b_cells", "a.fcs", "B", "nonT", 0.97, 0.0),
        (10, "default", "b_cells", "b.fcs", "B", "nonT", 0.98, 0.1),
    ]
    df = pd.DataFrame(rows, columns=COLS)
    return df.assign(truth_pct=10.0, gated_pct=10.0 + df["error"], fallback=False)


def test_targets_of_issue_4():
    assert acc.f1_target("live") is None
    assert acc.f1_target("Treg") == 0.95
    assert acc.f1_target("Th17") == 0.90
    assert acc.meets_targets("B", 0.95, 0.5, 1.5)
    assert not acc.meets_targets("B", 0.949, 0.1, 0.1)
    assert not acc.meets_targets("Th17", 0.99, 0.51, 1.0)
    assert not acc.meets_targets("Th17", 0.99, 0.2, 1.51)
    assert acc.meets_targets("singlets", 0.1, 50.0, 90.0)


def test_seed_summary_rows():
    s = gr.seed_summary(_table())
    assert s[["seed", "cohort", "files"]].values.tolist() == [[0, "default", 2], [10, "default", 2]]
    assert s["populations missing a target"].tolist() == ["B, Treg_naive", "T"]
    assert s["worst F1 (min over files)"].tolist() == ["0.930 (B)", "0.960 (Treg_naive)"]
    assert s["worst |error| (pp, max over files)"].tolist() == ["0.70 (Treg_naive)", "2.00 (T)"]


def test_population_table_over_seeds():
    p = gr.population_table(_table()).set_index("population")
    assert sorted(p.index) == ["B", "T", "Treg_naive"]  # trunk left out
    t = p.loc["T"]
    assert t["F1 min"] == pytest.approx(0.97)  # the later template's copy is ignored
    assert t["|error| median (pp)"] == pytest.approx(0.15)  # of 0.1, 0.2, 0.1, 2.0
    assert t["|error| median, worst seed-cohort (pp)"] == pytest.approx(1.05)
    assert t["|error| max (pp)"] == pytest.approx(2.0)
    assert p["seed-cohorts meeting targets"].to_dict() == {
        "T": "1/2",
        "Treg_naive": "1/2",
        "B": "1/2",
    }
    assert p.loc["B", "F1 target"] == "0.95"


def test_miss_list_names_every_miss():
    m = gr.miss_list(_table())
    assert m.values.tolist() == [
        [0, "default", "B", "b.fcs", "F1", "0.930 < 0.95"],
        [0, "default", "Treg_naive", "median of 2 files", "|error| median", "0.65 > 0.5 pp"],
        [10, "default", "T", "b.fcs", "|error|", "2.00 > 1.5 pp"],
        [10, "default", "T", "median of 2 files", "|error| median", "1.05 > 0.5 pp"],
    ]


def test_report_is_deterministic_and_lists_misses():
    df = _table()
    text = gr.report(df, [0, 10], 1, 1000, "abc1234")
    assert text == gr.report(df.copy(), [0, 10], 1, 1000, "abc1234")
    assert "on commit `abc1234`" in text
    assert "## Every miss (4)" in text
    assert "- seed 10, default, T, b.fcs: |error| 2.00 > 1.5 pp" in text


def test_no_misses():
    df = _table()
    clean = df[(df["seed"] == 10) & (df["population"] != "T")]
    assert gr.miss_list(clean).empty
    assert gr.seed_summary(clean)["populations missing a target"].tolist() == ["none"]
    assert "## Every miss (0)\n\nNone." in gr.report(clean, [10], 1, 1000, "x")
