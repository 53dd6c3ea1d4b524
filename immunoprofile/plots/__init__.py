"""Figures (matplotlib, Agg backend, imported only when a plot is made).

One module per subject: `gating` (gating plots per sample), `paired` (baseline → follow-up
comparison), `clustering` (UMAP and cluster heatmaps). Plots read results; they never
compute them.
"""
