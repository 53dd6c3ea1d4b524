"""The example files shipped with the package (``immunoprofile examples``) give real,
checked results: the FlowJo workspace's stored counts are what `gate` counts, each
Gating-ML gate equals a plain numpy evaluation of its geometry, the openCyto template
finds the simulated populations, and the CyTOF-like file's lineages match its truth."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

import immunoprofile as ip
from immunoprofile.examples import CYTOF_EVENTS, CYTOF_FILE, CYTOF_SEED, EXAMPLE_FILES
from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.gating.engine import apply_template
from immunoprofile.interop.opencyto import opencyto_to_template
from immunoprofile.simulate.biology import truth_mask
from immunoprofile.simulate.cohort import simulate_sample
from immunoprofile.simulate.mass_cytometry import simulate_cytof
from tests.conftest import REPO

# the 13 counts example.wsp stores for example.fcs (computed by flowkit when it was written)
STORED = {
    "Lymphocytes": 3220, "Singlets": 3219, "Live": 3073, "CD3+": 2404, "CD4+": 1538,
    "Treg": 87, "CD25+": 347, "CD127+": 1448, "CD25+ and CD127+": 259, "not Treg": 1451,
    "CD8+": 778, "CD4+ or CD8+": 2316, "B cells": 287,
}  # fmt: skip


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "immunoprofile", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _counts(folder: Path) -> dict[tuple[str, str], int]:
    with open(folder / "populations.csv", newline="", encoding="utf-8") as fh:
        return {(r["sample"], r["population"]): int(r["count"]) for r in csv.DictReader(fh)}


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "ip_examples"
    proc = _cli("examples", "--out", str(out), cwd=out.parent)
    for name in [*EXAMPLE_FILES, CYTOF_FILE]:
        assert (out / name).is_file() and name in proc.stdout
    return out


def test_example_path_names_the_shipped_files():
    for name in EXAMPLE_FILES:
        assert ip.example_path(name).is_file()
    with pytest.raises(ImmunoprofileError, match="example.wsp"):
        ip.example_path("nope.fcs")


def test_workspace_counts_are_what_gate_counts(examples, tmp_path):
    ws = ip.read_wsp(examples / "example.wsp")
    assert {p.path[-1]: p.count for p in ws.sample("example.fcs").populations} == STORED
    _cli("import-gates", str(examples / "example.wsp"), "--out", "ws.json", cwd=tmp_path)
    _cli("gate", "--template", "ws.json", str(examples / "example.fcs"), "--out", "res",
         cwd=tmp_path)  # fmt: skip
    got = {pop: n for (_, pop), n in _counts(tmp_path / "res").items()}
    assert got == {name.replace(" ", "_"): n for name, n in STORED.items()}
    rows = ws.compare_counts("example.fcs", ip.read_fcs(examples / "example.fcs"))
    assert len(rows) == 13 and all(r["difference"] == 0 and not r["magnetic"] for r in rows)


def test_the_sample_moved_its_treg_gate_and_other_files_get_the_groups(examples, tmp_path):
    template = ip.read_wsp(examples / "example.wsp").to_template()
    (own,) = template["samples"]  # only the Treg polygon differs from the group's
    assert own["match"] == {"$FIL": "example.fcs", "$TOT": "4000"}
    assert list(own["gates"]) == ["Treg"]
    group_only = {k: v for k, v in template.items() if k != "samples"}
    (tmp_path / "group.json").write_text(json.dumps(group_only), encoding="utf-8")
    _cli("gate", "--template", "group.json", str(examples / "example.fcs"), "--out", "res",
         cwd=tmp_path)  # fmt: skip
    got = {pop: n for (_, pop), n in _counts(tmp_path / "res").items()}
    assert got["Treg"] > STORED["Treg"]  # the group's polygon reaches lower on CD25
    assert {k: v for k, v in got.items() if "Treg" not in k} == {
        name.replace(" ", "_"): n for name, n in STORED.items() if "Treg" not in name
    }


@pytest.mark.skipif(importlib.util.find_spec("flowkit") is None, reason="flowkit not installed")
def test_workspace_counts_are_flowkits(examples):
    import flowkit as fk

    wsp = fk.Workspace(str(examples / "example.wsp"), fcs_samples=str(examples / "example.fcs"))
    wsp.analyze_samples(group_name="All Samples")
    rep = wsp.get_gating_results("example.fcs").report
    assert dict(zip(rep.gate_name, rep["count"].astype(int))) == STORED


# --- Gating-ML: every gate against plain numpy -------------------------------------------


def _fasinh(x: np.ndarray, t=262144.0, m=4.5, a=0.5) -> np.ndarray:
    """Gating-ML 2.0 fasinh (section 6.3)."""
    ln10 = np.log(10.0)
    return (np.arcsinh(x * np.sinh(m * ln10) / t) + a * ln10) / ((m + a) * ln10)


def _by_hand(sample) -> dict[str, np.ndarray]:
    ev = sample.events.astype(np.float64)
    col = {n: i for i, n in enumerate(sample.channel_names)}
    kw = sample.keywords["$SPILLOVER"].split(",")
    k = int(kw[0])
    dets = kw[1 : k + 1]
    spill = np.array(kw[k + 1 :], float).reshape(k, k)
    comp = ev[:, [col[d] for d in dets]] @ np.linalg.inv(spill)
    f = {d: _fasinh(comp[:, i]) for i, d in enumerate(dets)}
    fsc, ssc, fsch = ev[:, col["FSC-A"]], ev[:, col["SSC-A"]], ev[:, col["FSC-H"]]
    lymph_poly = MplPath([(25000, 2000), (90000, 2000), (95000, 30000), (60000, 38000),
                          (25000, 25000)])  # fmt: skip
    m = {"Lymphocytes": lymph_poly.contains_points(np.c_[fsc, ssc])}
    ratio = fsch / fsc
    m["Singlets"] = m["Lymphocytes"] & (ratio >= 0.8) & (ratio < 1.2)
    m["Live"] = m["Singlets"] & (f["APC-Cy7-A"] < 0.55)
    m["T"] = m["Live"] & (f["BUV395-A"] >= 0.55)
    m["B"] = m["Live"] & (f["BUV395-A"] < 0.55) & (f["BUV563-A"] >= 0.6)
    cd4, cd8 = f["BV510-A"] >= 0.58, f["BUV496-A"] >= 0.62
    m["CD4pos_CD8neg"] = m["T"] & cd4 & ~cd8
    m["CD4neg_CD8pos"] = m["T"] & ~cd4 & cd8
    m["CD4pos_CD8pos"] = m["T"] & cd4 & cd8
    m["CD4neg_CD8neg"] = m["T"] & ~cd4 & ~cd8
    treg_poly = MplPath([(0.58, 0.0), (1.0, 0.0), (1.0, 0.56), (0.58, 0.53)])
    m["Treg"] = m["CD4pos_CD8neg"] & treg_poly.contains_points(np.c_[f["PE-A"], f["PE-Cy7-A"]])
    d = np.c_[fsc - 92000.0, ssc - 48000.0]
    inv = np.linalg.inv(np.array([[1.6e8, 4.0e7], [4.0e7, 1.0e8]]))
    m["Monocytes"] = np.einsum("ij,jk,ik->i", d, inv, d) <= 4.0
    m["T_or_B"] = m["Live"] & (m["T"] | m["B"])
    m["CD4_not_Treg"] = m["CD4pos_CD8neg"] & ~m["Treg"]
    return m


def test_gatingml_gates_equal_a_numpy_evaluation(examples, tmp_path):
    sample = ip.read_fcs(examples / "example.fcs", scale=False)
    ours = ip.read_gatingml(examples / "example_gates.xml").evaluate(sample)
    want = _by_hand(sample)
    assert set(ours) == set(want)
    for gid, mask in want.items():
        assert 0 < mask.sum() < len(mask), gid  # every gate selects something, not all
        assert np.array_equal(ours[gid], mask), (gid, int(ours[gid].sum()), int(mask.sum()))
    # the same counts through import-gates and gate
    _cli("import-gates", str(examples / "example_gates.xml"), "--out", "g.json", cwd=tmp_path)
    _cli("gate", "--template", "g.json", str(examples / "example.fcs"), "--out", "res",
         cwd=tmp_path)  # fmt: skip
    got = {pop: n for (_, pop), n in _counts(tmp_path / "res").items()}
    assert got == {gid: int(mask.sum()) for gid, mask in want.items()}


@pytest.mark.skipif(importlib.util.find_spec("flowkit") is None, reason="flowkit not installed")
def test_gatingml_counts_are_flowkits(examples):
    import flowkit as fk

    gs = fk.parse_gating_xml(str(examples / "example_gates.xml"))
    res = gs.gate_sample(fk.Sample(str(examples / "example.fcs")))
    want = _by_hand(ip.read_fcs(examples / "example.fcs", scale=False))
    for gid, mask in want.items():
        assert res.get_gate_count(gid) == int(mask.sum()), gid


# --- openCyto: the populations the template names, against the simulation's truth --------


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(pred & truth) / (np.count_nonzero(pred) + np.count_nonzero(truth))


@pytest.mark.parametrize("seed", [8123, 40417])
def test_opencyto_template_finds_the_simulated_populations(examples, seed):
    template = opencyto_to_template(examples / "example_opencyto.csv")
    sample, labels = simulate_sample(20_000, seed=seed)
    masks = apply_template(sample, template).masks
    # floors below the lowest F1 seen over fresh seeds (CD8: the simulation's T_other cells
    # with some CD8 count as non-CD8 in its truth; Treg: a small population at 20k events)
    for pop, truth_pop, floor in (("lymph", "live", 0.93), ("CD3", "T", 0.97),
                                  ("CD4", "CD4", 0.97), ("CD8", "CD8", 0.85),
                                  ("Treg", "Treg", 0.7), ("B", "B", 0.95)):  # fmt: skip
        f1 = _f1(masks[pop], truth_mask(labels, truth_pop))
        assert f1 > floor, (pop, seed, round(f1, 3))


# --- CyTOF-like example ------------------------------------------------------------------


def test_cytof_example_lineages_match_its_truth(examples):
    sample = ip.read_fcs(examples / CYTOF_FILE)
    _, truth = simulate_cytof(CYTOF_EVENTS, CYTOF_SEED)
    assert sample.n_events == CYTOF_EVENTS
    m = apply_template(sample, "mass_cytometry").masks
    live = m["live"]
    intact = ~np.isin(truth, ["debris", "doublet", "dead"])
    assert (live & intact).sum() / intact.sum() > 0.95
    for pop, kinds in {"T": ["CD4_T", "Treg", "CD8_T"], "B": ["B"], "NK": ["NK"],
                       "monocytes": ["mono"]}.items():  # fmt: skip
        want = (live & np.isin(truth, kinds)).sum() / live.sum()
        assert abs(m[pop].sum() / live.sum() - want) < 0.02, pop
