"""Native thread pools held to one thread around small numeric kernels.

A BLAS or OpenMP call on a small block spends more time waking threads than computing, and
in a process pool every worker's threads fight for the same cores.
"""

from __future__ import annotations

import contextlib
from typing import Any

_CONTROLLER: list[Any] = []


def one_thread(user_api: str | None = None) -> Any:
    """A context manager limiting native thread pools to one thread: all of them (BLAS and
    OpenMP) by default, or those of ``user_api`` (``"blas"``, ``"openmp"``).

    The thread-pool controller (which scans the loaded libraries, a few ms) is built once
    per process, not once per call.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        return contextlib.nullcontext()
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api=user_api)


__all__ = ["one_thread"]
