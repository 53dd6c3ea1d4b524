"""Event generation for one simulated acquisition (vectorised over events, float32).

The order of operations follows the physics of a measurement:

1. count how many events of each kind the tube holds (multinomial on the composition and
   the per-patient frequencies);
2. make every cell in linear space: log-normal marker intensities around the phenotype
   medians (`biology.MEDIANS`), scaled with cell size; scatter from the cell's profile;
   dead cells lose antigen and scatter and take up the viability dye; doublets add the
   light of two cells (areas add, heights do not);
3. spill the fluorochrome light into the detectors (`panel.reference_spillover`), add
   autofluorescence, photon-counting noise proportional to the square root of the signal
   and electronic noise (which spreads negative populations below zero);
4. apply the instrument state of the day: per-detector gain drift and scatter scale, so
   that fixed gate coordinates do not transfer between files; the spillover matrix of
   that day is returned (the one a compensation from that day's controls would give);
5. shuffle into acquisition order and stamp a Time channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from immunoprofile.simulate import biology as bio
from immunoprofile.simulate import panel

N_FLUOR = len(panel.FLUORESCENCE_CHANNELS)
_COMP_SCATTER = [c.scatter for c in bio.COMPONENTS]
_SCATTER_NAMES = list(bio.SCATTER)
_COMP_PROFILE = np.array([_SCATTER_NAMES.index(s) for s in _COMP_SCATTER], dtype=np.int64)
_PROFILE = np.array([bio.SCATTER[s] for s in _SCATTER_NAMES], dtype=np.float32)
_PROFILE_AF = np.array([bio.AUTOFLUORESCENCE_SCALE[s] for s in _SCATTER_NAMES], np.float32)
_AF = np.array([panel.AUTOFLUORESCENCE[c] for c in panel.FLUORESCENCE_CHANNELS], np.float32)
_ENOISE = np.array([panel.ELECTRONIC_NOISE[c] for c in panel.FLUORESCENCE_CHANNELS], np.float32)
_PHOTON = np.array([panel.PHOTON_UNITS[c] for c in panel.FLUORESCENCE_CHANNELS], np.float32)
_LABEL_CODE = {lab: i for i, lab in enumerate(bio.LEAVES)}
_COMP_LABEL = np.array([_LABEL_CODE[c.label] for c in bio.COMPONENTS], dtype=np.int8)
_VIAB = bio.LEVELS["Viability"]
_I_VIAB = panel.MARKERS.index("Viability")
_FSC_THRESHOLD = 5000.0  # acquisition threshold on FSC-H: nothing smaller is recorded
_SATURATION = panel.RANGE - 1.0
_TIMESTEP = 0.01  # seconds per Time unit ($TIMESTEP)
_EVENT_RATE = 2500.0  # events per second


@dataclass(frozen=True)
class InstrumentState:
    """Per-file instrument and staining state (all multiplicative factors around 1).

    ``gains`` per fluorescence detector, ``fsc_gain``/``ssc_gain`` for scatter, and
    ``staining`` per marker (reagent lot, staining time, cell number per test);
    ``run_slope`` the relative change of each detector's gain from the first to the last
    event of the acquisition; ``spill_error`` the relative error of each spillover
    coefficient as measured from that day's single-stain controls (what ``$SPILLOVER``
    says differs from the true spillover by this much, as in real compensation).
    """

    gains: np.ndarray
    fsc_gain: float
    ssc_gain: float
    staining: np.ndarray
    run_slope: np.ndarray
    spill_error: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, drift: float) -> InstrumentState:
        """Draw the state of one acquisition day; ``drift`` scales every deviation.

        At ``drift=1`` detector gains vary with a log-SD of 0.18 (about ±20 % typical,
        up to ±45 %), scatter by 7-9 %, staining by 6 %, gains drift by ~3 % during the
        run and the recorded spillover coefficients are off by ~4 % (relative; this one
        does not grow beyond drift 1): the
        day-to-day variation of a cytometer whose voltages are set by daily performance
        tracking but whose target values are not re-optimised.
        """
        d = float(drift)
        return cls(
            gains=np.exp(d * 0.18 * rng.standard_normal(N_FLUOR)).astype(np.float32),
            fsc_gain=float(np.exp(d * 0.07 * rng.standard_normal())),
            ssc_gain=float(np.exp(d * 0.09 * rng.standard_normal())),
            staining=np.exp(d * 0.06 * rng.standard_normal(len(panel.MARKERS))).astype(np.float32),
            run_slope=(d * 0.03 * rng.standard_normal(N_FLUOR)).astype(np.float32),
            # compensation quality depends on the lab's controls, not on instrument
            # drift: the error grows with ``drift`` only up to drift 1
            spill_error=min(d, 1.0)
            * 0.04
            * rng.standard_normal((N_FLUOR, N_FLUOR))
            * (1 - np.eye(N_FLUOR)),
        )

    def spillover(self) -> np.ndarray:
        """The spillover matrix seen in this file: S_ij * g_j / g_i (detector units)."""
        s = panel.reference_spillover()
        g = self.gains.astype(float)
        return s * g[None, :] / g[:, None]

    def recorded_spillover(self) -> np.ndarray:
        """The spillover matrix written as ``$SPILLOVER``: `spillover` with the
        measurement error of that day's compensation controls."""
        return self.spillover() * (1.0 + self.spill_error)


def _component_probs(labels_share: dict[str, float]) -> np.ndarray:
    """Probability of each component, given shares per leaf label (weights within)."""
    p = np.zeros(len(bio.COMPONENTS))
    for i, c in enumerate(bio.COMPONENTS):
        if c.label in labels_share:
            p[i] = labels_share[c.label] * c.weight
    return p / p.sum()


def _draw_components(rng: np.random.Generator, n: int, p: np.ndarray) -> np.ndarray:
    counts = rng.multinomial(n, p)
    return np.repeat(np.arange(len(p)), counts)


def scatter_profiles(table: dict[str, tuple[float, float, float, float]]) -> np.ndarray:
    """A scatter-profile table (`biology.SCATTER` layout) as the array `simulate_events`
    takes."""
    return np.array([table[s] for s in _SCATTER_NAMES], dtype=np.float32)


def _make_cells(
    rng: np.random.Generator,
    comp: np.ndarray,
    state: InstrumentState,
    medians: np.ndarray,
    spreads: np.ndarray,
    profiles: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Marker signal (n, n_markers), FSC-A, SSC-A and autofluorescence scale per cell."""
    n = comp.size
    prof = _COMP_PROFILE[comp]
    pr = profiles[prof]
    z_size = rng.standard_normal(n, dtype=np.float32)
    z_ssc = rng.standard_normal(n, dtype=np.float32)
    log_size = pr[:, 1] * z_size
    fsc = pr[:, 0] * np.exp(log_size)
    ssc = pr[:, 2] * np.exp(pr[:, 3] * (0.45 * z_size + 0.893 * z_ssc))
    # log-normal around the median; antigen content grows with cell size (~ FSC^0.6);
    # per-file staining and per-person antigen density scale each marker
    z = rng.standard_normal((n, len(panel.MARKERS)), dtype=np.float32)
    z *= spreads[comp]
    z += (0.6 * log_size)[:, None]
    z += np.log(state.staining)[None, :]
    sig = np.exp(z, out=z)
    sig *= medians[comp]
    af = _PROFILE_AF[prof] * np.exp(0.3 * rng.standard_normal(n, dtype=np.float32) + log_size)
    return sig, fsc, ssc, af


def _heights(rng: np.random.Generator, area: np.ndarray, ratio: float, sd: float) -> np.ndarray:
    """Pulse height of singlets: area / (ratio * jitter)."""
    jitter = np.exp(sd * rng.standard_normal(area.size, dtype=np.float32))
    return area / (ratio * jitter)


def simulate_events(
    rng: np.random.Generator,
    n_events: int,
    leaf_shares: dict[str, float],
    composition: dict[str, float],
    state: InstrumentState,
    medians: np.ndarray | None = None,
    spreads: np.ndarray | None = None,
    profiles: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate one file: events (n_events x channels, `panel.CHANNELS` order, float32)
    and truth label codes (int8 indices into `biology.LEAVES`), in acquisition order.

    ``medians``/``spreads`` (components x markers) and ``profiles`` (`scatter_profiles`)
    replace `biology.MEDIANS`, `biology.SPREADS` and `biology.SCATTER` (see
    `immunoprofile.simulate.conditions`)."""
    medians = bio.MEDIANS if medians is None else medians
    spreads = bio.SPREADS if spreads is None else spreads
    profiles = _PROFILE if profiles is None else profiles
    c = composition
    outer = np.array(
        [c["debris"], c["monocyte"], c["granulocyte"], c["doublet_myeloid"]], dtype=float
    )
    n_debris, n_mono, n_gran, n_mdbl, n_lreg = rng.multinomial(n_events, [*outer, 1 - outer.sum()])
    n_dead, n_dbl, n_live = rng.multinomial(
        n_lreg, [c["dead"], c["doublet"], 1 - c["dead"] - c["doublet"]]
    )

    p_lymph = _component_probs(leaf_shares)
    p_mono = _component_probs({"monocyte": 1.0})
    p_gran = _component_probs({"granulocyte": 1.0})
    p_debris = _component_probs({"debris": 1.0})
    # myeloid doublets: a monocyte (80 %) or granulocyte with a lymphocyte or another
    # myeloid cell
    n_mdbl_gran = rng.binomial(n_mdbl, 0.2)
    singles = [
        _draw_components(rng, n_live, p_lymph),
        _draw_components(rng, n_mono, p_mono),
        _draw_components(rng, n_gran, p_gran),
        _draw_components(rng, n_debris, p_debris),
    ]
    dead = _draw_components(rng, n_dead, p_lymph)
    pair_a = _draw_components(rng, n_dbl, p_lymph)
    pair_b = _draw_components(rng, n_dbl, p_lymph)
    mpair_a = np.concatenate(
        [
            _draw_components(rng, n_mdbl - n_mdbl_gran, p_mono),
            _draw_components(rng, n_mdbl_gran, p_gran),
        ]
    )
    mpair_b = _draw_components(rng, n_mdbl, 0.75 * p_lymph + 0.25 * p_mono)
    comp = np.concatenate([*singles, dead, pair_a, pair_b, mpair_a, mpair_b])
    sig, fsc, ssc, af = _make_cells(rng, comp, state, medians, spreads, profiles)

    n_single = sum(s.size for s in singles)
    sl_dead = slice(n_single, n_single + n_dead)
    # dead and dying cells: shrunken (lower FSC), more granular (higher SSC), antigens
    # partly lost, brightly stained by the amine-reactive viability dye
    sig[sl_dead] *= (0.45 * np.exp(0.35 * rng.standard_normal(n_dead, dtype=np.float32)))[:, None]
    # about one in six is still dying (membrane partly intact): intermediate dye uptake
    dying = rng.random(n_dead) < 0.16
    viab_level = np.where(dying, _VIAB["positive"], _VIAB["bright"]).astype(np.float32)
    sig[sl_dead, _I_VIAB] = (
        viab_level
        * state.staining[_I_VIAB]
        * np.exp(np.where(dying, 0.6, 0.45) * rng.standard_normal(n_dead, dtype=np.float32))
    )
    fsc[sl_dead] *= np.where(dying, 0.88, 0.7) * np.exp(
        0.12 * rng.standard_normal(n_dead, dtype=np.float32)
    )
    ssc[sl_dead] *= 1.25
    af[sl_dead] *= 2.0
    # debris sits above the FSC threshold (smaller particles are not recorded)
    sl_debris = slice(n_single - singles[3].size, n_single)
    fsc[sl_debris] = np.maximum(
        fsc[sl_debris], _FSC_THRESHOLD * (1.0 + 0.3 * rng.random(singles[3].size, dtype=np.float32))
    )

    fsc_h = _heights(rng, fsc, 1.08, 0.035)
    ssc_h = _heights(rng, ssc, 1.10, 0.05)

    # combine doublet partners: light adds up in areas; heights grow less than areas
    n_cells_single = n_single + n_dead
    a0 = n_cells_single
    idx_a = np.concatenate(
        [np.arange(a0, a0 + n_dbl), np.arange(a0 + 2 * n_dbl, a0 + 2 * n_dbl + n_mdbl)]
    )
    idx_b = np.concatenate(
        [
            np.arange(a0 + n_dbl, a0 + 2 * n_dbl),
            np.arange(a0 + 2 * n_dbl + n_mdbl, a0 + 2 * n_dbl + 2 * n_mdbl),
        ]
    )
    h_factor = 1.0 + 0.65 * rng.random(idx_a.size, dtype=np.float32)
    d_sig = sig[idx_a] + sig[idx_b]
    d_fsc = fsc[idx_a] + fsc[idx_b]
    d_ssc = ssc[idx_a] + ssc[idx_b]
    d_af = af[idx_a] + af[idx_b]
    d_fsc_h = np.maximum(fsc_h[idx_a], fsc_h[idx_b]) * h_factor
    d_ssc_h = np.maximum(ssc_h[idx_a], ssc_h[idx_b]) * h_factor
    d_fsc_h = np.minimum(d_fsc_h, d_fsc / 1.02)
    d_ssc_h = np.minimum(d_ssc_h, d_ssc / 1.02)

    keep = slice(0, n_cells_single)
    sig = np.concatenate([sig[keep], d_sig])
    fsc = np.concatenate([fsc[keep], d_fsc])
    ssc = np.concatenate([ssc[keep], d_ssc])
    fsc_h = np.concatenate([fsc_h[keep], d_fsc_h])
    ssc_h = np.concatenate([ssc_h[keep], d_ssc_h])
    af = np.concatenate([af[keep], d_af])
    labels = np.concatenate(
        [
            _COMP_LABEL[comp[:n_single]],
            np.full(n_dead, _LABEL_CODE["dead"], np.int8),
            np.full(n_dbl, _LABEL_CODE["doublet"], np.int8),
            np.full(n_mdbl, _LABEL_CODE["doublet_myeloid"], np.int8),
        ]
    )
    n = labels.size

    # light into detectors: spillover, autofluorescence, photon and electronic noise
    det = sig @ panel.reference_spillover().astype(np.float32)
    det += af[:, None] * _AF[None, :]
    # photon counting (variance proportional to the signal) and electronic noise are
    # independent and Gaussian at these counts: one draw with the summed variance
    noise_sd = np.maximum(det, 0.0)
    noise_sd *= _PHOTON[None, :]
    noise_sd += (_ENOISE**2)[None, :]
    np.sqrt(noise_sd, out=noise_sd)
    noise_sd *= rng.standard_normal((n, N_FLUOR), dtype=np.float32)
    det += noise_sd
    det *= state.gains[None, :]

    out = np.empty((n, len(panel.CHANNELS)), dtype=np.float32)
    scat_noise = rng.standard_normal((n, 4), dtype=np.float32) * np.float32(120.0)
    out[:, 0] = fsc * state.fsc_gain + scat_noise[:, 0]
    out[:, 1] = fsc_h * state.fsc_gain + scat_noise[:, 1]
    out[:, 2] = ssc * state.ssc_gain + scat_noise[:, 2]
    out[:, 3] = ssc_h * state.ssc_gain + scat_noise[:, 3]
    out[:, 4 : 4 + N_FLUOR] = det
    np.minimum(out, _SATURATION, out=out)
    np.maximum(out[:, :4], 0.0, out=out[:, :4])

    order = rng.permutation(n)
    out = out[order]
    labels = labels[order]
    times = np.cumsum(rng.exponential(1.0 / _EVENT_RATE, n)) / _TIMESTEP
    out[:, -1] = times.astype(np.float32)
    # slow drift during the acquisition (laser warm-up, fluidics): a few per cent per
    # detector from the first event to the last
    frac = np.linspace(-0.5, 0.5, n, dtype=np.float32)[:, None]
    out[:, 4 : 4 + N_FLUOR] *= 1.0 + frac * state.run_slope[None, :]
    return np.ascontiguousarray(out), labels
