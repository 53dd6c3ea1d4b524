"""The built-in b_cells and nk_cells templates on the real HIPC Lyoplate tubes against
openCyto's automated gating of the same events (MANIFEST section I): counts and per-event
membership (benchmarks/lyoplate_agreement.py; skipped when the real data are absent)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import lyoplate_agreement as la
from immunoprofile.gating.engine import apply_template
from immunoprofile.io.fcs import read_fcs

pytestmark = pytest.mark.realdata

B_TUBE = "12828_1_Bcell_C01"
NK_TUBE = "DC_MONO_NK_12828001_001"


@pytest.fixture(scope="module")
def lyoplate(realdata):
    folder = realdata / "lyoplate"
    if not (folder / "opencyto_matched_reference.csv").exists():
        pytest.skip(f"{folder} holds no Lyoplate reference")
    return folder


def _gate(folder, sample: str, name: str):
    return apply_template(read_fcs(folder / f"{sample}.fcs"), name)


@pytest.fixture(scope="module")
def table(lyoplate):
    """The comparison table of the benchmark (the built-in templates, as a user runs them)."""
    return la.run(lyoplate)


def _row(table: pd.DataFrame, sample: str, pop: str) -> pd.Series:
    return table[(table["sample"] == sample) & (table["population"] == pop)].iloc[0]


def test_reference_masks_reproduce_opencyto_counts(lyoplate):
    """The npz masks (bit-packed) and the expression parser give openCyto's counts."""
    ref = pd.read_csv(lyoplate / "opencyto_matched_reference.csv")
    for sample in ref["sample"].unique():
        masks = np.load(lyoplate / f"opencyto_{sample}.masks.npz")
        names = la.node_names(lyoplate / f"opencyto_{sample}.populations.csv")
        for r in ref[ref["sample"] == sample].itertuples():
            m = la.reference_mask(r.opencyto_numerator, masks, names)
            assert int(m.sum()) == int(r.opencyto_count), r.key


def test_trunk_and_main_populations_agree_per_event(table):
    """Per-event F1 >= 0.90 against openCyto for lymphocytes, live, B, naive B and NK
    (issue 11's targets), and the lymphocyte gate is not the monocyte cloud."""
    for sample, pops in [
        (B_TUBE, ["lymphocytes", "live", "B", "B_naive"]),
        (NK_TUBE, ["lymphocytes", "live", "NK"]),
    ]:
        for pop in pops:
            r = _row(table, sample, pop)
            assert r["F1"] >= la.F1_MIN, (sample, pop, r["F1"])


def test_counts_within_3pp_of_opencyto(table):
    """Every matched population within 3 pp of openCyto (percent of the same parent; for
    CD56bright at most 3 pp above openCyto's upper bound, CD56dim at most 3 below its
    lower bound). Transitional B cells (CD24hi CD38hi on one continuous cloud) are
    within 1 pp since CD38hi starts above the B cells' own main peak (9.2 % against
    9.7 %; from the T cells' CD38 it was 6.2 %). The lymphocytes of both tubes are within
    3 pp (the NK tube's were +8.9 pp before the scatter gate ended at the valleys around
    the lymphocytes)."""
    known: dict = {}
    r = _row(table, B_TUBE, "B_transitional")
    assert abs(r["difference (pp)"]) < 1.0 and r["F1"] > 0.8, r
    for _, r in table.iterrows():
        key, diff = (r["sample"], r["population"]), r["difference (pp)"]
        if key in known:
            lo, hi = known[key]
            assert lo <= diff <= hi, (*key, diff)
        else:
            assert r["meets"], (*key, diff)


def test_unimodal_b_markers_cut_from_the_t_cells_and_no_silent_fallback(table):
    """IgD, CD24 and CD38 show no valley on these B cells: IgD's and CD24's cuts come
    from the T cells, CD38hi from above the B cells' own main peak (plasmablasts, CD20-,
    above the B cells' median) (recorded); no B-tube gate uses its fixed position; every gate at a fixed
    position (here CD56bright, whose NK cells show no CD56-brighter group) is flagged."""
    b = table[table["sample"] == B_TUBE]
    assert not b["fallback"].any()
    ctl = "negative control population live not nonT"
    assert f"IgD: {ctl}" in _row(table, B_TUBE, "B_naive")["control"]
    peak = "main peak of negative control population B, mirrored from its dim half"
    assert "CD38: 50th percentile of the parent" in _row(table, B_TUBE, "plasmablasts")["control"]
    assert f"CD24: {ctl}" in _row(table, B_TUBE, "B_transitional")["control"]
    assert f"CD38: {peak}" in _row(table, B_TUBE, "B_transitional")["control"]
    for r in table.itertuples():
        if r.fallback:
            assert "fallback" in r.flags, (r.sample, r.population)
    r = _row(table, NK_TUBE, "NK_CD56bright")
    assert r["fallback"] and "CD56 (higher expected)" in r["flags"]


def test_nk_tube_lymphocyte_gate_leaves_the_monocytes_out(lyoplate):
    """Issue 11: on this tube the scatter gate used to take the monocyte cloud. The
    lymphocyte gate now holds under 10 % of openCyto's CD14+ monocytes (6.3 %; the
    largest-component choice it replaces held 70 %)."""
    res = _gate(lyoplate, NK_TUBE, "nk_cells")
    masks = np.load(lyoplate / f"opencyto_{NK_TUBE}.masks.npz")
    names = la.node_names(lyoplate / f"opencyto_{NK_TUBE}.populations.csv")
    mono = la.reference_mask("CD14+Lineage-", masks, names)
    share = float((res.masks["lymphocytes"] & mono).sum() / mono.sum())
    assert share < 0.10, share
    roles = [c["role"] for c in res.fitted["lymphocytes"]["params"]["clouds"]]
    assert "larger cells" in roles


def test_nk_tube_lymphocyte_gate_ends_at_the_valleys(lyoplate, table):
    """The scatter gate ends at the density valley between the lymphocytes and the
    monocytes on side scatter, which on this tube lies where openCyto's 1-D density
    minimum on SSC-A put its cut (38,782 of 262,144: 0.148), within 15 %; and below at 4
    of the lymphocyte cloud's SDs under its mode on FSC-A, where openCyto's density cut
    on FSC-A lies (72,444: 0.276), within 10 %. It used to climb above the lymphocytes
    at low FSC and reach down to the acquisition threshold (+8.93 pp, F1 0.921); now
    under 1 % of its events lie above openCyto's SSC cut, the lymphocytes agree within
    1 pp (F1 >= 0.98), and so do nonT and NK. The B tube's lymphocytes stay within 1 pp."""
    res = _gate(lyoplate, NK_TUBE, "nk_cells")
    params = res.fitted["lymphocytes"]["params"]
    assert abs(params["ssc_valley"] / (38782.3 / 262144.0) - 1.0) < 0.15, params
    assert abs(params["fsc_floor"] / (72443.5 / 262144.0) - 1.0) < 0.10, params
    ssc = res.sample.events[:, res.sample.channel_names.index("SSC-A")]
    lym = res.masks["lymphocytes"]
    assert (ssc[lym] > 38782.3 / 262144.0).mean() < 0.01
    for pop in ("lymphocytes", "nonT", "NK"):
        assert abs(_row(table, NK_TUBE, pop)["difference (pp)"]) <= 1.0, pop
    assert _row(table, NK_TUBE, "lymphocytes")["F1"] >= 0.98
    # the bound leaves the NK cells alone: no scatter_valley_cut (the tube's other
    # lineage-negative cells, dendritic cells and basophils, are granular by nature and
    # not checked)
    assert not [q for q in res.qc if q["flag"] == "scatter_valley_cut"]
    assert abs(_row(table, B_TUBE, "lymphocytes")["difference (pp)"]) <= 1.0


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lymphocytes_within_3pp_on_other_subsample_seeds(lyoplate, seed):
    """The fit's subsample is drawn with the gating seed; the lymphocytes of both tubes
    stay within 3 pp of openCyto on other seeds too (the side-scatter valley alone left
    the NK tube at +3.3 to +4.9 pp on seeds 1-3)."""
    ref = pd.read_csv(lyoplate / "opencyto_matched_reference.csv")
    for sample in (NK_TUBE, B_TUBE):
        t = la.compare_sample(lyoplate, sample, ref, seed=seed)
        r = t[t["population"] == "lymphocytes"].iloc[0]
        assert abs(r["difference (pp)"]) <= 3.0, (sample, seed, r["difference (pp)"])


@pytest.mark.parametrize("seed", [2, 3, 6])
def test_every_target_holds_on_other_subsample_seeds(lyoplate, seed):
    """Every population of both tubes meets its count and F1 targets on other gating
    seeds too. CD27 on the B cells shows only a shallow memory shoulder; on seeds 2-7 its
    valley fell under the depth a valley needs, the cut fell back to its fixed position
    and naive B missed by 3.0-3.9 pp (flagged). The cut now comes from the B cells' own
    CD27- main peak mirrored from its dim half (naive B within 1.9 pp on seeds 0-7)."""
    table = la.run(lyoplate, seed=seed)
    misses = la.target_misses(table)
    assert misses.empty, misses[["sample", "population", "difference (pp)", "F1"]]
    naive = _row(table, B_TUBE, "B_naive")
    assert not naive["fallback"] and "CD27" in naive["control"]


@pytest.fixture(scope="module")
def variants(lyoplate):
    """Both tubes gated under every acquisition change of the benchmark."""
    return la.variant_table(lyoplate, {**la.VARIANTS, **la.FLAGGED_VARIANTS})


def test_targets_hold_under_other_voltages_dimmer_stains_and_fewer_events(variants):
    """Scatter gains of 0.6-1.6x, a stain at half brightness and a third of the events:
    every population still within 3 pp of openCyto (or on the right side of its bound)
    and per-event F1 >= 0.90 where targeted."""
    table = variants[variants["variant"].isin(la.VARIANTS)]
    assert set(table["variant"]) == set(la.VARIANTS)
    misses = la.target_misses(table)
    assert misses.empty, misses[["variant", "sample", "population", "difference (pp)", "F1"]]


def test_off_scale_stain_never_misses_silently(variants):
    """A stain four times as bright pushes the brightest events off scale: populations may
    then miss (the NK tube's nonT and NK), but each miss carries a QC flag bearing on its
    population. Twice as bright, every target holds (a `VARIANTS` member)."""
    table = variants[variants["variant"].isin(la.FLAGGED_VARIANTS)]
    misses = la.target_misses(table)
    assert not misses.empty  # the change is large enough to matter
    assert misses["flagged"].all(), misses[["sample", "population", "flags"]]


def test_scatter_gain_leaves_every_gate_in_place(lyoplate):
    """The trunk gates are found from the clouds, not from positions on the scale: a
    scatter detector at other gains gives the same events in every population."""
    raw = read_fcs(lyoplate / f"{B_TUBE}.fcs")
    base = apply_template(raw, "b_cells")
    for variant in (la.Variant(fsc=0.6), la.Variant(ssc=1.6), la.Variant(fsc=0.7, ssc=1.4)):
        changed, kept = variant.apply(raw)
        assert kept.all()
        res = apply_template(changed, "b_cells")
        for pop, mask in base.masks.items():
            assert np.array_equal(res.masks[pop], mask), (variant, pop)


def test_variant_changes_only_the_channels_it_names(lyoplate):
    raw = read_fcs(lyoplate / f"{B_TUBE}.fcs")
    changed, kept = la.Variant(fsc=0.5, stain=2.0, keep=0.25).apply(raw, seed=3)
    names = list(raw.channel_names)
    f, s, fl = names.index("FSC-A"), names.index("SSC-A"), names.index("B515-A")
    assert 0.22 < kept.mean() < 0.28
    np.testing.assert_allclose(changed.events[:, f], 0.5 * raw.events[kept, f], rtol=1e-6)
    np.testing.assert_array_equal(changed.events[:, s], raw.events[kept, s])
    np.testing.assert_allclose(changed.events[:, fl], 2.0 * raw.events[kept, fl], rtol=1e-6)
