"""A simulated CyTOF-like file with known truth: what the `mass_cytometry` template is
tested on, and the CyTOF example `immunoprofile examples` writes.

Ion counts as a CyTOF writes them (no scatter, non-negative, many exact zeros): debris
with little DNA, doublets with twice the DNA and a longer event, dead cells bright for
cisplatin, and lineages (CD4 and CD8 T cells, Treg, B, NK, monocytes) with known labels.
"""

from __future__ import annotations

import numpy as np

from immunoprofile.sample import Sample, make_channel_table

#: (channel $PnN, marker $PnS or None), in file order
CHANNELS: tuple[tuple[str, str | None], ...] = (
    ("Time", None), ("Event_length", None), ("Ir191Di", "DNA1"), ("Ir193Di", "DNA2"),
    ("Pt195Di", None), ("Er170Di", "CD3"), ("Nd145Di", "CD4"), ("Nd146Di", "CD8a"),
    ("Nd142Di", "CD19"), ("Yb176Di", "CD56"), ("Lu175Di", "CD14"), ("Tm169Di", "CD25"),
    ("Dy162Di", "FoxP3"),
)  # fmt: skip
#: cell kind -> (share of the intact cells, mean ion count per expressed marker)
KINDS: dict[str, tuple[float, dict[str, float]]] = {
    "CD4_T": (0.30, {"CD3": 120, "CD4": 60}),
    "Treg": (0.02, {"CD3": 120, "CD4": 60, "CD25": 80, "FoxP3": 60}),
    "CD8_T": (0.18, {"CD3": 120, "CD8a": 150}),
    "B": (0.12, {"CD19": 90}),
    "NK": (0.10, {"CD56": 70}),
    "mono": (0.13, {"CD14": 200, "CD4": 12}),
}
#: share of all events that are debris, doublets and dead cells
FRACTIONS: dict[str, float] = {"debris": 0.08, "doublet": 0.05, "dead": 0.07}


def simulate_cytof(n: int, seed: int, name: str = "cytof_like") -> tuple[Sample, np.ndarray]:
    """``n`` CyTOF-like events and each event's label (a kind of `KINDS`, or debris,
    doublet, dead); the same seed gives the same events."""
    rng = np.random.default_rng(seed)
    names = [*FRACTIONS, *KINDS]
    p = np.array([*FRACTIONS.values(), *(s for s, _ in KINDS.values())])
    p[len(FRACTIONS) :] *= (1 - sum(FRACTIONS.values())) / p[len(FRACTIONS) :].sum()
    lab = np.array(names)[rng.choice(len(names), size=n, p=p)]
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
    s = Sample(ev.astype(np.float32), ch, {"$CYT": "CYTOF"}, name=name)
    return s, np.where(np.isin(lab, list(KINDS)), cell_kind, lab)
