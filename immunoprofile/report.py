"""One self-contained HTML report of a longitudinal immune-profiling analysis.

The report is a single ``.html`` file, figures embedded as base64 PNG and no external
style sheet or script, so it can be emailed and opened in any browser. It leads with the
effect sizes (Hodges–Lehmann median change with exact confidence intervals) for the
trial's endpoints, says plainly what a cohort of n patients can and cannot show with exact
tests, and then gives everything needed to check the numbers: the cohort (patients ×
visits, events per file), per-visit tables, the change table, the full statistics, the
plots, gating QC thumbnails and flags, clustering agreement, and provenance (software
versions, template, transforms, compensation and fitted gates per file, and the command
that produced it).

`build_report` takes the results as Python objects; `report_from_dir` collects them from a
results directory written by ``immunoprofile run`` / ``immunoprofile demo`` (or by
``immunoprofile gate`` + ``immunoprofile compare``).
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import platform
import re
from collections.abc import Mapping, Sequence
from importlib import metadata
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile._files import atomic_write_text
from immunoprofile.cohort import CLASH_ERROR
from immunoprofile.compare import (
    ENDPOINTS,
    MEASURE_UNITS,
    Comparison,
    compare,
    population_order,
    visit_sort_key,
)
from immunoprofile.exceptions import ComparisonError, ImmunoprofileError

VERSIONED = (
    "immunoprofile",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "matplotlib",
    "umap-learn",
)

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1180px;
margin:1.5em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;
margin-top:1.8em}h3{margin-bottom:.3em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:right;white-space:nowrap}
.tw{overflow-x:auto;max-width:100%}
th{background:#f3f5f7}td.l,th.l{text-align:left}
tr:nth-child(even) td{background:#fafafa}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.6em 1em;margin:1em 0}
.ok{color:#1b7f3b}.bad{color:#b00020}.muted{color:#777;font-size:.9em}
.up{color:#b2182b;font-weight:600}.down{color:#2166ac;font-weight:600}
img{max-width:100%}figure{margin:1em 0}figcaption{font-size:.85em;color:#555}
.thumbs{display:flex;flex-wrap:wrap;gap:8px}.thumbs figure{width:380px;margin:0}
details{margin:.5em 0 1em}summary{cursor:pointer;color:#1f4e79}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;font-size:.8em}
nav a{margin-right:.8em}
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _img(png: bytes, alt: str, caption: str = "", width: str | None = None) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    style = f' style="width:{width}"' if width else ""
    cap = f"<figcaption>{_esc(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{_esc(alt)}" src="data:image/png;base64,{b64}"{style}>{cap}</figure>'


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "n/a"
        if v != 0 and (abs(v) < 10**-(digits) or abs(v) >= 1e6):
            return f"{v:.{digits}g}"
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}" if abs(int(v)) >= 10000 else str(int(v))
    if isinstance(v, float) and np.isnan(v):
        return "n/a"
    return str(v)


def _table(df: pd.DataFrame, digits: int = 3, index: bool = False, max_rows: int = 2000) -> str:
    """An HTML table: text left-aligned, numbers right-aligned and rounded."""
    if df is None or len(df) == 0:
        return '<p class="muted">(none)</p>'
    d = df.reset_index() if index else df
    d = d.head(max_rows)
    head = "".join(
        f'<th class="{"l" if not pd.api.types.is_numeric_dtype(d[c]) else ""}">{_esc(c)}</th>'
        for c in d.columns
    )
    body = []
    numeric = {c: pd.api.types.is_numeric_dtype(d[c]) for c in d.columns}
    for row in d.itertuples(index=False):
        cells = []
        for c, v in zip(d.columns, row):
            if numeric[c]:
                cells.append(f"<td>{_esc(_fmt(v, digits))}</td>")
            else:
                txt = "" if (v is None or (isinstance(v, float) and np.isnan(v))) else v
                cls = "l"
                if c == "direction" and txt in ("up", "down"):
                    cls += f" {txt}"
                cells.append(f'<td class="{cls}">{_esc(txt)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = (
        f'<p class="muted">first {max_rows} of {len(df)} rows shown</p>'
        if len(df) > max_rows
        else ""
    )
    return (
        f'<div class="tw"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>{more}"
    )


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages the analysis depends on."""
    out = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "immunoprofile":
                from immunoprofile import __version__

                out[name] = f"{__version__} (source tree)"
            else:
                out[name] = "not installed"
    return out


def exact_test_statement(n: int, n_endpoints: int = 4, alpha: float = 0.05) -> str:
    """Plain-language statement of the smallest attainable exact p for n pairs and what
    that means for a Bonferroni/Holm correction over ``n_endpoints`` endpoints."""
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


def _key_results(cmp: Comparison, endpoints: list[str], measure: str) -> str:
    """Headline table: effect size and exact CI first, p and q after."""
    s = cmp.stats
    if "method" in s.columns:
        s = s[s["method"] == sorted(s["method"].unique())[0]]
    unit = MEASURE_UNITS.get(measure, "")
    abbrev = {"percentage points": "pp"}.get(unit, unit)
    rows, summary = [], []
    for visit in cmp.followup:
        for pop in endpoints:
            r = s[
                (s["population"] == pop)
                & (s["measure"] == measure)
                & (s["followup_visit"] == visit)
            ]
            if r.empty:
                continue
            r = r.iloc[0]
            if np.isfinite(r["hl_ci_low"]):
                ci = f"{r['hl_ci_low']:+.2f} to {r['hl_ci_high']:+.2f}"
                level = f"{100 * r['ci_level']:.1f}%"
            else:
                ci, level = "none at this n", ""
            word = {"up": "increased", "down": "decreased", "CI includes 0": "no clear change"}
            verdict = word.get(r["direction"], r["direction"])
            rows.append(
                {
                    "population": pop,
                    "parent": r["parent"],
                    "visit": visit,
                    "n pairs": int(r["n_pairs"]),
                    "median baseline": r["median_baseline"],
                    "median follow-up": r["median_followup"],
                    f"HL median change ({abbrev})": r["hl_estimate"],
                    "exact CI": ci,
                    "CI level": level,
                    "patients": _patients_moving(cmp.changes, pop, measure, visit),
                    "direction": r["direction"],
                    "exact p": _fmt(r["p_value"], 3)
                    if np.isnan(r["p_value"])
                    else f"{r['p_value']:.3g}",
                    "BH q": _fmt(r["q_value"], 3)
                    if np.isnan(r["q_value"])
                    else f"{r['q_value']:.3g}",
                }
            )
            summary.append(f"{pop} {verdict} ({r['hl_estimate']:+.2f} {abbrev} at {visit})")
    if not rows:
        return '<p class="muted">(none)</p>'
    lead = "<p><b>In short:</b> " + _esc("; ".join(summary)) + ".</p>"
    return lead + _table(pd.DataFrame(rows), 2)


def _truth_section(truth: pd.DataFrame, endpoints: list[str], measure: str) -> str:
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
            head = head[head["measure"] == measure]
    return (
        "<h3>Known truth of the simulated cohort</h3><p>The cohort was simulated with known "
        "population frequencies. <i>true_change</i> is the Hodges–Lehmann median change of "
        "the true frequencies, <i>measured_change</i> that of the analysed files with its "
        "exact CI; <i>true_in_ci</i> says whether the CI covers the truth.</p>"
        + _table(head[cols], 3)
        + "<details><summary>Every population and measure</summary>"
        + _table(t[cols], 3)
        + "</details>"
    )


def _thumbnail(png: bytes, width: int = 380) -> bytes:
    """A smaller PNG (at most ``width`` pixels wide, 96 colours) so the report stays small
    enough to email; the original is returned when Pillow cannot read it."""
    try:
        import io

        from PIL import Image

        im = Image.open(io.BytesIO(png)).convert("RGB")
        if im.width > width:
            im = im.resize((width, max(1, round(im.height * width / im.width))), Image.LANCZOS)
        im = im.quantize(colors=96, method=Image.Quantize.MEDIANCUT)
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


def _per_visit_tables(table: pd.DataFrame, measure: str, baseline: str) -> str:
    if table is None or measure not in table.columns:
        return '<p class="muted">(no population table)</p>'
    t = table.dropna(subset=["patient", "visit"])
    if "method" in t.columns:
        t = t[t["method"] == sorted(t["method"].astype(str).unique())[0]]
    out = []
    visits = sorted(t["visit"].astype(str).unique(), key=lambda v: visit_sort_key(v, baseline))
    for v in visits:
        tv = t[t["visit"].astype(str) == v]
        wide = tv.pivot_table(index="patient", columns="population", values=measure)
        wide = wide.reindex(columns=population_order(tv["population"]))
        out.append(f"<h3>{_esc(v)} ({_esc(measure)})</h3>" + _table(wide, 2, index=True))
    return "".join(out)


def _figures(cmp: Comparison, measure: str, endpoints: list[str]) -> str:
    from immunoprofile.plots import paired

    parts = []
    method = None
    if "method" in cmp.stats.columns:
        method = sorted(cmp.stats["method"].unique())[0]
    fig = paired.forest_plot(cmp.stats, measure, populations=endpoints or None, method=method)
    parts.append(
        _img(
            paired.figure_bytes(fig),
            "forest plot",
            "Hodges–Lehmann median change from baseline with exact confidence interval, per "
            "population (n pairs and exact p at the right). The dashed line is no change.",
        )
    )
    if endpoints and len(set(cmp.stats["population"])) > len(endpoints):
        fig = paired.forest_plot(cmp.stats, measure, method=method)
        parts.append(
            "<details><summary>Forest plot of every population</summary>"
            + _img(paired.figure_bytes(fig, dpi=90), "forest plot, all populations")
            + "</details>"
        )
    if endpoints:
        fig = paired.paired_plot(cmp.changes, measure, populations=endpoints, method=method)
        parts.append(
            _img(paired.figure_bytes(fig), "paired plot", "Endpoints, one line per patient.")
        )
    for visit in cmp.followup:
        fig = paired.log2_heatmap(cmp.changes, measure, visit, method=method)
        parts.append(
            _img(
                paired.figure_bytes(fig),
                "log2 heatmap",
                f"log2({visit} / {cmp.baseline}) per patient and population; grey = no pair.",
            )
        )
    fig = paired.paired_plot(cmp.changes, measure, method=method, ncols=5)
    parts.append(
        "<details><summary>Paired plots for every population</summary>"
        + _img(paired.figure_bytes(fig, dpi=80), "all paired plots")
        + "</details>"
    )
    return "".join(parts)


def _dict_block(obj: Any) -> str:
    try:
        text = json.dumps(obj, indent=2, default=str)
    except TypeError:
        text = str(obj)
    return f"<pre>{_esc(text)}</pre>"


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
    from immunoprofile.clustering.agreement import by_construction

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


def build_report(
    path: str | PathLike,
    comparison: Comparison,
    table: pd.DataFrame | None = None,
    *,
    cohort: pd.DataFrame | None = None,
    qc: pd.DataFrame | None = None,
    errors: pd.DataFrame | None = None,
    fitted_gates: pd.DataFrame | Mapping | None = None,
    gating_images: Mapping[str, bytes] | None = None,
    agreement: pd.DataFrame | None = None,
    clustering_images: Mapping[str, bytes] | None = None,
    truth: pd.DataFrame | None = None,
    provenance: Mapping[str, Any] | None = None,
    processing: Mapping[str, Any] | None = None,
    command: str | None = None,
    measure: str | None = None,
    endpoints: Sequence[str] = ENDPOINTS,
    title: str = "Immune profiling: change from baseline",
) -> Path:
    """Write the self-contained HTML report and return its path.

    Parameters
    ----------
    path : the ``.html`` file to write (atomically).
    comparison : the `Comparison` to report.
    table : the population table the comparison came from (for the cohort and per-visit
        tables).
    cohort : one row per file (``sample``, ``patient``, ``visit``, ``events``, ``file``).
    qc, errors, fitted_gates : gating QC flags, files that failed, fitted gate positions.
    gating_images : sample name -> PNG bytes of its gating plot (shown as thumbnails).
    agreement : gating-vs-clustering agreement table; clustering_images : name -> PNG.
    truth : for simulated cohorts, the known change per population beside the measured one.
    provenance : template, transforms, compensation, settings (rendered as given).
    processing : per file, the compensation and transforms applied before gating, as
        `GateResults.provenance()` or ``provenance.json`` gives them (a per-file table,
        with the per-channel transform parameters below it).
    command : the command line that produced the results.
    measure : the measure the headline and figures use (default: the first compared).
    endpoints : populations the headline leads with (default Treg, Th17, B, NK).
    """
    cmp = comparison
    measure = measure or cmp.measures[0]
    if measure not in cmp.measures:
        raise ComparisonError(f"report: measure {measure!r} not compared; have {cmp.measures}")
    pops = set(cmp.stats["population"])
    eps = [p for p in endpoints if p in pops] or population_order(cmp.stats["population"])[:4]
    prov = dict(provenance or {})
    command = command or prov.get("command")
    ep_stats = cmp.stats[cmp.stats["population"].isin(eps) & (cmp.stats["measure"] == measure)]
    n_main = int(ep_stats["n_pairs"].max()) if len(ep_stats) else 0
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    sec: list[tuple[str, str, str]] = []  # (anchor, heading, html)
    # --- key results
    key = (
        f"<p>Measure: <b>{_esc(measure)}</b> ({_esc(MEASURE_UNITS.get(measure, ''))}); "
        f"baseline <b>{_esc(cmp.baseline)}</b>, follow-up "
        f"<b>{_esc(', '.join(cmp.followup))}</b>.</p>"
        + _key_results(cmp, eps, measure)
        + f'<div class="note">{exact_test_statement(n_main, len(eps))}</div>'
    )
    if truth is not None and len(truth):
        key += _truth_section(truth, eps, measure)
    sec.append(("key", "Key results", key))
    # --- cohort
    mat = _cohort_matrix(table, cohort, cmp.baseline)
    coh = _table(mat, index=True) if mat is not None else '<p class="muted">(no cohort table)</p>'
    if cohort is not None and len(cohort):
        coh += "<details><summary>Files</summary>" + _table(cohort) + "</details>"
    if errors is not None and len(errors):
        clash = (
            errors["error_type"].eq(CLASH_ERROR).any() if "error_type" in errors.columns else False
        )
        what = "Files that failed or share an identity" if clash else "Files that failed"
        coh += f"<h3 class='bad'>{what} ({len(errors)})</h3>" + _table(errors)
    prob = cmp.problems
    coh += (
        f"<h3>Problems found by the comparison ({len(prob)})</h3>" + _table(prob)
        if len(prob)
        else "<p class='ok'>Every patient has every visit; no identity problems.</p>"
    )
    sec.append(("cohort", "Cohort", coh))
    # --- plots
    sec.append(("plots", "Plots", _figures(cmp, measure, eps)))
    # --- statistics
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
    main_st = ordered[ordered["measure"] == measure].sort_values("_ep", kind="stable")
    stx = (
        "<p>Per population: pairs with both visits, medians, the median of the paired "
        "differences, the Hodges–Lehmann estimate (median of Walsh averages) with its exact "
        "confidence interval (<i>ci_level</i> is the exact coverage attained), the exact "
        "two-sided p-value and which test gave it (exact Wilcoxon signed-rank when there "
        "are no ties or zero differences, otherwise the exact sign-flip permutation test "
        "of the mid-rank statistic over all 2<sup>n</sup> sign patterns), Benjamini–Hochberg "
        "q across populations (within each measure and visit), and, as a parametric "
        "secondary, the geometric mean fold change and paired t-test p on log2 ratios.</p>"
        + _table(main_st[st_cols])
    )
    others = [m for m in cmp.measures if m != measure]
    for m in others:
        stx += (
            f"<details><summary>Statistics on {_esc(m)}</summary>"
            + _table(cmp.stats[cmp.stats["measure"] == m][st_cols])
            + "</details>"
        )
    sec.append(("stats", "Statistics", stx))
    # --- change table
    ch = cmp.changes
    ch_main = ch[(ch["measure"] == measure) & ch["population"].isin(eps)]
    chx = (
        f"<p>Per patient: baseline and follow-up values, difference ({_esc(MEASURE_UNITS.get(measure, ''))}), "
        "fold change and log2 ratio. Missing visits are kept as rows with a status.</p>"
        + _table(ch_main)
        + "<details><summary>Every population and measure "
        f"({len(ch)} rows)</summary>" + _table(ch, max_rows=5000) + "</details>"
    )
    sec.append(("changes", "Change table", chx))
    # --- per-visit tables
    sec.append(("visits", "Per-visit tables", _per_visit_tables(table, measure, cmp.baseline)))
    # --- gating QC
    gq = ""
    if qc is not None and len(qc):
        flag_cols = [c for c in qc.columns if "flag" in c.lower() or "warn" in c.lower()]
        flagged = qc
        if flag_cols:
            f = qc[flag_cols].fillna("").astype(str)
            mask = f.apply(lambda s: ~s.isin(["", "False", "false", "0", "[]", "nan"])).any(axis=1)
            flagged = qc[mask]
        gq += f"<h3>Flags ({len(flagged)} of {len(qc)} rows flagged)</h3>" + _table(flagged)
        gq += "<details><summary>Full QC table</summary>" + _table(qc) + "</details>"
    if gating_images:
        thumbs = "".join(
            _img(_thumbnail(png), f"gating {name}", str(name))
            for name, png in gating_images.items()
        )
        gq += f'<h3>Gating plots</h3><div class="thumbs">{thumbs}</div>'
    sec.append(("qc", "Gating QC", gq or '<p class="muted">(no gating QC given)</p>'))
    # --- clustering
    cl = ""
    if agreement is not None and len(agreement):
        cl += "<p>Agreement between template gating and unsupervised clustering.</p>"
        cl += _naming_note(agreement)
        cl += _table(agreement)
    if clustering_images:
        cl += "".join(_img(png, name, name) for name, png in clustering_images.items())
    sec.append(("clustering", "Clustering agreement", cl or '<p class="muted">(no clustering)</p>'))
    # --- provenance
    recorded = prov.pop("versions", None)
    versions = pd.DataFrame(
        list((recorded or software_versions()).items()), columns=["software", "version"]
    )
    pv = (
        f"<p>Report written {now}.</p>"
        + (f"<h3>Command</h3><pre>{_esc(command)}</pre>" if command else "")
        + "<h3>Software</h3>"
        + _table(versions)
    )
    for k, v in prov.items():
        if k == "command":
            continue
        frame = _as_frame(v) if not isinstance(v, (str, int, float)) else None
        label = _esc(k.replace("_", " "))
        if isinstance(v, (str, int, float)):
            pv += f"<p><b>{label}</b>: {_esc(v)}</p>"
        elif k in ("template",):
            pv += f"<details><summary>{label}</summary>{_dict_block(v)}</details>"
        else:
            pv += f"<h3>{label}</h3>" + _table(frame)
    pv += _processing_section(processing)
    fg = _as_frame(fitted_gates)
    if fg is not None and len(fg):
        pv += "<h3>Fitted gates per file</h3>" + (
            _table(fg)
            if len(fg) <= 60
            else f"<details><summary>{len(fg)} rows</summary>{_table(fg)}</details>"
        )
    sec.append(("provenance", "Provenance", pv))

    nav = "".join(f'<a href="#{a}">{_esc(h)}</a>' for a, h, _ in sec)
    body = "".join(f'<h2 id="{a}">{_esc(h)}</h2>{content}' for a, h, content in sec)
    doc = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_esc(title)}</h1><p class='muted'>{_esc(now)} · immunoprofile "
        f"{_esc(software_versions()['immunoprofile'])}</p><nav>{nav}</nav>{body}</body></html>"
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(out, doc)


def _processing_section(processing: Mapping[str, Any] | None) -> str:
    """Per file: compensation source and transforms with parameters (from provenance)."""
    if not processing:
        return ""
    from immunoprofile.gating.run import provenance_table, transform_table

    per_file = provenance_table(dict(processing))
    if per_file.empty:
        return ""
    per_channel = transform_table(dict(processing))
    html = (
        "<h3>Per-file processing: compensation and transforms</h3>"
        "<p>What each file went through before gating: the spillover matrix's source and "
        "how many detectors it compensated, and the transforms applied (channels grouped by "
        "identical parameters; Gating-ML 2.0 parameterisation).</p>"
        + _table(per_file.drop(columns=["file"]))
    )
    if len(per_channel):
        html += (
            f"<details><summary>Transform parameters per channel ({len(per_channel)} rows)"
            f"</summary>{_table(per_channel, max_rows=5000)}</details>"
        )
    return html


# --- from a results directory -----------------------------------------------------------


def _read_csv(path: Path | None, **kw: Any) -> pd.DataFrame | None:
    if path is None or not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        return pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        return None


def _first(d: Path, names: Sequence[str]) -> Path | None:
    for n in names:
        hits = sorted(d.glob(n))
        if hits:
            return hits[0]
    return None


def _images(folder: Path | None, limit: int = 60) -> dict[str, bytes]:
    if folder is None or not folder.is_dir():
        return {}
    files = sorted(folder.glob("*.png"), key=lambda p: p.name)[:limit]
    return {p.stem: p.read_bytes() for p in files}


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

    Looks for (each optional except a population table or a comparison):
    ``run.json`` (provenance), ``gating/`` or the directory itself for
    ``populations.csv``, ``qc*.csv``, ``errors*.csv``, ``fitted_gates*.csv|json``,
    ``provenance.json`` and ``plots/*.png``; ``comparison/`` (or the directory) for a saved `Comparison` (computed
    from the population table when absent); ``clustering/agreement*.csv`` and
    ``clustering/*.png``; ``truth_check.csv``. The report is written to ``out`` or
    ``DIR/report.html``.
    """
    d = Path(directory)
    if not d.is_dir():
        raise ImmunoprofileError(f"{d}: results directory not found")
    run = {}
    if (d / "run.json").is_file():
        run = json.loads((d / "run.json").read_text())
    gdir = d / "gating" if (d / "gating").is_dir() else d
    pop_path = _first(gdir, ["populations.csv"]) or _first(d, ["populations.csv"])
    saved = d / "comparison" / "comparison.json"
    saved = saved if saved.is_file() else d / "comparison.json"
    if pop_path is None and saved.is_file():
        ref = json.loads(saved.read_text()).get("populations")
        pop_path = Path(ref) if ref else None
    table = _read_csv(pop_path, dtype={"patient": str, "visit": str, "sample": str})
    cdir = next(
        (x for x in (d / "comparison", d) if (x / "stats.csv").is_file()),
        None,
    )
    if cdir is not None and baseline is None and followup is None:
        cmp = Comparison.read(cdir)
    elif table is not None:
        cmp = compare(
            table,
            baseline=baseline or run.get("baseline", "baseline"),
            followup=followup if followup is not None else run.get("followup"),
        )
    else:
        raise ComparisonError(
            f"{d}: no populations.csv (in {d} or {d / 'gating'}) and no saved comparison "
            "(stats.csv); run `immunoprofile gate` or `immunoprofile compare` first"
        )
    qc = _read_csv(_first(gdir, ["qc.csv", "qc*.csv"]))
    errors = _read_csv(_first(gdir, ["errors.csv", "errors*.csv"]))
    fg_path = _first(gdir, ["gates.json", "fitted_gates*.json", "fitted_gates*.csv"])
    fitted = None
    if fg_path is not None:
        fitted = (
            fitted_gates_table(json.loads(fg_path.read_text()))
            if fg_path.suffix == ".json"
            else _read_csv(fg_path)
        )
    cohort = _read_csv(_first(gdir, ["samples.csv", "cohort.csv", "files.csv"]))
    if cohort is None and qc is not None and {"sample"} <= set(qc.columns):
        ev = next((c for c in ("events", "n_events", "total_events") if c in qc.columns), None)
        if ev and table is not None:
            ids = table[["sample", "patient", "visit"]].drop_duplicates("sample")
            cohort = ids.merge(
                qc[["sample", ev]].drop_duplicates("sample"), on="sample", how="left"
            )
    gimg_dir = next((x for x in (gdir / "plots", d / "plots") if x.is_dir()), None)
    cldir = d / "clustering"
    agreement = _read_csv(_first(cldir, ["agreement*.csv"])) if cldir.is_dir() else None
    cl_imgs = _images(cldir / "plots" if (cldir / "plots").is_dir() else cldir, limit=6)
    truth = _read_csv(d / "truth_check.csv")
    files_prov = _read_csv(gdir / "file_provenance.csv", dtype={"fcs_version": str, "date": str})
    processing = None
    if (gdir / "provenance.json").is_file():
        processing = json.loads((gdir / "provenance.json").read_text(encoding="utf-8"))
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
        gating_images=_images(gimg_dir),
        agreement=agreement,
        clustering_images=cl_imgs,
        truth=truth,
        provenance=prov,
        processing=processing,
        command=command,
        measure=measure,
    )


def embedded_images(html_text: str) -> list[bytes]:
    """Decode every base64 PNG embedded in a report (used by the tests and for checks)."""
    return [
        base64.b64decode(m)
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
    ]
