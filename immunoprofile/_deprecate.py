"""Old import paths of moved modules: each name still resolves, with a DeprecationWarning.

A module that moved leaves a stub at its old path whose ``__getattr__`` comes from
`moved_module`. The stub imports nothing of the package until a name is read, so the
layering of the package (tests/test_layers.py) sees no import back up the pipeline.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_module(old: str, new: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``old`` forwarding every name to module ``new``."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        target = importlib.import_module(new)
        if not hasattr(target, name):
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; import it from there "
            f"({old} goes away in a later release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(target, name)

    return __getattr__


def moved_names(old: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for module ``old``, some of whose names moved: each name
    of ``names`` forwards to the module given for it, with a DeprecationWarning."""

    def __getattr__(name: str) -> Any:
        new = names.get(name)
        if new is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        warnings.warn(
            f"{old}.{name} moved to {new}.{name}; import it from there "
            f"(the old spelling goes away in a later release)",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new), name)

    return __getattr__
