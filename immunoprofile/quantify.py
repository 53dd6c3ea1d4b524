"""Population tables: the tidy table (one row per sample x population), the wide per-visit
table (patients x populations), and writers for CSV, Parquet and Excel.

Percentages come from counts and the gating hierarchy only, by the one definition in
`immunoprofile.hierarchy` (shared with `GatingResult.table` and the clustering table):

* ``parent`` of a top-level population is ``"root"`` (all events of the file);
* ``percent_of_parent = 100 * count / parent_count`` (NaN when the parent is empty);
* ``percent_of_lymphocytes = 100 * count / count(lymphocytes)`` for the reference
  population (100) and its descendants; NaN for its ancestors and side branches (they
  are not subsets of lymphocytes), or when the template has no reference population;
* ``cells_per_ul = lymphocytes_per_ul * percent_of_lymphocytes / 100`` when an absolute
  lymphocyte count of the blood sample is known.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile import __version__
from immunoprofile._files import atomic_write, spreadsheet_safe, write_owned
from immunoprofile.hierarchy import ROOT, hierarchy_table
from immunoprofile.hierarchy import TABLE_COLUMNS as SAMPLE_TABLE_COLUMNS

TABLE_COLUMNS: tuple[str, ...] = ("sample", "patient", "visit", *SAMPLE_TABLE_COLUMNS)
LYMPHOCYTES = "lymphocytes"
UNASSIGNED_VISIT = "unassigned"


def population_table(
    counts: Mapping[str, int],
    parents: Mapping[str, str | None],
    total: int,
    *,
    sample: str,
    patient: str = "",
    visit: str = "",
    lymphocytes_per_ul: float | None = None,
    lymphocytes: str = LYMPHOCYTES,
) -> pd.DataFrame:
    """The tidy population table of one sample.

    Parameters
    ----------
    counts : events per population, in hierarchy order (parents before children).
    parents : each population's parent (None or ``"root"`` for top-level populations).
    total : the number of events in the file (the parent count of top-level populations).
    sample, patient, visit : identity written into every row.
    lymphocytes_per_ul : absolute lymphocyte count; adds ``cells_per_ul`` when given.
    lymphocytes : name of the population that ``percent_of_lymphocytes`` refers to.

    Returns
    -------
    DataFrame with the columns `TABLE_COLUMNS` (+ ``cells_per_ul``), one row per population.
    """
    cols = hierarchy_table(counts, parents, total, lymphocytes or None)
    table = pd.DataFrame(
        {"sample": sample, "patient": patient or "", "visit": visit or "", **cols},
        columns=list(TABLE_COLUMNS),
    )
    if lymphocytes_per_ul is not None:
        table["cells_per_ul"] = float(lymphocytes_per_ul) * table["percent_of_lymphocytes"] / 100.0
    return table


def concat_tables(tables: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Stack per-sample tables; ``cells_per_ul`` is kept when any sample has it."""
    tables = [t for t in tables if t is not None and len(t)]
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in TABLE_COLUMNS})
    out = pd.concat(tables, ignore_index=True)
    cols = list(TABLE_COLUMNS) + (["cells_per_ul"] if "cells_per_ul" in out.columns else [])
    out = out[cols]
    for c in ("count", "parent_count"):
        out[c] = out[c].astype(np.int64)
    return out


_DTYPES = {
    "sample": object,
    "patient": object,
    "visit": object,
    "population": object,
    "parent": object,
    "count": np.int64,
    "parent_count": np.int64,
    "percent_of_parent": np.float64,
    "percent_of_lymphocytes": np.float64,
}


def tube_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The table with the tube in the name of every population measured in more than one
    tube (``lymphocytes [tcell]``, ``lymphocytes [bcell]``; parents alike), so that tables
    keyed by population keep one value per tube instead of merging them. Unchanged when
    the table has no ``tube`` column or no population in two tubes."""
    if "tube" not in table.columns or table.empty:
        return table
    tubes = table["tube"].fillna("").astype(str)
    if not (tubes != "").any():
        return table
    per_pop = tubes.groupby(table["population"].astype(str)).nunique()
    shared = set(per_pop.index[per_pop > 1])
    if not shared:
        return table

    def label(names: pd.Series) -> list[str]:
        return [f"{p} [{tb}]" if str(p) in shared and tb else p for p, tb in zip(names, tubes)]

    out = table.copy()
    out["population"] = label(out["population"])
    if "parent" in out.columns:
        out["parent"] = label(out["parent"])
    return out


def per_visit(table: pd.DataFrame, value: str = "percent_of_parent") -> dict[str, pd.DataFrame]:
    """Wide tables, one per visit: rows are patients, columns populations, cells ``value``.

    Files without a patient are listed by sample name; files without a visit go to the
    ``"unassigned"`` table. With a ``tube`` column, a patient's tubes fill one row and a
    population measured in two tubes gets a column per tube (`tube_labels`); when one
    patient has several files of one tube in a visit (or several files and no tube
    column), rows are labelled ``patient/sample``. Populations keep the order of the tidy
    table.
    """
    if value not in table.columns:
        raise KeyError(f"population table has no column {value!r}; it has {list(table.columns)}")
    if table.empty:
        return {}
    t = tube_labels(table).copy()
    t["visit"] = t["visit"].fillna("").replace("", UNASSIGNED_VISIT)
    t["row"] = t["patient"].fillna("").where(t["patient"].fillna("") != "", t["sample"])
    populations = list(dict.fromkeys(t["population"]))
    # one file per tube is one patient's row; only two files of one tube need two rows
    per_row = ["row", "tube"] if "tube" in t.columns else ["row"]
    out: dict[str, pd.DataFrame] = {}
    for visit, sub in t.groupby("visit", sort=False):
        rows_per_label = sub.groupby(per_row)["sample"].nunique().groupby(level=0).max()
        multi = set(rows_per_label.index[rows_per_label > 1])
        sub = sub.copy()
        is_multi = sub["row"].isin(multi)
        sub.loc[is_multi, "row"] = sub.loc[is_multi, "row"] + "/" + sub.loc[is_multi, "sample"]
        wide = sub.pivot(index="row", columns="population", values=value)
        wide = wide.reindex(columns=[p for p in populations if p in wide.columns])
        wide = wide.sort_index()
        wide.index.name = "patient"
        wide.columns.name = None
        out[str(visit)] = wide
    return out


def value_label(value: str, parent: str | None = None) -> str:
    """The unit of a table value, naming the parent of a percentage: ``% of CD4``,
    ``% of lymphocytes``, ``cells/µL``, ``events``."""
    if value == "percent_of_parent":
        p = parent if parent and parent != ROOT else "all events"
        return f"% of {p}"
    if value == "percent_of_lymphocytes":
        return f"% of {LYMPHOCYTES}"
    if value == "cells_per_ul":
        return "cells/µL"
    if value == "count":
        return "events"
    return value.replace("_", " ")


def lab_tables(
    table: pd.DataFrame, value: str = "percent_of_parent", digits: int = 2
) -> dict[str, pd.DataFrame]:
    """Per-visit tables to paste into a lab sheet: one row per patient, and per population
    its ``value`` rounded to ``digits`` decimals with the events behind it beside it.

    Column headers name unit and parent (``Treg (% of CD4)``, ``Treg (events)``), so a
    table read on its own says what each number is. Built from `per_visit`.
    """
    values = per_visit(table, value)
    counts = per_visit(table, "count")
    parents = (
        table.drop_duplicates("population").set_index("population")["parent"].to_dict()
        if len(table)
        else {}
    )
    out: dict[str, pd.DataFrame] = {}
    for visit, wide in values.items():
        cnt = counts[visit].reindex(index=wide.index, columns=wide.columns)
        cols: dict[str, pd.Series] = {}
        for pop in wide.columns:
            # a population two tubes share is a column per tube: ``T [tcell]``
            parent = parents.get(pop, parents.get(str(pop).rsplit(" [", 1)[0]))
            cols[f"{pop} ({value_label(value, parent)})"] = wide[pop].round(digits)
            cols[f"{pop} (events)"] = cnt[pop].astype("Int64")
        lab = pd.DataFrame(cols, index=wide.index)
        lab.index.name = "patient"
        out[visit] = lab
    return out


# --- writing ------------------------------------------------------------------------


def safe_name(text: str) -> str:
    """A visit label as a file-name fragment (letters, digits, ``-``, ``_``, ``.``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text)).strip("._")
    return s or UNASSIGNED_VISIT


def write_csv(df: pd.DataFrame, path: str | os.PathLike, index: bool = False) -> Path:
    """Write a DataFrame as CSV atomically, text cells escaped against spreadsheet formulas
    (`immunoprofile._files.spreadsheet_safe`)."""
    safe = spreadsheet_safe(df)
    return atomic_write(path, lambda p: safe.to_csv(p, index=index))


def write_parquet(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a DataFrame as Parquet (pyarrow) atomically."""
    return atomic_write(path, lambda p: df.to_parquet(p, index=False, engine="pyarrow"))


def _sheet_name(visit: str, used: set[str]) -> str:
    base = re.sub(r"[\[\]:*?/\\]", "_", visit)[:31] or UNASSIGNED_VISIT
    name, k = base, 1
    while name.lower() in used:
        k += 1
        suffix = f"~{k}"
        name = base[: 31 - len(suffix)] + suffix
    used.add(name.lower())
    return name


def _text_not_formulas(sheet: Any) -> None:
    """Store every cell openpyxl took for a formula (text starting with ``=``) as text: a
    patient or visit label is data, never something Excel should run."""
    for row in sheet.iter_rows():
        for cell in row:
            if cell.data_type == "f":
                cell.data_type = "s"


METADATA_SHEET = "metadata"


def write_xlsx(
    wide: Mapping[str, pd.DataFrame],
    path: str | os.PathLike,
    meta: Mapping[str, object] | None = None,
    files: pd.DataFrame | None = None,
) -> Path:
    """Write per-visit wide tables to one workbook, one sheet per visit (openpyxl), and a
    ``metadata`` sheet: ``meta`` as item/value rows (template, software version, date,
    what the values are), then ``files`` (one row per FCS file) below them. Text that
    looks like a formula stays text."""

    def _write(p: Path) -> None:
        used: set[str] = {METADATA_SHEET}
        with pd.ExcelWriter(p, engine="openpyxl") as xw:
            if not wide:
                pd.DataFrame().to_excel(xw, sheet_name="empty")
            for visit, df in wide.items():
                name = _sheet_name(visit, used)
                df.to_excel(xw, sheet_name=name)
                _text_not_formulas(xw.sheets[name])
            if meta or files is not None:
                items = pd.DataFrame(
                    [(str(k), "" if v is None else str(v)) for k, v in (meta or {}).items()],
                    columns=["item", "value"],
                )
                items.to_excel(xw, sheet_name=METADATA_SHEET, index=False)
                if files is not None and len(files):
                    files.to_excel(
                        xw, sheet_name=METADATA_SHEET, index=False, startrow=len(items) + 2
                    )
                _text_not_formulas(xw.sheets[METADATA_SHEET])

    return atomic_write(path, _write)


def table_metadata(
    template: str, value: str, files: pd.DataFrame | None = None
) -> dict[str, object]:
    """What a lab sheet needs to be read on its own: template, software version, date
    written, what the numbers are, and how many files."""
    import datetime as _dt

    return {
        "template": template,
        "immunoprofile version": __version__,
        "written (UTC)": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "values": f"{value} (header: population (unit and parent)); population (events) "
        "beside each; rounded to 2 decimals",
        "files": 0 if files is None else len(files),
    }


#: per-visit wide tables written beside ``populations.csv`` (a glob over their names)
VISIT_FILES = "populations_*.csv"


def visit_file_name(visit: str) -> str:
    """File name of a visit's wide table: ``populations_<visit>.csv``."""
    return f"populations_{safe_name(visit)}.csv"


def visit_file_names(visits: Iterable[str]) -> dict[str, str]:
    """A distinct ``populations_<visit>.csv`` per visit label.

    Labels that differ only in characters a file name cannot carry, or in case (``week 24``,
    ``week_24``, ``Week_24``: one file on a case-insensitive disk), would share a name and
    one table would overwrite the other; each of those gets a suffix made from its own
    label (the first 8 hex digits of its SHA-1), so names stay the same from run to run.
    """
    import hashlib

    labels = list(dict.fromkeys(str(v) for v in visits))
    plain = {v: visit_file_name(v) for v in labels}
    seen: dict[str, int] = {}
    for name in plain.values():
        seen[name.lower()] = seen.get(name.lower(), 0) + 1
    out = {}
    for v, name in plain.items():
        if seen[name.lower()] > 1:
            tag = hashlib.sha1(v.encode("utf-8")).hexdigest()[:8]
            name = f"{name[: -len('.csv')]}-{tag}.csv"
        out[v] = name
    return out


def write_population_files(
    table: pd.DataFrame,
    wide: Mapping[str, pd.DataFrame],
    out_dir: str | os.PathLike,
    meta: Mapping[str, object] | None = None,
    files: pd.DataFrame | None = None,
) -> list[Path]:
    """Write ``populations.csv`` and ``populations.parquet`` (the tidy ``table``), one
    ``populations_<visit>.csv`` per wide table (`lab_tables`) and ``populations.xlsx`` (a
    sheet per visit and a ``metadata`` sheet from ``meta`` and ``files``) into
    ``out_dir``; returns the paths written, in that order.

    No manifest: the callers (`write_population_tables`, `GateResults.write`) run this
    inside `immunoprofile._files.write_owned`, planning `visit_file_name` of each visit.
    """
    out_dir = Path(out_dir)
    written = [
        write_csv(table, out_dir / "populations.csv"),
        write_parquet(table, out_dir / "populations.parquet"),
    ]
    names = visit_file_names(wide)
    for visit, df in wide.items():
        written.append(write_csv(df, out_dir / names[visit], index=True))
    written.append(write_xlsx(wide, out_dir / "populations.xlsx", meta, files))
    return written


def write_population_tables(
    table: pd.DataFrame, out_dir: str | os.PathLike, value: str = "percent_of_parent"
) -> list[Path]:
    """Write ``populations.csv``, ``populations.parquet``, ``populations_<visit>.csv`` (one
    lab table per visit, `lab_tables`) and ``populations.xlsx`` (a sheet per visit and a
    metadata sheet) into ``out_dir``.

    ``outputs.json`` records what was written; a ``populations_<visit>.csv`` that an
    earlier write recorded there and this one does not produce is removed afterwards
    (see `immunoprofile._files.write_owned`)."""
    out_dir = Path(out_dir)
    wide = lab_tables(table, value) if len(table) else {}
    meta = table_metadata("", value)
    meta.pop("template")
    out_dir.mkdir(parents=True, exist_ok=True)
    written, _ = write_owned(
        out_dir,
        list(visit_file_names(wide).values()),
        lambda: write_population_files(table, wide, out_dir, meta),
        writer="immunoprofile gate",
        stale=VISIT_FILES,
    )
    return written


__all__ = [
    "VISIT_FILES",
    "LYMPHOCYTES",
    "ROOT",
    "TABLE_COLUMNS",
    "atomic_write",
    "concat_tables",
    "lab_tables",
    "per_visit",
    "population_table",
    "safe_name",
    "table_metadata",
    "visit_file_name",
    "visit_file_names",
    "write_csv",
    "write_parquet",
    "write_population_files",
    "write_population_tables",
    "write_xlsx",
    "value_label",
]
