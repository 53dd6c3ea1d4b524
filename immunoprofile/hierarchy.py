"""The per-sample population table: one definition of its columns and percentages.

Every table producer (`GatingResult.table`, `immunoprofile.quantify.population_table`
and so the cohort table of `immunoprofile.gate`, the clustering table, the pipeline and
the report) takes its columns, its parent label and its percentages from here:

* ``parent`` of a top-level population is ``"root"`` (`ROOT`): all events of the file.
  A word rather than an empty cell, because an empty CSV cell reads back as a missing
  value (NaN in pandas, NA in R), which drops out of group-bys and joins; ``root`` is
  also what openCyto and flowWorkspace call the top of a gating tree.
* ``percent_of_parent = 100 * count / parent_count`` (NaN when the parent is empty).
* ``percent_of_lymphocytes = 100 * count / count(reference)`` for the reference
  population (the template's ``reference``, else ``lymphocytes``) and its descendants:
  the reference itself is 100. Populations outside that subtree (its ancestors, such as
  an ``all cells`` gate above ``lymphocytes``, and side branches) get NaN: they are not
  subsets of the reference, so a "percent of lymphocytes" above 100 (or of an unrelated
  branch) would be a ratio that reads like a fraction and is not one. No reference
  population in the template: NaN throughout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

ROOT = "root"
"""The ``parent`` label of top-level populations (their parent count is all events)."""

TABLE_COLUMNS = (
    "population",
    "parent",
    "count",
    "parent_count",
    "percent_of_parent",
    "percent_of_lymphocytes",
)


def percent(num: Any, den: Any) -> np.ndarray:
    """``100 * num / den`` elementwise, NaN where ``den <= 0``."""
    num = np.atleast_1d(np.asarray(num, dtype=np.float64))
    den = np.atleast_1d(np.asarray(den, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = 100.0 * num / den
    out[~(den > 0)] = np.nan
    return out


def in_subtree(name: str | None, top: str | None, parents: Mapping[str, str | None]) -> bool:
    """True when population ``name`` is ``top`` or one of its descendants.

    ``parents`` maps each population to its parent (None or ``"root"`` at the top); a
    cycle or an unknown name ends the walk (False)."""
    if top is None or name is None:
        return False
    node: str | None = name
    seen: set[str] = set()
    while node and node != ROOT and node not in seen:
        if node == top:
            return True
        seen.add(node)
        node = parents.get(node)
    return False


def hierarchy_table(
    counts: Mapping[str, int],
    parents: Mapping[str, str | None],
    total: int,
    reference: str | None,
) -> dict[str, np.ndarray | list]:
    """The columns `TABLE_COLUMNS` of one sample, as arrays (population order of ``counts``).

    Parameters
    ----------
    counts : events per population, parents before children.
    parents : each population's parent (None, ``""`` or ``"root"`` at the top).
    total : events in the file (the parent count of top-level populations).
    reference : the population ``percent_of_lymphocytes`` refers to, or None.
    """
    names = list(counts)
    par = [parents.get(n) or ROOT for n in names]
    count = np.array([int(counts[n]) for n in names], dtype=np.int64)
    parent_count = np.array(
        [int(total) if p == ROOT else int(counts.get(p, 0)) for p in par], dtype=np.int64
    )
    if reference is not None and reference in counts:
        inside = np.array([in_subtree(n, reference, parents) for n in names], dtype=bool)
        pol = percent(count, np.full(len(names), float(counts[reference])))
        pol[~inside] = np.nan
    else:
        pol = np.full(len(names), np.nan)
    return {
        "population": names,
        "parent": par,
        "count": count,
        "parent_count": parent_count,
        "percent_of_parent": percent(count, parent_count),
        "percent_of_lymphocytes": pol,
    }


__all__ = ["ROOT", "TABLE_COLUMNS", "hierarchy_table", "in_subtree", "percent"]
