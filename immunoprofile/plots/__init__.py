"""Figures (matplotlib, Agg backend, imported only when a plot is made).

One module per subject: `gating` (gating plots per sample), `paired` (baseline → follow-up
comparison), `clustering` (UMAP and cluster heatmaps). Plots read results; they never
compute them.

`new_figure` builds a ``matplotlib.figure.Figure`` on an Agg canvas, so nothing touches
pyplot's global state or the user's interactive backend; the figure has a ``_repr_png_``,
so a notebook shows it as a picture without ``%matplotlib inline``.
"""

from __future__ import annotations

from typing import Any


def _inline_figure_class() -> type:
    """A matplotlib Figure that Jupyter shows as a picture by itself (``_repr_png_``),
    with no ``%matplotlib inline`` and no pyplot: the figures here are not pyplot's, so
    IPython's matplotlib hook would print ``<Figure ...>`` instead."""
    global _InlineFigure
    if _InlineFigure is None:
        from matplotlib.figure import Figure

        class InlineFigure(Figure):
            def _repr_png_(self) -> bytes:
                import io

                buf = io.BytesIO()
                self.savefig(buf, format="png", dpi=self.dpi, bbox_inches="tight")
                return buf.getvalue()

        _InlineFigure = InlineFigure
    return _InlineFigure


_InlineFigure: type | None = None


def new_figure(width: float, height: float, dpi: float = 100, **kwargs: Any) -> Any:
    """A matplotlib Figure attached to an Agg canvas (no pyplot, no GUI) that displays
    inline in a notebook; ``kwargs`` go to ``Figure`` (e.g. ``layout``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _inline_figure_class()(figsize=(width, height), dpi=dpi, **kwargs)
    FigureCanvasAgg(fig)
    return fig


__all__ = ["new_figure"]
