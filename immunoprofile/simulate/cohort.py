"""Simulated trial cohorts: patients x visits of FCS files with per-event truth.

Randomness is derived from one integer seed through ``numpy.random.SeedSequence`` keyed by
(seed, purpose, patient, visit), so the same seed gives byte-identical files and each file
can be regenerated on its own.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from immunoprofile.exceptions import SimulationError
from immunoprofile.hierarchy import TABLE_COLUMNS, hierarchy_table
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table
from immunoprofile.simulate import biology as bio
from immunoprofile.simulate import panel
from immunoprofile.simulate.conditions import (
    Conditions,
    unimodal_b_phenotypes,
    with_conditions,
)
from immunoprofile.simulate.engine import InstrumentState, scatter_profiles, simulate_events

#: Default baseline -> follow-up effect: multiplier on a population's share of its parent
#: (Treg share of CD4 up 30 %, Th17 share of memory CD4 down 30 %; B and NK unchanged).
DEFAULT_EFFECTS: dict[str, float] = {"Treg": 1.3, "Th17": 0.7}

CYTOMETER = "FACSymphony A5"
_VISIT_NOISE = 0.07  # log-SD of visit-to-visit biological variation of every share
_ANTIGEN_SD = 0.08  # log-SD of a person's antigen density per marker
_EFFECT_SPREAD = 0.25  # relative patient-to-patient spread of an effect's log size
_PURPOSE = {"patient": 1, "file": 2, "effect": 3, "date": 4, "tube": 5, "conditions": 6}


@dataclass
class CohortInfo:
    """What `simulate_cohort` wrote.

    Attributes
    ----------
    out_dir : the output folder.
    fcs : FCS files, one per patient x visit.
    truth : per-event truth files (``<stem>.truth.parquet``), same order as ``fcs``.
    samplesheet : ``samplesheet.csv`` (file, patient, visit, lymphocytes_per_ul).
    frequencies_path : ``truth_frequencies.csv``.
    frequencies : the truth population table (sample, patient, visit, population, parent,
        count, parent_count, percent_of_parent, percent_of_lymphocytes).
    samples : one row per file: sample, patient, visit, file, truth, lymphocytes_per_ul.
    effects : per patient x follow-up visit x population, the multiplier applied.
    """

    out_dir: Path
    fcs: list[Path]
    truth: list[Path]
    samplesheet: Path
    frequencies_path: Path
    frequencies: pd.DataFrame
    samples: pd.DataFrame
    effects: pd.DataFrame = field(default_factory=pd.DataFrame)

    def median_truth(
        self, populations: Sequence[str], value: str = "percent_of_parent"
    ) -> pd.DataFrame:
        """The median true ``value`` of each of ``populations`` per visit (visits x
        populations, visits in cohort order, populations as given where simulated)."""
        f = self.frequencies
        key = f[f["population"].isin(populations)]
        wide = key.pivot_table(index="visit", columns="population", values=value, sort=False)
        medians = wide.groupby(level=0, sort=False).median()
        return medians[[p for p in populations if p in medians.columns]]


def _rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _PURPOSE[purpose], *keys]))


def draw_patient(rng: np.random.Generator) -> dict[str, float]:
    """Node shares (`biology.FREQUENCIES`) of one person."""
    return {k: bio.draw_share(rng, med, lo, hi) for k, (_, med, lo, hi) in bio.FREQUENCIES.items()}


def draw_antigen(rng: np.random.Generator) -> np.ndarray:
    """Per-person antigen density of each marker (log-SD 0.08): people differ in how much
    of a marker their cells carry (e.g. CD16 with FCGR3A genotype), independently of
    which cells they have."""
    return np.exp(_ANTIGEN_SD * rng.standard_normal(len(panel.MARKERS))).astype(np.float32)


def _with_antigen(state: InstrumentState, antigen: np.ndarray) -> InstrumentState:
    return dataclasses.replace(state, staining=state.staining * antigen)


def draw_composition(
    rng: np.random.Generator, table: Mapping[str, tuple[float, float, float]] | None = None
) -> dict[str, float]:
    """Event composition of one tube (`biology.COMPOSITION`, or ``table`` in its layout)."""
    table = bio.COMPOSITION if table is None else table
    return {k: bio.draw_share(rng, med, lo, hi) for k, (med, lo, hi) in table.items()}


def _phenotypes(conditions: Conditions, unimodal: bool) -> dict[str, np.ndarray]:
    """`simulate_events` keyword arguments for the conditions (empty for the default)."""
    out: dict[str, np.ndarray] = {}
    if conditions.low_fsc:
        out["profiles"] = scatter_profiles(conditions.scatter())
    if unimodal:
        out["medians"], out["spreads"] = unimodal_b_phenotypes(bio.MEDIANS, bio.SPREADS)
    return out


def parse_effect(text: str) -> tuple[str, float]:
    """One follow-up effect written as text: ``Treg=+0.3`` -> ``("Treg", 1.3)``,
    ``Th17=-0.3`` -> 0.7, ``NK=x1.5`` -> 1.5 (``NK=1.5`` too). Raises `SimulationError`
    naming the text."""
    name, sep, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value:
        raise SimulationError(
            f"{text!r}: expected POPULATION=+0.3, POPULATION=-0.3 or POPULATION=x1.5"
        )
    try:
        if value[0] in "xX*":
            return name, float(value[1:])
        if value[0] in "+-":
            return name, 1.0 + float(value)
        return name, float(value)
    except ValueError:
        raise SimulationError(f"{text!r}: {value!r} is not a number") from None


def follow_up_effects(
    changes: Mapping[str, float] | Sequence[str] = (), defaults: bool = True
) -> dict[str, float]:
    """The effects for `simulate_cohort`: `DEFAULT_EFFECTS` (none when ``defaults`` is
    False) with ``changes`` put over them, given as ``{population: multiplier}`` or as
    texts for `parse_effect` (``["Treg=+0.3", "NK=x1.5"]``); checked like
    `simulate_cohort` checks them."""
    pairs = changes.items() if isinstance(changes, Mapping) else map(parse_effect, changes)
    effects = dict(DEFAULT_EFFECTS) if defaults else {}
    effects.update(pairs)
    return _validate_effects(effects)


def _validate_effects(effects: Mapping[str, float] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (effects or {}).items():
        if k not in bio.EFFECT_NAMES:
            raise SimulationError(
                f"effect on {k!r} is not supported; effects can act on {list(bio.EFFECT_NAMES)}"
            )
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise SimulationError(f"effect on {k!r} must be a number, got {v!r}") from None
        if not np.isfinite(f) or f <= 0:
            raise SimulationError(f"effect on {k!r} must be a positive multiplier, got {v!r}")
        out[k] = f
    return out


def _visit_day(visit: str, index: int) -> int:
    m = re.search(r"(week|wk|w|month|m|day|d)[_ -]?(\d+)", visit, re.IGNORECASE)
    if m:
        unit, num = m.group(1).lower(), int(m.group(2))
        return num * {"week": 7, "wk": 7, "w": 7, "month": 30, "m": 30, "day": 1, "d": 1}[unit]
    return 0 if index == 0 else 7 * 24 * index


def _sample(
    events: np.ndarray,
    state: InstrumentState,
    name: str,
    keywords: dict[str, str],
    plain_markers: bool,
) -> Sample:
    pan = panel.PANEL_PLAIN if plain_markers else panel.PANEL
    markers = [None] * len(panel.SCATTER_CHANNELS) + [pns for _, pns in pan.values()] + [None]
    channels = make_channel_table(panel.CHANNELS, markers, [panel.RANGE] * len(panel.CHANNELS))
    kw = {
        "$CYT": CYTOMETER,
        "$SPILLOVER": panel.format_spillover(state.recorded_spillover()),
        "$TIMESTEP": "0.01",
        **keywords,
    }
    return Sample(events, channels, kw, name=name)


def _tube_sample(
    events: np.ndarray,
    state: InstrumentState,
    name: str,
    keywords: dict[str, str],
    plain_markers: bool,
    markers: Sequence[str],
) -> Sample:
    """One tube of a panel: scatter, the detectors of ``markers`` and time.

    The events were simulated with every antibody of the 20-colour panel; a tube stains
    only some, so the signal of the others is taken out: compensated with the file's true
    spillover, the tube's detectors are spilled again with the part of the matrix among
    themselves. ``$SPILLOVER`` holds that part of the recorded matrix.
    """
    pan = panel.PANEL_PLAIN if plain_markers else panel.PANEL
    fl = list(panel.FLUORESCENCE_CHANNELS)
    keep = [fl.index(pan[m][0]) for m in markers]
    n_sc = len(panel.SCATTER_CHANNELS)
    true_s = state.spillover()
    signal = events[:, n_sc : n_sc + len(fl)].astype(np.float64) @ np.linalg.inv(true_s)
    tube_fl = signal[:, keep] @ true_s[np.ix_(keep, keep)]
    ev = np.column_stack([events[:, :n_sc], tube_fl, events[:, -1]]).astype(np.float32)
    names = [*panel.SCATTER_CHANNELS, *(fl[k] for k in keep), panel.TIME_CHANNEL]
    labels = [None] * n_sc + [pan[m][1] for m in markers] + [None]
    channels = make_channel_table(names, labels, [panel.RANGE] * len(names))
    recorded = state.recorded_spillover()[np.ix_(keep, keep)]
    kw = {
        "$CYT": CYTOMETER,
        "$SPILLOVER": panel.format_spillover(recorded, tuple(fl[k] for k in keep)),
        "$TIMESTEP": "0.01",
        **keywords,
    }
    return Sample(ev, channels, kw, name=name)


def _pnv_keywords() -> dict[str, str]:
    return {
        f"$P{i}V": str(panel.VOLTAGES[ch])
        for i, ch in enumerate(panel.CHANNELS, 1)
        if ch in panel.VOLTAGES
    }


def simulate_sample(
    events: int = 20_000,
    seed: int = 0,
    drift: float = 1.0,
    frequencies: Mapping[str, float] | None = None,
    composition: Mapping[str, float] | None = None,
    name: str = "simulated",
    plain_markers: bool = False,
    conditions: Conditions | None = None,
) -> tuple[Sample, pd.Categorical]:
    """One simulated tube in memory: ``(Sample, labels)``.

    Parameters
    ----------
    events : number of events.
    seed : seed of every random step (same seed, same events).
    drift : scale of the instrument drift (0 = reference instrument).
    frequencies : node shares overriding those drawn for a random person (keys of
        `biology.FREQUENCIES`, e.g. ``{"Treg": 0.08}`` = 8 % of CD4).
    composition : event-composition overrides (keys of `biology.COMPOSITION`).
    name : sample name.
    plain_markers : write bare marker names in $PnS (default: a few with fluorochrome
        suffixes, see `panel.PANEL`).
    conditions : acquisition and donor conditions (`Conditions`: whole blood, scatter
        voltages, dim stains, low-FSC lymphocytes, unimodal B markers; ``unimodal_b`` > 0
        makes this donor unimodal). None: the default PBMC set-up.

    Returns
    -------
    The raw (uncompensated) `Sample` carrying ``$SPILLOVER``, and the per-event truth
    labels as a Categorical over `biology.LEAVES`.
    """
    if events < 1:
        raise SimulationError(f"events must be at least 1, got {events}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 99]))
    freq = draw_patient(rng)
    freq.update(_check_keys(frequencies, bio.FREQUENCIES, "frequencies"))
    cond = conditions or Conditions()
    comp = draw_composition(rng, cond.composition())
    comp.update(_check_keys(composition, bio.COMPOSITION, "composition"))
    state = _with_antigen(InstrumentState.draw(rng, drift), draw_antigen(rng))
    if not cond.is_default:
        state = with_conditions(state, cond)
    extra = _phenotypes(cond, cond.unimodal_b > 0)
    ev, codes = simulate_events(rng, int(events), bio.leaf_shares(freq), comp, state, **extra)
    sample = _sample(ev, state, name, {"$FIL": f"{name}.fcs"}, plain_markers)
    return sample, pd.Categorical.from_codes(codes, categories=list(bio.LEAVES))


def _check_keys(values: Mapping[str, float] | None, allowed: Mapping, what: str) -> dict:
    values = dict(values or {})
    bad = sorted(set(values) - set(allowed))
    if bad:
        raise SimulationError(f"unknown {what} keys {bad}; allowed are {sorted(allowed)}")
    return {k: float(v) for k, v in values.items()}


def truth_frequencies(
    labels: pd.Categorical | np.ndarray, sample: str, patient: str = "", visit: str = ""
) -> pd.DataFrame:
    """The truth population table of one sample (canonical populations, tidy rows)."""
    cat = labels if isinstance(labels, pd.Categorical) else pd.Categorical(labels, list(bio.LEAVES))
    leaf_counts = dict(
        zip(cat.categories, np.bincount(cat.codes[cat.codes >= 0], minlength=len(cat.categories)))
    )
    counts = {
        p: int(sum(leaf_counts.get(x, 0) for x in leaves))
        for p, leaves in bio.POPULATION_LEAVES.items()
    }
    cols = hierarchy_table(counts, dict(bio.POPULATION_PARENTS), int(len(cat)), "lymphocytes")
    return pd.DataFrame(
        {"sample": sample, "patient": patient, "visit": visit, **cols},
        columns=["sample", "patient", "visit", *TABLE_COLUMNS],
    )


def simulate_cohort(
    out_dir: str | Path,
    patients: int = 7,
    visits: Sequence[str] = ("baseline", "week24"),
    events: int = 100_000,
    seed: int = 0,
    effects: Mapping[str, float] | None = None,
    drift: float = 1.0,
    plain_markers: bool = False,
    start_date: _dt.date = _dt.date(2019, 3, 4),
    tubes: Mapping[str, Sequence[str]] | None = None,
    conditions: Conditions | None = None,
) -> CohortInfo:
    """Simulate a longitudinal cohort and write it to ``out_dir``.

    Each patient gets their own immune make-up (shares drawn from published reference
    ranges), each visit visit-to-visit variation, each file its own instrument state. At
    every visit after the first, each population in ``effects`` has its share of its parent
    multiplied by the effect (varied between patients by ~25 % of its log size).

    Parameters
    ----------
    out_dir : folder to write into (created if needed).
    patients : number of patients (ids ``P01``, ``P02``, ...).
    visits : visit names; the first is the baseline.
    events : events per file.
    seed : seed of every random step; the same seed gives byte-identical files.
    effects : population -> multiplier at follow-up (keys of `biology.FREQUENCIES`);
        None = `DEFAULT_EFFECTS` (Treg x1.3, Th17 x0.7); ``{}`` = no effect.
    drift : scale of the per-file instrument drift (1 = typical, 2 = strong, 0 = none).
    plain_markers : write bare marker names in $PnS.
    start_date : acquisition date of the first patient's baseline.
    tubes : several tubes per visit, ``{tube: markers}`` (keys of the simulated panel,
        e.g. ``{"tcell": ["CD3", "CD4", "CD8", "CD25", "CD127", "Viability", "CD14"],
        "bcell": ["CD3", "CD19", "IgD", "CD27", "Viability"]}``): each visit's blood gives
        one file per tube, ``<patient>_<visit>_<tube>.fcs``, each its own aliquot (own
        events and instrument state) with only that tube's detectors; the samplesheet
        gets a ``tube`` column and the ``TUBE NAME`` keyword the tube. None: one
        20-colour tube per visit.
    conditions : acquisition and donor conditions of the whole cohort (`Conditions`);
        each patient is a unimodal-B donor with probability ``conditions.unimodal_b``.
        None: the default PBMC set-up (files identical to earlier versions).

    Returns
    -------
    `CohortInfo` with the paths written and the truth frequency table.

    Files written: ``<patient>_<visit>.fcs``, ``<patient>_<visit>.truth.parquet``,
    ``samplesheet.csv``, ``truth_frequencies.csv``, ``truth_effects.csv``.
    """
    if patients < 1 or patients > 999:
        raise SimulationError(f"patients must be between 1 and 999, got {patients}")
    visits = [str(v) for v in visits]
    if not visits or len(set(visits)) != len(visits):
        raise SimulationError(f"visits must be distinct and non-empty, got {visits}")
    bad = [v for v in visits if not re.fullmatch(r"[A-Za-z0-9_.-]+", v)]
    if bad:
        raise SimulationError(f"visit names must be letters, digits, '_', '.' or '-': {bad}")
    if events < 1:
        raise SimulationError(f"events must be at least 1, got {events}")
    if drift < 0:
        raise SimulationError(f"drift must be >= 0, got {drift}")
    eff = _validate_effects(DEFAULT_EFFECTS if effects is None else effects)
    if tubes is not None:
        tubes = {str(k): list(v) for k, v in tubes.items()}
        for tube, markers in tubes.items():
            unknown = [m for m in markers if m not in panel.PANEL]
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", tube) or not markers or unknown:
                raise SimulationError(
                    f"tube {tube!r}: needs a plain name and markers of the simulated panel "
                    f"({', '.join(panel.PANEL)}); unknown: {unknown}"
                )
    cond = conditions or Conditions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(2, len(str(patients)))

    fcs_paths: list[Path] = []
    truth_paths: list[Path] = []
    sheet_rows: list[dict] = []
    freq_tables: list[pd.DataFrame] = []
    effect_rows: list[dict] = []
    for p in range(patients):
        pid = f"P{p + 1:0{width}d}"
        prng = _rng(seed, "patient", p)
        base = draw_patient(prng)
        lymph_count = 1800.0 * np.exp(0.3 * prng.standard_normal())
        antigen = draw_antigen(prng)
        erng = _rng(seed, "effect", p)
        patient_eff = {
            k: float(np.exp(np.log(f) * (1.0 + _EFFECT_SPREAD * erng.standard_normal())))
            for k, f in sorted(eff.items())
        }
        unimodal = cond.unimodal_b > 0 and _rng(seed, "conditions", p).random() < cond.unimodal_b
        extra = _phenotypes(cond, unimodal)
        drng = _rng(seed, "date", p)
        first = start_date + _dt.timedelta(days=int(p * 21 + drng.integers(0, 14)))
        for v, visit in enumerate(visits):
            frng = _rng(seed, "file", p, v)
            freq = {
                k: float(x * np.exp(_VISIT_NOISE * frng.standard_normal())) for k, x in base.items()
            }
            if v > 0:
                for k, f in patient_eff.items():
                    freq[k] *= f
                    effect_rows.append(
                        {"patient": pid, "visit": visit, "population": k, "multiplier": f}
                    )
            try:
                shares = bio.leaf_shares(freq)
            except ValueError as exc:
                raise SimulationError(
                    f"{pid} {visit}: effects make the frequencies invalid: {exc}"
                ) from None
            date = first + _dt.timedelta(days=_visit_day(visit, v))
            # one aliquot per tube (own events and instrument state); without tubes the
            # visit's own generator, so single-tube cohorts stay byte-identical
            aliquots = [(None, frng)] if tubes is None else [
                (tube, _rng(seed, "tube", p, v, t)) for t, tube in enumerate(tubes)
            ]  # fmt: skip
            for tube, trng in aliquots:
                comp = draw_composition(trng, cond.composition())
                state = _with_antigen(InstrumentState.draw(trng, drift), antigen)
                if not cond.is_default:
                    state = with_conditions(state, cond)
                ev, codes = simulate_events(trng, int(events), shares, comp, state, **extra)
                stem = f"{pid}_{visit}" if tube is None else f"{pid}_{visit}_{tube}"
                start = _dt.datetime(2000, 1, 1, 9, 0) + _dt.timedelta(
                    minutes=int(trng.integers(0, 420))
                )
                end = start + _dt.timedelta(seconds=float(ev[-1, -1]) * 0.01 if len(ev) else 0.0)
                kw = {
                    "$FIL": f"{stem}.fcs",
                    "$DATE": date.strftime("%d-%b-%Y").upper(),
                    "$BTIM": start.strftime("%H:%M:%S"),
                    "$ETIM": end.strftime("%H:%M:%S"),
                    "$SRC": f"{pid} {visit}",
                    "PATIENT_ID": pid,
                    "VISIT": visit,
                    "TUBE NAME": "T B NK 20c" if tube is None else tube,
                    "EXPERIMENT NAME": f"immune profiling {date.isoformat()}",
                    "CREATOR": "immunoprofile simulate",
                }
                if tube is None:
                    sample = _sample(ev, state, stem, kw, plain_markers)
                else:
                    sample = _tube_sample(ev, state, stem, kw, plain_markers, tubes[tube])

                fcs_path = write_fcs(sample, out / f"{stem}.fcs", extra_keywords=_pnv_keywords())
                labels = pd.Categorical.from_codes(codes, categories=list(bio.LEAVES))
                truth_path = out / f"{stem}.truth.parquet"
                _atomic_parquet(pd.DataFrame({"label": labels}), truth_path)
                fcs_paths.append(fcs_path)
                truth_paths.append(truth_path)
                if (
                    tube is None
                    or not sheet_rows
                    or sheet_rows[-1]["visit"] != visit
                    or (sheet_rows[-1]["patient"] != pid)
                ):
                    lpu = lymph_count * np.exp(0.1 * frng.standard_normal())
                row = {"file": fcs_path.name, "patient": pid, "visit": visit}
                if tube is not None:
                    row["tube"] = tube
                sheet_rows.append({**row, "lymphocytes_per_ul": round(float(lpu), 1)})
                freq_tables.append(truth_frequencies(labels, stem, pid, visit))

    sheet = pd.DataFrame(sheet_rows)
    sheet_path = out / "samplesheet.csv"
    sheet.to_csv(sheet_path, index=False)
    freqs = pd.concat(freq_tables, ignore_index=True)
    freq_path = out / "truth_frequencies.csv"
    freqs.to_csv(freq_path, index=False, float_format="%.6g")
    effects_df = pd.DataFrame(effect_rows, columns=["patient", "visit", "population", "multiplier"])
    effects_df.to_csv(out / "truth_effects.csv", index=False, float_format="%.6g")
    samples = sheet.rename(columns={"file": "file"}).assign(
        sample=[p.stem for p in fcs_paths], truth=[t.name for t in truth_paths]
    )[["sample", "patient", "visit", *(["tube"] if tubes else []), "file", "truth",
       "lymphocytes_per_ul"]]  # fmt: skip
    return CohortInfo(
        out, fcs_paths, truth_paths, sheet_path, freq_path, freqs, samples, effects_df
    )


def _atomic_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)


def read_truth(path: str | Path) -> pd.Categorical:
    """Per-event truth labels of a simulated file (``.truth.parquet`` or the ``.fcs``)."""
    path = Path(path)
    if path.suffix.lower() == ".fcs":
        path = path.with_suffix(".truth.parquet")
    if not path.is_file():
        raise SimulationError(f"{path}: no truth file")
    col = pd.read_parquet(path)["label"]
    return pd.Categorical(col.astype(str), categories=list(bio.LEAVES))
