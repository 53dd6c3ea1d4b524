"""Realistic simulated flow-cytometry cohorts with per-event truth.

A cohort looks like a longitudinal immune-monitoring study acquired on a 20-colour
BD-style analyser: thawed PBMC stained with one T/B/NK tube (`panel.PANEL`), with
debris, doublets, dead cells, monocytes and granulocytes, spillover written as
``$SPILLOVER`` and day-to-day instrument drift. Every event carries its true label
(`biology.LEAVES`); `POPULATION_LEAVES` and `truth_mask` say which labels make up each
canonical population, so every accuracy figure is computed the same way.

>>> from immunoprofile.simulate import simulate_sample, truth_mask
>>> sample, labels = simulate_sample(events=5000, seed=1)
>>> int(truth_mask(labels, "T").sum()) > 0
True
"""

from immunoprofile.simulate.biology import (
    COMPONENTS,
    FREQUENCIES,
    LEAVES,
    LEVELS,
    PHENOTYPES,
    POPULATION_LEAVES,
    POPULATION_PARENTS,
    phenotype_table,
    truth_mask,
)
from immunoprofile.simulate.cohort import (
    DEFAULT_EFFECTS,
    CohortInfo,
    follow_up_effects,
    parse_effect,
    read_truth,
    simulate_cohort,
    simulate_sample,
    truth_frequencies,
)
from immunoprofile.simulate.conditions import Conditions
from immunoprofile.simulate.panel import CHANNELS, MARKERS, PANEL, PANEL_PLAIN

__all__ = [
    "CHANNELS",
    "COMPONENTS",
    "DEFAULT_EFFECTS",
    "FREQUENCIES",
    "LEAVES",
    "LEVELS",
    "MARKERS",
    "PANEL",
    "PANEL_PLAIN",
    "PHENOTYPES",
    "POPULATION_LEAVES",
    "POPULATION_PARENTS",
    "CohortInfo",
    "Conditions",
    "follow_up_effects",
    "parse_effect",
    "phenotype_table",
    "read_truth",
    "simulate_cohort",
    "simulate_sample",
    "truth_frequencies",
    "truth_mask",
]
