"""Gate a cohort: many files, one template, per-visit population tables.

`gate` reads each file, applies the template (compensation, transforms and every gate,
once per file), and collects counts, fitted gates and QC flags. Files run one after the
other, in parallel processes (``jobs=N``) or on a Dask cluster (``scheduler=...``); the
results are identical and ordered as the input in every case. A file that cannot be read
or gated does not stop the batch: it is recorded in `GateResults.errors`.

Two files that claim the same patient, visit and tube (a copied file, identical FCS
keywords) do not stop the batch either. The clash is found before gating (samplesheet,
filename pattern, or the keywords read from each file's HEADER and TEXT) and announced with
an `IdentityClashWarning`; every file is still gated and keeps its rows in the tidy table
(with ``identity_clash`` True), while the clashing files are listed in `errors`, flagged in
`qc`, and left out of the per-visit tables and of `compare`, where two values for one
patient and visit would be ambiguous.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from immunoprofile._files import write_owned
from immunoprofile._json import jsonable
from immunoprofile.batch import (
    ERROR_COLUMNS,
    Task,
    absolute,
    as_inputs,
    check_jobs,
    clash_row,
    error_message,
    error_row,
    input_names,
    run_batch,
    warn_clashes,
)
from immunoprofile.cohort import (
    CLASH_COLUMN,
    CLASH_ERROR,
    Identity,
    IdentityClash,
    clash_of,
    clash_summary,
    clashing_samples,
    controls_per_file,
    find_clashes,
    header_keywords,
    identity_table,
    read_samplesheet,
    resolve_identities,
)
from immunoprofile.compensation import normalize_mode
from immunoprofile.exceptions import (
    CompensationWarning,
    GatingError,
    IdentityClashWarning,
    ImmunoprofileError,
)
from immunoprofile.folder import GATING, WRITERS, outputs
from immunoprofile.gating.engine import apply_template
from immunoprofile.gating.qc import cohort_flags, file_record, flags_on
from immunoprofile.gating.template import load_template
from immunoprofile.io.fcs import read_fcs
from immunoprofile.plots.gating import plot_gate, plot_gating, save_gate_plots
from immunoprofile.progress import log
from immunoprofile.quantify import (
    VISIT_FILES,
    atomic_write,
    concat_tables,
    lab_tables,
    per_visit,
    population_table,
    table_metadata,
    visit_file_names,
    write_csv,
    write_population_files,
)
from immunoprofile.results import ErrorTable, error_table
from immunoprofile.sample import Sample, check_not_blank

QC_COLUMNS = ("sample", "file", "population", "flag", "detail")
_LEFT_OUT = "left out of the per-visit tables and the comparison"


# --- one file -----------------------------------------------------------------------


@dataclass
class FileOutcome:
    """What gating one file produced (small and picklable: no event data, no masks)."""

    index: int
    file: str
    sample: str
    counts: dict[str, int] = field(default_factory=dict)
    parents: dict[str, str | None] = field(default_factory=dict)
    total: int = 0
    reference: str | None = "lymphocytes"
    fitted: dict[str, Any] = field(default_factory=dict)
    qc: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    keywords: dict[str, str] | None = None
    gates_from: str | None = None
    plot: str | None = None
    seconds: float = 0.0
    error_type: str | None = None
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_type is None


def _load(item: str | os.PathLike | Sample) -> Sample:
    if isinstance(item, Sample):
        return item

    return read_fcs(item)


def _apply(
    sample: Sample,
    template: Any,
    seed: int = 0,
    compensation: Any = None,
    fmo: Any = None,
    copy: bool = True,
) -> Any:
    """Gate one sample; ``copy=False`` when this module read it (the events may then be
    compensated and transformed in place: one events-sized array less)."""

    if fmo:
        return apply_template(
            sample, template, seed=seed, compensation=compensation, fmo=fmo, copy=copy
        )
    return apply_template(sample, template, seed=seed, compensation=compensation, copy=copy)


def _outcome_from_result(out: FileOutcome, res: Any, template: Any) -> None:
    # the template as this file ran it: skipped steps left out, their children re-hung
    template = getattr(res, "template", template)
    names = [p.name for p in template.populations]
    counts = res.counts
    out.counts = {n: int(counts[n]) for n in names}
    out.parents = {p.name: (p.parent or None) for p in template.populations}
    out.total = int(res.sample.n_events)
    out.reference = getattr(template, "reference_population", "lymphocytes")
    out.fitted = jsonable(dict(res.fitted))
    out.qc = [jsonable(dict(q)) for q in res.qc]
    out.provenance = jsonable(dict(getattr(res, "provenance", None) or {}))
    out.gates_from = getattr(res, "gates_from", None)


def _gate_one(
    index: int,
    item: str | os.PathLike | Sample,
    file: str,
    sample_name: str,
    template: Any,
    plots_dir: str | None,
    seed: int = 0,
    compensation: Any = None,
    fmo: dict[str, str] | None = None,
) -> FileOutcome:
    """Read, gate and (optionally) plot one file; every failure becomes an error record.
    ``fmo``: marker -> fluorescence-minus-one control file (from the samplesheet)."""
    t0 = time.perf_counter()
    out = FileOutcome(index=index, file=file, sample=sample_name)
    try:
        sample = _load(item)
        out.keywords = dict(sample.keywords)
        check_not_blank(sample)  # a blank file is a failed file, not a row of zeros
        own = not isinstance(item, Sample)  # read here: gated in place
        if fmo:
            res = _apply(sample, template, seed, compensation, fmo, copy=not own)
        else:
            res = _apply(sample, template, seed, compensation, copy=not own)
        _outcome_from_result(out, res, template)
        if plots_dir is not None:
            _plot_into(out, res, plots_dir)
    except Exception as exc:  # noqa: BLE001 - a bad file must not stop the batch
        # caught here, not by the batch runner: the keywords read before the failure
        # still identify the file
        out.error_type = type(exc).__name__
        out.message = error_message(exc, file)
    out.seconds = time.perf_counter() - t0
    return out


def _plot_into(out: FileOutcome, res: Any, plots_dir: str) -> None:
    """Write the sample's gating figures, one per gate, into ``plots_dir/<sample>/``; a
    failed plot is a QC flag, not a failed file."""

    folder = Path(plots_dir) / _file_safe(out.sample)
    try:
        save_gate_plots(res, folder)
        out.plot = str(folder)
    except Exception as exc:  # noqa: BLE001 - the counts are fine; only the picture failed
        out.qc.append(
            {"population": None, "flag": "plot_failed", "detail": f"{type(exc).__name__}: {exc}"}
        )


def _tag(flag: dict[str, Any]) -> str:
    """``rule:population`` (``rule`` for a flag on the whole file)."""
    where = flag.get("population")
    return str(flag.get("flag")) if where is None else f"{flag.get('flag')}:{where}"


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# --- the batch result -----------------------------------------------------------------


@dataclass
class GateResults:
    """Results of gating a batch of files with one template.

    Tables are pandas DataFrames; nothing here holds event data, so a result of hundreds
    of files stays small. `plot` and `result` gate the one file asked for again (results
    are deterministic, so they match what the batch produced).
    """

    template: Any
    identities: list[Identity]
    outcomes: list[FileOutcome]
    items: list[Any] = field(repr=False, default_factory=list)
    seed: int = 0
    clashes: list[IdentityClash] = field(default_factory=list)
    compensation: Any = None
    templates: list[Any] = field(default_factory=list, repr=False)

    def template_of(self, i: int) -> Any:
        """The template file ``i`` was gated with (its tube's, in a run of several)."""
        if self.templates and self.templates[i] is not None:
            return self.templates[i]
        return self.template

    def template_names(self) -> str:
        """The template's name, or the names of the templates of the tubes (``tregs,
        b_cells``), in order of first use."""
        used = [self.template_of(i) for i in range(len(self.identities))]
        names = dict.fromkeys(_template_name(t) for t in used if t is not None)
        return ", ".join(n for n in names if n) or _template_name(self.template)

    @property
    def tubes(self) -> bool:
        """True when any file names a tube: the tables then carry a ``tube`` column."""
        return any(ident.tube for ident in self.identities)

    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    # --- lookup ------------------------------------------------------------------------

    @property
    def samples(self) -> list[str]:
        """Sample names, in input order (including failed files)."""
        return [i.sample for i in self.identities]

    @property
    def clashing_samples(self) -> list[str]:
        """Samples whose identity another file also claims, in input order."""
        return clashing_samples(self.identities, self.clashes)

    @property
    def n_failed(self) -> int:
        """Number of files that could not be read or gated."""
        return sum(not o.ok for o in self.outcomes)

    def _clash_of(self, ident: Identity) -> IdentityClash | None:
        return clash_of(ident.sample, self.clashes)

    def _index(self, sample: str) -> int:
        for i, ident in enumerate(self.identities):
            if sample in (ident.sample, ident.file, Path(ident.file).name):
                return i
        raise KeyError(f"no sample {sample!r}; samples are {self.samples}")

    # --- tables ---------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The tidy population table (one row per sample x population), input order; the
        ``qc`` column names the QC flags that bear on each row (see `_qc_column`)."""
        if "table" not in self._cache:
            parts = []
            for ident, out in zip(self.identities, self.outcomes):
                if not out.ok:
                    continue
                parts.append(
                    population_table(
                        out.counts,
                        out.parents,
                        out.total,
                        sample=ident.sample,
                        patient=ident.patient,
                        visit=ident.visit,
                        lymphocytes_per_ul=ident.lymphocytes_per_ul,
                        lymphocytes=out.reference or "",
                    )
                )
            table = concat_tables(parts)
            if self.tubes and len(table):
                # which tube each row was measured in: a population in two tubes (the
                # lymphocytes of each) stays two rows, told apart by this column
                tube = {i.sample: i.tube for i in self.identities}
                table.insert(table.columns.get_loc("visit") + 1, "tube", table["sample"].map(tube))
            table["qc"] = self._qc_column(table)
            if self.clashes:
                # every gated file keeps its rows; the flag says which ones are ambiguous
                table[CLASH_COLUMN] = table["sample"].isin(self.clashing_samples)
            self._cache["table"] = table
        return self._cache["table"].copy()

    def _file_qc(self) -> list[list[dict[str, Any]]]:
        """Every QC flag of each file (input order): the file's own (from gating) and the
        run's cohort-consistency flags (`immunoprofile.gating.qc.cohort_flags`)."""
        if "file_qc" not in self._cache:
            ok = [i for i, o in enumerate(self.outcomes) if o.ok]
            records = [
                file_record(
                    self.outcomes[i].counts,
                    self.outcomes[i].parents,
                    self.outcomes[i].total,
                    self.outcomes[i].fitted,
                    sample=self.identities[i].sample,
                    patient=self.identities[i].patient,
                    visit=self.identities[i].visit,
                    group=self.identities[i].tube,
                )
                for i in ok
            ]
            extra = cohort_flags(records) if records else []
            flags: list[list[dict[str, Any]]] = [list(o.qc) for o in self.outcomes]
            for i, more in zip(ok, extra):
                flags[i] += more
            self._cache["file_qc"] = flags
        return self._cache["file_qc"]

    def _qc_column(self, table: pd.DataFrame) -> list[str]:
        """Per row of the tidy table: the flags on its population, on an ancestor of it
        (a wrong parent makes every descendant suspect) or on the whole file, as
        ``flag:population`` (or ``flag``) joined by ``; `` (empty: no flag)."""
        by_sample: dict[str, tuple[list[dict[str, Any]], dict[str, str | None]]] = {}
        for ident, o, flags in zip(self.identities, self.outcomes, self._file_qc()):
            by_sample[ident.sample] = (flags, o.parents)

        out = []
        for sample, pop in zip(table["sample"], table["population"]):
            flags, parents = by_sample.get(sample, ([], {}))
            out.append("; ".join(dict.fromkeys(_tag(q) for q in flags_on(flags, pop, parents))))
        return out

    def flagged_files(self) -> pd.DataFrame:
        """The files to review: one row per gated file with at least one QC flag, in input
        order: ``sample, patient, visit, file, flags`` (count) and ``rules`` (the distinct
        ``flag:population`` tags)."""
        rows = []
        for ident, o, flags in zip(self.identities, self.outcomes, self._file_qc()):
            if not o.ok or not flags:
                continue
            tags = list(dict.fromkeys(_tag(q) for q in flags))
            rows.append(
                {
                    "sample": ident.sample,
                    "patient": ident.patient,
                    "visit": ident.visit,
                    "file": ident.file,
                    "flags": len(flags),
                    "rules": "; ".join(tags),
                }
            )
        return pd.DataFrame(rows, columns=["sample", "patient", "visit", "file", "flags", "rules"])

    def unambiguous_table(self) -> pd.DataFrame:
        """The tidy table without the files whose identity another file also claims (the
        rows the per-visit tables and `compare` use)."""
        t = self.table()
        if CLASH_COLUMN not in t.columns:
            return t
        return t[~t[CLASH_COLUMN]].drop(columns=CLASH_COLUMN).reset_index(drop=True)

    def per_visit(self, value: str = "percent_of_parent") -> dict[str, pd.DataFrame]:
        """Wide tables (patients x populations), one per visit; see `quantify.per_visit`.

        Files whose identity another file also claims are left out (a wide table has one
        cell per patient, visit and population), with an `IdentityClashWarning` naming them.
        """
        if self.clashes:
            warnings.warn(
                f"per-visit tables leave out {len(self.clashing_samples)} file(s) whose "
                f"identity is claimed twice: {clash_summary(self.clashes)}",
                IdentityClashWarning,
                stacklevel=2,
            )
        return per_visit(self.unambiguous_table(), value)

    def qc(self) -> pd.DataFrame:
        """QC flags of every file: ``sample, file, population, flag, detail``."""
        rows = []
        for ident, flags in zip(self.identities, self._file_qc()):
            clash = self._clash_of(ident)
            if clash is not None:
                rows.append(
                    {
                        "sample": ident.sample,
                        "file": ident.file,
                        "population": None,
                        "flag": "identity_clash",
                        "detail": f"{clash.identity} also claimed by {clash.others(ident.file)}"
                        "; left out of the per-visit tables and the comparison",
                    }
                )
            rows.extend(
                {
                    "sample": ident.sample,
                    "file": ident.file,
                    "population": q.get("population"),
                    "flag": q.get("flag"),
                    "detail": q.get("detail"),
                }
                for q in flags
            )
        return pd.DataFrame(rows, columns=list(QC_COLUMNS))

    @property
    def errors(self) -> ErrorTable:
        """Files that failed or whose identity another file also claims, in input order:
        ``file, sample, error_type, message, patient, visit, tube, other_files`` (empty
        when there are none).

        A clash is one row per file with ``error_type`` ``IdentityClashError`` and the other
        files claiming the same identity in ``other_files`` (separated by ``;``); those
        files are gated and in `table`, but not in the per-visit tables or `compare`.
        """
        rows = []
        for ident, out in zip(self.identities, self.outcomes):
            if not out.ok:
                rows.append(error_row(out.file, out.sample, str(out.error_type),
                                      str(out.message), ident))  # fmt: skip
            kept = "gated, in populations.csv" if out.ok else "not gated (see above)"
            row = clash_row(ident, self.clashes, f"{kept}, {_LEFT_OUT}")
            if row is not None:
                rows.append(row)
        return error_table(rows, ERROR_COLUMNS)

    def summary(self) -> pd.DataFrame:
        """One row per file: identity, events, status, QC flag count, seconds."""
        rows = []
        for k, (ident, out, flags) in enumerate(
            zip(self.identities, self.outcomes, self._file_qc())
        ):
            per_sample = getattr(self.template_of(k), "samples", ())
            rows.append(
                {
                    "sample": ident.sample,
                    "patient": ident.patient,
                    "visit": ident.visit,
                    "identity_from": ident.source,
                    "events": out.total if out.ok else None,
                    "status": (
                        out.error_type
                        if not out.ok
                        else CLASH_ERROR
                        if self._clash_of(ident) is not None
                        else "ok"
                    ),
                    "qc_flags": len(flags),
                    "seconds": round(out.seconds, 3),
                    "file": ident.file,
                    "gates": _gates_label(out) if per_sample else None,
                }
            )
        df = pd.DataFrame(rows)
        if self.tubes:
            df.insert(3, "tube", [i.tube for i in self.identities])
            df.insert(4, "template", [_template_name(self.template_of(k)) if self.template_of(k)
                                      is not None else "" for k in range(len(df))])  # fmt: skip
        # events stay integers when some files failed (an empty cell, not 20000.0)
        return df.astype({"events": "Int64"})

    def identity_table(self) -> pd.DataFrame:
        """Patient, visit, tube and lymphocyte count of each file, and where they came from."""
        return identity_table(self.identities)

    def fitted_gates(self) -> dict[str, Any]:
        """Fitted gates per sample, JSON-ready: ``{sample: {file, patient, visit, events, gates}}``."""
        return self._per_gated_file(lambda o: {"events": o.total, "gates": o.fitted})

    def provenance(self) -> dict[str, Any]:
        """Per sample, what was done before gating, JSON-ready: ``{sample: {file, patient,
        visit, read, compensation, transforms, markers, steps}}`` (see
        `GatingResult.provenance`; compensation carries the spillover matrix used)."""
        return self._per_gated_file(lambda o: o.provenance)

    def _per_gated_file(self, part: Callable[[FileOutcome], dict[str, Any]]) -> dict[str, Any]:
        """``{sample: {file, patient, visit, **part(outcome)}}`` of every gated file, in
        input order (the JSON layout of gates.json and provenance.json)."""
        out = {}
        for i, (ident, o) in enumerate(zip(self.identities, self.outcomes)):
            if not o.ok:
                continue
            head = {"file": ident.file, "patient": ident.patient, "visit": ident.visit}
            if self.tubes:
                head["tube"] = ident.tube
                head["template"] = _template_name(self.template_of(i))
            out[ident.sample] = {**head, **part(o)}
        return out

    def provenance_table(self) -> pd.DataFrame:
        """One row per gated file: compensation source and the transforms applied, with
        their parameters (see `provenance_table`)."""
        return provenance_table(self.provenance())

    # --- one sample, again ---------------------------------------------------------------

    def result(self, sample: str) -> Any:
        """The full `GatingResult` (masks included) of one sample, gated again."""
        i = self._index(sample)
        if not self.outcomes[i].ok:
            raise GatingError(f"{self.outcomes[i].file} failed: {self.outcomes[i].message}")
        key = f"result:{i}"
        if key not in self._cache:
            # keep one full result at a time: each holds the sample's event matrix
            for k in [k for k in self._cache if k.startswith("result:")]:
                del self._cache[k]
            sample_i = _load(self.items[i])
            tpl = self.template_of(i)
            self._cache[key] = (
                _apply(sample_i, tpl, self.seed)
                if self.compensation is None
                else _apply(sample_i, tpl, self.seed, self.compensation)
            )
        return self._cache[key]

    def plot(self, sample: str, population: str | None = None, **kwargs: Any) -> Any:
        """Gating plot of one sample: the whole hierarchy as a grid, or one population's gate
        on its parent's density. Returns a matplotlib Figure."""

        res = self.result(sample)
        if population is None:
            return plot_gating(res, title=self.identities[self._index(sample)].sample, **kwargs)
        return plot_gate(res, population, **kwargs)

    # --- output ----------------------------------------------------------------------

    def write(self, out_dir: str | os.PathLike, value: str = "percent_of_parent") -> list[Path]:
        """Write every output into ``out_dir``, each file atomically.

        ``populations.csv``, ``populations.parquet`` (every gated file),
        ``populations_<visit>.csv`` and ``populations.xlsx`` (lab tables: ``value`` rounded
        to 2 decimals with events beside it, headers naming unit and parent; a metadata
        sheet with template, version, date and files; without files whose identity is
        claimed twice), ``gates.json``, ``provenance.json``, ``qc.csv``, ``errors.csv``,
        ``samples.csv``, and ``outputs.json`` (the manifest: what this write produced).

        A ``populations_<visit>.csv`` that an earlier write into the same folder produced
        (it is in that write's manifest) and this one does not (no rows for that visit
        now) is removed once everything else is written, so the folder never mixes two
        runs; files the manifest does not list are never touched.
        """
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        table = self.table()
        clean = self.unambiguous_table()
        wide = lab_tables(clean, value) if len(clean) else {}
        files = self.summary()[["sample", "patient", "visit", "events", "status", "file"]]
        meta = table_metadata(self.template_names(), value, files)

        def _json(name: str, samples: dict[str, Any]) -> Path:
            text = json.dumps(
                {"template": self.template_names(), "samples": samples},
                indent=1,
                allow_nan=False,
            )
            return atomic_write(out_dir / name, lambda p: p.write_text(text, encoding="utf-8"))

        def _write() -> list[Path]:
            written = write_population_files(table, wide, out_dir, meta, files)
            written.append(_json(GATING["gates"], self.fitted_gates()))
            written.append(_json(GATING["provenance"], self.provenance()))
            written.append(write_csv(self.qc(), out_dir / GATING["qc"]))
            written.append(write_csv(self.errors, out_dir / GATING["errors"]))
            written.append(write_csv(self.summary(), out_dir / GATING["samples"]))
            return written

        written, _ = write_owned(
            out_dir,
            list(visit_file_names(wide).values()),
            _write,
            writer=WRITERS["gating"],
            stale=VISIT_FILES,
        )
        return written


#: names (and globs) `GateResults.write` writes into an output folder (`immunoprofile.folder`)
GATE_OUTPUTS = outputs("gating")


# --- provenance tables ------------------------------------------------------------------

PROVENANCE_COLUMNS = (
    "sample", "patient", "visit", "file", "fcs_version", "compensation", "detectors",
    "transforms", "gates_used",
)  # fmt: skip
TRANSFORM_COLUMNS = ("sample", "channel", "marker", "transform", "parameters")


def _gates_label(out: FileOutcome) -> str | None:
    """Which gates a file got from a template with per-sample gates."""
    if not out.ok:
        return None
    return f"sample {out.gates_from}" if out.gates_from else "template (group)"


def _params_text(params: dict[str, Any]) -> str:
    """``t=262144, w=0.5, m=4.5, a=0`` (the parameters of a transform, type left out)."""
    parts = []
    for k, v in params.items():
        if k == "type":
            continue
        number = isinstance(v, int | float) and not isinstance(v, bool)
        parts.append(f"{k}={v:.6g}" if number else f"{k}={v}")
    return ", ".join(parts)


def _transform_summary(transforms: dict[str, Any] | None) -> str:
    """Channels grouped by identical transform: ``logicle(t=..., w=...) on 20 channels;
    linear(t=262144, a=0) on FSC-A, FSC-H``."""
    if not transforms:
        return "none"
    groups: dict[str, list[str]] = {}
    for ch, params in transforms.items():
        params = params if isinstance(params, dict) else {"type": str(params)}
        key = f"{params.get('type', '?')}({_params_text(params)})"
        groups.setdefault(key, []).append(ch)
    return "; ".join(
        f"{k} on {', '.join(chs) if len(chs) <= 4 else f'{len(chs)} channels'}"
        for k, chs in groups.items()
    )


def _compensation_text(comp: dict[str, Any]) -> str:
    """The matrix source, or why none was applied (``none (already compensated: ...)``)."""
    if comp.get("source"):
        return str(comp["source"])
    status = comp.get("status")
    if status in ("already", "assumed"):
        return f"none ({comp.get('reason', status)})"
    return "none"


def _gating_text(gating: dict[str, Any] | None) -> str:
    """Populations that did not use their own gate: ``singlets: skipped (...); nonT:
    Lineage (alternative 1)``; empty when every population did."""
    parts = []
    for name, rec in (gating or {}).items():
        status = rec.get("status") if isinstance(rec, dict) else None
        if status == "alternative":
            dims = " x ".join(rec.get("dims") or [])
            parts.append(f"{name}: {dims} (alternative {rec.get('option')})")
        elif status in ("skipped",):
            parts.append(f"{name}: skipped ({rec.get('reason', '')})")
    return "; ".join(parts)


def provenance_table(provenance: dict[str, Any]) -> pd.DataFrame:
    """One row per file from `GateResults.provenance` (or ``provenance.json``, with or
    without its ``{"template", "samples"}`` wrapper): FCS version, compensation source,
    number of compensated detectors, and the transforms grouped by parameter set."""
    samples = provenance.get("samples", provenance) if isinstance(provenance, dict) else {}
    rows = []
    for sample, info in samples.items():
        if not isinstance(info, dict):
            continue
        comp = info.get("compensation") or {}
        read = info.get("read") or {}
        rows.append(
            {
                "sample": sample,
                "patient": info.get("patient", ""),
                "visit": info.get("visit", ""),
                "file": info.get("file", ""),
                "fcs_version": str(read.get("version") or ""),
                "compensation": _compensation_text(comp),
                "detectors": len(comp.get("detectors") or []),
                "transforms": _transform_summary(info.get("transforms")),
                "gates_used": _gating_text(info.get("gating")),
            }
        )
    return pd.DataFrame(rows, columns=list(PROVENANCE_COLUMNS))


def transform_table(provenance: dict[str, Any]) -> pd.DataFrame:
    """One row per file x transformed channel: the template marker gated on it (if any),
    the transform type and its parameters."""
    samples = provenance.get("samples", provenance) if isinstance(provenance, dict) else {}
    rows = []
    for sample, info in samples.items():
        if not isinstance(info, dict):
            continue
        marker_of = {ch: m for m, ch in (info.get("markers") or {}).items() if m != ch}
        for ch, params in (info.get("transforms") or {}).items():
            params = params if isinstance(params, dict) else {"type": str(params)}
            rows.append(
                {
                    "sample": sample,
                    "channel": ch,
                    "marker": marker_of.get(ch, ""),
                    "transform": params.get("type", ""),
                    "parameters": _params_text(params),
                }
            )
    return pd.DataFrame(rows, columns=list(TRANSFORM_COLUMNS))


def _template_name(template: Any) -> str:
    return str(getattr(template, "name", "") or "")


def _is_tube_mapping(template: Any) -> bool:
    """``{tube: template}`` rather than one template given as a dict (``populations``)."""
    return isinstance(template, dict) and "populations" not in template


def _resolve_template(template: Any) -> Any:
    if isinstance(template, str | os.PathLike) or (
        isinstance(template, dict) and not _is_tube_mapping(template)
    ):
        return load_template(template)
    if template is None or not hasattr(template, "populations"):
        raise TypeError(
            "gate: template must be a built-in template name ('tregs'), the path of a JSON "
            f"template, a dict or a Template; got {type(template).__name__}"
        )
    return template


#: the key of a template mapping that serves files whose tube the mapping does not name
ANY_TUBE = "*"


def parse_template_args(values: Sequence[str]) -> str | dict[str, str]:
    """``--template`` values: one template, or ``tube=template`` pairs (``tcell=tregs``)
    plus at most one plain template for files of any other tube. Returns the one template,
    or ``{tube: template}`` with the plain one under `ANY_TUBE`."""
    plain = [v for v in values if "=" not in v]
    pairs = [v for v in values if "=" in v]
    if len(plain) > 1:
        raise ImmunoprofileError(
            f"several templates without a tube: {plain}; give tube=template for each tube "
            "(e.g. --template tcell=tregs --template bcell=b_cells)"
        )
    if not pairs:
        if not plain:
            raise ImmunoprofileError("no template given")
        return plain[0]
    out: dict[str, str] = {}
    for v in pairs:
        tube, _, name = v.partition("=")
        tube, name = tube.strip(), name.strip()
        if not tube or not name:
            raise ImmunoprofileError(f"--template {v!r}: expected TUBE=TEMPLATE")
        if tube in out and out[tube] != name:
            raise ImmunoprofileError(f"tube {tube!r} is given two templates: {out[tube]}, {name}")
        out[tube] = name
    if plain:
        out[ANY_TUBE] = plain[0]
    return out


def _template_per_file(
    template: Any, identities: list[Identity]
) -> tuple[Any, list[Any], dict[int, str]]:
    """The template of each file: the samplesheet's ``template`` column, else the mapping's
    entry for the file's tube, else its `ANY_TUBE` entry (or the one template).

    Returns the run's main template (the one template, or the first used), the template
    per file (None where there is none) and, per such file, why.
    """
    cache: dict[str, Any] = {}

    def load(spec: Any) -> Any:
        if not isinstance(spec, str | os.PathLike):
            return _resolve_template(spec)
        key = str(spec)
        if key not in cache:
            cache[key] = _resolve_template(spec)
        return cache[key]

    mapping = template if _is_tube_mapping(template) else None
    per_file: list[Any] = []
    missing: dict[int, str] = {}
    for i, ident in enumerate(identities):
        if ident.template:
            per_file.append(load(ident.template))
            continue
        if mapping is None:
            per_file.append(load(template))
            continue
        spec = mapping.get(ident.tube, mapping.get(ANY_TUBE))
        if spec is None:
            tubes = ", ".join(k for k in mapping if k != ANY_TUBE)
            missing[i] = (
                f"{ident.file}: no template for tube {ident.tube or '(none)'!r}; templates "
                f"are given for tube(s) {tubes} (a tube comes from the samplesheet's tube "
                "column, the pattern's tube group or the TUBE keyword)"
            )
            per_file.append(None)
        else:
            per_file.append(load(spec))
    used = [t for t in per_file if t is not None]
    main = used[0] if used else (None if mapping is not None else load(template))
    return main, per_file, missing


def gate(
    paths_or_samples: str | os.PathLike | Sample | Iterable[str | os.PathLike | Sample],
    template: Any,
    samplesheet: str | os.PathLike | pd.DataFrame | None = None,
    pattern: str | None = None,
    jobs: int = 1,
    scheduler: Any = None,
    progress: bool = False,
    plots_dir: str | os.PathLike | None = None,
    patient_keyword: str | Sequence[str] | None = None,
    visit_keyword: str | Sequence[str] | None = None,
    seed: int = 0,
    compensation: str | os.PathLike | None = None,
) -> GateResults:
    """Gate files (or in-memory samples) with one template.

    Parameters
    ----------
    paths_or_samples : FCS paths and/or raw `Sample` objects (a single one is accepted).
    template : a `Template`, a built-in template name (``"tregs"``) or a JSON file path;
        or, for several tubes per visit, ``{tube: template}`` (key ``"*"``: files of any
        other tube). A samplesheet ``template`` column names a file's template and wins.
    samplesheet : CSV ``file,patient,visit[,tube][,lymphocytes_per_ul]`` (or a DataFrame
        from `immunoprofile.cohort.read_samplesheet`); takes precedence over ``pattern``.
    pattern : filename regex with named groups ``patient`` and ``visit``; files it does not
        match fall back to FCS keywords.
    jobs : number of worker processes (1 runs in this process).
    scheduler : a Dask scheduler address (``"tcp://host:8786"``) or a
        ``dask.distributed.Client``; overrides ``jobs``. Needs the ``dask`` extra.
    progress : show a progress bar over files (rich, on stderr).
    plots_dir : when given, gating figures are written there, one per gate and sample
        (``<sample>/NN_<population>.png``, template order).
    patient_keyword, visit_keyword : FCS keyword name(s) holding patient and visit.
    seed : seed of the subsampling inside adaptive gate fits (same seed, same results).
    compensation : overrides the template's compensation mode: ``"auto"`` (the file's
        spillover keyword; a file without one, or one showing it is compensated already,
        is not compensated again: a QC line ``compensation_assumed`` and a
        `CompensationWarning`), ``"keyword"``, ``"none"`` or a spillover matrix file.

    Returns
    -------
    GateResults
        With ``.table()``, ``.per_visit()``, ``.qc()``, ``.errors``, ``.fitted_gates()``,
        ``.plot(sample, population)`` and ``.write(out_dir)``.

    Raises
    ------
    TemplateError
        The template cannot be loaded.
    IdentityError
        The samplesheet or pattern is invalid (e.g. one file listed twice with different
        identities): raised before any file is gated.

    Warns
    -----
    IdentityClashWarning
        Before gating, when several files claim the same patient, visit and tube. They are
        all gated; ``.errors`` lists them, ``.table()`` flags them (``identity_clash``)
        and ``.per_visit()`` leaves them out.

    Examples
    --------
    >>> res = gate(["P01_baseline.fcs", "P01_week24.fcs"], "tregs")  # doctest: +SKIP
    >>> res.per_visit()["baseline"]  # doctest: +SKIP
    """
    items = as_inputs(paths_or_samples, "gate")
    if not items:
        raise ImmunoprofileError("gate: no files given")
    jobs = check_jobs(jobs, "gate")
    if samplesheet is not None and not isinstance(samplesheet, str | os.PathLike | pd.DataFrame):
        raise TypeError(
            "gate: samplesheet must be the path of a CSV file or a DataFrame; got "
            f"{type(samplesheet).__name__}"
        )
    if _is_tube_mapping(template):
        # validate every template up front: a bad name fails the run before any gating
        for spec in template.values():
            _resolve_template(spec)
    else:
        template = _resolve_template(template)
    files, names = input_names(items)
    sheet = None
    if samplesheet is not None:
        sheet = (
            samplesheet if isinstance(samplesheet, pd.DataFrame) else read_samplesheet(samplesheet)
        )

    def identify(keywords: list[dict[str, str] | None]) -> list[Identity]:
        return resolve_identities(
            files,
            samplesheet=sheet,
            pattern=pattern,
            keywords=keywords,
            patient_keyword=patient_keyword,
            visit_keyword=visit_keyword,
            names=names,
            clashes="keep",
        )

    # identities before spending time on gating: samplesheet and pattern, then the
    # keywords of in-memory samples and of the HEADER+TEXT of files not yet identified
    early_kw: list[dict[str, str] | None] = [
        dict(x.keywords) if isinstance(x, Sample) else None for x in items
    ]
    early = identify(early_kw)
    unknown = [i for i, ident in enumerate(early) if ident.source == "none" and early_kw[i] is None]
    if unknown:
        for i, kw in zip(unknown, header_keywords([items[i] for i in unknown])):
            early_kw[i] = kw
        early = identify(early_kw)
    early_clashes = find_clashes(early)
    if early_clashes:
        _warn_clashes(early_clashes)
    main_template, templates, no_template = _template_per_file(template, early)

    comp = None if compensation is None else str(compensation)
    if comp is not None:
        comp = normalize_mode(comp)
        if comp not in ("auto", "keyword", "none") and not Path(comp).is_file():
            raise ImmunoprofileError(
                f"compensation {comp!r} is neither auto, keyword, none nor a spillover matrix file"
            )
    pdir = None
    if plots_dir is not None:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        pdir = str(plots_dir)
    fmo_of = controls_per_file(sheet, files)
    sent, sent_comp = items, comp
    if scheduler is not None:
        # a Dask worker resolves a relative path in its own working folder (on another
        # machine: another folder): every path it gets is absolute
        sent = [absolute(x) for x in items]
        pdir = absolute(pdir) if pdir is not None else None
        if comp is not None and comp not in ("auto", "keyword", "none"):
            sent_comp = absolute(comp)
        fmo_of = [{m: absolute(f) for m, f in fmo.items()} for fmo in fmo_of]
    tasks = [
        Task(i, files[i], names[i],
             (i, item, files[i], names[i], templates[i], pdir, int(seed), sent_comp,
              fmo_of[i] or None))
        for i, item in enumerate(sent)
        if i not in no_template
    ]  # fmt: skip
    done = run_batch(_gate_one, tasks, jobs, scheduler, progress, label="gating")
    # the per-file work records its own failures (FileOutcome); a worker that died is
    # the batch runner's error outcome
    outcomes = [
        o.value if o.ok else FileOutcome(o.index, o.file, o.sample, error_type=o.error_type,
                                         message=o.message, seconds=o.seconds)
        for o in done
    ]  # fmt: skip
    if no_template:
        # files of a tube without a template: an error row each, the batch goes on
        for i, msg in no_template.items():
            o = FileOutcome(index=i, file=files[i], sample=names[i])
            o.error_type, o.message = "TemplateError", msg
            outcomes.append(o)
        outcomes.sort(key=lambda o: o.index)

    log.info(
        "gating: %d files, %d failed, %.1f s of per-file work",
        len(outcomes), sum(not o.ok for o in outcomes), sum(o.seconds for o in outcomes),
    )  # fmt: skip

    # the keywords as gating read them; the HEADER look-ahead where a file failed to read
    identities = identify(
        [o.keywords if o.keywords is not None else kw for o, kw in zip(outcomes, early_kw)]
    )
    clashes = find_clashes(identities)
    if clashes and clashes != early_clashes:
        _warn_clashes(clashes)
    _warn_uncompensated(outcomes)
    return GateResults(
        template=main_template,
        identities=identities,
        outcomes=outcomes,
        items=items,
        seed=int(seed),
        clashes=clashes,
        compensation=comp,
        templates=templates,
    )


def _warn_uncompensated(outcomes: list[FileOutcome]) -> None:
    """One `CompensationWarning` naming the files ``auto`` took to be compensated already
    because they carry no spillover keyword."""
    files = [o.file for o in outcomes if any(q.get("flag") == "compensation_assumed" for q in o.qc)]
    if not files:
        return
    shown = ", ".join(Path(f).name for f in files[:5]) + (", ..." if len(files) > 5 else "")
    warnings.warn(
        f"{len(files)} file(s) have no spillover keyword and were treated as already "
        f"compensated (compensation auto): {shown}; give --compensation FILE with the "
        "lab's matrix if they are not",
        CompensationWarning,
        stacklevel=3,
    )


def _warn_clashes(clashes: list[IdentityClash]) -> None:
    warn_clashes(
        clashes, f"Every file is still gated and keeps its rows in the population table; "
        f"these are {_LEFT_OUT}; ", stacklevel=3,
    )  # fmt: skip


__all__ = [
    "ANY_TUBE",
    "FileOutcome",
    "GateResults",
    "gate",
    "jsonable",
    "parse_template_args",
    "provenance_table",
    "transform_table",
]
