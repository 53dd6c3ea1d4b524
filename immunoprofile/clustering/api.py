"""`cluster`: FlowSOM-style clustering of a cohort, named, quantified and tabulated.

The steps (Van Gassen et al., 2015, adapted to a longitudinal cohort):

1. every file is read, compensated and transformed (as a gating template says), and
   optionally pre-gated on a template population (``parent="live"``);
2. an equal number of events is drawn from every file (``subsample_per_sample``), so that
   each patient and visit weighs the same in the pooled training set;
3. a self-organising map is trained on the chosen markers of the pooled subsample, and
   its nodes are grouped into metaclusters by consensus hierarchical clustering;
4. every event of every file is mapped to its node (and so to its metacluster);
5. metaclusters (or nodes) are named by phenotype rules; populations are the events of
   the clusters carrying them, so the population table has the same shape as gating's.
   With a template, every file is also gated by it, and in each file a cluster's
   phenotype is decided by the gates fitted to that file (the share of the file's events
   in the cluster that its gate puts in the population), the pooled shares and the
   rules' pooled cuts being the fallbacks;
6. sub-populations the clusters do not resolve (transitional B cells get no node of
   their own; naive and memory Treg share the few Treg nodes) are named per event: an
   event of the parent is in the subset when it passes the subset's gate (its sample's
   fitted gate, or the rule's cuts). Resolution is measured: the F1 agreement, within the
   parent, of membership by cluster with the events' own gate.

Files that claim the same patient and visit (and tube) do not stop clustering, as they do
not stop gating: every file is clustered and keeps its rows in the population table (with
``identity_clash`` True), the clash is announced with an `IdentityClashWarning` and listed
in ``errors`` (``error`` = ``IdentityClashError``, one row per file).

Memory: only the chosen marker columns of the (pre-gated) events are kept, one float32
array per file, plus one int16 node label per event and, with per-sample gates, one
bit-field per event (the gates it passed and the populations it was named in per event).
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile._files import write_owned
from immunoprofile.batch import (
    ERROR_COLUMNS,
    LOCAL_SCHEDULERS,
    as_inputs,
    check_jobs,
    clash_rows,
    input_names,
    local_pool,
    warn_clashes,
)
from immunoprofile.clustering.agreement import (
    agreement_pairs,
    agreement_table,
    naming_levels,
    read_gating_table,
)
from immunoprofile.clustering.embed import embed_result, require_umap
from immunoprofile.clustering.metacluster import ConsensusMetaclustering
from immunoprofile.clustering.naming import (
    DEFAULT_RULES,
    UNASSIGNED,
    Naming,
    PhenotypeRule,
    event_membership,
    name_clusters,
    own_gate,
    sample_membership,
)
from immunoprofile.clustering.passes import load_events, run_pass, store_events
from immunoprofile.clustering.som import SOM
from immunoprofile.cohort import (
    CLASH_COLUMN,
    CLASH_ERROR,
    clashing_samples,
    find_clashes,
    resolve_identities,
)
from immunoprofile.comparison import ENDPOINTS
from immunoprofile.exceptions import ClusteringError, ImmunoprofileError
from immunoprofile.folder import CLUSTERING, CLUSTERING_OPTIONAL, WRITERS, outputs
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.template import load_template
from immunoprofile.hierarchy import ROOT, in_subtree
from immunoprofile.io.fcs import read_fcs
from immunoprofile.panel import Panel
from immunoprofile.plots import clustering as cplots
from immunoprofile.prepare import prepare
from immunoprofile.progress import counter, stage
from immunoprofile.quantify import TABLE_COLUMNS, write_csv, write_parquet
from immunoprofile.results import error_table
from immunoprofile.sample import Sample, check_not_blank

__all__ = ["cluster", "ClusterResult", "default_markers"]

_NOT_LINEAGE = re.compile(r"viab|live|dead|zombie|7-?aad|dapi|\bpi\b|l/d|fvs|time", re.IGNORECASE)


def default_markers(sample: Sample) -> list[str]:
    """Fluorescence channels with a marker name ($PnS), minus viability dyes: the markers
    FlowSOM is usually run on when nobody says otherwise."""
    out = []
    for name, marker, kind in zip(
        sample.channels["name"], sample.channels["marker"], sample.channels["kind"]
    ):
        if kind != "fluorescence" or not marker or not str(marker).strip():
            continue
        if _NOT_LINEAGE.search(str(marker)) or _NOT_LINEAGE.search(str(name)):
            continue
        out.append(str(marker).strip())
    return out


def _resolve_columns(sample: Sample, markers: Sequence[str]) -> list[int]:
    """Column index of each marker (names resolved by `immunoprofile.panel.Panel`)."""

    panel = Panel(sample)
    return [int(panel.index(m)) for m in markers]


@dataclass
class _Prepared:
    name: str
    X: np.ndarray | str  # float32 (n_clustered, n_markers), or its .npy in a scratch folder
    rows: np.ndarray | None  # rows of the file that were clustered (None = all)
    n_total: int
    reference_count: int | None
    keywords: dict[str, str]
    gate_bits: np.ndarray | None = None  # per clustered event, bit k: in gate_names[k]
    gate_names: list[str] = field(default_factory=list)
    fitted: dict[str, dict[str, Any]] = field(default_factory=dict)
    n_events: int = 0  # clustered events (rows of X)

    def events(self) -> np.ndarray:
        """The clustered events (memory-mapped when kept in a scratch folder)."""
        return load_events(self.X)

    def light(self) -> _Prepared:
        """What the later passes need of this file (its events or their ``.npy``, and its
        gate bits), without what only the caller keeps (rows, keywords, fitted gates):
        less to send to a worker."""
        return replace(self, rows=None, keywords={}, fitted={})


def _bit_dtype(n: int) -> type:
    """Smallest unsigned integer type with ``n`` bits."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n <= np.iinfo(dt).bits:
            return dt
    raise ClusteringError(f"cannot pack {n} populations into one bit-field (at most 64)")


def _pack(masks: Sequence[np.ndarray], n: int) -> np.ndarray:
    """Boolean masks (each (n,)) as one bit-field per event (bit k = mask k)."""
    dt = _bit_dtype(max(len(masks), 1))
    out = np.zeros(n, dtype=dt)
    for k, m in enumerate(masks):
        out |= m.astype(dt) << dt(k)
    return out


def _bit(bits: np.ndarray, k: int) -> np.ndarray:
    """Bit ``k`` of a bit-field as a boolean mask."""
    return ((bits >> bits.dtype.type(k)) & bits.dtype.type(1)).astype(bool)


def _prepare(
    item: str | os.PathLike | Sample,
    name: str,
    markers: Sequence[str] | None,
    template: Any,
    parent: str | None,
    seed: int,
    gate_populations: Sequence[str] = (),
) -> tuple[_Prepared, list[str]]:
    own = not isinstance(item, Sample)  # read here: compensated and transformed in place
    if isinstance(item, Sample):
        sample = item
    else:
        sample = read_fcs(item)

    check_not_blank(sample)
    rows = None
    ref_count = None
    res = None
    if parent is not None or (template is not None and gate_populations):
        res = apply_template(sample, template, seed=seed, copy=not own)
        sample = res.sample
    if parent is not None:
        assert res is not None
        if parent not in res.masks:
            raise ClusteringError(
                f"{name}: template {template.name!r} has no population {parent!r}; it has "
                f"{list(res.masks)}"
            )
        rows = np.flatnonzero(res.masks[parent])
        ref = getattr(template, "reference_population", None)
        tree = {p.name: p.parent for p in template.populations}
        # percent of lymphocytes only when what is clustered is a subset of the reference
        if ref is not None and ref in res.masks and in_subtree(parent, ref, tree):
            ref_count = int(np.count_nonzero(res.masks[ref]))
    elif res is None and template is not None:
        sample = prepare(sample, **template.preparation(), overwrite=own)
    chosen = list(markers) if markers is not None else default_markers(sample)
    if not chosen:
        raise ClusteringError(f"{name}: no markers to cluster on (no channel has a $PnS name)")
    cols = _resolve_columns(sample, chosen)
    if rows is None:
        X = np.ascontiguousarray(sample.events[:, cols], dtype=np.float32)
    else:
        X = np.ascontiguousarray(sample.events[np.ix_(rows, cols)], dtype=np.float32)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ClusteringError(f"{name}: {bad} events have NaN or infinite values in {chosen}")
    if X.shape[0] == 0:
        raise ClusteringError(
            f"{name}: no events to cluster: population {parent!r} is empty in this file"
        )
    prep = _Prepared(name, X, rows, sample.n_events, ref_count, dict(sample.keywords))
    prep.n_events = X.shape[0]
    if res is not None and gate_populations:
        found = [p for p in gate_populations if p in res.masks]
        prep.gate_names = found
        prep.gate_bits = _pack(
            [res.masks[p] if rows is None else res.masks[p][rows] for p in found], X.shape[0]
        )
        prep.fitted = {p: res.fitted[p] for p in found if p in res.fitted}
    return prep, chosen


@dataclass
class ClusterResult:
    """Clusters of a cohort, their names and their frequencies.

    Attributes
    ----------
    markers : the markers clustered on.
    identities : per file, who and when (`immunoprofile.cohort.Identity`).
    som : the fitted `SOM`.
    metaclustering : the fitted `ConsensusMetaclustering` of the SOM nodes.
    node_metacluster : int (n_nodes,), metacluster of each node.
    naming : how clusters were named (`immunoprofile.clustering.naming.Naming`).
    name_level : ``"metacluster"`` or ``"node"``: which clusters carry the names.
    nodes : per file, int16 node of every clustered event.
    rows : per file, the file rows that were clustered (None = every event).
    n_total : per file, events in the file.
    reference_counts : per file, events in the template's reference population
        (lymphocytes), when pre-gated on it or on one of its descendants; used for
        ``percent_of_lymphocytes`` (NaN otherwise, as in the gating table).
    parent : the pre-gate population, or None.
    train_events, train_nodes, train_sample : the pooled training subsample.
    embedding : DataFrame (``umap1``, ``umap2``, ``sample``, ``node``, ...) when UMAP was
        asked for.
    errors : files left out with ``on_error="skip"``, and files whose identity another
        file also claims (``error`` = ``IdentityClashError``; clustered and kept in the
        table): ``file, sample, error, message, patient, visit, tube, other_files``.
    clashes : groups of files claiming one patient, visit and tube
        (`immunoprofile.cohort.IdentityClash`); their rows carry ``identity_clash``.
    event_level : populations named per event rather than per cluster (the children of a
        parent whose clusters do not resolve them), in rule order.
    event_bits : per file, a bit-field per clustered event (bit k: in ``event_level[k]``),
        or None when no population is named per event.
    sample_gates : the per-sample template gates used for naming, one row per file and
        population (``sample, population, parent, type, position, fallback``); empty
        without a template.
    sample_members : per file, cluster x population membership decided by that file's
        own gates (each cluster's share of the file's events inside the file's gate);
        empty: ``naming.membership`` for every file.
    resolution : per population with a parent, how well the clusters resolve it (``f1``
        of membership by cluster vs the events' own gate, within the parent) and whether
        it was named per ``cluster`` or per ``event``.
    """

    markers: list[str]
    identities: list[Any]
    som: SOM
    metaclustering: ConsensusMetaclustering
    node_metacluster: np.ndarray
    naming: Naming
    name_level: str
    nodes: list[np.ndarray]
    rows: list[np.ndarray | None]
    n_total: list[int]
    reference_counts: list[int | None]
    parent: str | None
    train_events: np.ndarray
    train_nodes: np.ndarray
    train_sample: np.ndarray
    embedding: pd.DataFrame | None = None
    errors: pd.DataFrame = field(default_factory=pd.DataFrame)
    event_level: list[str] = field(default_factory=list)
    event_bits: list[np.ndarray | None] = field(default_factory=list)
    resolution: pd.DataFrame = field(default_factory=pd.DataFrame)
    sample_members: list[pd.DataFrame] = field(default_factory=list)
    sample_gates: pd.DataFrame = field(default_factory=pd.DataFrame)
    clashes: list[Any] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    _cluster_of_node: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not len(self.errors.columns):
            self.errors = pd.DataFrame(columns=list(ERROR_COLUMNS))
        self.errors = error_table(self.errors, ERROR_COLUMNS)
        self._cluster_of_node = (
            self.node_metacluster
            if self.name_level == "metacluster"
            else np.arange(self.node_metacluster.size)
        )

    # --- basic facts -------------------------------------------------------------------

    @property
    def samples(self) -> list[str]:
        """Sample names of every input, in input order, failed files included (they are
        in `errors`); the results protocol (`immunoprofile.results.BatchResults`)."""
        return list(self.inputs) if self.inputs else self.clustered_samples

    @property
    def clustered_samples(self) -> list[str]:
        """Sample names of the clustered files, in input order: file ``i`` of the per-file
        lists (``nodes``, ``rows``, ``n_total``, `population_mask`)."""
        return [i.sample for i in self.identities]

    def _file(self, i: int | str) -> int:
        """The position of a clustered file, from itself or its sample name."""
        if isinstance(i, str):
            names = self.clustered_samples
            if i not in names:
                raise KeyError(f"no clustered sample {i!r}; clustered are {names}")
            return names.index(i)
        return int(i)

    @property
    def clashing_samples(self) -> list[str]:
        """Samples whose identity another file also claims, in input order."""

        return clashing_samples(self.identities, self.clashes)

    @property
    def n_failed(self) -> int:
        """Number of files left out because they could not be read, gated or resolved."""
        if not len(self.errors):
            return 0
        return int((self.errors["error_type"] != CLASH_ERROR).sum())

    @property
    def n_metaclusters(self) -> int:
        return int(self.node_metacluster.max()) + 1

    def metacluster_labels(self, i: int) -> np.ndarray:
        """Metacluster (0-based) of every clustered event of file ``i``."""
        return self.node_metacluster[self.nodes[i]]

    def metacluster_names(self) -> pd.Series:
        """Name of each metacluster (majority name of its nodes when nodes carry names)."""
        if self.name_level == "metacluster":
            return self.naming.names.copy()
        counts = self.som.counts_
        out = {}
        for mc in range(self.n_metaclusters):
            sel = np.flatnonzero(self.node_metacluster == mc)
            weights = pd.Series(counts[sel], index=self.naming.names.iloc[sel].to_numpy())
            out[_mc_label(mc)] = weights.groupby(level=0).sum().idxmax()
        return pd.Series(out, name="name")

    def population_mask(self, i: int | str, population: str) -> np.ndarray:
        """Boolean mask over ALL events of clustered file ``i`` (its position among
        `clustered_samples`, or its sample name); False outside the pre-gate."""
        i = self._file(i)
        if population not in self.naming.membership.columns:
            raise ClusteringError(
                f"no named population {population!r}; named are "
                f"{list(self.naming.membership.columns)}"
            )
        inside = self._inside(i, population)
        full = np.zeros(self.n_total[i], dtype=bool)
        if self.rows[i] is None:
            full[:] = inside
        else:
            full[self.rows[i][inside]] = True
        return full

    def _inside(self, i: int, population: str) -> np.ndarray:
        """Membership of every clustered event of file ``i`` (event-level or by cluster)."""
        if population in self.event_level:
            bits = self.event_bits[i]
            assert bits is not None
            return _bit(bits, self.event_level.index(population))
        member = self._membership(i)[population].to_numpy()
        return member[self._cluster_of_node[self.nodes[i]]]

    def _membership(self, i: int) -> pd.DataFrame:
        """Cluster membership used for file ``i`` (its own gates' verdicts, or pooled)."""
        return self.sample_members[i] if self.sample_members else self.naming.membership

    # --- tables -------------------------------------------------------------------------

    def counts(self) -> pd.DataFrame:
        """Events per file (rows, by sample name) and metacluster (columns ``MC01``...)."""
        k = self.n_metaclusters
        data = np.vstack(
            [np.bincount(self.metacluster_labels(i), minlength=k) for i in range(len(self.nodes))]
        )
        return pd.DataFrame(
            data, index=self.clustered_samples, columns=[_mc_label(j) for j in range(k)]
        )

    def medians(self, level: str = "metacluster") -> pd.DataFrame:
        """Median marker expression per metacluster (or node) over the training subsample."""
        groups = (
            self.node_metacluster[self.train_nodes] if level == "metacluster" else self.train_nodes
        )
        n = self.n_metaclusters if level == "metacluster" else self.node_metacluster.size
        label = _mc_label if level == "metacluster" else _node_label
        return _group_medians(self.train_events, groups, n, self.markers, label)

    def metaclusters(self) -> pd.DataFrame:
        """One row per metacluster: name, nodes, events, percent of clustered events, and
        the median of every marker (the assignments summary; ``unassigned`` ones included)."""
        counts = self.counts().sum(axis=0)
        total = counts.sum()
        nodes = pd.Series(self.node_metacluster).value_counts().sort_index()
        med = self.medians("metacluster")
        out = pd.DataFrame(
            {
                "metacluster": med.index,
                "name": self.metacluster_names().reindex(med.index).to_numpy(),
                "nodes": nodes.reindex(range(len(med)), fill_value=0).to_numpy(),
                "count": counts.reindex(med.index).to_numpy(),
                "percent": 100.0 * counts.reindex(med.index).to_numpy() / max(total, 1),
            }
        )
        return pd.concat([out, med.reset_index(drop=True)], axis=1)

    def naming_table(self) -> pd.DataFrame:
        """How each named population was named: ``population, naming, naming_f1``.

        ``naming`` is the cluster level (``node`` or ``metacluster``) for populations the
        clusters carry, ``event (template gate)`` for sub-populations named per event by
        each sample's own fitted gate (their agreement with gating is largely by
        construction), ``event (rule)`` for those named per event by the rule's cuts;
        ``naming_f1`` is ``resolution``'s F1. Pass it to `agreement_table`.
        """

        return naming_levels(self.resolution, list(self.naming.parents), self.name_level)

    def unassigned(self) -> pd.DataFrame:
        """Metaclusters (or nodes) no rule named, with their median phenotype."""
        level = self.name_level
        med = self.medians(level)
        names = self.naming.names
        keep = names.to_numpy() == UNASSIGNED
        return med[keep]

    def table(self, include_metaclusters: bool = True) -> pd.DataFrame:
        """The tidy population table (``method="clustering"``): per file, one row per named
        population (rule hierarchy for ``parent``) and, optionally, one per metacluster
        (``population`` = ``MC01``..., ``parent`` = the pre-gate population or ``root``).
        With identity clashes, ``identity_clash`` says which files share an identity."""

        top = self.parent or ROOT
        member = self.naming.membership
        pops = list(member.columns)
        n_nodes, n_clusters = self.node_metacluster.size, member.shape[0]
        rows = []
        for i, ident in enumerate(self.identities):
            # each file's events counted once, per node; clusters and metaclusters add up
            # their nodes' counts
            per_node = np.bincount(self.nodes[i], minlength=n_nodes)
            per_cluster = _add_up(per_node, self._cluster_of_node, n_clusters)
            n_in = int(self.nodes[i].size)
            ref = self.reference_counts[i]
            members = self._membership(i)
            if list(members.columns) != pops:
                members = members[pops]
            mine = members.to_numpy(dtype=bool)  # cluster x population
            counts = {
                p: int(np.count_nonzero(self._inside(i, p)))
                if p in self.event_level
                else int(per_cluster[mine[:, k]].sum())
                for k, p in enumerate(pops)
            }
            for p in pops:
                par = self.naming.parents[p]
                pc = n_in if par is None else counts[par]
                rows.append(_row(ident, p, par or top, counts[p], pc, ref))
            if include_metaclusters:
                mc_counts = (
                    per_cluster
                    if self.name_level == "metacluster"
                    else _add_up(per_node, self.node_metacluster, self.n_metaclusters)
                )
                for j, c in enumerate(mc_counts):
                    rows.append(_row(ident, _mc_label(j), top, int(c), n_in, ref))
        df = pd.DataFrame(rows, columns=[*TABLE_COLUMNS, "method"])
        if any(getattr(i, "lymphocytes_per_ul", None) for i in self.identities):
            lym = df["sample"].map({i.sample: i.lymphocytes_per_ul for i in self.identities})
            df["cells_per_ul"] = lym.astype(float) * df["percent_of_lymphocytes"] / 100.0
            df = df[[*TABLE_COLUMNS, "cells_per_ul", "method"]]
        if self.clashes:
            # every clustered file keeps its rows; the flag says which ones are ambiguous
            df[CLASH_COLUMN] = df["sample"].isin(self.clashing_samples)
        return df.astype({"count": "int64", "parent_count": "int64"})

    def write(
        self,
        out_dir: str | os.PathLike,
        manifest: bool = True,
        gating: str | os.PathLike | pd.DataFrame | None = None,
        plots: bool = False,
    ) -> list[Path]:
        """Write ``populations.csv`` (+ Parquet), ``metaclusters.csv``,
        ``metacluster_counts.csv``, ``thresholds.csv``, ``unassigned.csv``,
        ``resolution.csv``, (with per-sample gates) ``sample_gates.csv``, (with UMAP)
        ``umap.csv`` and (with failed or clashing files) ``errors.csv`` into ``out_dir``
        (atomically); returns the paths.

        ``gating``: a gating population table (or the path of a ``populations.csv`` from
        `immunoprofile gate`): also ``agreement.csv`` and ``agreement_pairs.csv``, the
        agreement of clustering with gating per population (`agreement_table`).
        ``plots``: also the figures ``heatmap.png`` and ``som_grid.png`` (+ ``umap_*.png``
        with UMAP, ``agreement.png`` with ``gating``).

        With ``manifest``, ``outputs.json`` records what was written, and an optional
        output an earlier write into ``out_dir`` recorded but this one does not produce
        (an ``errors.csv`` from a run that had errors) is removed afterwards
        (`CLUSTER_OPTIONAL_OUTPUTS`; `immunoprofile._files.write_owned`)."""

        out = Path(out_dir)
        if gating is not None and not isinstance(gating, pd.DataFrame):
            gating = read_gating_table(gating)
        tab = self.table()
        th = self.naming.thresholds.copy()
        th["cuts"] = th["cuts"].map(lambda c: ";".join(f"{v:.4g}" for v in c))

        def _write() -> list[Path]:
            name = CLUSTERING  # the names of `immunoprofile.folder`
            paths = [
                write_csv(tab, out / name["populations"]),
                write_parquet(tab, out / name["populations_parquet"]),
                write_csv(self.metaclusters(), out / name["metaclusters"]),
                write_csv(self.counts(), out / name["metacluster_counts"], index=True),
                write_csv(th, out / name["thresholds"]),
                write_csv(self.unassigned(), out / name["unassigned"], index=True),
            ]
            if len(self.sample_gates):
                paths.append(write_csv(self.sample_gates, out / name["sample_gates"]))
            if len(self.resolution):
                paths.append(write_csv(self.resolution, out / name["resolution"]))
            if self.embedding is not None:
                paths.append(write_csv(self.embedding, out / name["umap"]))
            if len(self.errors):
                paths.append(write_csv(self.errors, out / name["errors"]))
            agree = pairs = None
            if gating is not None:
                agree, pairs = self.agreement(gating)
                paths.append(write_csv(agree, out / name["agreement"]))
                paths.append(write_csv(pairs, out / name["agreement_pairs"]))
            if plots:
                paths += self._write_figures(out, agree, pairs)
            return paths

        if not manifest:
            return _write()
        out.mkdir(parents=True, exist_ok=True)
        written, _ = write_owned(
            out, [], _write, writer=WRITERS["clustering"], stale=CLUSTER_OPTIONAL_OUTPUTS
        )
        return [Path(p) for p in written]

    def agreement(self, gating: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Agreement of the clustering with a gating population table: per population
        (`immunoprofile.clustering.agreement.agreement_table`, with how each population
        was named) and per sample x population (`agreement_pairs`)."""

        ctab = self.table(include_metaclusters=False)
        agree = agreement_table(gating, ctab, naming=self.naming_table())
        return agree, agreement_pairs(gating, ctab)

    def _write_figures(
        self, out: Path, agree: pd.DataFrame | None, pairs: pd.DataFrame | None
    ) -> list[Path]:

        figs = {
            "heatmap.png": cplots.median_heatmap(self.metaclusters(), self.markers),
            "som_grid.png": cplots.som_grid_plot(self),
        }
        if self.embedding is not None:
            for c in ("metacluster", "name", "visit"):
                figs[f"umap_{c}.png"] = cplots.umap_plot(self.embedding, c)
        if agree is not None and len(agree):
            # the figure shows the study's endpoints (the CSV has every population)
            shown = agree[agree["population"].isin(AGREEMENT_FIGURE_POPULATIONS)]
            figs["agreement.png"] = cplots.agreement_plot(pairs, shown if len(shown) else agree)
        paths = []
        for fname, fig in figs.items():
            cplots.save(fig, out / fname)
            paths.append(out / fname)
        return paths


#: populations the agreement figure shows (agreement.csv has every population)
AGREEMENT_FIGURE_POPULATIONS = ("T", "CD4", "CD8", *ENDPOINTS)

#: every name (or glob) `immunoprofile cluster` may write into its output folder
CLUSTER_OUTPUTS = outputs("clustering")

#: outputs of `ClusterResult.write` and `immunoprofile cluster` that a run may or may not
#: produce; one recorded by an earlier run into the same folder and not produced now is
#: removed (the others are always rewritten)
CLUSTER_OPTIONAL_OUTPUTS = CLUSTERING_OPTIONAL


def _clash_rows(identities: Sequence[Any], clashes: Sequence[Any]) -> list[dict[str, str]]:
    """One errors row per file whose identity another file also claims (input order)."""
    return clash_rows(
        identities, clashes, f"clustered, in populations.csv with {CLASH_COLUMN} True"
    )


def _add_up(counts: np.ndarray, group: np.ndarray, n: int) -> np.ndarray:
    """``counts`` (one per node) added up by ``group`` (the group of each node) into ``n``
    groups: whole numbers, as counting the events of each group."""
    out = np.zeros(max(n, int(group.max()) + 1 if group.size else 0), dtype=np.int64)
    np.add.at(out, group, counts)
    return out


def _row(ident: Any, pop: str, parent: str, count: int, pc: int, ref: int | None) -> dict:
    return {
        "sample": ident.sample,
        "patient": ident.patient,
        "visit": ident.visit,
        "population": pop,
        "parent": parent,
        "count": count,
        "parent_count": pc,
        "percent_of_parent": 100.0 * count / pc if pc else np.nan,
        "percent_of_lymphocytes": 100.0 * count / ref if ref else np.nan,
        "method": "clustering",
    }


def _mc_label(j: int) -> str:
    return f"MC{j + 1:02d}"


def _node_label(j: int) -> str:
    return f"node{j + 1:03d}"


def _group_medians(X: np.ndarray, groups: np.ndarray, n: int, markers, label) -> pd.DataFrame:
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(n + 1))
    med = np.full((n, X.shape[1]), np.nan, dtype=np.float64)
    for g in range(n):  # loop over clusters; each median is vectorised over its events
        sel = order[bounds[g] : bounds[g + 1]]
        if sel.size:
            med[g] = np.median(X[sel], axis=0)
    return pd.DataFrame(med, index=[label(g) for g in range(n)], columns=list(markers))


def cluster(
    paths_or_samples: str | os.PathLike | Sample | Iterable[str | os.PathLike | Sample],
    markers: Sequence[str] | None = None,
    n_metaclusters: int | tuple[int, int] = 20,
    grid: tuple[int, int] = (10, 10),
    seed: int = 0,
    parent: str | None = None,
    template: Any = None,
    subsample_per_sample: int = 20_000,
    umap: bool = False,
    umap_events: int = 20_000,
    name_level: str = "node",
    rules: Sequence[PhenotypeRule] = DEFAULT_RULES,
    thresholds: Mapping[str, Sequence[float]] | None = None,
    samplesheet: str | os.PathLike | pd.DataFrame | None = None,
    pattern: str | None = None,
    n_epochs: int = 10,
    n_resamples: int = 100,
    on_error: str = "raise",
    sample_gates: bool = True,
    min_cluster_f1: float = 0.95,
    progress: bool = False,
    jobs: int = 1,
    scheduler: Any = None,
    scratch: str | os.PathLike | None = None,
) -> ClusterResult:
    """Cluster a cohort FlowSOM-style and name the clusters.

    Parameters
    ----------
    paths_or_samples : FCS paths and/or `Sample` objects (a single one is accepted).
    markers : markers to cluster on (default: every fluorescence channel with a $PnS name
        except viability dyes).
    n_metaclusters : fixed number of metaclusters, or a (min, max) range to choose from by
        the consensus-CDF criterion.
    grid : SOM grid (rows, columns).
    seed : seeds subsampling, map initialisation and consensus resampling.
    parent : a population of ``template`` to pre-gate on (e.g. ``"live"``); needs
        ``template``.
    template : gating template (name, path or Template) whose compensation and transforms
        are applied (and whose ``parent`` population is used). None: samples are used as
        given (they must already be on the analysis scale).
    subsample_per_sample : events drawn from each file for training (all if fewer).
    umap : also compute a 2-D UMAP embedding of a subsample (umap-learn; slow first call).
    umap_events : events in the UMAP subsample (balanced across files).
    name_level : ``"node"`` (names carried by the SOM nodes, populations are sums of
        nodes: finer, the default) or ``"metacluster"`` (names carried by metaclusters,
        FlowSOM's usual manual labelling). Metaclusters are always reported, named by the
        majority of their events' node names.
    rules, thresholds : phenotype rules and fixed marker thresholds for naming.
    samplesheet, pattern : identity of each file (patient, visit), as for gating.
    n_epochs, n_resamples : SOM training passes and consensus resampling rounds.
    on_error : ``"raise"`` stops at the first file that cannot be read, gated or resolved;
        ``"skip"`` leaves it out, records it in ``ClusterResult.errors`` and goes on.
    sample_gates : with a ``template``: gate every file with it and decide each cluster's
        phenotype from the gates fitted to each sample (populations the template defines
        under the rules' names); the rules' pooled cuts remain the fallback. Costs one
        template gating per file when ``parent`` is not given.
    min_cluster_f1 : a population with a per-sample gate is named per cluster when the
        clusters resolve it: the F1 agreement, within its parent's clusters, between
        membership by cluster and the events' own gates is at least this. Otherwise its
        parent's children are named per event, by their gates (naive/memory Treg, mixed
        within the few Treg nodes; transitional B cells, which get no node of their own).
        Without gates, only a population no cluster carries is named per event (by its
        rule). 0: gated populations always per cluster.
    progress : show progress on stderr (a bar over the files, a spinner per stage: SOM,
        metaclustering, naming, UMAP).
    jobs : worker processes for the per-file passes (reading, compensating, transforming
        and pre-gating each file; mapping each file's events to the map; counting how its
        events agree with their gates; naming events; `immunoprofile.clustering.passes`).
        The map is trained and the clusters named in this process on the pooled
        subsample; the result is the same for any ``jobs``.
    scheduler : a Dask scheduler address (``tcp://host:8786``) or ``Client``: the per-file
        passes run on that cluster instead (files must be readable by its workers);
        ``"threads"`` or ``"processes"``: Dask's local schedulers
        (`immunoprofile.batch.run_batch` runs the passes).
    scratch : folder for each file's clustered events between the passes (one ``.npy``
        per file, in a subfolder removed at the end). Default: kept in memory when serial, a temporary
        folder with ``jobs`` > 1 or a ``scheduler``. On a cluster of several machines give
        a folder on storage every worker and this process can reach.

    Returns
    -------
    ClusterResult

    Raises
    ------
    ClusteringError, MarkerNotFoundError, TemplateError, FCSError
    IdentityError
        The samplesheet or pattern is invalid.

    Warns
    -----
    IdentityClashWarning
        When several files claim the same patient, visit and tube. They are all clustered;
        ``.errors`` lists them, ``.table()`` flags them (``identity_clash``).

    Examples
    --------
    >>> res = cluster(["P01_baseline.fcs"], parent="live", template="immune_profile")  # doctest: +SKIP
    >>> res.table().query("population == 'Treg'")  # doctest: +SKIP
    """

    if umap:
        require_umap()  # before the work: an absent optional extra must not cost a run

    items = as_inputs(paths_or_samples, "cluster")
    if not items:
        raise ClusteringError("cluster: no files given")
    jobs = check_jobs(jobs, "cluster")
    if name_level not in ("metacluster", "node"):
        raise ClusteringError(f"name_level must be 'metacluster' or 'node', got {name_level!r}")
    if int(subsample_per_sample) < 1:
        raise ClusteringError(f"subsample_per_sample must be >= 1, got {subsample_per_sample}")
    if parent is not None and template is None:
        raise ClusteringError(
            f"cluster: parent={parent!r} needs a template that defines it (template=...)"
        )
    if template is not None:
        template = load_template(template)
    if not 0.0 <= float(min_cluster_f1) <= 1.0:
        raise ClusteringError(f"min_cluster_f1 must be in [0, 1], got {min_cluster_f1}")
    # rule population -> the template population its per-sample share is taken among
    base_of = _gate_bases(template, rules) if (template is not None and sample_gates) else {}
    gate_pops = list(dict.fromkeys([*base_of, *(b for b in base_of.values() if b)]))
    files, names = input_names(items)

    if on_error not in ("raise", "skip"):
        raise ClusteringError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    own_scratch = None
    if scratch is not None or jobs > 1 or scheduler is not None:
        import tempfile
        from pathlib import Path

        if scratch is not None:
            Path(scratch).mkdir(parents=True, exist_ok=True)
        # a folder of this run's own (removed at the end), inside ``scratch`` when given
        own_scratch = tempfile.TemporaryDirectory(
            prefix="immunoprofile-cluster-", dir=None if scratch is None else str(scratch)
        )
    scratch_dir = None if own_scratch is None else own_scratch.name
    # one set of worker processes for all the passes, started with the first
    pool = local_pool(min(jobs, len(items))) if scheduler is None else None
    try:
        return _cluster_files(
            items=items, files=files, names=names, markers=markers, template=template,
            parent=parent, seed=seed, gate_pops=gate_pops, on_error=on_error,
            progress=progress, jobs=jobs, scheduler=scheduler, scratch_dir=scratch_dir,
            samplesheet=samplesheet, pattern=pattern, subsample_per_sample=subsample_per_sample,
            grid=grid, n_epochs=n_epochs, n_metaclusters=n_metaclusters,
            n_resamples=n_resamples, name_level=name_level, rules=rules, thresholds=thresholds,
            base_of=base_of, min_cluster_f1=min_cluster_f1, umap=umap, umap_events=umap_events,
            pool=pool,
        )  # fmt: skip
    finally:
        if pool is not None:
            pool.shutdown()
        if own_scratch is not None:
            own_scratch.cleanup()


def _cluster_files(
    *,
    items: list[Any],
    files: list[str],
    names: list[str],
    markers: Sequence[str] | None,
    template: Any,
    parent: str | None,
    seed: int,
    gate_pops: list[str],
    on_error: str,
    progress: bool,
    jobs: int,
    scheduler: Any,
    scratch_dir: str | None,
    pool: Any,
    **kw: Any,
) -> ClusterResult:
    """`cluster` after its arguments are checked: the per-file passes and the map."""
    prepared: list[_Prepared] = []
    kept: list[int] = []
    errors: list[dict[str, str]] = []
    chosen: list[str] | None = list(markers) if markers is not None else None

    def task(i: int) -> tuple:
        item = items[i]
        if scheduler is not None and isinstance(item, str | os.PathLike):
            item = os.path.abspath(item)  # a Dask worker has a working folder of its own
        return (i, item, names[i], chosen, template, parent, seed, gate_pops, scratch_dir)

    # a pool that forks must not start while a progress thread draws: the passes then show
    # the batch runner's bar, started once the workers exist
    forking = _forks(jobs, scheduler)
    later: list[threading.Thread] = []
    with counter("clustering: reading files", len(items), progress and not forking) as advance:

        def done(i: int, got: Any) -> None:
            bad = isinstance(got, ImmunoprofileError)
            advance(f"{names[i]}: " + (f"FAILED ({type(got).__name__})" if bad else "ok"))
            if pool is not None and not later:  # the workers exist: they forked already
                later.append(threading.Thread(target=_import_later, daemon=True))
                later[0].start()

        # every file in parallel at once; without markers each file chooses its own
        # (`default_markers`) and the first usable one's are those of the cohort: a later
        # file that chose others, or failed, goes again with them (a panel shared by the
        # cohort sends none back); its result is then the same as if it had been given them
        outcomes = run_pass(
            _prepare_pass,
            [task(i) for i in range(len(items))],
            jobs=jobs,
            scheduler=scheduler,
            on_done=done,
            progress=progress and forking,
            label="clustering: reading files",
            names=names,
            pool=pool,
        )
        if chosen is None:
            usable = [
                i for i, got in enumerate(outcomes) if not isinstance(got, ImmunoprofileError)
            ]
            if usable:
                first = usable[0]
                chosen = outcomes[first][1]
                redo = [
                    i for i in range(first + 1, len(items))
                    if isinstance(outcomes[i], ImmunoprofileError) or outcomes[i][1] != chosen
                ]  # fmt: skip
                again = run_pass(_prepare_pass, [task(i) for i in redo], jobs, scheduler, pool=pool)
                for i, got in zip(redo, again):
                    outcomes[i] = got
        for i, (got, name) in enumerate(zip(outcomes, names)):
            if isinstance(got, ImmunoprofileError):
                if on_error == "raise":
                    raise got
                msg = str(got)
                if files[i] not in msg and name not in msg:
                    msg = f"{files[i]}: {msg}"
                errors.append({"file": files[i], "sample": name, "error_type": type(got).__name__,
                               "message": msg, "patient": "", "visit": "", "tube": "",
                               "other_files": ""})  # fmt: skip
                continue
            prepared.append(got[0])
            kept.append(i)
    return _cluster_prepared(
        prepared=prepared, kept=kept, errors=errors, chosen=chosen, files=files, names=names,
        parent=parent, seed=seed, progress=progress, jobs=jobs, scheduler=scheduler,
        template=template, pool=pool, **kw,
    )  # fmt: skip


def _import_later() -> None:
    """Import what only this process needs after the first pass (metaclustering's
    ``scipy.cluster``, naming's ``scipy.ndimage``). Run in a thread while the workers read
    the files, the imports take a share of the cores then rather than a wait afterwards."""
    import scipy.cluster.hierarchy  # noqa: F401
    import scipy.ndimage  # noqa: F401


#: runs of files per local worker in the passes after the map (`_pass_chunks`)
CHUNKS_PER_WORKER = 4


def _pass_chunks(jobs: int, scheduler: Any) -> int | None:
    """How many runs of files the passes after the map send to local workers
    (`CHUNKS_PER_WORKER` each, so a slow run holds up little), or None: one task per file
    (serially, where there is nothing to send, and on a Dask cluster, whose workers this
    process does not count)."""
    local = scheduler is None or (isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS)
    if not local or jobs <= 1 or scheduler == "synchronous":
        return None
    return CHUNKS_PER_WORKER * int(jobs)


def _forks(jobs: int, scheduler: Any) -> bool:
    """Whether the per-file passes run in a process pool this process forks."""
    return (scheduler is None and jobs > 1) or scheduler == "processes"


def _prepare_pass(
    index: int,
    item: Any,
    name: str,
    markers: Sequence[str] | None,
    template: Any,
    parent: str | None,
    seed: int,
    gate_pops: Sequence[str],
    scratch: str | None,
) -> tuple[_Prepared, list[str]] | ImmunoprofileError:
    """Pass 1 on one file (in a worker): read, prepare, pre-gate, keep the marker columns
    (in ``scratch`` when given). A file that cannot be used returns its error."""
    try:
        prep, used = _prepare(item, name, markers, template, parent, seed, gate_pops)
    except ImmunoprofileError as exc:
        return exc
    assert isinstance(prep.X, np.ndarray)
    prep.X = store_events(prep.X, scratch, f"{index:06d}")
    return prep, used


def _map_pass(
    prep: _Prepared,
    som: SOM,
    dtype: Any,
    cluster_of_node: np.ndarray,
    n_clusters: int,
    base_of: Mapping[str, str | None],
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Pass 2 on one file (in a worker): the SOM node of every clustered event, and the
    file's per-cluster counts of its gates (`_file_gate_counts`)."""
    nodes = som.predict(prep.events()).astype(dtype)
    return nodes, _file_gate_counts(prep, nodes, cluster_of_node, n_clusters, base_of)


def _cluster_prepared(
    *,
    prepared: list[_Prepared],
    kept: list[int],
    errors: list[dict[str, str]],
    chosen: list[str] | None,
    files: list[str],
    names: list[str],
    parent: str | None,
    seed: int,
    progress: bool,
    jobs: int,
    scheduler: Any,
    template: Any,
    pool: Any,
    samplesheet: Any,
    pattern: str | None,
    subsample_per_sample: int,
    grid: tuple[int, int],
    n_epochs: int,
    n_metaclusters: Any,
    n_resamples: int,
    name_level: str,
    rules: Sequence[PhenotypeRule],
    thresholds: Any,
    base_of: dict[str, str | None],
    min_cluster_f1: float,
    umap: bool,
    umap_events: int,
) -> ClusterResult:
    """The map, its metaclusters and names from the prepared files."""

    if not prepared:
        raise ClusteringError(
            "cluster: no file could be used; " + "; ".join(e["message"] for e in errors)
        )
    assert chosen is not None
    all_files = files
    files = [files[i] for i in kept]
    all_names = names
    names = [names[i] for i in kept]
    identities = resolve_identities(
        files,
        samplesheet=samplesheet,
        pattern=pattern,
        keywords=[p.keywords for p in prepared],
        names=names,
        clashes="keep",
    )
    clashes = find_clashes(identities)
    if clashes:
        _warn_clashes(clashes)
        order = {f: k for k, f in enumerate(all_files)}
        errors = sorted(
            [*errors, *_clash_rows(identities, clashes)], key=lambda e: order[e["file"]]
        )

    # balanced pooled subsample
    rng = np.random.default_rng(seed)
    picks = []
    for p in prepared:
        n = p.n_events
        if n == 0:
            raise ClusteringError(f"{p.name}: no events to cluster (empty pre-gate {parent!r}?)")
        take = min(n, int(subsample_per_sample))
        picks.append(np.sort(rng.choice(n, size=take, replace=False)) if take < n else None)
    train = np.concatenate(
        [p.events() if idx is None else p.events()[idx] for p, idx in zip(prepared, picks)],
        axis=0,
    )
    train_sample = np.concatenate(
        [
            np.full(p.n_events if idx is None else idx.size, i, dtype=np.int32)
            for i, (p, idx) in enumerate(zip(prepared, picks))
        ]  # fmt: skip
    )
    n_nodes = int(grid[0]) * int(grid[1])
    if train.shape[0] < n_nodes:
        raise ClusteringError(
            f"cluster: {train.shape[0]} training events for a {grid[0]}x{grid[1]} map; "
            "give more events or a smaller grid"
        )
    with stage(f"clustering: SOM {grid[0]}x{grid[1]} on {train.shape[0]:,} events", progress):
        # the caller's cores are idle while it trains: the map's chunks use ``jobs``
        # threads when the workers are local (the same map for any number)
        local = scheduler is None or (isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS)
        som = SOM(grid=tuple(grid), n_epochs=n_epochs, seed=seed, n_threads=jobs if local else 1)
        som.fit(train)
        som.n_threads = 1  # each worker maps its file on one thread
    # what pass 2 sends with each file: the map without the training events' nodes (4
    # bytes an event of the pooled subsample, which the workers do not use)
    mapper = copy.copy(som)
    del mapper.labels_
    with stage("clustering: consensus metaclustering", progress):
        meta = ConsensusMetaclustering(n_metaclusters, n_resamples=n_resamples, seed=seed)
        meta.fit(som.cluster_centers_, sample_weight=som.counts_)
    node_dtype = np.int16 if n_nodes < 32768 else np.int32
    forking = _forks(jobs, scheduler)
    train_nodes = som.labels_
    if name_level == "metacluster":
        groups, n_groups, label = meta.labels_[train_nodes], int(meta.labels_.max()) + 1, _mc_label
    else:
        groups, n_groups, label = train_nodes, n_nodes, _node_label
    cluster_of_node = meta.labels_ if name_level == "metacluster" else np.arange(n_nodes)

    # passes 2-4 take milliseconds per file: local workers get them in runs of files
    # (`run_pass` ``chunks``), a few per worker, rather than one round trip per file
    chunks = _pass_chunks(jobs, scheduler)

    def per_file(fn: Any, args: list[tuple], what: str) -> list[Any]:
        with stage(f"clustering: {what} of {len(prepared)} files", progress and not forking):
            return run_pass(
                fn, args, jobs=jobs, scheduler=scheduler, progress=progress and forking,
                label=f"clustering: {what}", names=[p.name for p in prepared], pool=pool,
                chunks=chunks, sizes=[p.n_events for p in prepared],
            )  # fmt: skip

    light = [p.light() for p in prepared]
    # pass 2: every event to its node, and each file's per-cluster gate counts
    mapped = per_file(
        _map_pass,
        [(p, mapper, node_dtype, cluster_of_node, n_groups, base_of) for p in light],
        "mapping the events",
    )
    nodes = [m[0] for m in mapped]
    med = _group_medians(train, groups, n_groups, chosen, label)
    # empty clusters get their code (nodes) so that they can still be named
    if med.isna().any().any():
        codes = som.cluster_centers_ if name_level == "node" else _mc_codes(som, meta)
        med = med.fillna(pd.DataFrame(codes, index=med.index, columns=med.columns))
    shares, file_shares = _gate_shares([m[1] for m in mapped], n_groups, base_of)
    with stage("clustering: naming clusters", progress):
        naming = name_clusters(
            med, train, groups, rules=rules, thresholds=thresholds, shares=shares
        )
    members = [sample_membership(naming, fs) for fs in file_shares] if shares else []
    # pass 3: how well the clusters resolve each population, counted file by file
    pops = [q for q, par in naming.parents.items() if par is not None]
    counted = per_file(
        _resolution_pass,
        [(p, nd, cluster_of_node, naming, members[i] if members else None, base_of, pops)
         for i, (p, nd) in enumerate(zip(light, nodes))],
        "resolving populations",
    )  # fmt: skip
    event_level, resolution = _resolution(naming, pops, counted, float(min_cluster_f1))
    # pass 4: populations named per event, one bit-field per file
    event_bits: list[np.ndarray | None] = [None] * len(prepared)
    if event_level:
        event_bits = per_file(
            _event_bits_pass,
            [(p, nd, cluster_of_node, naming, members[i] if members else None, base_of,
              event_level) for i, (p, nd) in enumerate(zip(light, nodes))],
            "naming events",
        )  # fmt: skip

    result = ClusterResult(
        markers=list(chosen),
        identities=identities,
        som=som,
        metaclustering=meta,
        node_metacluster=meta.labels_,
        naming=naming,
        name_level=name_level,
        nodes=nodes,
        rows=[p.rows for p in prepared],
        n_total=[p.n_total for p in prepared],
        reference_counts=[p.reference_count for p in prepared],
        parent=parent,
        train_events=train,
        train_nodes=train_nodes,
        train_sample=train_sample,
        errors=pd.DataFrame(errors, columns=list(ERROR_COLUMNS)),
        inputs=list(all_names),
        event_level=event_level,
        event_bits=event_bits,
        resolution=resolution,
        sample_members=members,
        sample_gates=_sample_gates_table(prepared, identities, base_of),
        clashes=clashes,
    )
    if umap:
        with stage(f"clustering: UMAP of {umap_events:,} events", progress):
            result.embedding = embed_result(result, n_events=umap_events, seed=seed)
    return result


def _warn_clashes(clashes: Sequence[Any]) -> None:
    warn_clashes(
        clashes, "Every file is still clustered and keeps its rows in the population table "
        f"({CLASH_COLUMN} True); ", stacklevel=5,
    )  # fmt: skip


def _mc_codes(som: SOM, meta: ConsensusMetaclustering) -> np.ndarray:
    """Mean code of the nodes of each metacluster."""
    k = int(meta.labels_.max()) + 1
    out = np.zeros((k, som.cluster_centers_.shape[1]), dtype=np.float64)
    for j in range(k):
        out[j] = som.cluster_centers_[meta.labels_ == j].mean(axis=0)
    return out


#: a cluster's per-sample gate share is used when at least this many of its events lie
#: in the gate's parent (fewer: the rule's pooled cuts decide)
MIN_SHARE_EVENTS = 20


def _gate_bases(template: Any, rules: Sequence[PhenotypeRule]) -> dict[str, str | None]:
    """Rule population -> the population its per-sample share is measured within: the
    rule's parent when the template defines it, else the template's own parent of the
    population (None: all events). Only populations the template defines are listed."""
    names = set(template.names)
    out: dict[str, str | None] = {}
    for r in rules:
        if r.population not in names:
            continue
        if r.parent is not None and r.parent in names:
            out[r.population] = r.parent
        else:
            out[r.population] = template.population(r.population).parent
    return out


def _file_gate_counts(
    prep: _Prepared,
    nodes: np.ndarray,
    cluster_of_node: np.ndarray,
    n_clusters: int,
    base_of: Mapping[str, str | None],
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per population of one file: per cluster, the events its fitted gate put in the
    population (among those in the population's base) and the events in the base."""
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if prep.gate_bits is None or not base_of:
        return out
    idx = {n: k for k, n in enumerate(prep.gate_names)}
    cl = cluster_of_node[nodes]
    for p, b in base_of.items():
        if p not in idx or (b is not None and b not in idx):
            continue
        inp = _bit(prep.gate_bits, idx[p])
        if b is None:
            d = np.bincount(cl, minlength=n_clusters)
        else:
            inb = _bit(prep.gate_bits, idx[b])
            d = np.bincount(cl[inb], minlength=n_clusters)
            inp &= inb
        out[p] = (np.bincount(cl[inp], minlength=n_clusters), d)
    return out


def _gate_shares(
    counts: Sequence[Mapping[str, tuple[np.ndarray, np.ndarray]]],
    n_clusters: int,
    base_of: Mapping[str, str | None],
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    """Per population and cluster, the share of the cluster's events that their sample's
    fitted gate put in the population, among those it put in the population's base (NaN
    where fewer than `MIN_SHARE_EVENTS` events are known): pooled over all files, and per
    file (one dict per file), from each file's `_file_gate_counts`."""
    if not base_of:
        return {}, [{} for _ in counts]
    num = {p: np.zeros(n_clusters) for p in base_of}
    den = {p: np.zeros(n_clusters) for p in base_of}
    per_file: list[dict[str, np.ndarray]] = []
    for got in counts:
        mine: dict[str, np.ndarray] = {}
        per_file.append(mine)
        for p in base_of:
            if p not in got:
                continue
            k, d = got[p]
            num[p] += k
            den[p] += d
            mine[p] = _share(k, d)
    out = {p: _share(num[p], den[p]) for p in base_of if den[p].sum() > 0}
    return out, per_file


def _share(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where ``den`` has at least `MIN_SHARE_EVENTS`, NaN elsewhere."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den >= MIN_SHARE_EVENTS, num / np.maximum(den, 1), np.nan)


def _resolution_pass(
    prep: _Prepared,
    nodes: np.ndarray,
    cluster_of_node: np.ndarray,
    naming: Naming,
    member: pd.DataFrame | None,
    base_of: Mapping[str, str | None],
    pops: Sequence[str],
) -> tuple[dict[str, tuple[int, int, int]], set[str]]:
    """Pass 3 on one file (in a worker): per population with a parent, the events named
    both by cluster and by their own gate within the parent's clusters, by cluster, and
    by own gate (``tp, n_cluster, n_event``); and the populations with a per-sample gate
    in this file."""
    mine = naming.membership if member is None else member
    member_of = {p: mine[p].to_numpy() for p in naming.parents}
    cl = cluster_of_node[nodes]
    gate_in, gate_known = _event_gates(prep, base_of, pops)
    X = prep.events()
    out: dict[str, tuple[int, int, int]] = {}
    # an event counts by its own gate only inside its parent's clusters: the gates and
    # rules are evaluated there only, once per parent
    within: dict[str, tuple[np.ndarray, np.ndarray, dict, dict]] = {}
    for pop in pops:
        parent = naming.parents[pop]
        assert parent is not None
        if parent not in within:
            rows = np.flatnonzero(member_of[parent][cl])
            within[parent] = (
                rows, X[rows], {q: g[rows] for q, g in gate_in.items()},
                {q: k[rows] for q, k in gate_known.items()},
            )  # fmt: skip
        rows, Xp, gin, gkn = within[parent]
        a = member_of[pop][cl]
        b = own_gate(naming, Xp, pop, gin, gkn)  # in the parent's clusters
        out[pop] = (
            int(np.count_nonzero(a[rows] & b)), int(np.count_nonzero(a)), int(np.count_nonzero(b))
        )  # fmt: skip
    return out, set(gate_in)


def _event_bits_pass(
    prep: _Prepared,
    nodes: np.ndarray,
    cluster_of_node: np.ndarray,
    naming: Naming,
    member: pd.DataFrame | None,
    base_of: Mapping[str, str | None],
    event_level: Sequence[str],
) -> np.ndarray:
    """Pass 4 on one file (in a worker): the populations named per event, as one
    bit-field per clustered event (bit k: in ``event_level[k]``)."""
    gate_in, gate_known = _event_gates(prep, base_of, event_level)
    masks = event_membership(
        naming, prep.events(), cluster_of_node[nodes], event_level, gate_in=gate_in,
        gate_known=gate_known, membership=member,
    )  # fmt: skip
    return _pack([masks[q] for q in event_level], prep.n_events)


def _resolution(
    naming: Naming,
    pops: Sequence[str],
    counted: Sequence[tuple[Mapping[str, tuple[int, int, int]], set[str]]],
    min_f1: float,
) -> tuple[list[str], pd.DataFrame]:
    """Which populations the clusters resolve, and which are named per event.

    For every population with a parent (``pops``): over all files (each file's
    `_resolution_pass`), the F1 agreement, among the events of the parent's clusters,
    between membership by cluster and the events' own gate (`own_gate`). Event-level
    naming needs a verdict per event that can be trusted more than the clusters:

    * a population with a per-sample fitted gate in every file scoring below ``min_f1``
      has its parent's children (and their descendants) named per event, so siblings
      stay a consistent split of their parent (naive + memory Treg = Treg);
    * a population with only the rule's pooled cuts (a phenotype rule written for
      cluster medians, not single events) is named per event only when no cluster carries
      it although events pass its rule (transitional B cells without a template).

    Returns the per-event populations (rule order) and a table ``population, parent,
    gate, f1, level``.
    """
    tp = dict.fromkeys(pops, 0)
    n_cl = dict.fromkeys(pops, 0)
    n_ev = dict.fromkeys(pops, 0)
    gated = set(pops)
    for got, has_gate in counted:
        gated &= has_gate
        for pop in pops:
            a, c, e = got[pop]
            tp[pop] += a
            n_cl[pop] += c
            n_ev[pop] += e
    f1 = {p: 2.0 * tp[p] / (n_cl[p] + n_ev[p]) if n_cl[p] + n_ev[p] else 1.0 for p in pops}
    split = {naming.parents[p] for p in pops if p in gated and f1[p] < min_f1}
    alone = {p for p in pops if p not in gated and n_cl[p] == 0 and n_ev[p] >= MIN_SHARE_EVENTS}
    out: list[str] = []
    for pop in pops:
        if pop in alone or naming.parents[pop] in split or naming.parents[pop] in out:
            out.append(pop)
    table = pd.DataFrame(
        {
            "population": pops,
            "parent": [naming.parents[p] for p in pops],
            "gate": ["per-sample" if p in gated else "rule" for p in pops],
            "f1": [f1[p] for p in pops],
            "level": ["event" if p in out else "cluster" for p in pops],
        }
    )
    return out, table


def _event_gates(
    prep: _Prepared, base_of: Mapping[str, str | None], pops: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-event gate of each population in ``pops`` from the sample's fitted gates: in
    the gate (``gate_in``), and where the gate applies (``gate_known``: in its base)."""
    gate_in: dict[str, np.ndarray] = {}
    gate_known: dict[str, np.ndarray] = {}
    if prep.gate_bits is None:
        return gate_in, gate_known
    idx = {n: k for k, n in enumerate(prep.gate_names)}
    for p in pops:
        if p not in base_of or p not in idx:
            continue
        b = base_of[p]
        if b is not None and b not in idx:
            continue
        gate_in[p] = _bit(prep.gate_bits, idx[p])
        gate_known[p] = _bit(prep.gate_bits, idx[b]) if b is not None else np.ones_like(gate_in[p])
    return gate_in, gate_known


def _gate_position(f: Mapping[str, Any]) -> str:
    """A fitted gate's position in a few words (thresholds, ranges or discriminant)."""
    dims = [str(d) for d in f.get("dims", [])]
    params = f.get("params") or {}
    if "direction" in params and "offset" in params:
        a, b = params["direction"]
        return f"{a:.3g}*{dims[0]} + {b:.3g}*{dims[1]} >= {params['offset']:.3g}"
    if "crossing" in params and len(dims) == 2:
        x, y = params["crossing"]
        return (
            f"{dims[0]} x {dims[1]} mixture posterior region, boundary through ({x:.3g}, {y:.3g})"
        )
    if "thresholds" in f:
        return ", ".join(
            f"{d}{s} (cut {t:.3g})" for d, s, t in zip(dims, f.get("signs", []), f["thresholds"])
        )
    if "min" in f or "max" in f:
        # a range (numbers) or a rectangle (one bound per dimension, None = open)
        los, his = f.get("min"), f.get("max")
        los = los if isinstance(los, list | tuple) else [los]
        his = his if isinstance(his, list | tuple) else [his]
        parts = []
        for i, d in enumerate(dims or ["?"]):
            lo = los[i] if i < len(los) else None
            hi = his[i] if i < len(his) else None
            if lo is None and hi is None:
                continue
            parts.append(
                ("" if lo is None else f"{lo:.3g} <= ") + d + ("" if hi is None else f" < {hi:.3g}")
            )
        return ", ".join(parts) or "everything"
    if f.get("type") == "boolean":
        neg = f.get("complement") or [False] * len(dims)
        return f" {f.get('op', 'and')} ".join(("not " if c else "") + d for d, c in zip(dims, neg))
    return str(f.get("type", ""))


def _sample_gates_table(
    prepared: Sequence[_Prepared], identities: Sequence[Any], base_of: Mapping[str, str | None]
) -> pd.DataFrame:
    """One row per file and population whose per-sample gate was used for naming."""
    rows = []
    for prep, ident in zip(prepared, identities):
        for p, b in base_of.items():
            f = prep.fitted.get(p)
            if f is None:
                continue
            rows.append(
                {
                    "sample": ident.sample,
                    "population": p,
                    "parent": b or ROOT,
                    "type": f.get("method") or f.get("type", ""),
                    "position": _gate_position(f),
                    "fallback": bool(f.get("fallback", False)),
                }  # fmt: skip
            )
    return pd.DataFrame(rows, columns=["sample", "population", "parent", "type", "position",
                                       "fallback"])  # fmt: skip
