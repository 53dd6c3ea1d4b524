"""Batch gating: tables, errors, outputs, plots, parallel runs and the CLI."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

import immunoprofile.gating.run as run
from immunoprofile.gating.gates import (
    BooleanGate,
    EllipseGate,
    PolygonGate,
    QuadrantGate,
    RangeGate,
    RectangleGate,
)
from immunoprofile.sample import Sample, make_channel_table

# --- a stand-in engine over static gates: tests the batch logic without the real engine --


@dataclass
class _Pop:
    name: str
    parent: str | None
    gate: object


class _Template:
    name = "static"
    populations = [
        _Pop("lymphocytes", None, RectangleGate(("FSC-A", "SSC-A"), (0.2, 0.1), (0.8, 0.6))),
        _Pop("T", "lymphocytes", RangeGate(("CD3",), 0.5, None)),
        _Pop("CD4", "T", QuadrantGate(("CD4", "CD8"), (0.5, 0.5), ("+", "-"))),
        _Pop(
            "Treg", "CD4", PolygonGate(("CD25", "CD127"), ((0.6, 0), (1, 0), (1, 0.4), (0.6, 0.4)))
        ),
        _Pop("E", "CD4", EllipseGate(("CD25", "CD127"), (0.3, 0.6), ((0.01, 0), (0, 0.02)), 1.0)),
        _Pop("nonT", "lymphocytes", BooleanGate(("T",), "not")),
    ]


class _Result:
    def __init__(self, sample: Sample, template: _Template) -> None:
        self.sample, self.template, self.masks = sample, template, {}
        cols = {
            m or n: i for i, (n, m) in enumerate(zip(sample.channels.name, sample.channels.marker))
        }
        for p in template.populations:
            parent = self.masks[p.parent] if p.parent else np.ones(sample.n_events, bool)
            if isinstance(p.gate, BooleanGate):
                m = p.gate.mask([self.masks[d] for d in p.gate.dims])
            else:
                m = p.gate.mask([sample.events[:, cols[d]] for d in p.gate.dims])
            self.masks[p.name] = m & parent
        self.fitted = {}
        for p in template.populations:
            chans = (
                []
                if isinstance(p.gate, BooleanGate)
                else [sample.channel_names[cols[d]] for d in p.gate.dims]
            )
            self.fitted[p.name] = dict(p.gate.to_dict(), fallback=p.name == "T", channels=chans)
        self.qc = [{"population": "E", "flag": "low_count", "detail": "fewer than 100 events"}]

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v.sum()) for k, v in self.masks.items()}


def _sample(seed: int, name: str, **kw: str) -> Sample:
    ev = np.random.default_rng(seed).random((5000, 7), dtype=np.float32)
    ch = make_channel_table(
        ["FSC-A", "SSC-A", "B1-A", "B2-A", "B3-A", "B4-A", "B5-A"],
        [None, None, "CD3", "CD4", "CD8", "CD25", "CD127"],
    )
    return Sample(ev, ch, dict(kw), name=name)


@pytest.fixture
def stand_in(monkeypatch):
    monkeypatch.setattr(run, "_apply", lambda s, t, seed=0: _Result(s, t))
    return _Template()


def test_batch_with_a_bad_file(stand_in, tmp_path):
    bad = tmp_path / "P03_baseline.fcs"
    bad.write_bytes(b"this is not an FCS file")
    items = [
        _sample(1, "P01_baseline", PATIENT_ID="P01", VISIT="baseline"),
        str(bad),
        _sample(2, "P01_week24", PATIENT_ID="P01", VISIT="week24"),
    ]
    res = run.gate(items, stand_in)
    err = res.errors()
    assert list(err.columns) == ["file", "sample", "error_type", "message"]
    assert len(err) == 1 and err.at[0, "file"] == str(bad)
    assert "P03_baseline.fcs" in err.at[0, "message"]
    t = res.table()
    assert list(t["sample"].unique()) == ["P01_baseline", "P01_week24"]
    # counts agree with an independent evaluation of the same gates
    s = items[0]
    lym = (
        (s.events[:, 0] >= 0.2)
        & (s.events[:, 0] < 0.8)
        & (s.events[:, 1] >= 0.1)
        & (s.events[:, 1] < 0.6)
    )
    tee = lym & (s.events[:, 2] >= 0.5)
    row = t[(t["sample"] == "P01_baseline") & (t["population"] == "T")].iloc[0]
    assert row["count"] == tee.sum() and row["parent_count"] == lym.sum()
    assert row["percent_of_parent"] == pytest.approx(100 * tee.sum() / lym.sum())
    nont = t[(t["sample"] == "P01_baseline") & (t["population"] == "nonT")].iloc[0]
    assert nont["count"] == (lym & ~tee).sum()
    wide = res.per_visit()
    assert set(wide) == {"baseline", "week24"} and list(wide["week24"].index) == ["P01"]
    qc = res.qc()
    assert len(qc) == 2 and set(qc["flag"]) == {"low_count"}


def test_write_outputs(stand_in, tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("file,patient,visit,lymphocytes_per_ul\nA,P01,baseline,2000\nB,P01,week24,\n")
    res = run.gate([_sample(1, "A"), _sample(2, "B")], stand_in, samplesheet=sheet)
    out = tmp_path / "out"
    res.write(out)
    names = {p.name for p in out.iterdir()}
    assert {
        "populations.csv", "populations.parquet", "populations_baseline.csv",
        "populations_week24.csv", "populations.xlsx", "gates.json", "qc.csv", "errors.csv",
    } <= names  # fmt: skip
    pop = pd.read_csv(out / "populations.csv")
    assert "cells_per_ul" in pop.columns
    lym = pop[(pop["sample"] == "A") & (pop["population"] == "T")].iloc[0]
    assert lym["cells_per_ul"] == pytest.approx(2000 * lym["percent_of_lymphocytes"] / 100)
    gates = json.loads((out / "gates.json").read_text())
    assert gates["samples"]["A"]["gates"]["T"] == {
        "type": "range", "dims": ["CD3"], "min": 0.5, "max": None, "fallback": True,
        "channels": ["B1-A"],
    }  # fmt: skip
    assert pd.read_csv(out / "errors.csv").empty


def test_plots(stand_in, tmp_path):
    res = run.gate([_sample(1, "A")], stand_in, plots_dir=tmp_path / "plots")
    png = tmp_path / "plots" / "A.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = res.plot("A", "Treg")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("CD25") and ax.get_ylabel().startswith("CD127")
    assert "Treg" in ax.get_title()
    grid = res.plot("A")
    assert len(grid.axes) == len(_Template.populations)
    with pytest.raises(KeyError, match="no sample"):
        res.plot("nope")
