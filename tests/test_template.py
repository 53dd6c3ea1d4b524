"""Template JSON Schema, loader, semantic errors and the built-in templates."""

from __future__ import annotations

import copy
import json

import pytest

from immunoprofile.exceptions import TemplateError
from immunoprofile.gating.adaptive import AdaptiveGate, DensityMinimumGate
from immunoprofile.gating.gates import BooleanGate, RangeGate
from immunoprofile.gating.template import (
    Template,
    list_templates,
    load_template,
    template_schema,
    validate_template,
)

BASE = {
    "name": "small",
    "description": "a small test template",
    "compensation": "none",
    "transforms": None,
    "populations": [
        {"name": "A", "parent": None, "gate": {"type": "range", "dims": ["CD3"], "min": 0.5}},
        {"name": "B", "parent": "A", "gate": {"type": "density_min", "dims": ["CD4"], "side": "+"}},
        {"name": "C", "parent": "A", "gate": {"type": "density_min", "dims": ["CD4"], "side": "-"}},
        {
            "name": "notB",
            "parent": "A",
            "gate": {
                "type": "boolean",
                "op": "and",
                "dims": ["A", "B"],
                "complement": [False, True],
            },
        },
    ],
}


def make(**changes):
    obj = copy.deepcopy(BASE)
    obj.update(changes)
    return obj


def test_valid_template_builds_gates_and_orders_populations():
    t = validate_template(BASE)
    assert isinstance(t, Template)
    assert t.names == ["A", "B", "C", "notB"]
    assert isinstance(t.population("A").gate, RangeGate)
    assert isinstance(t.population("B").gate, DensityMinimumGate)
    assert isinstance(t.population("notB").gate, BooleanGate)
    assert [p.name for p in t.children("A")] == ["B", "C", "notB"]
    assert t.markers() == ["CD3", "CD4"]
    assert t.compensation == "none" and t.transforms is None
    assert t.reference_population is None


def test_children_listed_before_parents_are_reordered():
    obj = make(populations=list(reversed(BASE["populations"])))
    t = validate_template(obj)
    pos = {n: i for i, n in enumerate(t.names)}
    assert pos["A"] < pos["B"] < pos["notB"]


def test_to_dict_round_trip():
    t = validate_template(BASE)
    again = validate_template(json.loads(json.dumps(t.to_dict())))
    assert again.to_dict() == t.to_dict()


def test_tree_shows_hierarchy():
    tree = validate_template(BASE).tree().splitlines()
    assert tree[0] == "small: a small test template"
    assert tree[1] == "  A  [range] CD3"
    assert tree[2] == "    B  [adaptive density_min] CD4+"
    assert tree[4] == "    notB  [boolean] A and not B"


@pytest.mark.parametrize(
    "mutate, msg",
    [
        (lambda o: o["populations"][1].update(parent="X"), "unknown parent 'X'"),
        (lambda o: o["populations"][1].update(parent="a"), "did you mean 'A'"),
        (lambda o: o["populations"][2].update(name="B"), "duplicate population name 'B'"),
        (
            lambda o: o["populations"][0].update(parent="C"),
            "cycle in the gating hierarchy: A -> C -> A",
        ),
        (
            lambda o: o["populations"][1]["gate"].update(type="blobby"),
            "populations[1] (B).gate.type",
        ),
        (lambda o: o["populations"][1]["gate"].update(bandwidth=3), "no field(s) ['bandwidth']"),
        (lambda o: o["populations"][0]["gate"].update(colour=1), "unknown field(s) ['colour']"),
        (lambda o: o["populations"][3]["gate"].update(dims=["A", "Z"]), "unknown population 'Z'"),
        (lambda o: o["populations"][1]["gate"].pop("dims"), "'dims' is a required property"),
        (lambda o: o["populations"][1].update(colour="red"), "Additional properties"),
        (lambda o: o.pop("populations"), "'populations' is a required property"),
        (lambda o: o.update(reference="Q"), "reference population 'Q'"),
        (
            lambda o: o["populations"][1]["gate"].update(search=[1]),
            "populations[1] (B).gate.search",
        ),
    ],
)
def test_semantic_and_schema_errors(mutate, msg):
    obj = make()
    mutate(obj)
    with pytest.raises(TemplateError) as info:
        validate_template(obj)
    assert msg in str(info.value)


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "populations": [}')
    with pytest.raises(TemplateError, match=r"bad\.json: not valid JSON \(line 1"):
        load_template(bad)
    obj = make()
    obj["populations"][1]["parent"] = "nope"
    p = tmp_path / "t.json"
    p.write_text(json.dumps(obj))
    with pytest.raises(TemplateError, match=r"t\.json: populations\[1\] \(B\): unknown parent"):
        load_template(p)
    with pytest.raises(TemplateError, match="neither a file nor a built-in template; built-ins: "):
        load_template("no_such_template")


def test_load_by_path_wins_and_records_source(tmp_path):
    p = tmp_path / "tregs.json"
    p.write_text(json.dumps(make(name="mine")))
    t = load_template(p)
    assert t.name == "mine" and t.source == p


def test_schema_is_valid_json_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(template_schema())


BUILTINS = ["b_cells", "immune_profile", "nk_cells", "th17", "tregs"]


def test_builtin_templates_listed_and_load():
    names = list_templates()
    for name in BUILTINS:
        assert name in names
        t = load_template(name)
        assert t.name == name
        assert load_template(f"{name}.json").to_dict() == t.to_dict()
        assert any(isinstance(p.gate, AdaptiveGate) for p in t.populations)
        assert t.populations[0].name == "lymphocytes"


def test_builtin_hierarchies_follow_design():
    def chain(t, name):
        out = []
        while name is not None:
            out.append(name)
            name = t.population(name).parent
        return out[::-1]

    t = load_template("tregs")
    assert chain(t, "Treg_FOXP3") == [
        "lymphocytes",
        "singlets",
        "live",
        "T",
        "CD4",
        "Treg",
        "Treg_FOXP3",
    ]
    assert {"Treg_naive", "Treg_memory"} <= set(t.names)
    t = load_template("th17")
    assert chain(t, "Th17")[-3:] == ["CD4", "CD4_memory", "Th17"]
    assert {"Th1", "Th2"} <= set(t.names)
    t = load_template("b_cells")
    assert chain(t, "B") == ["lymphocytes", "singlets", "live", "nonT", "B"]
    assert {"B_naive", "B_memory", "B_transitional", "plasmablasts"} <= set(t.names)
    t = load_template("nk_cells")
    assert chain(t, "NK")[-2:] == ["nonT", "NK"]
    assert {"NK_CD56bright", "NK_CD56dim"} <= set(t.names)
    full = load_template("immune_profile")
    for other in ("tregs", "th17", "b_cells", "nk_cells"):
        assert set(load_template(other).names) <= set(full.names)
