"""The fresh-seed evaluation's bookkeeping (benchmarks/gating_evaluation.py): where a
population's true events were lost along its gate chain, and the summary of the causes of
the misses, on hand-made masks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from benchmarks import gating_evaluation as ge

PARENTS = {"lymphocytes": None, "live": "lymphocytes", "B": "live", "B_transitional": "B"}


def _masks():
    n = 100
    truth = np.zeros(n, dtype=bool)
    truth[:20] = True  # 20 true transitional B cells
    masks = {name: np.ones(n, dtype=bool) for name in PARENTS}
    masks["live"][:5] = False  # the live gate drops 5 of them
    masks["B_transitional"] = truth.copy()
    masks["B_transitional"][5:8] = False  # its own gate 3 more
    masks["B_transitional"][[30, 31]] = True  # and keeps 2 false events
    masks["B_transitional"] &= masks["live"]
    return truth, masks


def test_lost_at_names_each_gate_of_the_chain():
    truth, masks = _masks()
    text = ge.lost_at(truth, masks["B_transitional"], "B_transitional", PARENTS, masks)
    assert text == "live 5; B_transitional 3; false 2"
    # nothing lost, nothing false: empty
    assert ge.lost_at(truth, truth, "lymphocytes", PARENTS, {"lymphocytes": truth}) == ""


def test_miss_causes_sums_the_missing_files_only():
    rows = []
    for i, (f1, err, lost) in enumerate(
        [
            (0.83, -0.9, "live 42; B_transitional 4"),  # misses on F1
            (0.95, -2.0, "live 3; B_transitional 10; false 1"),  # misses on error
            (0.97, 0.1, "live 100"),  # meets: not counted
        ]
    ):
        rows.append(
            {
                "seed": 1,
                "cohort": "drift 1",
                "file": f"P0{i}",
                "population": "B_transitional",
                "f1": f1,
                "error": err,
                "lost_at": lost,
            }
        )
    out = ge.miss_causes(pd.DataFrame(rows))
    r = out.iloc[0]
    assert r["files missing"] == 2
    assert r["true events lost, by gate"] == "live 45, B_transitional 14"
    assert r["false events kept"] == 1
