"""Read FCS 2.0, 3.0, 3.1 and 3.2 files into a `Sample`.

The reader is written for numpy rather than wrapped around another package because the
DATA segment of a list-mode file is a fixed-layout table: read its bytes once into one
buffer, view them with the right dtype (a structured dtype when channels differ in width
or type), mask integer channels to their ``$PnR`` and convert to float32 column by
column. That keeps reading I/O-bound (close to ``numpy.fromfile``) and lets a subset of
events or channels be read without touching the rest.

Every check on the file (HEADER, TEXT, offsets, sizes) happens before any large
allocation, and every problem raises a subclass of `FCSError` whose message names the
file, the byte offset or keyword and the cause.

Offsets and their known faults
------------------------------
The DATA segment is located from the HEADER and from ``$BEGINDATA``/``$ENDDATA``. When the
two disagree the file is ambiguous and `DataOffsetDiscrepancyError` is raised, unless the
HEADER holds zeros (the FCS 3.1 rule for offsets beyond 99,999,999 bytes) or the caller
picks one with ``offsets="header"`` / ``offsets="text"``. One fault is tolerated with an
`FCSWarning`: a segment exactly one byte longer than ``$TOT`` events (several writers
store the byte after the last one as the end offset); the reader then takes ``$TOT``
events from the start offset.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from immunoprofile.exceptions import (
    DataOffsetDiscrepancyError,
    EventCountError,
    FCSDataTypeError,
    FCSError,
    FCSOffsetError,
    FCSTextError,
    FCSWarning,
    MarkerNotFoundError,
    MultipleDataSetsError,
    NotFCSError,
    TruncatedFCSError,
)
from immunoprofile.sample import Sample, channel_kind, make_channel_table

__all__ = [
    "FCSMetadata",
    "read_fcs",
    "read_fcs_datasets",
    "read_fcs_header",
]

HEADER_LEN = 58
_VERSION = re.compile(rb"^FCS(\d\.\d)")
_MAX_DATASETS = 10_000
_INT = re.compile(r"[+-]?[0-9]+")
_BLOCK = 65536  # rows per block when decoding mixed-width DATA
_CHUNK = 1 << 20  # bytes per read when byte-swapping on the fly

PathLike = str | os.PathLike | bytes | bytearray | memoryview | BinaryIO


# --- the byte source --------------------------------------------------------------


class _Source:
    """Uniform random access to a path, an in-memory buffer or a binary file object."""

    def __init__(self, src: Any) -> None:
        self.path: Path | None = None
        self._fh: BinaryIO | None = None
        self._mem: memoryview | None = None
        self._own = False
        if isinstance(src, (bytes, bytearray, memoryview)):
            self._mem = memoryview(src).cast("B")
            self.name = "<bytes>"
            self.size = len(self._mem)
            return
        if isinstance(src, (str, os.PathLike)):
            self.path = Path(os.fsdecode(src))
            self.name = str(self.path)
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 (closed in close())
            except OSError as exc:
                raise FCSError(self.name, f"cannot open: {exc.strerror or exc}") from exc
            self._own = True
        elif hasattr(src, "read") and hasattr(src, "seek"):
            self._fh = src
            fname = getattr(src, "name", None)
            self.name = str(fname) if isinstance(fname, (str, os.PathLike)) else "<stream>"
            if isinstance(fname, (str, os.PathLike)):
                self.path = Path(os.fsdecode(fname))
        else:
            raise TypeError(
                f"read_fcs expects a path, bytes or a binary file object, got {type(src).__name__}"
            )
        try:
            self._start = self._fh.tell()
            self._fh.seek(0, io.SEEK_END)
            self.size = self._fh.tell() - self._start
        except (OSError, ValueError) as exc:
            self.close()
            raise FCSError(self.name, f"cannot seek in the file: {exc}") from exc

    def close(self) -> None:
        if self._own and self._fh is not None:
            self._fh.close()
        self._fh = None

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes from ``offset`` (fewer at the end of the file)."""
        if offset < 0 or n <= 0 or offset >= self.size:
            return b""
        n = min(n, self.size - offset)
        if self._mem is not None:
            return bytes(self._mem[offset : offset + n])
        assert self._fh is not None
        self._fh.seek(self._start + offset)
        return self._fh.read(n)

    def read_array(self, offset: int, n: int, swap: int = 0) -> np.ndarray:
        """Exactly ``n`` bytes from ``offset`` as a fresh writable uint8 array.

        With ``swap`` = w > 1, every w-byte item is byte-swapped as it arrives, chunk by
        chunk while the chunk is still in cache (big-endian DATA costs no extra pass).
        """
        if n <= 0:  # an empty or inverted segment (a damaged HEADER) holds no bytes
            return np.zeros(0, dtype=np.uint8)
        if self._mem is not None:
            if offset < 0 or offset + n > len(self._mem):
                got = min(max(len(self._mem) - max(offset, 0), 0), n)
                raise TruncatedFCSError(
                    self.name,
                    f"file ended after {got} of {n} DATA bytes",
                    offset=max(offset, 0) + got,
                )
            buf = np.frombuffer(self._mem, dtype=np.uint8, count=n, offset=offset).copy()
            if swap > 1:
                buf.view(f"u{swap}").byteswap(inplace=True)
            return buf
        assert self._fh is not None
        buf = np.empty(n, dtype=np.uint8)
        self._fh.seek(self._start + offset)
        view = memoryview(buf)
        readinto = getattr(self._fh, "readinto", None)
        step = (_CHUNK // swap) * swap if swap > 1 else max(n, 1)
        for a in range(0, n, step):
            b = min(n, a + step)
            got = a
            while got < b:
                if readinto is not None:
                    k = readinto(view[got:b])
                else:
                    chunk = self._fh.read(b - got)
                    k = len(chunk)
                    view[got : got + k] = chunk
                if not k:
                    raise TruncatedFCSError(
                        self.name, f"file ended after {got} of {n} DATA bytes", offset=offset + got
                    )
                got += k
            if swap > 1:
                buf[a:b].view(f"u{swap}").byteswap(inplace=True)
        return buf

    def read_rows(self, offset: int, row_bytes: int, n_rows: int, index: np.ndarray) -> np.ndarray:
        """Selected rows (``index`` into ``n_rows`` rows of ``row_bytes``) as uint8 (k, row)."""
        if self._mem is not None:
            table = np.frombuffer(self._mem, np.uint8, count=n_rows * row_bytes, offset=offset)
            return table.reshape(n_rows, row_bytes)[index]
        if self.path is not None and self._own and len(index):
            mm = np.memmap(
                self.path,
                dtype=np.uint8,
                mode="r",
                offset=self._start + offset,
                shape=(n_rows * row_bytes,),
            )
            try:
                return np.array(mm.reshape(n_rows, row_bytes)[index])
            finally:
                del mm
        lo = int(index.min()) if len(index) else 0
        hi = int(index.max()) + 1 if len(index) else 0
        block = self.read_array(offset + lo * row_bytes, (hi - lo) * row_bytes)
        return block.reshape(hi - lo, row_bytes)[index - lo]


# --- HEADER and TEXT -----------------------------------------------------------------


def _header_int(field_bytes: bytes, src: _Source, at: int, what: str) -> int:
    s = field_bytes.decode("latin-1").strip()
    if not s:
        return 0
    if not _INT.fullmatch(s):
        raise FCSOffsetError(src.name, f"HEADER {what} field {s!r} is not a number", offset=at)
    return int(s)


@dataclass
class _Header:
    version: str
    text: tuple[int, int]
    data: tuple[int, int]
    analysis: tuple[int, int]


def _parse_header(src: _Source, base: int) -> _Header:
    raw = src.read(base, HEADER_LEN)
    if not isinstance(raw, bytes):
        raise TypeError(f"{src.name}: open the file in binary mode ('rb') to read FCS")
    m = _VERSION.match(raw)
    if not m:
        what = "data set" if base else "file"
        raise NotFCSError(
            src.name,
            f"not an FCS {what}: expected 'FCS<major>.<minor>' at the start, found {raw[:10]!r}",
            offset=base,
        )
    if len(raw) < 42:
        raise TruncatedFCSError(
            src.name, f"HEADER is {len(raw)} bytes, an FCS HEADER is 58", offset=base
        )
    raw = raw.ljust(HEADER_LEN, b" ")
    names = ("TEXT start", "TEXT end", "DATA start", "DATA end", "ANALYSIS start", "ANALYSIS end")
    vals = []
    for i, what in enumerate(names):
        at = 10 + 8 * i
        try:
            vals.append(_header_int(raw[at : at + 8], src, base + at, what))
        except FCSOffsetError:
            if i >= 4:  # the ANALYSIS offsets are optional and often garbage in 2.0 files
                vals.append(0)
            else:
                raise
    return _Header(m.group(1).decode(), (vals[0], vals[1]), (vals[2], vals[3]), (vals[4], vals[5]))


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


@dataclass(frozen=True)
class _TextFault:
    """Where TEXT stops splitting into keyword/value pairs: the character index of the bad
    token in the body and the last good keyword before it (None at the start)."""

    at: int
    previous: str | None
    cause: str


def _split_text(body: str, delim: str, escapes: bool) -> tuple[list[str], list[int]] | _TextFault:
    """Split TEXT (without its leading delimiter) into tokens and their start indices.

    With ``escapes`` a run of k delimiters holds k // 2 literal delimiters, and one
    separator if k is odd (FCS 3.1, section 3.2.9). A keyword is never empty and never
    holds a delimiter, so an even run right after a keyword can only be an empty value
    between two separators (``/$COM//NEXT/``, as flowio 1.4 writes it): read as such.
    Without ``escapes`` every delimiter separates. Returns a `_TextFault` when the tokens
    do not pair into keywords and values.
    """
    tokens: list[str] = []
    starts: list[int] = []
    if escapes:
        cur: list[str] = []
        pos = begin = 0  # begin: where the open token started
        for m in re.finditer(re.escape(delim) + "+", body):
            cur.append(body[pos : m.start()])
            k = m.end() - m.start()
            pos = m.end()
            if len(tokens) % 2 == 0:  # ending a keyword
                starts.append(begin)
                tokens.append("".join(cur))
                if k % 2:
                    # the separator first; escaped delimiters open the value
                    cur, begin = ([delim * (k // 2)] if k > 1 else []), m.start() + 1
                else:
                    # separator, a value of (k - 2) / 2 literal delimiters (empty for
                    # k = 2), separator
                    starts.append(m.start() + 1)
                    tokens.append(delim * ((k - 2) // 2))
                    cur, begin = [], pos
            elif k % 2 == 0:
                cur.append(delim * (k // 2))
            else:
                # ending a value: escaped delimiters close it (keywords never start with one)
                cur.append(delim * (k // 2))
                starts.append(begin)
                tokens.append("".join(cur))
                cur, begin = [], pos
        tail = body[pos:]
        if cur or tail.strip(" \x00\r\n\t"):
            starts.append(begin)
            tokens.append("".join(cur) + tail)
    else:
        pos = 0
        for piece in body.split(delim):
            starts.append(pos)
            tokens.append(piece)
            pos += len(piece) + 1
        if tokens and not tokens[-1].strip(" \x00\r\n\t"):
            tokens.pop()
            starts.pop()
    for i in range(0, len(tokens), 2):
        key = tokens[i]
        previous = tokens[i - 2].strip() if i >= 2 else None
        if not key.strip() or delim in key or _CONTROL.search(key.strip(" \x00\r\n\t")):
            return _TextFault(starts[i], previous, f"{key!r} cannot be a keyword")
        if i + 1 >= len(tokens):
            return _TextFault(starts[i], previous, f"keyword {key.strip()!r} has no value")
    return tokens, starts


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _parse_text(raw: bytes, src: _Source, at: int, what: str = "TEXT") -> dict[str, str]:
    """Keyword/value pairs of a TEXT segment; keys upper-cased, values unescaped.

    Raises `FCSTextError` naming the byte offset where the pairs break down and the last
    keyword read before that place."""
    if not raw:
        raise FCSTextError(src.name, f"{what} segment is empty", offset=at)
    if raw[0] < 0x80:
        try:
            text, enc = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, enc = raw.decode("latin-1"), "latin-1"
    else:
        text, enc = raw.decode("latin-1"), "latin-1"
    delim, body = text[0], text[1:]
    if delim.isalnum() and delim not in "\x0c":
        # a letter or digit cannot be a delimiter: the offsets point at the wrong bytes
        raise FCSTextError(
            src.name, f"{what} starts with {delim!r}, which cannot be a delimiter", offset=at
        )
    got = _split_text(body, delim, escapes=True)
    if isinstance(got, _TextFault):
        # writers that put empty values and never escape: read every delimiter literally
        literal = _split_text(body, delim, escapes=False)
        if isinstance(literal, _TextFault):
            fault = got if got.at >= literal.at else literal
            byte = at + len(text[: 1 + fault.at].encode(enc, errors="replace"))
            after = (
                f"after keyword {fault.previous!r}" if fault.previous else "at its first keyword"
            )
            raise FCSTextError(
                src.name,
                f"{what} segment does not split into keyword/value pairs with delimiter "
                f"{delim!r}: {fault.cause}, {after}",
                offset=byte,
                keyword=fault.previous,
            )
        got = literal
    tokens = got[0]
    out: dict[str, str] = {}
    for k, v in zip(tokens[0::2], tokens[1::2]):
        key = k.strip().upper()
        if key not in out:
            out[key] = v
    return out


# --- keyword helpers -----------------------------------------------------------------


def _kw_int(kw: dict[str, str], key: str, src: _Source, default: int | None = None) -> int | None:
    v = kw.get(key)
    if v is None or not v.strip():
        return default
    s = v.strip()
    if _INT.fullmatch(s):
        return int(s)
    try:
        f = float(s)
    except ValueError:
        raise FCSTextError(src.name, f"value {v!r} is not a number", keyword=key) from None
    if not math.isfinite(f) or f != int(f):
        raise FCSTextError(src.name, f"value {v!r} is not a whole number", keyword=key)
    return int(f)


#: the largest log-amplification ($PnE f1, plus log10 f2) whose values fit in a float64
_MAX_DECADES = 307.0


def _kw_float(kw: dict[str, str], key: str, src: _Source, default: float) -> float:
    v = kw.get(key)
    if v is None or not v.strip():
        return default
    try:
        f = float(v.strip())
    except ValueError:
        raise FCSTextError(src.name, f"value {v!r} is not a number", keyword=key) from None
    if not math.isfinite(f):
        raise FCSTextError(src.name, f"value {v!r} is not finite", keyword=key)
    return f


def _byte_order(value: str, src: _Source) -> tuple[str, tuple[int, ...] | None]:
    """'<' or '>' and, for mixed orders such as 3,4,1,2, the byte permutation to little."""
    parts = [p for p in re.split(r"[,\s]+", value.strip()) if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    n = len(nums)
    if n == 0 or sorted(nums) != list(range(1, n + 1)):
        raise FCSDataTypeError(
            src.name, f"byte order {value!r} is not understood", keyword="$BYTEORD"
        )
    if nums == list(range(1, n + 1)):
        return "<", None
    if nums == list(range(n, 0, -1)):
        return ">", None
    return "<", tuple(int(i) for i in np.argsort(np.asarray(nums) - 1))


# --- metadata of one data set ----------------------------------------------------------


@dataclass
class _Channel:
    name: str
    marker: str | None
    kind: str  # "u" unsigned integer, "f" float, "S" fixed-width ASCII, "*" delimited ASCII
    width: int  # bytes
    bits: int
    range: float
    gain: float
    log_decades: float
    log_offset: float
    mask: int | None


@dataclass
class FCSMetadata:
    """HEADER and TEXT of one data set, everything except the events.

    Attributes
    ----------
    path : the file (``"<bytes>"`` for in-memory input).
    dataset : index of the data set in the file's ``$NEXTDATA`` chain.
    offset : byte offset of the data set's HEADER in the file.
    version : FCS version from the HEADER (``"3.1"``).
    keywords : TEXT (and supplemental TEXT) keywords, UPPER-case keys.
    n_events, n_channels : event and channel counts.
    data_offsets : absolute byte range ``(first, last)`` of the DATA that is read.
    channels : the channel table, as `Sample.channels` for ``scale=False``.
    next_offset : absolute offset of the next data set, or None.
    """

    path: str
    dataset: int
    offset: int
    version: str
    keywords: dict[str, str]
    n_events: int
    n_channels: int
    data_offsets: tuple[int, int]
    channels: pd.DataFrame
    next_offset: int | None
    datatype: str = "F"
    byte_order: str = "<"
    _chans: list[_Channel] = field(default_factory=list, repr=False)
    _perm: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def row_bytes(self) -> int:
        return sum(c.width for c in self._chans)


def _next_pow2(x: float) -> int:
    n = max(1, int(math.ceil(x)))
    return 1 << (n - 1).bit_length()


def _channels(kw: dict[str, str], n_par: int, src: _Source) -> list[_Channel]:
    datatype = kw.get("$DATATYPE", "").strip().upper()
    out = []
    for i in range(1, n_par + 1):
        p = f"$P{i}"
        dt = kw.get(f"{p}DATATYPE", datatype).strip().upper() or datatype  # FCS 3.2
        bits_s = kw.get(f"{p}B", "").strip()
        if dt in ("F", "D"):
            width = 4 if dt == "F" else 8
            if bits_s and _INT.fullmatch(bits_s) and int(bits_s) != 8 * width:
                raise FCSDataTypeError(
                    src.name,
                    f"$DATATYPE {dt} needs {8 * width}-bit values but {p}B is {bits_s}",
                    keyword=f"{p}B",
                )
            kind, bits = "f", 8 * width
        elif dt == "I":
            if not _INT.fullmatch(bits_s):
                raise FCSDataTypeError(
                    src.name, f"integer bit width {bits_s!r} is not supported", keyword=f"{p}B"
                )
            bits = int(bits_s)
            if bits % 8 or not 8 <= bits <= 64:
                raise FCSDataTypeError(
                    src.name,
                    f"integer width of {bits} bits is not supported (whole bytes up to 64 are)",
                    keyword=f"{p}B",
                )
            kind, width = "u", bits // 8
        elif dt == "A":
            # ASCII: $PnB characters per value, or "*" for delimited values (FCS 2.0/3.0)
            if bits_s == "*":
                kind, width, bits = "*", 0, 0
            elif _INT.fullmatch(bits_s) and 0 < int(bits_s) <= 64:
                kind, width, bits = "S", int(bits_s), int(bits_s)
            else:
                raise FCSDataTypeError(
                    src.name, f"ASCII field width {bits_s!r} is not valid", keyword=f"{p}B"
                )
        else:
            raise FCSDataTypeError(
                src.name, f"unknown data type {dt!r} (I, F or D expected)", keyword="$DATATYPE"
            )
        rng = _kw_float(kw, f"{p}R", src, 0.0)
        pne = kw.get(f"{p}E", "0,0").strip() or "0,0"
        try:
            f1, f2 = (float(x) for x in pne.split(","))
        except ValueError:
            raise FCSTextError(src.name, f"value {pne!r} is not 'f1,f2'", keyword=f"{p}E") from None
        if not (math.isfinite(f1) and math.isfinite(f2)) or f1 < 0:
            raise FCSTextError(src.name, f"value {pne!r} is not valid", keyword=f"{p}E")
        scale_top = f1 + (math.log10(f2) if f2 > 0 else 0.0)
        if f1 > 0 and scale_top > _MAX_DECADES:
            pname = kw.get(f"{p}N", "").strip() or f"P{i}"
            raise FCSTextError(
                src.name,
                f"value {pne!r} of parameter {i} ({pname}) asks for {f1:g} decades: values up "
                f"to 10**{scale_top:.4g}, beyond what a float64 holds (10**308)",
                keyword=f"{p}E",
            )
        gain = _kw_float(kw, f"{p}G", src, 1.0)
        mask = None
        if kind == "u" and rng > 0:
            top = _next_pow2(rng)
            if top < (1 << bits):
                mask = top - 1
        name = kw.get(f"{p}N", "").strip() or f"P{i}"
        marker = kw.get(f"{p}S", "").strip() or None
        out.append(_Channel(name, marker, kind, width, bits, rng, gain, f1, f2, mask))
    return out


def _data_offsets(
    kw: dict[str, str],
    hdr: _Header,
    base: int,
    src: _Source,
    offsets: str,
) -> tuple[int, int]:
    """Absolute (start, end) of DATA as declared, resolving HEADER vs TEXT."""
    hs, he = hdr.data
    ts = _kw_int(kw, "$BEGINDATA", src)
    te = _kw_int(kw, "$ENDDATA", src)
    has_text = ts is not None and te is not None and (ts, te) != (0, 0)
    has_header = (hs, he) != (0, 0)
    if offsets == "header":
        if not has_header:
            raise FCSOffsetError(src.name, "HEADER holds no DATA offsets", offset=base + 26)
        start, end = hs, he
    elif offsets == "text":
        if not has_text:
            raise FCSOffsetError(src.name, "no $BEGINDATA/$ENDDATA", keyword="$BEGINDATA")
        start, end = ts, te
    elif offsets != "auto":
        raise ValueError(f"offsets must be 'auto', 'header' or 'text', got {offsets!r}")
    elif has_text and has_header and (ts, te) != (hs, he):
        raise DataOffsetDiscrepancyError(
            src.name,
            f"HEADER puts DATA at {hs}-{he} but $BEGINDATA/$ENDDATA say {ts}-{te}; "
            "pass offsets='header' or offsets='text' to choose one",
            offset=base + (26 if hs != ts else 34),
        )
    elif has_text:
        start, end = ts, te  # also the HEADER-zero case of files beyond 99,999,999 bytes
    elif has_header:
        start, end = hs, he
    else:
        raise FCSOffsetError(
            src.name, "neither HEADER nor $BEGINDATA/$ENDDATA locate DATA", offset=base + 26
        )
    if start < 0 or end < 0:
        raise FCSOffsetError(src.name, f"negative DATA offsets {start}-{end}", offset=base + 26)
    return base + start, base + end


def _text_segment(src: _Source, hdr: _Header, base: int) -> tuple[dict[str, str], int]:
    t0, t1 = hdr.text
    if t0 < HEADER_LEN and not (t0 == 0 and t1 == 0) or t1 < t0:
        raise FCSOffsetError(src.name, f"TEXT offsets {t0}-{t1} are impossible", offset=base + 10)
    if (t0, t1) == (0, 0):
        raise FCSOffsetError(src.name, "HEADER gives no TEXT offsets", offset=base + 10)
    if base + t1 >= src.size:
        raise TruncatedFCSError(
            src.name,
            f"TEXT ends at byte {base + t1} but the file has {src.size} bytes",
            offset=base + 18,
        )
    raw = src.read(base + t0, t1 - t0 + 1)
    kw = _parse_text(raw, src, base + t0)
    # supplemental TEXT (FCS 3.x): merged in, primary keywords win
    s0 = _kw_int(kw, "$BEGINSTEXT", src, 0) or 0
    s1 = _kw_int(kw, "$ENDSTEXT", src, 0) or 0
    if s0 and s1 >= s0 and (s0, s1) != (t0, t1):
        if base + s1 >= src.size or s0 < HEADER_LEN:
            warnings.warn(
                f"{src.name}: supplemental TEXT {s0}-{s1} lies outside the file; ignored",
                FCSWarning,
                stacklevel=4,
            )
        else:
            try:
                extra = _parse_text(src.read(base + s0, s1 - s0 + 1), src, base + s0, "STEXT")
            except FCSTextError as exc:
                warnings.warn(f"{exc}; supplemental TEXT ignored", FCSWarning, stacklevel=4)
                extra = {}
            for k, v in extra.items():
                kw.setdefault(k, v)
    return kw, t0


def _metadata(
    src: _Source, base: int, index: int, offsets: str = "auto", check_data: bool = True
) -> FCSMetadata:
    hdr = _parse_header(src, base)
    kw, _ = _text_segment(src, hdr, base)
    n_par = _kw_int(kw, "$PAR", src)
    if n_par is None:
        raise FCSTextError(src.name, "required keyword is missing", keyword="$PAR")
    if n_par <= 0 or n_par > len(kw):
        # each parameter has at least $PnN, $PnB, $PnE and $PnR: TEXT bounds the count
        raise FCSTextError(
            src.name,
            f"{n_par} parameters is not plausible for a TEXT of {len(kw)} keywords",
            keyword="$PAR",
        )
    mode = kw.get("$MODE", "L").strip().upper() or "L"
    if mode != "L":
        raise FCSDataTypeError(
            src.name, f"only list mode (L) data is supported, not {mode!r}", keyword="$MODE"
        )
    datatype = kw.get("$DATATYPE", "").strip().upper()
    if not datatype:
        raise FCSTextError(src.name, "required keyword is missing", keyword="$DATATYPE")
    chans = _channels(kw, n_par, src)
    kinds = {c.kind for c in chans}
    if "*" in kinds and kinds != {"*"}:
        raise FCSDataTypeError(
            src.name,
            "delimited ASCII ($PnB *) must be used for every parameter",
            keyword="$DATATYPE",
        )
    delimited = kinds == {"*"}
    binary = [c for c in chans if c.kind in ("u", "f")]
    order, perm = _byte_order(kw.get("$BYTEORD", "1,2,3,4"), src) if binary else ("<", None)
    if perm is not None and any(c.width not in (1, len(perm)) for c in binary):
        raise FCSDataTypeError(
            src.name,
            f"byte order {kw['$BYTEORD']!r} does not fit {sorted({c.bits for c in chans})}-bit data",
            keyword="$BYTEORD",
        )
    start, end = _data_offsets(kw, hdr, base, src, offsets)
    row = sum(c.width for c in chans)
    tot = _kw_int(kw, "$TOT", src)
    seg = end - start + 1 if end >= start else 0
    if delimited:
        # values separated by blanks or commas: the declared segment is read whole
        if tot is None:
            raise FCSTextError(src.name, "delimited ASCII data needs $TOT", keyword="$TOT")
        if check_data and end >= src.size:
            raise TruncatedFCSError(
                src.name,
                f"DATA ends at byte {end} but the file has {src.size} bytes",
                offset=start,
            )
        row, need = 0, seg
    elif tot is None:
        # FCS 2.0 may omit $TOT: the segment length decides
        tot = seg // row
        if seg % row:
            warnings.warn(
                f"{src.name}: DATA holds {seg} bytes, not a whole number of {row}-byte "
                f"events and $TOT is absent; reading {tot} events",
                FCSWarning,
                stacklevel=3,
            )
    if tot < 0:
        raise FCSTextError(src.name, f"negative event count {tot}", keyword="$TOT")
    if not delimited:
        need = tot * row
    if check_data and not delimited and start + need > src.size:
        raise TruncatedFCSError(
            src.name,
            f"$TOT={tot} events of {row} bytes need DATA up to byte {start + need - 1} "
            f"but the file has {src.size} bytes",
            offset=start,
        )
    if check_data and tot and seg != need and not delimited:
        if seg == need + 1:
            warnings.warn(
                f"{src.name}: DATA end offset {end} is one byte past the last of $TOT={tot} "
                "events (a known writer fault); reading $TOT events",
                FCSWarning,
                stacklevel=3,
            )
        else:
            raise EventCountError(
                src.name,
                f"$TOT={tot} events of {row} bytes need {need} DATA bytes but DATA "
                f"{start}-{end} holds {seg}",
                keyword="$TOT",
            )
    nxt = _kw_int(kw, "$NEXTDATA", src, 0) or 0
    next_offset = base + nxt if nxt > 0 else None
    table = make_channel_table(
        [c.name for c in chans],
        [c.marker for c in chans],
        [c.range for c in chans],
        [c.bits for c in chans],
        [c.gain for c in chans],
        [c.log_decades for c in chans],
        [c.log_offset for c in chans],
    )
    return FCSMetadata(
        path=src.name,
        dataset=index,
        offset=base,
        version=hdr.version,
        keywords=kw,
        n_events=tot,
        n_channels=n_par,
        data_offsets=(start, start + need - 1),
        channels=table,
        next_offset=next_offset,
        datatype=datatype,
        byte_order=order,
        _chans=chans,
        _perm=perm,
    )


def _walk(
    src: _Source,
    offsets: str = "auto",
    first: FCSMetadata | None = None,
    check_data: bool = True,
) -> list[tuple[int, FCSMetadata | FCSError]]:
    """(offset, metadata or the error it raised) for each data set in the $NEXTDATA chain."""
    out: list[tuple[int, FCSMetadata | FCSError]] = []
    base: int | None = 0
    seen: set[int] = set()
    while base is not None and len(out) < _MAX_DATASETS:
        try:
            if first is not None and base == 0:
                meta = first
            else:
                meta = _metadata(src, base, len(out), offsets, check_data)
        except FCSError as exc:
            if not out:
                raise
            out.append((base, exc))
            break
        out.append((base, meta))
        seen.add(base)
        nxt = meta.next_offset
        if nxt is None:
            break
        if nxt in seen or nxt + HEADER_LEN > src.size:
            warnings.warn(
                f"{src.name}: $NEXTDATA of data set {meta.dataset} points to byte {nxt}, "
                "outside the file or back to a data set already read; ignored",
                FCSWarning,
                stacklevel=3,
            )
            break
        base = nxt
    return out


# --- public: text only ------------------------------------------------------------------


def read_fcs_header(
    path: PathLike, *, dataset: int = 0, offsets: str = "auto", check_data: bool = False
) -> FCSMetadata:
    """HEADER and TEXT of one data set, without reading DATA (fast, for ``inspect``).

    Parameters
    ----------
    path : a file path, the file's bytes or a binary file object.
    dataset : which data set of the ``$NEXTDATA`` chain.
    offsets : ``"auto"``, ``"header"`` or ``"text"``, as in `read_fcs`.
    check_data : also check that the DATA segment ``$TOT`` implies lies in the file
        (raising as `read_fcs` would); off by default so that a file cut after its TEXT
        can still be described.

    Raises
    ------
    FCSError (a subclass naming the cause) when the file cannot be read.
    """
    with _Source(path) as src:
        return _select(src, dataset, offsets, warn=False, check_data=check_data)


def read_fcs_datasets(path: PathLike) -> list[dict[str, Any]]:
    """Every data set in the file (``$NEXTDATA`` chain): index, offset, version, counts.

    A data set whose HEADER or TEXT cannot be read is listed with an ``error`` entry
    instead of its counts (the ones before it stay readable).
    """
    with _Source(path) as src:
        out = []
        for i, (off, meta) in enumerate(_walk(src, check_data=False)):
            if isinstance(meta, FCSError):
                out.append({"index": i, "offset": off, "error": str(meta)})
            else:
                out.append(
                    {
                        "index": i,
                        "offset": off,
                        "version": meta.version,
                        "n_events": meta.n_events,
                        "n_channels": meta.n_channels,
                    }
                )
        return out


def _select(
    src: _Source, dataset: int | None, offsets: str, warn: bool, check_data: bool = True
) -> FCSMetadata:
    first = None
    if dataset == 0 or dataset is None:
        first = _metadata(src, 0, 0, offsets, check_data)
        if first.next_offset is None:
            return first
    sets = _walk(src, offsets, first, check_data)
    found = [m for _, m in sets]
    if dataset is None:
        raise MultipleDataSetsError(
            src.name,
            f"the file holds {len(found)} data sets (at bytes "
            f"{', '.join(str(o) for o, _ in sets)}); pass dataset=<index> to choose one",
            keyword="$NEXTDATA",
        )
    if not isinstance(dataset, (int, np.integer)) or isinstance(dataset, bool):
        raise TypeError(f"dataset must be an int, got {type(dataset).__name__}")
    if dataset < 0 or dataset >= len(found):
        raise MultipleDataSetsError(
            src.name,
            f"data set {dataset} does not exist; the file holds {len(found)} "
            f"(indices 0-{len(found) - 1})",
            keyword="$NEXTDATA",
        )
    chosen = found[dataset]
    if isinstance(chosen, FCSError):
        raise chosen
    if warn and dataset == 0 and len(found) > 1:
        others = [f"{i} (byte {o})" for i, (o, _) in enumerate(sets) if i != dataset]
        warnings.warn(
            f"{src.name} holds {len(found)} data sets; read data set {dataset}, "
            f"the others are {', '.join(others)} (see read_fcs_datasets)",
            FCSWarning,
            stacklevel=3,
        )
    return chosen


# --- DATA ---------------------------------------------------------------------------------


def _rows(events: Any, n: int, name: str) -> tuple[int, int] | np.ndarray:
    """Normalise the ``events`` argument: a contiguous (start, stop) or an index array."""
    if events is None:
        return (0, n)
    if isinstance(events, (int, np.integer)) and not isinstance(events, bool):
        if events < 0:
            raise ValueError(f"{name}: events={events} must be >= 0 (the first N events)")
        return (0, min(int(events), n))
    if isinstance(events, slice):
        start, stop, step = events.indices(n)
        if step == 1:
            return (start, max(start, stop))
        return np.arange(start, stop, step)
    idx = np.asarray(events)
    if idx.dtype == bool:
        if idx.shape != (n,):
            raise ValueError(f"{name}: boolean events mask has shape {idx.shape}, need ({n},)")
        return np.flatnonzero(idx)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(f"{name}: events must be an int, a slice or a 1-D index array")
    idx = idx.astype(np.int64)
    if idx.size and (idx.max() >= n or idx.min() < -n):
        raise IndexError(f"{name}: event index out of range for {n} events")
    return np.where(idx < 0, idx + n, idx)


def _cols(channels: Sequence[str | int] | None, meta: FCSMetadata) -> list[int]:
    if channels is None:
        return list(range(meta.n_channels))
    if isinstance(channels, (str, int)):
        channels = [channels]
    names = [c.name for c in meta._chans]
    lower = [n.lower() for n in names]
    markers = [c.marker for c in meta._chans]
    out = []
    for c in channels:
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not -meta.n_channels <= c < meta.n_channels:
                raise MarkerNotFoundError(
                    f"{meta.path}: channel index {c} is out of range for {meta.n_channels} channels"
                )
            out.append(int(c) % meta.n_channels)
        elif isinstance(c, str):
            if c in names:
                out.append(names.index(c))
            elif c.lower() in lower:
                out.append(lower.index(c.lower()))
            elif c in markers:
                out.append(markers.index(c))
            else:
                raise MarkerNotFoundError(
                    f"{meta.path}: no channel named {c!r}; channels are {names}"
                )
        else:
            raise TypeError(f"channels must be names or indices, got {c!r}")
    return out


def _swap_width(meta: FCSMetadata) -> int:
    """Item width to byte-swap while reading (uniform non-native DATA), else 0."""
    chans = meta._chans
    c0 = chans[0]
    if meta._perm is not None or c0.width not in (2, 4, 8) or c0.kind not in ("u", "f"):
        return 0
    if any((c.kind, c.width) != (c0.kind, c0.width) for c in chans):
        return 0
    return 0 if np.dtype(f"{meta.byte_order}{c0.kind}{c0.width}").isnative else c0.width


def _raw_rows(
    src: _Source, meta: FCSMetadata, rows: tuple[int, int] | np.ndarray, swap: int = 0
) -> np.ndarray:
    row = meta.row_bytes
    start = meta.data_offsets[0]
    if row == 0:  # delimited ASCII: the whole segment, split into values by the decoder
        a, b = meta.data_offsets
        return src.read_array(a, b - a + 1)
    if isinstance(rows, tuple):
        a, b = rows
        buf = src.read_array(start + a * row, (b - a) * row, swap)
        return buf.reshape(b - a, row)
    return src.read_rows(start, row, meta.n_events, rows)


def _widen(raw: np.ndarray, chans: list[_Channel], order: str) -> tuple[np.ndarray, list[_Channel]]:
    """Pad integer fields of 3, 5, 6 or 7 bytes to 4 or 8 (numpy has no such integers)."""
    widths = [
        c.width if c.width in (1, 2, 4, 8) or c.kind != "u" else (4 if c.width < 4 else 8)
        for c in chans
    ]
    n = raw.shape[0]
    out = np.zeros((n, sum(widths)), dtype=np.uint8)
    src_pos = dst_pos = 0
    new = []
    for c, w in zip(chans, widths):
        pad = w - c.width if order == ">" else 0  # big-endian: zeros go in front
        out[:, dst_pos + pad : dst_pos + pad + c.width] = raw[:, src_pos : src_pos + c.width]
        src_pos += c.width
        dst_pos += w
        new.append(_Channel(**{**c.__dict__, "width": w}))
    return out, new


def _decode_columns(
    raw: np.ndarray,
    meta: FCSMetadata,
    cols: list[int],
    scale: bool,
    time_step: float | None = None,
    swapped: bool = False,
    rows: tuple[int, int] | np.ndarray = (0, 0),
) -> np.ndarray:
    """uint8 rows (n, row_bytes) -> float32 (n, len(cols)) following the channel specs.

    ``swapped``: the rows were already brought to native byte order while reading.
    """
    chans = meta._chans
    n = raw.shape[0]
    order = meta.byte_order
    if chans[0].kind == "*":
        return _decode_delimited(raw, meta, cols, scale, time_step, rows)
    if any(c.width not in (1, 2, 4, 8) and c.kind == "u" for c in chans):
        raw, chans = _widen(raw, chans, order)
    uniform = len({(c.kind, c.width) for c in chans}) == 1 and chans[0].kind != "S"
    if meta._perm is not None and chans[0].width > 1:
        # odd byte orders (e.g. 3,4,1,2): move bytes into little-endian order first
        w = chans[0].width
        raw = raw.reshape(n, raw.shape[1] // w, w)[:, :, list(meta._perm)].reshape(n, -1)
    if uniform:
        c0 = chans[0]
        dt = np.dtype(f"{order if c0.width > 1 and not swapped else '='}{c0.kind}{c0.width}")
        arr = raw.reshape(-1).view(dt).reshape(n, len(chans))
        if cols != list(range(len(chans))):
            arr = arr[:, cols]
        if not dt.isnative:
            arr.byteswap(inplace=True)
            arr = arr.view(dt.newbyteorder("="))
        masks = [chans[j].mask for j in cols]
        if c0.kind == "u" and any(m is not None for m in masks):
            top = np.array([(1 << (8 * c0.width)) - 1 if m is None else m for m in masks])
            np.bitwise_and(arr, top.astype(arr.dtype), out=arr)
        plans = [_plan(chans[j], time_step) if scale else None for j in cols]
        if arr.dtype == np.float32 and all(p is None for p in plans):
            return np.ascontiguousarray(arr)
        if arr.dtype == np.float32 and arr.flags.c_contiguous and arr.flags.writeable:
            # ``arr`` views the fresh buffer read for this call (or is a copy of it), so
            # float32 data are scaled in place rather than copied first
            out = arr
        elif any(p is None for p in plans):
            out = arr.astype(np.float32)
        else:
            out = np.empty((n, len(cols)), dtype=np.float32)
        for k, p in enumerate(plans):
            if p is not None:
                out[:, k] = p(arr[:, k])
        return out
    # mixed widths or types: one structured view, then a column at a time
    fmt, offs, pos = [], [], 0
    for c in chans:
        if c.kind == "S":
            fmt.append(np.dtype(f"S{c.width}"))
        else:
            fmt.append(np.dtype(f"{order if c.width > 1 else '|'}{c.kind}{c.width}"))
        offs.append(pos)
        pos += c.width
    sdt = np.dtype(
        {
            "names": [f"c{i}" for i in range(len(chans))],
            "formats": fmt,
            "offsets": offs,
            "itemsize": pos,
        }
    )
    rec = raw.reshape(-1).view(sdt)
    out = np.empty((n, len(cols)), dtype=np.float32)
    steps = []
    for j in cols:
        c = chans[j]
        mask = None if c.mask is None else np.asarray(c.mask, dtype=fmt[j].newbyteorder("="))
        steps.append((f"c{j}", mask, _plan(c, time_step) if scale else None))
    # blocks of rows small enough for the cache: strided field reads and column writes
    # are several times faster than whole-column passes over the full array
    for a in range(0, n, _BLOCK):
        blk, dst = rec[a : a + _BLOCK], out[a : a + _BLOCK]
        for k, (fname, mask, p) in enumerate(steps):
            col = blk[fname]
            if mask is not None:
                col = np.bitwise_and(col, mask)
            if col.dtype.kind == "S":
                col = _ascii_numbers(col, meta.path)
            dst[:, k] = col if p is None else p(col)
    return out


def _ascii_numbers(col: np.ndarray, path: str) -> np.ndarray:
    try:
        return col.astype(np.float64)
    except ValueError as exc:
        raise FCSDataTypeError(path, f"ASCII DATA value is not a number ({exc})") from None


def _decode_delimited(
    raw: np.ndarray,
    meta: FCSMetadata,
    cols: list[int],
    scale: bool,
    time_step: float | None,
    rows: tuple[int, int] | np.ndarray,
) -> np.ndarray:
    """Delimited ASCII DATA (every $PnB is '*'): blank- or comma-separated numbers."""
    text = raw.tobytes().decode("latin-1")
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    n, p = meta.n_events, meta.n_channels
    if len(tokens) < n * p:
        raise EventCountError(
            meta.path,
            f"$TOT={n} events of {p} values need {n * p} ASCII values, DATA holds {len(tokens)}",
            keyword="$TOT",
        )
    values = _ascii_numbers(np.array(tokens[: n * p], dtype="S"), meta.path)
    table = values.reshape(n, p)
    table = table[slice(*rows)] if isinstance(rows, tuple) else table[rows]
    out = np.empty((table.shape[0], len(cols)), dtype=np.float32)
    for k, j in enumerate(cols):
        plan = _plan(meta._chans[j], time_step) if scale else None
        out[:, k] = table[:, j] if plan is None else plan(table[:, j])
    return out


def _time_step(meta: FCSMetadata, warn: bool = False) -> float | None:
    v = meta.keywords.get("$TIMESTEP", "").strip()
    if not v:
        return None
    try:
        f = float(v)
    except ValueError:
        if warn:
            warnings.warn(
                f"{meta.path}: $TIMESTEP {v!r} is not a number; Time left unscaled",
                FCSWarning,
                stacklevel=4,
            )
        return None
    return f if math.isfinite(f) and f > 0 else None


def _plan(c: _Channel, time_step: float | None):
    """The FCS 3.1 channel-to-scale function for one channel, or None when it is identity.

    Linear: value = raw / $PnG. Log-amplified integer data ($PnE f1,f2 with f1 > 0):
    value = f2' * 10 ** (f1 * raw / $PnR) with f2' = f2, or 1 when f2 is 0. Time:
    raw * $TIMESTEP (no gain). Computed in float64, stored as float32.
    """
    if channel_kind(c.name) == "time":
        if time_step is None or time_step == 1.0:
            return None
        return lambda x: x.astype(np.float64) * time_step
    if c.log_decades > 0 and c.kind in ("u", "S", "*"):
        if c.range <= 0:
            return None
        f1, r = c.log_decades, c.range
        f2 = c.log_offset if c.log_offset > 0 else 1.0
        return lambda x: np.power(10.0, f1 * x.astype(np.float64) / r) * f2
    if c.gain not in (0.0, 1.0):
        g = c.gain
        return lambda x: x.astype(np.float64) / g
    return None


def _scaled_table(meta: FCSMetadata, cols: list[int], scale: bool) -> pd.DataFrame:
    table = meta.channels.iloc[cols].reset_index(drop=True)
    if not scale:
        return table
    ts = _time_step(meta)
    rng = table["range"].to_numpy(dtype=float).copy()
    for k, j in enumerate(cols):
        c = meta._chans[j]
        if channel_kind(c.name) == "time":
            if ts:
                rng[k] = c.range * ts
        elif c.log_decades > 0 and c.kind in ("u", "S", "*"):
            rng[k] = (c.log_offset if c.log_offset > 0 else 1.0) * 10.0**c.log_decades
        elif c.gain not in (0.0, 1.0):
            rng[k] = c.range / c.gain
    table["range"] = rng
    return table


def read_fcs(
    path: PathLike,
    *,
    dataset: int | None = 0,
    channels: Sequence[str | int] | None = None,
    events: int | slice | np.ndarray | None = None,
    scale: bool = True,
    offsets: str = "auto",
) -> Sample:
    """Read one data set of an FCS 2.0/3.0/3.1/3.2 file into a `Sample`.

    Parameters
    ----------
    path : a file path, the file's bytes, or a binary file object.
    dataset : index in the ``$NEXTDATA`` chain. With several data sets, 0 (the default)
        reads the first and warns (`FCSWarning`) naming the others; ``None`` demands a
        file with a single data set and raises `MultipleDataSetsError` otherwise.
    channels : $PnN names (exact, then case-insensitive, then $PnS) or 0-based indices;
        only these columns are returned, in this order.
    events : the first N events (int), a slice, a boolean mask or an index array; only
        the rows needed are read from disk where possible.
    scale : apply the FCS 3.1 channel-to-scale rules (``$PnG`` gain, ``$PnE`` log
        amplification of integer data, ``$TIMESTEP``); ``False`` returns the values as
        stored (integers masked to the next power of two >= ``$PnR``).
    offsets : ``"auto"`` (HEADER and TEXT must agree; zero HEADER offsets defer to TEXT),
        ``"header"`` or ``"text"`` to trust one when they disagree.

    Returns
    -------
    Sample with float32 events (events x channels, C-contiguous). Its channel table's
    ``range`` is the top of the returned scale (``$PnR`` for stored values; ``f2*10**f1``
    for log-amplified channels, ``$PnR/$PnG`` and ``$PnR*$TIMESTEP`` when scaled).

    Raises
    ------
    FCSError subclasses: NotFCSError, TruncatedFCSError, FCSOffsetError,
    DataOffsetDiscrepancyError, FCSTextError, FCSDataTypeError, EventCountError,
    MultipleDataSetsError. MarkerNotFoundError for an unknown channel.
    """
    with _Source(path) as src:
        meta = _select(src, dataset, offsets, warn=True)
        rows = _rows(events, meta.n_events, src.name)
        cols = _cols(channels, meta)
        swap = _swap_width(meta) if isinstance(rows, tuple) else 0
        raw = _raw_rows(src, meta, rows, swap)
        ts = _time_step(meta, warn=scale) if scale else None
        with np.errstate(over="ignore", invalid="ignore"):  # huge $PnE gives inf, as stated
            data = _decode_columns(raw, meta, cols, scale, ts, swapped=swap > 0, rows=rows)
        table = _scaled_table(meta, cols, scale)
        spath = src.path
    record: dict[str, Any] = {
        "step": "read",
        "file": src.name,
        "dataset": meta.dataset,
        "scale": bool(scale),
        "version": meta.version,
    }
    if channels is not None:
        record["channels"] = list(table["name"])
    if events is not None:
        record["events"] = int(data.shape[0])
    name = spath.stem if spath is not None else ""
    return Sample(
        events=data,
        channels=table,
        keywords=dict(meta.keywords),
        path=spath,
        name=name,
        history=[record],
    )
