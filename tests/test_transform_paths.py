"""`transform`'s row-major path (few distinct lookup tables) against its column path:
the same float32 values bit for bit, on awkward inputs and mixed per-channel specs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from immunoprofile import transforms as T
from immunoprofile.sample import Sample


def _sample(seed: int = 0, n: int = 20_011) -> Sample:
    rng = np.random.default_rng(seed)
    names = ["FSC-A", "SSC-A", "CD3", "CD4", "CD8", "CD19", "CD14", "Time"]
    kinds = ["scatter", "scatter"] + ["fluorescence"] * 5 + ["time"]
    ev = rng.lognormal(6.0, 2.5, (n, len(names))).astype(np.float32)
    ev[:, 2:7] *= rng.choice(np.float32([-1, 1]), (n, 5), p=[0.15, 0.85])
    ev[::97, 3] = np.nan
    ev[1::89, 4] = np.inf
    ev[2::83, 5] = -np.inf
    ev[3::79, 2:7] = 0.0
    ev[4::73, 6] = np.float32(1e-40)  # subnormal
    channels = pd.DataFrame(
        {
            "name": names,
            "marker": [None, None, "CD3", "CD4", "CD8", "CD19", "CD14", None],
            "range": [262144.0] * 7 + [65536.0],
            "bits": [32] * 8,
            "gain": [1.0] * 8,
            "log_decades": [0.0] * 8,
            "log_offset": [0.0] * 8,
            "kind": kinds,
        }
    )
    return Sample(events=np.ascontiguousarray(ev), channels=channels, keywords={}, path=None)


SPECS = [
    None,  # one logicle table for every fluorescence channel, linear scatter
    {"time": {"type": "linear", "t": 65536}},
    {
        "channels": {
            "CD3": {"type": "logicle", "t": 100000, "w": 0.7, "m": 4.5, "a": 0},
            "CD4": {"type": "hyperlog", "t": 262144, "w": 0.5, "m": 4.5, "a": 0},
            "CD8": "arcsinh",
            "CD19": {"type": "log", "t": 262144, "m": 5},
            "CD14": None,
        }
    },
]


@pytest.mark.parametrize("spec", SPECS)
def test_row_path_equals_column_path(spec, monkeypatch):
    s = _sample()
    per_channel = T.TransformSpec.from_dict(spec).resolve(s)
    rows = np.empty_like(s.events)
    assert T._transform_rows(s.events, per_channel, rows)  # the row path applies here
    cols = np.empty_like(s.events)
    T._transform_columns(s.events, per_channel, cols)
    np.testing.assert_array_equal(rows.view(np.uint32), cols.view(np.uint32))
    # and transform() itself gives them, with the column path forced too
    got = T.transform(s, spec).events
    monkeypatch.setattr(T, "_transform_rows", lambda *a: False)
    np.testing.assert_array_equal(got.view(np.uint32), T.transform(s, spec).events.view(np.uint32))
    untouched = [i for i in range(s.n_channels) if i not in per_channel]
    for i in untouched:
        np.testing.assert_array_equal(got[:, i], s.events[:, i])


def test_row_path_declines_many_tables():
    s = _sample(1, 500)
    spec = {
        "channels": {
            m: {"type": "logicle", "t": 262144 - 1000 * k, "w": 0.5, "m": 4.5, "a": 0}
            for k, m in enumerate(["CD3", "CD4", "CD8", "CD19", "CD14"])
        }
    }
    per_channel = T.TransformSpec.from_dict(spec).resolve(s)
    assert len({id(tr._table()) for tr in per_channel.values() if hasattr(tr, "_table")}) > 4
    assert not T._transform_rows(s.events, per_channel, np.empty_like(s.events))


@pytest.mark.parametrize("spec", [*SPECS, {"default": "arcsinh"}])
def test_overwrite_gives_the_same_values_in_the_input_array(spec):
    s = _sample(2)
    want = T.transform(s, spec).events
    own = s.with_events(s.events.copy())
    got = T.transform(own, spec, overwrite=True)
    assert got.events is own.events  # written in place
    np.testing.assert_array_equal(got.events.view(np.uint32), want.view(np.uint32))


def test_prepare_sample_transforms_its_own_compensated_array_in_place_only():
    from immunoprofile.compensation import compensate
    from immunoprofile.gating.engine import prepare_sample
    from immunoprofile.gating.template import load_template
    from immunoprofile.simulate import simulate_sample

    raw, _ = simulate_sample(events=3_000, seed=1)
    before = raw.events.copy()
    tpl = load_template("tregs")
    got = prepare_sample(raw, tpl)
    np.testing.assert_array_equal(raw.events, before)  # the caller's events untouched
    want = T.transform(compensate(raw, "file"), tpl.transforms).events
    np.testing.assert_array_equal(got.events, want)
    # an already compensated sample is transformed into a new array
    comp = compensate(raw, "file")
    comp_before = comp.events.copy()
    again = prepare_sample(comp, tpl)
    np.testing.assert_array_equal(comp.events, comp_before)
    np.testing.assert_array_equal(again.events, want)
