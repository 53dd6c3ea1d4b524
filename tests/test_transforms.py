"""Transforms: Gating-ML 2.0 reference values (FlowUtils' tests), round trips, the fast
float32 logicle/hyperlog tables against the exact float64 solver and against flowutils,
specs applied to a Sample, and the recorded parameters."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from immunoprofile.exceptions import MarkerNotFoundError, TransformError
from immunoprofile.sample import Sample, make_channel_table
from immunoprofile.transforms import (
    TRANSFORM_TYPES,
    Arcsinh,
    AsinhCofactor,
    Hyperlog,
    Linear,
    Log,
    Logicle,
    TransformSpec,
    estimate_logicle_w,
    inverse_transform,
    transform,
    transform_from_dict,
    transforms_from_history,
)

# FlowUtils tests/transform_tests.py (MANIFEST section E), expected to 6 decimals
X_REF = np.array([-10, -5, -1, 0, 0.3, 1, 3, 10, 100, 1000], dtype=np.float64)
LOGICLE_REF = [0.067574, 0.147986, 0.228752, 0.25, 0.256384, 0.271248, 0.312897, 0.432426,
               0.739548, 1.0]  # fmt: skip
ASINH_REF = [-0.200009, -0.139829, -0.000856, 0.2, 0.303776, 0.400856, 0.495521, 0.600009,
             0.8, 1.0]  # fmt: skip
HYPERLOG_REF = [0.08355406, 0.15586819, 0.2294768, 0.25, 0.25623887, 0.2705232, 0.30909185,
                0.41644594, 0.73187469, 1.0]  # fmt: skip
LOG_X = np.array([-1, 0, 0.5, 1, 10, 100, 1000, 1023, 10000, 100000, 262144], dtype=float)
LOG_REF = [np.nan, -np.inf, 0.139794, 0.2, 0.4, 0.6, 0.8, 0.801975, 1.0, 1.2, 1.283708]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "tr, ref",
    [
        (Logicle(t=1000, w=1.0, m=4.0, a=0), LOGICLE_REF),
        (Arcsinh(t=1000, m=4.0, a=1.0), ASINH_REF),
        (Hyperlog(t=1000, w=1.0, m=4.0, a=0), HYPERLOG_REF),
    ],
)
def test_reference_values(tr, ref, dtype):
    y = tr.apply(X_REF, dtype=dtype)
    assert y.dtype == dtype
    np.testing.assert_array_almost_equal(y, ref, decimal=6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_reference_values(dtype):
    y = Log(t=10000, m=5.0).apply(LOG_X, dtype=dtype)
    assert np.isnan(y[0]) and y[1] == -np.inf
    np.testing.assert_array_almost_equal(y[2:], LOG_REF[2:], decimal=6)


@pytest.mark.parametrize(
    "tr",
    [
        Logicle(10000, 0.5, 4.5, 0),
        Arcsinh(10000, 4.5, 0),
        Hyperlog(10000, 0.5, 4.5, 0),
        Log(10000, 4.5),
        Linear(10000, 0),
        AsinhCofactor(150),
    ],
)
def test_round_trip_float64(tr):
    # FlowUtils: the inverse recovers linspace(0, 1000, 10001) to decimal=10
    x = np.linspace(0, 1000, 10001)
    back = tr.inverse(tr.apply(x, dtype=np.float64), dtype=np.float64)
    np.testing.assert_array_almost_equal(back, x, decimal=10)
    # and FlowKit's small-range check, including negatives where defined
    x2 = np.linspace(-10 if not isinstance(tr, Log) else 0.1, 10, 101)
    back2 = tr.inverse(tr.apply(x2, dtype=np.float64), dtype=np.float64)
    np.testing.assert_array_almost_equal(back2, x2, decimal=10)


def test_linear_by_hand():
    y = Linear(t=1000, a=100).apply([-100, 0, 450, 1000], dtype=np.float64)
    np.testing.assert_allclose(y, [0, 100 / 1100, 0.5, 1.0])


def test_cofactor_by_hand():
    y = AsinhCofactor(5).apply([0, 5, -5], dtype=np.float64)
    np.testing.assert_allclose(y, [0, np.arcsinh(1), -np.arcsinh(1)])


def _all_float32_sample(step: int = 4099) -> np.ndarray:
    bits = np.arange(0, 2**32, step, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


@pytest.mark.parametrize("cls", [Logicle, Hyperlog])
@pytest.mark.parametrize(
    "params",
    [(262144, 0.5, 4.5, 0), (1000, 1.0, 4.0, 0), (262144, 1.5, 4.5, 1), (10000, 1.5, 4.0, 0.5)],
)
def test_fast_table_matches_exact_solver_over_all_floats(cls, params):
    """The float32 table path agrees with the float64 solve to 1e-6 for every float32,
    from denormals through huge negatives to values far above T."""
    tr = cls(*params)
    x = _all_float32_sample()
    fast = tr.apply(x)
    exact = tr.apply(x, dtype=np.float64)
    assert fast.dtype == np.float32
    err = np.abs(fast.astype(np.float64) - exact)
    assert err.max() < 1e-6
    # on the display range (|x| <= 10 T) it is much tighter
    sel = np.abs(x) <= 10 * params[0]
    assert err[sel].max() < 3e-7


def test_exact_solver_matches_flowutils():
    ft = pytest.importorskip("flowutils.transforms")
    x = np.concatenate([-np.logspace(-3, 7, 500), [0.0], np.logspace(-3, 7, 500)])
    for t, w, m, a in [(262144, 0.5, 4.5, 0), (1000, 1.0, 4.0, 0), (262144, 1.0, 4.5, 1.0)]:
        ref = ft.logicle(x, None, t=t, w=w, m=m, a=a)
        np.testing.assert_allclose(Logicle(t, w, m, a).apply(x, dtype=np.float64), ref, atol=1e-12)
        np.testing.assert_allclose(Logicle(t, w, m, a).apply(x), ref, atol=1e-6)
        ref_h = ft.hyperlog(x, None, t=t, w=w, m=m, a=a)
        np.testing.assert_allclose(
            Hyperlog(t, w, m, a).apply(x, dtype=np.float64), ref_h, atol=1e-12
        )
        np.testing.assert_allclose(Hyperlog(t, w, m, a).apply(x), ref_h, atol=1e-6)


def test_logicle_structure():
    tr = Logicle(262144, 0.5, 4.5, 0)
    # data 0 sits at x1 = (W + A) / (M + A); T maps to 1; the scale is odd around x1
    assert tr.apply([0.0], dtype=np.float64)[0] == pytest.approx(0.5 / 4.5, abs=1e-15)
    assert tr.apply([262144.0], dtype=np.float64)[0] == pytest.approx(1.0, abs=1e-14)
    x = np.array([3.0, 300.0, 3e4])
    y_pos = tr.apply(x, dtype=np.float64)
    y_neg = tr.apply(-x, dtype=np.float64)
    np.testing.assert_allclose(y_pos + y_neg, 2 * tr.x1, atol=1e-14)
    # monotone over a dense float32 sweep
    xs = np.sort(_all_float32_sample(65537))
    assert np.all(np.diff(tr.apply(xs)) >= 0)


def test_special_values_and_shapes():
    tr = Logicle()
    y = tr.apply(np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], dtype=np.float32))
    assert y[0] == np.inf and y[1] == -np.inf and np.isnan(y[2])
    assert y[3] == y[4] == np.float32(tr.x1)
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert tr.apply(grid).shape == (3, 4)
    assert tr.apply(np.array([], dtype=np.float32)).shape == (0,)
    # strided input (a column of an events matrix) gives the same values
    ev = np.random.default_rng(1).normal(0, 1e4, (1000, 5)).astype(np.float32)
    np.testing.assert_array_equal(tr.apply(ev[:, 2]), tr.apply(ev[:, 2].copy()))


def test_float32_inverse_round_trip():
    tr = Logicle()
    x = np.random.default_rng(0).normal(0, 5e4, 100_000).astype(np.float32)
    back = tr.inverse(tr.apply(x))
    # float32 display values carry ~6e-8 relative precision: about 2e-5 relative in data
    np.testing.assert_allclose(back, x, rtol=5e-5, atol=0.05)


def test_parameter_validation():
    with pytest.raises(TransformError, match="W must be"):
        Logicle(w=3.0, m=4.5)
    with pytest.raises(TransformError, match="T must be"):
        Arcsinh(t=0)
    with pytest.raises(TransformError, match="A must be"):
        Logicle(w=0.5, m=4.5, a=5)
    with pytest.raises(TransformError, match="unknown transform type"):
        transform_from_dict({"type": "sqrt"})
    with pytest.raises(TransformError, match="no parameter"):
        transform_from_dict({"type": "logicle", "q": 1})
    with pytest.raises(TransformError, match="must be a number"):
        transform_from_dict({"type": "logicle", "t": "big"})


@pytest.mark.parametrize("name", sorted(TRANSFORM_TYPES))
def test_dict_round_trip(name):
    tr = TRANSFORM_TYPES[name]()
    d = tr.to_dict()
    assert d["type"] == name
    assert transform_from_dict(json.loads(json.dumps(d))) == tr


def test_from_dict_aliases_and_case():
    assert transform_from_dict({"type": "fasinh", "T": 1000, "M": 4, "A": 1}) == Arcsinh(1000, 4, 1)
    assert transform_from_dict({"type": "flin", "T": 10}) == Linear(10, 0)


def test_estimate_w_parks_2006():
    # r = 5th percentile of negatives; W = (M - log10(T / |r|)) / 2
    neg = -np.linspace(1, 1000, 1000)
    vals = np.concatenate([neg, np.linspace(0, 1e5, 5000)])
    r = np.quantile(neg, 0.05)
    expected = (4.5 - np.log10(262144 / abs(r))) / 2
    w = estimate_logicle_w(vals, 262144, 4.5)
    assert expected <= w < expected + 0.01
    assert estimate_logicle_w(np.arange(10.0)) == 0.0


def _sample(n: int = 5000, seed: int = 0) -> Sample:
    rng = np.random.default_rng(seed)
    names = ["FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A", "Time"]
    markers = [None, None, "CD3 FITC", "CD25 PE", "CD4 APC", None]
    ev = np.column_stack(
        [
            rng.uniform(0, 262144, n),
            rng.uniform(0, 262144, n),
            rng.normal(500, 2000, n),
            rng.normal(200, 800, n),
            rng.lognormal(7, 1.5, n) - 100,
            np.arange(n) * 0.1,
        ]
    ).astype(np.float32)
    table = make_channel_table(names, markers, ranges=[262144] * 5 + [1024])
    return Sample(ev, table, {"$FIL": "t.fcs"}, name="t")


def test_transform_sample_defaults():
    s = _sample()
    out = transform(s)
    ev, raw = out.events, s.events
    assert ev.dtype == np.float32 and ev.flags.c_contiguous
    np.testing.assert_allclose(ev[:, 0], raw[:, 0] / 262144, rtol=1e-6)  # scatter linear
    np.testing.assert_array_equal(ev[:, 5], raw[:, 5])  # time untouched
    lg = Logicle(262144, 0.5, 4.5, 0)
    np.testing.assert_array_equal(ev[:, 2], lg.apply(raw[:, 2]))
    step = out.history[-1]
    assert step["step"] == "transform"
    assert set(step["channels"]) == {"FSC-A", "SSC-A", "FITC-A", "PE-A", "APC-A"}
    assert step["channels"]["PE-A"] == lg.to_dict()
    assert s.history == []  # input untouched
    assert transforms_from_history(out)["FITC-A"] == lg


def test_transform_spec_per_channel_and_inverse():
    s = _sample()
    spec = {
        "default": {"type": "arcsinh", "t": 262144, "m": 4.5, "a": 0},
        "scatter": None,
        "channels": {
            "CD25": {"type": "logicle", "t": 262144, "w": "auto", "m": 4.5, "a": 0},
            "APC-A": None,
        },  # fmt: skip
    }
    out = transform(s, json.dumps(spec))
    ch = out.history[-1]["channels"]
    assert set(ch) == {"FITC-A", "PE-A"}
    assert ch["FITC-A"]["type"] == "arcsinh"
    w = ch["PE-A"]["w"]
    assert w == estimate_logicle_w(s.events[:, 3], 262144, 4.5)
    np.testing.assert_array_equal(out.events[:, [0, 1, 4, 5]], s.events[:, [0, 1, 4, 5]])
    back = inverse_transform(out)
    assert back.history[-1]["step"] == "inverse_transform"
    np.testing.assert_allclose(back.events, s.events, rtol=1e-4, atol=0.1)


def test_transform_spec_errors():
    s = _sample()
    with pytest.raises(MarkerNotFoundError, match="CD127"):
        transform(s, {"channels": {"CD127": {"type": "linear"}}})
    with pytest.raises(TransformError, match="unknown transform spec keys"):
        TransformSpec.from_dict({"defaults": {}})
    with pytest.raises(TransformError, match="not valid JSON"):
        TransformSpec.from_dict("{")
    with pytest.raises(TransformError, match="no transform step"):
        inverse_transform(s)


def test_log_amplified_channel_top():
    # a channel stored with $PnE = 4,0 spans 1..10^4 after scaling: T comes from decades
    table = make_channel_table(["FL1-H"], ["CD4"], ranges=[1024], log_decades=[4.0])
    s = Sample(np.array([[10000.0], [1.0]], dtype=np.float32), table)
    out = transform(s)
    assert out.history[-1]["channels"]["FL1-H"]["t"] == 10000.0
    assert out.events[0, 0] == pytest.approx(1.0, abs=1e-6)


def test_empty_sample():
    s = _sample(0)
    out = transform(s)
    assert out.events.shape == (0, 6)
    assert isinstance(out.channels, pd.DataFrame)


def test_flowkit_logicle_above_top_of_scale(realdata):
    # FlowKit sample_tests: FSC-A raw[0] of test_comp_example is 118103.25, and
    # logicle(T=10000, W=0.5, M=4.5, A=0) of it rounds to 1.238 (far above T -> above 1)
    raw = np.fromfile(realdata / "FlowKit/data/test_comp_example.npy").reshape(10703, 18)
    assert raw[0, 0] == 118103.25
    tr = Logicle(10000, 0.5, 4.5, 0)
    assert round(float(tr.apply(raw[:, 0])[0]), 3) == 1.238
    assert round(float(tr.apply(raw[:, 0], dtype=np.float64)[0]), 3) == 1.238


def test_spec_shorthand_type_names():
    s = _sample()
    out = transform(s, {"default": "arcsinh", "scatter": "linear"})
    ch = out.history[-1]["channels"]
    assert ch["FITC-A"] == Arcsinh(262144, 4.5, 0).to_dict()
    assert ch["FSC-A"] == Linear(262144, 0).to_dict()
    assert transform(s, {"default": "arcsinh_cofactor"}).history[-1]["channels"]["PE-A"] == {
        "type": "arcsinh_cofactor",
        "cofactor": 150.0,
    }
    with pytest.raises(TransformError, match="unknown transform type"):
        TransformSpec.from_dict({"default": "sqrt"})
