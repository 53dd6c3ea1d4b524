"""Accuracy of the built-in templates on a few small simulated samples, against the
simulator's per-event truth. The full-cohort table (default and strong drift, 7 patients x
2 visits x 100k events) comes from ``benchmarks/gating_accuracy.py``."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import load_template

simulate = pytest.importorskip("immunoprofile.simulate")

MAIN = ("T", "CD4", "Treg", "B", "NK")  # issue target: F1 >= 0.95
SUBSETS = (
    "Th17",
    "Th1",
    "Th2",
    "CD4_memory",
    "Treg_FOXP3",
    "Treg_naive",
    "Treg_memory",
    "B_naive",
    "B_memory",
    "plasmablasts",
    "NK_CD56bright",
    "NK_CD56dim",
)  # issue target: F1 >= 0.90
# B_transitional (CD24hi CD38hi, ~4 % of B): F1 0.84-0.97 per file, below the 0.90 target
# on a few files (see docs/gating_accuracy.md). Most of the loss is upstream: the trunk's
# tail-cut viability gate drops 10-20 % of these IgDhi cells on some files (IgD's APC-R700
# spills into the viability detector, and compensation leaves the spread); the rest is a
# flat CD38 valley floor (the cut drifts by ~0.04 on it).


def _f1(truth: np.ndarray, gated: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(truth & gated) / (truth.sum() + gated.sum())


@pytest.fixture(scope="module", params=[(11, 1.0), (12, 2.0)], ids=["drift1", "drift2"])
def gated(request):
    seed, drift = request.param
    sample, labels = simulate.simulate_sample(events=100_000, seed=seed, drift=drift)
    res = apply_template(sample, load_template("immune_profile"), seed=0)
    return res, labels


def _percent(mask: np.ndarray, parent: np.ndarray) -> float:
    return 100.0 * mask.sum() / parent.sum()


def test_main_populations_f1_and_frequency(gated):
    res, labels = gated
    for pop in MAIN:
        truth = simulate.truth_mask(labels, pop)
        assert _f1(truth, res.masks[pop]) >= 0.95, pop
        err = _error(res, labels, pop)
        assert abs(err) <= 1.5, (pop, err)


def test_subsets_f1_and_frequency(gated):
    res, labels = gated
    errors = []
    for pop in SUBSETS:
        truth = simulate.truth_mask(labels, pop)
        assert _f1(truth, res.masks[pop]) >= 0.90, pop
        err = _error(res, labels, pop)
        errors.append(abs(err))
        # Treg_FOXP3 and Treg_naive/memory reach 2-3.5 pp on some files (docs table)
        assert abs(err) <= 3.5, (pop, err)
    assert np.median(errors) <= 0.5


def test_b_transitional_close_to_target(gated):
    res, labels = gated
    truth = simulate.truth_mask(labels, "B_transitional")
    assert _f1(truth, res.masks["B_transitional"]) >= 0.80


def test_no_adaptive_gate_fell_back(gated):
    res, _ = gated
    assert [q for q in res.qc if q["flag"] == "fallback"] == []


def _error(res, labels, pop: str) -> float:
    parent = res.parent(pop)
    return _percent(res.masks[pop], res.masks[parent]) - _percent(
        simulate.truth_mask(labels, pop), simulate.truth_mask(labels, parent)
    )


def test_memory_cut_and_treg_subsets_match_truth(gated):
    # CD4_memory: the density minimum between the wide CD45RA- and the narrow CD45RA+
    # peak cut 0.4-0.7 pp of memory cells away on every file; the mixture's
    # equal-posterior cut (on conventional CD4 cells) is unbiased. Treg_FOXP3:
    # conventional cells let into the Treg gate are FOXP3- and used to pull the FOXP3+
    # share ~1 pp below truth.
    res, labels = gated
    assert res.fitted["Tconv_memory"]["method"] == "gmm"
    assert res.fitted["Tconv_memory"]["params"]["threshold"] > 0.5
    assert abs(_error(res, labels, "CD4_memory")) <= 0.3
    assert abs(_error(res, labels, "Treg_FOXP3")) <= 0.6
    assert res.fitted["Treg"]["params"]["cut"] == "projection"
    assert abs(_error(res, labels, "Treg")) <= 0.3


def test_naive_tregs_stay_out_of_cd4_memory(gated):
    # Naive Tregs carry less CD45RA than naive conventional cells: one CD45RA mixture cut
    # over all CD4 cells (posterior level 0.4) called 14-22 % of them memory, and being
    # CXCR3- CCR6- they went to Th2 (+0.61 pp on the drift-1 sample, Th1 -0.46). Memory
    # is now the union of each compartment's own memory gate.
    res, labels = gated
    m = res.masks
    naive_treg = simulate.truth_mask(labels, "Treg_naive")
    assert np.count_nonzero(m["CD4_memory"] & naive_treg) <= 0.06 * naive_treg.sum()
    naive_conv = simulate.truth_mask(labels, "CD4_naive_conv")
    assert np.count_nonzero(m["CD4_memory"] & naive_conv) <= 0.01 * naive_conv.sum()
    np.testing.assert_array_equal(m["CD4_memory"], m["Tconv_memory"] | m["Treg_memory"])
    assert not np.any(m["Tconv"] & m["Treg"])
    assert abs(_error(res, labels, "CD4_memory")) <= 0.3
    assert abs(_error(res, labels, "Th2")) <= 0.45
    assert abs(_error(res, labels, "Th1")) <= 0.4


def test_th17_template_memory_gate_matches_the_full_template(gated):
    # th17.json carries the Treg gates CD4_memory needs, defined as in tregs.json and
    # immune_profile.json, so the three templates give the same memory cells
    res, _ = gated
    th17 = apply_template(res.sample, load_template("th17"), seed=0)
    for pop in ("Treg", "Treg_naive", "CD4_memory", "Th1", "Th2", "Th17"):
        np.testing.assert_array_equal(th17.masks[pop], res.masks[pop], err_msg=pop)


def _nonT_error(res, labels, pop: str) -> float:
    nont = simulate.truth_mask(labels, "nonT")
    return _percent(res.masks[pop], res.masks["nonT"]) - _percent(
        simulate.truth_mask(labels, pop), nont
    )


def test_b_and_nk_of_nonT_despite_cd14_dim_monocytes():
    # a sample whose CD14-dim (CD16+) monocytes reach deep into the lymphocyte scatter
    # region: with the generous scatter gate alone (no exclude_larger, no side-scatter
    # valley) ~400 of them end up
    # in nonT and B and NK percentages of nonT are ~3 points too low
    sample, labels = simulate.simulate_sample(events=50_000, seed=17, drift=1.0)
    spec = load_template("immune_profile").to_dict()
    scatter = spec["populations"][0]
    assert scatter["name"] == "lymphocytes" and scatter["gate"]["exclude_larger"] > 0.5
    scatter["gate"] = {
        k: v for k, v in scatter["gate"].items() if k not in ("exclude_larger", "valleys")
    }
    generous = apply_template(sample, load_template(spec), seed=0)
    res = apply_template(sample, load_template("immune_profile"), seed=0)
    mono = simulate.truth_mask(labels, "monocyte")
    assert np.count_nonzero(generous.masks["nonT"] & mono) > 300
    assert min(_nonT_error(generous, labels, p) for p in ("B", "NK")) < -2.0
    # the built-in trunk leaves the monocyte cloud out: B and NK within 0.75 pp of truth
    assert np.count_nonzero(res.masks["nonT"] & mono) < 60
    for pop in ("B", "NK"):
        assert abs(_nonT_error(res, labels, pop)) <= 0.75, pop
        assert _f1(simulate.truth_mask(labels, pop), res.masks[pop]) >= 0.98, pop
    # and the trunk itself is no worse: live singlet lymphocytes kept, T unchanged
    live = simulate.truth_mask(labels, "live")
    assert _f1(live, res.masks["live"]) >= _f1(live, generous.masks["live"])
    T = simulate.truth_mask(labels, "T")
    assert _f1(T, res.masks["T"]) >= 0.998


def test_treg_naive_by_the_two_dimensional_mixture(gated):
    # naive (CD45RA+ CD25+) vs memory (CD45RA- CD25hi) Tregs by the equal-posterior
    # region of a mixture on CD45RA x CD25: a CD45RA cut alone was 1.8 pp off on the
    # drift-1 sample (F1 0.93-0.94); memory is the exact rest of Treg
    res, labels = gated
    rec = res.fitted["Treg_naive"]
    assert rec["method"] == "gmm" and rec["dims"] == ["CD45RA", "CD25"]
    assert rec["type"] == "polygon" and rec["params"]["init"] == "marginal"
    naive, memory, treg = (res.masks[p] for p in ("Treg_naive", "Treg_memory", "Treg"))
    assert np.array_equal(naive | memory, treg) and not (naive & memory).any()
    assert abs(_error(res, labels, "Treg_naive")) <= 1.2
    assert _f1(simulate.truth_mask(labels, "Treg_naive"), naive) >= 0.94
    assert _f1(simulate.truth_mask(labels, "Treg_memory"), memory) >= 0.98


def test_b_subsets_cd38_cut_ignores_a_ripple_on_the_cd38lo_peak(tmp_path):
    # the benchmark's file that broke (seed 20, default drift, P05 week 24): the kernel
    # density of CD38 on B cells has a 3 % ripple on top of the CD38lo peak (narrow
    # bandwidth, ~7,000 events), which passed the low prominence test and, as the first
    # valley, put the CD38 cut inside the CD38lo peak: B_memory F1 0.65, B_transitional
    # 0.18 (45 pp too many), plasmablasts 0.27, with no fallback flagged
    info = simulate.simulate_cohort(tmp_path, patients=5, events=100_000, seed=20, drift=1.0)
    from immunoprofile.io.fcs import read_fcs

    assert info.fcs[-1].name == "P05_week24.fcs"
    labels = simulate.read_truth(info.truth[-1])
    res = apply_template(read_fcs(info.fcs[-1]), load_template("b_cells"))
    cd38 = res.fitted["B_transitional"]["params"]["CD38"]
    assert not cd38["fallback"] and cd38["valley_density"] < 0.1
    lo_peak = cd38["peaks"][0]
    assert cd38["threshold"] > lo_peak + 0.1  # above the CD38lo peak, not on it
    for pop in ("B_memory", "B_transitional", "plasmablasts"):
        assert _f1(simulate.truth_mask(labels, pop), res.masks[pop]) >= 0.90, pop
        assert abs(_error(res, labels, pop)) <= 1.5, pop


def test_split_monocyte_cloud_stays_out_of_the_scatter_gate(tmp_path):
    # the benchmark's file that broke (seed 30 -> strong-drift cohort seed 31, P02 week 24):
    # the mixture split the monocyte cloud in two and one half, 5.7 Mahalanobis units from
    # the lymphocyte core with its centre inside the generous region (a broad joined
    # component of dying cells reached it), passed for a bridge and was not excluded:
    # 9,200 monocytes in the scatter gate, 1,400 CD14-dim ones left in live (live -8.95 pp,
    # T -1.6, B -2.5, NK -5.5 pp of nonT)
    info = simulate.simulate_cohort(tmp_path, patients=2, events=100_000, seed=31, drift=2.0)
    from immunoprofile.io.fcs import read_fcs

    assert info.fcs[-1].name == "P02_week24.fcs"
    labels = simulate.read_truth(info.truth[-1])
    res = apply_template(read_fcs(info.fcs[-1]), load_template("immune_profile"), seed=0)
    mono = simulate.truth_mask(labels, "monocyte")
    assert np.count_nonzero(res.masks["lymphocytes"] & mono) < 0.1 * mono.sum()
    assert np.count_nonzero(res.masks["live"] & mono) < 400
    live = simulate.truth_mask(labels, "live")
    assert _f1(live, res.masks["live"]) >= 0.99
    assert abs(_error(res, labels, "live")) <= 2.0
    assert abs(_error(res, labels, "T")) <= 0.5
    for pop in ("T", "B", "NK"):
        assert _f1(simulate.truth_mask(labels, pop), res.masks[pop]) >= 0.98, pop
    for pop in ("B", "NK"):
        assert abs(_nonT_error(res, labels, pop)) <= 1.0, pop
    blob = res.fitted["lymphocytes"]["params"]
    assert len(blob["excluded"]) >= 2  # both parts of the monocyte cloud


def test_b_subsets_cd38_cut_at_the_edge_of_the_cd38lo_majority(tmp_path):
    # `immunoprofile demo`'s cohort (seed 0, 20,000 events): on P07 baseline and P01 week 48
    # a minor CD38-dim peak sits below the CD38lo majority of B cells, so the first valley
    # along CD38 fell between those two (cut ~0.23-0.29) and B_transitional read 98 % with no
    # fallback. The cut now takes the first valley above the highest peak ('above_mode').
    from immunoprofile.io.fcs import read_fcs

    info = simulate.simulate_cohort(
        tmp_path, patients=7, visits=("baseline", "week24", "week48"), events=20_000, seed=0
    )
    by_name = {p.name: (p, t) for p, t in zip(info.fcs, info.truth)}
    template = load_template("b_cells")
    for name in ("P07_baseline.fcs", "P01_week48.fcs"):
        fcs, truth = by_name[name]
        labels = simulate.read_truth(truth)
        res = apply_template(read_fcs(fcs), template)
        cd38 = res.fitted["B_transitional"]["params"]["CD38"]
        assert not cd38["fallback"] and cd38["threshold"] > 0.5, (name, cd38)
        for pop in ("B_memory", "B_transitional", "plasmablasts"):
            assert abs(_error(res, labels, pop)) <= 1.5, (name, pop, _error(res, labels, pop))
