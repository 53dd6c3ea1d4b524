"""Subset gates of the built-in templates on unimodal or multi-peak markers: FOXP3 on
CD25hi CD127lo cells, CD38 on B cells. Hand-made events with known membership;
the gates are the templates' own (loaded from the built-in JSON)."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.gating.template import load_template


def _gate(template: str, population: str):
    pop = next(p for p in load_template(template).populations if p.name == population)
    return pop.gate.clone()


def _foxp3_treg_gate(rng, n=6_000):
    """Cells of a CD25hi CD127lo gate: FOXP3+ Tregs (86 %), FOXP3-dim activated cells
    (9 %) and conventional CD4 cells that slipped in (5 %), each a clear peak."""
    parts = [
        rng.normal(0.72, 0.04, int(0.86 * n)),
        rng.normal(0.46, 0.04, int(0.09 * n)),
        rng.normal(0.22, 0.04, int(0.05 * n)),
    ]
    return np.concatenate(parts), len(parts[0])


def test_foxp3_cut_is_the_valley_below_the_foxp3_peak():
    """Two valleys inside the search range: the lowest lies between the conventional and
    the FOXP3-dim cells (about 0.34) and would count the FOXP3-dim cells as FOXP3+
    (+9 pp); the template takes the valley right below the dominant FOXP3+ peak."""
    rng = np.random.default_rng(11)
    x, n_pos = _foxp3_treg_gate(rng)
    g = _gate("tregs", "Treg_FOXP3").fit(x)
    assert not g.fallback_
    assert g.params_["control"] == "density valley of the parent"
    assert 0.55 < g.threshold_ < 0.65
    assert (x >= g.threshold_).sum() == pytest.approx(n_pos, rel=0.01)
    lowest = g.clone(valley="lowest").fit(x)
    assert lowest.threshold_ < 0.42  # the valley that let the FOXP3-dim cells in


def test_b_cell_cd38hi_from_the_b_cells_main_peak():
    """CD38 on B cells with no valley above the main peak (as in the Lyoplate tube):
    transitional B cells a shoulder above the naive B cells; T cells carry CD38 too and
    reach into the shoulder. CD38hi starts at the 99th percentile of the B cells' main
    peak mirrored from its dim half, not at the T cells' 99th percentile."""
    rng = np.random.default_rng(13)
    naive = rng.normal(0.55, 0.06, 9_000)
    trans = rng.normal(0.74, 0.05, 900)
    memory = rng.normal(0.2, 0.1, 900)  # CD38lo memory B cells below
    b = np.concatenate([naive, trans, memory])
    g = _gate("b_cells", "B_transitional")
    g.fit(np.column_stack([rng.normal(0.6, 0.05, len(b)), b]), controls={"CD38": b})
    cd38 = g.fitted_dict()["params"]["CD38"]
    assert cd38["control"].startswith("main peak of negative control population B")
    assert cd38["threshold"] == pytest.approx(0.55 + 2.3263 * 0.06, abs=0.015)
    share = (b >= cd38["threshold"]).mean()
    assert share == pytest.approx(len(trans) / len(b), abs=0.02)


def test_b_tube_viability_cut_keeps_ig_d_bright_b_cells(tmp_path):
    """Strong drift leaves IgD (APC-R700) a little under-compensated in the viability
    detector (APC-Cy7): transitional B cells, the brightest for IgD, lean into the
    viability dye (median 0.27 against 0.12 for T cells, dead cells at 0.71). A cut where
    the T-cell-dominated live peak tails off (0.31) drops a quarter of them; the B tube's
    cut at the valley between the live and the dead cells keeps them."""
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.simulate import read_truth, simulate_cohort, truth_mask

    info = simulate_cohort(tmp_path, patients=2, events=100_000, seed=141845804, drift=2.0)
    i = [p.stem for p in info.fcs].index("P02_week24")
    raw, labels = read_fcs(info.fcs[i]), read_truth(info.truth[i])
    truth = truth_mask(labels, "B_transitional")
    tail = load_template("b_cells").to_dict()
    for pop in tail["populations"]:
        if pop["name"] == "live":
            pop["gate"]["per_dim"]["Viability"] = {
                "type": "tail", "tol": 0.01, "mirror": 1.5, "fallback": 0.45
            }  # fmt: skip
    out = {}
    for name, template in (("valley", "b_cells"), ("tail", tail)):
        res = apply_template(raw, template)
        gated = res.masks["B_transitional"]
        f1 = 2 * np.count_nonzero(truth & gated) / (truth.sum() + gated.sum())
        out[name] = (f1, int(np.count_nonzero(truth & ~res.masks["live"])))
    assert truth.sum() == 166
    assert out["valley"][0] > 0.95 and out["valley"][1] <= 2
    assert out["tail"][0] < 0.86 and out["tail"][1] > 35


def test_naive_b_igd_cut_at_the_valley_below_the_naive_peak(tmp_path):
    """IgD on B cells with three peaks (IgD- memory, IgD-dim memory, IgD+ naive): the
    lowest valley lay below the IgD-dim peak and counted those cells as naive (+5.2 pp in
    this simulated file of a fresh-seed evaluation); the valley right below the dominant
    naive peak gives naive B within 0.5 pp."""
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.simulate import read_truth, simulate_cohort, truth_mask

    info = simulate_cohort(tmp_path, patients=3, events=100_000, seed=929701904, drift=2.0)
    i = [p.stem for p in info.fcs].index("P03_baseline")
    raw, labels = read_fcs(info.fcs[i]), read_truth(info.truth[i])
    res = apply_template(raw, "b_cells")
    igd = res.fitted["B_naive"]["params"]["IgD"]
    assert igd["control"] == "density valley of the parent"
    lower = [p for p in igd["peaks"] if p < igd["threshold"]]
    assert len(lower) >= 3  # the IgD-negative and IgD-dim peaks both lie below the cut
    truth_b, gated_b = truth_mask(labels, "B"), res.masks["B"]
    truth_pct = 100 * truth_mask(labels, "B_naive").sum() / truth_b.sum()
    gated_pct = 100 * res.masks["B_naive"].sum() / gated_b.sum()
    assert abs(gated_pct - truth_pct) < 0.5
