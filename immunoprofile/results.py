"""What a batch of files gives back: the results protocol shared by `GateResults` and
`ClusterResult`.

Whatever verb produced it, a batch result answers the same four questions the same way:

* ``samples`` -- the sample name of every input, in input order, failed files included;
* ``errors`` -- a table with one row per failed file and per file whose identity another
  file also claims (`immunoprofile.batch.ERROR_COLUMNS`); empty when there are none;
* ``table()`` -- the tidy population table (one row per sample x population);
* ``write(out_dir)`` -- every output into a folder, atomically; returns the paths written.

`BatchResults` writes this down as a `typing.Protocol`, so notebooks, `immunoprofile run`
and the tests can rely on it for either verb.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import pandas as pd

from immunoprofile.cohort import CLASH_ERROR


@runtime_checkable
class BatchResults(Protocol):
    """The protocol of `GateResults` and `ClusterResult` (see the module docstring)."""

    @property
    def samples(self) -> list[str]: ...

    @property
    def errors(self) -> pd.DataFrame: ...

    def table(self) -> pd.DataFrame: ...

    def write(self, out_dir: str | os.PathLike, **kwargs: Any) -> list[Path]: ...


class ErrorTable(pd.DataFrame):
    """The errors of a batch: a DataFrame (`immunoprofile.batch.ERROR_COLUMNS`).

    ``res.errors`` is the table. Calling it (``res.errors()``, the older spelling of
    `GateResults`) still returns it, with a `DeprecationWarning`.
    """

    @property
    def _constructor(self) -> type[pd.DataFrame]:
        # what pandas operations on the table return: plain DataFrames
        return pd.DataFrame

    def __call__(self) -> pd.DataFrame:
        warnings.warn(
            "errors is a table now (the same on gating and clustering results): use "
            "res.errors, not res.errors(); the call will be removed in a later version",
            DeprecationWarning,
            stacklevel=2,
        )
        return pd.DataFrame(self)


def error_table(rows: Any, columns: Any) -> ErrorTable:
    """An `ErrorTable` of ``rows`` (dicts or a DataFrame) with exactly ``columns``."""
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=list(columns))
    return ErrorTable(frame)


def failures(errors: pd.DataFrame) -> pd.DataFrame:
    """The rows of a batch's ``errors`` table for files that failed (read, gated or
    clustered), leaving out those listed only because another file claims their identity."""
    if not len(errors) or "error_type" not in errors.columns:
        return pd.DataFrame(errors).iloc[0:0]
    return pd.DataFrame(errors[errors["error_type"] != CLASH_ERROR])


__all__ = ["BatchResults", "ErrorTable", "error_table", "failures"]
