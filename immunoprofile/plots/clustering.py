"""Pictures of a clustering: they read a `ClusterResult` (or its tables), never compute.

* `umap_plot`: the UMAP embedding coloured by metacluster, named population, visit or a
  marker's expression;
* `median_heatmap`: median marker expression per metacluster, rows labelled with names;
* `som_grid_plot`: the SOM nodes on their grid, sized by event count and coloured by
  metacluster;
* `agreement_plot`: gated vs clustered frequency per population, with the identity line
  and Lin's concordance from the agreement table, beside a Bland-Altman panel; populations
  named per event by the samples' own template gates are drawn in grey and marked "by
  construction" (their agreement with gating is not an independent check).

matplotlib is imported inside each function (Agg canvas, no pyplot state).
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from immunoprofile.clustering.agreement import by_construction
from immunoprofile.plots import new_figure

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["umap_plot", "median_heatmap", "som_grid_plot", "agreement_plot", "save"]


def save(fig: Figure, path: str | PathLike, dpi: int = 120) -> None:
    """Save a figure (format from the suffix)."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")


def _target(ax: Any, width: float, height: float) -> tuple[Any, Any]:
    """The figure and axes to draw into: the given matplotlib Axes, or a new figure."""
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(width, height)
    return fig, fig.add_subplot(111)


def _categorical_colours(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20"] if n > 10 else colormaps["tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def umap_plot(
    embedding: pd.DataFrame, color: str = "metacluster", size: float = 2.0, ax: Any = None
) -> Figure:
    """Scatter of ``umap1``/``umap2`` coloured by a categorical column (``metacluster``,
    ``name``, ``visit``, ``sample``) or by a marker's values (continuous colour scale)."""
    if color not in embedding.columns:
        raise KeyError(f"embedding has no column {color!r}; it has {list(embedding.columns)}")
    fig, ax = _target(ax, 7.5, 6)
    col = embedding[color]
    if pd.api.types.is_numeric_dtype(col) and color not in ("node",):
        sc = ax.scatter(embedding["umap1"], embedding["umap2"], c=col, s=size, cmap="viridis",
                        rasterized=True, linewidths=0)  # fmt: skip
        fig.colorbar(sc, ax=ax, label=color)
    else:
        cats = sorted(col.astype(str).unique())
        colours = _categorical_colours(len(cats))
        for c, colour in zip(cats, colours):
            sel = col.astype(str) == c
            ax.scatter(embedding.loc[sel, "umap1"], embedding.loc[sel, "umap2"], s=size,
                       color=colour, label=c, rasterized=True, linewidths=0)  # fmt: skip
        ax.legend(markerscale=4 / max(size, 0.1), fontsize=7, loc="center left",
                  bbox_to_anchor=(1.0, 0.5), frameon=False, ncols=1 if len(cats) <= 22 else 2)  # fmt: skip
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"UMAP coloured by {color}")
    return fig


def median_heatmap(summary: pd.DataFrame, markers: Sequence[str], ax: Any = None) -> Figure:
    """Median expression per metacluster (rows ``MCxx name (percent %)``) x marker.

    ``summary`` is `ClusterResult.metaclusters()`.
    """
    mat = summary[list(markers)].to_numpy(dtype=float)
    labels = [
        f"{m} {n} ({p:.1f}%)"
        for m, n, p in zip(summary["metacluster"], summary["name"], summary["percent"])
    ]
    fig, ax = _target(ax, 0.45 * len(markers) + 3.5, 0.32 * len(labels) + 1.6)
    im = ax.imshow(mat, aspect="auto", cmap="magma", interpolation="nearest")
    ax.set_xticks(range(len(markers)), list(markers), rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    fig.colorbar(im, ax=ax, label="median (transformed)", shrink=0.6)
    ax.set_title("Median marker expression per metacluster")
    return fig


def som_grid_plot(result: Any, ax: Any = None) -> Figure:
    """SOM nodes at their grid positions, area proportional to events won in training,
    coloured by metacluster and labelled with the metacluster number."""
    from matplotlib.lines import Line2D

    grid = result.som.grid_
    counts = result.som.counts_.astype(float)
    mc = result.node_metacluster
    colours = _categorical_colours(int(mc.max()) + 1)
    rows, cols = int(grid[:, 0].max()) + 1, int(grid[:, 1].max()) + 1
    fig, ax = _target(ax, 0.6 * cols + 2.5, 0.6 * rows + 0.8)
    size = 900.0 * counts / max(counts.max(), 1.0)
    ax.scatter(grid[:, 1], grid[:, 0], s=np.maximum(size, 4), c=[colours[m] for m in mc],
               edgecolors="k", linewidths=0.4)  # fmt: skip
    for (r, c), m in zip(grid, mc):
        ax.text(c, r, str(m + 1), ha="center", va="center", fontsize=6)
    names = result.metacluster_names()
    handles = [
        Line2D([], [], marker="o", ls="", color=colours[j], label=f"MC{j + 1:02d} {names.iloc[j]}")
        for j in range(len(colours))
    ]
    ax.legend(handles=handles, fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5),
              frameon=False)  # fmt: skip
    ax.set_xlim(-0.7, cols - 0.3)
    ax.set_ylim(rows - 0.3, -0.7)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("SOM nodes (area = events), coloured by metacluster")
    return fig


def agreement_plot(pairs: pd.DataFrame, table: pd.DataFrame, value_label: str = "%") -> Figure:
    """Per population: clustered vs gated frequency (identity line, CCC in the title) and a
    Bland-Altman panel (difference vs mean, bias and 95 % limits from ``table``).

    ``pairs`` has ``sample, population, gated, clustered`` (`agreement_pairs`), ``table``
    is `agreement_table`'s output. A population whose ``naming`` is ``event (template
    gate)`` (named per event by each sample's fitted gate, so it agrees with gating by
    construction) is drawn in grey with "by construction" in its title.
    """

    pops = [p for p in table["population"] if p in set(pairs["population"])]
    if not pops:
        raise ValueError("no population is in both the pairs and the agreement table")
    fig = new_figure(6.5, 2.8 * len(pops))
    stats = table.set_index("population")
    constructed = set(table.loc[by_construction(table), "population"])
    for i, pop in enumerate(pops):
        sub = pairs[pairs["population"] == pop]
        x, y = sub["gated"].to_numpy(float), sub["clustered"].to_numpy(float)
        st = stats.loc[pop]
        mark = pop in constructed
        tag = "\n(named per event by its template gate: by construction)" if mark else ""
        ax = fig.add_subplot(len(pops), 2, 2 * i + 1)
        lo = float(np.nanmin([x.min(), y.min()]))
        hi = float(np.nanmax([x.max(), y.max()]))
        pad = 0.05 * (hi - lo + 1e-9)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", lw=0.8, ls="--")
        ax.scatter(x, y, s=14, color="#9e9e9e" if mark else "#1f77b4")
        ax.set_xlabel(f"gated ({value_label})", fontsize=8)
        ax.set_ylabel(f"clustered ({value_label})", fontsize=8)
        ax.set_title(
            f"{pop}: CCC {st['lins_ccc']:.2f}, r {st['pearson_r']:.2f}{tag}",
            fontsize=9,
            color="#616161" if mark else "black",
        )
        ax2 = fig.add_subplot(len(pops), 2, 2 * i + 2)
        ax2.scatter((x + y) / 2, y - x, s=14, color="#9e9e9e" if mark else "#d62728")
        for v, ls in ((st["bias"], "-"), (st["loa_low"], ":"), (st["loa_high"], ":")):
            if np.isfinite(v):
                ax2.axhline(v, color="k", lw=0.8, ls=ls)
        ax2.set_xlabel(f"mean ({value_label})", fontsize=8)
        ax2.set_ylabel("clustered - gated", fontsize=8)
        ax2.set_title(f"bias {st['bias']:+.2f} [{st['loa_low']:+.2f}, {st['loa_high']:+.2f}]",
                      fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig
