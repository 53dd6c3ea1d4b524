"""Gating-ML through the one template engine: `import-gates` of each ISAC compliance-suite
file, then the template engine (the one `gate` uses) reproduces the truth event for event.

The suite (MANIFEST.md section A) lives in ../shared/realdata and is used read-only; the
tests that need it skip when it is absent. The gate file -> gate id -> truth file mapping
is `test_gatingml.SUITE`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_gatingml import ALL_GATES, SUITE, truth

from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import validate_template
from immunoprofile.interop.gatingml import read_gatingml, strategy_to_template
from immunoprofile.io.fcs import read_fcs
from immunoprofile.sample import Sample, make_channel_table

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite(realdata):
    root = realdata / "FlowKit" / "data" / "gate_ref"
    if not (root / "data1.fcs").is_file():
        pytest.skip(f"ISAC Gating-ML compliance suite not found under {root}")
    return root


@pytest.fixture(scope="module")
def data1(suite):
    """data1.fcs read as `gate` reads it (scaled, float32)."""
    return read_fcs(suite / "data1.fcs")


def _masks_by_gate(template: dict, sample: Sample) -> dict[str, np.ndarray]:
    res = apply_template(sample, validate_template(template), min_events=0)
    return {
        p["description"].removeprefix("Gating-ML gate "): res.masks[p["name"]]
        for p in template["populations"]
    }


@pytest.mark.parametrize("gml", sorted(SUITE))
def test_each_suite_file_through_a_template(suite, data1, gml):
    tmpl = strategy_to_template(read_gatingml(suite / "gml" / gml), Path(gml).stem)
    json.dumps(tmpl)  # a plain JSON template
    masks = _masks_by_gate(tmpl, data1)
    for gid, stem in SUITE[gml]:
        np.testing.assert_array_equal(masks[gid], truth(suite, stem), err_msg=f"{gml} {gid}")


def test_all_gates_through_a_template(suite, data1):
    tmpl = strategy_to_template(read_gatingml(suite / "gml" / "gml_all_gates.xml"), "all")
    masks = _masks_by_gate(tmpl, data1)
    wrong = [g for g in ALL_GATES if not np.array_equal(masks[g], truth(suite, g))]
    assert wrong == [] and len(ALL_GATES) == 49


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "immunoprofile", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def test_cli_import_gates_then_gate_all_gates(suite, tmp_path):
    # as a user types it: import-gates gml_all_gates.xml, then gate data1.fcs with it
    r = _cli(
        "import-gates", str(suite / "gml" / "gml_all_gates.xml"), "--out", "t.json", cwd=tmp_path
    )
    assert r.returncode == 0, r.stderr
    r = _cli("gate", "--template", "t.json", str(suite / "data1.fcs"), "--out", "res", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table = pd.read_csv(tmp_path / "res" / "populations.csv")
    tmpl = json.loads((tmp_path / "t.json").read_text())
    name_of = {
        p["description"].removeprefix("Gating-ML gate "): p["name"] for p in tmpl["populations"]
    }
    got = table.set_index("population")["count"]
    for gid in ALL_GATES:
        assert got[name_of[gid]] == truth(suite, gid).sum(), gid


def test_ratio_gate_through_a_template_hand_worked():
    # ratio a * (x - b) / (y - c) with a = 2, b = 1, c = -1, then gated on [1, 3)
    x = np.array([1.0, 2.0, 3.0, 5.0, 9.0], dtype=np.float32)
    y = np.array([1.0, 1.0, 0.0, 1.0, 3.0], dtype=np.float32)
    # ratios: 0, 1, 4, 4, 4  -> in [1, 3): only event 1
    s = Sample(np.column_stack([x, y]), make_channel_table(["FL1-A", "FL2-A"]))
    tmpl = {
        "name": "ratio",
        "compensation": "none",
        "transforms": None,
        "dimensions": {
            "r": {"ratio": {"numerator": "FL1-A", "denominator": "FL2-A", "a": 2, "b": 1, "c": -1}}
        },
        "populations": [
            {"name": "mid", "gate": {"type": "range", "dims": ["r"], "min": 1, "max": 3}},
            {"name": "low", "gate": {"type": "range", "dims": ["r"], "max": 1}},
        ],
    }
    res = apply_template(s, tmpl, min_events=0)
    assert res.masks["mid"].tolist() == [False, True, False, False, False]
    assert res.masks["low"].tolist() == [True, False, False, False, False]
    assert res.fitted["mid"]["channels"] == ["r"]


def test_derived_dimension_with_its_own_matrix_and_transform():
    # two dimensions on the same channel: compensated by a template matrix and not
    x = np.array([[100.0, 10.0], [100.0, 60.0], [40.0, 50.0]], dtype=np.float32)
    s = Sample(x, make_channel_table(["FL1-A", "FL2-A"]))
    spill = [[1.0, 0.5], [0.0, 1.0]]  # FL1 spills 50 % into FL2
    tmpl = validate_template(
        {
            "name": "m",
            "compensation": "none",
            "matrices": {
                "S": {"fluorochromes": ["A", "B"], "detectors": ["FL1-A", "FL2-A"], "matrix": spill}
            },
            "dimensions": {
                "B_comp": {"channel": "B", "compensation": "S"},
                "FL2_log": {"channel": "FL2-A", "transform": {"type": "flog", "t": 100, "m": 2}},
            },
            "populations": [
                # unmixed B = FL2 - 0.5 * FL1: -40, 10, 30
                {"name": "Bpos", "gate": {"type": "range", "dims": ["B_comp"], "min": 0}},
                # log10(FL2 / 100) / 2 + 1: 0.5, 0.889, 0.849
                {"name": "hi", "gate": {"type": "range", "dims": ["FL2_log"], "min": 0.85}},
            ],
        }
    )
    assert tmpl.markers() == ["FL1-A", "FL2-A"]
    res = apply_template(s, tmpl, min_events=0)
    assert res.masks["Bpos"].tolist() == [False, True, True]
    assert res.masks["hi"].tolist() == [False, True, False]
    # and the JSON form round-trips
    again = validate_template(tmpl.to_dict())
    assert again.dimensions == tmpl.dimensions and again.matrices == tmpl.matrices


def test_derived_dimensions_refuse_a_processed_sample():
    from immunoprofile.exceptions import GatingError
    from immunoprofile.transforms import transform

    s = Sample(np.ones((3, 1), np.float32), make_channel_table(["FL1-A"]))
    done = transform(s, {"default": {"type": "linear", "t": 10, "a": 0}})
    tmpl = {
        "name": "d",
        "compensation": "none",
        "transforms": None,
        "dimensions": {"l": {"channel": "FL1-A"}},
        "populations": [{"name": "p", "gate": {"type": "range", "dims": ["l"], "min": 0}}],
    }
    with pytest.raises(GatingError, match="already processed"):
        apply_template(done, tmpl)


def test_derived_dimensions_export_to_gatingml_and_back(suite, data1):
    # gml_all_gates as a template (ratios, matrices, several scales per channel), gated,
    # exported with export-gates' writer, re-imported: the same events; flowkit agrees
    import io

    from immunoprofile.interop.gatingml import strategy_from_result, write_gatingml

    tmpl = validate_template(
        strategy_to_template(read_gatingml(suite / "gml" / "gml_all_gates.xml"), "all")
    )
    res = apply_template(data1, tmpl, min_events=0)
    xml = write_gatingml(strategy_from_result(res))
    again = validate_template(strategy_to_template(read_gatingml(xml.encode()), "again"))
    res2 = apply_template(read_fcs(suite / "data1.fcs"), again, min_events=0)
    assert {k: int(m.sum()) for k, m in res.masks.items()} == {
        k: int(m.sum()) for k, m in res2.masks.items()
    }
    for g in ALL_GATES:
        np.testing.assert_array_equal(res2.masks[g], truth(suite, g), err_msg=g)
    fk = pytest.importorskip("flowkit")
    report = (
        fk.parse_gating_xml(io.BytesIO(xml.encode()))
        .gate_sample(fk.Sample(str(suite / "data1.fcs")))
        .report
    )
    theirs = dict(zip(report["gate_name"], report["count"]))
    assert all(int(theirs[g]) == int(res.masks[g].sum()) for g in ALL_GATES)
