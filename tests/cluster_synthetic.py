"""Small synthetic lymphocyte samples with known populations, for the clustering tests.

Values are on the transformed 0..1 analysis scale; each population is a Gaussian blob
around its phenotype (negative 0.15 unless stated).
"""

from __future__ import annotations

import numpy as np

from immunoprofile.sample import Sample, make_channel_table

MARKERS = ("CD3", "CD4", "CD8", "CD25", "CD127", "CD45RA", "CXCR3", "CCR6",
           "CD19", "IgD", "CD27", "CD56", "CD16")  # fmt: skip

# population -> (fraction of events, {marker: level}), leaf populations
PHENOTYPES: dict[str, tuple[float, dict[str, float]]] = {
    "CD4_naive": (0.30, {"CD3": 0.7, "CD4": 0.65, "CD127": 0.65, "CD45RA": 0.7}),
    "Th1": (0.08, {"CD3": 0.7, "CD4": 0.65, "CD127": 0.65, "CXCR3": 0.6}),
    "Th2": (0.07, {"CD3": 0.7, "CD4": 0.65, "CD127": 0.65}),
    "Th17": (0.05, {"CD3": 0.7, "CD4": 0.65, "CD127": 0.65, "CCR6": 0.6}),
    "Treg": (0.03, {"CD3": 0.7, "CD4": 0.65, "CD25": 0.75, "CD127": 0.3}),
    "CD8": (0.20, {"CD3": 0.7, "CD8": 0.7, "CD127": 0.5, "CD45RA": 0.6}),
    "B_naive": (0.08, {"CD19": 0.7, "IgD": 0.7, "CD45RA": 0.6}),
    "B_memory": (0.04, {"CD19": 0.7, "CD27": 0.6, "CD45RA": 0.6}),
    "NK_CD56bright": (0.015, {"CD56": 0.8, "CD16": 0.2, "CD45RA": 0.6}),
    "NK_CD56dim": (0.135, {"CD56": 0.5, "CD16": 0.7, "CD45RA": 0.6}),
}

# leaf -> canonical populations it belongs to
ANCESTORS = {
    "CD4_naive": ["T", "CD4"],
    "Th1": ["T", "CD4", "CD4_memory", "Th1"],
    "Th2": ["T", "CD4", "CD4_memory", "Th2"],
    "Th17": ["T", "CD4", "CD4_memory", "Th17"],
    "Treg": ["T", "CD4", "Treg", "Treg_memory", "CD4_memory", "Th2"],
    "CD8": ["T", "CD8"],
    "B_naive": ["nonT", "B", "B_naive"],
    "B_memory": ["nonT", "B", "B_memory"],
    "NK_CD56bright": ["nonT", "NK", "NK_CD56bright"],
    "NK_CD56dim": ["nonT", "NK", "NK_CD56dim"],
}


def synthetic_events(n: int, seed: int, shift: float = 0.0, sd: float = 0.05):
    """(events float32 n x markers, leaf label per event)."""
    rng = np.random.default_rng(seed)
    leaves = list(PHENOTYPES)
    frac = np.array([PHENOTYPES[p][0] for p in leaves])
    lab = rng.choice(len(leaves), size=n, p=frac / frac.sum())
    means = np.full((len(leaves), len(MARKERS)), 0.15)
    for i, p in enumerate(leaves):
        for m, v in PHENOTYPES[p][1].items():
            means[i, MARKERS.index(m)] = v
    X = means[lab] + rng.normal(0, sd, (n, len(MARKERS))) + shift
    return X.astype(np.float32), np.asarray(leaves)[lab]


def synthetic_sample(n: int = 5000, seed: int = 0, name: str = "s", shift: float = 0.0):
    """A Sample with FSC-A, the markers (PnS) on fake detectors, and a viability channel."""
    X, lab = synthetic_events(n, seed, shift)
    rng = np.random.default_rng(seed + 1000)
    fsc = rng.normal(0.5, 0.05, (n, 1)).astype(np.float32)
    viab = rng.normal(0.1, 0.03, (n, 1)).astype(np.float32)
    events = np.hstack([fsc, X, viab])
    names = ["FSC-A", *[f"FL{i + 1}-A" for i in range(len(MARKERS))], "APC-Cy7-A"]
    markers = [None, *MARKERS, "Viability"]
    s = Sample(events, make_channel_table(names, markers), name=name)
    return s, lab


def truth_percent(labels: np.ndarray, population: str, parent: str | None) -> float:
    inside = np.array([population in ANCESTORS[x] for x in labels])
    if parent is None:
        return 100.0 * inside.mean()
    par = np.array([parent in ANCESTORS[x] for x in labels])
    return 100.0 * inside.sum() / par.sum()
