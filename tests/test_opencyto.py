"""openCyto CSV templates -> immunoprofile templates: the real HIPC/openCyto templates
(read-only, from ../shared/realdata/openCyto) and hand-written rows for each rule."""

from __future__ import annotations

import pytest

from immunoprofile.gating.template import validate_template
from immunoprofile.interop.opencyto import (
    UnsupportedMethodError,
    opencyto_to_template,
    parse_args,
)

HEADER = "alias,pop,parent,dims,gating_method,gating_args,collapseDataForGating,groupBy,preprocessing_method,preprocessing_args\n"


@pytest.fixture(scope="module")
def ocdir(realdata):
    d = realdata / "openCyto" / "inst" / "extdata" / "gating_template"
    if not d.is_dir():
        pytest.skip(f"openCyto templates not found under {d}")
    return d


def _csv(tmp_path, body: str, name: str = "t.csv"):
    p = tmp_path / name
    p.write_text(HEADER + body)
    return p


def _pops(t):
    return {p["name"]: p for p in t["populations"]}


def test_parse_args():
    a = parse_args("K = 2, target = c(1e5, 5e4), transitional = TRUE, q='x'")
    assert a == {"K": 2, "target": [100000.0, 50000.0], "transitional": True, "q": "x"}


def test_treg_template(ocdir):
    t = opencyto_to_template(ocdir / "treg.csv")
    tmpl = validate_template(t)
    p = _pops(t)
    assert len(tmpl.populations) == 27  # 19 rows, +/- and +/-+/- expanded
    assert p["boundary"]["gate"] == {
        "type": "rectangle",
        "dims": ["FSC-A", "SSC-A"],
        "min": [None, None],
        "max": [250000, 250000],
    }
    # instrument-specific scatter ranges are dropped (noted) unless asked for
    assert "search" not in p["nonDebris"]["gate"]
    assert "gate_range" in p["nonDebris"]["description"]
    assert p["nonDebris"]["gate"]["adjust"] == 1.5
    kept = _pops(opencyto_to_template(ocdir / "treg.csv", keep_ranges=True))
    assert kept["nonDebris"]["gate"]["search"] == [50000.0, 100000.0]
    assert t["transforms"] == {"scatter": None}  # scatter in instrument units
    assert p["lymph"]["gate"]["type"] == "blob"
    assert p["Live"]["gate"] == {"type": "tail", "dims": ["Live"], "side": "-", "tol": 0.05}
    assert "Viability" in t["aliases"]["Live"]
    # the transitional flowClust gate reused on CD4 by refGate: CD25 high, CD127 low
    treg = p["CD25+CD127-"]
    assert treg["parent"] == "CD4"
    assert treg["gate"]["type"] == "hilo" and treg["gate"]["signs"] == ["+", "-"]
    # +/-+/- from a refGate of two sibling 1-D gates: an exact boolean
    q = p["CCR4-CD45RO+"]["gate"]
    assert q == {
        "type": "boolean",
        "dims": ["CCR4+", "CD45RO+"],
        "op": "and",
        "complement": [True, False],
    }
    assert p["Total"]["gate"] == {
        "type": "boolean",
        "dims": ["Memory", "Naive"],
        "op": "or",
        "complement": [False, False],
    }


def test_bcell_template(ocdir):
    t = opencyto_to_template(ocdir / "bcell.csv")
    validate_template(t)
    p = _pops(t)
    # refGate CD27gate:IgDgate on dims IgD,CD27 pairs each gate with its own channel
    assert p["IgD+CD27-"]["gate"]["dims"] == ["IgDgate", "CD27gate"]
    assert p["IgD+CD27-"]["gate"]["complement"] == [False, True]
    # CD3 (+-) from CD3gate (-) and CD19gate (+): both complemented
    assert p["CD3"]["gate"]["complement"] == [True, True]
    assert p["CD19notCD20"]["gate"] == {
        "type": "boolean",
        "dims": ["CD19", "CD20"],
        "op": "and",
        "complement": [False, True],
    }
    assert p["Transitional"]["gate"]["signs"] == ["+", "+"]
    # CD20gate lives under CD3gate: the CD20 quadrant is refitted on Live (noted)
    assert p["CD20"]["gate"]["type"] == "thresholds"
    assert "refitted" in p["CD20"]["description"]


@pytest.mark.parametrize("name", ["tcell.csv", "ICS.csv", "testGatingTemplate.csv"])
def test_other_supported_templates_validate(ocdir, name):
    tmpl = validate_template(opencyto_to_template(ocdir / name))
    assert len(tmpl.populations) >= 10


def test_tcell_expansion_and_paths(ocdir):
    p = _pops(opencyto_to_template(ocdir / "tcell.csv"))
    for q in ("cd4+cd8-", "cd4-cd8+", "cd4+cd8+", "cd4-cd8-"):
        assert p[q]["gate"]["type"] == "thresholds"
    assert p["cd4+cd8-"]["gate"]["signs"] == ["+", "-"]
    # the same quadrant names under two parents get unique, path-prefixed names
    assert p["cd4-cd8+_CCR7+CD45RA+"]["parent"] == "cd4-cd8+"
    assert p["CCR7+CD45RA+"]["parent"] == "cd4+cd8-"
    # a fluorescence gate_range on R's scale is dropped, with a note
    assert "search" not in p["cd3"]["gate"]


@pytest.mark.parametrize(
    "name,methods", [("ICS_080.csv", "cytokine"), ("ITN_Newell.csv", "cytokine")]
)
def test_unsupported_methods_named(ocdir, name, methods):
    with pytest.raises(UnsupportedMethodError, match=methods) as exc:
        opencyto_to_template(ocdir / name)
    assert "line 9 'cd27gate'" in str(exc.value) or "line 12 'cd4neg'" in str(exc.value)


def test_handwritten_rules(tmp_path):
    body = (
        'lymph,+,root,"FSC-A,SSC-A",flowClust,"K = 2",,,,\n'
        "*,+/-,lymph,CD3,mindensity,,,,,\n"
        "q,+,CD3+,CD4,quantileGate,probs = 0.9,,,,\n"
        "tb,+,CD3+,,boolGate,!q,,,,\n"
    )
    t = opencyto_to_template(_csv(tmp_path, body))
    validate_template(t)
    p = _pops(t)
    assert p["CD3-"]["gate"] == {"type": "density_min", "dims": ["CD3"], "side": "-"}
    assert p["q"]["gate"] == {"type": "quantile", "q": 0.9, "side": "+", "dims": ["CD4"]}
    assert p["tb"]["gate"] == {"type": "boolean", "dims": ["q"], "op": "not"}


def test_errors(tmp_path):
    with pytest.raises(
        UnsupportedMethodError, match="line 2 'a': 'flowDensity'.*line 3 'b': 'cytokine'"
    ):
        opencyto_to_template(
            _csv(tmp_path, "a,+,root,CD3,flowDensity,,,,,\nb,+,a,CD4,cytokine,,,,,\n")
        )
    with pytest.raises(Exception, match="no population 'nowhere'"):
        opencyto_to_template(_csv(tmp_path, "a,+,nowhere,CD3,mindensity,,,,,\n"))
    with pytest.raises(UnsupportedMethodError, match="mixes & and"):
        opencyto_to_template(
            _csv(
                tmp_path,
                "a,+,root,CD3,mindensity,,,,,\nb,+,root,CD4,mindensity,,,,,\nc,+,root,,boolGate,a&b|a,,,,\n",
            )
        )
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(Exception, match="not an openCyto template"):
        opencyto_to_template(bad)


def test_cli_import_gates_csv(ocdir, tmp_path):
    import json

    from click.testing import CliRunner

    from immunoprofile.cli import main

    out = tmp_path / "treg.json"
    r = CliRunner().invoke(main, ["import-gates", str(ocdir / "treg.csv"), "--out", str(out)])
    assert r.exit_code == 0, r.output
    t = json.loads(out.read_text())
    assert len(t["populations"]) == 27 and "27 populations" in r.output
    r = CliRunner().invoke(
        main, ["import-gates", str(ocdir / "ICS_080.csv"), "--out", str(tmp_path / "x.json")]
    )
    assert r.exit_code == 1 and "cytokine" in r.output
    assert not (tmp_path / "x.json").exists()


def test_imported_hipc_templates_gate_simulated_truth(ocdir):
    """HIPC treg.csv and bcell.csv, pruned to the simulator's panel, against per-event
    truth (benchmarks/bench_opencyto_import.py runs more samples)."""
    import numpy as np

    from immunoprofile.gating.engine import apply_template
    from immunoprofile.interop.opencyto import prune_template
    from immunoprofile.simulate.biology import truth_mask
    from immunoprofile.simulate.cohort import simulate_sample

    def f1(pred, truth):
        return 2 * np.count_nonzero(pred & truth) / (pred.sum() + truth.sum())

    sample, labels = simulate_sample(events=20_000, seed=101)
    treg, dropped = prune_template(opencyto_to_template(ocdir / "treg.csv"), sample)
    assert "CCR4+" in dropped and "CD25+CD127-" not in dropped
    res = apply_template(sample, treg)
    assert f1(res.masks["CD4"], truth_mask(labels, "CD4")) > 0.95
    assert f1(res.masks["CD25+CD127-"], truth_mask(labels, "Treg")) > 0.85
    bcell, dropped = prune_template(opencyto_to_template(ocdir / "bcell.csv"), sample)
    assert dropped == []
    res = apply_template(sample, bcell)
    assert f1(res.masks["CD19"], truth_mask(labels, "B")) > 0.93
    assert f1(res.masks["IgD+CD27-"], truth_mask(labels, "B_naive")) > 0.9
