"""Library contracts: scikit-learn's estimator API for adaptive gates, a typed public API
for IDEs and type checkers, and BH q-values from scipy."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

import immunoprofile
from immunoprofile.gating.adaptive import ADAPTIVE_TYPES, AdaptiveGate
from immunoprofile.gating.template import load_template


def _adaptive_gates():
    for name in ("immune_profile", "tregs", "th17", "b_cells", "nk_cells"):
        for pop in load_template(name).populations:
            if isinstance(pop.gate, AdaptiveGate):
                yield f"{name}:{pop.name}", pop.gate


def test_every_builtin_adaptive_gate_survives_sklearn_clone():
    from sklearn.base import clone

    seen = set()
    for where, g in _adaptive_gates():
        c = clone(g)
        assert type(c) is type(g) and c is not g, where
        assert c.get_params() == g.get_params(), where
        seen.add(type(g).__name__)
    assert len(seen) >= 5  # the templates use most gate types


def test_clone_gives_an_unfitted_copy_that_fits_to_the_same_place():
    from sklearn.base import clone

    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0.2, 0.05, 3000), rng.normal(0.7, 0.05, 2000)])
    g = ADAPTIVE_TYPES["density_min"](dims=("CD3",))
    fitted = g.fit(x)
    c = clone(fitted)
    assert c.get_params() == g.get_params()
    assert getattr(c, "gate_", None) is None  # unfitted
    assert 0.3 < fitted.threshold_ < 0.6
    assert c.fit(x).threshold_ == fitted.threshold_ and c.gate_ == fitted.gate_


def test_set_params_checks_like_init():
    from immunoprofile.exceptions import TemplateError

    g = ADAPTIVE_TYPES["quantile"](dims=("CD3",), q=0.5)
    assert g.set_params(q=0.9) is g and g.get_params()["q"] == 0.9
    with pytest.raises(TemplateError, match="unknown parameter"):
        g.set_params(nope=1)


def test_public_names_are_visible_to_type_checkers():
    """Every lazily loaded public name is imported under TYPE_CHECKING from the module the
    lazy table names, and that module defines it."""
    src = Path(immunoprofile.__file__).read_text()
    tree = ast.parse(src)
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                for alias in imp.names:
                    typed[alias.name] = imp.module
    assert typed == immunoprofile._LAZY
    assert sorted(immunoprofile.__all__) == sorted([*immunoprofile._LAZY, "__version__"])
    for name, module in typed.items():
        assert hasattr(importlib.import_module(module), name), name
    assert (Path(immunoprofile.__file__).parent / "py.typed").is_file()


def test_bh_equals_scipy_false_discovery_control_with_missing_values():
    from immunoprofile import stats

    p = np.array([0.01, np.nan, 0.04, 0.03, 0.2, 0.5])
    q = stats.benjamini_hochberg(p)
    ok = np.isfinite(p)
    np.testing.assert_allclose(q[ok], st.false_discovery_control(p[ok], method="bh"))
    assert np.isnan(q[1])
    # hand-worked: sorted p 0.01, 0.03, 0.04, 0.2, 0.5 (m = 5): 5p/rank = .05, .075,
    # .0667, .25, .5; running minimum from the top: .05, .0667, .0667, .25, .5
    np.testing.assert_allclose(q[ok], [0.05, 0.2 / 3, 0.2 / 3, 0.25, 0.5])
