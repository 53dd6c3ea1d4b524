"""Plain JSON values from results that hold numpy scalars and arrays: one helper for every
writer of JSON (gates, fitted parameters, run records, AnnData metadata)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(value: Any, *, finite: bool = True, text: bool = False) -> Any:
    """``value`` with dicts (keys as text), lists, tuples, numpy arrays and scalars and
    paths turned into plain JSON values, recursively.

    Parameters
    ----------
    finite : non-finite floats (NaN, ±inf) become None, because strict JSON (RFC 8259) has
        no such numbers; False keeps them, for readers that take them (a gate's open bound,
        HDF5 attributes).
    text : any other object becomes its ``str``; False leaves it as it is.
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v, finite=finite, text=text) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, finite=finite, text=text) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist(), finite=finite, text=text)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return None if finite and not math.isfinite(value) else value
    if value is None or isinstance(value, str | int):
        return value
    if isinstance(value, Path):
        return str(value)
    return str(value) if text else value


__all__ = ["jsonable"]


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The JSON object stored in ``path``; ``error`` (naming the file and the cause) when it
    cannot be read, is not JSON, or holds something other than an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{path}: cannot be read as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found {type(data).__name__}")
    return data
