"""Deprecated: the population-table arithmetic moved to `immunoprofile.hierarchy`.

Names read from here still work and warn; this module goes away in a later release.
"""

from __future__ import annotations

import warnings
from typing import Any

from immunoprofile import hierarchy as _new

_MOVED = ("ROOT", "TABLE_COLUMNS", "hierarchy_table", "in_subtree", "percent")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"immunoprofile.gating.table.{name} moved to immunoprofile.hierarchy.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_new, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
