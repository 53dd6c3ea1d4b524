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


def test_sample_flowkit_methods_warn_and_match_the_exchange_functions():
    pytest.importorskip("flowkit")
    import numpy as np

    import immunoprofile as ip
    from immunoprofile.sample import Sample, make_channel_table

    ev = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.5]], dtype=np.float32)
    s = Sample(ev, make_channel_table(["FSC-A", "FITC-A"], [None, "CD4"]), {}, name="s1")
    with pytest.warns(DeprecationWarning, match=r"ip\.to_flowkit"):
        fk = s.to_flowkit()
    with pytest.warns(DeprecationWarning, match=r"ip\.from_flowkit"):
        back = Sample.from_flowkit(fk)
    new = ip.from_flowkit(ip.to_flowkit(s))
    np.testing.assert_array_equal(back.events, s.events)
    np.testing.assert_array_equal(new.events, back.events)
    assert list(back.channels["marker"]) == list(new.channels["marker"]) == [None, "CD4"]


def test_compare_outputs_moved_to_the_results_folder_definition():
    from immunoprofile import comparison, folder

    with pytest.warns(DeprecationWarning, match=r"immunoprofile\.folder\.COMPARE_OUTPUTS"):
        old = comparison.COMPARE_OUTPUTS
    assert old is folder.COMPARE_OUTPUTS
    assert old == ("changes.csv", "stats.csv", "problems.csv", "comparison.json",
                   "report.html", "plots")  # fmt: skip
    with pytest.raises(AttributeError, match="no_such_name"):
        comparison.no_such_name  # noqa: B018
