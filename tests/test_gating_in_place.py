"""Gating a file in place (``apply_template(copy=False)``, as `gate` does for a file it
reads): the same masks, fitted gates and QC as gating a copy, with compensation written
block by block into the events array itself."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile import compensation as comp
from immunoprofile.compensation import Spillover, compensate_array
from immunoprofile.gating import engine
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import load_template, validate_template
from immunoprofile.sample import Sample, make_channel_table
from immunoprofile.simulate.cohort import simulate_sample


def _spillover(n: int, seed: int) -> Spillover:
    rng = np.random.default_rng(seed)
    m = np.eye(n) + np.abs(rng.normal(0, 0.04, (n, n))) * (1 - np.eye(n))
    return Spillover(tuple(f"D{i}" for i in range(n)), m, source="test")


@pytest.mark.parametrize("seed", [11, 12])
def test_block_product_is_the_one_product_bit_for_bit(monkeypatch, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((1_003, 9)) * 1_000).astype(np.float32)
    x[500, 0] = np.inf  # a non-detector infinity: only its block is redone by columns
    idx = [1, 2, 3, 5, 6, 7]
    sp = _spillover(len(idx), seed)
    full = np.eye(9, dtype=np.float64)
    full[np.ix_(idx, idx)] = sp.inverse
    with np.errstate(invalid="ignore", over="ignore"):
        one = x @ full.astype(np.float32)
    # the row with the infinity: detectors compensated without it, the infinity kept
    one[500, [0, 4, 8]] = x[500, [0, 4, 8]]
    one[500, idx] = x[500, idx] @ sp.inverse.astype(np.float32)
    monkeypatch.setattr(comp, "_ROWS", 64)  # many blocks, the last one short
    fresh = compensate_array(x, sp, idx)
    assert np.array_equal(fresh, one)
    assert np.isinf(fresh[500, 0]) and np.isfinite(fresh[500, idx]).all()
    inplace = x.copy()
    got = compensate_array(inplace, sp, idx, out=inplace)
    assert got is inplace and np.array_equal(inplace, one)
    with pytest.raises(comp.CompensationError, match="out must be"):
        compensate_array(x, sp, idx, out=np.empty((3, 9), np.float32))


def _gate_both(sample: Sample, template, **kw):
    before = sample.events.copy()
    kept = apply_template(sample, template, **kw)
    assert np.array_equal(sample.events, before, equal_nan=True)  # copy=True: untouched
    owned = Sample(before.copy(), sample.channels, sample.keywords, name=sample.name)
    fast = apply_template(owned, template, copy=False, **kw)
    assert np.shares_memory(fast.sample.events, owned.events)  # gated in place
    return kept, fast


def _assert_same(a, b) -> None:
    assert a.masks.keys() == b.masks.keys()
    for k in a.masks:
        assert np.array_equal(a.masks[k], b.masks[k]), k
    assert a.fitted == b.fitted
    assert a.qc == b.qc
    assert np.array_equal(a.sample.events, b.sample.events, equal_nan=True)
    assert a.sample.history == b.sample.history


@pytest.mark.parametrize("seed", [int(s) for s in np.random.SeedSequence(16).generate_state(2)])
def test_in_place_gating_matches_gating_a_copy(seed):
    s, _ = simulate_sample(events=30_000, seed=seed)
    ev = s.events.copy()
    rng = np.random.default_rng(seed)
    cd4 = s.channel_names.index("BV510-A")
    top = float(s.channels["range"].iloc[cd4])
    ev[rng.choice(len(ev), 2_000, replace=False), cd4] = top  # saturated on a used channel
    ev[rng.choice(len(ev), 5, replace=False), 3] = np.nan  # rows left out of every population
    s = Sample(ev, s.channels, s.keywords, name="sat")
    kept, fast = _gate_both(s, load_template("tregs"), seed=seed)
    _assert_same(kept, fast)
    flags = {q["flag"] for q in fast.qc}
    assert "non_finite" in flags and "off_scale" in flags
    assert fast.counts["lymphocytes"] > 10_000


def test_in_place_gating_keeps_derived_dimensions_on_raw_values():
    # the hand-worked case of test_gatingml_engine: B = FL2 - 0.5 * FL1 on the raw values,
    # while the file's own spillover compensates the events in place
    x = np.array([[100.0, 10.0], [100.0, 60.0], [40.0, 50.0]], dtype=np.float32)
    ch = make_channel_table(["FL1-A", "FL2-A"], ranges=[1024.0, 1024.0])
    s = Sample(x, ch, {"$SPILLOVER": "2,FL1-A,FL2-A,1,0.2,0,1"}, name="d")
    tmpl = validate_template(
        {
            "name": "m",
            "compensation": "keyword",
            "transforms": None,
            "matrices": {
                "S": {
                    "fluorochromes": ["A", "B"],
                    "detectors": ["FL1-A", "FL2-A"],
                    "matrix": [[1.0, 0.5], [0.0, 1.0]],
                }
            },
            "dimensions": {"B_comp": {"channel": "B", "compensation": "S"}},
            "populations": [
                {"name": "Bpos", "gate": {"type": "range", "dims": ["B_comp"], "min": 0}},
                {"name": "FL2hi", "gate": {"type": "range", "dims": ["FL2-A"], "min": 30}},
            ],
        }
    )
    kept, fast = _gate_both(s, tmpl, min_events=0)
    _assert_same(kept, fast)
    assert fast.masks["Bpos"].tolist() == [False, True, True]
    # compensated FL2 = FL2 - 0.2 * FL1: -10, 40, 42
    assert fast.masks["FL2hi"].tolist() == [False, True, True]


def test_saturated_rows_found_in_one_pass_match_the_column_scan(monkeypatch):
    rng = np.random.default_rng(int(np.random.SeedSequence(160).generate_state(1)[0]))
    ev = rng.uniform(0, 1024, (5_000, 4)).astype(np.float32)
    ev[rng.choice(5_000, 300, replace=False), 1] = 1023.0
    ev[rng.choice(5_000, 40, replace=False), 3] = 2000.0
    ch = make_channel_table(["a", "b", "c", "d"], ranges=[1024.0, 1024.0, 0.0, 1024.0])
    s = Sample(ev, ch)
    cols_of = {"a": 0, "b": 1, "c": 2, "d": 3}
    monkeypatch.setattr(engine, "_TRANSPOSE_ROWS", 333)
    got = engine._off_scale_rows(s, cols_of)
    want = engine._off_scale_columns(s, cols_of)
    assert got.keys() == want.keys() and 1 in got and 3 in got
    for j in want:
        assert np.array_equal(got[j], want[j])
    assert np.array_equal(got[1], np.flatnonzero(ev[:, 1] >= 1023.0))


def test_blank_check_in_row_blocks(monkeypatch):
    from immunoprofile import sample as sample_mod
    from immunoprofile.sample import blank_reason

    monkeypatch.setattr(sample_mod, "_BLANK_ROWS", 4)
    kinds = ["scatter", "fluorescence", "time"]
    ev = np.zeros((10, 3), np.float32)
    ev[:, 2] = np.arange(10)  # time counts on in a blank acquisition
    ev[:5, 1] = np.nan  # NaN in the first blocks, zeros after
    assert "single constant value (0)" in blank_reason(ev, kinds)
    ev[9, 0] = 3.0  # one value differs, in the last (short) block
    assert blank_reason(ev, kinds) is None
    ev[:, :2] = np.inf
    assert "no event has a finite value" in blank_reason(ev, kinds)
    # every value finite: one reduction over all rows, the same verdicts
    ok = np.zeros((10, 3), np.float32)
    assert "single constant value (0)" in blank_reason(ok, kinds)
    ok[3, 1] = 1.0
    assert blank_reason(ok, kinds) is None
