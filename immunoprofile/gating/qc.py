"""Quality control of gating: rules that say when a gate may be wrong.

A silent wrong number is the worst failure of a gating tool, so every rule here turns a
sign of trouble into a QC flag ``{"population", "flag", "detail"}`` whose detail names the
numbers. Flags never remove a file's rows; they go to ``qc.csv``, the ``qc`` column of the
population table, the terminal summary and the "Files to review" section of the report.

Per file (run by `immunoprofile.gating.engine.apply_template`):

* ``non_finite``: events with a NaN or infinite value in any channel. They are counted and
  left out of every population (one infinite detector value would otherwise spread through
  compensation into every channel of the event).
* ``implausible``: a population's percent of parent outside the range its template gives
  (``expected.percent_of_parent``, from published healthy and patient ranges).
* ``scatter_cloud``: a dense cloud of events outside the scatter gate sits at lower side
  scatter than the gated cloud, i.e. the gate holds a larger-cell cloud (monocytes or
  granulocytes) and not the lymphocytes, or cuts the lymphocyte cloud.
* ``monocytes_in_parent``: the parent of T, B or NK cells holds a visible monocyte cloud:
  events far above the gated lymphocytes (an internal negative control in the same file)
  on CD14 or on side scatter.
* ``scatter_valley_cut``: the lymphocyte gate's side-scatter bound (the valley below the
  granular cells, `immunoprofile.gating.adaptive.BlobGate` ``valleys``) lies within
  `VALLEY_CUT_Z` robust SD above the median side scatter of the gated T, B or NK cells,
  or, in a template that gates no NK cells, of the rest of the B cells' parent
  (``nonT not B``: its NK cells): the granular tail of that lineage (NK cells above
  all) was cut with the monocytes. The flag is on the lymphocyte gate, so it bears on every population under
  it (B of nonT comes out too high when NK cells are lost).
* ``viability_dim_in_parent``: more than 1 % of the parent of T, B or NK cells lie more
  than 4 robust SD above the live T cells (an internal control) on the viability dye:
  debris or dying cells kept as live.
* ``dead_outside_scatter_gate`` / ``monocytes_in_scatter_gate``: the live percentage of
  the gated singlets lies more than `LIVE_SHIFT_PP` from the sample's viability among
  its lymphocytes, because the lymphocyte gate left out a crowd of dead lymphocytes
  (events above every live event on the viability dye, with the lower forward and higher
  side scatter of dying cells, just below the gated cloud: ``live`` reads high) or let in
  monocytes (above every live event on CD14, which the viability gate removes but its
  parent keeps: ``live`` reads low). Named after the larger of the two. The cells under
  ``live`` are unaffected.
* ``debris_in_scatter_gate``: the same estimate reads ``live`` low by more than
  `LIVE_SHIFT_PP` once the dye-dim events the viability gate cut (well below the dead
  cells' peak: debris the lymphocyte gate took in, as in PBMC whose lymphocytes sit low
  on forward scatter) are left out of the singlets too.
* ``viability_shoulder`` (``tail_shoulder`` on other channels): a tail cut whose peak
  did not tail off where a peak of its own width would (`shoulder_flags`): debris or
  dying cells without a valley of their own beside the live cells.

Per run (`cohort_flags`, from the tables of every file gated with one template):

* ``cohort_outlier``: a population's percent of parent, or a gate's position, is a robust
  outlier among the run's files: ``|x - median| / (1.4826 MAD) > 3`` (a percentage on
  the log-odds scale, where people differ by factors, see `_frequency_z`; its robust SD
  taken as at least 25 % of min(median, 100 - median) and at least its binomial
  counting SD) and the distance is larger than what reporting error and biology
  explain (a floor, see the constants). A gate position counts only when the frequency of
  its population moved too (robust z beyond `POSITION_NEEDS_FREQUENCY_Z`): a cut moved
  within an empty valley changes nothing. A
  frequency outlier shared by another visit of the same patient is that person's make-up
  and is not flagged.
* ``visit_change``: a patient's change between two visits is a robust outlier among the
  changes of the other patients (same rule on the paired differences) and at least 50 %
  of the earlier value; both files are flagged.

Saturation (``off_scale``), ``too_few_events`` and ``fallback`` come from the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from immunoprofile.hierarchy import in_subtree

#: |robust z| above which a value is an outlier among the run's files (issue 11)
ROBUST_Z = 3.0
#: robust z needs at least this many files (or patients, for visit changes)
MIN_FILES = 5
#: an outlier in percent of parent must also lie this far from the median (pp), or half
#: the median for rare populations: closer values are within counting error and biology
MIN_SHIFT_PP = 3.0
MIN_SHIFT_RELATIVE = 0.5
#: a gate position outlier must also lie this far from the run's median position: 0.15
#: display units on a fluorescence axis (day-to-day gain drift of ~20 % moves a cut by
#: ~0.035 units per SD on a 4.5-decade logicle axis), ln 1.7 on scatter (voltages)
MIN_SHIFT_DISPLAY = 0.15
MIN_SHIFT_LOG_SCATTER = float(np.log(1.7))
#: populations whose parent is checked for a monocyte cloud
LYMPHOCYTE_LINEAGES = ("T", "B", "NK")
#: a parent holds a visible monocyte cloud when more than this share of its events lie
#: far above the gated lymphocytes on CD14 or side scatter
MONOCYTE_SHARE = 0.03
#: "far above": robust SDs above the gated lymphocytes' median, and at least a minimum
#: distance: CD14 6 SD and 0.25 display units (spillover spreading widens NK cells' CD14
#: beyond that of B cells; monocytes sit ~0.5 units above lymphocytes); log side scatter
#: 4 SD and ln 2 (monocytes have ~3x the side scatter of lymphocytes)
MONOCYTE_SD = {"CD14": 6.0, "SSC": 4.0}
MONOCYTE_MIN = {"CD14": 0.25, "SSC": float(np.log(2.0))}
#: the robust SD of a percentage is taken as at least this share of min(median, 100 -
#: median) (a typical between-person CV of blood immune subsets, 15-40 % in
#: reference-range studies such as Apoil et al. 2017, e.g. about 25-30 % for Tregs and
#: more for Th17: a median/MAD over 5-15 files can come out much smaller by chance, and
#: the low end of the range flagged people whose values were merely uncommon), and at
#: least the binomial counting SD of the file
MIN_SD_RELATIVE = 0.25
#: a gate position outlier is flagged only when its population's frequency is off too,
#: by more than this robust z (the frequency rule's scale)
POSITION_NEEDS_FREQUENCY_Z = 1.5
#: visit_change: besides the robust z and the shift floor, the change must be at least
#: this share of the earlier value (within-person variation over months is ~10-20 % for
#: the major subsets and larger for rare ones such as plasmablasts)
MIN_CHANGE_RELATIVE = 0.5
#: viability_dim_in_parent: a share of the parent of T, B or NK cells above the live T
#: cells' viability median by this many robust SD (a normal population has ~3 in 100,000
#: events beyond 4 SD; spillover spreading widens B cells' viability, not T cells')
#: ``scatter_valley_cut``: the side-scatter bound of the lymphocyte gate within this many
#: robust SD above a gated lineage's median log side scatter (a normal population would
#: lose 5 % or more of its cells above it; NK cells, the most granular lymphocytes, sit
#: 1.9-2.3 SD below the bound on the default simulator and the real Lyoplate NK tube,
#: 1.4-1.5 where the bound cost them 3-5 pp of nonT)
VALLEY_CUT_Z = 1.65
VIABILITY_DIM_SD = 4.0
VIABILITY_DIM_SHARE = 0.01
#: scatter_cloud: an ungated density peak at least this fraction of the gated peak
CLOUD_DENSITY = 0.5
#: ``dead_outside_scatter_gate``: dead and dying lymphocytes shrink and grow more granular
#: (lower forward, higher side scatter; Darzynkiewicz et al., Cytometry 13:795, 1992), so
#: the ones a lymphocyte gate leaves out lie below its cloud on forward scatter. They are
#: looked for at FSC from this share of the gated lymphocytes' median up to the median
#: (debris sits lower still) and side scatter within these multiples of their median
#: (monocytes lie at 2-5x)
DEAD_FSC_FROM = 0.5
DEAD_SSC_RANGE = (0.5, 2.0)
#: ``dead_outside_scatter_gate`` / ``monocytes_in_scatter_gate``: flagged when counting
#: the dead lymphocytes left out and leaving out the monocytes let in would move ``live``
#: by more than this many percentage points: the live percentage then describes the
#: scatter gate more than the sample. The count also takes in some dye-bright debris: over 504 simulated
#: gatings on fresh seeds (3 templates x 168 files) the lowering it gives exceeded the
#: true excess of ``live`` by 0.35 pp on average (SD 0.22) and fell short of it by 0.03
#: pp at most, so a limit 0.1 pp under the evaluation's 3 pp flags every file that far
#: off and a file 2.6-3.0 pp off about half the time
LIVE_SHIFT_PP = 2.9
#: ``debris_in_scatter_gate``: events the viability gate cut that lie more than this many
#: of the dead cells' bright half-widths below the dead cells' peak on the dye are dye-dim
#: debris rather than dead lymphocytes (debris takes up less dye than a dead cell)
DIM_BELOW_DEAD = 2.0

#: trunk checks look at every k-th event so that about this many are used: the rules'
#: limits were set on files of 100,000 events, all of them looked at (a 64 x 64 histogram
#: of the scatter then holds ~25 events a bin on average, the gated peak hundreds)
TRUNK_EVENTS = 100_000

_MAD_SD = 1.4826  # MAD of a normal distribution -> its standard deviation


def make_flag(population: str | None, rule: str, detail: str) -> dict[str, Any]:
    """One QC flag record."""
    return {"population": population, "flag": rule, "detail": detail}


# --- non-finite event values -------------------------------------------------------------


def all_finite(values: np.ndarray) -> bool:
    """True when every value is finite, by one summing pass (a NaN or an infinity makes
    the sum non-finite; +inf and -inf give NaN) and no values-sized mask. A sum
    overflowing on huge finite values answers False: a caller's exact test then finds
    every value finite."""
    values = np.asarray(values)
    if values.dtype.kind not in "fc":
        return True
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(np.add.reduce(values, axis=None)))


def non_finite_rows(events: np.ndarray) -> np.ndarray | None:
    """Boolean mask of events with a NaN or infinite value in any channel, or None when
    every value is finite (checked by one summing pass first: no event-sized mask then)."""
    if events.size == 0:
        return None
    if all_finite(events):
        return None
    bad = ~np.isfinite(events).all(axis=1)
    return bad if bad.any() else None


def non_finite_flag(events: np.ndarray, bad: np.ndarray, channels: Sequence[str]) -> dict:
    """The ``non_finite`` flag: how many events, and which channels hold the values."""
    per_channel = (~np.isfinite(events[bad])).sum(axis=0)
    named = [f"{channels[j]} {int(c)}" for j, c in enumerate(per_channel) if c]
    n, total = int(bad.sum()), len(events)
    return make_flag(
        None,
        "non_finite",
        f"{n} of {total} events ({100.0 * n / max(total, 1):.2f}%) have NaN or infinite "
        f"values (per channel: {', '.join(named)}); left out of every population",
    )


# --- plausibility --------------------------------------------------------------------------


def plausibility_flags(template: Any, counts: Mapping[str, int], total: int) -> list[dict]:
    """``implausible`` flags: percent of parent outside the template's expected range."""
    out = []
    for pop in template.populations:
        if pop.expected is None:
            continue
        parent = total if pop.parent is None else counts.get(pop.parent, 0)
        if not parent:
            continue
        pct = 100.0 * counts.get(pop.name, 0) / parent
        low, high = pop.expected
        if low <= pct <= high:
            continue
        src = f"; {pop.expected_source}" if pop.expected_source else ""
        out.append(
            make_flag(
                pop.name,
                "implausible",
                f"{pct:.2f}% of {pop.parent or 'all events'} is outside the expected "
                f"{low:g}-{high:g}%{src}",
            )
        )
    return out


# --- a cut that ended at a broad shoulder ------------------------------------------------


def _capped_tails(params: Any, where: str = "") -> list[tuple[str, dict]]:
    """Every tail cut in a fitted gate's ``params`` (nested per dimension for thresholds
    gates) that ended at its mirrored limit rather than where the density fell."""
    out: list[tuple[str, dict]] = []
    if not isinstance(params, Mapping):
        return out
    if "walked" in params and "mirrored" in params:
        if params.get("shoulder"):
            out.append((where, dict(params)))
        return out
    for key, sub in params.items():
        if isinstance(sub, Mapping):
            out += _capped_tails(sub, str(key))
    return out


def shoulder_flags(fitted: Mapping[str, Any]) -> list[dict]:
    """``viability_shoulder`` (or, on another channel, ``tail_shoulder``): a tail cut with
    ``mirror`` ended at the limit its peak's other half sets, because the density beyond
    the peak stayed high: a broad population without a valley of its own sits next to
    the peak (on a viability dye: debris and dying cells between the live and the dead
    cells, e.g. when debris reaches into the lymphocyte scatter gate). The part of it
    below the cut stays in the population and the part above it leaves the parent's
    count too, so every percentage under that gate may be off: the file is flagged on
    the population."""
    out = []
    for pop, rec in fitted.items():
        if not isinstance(rec, Mapping):
            continue
        for dim, p in _capped_tails(rec.get("params") or {}):
            name = dim or ", ".join(str(d) for d in rec.get("dims") or [])
            rule = "viability_shoulder" if "viab" in name.lower() else "tail_shoulder"
            peak, walked, limit = float(p.get("peak", np.nan)), p["walked"], p["mirrored"]
            width = float(p.get("half_width", np.nan))
            reach = (float(walked) - peak) / width if width > 0 else float("nan")
            out.append(
                make_flag(
                    pop,
                    rule,
                    f"{name}: the density beyond the peak at {peak:.3f} stays high up to "
                    f"{float(walked):.3f} ({reach:.1f} times the peak's other half-width "
                    f"{width:.3f}): a broad shoulder (debris or dying cells) with no valley; "
                    f"the cut was put at {float(limit):.3f}, where the peak itself ends, "
                    "and the shoulder's events on this side of it remain in the population",
                )
            )
    return out


# --- trunk sanity ------------------------------------------------------------------------


def _robust(x: np.ndarray) -> tuple[float, float]:
    """Median and robust SD (1.4826 MAD) of ``x``."""
    med = float(np.median(x))
    return med, _MAD_SD * float(np.median(np.abs(x - med)))


def _log(x: np.ndarray) -> np.ndarray:
    """Log of scatter values; values at or below zero go to the smallest positive one."""
    pos = x[x > 0]
    floor = float(pos.min()) if len(pos) else 1e-6
    return np.log(np.maximum(x, floor))


def scatter_cloud_flag(
    fsc: np.ndarray, ssc: np.ndarray, gated: np.ndarray, population: str, bins: int = 64
) -> dict | None:
    """``scatter_cloud`` when a dense cloud outside the gate has lower side scatter than the
    gated cloud (lymphocytes are the dense cloud of lowest side scatter among the major
    clouds; debris is diffuse and does not count).

    ``fsc``, ``ssc``: the scatter values of the events the gate saw; ``gated``: its mask.
    Densities are 2-D histograms on log scatter, smoothed over one bin."""
    from scipy.ndimage import gaussian_filter

    n_in = int(gated.sum())
    if n_in < 50 or n_in == len(gated):
        return None
    lf, ls = _log(fsc), _log(ssc)
    edges = [np.quantile(v, [0.002, 0.998]) for v in (lf, ls)]
    if any(e[1] <= e[0] for e in edges):
        return None
    rng = [(float(e[0]), float(e[1])) for e in edges]
    h_in, xe, ye = np.histogram2d(lf[gated], ls[gated], bins=bins, range=rng)
    h_out, _, _ = np.histogram2d(lf[~gated], ls[~gated], bins=[xe, ye])
    h_in = gaussian_filter(h_in, 1.0)
    h_out = gaussian_filter(h_out, 1.0)
    peak_in = float(h_in.max())
    if peak_in <= 0:
        return None
    ycent = 0.5 * (ye[:-1] + ye[1:])
    med_ssc = float(np.median(ls[gated]))
    _, sd_ssc = _robust(ls[gated])
    below = ycent < med_ssc - max(sd_ssc, ye[1] - ye[0])
    if not below.any():
        return None
    low_part = h_out[:, below]
    i, j = np.unravel_index(int(np.argmax(low_part)), low_part.shape)
    peak_out = float(low_part[i, j])
    if peak_out < CLOUD_DENSITY * peak_in:
        return None
    ssc_out = float(np.exp(ycent[below][j]))
    fsc_out = float(np.exp(0.5 * (xe[i] + xe[i + 1])))
    return make_flag(
        population,
        "scatter_cloud",
        f"a dense cloud outside the gate (peak density {peak_out / peak_in:.2f} of the gated "
        f"peak, at FSC {fsc_out:.3g}, SSC {ssc_out:.3g}) has lower side scatter than the "
        f"gated cloud (median SSC {np.exp(med_ssc):.3g}): the gate may hold larger cells "
        "and miss the lymphocytes",
    )


def valley_cut_flag(population: str, ssc: np.ndarray, bound: float, lineage: str) -> dict | None:
    """``scatter_valley_cut`` when the scatter gate's side-scatter bound ``bound`` lies
    within `VALLEY_CUT_Z` robust SD above the median log side scatter of the gated
    ``lineage`` cells (``ssc``): the bound cut into that lineage's granular tail."""
    if len(ssc) < 50 or not bound > 0:
        return None
    med, sd = _robust(_log(ssc))
    if not sd > 0:
        return None
    z = (float(np.log(bound)) - med) / sd
    if z >= VALLEY_CUT_Z:
        return None
    return make_flag(
        population,
        "scatter_valley_cut",
        f"the side-scatter bound {bound:.3g} lies {z:.2f} robust SD above the median "
        f"side scatter of the gated {lineage} cells ({np.exp(med):.3g}; limit "
        f"{VALLEY_CUT_Z:g}): their granular tail was cut with the larger cells, so "
        f"{lineage} is likely too low",
    )


def monocyte_flags(
    parent: str,
    in_parent: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    lineages: Sequence[str],
) -> list[dict]:
    """``monocytes_in_parent``: share of the parent's events far above the gated
    lymphocytes (``reference``: their values, an internal negative control) on CD14 or log
    side scatter. ``in_parent`` and ``reference`` map ``"CD14"``/``"SSC"`` to values."""
    out = []
    n = min((len(v) for v in in_parent.values()), default=0)
    if n < 50:
        return out
    for what, values in in_parent.items():
        ref = reference.get(what)
        if ref is None or len(ref) < 50:
            continue
        if what == "SSC":
            values, ref = _log(values), _log(ref)
        med, sd = _robust(ref)
        k, floor = MONOCYTE_SD.get(what, 6.0), MONOCYTE_MIN.get(what, 0.0)
        cut = med + max(k * sd, floor)
        share = float(np.count_nonzero(values > cut)) / len(values)
        if share > MONOCYTE_SHARE:
            scale = "log side scatter" if what == "SSC" else what
            out.append(
                make_flag(
                    parent,
                    "monocytes_in_parent",
                    f"{100 * share:.1f}% of {parent} (parent of {', '.join(lineages)}) lie "
                    f"above {cut:.3g} on {scale}, i.e. more than max({k:g} robust SD, "
                    f"{floor:.2g}) above the gated lymphocytes' median {med:.3g} (> "
                    f"{MONOCYTE_SHARE:.0%}): a monocyte cloud left in the trunk",
                )
            )
    return out


def _scatter_dims(template: Any) -> tuple[str, str] | None:
    """(forward, side) scatter names of the template's top-level two-dimensional gate."""
    for pop in template.populations:
        if pop.parent is None and not pop.is_boolean and len(pop.gate.dims) == 2:
            a, b = pop.gate.dims
            if "SSC" in b.upper():
                return a, b
            if "SSC" in a.upper():
                return b, a
    return None


def _side_scatter(template: Any, cols_of: Mapping[str, int]) -> str | None:
    dims = _scatter_dims(template)
    if dims is not None:
        return dims[1]
    return next((m for m in cols_of if m.upper().startswith("SSC")), None)


def trunk_flags(
    template: Any,
    column: Mapping[int, np.ndarray],
    cols_of: Mapping[str, int],
    masks: Mapping[str, np.ndarray],
    finite: np.ndarray | None,
    events: np.ndarray | None = None,
    cd14: int | None = None,
    fitted: Mapping[str, Any] | None = None,
) -> list[dict]:
    """``scatter_cloud`` and ``monocytes_in_parent`` flags of one gated file.

    ``column``: contiguous transformed values of each used column (column index -> values
    over all events); ``finite``: events that took part in gating (None: all);
    ``events`` and ``cd14``: the transformed event matrix and the column of CD14 when the
    panel has it but no gate uses it (the check still looks at it)."""
    out = []
    n = len(next(iter(masks.values()))) if masks else 0
    # every k-th event (acquisition order is random): the same answer at a fraction of
    # the cost on a large file
    step = max(1, n // TRUNK_EVENTS)
    keep: slice | np.ndarray = slice(0, n, step)  # strided views: nothing copied
    if finite is not None:
        keep = np.arange(0, n, step)
        keep = keep[finite[keep]]
    masks = {k: m[keep] for k, m in masks.items()}
    column = {j: column[j][keep] for j in set(cols_of.values()) if j in column}
    if "CD14" not in cols_of and cd14 is not None and events is not None:
        cols_of = {**cols_of, "CD14": cd14}
        column[cd14] = events[keep, cd14]
    dims = _scatter_dims(template)
    if dims is not None:
        root = next(p for p in template.populations if p.parent is None and dims[0] in p.gate.dims)
        f, s = column[cols_of[dims[0]]], column[cols_of[dims[1]]]
        flag = scatter_cloud_flag(f, s, masks[root.name], root.name)
        if flag is not None:
            out.append(flag)
        params = ((fitted or {}).get(root.name) or {}).get("params") or {}
        bound = params.get("ssc_valley") if isinstance(params, dict) else None
        if bound is not None:
            for lin, mask in _valley_groups(template, masks):
                flag = valley_cut_flag(root.name, s[mask], float(bound), lin)
                if flag is not None:
                    out.append(flag)
    side = _side_scatter(template, cols_of)
    by_parent: dict[str, list[str]] = {}
    for pop in template.populations:
        if pop.name in LYMPHOCYTE_LINEAGES and pop.parent is not None:
            by_parent.setdefault(pop.parent, []).append(pop.name)
    for parent, lineages in by_parent.items():
        ref_mask = np.zeros_like(masks[parent])
        for name in lineages:
            ref_mask |= masks[name]
        checks = {}
        for what, name in (("CD14", "CD14"), ("SSC", side)):
            if name is not None and name in cols_of:
                checks[what] = column[cols_of[name]]
        if not checks:
            continue
        out += monocyte_flags(
            parent,
            {k: v[masks[parent]] for k, v in checks.items()},
            {k: v[ref_mask] for k, v in checks.items()},
            lineages,
        )
    viability = _viability_dim(template, cols_of)
    if viability is not None:
        values = column[cols_of[viability]]
        parents = {p.name: p.parent for p in template.populations}
        for parent, lineages in by_parent.items():
            ref = _live_t_cells(masks, parents, parent)
            if ref is None:
                continue
            flag = viability_dim_flag(parent, values[masks[parent]], values[ref], lineages)
            if flag is not None:
                out.append(flag)
        if dims is not None:
            flag = _live_share(template, column, cols_of, masks, dims, root.name, viability)
            if flag is not None:
                out.append(flag)
    return out


def _live_share(
    template: Any,
    column: Mapping[int, np.ndarray],
    cols_of: Mapping[str, int],
    masks: Mapping[str, np.ndarray],
    dims: tuple[str, str],
    root: str,
    viability: str,
) -> dict | None:
    """`live_share_flag` for the template's viability gate (the first population gated on
    the viability dye, with CD14 where that gate cuts it too) under its top-level scatter
    gate ``root``."""
    live = next(
        (
            p
            for p in template.populations
            if not p.is_boolean and viability in p.gate.dims and p.parent in masks
        ),
        None,
    )
    if live is None or live.name not in masks or root not in masks:
        return None
    parents = {p.name: p.parent for p in template.populations}
    if live.parent in parents and not in_subtree(live.parent, root, parents):
        return None
    cd14 = column[cols_of["CD14"]] if "CD14" in live.gate.dims and "CD14" in cols_of else None
    return live_share_flag(
        live.name,
        masks[live.name],
        masks[live.parent],
        masks[root],
        column[cols_of[dims[0]]],
        column[cols_of[dims[1]]],
        column[cols_of[viability]],
        cd14,
    )


def dim_excluded(values: np.ndarray, bins: int = 64) -> tuple[int, float]:
    """How many of ``values`` (the viability dye of the events a viability gate cut) lie
    more than `DIM_BELOW_DEAD` bright half-widths below the dead cells' peak (the mode of
    a ``bins``-bin histogram; the half-width is the root mean square distance from it of
    the values above it, which debris does not reach), and where that peak is."""
    if len(values) < 20:
        return 0, float("nan")
    counts, edges = np.histogram(values, bins=bins)
    top = int(np.argmax(counts))
    mode = 0.5 * float(edges[top] + edges[top + 1])
    above = values[values >= mode]
    if len(above) < 5:
        return 0, mode
    width = float(np.sqrt(np.mean((above - mode) ** 2)))
    return int(np.count_nonzero(values < mode - DIM_BELOW_DEAD * width)), mode


def live_share_flag(
    population: str,
    live: np.ndarray,
    parent: np.ndarray,
    scatter_gated: np.ndarray,
    fsc: np.ndarray,
    ssc: np.ndarray,
    viability: np.ndarray,
    cd14: np.ndarray | None = None,
) -> dict | None:
    """How far the live percentage of the gated singlets lies from the sample's viability
    among its lymphocytes, from what the scatter gate got wrong: dead lymphocytes it left
    out (``dead_outside_scatter_gate``: live reads high) and monocytes it let in
    (``monocytes_in_scatter_gate``: live reads low; the viability gate removes them on
    CD14, but they stay in its parent). Flagged when the two together move ``live`` by
    more than `LIVE_SHIFT_PP`, under the name of the larger one.

    ``live``, ``parent``, ``scatter_gated``: masks of the viability gate's population, its
    parent (the singlets) and the lymphocyte gate over all events; ``fsc``, ``ssc``,
    ``viability``, ``cd14``: the events' values (``cd14`` when the viability gate cuts
    CD14). Dead means above every live event on the dye (the viability gate's own cut,
    whatever its shape); the dead lymphocytes outside the gate are those with FSC from
    `DEAD_FSC_FROM` of the gated cloud's median up to that median and side scatter within
    `DEAD_SSC_RANGE` times its median. Monocytes are the parent's events above every live
    event on CD14 and not above them on the dye."""
    n_live, n_parent = int(np.count_nonzero(live)), int(np.count_nonzero(parent))
    if n_live < 50 or n_parent < 50:
        return None
    cut = float(viability[live].max())
    lf, ls = _log(fsc), _log(ssc)
    f0, s0 = float(np.median(lf[scatter_gated])), float(np.median(ls[scatter_gated]))
    window = (
        ~scatter_gated
        & (lf >= f0 + np.log(DEAD_FSC_FROM))
        & (lf < f0)
        & (ls >= s0 + np.log(DEAD_SSC_RANGE[0]))
        & (ls < s0 + np.log(DEAD_SSC_RANGE[1]))
        & (viability > cut)
    )
    n_out = int(np.count_nonzero(window))
    n_mono = 0
    if cd14 is not None:
        n_mono = int(
            np.count_nonzero(parent & (cd14 > float(cd14[live].max())) & (viability <= cut))
        )
    now = 100.0 * n_live / n_parent
    counted = 100.0 * n_live / (n_parent + n_out - n_mono)
    shift = now - counted
    if abs(shift) <= LIVE_SHIFT_PP:
        dim_values = viability[parent & (viability > cut)]
        return _debris_flag(population, n_live, n_parent, dim_values, now, n_out, n_mono)
    dead = (
        f"{n_out} events above every {population} event on the viability dye lie just "
        f"below the lymphocyte gate (FSC {DEAD_FSC_FROM:g}-1x and SSC "
        f"{DEAD_SSC_RANGE[0]:g}-{DEAD_SSC_RANGE[1]:g}x the gated cloud's medians: dead, "
        "shrunken lymphocytes)"
    )
    mono = (
        f"{n_mono} events of the parent lie above every {population} event on CD14 and "
        "not above them on the viability dye (monocytes the lymphocyte gate let in)"
    )
    if shift > 0:
        rule, first, second, how = "dead_outside_scatter_gate", dead, mono, "lower"
        says = f"the sample's viability is lower than {population} says"
    else:
        rule, first, second, how = "monocytes_in_scatter_gate", mono, dead, "higher"
        says = f"{population} reads low: its parent holds monocytes"
    also = f"; {second}" if (n_mono if shift > 0 else n_out) else ""
    return make_flag(
        population,
        rule,
        f"{first}{also}; with the dead counted and the monocytes left out of the singlets, "
        f"{population} would be {counted:.1f}% and not {now:.1f}% ({abs(shift):.1f} pp "
        f"{how}, limit {LIVE_SHIFT_PP:g}): {says}",
    )


def _debris_flag(
    population: str,
    n_live: int,
    n_parent: int,
    cut_values: np.ndarray,
    now: float,
    n_out: int,
    n_mono: int,
) -> dict | None:
    """``debris_in_scatter_gate``: `live_share_flag`'s estimate, with the dye-dim events
    the viability gate cut (`dim_excluded` of ``cut_values``, the dye of the parent's
    events above the cut) also left out of the singlets, reads ``live`` low by more than
    `LIVE_SHIFT_PP`. Only this side is flagged: whether those events are debris or dying
    lymphocytes is uncertain, so they may lower the estimate's other reading (dead cells
    left out) but never raise it."""
    n_dim, mode = dim_excluded(cut_values)
    if n_dim == 0:
        return None
    counted = 100.0 * n_live / (n_parent + n_out - n_mono - n_dim)
    if now - counted >= -LIVE_SHIFT_PP:
        return None
    return make_flag(
        population,
        "debris_in_scatter_gate",
        f"{n_dim} events of the parent above every {population} event on the viability dye "
        f"lie more than {DIM_BELOW_DEAD:g} half-widths below the dead cells' peak at "
        f"{mode:.3f} (dye-dim debris the lymphocyte gate took in); {n_mono} events above "
        f"every {population} event on CD14 and not on the dye (monocytes); {n_out} dead "
        "lymphocytes just below the lymphocyte gate; with the debris and the monocytes "
        f"left out of the singlets and the dead counted, {population} would be "
        f"{counted:.1f}% and not {now:.1f}% ({counted - now:.1f} pp higher, limit "
        f"{LIVE_SHIFT_PP:g}): {population} may read low",
    )


def _valley_groups(template: Any, masks: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """The groups of lymphocytes whose side scatter `valley_cut_flag` checks: each gated
    T, B or NK population and, in a template that gates no NK cells, the rest of the
    parent of its B cells (``nonT not B``: the CD3- lymphocytes outside the gated B cells,
    NK cells above all). A template without NK cells still loses them at the bound, and
    with them the share of every population of their parent (B of nonT too high). Where
    the NK cells are gated, the rest of their parent holds what is neither (dendritic
    cells, basophils, monocytes the trunk let through): granular by nature, their side
    scatter says nothing of a cut into the lymphocytes (on the real Lyoplate NK tube,
    which agrees with openCyto within 0.3 pp, the bound lies 1.27 robust SD above
    theirs)."""
    out = [
        (p.name, masks[p.name])
        for p in template.populations
        if p.name in LYMPHOCYTE_LINEAGES and p.name in masks
    ]
    b = next((p for p in template.populations if p.name == "B"), None)
    if b is not None and "NK" not in masks and "B" in masks and b.parent in masks:
        out.append((f"{b.parent} not B", masks[b.parent] & ~masks["B"]))
    return out


def _viability_dim(template: Any, cols_of: Mapping[str, int]) -> str | None:
    """The viability dye's dimension name among the template's gate dimensions (a
    boolean gate's dims name populations, which are left out)."""
    names = {p.name for p in template.populations}
    for pop in template.populations:
        for d in getattr(pop.gate, "dims", ()) or ():
            if (
                isinstance(d, str)
                and d.lower().startswith(("viab", "live", "dead"))
                and d in cols_of
                and d not in names
            ):
                return d
    return None


def _live_t_cells(
    masks: Mapping[str, np.ndarray], parents: Mapping[str, str | None], parent: str
) -> np.ndarray | None:
    """Live T cells, the internal control of the viability check: the ``T`` population
    when gated, else the events of the parent's parent that the parent's gate left out
    (``live`` minus ``nonT``: the CD3+ or lineage+ cells)."""
    if "T" in masks:
        return masks["T"]
    grand = parents.get(parent)
    if grand is None or grand not in masks:
        return None
    return masks[grand] & ~masks[parent]


def viability_dim_flag(
    parent: str, in_parent: np.ndarray, reference: np.ndarray, lineages: Sequence[str]
) -> dict | None:
    """``viability_dim_in_parent``: more than `VIABILITY_DIM_SHARE` of the parent of T, B
    or NK cells lie above the live T cells of the same file (an internal control of what
    live cells look like on the dye) by more than `VIABILITY_DIM_SD` robust SD: a
    population of viability-dim events (debris, dying cells) was kept as live and dilutes
    every percentage of that parent."""
    if len(in_parent) < 50 or len(reference) < 50:
        return None
    med, sd = _robust(reference)
    cut = med + VIABILITY_DIM_SD * sd
    share = float(np.count_nonzero(in_parent > cut)) / len(in_parent)
    if share <= VIABILITY_DIM_SHARE:
        return None
    return make_flag(
        parent,
        "viability_dim_in_parent",
        f"{100 * share:.1f}% of {parent} (parent of {', '.join(lineages)}) lie above "
        f"{cut:.3g} on the viability dye, more than {VIABILITY_DIM_SD:g} robust SD above the "
        f"live T cells' median {med:.3g} (> {VIABILITY_DIM_SHARE:.0%}): viability-dim "
        "events (debris, dying cells) kept as live dilute this parent",
    )


# --- cohort consistency --------------------------------------------------------------------


def _is_scatter(dim: str) -> bool:
    return dim.upper().startswith(("FSC", "SSC"))


def gate_positions(fitted: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """Scalar positions of each fitted gate: ``"<population> <dim> ..."`` -> (position,
    floor): each threshold of a range or quadrant gate, and the centroid of a scatter
    polygon or ellipse (the trunk's lymphocyte gate), per dimension. Fluorescence positions are in display units with floor
    `MIN_SHIFT_DISPLAY`; scatter positions are logs (a voltage change multiplies scatter)
    with floor `MIN_SHIFT_LOG_SCATTER`. Boolean gates have no position."""
    out: dict[str, tuple[float, float]] = {}

    def put(key: str, dim: str, value: Any) -> None:
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if not np.isfinite(v):
            return
        if _is_scatter(dim):
            if v > 0:
                out[key + " (log)"] = (float(np.log(v)), MIN_SHIFT_LOG_SCATTER)
        else:
            out[key] = (v, MIN_SHIFT_DISPLAY)

    for pop, rec in fitted.items():
        if not isinstance(rec, dict) or rec.get("type") == "boolean":
            continue
        dims = [str(d) for d in rec.get("dims") or []]
        kind = rec.get("type")
        if kind == "range" and dims:
            for side in ("min", "max"):
                if rec.get(side) is not None:
                    put(f"{pop} {dims[0]} {side}", dims[0], rec[side])
        elif kind == "quadrant":
            for d, t in zip(dims, rec.get("thresholds") or []):
                put(f"{pop} {d} cut", d, t)
        elif not all(_is_scatter(d) for d in dims):
            # a fluorescence polygon (a mixture's posterior region, a hilo boundary) has
            # no stable centre: its vertices follow the data range; its frequency is
            # compared instead
            continue
        elif rec.get("vertices"):
            v = np.asarray(rec["vertices"], dtype=float)
            if v.ndim == 2 and v.shape[1] == len(dims) and np.isfinite(v).all():
                for k, d in enumerate(dims):
                    put(f"{pop} {d} centre", d, v[:, k].mean())
        elif rec.get("center") is not None:
            c = np.asarray(rec["center"], dtype=float).ravel()
            for k, d in enumerate(dims[: len(c)]):
                put(f"{pop} {d} centre", d, c[k])
    return out


def file_record(
    counts: Mapping[str, int],
    parents: Mapping[str, str | None],
    total: int,
    fitted: Mapping[str, Any],
    **identity: Any,
) -> dict[str, Any]:
    """The record of one gated file that `cohort_flags` compares: percent of parent per
    population and `gate_positions`, plus ``identity`` (``sample``, ``patient``,
    ``visit``, ``group``)."""
    percent, base_of = {}, {}
    for pop, count in counts.items():
        parent = parents.get(pop)
        base = total if parent is None else counts.get(parent, 0)
        percent[pop] = 100.0 * count / base if base else float("nan")
        base_of[pop] = int(base)
    return {
        **identity,
        "percent": percent,
        "parent_count": base_of,
        "positions": gate_positions(fitted),
    }


def flags_on(flags: Sequence[Mapping[str, Any]], population: str, parents: Mapping) -> list:
    """The flags that bear on ``population``: on it, on an ancestor (``parents`` maps a
    population to its parent) or on the whole file (population None)."""
    line = {population}
    p = parents.get(population)
    while p is not None and p not in line:
        line.add(p)
        p = parents.get(p)
    return [q for q in flags if q.get("population") is None or q.get("population") in line]


def robust_outliers(
    values: Sequence[float], floor: Sequence[float] | float, min_sd: float = 0.0
) -> list[tuple]:
    """Indices of robust outliers: ``(i, z, value, median)`` for every finite value with
    ``|value - median| > ROBUST_Z * max(1.4826 MAD, min_sd)`` and ``|value - median| >
    floor`` (``floor`` and ``min_sd``: one number, or one per value)."""
    x = np.asarray(values, dtype=float)
    ok = np.isfinite(x)
    if ok.sum() < MIN_FILES:
        return []
    med = float(np.median(x[ok]))
    mad_sd = _MAD_SD * float(np.median(np.abs(x[ok] - med)))
    floors = np.broadcast_to(np.asarray(floor, dtype=float), x.shape)
    min_sds = np.broadcast_to(np.asarray(min_sd, dtype=float), x.shape)
    out = []
    for i in np.flatnonzero(ok):
        dev = float(x[i] - med)
        if abs(dev) <= floors[i]:
            continue
        sd = max(mad_sd, float(min_sds[i]))
        z = dev / sd if sd > 0 else float("inf") * np.sign(dev)
        if abs(z) > ROBUST_Z:
            out.append((int(i), z, float(x[i]), med))
    return out


def _shift_floor(median: float) -> float:
    return min(MIN_SHIFT_PP, MIN_SHIFT_RELATIVE * abs(median))


def _min_sd(median: float) -> float:
    """Smallest robust SD a percentage is judged with: `MIN_SD_RELATIVE` of the smaller of
    the median and 100 - median (a few files that happen to agree closely must not make
    ordinary between-person variation look like an outlier)."""
    return MIN_SD_RELATIVE * min(abs(median), abs(100.0 - median))


def cohort_flags(files: Sequence[Mapping[str, Any]]) -> list[list[dict]]:
    """Cohort-consistency flags of each file (same order as ``files``).

    ``files``: one mapping per gated file with ``percent`` (population -> percent of
    parent), ``positions`` (`gate_positions`), ``patient``, ``visit`` and ``group`` (files
    are compared within a group, e.g. a tube). Files with a patient and two or more
    visits also take part in the ``visit_change`` rule."""
    flags: list[list[dict]] = [[] for _ in files]
    groups: dict[Any, list[int]] = {}
    for i, f in enumerate(files):
        groups.setdefault(f.get("group"), []).append(i)
    for idx in groups.values():
        if len(idx) < MIN_FILES:
            continue
        _frequency_outliers(files, idx, flags)
        _position_outliers(files, idx, flags)
        _visit_changes(files, idx, flags)
    return flags


def _same_person(files, idx: list[int], k: int, pop: str, value: float, med: float) -> str:
    """The sample of another visit of the same patient that lies on the same side of the
    median by at least a third of this file's distance, or within half that distance of
    this value: then the outlier is the person's make-up, which their other visit shares,
    not a gate that failed in one file."""
    me = files[idx[k]]
    if not me.get("patient"):
        return ""
    for j in idx:
        other = files[j]
        if j == idx[k] or other.get("patient") != me["patient"]:
            continue
        v = other["percent"].get(pop, np.nan)
        if not np.isfinite(v):
            continue
        same_side = (v - med) * (value - med) > 0 and abs(v - med) >= abs(value - med) / 3
        if same_side or abs(v - value) <= 0.5 * abs(value - med):
            return str(other.get("sample", ""))
    return ""


def _counting_sd(files, idx: list[int], pop: str, centre: float) -> np.ndarray:
    """Per file, the binomial SD (pp) of a percentage near ``centre`` with that file's
    parent count: the noise of counting alone."""
    p = min(max(centre / 100.0, 0.0), 1.0)
    n = np.array([files[i].get("parent_count", {}).get(pop, 0) for i in idx], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = 100.0 * np.sqrt(p * (1.0 - p) / n)
    return np.where(n > 0, sd, 0.0)


def _logit(percent: np.ndarray) -> np.ndarray:
    """Log-odds of percentages (clipped to (0, 100) by one in a million)."""
    p = np.clip(np.asarray(percent, dtype=float) / 100.0, 1e-6, 1.0 - 1e-6)
    return np.log(p / (1.0 - p))


def _frequency_z(files, idx: list[int], pop: str) -> np.ndarray:
    """Robust z of each file's percent of parent (NaN where missing), on the log-odds
    scale: ``(logit(x) - median) / max(1.4826 MAD, floor)``, the floor being
    `MIN_SD_RELATIVE` of min(median, 100 - median) and the binomial counting SD (both in
    pp, as before) carried to log-odds at the median (divided by p (1 - p)).

    Why log-odds: between people a share varies by a factor, not by a fixed number of
    points: reference ranges of blood immune subsets are log-normal and right-skewed (the
    simulator draws them so, and a subset at twice the median, e.g. Th17 4 % of memory
    CD4 where the median is 2 %, is an ordinary donor). On the percent scale a file at
    2 x the median stood as far out as one at 0 x, and the high side of every rare
    subset was flagged (the between-person cut at +3 SD of the percent scale lies at
    1.8 x the median for a 25 % relative SD, at the 98.5th centile of a log-normal
    with that spread); for a share near 100 % (live of singlets) the same holds on its
    complement. Log-odds make both sides of the median, and both ends of the scale,
    alike; near the median the floors are the same as on the percent scale."""
    vals = np.array([files[i]["percent"].get(pop, np.nan) for i in idx], dtype=float)
    ok = np.isfinite(vals)
    if ok.sum() < MIN_FILES:
        return np.full(len(idx), np.nan)
    med = float(np.median(vals[ok]))
    lv = _logit(vals)
    lmed = float(np.median(lv[ok]))
    mad_sd = _MAD_SD * float(np.median(np.abs(lv[ok] - lmed)))
    p = min(max(med / 100.0, 1e-6), 1.0 - 1e-6)
    per_pp = 1.0 / (100.0 * p * (1.0 - p))  # d logit / d percent at the median
    floor = np.maximum(_min_sd(med), _counting_sd(files, idx, pop, med)) * per_pp
    sd = np.maximum(mad_sd, floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, (lv - lmed) / sd, np.nan)


def _frequency_outliers(files, idx: list[int], flags: list[list[dict]]) -> None:
    pops = list(dict.fromkeys(p for i in idx for p in files[i]["percent"]))
    for pop in pops:
        vals = np.array([files[i]["percent"].get(pop, np.nan) for i in idx], dtype=float)
        finite = vals[np.isfinite(vals)]
        if len(finite) < MIN_FILES:
            continue
        med = float(np.median(finite))
        floor = _shift_floor(med)
        z = _frequency_z(files, idx, pop)
        for k, v in enumerate(vals):
            if not (np.isfinite(z[k]) and abs(z[k]) > ROBUST_Z and abs(v - med) > floor):
                continue
            if _same_person(files, idx, k, pop, float(v), med):
                continue
            flags[idx[k]].append(
                make_flag(
                    pop,
                    "cohort_outlier",
                    f"{v:.2f}% of parent against the run's median {med:.2f}% over "
                    f"{len(finite)} files (robust z {z[k]:+.1f}, limit {ROBUST_Z:g}, on "
                    f"log-odds; shift {v - med:+.2f} pp, floor {floor:.2f} pp)",
                )
            )


def _position_outliers(files, idx: list[int], flags: list[list[dict]]) -> None:
    keys = list(dict.fromkeys(k for i in idx for k in files[i]["positions"]))
    freq_z: dict[str, np.ndarray] = {}
    for key in keys:
        pairs = [files[i]["positions"].get(key) for i in idx]
        vals = [p[0] if p else np.nan for p in pairs]
        floor = next((p[1] for p in pairs if p), MIN_SHIFT_DISPLAY)
        n = sum(1 for v in vals if np.isfinite(v))
        pop = key.split(" ", 1)[0]
        if pop not in freq_z:
            freq_z[pop] = _frequency_z(files, idx, pop)
        for k, z, v, med in robust_outliers(vals, floor):
            fz = freq_z[pop][k]
            if not (np.isfinite(fz) and abs(fz) > POSITION_NEEDS_FREQUENCY_Z):
                continue  # the cut moved where it changes little: nothing to review
            flags[idx[k]].append(
                make_flag(
                    pop,
                    "cohort_outlier",
                    f"gate position {key} = {v:.3f} against the run's median {med:.3f} over "
                    f"{n} files (robust z {z:+.1f}, limit {ROBUST_Z:g}; shift floor {floor:g}); "
                    f"{pop} frequency robust z {fz:+.1f}",
                )
            )


def _visit_changes(files, idx: list[int], flags: list[list[dict]]) -> None:
    by_patient: dict[str, list[int]] = {}
    for i in idx:
        if files[i].get("patient") and files[i].get("visit"):
            by_patient.setdefault(str(files[i]["patient"]), []).append(i)
    visits = list(dict.fromkeys(files[i]["visit"] for i in idx if files[i].get("visit")))
    if len(visits) < 2:
        return
    first = visits[0]
    pops = list(dict.fromkeys(p for i in idx for p in files[i]["percent"]))
    for later in visits[1:]:
        pairs = []
        for _patient, rows in by_patient.items():
            a = [i for i in rows if files[i]["visit"] == first]
            b = [i for i in rows if files[i]["visit"] == later]
            if len(a) == 1 and len(b) == 1:
                pairs.append((a[0], b[0]))
        if len(pairs) < MIN_FILES:
            continue
        for pop in pops:
            base = [files[a]["percent"].get(pop, np.nan) for a, _ in pairs]
            diff = [files[b]["percent"].get(pop, np.nan) - x for (_, b), x in zip(pairs, base)]
            finite_base = [v for v in base if np.isfinite(v)]
            if len(finite_base) < MIN_FILES:
                continue
            centre = float(np.median(finite_base))
            floor = _shift_floor(centre)
            count_sd = np.hypot(
                _counting_sd(files, [a for a, _ in pairs], pop, centre),
                _counting_sd(files, [b for _, b in pairs], pop, centre),
            )
            min_sd = np.maximum(_min_sd(centre), count_sd)
            for k, z, d, med in robust_outliers(diff, floor, min_sd):
                a, b = pairs[k]
                if abs(d) < MIN_CHANGE_RELATIVE * abs(base[k]):
                    continue
                for i, other in ((a, b), (b, a)):
                    flags[i].append(
                        make_flag(
                            pop,
                            "visit_change",
                            f"patient {files[i]['patient']}: {first} -> {later} change "
                            f"{d:+.2f} pp of parent against the run's median change "
                            f"{med:+.2f} pp over {len(pairs)} patients (robust z {z:+.1f}, "
                            f"limit {ROBUST_Z:g}; floor {floor:.2f} pp); the other file "
                            f"is {files[other].get('sample', '?')}",
                        )
                    )


__all__ = [
    "ROBUST_Z",
    "all_finite",
    "cohort_flags",
    "file_record",
    "flags_on",
    "gate_positions",
    "make_flag",
    "non_finite_flag",
    "non_finite_rows",
    "plausibility_flags",
    "robust_outliers",
    "scatter_cloud_flag",
    "shoulder_flags",
    "trunk_flags",
    "viability_dim_flag",
]
