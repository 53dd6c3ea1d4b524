"""Gating QC: each rule triggered by a file (or cohort) built for it, and silent on a clean one."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from immunoprofile.exceptions import TemplateError
from immunoprofile.gating import qc as Q
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.run import gate
from immunoprofile.gating.template import load_template, validate_template
from immunoprofile.simulate import simulate_sample, truth_mask

NEW_RULES = {
    "non_finite",
    "implausible",
    "scatter_cloud",
    "monocytes_in_parent",
    "viability_shoulder",
    "viability_dim_in_parent",
    "dead_outside_scatter_gate",
    "monocytes_in_scatter_gate",
    "debris_in_scatter_gate",
    "cohort_outlier",
    "visit_change",
}


@pytest.fixture(scope="module")
def clean():
    """A clean 40,000-event file and its truth labels."""
    return simulate_sample(events=40_000, seed=11, name="clean")


def _rules(flags) -> set[str]:
    return {q["flag"] for q in flags}


def _template(name: str, edit) -> object:
    """A built-in template as a dict, changed by ``edit``, then validated."""
    obj = load_template(name).to_dict()
    edit(obj)
    return validate_template(obj)


def _pop(obj: dict, name: str) -> dict:
    return next(p for p in obj["populations"] if p["name"] == name)


# --- the clean file ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tregs", "th17", "b_cells", "nk_cells"])
def test_clean_file_raises_none_of_the_qc_rules(clean, name):
    res = apply_template(clean[0], name)
    assert not (_rules(res.qc) & NEW_RULES), res.qc


# --- non-finite event values (issue 13, B3) ------------------------------------------------


def test_non_finite_events_are_counted_excluded_and_flagged(clean):
    sample, labels = clean
    ev = sample.events.copy()
    fsc = sample.channel_names.index("FSC-A")
    det = sample.channel_names.index("PE-A")
    ev[[3, 50, 700], det] = np.inf  # one detector: compensation would spread it
    ev[900, fsc] = np.nan
    bad = np.array([3, 50, 700, 900])
    res = apply_template(sample.with_events(ev), "tregs")
    nf = [q for q in res.qc if q["flag"] == "non_finite"]
    assert len(nf) == 1 and nf[0]["population"] is None
    assert nf[0]["detail"].startswith("4 of 40000 events (0.01%)")
    assert "PE-A 3" in nf[0]["detail"] and "FSC-A 1" in nf[0]["detail"]
    for m in res.masks.values():
        assert not m[bad].any()  # left out of every population
    # the other events gate as in the clean file (the excluded four aside)
    ref = apply_template(sample, "tregs").table().set_index("population")
    got = res.table().set_index("population")
    for pop in ("live", "T", "CD4", "Treg"):
        assert abs(got.loc[pop, "percent_of_parent"] - ref.loc[pop, "percent_of_parent"]) < 1.0
    # against the truth too: one infinite detector value no longer wrecks the trunk
    live_truth = truth_mask(labels, "live")[res.masks["singlets"]].mean() * 100
    assert abs(got.loc["live", "percent_of_parent"] - live_truth) < 2.0


def test_non_finite_rows_is_none_on_finite_data():
    assert Q.non_finite_rows(np.ones((10, 3), np.float32)) is None
    x = np.ones((4, 2), np.float32)
    x[2, 1] = -np.inf
    assert Q.non_finite_rows(x).tolist() == [False, False, True, False]


def test_non_finite_rows_one_pass_check_is_exact_at_the_edges():
    # +inf and -inf in different rows: their sum is NaN, so both rows are found
    x = np.zeros((5, 2), np.float32)
    x[1, 0], x[3, 1] = np.inf, -np.inf
    assert Q.non_finite_rows(x).tolist() == [False, True, False, True, False]
    # huge finite values overflow the float32 sum: the exact test finds no bad row
    big = np.full((4, 2), 3e38, np.float32)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.add.reduce(big, axis=None))
    assert Q.non_finite_rows(big) is None
    # integer events are always finite
    assert Q.non_finite_rows(np.full((3, 2), 7, np.int32)) is None


def test_adaptive_fit_leaves_out_non_finite_values_found_by_the_sum_check():
    from immunoprofile.gating.adaptive import DensityMinimumGate
    from immunoprofile.gating.qc import all_finite

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.5, 0.1, 4000), rng.normal(2.5, 0.2, 4000)])
    assert all_finite(x) and all_finite(np.arange(5))
    assert not all_finite(np.array([1.0, np.nan])) and not all_finite(
        np.array([3e38] * 4, np.float32)
    )
    y = x.copy()
    y[::100] = np.nan
    a = DensityMinimumGate(dims=("CD3",)).fit(x[np.isfinite(y)])
    b = DensityMinimumGate(dims=("CD3",)).fit(y)
    assert b.n_fit_ == int(np.isfinite(y).sum()) == 7920
    assert a.threshold_ == b.threshold_


# --- plausibility ----------------------------------------------------------------------------


def test_value_outside_the_expected_range_is_flagged_with_its_numbers(clean):
    def edit(obj):
        _pop(obj, "T")["expected"] = {"percent_of_parent": [85, 100], "source": "test range"}

    res = apply_template(clean[0], _template("tregs", edit))
    t = res.table().set_index("population").loc["T", "percent_of_parent"]
    assert t < 85
    flags = [q for q in res.qc if q["flag"] == "implausible"]
    assert [q["population"] for q in flags] == ["T"]
    assert flags[0]["detail"] == f"{t:.2f}% of live is outside the expected 85-100%; test range"


def test_builtin_templates_carry_expected_ranges_with_sources():
    for name in ("tregs", "th17", "b_cells", "nk_cells", "immune_profile"):
        t = load_template(name)
        ranged = {p.name: p for p in t.populations if p.expected is not None}
        for pop in ("T", "Treg", "Th17", "B", "NK", "B_transitional", "NK_CD56bright"):
            if pop in t.names:
                assert pop in ranged, (name, pop)
                low, high = ranged[pop].expected
                assert 0 <= low < high <= 100
                assert ranged[pop].expected_source  # cited
    # round trip through the JSON form
    t = load_template("tregs")
    assert validate_template(t.to_dict()).population("Treg").expected == (1.5, 15.0)


def test_expected_range_with_low_above_high_is_a_located_template_error():
    obj = load_template("tregs").to_dict()
    _pop(obj, "Treg")["expected"] = {"percent_of_parent": [20, 5]}
    with pytest.raises(TemplateError, match=r"populations\[5\] \(Treg\).*low above high"):
        validate_template(obj)
    _pop(obj, "Treg")["expected"] = {"percent_of_parent": [5, 120]}
    with pytest.raises(TemplateError, match="expected"):
        validate_template(obj)


# --- trunk sanity --------------------------------------------------------------------------


def _scatter_on_monocytes(obj):
    """The scatter gate drawn around the monocyte cloud instead of the lymphocytes."""
    _pop(obj, "lymphocytes")["gate"] = {
        "type": "rectangle",
        "dims": ["FSC-A", "SSC-A"],
        "min": [0.3, 0.11],
        "max": [0.55, 0.3],
    }


def test_scatter_gate_on_the_larger_cell_cloud_is_flagged(clean):
    sample, labels = clean
    res = apply_template(sample, _template("tregs", _scatter_on_monocytes))
    gated = np.asarray(labels)[res.masks["lymphocytes"]]
    assert (gated == "monocyte").mean() > 0.5  # the gate really holds the monocytes
    flags = [q for q in res.qc if q["flag"] == "scatter_cloud"]
    assert [q["population"] for q in flags] == ["lymphocytes"]
    assert "lower side scatter than the gated cloud" in flags[0]["detail"]


def test_scatter_cloud_on_synthetic_clouds():
    rng = np.random.default_rng(0)
    lym = np.c_[rng.normal(np.log(6e4), 0.1, 6000), rng.normal(np.log(1.3e4), 0.2, 6000)]
    mono = np.c_[rng.normal(np.log(1e5), 0.12, 2000), rng.normal(np.log(4.5e4), 0.25, 2000)]
    fsc, ssc = np.exp(np.r_[lym[:, 0], mono[:, 0]]), np.exp(np.r_[lym[:, 1], mono[:, 1]])
    on_lym = np.r_[np.ones(6000, bool), np.zeros(2000, bool)]
    assert Q.scatter_cloud_flag(fsc, ssc, on_lym, "lymphocytes") is None
    flag = Q.scatter_cloud_flag(fsc, ssc, ~on_lym, "lymphocytes")
    assert flag is not None and flag["flag"] == "scatter_cloud"


def test_monocytes_left_in_the_parent_of_t_cells_are_flagged(clean):
    sample, labels = clean

    def edit(obj):
        # a scatter gate wide enough for the monocytes and a live gate without CD14
        _pop(obj, "lymphocytes")["gate"] = {
            "type": "rectangle",
            "dims": ["FSC-A", "SSC-A"],
            "min": [0.1, 0.0],
            "max": [0.6, 0.3],
        }
        _pop(obj, "live")["gate"] = {"type": "range", "dims": ["Viability"], "max": 0.45}

    res = apply_template(sample, _template("tregs", edit))
    mono = (np.asarray(labels)[res.masks["live"]] == "monocyte").mean()
    assert mono > 0.1
    flags = [q for q in res.qc if q["flag"] == "monocytes_in_parent"]
    assert {q["population"] for q in flags} == {"live"}
    assert any("on CD14" in q["detail"] for q in flags)
    assert any("log side scatter" in q["detail"] for q in flags)


# --- a viability cut that ended at a broad shoulder --------------------------------------


def _with_viability_shoulder(sample, labels, share=0.15, seed=3, low=3.0):
    """The sample with ``share`` of its live lymphocytes given viability-dye values spread
    log-uniformly from ``low`` x their median to 20x (between live and dead cells, as
    debris and dying cells reaching into the lymphocyte gate look), and the mask of them.
    From 3x they form a population of their own, with a valley below it; from 1x a
    shoulder of the live peak with no valley."""
    rng = np.random.default_rng(seed)
    lab = np.asarray(labels)
    j = sample.channel_index("APC-Cy7-A")
    live = np.flatnonzero(truth_mask(lab, "live"))
    pick = rng.choice(live, size=int(share * len(live)), replace=False)
    ev = sample.events.copy()
    centre = float(np.median(ev[live, j]))
    ev[pick, j] = np.exp(rng.uniform(np.log(low * centre), np.log(20 * centre), len(pick)))
    mask = np.zeros(len(ev), dtype=bool)
    mask[pick] = True
    return sample.with_events(ev), mask


def test_viability_shoulder_is_cut_at_the_peak_and_flagged(clean):
    """A broad shoulder of viability-dim events beside the live peak keeps the density
    above 1 % of the peak far out: with ``mirror`` the live cut stops where the live
    peak itself ends (most shoulder events leave ``live``), and the file is flagged
    ``viability_shoulder`` on ``live``, naming the numbers. Spread from 3x the live
    median, the same events form a population with a valley below it: the walk ends
    in that valley, before their mode, and nothing is flagged."""
    sample, labels = clean
    shouldered, mask = _with_viability_shoulder(sample, labels, low=1.0)
    res = apply_template(shouldered, "tregs")
    p = res.fitted["live"]["params"]["Viability"]
    assert p["walked"] > p["mirrored"] == res.fitted["live"]["thresholds"][0]
    flags = [q for q in res.qc if q["flag"] == "viability_shoulder"]
    assert [q["population"] for q in flags] == ["live"]
    assert f"{p['mirrored']:.3f}" in flags[0]["detail"]
    # the cut left out more of the shoulder than the plain walk would have
    plain = _template(
        "tregs", lambda o: _pop(o, "live")["gate"]["per_dim"]["Viability"].pop("mirror")
    )
    res0 = apply_template(shouldered, plain)
    kept, kept0 = res.masks["live"][mask].mean(), res0.masks["live"][mask].mean()
    assert kept < kept0 - 0.2
    assert "viability_shoulder" not in _rules(res0.qc)
    # the clean file's live peak tails off before the limit: no flag, same cut
    assert "viability_shoulder" not in _rules(apply_template(sample, "tregs").qc)
    # a population of its own: cut in the valley below its mode, no shoulder, no flag
    apart, mask = _with_viability_shoulder(sample, labels, low=3.0)
    res = apply_template(apart, "tregs")
    p = res.fitted["live"]["params"]["Viability"]
    assert p["peak"] < p["walked"] == res.fitted["live"]["thresholds"][0] < p["next_mode"]
    assert p["shoulder"] is False and "viability_shoulder" not in _rules(res.qc)
    assert res.masks["live"][mask].mean() < 0.1


def _tail_viability(obj) -> None:
    """The live gate's viability cut where the live peak tails off (``tail`` with
    ``mirror``, as in ``tregs``) instead of the B tube's valley to the dead cells."""
    for pop in obj["populations"]:
        if pop["name"] == "live":
            for gate in [pop["gate"], *pop.get("alternatives", [])]:
                gate["per_dim"]["Viability"] = {
                    "type": "tail", "tol": 0.01, "mirror": 1.5, "fallback": 0.45
                }  # fmt: skip


def test_viability_dim_events_in_the_parent_of_b_cells_are_flagged(clean):
    """With a viability cut at the live peak's tail, a shoulder's events below the cut
    stay in ``live`` and, carrying no lineage marker, land in ``nonT``: more than 1 % of
    the parent of B cells then lie over 4 robust SD above the live T cells (``live``
    minus ``nonT``) on the viability dye. The clean file's parent holds none. The
    built-in ``b_cells`` cuts at the valley between the live peak and the shoulder and
    leaves the shoulder out (under 3 % of its events kept), so nothing is flagged."""
    sample, labels = clean
    shouldered, mask = _with_viability_shoulder(sample, labels)
    own = apply_template(shouldered, "b_cells")
    assert (mask & own.masks["live"]).sum() < 0.03 * mask.sum()
    assert "viability_dim_in_parent" not in _rules(own.qc)
    # a shoulder without a valley (from 1x the live median): the tail cut ends at the
    # live peak's mirrored limit and the shoulder's events below it stay in live
    merged, _ = _with_viability_shoulder(sample, labels, low=1.0)
    res = apply_template(merged, _template("b_cells", _tail_viability))
    flags = [q for q in res.qc if q["flag"] == "viability_dim_in_parent"]
    assert [q["population"] for q in flags] == ["nonT"]
    # the number in the detail, recomputed from the events
    j = res.sample.channel_index("APC-Cy7-A")
    v = res.sample.events[:, j]
    t_cells = res.masks["live"] & ~res.masks["nonT"]
    med = np.median(v[t_cells])
    cut = med + 4 * 1.4826 * np.median(np.abs(v[t_cells] - med))
    share = (v[res.masks["nonT"]] > cut).mean()
    assert share > 0.01
    assert flags[0]["detail"].startswith(f"{100 * share:.1f}% of nonT (parent of B)")
    assert "viability_dim_in_parent" not in _rules(apply_template(sample, "b_cells").qc)


def test_viability_dim_flag_on_arrays():
    rng = np.random.default_rng(2)
    t_cells = rng.normal(0.1, 0.05, 5_000)
    clean_parent = rng.normal(0.1, 0.05, 5_000)
    assert Q.viability_dim_flag("nonT", clean_parent, t_cells, ["B"]) is None
    dim = np.r_[clean_parent, rng.uniform(0.35, 0.45, 150)]  # 2.9 % above 0.1 + 4 x 0.05
    flag = Q.viability_dim_flag("nonT", dim, t_cells, ["B"])
    assert flag["population"] == "nonT" and flag["detail"].startswith("2.9% of nonT")


def test_shoulder_flags_read_nested_tail_params():
    fitted = {
        "live": {
            "dims": ["Viability", "CD14"],
            "params": {
                "Viability": {
                    "peak": 0.13,
                    "walked": 0.85,
                    "mirrored": 0.5,
                    "half_width": 0.08,
                    "shoulder": True,
                },
                "CD14": {"threshold": 0.5},
            },
        },
        "FOXP3+": {
            "dims": ["FOXP3"],
            "params": {
                "peak": 0.2,
                "walked": 0.4,
                "mirrored": 0.6,
                "half_width": 0.1,
                "shoulder": False,
            },
        },
    }
    flags = Q.shoulder_flags(fitted)
    assert [(q["population"], q["flag"]) for q in flags] == [("live", "viability_shoulder")]
    assert "9.0 times" in flags[0]["detail"]  # (0.85 - 0.13) / 0.08


# --- cohort consistency --------------------------------------------------------------------


def _records(values, patients=None, visits=None, positions=None):
    out = []
    for i, v in enumerate(values):
        out.append(
            {
                "sample": f"s{i}",
                "patient": patients[i] if patients else None,
                "visit": visits[i] if visits else None,
                "group": None,
                "percent": {"T": v},
                "positions": positions[i] if positions else {},
            }
        )
    return out


def test_robust_outlier_by_median_and_mad():
    values = [70.0, 71.0, 69.0, 72.0, 68.0, 70.5, 40.0]
    # median 70, MAD 1 -> robust SD 1.4826; 40 is 20.2 SD below
    (i, z, v, med), *rest = Q.robust_outliers(values, 3.0)
    assert not rest and i == 6 and v == 40.0 and med == 70.0
    assert z == pytest.approx(-30.0 / 1.4826)
    assert Q.robust_outliers(values[:4], 3.0) == []  # too few files to judge


def test_frequency_outlier_is_flagged_but_not_a_persons_shared_make_up():
    values = [70, 71, 69, 72, 68, 70.5, 71.5, 69.5, 40, 55, 54]
    patients = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P10"]
    flags = Q.cohort_flags(_records(values, patients))
    hits = {i: f for i, f in enumerate(flags) if f}
    assert set(hits) == {8}  # P10's two visits agree: their 55/54 is the person
    (flag,) = hits[8]
    assert flag["population"] == "T" and flag["flag"] == "cohort_outlier"
    # on log-odds: median logit(0.695) = 0.823, 40 % at -0.405; the robust SD is the floor
    # 0.25 x (100 - 69.5) = 7.625 pp carried to log-odds (/ (100 x 0.695 x 0.305)) = 0.360
    # (MAD alone: 0.10): z = -1.228 / 0.360 = -3.4
    assert flag["detail"].startswith(
        "40.00% of parent against the run's median 69.50% over 11 files (robust z -3.4,"
    )


def test_robust_sd_floor_keeps_ordinary_spread_from_looking_like_an_outlier():
    # eight files agree within 0.5 pp by chance (robust SD 0.37); 60 is 5.5 pp from the
    # median: z 15 by MAD alone, but 0.6 against the floor 0.25 x (100 - 65.5) = 8.6
    values = [65.0, 65.5, 65.2, 65.8, 65.4, 65.6, 65.9, 65.1, 60.0]
    assert Q.robust_outliers(values, 3.0)  # MAD alone: an outlier
    assert Q.cohort_flags(_records(values)) == [[]] * 9


def test_small_shift_below_the_floor_is_not_a_cohort_outlier():
    values = [10.0, 10.1, 10.0, 9.9, 10.0, 10.05, 12.0]  # z ~ 27, but only 2 pp away
    assert Q.cohort_flags(_records(values)) == [[]] * 7


def test_gate_position_outlier_is_flagged_when_it_moved_the_frequency():
    pos = [{"T CD3 min": (0.45 + 0.01 * (i % 3), 0.15)} for i in range(8)]
    pos[5] = {"T CD3 min": (0.75, 0.15)}
    # T of file 5 is 15 pp low: on log-odds 0.647 below the median, robust z -1.8 against
    # the SD floor 0.25 x 30 = 7.5 pp (0.357 on log-odds at 70 %) (not a frequency outlier
    # by itself, but enough to back the position outlier)
    values = [70.0] * 8
    values[5] = 55.0
    flags = Q.cohort_flags(_records(values, positions=pos))
    assert [bool(f) for f in flags] == [i == 5 for i in range(8)]
    assert flags[5][0]["detail"].startswith("gate position T CD3 min = 0.750 against")
    assert flags[5][0]["detail"].endswith("T frequency robust z -1.8")
    # the same cut moved within an empty valley (frequency unchanged): nothing to review
    assert Q.cohort_flags(_records([70.0] * 8, positions=pos)) == [[]] * 8


def test_gate_positions_of_fitted_gates():
    fitted = {
        "T": {"type": "range", "dims": ["CD3"], "min": 0.46, "max": None},
        "CD4": {"type": "quadrant", "dims": ["CD4", "CD8"], "thresholds": [0.48, 0.47]},
        "lymphocytes": {
            "type": "polygon",
            "dims": ["FSC-A", "SSC-A"],
            "vertices": [[0.2, 0.04], [0.3, 0.04], [0.3, 0.08], [0.2, 0.08]],
        },
        "Treg_memory": {"type": "boolean", "dims": ["Treg_naive"], "op": "not"},
    }
    pos = Q.gate_positions(fitted)
    assert pos["T CD3 min"] == (0.46, Q.MIN_SHIFT_DISPLAY)
    assert pos["CD4 CD8 cut"] == (0.47, Q.MIN_SHIFT_DISPLAY)
    assert pos["lymphocytes SSC-A centre (log)"][0] == pytest.approx(np.log(0.06))
    assert not any(k.startswith("Treg_memory") for k in pos)


def test_implausible_visit_change_flags_both_files():
    base = [70.0, 65.0, 72.0, 68.0, 75.0, 71.0]
    later = [71.0, 66.5, 70.0, 69.0, 74.0, 30.0]  # P6 drops 41 pp, the rest move 1-2
    values = base + later
    patients = [f"P{i + 1}" for i in range(6)] * 2
    visits = ["baseline"] * 6 + ["week24"] * 6
    flags = Q.cohort_flags(_records(values, patients, visits))
    changed = {i for i, f in enumerate(flags) for q in f if q["flag"] == "visit_change"}
    assert changed == {5, 11}
    detail = next(q["detail"] for q in flags[11] if q["flag"] == "visit_change")
    assert detail.startswith("patient P6: baseline -> week24 change -41.00 pp of parent")
    assert "the other file is s5" in detail


# --- through gate(): qc.csv, the qc column, files to review -------------------------------


@pytest.fixture(scope="module")
def cohort_result():
    """Six files; the fourth has a Treg share of CD4 far above the others."""
    samples = []
    for i in range(6):
        freq = {"Treg": 0.30} if i == 3 else {"Treg": 0.07}
        s, _ = simulate_sample(events=30_000, seed=100 + i, frequencies=freq, name=f"F{i}")
        s.keywords.update({"PATIENT_ID": f"P{i // 2}", "VISIT": ("baseline", "week24")[i % 2]})
        samples.append(s)
    return gate(samples, "tregs")


def test_cohort_outlier_reaches_qc_table_column_and_review_list(cohort_result):
    res = cohort_result
    qc = res.qc()
    hit = qc[(qc["flag"] == "cohort_outlier") & (qc["population"] == "Treg")]
    assert hit["sample"].tolist() == ["F3"]
    table = res.table()
    f3 = table[table["sample"] == "F3"].set_index("population")["qc"]
    assert "cohort_outlier:Treg" in f3["Treg"]
    assert "cohort_outlier:Treg" in f3["Treg_FOXP3"]  # a descendant: suspect too
    assert "cohort_outlier:Treg" not in f3["CD4"]  # the parent is not
    assert len(table) == 6 * 9  # a flagged file keeps every row
    review = res.flagged_files()
    assert "F3" in review["sample"].tolist()
    row = review.set_index("sample").loc["F3"]
    assert "cohort_outlier:Treg" in row["rules"]
    summary = res.summary().set_index("sample")
    assert summary.loc["F3", "qc_flags"] == len(qc[qc["sample"] == "F3"])


def test_written_qc_csv_and_populations_qc_column(cohort_result, tmp_path):
    cohort_result.write(tmp_path)
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert list(qc.columns) == ["sample", "file", "population", "flag", "detail"]
    assert ((qc["sample"] == "F3") & (qc["flag"] == "cohort_outlier")).any()
    pop = pd.read_csv(tmp_path / "populations.csv", keep_default_na=False)
    row = pop[(pop["sample"] == "F3") & (pop["population"] == "Treg")]
    assert "cohort_outlier:Treg" in row["qc"].item()


def test_cli_gate_lists_files_to_review(tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main
    from immunoprofile.io.write import write_fcs

    paths = []
    for i in range(6):
        freq = {"Treg": 0.30} if i == 2 else {"Treg": 0.07}
        s, _ = simulate_sample(events=20_000, seed=200 + i, frequencies=freq, name=f"S{i}")
        paths.append(str(write_fcs(s, tmp_path / f"S{i}.fcs")))
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["gate", "--template", "tregs", *paths, "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert "files to review" in r.output
    line = next(x for x in r.output.splitlines() if x.strip().startswith("S2:"))
    assert "cohort_outlier:Treg" in line
    qc = pd.read_csv(out / "qc.csv")
    assert set(qc.loc[qc["flag"] == "cohort_outlier", "sample"]) >= {"S2"}


def test_report_from_dir_puts_review_first(cohort_result, tmp_path):
    from immunoprofile.report import report_from_dir

    res = cohort_result
    res.write(tmp_path)
    path = report_from_dir(tmp_path, baseline="baseline", followup="week24")
    text = path.read_text()
    assert text.index('id="review"') < text.index('id="key"')
    review = text[text.index('id="review"') : text.index('id="key"')]
    assert "F3" in review and "cohort_outlier" in review


def test_template_expected_json_is_in_the_schema():
    from immunoprofile.gating.template import template_schema

    schema = template_schema()
    assert "expected" in schema["$defs"]["population"]["properties"]
    assert json.dumps(schema["$defs"]["expected"])


def test_a_subset_at_twice_the_median_is_an_ordinary_person():
    """Between people a share varies by a factor: Th17 at 4.1 % of memory CD4 where the
    run's median is 2.0 % (robust SD 0.5 pp, the floor of 25 % of the median) was robust
    z +4.2 on the percent scale and flagged, while 0.1 % (20 x lower) was only z -3.8.
    On log-odds 4.1 % is z +2.9 (not flagged) and 0.1 % is z -11.8: a file whose gate lost
    nearly all the cells is still flagged."""
    values = [2.0, 1.8, 2.2, 1.9, 2.1, 2.05, 1.95, 4.1, 0.1]
    records = _records(values)
    for r, v in zip(records, values):
        r["percent"] = {"Th17": v}
        r["parent_count"] = {"Th17": 20_000}
    flags = Q.cohort_flags(records)
    assert [bool(f) for f in flags] == [False] * 8 + [True]
    assert "robust z -11.8," in flags[8][0]["detail"]


def test_counting_noise_of_a_rare_population_is_not_an_outlier():
    # plasmablast-like: 1 % of 300 parent events (3 events); one file at 2.4 % is a shift
    # of 1.4 pp, z ~ 28 by a MAD of 0.05 pp, but within 2.4 binomial SDs
    # (100 * sqrt(0.01 * 0.99 / 300) = 0.57 pp)
    values = [1.0, 1.05, 0.95, 1.0, 1.02, 0.98, 2.4]
    records = _records(values)
    for r, v in zip(records, values):
        r["percent"] = {"plasmablasts": v}
        r["parent_count"] = {"plasmablasts": 300}
    assert Q.cohort_flags(records) == [[]] * 7
    for r in records:
        r["parent_count"] = {"plasmablasts": 300_000}  # the same shift on many events
    flags = Q.cohort_flags(records)
    assert [bool(f) for f in flags] == [False] * 6 + [True]


def test_live_share_flag_on_arrays():
    """A hand-counted case: 1,000 gated lymphocytes (900 below the dye's live cut) and, left
    out by the scatter gate, 60 dye-bright events of shrunken-lymphocyte scatter (counted),
    30 dye-bright debris at 0.3x FSC, 30 dye-bright granular events at 3x SSC and 20
    events in the window as dim on the dye as live cells (none of them counted)."""
    rng = np.random.default_rng(5)

    def block(n, f, s, v):
        return [np.full(n, f) * (1 + 0.01 * rng.standard_normal(n)), np.full(n, s), np.full(n, v)]

    parts = [
        block(900, 1.0, 1.0, 0.1),  # live, gated
        block(100, 1.0, 1.0, 0.9),  # dead, gated
        block(60, 0.7, 1.3, 0.9),  # dead lymphocytes left out
        block(30, 0.3, 0.8, 0.9),  # debris
        block(30, 0.8, 3.0, 0.9),  # granular
        block(20, 0.7, 1.3, 0.05),  # within the live events on the dye
    ]
    fsc, ssc, viab = (np.concatenate([p[i] for p in parts]) for i in range(3))
    gated = np.zeros(len(fsc), dtype=bool)
    gated[:1000] = True
    live = gated & (viab < 0.5)
    flag = Q.live_share_flag("live", live, gated, gated, fsc, ssc, viab)
    assert flag["flag"] == "dead_outside_scatter_gate" and flag["population"] == "live"
    # 900 / 1,000 = 90.0 % now; 900 / 1,060 = 84.9 % with the 60 counted: 5.1 pp lower
    assert flag["detail"].startswith("60 events above every live event")
    assert "live would be 84.9% and not 90.0% (5.1 pp lower" in flag["detail"]
    # 20 such events lower it by 1.8 pp only (900 / 1,020 = 88.2 %): no flag
    few = np.ones(len(fsc), dtype=bool)
    few[1000 + 20 : 1060] = False
    assert (
        Q.live_share_flag("live", live[few], gated[few], gated[few], fsc[few], ssc[few], viab[few])
        is None
    )


def test_dead_lymphocytes_left_out_by_the_scatter_gate_are_flagged():
    """A file with 12 % dead lymphocytes, shrunken to 0.85x the simulator's dead-cell
    forward scatter so that they form a cloud of their own below the lymphocytes: the
    scatter gate leaves most of them out, so ``live`` is right per event but its percent of
    the gated singlets reads ~9 pp above the truth's. The flag names it, and the live
    percentage it quotes with them counted lies within 1.5 pp of the truth. The same file
    with the dead cells where the simulator puts them carries no flag."""
    sample, labels = simulate_sample(events=40_000, seed=11, composition={"dead": 0.12})
    lab = np.asarray(labels)
    dead = lab == "dead"
    ev = sample.events.copy()
    for channel in ("FSC-A", "FSC-H"):
        ev[dead, sample.channel_index(channel)] *= 0.85
    res = apply_template(sample.with_events(ev), "tregs")
    truth = 100 * truth_mask(lab, "live").sum() / truth_mask(lab, "singlets").sum()
    now = 100 * res.masks["live"].sum() / res.masks["singlets"].sum()
    assert now - truth > 5
    flags = [q for q in res.qc if q["flag"] == "dead_outside_scatter_gate"]
    assert [q["population"] for q in flags] == ["live"]
    # the count in the detail, recomputed from the events with the rule's window
    x = res.sample.events
    gated = res.masks["lymphocytes"]
    lf = np.log(x[:, res.sample.channel_index("FSC-A")])
    ls = np.log(x[:, res.sample.channel_index("SSC-A")])
    v = x[:, res.sample.channel_index("APC-Cy7-A")]
    f0, s0 = np.median(lf[gated]), np.median(ls[gated])
    window = (
        ~gated
        & (lf >= f0 + np.log(0.5))
        & (lf < f0)
        & (ls >= s0 + np.log(0.5))
        & (ls < s0 + np.log(2.0))
        & (v > v[res.masks["live"]].max())
    )
    n_out = int(window.sum())
    cd14 = x[:, res.sample.channel_index("BUV805-A")]
    live = res.masks["live"]
    mono = res.masks["singlets"] & (cd14 > cd14[live].max()) & (v <= v[live].max())
    n_mono = int(mono.sum())
    counted = 100 * live.sum() / (res.masks["singlets"].sum() + n_out - n_mono)
    assert flags[0]["detail"].startswith(f"{n_out} events above every live event")
    assert (
        f"; {n_mono} events of the parent lie above every live event on CD14"
        in (flags[0]["detail"])
    )
    assert f"live would be {counted:.1f}% and not {now:.1f}%" in flags[0]["detail"]
    assert abs(counted - truth) < 1.5
    plain = apply_template(sample, "tregs")
    assert "dead_outside_scatter_gate" not in _rules(plain.qc)


def test_live_share_flag_counts_monocytes_against_dead_cells():
    """The same hand-counted file with a CD14 channel: 80 gated, dye-negative events above
    every live event on CD14 (monocytes the scatter gate let in; the live gate removed
    them, its parent kept them). 900 / (1,000 + 60 - 80) = 91.8 %, 1.8 pp above 90.0 %:
    the dead left out and the monocytes let in offset each other, no flag. With 200
    monocytes, 900 / (1,200 + 60 - 200) = 84.9 % against 900 / 1,200 = 75.0 %: live reads
    9.9 pp low, flagged ``monocytes_in_scatter_gate``, naming both counts."""
    rng = np.random.default_rng(6)

    def build(n_mono):
        blocks = [
            (900, 1.0, 1.0, 0.1, 0.1),  # live
            (100, 1.0, 1.0, 0.9, 0.1),  # dead, gated
            (n_mono, 1.0, 1.4, 0.1, 0.8),  # monocytes, gated, dye-negative
            (60, 0.7, 1.3, 0.9, 0.1),  # dead lymphocytes left out
        ]
        cols = [
            np.concatenate([np.full(n, v) for n, *vals in blocks for v in [vals[i]]])
            for i in range(4)
        ]
        fsc = cols[0] * (1 + 0.01 * rng.standard_normal(len(cols[0])))
        gated = np.zeros(len(fsc), dtype=bool)
        gated[: 1000 + n_mono] = True
        live = gated & (cols[2] < 0.5) & (cols[3] < 0.5)
        return live, gated, fsc, cols[1], cols[2], cols[3]

    live, gated, fsc, ssc, viab, cd14 = build(80)
    assert Q.live_share_flag("live", live, gated, gated, fsc, ssc, viab, cd14) is None
    live, gated, fsc, ssc, viab, cd14 = build(200)
    flag = Q.live_share_flag("live", live, gated, gated, fsc, ssc, viab, cd14)
    assert flag["flag"] == "monocytes_in_scatter_gate"
    assert flag["detail"].startswith("200 events of the parent lie above every live event on CD14")
    assert "; 60 events above every live event on the viability dye" in flag["detail"]
    assert "live would be 84.9% and not 75.0% (9.9 pp higher" in flag["detail"]


def test_live_share_flag_counts_dye_dim_debris_only_on_the_low_side():
    """Hand-counted: 900 live events (dye 0.1), 100 dead lymphocytes in the gate (dye
    N(0.9, 0.01)) and ``n`` debris events in the gate at dye 0.45-0.55, far below the dead
    cells' peak (more than 2 of its bright half-widths, 0.01; spread over 0.45-0.55): the viability gate cuts
    the debris with the dead, its parent keeps it. With 60: live reads 900 / 1,060 =
    84.9 %, without the debris 900 / 1,000 = 90.0 %, 5.1 pp higher: flagged
    ``debris_in_scatter_gate`` (the dead-or-monocyte estimate alone moves nothing). With
    20: 88.2 % against 90.0 %, 1.8 pp, no flag."""
    rng = np.random.default_rng(8)

    def build(n_debris):
        viab = np.concatenate(
            [np.full(900, 0.1), rng.normal(0.9, 0.01, 100), rng.uniform(0.45, 0.55, n_debris)]
        )
        n = len(viab)
        fsc, ssc = 1.0 + 0.01 * rng.standard_normal(n), np.ones(n)
        gated = np.ones(n, dtype=bool)
        live = viab < 0.3
        return live, gated, fsc, ssc, viab

    live, gated, fsc, ssc, viab = build(60)
    n_dim, mode = Q.dim_excluded(viab[~live])
    # the debris, and the dead cells more than 2 SD below their peak (about 2 in 100)
    assert 60 <= n_dim <= 65
    assert mode == pytest.approx(0.9, abs=0.01)
    flag = Q.live_share_flag("live", live, gated, gated, fsc, ssc, viab)
    assert flag["flag"] == "debris_in_scatter_gate"
    expected = 100 * 900 / (960 + 100 - n_dim)
    assert flag["detail"].startswith(f"{n_dim} events of the parent above every live event")
    assert f"live would be {expected:.1f}% and not 84.9%" in flag["detail"]
    assert expected == pytest.approx(90.0, abs=0.3)
    live, gated, fsc, ssc, viab = build(20)
    assert Q.live_share_flag("live", live, gated, gated, fsc, ssc, viab) is None


def test_debris_in_the_scatter_gate_is_flagged_on_live():
    """A simulated PBMC file with lymphocytes low on FSC (60,000 events, seed 8): debris
    reaches into the lymphocyte cloud, the viability gate cuts its dye-dim part, its
    parent keeps it, and ``live`` of the singlets reads 3.56 pp below the truth with
    monocytes and dead cells offsetting each other short of the limit. Flagged
    ``debris_in_scatter_gate`` on ``live``; the percentage it quotes without the debris
    and the monocytes lies within 1 pp of the truth."""
    from immunoprofile.simulate import Conditions

    sample, labels = simulate_sample(events=60_000, seed=8, conditions=Conditions(low_fsc=True))
    _assert_live_share_flag(sample, np.asarray(labels), "debris_in_scatter_gate", 3, 1.0)


def _assert_live_share_flag(sample, lab, rule: str, low_by: float, within: float) -> None:
    """``tregs`` on ``sample`` reads ``live`` of the singlets more than ``low_by`` pp
    below the truth, carries exactly ``rule`` among the scatter-gate rules on ``live``,
    and the percentage the flag quotes lies within ``within`` pp of the truth."""
    res = apply_template(sample, "tregs")
    truth = 100 * truth_mask(lab, "live").sum() / truth_mask(lab, "singlets").sum()
    now = 100 * res.masks["live"].sum() / res.masks["singlets"].sum()
    assert truth - now > low_by
    flags = [q for q in res.qc if q["population"] == "live" and "scatter_gate" in q["flag"]]
    assert [q["flag"] for q in flags] == [rule]
    quoted = float(flags[0]["detail"].split("live would be ")[1].split("%")[0])
    assert abs(quoted - truth) < within
    assert f"and not {now:.1f}%" in flags[0]["detail"]


def test_monocytes_let_into_the_scatter_gate_are_flagged_on_live():
    """A file whose monocytes (15 % of the events) were given the scatter of lymphocytes
    drawn from the same file: the lymphocyte gate cannot tell them apart and takes them,
    the live gate removes most of them on CD14, but its parent keeps them, so ``live`` is
    13.7 pp below the truth. Flagged ``monocytes_in_scatter_gate`` on ``live``, and the
    percentage it quotes without them lies within 0.5 pp of the truth."""
    sample, labels = simulate_sample(events=40_000, seed=11, composition={"monocyte": 0.15})
    lab = np.asarray(labels)
    mono = lab == "monocyte"
    donors = np.random.default_rng(1).choice(np.flatnonzero(truth_mask(lab, "live")), mono.sum())
    ev = sample.events.copy()
    for channel in ("FSC-A", "FSC-H", "SSC-A", "SSC-H"):
        j = sample.channel_index(channel)
        ev[mono, j] = ev[donors, j]
    _assert_live_share_flag(sample.with_events(ev), lab, "monocytes_in_scatter_gate", 10, 0.5)
