"""Export gated events with their population labels: one AnnData (.h5ad, for scanpy) of
all files, or one FCS file per input with a ``population`` column (for FlowJo).

`export_events` is what ``immunoprofile export`` runs: every file is read once, gated with
the template, and written (FCS) or kept for the one AnnData; a file that cannot be read or
gated is an error row and the others are still exported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from immunoprofile.batch import ERROR_COLUMNS, as_inputs, error_message, error_row, input_names
from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.results import ErrorTable, error_table

EXPORT_FORMATS = ("h5ad", "fcs")


@dataclass
class ExportResult:
    """What `export_events` wrote: one row per exported file (``file, sample, events,
    path``), the errors (`immunoprofile.batch.ERROR_COLUMNS`), and the written paths."""

    exported: pd.DataFrame
    errors: ErrorTable
    written: list[Path] = field(default_factory=list)

    @property
    def n_events(self) -> int:
        return int(self.exported["events"].sum()) if len(self.exported) else 0


def _metadata(samplesheet: str | os.PathLike | pd.DataFrame | None) -> pd.DataFrame | None:
    """The samplesheet's columns as per-sample ``obs`` metadata (sample = the file stem)."""
    if samplesheet is None:
        return None
    sheet = (
        samplesheet.copy()
        if isinstance(samplesheet, pd.DataFrame)
        else pd.read_csv(samplesheet, dtype=str)
    )
    if "file" not in sheet.columns:
        raise ImmunoprofileError(f"{samplesheet}: needs a 'file' column")
    sheet["sample"] = [Path(f).stem for f in sheet["file"]]
    return sheet.drop(columns=["file"])


def export_events(
    files: Any,
    template: Any,
    fmt: str,
    out: str | os.PathLike,
    population: str | None = None,
    samplesheet: str | os.PathLike | pd.DataFrame | None = None,
    seed: int = 0,
) -> ExportResult:
    """Gate ``files`` with ``template`` and export their events with population labels.

    Parameters
    ----------
    files : FCS paths (or `Sample` objects).
    template : built-in template name, JSON path or `Template`.
    fmt : ``"h5ad"`` (one AnnData of every file at ``out``) or ``"fcs"`` (one FCS file per
        input into the folder ``out``: ``<stem>[.<population>].fcs``, raw events plus a
        ``population`` column).
    population : fcs: write only this population's events (default: all events).
    samplesheet : h5ad: CSV (or DataFrame) with a ``file`` column; its other columns go
        into ``obs``.
    seed : seed of the adaptive gate fits.

    A file that cannot be read or gated (or lacks ``population``) is an error row in
    ``errors``; the others are exported. Raises `ImmunoprofileError` for a bad template,
    format, population name or samplesheet (before any file is read), and when no file
    could be exported.
    """
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.gating.template import load_template
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.sample import Sample

    if fmt not in EXPORT_FORMATS:
        raise ImmunoprofileError(f"export: format must be one of {EXPORT_FORMATS}, got {fmt!r}")
    items = as_inputs(files, "export")
    if not items:
        raise ImmunoprofileError("export: no files given")
    tpl = load_template(template) if not hasattr(template, "populations") else template
    if population is not None and population not in tpl.names:
        raise ImmunoprofileError(f"template {tpl.name!r} has no population {population!r}")
    meta = _metadata(samplesheet) if fmt == "h5ad" else None
    paths, names = input_names(items)
    rows, errors, results, written = [], [], [], []
    for item, file, name in zip(items, paths, names):
        try:
            raw = item if isinstance(item, Sample) else read_fcs(item)  # read once
            res = apply_template(raw, tpl, seed=seed)
            if fmt == "h5ad":
                results.append(res)
                rows.append({"file": file, "sample": name, "events": raw.n_events, "path": ""})
                continue
            dest = _export_one(raw, res, file, Path(out), population)
            mask = res.masks[population] if population else None
            n = int(mask.sum()) if mask is not None else raw.n_events
            rows.append({"file": file, "sample": name, "events": n, "path": str(dest)})
            written.append(dest)
        except ImmunoprofileError as exc:  # a bad file: reported, the others go on
            errors.append(error_row(file, name, type(exc).__name__, error_message(exc, file)))
    if fmt == "h5ad" and results:
        from immunoprofile.interop.exchange import write_h5ad

        path = write_h5ad(results, out, metadata=meta)
        written.append(Path(path))
        for r in rows:
            r["path"] = str(path)
    if not rows:
        raise ImmunoprofileError(
            "export: no file could be exported; " + "; ".join(e["message"] for e in errors)
        )
    return ExportResult(
        exported=pd.DataFrame(rows, columns=["file", "sample", "events", "path"]),
        errors=error_table(errors, ERROR_COLUMNS),
        written=written,
    )


def _export_one(raw: Any, res: Any, file: str, out_dir: Path, population: str | None) -> Path:
    """One FCS file: the raw events (of ``population`` when given) and a population
    column coded in template order."""
    from immunoprofile.exceptions import GatingError
    from immunoprofile.interop.exchange import export_fcs

    if population is not None and population not in res.masks:
        raise GatingError(f"{file}: population {population!r} was not gated in this file")
    mask = res.masks[population] if population else None
    order = [p.name for p in res.template.populations]
    suffix = f".{population}" if population else ""
    return export_fcs(
        raw,
        out_dir / f"{Path(file).stem}{suffix}.fcs",
        mask=mask,
        populations=res.masks,
        order=order,
    )


__all__ = ["EXPORT_FORMATS", "ExportResult", "export_events"]
