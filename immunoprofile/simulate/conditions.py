"""Acquisition and donor conditions beyond the default cohort, toward what real data show.

The default simulated cohort is thawed PBMC on one well-set instrument. Real files also
come from whole blood (many granulocytes), other scatter voltages and scales, dimmer
reagents, PBMC whose lymphocytes sit low on forward scatter and close to debris (as in the
HIPC Lyoplate files), and donors in whom IgD, CD24 and CD38 show one broad peak on B cells
instead of separated ones. `Conditions` describes one such setting; `Conditions.draw`
picks one at random (the gating benchmark draws a new one for every cohort, so no gate
constant can be tuned to a fixed list).

>>> Conditions().is_default
True
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from immunoprofile.exceptions import SimulationError
from immunoprofile.simulate import biology as bio
from immunoprofile.simulate.panel import MARKERS

#: event composition of lysed whole blood (share of all events): median, low, high.
#: Granulocytes are 40-75 % of leukocytes and monocytes 2-10 % (e.g. Dacie and Lewis,
#: Practical Haematology, 12th ed., table 2.2); fresh blood has few dead cells.
WHOLE_BLOOD: dict[str, tuple[float, float, float]] = {
    "debris": (0.04, 0.02, 0.07),
    "monocyte": (0.06, 0.03, 0.09),
    "granulocyte": (0.55, 0.42, 0.66),
    "doublet_myeloid": (0.015, 0.008, 0.025),
    "dead": (0.015, 0.008, 0.03),
    "doublet": (0.03, 0.02, 0.045),
}

#: scatter profiles of PBMC with lymphocytes low on forward scatter: monocytes only ~1.3x
#: the lymphocytes' FSC and large, diffuse debris reaching into the lymphocyte cloud (the
#: layout of the Lyoplate tubes' FSC-A/SSC-A)
LOW_FSC_SCATTER: dict[str, tuple[float, float, float, float]] = {
    "monocyte": (80000.0, 0.14, 38000.0, 0.28),
    "debris": (30000.0, 0.5, 9000.0, 0.7),
}

_B_UNIMODAL = ("IgD", "CD24", "CD38")
_B_LABELS = frozenset({"B_naive", "B_transitional", "B_memory", "plasmablast", "B_other"})


@dataclass(frozen=True)
class Conditions:
    """How one cohort was acquired and who gave the blood.

    Attributes
    ----------
    fsc_scale, ssc_scale : forward / side scatter voltage factors (1 = the default
        instrument set-up; 0.5 puts every cloud at half the channel value).
    stain : brightness of every antibody stain (1 = default; 0.4 = reagents giving 40 %
        of the signal: dimmer stains, worse separation from the noise). The viability dye
        is not affected.
    whole_blood : lysed whole blood (`WHOLE_BLOOD` composition) instead of PBMC.
    low_fsc : PBMC with lymphocytes low on FSC, close to debris (`LOW_FSC_SCATTER`).
    unimodal_b : share of donors whose B cells show IgD, CD24 and CD38 as one broad peak.
    """

    fsc_scale: float = 1.0
    ssc_scale: float = 1.0
    stain: float = 1.0
    whole_blood: bool = False
    low_fsc: bool = False
    unimodal_b: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fsc_scale", "ssc_scale", "stain"):
            v = getattr(self, name)
            if not np.isfinite(v) or v <= 0:
                raise SimulationError(f"conditions: {name} must be a positive number, got {v!r}")
        if not 0.0 <= self.unimodal_b <= 1.0:
            raise SimulationError(
                f"conditions: unimodal_b must be in [0, 1], got {self.unimodal_b}"
            )

    @property
    def is_default(self) -> bool:
        return self == Conditions()

    def describe(self) -> str:
        """``fsc x0.62, ssc x1.3, stain x0.5, whole blood, 30% unimodal-B donors``."""
        parts = []
        if self.fsc_scale != 1.0:
            parts.append(f"fsc x{self.fsc_scale:.2f}")
        if self.ssc_scale != 1.0:
            parts.append(f"ssc x{self.ssc_scale:.2f}")
        if self.stain != 1.0:
            parts.append(f"stain x{self.stain:.2f}")
        if self.whole_blood:
            parts.append("whole blood")
        if self.low_fsc:
            parts.append("lymphocytes low on FSC")
        if self.unimodal_b:
            parts.append(f"{self.unimodal_b:.0%} unimodal-B donors")
        return ", ".join(parts) or "default"

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Conditions:
        """Random conditions: each departure from the default with probability 1/3 (the
        scatter voltages log-uniform in [0.5, 2], stains in [0.35, 0.8], a third of the
        donors unimodal on B markers)."""

        def maybe() -> bool:
            return bool(rng.random() < 1.0 / 3.0)

        fsc = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) if maybe() else 1.0
        ssc = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) if maybe() else 1.0
        stain = float(rng.uniform(0.35, 0.8)) if maybe() else 1.0
        whole_blood = maybe()
        low_fsc = (not whole_blood) and maybe()
        unimodal = 1.0 / 3.0 if maybe() else 0.0
        return cls(round(fsc, 3), round(ssc, 3), round(stain, 3), whole_blood, low_fsc, unimodal)

    # --- what the engine uses ---------------------------------------------------------

    def composition(self) -> dict[str, tuple[float, float, float]]:
        """The event-composition table (`biology.COMPOSITION` or `WHOLE_BLOOD`)."""
        return dict(WHOLE_BLOOD if self.whole_blood else bio.COMPOSITION)

    def scatter(self) -> dict[str, tuple[float, float, float, float]]:
        """Scatter profiles (`biology.SCATTER`, with `LOW_FSC_SCATTER` where asked)."""
        out = dict(bio.SCATTER)
        if self.low_fsc:
            out.update(LOW_FSC_SCATTER)
        return out

    def staining(self) -> np.ndarray:
        """Per-marker staining factor (viability dye left at 1)."""
        out = np.full(len(MARKERS), self.stain, dtype=np.float32)
        out[MARKERS.index("Viability")] = 1.0
        return out


def unimodal_b_phenotypes(
    medians: np.ndarray, spreads: np.ndarray, strength: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Medians and log-spreads with IgD, CD24 and CD38 made one broad peak on B cells.

    For each of those markers, every B component's log-median is pulled toward the mean
    over the B components by ``strength`` x 70 % (negative levels count as a dim level
    there) and its spread widened to at least 0.6: the groups overlap into one peak while
    each cell keeps its truth label, as in donors whose B subsets are not separable by a
    density valley. Returns new arrays."""
    med, spr = medians.copy(), spreads.copy()
    rows = [i for i, c in enumerate(bio.COMPONENTS) if c.label in _B_LABELS]
    for marker in _B_UNIMODAL:
        j = MARKERS.index(marker)
        vals = med[rows, j].astype(float)
        vals = np.where(vals > 0, vals, 0.5 * bio.LEVELS[marker]["dim"])
        logs = np.log(vals)
        centre = float(logs.mean())
        pulled = centre + (1.0 - 0.7 * strength) * (logs - centre)
        med[rows, j] = np.exp(pulled).astype(med.dtype)
        spr[rows, j] = np.maximum(spr[rows, j], 0.6 * strength).astype(spr.dtype)
    return med, spr


def with_conditions(state, conditions: Conditions):
    """An `engine.InstrumentState` with the conditions' scatter voltages and stain."""
    return dataclasses.replace(
        state,
        fsc_gain=state.fsc_gain * conditions.fsc_scale,
        ssc_gain=state.ssc_gain * conditions.ssc_scale,
        staining=state.staining * conditions.staining(),
    )


__all__ = ["LOW_FSC_SCATTER", "WHOLE_BLOOD", "Conditions", "unimodal_b_phenotypes"]
