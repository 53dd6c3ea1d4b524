"""Write a `Sample` (or a subset of its events) as an FCS 3.1 file, float32 little-endian.

Markers ($PnS), ranges and the spillover keyword are kept, so a written file is a faithful
copy of the populations it holds. Output is written to a temporary file and renamed, so a
failure never leaves a half-written file behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from immunoprofile.exceptions import FCSError
from immunoprofile.sample import Sample

# Delimiters tried in order: the first one absent from every keyword and value is used, so
# readers that do not undo doubled delimiters (several do not) still read values exactly.
_DELIMS = ("|", "/", "\\", "!", "~", "^", "\x0c")
# keywords the writer computes itself; never copied from the source sample
_OWN = {"$BEGINANALYSIS", "$ENDANALYSIS", "$BEGINSTEXT", "$ENDSTEXT", "$BEGINDATA", "$ENDDATA"}
_OWN |= {"$BYTEORD", "$DATATYPE", "$MODE", "$NEXTDATA", "$PAR", "$TOT"}


def _choose_delimiter(items: dict[str, str]) -> str:
    text = "".join(f"{k}{v}" for k, v in items.items())
    for d in _DELIMS:
        if d not in text:
            return d
    return _DELIMS[0]  # every candidate occurs: escape by doubling, as FCS 3.1 allows


def _escape(value: str, delim: str) -> str:
    return str(value).replace(delim, delim * 2)


def _is_parameter_keyword(key: str) -> bool:
    k = key.upper()
    return k.startswith("$P") and k[2:3].isdigit()


def _text_segment(sample: Sample, n_events: int, extra: dict[str, str], data_start: int) -> str:
    kw: dict[str, str] = {}
    for k, v in sample.keywords.items():
        if k.upper() not in _OWN and not _is_parameter_keyword(k):
            kw[k] = v
    for i, row in enumerate(sample.channels.itertuples(index=False), start=1):
        kw[f"$P{i}N"] = row.name
        kw[f"$P{i}B"] = "32"
        kw[f"$P{i}E"] = "0,0"
        rng = float(row.range) if row.range and row.range > 0 else 262144.0
        kw[f"$P{i}R"] = repr(rng) if not rng.is_integer() else str(int(rng))
        if row.marker:
            kw[f"$P{i}S"] = row.marker
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
    delim = _choose_delimiter(kw)
    nbytes = n_events * sample.n_channels * 4
    # offsets are written last; iterate because their digit count changes the text length
    begin = data_start
    for _ in range(4):
        kw["$BEGINDATA"] = str(begin)
        kw["$ENDDATA"] = str(begin + nbytes - 1 if nbytes else begin)
        body = delim + "".join(
            f"{_escape(k, delim)}{delim}{_escape(v, delim)}{delim}" for k, v in kw.items()
        )
        needed = 58 + len(body.encode("utf-8"))
        if needed <= begin:
            return body
        begin = needed
    return body


def write_fcs(
    sample: Sample,
    path: str | os.PathLike,
    mask: np.ndarray | None = None,
    extra_keywords: dict[str, str] | None = None,
) -> Path:
    """Write ``sample`` (only the events in ``mask`` if given) to ``path`` as FCS 3.1.

    Values are written as float32, so reading the file back returns the same array.
    Returns the path written.
    """
    path = Path(path)
    events = sample.events if mask is None else sample.events[mask]
    events = np.ascontiguousarray(events, dtype="<f4")
    n_events = events.shape[0]
    extra = {str(k): str(v) for k, v in (extra_keywords or {}).items()}
    text = _text_segment(sample, n_events, extra, data_start=0)
    text_bytes = text.encode("utf-8")
    text_start = 58
    text_end = text_start + len(text_bytes) - 1
    data_start = int(_find(text, "$BEGINDATA", text[0]))
    data_end = int(_find(text, "$ENDDATA", text[0]))
    pad = data_start - (text_end + 1)
    header_data = (data_start, data_end) if data_end <= 99_999_999 else (0, 0)
    header = (
        "FCS3.1    "
        + f"{text_start:>8}{text_end:>8}{header_data[0]:>8}{header_data[1]:>8}"
        + f"{0:>8}{0:>8}"
    ).encode("ascii")
    if text_end > 99_999_999:
        raise FCSError(path, "TEXT segment too large for the FCS HEADER")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(header)
            fh.write(text_bytes)
            fh.write(b" " * pad)
            fh.write(events.tobytes())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _find(text: str, key: str, delim: str) -> str:
    token = f"{delim}{key}{delim}"
    i = text.index(token) + len(token)
    return text[i : text.index(delim, i)]
