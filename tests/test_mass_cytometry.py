"""Mass cytometry: the built-in ``mass_cytometry`` template starts from DNA+ singlets and
cisplatin- live cells on arcsinh (cofactor 5) values, on a simulated CyTOF-like file with
known truth and on real CyTOF files shipped by the public ``cytonormpy`` wheel (skipped
when that package is not installed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import load_template
from immunoprofile.io.fcs import read_fcs
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample
from immunoprofile.simulate.mass_cytometry import simulate_cytof


@pytest.mark.parametrize("seed", [101, 202])
def test_start_and_lineages_on_a_simulated_cytof_file(seed, tmp_path):
    s, truth = simulate_cytof(30_000, seed)
    s = read_fcs(write_fcs(s, tmp_path / "c.fcs"))  # through the FCS writer and reader
    res = apply_template(s, "mass_cytometry")
    m = res.masks
    intact = ~np.isin(truth, ["debris", "doublet", "dead"])
    # the start: DNA+ singlets, cisplatin- live
    assert res.provenance["compensation"]["status"] == "off"
    assert res.provenance["transforms"]["Ir191Di"] == {"type": "arcsinh_cofactor", "cofactor": 5.0}
    assert res.provenance["gating"]["singlets"]["dims"] == ["DNA1", "Event_length"]
    assert res.provenance["markers"]["Cisplatin"] == "Pt195Di"
    live = m["live"]
    recall = (live & intact).sum() / intact.sum()
    precision = (live & intact).sum() / live.sum()
    assert recall > 0.95 and precision > 0.97, (recall, precision)
    assert (m["DNA+"] & (truth == "debris")).sum() < 0.02 * (truth == "debris").sum()
    assert (m["singlets"] & (truth == "doublet")).sum() < 0.15 * (truth == "doublet").sum()
    assert (live & (truth == "dead")).sum() < 0.02 * (truth == "dead").sum()
    # lineages against their truth, as shares of the live cells
    for pop, kinds in {"T": ["CD4_T", "Treg", "CD8_T"], "B": ["B"], "NK": ["NK"],
                       "monocytes": ["mono"], "CD8_T": ["CD8_T"]}.items():  # fmt: skip
        want = (live & np.isin(truth, kinds)).sum() / live.sum()
        got = m[pop].sum() / live.sum()
        assert abs(got - want) < 0.02, (pop, got, want)
    # the live cut is the fitted threshold on asinh(Pt195Di / 5): checked independently
    cut = res.fitted["live"]["max"]
    raw = s.events[:, s.channel_names.index("Pt195Di")].astype(np.float64)
    mine = m["singlets"] & (np.arcsinh(raw / 5.0) < cut)
    assert np.array_equal(mine, live)


def test_without_event_length_the_dna_singlet_alternative_is_used():
    s, truth = simulate_cytof(20_000, 7)
    keep = [i for i, n in enumerate(s.channel_names) if n != "Event_length"]
    s2 = Sample(
        np.ascontiguousarray(s.events[:, keep]),
        s.channels.iloc[keep].reset_index(drop=True),
        dict(s.keywords),
        name="no_length",
    )
    res = apply_template(s2, "mass_cytometry")
    rec = res.provenance["gating"]["singlets"]
    assert rec["status"] == "alternative" and rec["dims"] == ["DNA1"]
    assert (res.masks["singlets"] & (truth == "doublet")).sum() < 0.5 * (truth == "doublet").sum()


def _cytonorm_files() -> list[Path]:
    spec = importlib.util.find_spec("cytonormpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("cytonormpy (public CyTOF example files) is not installed")
    d = Path(list(spec.submodule_search_locations)[0]) / "_resources"
    files = sorted(d.glob("Gates_*.fcs"))
    if not files:
        pytest.skip(f"{d} holds no CyTOF example files")
    return files


def test_real_cytof_files_from_cytonormpy():
    """Whole-blood CyTOF files (55 channels, Ir191/193 DNA, Pt195 cisplatin) that the
    cytonormpy wheel ships: the template resolves DNA, cisplatin and the lineage markers
    from the panel, transforms with arcsinh(x/5), and every population's count is what
    the fitted gates give when recomputed from the raw ion counts."""
    t = load_template("mass_cytometry")
    for f in _cytonorm_files()[:3]:
        s = read_fcs(f)
        res = apply_template(s, t)
        prov = res.provenance
        assert prov["markers"]["DNA1"] == "Ir191Di" and prov["markers"]["Cisplatin"] == "Pt195Di"
        assert prov["markers"]["CD8"] == "Nd146Di" and prov["markers"]["FOXP3"] == "Dy162Di"
        assert prov["transforms"]["Nd142Di"] == {"type": "arcsinh_cofactor", "cofactor": 5.0}
        asinh = {
            ch: np.arcsinh(s.events[:, s.channel_names.index(ch)].astype(np.float64) / 5.0)
            for ch in ("Ir191Di", "Pt195Di", "Er170Di")
        }
        dna_lo = res.fitted["DNA+"]["min"]
        assert np.array_equal(res.masks["DNA+"], asinh["Ir191Di"] >= dna_lo)
        live = res.masks["singlets"] & (asinh["Pt195Di"] < res.fitted["live"]["max"])
        assert np.array_equal(res.masks["live"], live)
        t_cut = res.fitted["T"]["min"]
        assert np.array_equal(res.masks["T"], live & (asinh["Er170Di"] >= t_cut))
        # a pre-gated file of intact cells: nearly all events are DNA+ singlets
        n = s.n_events
        assert res.counts["singlets"] > 0.9 * n
        assert 0 < res.counts["T"] < res.counts["live"]
        assert res.counts["CD4_T"] + res.counts["CD8_T"] <= res.counts["T"]
