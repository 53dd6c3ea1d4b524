"""Per-patient change from baseline and cohort statistics from a population table.

`compare` takes the tidy population table that gating or clustering produce (one row
per sample × population, with ``patient`` and ``visit``) and answers the trial's
question: for each patient, how did each population change from baseline to each
follow-up visit, and is the change consistent across patients?

* ``Comparison.changes``: one row per patient × population × measure × follow-up visit
  with the baseline and follow-up values, the difference (percentage points for
  percentages, cells/µL for absolute counts), the fold change and the log2 ratio. A
  patient who missed a visit keeps a row with missing values and a ``status`` that says
  why; nothing is dropped silently.
* ``Comparison.stats``: one row per population × measure × follow-up visit with the
  number of complete pairs, medians at both visits, the median change, the
  Hodges–Lehmann estimate with its exact confidence interval, an exact two-sided
  signed-rank p-value (the ``test`` column says whether the exact Wilcoxon or the
  exact sign-flip permutation test was used), a paired t test on log2 ratios as a
  secondary, and Benjamini–Hochberg q-values across populations (within each
  measure × follow-up visit × method).
* ``Comparison.problems``: rows without a patient or visit (named by sample, never
  guessed), rows of files whose identity another file also claims (``identity_clash``
  True in the table from `immunoprofile.gate`: left out), patients without a baseline,
  missed follow-up visits, duplicated measurements (averaged), and values where a ratio
  is undefined.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile import stats as _stats
from immunoprofile._deprecate import moved_names
from immunoprofile._files import (
    atomic_write_text,
    begin_write,
    end_write,
    refuse_incomplete,
    spreadsheet_safe,
    unescape_cell,
)
from immunoprofile._json import read_json_object
from immunoprofile.cohort import CLASH_COLUMN
from immunoprofile.exceptions import ComparisonError
from immunoprofile.folder import COMPARISON, WRITERS
from immunoprofile.quantify import tube_labels

MEASURES = ("percent_of_parent", "percent_of_lymphocytes", "cells_per_ul")
MEASURE_UNITS = {
    "percent_of_parent": "percentage points",
    "percent_of_lymphocytes": "percentage points",
    "cells_per_ul": "cells/µL",
}
CANONICAL_ORDER = (
    "lymphocytes singlets live T CD4 CD8 Treg Treg_FOXP3 Treg_naive Treg_memory CD4_memory "
    "Th1 Th2 Th17 nonT B B_naive B_memory B_transitional plasmablasts NK NK_CD56bright "
    "NK_CD56dim"
).split()
ENDPOINTS = ("Treg", "Th17", "B", "NK")

CHANGE_COLUMNS = [
    "patient",
    "population",
    "parent",
    "measure",
    "baseline_visit",
    "followup_visit",
    "baseline",
    "followup",
    "difference",
    "fold_change",
    "log2_ratio",
    "status",
]
STAT_COLUMNS = [
    "population",
    "parent",
    "measure",
    "followup_visit",
    "n_patients",
    "n_pairs",
    "median_baseline",
    "median_followup",
    "median_change",
    "hl_estimate",
    "hl_ci_low",
    "hl_ci_high",
    "ci_level",
    "direction",
    "test",
    "statistic",
    "n_zero",
    "p_value",
    "q_value",
    "n_log_pairs",
    "mean_log2_ratio",
    "geo_mean_fold_change",
    "log2_ci_low",
    "log2_ci_high",
    "t_p_value",
]
PROBLEM_COLUMNS = ["kind", "patient", "visit", "sample", "population", "message"]


def visit_sort_key(visit: str, baseline: str = "baseline") -> tuple:
    """Order visits as a person would: the baseline first, then by the first number in
    the name (``week4`` before ``week24`` before ``week48``), then alphabetically."""
    v = str(visit)
    if v == baseline:
        return (0, 0.0, v)
    m = re.search(r"\d+(\.\d+)?", v)
    return (1, float(m.group()) if m else np.inf, v)


def _natural_key(text: str) -> tuple:
    parts = re.split(r"(\d+)", str(text))
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts if p != "")


def population_order(names: Sequence[str]) -> list[str]:
    """Canonical populations in hierarchy order first, any others after in given order."""
    seen = list(dict.fromkeys(str(n) for n in names))
    canon = [p for p in CANONICAL_ORDER if p in seen]
    return canon + [p for p in seen if p not in CANONICAL_ORDER]


@dataclass
class Comparison:
    """Result of `compare`: change table, cohort statistics and problems found.

    Attributes
    ----------
    changes : per patient × population × measure × follow-up visit (see module doc).
    stats : per population × measure × follow-up visit.
    problems : one row per problem found (``kind``, ``patient``, ``visit``, ``sample``,
        ``population``, ``message``); empty when the table was complete.
    baseline : name of the baseline visit.
    followup : follow-up visits compared, in visit order.
    measures : measures compared (columns of the population table).
    conf : confidence level requested for the Hodges–Lehmann intervals.
    """

    changes: pd.DataFrame
    stats: pd.DataFrame
    problems: pd.DataFrame
    baseline: str
    followup: list[str]
    measures: list[str]
    conf: float = 0.95
    meta: dict = field(default_factory=dict)

    def endpoint_stats(
        self,
        populations: Sequence[str] = ENDPOINTS,
        measure: str | None = None,
        followup: str | None = None,
    ) -> pd.DataFrame:
        """Statistics rows for the named populations (default: the trial's four endpoints)."""
        s = self.stats
        s = s[s["population"].isin(list(populations))]
        if measure is not None:
            s = s[s["measure"] == measure]
        if followup is not None:
            s = s[s["followup_visit"] == followup]
        return s.reset_index(drop=True)

    def write(self, out_dir: str | PathLike) -> dict[str, Path]:
        """Write ``changes.csv``, ``stats.csv``, ``problems.csv`` and ``comparison.json``
        (atomically: each file appears complete or not at all); returns the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        begin_write(out, WRITERS["comparison"])
        # the names of the one definition of a results folder (`immunoprofile.folder`)
        paths = {k: out / COMPARISON[k] for k in ("changes", "stats", "problems", "comparison")}
        atomic_write_text(paths["changes"], spreadsheet_safe(self.changes).to_csv(index=False))
        atomic_write_text(paths["stats"], spreadsheet_safe(self.stats).to_csv(index=False))
        atomic_write_text(paths["problems"], spreadsheet_safe(self.problems).to_csv(index=False))
        info = {
            "baseline": self.baseline,
            "followup": list(self.followup),
            "measures": list(self.measures),
            "conf": self.conf,
            **self.meta,
        }
        atomic_write_text(paths["comparison"], json.dumps(info, indent=2, default=str))
        end_write(out)
        return paths

    @classmethod
    def read(cls, directory: str | PathLike) -> Comparison:
        """Read a comparison written by `write` back."""
        d = Path(directory)
        need = [d / "changes.csv", d / "stats.csv", d / "comparison.json"]
        missing = [str(p) for p in need if not p.is_file()]
        if missing:
            raise ComparisonError(f"{d}: not a comparison directory; missing {missing}")
        refuse_incomplete(d, "comparison results")
        info = _read_saved_json(d / "comparison.json")
        keep_str = {"patient": str, "followup_visit": str, "baseline_visit": str}
        changes = _read_saved_csv(d / "changes.csv", CHANGE_COLUMNS, dtype=keep_str)
        st = _read_saved_csv(d / "stats.csv", STAT_COLUMNS, dtype={"followup_visit": str})
        prob_path = d / "problems.csv"
        problems = (
            _read_saved_csv(prob_path, PROBLEM_COLUMNS, dtype=str)
            if prob_path.is_file() and prob_path.stat().st_size > 1
            else pd.DataFrame(columns=PROBLEM_COLUMNS)
        )
        for frame in (changes, st, problems):
            for c in ("patient", "population", "parent", "visit", "sample"):
                if c in frame.columns:
                    frame[c] = frame[c].map(unescape_cell)
        bad = [k for k in ("baseline", "followup", "measures") if k not in info]
        try:
            if bad:
                raise ValueError(f"missing {bad}")
            followup = [str(v) for v in info["followup"]]
            measures = [str(v) for v in info["measures"]]
            conf = float(info.get("conf", 0.95))
            if not isinstance(info["followup"], list) or not isinstance(info["measures"], list):
                raise ValueError("followup and measures must be lists")
        except (TypeError, ValueError) as exc:
            raise ComparisonError(
                f"{d / 'comparison.json'}: not a comparison written by immunoprofile ({exc})"
            ) from None
        meta = {
            k: v for k, v in info.items() if k not in {"baseline", "followup", "measures", "conf"}
        }
        return cls(changes, st, problems, str(info["baseline"]), followup, measures, conf, meta)

    def __repr__(self) -> str:
        pats = self.changes["patient"].nunique() if len(self.changes) else 0
        pops = self.changes["population"].nunique() if len(self.changes) else 0
        return (
            f"Comparison({self.baseline!r} -> {self.followup}, {pats} patients, "
            f"{pops} populations, measures={self.measures}, {len(self.problems)} problems)"
        )


def _read_saved_json(path: Path) -> dict[str, Any]:
    """A JSON object from a results folder, or `ComparisonError` naming the file."""
    return read_json_object(path, ComparisonError)


def _read_saved_csv(path: Path, columns: Sequence[str], **kw: Any) -> pd.DataFrame:
    """A CSV table from a results folder with the columns it must have, or
    `ComparisonError` naming the file and what is wrong."""
    try:
        df = pd.read_csv(path, **kw)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ParserError is a ValueError
        raise ComparisonError(f"{path}: cannot be read as CSV ({exc})") from None
    missing = [c for c in columns if c not in df.columns and c != "method"]
    if missing:
        raise ComparisonError(
            f"{path}: not a table written by immunoprofile compare: missing column(s) {missing}"
        )
    return df


def _read_table(table: pd.DataFrame | str | PathLike) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table.copy()
    if not isinstance(table, str | PathLike):
        raise TypeError(
            f"compare: expected a population table (DataFrame) or the path of one, got "
            f"{type(table).__name__}"
        )
    p = Path(table)
    if not p.is_file():
        raise ComparisonError(f"{p}: population table not found")
    refuse_incomplete(p, "population tables")
    try:
        if p.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(p)
        t = pd.read_csv(p, dtype={"patient": str, "visit": str, "sample": str})
        for c in ("sample", "patient", "visit", "tube", "population", "parent"):
            if c in t.columns:
                t[c] = t[c].map(unescape_cell)
        return t
    except (OSError, ValueError) as exc:
        raise ComparisonError(f"{p}: cannot read population table ({exc})") from exc


def _blank(s: pd.Series) -> pd.Series:
    """True where an identity field is missing (NaN, None or blank text)."""
    return s.isna() | (s.astype(str).str.strip().isin(["", "nan", "None", "<NA>"]))


def compare(
    table: pd.DataFrame | str | PathLike,
    baseline: str = "baseline",
    followup: str | Sequence[str] | None = "week24",
    value: str | Sequence[str] | None = None,
    populations: Sequence[str] | None = None,
    conf: float = 0.95,
) -> Comparison:
    """Compare each patient's follow-up visits with their baseline, population by population.

    Parameters
    ----------
    table : the tidy population table (DataFrame, or a CSV/Parquet path) with columns
        ``patient``, ``visit``, ``population`` and at least one measure
        (``percent_of_parent``, ``percent_of_lymphocytes``, ``cells_per_ul``); ``sample``,
        ``parent`` and ``method`` are used when present (rows of different ``method``,
        gating or clustering, are compared separately and never mixed).
    baseline : the baseline visit name.
    followup : one follow-up visit, a list of them, or None for every visit in the table
        other than the baseline (in visit order).
    value : measure(s) to compare; None means every one of `MEASURES` present in the table.
    populations : restrict to these populations (this also sets the family over which
        the Benjamini–Hochberg q-values are computed); None keeps all.
    conf : confidence level of the Hodges–Lehmann intervals.

    Returns
    -------
    Comparison

    Raises
    ------
    ComparisonError
        Required columns missing, no row with a patient and visit (the samples are named),
        the baseline or a follow-up visit absent from the table, or an unknown measure.
    """
    try:
        conf = float(conf)
    except (TypeError, ValueError):
        raise ComparisonError(f"conf must be a number between 0 and 1, got {conf!r}") from None
    if not 0.0 < conf < 1.0:
        raise ComparisonError(
            f"conf is the confidence level of the intervals, between 0 and 1 (e.g. 0.95); "
            f"got {conf}"
        )
    # a population measured in two tubes stays two populations (``lymphocytes [tcell]``)
    df = tube_labels(_read_table(table))
    where = "population table"
    need = {"patient", "visit", "population"}
    missing = sorted(need - set(df.columns))
    if missing:
        raise ComparisonError(
            f"{where}: missing column(s) {missing}; columns are {list(df.columns)}"
        )
    if value is None:
        measures = [m for m in MEASURES if m in df.columns and df[m].notna().any()]
        if not measures:
            raise ComparisonError(
                f"{where}: none of the measures {list(MEASURES)} is present; "
                f"columns are {list(df.columns)}"
            )
    else:
        measures = [value] if isinstance(value, str) else list(value)
        absent = [m for m in measures if m not in df.columns]
        if absent:
            raise ComparisonError(
                f"{where}: measure(s) {absent} not in the table; columns are {list(df.columns)}"
            )
    if "sample" not in df.columns:
        df["sample"] = [f"row {i}" for i in range(len(df))]
    has_method = "method" in df.columns
    if has_method:
        df["method"] = df["method"].fillna("gating").astype(str)
    problems: list[dict] = []

    # --- identity claimed by several files (gate's ``identity_clash``): ambiguous -------
    if CLASH_COLUMN in df.columns:
        clash = df[CLASH_COLUMN]
        if clash.dtype != bool:  # read back from CSV with blanks, or as text
            clash = clash.astype(str).str.strip().str.lower().isin(["true", "1", "yes"])
        if clash.any():
            for sample, rows in df[clash].groupby("sample", sort=False):
                p, v = str(rows["patient"].iloc[0]), str(rows["visit"].iloc[0])
                same = df[clash & (df["patient"].astype(str) == p) & (df["visit"].astype(str) == v)]
                others = [str(x) for x in same["sample"].unique() if x != sample]
                problems.append(
                    {
                        "kind": "identity_clash",
                        "patient": p,
                        "visit": v,
                        "sample": str(sample),
                        "population": "",
                        "message": f"sample {sample} claims patient {p} visit {v} like "
                        f"{', '.join(others) or 'another file'}: its {len(rows)} row(s) are "
                        "left out, since which file is that patient's visit is ambiguous "
                        "(see the gating errors.csv)",
                    }
                )
            df = df[~clash].copy()
        df = df.drop(columns=CLASH_COLUMN)

    # --- identity: never guessed ----------------------------------------------------
    no_id = _blank(df["patient"]) | _blank(df["visit"])
    if no_id.any():
        for sample, rows in df[no_id].groupby("sample", sort=False):
            lacks = [c for c in ("patient", "visit") if _blank(rows[c]).any()]
            problems.append(
                {
                    "kind": "no_identity",
                    "patient": "",
                    "visit": "",
                    "sample": str(sample),
                    "population": "",
                    "message": f"sample {sample} has no {' or '.join(lacks)}: "
                    f"{len(rows)} row(s) left out (give a samplesheet or filename pattern)",
                }
            )
        df = df[~no_id].copy()
        if df.empty:
            names = [p["sample"] for p in problems]
            raise ComparisonError(
                f"{where}: no row has both a patient and a visit; samples without identity: "
                f"{names}. Give a samplesheet (file,patient,visit) or a filename pattern."
            )
    df["patient"] = df["patient"].astype(str).str.strip()
    df["visit"] = df["visit"].astype(str).str.strip()
    df["population"] = df["population"].astype(str)
    df = _checked_measures(df, measures, problems, where)
    if populations is not None:
        wanted = [str(p) for p in populations]
        unknown = [p for p in wanted if p not in set(df["population"])]
        if unknown:
            raise ComparisonError(
                f"{where}: population(s) {unknown} not in the table; populations are "
                f"{population_order(df['population'])}"
            )
        df = df[df["population"].isin(wanted)].copy()

    visits = sorted(df["visit"].unique(), key=lambda v: visit_sort_key(v, baseline))
    if baseline not in visits:
        raise ComparisonError(
            f"{where}: baseline visit {baseline!r} not found; visits are {visits}"
        )
    if followup is None:
        fu = [v for v in visits if v != baseline]
    else:
        fu = [followup] if isinstance(followup, str) else [str(v) for v in followup]
        absent = [v for v in fu if v not in visits]
        if absent:
            raise ComparisonError(
                f"{where}: follow-up visit(s) {absent} not found; visits are {visits}"
            )
    if not fu:
        raise ComparisonError(f"{where}: no follow-up visit besides {baseline!r}")
    if baseline in fu:
        raise ComparisonError(f"{where}: the baseline {baseline!r} cannot also be a follow-up")
    fu = sorted(fu, key=lambda v: visit_sort_key(v, baseline))

    # --- duplicates: averaged, and said so ----------------------------------------------
    key = (["method"] if has_method else []) + ["patient", "visit", "population"]
    dup = df.duplicated(key, keep=False)
    if dup.any():
        for k, rows in df[dup].groupby(key, sort=False):
            kd = dict(zip(key, k if isinstance(k, tuple) else (k,)))
            problems.append(
                {
                    "kind": "duplicate",
                    "patient": kd["patient"],
                    "visit": kd["visit"],
                    "sample": ", ".join(map(str, rows["sample"].unique())),
                    "population": kd["population"],
                    "message": f"{len(rows)} rows for patient {kd['patient']} visit "
                    f"{kd['visit']} population {kd['population']}: their mean is used",
                }
            )
    parents = (
        df.dropna(subset=["parent"]).groupby("population")["parent"].first().astype(str).to_dict()
        if "parent" in df.columns
        else {}
    )
    agg = df.groupby(key, sort=False)[measures].mean().reset_index()

    patients = sorted(df["patient"].unique(), key=_natural_key)
    have = df.groupby("patient")["visit"].agg(set).to_dict()
    for p in patients:
        if baseline not in have[p]:
            problems.append(
                {
                    "kind": "no_baseline",
                    "patient": p,
                    "visit": baseline,
                    "sample": "",
                    "population": "",
                    "message": f"patient {p} has no {baseline} visit (visits: "
                    f"{sorted(have[p], key=lambda v: visit_sort_key(v, baseline))}); "
                    "their changes are missing",
                }
            )
        for v in fu:
            if v not in have[p]:
                problems.append(
                    {
                        "kind": "missing_followup",
                        "patient": p,
                        "visit": v,
                        "sample": "",
                        "population": "",
                        "message": f"patient {p} has no {v} visit; their {v} changes are missing",
                    }
                )

    methods = sorted(agg["method"].unique()) if has_method else [None]
    frames = []
    for method in methods:
        sub = agg[agg["method"] == method] if has_method else agg
        pops = population_order(sub["population"])
        for measure in measures:
            wide = sub.pivot_table(
                index=["population", "patient"], columns="visit", values=measure, dropna=False
            )
            full = pd.MultiIndex.from_product([pops, patients], names=["population", "patient"])
            wide = wide.reindex(full)
            base = (
                wide[baseline].to_numpy(float) if baseline in wide else np.full(len(full), np.nan)
            )
            for v in fu:
                fol = wide[v].to_numpy(float) if v in wide else np.full(len(full), np.nan)
                frames.append(_change_frame(full, base, fol, measure, baseline, v, parents, method))
    changes = pd.concat(frames, ignore_index=True)
    problems.extend(_ratio_problems(changes))
    problems.extend(_missing_pair_problems(changes, have))
    st = _cohort_stats(changes, has_method, conf)
    cols = (["method"] if has_method else []) + CHANGE_COLUMNS
    changes = changes[cols]
    prob = pd.DataFrame(problems, columns=PROBLEM_COLUMNS)
    return Comparison(changes, st, prob, baseline, fu, measures, conf)


def _change_frame(
    index: pd.MultiIndex,
    base: np.ndarray,
    fol: np.ndarray,
    measure: str,
    baseline: str,
    visit: str,
    parents: dict[str, str],
    method: str | None,
) -> pd.DataFrame:
    """Change rows for one measure and follow-up visit (vectorised over patients)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        diff = fol - base
        fold = np.where(base > 0, fol / base, np.nan)
        log2 = np.where((base > 0) & (fol > 0), np.log2(fol / base), np.nan)
    status = np.full(base.shape, "ok", dtype=object)
    nb, nf = np.isnan(base), np.isnan(fol)
    status[nb & ~nf] = "missing baseline"
    status[~nb & nf] = "missing follow-up"
    status[nb & nf] = "missing both"
    status[~nb & ~nf & ((base == 0) | (fol == 0))] = "zero value (no ratio)"
    pops = index.get_level_values("population")
    out = pd.DataFrame(
        {
            "patient": index.get_level_values("patient"),
            "population": pops,
            "parent": [parents.get(p, "") for p in pops],
            "measure": measure,
            "baseline_visit": baseline,
            "followup_visit": visit,
            "baseline": base,
            "followup": fol,
            "difference": diff,
            "fold_change": fold,
            "log2_ratio": log2,
            "status": status,
        }
    )
    if method is not None:
        out.insert(0, "method", method)
    return out


#: measures that are shares of a parent (0-100 %); every measure is a count or share (>= 0)
PERCENT_MEASURES = ("percent_of_parent", "percent_of_lymphocytes")


def _checked_measures(
    df: pd.DataFrame, measures: Sequence[str], problems: list[dict], where: str
) -> pd.DataFrame:
    """The table with every measure numeric and plausible; each value set aside is named.

    Text that is not a number, an infinite value, a negative value and a percentage above
    100 cannot be a population frequency: such a value is left out (as missing) and gets
    a row in problems.csv saying which patient, visit, population and value. A measure
    with no usable value at all is named too, instead of vanishing from the output.
    """
    df = df.copy()
    for m in measures:
        raw = df[m]
        num = pd.to_numeric(raw, errors="coerce").astype(float)
        given = ~raw.isna() & ~raw.astype(str).str.strip().isin(["", "nan", "NaN", "<NA>"])
        not_num = given & num.isna()
        v = num.to_numpy()
        with np.errstate(invalid="ignore"):
            bad_inf = ~np.isfinite(v) & ~np.isnan(v)
            negative = np.isfinite(v) & (v < 0)
            over = np.isfinite(v) & (v > 100) if m in PERCENT_MEASURES else np.zeros(len(v), bool)
        reasons = [
            (not_num.to_numpy(), "is not a number"),
            (bad_inf, "is not finite"),
            (negative, "is negative"),
            (over, "is above 100 %"),
        ]
        for mask, why in reasons:
            for i in np.flatnonzero(mask):
                r = df.iloc[i]
                problems.append(
                    {
                        "kind": "invalid_value",
                        "patient": str(r["patient"]),
                        "visit": str(r["visit"]),
                        "sample": str(r["sample"]),
                        "population": str(r["population"]),
                        "message": f"{m} of patient {r['patient']} visit {r['visit']} "
                        f"population {r['population']} is {raw.iloc[i]!r}, which {why}: "
                        "left out of the comparison",
                    }
                )
        drop = not_num.to_numpy() | bad_inf | negative | over
        v = np.where(drop, np.nan, v)
        df[m] = v
        if len(df) and np.isnan(v).all():
            problems.append(
                {
                    "kind": "empty_measure",
                    "patient": "",
                    "visit": "",
                    "sample": "",
                    "population": "",
                    "message": f"{where}: measure {m} has no usable value in any row; "
                    "its changes and statistics are all missing",
                }
            )
    return df


def _missing_pair_problems(changes: pd.DataFrame, have: dict[str, set]) -> list[dict]:
    """A problem row per change left without a pair although the patient has both visits
    (a population or value missing at one of them; absent visits are named already)."""
    out = []
    missing = changes[changes["status"].str.startswith("missing")]
    for r in missing.itertuples():
        visits = have.get(r.patient, set())
        if r.baseline_visit not in visits or r.followup_visit not in visits:
            continue
        out.append(
            {
                "kind": "missing_value",
                "patient": r.patient,
                "visit": r.followup_visit,
                "sample": "",
                "population": r.population,
                "message": f"patient {r.patient} {r.population} ({r.measure}): {r.status} "
                f"value ({r.baseline_visit} -> {r.followup_visit}); the pair is left out",
            }
        )
    return out


def _ratio_problems(changes: pd.DataFrame) -> list[dict]:
    z = changes[changes["status"] == "zero value (no ratio)"]
    return [
        {
            "kind": "zero_value",
            "patient": r.patient,
            "visit": r.followup_visit,
            "sample": "",
            "population": r.population,
            "message": f"patient {r.patient} {r.population} ({r.measure}) is 0 at "
            f"{r.baseline_visit} or {r.followup_visit}: fold change / log2 ratio undefined",
        }
        for r in z.itertuples()
    ]


def _direction(low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    if low > 0:
        return "up"
    if high < 0:
        return "down"
    return "CI includes 0"


def _cohort_stats(changes: pd.DataFrame, has_method: bool, conf: float) -> pd.DataFrame:
    """One statistics row per (method,) population × measure × follow-up visit."""
    key = (["method"] if has_method else []) + ["population", "measure", "followup_visit"]
    rows = []
    for k, g in changes.groupby(key, sort=False):
        kd = dict(zip(key, k))
        pair = g[np.isfinite(g["baseline"]) & np.isfinite(g["followup"])]
        d = pair["difference"].to_numpy(float)
        hl = _stats.hodges_lehmann(d, conf)
        sr = _stats.signed_rank_test(d)
        lt = _stats.paired_t_log(pair["log2_ratio"].to_numpy(float))
        n = len(pair)
        rows.append(
            {
                **kd,
                "parent": g["parent"].iloc[0],
                "n_patients": int(g["patient"].nunique()),
                "n_pairs": n,
                "median_baseline": float(pair["baseline"].median()) if n else np.nan,
                "median_followup": float(pair["followup"].median()) if n else np.nan,
                "median_change": float(np.median(d)) if n else np.nan,
                "hl_estimate": hl.estimate,
                "hl_ci_low": hl.low,
                "hl_ci_high": hl.high,
                "ci_level": hl.level,
                "direction": _direction(hl.low, hl.high),
                "test": sr.test,
                "statistic": sr.statistic,
                "n_zero": sr.n_zero,
                "p_value": sr.pvalue,
                "n_log_pairs": lt.n,
                "mean_log2_ratio": lt.mean_log2,
                "geo_mean_fold_change": float(2.0**lt.mean_log2) if lt.n else np.nan,
                "log2_ci_low": lt.low,
                "log2_ci_high": lt.high,
                "t_p_value": lt.pvalue,
            }
        )
    st = pd.DataFrame(rows)
    fam = (["method"] if has_method else []) + ["measure", "followup_visit"]
    st["q_value"] = np.nan
    for _, idx in st.groupby(fam, sort=False).groups.items():
        st.loc[idx, "q_value"] = _stats.benjamini_hochberg(st.loc[idx, "p_value"].to_numpy())
    cols = (["method"] if has_method else []) + STAT_COLUMNS
    return st[cols].reset_index(drop=True)


#: ``COMPARE_OUTPUTS`` is `immunoprofile.folder.COMPARE_OUTPUTS` (the old spelling warns)
__getattr__ = moved_names("immunoprofile.comparison", {"COMPARE_OUTPUTS": "immunoprofile.folder"})
