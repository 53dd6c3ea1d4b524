"""Tests of the change table and the exact paired statistics.

The statistics are checked against hand-worked n = 7 cases and against independent
brute-force computations written here (all 2**7 sign patterns listed explicitly; the
confidence interval found by scanning shifts and running the test at each).
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from immunoprofile import stats
from immunoprofile.comparison import Comparison, compare, visit_sort_key
from immunoprofile.exceptions import ComparisonError

# --- independent reference computations --------------------------------------------


def brute_sign_flip_p(d: np.ndarray) -> float:
    """Two-sided p of the signed-rank statistic by listing every sign pattern."""
    d = np.asarray(d, float)
    d = d[d != 0]
    r = st.rankdata(np.abs(d))
    s_obs = abs(np.sum(np.sign(d) * r))
    hits = 0
    pats = list(itertools.product((-1.0, 1.0), repeat=d.size))
    for signs in pats:
        if abs(np.dot(signs, r)) >= s_obs - 1e-9:
            hits += 1
    return hits / len(pats)


def brute_hl_ci(d: np.ndarray, conf: float = 0.95) -> tuple[float, float]:
    """CI as the set of shifts not rejected by the exact signed-rank test.

    T+(theta) = #{Walsh averages > theta}; accepted when k <= T+ <= M - k with
    k - 1 the largest t whose P(T+ <= t) <= alpha/2 (null law from all 2**n patterns).
    """
    d = np.asarray(d, float)
    n = d.size
    ranks = np.arange(1, n + 1)
    tplus = [int(np.dot(s, ranks)) for s in itertools.product((0, 1), repeat=n)]
    m = n * (n + 1) // 2
    cdf = np.array([np.mean(np.array(tplus) <= t) for t in range(m + 1)])
    k = int(np.flatnonzero(cdf <= (1 - conf) / 2 + 1e-12)[-1]) + 1
    walsh = np.array([(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)])
    grid = np.linspace(walsh.min() - 1, walsh.max() + 1, 20001)
    accepted = [
        th for th in grid if k <= np.sum(walsh > th) <= m - k and k <= np.sum(walsh < th) <= m - k
    ]
    return min(accepted), max(accepted)


# --- statistics --------------------------------------------------------------------


def test_signed_rank_null_counts_n7_by_enumeration():
    counts = stats.signed_rank_null_counts(7)
    tplus = [int(np.dot(s, np.arange(1, 8))) for s in itertools.product((0, 1), repeat=7)]
    expected = np.bincount(tplus, minlength=29)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == 128
    # hand values: T+ = 0, 1, 2 occur once each, T+ = 3 twice ({3}, {1, 2})
    assert list(counts[:4]) == [1, 1, 1, 2]


def test_hand_worked_n7_all_positive():
    # every change up: T+ = 28, T- = 0; two-sided exact p = 2 / 128
    d = [0.8, 1.1, 1.5, 2.0, 2.4, 3.1, 4.0]
    r = stats.signed_rank_test(d)
    assert r.test == stats.WILCOXON_EXACT
    assert r.statistic == 0.0
    assert r.pvalue == pytest.approx(2 / 128)


def test_hand_worked_n7_one_negative():
    # d = 1..7 with the smallest flipped: T- = 1, P(T+ <= 1) = 2/128, two-sided p = 4/128
    d = [-1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    r = stats.signed_rank_test(d)
    assert r.statistic == 1.0
    assert r.pvalue == pytest.approx(4 / 128)
    # rank 3 flipped: T- = 3, patterns with T+ <= 3 are {}, {1}, {2}, {3}, {1,2} -> 5
    r3 = stats.signed_rank_test([1.0, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0])
    assert r3.pvalue == pytest.approx(10 / 128)


def test_hand_worked_hl_n7():
    # d = 1..7: Walsh averages are the 28 values (i + j)/2, median 4; with n = 7 the
    # 95 % interval uses k = 3 (P(T+ <= 2) = 3/128 <= 0.025 < P(T+ <= 3) = 5/128),
    # i.e. the 3rd smallest (1, 1.5, 2 -> 2) and 3rd largest (7, 6.5, 6 -> 6) averages.
    r = stats.hodges_lehmann([1, 2, 3, 4, 5, 6, 7])
    assert (r.estimate, r.low, r.high, r.k) == (4.0, 2.0, 6.0, 3)
    assert r.level == pytest.approx(1 - 6 / 128)


@pytest.mark.parametrize("seed", range(6))
def test_pvalue_matches_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    d = rng.normal(0.5, 1.0, 7)
    assert stats.signed_rank_test(d).pvalue == pytest.approx(brute_sign_flip_p(d))
    # with ties and zeros the sign-flip test is used, still equal to enumeration
    t = np.round(d * 2) / 2
    t[0] = 0.0
    r = stats.signed_rank_test(t)
    assert r.test == stats.SIGN_FLIP
    assert r.n_zero >= 1
    assert r.pvalue == pytest.approx(brute_sign_flip_p(t))


def test_sign_flip_equals_exact_wilcoxon_without_ties():
    rng = np.random.default_rng(7)
    for _ in range(20):
        d = rng.normal(0.3, 1, 7)
        _, p = stats.sign_flip_pvalue(d)
        assert p == pytest.approx(st.wilcoxon(d, method="exact").pvalue)


def test_all_zero_and_empty_differences():
    r = stats.signed_rank_test([0.0, 0.0, 0.0])
    assert r.pvalue == 1.0 and r.test == stats.SIGN_FLIP and r.n_zero == 3
    e = stats.signed_rank_test([np.nan])
    assert e.n == 0 and np.isnan(e.pvalue) and e.test == stats.NO_TEST
    assert np.isnan(stats.hodges_lehmann([]).estimate)


@pytest.mark.parametrize("seed", range(4))
def test_hl_ci_matches_test_inversion(seed):
    rng = np.random.default_rng(100 + seed)
    d = rng.normal(1.0, 2.0, 7)
    r = stats.hodges_lehmann(d)
    lo, hi = brute_hl_ci(d)
    step = (d.max() - d.min() + 2) / 20000
    assert r.low == pytest.approx(lo, abs=2 * step)
    assert r.high == pytest.approx(hi, abs=2 * step)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(7) for j in range(i, 7))
    assert r.estimate == pytest.approx(np.median(walsh))


def test_hl_ci_n6_and_n5():
    r6 = stats.hodges_lehmann([1, 2, 3, 4, 5, 6])  # k = 1: P(T+ = 0) = 1/64 <= 0.025
    assert (r6.low, r6.high, r6.k) == (1.0, 6.0, 1)
    assert r6.level == pytest.approx(1 - 2 / 64)
    r5 = stats.hodges_lehmann([1, 2, 3, 4, 5])  # 2/32 > 0.05: no 95 % interval exists
    assert np.isnan(r5.low) and np.isnan(r5.high) and r5.estimate == 3.0


def test_benjamini_hochberg_hand_numbers():
    # m = 4: sorted p 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.04, 0.04, 0.5
    q = stats.benjamini_hochberg([0.03, 0.5, 0.01, 0.02])
    np.testing.assert_allclose(q, [0.04, 0.5, 0.04, 0.04])
    # monotone step-up: p 0.01, 0.04, 0.045 -> 0.03, 0.045, 0.045
    np.testing.assert_allclose(stats.benjamini_hochberg([0.01, 0.04, 0.045]), [0.03, 0.045, 0.045])
    q = stats.benjamini_hochberg([0.2, np.nan, 0.01])
    assert np.isnan(q[1]) and q[0] == pytest.approx(0.2) and q[2] == pytest.approx(0.02)
    p = np.random.default_rng(3).uniform(size=30)
    np.testing.assert_allclose(stats.benjamini_hochberg(p), st.false_discovery_control(p))
    with pytest.raises(ValueError):
        stats.benjamini_hochberg([1.5])


def test_paired_t_log_matches_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(0.4, 0.2, 7)
    r = stats.paired_t_log(np.r_[x, np.nan, np.inf])
    assert r.n == 7
    assert r.pvalue == pytest.approx(st.ttest_1samp(x, 0.0).pvalue)
    ci = st.ttest_1samp(x, 0.0).confidence_interval(0.95)
    assert (r.low, r.high) == pytest.approx((ci.low, ci.high))


def test_null_cohorts_keep_their_size():
    """Under no true change, the exact test rejects at most 5 % and the 95 % HL interval
    covers 0 about 95.3 % of the time (its exact level for n = 7)."""
    rng = np.random.default_rng(11)
    reject = cover = 0
    n_sim = 1500
    for _ in range(n_sim):
        base = rng.lognormal(1.5, 0.3, 7)
        follow = base * rng.lognormal(0.0, 0.15, 7)  # no true change
        d = follow - base
        reject += stats.signed_rank_test(d).pvalue <= 0.05
        h = stats.hodges_lehmann(d)
        cover += h.low <= 0.0 <= h.high
    # exact size for n = 7 at 0.05 is 6/128 = 0.047; binomial sd ~0.0055
    assert reject / n_sim < 0.047 + 3 * 0.0055
    assert abs(cover / n_sim - (1 - 6 / 128)) < 3 * 0.0055


# --- change table ------------------------------------------------------------------


def _table(rng=None, missing=(), effects=None, visits=("baseline", "week24")):
    """Population table for 7 patients: Treg +1.5 pp, Th17 -2 pp, B and NK unchanged."""
    rng = rng or np.random.default_rng(0)
    effects = effects or {"Treg": 1.5, "Th17": -2.0, "B": 0.0, "NK": 0.0}
    bases = {"Treg": 5.0, "Th17": 8.0, "B": 12.0, "NK": 10.0}
    rows = []
    for i in range(1, 8):
        pat = f"P{i}"
        for v in visits:
            if (pat, v) in missing:
                continue
            for pop, eff in effects.items():
                val = bases[pop] + (eff if v != "baseline" else 0.0) + rng.normal(0, 0.3)
                rows.append(
                    {
                        "sample": f"{pat}_{v}",
                        "patient": pat,
                        "visit": v,
                        "population": pop,
                        "parent": "CD4",
                        "count": 100,
                        "parent_count": 1000,
                        "percent_of_parent": val,
                        "percent_of_lymphocytes": val / 4,
                    }
                )
    return pd.DataFrame(rows)


def test_change_values_hand_table():
    t = pd.DataFrame(
        {
            "sample": ["a", "b", "c", "d"],
            "patient": ["P1", "P1", "P2", "P2"],
            "visit": ["baseline", "week24", "baseline", "week24"],
            "population": ["Treg"] * 4,
            "percent_of_parent": [4.0, 6.0, 5.0, 2.5],
        }
    )
    c = compare(t)
    ch = c.changes.set_index("patient")
    assert ch.loc["P1", "difference"] == 2.0
    assert ch.loc["P1", "fold_change"] == 1.5
    assert ch.loc["P1", "log2_ratio"] == pytest.approx(np.log2(1.5))
    assert ch.loc["P2", "difference"] == -2.5
    assert ch.loc["P2", "log2_ratio"] == -1.0
    assert list(c.measures) == ["percent_of_parent"]
    row = c.stats.iloc[0]
    assert row["n_pairs"] == 2 and row["median_change"] == pytest.approx(-0.25)
    assert row["median_baseline"] == 4.5 and row["median_followup"] == 4.25
    assert c.problems.empty


def test_missing_visits_are_rows_not_dropped():
    t = _table(missing={("P3", "week24"), ("P5", "baseline")})
    c = compare(t, value="percent_of_parent")
    ch = c.changes
    assert len(ch) == 7 * 4  # every patient x population kept
    p3 = ch[ch["patient"] == "P3"]
    assert (p3["status"] == "missing follow-up").all() and p3["followup"].isna().all()
    p5 = ch[ch["patient"] == "P5"]
    assert (p5["status"] == "missing baseline").all() and p5["difference"].isna().all()
    kinds = set(zip(c.problems["kind"], c.problems["patient"]))
    assert ("no_baseline", "P5") in kinds and ("missing_followup", "P3") in kinds
    assert set(c.stats["n_pairs"]) == {5} and set(c.stats["n_patients"]) == {7}


def test_rows_without_identity_are_named():
    t = _table()
    t.loc[t["sample"] == "P2_week24", "patient"] = np.nan
    t.loc[t["sample"] == "P4_baseline", "visit"] = ""
    c = compare(t)
    named = c.problems[c.problems["kind"] == "no_identity"]
    assert set(named["sample"]) == {"P2_week24", "P4_baseline"}
    assert "no patient" in named.set_index("sample").loc["P2_week24", "message"]
    t2 = t.assign(patient=np.nan)
    with pytest.raises(ComparisonError, match="P1_baseline"):
        compare(t2)


def test_errors_name_the_cause():
    t = _table()
    with pytest.raises(ComparisonError, match="week48"):
        compare(t, followup="week48")
    with pytest.raises(ComparisonError, match="'screening' not found"):
        compare(t, baseline="screening")
    with pytest.raises(ComparisonError, match="missing column"):
        compare(t.drop(columns="visit"))
    with pytest.raises(ComparisonError, match="cells_per_ul"):
        compare(t, value="cells_per_ul")
    with pytest.raises(ComparisonError, match="not found"):
        compare("/nonexistent/populations.csv")


def test_effect_recovered_and_bh_across_populations():
    # B and NK have no true change; under the null each reaches p <= 0.05 with
    # probability 6/128, and with this fixed seed neither does
    c = compare(_table(np.random.default_rng(1)), value="percent_of_parent")
    s = c.stats.set_index("population")
    assert s.loc["Treg", "direction"] == "up" and s.loc["Th17", "direction"] == "down"
    assert s.loc["Treg", "hl_ci_low"] < 1.5 < s.loc["Treg", "hl_ci_high"]
    assert s.loc["Treg", "p_value"] == pytest.approx(2 / 128)
    assert s.loc["Th17", "p_value"] == pytest.approx(2 / 128)
    assert s.loc["B", "p_value"] > 0.05 and s.loc["NK", "p_value"] > 0.05
    q = stats.benjamini_hochberg(s["p_value"].to_numpy())
    np.testing.assert_allclose(s["q_value"].to_numpy(), q)
    assert (s["test"] == stats.WILCOXON_EXACT).all()
    # numbers in stats agree with the change table
    tr = c.changes[c.changes["population"] == "Treg"]
    assert s.loc["Treg", "median_change"] == pytest.approx(tr["difference"].median())
    assert s.loc["Treg", "hl_estimate"] == pytest.approx(
        stats.hodges_lehmann(tr["difference"]).estimate
    )


def test_several_followups_measures_and_cells(tmp_path):
    t = _table(visits=("baseline", "week24", "week48"))
    t["cells_per_ul"] = t["percent_of_lymphocytes"] * 20.0
    c = compare(t, followup=None)
    assert c.followup == ["week24", "week48"]
    assert c.measures == ["percent_of_parent", "percent_of_lymphocytes", "cells_per_ul"]
    assert len(c.stats) == 4 * 3 * 2
    # q computed separately within each measure x visit family
    for _, g in c.stats.groupby(["measure", "followup_visit"]):
        np.testing.assert_allclose(g["q_value"], stats.benjamini_hochberg(g["p_value"]))
    paths = c.write(tmp_path / "cmp")
    back = Comparison.read(tmp_path / "cmp")
    pd.testing.assert_frame_equal(back.stats, c.stats, check_dtype=False)
    assert back.followup == c.followup and paths["changes"].is_file()
    # reading a CSV population table gives the same answer
    t.to_csv(tmp_path / "pop.csv", index=False)
    c2 = compare(tmp_path / "pop.csv", followup=["week48"], value="cells_per_ul")
    s2 = c2.stats.set_index("population")["hl_estimate"]
    s1 = c.stats[(c.stats["measure"] == "cells_per_ul") & (c.stats["followup_visit"] == "week48")]
    np.testing.assert_allclose(s2.to_numpy(), s1["hl_estimate"].to_numpy())


def test_zero_values_ties_and_duplicates():
    t = _table()
    t.loc[(t["patient"] == "P1") & (t["population"] == "B"), "percent_of_parent"] = 0.0
    dup = t[(t["patient"] == "P2") & (t["visit"] == "baseline")].copy()
    dup["sample"] = "P2_baseline_tube2"
    dup["percent_of_parent"] += 1.0
    t = pd.concat([t, dup], ignore_index=True)
    c = compare(t, value="percent_of_parent")
    ch = c.changes.set_index(["patient", "population"])
    assert ch.loc[("P1", "B"), "status"] == "zero value (no ratio)"
    assert np.isnan(ch.loc[("P1", "B"), "log2_ratio"])
    assert ch.loc[("P1", "B"), "difference"] == 0.0
    s = c.stats.set_index("population")
    assert s.loc["B", "test"] == stats.SIGN_FLIP and s.loc["B", "n_zero"] == 1
    assert s.loc["B", "n_log_pairs"] == 6
    d = c.changes[c.changes["population"] == "B"]["difference"].to_numpy()
    assert s.loc["B", "p_value"] == pytest.approx(brute_sign_flip_p(d))
    dups = c.problems[c.problems["kind"] == "duplicate"]
    assert len(dups) == 4 and "P2_baseline_tube2" in dups["sample"].iloc[0]
    orig = t[(t["sample"] == "P2_baseline") & (t["population"] == "Treg")]["percent_of_parent"]
    assert ch.loc[("P2", "Treg"), "baseline"] == pytest.approx(float(orig.iloc[0]) + 0.5)


def test_methods_compared_separately():
    g = _table().assign(method="gating")
    k = _table(np.random.default_rng(9)).assign(method="clustering")
    c = compare(pd.concat([g, k]), value="percent_of_parent")
    assert set(c.stats["method"]) == {"gating", "clustering"}
    assert len(c.stats) == 8 and len(c.changes) == 2 * 7 * 4


def test_visit_order():
    vs = ["week48", "baseline", "week4", "week24", "screening"]
    assert sorted(vs, key=visit_sort_key) == ["baseline", "week4", "week24", "week48", "screening"]


def test_ip_compare_is_a_plain_function():
    import inspect

    import immunoprofile as ip

    assert inspect.isfunction(ip.compare) and ip.compare is compare
    assert ip.compare.__module__ == "immunoprofile.comparison"
    res = ip.compare(_table(), value="percent_of_parent")
    assert isinstance(res, Comparison) and len(res.stats) == 4


def test_old_module_path_warns_and_leaves_ip_compare_callable():
    """``immunoprofile.compare`` was the module's name: importing from it still works (with a
    DeprecationWarning), and ``ip.compare(table)`` keeps working after such an import
    (run apart: the import rebinds the package attribute for the whole process)."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    code = textwrap.dedent(
        """
        import warnings
        import pandas as pd
        import immunoprofile as ip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from immunoprofile.compare import Comparison, compare
        assert any(
            issubclass(w.category, DeprecationWarning) and "immunoprofile.comparison" in str(w.message)
            for w in caught
        ), [str(w.message) for w in caught]
        import immunoprofile.comparison as new
        assert compare is new.compare and Comparison is new.Comparison
        rows = [
            {"sample": f"{p}_{v}", "patient": p, "visit": v, "population": "Treg",
             "parent": "CD4", "count": 10, "parent_count": 100, "percent_of_parent": x}
            for p, v, x in [("P1", "baseline", 5.0), ("P1", "week24", 7.0),
                            ("P2", "baseline", 6.0), ("P2", "week24", 9.0)]
        ]
        res = ip.compare(pd.DataFrame(rows), value="percent_of_parent")
        assert res.stats["median_change"].iloc[0] == 2.5, res.stats
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
