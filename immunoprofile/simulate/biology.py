"""What the simulated blood contains: cell phenotypes, truth labels and frequencies.

Three tables define the biology; gating and clustering code reads them to know the truth.

* `LEVELS`: for each marker the linear median intensity (reference instrument settings,
  before spillover and drift) of its ``dim``, ``positive`` and ``bright`` levels.
  ``negative`` means no specific staining: only autofluorescence and noise remain.
* `COMPONENTS`: every kind of event the simulator makes, each with its truth label (leaf),
  its share within that leaf, its scatter profile and its phenotype. `PHENOTYPES` is the
  same information as one dict: component -> marker -> (level, linear median).
* `POPULATION_LEAVES`: each canonical population name (see the project's population
  definitions) -> the set of leaf labels that make it up; `truth_mask` turns labels into
  a boolean mask, so accuracy is computed the same way everywhere.

Truth of the first three gates, precisely:

* ``lymphocytes``: every event that is one or more lymphocytes, i.e. live lymphocyte
  singlets, dead lymphocytes (``dead``) and lymphocyte-lymphocyte doublets (``doublet``).
  Not debris, monocytes, granulocytes or doublets that contain a myeloid cell
  (``doublet_myeloid``).
* ``singlets``: ``lymphocytes`` without ``doublet``.
* ``live``: ``singlets`` without ``dead``.

Each population below ``live`` follows the phenotype definition literally, so a leaf may
belong to several populations: memory Tregs (CXCR3−CCR6−) and their FOXP3− look-alikes
are part of ``Th2`` (CD4 memory, CXCR3−CCR6−), and transitional B cells (IgD+CD27−) are
part of ``B_naive``.

Frequencies (`FREQUENCIES`) are healthy-adult / MS-cohort reference ranges; sources are
cited next to each number.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from immunoprofile.exceptions import SimulationError
from immunoprofile.simulate.panel import MARKERS

# --- marker intensity levels ------------------------------------------------------------

#: marker -> {level: linear median}. Positive populations are log-normal around these
#: medians; "negative" is 0 (autofluorescence and detector noise only).
LEVELS: dict[str, dict[str, float]] = {
    "Viability": {"dim": 600.0, "positive": 6000.0, "bright": 25000.0},
    "CD3": {"dim": 1500.0, "positive": 9000.0, "bright": 14000.0},
    "CD4": {"dim": 700.0, "positive": 6000.0, "bright": 9000.0},
    "CD8": {"dim": 1500.0, "positive": 12000.0, "bright": 20000.0},
    "CD45RA": {"dim": 700.0, "positive": 5000.0, "bright": 9000.0},
    "CD25": {"dim": 700.0, "positive": 3000.0, "bright": 9000.0},
    "CD127": {"dim": 350.0, "positive": 3000.0, "bright": 6000.0},
    "FOXP3": {"dim": 500.0, "positive": 4000.0, "bright": 7000.0},
    "CXCR3": {"dim": 500.0, "positive": 3500.0, "bright": 7000.0},
    "CCR6": {"dim": 700.0, "positive": 4500.0, "bright": 8000.0},
    "CD161": {"dim": 700.0, "positive": 3500.0, "bright": 9000.0},
    "CD19": {"dim": 2000.0, "positive": 7000.0, "bright": 12000.0},
    "CD20": {"dim": 1200.0, "positive": 12000.0, "bright": 20000.0},
    "CD27": {"dim": 1000.0, "positive": 5000.0, "bright": 16000.0},
    "IgD": {"dim": 800.0, "positive": 7000.0, "bright": 14000.0},
    "CD38": {"dim": 900.0, "positive": 4000.0, "bright": 25000.0},
    "CD24": {"dim": 1000.0, "positive": 4000.0, "bright": 12000.0},
    "CD56": {"dim": 2500.0, "positive": 6000.0, "bright": 18000.0},
    "CD16": {"dim": 1500.0, "positive": 8000.0, "bright": 25000.0},
    "CD14": {"dim": 1200.0, "positive": 8000.0, "bright": 20000.0},
}

#: default log-normal spread (standard deviation of the natural log) of each level
SPREAD: dict[str, float] = {"dim": 0.5, "positive": 0.4, "bright": 0.36}

_SYMBOL = {"-": "negative", "lo": "dim", "+": "positive", "hi": "bright"}

# --- components -------------------------------------------------------------------------


@dataclass(frozen=True)
class Component:
    """One kind of simulated event.

    ``label`` is the truth leaf written to the truth file; ``weight`` the share of the
    leaf this component makes up; ``scatter`` the name of its scatter profile
    (`SCATTER`); ``spec`` the phenotype as tokens ``MARKER<sym>[*factor][:spread]`` with
    ``<sym>`` one of ``-``, ``lo`` (dim), ``+`` (positive), ``hi`` (bright); ``factor``
    scales the level's median (e.g. ``CD38+*2.5``: between positive and bright) and
    ``spread`` replaces the default log-SD of the level. Unlisted markers are negative.
    """

    name: str
    label: str
    weight: float
    scatter: str
    spec: str


_T = "CD3+ "
# Phenotypes follow standard descriptions of human blood leukocytes: Maecker, McCoy &
# Nussenblatt, Nat Rev Immunol 12:191 (2012) (HIPC panels); Liu et al., J Exp Med 203:1701
# (2006) and Seddiki et al., J Exp Med 203:1693 (2006) (Treg CD25hi CD127lo FOXP3+);
# Miyara et al., Immunity 30:899 (2009) (naive/memory Treg, FOXP3- CD25hi activated cells);
# Acosta-Rodriguez et al., Nat Immunol 8:639 (2007) (Th17 CCR6+CXCR3-, Th1 CXCR3+CCR6-);
# Cosmi et al., J Exp Med 205:1903 (2008) (CD161 on Th17); Sims et al., Blood 105:4390
# (2005) and Morbach et al., Clin Exp Immunol 162:271 (2010) (B subsets); Cooper et al.,
# Trends Immunol 22:633 (2001) (CD56bright/CD56dim NK); Ziegler-Heitbrock et al., Blood
# 116:e74 (2010) (monocyte subsets).
COMPONENTS: tuple[Component, ...] = (
    # CD4 T cells
    Component(
        "CD4_naive", "CD4_naive_conv", 1.0, "T", _T + "CD4+ CD45RAhi CD127+ CD27+ CD38lo CD25lo:0.9"
    ),
    Component(
        "Treg_naive",
        "Treg_naive",
        1.0,
        "T",
        _T + "CD4+ CD45RA+ CD25+:0.45 CD127lo:0.55 FOXP3+ CD27+",
    ),
    Component(
        "Treg_memory",
        "Treg_memory",
        1.0,
        "T",
        _T + "CD4+ CD25hi:0.45 CD127lo:0.55 FOXP3hi CD27+ CD45RAlo:0.55",
    ),
    Component(
        "Treg_FOXP3neg",
        "Treg_FOXP3neg",
        1.0,
        "T",
        _T + "CD4+ CD25hi:0.45 CD127lo:0.55 FOXP3lo:0.6 CD27+ CD38+ CD45RAlo:0.55",
    ),
    Component("Th1", "Th1", 1.0, "T", _T + "CD4+ CXCR3+:0.65 CD25lo:0.6 CD127+ CD27+ CD45RAlo:0.7"),
    Component("Th2", "Th2", 0.7, "T", _T + "CD4+ CD25lo:0.6 CD127+ CD27+ CD45RAlo:0.7"),
    Component(
        "Th2_em", "Th2", 0.3, "T", _T + "CD4+ CD25lo:0.6 CD127+ CD161lo CD45RAlo:0.7 CD27lo:0.8"
    ),
    Component(
        "Th17",
        "Th17",
        1.0,
        "T",
        _T + "CD4+ CCR6+:0.55 CD161+:0.5 CD25lo:0.6 CD127+ CD27+ CD45RAlo:0.7",
    ),
    Component(
        "Th1_17",
        "Th1_17",
        1.0,
        "T",
        _T + "CD4+ CXCR3+:0.65 CCR6+:0.55 CD161lo CD25lo:0.6 CD127+ CD27+ CD45RAlo:0.7",
    ),
    # CD8 T cells
    Component("CD8_naive", "CD8", 0.40, "T", _T + "CD8+ CD45RAhi CD27+ CD127+ CD38lo"),
    Component("CD8_memory", "CD8", 0.32, "T", _T + "CD8+ CD27+ CXCR3+ CD127+ CD45RAlo"),
    Component(
        "CD8_TEMRA", "CD8", 0.18, "T_large", _T + "CD8+ CD45RA+ CD16lo CD56lo CD127lo CXCR3lo"
    ),
    Component("CD8_MAIT", "CD8", 0.10, "T", _T + "CD8+ CD161hi CCR6+ CD127+ CD27+ CD45RAlo"),
    # other T cells: gamma-delta / double-negative and CD4+CD8+ double-positive
    Component("T_DN", "T_other", 0.8, "T", "CD3hi CD45RA+ CD161lo CD27+ CD8lo:0.8"),
    Component("T_DP", "T_other", 0.2, "T", _T + "CD4+ CD8+ CD27+ CD45RAlo"),
    # B cells
    Component("B_naive", "B_naive", 1.0, "B", "CD19+ CD20+ IgD+ CD24+:0.45 CD38lo:0.6 CD45RAhi"),
    Component(
        "B_transitional",
        "B_transitional",
        1.0,
        "B",
        "CD19+ CD20+ IgDhi CD24hi:0.4 CD38+*3:0.45 CD45RAhi",
    ),
    Component(
        "B_memory_switched", "B_memory", 0.6, "B", "CD19+ CD20+ CD27+:0.5 CD24hi CD38lo CD45RA+"
    ),
    Component(
        "B_memory_unswitched",
        "B_memory",
        0.4,
        "B",
        "CD19+ CD20+ CD27+:0.5 IgD+:0.6 CD24hi CD38lo CD45RA+",
    ),
    Component("plasmablast", "plasmablast", 1.0, "B_large", "CD19lo CD27hi CD38hi CD45RAlo"),
    Component("B_DN", "B_other", 1.0, "B", "CD19+ CD20+ CD24+ CD38lo CD45RA+ CXCR3lo"),
    # NK cells
    Component(
        "NK_bright",
        "NK_CD56bright",
        1.0,
        "NK",
        "CD56hi CD16lo:0.8 CD45RA+ CD127lo CD27lo CD38+ CD161+ CXCR3+",
    ),
    Component(
        "NK_dim",
        "NK_CD56dim",
        0.7,
        "NK_large",
        "CD56lo:0.55 CD16hi CD45RAhi CD38+ CD161lo CD8lo:0.9",
    ),
    Component("NK_dim_CD8-", "NK_CD56dim", 0.3, "NK_large", "CD56lo:0.55 CD16hi CD45RAhi CD38+"),
    # other cells in the lymphocyte scatter gate
    Component("ILC", "lymph_other", 0.3, "T", "CD127+ CD161+ CD45RAlo"),
    Component("pDC", "lymph_other", 0.2, "B_large", "CD4lo CD45RA+ CD38+"),
    Component("NK_CD56neg", "lymph_other", 0.3, "NK_large", "CD16+ CD45RA+ CD38lo"),
    Component("basophil", "lymph_other", 0.2, "NK", "CD25lo CD38+ CD127lo"),
    # myeloid cells, debris
    Component("monocyte_classical", "monocyte", 0.85, "monocyte", "CD14hi CD4lo CD38+ CD45RAlo"),
    Component("monocyte_CD16", "monocyte", 0.15, "monocyte", "CD14lo CD16+ CD4lo CD45RAlo"),
    Component("neutrophil", "granulocyte", 0.9, "granulocyte", "CD16hi CD14lo CD24hi CD38lo"),
    Component("eosinophil", "granulocyte", 0.1, "eosinophil", "CD24+ CD38lo"),
    Component("debris", "debris", 1.0, "debris", "Viabilitylo:1.4"),
)

COMPONENT_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(COMPONENTS)}

#: Every truth label, in the fixed category order used in truth files.
LEAVES: tuple[str, ...] = (
    "debris",
    "doublet",
    "doublet_myeloid",
    "dead",
    "monocyte",
    "granulocyte",
    "CD4_naive_conv",
    "Treg_naive",
    "Treg_memory",
    "Treg_FOXP3neg",
    "Th1",
    "Th2",
    "Th17",
    "Th1_17",
    "CD8",
    "T_other",
    "B_naive",
    "B_transitional",
    "B_memory",
    "plasmablast",
    "B_other",
    "NK_CD56bright",
    "NK_CD56dim",
    "lymph_other",
)

_LIVE_LYMPH = frozenset(c.label for c in COMPONENTS) - {"monocyte", "granulocyte", "debris"}
_CD4_MEMORY = frozenset({"Treg_memory", "Treg_FOXP3neg", "Th1", "Th2", "Th17", "Th1_17"})
_TREG = frozenset({"Treg_naive", "Treg_memory", "Treg_FOXP3neg"})
_CD4 = _CD4_MEMORY | {"CD4_naive_conv", "Treg_naive"}
_T_ALL = _CD4 | {"CD8", "T_other"}
_B = frozenset({"B_naive", "B_transitional", "B_memory", "plasmablast", "B_other"})
_NK = frozenset({"NK_CD56bright", "NK_CD56dim"})

#: canonical population -> leaf labels it is made of
POPULATION_LEAVES: dict[str, frozenset[str]] = {
    "lymphocytes": _LIVE_LYMPH | {"dead", "doublet"},
    "singlets": _LIVE_LYMPH | {"dead"},
    "live": _LIVE_LYMPH,
    "T": _T_ALL,
    "CD4": _CD4,
    "CD8": frozenset({"CD8"}),
    "Treg": _TREG,
    "Treg_FOXP3": frozenset({"Treg_naive", "Treg_memory"}),
    "Treg_naive": frozenset({"Treg_naive"}),
    "Treg_memory": frozenset({"Treg_memory", "Treg_FOXP3neg"}),
    "CD4_memory": _CD4_MEMORY,
    "Th1": frozenset({"Th1"}),
    "Th2": frozenset({"Th2", "Treg_memory", "Treg_FOXP3neg"}),
    "Th17": frozenset({"Th17"}),
    "nonT": _LIVE_LYMPH - _T_ALL,
    "B": _B,
    "B_naive": frozenset({"B_naive", "B_transitional"}),
    "B_memory": frozenset({"B_memory"}),
    "B_transitional": frozenset({"B_transitional"}),
    "plasmablasts": frozenset({"plasmablast"}),
    "NK": _NK,
    "NK_CD56bright": frozenset({"NK_CD56bright"}),
    "NK_CD56dim": frozenset({"NK_CD56dim"}),
}

#: canonical population -> its parent in the canonical hierarchy ("" for the root)
POPULATION_PARENTS: dict[str, str] = {
    "lymphocytes": "",
    "singlets": "lymphocytes",
    "live": "singlets",
    "T": "live",
    "CD4": "T",
    "CD8": "T",
    "Treg": "CD4",
    "Treg_FOXP3": "Treg",
    "Treg_naive": "Treg",
    "Treg_memory": "Treg",
    "CD4_memory": "CD4",
    "Th1": "CD4_memory",
    "Th2": "CD4_memory",
    "Th17": "CD4_memory",
    "nonT": "live",
    "B": "nonT",
    "B_naive": "B",
    "B_memory": "B",
    "B_transitional": "B",
    "plasmablasts": "B",
    "NK": "nonT",
    "NK_CD56bright": "NK",
    "NK_CD56dim": "NK",
}


def _parse_spec(spec: str) -> dict[str, tuple[str, float, float]]:
    """``"CD3+ CD4lo:0.6"`` -> {marker: (level, median, spread)} for every panel marker."""
    out = {m: ("negative", 0.0, 0.0) for m in MARKERS}
    for token in spec.split():
        body, _, spread_s = token.partition(":")
        body, _, mult_s = body.partition("*")
        for sym in ("lo", "hi", "+", "-"):
            if body.endswith(sym):
                marker = body[: -len(sym)]
                break
        else:
            raise ValueError(f"phenotype token {token!r} has no level (-, lo, +, hi)")
        if marker not in LEVELS:
            raise ValueError(f"phenotype token {token!r}: unknown marker {marker!r}")
        level = _SYMBOL[sym]
        if level == "negative":
            out[marker] = ("negative", 0.0, 0.0)
            continue
        spread = float(spread_s) if spread_s else SPREAD[level]
        out[marker] = (level, LEVELS[marker][level] * (float(mult_s) if mult_s else 1.0), spread)
    return out


_PARSED = {c.name: _parse_spec(c.spec) for c in COMPONENTS}

#: component -> marker -> (level, linear median): the phenotype table in one dict.
PHENOTYPES: dict[str, dict[str, tuple[str, float]]] = {
    name: {m: (lvl, med) for m, (lvl, med, _) in p.items()} for name, p in _PARSED.items()
}

#: (n_components, n_markers) medians and log-spreads, in `COMPONENTS` x `MARKERS` order
MEDIANS = np.array([[_PARSED[c.name][m][1] for m in MARKERS] for c in COMPONENTS], np.float32)
SPREADS = np.array([[_PARSED[c.name][m][2] for m in MARKERS] for c in COMPONENTS], np.float32)


def phenotype_table(kind: str = "level") -> pd.DataFrame:
    """`PHENOTYPES` as a DataFrame (components x markers) of levels or linear medians."""
    pos = 0 if kind == "level" else 1
    return pd.DataFrame(
        {m: [PHENOTYPES[c.name][m][pos] for c in COMPONENTS] for m in MARKERS},
        index=pd.Index([c.name for c in COMPONENTS], name="component"),
    )


# --- scatter profiles -------------------------------------------------------------------

#: profile -> (FSC-A median, FSC log-spread, SSC-A median, SSC log-spread), linear units
#: on an 18-bit BD scale with typical PBMC settings (lymphocytes at ~1/4 of FSC range).
SCATTER: dict[str, tuple[float, float, float, float]] = {
    "T": (60000.0, 0.11, 13000.0, 0.22),
    "T_large": (63000.0, 0.12, 15000.0, 0.23),
    "B": (57000.0, 0.11, 12500.0, 0.22),
    "B_large": (68000.0, 0.13, 15500.0, 0.24),
    "NK": (62000.0, 0.12, 15000.0, 0.23),
    "NK_large": (64000.0, 0.12, 16500.0, 0.24),
    "monocyte": (100000.0, 0.13, 45000.0, 0.25),
    "granulocyte": (115000.0, 0.11, 125000.0, 0.20),
    "eosinophil": (112000.0, 0.11, 165000.0, 0.18),
    "debris": (14000.0, 0.55, 7000.0, 0.75),
}

#: autofluorescence multiplier of each scatter profile (relative to a resting lymphocyte)
AUTOFLUORESCENCE_SCALE: dict[str, float] = {
    "T": 1.0,
    "T_large": 1.2,
    "B": 1.0,
    "B_large": 1.5,
    "NK": 1.2,
    "NK_large": 1.3,
    "monocyte": 3.0,
    "granulocyte": 6.0,
    "eosinophil": 9.0,
    "debris": 1.5,
}

# --- frequencies --------------------------------------------------------------------------

#: Parameters of the per-patient frequency model: node -> (parent, median, range low, high).
#: A patient's value is drawn log-normally around the median so that ~95 % of patients
#: fall within [low, high]. Shares of a parent that are not listed make up the remainder
#: (T of lymphocytes, CD4_naive of CD4 conventional, Th2 of CD4 conventional memory,
#: B_naive of B, NK_CD56dim of NK).
#:
#: Sources: lymphocyte subsets of healthy adults (T 60-80 %, B 5-15 %, NK 5-20 %,
#: CD4:CD8 ~2:1): Apoil et al., Cytometry B 92:191 (2017); Tosato et al., Cytometry A
#: 87:176 (2015). Treg 5-10 % of CD4, about a third naive, ~10 % of the CD25hi CD127lo gate
#: FOXP3-: Miyara et al. 2009; Santegoets et al., Cancer Immunol Immunother 64:1271 (2015).
#: Th17 1-3 % of memory CD4 (the range this project targets; IL-17+ by intracellular
#: staining, Annunziato et al., J Exp Med 204:1849 (2007)), Th1 ~30 %, Th1/17 ~8 %.
#: Naive CD4 30-60 % of CD4 in adults of MS-trial age (40-60 y). B subsets: naive 50-75 %,
#: memory 15-35 %, transitional 2-8 %, plasmablasts 0.5-3 % (Morbach et al. 2010). NK
#: CD56bright 5-10 % of NK (Cooper et al. 2001).
FREQUENCIES: dict[str, tuple[str, float, float, float]] = {
    "B": ("live", 0.09, 0.05, 0.15),
    "NK": ("live", 0.11, 0.05, 0.20),
    "lymph_other": ("live", 0.025, 0.015, 0.04),
    "CD8": ("T", 0.29, 0.22, 0.38),
    "T_other": ("T", 0.055, 0.03, 0.09),
    "Treg": ("CD4", 0.07, 0.05, 0.10),
    "Treg_naive": ("Treg", 0.32, 0.20, 0.45),
    "Treg_FOXP3neg": ("Treg", 0.08, 0.05, 0.12),
    "CD4_memory": ("CD4conv", 0.52, 0.38, 0.68),
    "Th1": ("CD4conv_memory", 0.28, 0.18, 0.40),
    "Th17": ("CD4conv_memory", 0.022, 0.012, 0.035),
    "Th1_17": ("CD4conv_memory", 0.075, 0.05, 0.11),
    "B_memory": ("B", 0.24, 0.14, 0.36),
    "B_transitional": ("B", 0.045, 0.02, 0.08),
    "plasmablasts": ("B", 0.013, 0.005, 0.03),
    "B_other": ("B", 0.045, 0.02, 0.08),
    "NK_CD56bright": ("NK", 0.07, 0.045, 0.10),
}

#: names accepted as effect keys (a multiplier on the node's share of its parent)
EFFECT_NAMES: tuple[str, ...] = tuple(FREQUENCIES)

#: Event composition of a thawed PBMC sample: node -> (median, low, high) as a share of
#: all events (debris, monocytes, granulocytes, myeloid doublets) or of the events in the
#: lymphocyte scatter region (dead lymphocytes, lymphocyte doublets).
COMPOSITION: dict[str, tuple[float, float, float]] = {
    "debris": (0.05, 0.03, 0.08),
    "monocyte": (0.14, 0.09, 0.20),
    "granulocyte": (0.02, 0.008, 0.045),
    "doublet_myeloid": (0.007, 0.004, 0.012),
    "dead": (0.05, 0.03, 0.08),
    "doublet": (0.03, 0.02, 0.045),
}


def draw_share(rng: np.random.Generator, median: float, low: float, high: float) -> float:
    """A share log-normally distributed around ``median`` with ~95 % in [low, high]."""
    sd = (np.log(high) - np.log(low)) / (2 * 1.96)
    return float(np.clip(median * np.exp(sd * rng.standard_normal()), low * 0.8, high * 1.15))


def leaf_shares(freq: dict[str, float]) -> dict[str, float]:
    """Shares of live lymphocytes per leaf label, from the node shares in ``freq``."""
    live_t = 1.0 - freq["B"] - freq["NK"] - freq["lymph_other"]
    t_cd4 = 1.0 - freq["CD8"] - freq["T_other"]
    cd4 = live_t * t_cd4
    treg = cd4 * freq["Treg"]
    conv = cd4 - treg
    mem = conv * freq["CD4_memory"]
    th2 = 1.0 - freq["Th1"] - freq["Th17"] - freq["Th1_17"]
    b = freq["B"]
    b_naive = 1.0 - freq["B_memory"] - freq["B_transitional"] - freq["plasmablasts"]
    b_naive -= freq["B_other"]
    nk = freq["NK"]
    shares = {
        "CD4_naive_conv": conv - mem,
        "Treg_naive": treg * freq["Treg_naive"],
        "Treg_FOXP3neg": treg * freq["Treg_FOXP3neg"],
        "Treg_memory": treg * (1.0 - freq["Treg_naive"] - freq["Treg_FOXP3neg"]),
        "Th1": mem * freq["Th1"],
        "Th17": mem * freq["Th17"],
        "Th1_17": mem * freq["Th1_17"],
        "Th2": mem * th2,
        "CD8": live_t * freq["CD8"],
        "T_other": live_t * freq["T_other"],
        "B_naive": b * b_naive,
        "B_transitional": b * freq["B_transitional"],
        "B_memory": b * freq["B_memory"],
        "plasmablast": b * freq["plasmablasts"],
        "B_other": b * freq["B_other"],
        "NK_CD56bright": nk * freq["NK_CD56bright"],
        "NK_CD56dim": nk * (1.0 - freq["NK_CD56bright"]),
        "lymph_other": freq["lymph_other"],
    }
    if min(shares.values()) <= 0:
        bad = sorted(k for k, v in shares.items() if v <= 0)
        raise ValueError(f"frequencies leave no room for {bad}: {freq}")
    return shares


# --- truth masks --------------------------------------------------------------------------


def truth_mask(labels: Iterable[str] | pd.Series | pd.Categorical, population: str) -> np.ndarray:
    """Boolean mask of the events whose truth label belongs to ``population``.

    ``population`` is a canonical population name (`POPULATION_LEAVES`) or a leaf label;
    ``labels`` the per-event truth labels (array, Series or Categorical, as read from a
    ``.truth.parquet`` file or returned by `simulate_sample`).
    """
    if population in POPULATION_LEAVES:
        leaves = POPULATION_LEAVES[population]
    elif population in LEAVES:
        leaves = frozenset({population})
    else:
        raise SimulationError(
            f"unknown population {population!r}; canonical populations are "
            f"{sorted(POPULATION_LEAVES)} and leaf labels are {list(LEAVES)}"
        )
    if isinstance(labels, pd.Series):
        labels = labels.array if isinstance(labels.dtype, pd.CategoricalDtype) else labels
    if isinstance(labels, pd.Categorical):
        cats = np.asarray(labels.categories, dtype=object)
        hit = np.isin(cats, list(leaves))
        codes = np.asarray(labels.codes)
        return np.where(codes >= 0, hit[np.maximum(codes, 0)], False)
    return np.isin(np.asarray(labels, dtype=object), list(leaves))
