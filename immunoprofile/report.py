"""One self-contained HTML report of a longitudinal immune-profiling analysis.

The report is a single ``.html`` file, figures embedded as base64 PNG and no external
style sheet or script, so it can be emailed and opened in any browser. It opens with the
files a person should look at (QC flags), then the effect sizes (Hodges–Lehmann median
change with exact confidence intervals) for the trial's endpoints, each with the event
counts it rests on, says plainly what a cohort of n patients can and cannot show with
exact tests, and then gives everything needed to check the numbers: the cohort (patients
× visits, events per file), the plots, the full statistics, the change table, per-visit
tables, one gating page per file (a figure per gate, flagged files first), clustering
agreement, and provenance (software versions, template, transforms, compensation and
fitted gates per file, and the command that produced it).

Layout lives in the Jinja2 template ``immunoprofile/html/report.html.j2``; this module
only turns results into plain data for it (`report_context`). `build_report` takes the
results as Python objects; `report_from_dir` collects them from a results directory
written by ``immunoprofile run`` / ``immunoprofile demo`` (or by ``immunoprofile gate`` +
``immunoprofile compare``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import platform
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile import __version__
from immunoprofile._files import atomic_write_text, refuse_incomplete
from immunoprofile._json import read_json_object
from immunoprofile.clustering.agreement import by_construction
from immunoprofile.cohort import CLASH_ERROR
from immunoprofile.comparison import (
    ENDPOINTS,
    MEASURE_UNITS,
    Comparison,
    compare,
    population_order,
    visit_sort_key,
)
from immunoprofile.exceptions import ComparisonError, ImmunoprofileError, ReportError
from immunoprofile.folder import FILE_PROVENANCE, RUN, WRITERS, ResultsFolder
from immunoprofile.plots import paired
from immunoprofile.progress import log
from immunoprofile.quantify import lab_tables, value_label

VERSIONED = (
    "immunoprofile",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "jinja2",
    "umap-learn",
)

HTML_DIR = Path(__file__).resolve().parent / "html"
#: an endpoint whose gate holds fewer events than this in some file gets a caveat (the
#: gating engine's ``too_few_events`` QC threshold)
SMALL_COUNT = 50
#: the measure the key results use per endpoint when none is asked for: B and NK as
#: clinicians report them, % of lymphocytes; Treg and Th17 as % of their CD4 parent
ENDPOINT_MEASURES = {"B": "percent_of_lymphocytes", "NK": "percent_of_lymphocytes"}
#: the sections only a comparison fills
COMPARED = ("key", "plots", "stats", "changes")
#: what a report without a comparison says in place of its key results, unless told why
NO_COMPARISON = (
    "No comparison was given: this report shows the cohort, the population tables, "
    "gating and clustering, without change from baseline or statistics."
)

SECTION_HEADINGS = {
    "review": "Files to review",
    "key": "Key results",
    "cohort": "Cohort",
    "plots": "Plots",
    "stats": "Statistics",
    "changes": "Change table",
    "visits": "Per-visit tables",
    "gating": "Gating per file",
    "clustering": "Clustering agreement",
    "provenance": "Provenance",
}

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1280px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}h3{margin-bottom:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
th{white-space:normal;vertical-align:bottom}
th.grp{text-align:center;background:#e8edf2}
.tw{overflow-x:auto;max-width:100%}
th{background:#f3f5f7}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
td.small{background:#fff3cd!important;font-weight:600}
td.flag{color:#b00020;font-weight:600;white-space:normal;min-width:8em;overflow-wrap:anywhere}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
.note ul{margin:.4em 0 0}
.short{font-size:1.05em}.caveat{color:#8a4b00}
.ok{color:#1b7f3b}.bad{color:#b00020}.muted{color:#777;font-size:.9em}
.up{color:#b2182b;font-weight:600}.down{color:#2166ac;font-weight:600}
img{max-width:100%}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
.gates{display:grid;grid-template-columns:repeat(auto-fill,minmax(290px,1fr));gap:10px}
.gates figure{margin:0}
details{margin:.5em 0 1em}summary{cursor:pointer;color:#1f4e79}
details.page{border:1px solid #ddd;border-radius:4px;padding:.4em .8em}
ul.flags{color:#b00020;margin:.3em 0}
.toc a{margin-right:.5em;font-size:.9em}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.8em}
nav a{margin-right:.8em}
figure.zoomable label{cursor:zoom-in;display:block}
input.zoom{display:none}
input.zoom:checked+img{position:fixed;top:0;left:0;right:0;bottom:0;margin:auto;
width:auto;height:auto;max-width:96vw;max-height:96vh;min-width:min(900px,96vw);
object-fit:contain;z-index:10;background:#fff;box-shadow:0 0 0 100vmax rgba(0,0,0,.6);
cursor:zoom-out}
"""


# --- plain data for the template --------------------------------------------------------


@dataclass
class TableData:
    """A table as the template draws it: column names (numeric ones right-aligned), rows
    of cells ``{text, cls, href}``, an optional spanning header row, and a 'first N rows'
    note."""

    columns: list[dict[str, Any]]
    rows: list[list[dict[str, Any]]]
    more: str = ""
    group_row: list[dict[str, Any]] = field(default_factory=list)


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _figure(png: bytes, alt: str, caption: str = "") -> dict[str, str]:
    b64 = base64.b64encode(png).decode("ascii")
    return {"src": f"data:image/png;base64,{b64}", "alt": alt, "caption": caption, "folded": ""}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "n/a"
        if v != 0 and (abs(v) < 10**-(digits) or abs(v) >= 1e6):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) >= 10000 else str(int(v))
    return str(v)


def _table(
    df: pd.DataFrame | None,
    digits: int = 3,
    index: bool = False,
    max_rows: int = 2000,
    cell_class: Any = None,
    links: Mapping[str, Mapping[str, str]] | None = None,
) -> TableData | None:
    """A DataFrame as `TableData`: text left-aligned, numbers right-aligned and rounded.

    ``cell_class(column, value)`` may add a CSS class to a cell; ``links[column][text]``
    makes a cell a link."""
    if df is None or len(df) == 0:
        return None
    d = df.reset_index() if index else df
    shown = d.head(max_rows)
    # by position: a lab table repeats its column names (``events`` per population)
    numeric = [pd.api.types.is_numeric_dtype(d.dtypes.iloc[i]) for i in range(d.shape[1])]
    columns = [{"name": str(c), "numeric": numeric[i]} for i, c in enumerate(d.columns)]
    rows = []
    for row in shown.itertuples(index=False):
        cells = []
        for i, (c, v) in enumerate(zip(d.columns, row)):
            if numeric[i]:
                cell = {"text": _fmt(v, digits), "cls": "", "href": None}
            else:
                txt = (
                    "" if (v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v))) else v
                )
                cls = "l"
                if c == "direction" and txt in ("up", "down"):
                    cls += f" {txt}"
                cell = {"text": str(txt), "cls": cls, "href": None}
            if cell_class is not None:
                extra = cell_class(c, v)
                if extra:
                    cell["cls"] = f"{cell['cls']} {extra}".strip()
            if links and c in links and cell["text"] in links[c]:
                cell["href"] = links[c][cell["text"]]
            cells.append(cell)
        rows.append(cells)
    more = f"first {max_rows} of {len(df)} rows shown" if len(df) > max_rows else ""
    return TableData(columns, rows, more)


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages the analysis depends on."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "immunoprofile":
                out[name] = f"{__version__} (source tree)"
            else:
                out[name] = "not installed"
    return out


def exact_test_statement(n: int, n_endpoints: int = 4, alpha: float = 0.05) -> str:
    """Plain-language statement (HTML) of the smallest attainable exact p for n pairs and
    what that means for a Bonferroni/Holm correction over ``n_endpoints`` endpoints."""
    if n < 1:
        return "No patient has both visits, so no paired test is possible."
    min_p = 2.0 / 2**n
    thr = alpha / n_endpoints
    head = (
        f"With n = {n} patients the smallest two-sided p-value an exact paired test "
        f"(Wilcoxon signed-rank or sign-flip permutation) can give is 2/2<sup>{n}</sup> = "
        f"2/{2**n} = {min_p:.4f}, reached only when every patient changes in the same "
        "direction. "
    )
    if min_p > thr:
        tail = (
            f"A Bonferroni or Holm correction over the {n_endpoints} endpoints needs "
            f"p &le; {alpha}/{n_endpoints} = {thr:.4f}, which cannot happen, however large "
            "the effect. This report therefore leads with effect sizes: the Hodges–Lehmann "
            "estimate of the median change and its exact distribution-free confidence "
            "interval. p-values and Benjamini–Hochberg q-values are given for completeness "
            "and should be read as descriptive."
        )
    else:
        tail = (
            f"A Bonferroni/Holm threshold over {n_endpoints} endpoints is {thr:.4f}, which "
            "is attainable. Effect sizes with exact confidence intervals are still the "
            "primary result."
        )
    return head + tail


HL_NOTE = (
    "Why the Hodges–Lehmann change can differ from the difference of the medians: the "
    "Hodges–Lehmann estimate is the median of all pairwise averages of the patients' own "
    "changes (Walsh averages; Hollander, Wolfe & Chicco, Nonparametric Statistical "
    "Methods, 3rd ed., §3.2). It follows each patient from baseline to follow-up. The "
    "median at follow-up minus the median at baseline compares two cross-sections whose "
    "middle values may come from different patients, so with few patients the two can "
    "differ in size and even in sign. The paired estimate is the one that goes with the "
    "signed-rank test and its confidence interval."
)


def _patients_moving(changes: pd.DataFrame, pop: str, measure: str, visit: str) -> str:
    g = changes[
        (changes["population"] == pop)
        & (changes["measure"] == measure)
        & (changes["followup_visit"] == visit)
    ]
    d = g["difference"].to_numpy(float)
    d = d[np.isfinite(d)]
    return f"{int((d > 0).sum())} up, {int((d < 0).sum())} down" + (
        f", {int((d == 0).sum())} unchanged" if (d == 0).any() else ""
    )


def endpoint_measures(
    endpoints: Sequence[str], measures: Sequence[str], measure: str | None = None
) -> dict[str, str]:
    """The measure each endpoint is reported in: ``measure`` when one is asked for, else
    `ENDPOINT_MEASURES` (B and NK as % of lymphocytes) where compared, else the first
    compared measure."""
    if measure is not None:
        return {p: measure for p in endpoints}
    first = measures[0]
    return {
        p: ENDPOINT_MEASURES[p]
        if ENDPOINT_MEASURES.get(p) in measures
        else ("percent_of_parent" if "percent_of_parent" in measures else first)
        for p in endpoints
    }


def key_statistics(cmp: Comparison, measure: str | None = None) -> pd.DataFrame:
    """The rows of ``cmp.stats`` the key results rest on: each endpoint in its measure
    (`endpoint_measures`: B and NK as % of lymphocytes unless ``measure`` is given), by
    follow-up visit; every population in ``measure`` (else the first compared) when no
    endpoint was compared. One method (the first by name) where the table holds several."""
    s = cmp.stats
    if "method" in s.columns:
        s = s[s["method"] == sorted(s["method"].unique())[0]]
    eps = [p for p in ENDPOINTS if p in set(s["population"])]
    if not eps:
        return s[s["measure"] == (measure or cmp.measures[0])]
    measures = endpoint_measures(eps, cmp.measures, measure)
    parts = [s[(s["population"] == p) & (s["measure"] == measures[p])] for p in eps]
    return pd.concat(parts).sort_values("followup_visit", kind="stable")


def endpoint_counts(
    table: pd.DataFrame | None, population: str, visits: Sequence[str]
) -> tuple[int | None, float | None, int, int]:
    """Events of ``population`` per file over the files of ``visits``: minimum, median,
    the number of files under `SMALL_COUNT` and the number of files."""
    if table is None or not {"population", "visit", "count"} <= set(table.columns):
        return None, None, 0, 0
    t = table[(table["population"] == population) & table["visit"].astype(str).isin(visits)]
    if "method" in t.columns:
        t = t[t["method"] == sorted(t["method"].astype(str).unique())[0]]
    c = pd.to_numeric(t["count"], errors="coerce").dropna().to_numpy()
    if c.size == 0:
        return None, None, 0, 0
    return int(c.min()), round(float(np.median(c)), 1), int((c < SMALL_COUNT).sum()), int(c.size)


def _samples_of(table: pd.DataFrame | None, visits: Sequence[str]) -> set[str] | None:
    """The samples of ``visits`` (None when the table does not say)."""
    if table is None or not {"sample", "visit"} <= set(table.columns):
        return None
    return set(table.loc[table["visit"].astype(str).isin(visits), "sample"].astype(str))


def _ancestors(table: pd.DataFrame | None, population: str) -> set[str]:
    """The population and every ancestor, from the table's parent column."""
    out = {population}
    if table is None or not {"population", "parent"} <= set(table.columns):
        return out
    parent = table.drop_duplicates("population").set_index("population")["parent"].to_dict()
    p = parent.get(population)
    while isinstance(p, str) and p not in out:
        out.add(p)
        p = parent.get(p)
    return out


def endpoint_qc(
    qc: pd.DataFrame | None,
    table: pd.DataFrame | None,
    population: str,
    samples: set[str] | None = None,
) -> str:
    """QC state of an endpoint: ``ok`` or how many files carry a flag on the population or
    one of its ancestors (flags on a whole file count too), with the flags named."""
    if qc is None or not len(qc) or "flag" not in qc.columns:
        return "ok"
    q = qc
    if samples is not None and "sample" in q.columns:
        q = q[q["sample"].astype(str).isin(samples)]
    pops = q["population"] if "population" in q.columns else pd.Series(None, index=q.index)
    blank = pops.isna() | pops.astype(str).str.strip().isin(["", "nan", "None"])
    hit = q[blank | pops.astype(str).isin(_ancestors(table, population))]
    if hit.empty:
        return "ok"
    files = hit["sample"].nunique() if "sample" in hit.columns else len(hit)
    kinds = ", ".join(sorted(hit["flag"].astype(str).unique()))
    return f"{files} file{'s' if files != 1 else ''}: {kinds}"


def _key_results(
    cmp: Comparison,
    endpoints: list[str],
    measures: Mapping[str, str],
    table: pd.DataFrame | None,
    qc: pd.DataFrame | None,
) -> dict[str, Any]:
    """Headline: effect size and exact CI first, then p and q, then the events behind
    each endpoint and its QC state; the 'In short' sentence and its caveats."""
    s = cmp.stats
    if "method" in s.columns:
        s = s[s["method"] == sorted(s["method"].unique())[0]]
    rows, caveats, differs = [], [], []
    summary: dict[str, list[str]] = {}
    for visit in cmp.followup:
        for pop in endpoints:
            measure = measures[pop]
            r = s[
                (s["population"] == pop)
                & (s["measure"] == measure)
                & (s["followup_visit"] == visit)
            ]
            if r.empty:
                continue
            r = r.iloc[0]
            unit = MEASURE_UNITS.get(measure, "")
            abbrev = {"percentage points": "pp"}.get(unit, unit)
            if np.isfinite(r["hl_ci_low"]):
                ci = f"{r['hl_ci_low']:+.2f} to {r['hl_ci_high']:+.2f}"
                level = f"{100 * r['ci_level']:.1f}%"
            else:
                ci, level = "none at this n", ""
            word = {"up": "increased", "down": "decreased", "CI includes 0": "no clear change"}
            verdict = word.get(r["direction"], r["direction"])
            lo, med, n_small, n_files = endpoint_counts(table, pop, [cmp.baseline, visit])
            what = value_label(measure, r["parent"])
            diff_med = r["median_followup"] - r["median_baseline"]
            rows.append(
                {
                    "population": pop,
                    "value": what,
                    "visit": visit,
                    "n pairs": int(r["n_pairs"]),
                    "median baseline": r["median_baseline"],
                    "median follow-up": r["median_followup"],
                    "difference of medians": diff_med,
                    f"HL median change ({abbrev})": r["hl_estimate"],
                    "exact CI": f"{ci} ({level})" if level else ci,
                    "patients": _patients_moving(cmp.changes, pop, measure, visit),
                    "exact p": "n/a" if np.isnan(r["p_value"]) else f"{r['p_value']:.3g}",
                    "BH q": "n/a" if np.isnan(r["q_value"]) else f"{r['q_value']:.3g}",
                    "events/file min": lo,
                    "events/file median": med,
                    "QC": endpoint_qc(qc, table, pop, _samples_of(table, [cmp.baseline, visit])),
                }
            )
            summary.setdefault(visit, []).append(
                f"{pop} ({what}) {verdict} ({r['hl_estimate']:+.2f} {abbrev})"
            )
            if n_small:
                caveats.append(
                    f"{pop} at {visit} rests on fewer than {SMALL_COUNT} events in "
                    f"{n_small} of {n_files} files (minimum {lo}); read it with its counts."
                )
            shown = (round(float(diff_med), 2), round(float(r["hl_estimate"]), 2))
            if all(np.isfinite(shown)) and shown[0] * shown[1] < 0:  # opposite signs as shown
                differs.append(
                    f"{pop} at {visit}: the medians go {r['median_baseline']:.2f} → "
                    f"{r['median_followup']:.2f} ({diff_med:+.2f}) while the paired "
                    f"Hodges–Lehmann change is {r['hl_estimate']:+.2f} {abbrev} "
                    f"({_patients_moving(cmp.changes, pop, measure, visit)})."
                )
    df = pd.DataFrame(rows)

    def small(col: str, v: Any) -> str:
        if col == "events/file min" and v is not None and pd.notna(v) and v < SMALL_COUNT:
            return "small"
        if col == "QC" and isinstance(v, str) and v != "ok":
            return "flag"
        return ""

    return {
        "table": _table(df, 2, cell_class=small) if len(df) else None,
        "summary": [f"At {v}: " + "; ".join(parts) for v, parts in summary.items()],
        "caveats": caveats,
        "hl_differs": differs,
    }


def _truth(truth: pd.DataFrame, endpoints: list[str], measures: Mapping[str, str]) -> dict:
    """Known (simulated) median change beside the measured one, endpoints first."""
    t = truth.copy()
    if "true_in_ci" in t.columns:
        t["true_in_ci"] = t["true_in_ci"].map(
            lambda v: "yes" if str(v).lower() in ("true", "1", "1.0") else "no"
        )
    cols = [
        c
        for c in (
            "population measure followup_visit true_change measured_change hl_ci_low "
            "hl_ci_high true_in_ci true_direction measured_direction"
        ).split()
        if c in t.columns
    ]
    head = t
    if "population" in t.columns:
        head = t[t["population"].isin(endpoints)]
        if "measure" in t.columns:
            keep = head.apply(lambda r: measures.get(r["population"]) == r["measure"], axis=1)
            head = head[keep.astype(bool)] if len(head) else head
    return {"endpoints": _table(head[cols], 3), "all": _table(t[cols], 3)}


def _thumbnail(png: bytes, width: int | None = None, colors: int = 96) -> bytes:
    """A smaller PNG (at most ``width`` pixels wide, ``colors`` colours) so the report
    stays small enough to email; the original is returned when Pillow cannot read it."""
    try:
        import io

        from PIL import Image

        im = Image.open(io.BytesIO(png)).convert("RGB")
        if width and im.width > width:
            im = im.resize((width, max(1, round(im.height * width / im.width))), Image.LANCZOS)
        im = im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        small = buf.getvalue()
        return small if len(small) < len(png) else png
    except Exception:  # noqa: BLE001 - a thumbnail is a convenience, never fatal
        return png


def _cohort_matrix(
    table: pd.DataFrame | None, cohort: pd.DataFrame | None, baseline: str
) -> pd.DataFrame | None:
    """Patients × visits with the sample and its event count in each cell."""
    src = cohort if cohort is not None and len(cohort) else None
    if src is None and table is not None and {"sample", "patient", "visit"} <= set(table.columns):
        src = table[["sample", "patient", "visit"]].drop_duplicates()
    if src is None or not {"patient", "visit"} <= set(src.columns):
        return None
    src = src.copy()
    src["patient"] = src["patient"].fillna("").astype(str)
    src["visit"] = src["visit"].fillna("").astype(str)
    ev_col = next((c for c in ("events", "n_events", "total_events") if c in src.columns), None)

    def cell(g: pd.DataFrame) -> str:
        parts = []
        for r in g.itertuples(index=False):
            name = getattr(r, "sample", "")
            ev = getattr(r, ev_col) if ev_col else None
            status = getattr(r, "status", "ok")
            if status == CLASH_ERROR:  # gated, but another file claims this cell
                parts.append(f"{name} (identity also claimed by another file: left out)")
            elif isinstance(status, str) and status not in ("", "ok"):
                parts.append(f"{name} (failed: {status})")  # no events: not gated
            elif ev is not None and pd.notna(ev):
                parts.append(f"{name} ({int(ev):,} events)")
            else:
                parts.append(f"{name}")
        return "; ".join(parts)

    rows = {}
    for (p, v), g in src.groupby(["patient", "visit"], sort=False):
        rows.setdefault(p or "(no patient)", {})[v or "(no visit)"] = cell(g)
    mat = pd.DataFrame(rows).T
    cols = sorted(mat.columns, key=lambda v: visit_sort_key(v, baseline))
    mat = mat.reindex(columns=cols).fillna("— missing —")
    mat.index.name = "patient"
    return mat.sort_index()


def _per_visit_tables(table: pd.DataFrame | None, measure: str, baseline: str) -> list[dict]:
    """Per visit: the lab table (value rounded to 2 decimals, events beside it, headers
    naming unit and parent) as the CSV/xlsx files carry it."""
    if table is None or measure not in table.columns:
        return []
    t = table.dropna(subset=["patient", "visit"])
    if "method" in t.columns:
        t = t[t["method"] == sorted(t["method"].astype(str).unique())[0]]
    if t.empty:
        return []
    labs = lab_tables(t, measure)
    visits = sorted(labs, key=lambda v: visit_sort_key(v, baseline))
    out = []
    for v in visits:
        lab = labs[v].reset_index()
        # two header rows: the population over its value and events columns
        groups = [{"text": "", "span": 1}]
        for c in lab.columns[1::2]:
            groups.append({"text": c.rsplit(" (", 1)[0], "span": 2})
        td = _table(
            lab.rename(columns=lambda c: c.rsplit(" (", 1)[-1].rstrip(")") if "(" in c else c),
            2,
            cell_class=lambda c, v: (
                "small" if c == "events" and pd.notna(v) and v < SMALL_COUNT else ""
            ),
        )
        if td is not None:
            td.group_row = groups
        out.append({"visit": v, "table": td})
    return out


def _figures(cmp: Comparison, measures: Mapping[str, str], endpoints: list[str]) -> list[dict]:

    parts = []
    method = None
    if "method" in cmp.stats.columns:
        method = sorted(cmp.stats["method"].unique())[0]
    by_measure: dict[str, list[str]] = {}
    for pop in endpoints:
        by_measure.setdefault(measures[pop], []).append(pop)
    for measure, pops in by_measure.items():
        fig = paired.forest_plot(cmp.stats, measure, populations=pops, method=method)
        parts.append(
            _figure(
                paired.figure_bytes(fig),
                "forest plot",
                f"{', '.join(pops)} as {measure.replace('_', ' ')}: Hodges–Lehmann median "
                "change from baseline with exact confidence interval (n pairs and exact p at "
                "the right). The dashed line is no change.",
            )
        )
        fig = paired.paired_plot(cmp.changes, measure, populations=pops, method=method)
        parts.append(
            _figure(
                paired.figure_bytes(fig),
                "paired plot",
                f"{', '.join(pops)} ({measure.replace('_', ' ')}), one line per patient.",
            )
        )
    main = next(iter(by_measure), cmp.measures[0])
    if endpoints and len(set(cmp.stats["population"])) > len(endpoints):
        fig = paired.forest_plot(cmp.stats, main, method=method)
        f = _figure(paired.figure_bytes(fig, dpi=90), "forest plot, all populations")
        f["folded"] = f"Forest plot of every population ({main.replace('_', ' ')})"
        parts.append(f)
    for visit in cmp.followup:
        fig = paired.log2_heatmap(cmp.changes, main, visit, method=method)
        parts.append(
            _figure(
                paired.figure_bytes(fig),
                "log2 heatmap",
                f"log2({visit} / {cmp.baseline}) per patient and population; grey = no pair.",
            )
        )
    fig = paired.paired_plot(cmp.changes, main, method=method, ncols=5)
    f = _figure(paired.figure_bytes(fig, dpi=80), "all paired plots")
    f["folded"] = "Paired plots for every population"
    parts.append(f)
    return parts


def _dict_text(obj: Any) -> str:
    try:
        return json.dumps(obj, indent=2, default=str)
    except TypeError:
        return str(obj)


def _as_frame(obj: Any) -> pd.DataFrame | None:
    if obj is None:
        return None
    if isinstance(obj, pd.DataFrame):
        return obj
    if isinstance(obj, Mapping) and not all(isinstance(v, Mapping) for v in obj.values()):
        return pd.DataFrame(
            [{"key": k, "value": _flat(v)} for k, v in obj.items()], columns=["key", "value"]
        )
    if isinstance(obj, Mapping):
        rows = []
        for k, v in obj.items():
            if isinstance(v, Mapping):
                rows.append({"key": k, **{kk: _flat(vv) for kk, vv in v.items()}})
            elif isinstance(v, list):
                rows.extend({"key": k, **_row(x)} for x in v)
            else:
                rows.append({"key": k, "value": _flat(v)})
        return pd.DataFrame(rows)
    if isinstance(obj, list):
        return pd.DataFrame([_row(x) for x in obj])
    return pd.DataFrame({"value": [str(obj)]})


def _row(x: Any) -> dict:
    return {k: _flat(v) for k, v in x.items()} if isinstance(x, Mapping) else {"value": _flat(x)}


def _flat(v: Any) -> Any:
    if isinstance(v, (Mapping, list, tuple)):
        return json.dumps(v, default=str)
    return v


def _naming_note(agreement: pd.DataFrame) -> str:
    """The sentence saying which agreement rows are an independent check and which agree
    with gating by construction (named per event by the samples' own template gates)."""

    if "naming" not in agreement.columns:
        return ""
    known = agreement["naming"].fillna("").astype(str).str.strip().ne("")
    if not known.any():
        return ""
    event = agreement.loc[by_construction(agreement), "population"].astype(str).tolist()
    if not event:
        return (
            '<p class="note">No population here was named per event by the samples\' own '
            "template gates (column <i>naming</i>), so each row is an independent check of "
            "the gating.</p>"
        )
    names = ", ".join(f"<b>{_esc(p)}</b>" for p in event)
    one = len(event) == 1
    return (
        f'<p class="note">{names} {"is" if one else "are"} named per event by each '
        "sample's own fitted template gate, because the SOM nodes do not resolve "
        f"{'it' if one else 'them'} or a sibling (column <i>naming</i>: <i>event (template "
        "gate)</i>; <i>naming_f1</i> is the node-vs-event F1 within the parent): "
        f"{'its' if one else 'their'} agreement with gating is by construction, not an "
        "independent check. The populations named per node are the "
        "independent check.</p>"
    )


def _anchor(sample: str) -> str:
    return "gate-" + re.sub(r"[^A-Za-z0-9_-]", "_", str(sample))


def _flags_by_sample(qc: pd.DataFrame | None) -> dict[str, list[str]]:
    """Each sample's QC flags as short lines (``Th17: too_few_events (40 events < 50)``)."""
    out: dict[str, list[str]] = {}
    if qc is None or not len(qc) or not {"sample", "flag"} <= set(qc.columns):
        return out
    for r in qc.itertuples(index=False):
        pop = getattr(r, "population", None)
        detail = getattr(r, "detail", None)
        where = f"{pop}: " if isinstance(pop, str) and pop.strip() else ""
        more = f" ({detail})" if isinstance(detail, str) and detail.strip() else ""
        out.setdefault(str(r.sample), []).append(f"{where}{r.flag}{more}")
    return out


def _review(qc: pd.DataFrame | None, errors: pd.DataFrame | None, table: pd.DataFrame | None,
            pages: set[str]) -> dict[str, Any] | None:  # fmt: skip
    """The 'Files to review' section: every flagged or failed file, linked to its gating
    page. None when neither QC nor errors were given (nothing was checked)."""
    if qc is None and errors is None:
        return None
    ids = {}
    if table is not None and {"sample", "patient", "visit"} <= set(table.columns):
        ids = (
            table.drop_duplicates("sample")
            .set_index("sample")[["patient", "visit"]]
            .to_dict("index")
        )
    rows = []
    if errors is not None and len(errors):
        for r in errors.itertuples(index=False):
            sample = str(getattr(r, "sample", "") or getattr(r, "file", ""))
            rows.append(
                {
                    "sample": sample,
                    "patient": ids.get(sample, {}).get("patient", getattr(r, "patient", "")),
                    "visit": ids.get(sample, {}).get("visit", getattr(r, "visit", "")),
                    "flags": 1,
                    "what to look at": f"{getattr(r, 'error_type', 'error')}: {getattr(r, 'message', '')}",
                }
            )
    for sample, flags in sorted(_flags_by_sample(qc).items(), key=lambda kv: (-len(kv[1]), kv[0])):
        rows.append(
            {
                "sample": sample,
                "patient": ids.get(sample, {}).get("patient", ""),
                "visit": ids.get(sample, {}).get("visit", ""),
                "flags": len(flags),
                "what to look at": "; ".join(flags),
            }
        )
    if not rows:
        return {"rows": 0, "lead": "No file was flagged by QC and none failed.", "table": None}
    df = pd.DataFrame(rows)
    links = {"sample": {s: f"#{_anchor(s)}" for s in df["sample"] if s in pages}}
    td = _table(df, links=links)
    for row in td.rows if td else []:
        row[-1]["cls"] = "l"
    n = df["sample"].nunique()
    return {
        "rows": len(df),
        "lead": f"{n} file{'s' if n != 1 else ''} to look at before trusting the numbers "
        "below; each name opens the file's gating page.",
        "table": td,
    }


_GATE_FILE = re.compile(r"^(\d+)_(.+)$")


def _gate_figures(sample: str, images: bytes | Mapping[str, bytes]) -> list[dict]:
    """One figure per gate (``{population: png}``, names may carry an order prefix
    ``03_Treg``), or the sample's one grid figure (bytes)."""
    if isinstance(images, (bytes, bytearray)):
        return [_figure(_thumbnail(bytes(images)), f"gating {sample}", str(sample))]
    figs = []
    for name, png in images.items():
        m = _GATE_FILE.match(name)
        pop = m.group(2) if m else name
        # written small by plots.gating.save_gate_plots: embedded as they are
        figs.append(_figure(png, f"{sample} {pop}"))  # the figure's title names it
    return figs


def _gating_pages(
    images: Mapping[str, bytes | Mapping[str, bytes]] | None,
    qc: pd.DataFrame | None,
    cohort: pd.DataFrame | None,
    table: pd.DataFrame | None,
) -> list[dict]:
    """A page per file with its gate figures, flagged files first (most flags first)."""
    if not images:
        return []
    flags = _flags_by_sample(qc)
    ids: dict[str, dict] = {}
    src = cohort if cohort is not None and "sample" in getattr(cohort, "columns", []) else table
    if src is not None and "sample" in src.columns:
        keep = [c for c in ("patient", "visit", "events") if c in src.columns]
        ids = src.drop_duplicates("sample").set_index("sample")[keep].to_dict("index")
    order = sorted(images, key=lambda s: (-len(flags.get(str(s), [])), str(s)))
    pages = []
    for sample in order:
        info = ids.get(sample, {})
        where = " ".join(
            str(info[k]) for k in ("patient", "visit") if isinstance(info.get(k), str) and info[k]
        )
        ev = info.get("events")
        pages.append(
            {
                "sample": str(sample),
                "anchor": _anchor(sample),
                "where": where,
                "events": f"{int(ev):,}" if ev is not None and pd.notna(ev) else "",
                "flags": flags.get(str(sample), []),
                "figures": _gate_figures(str(sample), images[sample]),
            }
        )
    return pages


def _processing(processing: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Per file: compensation source and transforms with parameters (from provenance)."""
    if not processing:
        return None
    from immunoprofile.gating.run import provenance_table, transform_table

    per_file = provenance_table(dict(processing))
    if per_file.empty:
        return None
    per_channel = transform_table(dict(processing))
    return {
        "per_file": _table(per_file.drop(columns=["file"])),
        "per_channel": _table(per_channel, max_rows=5000) if len(per_channel) else None,
        "n_channel": len(per_channel),
    }


def report_context(
    comparison: Comparison | None,
    table: pd.DataFrame | None = None,
    *,
    cohort: pd.DataFrame | None = None,
    qc: pd.DataFrame | None = None,
    errors: pd.DataFrame | None = None,
    fitted_gates: pd.DataFrame | Mapping | None = None,
    gating_images: Mapping[str, bytes | Mapping[str, bytes]] | None = None,
    agreement: pd.DataFrame | None = None,
    clustering_images: Mapping[str, bytes] | None = None,
    truth: pd.DataFrame | None = None,
    provenance: Mapping[str, Any] | None = None,
    processing: Mapping[str, Any] | None = None,
    command: str | None = None,
    measure: str | None = None,
    endpoints: Sequence[str] = ENDPOINTS,
    title: str | None = None,
    comparison_note: str | None = None,
) -> dict[str, Any]:
    """Everything the report template shows, as plain data (see `build_report`).

    ``comparison`` None: a report of what was gated or clustered without a comparison
    (``comparison_note`` says why): the cohort, per-visit tables, gating, clustering
    and provenance; no key results, plots, statistics or change table."""
    cmp = comparison
    prov = dict(provenance or {})
    command = command or prov.get("command")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if cmp is None:
        main = measure or "percent_of_parent"
        if table is not None and main not in table.columns:
            raise ReportError(f"report: measure {main!r} is not a column of the population table")
        baseline = "baseline"
        compared: dict[str, Any] = {"key": {"none": comparison_note or NO_COMPARISON}}
        title = title or "Immune profiling: population tables"
    else:
        if measure is not None and measure not in cmp.measures:
            raise ComparisonError(f"report: measure {measure!r} not compared; have {cmp.measures}")
        main = measure or cmp.measures[0]
        baseline = cmp.baseline
        compared = _comparison_context(cmp, table, qc, truth, main, measure, endpoints,
                                       comparison_note)  # fmt: skip
        title = title or "Immune profiling: change from baseline"

    coh_mat = _cohort_matrix(table, cohort, baseline)
    clash = (
        errors is not None
        and len(errors)
        and "error_type" in errors.columns
        and errors["error_type"].eq(CLASH_ERROR).any()
    )
    n_err = 0 if errors is None else len(errors)
    cohort_ctx = {
        "matrix": _table(coh_mat, index=True) if coh_mat is not None else None,
        "files": _table(cohort) if cohort is not None and len(cohort) else None,
        "errors": _table(errors) if n_err else None,
        "errors_heading": f"{'Files that failed or share an identity' if clash else 'Files that failed'} ({n_err})",
        "problems": _table(cmp.problems) if cmp is not None and len(cmp.problems) else None,
        # the comparison checks every patient has every visit; without one, nothing is said
        "checked": cmp is not None,
    }

    pages = _gating_pages(gating_images, qc, cohort, table)
    n_files = 0
    if cohort is not None and "sample" in cohort.columns:
        n_files = cohort["sample"].nunique()
    elif table is not None and "sample" in table.columns:
        n_files = table["sample"].nunique()
    flagged = qc if qc is not None and len(qc) else None
    gating_ctx = {
        "flags": _table(flagged) if flagged is not None else None,
        "n_flagged": flagged["sample"].nunique()
        if flagged is not None and "sample" in flagged
        else 0,
        "n_files": n_files if qc is not None or pages else 0,
        "pages": pages,
    }

    cl_table = _table(agreement) if agreement is not None and len(agreement) else None
    clustering_ctx = {
        "table": cl_table,
        "naming_note": _naming_note(agreement) if cl_table is not None else "",
        "figures": [_figure(png, name, name) for name, png in (clustering_images or {}).items()],
    }

    recorded = prov.pop("versions", None)
    versions = pd.DataFrame(
        list((recorded or software_versions()).items()), columns=["software", "version"]
    )
    items = []
    for k, v in prov.items():
        if k == "command":
            continue
        label = k.replace("_", " ")
        if isinstance(v, (str, int, float)):
            items.append({"kind": "text", "label": label, "value": v})
        elif k == "template":
            items.append({"kind": "block", "label": label, "value": _dict_text(v)})
        else:
            items.append({"kind": "table", "label": label, "value": _table(_as_frame(v))})
    fg = _as_frame(fitted_gates)
    provenance_ctx = {
        "command": command,
        "versions": _table(versions),
        "entries": items,
        "processing": _processing(processing),
        "fitted": _table(fg) if fg is not None and len(fg) else None,
        "fitted_folded": fg is not None and len(fg) > 60,
    }

    review = _review(qc, errors, table, {p["sample"] for p in pages})
    sections = [
        s
        for s in SECTION_HEADINGS
        if (s != "review" or review is not None) and (cmp is not None or s not in COMPARED)
    ]
    return {
        "title": title,
        "now": now,
        "version": software_versions()["immunoprofile"],
        "css": _CSS,
        "sections": sections,
        "headings": SECTION_HEADINGS,
        "review": review,
        "truth": None,
        "plots": [],
        "stats": None,
        "changes": None,
        **compared,
        "cohort": cohort_ctx,
        "visits": _per_visit_tables(table, main, baseline),
        "visits_note": value_label(main, "its parent"),
        "gating": gating_ctx,
        "clustering": clustering_ctx,
        "provenance": provenance_ctx,
    }


def _comparison_context(
    cmp: Comparison,
    table: pd.DataFrame | None,
    qc: pd.DataFrame | None,
    truth: pd.DataFrame | None,
    main: str,
    measure: str | None,
    endpoints: Sequence[str],
    comparison_note: str | None,
) -> dict[str, Any]:
    """The parts of the report a comparison gives: key results (with the known truth of a
    simulated cohort), plots, statistics and the change table."""
    pops = set(cmp.stats["population"])
    eps = [p for p in endpoints if p in pops] or population_order(cmp.stats["population"])[:4]
    measures = endpoint_measures(eps, cmp.measures, measure)
    ep_stats = cmp.stats[cmp.stats["population"].isin(eps)]
    n_main = int(ep_stats["n_pairs"].max()) if len(ep_stats) else 0

    used = list(dict.fromkeys(measures.values()))
    measure_note = (
        "Values: "
        + "; ".join(
            f"{', '.join(p for p in eps if measures[p] == m)} as {m.replace('_', ' ')} "
            f"({MEASURE_UNITS.get(m, '')})"
            for m in used
        )
        + "."
    )
    key = {
        "baseline": cmp.baseline,
        "followup": ", ".join(cmp.followup),
        "measure_note": measure_note,
        "source_note": comparison_note or "",
        **_key_results(cmp, eps, measures, table, qc),
        "columns_note": (
            f"value: what each number is (unit and parent). events/file: the events in the "
            f"endpoint's gate in each file of the two visits, minimum and median "
            f"(highlighted under {SMALL_COUNT}). QC: files with a QC flag on the endpoint, "
            "one of its parent gates or the whole file (see Files to review)."
        ),
        "hl_note": HL_NOTE,
        "exact_note": exact_test_statement(n_main, len(eps)),
    }

    st_cols = [
        c
        for c in (
            "method population parent measure followup_visit n_pairs median_baseline "
            "median_followup median_change hl_estimate hl_ci_low hl_ci_high ci_level direction "
            "test p_value q_value geo_mean_fold_change t_p_value"
        ).split()
        if c in cmp.stats.columns
    ]
    ordered = cmp.stats.assign(_ep=~cmp.stats["population"].isin(eps))
    main_st = ordered[ordered["measure"] == main].sort_values("_ep", kind="stable")
    stats_ctx = {
        "main": _table(main_st[st_cols]),
        "others": [
            {"measure": m, "table": _table(cmp.stats[cmp.stats["measure"] == m][st_cols])}
            for m in cmp.measures
            if m != main
        ],
    }
    ch = cmp.changes
    changes_ctx = {
        "unit": MEASURE_UNITS.get(main, ""),
        "main": _table(ch[(ch["measure"] == main) & ch["population"].isin(eps)]),
        "all": _table(ch, max_rows=5000),
        "n_all": len(ch),
    }

    return {
        "key": key,
        "truth": _truth(truth, eps, measures) if truth is not None and len(truth) else None,
        "plots": _figures(cmp, measures, eps),
        "stats": stats_ctx,
        "changes": changes_ctx,
    }


def render_report(context: Mapping[str, Any]) -> str:
    """The report's HTML from `report_context`'s data, through the Jinja2 template."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HTML_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("report.html.j2").render(**context)


def build_report(
    path: str | PathLike,
    comparison: Comparison | None,
    table: pd.DataFrame | None = None,
    **kwargs: Any,
) -> Path:
    """Write the self-contained HTML report and return its path.

    Parameters
    ----------
    path : the ``.html`` file to write (atomically).
    comparison : the `Comparison` to report; None for a report of gated or clustered
        populations alone (no key results, plots, statistics or change table; the
        ``comparison_note`` in their place).
    table : the population table the comparison came from (for the cohort, the events
        behind each endpoint and the per-visit tables).
    cohort : one row per file (``sample``, ``patient``, ``visit``, ``events``, ``file``).
    qc, errors, fitted_gates : gating QC flags, files that failed, fitted gate positions.
    gating_images : sample name -> ``{population: PNG bytes}`` (one figure per gate, drawn
        on the file's gating page) or the PNG bytes of one grid figure.
    agreement : gating-vs-clustering agreement table; clustering_images : name -> PNG.
    truth : for simulated cohorts, the known change per population beside the measured one.
    provenance : template, transforms, compensation, settings (rendered as given).
    processing : per file, the compensation and transforms applied before gating, as
        `GateResults.provenance()` or ``provenance.json`` gives them (a per-file table,
        with the per-channel transform parameters below it).
    command : the command line that produced the results.
    measure : the measure of every endpoint, the tables and the figures (default: B and
        NK as % of lymphocytes, the others as % of parent; see `endpoint_measures`).
    endpoints : populations the headline leads with (default Treg, Th17, B, NK).
    comparison_note : where the comparison comes from when it was not read as written
        (shown above the key results); without a comparison, why there is none.
    """
    doc = render_report(report_context(comparison, table, **kwargs))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, doc)


# --- from a results directory -----------------------------------------------------------


def _read_csv(path: Path | None, **kw: Any) -> pd.DataFrame | None:
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ParserError is a ValueError
        raise ReportError(f"{path}: cannot be read as CSV ({exc})") from None


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the results folder, or `ReportError` naming the file."""
    return read_json_object(path, ReportError)


def _fitted_gates_file(path: Path) -> pd.DataFrame:
    """The fitted-gates table of a ``gates.json``, or `ReportError` naming the file."""
    data = _read_json(path)
    if not isinstance(data.get("samples", {}), dict):
        raise ReportError(
            f"{path}: 'samples' should map each sample to its fitted gates, found "
            f"{type(data.get('samples')).__name__}; not a gates.json written by immunoprofile"
        )
    try:
        return fitted_gates_table(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ReportError(
            f"{path}: not a gates.json written by immunoprofile ({type(exc).__name__}: {exc})"
        ) from None


def _images(folder: Path | None, limit: int = 60) -> dict[str, bytes]:
    if folder is None or not folder.is_dir():
        return {}
    files = sorted(folder.glob("*.png"), key=lambda p: p.name)[:limit]
    return {p.stem: p.read_bytes() for p in files}


def read_gating_images(folder: Path | None, limit: int = 500) -> dict[str, Any]:
    """Gating figures of a ``plots/`` folder: ``<sample>/<NN>_<population>.png`` (one per
    gate, as `immunoprofile.gate` writes them) become ``{sample: {name: png}}``; a
    ``<sample>.png`` grid becomes ``{sample: png}``. At most ``limit`` files."""
    if folder is None or not folder.is_dir():
        return {}
    out: dict[str, Any] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        pngs = sorted(sub.glob("*.png"), key=lambda p: p.name)
        if pngs:
            out[sub.name] = {p.stem: p.read_bytes() for p in pngs}
    for p in sorted(folder.glob("*.png"), key=lambda p: p.name):
        out.setdefault(p.stem, p.read_bytes())
    return dict(list(out.items())[:limit])


def gate_summary(gate: Any, digits: int = 4) -> str:
    """One line for a fitted gate: type, dimensions and its numbers (long vertex lists are
    given as a count, so a polygon does not fill the page)."""
    if not isinstance(gate, Mapping):
        return str(gate)
    parts = [str(gate.get("type", "gate"))]
    dims = gate.get("dims") or gate.get("dimensions")
    if dims:
        parts.append("on " + " x ".join(map(str, dims)))
    for k, v in gate.items():
        if k in ("type", "dims", "dimensions"):
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k}={v:.{digits}g}")
        elif isinstance(v, (list, tuple)):
            flat = np.asarray(v, dtype=object).ravel()
            nums = all(isinstance(x, (int, float)) or x is None for x in flat)
            if nums and len(flat) <= 6:
                shown = ", ".join("-" if x is None else f"{x:.{digits}g}" for x in flat)
                parts.append(f"{k}=[{shown}]")
            else:
                parts.append(f"{k}=<{len(v)} items>")
        elif isinstance(v, Mapping):
            parts.append(f"{k}=({gate_summary(v, digits)})")
        elif v is not None:
            parts.append(f"{k}={v}")
    return ", ".join(parts)


def fitted_gates_table(gates: Mapping[str, Any]) -> pd.DataFrame:
    """Flatten ``gates.json`` (``{template, samples: {sample: {file, patient, visit,
    events, gates: {population: fitted}}}}``) to one row per sample x fitted gate."""
    samples = gates.get("samples", gates) if isinstance(gates, Mapping) else {}
    rows = []
    for sample, info in samples.items():
        if not isinstance(info, Mapping):
            continue
        fitted = info.get("gates", {})
        items = fitted.items() if isinstance(fitted, Mapping) else enumerate(fitted)
        for pop, val in items:
            rows.append(
                {
                    "sample": sample,
                    "patient": info.get("patient", ""),
                    "visit": info.get("visit", ""),
                    "population": pop,
                    "fitted": gate_summary(val),
                }
            )
    return pd.DataFrame(rows, columns=["sample", "patient", "visit", "population", "fitted"])


def report_from_dir(
    directory: str | PathLike,
    out: str | PathLike | None = None,
    baseline: str | None = None,
    followup: str | Sequence[str] | None = None,
    measure: str | None = None,
    command: str | None = None,
) -> Path:
    """Build the report from a results directory and return the HTML path.

    The folder is read by its one definition (`immunoprofile.folder.ResultsFolder`):
    what ``immunoprofile run`` wrote (``run.json``, ``gating/``, ``clustering/``,
    ``comparison/``), or the folder of one ``gate``, ``cluster`` or ``compare``, each
    output by the name its writer gave it (``qc.csv``, ``errors.csv``, ``gates.json``,
    ``samples.csv``, ``provenance.json``, ``plots/``, ``agreement.csv``...).

    What the report holds, by the folder:

    * a ``run`` folder, or a ``compare`` folder: the comparison as written, with key
      results, plots, statistics and the change table;
    * a ``gate`` or ``cluster`` folder (no comparison written): what was written, the
      cohort, per-visit tables, gating and clustering, and a note in place of the key
      results saying no comparison was written and how to get one; nothing is computed;
    * any folder with ``baseline``/``followup`` given: the comparison computed from the
      population table with those visits, and the report says so at the top.

    The report is written to ``out`` or ``DIR/report.html``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ImmunoprofileError(f"{d}: results directory not found")
    refuse_incomplete(d, "results")
    folder = ResultsFolder.read(d)
    run = {}
    if folder.path("run", "run") is not None:
        run = _read_json(d / RUN["run"])
    pop_path = folder.path("gating", "populations")
    if pop_path is None and folder.stages.get("clustering") == d:
        pop_path = folder.path("clustering", "populations")  # a cluster folder's own table
    saved = folder.path("comparison", "comparison")
    if pop_path is None and saved is not None:
        ref = _read_json(saved).get("populations")
        pop_path = Path(ref) if ref else None
    table = _read_csv(pop_path, dtype={"patient": str, "visit": str, "sample": str})
    stats = folder.path("comparison", "stats")
    asked = baseline is not None or followup is not None
    note = None
    if stats is not None and not asked:
        cmp = Comparison.read(stats.parent)  # the comparison as written
    elif table is not None and asked:
        cmp = compare(
            table,
            baseline=baseline or run.get("baseline", "baseline"),
            followup=followup if followup is not None else run.get("followup"),
        )
        note = computed_comparison_note(cmp, pop_path, stats)
        log.warning("%s", note)
    elif table is not None:
        cmp = None  # a gate or cluster folder: its tables as written, no comparison
        note = no_comparison_note(folder, pop_path)
    else:
        raise ComparisonError(
            f"{d}: no populations.csv (in {d} or {d / 'gating'}) and no saved comparison "
            "(stats.csv); run `immunoprofile gate` or `immunoprofile compare` first"
        )
    qc = _read_csv(folder.path("gating", "qc"))
    errors = _read_csv(folder.path("gating", "errors"))
    fg_path = folder.path("gating", "gates")
    fitted = _fitted_gates_file(fg_path) if fg_path is not None else None
    cohort = _read_csv(folder.path("gating", "samples"))
    gimg_dir = folder.path("gating", "plots") or folder.path("run", "plots")
    cldir = folder.stages.get("clustering")
    agreement = _read_csv(folder.path("clustering", "agreement"))
    cl_imgs = {}
    if cldir is not None:
        cl_imgs = _images(folder.path("clustering", "plots") or cldir, limit=6)
    truth = _read_csv(folder.path("run", "truth_check"))
    gdir = folder.stages.get("gating")
    files_prov = None
    if gdir is not None:
        files_prov = _read_csv(gdir / FILE_PROVENANCE, dtype={"fcs_version": str, "date": str})
    processing = None
    prov_path = folder.path("gating", "provenance")
    if prov_path is not None:
        processing = _read_json(prov_path)
    prov = {k: v for k, v in run.items() if k not in ("baseline", "followup")}
    if files_prov is not None:
        prov["files: acquisition and compensation source"] = files_prov
    if not command:
        command = run.get("command")
    return build_report(
        Path(out) if out else d / "report.html",
        cmp,
        table,
        cohort=cohort,
        qc=qc,
        errors=errors,
        fitted_gates=fitted,
        gating_images=read_gating_images(gimg_dir),
        agreement=agreement,
        clustering_images=cl_imgs,
        truth=truth,
        provenance=prov,
        processing=processing,
        command=command,
        measure=measure,
        comparison_note=note,
    )


def no_comparison_note(folder: ResultsFolder, table: Path | None) -> str:
    """What a report of a folder without a comparison says in place of key results:
    which writer's folder it is and how to get a comparison."""
    stage = "clustering" if folder.stages.get("clustering") == folder.root else "gating"
    writer = WRITERS[stage]
    return (
        f"No comparison was written in this folder (the folder of `{writer}`), so this "
        "report shows what was written: the cohort, the population tables, gating and "
        "clustering, without change from baseline or statistics. "
        f"`immunoprofile compare {table} --out DIR` writes a comparison and its report; "
        f"`immunoprofile report {folder.root} --baseline VISIT` computes one into this report."
    )


def computed_comparison_note(cmp: Comparison, table: Path | None, written: Path | None) -> str:
    """What a report says when its comparison was not read from the folder: none was
    written (a gate or cluster folder), or another baseline or follow-up was asked for
    than the one written (``written``: its ``stats.csv``)."""
    how = f"baseline {cmp.baseline}, follow-up {', '.join(cmp.followup) or '-'}"
    if written is None:
        return (
            f"No comparison was written in this folder: the statistics of this report were "
            f"computed for it from {table} ({how}); `immunoprofile compare` writes one to keep."
        )
    return (
        f"Not the comparison written in {written.parent}: the statistics of this report were "
        f"computed again from {table} with the visits asked for ({how})."
    )


def embedded_images(html_text: str) -> list[bytes]:
    """Decode every base64 PNG embedded in a report (used by the tests and for checks)."""
    return [
        base64.b64decode(m)
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
    ]
