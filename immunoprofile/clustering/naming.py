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

``hi``/``bright`` means "in the main mode above the top split": when the parent's events
above that split still hold a dimmer shoulder (CD8-dim double-negative T cells beside
CD8-bright T cells within T), the cut is raised to the lower edge of that mode (its peak
minus `BRIGHT_EDGE_SD` of its upper half-width) when the edge lies above the split and
at least `SHOULDER_SHARE` of the events above the split lie below the edge.

Per-sample gates: when the clusters' events were also gated with a template, ``shares``
gives, per population and cluster, the share of the cluster's events that each sample's
own fitted gate put in the population (among those it put in the population's parent).
A cluster then meets the population's conditions when that share is at least one half
(the per-sample analogue of "its median is above the threshold"), and the rule's pooled
cuts are used only where no share is known.

`event_membership` names events rather than clusters, for sub-populations too small for
the clusters to resolve: an event is in such a population when it is in the parent and
its own values pass the population's gate (the sample's fitted gate where the event lies
in the gate's parent, the rule's cuts elsewhere).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile._peaks import find_peaks
from immunoprofile.exceptions import ClusteringError
from immunoprofile.panel import canonical_marker

__all__ = [
    "UNASSIGNED",
    "PhenotypeRule",
    "DEFAULT_RULES",
    "parse_conditions",
    "split_points",
    "Naming",
    "name_clusters",
    "event_membership",
    "own_gate",
    "sample_membership",
]

UNASSIGNED = "unassigned"
#: ``hi``/``bright`` cut floor: peak of the main mode above the top split minus this many
#: of its upper half-widths (a Gaussian mode keeps 99.4 % of its events above it)
BRIGHT_EDGE_SD = 2.5
#: ... and only when at least this share of the events above the split lie below that
#: edge (a dimmer shoulder; a lone Gaussian mode leaves about 0.6 % there)
SHOULDER_SHARE = 0.02
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
#: T, NK-like T) are not counted as CD8 (``hi`` is the main mode above the top split).
#: ``CD4lo``: below the CD4-bright mode (when the CD4- events of T split into two modes,
#: as CD8 T and double-negative T cells can, both are still CD4-low).
DEFAULT_RULES: tuple[PhenotypeRule, ...] = (
    PhenotypeRule("T", None, "CD3+"),
    PhenotypeRule("CD4", "T", "CD4+ CD8-"),
    PhenotypeRule("CD8", "T", "CD8hi CD4lo"),
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
    peaks, prominences = find_peaks(padded, min_prominence * dens.max())
    peaks = peaks - 1
    # sampling noise: a Gaussian-smoothed Poisson count c has sd ~ sqrt(c / (2 sqrt(pi) s));
    # a mode must stand 4 such sd above its surroundings to count
    noise = np.sqrt(dens[peaks] / (2.0 * np.sqrt(np.pi) * smooth))
    peaks = peaks[prominences >= 4.0 * noise]
    centres = 0.5 * (edges[1:] + edges[:-1])
    if peaks.size < 2:
        return [_otsu(x[(x >= lo) & (x <= hi)])] if unimodal == "otsu" else None
    return [float(centres[a + np.argmin(dens[a : b + 1])]) for a, b in zip(peaks[:-1], peaks[1:])]


def _meets(values: np.ndarray, level: str, cuts: Sequence[float]) -> np.ndarray:
    """Which ``values`` (cluster medians or event values) meet ``level`` given ``cuts``."""
    values = np.asarray(values)
    low, high = cuts[0], cuts[-1]
    if level == "+":
        return values >= low
    if level == "-":
        return values < low
    if level in ("hi", "bright"):
        return values >= high
    if level == "lo":
        return values < high
    # dim
    if len(cuts) < 2:
        return values < high
    return (values < high) & (values >= low)


def _bright_edge(x: np.ndarray, cut: float, bins: int = 128, smooth: float = 2.0) -> float:
    """Lower edge of the main mode of ``x`` above ``cut``: its peak minus `BRIGHT_EDGE_SD`
    of its upper half-width (a dimmer shoulder below the peak does not widen it). NaN
    with too few events."""
    from scipy.ndimage import gaussian_filter1d

    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x) & (x >= cut)]
    if x.size < 50:
        return float("nan")
    lo, hi = np.quantile(x, [0.0, 0.998])
    if hi <= lo:
        return float("nan")
    h, edges = np.histogram(x, bins=bins, range=(lo, hi))
    dens = gaussian_filter1d(h.astype(np.float64), smooth, mode="nearest")
    k = int(np.argmax(dens))
    if k == 0:  # the density falls from the cut on: the tail of a dimmer mode, no mode
        return float("nan")
    peak = 0.5 * (edges[k] + edges[k + 1])
    upper = x[x > peak] - peak
    if upper.size < 20:
        return float("nan")
    edge = float(peak - BRIGHT_EDGE_SD * np.sqrt(np.mean(upper**2)))
    # a single Gaussian mode leaves 0.6 % of its events below its edge; only a clearly
    # larger share (a dimmer shoulder between the split and the mode) moves the cut
    if np.mean(x < edge) < SHOULDER_SHARE:
        return float("nan")
    return edge


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
        each rule, and the population whose events they were found on;
        ``per-sample gates`` when the samples' fitted gates decided).
    skipped : population -> why its rule could not be applied (missing markers).
    conditions : population -> its clauses as ``[[(column, level, cuts), ...], ...]``
        (the pooled cuts), for naming single events (`event_membership`).
    shares : population -> per-cluster share of events the per-sample gates put in it
        (NaN where unknown); empty without per-sample gates.
    verdicts : population -> per-cluster verdict of its own conditions (the shares where
        known, else the rule's pooled cuts), before the parent is applied; the fallback
        of `sample_membership`.
    """

    names: pd.Series
    membership: pd.DataFrame
    parents: dict[str, str | None]
    thresholds: pd.DataFrame
    skipped: dict[str, str] = field(default_factory=dict)
    conditions: dict[str, list[list[tuple[int, str, list[float]]]]] = field(default_factory=dict)
    shares: dict[str, np.ndarray] = field(default_factory=dict)
    verdicts: dict[str, np.ndarray] = field(default_factory=dict)


def sample_membership(naming: Naming, shares: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Cluster membership for one sample, from that sample's own gate shares.

    A cluster meets a population's conditions in this sample when at least half of the
    sample's events in it (among those the gate's parent holds) passed the sample's gate;
    where the sample has too few such events (share NaN) or no gate, the pooled verdict
    (`Naming.verdicts`) stands. Parents are applied top-down as in `name_clusters`.
    """
    member: dict[str, np.ndarray] = {}
    for pop, parent in naming.parents.items():
        own = naming.verdicts[pop]
        share = shares.get(pop)
        if share is not None:
            own = np.where(np.isfinite(share), np.nan_to_num(share) >= 0.5, own)
        member[pop] = own if parent is None else member[parent] & own
    return pd.DataFrame(member, index=naming.membership.index, columns=list(naming.parents))


def name_clusters(
    medians: pd.DataFrame,
    events: np.ndarray,
    event_cluster: np.ndarray,
    rules: Sequence[PhenotypeRule] = DEFAULT_RULES,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    min_events: int = 50,
    shares: Mapping[str, np.ndarray] | None = None,
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
    shares : population -> float array (one per cluster): the share of the cluster's
        events that the per-sample fitted gates put in the population, among those they
        put in its parent; NaN where unknown. Where known it decides (share >= 0.5)
        instead of the rule's conditions.
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
    given_shares = {}
    for pop, sh in (shares or {}).items():
        sh = np.asarray(sh, dtype=np.float64)
        if sh.shape != (n_clusters,):
            raise ClusteringError(
                f"name_clusters: shares of {pop!r} must have one value per cluster "
                f"({n_clusters}), got shape {sh.shape}"
            )
        given_shares[pop] = sh
    med = medians.to_numpy(dtype=np.float64)
    by = _EventsBy(events, event_cluster)
    member: dict[str, np.ndarray] = {}
    parents: dict[str, str | None] = {}
    skipped: dict[str, str] = {}
    conditions: dict[str, list[list[tuple[int, str, list[float]]]]] = {}
    verdicts: dict[str, np.ndarray] = {}
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
        by_rule = np.ones(n_clusters, dtype=bool)
        fitted_clauses = []
        for alts in clauses:
            ok = np.zeros(n_clusters, dtype=bool)
            fitted_alts = []
            for j, lvl in alts:
                name = markers[j]
                if marker_key(name) in fixed:
                    cuts, fitted_on = list(fixed[marker_key(name)]), "given"
                else:
                    cuts, fitted_on = _cuts(
                        by, j, rule.parent, member, parents, min_events,
                        relative=lvl not in ("+", "-"),
                    )  # fmt: skip
                    if lvl in ("hi", "bright"):
                        cuts, fitted_on = _raise_to_bright_edge(
                            by, j, rule.parent, member, cuts, fitted_on
                        )
                rows.append(
                    {
                        "population": rule.population,
                        "marker": name,
                        "cuts": cuts,
                        "fitted_on": fitted_on,
                    }  # fmt: skip
                )
                fitted_alts.append((j, lvl, list(cuts)))
                ok |= _meets(med[:, j], lvl, cuts)
            by_rule &= ok
            fitted_clauses.append(fitted_alts)
        share = given_shares.get(rule.population)
        if share is not None:
            known = np.isfinite(share)
            by_rule = np.where(known, np.nan_to_num(share) >= 0.5, by_rule)
            rows.append(
                {
                    "population": rule.population,
                    "marker": "",
                    "cuts": [],
                    "fitted_on": f"per-sample gates ({int(known.sum())} of {n_clusters} clusters)",
                }  # fmt: skip
            )
        member[rule.population] = inside & by_rule
        verdicts[rule.population] = by_rule
        parents[rule.population] = rule.parent
        conditions[rule.population] = fitted_clauses
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
        conditions=conditions,
        shares={p: s for p, s in given_shares.items() if p in member},
        verdicts=verdicts,
    )


class _EventsBy:
    """The events cuts are fitted on, by marker (one contiguous column each), and the
    events of a population's clusters, each worked out once per naming: the rules ask
    for the same population's events, marker after marker, many times."""

    def __init__(self, events: np.ndarray, event_cluster: np.ndarray) -> None:
        self.columns = np.ascontiguousarray(np.asarray(events).T)
        self.event_cluster = event_cluster
        self._inside: dict[str, tuple[np.ndarray, int]] = {}
        self._splits: dict[tuple, list[float] | None] = {}

    def inside(self, level: str, member: Mapping[str, np.ndarray]) -> tuple[np.ndarray, int]:
        """Which events lie in ``level``'s clusters, and how many (a population's
        clusters do not change once named)."""
        got = self._inside.get(level)
        if got is None:
            sel = member[level][self.event_cluster]
            got = self._inside[level] = (sel, int(np.count_nonzero(sel)))
        return got

    def values(self, j: int, level: str | None, member: Mapping[str, np.ndarray]) -> np.ndarray:
        """Marker ``j`` of the events in ``level``'s clusters (None: all events)."""
        if level is None:
            return self.columns[j]
        return self.columns[j][self.inside(level, member)[0]]

    def split(
        self, j: int, level: str | None, member: Mapping[str, np.ndarray], unimodal: str
    ) -> list[float] | None:
        """`split_points` of marker ``j`` on ``level``'s events, computed once."""
        key = (j, level, unimodal)
        if key not in self._splits:
            self._splits[key] = split_points(self.values(j, level, member), unimodal=unimodal)
        got = self._splits[key]
        return None if got is None else list(got)


def _raise_to_bright_edge(
    by: _EventsBy,
    j: int,
    parent: str | None,
    member: Mapping[str, np.ndarray],
    cuts: list[float],
    fitted_on: str,
) -> tuple[list[float], str]:
    """``hi``/``bright`` cuts: the top cut raised to the lower edge of the main mode
    of the parent's events when that edge lies above it (see `_bright_edge`)."""
    edge = _bright_edge(by.values(j, parent, member), cuts[-1])
    if np.isfinite(edge) and edge > cuts[-1]:
        return [*cuts, edge], f"{fitted_on}; main-mode edge"
    return cuts, fitted_on


def event_membership(
    naming: Naming,
    events: np.ndarray,
    event_cluster: np.ndarray,
    populations: Sequence[str],
    gate_in: Mapping[str, np.ndarray] | None = None,
    gate_known: Mapping[str, np.ndarray] | None = None,
    membership: pd.DataFrame | None = None,
) -> dict[str, np.ndarray]:
    """Event-level membership of ``populations`` (named per event, not per cluster).

    An event is in population P when it is in P's parent (event-level when the parent is
    itself in ``populations``, else through its cluster) and its own values pass P's gate:
    ``gate_in[P]`` (the sample's fitted gate) where ``gate_known[P]`` (the event lies in
    that gate's parent), otherwise P's rule with the pooled cuts (``naming.conditions``).

    Parameters
    ----------
    naming : the cluster naming (its membership, parents and conditions).
    events : float32 (n, n_markers), the same columns the naming was fitted on.
    event_cluster : int (n,), cluster (row of ``naming.membership``) of every event.
    populations : populations to name per event; ancestors before descendants.
    gate_in, gate_known : population -> bool (n,) from the per-sample gates (optional).
    membership : cluster membership to use for parents named per cluster (e.g. this
        sample's, `sample_membership`); default ``naming.membership``.

    Returns
    -------
    population -> bool (n,)
    """
    events = np.asarray(events)
    event_cluster = np.asarray(event_cluster)
    out: dict[str, np.ndarray] = {}
    for pop in populations:
        if pop not in naming.conditions:
            raise ClusteringError(f"event_membership: no named population {pop!r}")
        parent = naming.parents[pop]
        if parent is None:
            inside = np.ones(event_cluster.shape[0], dtype=bool)
        elif parent in out:
            inside = out[parent].copy()
        else:
            member = naming.membership if membership is None else membership
            inside = member[parent].to_numpy()[event_cluster]
        # the event's own gate, evaluated where the parent holds it
        rows = np.flatnonzero(inside)
        sub_in = None if gate_in is None else {q: _rows(g, rows) for q, g in gate_in.items()}
        sub_known = (
            None if gate_known is None else {q: _rows(k, rows) for q, k in gate_known.items()}
        )
        inside[rows] = own_gate(naming, events[rows], pop, sub_in, sub_known)
        out[pop] = inside
    return out


def _rows(mask: Any, rows: np.ndarray) -> Any:
    """A per-event mask at ``rows`` (a scalar stays as it is)."""
    return np.asarray(mask)[rows] if np.ndim(mask) else mask


def own_gate(
    naming: Naming,
    events: np.ndarray,
    population: str,
    gate_in: Mapping[str, np.ndarray] | None = None,
    gate_known: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Whether each event passes ``population``'s own gate (parent not applied): the
    sample's fitted gate ``gate_in`` where ``gate_known``, the rule's pooled cuts
    elsewhere."""
    if gate_in is None or population not in gate_in:
        return _by_rule(naming, events, population)
    known = gate_known.get(population, True) if gate_known is not None else True
    known = np.broadcast_to(np.asarray(known, dtype=bool), (events.shape[0],))
    out = np.array(gate_in[population], dtype=bool)  # a copy: the gate where known
    unknown = ~known
    if unknown.all():
        return _by_rule(naming, events, population)
    if unknown.any():  # the rule only where the gate does not apply
        out[unknown] = _by_rule(naming, events[unknown], population)
    return out


def _by_rule(naming: Naming, events: np.ndarray, population: str) -> np.ndarray:
    """Whether each event passes ``population``'s rule with the pooled cuts."""
    n = events.shape[0]
    by_rule = np.ones(n, dtype=bool)
    for alts in naming.conditions[population]:
        ok = np.zeros(n, dtype=bool)
        for j, lvl, cuts in alts:
            ok |= _meets(events[:, j], lvl, cuts)
        by_rule &= ok
    return by_rule


def _cuts(
    by: _EventsBy,
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
        if by.inside(level, member)[1] >= min_events:
            cuts = by.split(j, level, member, "none")
            if cuts is not None:
                return cuts, level
            if relative and level == parent:
                return by.split(j, level, member, "otsu"), f"{level} (otsu)"  # type: ignore[return-value]
        level = parents.get(level)
    return by.split(j, None, member, "otsu"), "all events"  # type: ignore[return-value]


def depth_of(pop: str, parents: Mapping[str, str | None]) -> int:
    """Number of ancestors of ``pop`` in ``parents``."""
    d, node = 0, parents.get(pop)
    while node is not None:
        d += 1
        node = parents.get(node)
    return d
