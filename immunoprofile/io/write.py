"""Write a `Sample` (or a subset of its events) as an FCS 3.1 file, float32 little-endian.

Markers ($PnS), ranges ($PnR), the spillover keyword and every other keyword are kept,
including per-channel keywords such as ``$PnV`` (matched to channels by name, so a
sample read with a subset of channels keeps the right ones), so a written file is a
faithful copy of the populations it holds. Output goes to a temporary file that is then
renamed, so a failure never leaves a half-written file behind.

What the values mean
--------------------
Events are written exactly as held, as float32, with ``$PnE`` = ``0,0``. Reading the file
back with the same ``scale`` the sample was read with returns the same array:

* a sample read with ``scale=True`` (the default) holds values on the channel scale, so
  the file says so: no ``$PnG`` and ``$TIMESTEP`` = ``1`` (Time is already in seconds);
* a sample read with ``scale=False``, or built in memory (e.g. simulated), holds stored
  values, so ``$PnG`` (the channel table's gain) and ``$TIMESTEP`` are kept and
  ``read_fcs(path)`` scales them as it would the original file. Log amplification
  (``$PnE`` f1 > 0) cannot be declared for float data (FCS 3.1), so such channels are
  written as stored with a warning.

Files whose DATA ends beyond byte 99,999,999 get zeros for the DATA offsets in the HEADER
and carry them in ``$BEGINDATA``/``$ENDDATA`` only (FCS 3.1, section 3.2).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile._files import atomic_write
from immunoprofile.exceptions import FCSError, FCSWarning
from immunoprofile.sample import Sample, marker_or_none

# Delimiters tried in order: the first one absent from every keyword and value is used, so
# readers that do not undo doubled delimiters (several do not) still read values exactly.
_DELIMS = ("|", "/", "\\", "!", "~", "^", "\x0c", "\x1e", "\x1f")
# keywords the writer computes itself; never copied from the source sample
_OWN = {"$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINSTEXT", "$ENDSTEXT", "$BEGINDATA", "$ENDDATA"}
_OWN |= {"$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT"}
_PARAM = re.compile(r"^\$P(\d+)([A-Z]+)$")
# per-channel keywords the writer sets itself from the channel table
_PARAM_OWN = {"N", "B", "E", "R", "S", "G", "DATATYPE"}
HEADER_MAX = 99_999_999  # largest offset the 8-character HEADER fields can hold


def _choose_delimiter(items: dict[str, str]) -> str:
    text = "".join(f"{k}{v}" for k, v in items.items())
    for d in _DELIMS:
        if d not in text:
            return d
    return _DELIMS[0]  # every candidate occurs: escape by doubling, as FCS 3.1 allows


def _escape(value: str, delim: str) -> str:
    # FCS values are never empty ("||" would read as an escaped delimiter)
    return str(value).replace(delim, delim * 2) or " "


def _values_are_stored(sample: Sample) -> bool:
    """True unless the sample came from ``read_fcs(..., scale=True)`` (values on the scale)."""
    reads = [h for h in sample.history if isinstance(h, dict) and h.get("step") == "read"]
    return not reads or reads[0].get("scale") is False


def _source_parameter_keywords(sample: Sample) -> dict[str, dict[str, str]]:
    """Per-channel keywords of the source file, keyed by the channel's $PnN."""
    by_index: dict[int, dict[str, str]] = {}
    for k, v in sample.keywords.items():
        m = _PARAM.match(k.upper())
        if m:
            by_index.setdefault(int(m.group(1)), {})[m.group(2)] = v
    out: dict[str, dict[str, str]] = {}
    for _, kws in sorted(by_index.items()):
        name = kws.get("N", "").strip()
        if name and name not in out:
            out[name] = kws
    return out


def _fmt_number(x: float) -> str:
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e18 else repr(x)


def _keywords(sample: Sample, n_events: int, extra: dict[str, str], name: str) -> dict[str, str]:
    stored = _values_are_stored(sample)
    kw: dict[str, str] = {}
    for k, v in sample.keywords.items():
        if k.upper() not in _OWN and not _PARAM.match(k.upper()):
            kw[k] = str(v)
    source = _source_parameter_keywords(sample)
    has_time = False
    lost_log = []
    for i, row in enumerate(sample.channels.itertuples(index=False), start=1):
        for suffix, v in source.get(str(row.name).strip(), {}).items():
            if suffix not in _PARAM_OWN:
                kw[f"$P{i}{suffix}"] = v
        kw[f"$P{i}N"] = str(row.name)
        kw[f"$P{i}B"] = "32"
        kw[f"$P{i}E"] = "0,0"
        rng = float(row.range) if row.range and row.range > 0 else 262144.0
        kw[f"$P{i}R"] = _fmt_number(rng)
        marker = marker_or_none(row.marker)
        if marker is not None:
            kw[f"$P{i}S"] = marker
        has_time |= row.kind == "time"
        if stored:
            if row.gain and float(row.gain) not in (0.0, 1.0) and row.kind != "time":
                kw[f"$P{i}G"] = _fmt_number(row.gain)
            if row.log_decades and float(row.log_decades) > 0:
                lost_log.append(str(row.name))
    if lost_log:
        warnings.warn(
            f"{name}: log-amplified channels {lost_log} hold stored channel numbers; FCS "
            "float data cannot declare $PnE log amplification, so they are written as stored",
            FCSWarning,
            stacklevel=3,
        )
    if not stored and has_time and "$TIMESTEP" in kw:
        kw["$TIMESTEP"] = "1"  # Time already multiplied by the original $TIMESTEP
    kw["$FIL"] = name
    kw.update(extra)
    kw.update(
        {
            "$BYTEORD": "1,2,3,4",
            "$DATATYPE": "F",
            "$MODE": "L",
            "$NEXTDATA": "0",
            "$PAR": str(sample.n_channels),
            "$TOT": str(n_events),
            "$BEGINANALYSIS": "0",
            "$ENDANALYSIS": "0",
            "$BEGINSTEXT": "0",
            "$ENDSTEXT": "0",
        }
    )
    return kw


def _text_segment(kw: dict[str, str], nbytes: int) -> tuple[bytes, int, int]:
    """Encoded TEXT and the DATA offsets it declares (DATA follows TEXT directly)."""
    delim = _choose_delimiter({k: v for k, v in kw.items()})
    body = b""
    begin = 0
    # the offsets are part of TEXT, whose length depends on their digits: iterate
    for _ in range(8):
        end = begin + nbytes - 1 if nbytes else begin
        kw["$BEGINDATA"] = str(begin)
        kw["$ENDDATA"] = str(end)
        body = (
            delim
            + "".join(
                f"{_escape(k, delim)}{delim}{_escape(v, delim)}{delim}" for k, v in kw.items()
            )
        ).encode("utf-8")
        needed = 58 + len(body)
        if needed <= begin:
            return body, begin, end
        begin = needed
    raise AssertionError("TEXT offsets did not converge")  # pragma: no cover


def write_fcs(
    sample: Sample,
    path: str | os.PathLike,
    mask: np.ndarray | None = None,
    extra_keywords: dict[str, Any] | None = None,
) -> Path:
    """Write ``sample`` (only the events in ``mask`` if given) to ``path`` as FCS 3.1.

    Parameters
    ----------
    sample : the events and keywords to write.
    path : the output file; its folder is created if needed. ``$FIL`` is set to its name.
    mask : boolean mask or index array of the events to keep (a population).
    extra_keywords : keywords added or overriding the sample's (applied last, before the
        layout keywords the writer owns: offsets, ``$TOT``, ``$PAR``, ``$DATATYPE``...).

    Returns
    -------
    The path written. Values are float32, so ``read_fcs`` returns the same array (see the
    module notes on ``scale``).

    Raises
    ------
    FCSError when the TEXT segment alone would not fit the 8-digit HEADER offsets.
    """
    if not isinstance(sample, Sample):
        raise TypeError(f"write_fcs: expected an immunoprofile Sample, got {type(sample).__name__}")
    path = Path(path)
    if mask is None:
        events = sample.events
    else:
        sel = np.asarray(mask)
        if sel.dtype == bool and sel.shape != (sample.n_events,):
            raise ValueError(
                f"{path}: mask has shape {sel.shape} but the sample has {sample.n_events} events"
            )
        if sel.dtype != bool and (sel.ndim != 1 or not np.issubdtype(sel.dtype, np.integer)):
            raise ValueError(f"{path}: mask must be a boolean mask or a 1-D index array")
        events = sample.events[sel]
    events = np.ascontiguousarray(events, dtype="<f4")
    n_events = events.shape[0]
    extra = {str(k): str(v) for k, v in (extra_keywords or {}).items()}
    kw = _keywords(sample, n_events, extra, path.name)
    text_bytes, data_start, data_end = _text_segment(kw, events.nbytes)
    text_start = 58
    text_end = text_start + len(text_bytes) - 1
    if text_end > HEADER_MAX:
        raise FCSError(path, f"TEXT segment of {len(text_bytes)} bytes is too large for FCS")
    pad = data_start - (text_end + 1)
    header_data = (data_start, data_end) if data_end <= HEADER_MAX else (0, 0)
    header = (
        "FCS3.1    "
        + f"{text_start:>8}{text_end:>8}{header_data[0]:>8}{header_data[1]:>8}"
        + f"{0:>8}{0:>8}"
    ).encode("ascii")

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(header)
            fh.write(text_bytes)
            fh.write(b" " * pad)
            if events.nbytes:
                events.tofile(fh)

    return atomic_write(path, _write)
