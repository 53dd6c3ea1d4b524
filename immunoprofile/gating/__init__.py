"""Gate geometry, data-adaptive gates, templates and the gating-tree evaluator."""
