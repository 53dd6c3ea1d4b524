"""The simulated instrument: a 20-colour tube on a five-laser BD-style analyser.

Channels are named the way BD FACSDiva names them (fluorochrome + ``-A``), in laser order
(blue, yellow-green, red, violet, ultraviolet), after the four scatter parameters; ``Time``
comes last. Every channel has ``$PnR`` = 262144 (18-bit linear data, as on the LSRFortessa
and FACSymphony).

The fluorochrome of each marker follows the usual panel-design rule: bright fluorochromes
(PE, APC, BV421, BUV395) for weakly expressed or critical antigens (CD25, FOXP3, CXCR3,
CD3), dimmer ones (FITC, PerCP-Cy5.5, BV510) for abundant antigens (CD45RA, CD161, CD4).
The viability dye is a near-infrared amine-reactive dye read in the APC-Cy7 detector.
"""

from __future__ import annotations

import numpy as np

#: Value of ``$PnR`` for every channel (18-bit linear scale).
RANGE = 262144.0

#: Scatter and time channels, in file order before / after the fluorescence channels.
SCATTER_CHANNELS = ("FSC-A", "FSC-H", "SSC-A", "SSC-H")
TIME_CHANNEL = "Time"

#: marker -> (detector channel $PnN, $PnS string written to the file).
#: Most $PnS values are plain marker names; three are written the way many labs type them
#: ("CD25 PE", "CD127-PE-Cy7", "FoxP3") so that readers exercise panel-name normalisation
#: (fluorochrome suffixes and case). ``PANEL_PLAIN`` below gives the plain-name variant.
PANEL: dict[str, tuple[str, str]] = {
    "CD45RA": ("FITC-A", "CD45RA"),
    "CD161": ("PerCP-Cy5.5-A", "CD161"),
    "CD25": ("PE-A", "CD25 PE"),
    "CD24": ("PE-CF594-A", "CD24"),
    "CD20": ("PE-Cy5-A", "CD20"),
    "CD127": ("PE-Cy7-A", "CD127-PE-Cy7"),
    "FOXP3": ("APC-A", "FoxP3"),
    "IgD": ("APC-R700-A", "IgD"),
    "Viability": ("APC-Cy7-A", "Viability"),
    "CXCR3": ("BV421-A", "CXCR3"),
    "CD4": ("BV510-A", "CD4"),
    "CCR6": ("BV605-A", "CCR6"),
    "CD56": ("BV650-A", "CD56"),
    "CD27": ("BV711-A", "CD27"),
    "CD38": ("BV786-A", "CD38"),
    "CD3": ("BUV395-A", "CD3"),
    "CD8": ("BUV496-A", "CD8"),
    "CD19": ("BUV563-A", "CD19"),
    "CD16": ("BUV737-A", "CD16"),
    "CD14": ("BUV805-A", "CD14"),
}

#: Same panel with every $PnS a bare marker name.
PANEL_PLAIN: dict[str, tuple[str, str]] = {m: (ch, m) for m, (ch, _) in PANEL.items()}

#: Markers in simulation order (= fluorescence channel order in the file).
MARKERS: tuple[str, ...] = tuple(PANEL)
FLUORESCENCE_CHANNELS: tuple[str, ...] = tuple(ch for ch, _ in PANEL.values())
CHANNELS: tuple[str, ...] = (*SCATTER_CHANNELS, *FLUORESCENCE_CHANNELS, TIME_CHANNEL)

# Spillover of each fluorochrome (row, named by its primary detector) into the other
# detectors, as a fraction of its signal in its own detector. Magnitudes are typical of
# published FACSymphony/LSRFortessa spillover tables and fluorochrome spectra (BD Biosciences
# spectrum viewer; e.g. PE -> PE-CF594 ~0.3, PE-Cy5 -> APC-R700 ~0.4 via red-laser
# cross-excitation, BV650 -> BV711 ~0.25, BUV496 -> BV510 ~0.25 because BUV496 is also
# excited by the violet laser). Unlisted pairs are 0.
_SPILL: dict[str, dict[str, float]] = {
    "FITC-A": {"PerCP-Cy5.5-A": 0.025, "PE-A": 0.012, "BV510-A": 0.004},
    "PerCP-Cy5.5-A": {"PE-Cy5-A": 0.32, "APC-R700-A": 0.14, "PE-Cy7-A": 0.03, "BUV737-A": 0.02},
    "PE-A": {"PE-CF594-A": 0.28, "PE-Cy5-A": 0.07, "PE-Cy7-A": 0.015, "FITC-A": 0.003},
    "PE-CF594-A": {"PE-Cy5-A": 0.22, "PE-A": 0.05, "APC-A": 0.02, "PE-Cy7-A": 0.025},
    "PE-Cy5-A": {
        "APC-A": 0.28,
        "APC-R700-A": 0.42,
        "PerCP-Cy5.5-A": 0.55,
        "PE-Cy7-A": 0.08,
        "BV711-A": 0.01,
    },
    "PE-Cy7-A": {"APC-Cy7-A": 0.11, "PE-Cy5-A": 0.02, "BUV805-A": 0.05, "BV786-A": 0.02},
    "APC-A": {"APC-R700-A": 0.18, "APC-Cy7-A": 0.03, "PE-Cy5-A": 0.10},
    "APC-R700-A": {"APC-Cy7-A": 0.15, "APC-A": 0.06, "PE-Cy5-A": 0.04, "BV711-A": 0.03},
    "APC-Cy7-A": {"APC-R700-A": 0.05, "PE-Cy7-A": 0.03, "BV786-A": 0.01},
    "BV421-A": {"BV510-A": 0.12, "FITC-A": 0.01, "BUV496-A": 0.05},
    "BV510-A": {"BV605-A": 0.05, "FITC-A": 0.12, "BUV496-A": 0.02},
    "BV605-A": {"BV650-A": 0.20, "PE-CF594-A": 0.06, "BV711-A": 0.05, "PE-A": 0.02},
    "BV650-A": {"BV711-A": 0.25, "BV605-A": 0.05, "PE-Cy5-A": 0.04, "APC-A": 0.02},
    "BV711-A": {"BV786-A": 0.22, "BV650-A": 0.05, "APC-R700-A": 0.05, "PerCP-Cy5.5-A": 0.03},
    "BV786-A": {"BV711-A": 0.03, "APC-Cy7-A": 0.03, "PE-Cy7-A": 0.03, "BUV805-A": 0.10},
    "BUV395-A": {"BUV496-A": 0.04, "BV421-A": 0.02},
    "BUV496-A": {"BV510-A": 0.25, "BV421-A": 0.08, "BUV563-A": 0.02, "FITC-A": 0.03},
    "BUV563-A": {"PE-A": 0.12, "PE-CF594-A": 0.05, "BV605-A": 0.03},
    "BUV737-A": {"BUV805-A": 0.15, "BV711-A": 0.08, "BV786-A": 0.05, "APC-R700-A": 0.02},
    "BUV805-A": {"BV786-A": 0.12, "BUV737-A": 0.03, "APC-Cy7-A": 0.02, "PE-Cy7-A": 0.02},
}


def reference_spillover() -> np.ndarray:
    """Spillover matrix of the reference instrument (rows: fluorochromes, columns:
    detectors, both in `FLUORESCENCE_CHANNELS` order; unit diagonal).

    Observed detector signal = true fluorochrome signal @ matrix, the FCS ``$SPILLOVER``
    convention; compensation multiplies by its inverse.
    """
    idx = {ch: i for i, ch in enumerate(FLUORESCENCE_CHANNELS)}
    s = np.eye(len(FLUORESCENCE_CHANNELS))
    for src, row in _SPILL.items():
        for dst, v in row.items():
            s[idx[src], idx[dst]] = v
    return s


def format_spillover(matrix: np.ndarray, channels: tuple[str, ...] = FLUORESCENCE_CHANNELS) -> str:
    """The ``$SPILLOVER`` keyword value: ``n,name1,...,namen,m11,m12,...`` (row-major)."""
    values = ",".join(f"{v:.6g}" for v in np.asarray(matrix, dtype=float).ravel())
    return f"{len(channels)},{','.join(channels)},{values}"


# Autofluorescence of an unstained resting lymphocyte in each detector (linear units at
# reference settings): highest in the violet/UV-excited blue-green detectors (NAD(P)H and
# flavins), small in the red detectors.
AUTOFLUORESCENCE: dict[str, float] = {
    "FITC-A": 140.0,
    "PerCP-Cy5.5-A": 60.0,
    "PE-A": 80.0,
    "PE-CF594-A": 60.0,
    "PE-Cy5-A": 40.0,
    "PE-Cy7-A": 30.0,
    "APC-A": 20.0,
    "APC-R700-A": 20.0,
    "APC-Cy7-A": 20.0,
    "BV421-A": 110.0,
    "BV510-A": 180.0,
    "BV605-A": 70.0,
    "BV650-A": 50.0,
    "BV711-A": 40.0,
    "BV786-A": 30.0,
    "BUV395-A": 80.0,
    "BUV496-A": 190.0,
    "BUV563-A": 60.0,
    "BUV737-A": 30.0,
    "BUV805-A": 30.0,
}

# Standard deviation of the electronic (baseline) noise of each detector, linear units;
# this is what spreads a compensated negative population below zero.
ELECTRONIC_NOISE: dict[str, float] = {
    ch: (45.0 if ch.startswith(("BUV", "BV")) else 30.0) for ch in FLUORESCENCE_CHANNELS
}

# Linear units per photoelectron: the variance of a detector signal D from photon counting
# is PHOTON_UNITS * D (Poisson). Red-laser detectors have a lower quantum efficiency, i.e.
# more units per photoelectron and more spreading error.
PHOTON_UNITS: dict[str, float] = {
    ch: (14.0 if ch.startswith("APC") else 8.0) for ch in FLUORESCENCE_CHANNELS
}

# Photomultiplier voltages written as $PnV (informational, like BD files).
VOLTAGES: dict[str, int] = {
    "FSC-A": 420,
    "FSC-H": 420,
    "SSC-A": 260,
    "SSC-H": 260,
    **{ch: 450 + 17 * (i % 9) for i, ch in enumerate(FLUORESCENCE_CHANNELS)},
}
