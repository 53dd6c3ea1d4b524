"""Gating plots: every gate drawn on its parent population's density.

A panel per population: the parent's events on the gate's dimensions (a 2-D density
histogram, or a 1-D histogram for one-dimensional gates) with the gate on top. Adaptive
gates are drawn where they were fitted for this sample (the fitted gate recorded by the
engine), so a plot shows exactly what produced the counts. A grid figure shows a whole
template for one sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile.gating.gates import (
    GATE_TYPES,
    BooleanGate,
    EllipseGate,
    Gate,
    PolygonGate,
    QuadrantGate,
    RangeGate,
    RectangleGate,
    gate_from_dict,
)
from immunoprofile.plots import new_figure

MAX_POINTS = 60_000  # events drawn per panel (an even stride, so deterministic)
GATE_COLOUR = "#d62728"
FALLBACK_COLOUR = "#ff7f0e"


def drawn_gate(res: Any, population: str) -> Gate | None:
    """The gate to draw for ``population``: its fitted position if it was fitted, else the
    template's static gate; None if neither is a drawable geometry."""
    fitted = (getattr(res, "fitted", None) or {}).get(population)
    if isinstance(fitted, dict) and fitted.get("type") in GATE_TYPES:
        cls = GATE_TYPES[fitted["type"]]
        keep = {f.name for f in fields(cls)} | {"type"}
        try:
            return gate_from_dict({k: v for k, v in fitted.items() if k in keep})
        except Exception:  # noqa: BLE001 - a record we cannot rebuild is simply not drawn
            pass
    spec = _spec(res, population)
    g = getattr(spec, "gate", None)
    return g if isinstance(g, Gate) else None


def _spec(res: Any, population: str) -> Any:
    for p in res.template.populations:
        if p.name == population:
            return p
    names = [p.name for p in res.template.populations]
    raise KeyError(f"template has no population {population!r}; it has {names}")


def _parent_mask(res: Any, population: str) -> np.ndarray:
    parent = _spec(res, population).parent
    if parent and parent in res.masks:
        return res.masks[parent]
    return np.ones(res.sample.n_events, dtype=bool)


def _column(res: Any, population: str, k: int, dim: str) -> tuple[np.ndarray, str]:
    """Values of dimension ``k`` of a population's gate on the analysis scale, and a label.

    The engine records the channel each dimension resolved to (``fitted[...]["channels"]``);
    without that record the name is resolved like the engine does."""
    sample = res.sample
    record = (getattr(res, "fitted", None) or {}).get(population) or {}
    channels = record.get("channels") if isinstance(record, dict) else None
    if channels and len(channels) > k and channels[k] in sample.channel_names:
        idx = sample.channel_index(channels[k])
    else:
        from immunoprofile.gating.engine import resolve_dims

        idx = resolve_dims(sample, res.template, [dim])[dim]
    name = sample.channels["name"].iloc[int(idx)]
    marker = sample.channels["marker"].iloc[int(idx)]
    label = f"{marker} ({name})" if marker and marker != name else str(name)
    return sample.events[:, int(idx)], label


def _limits(values: np.ndarray, extra: Sequence[float | None] = ()) -> tuple[float, float]:
    """Axis limits: the bulk of the data, widened to show the gate's coordinates, but never
    by more than half the data's span (open-ended gates may reach far beyond the events)."""
    finite = values[np.isfinite(values)]
    if len(finite):
        lo, hi = (float(v) for v in np.percentile(finite, [0.2, 99.8]))
    else:
        lo, hi = 0.0, 1.0
    span = hi - lo if hi > lo else 1.0
    for e in extra:
        if e is not None and math.isfinite(e):
            lo = min(lo, max(float(e), lo - 0.5 * span))
            hi = max(hi, min(float(e), hi + 0.5 * span))
    pad = 0.04 * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def _thin(idx: np.ndarray) -> np.ndarray:
    if len(idx) <= MAX_POINTS:
        return idx
    return idx[:: int(math.ceil(len(idx) / MAX_POINTS))]


def _ellipse_outline(g: EllipseGate, n: int = 200) -> np.ndarray:
    cov = np.asarray(g.covariance, dtype=float)[:2, :2]
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * np.pi, n)
    circle = np.stack([np.cos(t), np.sin(t)])
    axes = np.sqrt(np.maximum(vals, 0) * g.distance_square)
    pts = vecs @ (axes[:, None] * circle)
    return (pts + np.asarray(g.mean[:2], dtype=float)[:, None]).T


def _gate_coords(g: Gate) -> tuple[list[float | None], list[float | None]]:
    """Coordinates a gate places on x and y (to widen axis limits so the gate is visible)."""
    if isinstance(g, RangeGate):
        return [g.min, g.max], []
    if isinstance(g, RectangleGate):
        return list(g.min[:1]) + list(g.max[:1]), list(g.min[1:2]) + list(g.max[1:2])
    if isinstance(g, QuadrantGate):
        return [g.thresholds[0]], [g.thresholds[1]]
    if isinstance(g, PolygonGate):
        v = np.asarray(g.vertices)
        return list(v[:, 0]), list(v[:, 1])
    if isinstance(g, EllipseGate):
        o = _ellipse_outline(g)
        return [o[:, 0].min(), o[:, 0].max()], [o[:, 1].min(), o[:, 1].max()]
    return [], []


def _rgb(colour: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(colour)


def _draw_shape(
    ax: Any, g: Gate, xlim: tuple[float, float], ylim: tuple[float, float], colour: str
) -> None:
    from matplotlib.patches import Polygon as MplPolygon
    from matplotlib.patches import Rectangle as MplRectangle

    # a light fill shows which side is inside (polygons may run far outside the view)
    kw = {"facecolor": (*_rgb(colour), 0.08), "edgecolor": colour, "linewidth": 1.6}
    if isinstance(g, RectangleGate):
        x0 = g.min[0] if g.min[0] is not None else xlim[0]
        x1 = g.max[0] if g.max[0] is not None else xlim[1]
        y0 = g.min[1] if g.min[1] is not None else ylim[0]
        y1 = g.max[1] if g.max[1] is not None else ylim[1]
        ax.add_patch(MplRectangle((x0, y0), x1 - x0, y1 - y0, **kw))
    elif isinstance(g, PolygonGate):
        ax.add_patch(MplPolygon(np.asarray(g.vertices), closed=True, **kw))
    elif isinstance(g, EllipseGate):
        ax.add_patch(MplPolygon(_ellipse_outline(g), closed=True, **kw))
    elif isinstance(g, QuadrantGate):
        tx, ty = g.thresholds
        ax.axvline(tx, color=colour, linewidth=1.2)
        ax.axhline(ty, color=colour, linewidth=1.2)
        xs = (tx, xlim[1]) if g.signs[0] == "+" else (xlim[0], tx)
        ys = (ty, ylim[1]) if g.signs[1] == "+" else (ylim[0], ty)
        ax.add_patch(
            MplRectangle(
                (xs[0], ys[0]),
                xs[1] - xs[0],
                ys[1] - ys[0],
                facecolor=colour,
                alpha=0.08,
                edgecolor="none",
            )  # fmt: skip
        )


def draw_gate(ax: Any, res: Any, population: str) -> None:
    """Draw ``population``'s gate on its parent's events into the matplotlib axes ``ax``."""
    from matplotlib.colors import LogNorm

    g = drawn_gate(res, population)
    counts = res.counts
    n = int(counts[population])
    parent = _spec(res, population).parent
    pmask = _parent_mask(res, population)
    n_parent = int(pmask.sum())
    pct = 100.0 * n / n_parent if n_parent else float("nan")
    fitted = (getattr(res, "fitted", None) or {}).get(population) or {}
    fell_back = bool(fitted.get("fallback")) if isinstance(fitted, dict) else False
    colour = FALLBACK_COLOUR if fell_back else GATE_COLOUR
    title = f"{population}  {n:,} ({pct:.1f}% of {parent or 'all'})"
    if fell_back:
        title += "\nfallback"
    ax.set_title(title, fontsize=8, color=colour if fell_back else "black")
    ax.tick_params(labelsize=6)
    if g is None or isinstance(g, BooleanGate) or not g.dims:
        text = "no drawable gate"
        if isinstance(g, BooleanGate):
            terms = [("not " if c else "") + d for d, c in zip(g.dims, g.complement)]
            text = f"not {terms[0]}" if g.op == "not" else f" {g.op} ".join(terms)
        ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        return
    idx = _thin(np.flatnonzero(pmask))
    bins = int(np.clip(np.sqrt(len(idx)) / 1.5, 24, 128))
    xcoords, ycoords = _gate_coords(g)
    x, xlabel = _column(res, population, 0, g.dims[0])
    xv = np.asarray(x[idx], dtype=np.float64)
    xlim = _limits(xv, xcoords)
    ax.set_xlabel(xlabel, fontsize=7)
    if len(g.dims) == 1:
        ax.hist(xv[np.isfinite(xv)], bins=bins, range=xlim, color="0.45", histtype="stepfilled")
        if isinstance(g, RangeGate):
            lo = g.min if g.min is not None else xlim[0]
            hi = g.max if g.max is not None else xlim[1]
            ax.axvspan(lo, hi, color=colour, alpha=0.12)
            for v in (g.min, g.max):
                if v is not None:
                    ax.axvline(v, color=colour, linewidth=1.6)
        ax.set_xlim(*xlim)
        ax.set_yticks([])
        return
    y, ylabel = _column(res, population, 1, g.dims[1])
    yv = np.asarray(y[idx], dtype=np.float64)
    ylim = _limits(yv, ycoords)
    ok = np.isfinite(xv) & np.isfinite(yv)
    h, xe, ye = np.histogram2d(xv[ok], yv[ok], bins=bins, range=[xlim, ylim])
    if h.max() > 0:
        ax.pcolormesh(
            xe, ye, np.ma.masked_equal(h.T, 0), cmap="viridis",
            norm=LogNorm(vmin=1, vmax=h.max()), rasterized=True,
        )  # fmt: skip
    _draw_shape(ax, g, xlim, ylim, colour)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel, fontsize=7)


def plot_gate(res: Any, population: str, size: float = 4.0) -> Any:
    """One population's gate on its parent's density, as a Figure."""
    fig = new_figure(size, size)
    draw_gate(fig.add_subplot(1, 1, 1), res, population)
    fig.tight_layout()
    return fig


def plot_gating(
    res: Any,
    populations: Sequence[str] | None = None,
    ncols: int = 4,
    panel: float = 2.9,
    title: str | None = None,
) -> Any:
    """A grid figure: every population of the template (or ``populations``) with its gate."""
    names = (
        list(populations) if populations is not None else [p.name for p in res.template.populations]
    )
    nrows = max(1, math.ceil(len(names) / ncols))
    top = 0.45 if title else 0.0
    height = panel * nrows + top
    fig = new_figure(panel * ncols, height)
    for i, name in enumerate(names):
        draw_gate(fig.add_subplot(nrows, ncols, i + 1), res, name)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / height)
    # leave the title its own strip above the panels
    fig.tight_layout(rect=(0, 0, 1, 1 - top / height))
    return fig


def save_gating_plot(
    res: Any, path: str | os.PathLike, title: str | None = None, dpi: int = 90
) -> Path:
    """Write the grid figure of one sample to ``path`` (PNG/PDF/SVG by suffix), atomically."""
    from immunoprofile.quantify import atomic_write

    path = Path(path)
    fig = plot_gating(res, title=title)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format=fmt))


__all__ = ["draw_gate", "drawn_gate", "plot_gate", "plot_gating", "save_gating_plot"]
