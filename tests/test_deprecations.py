"""Old import paths of moved modules keep working for now, with a DeprecationWarning."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("immunoprofile.gating.table", "immunoprofile.hierarchy", "hierarchy_table"),
        ("immunoprofile.gating.table", "immunoprofile.hierarchy", "ROOT"),
        ("immunoprofile.gating.gatingml", "immunoprofile.interop.gatingml", "read_gatingml"),
        ("immunoprofile.gating.gatingml", "immunoprofile.interop.gatingml", "GatingMLStrategy"),
    ],
)
def test_old_module_path_warns_and_gives_the_same_object(old, new, name):
    mod = importlib.import_module(old)
    with pytest.warns(DeprecationWarning, match=new.replace(".", r"\.")):
        got = getattr(mod, name)
    assert got is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize("old", ["immunoprofile.gating.table", "immunoprofile.gating.gatingml"])
def test_unknown_name_on_a_moved_module_is_an_attribute_error(old):
    mod = importlib.import_module(old)
    with pytest.raises(AttributeError, match="no_such_name"):
        mod.no_such_name  # noqa: B018


def test_old_from_import_spelling_still_works():
    with pytest.warns(DeprecationWarning, match="interop"):
        from immunoprofile.gating.gatingml import read_gatingml
    import immunoprofile as ip

    assert read_gatingml is ip.read_gatingml
