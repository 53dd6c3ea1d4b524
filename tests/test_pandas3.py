"""A missing $PnS marker is None whatever pandas stores in a text column.

pandas 3 stores a missing value in a text column as NaN (a float, truthy), which made
`inspect` crash, plot axes read ``nan (FSC-A)`` and exported files carry a marker named
``nan``. These tests build channel tables holding NaN on purpose, so they exercise the
pandas-3 shape on pandas 2 as well.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from click.testing import CliRunner
from fcs_builder import build_fcs, pack_columns, standard_keywords

from immunoprofile.cli import main
from immunoprofile.io.fcs import read_fcs, read_fcs_header
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table, marker_or_none


def _table_with_nan() -> pd.DataFrame:
    table = make_channel_table(["FSC-A", "PE-A"], [None, "CD25"], [1024.0, 1024.0])
    table["marker"] = pd.Series([np.nan, "CD25"], dtype=object)
    return table


def test_marker_or_none():
    assert marker_or_none(None) is None
    assert marker_or_none(float("nan")) is None
    assert marker_or_none(pd.NA) is None
    assert marker_or_none("  ") is None
    assert marker_or_none(" CD3 ") == "CD3"


def test_channel_table_keeps_none():
    table = make_channel_table(["FSC-A", "CD3"], [None, "CD3"])
    assert table["marker"].dtype == object
    assert table["marker"].iloc[0] is None
    assert list(table["marker"]) == [None, "CD3"]


def test_sample_turns_nan_marker_into_none():
    table = _table_with_nan()
    s = Sample(np.zeros((3, 2), dtype=np.float32), table)
    assert s.markers == [None, "CD25"]
    # the caller's table is left as it was (tables are shared between samples)
    assert table["marker"].iloc[0] != table["marker"].iloc[0]


def _file_without_pns(tmp_path):
    n = 50
    rng = np.random.default_rng(7)
    cols = [rng.uniform(0, 1000, n).astype(">f4") for _ in range(2)]
    kw = standard_keywords(n, ["FSC-A", "SSC-A"], byteord="4,3,2,1")
    path = tmp_path / "no_pns.fcs"
    path.write_bytes(build_fcs(kw, pack_columns(cols, [">f4", ">f4"])))
    return path


def test_reader_gives_none_for_missing_pns(tmp_path):
    path = _file_without_pns(tmp_path)
    assert read_fcs(path).markers == [None, None]
    assert list(read_fcs_header(path).channels["marker"]) == [None, None]


def test_inspect_file_without_pns_goes_on(tmp_path):
    """B1: every file gets its table; a missing marker shows blank."""
    a = _file_without_pns(tmp_path)
    b = tmp_path / "second.fcs"
    b.write_bytes(a.read_bytes())
    res = CliRunner().invoke(main, ["inspect", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert res.output.count("FSC-A") == 2
    assert "nan" not in res.output.lower()


def test_write_fcs_omits_missing_marker(tmp_path):
    """B2: a channel without a marker is written without $PnS (never ``nan``)."""
    s = Sample(np.ones((4, 2), dtype=np.float32), _table_with_nan())
    # a table holding NaN slipped past the constructor (set after construction)
    s.channels = _table_with_nan()
    out = write_fcs(s, tmp_path / "out.fcs")
    kw = read_fcs_header(out).keywords
    assert "$P1S" not in kw
    assert kw["$P2S"] == "CD25"
    assert read_fcs(out).markers == [None, "CD25"]


def test_plot_label_without_marker():
    from immunoprofile.gating.template import load_template
    from immunoprofile.plots import gating as gplots

    class _Res:
        pass

    table = _table_with_nan()
    res = _Res()
    res.sample = Sample(np.ones((4, 2), dtype=np.float32), table)
    res.sample.channels = table
    res.fitted = {"p": {"channels": ["FSC-A", "PE-A"]}}
    res.template = load_template("tregs")
    label0 = gplots._column(res, "p", 0, "FSC-A")[1]
    label1 = gplots._column(res, "p", 1, "CD25")[1]
    assert label0 == "FSC-A"
    assert label1 == "CD25 (PE-A)"


def test_inspect_shows_bracketed_names_and_goes_on(tmp_path, monkeypatch):
    """B1: text from a file is never taken for terminal markup, and a file that cannot be
    described is reported while the others still get their table."""
    n = 20
    cols = [np.arange(n, dtype=">f4"), np.arange(n, dtype=">f4")]
    kw = standard_keywords(n, ["FSC-A", "[/FITC]-A"], byteord="4,3,2,1",
                           extra={"$P2S": "CD3 [/b]", "$CYT": "[red]LSR"})  # fmt: skip
    odd = tmp_path / "tube[1].fcs"
    odd.write_bytes(build_fcs(kw, pack_columns(cols, [">f4", ">f4"])))
    plain = _file_without_pns(tmp_path)
    res = CliRunner().invoke(main, ["inspect", str(odd), str(plain)])
    assert res.exit_code == 0, res.output
    assert "tube[1].fcs" in res.output and "[/FITC]-A" in res.output
    assert "CD3 [/b]" in res.output and "[red]LSR" in res.output

    import immunoprofile.describe as describe

    real = describe.marker_or_none

    def boom(marker):  # noqa: ANN001, ANN202
        if marker == "CD3 [/b]":  # only the odd file has it
            raise RuntimeError("renderer failed")
        return real(marker)

    monkeypatch.setattr(describe, "marker_or_none", boom)
    res = CliRunner().invoke(main, ["inspect", str(odd), str(plain)])
    assert res.exit_code == 1
    assert "cannot be described (RuntimeError: renderer failed)" in res.output
    assert res.output.count("FSC-A") == 1  # the second file still got its table
