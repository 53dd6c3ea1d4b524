"""Exchange of samples and results with other libraries and tools.

* flowkit: `from_flowkit` / `to_flowkit` (a ``flowkit.Sample``'s channel-scale events,
  channel labels and metadata);
* FlowCytometryTools: `from_fcmeasurement` takes any object with its ``FCMeasurement``
  attributes ``.data`` (DataFrame), ``.meta`` (keywords) and ``.channel_names``;
  `to_fcmeasurement` returns one (a real ``FCMeasurement`` when that package imports,
  else a `Measurement` with the same attributes). FlowCytometryTools itself is never
  required (its last release does not import on Python 3.11 with numpy 2);
* AnnData (scanpy): `to_anndata` / `write_h5ad`: events x channels, with population and
  cluster labels and per-sample metadata in ``obs``;
* FCS: `export_fcs` writes any population, with ``population`` and ``cluster`` code
  columns added (the code tables are in keywords), so FlowJo users can open and gate it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile._files import atomic_write
from immunoprofile._json import jsonable
from immunoprofile.exceptions import ExchangeError
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table

# FCS 3.1 standard keywords other than $Pn* (FlowKit and FlowCytometryTools drop the '$')
_STANDARD = {
    "ABRT", "BEGINANALYSIS", "BEGINDATA", "BEGINSTEXT", "BTIM", "BYTEORD", "CELLS", "COM",
    "COMP", "CSMODE", "CSVBITS", "CYT", "CYTSN", "DATATYPE", "DATE", "ENDANALYSIS",
    "ENDDATA", "ENDSTEXT", "ETIM", "EXP", "FIL", "GATE", "INST", "LAST_MODIFIED",
    "LAST_MODIFIER", "LOST", "MODE", "NEXTDATA", "OP", "ORIGINALITY", "PAR", "PLATEID",
    "PLATENAME", "PROJ", "SMNO", "SPILLOVER", "SRC", "SYS", "TIMESTEP", "TOT", "TR",
    "VOL", "WELLID",
}  # fmt: skip
_PARAM = re.compile(r"^P\d+[A-Z]+$")


def _fcs_key(key: str) -> str:
    k = str(key).strip().upper()
    if k.startswith("$"):
        return k
    return f"${k}" if (k in _STANDARD or _PARAM.match(k)) else k


def _keywords_to_table(names: Sequence[str], kw: Mapping[str, Any]) -> pd.DataFrame:
    """Channel table from $PnS/$PnR/$PnG/$PnE keywords (keys already FCS-style)."""
    n = len(names)

    def get(i: int, s: str, default: Any = None) -> Any:
        return kw.get(f"$P{i + 1}{s}", default)

    def num(v: Any, default: float) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return default

    markers = [(get(i, "S") or None) for i in range(n)]
    ranges = [num(get(i, "R"), 0.0) for i in range(n)]
    gains = [num(get(i, "G"), 1.0) or 1.0 for i in range(n)]
    bits = [int(num(get(i, "B"), 32)) for i in range(n)]
    dec, off = [], []
    for i in range(n):
        parts = str(get(i, "E", "0,0")).split(",")
        dec.append(num(parts[0], 0.0))
        off.append(num(parts[1], 0.0) if len(parts) > 1 else 0.0)
    return make_channel_table(names, markers, ranges, bits, gains, dec, off)


# --------------------------------------------------------------------------------------
# flowkit
# --------------------------------------------------------------------------------------


def from_flowkit(fk_sample: Any, source: str = "raw") -> Sample:
    """A `Sample` from a ``flowkit.Sample``.

    ``source`` is flowkit's event source: ``"raw"`` (channel scale: flowkit applies gain,
    log amplification and time step on load), ``"comp"`` or ``"xform"``. The history
    records that the events came from flowkit.
    """
    for attr in ("get_events", "pnn_labels", "get_metadata"):
        if not hasattr(fk_sample, attr):
            raise ExchangeError(f"{type(fk_sample).__name__} is not a flowkit.Sample (no .{attr})")
    try:
        ev = np.asarray(fk_sample.get_events(source=source), dtype=np.float32)
    except Exception as exc:  # flowkit raises plain exceptions for a missing source
        raise ExchangeError(
            f"flowkit sample {fk_sample.id!r}: no {source!r} events ({exc})"
        ) from None
    names = list(fk_sample.pnn_labels)
    kw = {_fcs_key(k): v for k, v in fk_sample.get_metadata().items()}
    table = _keywords_to_table(names, kw)
    pns = list(getattr(fk_sample, "pns_labels", []) or [])
    if len(pns) == len(names):
        table["marker"] = [m if m else None for m in pns]
    name = str(getattr(fk_sample, "id", "") or "")
    name = re.sub(r"\.fcs$", "", name, flags=re.IGNORECASE)
    history = [
        {
            "step": "read",
            "file": str(getattr(fk_sample, "id", "")),
            "scale": True,
            "via": "flowkit",
            "source": source,
        }
    ]
    return Sample(ev, table, kw, name=name, history=history)


def to_flowkit(sample: Sample, sample_id: str | None = None) -> Any:
    """A ``flowkit.Sample`` holding ``sample``'s events (as they are) and channel names.

    flowkit copies the events into float64; markers become its ``pns`` labels.
    """
    try:
        import flowkit as fk
    except ImportError:
        raise ExchangeError(
            "to_flowkit needs flowkit (pip install 'immunoprofile[interop]')"
        ) from None
    sid = sample_id or (f"{sample.name}.fcs" if sample.name else "sample.fcs")
    columns = pd.MultiIndex.from_arrays(
        [sample.channel_names, [m if m else "" for m in sample.markers]], names=["pnn", "pns"]
    )
    frame = pd.DataFrame(np.asarray(sample.events, dtype=np.float64), columns=columns)
    return fk.Sample(frame, sample_id=sid, preprocess=False)


# --------------------------------------------------------------------------------------
# FlowCytometryTools
# --------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """The attributes FlowCytometryTools' ``FCMeasurement`` is used through: ``ID``,
    ``data`` (events, columns = channel names), ``meta`` (keywords, ``$``-prefixed keys as
    in the FCS file, plus ``_channels_`` and ``_channel_names_``) and ``channel_names``."""

    ID: str
    data: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    datafile: str | None = None

    @property
    def channel_names(self) -> tuple[str, ...]:
        return tuple(self.data.columns)


def from_fcmeasurement(m: Any) -> Sample:
    """A `Sample` from a FlowCytometryTools ``FCMeasurement`` (or any object with its
    ``.data``, ``.meta`` and ``.channel_names`` attributes)."""
    for attr in ("data", "meta", "channel_names"):
        if not hasattr(m, attr):
            raise ExchangeError(
                f"{type(m).__name__} lacks .{attr}; expected a FlowCytometryTools FCMeasurement"
            )
    data = m.data
    if not isinstance(data, pd.DataFrame):
        raise ExchangeError(f"{type(m).__name__}.data is a {type(data).__name__}, not a DataFrame")
    names = [str(c) for c in m.channel_names]
    missing = [c for c in names if c not in data.columns]
    if missing:
        raise ExchangeError(f"channels {missing} are not columns of .data ({list(data.columns)})")
    meta = dict(m.meta or {})
    kw = {
        _fcs_key(k): v
        for k, v in meta.items()
        if not str(k).startswith("_") and isinstance(v, str | int | float)
    }
    table = _keywords_to_table(names, kw)
    ch = meta.get("_channels_")
    if isinstance(ch, pd.DataFrame) and "$PnS" in ch.columns and len(ch) == len(names):
        table["marker"] = [str(v) if isinstance(v, str) and v else None for v in ch["$PnS"]]
    ev = np.ascontiguousarray(data[names].to_numpy(dtype=np.float32))
    ident = str(getattr(m, "ID", "") or "")
    return Sample(
        ev,
        table,
        kw,
        name=ident,
        history=[
            {
                "step": "read",
                "via": "FCMeasurement",
                "file": str(getattr(m, "datafile", "") or ""),
                "scale": True,
            }
        ],
    )


def to_fcmeasurement(sample: Sample) -> Any:
    """``sample`` as a FlowCytometryTools ``FCMeasurement`` when that package imports,
    else as a `Measurement` with the same attributes (``ID``, ``data``, ``meta``,
    ``channel_names``)."""
    data = sample.to_dataframe()
    meta: dict[str, Any] = dict(sample.keywords)
    for i, row in enumerate(sample.channels.itertuples(index=False), start=1):
        meta[f"$P{i}N"] = row.name
        if row.marker:
            meta[f"$P{i}S"] = row.marker
        meta[f"$P{i}R"] = str(row.range)
    meta["_channel_names_"] = tuple(sample.channel_names)
    meta["_channels_"] = pd.DataFrame(
        {
            "$PnN": sample.channel_names,
            "$PnS": [m or "" for m in sample.markers],
            "$PnR": list(sample.channels["range"]),
        },
        index=pd.RangeIndex(1, sample.n_channels + 1, name="Channel Number"),
    )
    try:  # pragma: no cover - FlowCytometryTools does not import on current numpy
        from FlowCytometryTools import FCMeasurement

        # a Measurement built without a file: data and meta are set, nothing is read
        m = FCMeasurement(ID=sample.name or "sample", readmeta=False)
        m.set_data(data=data)
        m.set_meta(meta=meta)
        return m
    except Exception:
        return Measurement(
            sample.name or "sample", data, meta, str(sample.path) if sample.path else None
        )


# --------------------------------------------------------------------------------------
# labels from gating and clustering results
# --------------------------------------------------------------------------------------


def population_labels(
    masks: Mapping[str, np.ndarray], order: Sequence[str] | None = None, none: str = "ungated"
) -> pd.Categorical:
    """The most specific population of every event: the last population (in ``order``,
    a parent-before-child order such as a template's) whose mask holds the event."""
    order = list(order) if order is not None else list(masks)
    if not order:
        raise ExchangeError("no populations to label events with")
    n = len(next(iter(masks.values())))
    code = np.full(n, -1, dtype=np.int32)
    for j, p in enumerate(order):
        code[np.asarray(masks[p], dtype=bool)] = j
    cats = [none, *order]
    return pd.Categorical.from_codes(code + 1, categories=cats)


def cluster_labels(result: Any, i: int) -> np.ndarray:
    """Metacluster (0-based) of every event of file ``i`` of a `ClusterResult`; -1 for
    events that were not clustered (outside the pre-gate)."""
    lab = np.full(int(result.n_total[i]), -1, dtype=np.int32)
    mc = np.asarray(result.metacluster_labels(i), dtype=np.int32)
    rows = result.rows[i]
    if rows is None:
        lab[:] = mc
    else:
        lab[rows] = mc
    return lab


def _as_gated(item: Any) -> tuple[Sample, dict[str, np.ndarray], list[str], dict[str, Any]]:
    """(sample, masks, population order, extra uns) from a GatingResult, a Sample, or a
    ``(Sample, masks)`` pair."""
    if isinstance(item, Sample):
        return item, {}, [], {}
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Sample):
        masks = dict(item[1])
        return item[0], masks, list(masks), {}
    if hasattr(item, "masks") and hasattr(item, "sample") and hasattr(item, "template"):
        order = [p.name for p in item.template.populations]
        uns = {
            "template": item.template.name,
            "fitted_gates": _uns_value(getattr(item, "fitted", {})),
        }
        return item.sample, dict(item.masks), order, uns
    raise ExchangeError(
        f"cannot export a {type(item).__name__}: give Samples, GatingResults or (Sample, masks) pairs"
    )


def _uns_value(v: Any) -> Any:
    """JSON-ready metadata for AnnData's ``uns``: NaN kept (HDF5 stores it), any other
    object as its text."""
    return jsonable(v, finite=False, text=True)


# --------------------------------------------------------------------------------------
# AnnData
# --------------------------------------------------------------------------------------


def to_anndata(
    items: Sequence[Any] | Any,
    *,
    clusters: Any = None,
    metadata: pd.DataFrame | Mapping[str, Mapping[str, Any]] | None = None,
    label: str = "name",
) -> Any:
    """Events of one or more samples as an ``anndata.AnnData`` (cells x channels).

    Parameters
    ----------
    items : Samples, GatingResults (their gated, analysis-scale sample and masks) or
        ``(Sample, masks)`` pairs.
    clusters : a `ClusterResult` of the same files (matched by sample name), or a mapping
        sample name -> int label per event; adds ``obs["cluster"]`` (and
        ``obs["cluster_name"]`` from a ClusterResult), -1 / "unclustered" outside.
    metadata : per-sample metadata (``patient``, ``visit``, ...), a DataFrame indexed or
        keyed by ``sample`` or a mapping sample -> {column: value}; broadcast to events.
    label : ``var_names`` are channel ``"name"`` ($PnN) or ``"marker"`` ($PnS, falling
        back to the channel name).

    ``obs`` holds ``sample``, ``event`` (row in the file), ``population`` (the most specific
    population), one boolean column per population (``pop_<name>``), cluster labels and
    metadata; ``var`` the channel table; ``uns["immunoprofile"]`` the sample and population
    names, and (as JSON text) the fitted gates and each sample's processing history.
    """
    try:
        import anndata as ad
    except ImportError:
        raise ExchangeError(
            "to_anndata needs anndata (pip install 'immunoprofile[interop]')"
        ) from None
    if not isinstance(items, list | tuple) or (
        isinstance(items, tuple) and len(items) == 2 and isinstance(items[0], Sample)
    ):
        items = [items]
    gated = [_as_gated(it) for it in items]
    first = gated[0][0]
    names = first.channel_names
    for s, *_ in gated[1:]:
        if s.channel_names != names:
            raise ExchangeError(
                f"{s.name}: channels {s.channel_names} differ from {first.name}'s {names}; "
                "AnnData needs the same channels in every sample"
            )
    meta = _metadata_table(metadata)
    obs_parts, X_parts, uns_gates = [], [], {}
    all_pops: list[str] = []
    for _, _m, order, _ in gated:
        for p in order:
            if p not in all_pops:
                all_pops.append(p)
    cl_lookup = _cluster_lookup(clusters)
    for s, masks, order, uns in gated:
        n = s.n_events
        obs = pd.DataFrame({"sample": np.repeat(s.name, n), "event": np.arange(n, dtype=np.int64)})
        if masks:
            obs["population"] = np.asarray(population_labels(masks, order)).astype(object)
            for p in all_pops:
                m = masks.get(p)
                obs[f"pop_{p}"] = (
                    np.asarray(m, dtype=bool) if m is not None else np.zeros(n, dtype=bool)
                )
        else:
            obs["population"] = "ungated"
        if cl_lookup is not None:
            lab, names_of = cl_lookup(s.name, n)
            obs["cluster"] = lab
            if names_of is not None:
                obs["cluster_name"] = [names_of.get(int(x), "unclustered") for x in lab]
        if meta is not None and s.name in meta.index:
            for col, val in meta.loc[s.name].items():
                obs[col] = val
        if uns:
            uns_gates[s.name] = uns
        obs_parts.append(obs)
        X_parts.append(s.events)
    obs = pd.concat(obs_parts, ignore_index=True)
    obs.index = (obs["sample"].astype(str) + ":" + obs["event"].astype(str)).to_numpy()
    for c in ("sample", "population", "cluster_name"):
        if c in obs:
            obs[c] = obs[c].astype("category")
    var = first.channels.copy()
    var.index = pd.Index(
        [m if (label == "marker" and m) else n for n, m in zip(var["name"], var["marker"])]
    ).astype(str)
    var.index = _dedupe(list(var.index))
    var["marker"] = var["marker"].fillna("").astype(str)
    X = np.ascontiguousarray(np.vstack(X_parts), dtype=np.float32)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    # nested records go in as JSON text: h5ad stores flat strings and arrays reliably
    adata.uns["immunoprofile"] = {
        "samples": [s.name for s, *_ in gated],
        "populations": all_pops,
        "gating_json": json.dumps(_uns_value(uns_gates)),
        "history_json": json.dumps({s.name: _uns_value(s.history) for s, *_ in gated}),
    }
    return adata


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        k = seen.get(n, 0)
        out.append(n if k == 0 else f"{n}-{k}")
        seen[n] = k + 1
    return out


def _metadata_table(metadata: Any) -> pd.DataFrame | None:
    if metadata is None:
        return None
    if isinstance(metadata, pd.DataFrame):
        df = metadata.set_index("sample") if "sample" in metadata.columns else metadata
    elif isinstance(metadata, Mapping):
        df = pd.DataFrame.from_dict({k: dict(v) for k, v in metadata.items()}, orient="index")
    else:
        raise ExchangeError(
            f"metadata must be a DataFrame or a mapping, got {type(metadata).__name__}"
        )
    df.index = df.index.astype(str)
    return df


def _cluster_lookup(clusters: Any):
    if clusters is None:
        return None
    if hasattr(clusters, "metacluster_labels") and hasattr(clusters, "samples"):
        samples = list(clusters.samples)
        names_of: dict[int, str] | None
        try:  # metaclusters are labelled MC01, MC02, ... (1-based) by the clustering
            names = clusters.metacluster_names()
            names_of = {}
            for j, (k, v) in enumerate(names.items()):
                m = re.fullmatch(r"MC(\d+)", str(k))
                names_of[int(m.group(1)) - 1 if m else j] = str(v)
        except Exception:  # a result without names: labels only
            names_of = None

        def look(name: str, n: int):
            if name not in samples:
                return np.full(n, -1, dtype=np.int32), names_of
            lab = cluster_labels(clusters, samples.index(name))
            if lab.size != n:
                raise ExchangeError(f"{name}: clustering has {lab.size} events, the sample {n}")
            return lab, names_of

        return look
    if isinstance(clusters, Mapping):

        def look_map(name: str, n: int):
            lab = clusters.get(name)
            if lab is None:
                return np.full(n, -1, dtype=np.int32), None
            lab = np.asarray(lab)
            if lab.size != n:
                raise ExchangeError(f"{name}: {lab.size} cluster labels for {n} events")
            return lab.astype(np.int32), None

        return look_map
    raise ExchangeError(
        f"clusters must be a ClusterResult or a mapping, got {type(clusters).__name__}"
    )


def write_h5ad(items: Sequence[Any] | Any, path: str | os.PathLike, **kw: Any) -> Path:
    """`to_anndata` and write it to ``path`` (.h5ad), through a temporary file."""

    adata = to_anndata(items, **kw)
    return atomic_write(path, adata.write_h5ad, suffix=".h5ad")


# --------------------------------------------------------------------------------------
# FCS
# --------------------------------------------------------------------------------------


def export_fcs(
    sample: Sample,
    path: str | os.PathLike,
    *,
    mask: np.ndarray | None = None,
    populations: Mapping[str, np.ndarray] | None = None,
    order: Sequence[str] | None = None,
    clusters: np.ndarray | None = None,
    cluster_names: Mapping[int, str] | None = None,
) -> Path:
    """Write the events of ``sample`` in ``mask`` (all by default) to an FCS 3.1 file,
    adding a ``population`` column (code of the most specific population, 0 = ungated)
    and/or a ``cluster`` column (cluster label + 1, 0 = unclustered).

    The codes are explained in keywords ``IMMUNOPROFILE_POPULATIONS`` and
    ``IMMUNOPROFILE_CLUSTERS`` (``code=name`` pairs separated by ``;``), so the columns
    can be gated in FlowJo like any channel.
    """

    n = sample.n_events
    cols: list[np.ndarray] = [sample.events]
    extra_names: list[str] = []
    kw: dict[str, str] = {}
    if populations:
        lab = population_labels(populations, order)
        cols.append(np.asarray(lab.codes, dtype=np.float32)[:, None])
        extra_names.append("population")
        kw["IMMUNOPROFILE_POPULATIONS"] = ";".join(f"{i}={c}" for i, c in enumerate(lab.categories))
    if clusters is not None:
        c = np.asarray(clusters)
        if c.shape != (n,):
            raise ExchangeError(f"{sample.name}: {c.size} cluster labels for {n} events")
        cols.append((c.astype(np.float32) + 1.0)[:, None])
        extra_names.append("cluster")
        if cluster_names:
            kw["IMMUNOPROFILE_CLUSTERS"] = "0=unclustered;" + ";".join(
                f"{int(k) + 1}={v}" for k, v in sorted(cluster_names.items())
            )
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool and mask.shape != (n,):
            raise ExchangeError(f"{sample.name}: mask has {mask.shape[0]} entries for {n} events")
    events = np.hstack(cols) if len(cols) > 1 else sample.events
    if extra_names:
        top = [
            float(max(1, events[:, sample.n_channels + j].max(initial=0) + 1))
            for j in range(len(extra_names))
        ]
        table = pd.concat(
            [sample.channels, make_channel_table(extra_names, extra_names, top, [32] * len(top))],
            ignore_index=True,
        )
        out = Sample(
            events,
            table,
            dict(sample.keywords),
            path=None,
            name=sample.name,
            history=list(sample.history),
        )
    else:
        out = sample
    return write_fcs(out, path, mask=mask, extra_keywords=kw)


__all__ = [
    "ExchangeError",
    "Measurement",
    "cluster_labels",
    "export_fcs",
    "from_fcmeasurement",
    "from_flowkit",
    "population_labels",
    "to_anndata",
    "to_fcmeasurement",
    "to_flowkit",
    "write_h5ad",
]
