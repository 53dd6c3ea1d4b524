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
from immunoprofile.sample import Sample, make_channel_table

CHANNELS = [
    ("Time", None), ("Event_length", None), ("Ir191Di", "DNA1"), ("Ir193Di", "DNA2"),
    ("Pt195Di", None), ("Er170Di", "CD3"), ("Nd145Di", "CD4"), ("Nd146Di", "CD8a"),
    ("Nd142Di", "CD19"), ("Yb176Di", "CD56"), ("Lu175Di", "CD14"), ("Tm169Di", "CD25"),
    ("Dy162Di", "FoxP3"),
]  # fmt: skip
# cell kinds: share, and the mean ion count per marker (0: not expressed)
KINDS = {
    "CD4_T": (0.30, {"CD3": 120, "CD4": 60}),
    "Treg": (0.02, {"CD3": 120, "CD4": 60, "CD25": 80, "FoxP3": 60}),
    "CD8_T": (0.18, {"CD3": 120, "CD8a": 150}),
    "B": (0.12, {"CD19": 90}),
    "NK": (0.10, {"CD56": 70}),
    "mono": (0.13, {"CD14": 200, "CD4": 12}),
}
FRACTIONS = {"debris": 0.08, "doublet": 0.05, "dead": 0.07}


def cytof_like(n: int, seed: int) -> tuple[Sample, np.ndarray]:
    """Ion counts as a CyTOF writes them (no scatter, non-negative, many zeros): debris
    with little DNA, doublets with twice the DNA and a longer event, dead cells bright
    for cisplatin, and lineages with known labels."""
    rng = np.random.default_rng(seed)
    names = [*FRACTIONS, *KINDS]
    p = np.array([*FRACTIONS.values(), *(s for s, _ in KINDS.values())])
    p[len(FRACTIONS) :] *= (1 - sum(FRACTIONS.values())) / p[len(FRACTIONS) :].sum()
    label = rng.choice(len(names), size=n, p=p)
    lab = np.array(names)[label]
    cell_kind = lab.copy()
    # a dead cell or a doublet is still some lineage's cell
    other = ~np.isin(lab, list(KINDS))
    cell_kind[other] = rng.choice(list(KINDS), size=int(other.sum()))
    idx = {m: i for i, (_, m) in enumerate(CHANNELS)}
    ev = np.zeros((n, len(CHANNELS)))
    ev[:, 0] = np.sort(rng.uniform(0, 6e5, n))
    dna = rng.lognormal(np.log(400), 0.15, n)
    length = rng.normal(22, 2.5, n)
    dna[lab == "doublet"] *= 2.0
    length[lab == "doublet"] += 14
    dna[lab == "debris"] = rng.lognormal(np.log(6), 0.6, int((lab == "debris").sum()))
    length[lab == "debris"] = rng.normal(12, 2.5, int((lab == "debris").sum()))
    ev[:, 1] = np.clip(length, 1, None)
    ev[:, idx["DNA1"]] = dna
    ev[:, idx["DNA2"]] = dna * 2.0 * rng.lognormal(0, 0.05, n)
    cis = rng.lognormal(np.log(3), 0.7, n)
    cis[lab == "dead"] = rng.lognormal(np.log(300), 0.4, int((lab == "dead").sum()))
    ev[:, 4] = cis
    for kind, (_, means) in KINDS.items():
        rows = cell_kind == kind
        for m, mu in means.items():
            ev[rows, idx[m]] = rng.lognormal(np.log(mu), 0.35, int(rows.sum()))
    # background counts and Poisson noise; CyTOF software writes many exact zeros
    fl = slice(5, len(CHANNELS))
    ev[:, fl] = rng.poisson(ev[:, fl] + 0.4) + rng.uniform(-0.5, 0.5, ev[:, fl].shape)
    ev[:, fl] = np.clip(ev[:, fl], 0, None)
    ch = make_channel_table([c for c, _ in CHANNELS], [m for _, m in CHANNELS])
    s = Sample(ev.astype(np.float32), ch, {"$CYT": "CYTOF"}, name="cytof_like")
    return s, np.where(np.isin(lab, list(KINDS)), cell_kind, lab)


@pytest.mark.parametrize("seed", [101, 202])
def test_start_and_lineages_on_a_simulated_cytof_file(seed, tmp_path):
    s, truth = cytof_like(30_000, seed)
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
    s, truth = cytof_like(20_000, 7)
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
