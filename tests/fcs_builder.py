"""Build FCS files byte by byte for the reader tests (independent of immunoprofile's writer).

`build_fcs` lays out HEADER, TEXT and DATA exactly as asked, including the faults real
writers make (offsets off by one, zero HEADER offsets, odd delimiters), so each reader
rule is tested on bytes whose layout the test states explicitly.
"""

from __future__ import annotations

import numpy as np


def encode_text(items: dict[str, str], delim: str = "/", escape: bool = True) -> bytes:
    """TEXT segment: delimiter, then key/value pairs each followed by the delimiter."""
    out = [delim]
    for k, v in items.items():
        if escape:
            k, v = k.replace(delim, delim * 2), str(v).replace(delim, delim * 2)
        out.append(f"{k}{delim}{v}{delim}")
    return "".join(out).encode("latin-1" if not _is_ascii("".join(out)) else "ascii")


def _is_ascii(s: str) -> bool:
    try:
        s.encode("ascii")
    except UnicodeEncodeError:
        return False
    return True


def build_fcs(
    keywords: dict[str, str],
    data: bytes,
    *,
    version: str = "3.1",
    delim: str = "/",
    header_data: bool = True,
    text_data: bool = True,
    data_end_shift: int = 0,
    text_encoding: str | None = None,
    gap: int = 0,
    trailer: bytes = b"",
) -> bytes:
    """A complete single-data-set FCS file.

    Parameters
    ----------
    keywords : TEXT keywords other than the DATA offsets (which are computed here).
    data : the DATA segment bytes.
    header_data / text_data : write the DATA offsets into the HEADER / into TEXT
        ($BEGINDATA/$ENDDATA); a HEADER without them holds zeros.
    data_end_shift : added to the declared DATA end (both places), to model off-by-N.
    gap : spaces between TEXT and DATA.
    trailer : bytes appended after DATA.
    """
    kw = dict(keywords)
    begin = 0
    for _ in range(6):
        if text_data:
            end = begin + len(data) - 1 + data_end_shift if data else 0
            kw["$BEGINDATA"] = str(begin)
            kw["$ENDDATA"] = str(end)
        text = encode_text(kw, delim)
        if text_encoding:
            text = text.decode("latin-1").encode(text_encoding)
        new_begin = 58 + len(text) + gap
        if new_begin == begin:
            break
        begin = new_begin
    text_end = 58 + len(text) - 1
    d0, d1 = (begin, begin + len(data) - 1 + data_end_shift) if header_data else (0, 0)
    header = f"FCS{version}    {58:>8}{text_end:>8}{d0:>8}{d1:>8}{0:>8}{0:>8}".encode("ascii")
    assert len(header) == 58
    return header + text + b" " * gap + data + trailer


def standard_keywords(
    n_events: int,
    names: list[str],
    *,
    datatype: str = "F",
    bits: list[int] | int = 32,
    byteord: str = "1,2,3,4",
    ranges: list[float] | float = 1024,
    extra: dict[str, str] | None = None,
    tot: bool = True,
) -> dict[str, str]:
    """The required keywords of a list-mode data set."""
    p = len(names)
    bits_l = bits if isinstance(bits, list) else [bits] * p
    rng = ranges if isinstance(ranges, list) else [ranges] * p
    kw = {"$BYTEORD": byteord, "$DATATYPE": datatype, "$MODE": "L", "$NEXTDATA": "0"}
    kw["$PAR"] = str(p)
    if tot:
        kw["$TOT"] = str(n_events)
    for i, (n, b, r) in enumerate(zip(names, bits_l, rng), start=1):
        kw[f"$P{i}N"] = n
        kw[f"$P{i}B"] = str(b)
        kw[f"$P{i}E"] = "0,0"
        kw[f"$P{i}R"] = str(r)
    kw.update(extra or {})
    return kw


def pack_columns(columns: list[np.ndarray], dtypes: list[str]) -> bytes:
    """Interleave per-channel arrays event by event, each in its own numpy dtype string."""
    n = len(columns[0])
    sdt = np.dtype([(f"c{i}", dt) for i, dt in enumerate(dtypes)])
    rec = np.empty(n, dtype=sdt)
    for i, col in enumerate(columns):
        rec[f"c{i}"] = col
    return rec.tobytes()
