"""Which file is which patient and visit.

The identity of a file (patient, visit, and optionally tube and absolute lymphocyte count)
comes from, in order of precedence:

1. a samplesheet CSV with columns ``file,patient,visit[,tube][,lymphocytes_per_ul]``;
2. a filename regular expression with named groups ``patient`` and ``visit`` (and
   optionally ``tube``), matched against the file name;
3. FCS TEXT keywords (by default ``PATIENT_ID``/``PATIENT``/``SUBJECT_ID``/``SUBJECT`` for
   the patient and ``VISIT``/``VISIT_ID``/``TIMEPOINT`` for the visit).

A file that none of these identifies is still gated: it is named by its file stem and its
patient and visit stay empty. A contradiction inside a samplesheet (one file listed twice
with different identities) raises `IdentityError`: the samplesheet itself is wrong. Two
files claiming the same patient, visit and tube (a copied file, or identical keywords) is
an *identity clash*: `find_clashes` lists them, `check_unique` raises
`IdentityClashError` naming the files, and `resolve_identities(..., clashes="keep")`
returns the identities so that a batch can gate every file and keep the clashing ones out
of the per-visit tables instead of stopping (a silently dropped or merged file would
corrupt those tables).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from immunoprofile.exceptions import IdentityClashError, IdentityError
from immunoprofile.io.fcs import read_fcs_header

DEFAULT_PATIENT_KEYWORDS: tuple[str, ...] = ("PATIENT_ID", "PATIENT", "SUBJECT_ID", "SUBJECT")
DEFAULT_VISIT_KEYWORDS: tuple[str, ...] = ("VISIT", "VISIT_ID", "TIMEPOINT", "TIME_POINT")
DEFAULT_TUBE_KEYWORDS: tuple[str, ...] = ("TUBE", "TUBE_NAME", "TUBE NAME")

SAMPLESHEET_REQUIRED = ("file", "patient", "visit")
SAMPLESHEET_OPTIONAL = ("tube", "lymphocytes_per_ul", "template")


@dataclass(frozen=True)
class Identity:
    """Who and when one file is.

    Attributes
    ----------
    file : the file as given by the caller (path string, or the sample name for in-memory
        samples).
    sample : a short unique name for the file (its stem, made unique if stems collide).
    patient, visit, tube : identity fields; empty strings when unknown.
    lymphocytes_per_ul : absolute lymphocyte count of the blood sample, if known.
    source : where the identity came from: ``samplesheet``, ``pattern``, ``keywords`` or
        ``none``.
    template : the gating template the samplesheet's ``template`` column names for this
        file (empty when none: the tube's template, or the one template of the run).
    """

    file: str
    sample: str
    patient: str = ""
    visit: str = ""
    tube: str = ""
    lymphocytes_per_ul: float | None = None
    source: str = "none"
    template: str = ""

    @property
    def known(self) -> bool:
        """True when both patient and visit are known."""
        return bool(self.patient) and bool(self.visit)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class IdentityClash:
    """Several files that claim one identity (patient, visit and tube).

    Attributes
    ----------
    patient, visit, tube : the identity claimed (``tube`` empty when none).
    files : the files claiming it, in input order.
    samples : their sample names, in the same order.
    sources : where each file's identity came from (``samplesheet``, ``pattern``,
        ``keywords``).
    """

    patient: str
    visit: str
    tube: str
    files: tuple[str, ...]
    samples: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def identity(self) -> str:
        """``patient 'P01' visit 'week24'`` (with ``tube '2'`` when there is one)."""
        text = f"patient {self.patient!r} visit {self.visit!r}"
        return text + (f" tube {self.tube!r}" if self.tube else "")

    def others(self, file: str) -> list[str]:
        """The other files claiming the same identity as ``file``."""
        return [f for f in self.files if f != file]

    def describe(self) -> str:
        """One line: the identity, the files and where their identity came from."""
        how = sorted(set(self.sources))
        return (
            f"{self.identity} claimed by {len(self.files)} files {list(self.files)} "
            f"(identity from {', '.join(how)})"
        )


def _clean(value: object) -> str:
    """A samplesheet or keyword value as a stripped string ('' for missing)."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value).strip()


#: the largest samplesheet read (a study lists thousands of files, not millions)
MAX_SAMPLESHEET_BYTES = 64 * 2**20


def _read_sheet_rows(path: Path) -> pd.DataFrame:
    """The cells of a samplesheet CSV as text, one column per header field.

    Read with the csv module rather than guessed at: a row with more fields than the header
    would otherwise shift every column by one (pandas takes the first as an index), so
    identities silently came from elsewhere. Trailing empty fields (a comma at the end of
    each line, as spreadsheet exports write) are dropped; any other surplus is an error
    naming the line.
    """
    import csv

    try:
        if not path.is_file():
            raise IdentityError(
                f"samplesheet {path} does not exist"
                if not path.exists()
                else f"samplesheet {path} is not a regular file"
            )
        if path.stat().st_size > MAX_SAMPLESHEET_BYTES:
            raise IdentityError(
                f"samplesheet {path} is {path.stat().st_size} bytes, more than a samplesheet "
                f"can be ({MAX_SAMPLESHEET_BYTES})"
            )
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IdentityError(f"samplesheet {path} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise IdentityError(f"samplesheet {path} cannot be read: {exc.strerror or exc}") from None
    if "\x00" in text:
        raise IdentityError(f"samplesheet {path} holds NUL bytes: not a CSV text file")
    try:
        rows = list(csv.reader(text.splitlines(), skipinitialspace=True, strict=True))
    except csv.Error as exc:
        raise IdentityError(f"samplesheet {path} cannot be read as CSV: {exc}") from None
    numbered = [(i, r) for i, r in enumerate(rows, start=1) if any(c.strip() for c in r)]
    if not numbered:
        raise IdentityError(f"samplesheet {path} is empty (expected a header line)")
    (_, header), body = numbered[0], numbered[1:]
    while header and not header[-1].strip():
        header = header[:-1]  # a header ending in a comma
    width = len(header)
    cells = []
    for line, r in body:
        extra = r[width:]
        if any(c.strip() for c in extra):
            raise IdentityError(
                f"samplesheet {path}, line {line}: {len(r)} fields but the header has {width} "
                f"({', '.join(header)}); surplus {extra!r}"
            )
        cells.append((r[:width] + [""] * width)[:width])
    names = [h.strip() for h in header]
    dupes = sorted({n.lower() for n in names if [m.lower() for m in names].count(n.lower()) > 1})
    if dupes:
        raise IdentityError(f"samplesheet {path}: column(s) {dupes} appear more than once")
    out = pd.DataFrame(cells, columns=names, dtype=object)
    out.attrs["lines"] = [line for line, _ in body]
    return out


def read_samplesheet(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a samplesheet CSV.

    Returns a DataFrame with columns ``file, patient, visit, tube, template,
    lymphocytes_per_ul, control, row`` (``row`` is the 1-based line in the CSV, header
    being line 1, for messages; ``template`` names the gating template of that file,
    optional; ``control``, optional, its fluorescence-minus-one controls as
    ``MARKER=FILE[; MARKER=FILE]``, parsed to a dict, see `parse_controls`).

    Raises
    ------
    IdentityError
        The file is missing or unreadable, a required column is absent, a row lacks a
        file name, a lymphocyte count is not a non-negative number, or one file is listed
        twice with different identities.
    """
    path = Path(path)
    raw = _read_sheet_rows(path)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    missing = [c for c in SAMPLESHEET_REQUIRED if c not in raw.columns]
    if missing:
        raise IdentityError(
            f"samplesheet {path}: missing column(s) {missing}; it has {list(raw.columns)} "
            f"(expected file,patient,visit[,tube][,lymphocytes_per_ul])"
        )
    sheet = pd.DataFrame(
        {
            "file": raw["file"].map(_clean),
            "patient": raw["patient"].map(_clean),
            "visit": raw["visit"].map(_clean),
            "tube": raw["tube"].map(_clean) if "tube" in raw.columns else "",
            "template": raw["template"].map(_clean) if "template" in raw.columns else "",
            "row": raw.attrs["lines"],
        }
    )
    controls = raw["control"].map(_clean) if "control" in raw.columns else [""] * len(raw)
    sheet["control"] = pd.Series(
        [parse_controls(c, path, i + 2) for i, c in enumerate(controls)], dtype=object
    )
    counts: list[float | None] = []
    col = raw["lymphocytes_per_ul"] if "lymphocytes_per_ul" in raw.columns else None
    for i in range(len(raw)):
        text = _clean(col.iloc[i]) if col is not None else ""
        if not text:
            counts.append(None)
            continue
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        if not math.isfinite(v) or v < 0:
            raise IdentityError(
                f"samplesheet {path}, line {raw.attrs['lines'][i]}: lymphocytes_per_ul {text!r} is not a "
                f"non-negative number"
            )
        counts.append(v)
    sheet["lymphocytes_per_ul"] = pd.Series(counts, dtype=object)
    empty = sheet.index[sheet["file"] == ""]
    if len(empty):
        raise IdentityError(
            f"samplesheet {path}: line(s) {[int(sheet.at[i, 'row']) for i in empty]} have no file"
        )
    # one file listed twice: fine if identical, an error if contradictory
    for file, rows in sheet.groupby("file", sort=False):
        if len(rows) > 1:
            ids = rows[["patient", "visit", "tube"]].drop_duplicates()
            lym = {str(x) for x in rows["lymphocytes_per_ul"]}
            if len(ids) > 1 or len(lym) > 1:
                raise IdentityError(
                    f"samplesheet {path}: file {file!r} is listed on lines "
                    f"{list(rows['row'])} with contradictory identities "
                    + "; ".join(
                        f"patient={r.patient!r} visit={r.visit!r} tube={r.tube!r}"
                        for r in rows.itertuples()
                    )
                )
    sheet = sheet.drop_duplicates("file").reset_index(drop=True)
    sheet.attrs["path"] = str(path)
    return sheet


def parse_controls(text: str, sheet_path: str | os.PathLike, line: int) -> dict[str, str]:
    """A samplesheet ``control`` cell: ``MARKER=FILE`` pairs separated by ``;`` naming each
    marker's fluorescence-minus-one control file for that row's tube (relative paths are
    relative to the samplesheet's folder). Empty: no controls."""
    out: dict[str, str] = {}
    base = Path(sheet_path).parent
    for part in filter(None, (p.strip() for p in str(text).split(";"))):
        marker, eq, file = (x.strip() for x in part.partition("="))
        if not eq or not marker or not file:
            raise IdentityError(
                f"samplesheet {sheet_path}, line {line}: control {part!r} is not MARKER=FILE "
                "(e.g. IgD=fmo_IgD.fcs; several separated by ';')"
            )
        if marker in out:
            raise IdentityError(
                f"samplesheet {sheet_path}, line {line}: control names {marker} twice"
            )
        path = Path(file)
        out[marker] = str(path if path.is_absolute() else base / path)
    return out


def controls_per_file(sheet: pd.DataFrame | None, files: Sequence[str]) -> list[dict[str, str]]:
    """Each file's FMO controls (marker -> file) from the samplesheet row that names it."""
    if sheet is None or "control" not in sheet.columns:
        return [{} for _ in files]
    by_path, by_name = _sheet_lookup(sheet)
    out = []
    for f in files:
        row = by_path.get(os.path.normpath(os.path.abspath(f)))
        if row is None:
            hits = by_name.get(Path(f).name, [])
            row = hits[0] if len(hits) == 1 else None
        ctl = sheet.iloc[row]["control"] if row is not None else None
        out.append(dict(ctl) if isinstance(ctl, dict) else {})
    return out


def compile_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """Compile a filename pattern and check it has ``patient`` and ``visit`` groups."""
    try:
        rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    except re.error as exc:
        raise IdentityError(f"filename pattern {pattern!r} is not a valid regex: {exc}") from None
    groups = set(rx.groupindex)
    if not {"patient", "visit"} <= groups:
        raise IdentityError(
            f"filename pattern {rx.pattern!r} needs named groups (?P<patient>...) and "
            f"(?P<visit>...); it has {sorted(groups) or 'none'}"
        )
    return rx


def identity_from_pattern(file: str, pattern: re.Pattern[str]) -> dict[str, str] | None:
    """Patient/visit/tube from a file name, or None when the pattern does not match.

    The pattern is searched in the file's base name first, then in the whole path (so a
    pattern may also use folder names).
    """
    name = Path(file).name
    m = pattern.search(name) or pattern.search(str(file))
    if m is None:
        return None
    out = {k: _clean(m.group(k)) for k in ("patient", "visit")}
    out["tube"] = _clean(m.group("tube")) if "tube" in pattern.groupindex else ""
    if not out["patient"] or not out["visit"]:
        return None
    return out


def _as_keys(keys: str | Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    if keys is None:
        return default
    if isinstance(keys, str):
        return (keys.upper(),)
    return tuple(k.upper() for k in keys)


def identity_from_keywords(
    keywords: Mapping[str, str],
    patient_keyword: str | Sequence[str] | None = None,
    visit_keyword: str | Sequence[str] | None = None,
    tube_keyword: str | Sequence[str] | None = None,
) -> dict[str, str] | None:
    """Patient/visit/tube from FCS TEXT keywords, or None when patient or visit is absent.

    Keyword names are matched case-insensitively; the first non-empty one of each list wins.
    """
    upper = {str(k).upper(): v for k, v in keywords.items()}

    def first(keys: tuple[str, ...]) -> str:
        for k in keys:
            v = _clean(upper.get(k))
            if v:
                return v
        return ""

    patient = first(_as_keys(patient_keyword, DEFAULT_PATIENT_KEYWORDS))
    visit = first(_as_keys(visit_keyword, DEFAULT_VISIT_KEYWORDS))
    if not patient or not visit:
        return None
    return {
        "patient": patient,
        "visit": visit,
        "tube": first(_as_keys(tube_keyword, DEFAULT_TUBE_KEYWORDS)),
    }


def sample_names(files: Sequence[str]) -> list[str]:
    """Short unique names: the file stem, or ``folder/stem`` where stems collide."""
    stems = [Path(f).stem if Path(f).suffix else Path(f).name for f in files]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    names = []
    for f, s in zip(files, stems):
        if seen[s] > 1:
            parent = Path(f).parent.name
            s = f"{parent}/{s}" if parent else s
        names.append(s)
    # still colliding (same folder name and stem): number them in input order
    return make_unique(names)


def make_unique(names: Sequence[str]) -> list[str]:
    """Names with repeats numbered in input order (``a#1``, ``a#2``), others unchanged:
    every sample keeps its own rows in the population table."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    used: dict[str, int] = {}
    out = []
    for n in names:
        if counts[n] == 1:
            out.append(n)
            continue
        used[n] = used.get(n, 0) + 1
        out.append(f"{n}#{used[n]}")
    return out


def _sheet_lookup(sheet: pd.DataFrame) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Index samplesheet rows by resolved path and by base name."""
    base = Path(sheet.attrs.get("path", ".")).parent
    by_path: dict[str, int] = {}
    by_name: dict[str, list[int]] = {}
    for i, f in enumerate(sheet["file"]):
        p = Path(f)
        full = p if p.is_absolute() else base / p
        by_path[os.path.normpath(os.path.abspath(full))] = i
        by_name.setdefault(p.name, []).append(i)
    return by_path, by_name


def resolve_identities(
    files: Sequence[str],
    samplesheet: str | os.PathLike | pd.DataFrame | None = None,
    pattern: str | re.Pattern[str] | None = None,
    keywords: Sequence[Mapping[str, str] | None] | None = None,
    patient_keyword: str | Sequence[str] | None = None,
    visit_keyword: str | Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    clashes: str = "raise",
) -> list[Identity]:
    """The identity of each file, by samplesheet, then filename pattern, then keywords.

    Parameters
    ----------
    files : the files (paths as given; in-memory samples pass their name).
    samplesheet : a CSV path or a DataFrame from `read_samplesheet`. Rows name files by
        path (relative to the samplesheet's folder) or by base name.
    pattern : a regex with named groups ``patient`` and ``visit`` (``tube`` optional).
    keywords : per file, its FCS TEXT keywords (None where unknown).
    patient_keyword, visit_keyword : keyword name(s) to look for, overriding the defaults.
    names : sample names to use instead of the ones derived from ``files``.
    clashes : ``"raise"`` (default): two files with the same patient, visit and tube
        raise `IdentityClashError`; ``"keep"``: they are returned as they are, for the
        caller to find with `find_clashes` and report.

    Returns
    -------
    One `Identity` per file, in input order.

    Raises
    ------
    IdentityError
        A bad samplesheet or pattern, or a base name listed ambiguously in the samplesheet.
    IdentityClashError
        Two files with the same patient, visit and tube (the message names both files),
        unless ``clashes="keep"``.
    """
    if clashes not in ("raise", "keep"):
        raise ValueError(f"clashes must be 'raise' or 'keep', got {clashes!r}")
    files = [str(f) for f in files]
    if keywords is not None and len(keywords) != len(files):
        raise IdentityError(f"got keywords for {len(keywords)} files but {len(files)} files")
    sheet = None
    if samplesheet is not None:
        sheet = (
            samplesheet if isinstance(samplesheet, pd.DataFrame) else read_samplesheet(samplesheet)
        )
    rx = compile_pattern(pattern) if pattern is not None else None
    names = list(names) if names is not None else sample_names(files)
    by_path, by_name = _sheet_lookup(sheet) if sheet is not None else ({}, {})

    out: list[Identity] = []
    for i, f in enumerate(files):
        row = None
        if sheet is not None:
            row = by_path.get(os.path.normpath(os.path.abspath(f)))
            if row is None:
                hits = by_name.get(Path(f).name, [])
                if len(hits) > 1:
                    lines = [int(sheet.at[h, "row"]) for h in hits]
                    raise IdentityError(
                        f"samplesheet {sheet.attrs.get('path', '')}: {Path(f).name!r} matches "
                        f"lines {lines}; give the file's path to tell them apart ({f})"
                    )
                row = hits[0] if hits else None
        if row is not None:
            r = sheet.iloc[row]
            lym = r["lymphocytes_per_ul"]
            out.append(
                Identity(
                    f,
                    names[i],
                    r["patient"],
                    r["visit"],
                    r["tube"],
                    None if lym is None else float(lym),
                    "samplesheet",
                    str(r["template"]) if "template" in sheet.columns else "",
                )  # fmt: skip
            )
            continue
        found = identity_from_pattern(f, rx) if rx is not None else None
        if found is not None:
            out.append(Identity(f, names[i], source="pattern", **found))
            continue
        kw = keywords[i] if keywords is not None else None
        found = (
            identity_from_keywords(kw, patient_keyword, visit_keyword) if kw is not None else None
        )
        if found is not None:
            out.append(Identity(f, names[i], source="keywords", **found))
            continue
        out.append(Identity(f, names[i]))
    if clashes == "raise":
        check_unique(out)
    return out


def find_clashes(identities: Sequence[Identity]) -> list[IdentityClash]:
    """Groups of files that claim the same patient, visit and tube, in input order.

    Files without a known patient and visit never clash (they are named by sample).
    """
    seen: dict[tuple[str, str, str], list[Identity]] = {}
    for ident in identities:
        if ident.known:
            seen.setdefault((ident.patient, ident.visit, ident.tube), []).append(ident)
    return [
        IdentityClash(
            p,
            v,
            t,
            tuple(i.file for i in group),
            tuple(i.sample for i in group),
            tuple(i.source for i in group),
        )  # fmt: skip
        for (p, v, t), group in seen.items()
        if len(group) > 1
    ]


def clash_of(sample: str, clashes: Sequence[IdentityClash]) -> IdentityClash | None:
    """The clash that names ``sample`` among its files, or None."""
    return next((c for c in clashes if sample in c.samples), None)


def clashing_samples(identities: Sequence[Identity], clashes: Sequence[IdentityClash]) -> list[str]:
    """Samples whose identity another file also claims, in the order of ``identities``."""
    names = {n for c in clashes for n in c.samples}
    return [i.sample for i in identities if i.sample in names]


#: ``error_type`` of the errors row of a file whose identity another file also claims
CLASH_ERROR = IdentityClashError.__name__
#: population-table column flagging those files (gating and clustering alike)
CLASH_COLUMN = "identity_clash"

CLASH_ADVICE = (
    "give each file its own identity (fix the samplesheet, the file names or the FCS "
    "keywords; add a 'tube' column to the samplesheet if they are different tubes of one "
    "visit)"
)


def clash_summary(clashes: Sequence[IdentityClash]) -> str:
    """One line for a terminal: ``2 files share an identity: patient 'P01' visit 'week24'
    (a.fcs, b.fcs)``; several clashes are separated by ``;``."""
    n = sum(len(c.files) for c in clashes)
    parts = [f"{c.identity} ({', '.join(c.files)})" for c in clashes]
    verb = "share an identity" if len(clashes) == 1 else "share identities"
    return f"{n} files {verb}: " + "; ".join(parts)


def check_unique(identities: Sequence[Identity]) -> None:
    """Raise `IdentityClashError` if two files claim the same patient, visit and tube."""
    found = find_clashes(identities)
    if found:
        parts = [f"{c.identity}: {list(c.files)}" for c in found]
        raise IdentityClashError(
            "several files claim the same identity (add a 'tube' column to the samplesheet "
            "if they are different tubes): " + "; ".join(parts)
        )


def header_keywords(files: Sequence[object]) -> list[dict[str, str] | None]:
    """The TEXT keywords of each FCS path, read from HEADER and TEXT only (no events).

    Cheap enough to learn every file's keyword identity before gating. Entries that are not
    paths (in-memory samples) and files whose HEADER or TEXT cannot be read are None: the
    gating itself reports those files' errors.
    """

    out: list[dict[str, str] | None] = []
    for f in files:
        if not isinstance(f, str | os.PathLike):
            out.append(None)
            continue
        try:
            out.append(dict(read_fcs_header(f).keywords))
        except Exception:  # noqa: BLE001 - a look-ahead only; gating reports the file's fault
            out.append(None)
    return out


def identity_table(identities: Sequence[Identity]) -> pd.DataFrame:
    """Identities as a DataFrame (one row per file), for reports and outputs."""
    cols = ["file", "sample", "patient", "visit", "tube", "lymphocytes_per_ul", "source"]
    return pd.DataFrame([i.to_dict() for i in identities], columns=cols)


__all__ = [
    "DEFAULT_PATIENT_KEYWORDS",
    "DEFAULT_VISIT_KEYWORDS",
    "CLASH_ADVICE",
    "CLASH_COLUMN",
    "CLASH_ERROR",
    "Identity",
    "IdentityClash",
    "check_unique",
    "clash_of",
    "clash_summary",
    "clashing_samples",
    "compile_pattern",
    "find_clashes",
    "header_keywords",
    "identity_from_keywords",
    "identity_from_pattern",
    "identity_table",
    "make_unique",
    "read_samplesheet",
    "resolve_identities",
    "sample_names",
]
