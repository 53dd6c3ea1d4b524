"""Trunk gates found by biology (the lymphocyte cloud as the major scatter cloud of lowest
side scatter, whatever the scatter scale) and unimodal markers cut from an internal
control population of the same file, on hand-made events with known membership."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.exceptions import GatingError, TemplateError
from immunoprofile.gating.adaptive import BlobGate, DensityMinimumGate
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import validate_template
from immunoprofile.sample import Sample, make_channel_table


def _clouds(rng, spec):
    """Log-normal scatter clouds: spec = [(n, (fsc, ssc), (sd_fsc, sd_ssc)), ...]."""
    parts, labels = [], []
    for k, (n, centre, sd) in enumerate(spec):
        parts.append(rng.lognormal(np.log(centre), sd, (n, 2)))
        labels.append(np.full(n, k))
    return np.vstack(parts), np.concatenate(labels)


def _whole_blood(rng, scale=1.0):
    """Whole blood: granulocytes 60 % (the heaviest cloud), lymphocytes 30 %, monocytes
    8 %, debris 2 %. Cloud 1 is the lymphocytes."""
    X, lab = _clouds(
        rng,
        [
            (12_000, (0.55, 0.45), (0.07, 0.12)),  # granulocytes
            (6_000, (0.30, 0.06), (0.06, 0.15)),  # lymphocytes
            (1_600, (0.45, 0.16), (0.07, 0.15)),  # monocytes
            (400, (0.10, 0.03), (0.25, 0.4)),  # debris
        ],
    )
    return X * scale, lab


@pytest.mark.parametrize("scale", [1.0, 262_144.0, 1e-3])
def test_lymphocytes_are_the_low_ssc_cloud_not_the_heaviest(scale):
    """In whole blood the granulocytes are the heaviest cloud; `select="lymphocytes"`
    takes the lymphocytes, and leaves out granulocytes and monocytes, at any scatter
    scale (the same events times 1, 262,144 or 1/1000)."""
    X, lab = _whole_blood(np.random.default_rng(1), scale)
    cols = [X[:, 0], X[:, 1]]
    g = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67).fit(X)
    m = g.mask(cols)
    assert not g.fallback_
    assert m[lab == 1].mean() > 0.97
    assert m[lab == 0].mean() < 0.01
    assert m[lab == 2].mean() < 0.10
    roles = {c["role"] for c in g.params_["clouds"]}
    assert {"lymphocytes", "larger cells"} <= roles


def test_lymphocyte_cloud_found_when_monocytes_outweigh_a_split_lymphocyte_cloud():
    """PBMC whose lymphocytes the mixture splits in parts (a small-lymphocyte and a
    large-lymphocyte cloud next to each other) while the monocytes are one tight cloud:
    the modes of the mixture density keep the lymphocytes whole."""
    rng = np.random.default_rng(7)
    X, lab = _clouds(
        rng,
        [
            (5_000, (0.28, 0.07), (0.05, 0.12)),
            (4_000, (0.32, 0.09), (0.06, 0.14)),
            (5_500, (0.50, 0.25), (0.05, 0.08)),  # monocytes, the heaviest single cloud
        ],
    )
    g = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67).fit(X)
    m = g.mask([X[:, 0], X[:, 1]])
    assert m[lab < 2].mean() > 0.97
    assert m[lab == 2].mean() < 0.02


def test_debris_below_the_lymphocytes_is_not_taken_for_them():
    """A major debris cloud at lower forward scatter and about the lymphocytes' side
    scatter is not the lymphocyte cloud, though its side scatter is the lowest."""
    rng = np.random.default_rng(3)
    X, lab = _clouds(
        rng,
        [
            (3_000, (0.10, 0.045), (0.10, 0.12)),  # debris, lowest SSC
            (8_000, (0.35, 0.06), (0.05, 0.12)),  # lymphocytes
            (2_000, (0.55, 0.22), (0.06, 0.12)),  # monocytes
        ],
    )
    g = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67).fit(X)
    roles = {tuple(np.round(c["mode"], 2)): c["role"] for c in g.params_["clouds"]}
    lym = [m for m, r in roles.items() if r == "lymphocytes"]
    assert len(lym) == 1 and 0.28 < lym[0][0] < 0.42
    m = g.mask([X[:, 0], X[:, 1]])
    assert m[lab == 1].mean() > 0.97
    assert m[lab == 2].mean() < 0.02


@pytest.mark.parametrize("seed", [0, 1])
def test_valleys_end_the_gate_below_the_granular_cells(seed):
    """PBMC with a diffuse bridge of dying cells between debris and the monocytes, low on
    forward scatter and above the lymphocytes on side scatter (the layout of the real
    Lyoplate NK tube). The generous contour keeps a quarter of the bridge cells above the
    lymphocyte/monocyte valley; ``valleys`` ends the gate at that valley's side scatter
    (recorded, between the two clouds' modes) and leaves under 5 % of them, while keeping
    the lymphocytes."""
    rng = np.random.default_rng(seed)
    X, lab = _clouds(
        rng,
        [
            (8_000, (0.40, 0.08), (0.06, 0.22)),  # lymphocytes
            (3_000, (0.62, 0.23), (0.07, 0.15)),  # monocytes
            (1_500, (0.23, 0.07), (0.12, 0.25)),  # debris
            (2_000, (0.30, 0.18), (0.12, 0.30)),  # dying cells, the bridge
        ],
    )
    cols = [X[:, 0], X[:, 1]]
    above = (lab == 3) & (X[:, 1] > 0.14)
    loose = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67).fit(X)
    assert loose.mask(cols)[above].mean() > 0.15
    assert "ssc_valley" not in loose.params_
    g = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67, valleys=True).fit(X)
    m = g.mask(cols)
    assert m[above].mean() < 0.05
    assert m[lab == 0].mean() > 0.99
    assert m[lab == 1].mean() < 0.01
    assert 0.10 < g.params_["ssc_valley"] < 0.20


@pytest.mark.parametrize("seed", [0, 2])
def test_valleys_floor_the_gate_below_the_lymphocytes_on_forward_scatter(seed):
    """Debris reaching into a broad lymphocyte cloud without a valley (PBMC with
    lymphocytes low on FSC): the generous contour follows it down and keeps a third or
    more of the debris below FSC 0.26; ``valleys`` floors the gate 4 of the lymphocytes'
    standard deviations (0.10 in ln FSC) below their mode, 0.40 x exp(-0.4) = 0.268,
    recorded within 0.25-0.28, which leaves none of that debris and keeps the
    lymphocytes."""
    rng = np.random.default_rng(seed)
    X, lab = _clouds(
        rng,
        [
            (8_000, (0.40, 0.08), (0.10, 0.22)),  # lymphocytes
            (2_500, (0.62, 0.23), (0.07, 0.15)),  # monocytes
            (3_000, (0.28, 0.08), (0.30, 0.30)),  # debris, a shoulder of the lymphocytes
        ],
    )
    cols = [X[:, 0], X[:, 1]]
    small = (lab == 2) & (X[:, 0] < 0.26)
    loose = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67).fit(X)
    assert loose.mask(cols)[small].mean() > 0.3
    g = BlobGate(n_components=6, select="lymphocytes", exclude_larger=0.67, valleys=True).fit(X)
    m = g.mask(cols)
    assert m[small].mean() < 0.01
    assert m[lab == 0].mean() > 0.995
    assert 0.25 < g.params_["fsc_floor"] < 0.28


def test_valleys_without_a_larger_cloud_change_nothing():
    """No cloud of larger cells (lymphocytes and debris only): no side-scatter valley;
    the gate is the generous one down to the forward-scatter floor."""
    rng = np.random.default_rng(5)
    X, _ = _clouds(rng, [(8_000, (0.40, 0.08), (0.06, 0.22)), (1_500, (0.20, 0.06), (0.2, 0.3))])
    a = BlobGate(n_components=4, select="lymphocytes", exclude_larger=0.67).fit(X)
    b = BlobGate(n_components=4, select="lymphocytes", exclude_larger=0.67, valleys=True).fit(X)
    assert b.params_["ssc_valley"] is None
    above = X[:, 0] >= b.params_["fsc_floor"]
    np.testing.assert_array_equal(a.mask([X[:, 0], X[:, 1]]) & above, b.mask([X[:, 0], X[:, 1]]))


def test_blob_rejects_bad_min_cloud():
    from immunoprofile.exceptions import TemplateError

    with pytest.raises(TemplateError, match="min_cloud"):
        BlobGate(select="lymphocytes", min_cloud=0.7)


# --- unimodal markers against an internal control -----------------------------------------


def test_unimodal_marker_cut_from_negative_control_population():
    """IgD with one peak on B cells: the cut is the 99th percentile of IgD on T cells
    (known negative), computed here independently."""
    rng = np.random.default_rng(0)
    b = rng.normal(0.6, 0.08, 5_000)
    t = rng.normal(0.3, 0.04, 8_000)
    spec = {"population": "T", "kind": "negative", "quantile": 0.99}
    g = DensityMinimumGate(("IgD",), side="+", control=spec, fallback=0.45)
    g.fit(b, controls={"IgD": t})
    assert not g.fallback_
    assert g.threshold_ == pytest.approx(float(np.quantile(t, 0.99)))
    assert "negative control population T" in g.params_["control"]
    assert "1 density peak" in g.params_["why"]
    # no control values: the fixed cut, flagged as a fallback with every reason
    g2 = DensityMinimumGate(("IgD",), side="+", control=spec, fallback=0.45).fit(b)
    assert g2.fallback_ and g2.threshold_ == 0.45
    assert "no values of control population T" in g2.reason_


def test_positive_control_and_bimodal_parent_keeps_its_valley():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0.2, 0.05, 4000), rng.normal(0.7, 0.05, 4000)])
    pos = rng.normal(0.8, 0.05, 3000)
    spec = {"population": "P", "kind": "positive", "quantile": 0.95}
    g = DensityMinimumGate(("M",), control=spec, search=(0.3, 0.6)).fit(x, controls={"M": pos})
    assert 0.4 < g.threshold_ < 0.5  # two peaks: the valley, not the control
    assert g.params_["control"] == "density valley of the parent"
    one = rng.normal(0.5, 0.1, 5000)
    g = DensityMinimumGate(("M",), control=spec).fit(one, controls={"M": pos})
    assert g.threshold_ == pytest.approx(float(np.quantile(pos, 0.05)))


def test_mirrored_main_peak_of_the_parent_as_control_of_a_hi_subset():
    """CD38hi B cells as a shoulder above the CD38+ naive B cells (no valley): with
    ``mirror`` the parent itself is the control; the cut is the 99th percentile of a
    normal curve as wide as the main peak's dim half, so the shoulder does not widen it,
    while the plain 99th percentile of the parent would sit inside the shoulder."""
    rng = np.random.default_rng(3)
    main = rng.normal(0.55, 0.05, 20_000)
    hi = rng.normal(0.72, 0.04, 2_000)  # 9 % of B, overlapping the main peak's tail
    x = np.concatenate([main, hi])
    spec = {"population": "B", "kind": "negative", "quantile": 0.99, "mirror": True}
    g = DensityMinimumGate(("CD38",), side="+", control=spec, valley="above_mode")
    g.fit(x, controls={"CD38": x})
    assert not g.fallback_
    expected = 0.55 + 2.3263 * 0.05  # the main peak's own 99th percentile
    assert g.threshold_ == pytest.approx(expected, abs=0.012)
    assert g.params_["control_sd"] == pytest.approx(0.05, rel=0.12)
    assert g.params_["control"].startswith("main peak of negative control population B")
    assert float(np.quantile(x, 0.99)) > g.threshold_ + 0.05
    # the shoulder kept above the cut: 9.1 % of the parent against 9.1 % true
    assert (x >= g.threshold_).mean() == pytest.approx(len(hi) / len(x), abs=0.015)
    # a positive control is mirrored from its bright half: the cut lies below its peak
    spec = {"population": "P", "kind": "positive", "quantile": 0.99, "mirror": True}
    g = DensityMinimumGate(("CD38",), side="+", control=spec).fit(main, controls={"CD38": hi})
    assert g.threshold_ == pytest.approx(0.72 - 2.3263 * 0.04, abs=0.012)
    with pytest.raises(TemplateError, match="mirror must be true or false"):
        DensityMinimumGate(("M",), control={"population": "B", "mirror": "yes"})


def test_mixture_cut_only_when_the_data_support_two_components():
    rng = np.random.default_rng(2)
    # two overlapping populations: one density peak, but a clear two-component mixture
    x = np.concatenate([rng.normal(0.40, 0.05, 6000), rng.normal(0.53, 0.05, 3000)])
    g = DensityMinimumGate(("M",), mixture=True, min_prominence=0.2, fallback=0.9).fit(x)
    assert not g.fallback_
    assert g.params_["control"] == "two-component mixture of the parent"
    assert 0.45 < g.threshold_ < 0.55
    # one Gaussian: no mixture cut, the fixed cut with the reasons
    g = DensityMinimumGate(("M",), mixture=True, fallback=0.9).fit(rng.normal(0.5, 0.05, 9000))
    assert g.fallback_ and g.threshold_ == 0.9
    assert "not supported" in g.reason_


def _engine_sample(n=20_000, seed=0):
    """CD3+ T cells (60 %) with no IgD; CD3- B cells whose IgD has one peak, 80 % above the
    T cells' range (IgD+) and 20 % inside it (IgD-)."""
    rng = np.random.default_rng(seed)
    t = rng.random(n) < 0.6
    igd_pos = ~t & (rng.random(n) < 0.8)
    cd3 = np.where(t, rng.normal(0.7, 0.05, n), rng.normal(0.2, 0.05, n))
    igd = np.where(t, rng.normal(0.30, 0.03, n), np.where(igd_pos, 0.55, 0.32))
    igd = igd + np.where(t, 0.0, rng.normal(0.0, 0.05, n))
    ev = np.column_stack([cd3, igd]).astype(np.float32)
    ch = make_channel_table(["A-A", "B-A"], ["CD3", "IgD"], ranges=[1024.0, 1024.0])
    return Sample(ev, ch, name="ctl"), t


CONTROL_TEMPLATE = {
    "name": "ctl",
    "compensation": "none",
    "transforms": None,
    "populations": [
        {"name": "T", "gate": {"type": "density_min", "dims": ["CD3"], "side": "+"}},
        {"name": "nonT", "gate": {"type": "density_min", "dims": ["CD3"], "side": "-"}},
        {
            "name": "IgD+",
            "parent": "nonT",
            "gate": {
                "type": "density_min",
                "dims": ["IgD"],
                "side": "+",
                "min_prominence": 0.5,
                "fallback": 0.1,
                "control": {"population": "T", "quantile": 0.99},
            },
        },
    ],
}


def test_engine_passes_the_control_population_and_records_it():
    s, t = _engine_sample()
    res = apply_template(s, validate_template(CONTROL_TEMPLATE))
    rec = res.fitted["IgD+"]
    assert not rec["fallback"]
    igd = s.events[:, 1].astype(np.float64)
    expected = float(np.quantile(igd[res.masks["T"]], 0.99))
    assert rec["params"]["threshold"] == pytest.approx(expected, rel=1e-6)
    assert rec["params"]["control"].startswith("negative control population T")
    assert not [q for q in res.qc if q["population"] == "IgD+"]


def test_engine_list_of_controls_takes_the_stricter_cut():
    """IgD+ must clear two controls: above the T cells' IgD (99th percentile, 0.35 here)
    and inside the B cells' own IgD+ peak (its 1st percentile mirrored from the bright
    half: 0.55 - 2.33 x 0.05 = 0.43). The stricter, 0.43, wins: the IgD-dim B cells at
    0.40, above every T cell but below the IgD+ peak, stay out; both cuts are recorded."""
    rng = np.random.default_rng(4)
    n = 30_000
    t = rng.random(n) < 0.5
    dim = ~t & (rng.random(n) < 0.15)
    cd3 = np.where(t, rng.normal(0.7, 0.05, n), rng.normal(0.2, 0.05, n))
    igd = np.where(t, rng.normal(0.30, 0.02, n), np.where(dim, 0.40, 0.55))
    igd = igd + np.where(t, 0.0, rng.normal(0.0, np.where(dim, 0.02, 0.05), n))
    ev = np.column_stack([cd3, igd]).astype(np.float32)
    ch = make_channel_table(["A-A", "B-A"], ["CD3", "IgD"], ranges=[1024.0, 1024.0])
    pops = [dict(p) for p in CONTROL_TEMPLATE["populations"]]
    pops[2] = {
        **pops[2],
        "gate": {
            **pops[2]["gate"],
            "control": [
                {"population": "T", "quantile": 0.99},
                {"population": "nonT", "kind": "positive", "quantile": 0.99, "mirror": True},
            ],
        },
    }
    res = apply_template(
        Sample(ev, ch, name="two"), validate_template({**CONTROL_TEMPLATE, "populations": pops})
    )
    p = res.fitted["IgD+"]["params"]
    t_cut = float(np.quantile(ev[res.masks["T"], 1].astype(np.float64), 0.99))
    assert p["control_cuts"][0] == pytest.approx(t_cut, rel=1e-6)
    assert p["control_cuts"][1] == pytest.approx(0.55 - 2.3263 * 0.05, abs=0.012)
    assert p["threshold"] == max(p["control_cuts"])
    assert "(the stricter cut)" in p["control"]
    assert "negative control population T" in p["control"]
    assert "main peak of positive control population nonT" in p["control"]
    kept = res.masks["IgD+"]
    # the IgD-dim B cells are left out (the T cells' cut alone would keep 99 % of them)
    assert kept[~t & dim].mean() < 0.05
    assert (ev[~t & dim, 1] >= p["control_cuts"][0]).mean() > 0.99
    assert kept[~t & ~dim].mean() > 0.97


def test_engine_control_must_be_gated_first():
    spec = dict(CONTROL_TEMPLATE)
    pops = [dict(p) for p in spec["populations"]]
    pops[2] = {**pops[2], "gate": {**pops[2]["gate"], "control": {"population": "later"}}}
    pops.append({"name": "later", "gate": {"type": "range", "dims": ["CD3"], "min": 0.5}})
    s, _ = _engine_sample(2_000)
    with pytest.raises(GatingError, match="control population.*later.*earlier"):
        apply_template(s, validate_template({**spec, "populations": pops}))


# --- CD56bright must be CD56-brighter -----------------------------------------------------


def _nk(rng, bright: bool):
    """NK cells: CD56dim CD16+ (80 %) and either a CD56bright CD16- group (20 %) or, on a
    donor without one, CD16-dim cells at the same CD56 as the rest."""
    n_dim, n_other = 8000, 2000
    dim = np.column_stack([rng.normal(0.60, 0.04, n_dim), rng.normal(0.70, 0.05, n_dim)])
    if bright:
        other = np.column_stack([rng.normal(0.80, 0.04, n_other), rng.normal(0.30, 0.07, n_other)])
    else:
        other = np.column_stack([rng.normal(0.58, 0.04, n_other), rng.normal(0.30, 0.07, n_other)])
    return np.vstack([dim, other]), np.r_[np.zeros(n_dim, bool), np.ones(n_other, bool)]


def test_hilo_strict_signs_needs_a_brighter_group():
    from immunoprofile.gating.adaptive import HighLowGate

    fb = {"type": "rectangle", "min": [0.7, None], "max": [None, 0.6]}
    rng = np.random.default_rng(5)
    X, truth = _nk(rng, bright=True)
    g = HighLowGate(("CD56", "CD16"), ("+", "-"), strict_signs=True, fallback=fb).fit(X)
    assert not g.fallback_
    m = g.mask([X[:, 0], X[:, 1]])
    assert 2 * (m & truth).sum() / (m.sum() + truth.sum()) > 0.97
    X, truth = _nk(rng, bright=False)
    loose = HighLowGate(("CD56", "CD16"), ("+", "-"), fallback=fb).fit(X)
    assert not loose.fallback_  # without the check: CD16-dim cells called CD56bright
    assert loose.mask([X[:, 0], X[:, 1]])[truth].mean() > 0.9
    g = HighLowGate(("CD56", "CD16"), ("+", "-"), strict_signs=True, fallback=fb).fit(X)
    assert g.fallback_
    assert "CD56 (higher expected)" in g.reason_


# --- fluorescence-minus-one control files ---------------------------------------------------


def test_fmo_control_sets_the_cut_of_a_unimodal_marker():
    """A stained file whose IgD shows one peak on nonT, and its FMO control (same cells, no
    IgD stain): the IgD cut is the 99th percentile of IgD on the FMO's nonT, computed
    here independently, and named in params.control; the FMO comes before the template's
    internal control."""
    s, _ = _engine_sample(seed=1)
    rng = np.random.default_rng(9)
    ev = s.events.copy()
    ev[:, 1] = rng.normal(0.28, 0.035, len(ev)).astype(np.float32)  # IgD unstained
    fmo = Sample(ev, s.channels, name="FMO_IgD")
    res = apply_template(s, validate_template(CONTROL_TEMPLATE), fmo={"IgD": fmo})
    rec = res.fitted["IgD+"]
    assert not rec["fallback"]
    assert rec["params"]["control"] == "FMO control FMO_IgD (99th percentile)"
    ref = apply_template(fmo, validate_template(CONTROL_TEMPLATE))
    expected = float(np.quantile(ev[ref.masks["nonT"], 1].astype(np.float64), 0.99))
    assert rec["params"]["threshold"] == pytest.approx(expected, rel=1e-6)
    # without the FMO the internal control (T cells) sets it
    plain = apply_template(s, validate_template(CONTROL_TEMPLATE))
    assert plain.fitted["IgD+"]["params"]["control"].startswith("negative control population T")


def test_samplesheet_control_column_brings_the_fmo_file(tmp_path):
    """`control` column `IgD=FILE` (relative to the samplesheet): the run gates the FMO
    file with the same template and gates.json names it as the source of the IgD cut;
    a bad cell is an IdentityError naming the line."""
    import json

    from immunoprofile.cohort import read_samplesheet
    from immunoprofile.exceptions import IdentityError
    from immunoprofile.gating.run import gate
    from immunoprofile.io.write import write_fcs

    s, _ = _engine_sample(seed=1)
    ev = s.events.copy()
    ev[:, 1] = np.random.default_rng(9).normal(0.28, 0.035, len(ev)).astype(np.float32)
    write_fcs(s, tmp_path / "P01_V1.fcs")
    write_fcs(Sample(ev, s.channels, name="fmo"), tmp_path / "fmo_IgD.fcs")
    (tmp_path / "t.json").write_text(json.dumps(CONTROL_TEMPLATE))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("file,patient,visit,control\nP01_V1.fcs,P01,V1,IgD=fmo_IgD.fcs\n")
    assert read_samplesheet(sheet)["control"][0] == {"IgD": str(tmp_path / "fmo_IgD.fcs")}
    res = gate([tmp_path / "P01_V1.fcs"], str(tmp_path / "t.json"), samplesheet=sheet)
    assert not len(res.errors)
    rec = res.fitted_gates()["P01_V1"]["gates"]["IgD+"]
    assert rec["params"]["control"] == "FMO control fmo_IgD.fcs (99th percentile)"
    bad = tmp_path / "bad.csv"
    bad.write_text("file,patient,visit,control\nP01_V1.fcs,P01,V1,fmo_IgD.fcs\n")
    with pytest.raises(IdentityError, match="line 2: control 'fmo_IgD.fcs' is not MARKER=FILE"):
        read_samplesheet(bad)


def _granular_nk_sample(monkeypatch, events=50_000, seed=0):
    """A simulated donor whose NK cells are far more granular than usual (side scatter
    1.6-1.8 x that of T cells instead of 1.15-1.3 x): their tail reaches across the valley
    below the monocytes. Returns ``(sample, labels)``."""
    import immunoprofile.simulate.conditions as conditions
    from immunoprofile.simulate import Conditions, simulate_sample

    granular = {"NK_large": (64000.0, 0.12, 24000.0, 0.24), "NK": (62000.0, 0.12, 21600.0, 0.23)}
    monkeypatch.setattr(conditions, "LOW_FSC_SCATTER", granular)
    return simulate_sample(events=events, seed=seed, conditions=Conditions(low_fsc=True))


def _percent_error(res, labels, pop, parent):
    from immunoprofile.simulate import truth_mask

    gated = 100.0 * res.masks[pop].sum() / res.masks[parent].sum()
    truth = 100.0 * truth_mask(labels, pop).sum() / truth_mask(labels, parent).sum()
    return gated - truth


def test_scatter_valley_cut_flags_a_side_scatter_bound_inside_the_nk_cells(monkeypatch):
    """``scatter_valley_cut``: a donor with granular NK cells, whose tail crosses the
    valley below the monocytes; the bound lies 1.32 robust SD above the NK cells' median
    side scatter and NK of nonT comes out 6.7 pp low: flagged on the lymphocyte gate,
    naming the NK cells and the numbers. Gated with ``b_cells`` (no NK population) the
    same file has B of nonT 5.5 pp high, flagged from the rest of nonT. A default sample
    (NK within 0.5 pp, the bound beyond 1.65 SD) is not flagged."""
    from immunoprofile.simulate import simulate_sample

    s, labels = _granular_nk_sample(monkeypatch)
    res = apply_template(s, "nk_cells")
    assert _percent_error(res, labels, "NK", "nonT") < -6.0
    flags = [q for q in res.qc if q["flag"] == "scatter_valley_cut"]
    assert [q["population"] for q in flags] == ["lymphocytes"]
    assert "lies 1.32 robust SD above the median side scatter of the gated NK" in flags[0]["detail"]
    # the same file gated for B cells: no NK population, but the NK cells lost at the bound
    # raise B of nonT by 5.5 pp; the rest of nonT (its NK cells) shows the cut
    res = apply_template(s, "b_cells")
    assert _percent_error(res, labels, "B", "nonT") > 5.0
    flags = [q for q in res.qc if q["flag"] == "scatter_valley_cut"]
    assert [q["population"] for q in flags] == ["lymphocytes"]
    assert "SD above the median side scatter of the gated nonT not B cells" in flags[0]["detail"]
    s, labels = simulate_sample(events=50_000, seed=4)
    for template, pop in (("nk_cells", "NK"), ("b_cells", "B")):
        res = apply_template(s, template)
        assert abs(_percent_error(res, labels, pop, "nonT")) < 0.5
        assert not [q for q in res.qc if q["flag"] == "scatter_valley_cut"]


def test_a_doublet_cloud_does_not_bound_the_lymphocytes():
    """In this default simulated sample the lymphocyte doublets (3 % of events) form a
    scatter cloud of their own, above the lymphocytes on both scatters (x 2.1 on FSC, x 2.2
    on SSC: pulse areas add). Its valley lies inside the NK cells' granular tail; taken as
    the side-scatter bound it cut NK of nonT 3.9 pp low. Only granular clouds (side-scatter
    step at least 1.5 times the forward-scatter step on log scale: the monocytes here, x
    1.73 on FSC and x 3.7 on SSC) bound the gate now: NK within 1.5 pp and no flag."""
    from immunoprofile.simulate import simulate_sample

    s, labels = simulate_sample(events=50_000, seed=3)
    res = apply_template(s, "nk_cells")
    params = res.fitted["lymphocytes"]["params"]
    clouds = params["clouds"]
    lym = np.log10([c["mode"] for c in clouds if c["role"] == "lymphocytes"][0])
    steps = sorted(
        (float(step[1] / step[0]), float(step[1]))
        for step in (np.log10(c["mode"]) - lym for c in clouds if c["role"] == "larger cells")
    )
    (doublets, _), (monocytes, monocyte_step) = steps
    assert doublets < 1.2 and monocytes > 2.0, steps
    assert 0.0 < np.log10(params["ssc_valley"]) - lym[1] < monocyte_step
    assert abs(_percent_error(res, labels, "NK", "nonT")) < 1.5
    assert not [q for q in res.qc if q["flag"] == "scatter_valley_cut"]


def test_valley_cut_flag_threshold():
    """The rule on its own: log-normal side scatter (median 0.06, SD 0.23 in ln); a bound
    1.2 SD above the median is flagged, one 2.5 SD above is not."""
    from immunoprofile.gating.qc import VALLEY_CUT_Z, valley_cut_flag

    ssc = np.random.default_rng(0).lognormal(np.log(0.06), 0.23, 5_000)
    flag = valley_cut_flag("lymphocytes", ssc, 0.06 * np.exp(1.2 * 0.23), "NK")
    assert flag is not None and flag["flag"] == "scatter_valley_cut"
    assert valley_cut_flag("lymphocytes", ssc, 0.06 * np.exp(2.5 * 0.23), "NK") is None
    assert VALLEY_CUT_Z == 1.65


def _without_debris_exclusion(name, mirror=None):
    """The built-in template ``name`` with the lymphocyte gate's ``exclude_debris`` removed
    (the gate as it was before debris components were told apart); with ``mirror``, the
    viability tail cut's ``mirror`` set too."""
    import copy
    import json
    from pathlib import Path

    import immunoprofile

    path = Path(immunoprofile.__file__).resolve().parents[1] / "gating" / f"{name}.json"
    spec = copy.deepcopy(json.loads(path.read_text()))
    spec["populations"][0]["gate"].pop("exclude_debris")
    if mirror is not None:
        live = next(p for p in spec["populations"] if p["name"] == "live")
        for gate in [live["gate"], *live.get("alternatives", [])]:
            gate["per_dim"]["Viability"]["mirror"] = mirror
    return validate_template(spec)


@pytest.mark.parametrize(("seed", "debris_before", "debris_after"), [(0, 684, 507), (2, 288, 196)])
def test_debris_taken_into_the_lymphocyte_cloud_is_left_out(seed, debris_before, debris_after):
    """PBMC with lymphocytes low on FSC: debris reaches into the lymphocytes without a
    valley, the modes of the scatter mixture put its broad component (4-5 times the
    lymphocytes' spread on both scatters, centred 5-6 of their SDs lower on FSC) in the
    lymphocyte cloud, and the generous contour kept it down to the FSC floor; CD3- and
    negative on every marker, it passed into nonT and diluted the NK cells (NK of nonT
    2.6-4.8 pp low). With ``exclude_debris`` the debris component is not joined and the
    region where it has the majority below the lymphocytes' side scatter is left out:
    debris in nonT and the NK error fall, live lymphocytes stay."""
    from immunoprofile.simulate import Conditions, simulate_sample, truth_mask

    s, labels = simulate_sample(events=50_000, seed=seed, conditions=Conditions(low_fsc=True))
    lab = np.asarray(labels).astype(str)
    live = truth_mask(lab, "live")
    # with the viability cut this was measured with (mirror 1.5)
    before = apply_template(s, _without_debris_exclusion("nk_cells", mirror=1.5))
    after = apply_template(s, _with_viability_mirror("nk_cells", 1.5))
    assert after.fitted["lymphocytes"]["params"]["debris"]
    for res, expected in ((before, debris_before), (after, debris_after)):
        assert int(np.count_nonzero(res.masks["nonT"] & (lab == "debris"))) == expected
    assert abs(_percent_error(after, lab, "NK", "nonT")) + 0.4 < abs(
        _percent_error(before, lab, "NK", "nonT")
    )
    assert (after.masks["lymphocytes"] & live).sum() > 0.99 * live.sum()


def test_debris_with_a_cloud_of_its_own_changes_nothing():
    """A default simulated sample: the debris forms a cloud of its own far below the
    lymphocytes, the contour already follows the valley to it; ``exclude_debris`` finds
    no debris component in the lymphocyte cloud and the gate is the same."""
    from immunoprofile.simulate import simulate_sample

    s, _ = simulate_sample(events=50_000, seed=4)
    before = apply_template(s, _without_debris_exclusion("nk_cells"))
    after = apply_template(s, "nk_cells")
    assert after.fitted["lymphocytes"]["params"]["debris"] == []
    assert after.counts == before.counts


def _shoulder_file(tmp_path):
    """A simulated PBMC file with lymphocytes low on FSC (cohort seed 682368246, strong
    drift, patient 4 at baseline) whose monocytes, spread widely on side scatter, climb into
    the lymphocyte cloud without a valley: the scatter mixture gives them a broad component
    and no mode of their own. Returns ``(sample, labels)``."""
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.simulate import Conditions, read_truth, simulate_cohort

    info = simulate_cohort(
        tmp_path,
        patients=4,
        visits=("baseline",),
        events=100_000,
        seed=682368246,
        drift=2.0,
        conditions=Conditions(low_fsc=True),
    )
    return read_fcs(info.fcs[3]), np.asarray(read_truth(info.truth[3])).astype(str)


def test_a_monocyte_shoulder_of_the_lymphocyte_cloud_is_left_out(tmp_path, monkeypatch):
    """The monocytes' component lies in the lymphocyte cloud (no valley), above the
    lymphocytes by more than 2 of their SDs on FSC and 3 on SSC, with the step of granular
    cells: it is made a cloud of larger cells of its own (a shoulder) and its posterior
    leaves it out. Without that the gate held 5,770 of the 11,360 monocytes; their CD14-dim
    part stayed in nonT (NK of nonT 4.3 pp low, live of singlets 4.5 pp low). Now 1,281,
    NK within 2.2 pp (the NK cells' granular tail goes with the monocytes' posterior: 2.7 %
    of them) and live within 0.3 pp. A shoulder has no valley: no side-scatter bound comes
    from it."""
    import immunoprofile.gating.adaptive as adaptive
    from immunoprofile.simulate import truth_mask

    s, lab = _shoulder_file(tmp_path)
    mono = lab == "monocyte"
    res = apply_template(s, "nk_cells")
    params = res.fitted["lymphocytes"]["params"]
    shoulders = [c for c in params["clouds"] if c.get("shoulder")]
    assert [c["role"] for c in shoulders] == ["larger cells"]
    assert params["ssc_valley"] is None
    kept = int((res.masks["lymphocytes"] & mono).sum())
    assert kept < 0.15 * mono.sum(), kept
    nk = truth_mask(lab, "NK")
    assert (res.masks["lymphocytes"] & nk).sum() > 0.96 * nk.sum()
    after = _percent_error(res, lab, "NK", "nonT")
    assert abs(_percent_error(res, lab, "live", "singlets")) < 1.0

    monkeypatch.setattr(adaptive, "_split_shoulders", lambda gm, m, x, w, sd, *a: (m, x, w, sd))
    before = apply_template(s, "nk_cells")
    assert (before.masks["lymphocytes"] & mono).sum() > 0.45 * mono.sum()
    assert _percent_error(before, lab, "NK", "nonT") < after - 1.5


def _with_viability_mirror(name, mirror):
    """The built-in template ``name`` with its viability tail cut's ``mirror`` set."""
    import copy
    import json
    from pathlib import Path

    import immunoprofile

    path = Path(immunoprofile.__file__).resolve().parents[1] / "gating" / f"{name}.json"
    spec = copy.deepcopy(json.loads(path.read_text()))
    live = next(p for p in spec["populations"] if p["name"] == "live")
    for gate in [live["gate"], *live.get("alternatives", [])]:
        gate["per_dim"]["Viability"]["mirror"] = mirror
    return validate_template(spec)


@pytest.mark.parametrize(("seed", "before", "after"), [(0, 507, 250), (3, 595, 296)])
def test_nk_viability_cut_ends_where_a_symmetric_live_peak_would(seed, before, after):
    """PBMC with lymphocytes low on FSC: dye-dim debris inside the lymphocyte cloud makes
    a shoulder beyond the live peak on the viability dye. nk_cells ends the live peak
    where a peak as wide on its bright side as on its dim side would (mirror 1.0; it was
    1.5): half the debris left in nonT goes, NK of nonT moves 1.4-2.1 pp towards the truth,
    and no more than 0.2 % of the live lymphocytes are lost. On the real Lyoplate NK tube
    live of lymphocytes moved from +2.59 to +0.14 pp of openCyto (F1 0.974 -> 0.986)."""
    from immunoprofile.simulate import Conditions, simulate_sample, truth_mask

    s, labels = simulate_sample(events=50_000, seed=seed, conditions=Conditions(low_fsc=True))
    lab = np.asarray(labels).astype(str)
    live = truth_mask(lab, "live")
    old = apply_template(s, _with_viability_mirror("nk_cells", 1.5))
    new = apply_template(s, "nk_cells")
    for res, expected in ((old, before), (new, after)):
        assert int(np.count_nonzero(res.masks["nonT"] & (lab == "debris"))) == expected
    assert "viability_shoulder" in [q["flag"] for q in new.qc if q["population"] == "live"]
    assert _percent_error(new, lab, "NK", "nonT") > _percent_error(old, lab, "NK", "nonT") + 1.2
    kept = (new.masks["live"] & live).sum() / (new.masks["singlets"] & live).sum()
    assert kept > 0.998, kept
