"""Pictures of the longitudinal comparison: they read a `Comparison`'s tables, never compute.

* `paired_plot`: one panel per population, baseline → each follow-up visit, one line per
  patient (the cohort median drawn bold), so a consistent direction is seen at a glance.
* `log2_heatmap`: log2 ratios (follow-up / baseline), patients × populations, diverging
  colours centred on no change; missing pairs are hatched grey and marked "n/a".
* `forest_plot`: the Hodges–Lehmann estimate of the median change with its exact
  confidence interval, one line per population (and follow-up visit).

matplotlib is imported inside each function with the Agg backend, so importing this
module is cheap and works without a display.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from immunoprofile.comparison import MEASURE_UNITS, population_order, visit_sort_key
from immunoprofile.plots import new_figure
from immunoprofile.quantify import value_label

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

MEASURE_LABELS = {
    "percent_of_parent": "% of parent",
    "percent_of_lymphocytes": "% of lymphocytes",
    "cells_per_ul": "cells/µL",
}
_VISIT_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")


def _figure(width: float, height: float) -> Figure:

    return new_figure(width, height, dpi=100, layout="constrained")


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 110) -> bytes:
    """The figure encoded as PNG or SVG bytes (for embedding in the HTML report)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def save(fig: Figure, path: str | PathLike, dpi: int = 120) -> None:
    """Save a figure to ``path`` (format from the suffix)."""
    fig.savefig(path, dpi=dpi)


def pop_label(population: str, measure: str, parents: dict[str, str]) -> str:
    """``Treg (% of CD4)``: a population with what its number is, the parent named."""
    return f"{population} ({value_label(measure, parents.get(population))})"


def _parents(frame: pd.DataFrame) -> dict[str, str]:
    if "parent" not in frame.columns:
        return {}
    return frame.drop_duplicates("population").set_index("population")["parent"].to_dict()


def _axes_for(ax: Any, n: int, what: str) -> list:
    """The axes to draw ``n`` panels into: one Axes, or a sequence of ``n`` of them."""
    axes = [ax] if not isinstance(ax, (list, tuple, np.ndarray)) else list(np.ravel(ax))
    if len(axes) != n:
        raise ValueError(f"{what}: {n} panel(s) to draw but {len(axes)} axes given (ax=)")
    return axes


def _select(
    changes: pd.DataFrame, measure: str, populations: Sequence[str] | None, method: str | None
) -> pd.DataFrame:
    c = changes[changes["measure"] == measure]
    if method is not None and "method" in c.columns:
        c = c[c["method"] == method]
    elif "method" in c.columns and c["method"].nunique() > 1:
        c = c[c["method"] == sorted(c["method"].unique())[0]]
    if populations is not None:
        c = c[c["population"].isin(list(populations))]
    if c.empty:
        raise ValueError(f"no change rows for measure {measure!r} and populations {populations}")
    return c


def paired_plot(
    changes: pd.DataFrame,
    measure: str = "percent_of_parent",
    populations: Sequence[str] | None = None,
    ncols: int = 4,
    method: str | None = None,
    ax: Any = None,
) -> Figure:
    """Spaghetti plot: baseline → follow-up visit(s) per population, one line per patient.

    Parameters
    ----------
    changes : ``Comparison.changes``.
    measure : which measure to draw.
    populations : panels to draw (default: every population, in hierarchy order).
    ncols : panels per row.
    method : ``gating`` or ``clustering`` when the table mixes both (default: the first).
    ax : draw into this matplotlib Axes (one population) or these Axes (one per
        population) instead of a new figure; their figure is returned.
    """
    c = _select(changes, measure, populations, method)
    pops = population_order(c["population"]) if populations is None else list(populations)
    pops = [p for p in pops if p in set(c["population"])]
    base_name = str(c["baseline_visit"].iloc[0])
    visits = [base_name] + sorted(
        c["followup_visit"].unique(), key=lambda v: visit_sort_key(v, base_name)
    )
    parents = _parents(c)
    if ax is not None:
        axes = _axes_for(ax, len(pops), "paired_plot")
        fig = axes[0].figure
    else:
        ncols = max(1, min(ncols, len(pops)))
        nrows = int(np.ceil(len(pops) / ncols))
        fig = _figure(2.7 * ncols + 0.4, 2.5 * nrows + 0.4)
        axes = list(np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel())
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    patients = sorted(c["patient"].unique(), key=str)
    colour = {p: cmap(i % 10) for i, p in enumerate(patients)}
    x = np.arange(len(visits))
    for a, pop in zip(axes, pops):
        g = c[c["population"] == pop]
        # patient x visit matrix: baseline from any follow-up row, then each visit's value
        base = g.groupby("patient")["baseline"].first()
        mat = pd.DataFrame({base_name: base})
        for v in visits[1:]:
            mat[v] = g[g["followup_visit"] == v].set_index("patient")["followup"]
        mat = mat.reindex(patients)
        for pat, row in mat.iterrows():
            y = row.to_numpy(float)
            a.plot(x, y, "-o", color=colour[pat], lw=1.2, ms=3.5, alpha=0.85, label=str(pat))
        med = mat.median(axis=0, skipna=True).to_numpy(float)
        a.plot(x, med, "-", color="black", lw=3.0, alpha=0.75, label="median")
        a.set_title(pop, fontsize=10)
        a.set_ylabel(value_label(measure, parents.get(pop)), fontsize=9)
        a.set_xticks(x, visits, fontsize=8)
        a.set_xlim(-0.3, len(visits) - 0.7)
        a.tick_params(axis="y", labelsize=8)
        a.grid(axis="y", alpha=0.3)
    for a in axes[len(pops) :]:
        a.set_visible(False)
    if ax is None:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=8, frameon=False)
        fig.suptitle(f"{MEASURE_LABELS.get(measure, measure)}: one line per patient", fontsize=11)
    return fig


def log2_heatmap(
    changes: pd.DataFrame,
    measure: str = "percent_of_parent",
    followup_visit: str | None = None,
    populations: Sequence[str] | None = None,
    method: str | None = None,
    ax: Any = None,
) -> Figure:
    """Heatmap of log2(follow-up / baseline), patients (rows) × populations (columns),
    each column labelled with its parent; drawn into ``ax`` when given (its figure is
    returned)."""
    c = _select(changes, measure, populations, method)
    if followup_visit is None:
        b = str(c["baseline_visit"].iloc[0])
        followup_visit = sorted(c["followup_visit"].unique(), key=lambda v: visit_sort_key(v, b))[0]
    c = c[c["followup_visit"] == followup_visit]
    pops = population_order(c["population"]) if populations is None else list(populations)
    pops = [p for p in pops if p in set(c["population"])]
    mat = c.pivot_table(index="patient", columns="population", values="log2_ratio", dropna=False)
    mat = mat.reindex(index=sorted(c["patient"].unique(), key=str), columns=pops)
    vals = mat.to_numpy(float)
    finite = vals[np.isfinite(vals)]
    # colour scale from the 95th percentile of |log2 ratio| so one outlier does not wash
    # out the rest (values beyond it get the end colour; the numbers are printed anyway)
    lim = float(np.percentile(np.abs(finite), 95)) if finite.size else 1.0
    lim = max(lim, 0.1)
    if ax is None:
        fig = _figure(max(4.0, 0.55 * len(pops) + 2.2), max(2.6, 0.38 * len(mat) + 1.6))
        ax = fig.subplots()
    else:
        fig = ax.figure
    parents = _parents(c)
    masked = np.ma.masked_invalid(vals)
    import matplotlib

    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="#d9d9d9")
    im = ax.imshow(masked, cmap=cmap, vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(
        np.arange(len(pops)), [pop_label(p, measure, parents) for p in pops],
        rotation=60, ha="right", fontsize=8,
    )  # fmt: skip
    ax.set_yticks(np.arange(len(mat)), [str(p) for p in mat.index], fontsize=8)
    if vals.size <= 400:
        for (i, j), v in np.ndenumerate(vals):
            txt = "n/a" if not np.isfinite(v) else f"{v:+.2f}"
            strong = np.isfinite(v) and abs(v) > 0.6 * lim
            ax.text(j, i, txt, ha="center", va="center", fontsize=6.5,
                    color="white" if strong else "black")  # fmt: skip
    cb = fig.colorbar(im, ax=ax, shrink=0.8, extend="both")
    cb.set_label(f"log2({followup_visit} / baseline)", fontsize=8)
    ax.set_title(f"log2 ratio, {MEASURE_LABELS.get(measure, measure)}", fontsize=10)
    return fig


def forest_plot(
    stats: pd.DataFrame,
    measure: str = "percent_of_parent",
    populations: Sequence[str] | None = None,
    followup_visits: Sequence[str] | None = None,
    method: str | None = None,
    ax: Any = None,
) -> Figure:
    """Forest plot of Hodges–Lehmann estimates of the median change with exact CIs (drawn
    into ``ax`` when given; its figure is returned).

    Populations run down the page in hierarchy order; with several follow-up visits each
    population has one line per visit, in the visit's colour. Each line is annotated with
    n pairs and the exact p-value. A population whose interval does not exist (too few
    pairs) is drawn as the estimate alone.
    """
    s = stats[stats["measure"] == measure]
    if method is not None and "method" in s.columns:
        s = s[s["method"] == method]
    elif "method" in s.columns and s["method"].nunique() > 1:
        s = s[s["method"] == sorted(s["method"].unique())[0]]
    if populations is not None:
        s = s[s["population"].isin(list(populations))]
    if followup_visits is not None:
        s = s[s["followup_visit"].isin(list(followup_visits))]
    if s.empty:
        raise ValueError(f"no statistics rows for measure {measure!r}")
    pops = population_order(s["population"]) if populations is None else list(populations)
    pops = [p for p in pops if p in set(s["population"])]
    visits = sorted(s["followup_visit"].unique(), key=lambda v: visit_sort_key(v))
    nv = len(visits)
    if ax is None:
        fig = _figure(7.6, max(2.2, 0.34 * len(pops) * nv + 1.3))
        ax = fig.subplots()
    else:
        fig = ax.figure
    parents = _parents(s)
    yticks = []
    for i, pop in enumerate(pops):
        yc = len(pops) - 1 - i
        yticks.append(yc)
        for j, v in enumerate(visits):
            r = s[(s["population"] == pop) & (s["followup_visit"] == v)]
            if r.empty:
                continue
            r = r.iloc[0]
            y = yc + (0.0 if nv == 1 else (0.2 - 0.4 * j / (nv - 1)))
            col = _VISIT_COLOURS[j % len(_VISIT_COLOURS)]
            if np.isfinite(r["hl_ci_low"]) and np.isfinite(r["hl_ci_high"]):
                ax.plot([r["hl_ci_low"], r["hl_ci_high"]], [y, y], "-", color=col, lw=2)
            ax.plot([r["hl_estimate"]], [y], "s", color=col, ms=6, label=v if i == 0 else None)
            p = r["p_value"]
            ptxt = "p n/a" if not np.isfinite(p) else f"p={p:.3g}"
            ax.annotate(f"n={int(r['n_pairs'])}, {ptxt}", xy=(1.01, y),
                        xycoords=("axes fraction", "data"), fontsize=7, va="center")  # fmt: skip
    for yc in yticks[:-1]:
        ax.axhline(yc - 0.5, color="#e0e0e0", lw=0.8)
    ax.axvline(0.0, color="grey", lw=1, ls="--")
    ax.set_yticks(yticks, [pop_label(p, measure, parents) for p in pops], fontsize=8)
    ax.set_ylim(-0.7, len(pops) - 0.3)
    unit = MEASURE_UNITS.get(measure, "")
    ax.set_xlabel(
        f"median change (Hodges–Lehmann, {unit}) with exact CI "
        f"({MEASURE_LABELS.get(measure, measure)})",
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    if nv > 1:
        ax.legend(fontsize=8, loc="lower left", frameon=False)
    ax.set_title("Change from baseline", fontsize=10)
    return fig
