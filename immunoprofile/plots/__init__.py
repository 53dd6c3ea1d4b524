"""Figures (matplotlib, Agg backend, imported only when a plot is made).

One module per subject: `gating` (gating plots per sample), `paired` (baseline → follow-up
comparison), `clustering` (UMAP and cluster heatmaps). Plots read results; they never
compute them.

`new_figure` builds a ``matplotlib.figure.Figure`` on an Agg canvas, so nothing touches
pyplot's global state or the user's interactive backend (a returned figure still displays
in a notebook).
"""

from __future__ import annotations

from typing import Any


def new_figure(width: float, height: float, dpi: float = 100) -> Any:
    """A matplotlib Figure attached to an Agg canvas (no pyplot, no GUI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


__all__ = ["new_figure"]
