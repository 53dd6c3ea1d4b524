"""Gating plots: every gate drawn on its parent population's density.

A panel per population: the parent's events on the gate's dimensions (a 2-D density
histogram, or a 1-D histogram for one-dimensional gates) with the gate on top. Adaptive
gates are drawn where they were fitted for this sample (the fitted gate recorded by the
engine), so a plot shows exactly what produced the counts. A grid figure shows a whole
template for one sample; `save_gate_plots` writes one PNG per gate (the report's gating
pages).

Axes are labelled in the instrument's units, as FlowJo shows them: logicle, hyperlog,
arcsinh and log channels carry decade ticks (0, 10², 10³, 10⁴, 10⁵, with minor ticks
between), linear channels ticks in channel values (50K, 100K, ...), while the data stay
on the analysis scale the gates were fitted on. A boolean gate (``not Treg_naive``,
``NK and not NK_CD56bright``) is drawn as its events over its parent's on the
dimensions of the gate it refers to, that gate dashed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile.gating.engine import resolve_dims
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
from immunoprofile.quantify import atomic_write
from immunoprofile.sample import marker_or_none
from immunoprofile.transforms import transform_from_dict

MAX_POINTS = 60_000  # events drawn per panel (an even stride, so deterministic)
GATE_COLOUR = "#d62728"
FALLBACK_COLOUR = "#ff7f0e"
TITLE_SIZE = 10
LABEL_SIZE = 9
TICK_SIZE = 8
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


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


def _column(res: Any, population: str, k: int, dim: str) -> tuple[np.ndarray, str, str]:
    """Values of dimension ``k`` of a population's gate on the analysis scale, and a label.

    The engine records the channel each dimension resolved to (``fitted[...]["channels"]``);
    without that record the name is resolved like the engine does."""
    sample = res.sample
    record = (getattr(res, "fitted", None) or {}).get(population) or {}
    channels = record.get("channels") if isinstance(record, dict) else None
    if channels and len(channels) > k and channels[k] in sample.channel_names:
        idx = sample.channel_index(channels[k])
    else:
        idx = resolve_dims(sample, res.template, [dim])[dim]
    name = sample.channels["name"].iloc[int(idx)]
    marker = marker_or_none(sample.channels["marker"].iloc[int(idx)])
    label = f"{marker} ({name})" if marker and marker != name else str(name)
    return sample.events[:, int(idx)], label, str(name)


def channel_transform(sample: Any, channel: str) -> Any:
    """The transform the sample's history records for ``channel`` (a `Transform`), or
    None when the channel was not transformed."""

    spec = None
    for h in getattr(sample, "history", None) or ():
        if not isinstance(h, dict):
            continue
        if h.get("step") == "transform":
            spec = (h.get("channels") or {}).get(channel, spec)
        elif h.get("step") == "inverse_transform":
            spec = None
    if spec is None:
        return None
    try:
        return transform_from_dict(spec)
    except Exception:  # noqa: BLE001 - an unreadable record leaves the axis as it is
        return None


def _decade_label(v: float) -> str:
    if v == 0:
        return "0"
    k = int(round(math.log10(abs(v))))
    sign = "-" if v < 0 else ""
    return f"{sign}10{str(k).translate(_SUPERSCRIPT)}"


def _short_number(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:g}M"
    if a >= 1e3:
        return f"{v / 1e3:g}K"
    return f"{v:g}"


def instrument_ticks(
    transform: Any, lim: tuple[float, float]
) -> tuple[list[float], list[str], list[float]]:
    """Major tick positions and labels, and minor tick positions, on the analysis scale,
    for channel values in instrument units.

    Logarithmic-type transforms (logicle, hyperlog, arcsinh, log) get decades: 0 and
    ±10^k at every power of ten inside the view, 2..9 × 10^k as minor ticks. A linear
    transform gets round channel values (``50K``). Without a transform the axis is in
    channel values already: round values, labelled short."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = sorted(lim)
    kind = type(transform).__name__.lower() if transform is not None else ""
    if transform is not None and kind in {"logicle", "hyperlog", "arcsinh", "log", "asinhcofactor"}:
        fwd = lambda v: transform.apply(np.asarray(v, dtype=np.float64), dtype=np.float64)  # noqa: E731
        raw = transform.inverse(np.asarray([lo, hi], dtype=np.float64), dtype=np.float64)
        top = max(abs(float(raw[0])), abs(float(raw[1])), 1.0)
        kmax = int(math.ceil(math.log10(top))) + 1
        values = [0.0] if kind != "log" else []
        minors: list[float] = []
        for k in range(0, kmax + 1):
            for sign in (1.0, -1.0):
                values.append(sign * 10.0**k)
                if k >= 2:  # none in the linear region around 0, where they would crowd
                    minors.extend(sign * m * 10.0**k for m in range(2, 10))
        values = [v for v in values if kind != "log" or v > 0]
        minors = [v for v in minors if kind != "log" or v > 0]
        pos = fwd(values)
        mpos = fwd(minors)
        inside = {v: float(p) for p, v in zip(pos, values) if lo <= p <= hi and np.isfinite(p)}
        # FlowJo's labels: 0, then 10^2, 10^3, ... and -10^3, ..., kept apart on the axis
        order = (
            [0.0] + [10.0**k for k in range(2, kmax + 1)] + [-(10.0**k) for k in range(3, kmax + 1)]
        )
        labelled: list[tuple[float, float]] = []
        for v in order:
            p = inside.get(v)
            if p is not None and all(abs(p - q) >= 0.07 * (hi - lo) for q, _ in labelled):
                labelled.append((p, v))
        if len(labelled) < 2:  # a narrow view: label every decade inside it
            labelled = sorted((p, v) for v, p in inside.items())
        labelled.sort()
        minor = [float(p) for p in mpos if lo <= p <= hi and np.isfinite(p)]
        return [p for p, _ in labelled], [_decade_label(v) for _, v in labelled], minor
    if transform is not None:  # linear: round channel values
        raw = transform.inverse(np.asarray([lo, hi], dtype=np.float64), dtype=np.float64)
        ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(*sorted(map(float, raw)))
        pos = transform.apply(np.asarray(ticks, dtype=np.float64), dtype=np.float64)
        keep = [(float(p), float(t)) for p, t in zip(pos, ticks) if lo <= p <= hi]
        return [p for p, _ in keep], [_short_number(t) for _, t in keep], []
    ticks = MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    keep = [float(t) for t in ticks if lo <= t <= hi]
    return keep, [_short_number(t) if abs(t) >= 1000 else f"{t:g}" for t in keep], []


def _instrument_axis(ax: Any, which: str, transform: Any, lim: tuple[float, float]) -> None:
    """Ticks in instrument units on ``ax``'s x or y axis. Minor ticks are one line
    collection (matplotlib's per-tick objects cost seconds on a 24-panel grid)."""
    from matplotlib.collections import LineCollection

    major, labels, minor = instrument_ticks(transform, lim)
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_ticks(major)
    axis.set_ticklabels(labels)
    if minor:
        if which == "x":
            segs = [[(m, 0.0), (m, -0.018)] for m in minor]
            trans = ax.get_xaxis_transform()
        else:
            segs = [[(0.0, m), (-0.018, m)] for m in minor]
            trans = ax.get_yaxis_transform()
        ax.add_collection(
            LineCollection(segs, colors="0.25", linewidths=0.6, transform=trans, clip_on=False),
            autolim=False,
        )


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


def _title(res: Any, population: str) -> tuple[str, bool]:
    """``Treg: 989 events`` over ``13.5% of CD4`` (the parent always named), and whether
    the gate fell back."""
    n = int(res.counts[population])
    parent = _spec(res, population).parent
    n_parent = int(_parent_mask(res, population).sum())
    pct = 100.0 * n / n_parent if n_parent else float("nan")
    fitted = (getattr(res, "fitted", None) or {}).get(population) or {}
    fell_back = bool(fitted.get("fallback")) if isinstance(fitted, dict) else False
    title = f"{population}: {n:,} events\n{pct:.1f}% of {parent or 'all events'}"
    if fell_back:
        title += " (fallback gate)"
    return title, fell_back


def _boolean_view(res: Any, g: BooleanGate) -> tuple[str, Gate] | None:
    """The population a boolean gate refers to whose gate can be drawn (the last operand
    with a geometric gate: ``NK and not NK_CD56bright`` is drawn on NK_CD56bright's
    dimensions)."""
    for name in reversed(list(g.dims)):
        try:
            ref = drawn_gate(res, name)
        except KeyError:
            continue
        if ref is not None and not isinstance(ref, BooleanGate) and ref.dims:
            return name, ref
    return None


def draw_gate(ax: Any, res: Any, population: str) -> Any:
    """Draw ``population``'s gate on its parent's events into the matplotlib axes ``ax``
    (axes in instrument units, the parent named in the title); returns ``ax``."""
    from matplotlib.colors import LogNorm

    g = drawn_gate(res, population)
    title, fell_back = _title(res, population)
    colour = FALLBACK_COLOUR if fell_back else GATE_COLOUR
    ax.set_title(title, fontsize=TITLE_SIZE, color=colour if fell_back else "black")
    ax.tick_params(labelsize=TICK_SIZE)
    pmask = _parent_mask(res, population)
    highlight = None  # boolean gates: the population's own events, over its parent's
    ref_name = population
    if isinstance(g, BooleanGate):
        view = _boolean_view(res, g)
        terms = [("not " if c else "") + d for d, c in zip(g.dims, g.complement)]
        text = f"not {terms[0]}" if g.op == "not" else f" {g.op} ".join(terms)
        if view is None:
            _no_gate(ax, text)
            return ax
        ref_name, g = view
        highlight = res.masks[population]
        full = f"{title}; {text}"
        if len(full.splitlines()[-1]) > 38:  # a long expression gets a line of its own
            full = f"{title}\n= {text}"
        ax.set_title(full, fontsize=TITLE_SIZE)
    if g is None or not g.dims:
        _no_gate(ax, "no drawable gate")
        return ax
    idx = _thin(np.flatnonzero(pmask))
    bins = int(np.clip(np.sqrt(len(idx)) / 1.5, 24, 128))
    xcoords, ycoords = _gate_coords(g)
    x, xlabel, xch = _column(res, ref_name, 0, g.dims[0])
    xv = np.asarray(x[idx], dtype=np.float64)
    xlim = _limits(xv, xcoords)
    ax.set_xlabel(xlabel, fontsize=LABEL_SIZE)
    xt = channel_transform(res.sample, xch)
    line = {"linestyle": "--"} if highlight is not None else {}
    if len(g.dims) == 1:
        ok = np.isfinite(xv)
        ax.hist(xv[ok], bins=bins, range=xlim, color="0.6", histtype="stepfilled",
                label=_spec(res, population).parent or "all events")  # fmt: skip
        if highlight is not None:
            hv = xv[ok & highlight[idx]]
            ax.hist(hv, bins=bins, range=xlim, color=colour, alpha=0.55, histtype="stepfilled",
                    label=population)  # fmt: skip
        if isinstance(g, RangeGate):
            lo = g.min if g.min is not None else xlim[0]
            hi = g.max if g.max is not None else xlim[1]
            if highlight is None:
                ax.axvspan(lo, hi, color=colour, alpha=0.12)
            for v in (g.min, g.max):
                if v is not None:
                    ax.axvline(v, color=colour, linewidth=1.6, **line)
        ax.set_xlim(*xlim)
        ax.set_ylabel("events", fontsize=LABEL_SIZE)
        ax.set_ylim(bottom=0)
        _instrument_axis(ax, "x", xt, xlim)
        return ax
    y, ylabel, ych = _column(res, ref_name, 1, g.dims[1])
    yv = np.asarray(y[idx], dtype=np.float64)
    ylim = _limits(yv, ycoords)
    ok = np.isfinite(xv) & np.isfinite(yv)
    cmap = "Greys" if highlight is not None else "viridis"
    h, xe, ye = np.histogram2d(xv[ok], yv[ok], bins=bins, range=[xlim, ylim])
    if h.max() > 0:
        ax.pcolormesh(
            xe, ye, np.ma.masked_equal(h.T, 0), cmap=cmap,
            norm=LogNorm(vmin=1, vmax=max(h.max(), 2)), rasterized=True,
            alpha=0.5 if highlight is not None else 1.0,
        )  # fmt: skip
    if highlight is not None:
        sel = ok & highlight[idx]
        hh, _, _ = np.histogram2d(xv[sel], yv[sel], bins=[xe, ye])
        if hh.max() > 0:
            ax.pcolormesh(
                xe, ye, np.ma.masked_equal(hh.T, 0), cmap="viridis",
                norm=LogNorm(vmin=1, vmax=max(hh.max(), 2)), rasterized=True,
            )  # fmt: skip
        _draw_outline(ax, g, xlim, ylim, colour)
    else:
        _draw_shape(ax, g, xlim, ylim, colour)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel, fontsize=LABEL_SIZE)
    _instrument_axis(ax, "x", xt, xlim)
    _instrument_axis(ax, "y", channel_transform(res.sample, ych), ylim)
    return ax


def _no_gate(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=LABEL_SIZE, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _draw_outline(
    ax: Any, g: Gate, xlim: tuple[float, float], ylim: tuple[float, float], colour: str
) -> None:
    """The referenced gate of a boolean population, dashed and unfilled."""
    n = len(ax.patches)
    _draw_shape(ax, g, xlim, ylim, colour)
    for patch in ax.patches[n:]:
        patch.set_linestyle("--")
        patch.set_facecolor("none")
    for line in ax.lines:
        line.set_linestyle("--")


def plot_gate(res: Any, population: str, size: float = 4.0, ax: Any = None) -> Any:
    """One population's gate on its parent's density: a new Figure, or drawn into the
    matplotlib axes ``ax`` (its figure is returned)."""
    if ax is not None:
        draw_gate(ax, res, population)
        return ax.figure
    fig = new_figure(size, size)
    draw_gate(fig.add_subplot(1, 1, 1), res, population)
    fig.tight_layout()
    return fig


def plot_gating(
    res: Any,
    populations: Sequence[str] | None = None,
    ncols: int = 4,
    panel: float = 3.6,
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
    # a fixed place per panel (no tight_layout: it measures every tick label, seconds per
    # grid): room for the y tick labels and label on the left, a two-line title on top
    left, bottom, right, head = 0.8, 0.62, 0.12, 0.58
    for i, name in enumerate(names):
        r, c = divmod(i, ncols)
        x0 = c * panel + left
        y0 = height - top - (r + 1) * panel + bottom
        rect = (x0 / (panel * ncols), y0 / height,
                (panel - left - right) / (panel * ncols), (panel - bottom - head) / height)  # fmt: skip
        draw_gate(fig.add_axes(rect), res, name)
    if title:
        fig.suptitle(title, fontsize=13, y=1 - 0.12 / height)
    return fig


def save_gating_plot(
    res: Any, path: str | os.PathLike, title: str | None = None, dpi: int = 90
) -> Path:
    """Write the grid figure of one sample to ``path`` (PNG/PDF/SVG by suffix), atomically."""

    path = Path(path)
    fig = plot_gating(res, title=title)
    fmt = path.suffix.lstrip(".") or "png"
    return atomic_write(path, lambda p: fig.savefig(p, dpi=dpi, format=fmt))


def gate_plot_name(index: int, population: str) -> str:
    """File name of one gate's figure: ``03_Treg.png`` (template order, then name)."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in population)
    return f"{index:02d}_{safe}.png"


def save_gate_plots(
    res: Any, folder: str | os.PathLike, dpi: int = 140, panel: float = 3.6
) -> list[Path]:
    """Write one PNG per gate into ``folder`` (``NN_<population>.png``, template order),
    each a readable figure with its title and axes; returns the paths.

    The template's gates are drawn once as a grid and each panel is cut out of the one
    rendering (with its title, labels and ticks), which is several times faster than a
    figure per gate."""
    from PIL import Image

    names = [p.name for p in res.template.populations]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ncols = 4
    fig = plot_gating(res, names, ncols=ncols, panel=panel)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    # tight_layout keeps each panel, labels included, inside its grid cell: cut the cells
    cell = rgba.shape[1] / ncols
    out = []
    for i, name in enumerate(names):
        r, c = divmod(i, ncols)
        x0, x1 = round(c * cell), round((c + 1) * cell)
        y0, y1 = round(r * cell), round((r + 1) * cell)
        crop = Image.fromarray(np.ascontiguousarray(rgba[y0:y1, x0:x1, :3]))
        # 64 colours hold a density plot: a third of the bytes, so a report of every gate
        # of every file stays small enough to email
        crop = crop.quantize(colors=64, method=Image.Quantize.FASTOCTREE)
        path = folder / gate_plot_name(i + 1, name)
        out.append(atomic_write(path, lambda p, im=crop: im.save(p, format="PNG")))
    return out


__all__ = [
    "channel_transform",
    "draw_gate",
    "drawn_gate",
    "gate_plot_name",
    "instrument_ticks",
    "plot_gate",
    "plot_gating",
    "save_gate_plots",
    "save_gating_plot",
]
