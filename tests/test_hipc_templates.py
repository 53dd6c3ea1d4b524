"""One built-in template per HIPC Lyoplate tube: they validate, the T-cell, Treg and Th
tubes' panels support them, and the B-cell and DC/mono/NK ones run unchanged on the real
Lyoplate tubes from the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.plan import plan_template
from immunoprofile.gating.template import list_templates, load_template
from immunoprofile.sample import Sample, make_channel_table

# the Lyoplate panels (Finak et al., Sci Rep 2016): markers in $PnS as a lab exports them
PANELS = {
    "hipc_tcell": ["Live", "CD3", "CD4", "CD8", "CCR7", "CD45RA", "CD38", "HLA-DR"],
    "hipc_treg": ["Live", "CD3", "CD4", "CD25", "CD127", "CCR4", "CD45RO", "HLA-DR"],
    "hipc_th": ["Live", "CD3", "CD4", "CD45RO", "CXCR3", "CCR6", "CD38", "HLA-DR"],
    "hipc_bcell": ["Live", "CD3", "CD19", "CD20", "IgD", "CD27", "CD38", "CD24"],
    "hipc_dc_mono_nk": ["Live", "CD56", "CD123", "CD11c", "CD16", "Lineage", "CD14", "HLADR"],
}


def _tube(markers, seed=0, n=20_000):
    """A tube without FSC-H or CD14 (as the Lyoplate exports), two clouds per marker."""
    rng = np.random.default_rng(seed)
    names = ["FSC-A", "SSC-A", *(f"FL{i}-A" for i in range(len(markers)))]
    ev = np.empty((n, len(names)), np.float32)
    ev[:, 0] = rng.normal(70_000, 9_000, n)
    ev[:, 1] = rng.lognormal(np.log(20_000), 0.3, n)
    for j in range(len(markers)):
        pos = rng.random(n) < 0.4
        ev[:, 2 + j] = np.where(pos, rng.lognormal(np.log(8000), 0.3, n), rng.normal(0, 150, n))
    ch = make_channel_table(names, [None, None, *markers], [262144.0] * len(names))
    return Sample(ev, ch, {"ALREADY_COMPENSATED": "TRUE"}, name="tube")


def test_one_template_per_tube_is_built_in():
    assert set(PANELS) <= set(list_templates())
    for name in PANELS:
        t = load_template(name)
        assert t.compensation == "auto" and t.population("singlets").optional


@pytest.mark.parametrize("name", sorted(PANELS))
def test_each_tube_panel_supports_its_template(name):
    plan = plan_template(_tube(PANELS[name]), load_template(name))
    assert plan.ok, plan.error()
    assert plan.steps["singlets"].status == "skipped"
    # a tube stained for the other panel lacks markers, all named at once
    other = "hipc_bcell" if name != "hipc_bcell" else "hipc_tcell"
    wrong = plan_template(_tube(PANELS[other]), load_template(name))
    if not wrong.ok:
        msg = str(wrong.error())
        assert all(m in msg for s in wrong.missing for opt in s.lacks for m in opt)


@pytest.mark.parametrize("name", ["hipc_tcell", "hipc_treg", "hipc_th"])
def test_t_tube_templates_run_and_partition(name):
    res = apply_template(_tube(PANELS[name], seed=3), name)
    c = res.counts
    for p in res.template.populations:
        if p.parent is not None:
            assert c[p.name] <= c[p.parent], p.name
    if name == "hipc_tcell":
        for cd in ("CD4", "CD8"):
            parts = [f"{cd}_naive", f"{cd}_central_memory", f"{cd}_effector_memory",
                     f"{cd}_effector"]  # fmt: skip
            assert sum(c[q] for q in parts) == c[cd]  # CCR7 x CD45RA quadrants partition
    if name == "hipc_th":
        assert sum(c[q] for q in ("Th1", "Th2", "Th17", "Th1_17")) == c["CD4_memory"]
        assert res.provenance["gating"]["CD4_memory"]["dims"] == ["CD45RO"]  # no CD45RA
    if name == "hipc_treg":
        assert c["Treg_total"] == c["Treg_memory"] + c["Treg_naive"]


@pytest.fixture
def lyoplate(realdata):
    d = realdata / "lyoplate"
    if not (d / "12828_1_Bcell_C01.fcs").is_file():
        pytest.skip(f"{d} lacks the Lyoplate files")
    return d


@pytest.mark.parametrize(
    "name, file, pops",
    [
        ("hipc_bcell", "12828_1_Bcell_C01.fcs",
         ["B", "B_CD20", "B_naive", "B_switched_memory", "B_transitional", "plasmablasts"]),
        ("hipc_dc_mono_nk", "DC_MONO_NK_12828001_001.fcs",
         ["monocytes", "mDC", "pDC", "NK", "NK_CD56bright", "NK_CD56dim"]),
    ],
)  # fmt: skip
def test_lyoplate_tubes_run_with_their_template_as_typed(lyoplate, tmp_path, monkeypatch, name,
                                                         file, pops):  # fmt: skip
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(main, ["gate", "--template", name, str(lyoplate / file)])
    assert r.exit_code == 0, r.output
    pop = pd.read_csv(tmp_path / "immunoprofile-results" / "populations.csv")
    got = pop.set_index("population")
    assert set(pops) <= set(got.index)
    q = [p for p in got.index if p.startswith("B_") and p.endswith(("naive", "memory", "negative"))]
    if name == "hipc_bcell":  # the IgD x CD27 quadrants partition the CD20+ B cells
        assert got.loc[q, "count"].sum() == got.loc["B_CD20", "count"]
    else:
        assert (
            got.loc["monocytes", "count"] + got.loc["CD14neg", "count"]
            <= (got.loc["Lin_neg", "count"])
        )
