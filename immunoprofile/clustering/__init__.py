"""Unsupervised clustering: FlowSOM-style self-organising map, consensus metaclustering,
phenotype naming of clusters, UMAP embedding, and agreement with template gating."""
