"""The prepare step (compensation + transforms) that gating and clustering share."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile import transforms as T
from immunoprofile.compensation import Spillover, compensate
from immunoprofile.gating.engine import prepare_sample
from immunoprofile.gating.template import load_template
from immunoprofile.prepare import prepare
from immunoprofile.sample import Sample, make_channel_table

SPILL = "2,FITC-A,PE-A,1,0.2,0.05,1"


def _sample(keywords=None) -> Sample:
    ev = np.array([[100.0, 1000.0, 500.0], [200.0, 50.0, 800.0]], dtype=np.float32)
    names = ["FSC-A", "FITC-A", "PE-A"]
    return Sample(ev, make_channel_table(names, [None, "CD4", "CD25"]), dict(keywords or {}))


def test_keyword_spillover_is_inverted_by_hand():
    s = _sample({"$SPILLOVER": SPILL})
    got = prepare(s, compensation="auto").events
    # X_true = X @ inv(S) on the fluorescence columns, worked for 2x2: inv([[1,.2],[.05,1]])
    det = 1 - 0.2 * 0.05
    inv = np.array([[1, -0.2], [-0.05, 1]]) / det
    want = s.events[:, 1:].astype(np.float64) @ inv
    np.testing.assert_allclose(got[:, 1:], want, rtol=1e-6)
    np.testing.assert_array_equal(got[:, 0], s.events[:, 0])  # scatter untouched
    step = [h for h in prepare(s).history if h.get("step") == "compensation"][0]
    assert step["status"] == "applied"


def test_none_and_an_explicit_spillover():
    s = _sample({"$SPILLOVER": SPILL})
    np.testing.assert_array_equal(prepare(s, compensation="none").events, s.events)
    np.testing.assert_array_equal(prepare(s, compensation=None).events, s.events)
    sp = Spillover(["FITC-A", "PE-A"], np.array([[1.0, 0.5], [0.0, 1.0]]), source="own")
    got = prepare(s, compensation=sp).events
    np.testing.assert_allclose(got[:, 2], s.events[:, 2] - 0.5 * s.events[:, 1], rtol=1e-6)


def test_transforms_follow_compensation_and_are_done_once():
    s = _sample({"$SPILLOVER": SPILL})
    spec = {"default": "arcsinh"}
    got = prepare(s, transforms=spec)
    want = T.transform(compensate(s, "file"), spec).events
    np.testing.assert_array_equal(got.events, want)
    # a prepared sample comes back as it is: neither step runs twice
    again = prepare(got, transforms=spec)
    np.testing.assert_array_equal(again.events, got.events)
    assert [h["step"] for h in again.history].count("transform") == 1


def test_gating_adapter_and_template_preparation_agree():
    from immunoprofile.simulate import simulate_sample

    raw, _ = simulate_sample(events=2_000, seed=3)
    tpl = load_template("tregs")
    kw = tpl.preparation()
    assert kw["compensation"] == tpl.compensation and kw["transforms"] == tpl.transforms
    np.testing.assert_array_equal(prepare_sample(raw, tpl).events, prepare(raw, **kw).events)
    assert tpl.preparation("none")["compensation"] == "none"


def test_clustering_prepares_without_the_gating_engine():
    import ast
    from pathlib import Path

    import immunoprofile.clustering.api as api

    tree = ast.parse(Path(api.__file__).read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "immunoprofile.prepare" in mods
    src = Path(api.__file__).read_text()
    assert "prepare_sample" not in src


@pytest.mark.parametrize("mode", ["keyword", "file"])
def test_keyword_mode_without_keyword_is_an_error(mode):
    from immunoprofile.exceptions import CompensationError

    with pytest.raises(CompensationError, match="no spillover keyword"):
        prepare(_sample(), compensation=mode)
