"""The gating-tree evaluator on hand-made samples (no compensation or transform)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from immunoprofile.exceptions import MarkerNotFoundError
from immunoprofile.gating.engine import GatingResult, apply_template
from immunoprofile.gating.template import validate_template
from immunoprofile.sample import Sample, make_channel_table

N = 20_000


def hand_sample(seed=0, n=N, shift=0.0):
    """CD3 bimodal (60 % positive); within CD3+, CD4 bimodal (70 % positive); a few
    saturated events on CD4's channel."""
    rng = np.random.default_rng(seed)
    cd3_pos = rng.random(n) < 0.6
    cd4_pos = cd3_pos & (rng.random(n) < 0.7)
    cd3 = np.where(cd3_pos, rng.normal(0.7, 0.05, n), rng.normal(0.2, 0.05, n)) + shift
    cd4 = np.where(cd4_pos, rng.normal(0.65, 0.05, n), rng.normal(0.25, 0.05, n)) + shift
    ev = np.column_stack([cd3, cd4]).astype(np.float32)
    ch = make_channel_table(["BUV395-A", "BV510-A"], ["CD3", "CD4"], ranges=[1024.0, 1024.0])
    s = Sample(ev, ch, name=f"hand{seed}")
    return s, cd3_pos, cd4_pos


TEMPLATE = {
    "name": "hand",
    "compensation": "none",
    "transforms": None,
    "reference": "T",
    "populations": [
        {"name": "T", "gate": {"type": "density_min", "dims": ["CD3"], "side": "+"}},
        {
            "name": "CD4",
            "parent": "T",
            "gate": {"type": "density_min", "dims": ["CD4"], "side": "+"},
        },
        {
            "name": "DN",
            "parent": "T",
            "gate": {"type": "density_min", "dims": ["CD4"], "side": "-"},
        },
        {"name": "fixed", "parent": "T", "gate": {"type": "range", "dims": ["CD4"], "min": 0.9}},
        {
            "name": "notCD4",
            "parent": "T",
            "gate": {"type": "boolean", "op": "not", "dims": ["CD4"]},
        },
    ],
}


def test_masks_match_truth_and_follow_parent():
    s, cd3_pos, cd4_pos = hand_sample()
    res = apply_template(s, validate_template(TEMPLATE))
    assert isinstance(res, GatingResult)
    assert res.masks["T"].shape == (N,) and res.masks["T"].dtype == bool
    assert np.mean(res.masks["T"] == cd3_pos) > 0.999
    assert np.mean(res.masks["CD4"] == cd4_pos) > 0.999
    # children only within the parent; siblings on the same parent share the threshold
    assert not np.any(res.masks["CD4"] & ~res.masks["T"])
    assert np.array_equal(res.masks["CD4"] | res.masks["DN"], res.masks["T"])
    assert not np.any(res.masks["CD4"] & res.masks["DN"])
    assert res.fitted["CD4"]["min"] == pytest.approx(res.fitted["DN"]["max"])
    # a boolean 'not' inside parent T is T minus CD4
    assert np.array_equal(res.masks["notCD4"], res.masks["DN"])


def test_fixed_gate_is_exact_and_counts_table():
    s, *_ = hand_sample()
    res = apply_template(s, TEMPLATE)
    t_mask = res.masks["T"]
    want = t_mask & (s.events[:, 1] >= np.float32(0.9))
    assert np.array_equal(res.masks["fixed"], want)
    tab = res.table()
    assert list(tab.columns) == [
        "population",
        "parent",
        "count",
        "parent_count",
        "percent_of_parent",
        "percent_of_lymphocytes",
    ]
    row = tab.set_index("population").loc["CD4"]
    assert row["count"] == res.counts["CD4"] == int(res.masks["CD4"].sum())
    assert row["parent_count"] == res.counts["T"]
    assert row["percent_of_parent"] == pytest.approx(100 * res.counts["CD4"] / res.counts["T"])
    assert row["percent_of_lymphocytes"] == pytest.approx(row["percent_of_parent"])
    assert tab.set_index("population").loc["T", "parent"] == "root"
    assert tab.set_index("population").loc["T", "parent_count"] == N
    assert res.parent("CD4") == "T"


def test_fitted_record_and_adaptive_follows_drift():
    a = apply_template(hand_sample(seed=1)[0], TEMPLATE)
    b = apply_template(hand_sample(seed=1, shift=0.15)[0], TEMPLATE)
    rec = a.fitted["T"]
    assert rec["type"] == "range" and rec["method"] == "density_min"
    assert rec["fallback"] is False and rec["reason"] is None
    assert rec["channels"] == ["BUV395-A"]
    assert "peaks" in rec["params"]
    assert b.fitted["T"]["min"] - a.fitted["T"]["min"] == pytest.approx(0.15, abs=0.03)
    assert abs(a.counts["T"] - b.counts["T"]) < 30


def test_deterministic_for_a_seed():
    s, *_ = hand_sample(seed=2, n=120_000)
    r1 = apply_template(s, TEMPLATE, seed=7)
    r2 = apply_template(s, TEMPLATE, seed=7)
    for k in r1.masks:
        assert np.array_equal(r1.masks[k], r2.masks[k])
    assert r1.fitted == r2.fitted


def test_qc_flags_too_few_events_fallback_and_off_scale():
    s, *_ = hand_sample(seed=3)
    ev = s.events.copy()
    ev[:, 1] = np.where(np.arange(N) % 20 == 0, 1024.0, ev[:, 1])  # 5 % saturated on CD4
    res = apply_template(Sample(ev, s.channels, name="sat"), TEMPLATE)
    flags = {(q["population"], q["flag"]) for q in res.qc}
    assert ("CD4", "off_scale") in flags
    # a tiny sample: adaptive gates cannot be fitted and fall back
    small, *_ = hand_sample(seed=4, n=30)
    res = apply_template(small, TEMPLATE, min_events=50)
    flags = {(q["population"], q["flag"]) for q in res.qc}
    assert ("T", "fallback") in flags and ("T", "too_few_events") in flags
    assert res.fitted["T"]["fallback"] is True
    assert "30 events" in res.fitted["T"]["reason"]


def test_missing_marker_raises_with_suggestion():
    s, *_ = hand_sample()
    bad = {
        **TEMPLATE,
        "populations": [{"name": "T", "gate": {"type": "range", "dims": ["CD33"], "min": 0.5}}],
    }
    with pytest.raises(MarkerNotFoundError, match="CD33") as info:
        apply_template(s, bad)
    assert "CD3" in str(info.value)


def test_pinned_channel_and_alias():
    s, cd3_pos, _ = hand_sample()
    pinned = {
        **TEMPLATE,
        "channels": {"TCR": "BUV395-A"},
        "populations": [{"name": "T", "gate": {"type": "range", "dims": ["TCR"], "min": 0.45}}],
    }
    res = apply_template(s, pinned)
    assert np.array_equal(res.masks["T"], s.events[:, 0] >= np.float32(0.45))
    aliased = {
        **TEMPLATE,
        "aliases": {"Leu4": ["CD3"]},
        "populations": [{"name": "T", "gate": {"type": "range", "dims": ["Leu4"], "min": 0.45}}],
    }
    assert np.array_equal(apply_template(s, aliased).masks["T"], res.masks["T"])
    wrong = {**pinned, "channels": {"TCR": "PE-A"}}
    with pytest.raises(MarkerNotFoundError, match="pins TCR to channel 'PE-A'"):
        apply_template(s, wrong)


def test_table_is_dataframe_with_int_counts():
    s, *_ = hand_sample()
    tab = apply_template(s, TEMPLATE).table()
    assert isinstance(tab, pd.DataFrame)
    assert tab["count"].dtype == np.int64


def test_missing_marker_names_the_template_population():
    s, *_ = hand_sample()
    bad = {
        **TEMPLATE,
        "populations": [{"name": "T", "gate": {"type": "range", "dims": ["CD33"], "min": 0.5}}],
    }
    with pytest.raises(MarkerNotFoundError, match=r"lacks \(CD33\); per population.*\n  T: CD33\n"):
        apply_template(s, bad)


def test_provenance_lists_compensation_and_transforms_applied():
    """The spillover of the file (parsed here from its keyword text, independently) and the
    default transforms with their parameters, without touching events."""
    from immunoprofile.simulate import simulate_sample

    raw, _ = simulate_sample(events=3000, seed=4)
    res = apply_template(raw, "tregs")
    prov = res.provenance
    text = raw.keywords["$SPILLOVER"].split(",")
    k = int(text[0])
    names, values = text[1 : k + 1], np.array(text[k + 1 :], dtype=float).reshape(k, k)
    comp = prov["compensation"]
    assert comp["detectors"] == [n.strip() for n in names]
    np.testing.assert_allclose(comp["matrix"], values, rtol=1e-12)
    assert "$SPILLOVER" in comp["source"]
    tr = prov["transforms"]
    # defaults: logicle(T=$PnR, W=0.5, M=4.5, A=0) for fluorescence, linear for scatter
    assert tr["PE-A"] == {"type": "logicle", "t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0}
    assert tr["FSC-A"]["type"] == "linear" and tr["FSC-A"]["t"] == 262144.0
    assert "Time" not in tr
    assert prov["markers"]["CD25"] == "PE-A" and prov["markers"]["CD3"] == "BUV395-A"
    assert prov["steps"][-2:] == ["compensate", "transform"]
    # already on the analysis scale and gated with transforms=None: nothing recorded
    s, *_ = hand_sample()
    p2 = apply_template(s, TEMPLATE).provenance
    assert p2["compensation"] == {
        "mode": "none", "status": "off", "source": None,
        "reason": "compensation turned off (mode none)",
    }  # fmt: skip
    assert p2["transforms"] is None and p2["read"] is None


def test_off_scale_counts_the_population_not_what_its_gate_leaves_out():
    """``off_scale`` is about a population's own events: 14 % of the events (the
    monocytes and myeloid doublets) saturated on FSC-A lie outside the lymphocyte gate
    (their true forward scatter is even larger) and raise no flag; the lymphocytes are
    gated as without the saturation. One T cell in 20 saturated on CD3 lies inside the T
    gate, where its CD3 value is unknown: T is flagged with its share (5.0 %)."""
    from immunoprofile.simulate import simulate_sample, truth_mask

    s, labels = simulate_sample(events=30_000, seed=5)
    big = truth_mask(labels, "monocyte") | (np.asarray(labels) == "doublet_myeloid")
    assert big.mean() > 0.10
    ev = s.events.copy()
    fsc = s.channel_names.index("FSC-A")
    ev[big, fsc] = float(s.channels["range"].iloc[fsc])
    res = apply_template(Sample(ev, s.channels, s.keywords, name="sat"), "tregs")
    assert not [q for q in res.qc if q["flag"] == "off_scale"]
    assert not res.masks["lymphocytes"][big].any()
    ref = apply_template(s, "tregs")
    assert (
        abs(res.counts["lymphocytes"] - ref.counts["lymphocytes"])
        < 0.02 * ref.counts["lymphocytes"]
    )

    ev = s.events.copy()
    cd3 = s.channel_names.index("BUV395-A")
    ev[np.flatnonzero(truth_mask(labels, "T"))[::20], cd3] = float(s.channels["range"].iloc[cd3])
    res = apply_template(Sample(ev, s.channels, s.keywords, name="sat"), "tregs")
    flags = [q for q in res.qc if q["flag"] == "off_scale"]
    assert [q["population"] for q in flags] == ["T"]
    assert flags[0]["detail"].startswith("5.0% of the population's events at the top of BUV395-A")
