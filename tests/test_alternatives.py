"""Panel-flexible templates: each alternative of a gate, optional steps skipped, the record
of what a file used, and the one error that lists every missing marker."""

from __future__ import annotations

import numpy as np
import pytest

from immunoprofile.exceptions import MarkerNotFoundError, TemplateError
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.plan import plan_template
from immunoprofile.gating.template import load_template, validate_template
from immunoprofile.sample import Sample, make_channel_table

ALL = ["FSC-A", "FSC-H", "FSC-W", "SSC-A", "SSC-H", "Live", "CD14", "CD3", "Lineage", "CD56"]

TEMPLATE = {
    "name": "flex",
    "compensation": "none",
    "transforms": None,
    "populations": [
        {"name": "lym", "gate": {"type": "range", "dims": ["FSC-A"], "min": 0.1}},
        {
            "name": "singlets",
            "parent": "lym",
            "gate": {"type": "range", "dims": ["FSC-H"], "min": 0.2},
            "alternatives": [
                {"type": "range", "dims": ["FSC-W"], "max": 0.8},
                {"type": "rectangle", "dims": ["SSC-A", "SSC-H"], "min": [0.15, 0.25]},
            ],
            "optional": True,
        },
        {
            "name": "live",
            "parent": "singlets",
            "gate": {"type": "rectangle", "dims": ["Live", "CD14"], "max": [0.5, 0.6]},
            "alternatives": [{"type": "range", "dims": ["Live"], "max": 0.5}],
        },
        {
            "name": "nonT",
            "parent": "live",
            "gate": {"type": "range", "dims": ["CD3"], "max": 0.4},
            "alternatives": [{"type": "range", "dims": ["Lineage"], "max": 0.3}],
        },
        {"name": "NK", "parent": "nonT", "gate": {"type": "range", "dims": ["CD56"], "min": 0.5}},
        {
            "name": "notNK",
            "parent": "nonT",
            "gate": {"type": "boolean", "op": "not", "dims": ["NK"]},
        },
    ],
}


def _sample(channels, seed=0, n=4000):
    rng = np.random.default_rng(seed)
    ev = rng.random((n, len(channels))).astype(np.float32)
    markers = [c if c in ("Live", "CD14", "CD3", "Lineage", "CD56") else None for c in channels]
    s = Sample(ev, make_channel_table(channels, markers), name="flex")
    return s, {c: ev[:, i] for i, c in enumerate(channels)}


def _expected(x, singlets, live, nont):
    """The counts computed directly from the columns, for the gate each option means."""
    lym = x["FSC-A"] >= 0.1
    single = lym & singlets(x)
    lv = single & live(x)
    nt = lv & nont(x)
    nk = nt & (x["CD56"] >= 0.5)
    return {"lym": lym, "singlets": single, "live": lv, "nonT": nt, "NK": nk, "notNK": nt & ~nk}


def _check(res, want):
    for name, mask in want.items():
        if mask is None:
            assert name not in res.masks
        else:
            assert np.array_equal(res.masks[name], mask), name


@pytest.mark.parametrize(
    "drop, singlets, used",
    [
        ([], lambda x: x["FSC-H"] >= 0.2, ("gate", ["FSC-H"])),
        (["FSC-H"], lambda x: x["FSC-W"] < 0.8, ("alternative", ["FSC-W"])),
        (
            ["FSC-H", "FSC-W"],
            lambda x: (x["SSC-A"] >= 0.15) & (x["SSC-H"] >= 0.25),
            ("alternative", ["SSC-A", "SSC-H"]),
        ),
    ],
)
def test_singlet_alternatives(drop, singlets, used):
    chans = [c for c in ALL if c not in drop]
    s, x = _sample(chans)
    res = apply_template(s, validate_template(TEMPLATE))
    want = _expected(x, singlets, lambda x: (x["Live"] < 0.5) & (x["CD14"] < 0.6),
                     lambda x: x["CD3"] < 0.4)  # fmt: skip
    _check(res, want)
    rec = res.provenance["gating"]["singlets"]
    assert (rec["status"], rec["dims"]) == used
    assert rec["option"] == {"gate": 0}.get(used[0], len(drop))
    if drop:
        assert rec["reason"] == "the file lacks " + "; or ".join(drop)


def test_singlets_skipped_when_no_option_fits():
    s, x = _sample([c for c in ALL if c not in ("FSC-H", "FSC-W", "SSC-H")])
    res = apply_template(s, validate_template(TEMPLATE))
    want = _expected(x, lambda x: np.ones(len(x["FSC-A"]), bool),
                     lambda x: (x["Live"] < 0.5) & (x["CD14"] < 0.6),
                     lambda x: x["CD3"] < 0.4)  # fmt: skip
    want["singlets"] = None  # no row of its own: nothing was gated
    _check(res, want)
    assert res.template.population("live").parent == "lym"  # re-hung on the kept ancestor
    table = res.table().set_index("population")
    assert "singlets" not in table.index
    assert table.loc["live", "parent"] == "lym"
    assert table.loc["live", "parent_count"] == int(want["lym"].sum())
    rec = res.provenance["gating"]["singlets"]
    assert (
        rec["status"] == "skipped" and rec["reason"] == "the file lacks FSC-H; or FSC-W; or SSC-H"
    )
    flags = [q for q in res.qc if q["flag"] == "step_skipped"]
    assert flags == [{"population": "singlets", "flag": "step_skipped", "detail": rec["reason"]}]


def test_monocyte_exclusion_without_cd14_and_lineage_instead_of_cd3():
    s, x = _sample([c for c in ALL if c not in ("CD14", "CD3")], seed=3)
    res = apply_template(s, validate_template(TEMPLATE))
    want = _expected(x, lambda x: x["FSC-H"] >= 0.2, lambda x: x["Live"] < 0.5,
                     lambda x: x["Lineage"] < 0.3)  # fmt: skip
    _check(res, want)
    gating = res.provenance["gating"]
    assert gating["live"] == {
        "status": "alternative", "option": 1, "dims": ["Live"], "reason": "the file lacks CD14",
    }  # fmt: skip
    assert gating["nonT"]["dims"] == ["Lineage"] and gating["NK"]["status"] == "gate"


def test_one_error_lists_every_missing_marker_per_population():
    s, _ = _sample(["FSC-A", "FSC-H", "SSC-A", "CD14", "CD56", "CD19"])
    with pytest.raises(MarkerNotFoundError) as info:
        apply_template(s, validate_template(TEMPLATE))
    msg = str(info.value)
    assert "template 'flex' needs markers this file lacks (CD3, Lineage, Live)" in msg
    assert "\n  live: Live\n" in msg  # the same lack in both options, said once
    assert "\n  nonT: CD3; or Lineage\n" in msg
    # NK's own marker is there, but its parent cannot be gated; notNK depends on NK
    assert "cannot gate: NK (its parent nonT cannot be gated)" in msg
    assert "notNK" in msg
    assert "Markers in this file: CD14 (CD14), CD56 (CD56)." in msg
    assert "Channels: FSC-A, FSC-H, SSC-A, CD14, CD56, CD19." in msg


def test_plan_reports_without_events():
    s, _ = _sample([c for c in ALL if c not in ("FSC-H", "CD3")])
    plan = plan_template(s.subset(np.zeros(s.n_events, bool)), validate_template(TEMPLATE))
    assert plan.ok
    assert plan.summary() == ("singlets: FSC-W (alternative 1); nonT: Lineage (alternative 1)")
    assert plan.columns["Lineage"] == s.channel_names.index("Lineage")


def test_alternatives_round_trip_and_boolean_refused():
    t = validate_template(TEMPLATE)
    again = validate_template(t.to_dict())
    assert again.population("singlets").optional
    assert [g.dims for g in again.population("singlets").alternatives] == [
        ("FSC-W",), ("SSC-A", "SSC-H"),
    ]  # fmt: skip
    assert "Lineage" in t.markers() and "FSC-W" in t.markers()
    assert "; else FSC-W" in t.tree() and "else skipped" in t.tree()
    bad = {
        **TEMPLATE,
        "populations": [
            *TEMPLATE["populations"],
            {
                "name": "x",
                "parent": "nonT",
                "gate": {"type": "boolean", "op": "not", "dims": ["NK"]},
                "alternatives": [{"type": "range", "dims": ["CD56"], "min": 0}],
            },
        ],
    }
    with pytest.raises(TemplateError, match="boolean gate cannot have alternatives"):
        validate_template(bad)
    with pytest.raises(TemplateError, match=r"alternatives\[0\]"):
        validate_template(
            {
                **TEMPLATE,
                "populations": [
                    {
                        "name": "lym",
                        "gate": {"type": "range", "dims": ["FSC-A"], "min": 0.1},
                        "alternatives": [{"type": "range", "dims": ["FSC-A"], "bogus": 1}],
                    }
                ],
            }
        )


@pytest.mark.parametrize("name", ["b_cells", "nk_cells", "tregs", "th17", "immune_profile"])
def test_builtin_trunk_has_the_alternatives(name):
    t = load_template(name)
    assert t.compensation == "auto"
    sg = t.population("singlets")
    assert sg.optional and [g.dims for g in sg.options] == [
        ("FSC-A", "FSC-H"), ("FSC-W",), ("SSC-A", "SSC-H"),
    ]  # fmt: skip
    assert [g.dims for g in t.population("live").options] == [("Viability", "CD14"), ("Viability",)]


def _check_inputs(folder):
    """The template of this module as a JSON file and two files to check against it: one
    lacking FSC-H and CD3 (alternatives stand in), one lacking CD3, Lineage and Live."""
    import json

    from immunoprofile.io.write import write_fcs

    good, _ = _sample([c for c in ALL if c not in ("FSC-H", "CD3")])
    bad, _ = _sample(["FSC-A", "FSC-H", "SSC-A", "CD14", "CD56"])
    files = [str(write_fcs(good, folder / "good.fcs")), str(write_fcs(bad, folder / "bad.fcs"))]
    tpl = folder / "flex.json"
    tpl.write_text(json.dumps(TEMPLATE))
    return files, tpl


def test_templates_check_cli(tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    files, tpl = _check_inputs(tmp_path)
    runner = CliRunner()
    r = runner.invoke(main, ["templates", "check", str(tpl), files[0]])
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "singlets" in out and "FSC-W (alternative 1); the file lacks FSC-H" in out
    assert "Lineage (alternative 1); the file lacks CD3" in out
    assert "ready: 6 of 6 populations will be gated, 0 optional step(s) skipped" in out
    assert "compensation: none -> off" in out
    r = runner.invoke(main, ["templates", "check", str(tpl), *files, str(tmp_path / "no.fcs")])
    assert r.exit_code == 1
    out = " ".join(r.output.split())
    assert "needs markers this file lacks (CD3, Lineage, Live)" in out
    assert "no.fcs" in out and "2 problem(s) in 3 file(s)" in out
    r = runner.invoke(main, ["templates", "show", str(tpl)])
    assert "else FSC-W; else SSC-A, SSC-H; else skipped" in " ".join(r.output.split())


def test_check_template_api_is_what_templates_check_prints(tmp_path):
    import immunoprofile as ip

    files, tpl = _check_inputs(tmp_path)
    chk = ip.check_template(str(tpl), [*files, str(tmp_path / "no.fcs")])
    assert [f.file for f in chk.files] == [*files, str(tmp_path / "no.fcs")]
    first, second, third = chk.files
    assert first.ok and first.n_gated == 6 and first.problems == []
    assert (first.compensation.mode, first.compensation.status) == ("none", "off")
    steps = first.steps().set_index("population")
    assert steps.loc["singlets", "status"] == "alternative"
    assert steps.loc["singlets", "detail"] == "FSC-W (alternative 1); the file lacks FSC-H"
    assert list(steps.index) == chk.template.names
    # the second file lacks essential markers: one problem naming them all
    assert not second.ok and len(second.problems) == 1
    assert "needs markers this file lacks (CD3, Lineage, Live)" in second.problems[0]
    assert third.plan is None and "no.fcs" in third.error
    assert chk.n_problems == 2 and not chk.ok
    table = chk.table()
    assert list(table.columns) == ["file", "population", "parent", "status", "detail"]
    assert len(table) == 2 * len(chk.template.names)  # the unreadable file has no rows
    assert set(table.loc[table["file"] == files[1], "status"]) >= {"missing"}
    # a compensation mode that cannot apply is a problem of the file, not a crash
    nofile = ip.check_template(str(tpl), files[:1], compensation=str(tmp_path / "no.csv"))
    assert nofile.n_problems == 1 and "no.csv" in nofile.files[0].compensation_error
