"""The built-in b_cells and nk_cells templates on the real HIPC Lyoplate tubes against
openCyto's automated gating of the same events (MANIFEST section I): counts and per-event
membership (benchmarks/lyoplate_agreement.py; skipped when the real data are absent).

While a built-in template cannot start on a tube (no spillover keyword, no FSC-H, no CD14
in the B-cell tube, Lineage instead of CD3/CD19 in the NK tube), the test gates with a
copy adapted the way a user would adapt it (``_adapted``); the gates under test (scatter,
viability, CD3, CD19, IgD/CD27, CD56) are the built-in ones unchanged."""

from __future__ import annotations

import copy
import json

import numpy as np
import pandas as pd
import pytest

from benchmarks import lyoplate_agreement as la
from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import _SOURCE_TEMPLATES, validate_template
from immunoprofile.io.fcs import read_fcs

pytestmark = pytest.mark.realdata

B_TUBE = "12828_1_Bcell_C01"
NK_TUBE = "DC_MONO_NK_12828001_001"


@pytest.fixture(scope="module")
def lyoplate(realdata):
    folder = realdata / "lyoplate"
    if not (folder / "opencyto_matched_reference.csv").exists():
        pytest.skip(f"{folder} holds no Lyoplate reference")
    return folder


def _adapted(name: str) -> dict:
    """The built-in template, adapted to start on a Lyoplate tube: compensation only when
    the file has a spillover, no FSC-H singlet gate, viability alone where the tube has no
    CD14, Lineage for CD3 and CD56 alone for NK in the DC/monocyte/NK tube."""
    spec = json.loads((_SOURCE_TEMPLATES / f"{name}.json").read_text())
    spec = copy.deepcopy(spec)
    spec["compensation"] = "auto"
    spec.setdefault("aliases", {})["Viability"] = ["Live"]
    pops = []
    for p in spec["populations"]:
        if p["name"] == "singlets":
            continue
        if p["parent"] == "singlets":
            p["parent"] = "lymphocytes"
        g = p["gate"]
        if name == "b_cells" and p["name"] == "live":
            g["dims"], g["signs"] = ["Viability"], ["-"]
            g["per_dim"].pop("CD14")
        if name == "nk_cells" and p["name"] == "nonT":
            g["dims"] = ["Lineage"]
        if name == "nk_cells" and p["name"] == "NK":
            p["gate"] = {**g["method"], "dims": ["CD56"], "side": "+"}
        pops.append(p)
    spec["populations"] = pops
    return spec


def _gate_raw(raw, name, seed=0):
    """Gate with the built-in template as a user would; adapted only if it cannot start."""
    try:
        return apply_template(raw, name, seed=seed)
    except ImmunoprofileError:
        return apply_template(raw, validate_template(_adapted(name)), seed=seed)


def _gate(folder, sample: str, name: str):
    return _gate_raw(read_fcs(folder / f"{sample}.fcs"), name)


@pytest.fixture(scope="module")
def table(lyoplate):
    """The comparison table of the benchmark, gating through ``_gate_raw``."""
    mp = pytest.MonkeyPatch()
    mp.setattr(la, "apply_template", _gate_raw)
    try:
        return la.run(lyoplate)
    finally:
        mp.undo()


def _row(table: pd.DataFrame, sample: str, pop: str) -> pd.Series:
    return table[(table["sample"] == sample) & (table["population"] == pop)].iloc[0]


def test_reference_masks_reproduce_opencyto_counts(lyoplate):
    """The npz masks (bit-packed) and the expression parser give openCyto's counts."""
    ref = pd.read_csv(lyoplate / "opencyto_matched_reference.csv")
    for sample in ref["sample"].unique():
        masks = np.load(lyoplate / f"opencyto_{sample}.masks.npz")
        names = la.node_names(lyoplate / f"opencyto_{sample}.populations.csv")
        for r in ref[ref["sample"] == sample].itertuples():
            m = la.reference_mask(r.opencyto_numerator, masks, names)
            assert int(m.sum()) == int(r.opencyto_count), r.key


def test_trunk_and_main_populations_agree_per_event(table):
    """Per-event F1 >= 0.90 against openCyto for lymphocytes, live, B, naive B and NK
    (issue 11's targets), and the lymphocyte gate is not the monocyte cloud."""
    for sample, pops in [
        (B_TUBE, ["lymphocytes", "live", "B", "B_naive"]),
        (NK_TUBE, ["lymphocytes", "live", "NK"]),
    ]:
        for pop in pops:
            r = _row(table, sample, pop)
            assert r["F1"] >= la.F1_MIN, (sample, pop, r["F1"])


def test_counts_within_3pp_where_the_gates_match(table):
    """lymphocytes, live, nonT, B, naive B in the B tube; live, nonT and NK in the NK
    tube: within 3 pp of openCyto (percent of the same parent)."""
    for sample, pops in [
        (B_TUBE, ["lymphocytes", "live", "nonT", "B", "B_naive"]),
        (NK_TUBE, ["live", "nonT", "NK"]),
    ]:
        for pop in pops:
            r = _row(table, sample, pop)
            assert r["meets"], (sample, pop, r["difference (pp)"])


def test_naive_b_cut_comes_from_the_t_cells_and_no_silent_fallback(table):
    """IgD has one peak on these B cells: its cut comes from the T cells (recorded), and
    every gate at a fixed position carries a fallback flag."""
    r = _row(table, B_TUBE, "B_naive")
    assert not r["fallback"]
    assert "IgD: negative control population live not nonT" in r["control"]
    for r in table.itertuples():
        if r.fallback:
            assert "fallback" in r.flags, (r.sample, r.population)


def test_nk_tube_lymphocyte_gate_leaves_the_monocytes_out(lyoplate):
    """Issue 11: on this tube the scatter gate used to take the monocyte cloud. The
    lymphocyte gate now holds under 10 % of openCyto's CD14+ monocytes (6.3 %; the
    largest-component choice it replaces held 70 %)."""
    res = _gate(lyoplate, NK_TUBE, "nk_cells")
    masks = np.load(lyoplate / f"opencyto_{NK_TUBE}.masks.npz")
    names = la.node_names(lyoplate / f"opencyto_{NK_TUBE}.populations.csv")
    mono = la.reference_mask("CD14+Lineage-", masks, names)
    share = float((res.masks["lymphocytes"] & mono).sum() / mono.sum())
    assert share < 0.10, share
    roles = [c["role"] for c in res.fitted["lymphocytes"]["params"]["clouds"]]
    assert "larger cells" in roles
