"""Naming clusters by phenotype rules.

A rule says which population a cluster belongs to from the cluster's median expression:
``Treg`` = inside ``CD4`` and ``CD25hi CD127lo``. Rules form the same hierarchy as the
gating templates (the canonical definitions shared by every part of immunoprofile, after
HIPC / ONE Study practice), and are evaluated top-down, the way a gating tree is:

* the thresholds of a rule's markers are found on the events of the rule's parent
  population (as a gate on ``CD25`` is fitted on ``CD4`` events): the density minima of
  the marker's smoothed histogram, ``m_1 < ... < m_r``. When the marker has a single mode
  there, a ``+``/``-`` condition takes its cut from the grandparent's events (a
  memory-only Treg parent is CD45RA- measured against all CD4), and so on up to all
  events (Otsu's threshold as the last resort), while a relative condition (``hi``,
  ``lo``, ``dim``, ``bright``, as CD56bright within NK) uses Otsu's threshold within the
  parent;
* levels compare a cluster's median with them: ``+`` is ``>= m_1``, ``-`` is ``< m_1``,
  ``hi``/``bright`` is ``>= m_r``, ``lo`` is ``< m_r``, ``dim`` is ``< m_r`` (and
  ``>= m_1`` when there are two or more minima);
* a cluster is in a population when it is in the parent and meets every condition (so a
  memory Treg cluster counts in ``Treg``, ``Treg_memory`` and ``CD4_memory``, as in
  gating); its name is found by walking down the hierarchy, at each level into the first
  child (in rule order) it belongs to; a cluster in no population stays ``unassigned``
  and is reported with its median phenotype.

A condition ``A|B`` is met when either is; a condition on a marker the panel lacks is
skipped when it ends in ``?`` (``CD161+?``: "where stained") and otherwise makes the rule
(and its children) unavailable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from immunoprofile.exceptions import ClusteringError

__all__ = [
    "UNASSIGNED",
    "PhenotypeRule",
    "DEFAULT_RULES",
    "parse_conditions",
    "split_points",
    "Naming",
    "name_clusters",
]

UNASSIGNED = "unassigned"
LEVELS = ("+", "-", "hi", "lo", "dim", "bright")
_COND = re.compile(r"^(?P<marker>.+?)(?P<level>\+|-|hi|lo|dim|bright)(?P<opt>\?)?$")


@dataclass(frozen=True)
class PhenotypeRule:
    """One named population: its parent (None = top level) and its marker conditions.

    ``conditions`` is written the way immunologists write phenotypes, space-separated:
    ``"CD25hi CD127lo"``, ``"CD19+|CD20+"``, ``"CXCR3- CCR6+ CD161+?"``.
    """

    population: str
    parent: str | None
    conditions: str

    def parsed(self) -> list[list[tuple[str, str, bool]]]:
        return parse_conditions(self.conditions, where=self.population)


def parse_conditions(text: str, where: str = "rule") -> list[list[tuple[str, str, bool]]]:
    """``"CD19+|CD20+ CD3-"`` -> ``[[("CD19","+",False),("CD20","+",False)], [("CD3","-",False)]]``."""
    clauses = []
    for token in text.split():
        alts = []
        for part in token.split("|"):
            m = _COND.match(part)
            if not m:
                raise ClusteringError(
                    f"phenotype rule {where!r}: cannot read condition {part!r}; write a marker "
                    f"followed by one of {LEVELS} (e.g. 'CD25hi'), optionally ending in '?'"
                )
            alts.append((m["marker"], m["level"], m["opt"] is not None))
        clauses.append(alts)
    return clauses


#: The canonical populations (PROTOCOL / DESIGN definitions), parents before children.
#: This table is the single place where clustering learns what a population looks like.
#: ``CD8hi``: CD8 T cells are CD8 bright; CD8-dim T cells (gamma-delta / double-negative
#: T, NK-like T) are not counted as CD8 (with a single CD8 threshold, hi equals +).
DEFAULT_RULES: tuple[PhenotypeRule, ...] = (
    PhenotypeRule("T", None, "CD3+"),
    PhenotypeRule("CD4", "T", "CD4+ CD8-"),
    PhenotypeRule("CD8", "T", "CD8hi CD4-"),
    PhenotypeRule("Treg", "CD4", "CD25hi CD127lo"),
    PhenotypeRule("Treg_FOXP3", "Treg", "FOXP3+"),
    PhenotypeRule("Treg_naive", "Treg", "CD45RA+"),
    PhenotypeRule("Treg_memory", "Treg", "CD45RA-"),
    PhenotypeRule("CD4_memory", "CD4", "CD45RA-"),
    PhenotypeRule("Th1", "CD4_memory", "CXCR3+ CCR6-"),
    PhenotypeRule("Th2", "CD4_memory", "CXCR3- CCR6-"),
    PhenotypeRule("Th17", "CD4_memory", "CXCR3- CCR6+ CD161+?"),
    PhenotypeRule("nonT", None, "CD3-"),
    PhenotypeRule("B", "nonT", "CD19+|CD20+"),
    PhenotypeRule("B_naive", "B", "IgD+ CD27-"),
    PhenotypeRule("B_memory", "B", "CD27+ CD38lo?"),
    PhenotypeRule("B_transitional", "B", "CD24hi CD38hi CD27-"),
    PhenotypeRule("plasmablasts", "B", "CD27hi CD38hi"),
    PhenotypeRule("NK", "nonT", "CD19- CD56+"),
    PhenotypeRule("NK_CD56bright", "NK", "CD56bright CD16lo"),
    PhenotypeRule("NK_CD56dim", "NK", "CD56dim CD16+"),
)


# --- thresholds ------------------------------------------------------------------------


def marker_key(name: str) -> str:
    """Comparison key of a marker label (``"CD25 PE"`` -> ``CD25``, ``"FoxP3"`` ->
    ``FOXP3``), through `immunoprofile.panel.canonical_marker`."""
    from immunoprofile.panel import canonical_marker

    return canonical_marker(name) or str(name).strip().upper()


def _otsu(x: np.ndarray, bins: int = 128) -> float:
    """Otsu's threshold (maximal between-class variance) of a 1-D sample."""
    h, edges = np.histogram(x, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(h)[:-1].astype(np.float64)
    w1 = h.sum() - w0
    s0 = np.cumsum(h * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (np.sum(h * centres) - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:-1][np.argmax(between)])


def split_points(
    x: np.ndarray,
    bins: int = 128,
    smooth: float = 2.0,
    min_prominence: float = 0.01,
    unimodal: str = "otsu",
) -> list[float] | None:
    """Density minima between the modes of ``x`` (ascending).

    When ``x`` has a single mode: ``[otsu]`` (``unimodal="otsu"``) or None
    (``unimodal="none"``, so that the caller can look at a wider population instead).

    The histogram spans the 0.2-99.8 % quantiles, is smoothed by a Gaussian of ``smooth``
    bins, and modes count when their prominence is at least ``min_prominence`` of the
    highest density and four times the counting noise at the mode; between two adjacent
    modes the lowest point is the split.
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 10:
        raise ClusteringError(f"cannot place a threshold on {x.size} events")
    lo, hi = np.quantile(x, [0.002, 0.998])
    if hi <= lo:
        return [float(lo)] if unimodal == "otsu" else None
    h, edges = np.histogram(x, bins=bins, range=(lo, hi))
    dens = gaussian_filter1d(h.astype(np.float64), smooth, mode="constant")
    padded = np.r_[0.0, dens, 0.0]
    peaks, props = find_peaks(padded, prominence=min_prominence * dens.max())
    peaks = peaks - 1
    # sampling noise: a Gaussian-smoothed Poisson count c has sd ~ sqrt(c / (2 sqrt(pi) s));
    # a mode must stand 4 such sd above its surroundings to count
    noise = np.sqrt(dens[peaks] / (2.0 * np.sqrt(np.pi) * smooth))
    peaks = peaks[props["prominences"] >= 4.0 * noise]
    centres = 0.5 * (edges[1:] + edges[:-1])
    if peaks.size < 2:
        return [_otsu(x[(x >= lo) & (x <= hi)])] if unimodal == "otsu" else None
    return [float(centres[a + np.argmin(dens[a : b + 1])]) for a, b in zip(peaks[:-1], peaks[1:])]


def _meets(median: float, level: str, cuts: Sequence[float]) -> bool:
    low, high = cuts[0], cuts[-1]
    if level == "+":
        return median >= low
    if level == "-":
        return median < low
    if level in ("hi", "bright"):
        return median >= high
    if level == "lo":
        return median < high
    # dim
    return median < high and (len(cuts) < 2 or median >= low)


# --- naming ----------------------------------------------------------------------------


@dataclass
class Naming:
    """The outcome of naming clusters.

    Attributes
    ----------
    names : cluster -> its name (deepest matching population, or ``unassigned``).
    membership : bool DataFrame, clusters x populations (a cluster is in every ancestor of
        the population it is named after).
    parents : population -> parent population (None for top-level).
    thresholds : rows ``population, marker, cuts, fitted_on`` (the split points used for
        each rule, and the population whose events they were found on).
    skipped : population -> why its rule could not be applied (missing markers).
    """

    names: pd.Series
    membership: pd.DataFrame
    parents: dict[str, str | None]
    thresholds: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)


def name_clusters(
    medians: pd.DataFrame,
    events: np.ndarray,
    event_cluster: np.ndarray,
    rules: Sequence[PhenotypeRule] = DEFAULT_RULES,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    min_events: int = 50,
) -> Naming:
    """Name clusters from their median phenotype with phenotype ``rules``.

    Parameters
    ----------
    medians : clusters x markers (columns are marker names), median expression.
    events : float32 (n, len(medians.columns)) events on the same scale, e.g. the pooled
        training subsample; thresholds are fitted on them.
    event_cluster : the cluster (row position in ``medians``) of every event.
    rules : the phenotype rules, parents before children.
    thresholds : marker -> fixed cut points, overriding the fitted ones for that marker
        everywhere (e.g. thresholds taken from a gating template).
    min_events : a rule whose parent has fewer events than this is not fitted (its
        populations stay empty).
    """
    markers = list(medians.columns)
    events = np.asarray(events)
    event_cluster = np.asarray(event_cluster)
    if events.ndim != 2 or events.shape[1] != len(markers):
        raise ClusteringError(
            f"name_clusters: events must have {len(markers)} columns ({markers}), got {events.shape}"
        )
    if event_cluster.shape[0] != events.shape[0]:
        raise ClusteringError("name_clusters: one cluster label per event is needed")
    lookup = {marker_key(m): j for j, m in enumerate(markers)}
    fixed = {marker_key(k): list(v) for k, v in (thresholds or {}).items()}
    n_clusters = len(medians)
    med = medians.to_numpy(dtype=np.float64)
    member: dict[str, np.ndarray] = {}
    parents: dict[str, str | None] = {}
    skipped: dict[str, str] = {}
    rows = []
    for rule in rules:
        if rule.parent is not None and rule.parent not in member:
            if rule.parent in skipped or rule.parent in parents:
                skipped[rule.population] = f"parent {rule.parent!r} is unavailable"
                continue
            raise ClusteringError(
                f"phenotype rule {rule.population!r}: parent {rule.parent!r} is not defined "
                "before it"
            )
        clauses = []
        missing = []
        for alts in rule.parsed():
            usable = [(lookup[marker_key(m)], lvl) for m, lvl, _ in alts if marker_key(m) in lookup]
            if usable:
                clauses.append(usable)
            elif not all(opt for _, _, opt in alts):
                missing.append("|".join(m for m, _, _ in alts))
        if missing:
            skipped[rule.population] = f"markers not in the clustering panel: {missing}"
            continue
        inside = (
            np.ones(n_clusters, dtype=bool) if rule.parent is None else member[rule.parent].copy()
        )
        for alts in clauses:
            ok = np.zeros(n_clusters, dtype=bool)
            for j, lvl in alts:
                name = markers[j]
                if marker_key(name) in fixed:
                    cuts, fitted_on = list(fixed[marker_key(name)]), "given"
                else:
                    cuts, fitted_on = _cuts(
                        events, event_cluster, j, rule.parent, member, parents, min_events,
                        relative=lvl not in ("+", "-"),
                    )  # fmt: skip
                rows.append(
                    {
                        "population": rule.population,
                        "marker": name,
                        "cuts": cuts,
                        "fitted_on": fitted_on,
                    }  # fmt: skip
                )
                ok |= np.array([_meets(v, lvl, cuts) for v in med[:, j]])
            inside &= ok
        member[rule.population] = inside
        parents[rule.population] = rule.parent
    pops = list(member)
    membership = pd.DataFrame(
        {p: member[p] for p in pops}, index=medians.index, columns=pops, dtype=bool
    )
    children: dict[str | None, list[str]] = {}
    for p in pops:
        children.setdefault(parents[p], []).append(p)
    names = []
    for i in range(n_clusters):
        name, level = UNASSIGNED, None
        while True:
            nxt = next((c for c in children.get(level, []) if member[c][i]), None)
            if nxt is None:
                break
            name = level = nxt
        names.append(name)
    return Naming(
        names=pd.Series(names, index=medians.index, name="name"),
        membership=membership,
        parents=parents,
        thresholds=pd.DataFrame(rows, columns=["population", "marker", "cuts", "fitted_on"]),
        skipped=skipped,
    )


def _cuts(
    events: np.ndarray,
    event_cluster: np.ndarray,
    j: int,
    parent: str | None,
    member: Mapping[str, np.ndarray],
    parents: Mapping[str, str | None],
    min_events: int,
    relative: bool = False,
) -> tuple[list[float], str]:
    """Split points of marker ``j`` on the parent's events.

    When the marker is unimodal in the parent: for ``+``/``-`` levels the cut is taken
    from the nearest wider population where it is not (a memory-only Treg parent still
    has CD45RA- measured against all CD4), with Otsu on all events as the last resort;
    for relative levels (``hi``, ``lo``, ``dim``, ``bright``: a brighter or dimmer part
    of the parent, as CD56bright within NK) Otsu's threshold within the parent is used.
    """
    level = parent
    while level is not None:
        sel = member[level][event_cluster]
        if sel.sum() >= min_events:
            cuts = split_points(events[sel, j], unimodal="none")
            if cuts is not None:
                return cuts, level
            if relative and level == parent:
                return split_points(events[sel, j], unimodal="otsu"), f"{level} (otsu)"  # type: ignore[return-value]
        level = parents.get(level)
    return split_points(events[:, j], unimodal="otsu"), "all events"  # type: ignore[return-value]


def depth_of(pop: str, parents: Mapping[str, str | None]) -> int:
    """Number of ancestors of ``pop`` in ``parents``."""
    d, node = 0, parents.get(pop)
    while node is not None:
        d += 1
        node = parents.get(node)
    return d
