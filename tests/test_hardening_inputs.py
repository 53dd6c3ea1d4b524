"""Bad input to the batch, statistics, report, config, template, compensation, FCS and
API layers (issue rows B11-B21): each fails with a clear, located error or is named in
the outputs, and a batch goes on past it."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from cluster_synthetic import synthetic_sample
from fcs_builder import build_fcs, pack_columns, standard_keywords
from scipy import stats as st

from immunoprofile import stats
from immunoprofile.cli import main
from immunoprofile.comparison import compare
from immunoprofile.exceptions import (
    BlankSampleError,
    CompensationError,
    ConfigError,
    FCSTextError,
    TemplateError,
    TransformError,
)
from immunoprofile.sample import Sample, blank_reason

# --- B11: a blank file is a failed file; the others go on -------------------------------------


def _blank_like(sample: Sample, value: float, name: str) -> Sample:
    return Sample(np.full_like(sample.events, value), sample.channels, name=name)


def test_blank_reason():
    kinds = ["scatter", "fluorescence", "time"]
    ev = np.zeros((10, 3), dtype=np.float32)
    ev[:, 2] = np.arange(10)  # a blank acquisition still counts time
    assert "single constant value (0)" in blank_reason(ev, kinds)
    assert "NaN or infinite" in blank_reason(np.full((5, 3), np.nan, np.float32), kinds)
    assert "no events" in blank_reason(np.zeros((0, 3), np.float32), kinds)
    ev[3, 1] = 1.0
    assert blank_reason(ev, kinds) is None


def test_cluster_goes_on_past_blank_files():
    from immunoprofile.clustering.api import cluster

    good = [synthetic_sample(2000, seed=i, name=f"P{i}_baseline")[0] for i in range(2)]
    zero = _blank_like(good[0], 0.0, "P9_baseline")
    nan = _blank_like(good[0], np.nan, "P8_baseline")
    res = cluster([good[0], zero, nan, good[1]], n_metaclusters=5, n_resamples=5,
                  on_error="skip", seed=3)  # fmt: skip
    assert list(res.errors["sample"]) == ["P9_baseline", "P8_baseline"]
    assert list(res.errors["error_type"]) == ["BlankSampleError"] * 2
    assert set(res.table()["sample"]) == {"P0_baseline", "P1_baseline"}


def test_gate_lists_blank_file_in_errors(tmp_path):
    from immunoprofile.gating.run import gate
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.simulate import simulate_cohort

    simulate_cohort(tmp_path / "c", patients=2, visits=("baseline",), events=3000, seed=5)
    files = sorted(str(p) for p in (tmp_path / "c").glob("*.fcs"))
    s = read_fcs(files[0])
    blank = Sample(np.zeros_like(s.events), s.channels, {}, name="P99_baseline")
    res = gate([*files, blank], "tregs")
    err = res.errors
    assert list(err["sample"]) == ["P99_baseline"]
    assert err["error_type"].iloc[0] == "BlankSampleError"
    assert "single constant value" in err["message"].iloc[0]
    assert res.n_failed == 1 and len(res.table()["sample"].unique()) == 2
    with pytest.raises(BlankSampleError):
        from immunoprofile.sample import check_not_blank

        check_not_blank(blank)


# --- B12: many pairs: no overflow; exact where feasible, a named approximation beyond ---------


def _paired_table(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    base = rng.uniform(20, 60, n)
    fol = base + rng.normal(shift, 3.0, n)
    rows = []
    for i in range(n):
        for v, x in (("baseline", base[i]), ("week24", fol[i])):
            rows.append({"sample": f"P{i}_{v}", "patient": f"P{i}", "visit": v,
                         "population": "T", "parent": "lymphocytes",
                         "percent_of_parent": x})  # fmt: skip
    return pd.DataFrame(rows)


def test_compare_with_1100_pairs(tmp_path):
    t = _paired_table(1100, 0.4, seed=int(time.time()) % 10_000)
    cmp = compare(t, baseline="baseline", followup="week24", value="percent_of_parent")
    row = cmp.stats.iloc[0]
    assert row["n_pairs"] == 1100 and row["test"] == stats.NORMAL_APPROX
    d = (cmp.changes["followup"] - cmp.changes["baseline"]).to_numpy()
    ref = st.wilcoxon(d, method="approx", correction=True)  # independent computation
    assert math.isclose(row["p_value"], ref.pvalue, rel_tol=1e-6)
    # HL interval: order statistics k from the normal approximation, computed here
    n = len(d)
    mean, sd = n * (n + 1) / 4, math.sqrt(n * (n + 1) * (2 * n + 1) / 24)
    k = math.floor(mean + sd * st.norm.ppf(0.025) - 0.5) + 1
    w = np.sort([(d[i] + d[j]) / 2 for i in range(n) for j in range(i, n)])
    assert math.isclose(row["hl_ci_low"], w[k - 1]) and math.isclose(row["hl_ci_high"], w[-k])


def test_exact_up_to_the_limit_matches_scipy():
    rng = np.random.default_rng()
    d = rng.normal(0.1, 1.0, stats.EXACT_MAX_N)
    r = stats.signed_rank_test(d)
    assert r.test == stats.WILCOXON_EXACT
    assert math.isclose(r.pvalue, st.wilcoxon(d, method="exact").pvalue, rel_tol=1e-9)
    # the exact sign-flip distribution with ties at n = 1100 no longer overflows
    x = np.round(rng.normal(0.2, 1.0, 1100), 1)
    stat, p = stats.sign_flip_pvalue(x[:300])
    assert 0 < p <= 1 and np.isfinite(stat)
    assert stats.signed_rank_test(x).test == stats.NORMAL_APPROX


# --- B13/B14: values compare cannot use are named; bad options refused --------------------------


def test_compare_names_every_value_it_leaves_out():
    t = _paired_table(8, 1.0, seed=1)
    t["percent_of_parent"] = t["percent_of_parent"].astype(object)
    t.loc[(t.patient == "P0") & (t.visit == "week24"), "percent_of_parent"] = np.inf
    t.loc[(t.patient == "P1") & (t.visit == "baseline"), "percent_of_parent"] = -5.0
    t.loc[(t.patient == "P2") & (t.visit == "week24"), "percent_of_parent"] = "n/a"
    t.loc[(t.patient == "P3") & (t.visit == "week24"), "percent_of_parent"] = 140.0
    t["percent_of_lymphocytes"] = np.nan
    cmp = compare(t, baseline="baseline", followup="week24",
                  value=["percent_of_parent", "percent_of_lymphocytes"])  # fmt: skip
    pr = cmp.problems
    bad = pr[pr["kind"] == "invalid_value"]
    assert sorted(bad["patient"]) == ["P0", "P1", "P2", "P3"]
    msgs = " ".join(bad["message"])
    for why in ("is not finite", "is negative", "is not a number", "is above 100 %"):
        assert why in msgs
    missing = pr[pr["kind"] == "missing_value"]
    assert {"P0", "P1", "P2", "P3"} <= set(missing["patient"])
    assert "percent_of_lymphocytes" in " ".join(pr.loc[pr["kind"] == "empty_measure", "message"])
    s = cmp.stats.set_index("measure").loc["percent_of_parent"]
    assert s["n_pairs"] == 4
    ok = cmp.changes[(cmp.changes["measure"] == "percent_of_parent")]
    assert set(ok.loc[ok["status"] == "ok", "patient"]) == {"P4", "P5", "P6", "P7"}


def test_compare_cli_bad_conf_and_text_column(tmp_path):
    t = _paired_table(6, 1.0, seed=2)
    path = tmp_path / "pop.csv"
    t.to_csv(path, index=False)
    r = CliRunner().invoke(main, ["compare", str(path), "--conf", "2", "-o", str(tmp_path / "o")])
    assert r.exit_code == 1 and "between 0 and 1" in r.output and "Traceback" not in r.output
    t["percent_of_parent"] = "high"
    t.to_csv(path, index=False)
    r = CliRunner().invoke(main, ["compare", str(path), "-o", str(tmp_path / "o2"), "--no-report"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    probs = pd.read_csv(tmp_path / "o2" / "problems.csv")
    assert (probs["kind"] == "invalid_value").sum() == 12


# --- B15: report on a damaged results folder ------------------------------------------------------


def _compare_dir(tmp_path):
    t = _paired_table(6, 1.0, seed=3)
    t.to_csv(tmp_path / "populations.csv", index=False)
    compare(t, baseline="baseline", followup="week24").write(tmp_path / "comparison")
    return tmp_path


def test_report_names_corrupt_files(tmp_path):
    d = _compare_dir(tmp_path)
    (d / "gates.json").write_text('{"template": "x", "samples": [1, 2]}')
    r = CliRunner().invoke(main, ["report", str(d)])
    assert r.exit_code == 1 and "gates.json" in r.output and "Traceback" not in r.output
    (d / "gates.json").write_text('{"template": "x", "samp')
    r = CliRunner().invoke(main, ["report", str(d)])
    assert r.exit_code == 1 and "gates.json: cannot be read as JSON" in r.output
    (d / "gates.json").unlink()
    (d / "comparison" / "stats.csv").write_text('a,"unterminated\n')
    r = CliRunner().invoke(main, ["report", str(d)])
    assert r.exit_code == 1 and "stats.csv: cannot be read as CSV" in r.output
    (d / "comparison" / "stats.csv").write_text("population,measure\nT,x\n")
    r = CliRunner().invoke(main, ["report", str(d)])
    assert r.exit_code == 1 and "missing column(s)" in r.output


# --- B16: cluster --gating with a table that is not numeric: refused before the work ----------


def test_cluster_gating_table_checked_first(tmp_path, monkeypatch):
    import immunoprofile.clustering.api as api

    monkeypatch.setattr(api, "cluster", lambda *a, **k: pytest.fail("clustered"))
    table = tmp_path / "populations.csv"
    table.write_text("sample,population,percent_of_parent\ns1,T,12.5\ns2,T,lots\n")
    f = tmp_path / "s1.fcs"
    f.write_bytes(b"x")
    r = CliRunner().invoke(main, ["cluster", str(f), "--gating", str(table), "-o",
                                  str(tmp_path / "o")])  # fmt: skip
    assert r.exit_code == 1
    assert "percent_of_parent" in r.output and "[3]" in r.output and "lots" in r.output


# --- B17: run configurations --------------------------------------------------------------------


def test_config_types_are_checked(tmp_path):
    from immunoprofile.pipeline import load_config

    p = tmp_path / "run.json"
    p.write_text(json.dumps({"files": 5, "jobs": "many", "cluster": "yes"}))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "files: 5" in msg and "jobs: 'many'" in msg and "cluster: 'yes'" in msg
    r = CliRunner().invoke(main, ["run", "--config", str(p)])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    from immunoprofile.pipeline import load_config

    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for k in "bcdefgh":
        prev = chr(ord(k) - 1)
        lines.append(f"{k}: &{k} [{','.join(['*' + prev] * 9)}]")
    p = tmp_path / "run.yaml"
    p.write_text("\n".join(lines) + "\n")
    assert p.stat().st_size < 600
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="aliases"):
        load_config(p)
    assert time.perf_counter() - t0 < 5  # refused before any expansion (a loose bound)


# --- B18: deeply nested template ----------------------------------------------------------------


def test_deeply_nested_template(tmp_path):
    from immunoprofile.gating.template import load_template, validate_template

    p = tmp_path / "deep.json"
    p.write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    with pytest.raises(TemplateError, match="nested too deeply"):
        load_template(p)
    p.write_text('{"name": "x", "populations": [' + "[" * 500 + "]" * 500 + "]}")
    with pytest.raises(TemplateError, match="nested more than"):
        load_template(p)
    deep: dict = {}
    node = deep
    for _ in range(5000):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(TemplateError, match="nested more than"):
        validate_template(deep)


# --- B19: compensation files: regular files only, size-limited --------------------------------------


def test_spillover_file_must_be_a_small_regular_file(tmp_path):
    from immunoprofile.compensation import MAX_MATRIX_BYTES, Spillover

    with pytest.raises(CompensationError, match="regular file"):
        Spillover.from_file("/dev/zero")
    with pytest.raises(CompensationError, match="regular file"):
        Spillover.from_file(tmp_path)
    big = tmp_path / "big.csv"
    with open(big, "wb") as fh:
        fh.truncate(MAX_MATRIX_BYTES + 10)
    with pytest.raises(CompensationError, match="not a spillover matrix"):
        Spillover.from_file(big)


# --- B20: overflow names the keyword / parameter ------------------------------------------------------


def test_huge_pne_names_keyword_and_parameter(tmp_path):
    from immunoprofile.io.fcs import read_fcs

    n = 10
    cols = [np.arange(n, dtype=">u2"), np.arange(n, dtype=">u2")]
    kw = standard_keywords(n, ["FSC-A", "CD3 FITC"], datatype="I", bits=16, byteord="4,3,2,1",
                           extra={"$P2E": "999,1"})  # fmt: skip
    p = tmp_path / "pne.fcs"
    p.write_bytes(build_fcs(kw, pack_columns(cols, [">u2", ">u2"])))
    with pytest.raises(FCSTextError) as e:
        read_fcs(p)
    assert "$P2E" in str(e.value) and "CD3 FITC" in str(e.value) and "999" in str(e.value)


def test_logicle_top_beyond_float32_names_t():
    from immunoprofile.transforms import Logicle, transform_from_dict

    with pytest.raises(TransformError, match=r"T must be positive and at most 3.4"):
        Logicle(t=1e308)
    with pytest.raises(TransformError, match="T must be"):
        transform_from_dict({"type": "logicle", "t": float("inf")})


# --- B21: API misuse -------------------------------------------------------------------------------


def test_api_misuse_gives_type_errors(tmp_path):
    import immunoprofile as ip

    f = str(tmp_path / "a.fcs")
    with pytest.raises(TypeError, match="template must be"):
        ip.gate([f], None)
    with pytest.raises(TypeError, match="input 1 is a int"):
        ip.gate([f, 5], "tregs")
    with pytest.raises(TypeError, match="got NoneType"):
        ip.gate(None, "tregs")
    with pytest.raises(ValueError, match="jobs must be"):
        ip.gate([f], "tregs", jobs="many")
    with pytest.raises(TypeError, match="samplesheet must be"):
        ip.gate([f], "tregs", samplesheet=3)
    with pytest.raises(TypeError, match="population table"):
        ip.compare(None)
    with pytest.raises(TypeError, match="got NoneType"):
        ip.cluster(None)
    with pytest.raises(TypeError, match="built-in template name"):
        ip.load_template(5)
    with pytest.raises(TypeError, match="expected an immunoprofile Sample"):
        ip.write_fcs(None, tmp_path / "x.fcs")
