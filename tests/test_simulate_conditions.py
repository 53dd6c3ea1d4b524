"""Simulator conditions beyond the default cohort: whole blood, scatter voltages, dim
stains, low-FSC lymphocytes, unimodal IgD/CD24/CD38 donors."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.exceptions import SimulationError
from immunoprofile.simulate import Conditions, simulate_cohort, simulate_sample, truth_mask
from immunoprofile.simulate import biology as bio
from immunoprofile.simulate.conditions import unimodal_b_phenotypes
from immunoprofile.simulate.panel import MARKERS

N = 30_000


def _labels(labels) -> np.ndarray:
    return np.asarray(labels, dtype=object)


def test_default_conditions_leave_the_files_unchanged():
    a, la = simulate_sample(events=5000, seed=4)
    b, lb = simulate_sample(events=5000, seed=4, conditions=Conditions())
    assert np.array_equal(a.events, b.events) and (_labels(la) == _labels(lb)).all()


def test_whole_blood_is_mostly_granulocytes():
    _, pbmc = simulate_sample(events=N, seed=1)
    _, blood = simulate_sample(events=N, seed=1, conditions=Conditions(whole_blood=True))
    gran_pbmc = (_labels(pbmc) == "granulocyte").mean()
    gran_blood = (_labels(blood) == "granulocyte").mean()
    assert gran_pbmc < 0.06
    assert 0.33 < gran_blood < 0.76  # WHOLE_BLOOD draws 42-66 % (clipped to 0.8x-1.15x)


def test_scatter_voltage_scales_the_scatter_channels_only():
    base, lab = simulate_sample(events=N, seed=2)
    cond = Conditions(fsc_scale=0.5, ssc_scale=1.6)
    s, lab2 = simulate_sample(events=N, seed=2, conditions=cond)
    t = truth_mask(lab, "T")
    assert (truth_mask(lab2, "T") == t).all()  # the same cells
    for ch, factor in (("FSC-A", 0.5), ("SSC-A", 1.6)):
        ratio = np.median(s.column(ch)[t]) / np.median(base.column(ch)[t])
        assert ratio == pytest.approx(factor, rel=0.03)
    cd3 = s.channel_names.index("BUV395-A")
    assert np.median(s.events[t, cd3]) == pytest.approx(np.median(base.events[t, cd3]), rel=1e-6)


def test_dim_stain_lowers_antibody_signal_but_not_the_viability_dye():
    base, lab = simulate_sample(events=N, seed=3)
    dim, _ = simulate_sample(events=N, seed=3, conditions=Conditions(stain=0.4))
    t = truth_mask(lab, "T")
    cd3 = base.channel_names.index("BUV395-A")
    ratio = np.median(dim.events[t, cd3]) / np.median(base.events[t, cd3])
    assert 0.35 < ratio < 0.5  # 0.4 of the stain, plus unchanged autofluorescence
    dead = _labels(lab) == "dead"
    viab = base.channel_names.index(
        next(c for c, m in zip(base.channel_names, base.markers) if m and "Viab" in m)
    )
    assert np.median(dim.events[dead, viab]) == pytest.approx(
        np.median(base.events[dead, viab]), rel=0.05
    )


def test_low_fsc_brings_monocytes_and_debris_close_to_the_lymphocytes():
    base, lab = simulate_sample(events=N, seed=5)
    low, lab2 = simulate_sample(events=N, seed=5, conditions=Conditions(low_fsc=True))

    def gap(s, labels):
        lym = np.median(s.column("FSC-A")[truth_mask(labels, "T")])
        mono = np.median(s.column("FSC-A")[_labels(labels) == "monocyte"])
        return mono / lym

    assert gap(base, lab) > 1.5
    assert gap(low, lab2) < 1.45


def test_unimodal_b_donor_has_overlapping_igd_groups():
    base, lab = simulate_sample(events=60_000, seed=6)
    uni, lab2 = simulate_sample(events=60_000, seed=6, conditions=Conditions(unimodal_b=1.0))
    igd = base.channel_names.index(
        next(c for c, m in zip(base.channel_names, base.markers) if m and m.startswith("IgD"))
    )

    def separation(s, labels):
        """d' of IgD (arcsinh scale) between naive (IgD+) and memory B cells."""
        x = np.arcsinh(s.events[:, igd].astype(float) / 150.0)
        a, b = x[truth_mask(labels, "B_naive")], x[truth_mask(labels, "B_memory")]
        return abs(np.median(a) - np.median(b)) / np.sqrt((a.var() + b.var()) / 2)

    d_base, d_uni = separation(base, lab), separation(uni, lab2)
    assert d_base > 1.0  # naive apart from (mostly IgD- switched) memory B cells
    assert d_uni < 0.5 * d_base, (d_base, d_uni)  # one broad peak
    # the truth labels (and so the truth frequencies) are those of any donor
    assert truth_mask(lab2, "B").mean() > 0.02


def test_unimodal_b_phenotypes_pull_b_medians_together_only():
    med, spr = unimodal_b_phenotypes(bio.MEDIANS, bio.SPREADS)
    j = MARKERS.index("IgD")
    rows = [i for i, c in enumerate(bio.COMPONENTS) if c.label in ("B_naive", "B_memory")]
    before = np.ptp(np.log(np.maximum(bio.MEDIANS[rows, j], 1.0)))
    after = np.ptp(np.log(med[rows, j]))
    assert after < 0.5 * before
    assert (spr[rows, j] >= 0.6).all()
    t = [i for i, c in enumerate(bio.COMPONENTS) if c.label == "Th1"]
    assert np.array_equal(med[t], bio.MEDIANS[t])  # T cells untouched


def test_conditions_draw_and_describe():
    rng = np.random.default_rng(0)
    drawn = [Conditions.draw(rng) for _ in range(60)]
    assert any(c.is_default for c in drawn) and any(not c.is_default for c in drawn)
    assert any(c.whole_blood for c in drawn) and any(c.low_fsc for c in drawn)
    assert all(0.5 <= c.fsc_scale <= 2.0 for c in drawn)
    assert not any(c.whole_blood and c.low_fsc for c in drawn)
    assert Conditions(stain=0.5, whole_blood=True).describe() == "stain x0.50, whole blood"
    assert Conditions().describe() == "default"
    with pytest.raises(SimulationError, match="stain"):
        Conditions(stain=0)
    with pytest.raises(SimulationError, match="unimodal_b"):
        Conditions(unimodal_b=2)


def test_cohort_with_conditions_marks_some_donors_unimodal(tmp_path):
    info = simulate_cohort(
        tmp_path, patients=4, visits=("baseline",), events=3000, seed=9,
        conditions=Conditions(whole_blood=True, unimodal_b=0.5),
    )  # fmt: skip
    assert len(info.fcs) == 4
    gran = info.frequencies  # truth table: lymphocytes are a small share of all events
    lym = gran[gran["population"] == "lymphocytes"]["percent_of_parent"]
    assert (lym < 60).all()
