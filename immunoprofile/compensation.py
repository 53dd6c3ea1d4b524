"""Spillover matrices and compensation.

A spillover matrix ``S`` (rows: the dye each detector is assigned to; columns: detectors;
``S[i, j]`` is the fraction of dye ``i``'s signal seen in detector ``j``, 1 on the
diagonal) describes how measured values ``X`` arise from true ones: ``X = X_true @ S``.
Compensation applies the inverse, ``X_true = X @ inv(S)``, to the fluorescence detectors
only; scatter and time are untouched. This is the convention of the FCS 3.1 ``$SPILLOVER``
keyword (Spidlen et al., "Data File Standard for Flow Cytometry, version FCS 3.1",
Cytometry A 2010) and of Gating-ML 2.0 spectrum matrices.

Detectors are matched to the file by channel name ($PnN), never by marker, because a
spillover matrix belongs to the instrument's detectors, whatever antibodies sit on them.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile._threads import one_thread
from immunoprofile.exceptions import CompensationError

#: keywords holding a spillover matrix, in the order looked up (the one list for compensation,
#: `inspect` and `run`'s file table): ``$SPILLOVER`` is the standard keyword of FCS 3.1 and
#: 3.2 (Spidlen et al., Cytometry A 2010); ``$COMP`` the FCS 3.0 one it replaced; ``SPILL``
#: (BD FACSDiva), ``SPILLOVER`` and ``$SPILL`` are vendor spellings of the same
#: ``n,detectors...,values...`` form. Keywords are read upper-cased.
SPILLOVER_KEYWORDS = ("$SPILLOVER", "SPILL", "SPILLOVER", "$SPILL", "$COMP")


def spillover_keyword(keywords: Mapping[str, Any]) -> str | None:
    """The first of `SPILLOVER_KEYWORDS` that holds a value in ``keywords``, or None."""
    return next((k for k in SPILLOVER_KEYWORDS if str(keywords.get(k) or "").strip()), None)


_COND_LIMIT = 1e12  # condition number above which a matrix counts as singular


def _fmt(v: float) -> str:
    return repr(float(v)) if v != int(v) else str(int(v))


#: the largest spillover matrix file read: a 100 x 100 matrix is about 100 kB
MAX_MATRIX_BYTES = 4 * 2**20


def _read_matrix_text(p: Path) -> str:
    """The text of a spillover matrix file: a regular file (not a device such as
    /dev/zero, nor a FIFO) of at most `MAX_MATRIX_BYTES`, read with that bound."""
    import stat

    try:
        st = p.stat()
        if not stat.S_ISREG(st.st_mode):
            raise CompensationError(f"{p}: a spillover file must be a regular file")
        with open(p, "rb") as fh:
            data = fh.read(MAX_MATRIX_BYTES + 1)
    except OSError as e:
        raise CompensationError(f"{p}: cannot read spillover file ({e.strerror or e})") from None
    if len(data) > MAX_MATRIX_BYTES:
        raise CompensationError(
            f"{p}: more than {MAX_MATRIX_BYTES} bytes; not a spillover matrix file"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CompensationError(f"{p}: spillover file is not UTF-8 text ({e})") from None


@dataclass(frozen=True, eq=False)
class Spillover:
    """A square spillover matrix over named detectors.

    Attributes
    ----------
    detectors : detector (channel) names, in matrix order.
    matrix : float64 (n, n) spillover values, rows = source dye, columns = detector.
    source : where it came from (``"$SPILLOVER of a.fcs"``, a file path, ...).
    """

    detectors: tuple[str, ...]
    matrix: np.ndarray
    source: str = "<spillover>"

    def __post_init__(self) -> None:
        dets = tuple(str(d).strip() for d in self.detectors)
        object.__setattr__(self, "detectors", dets)
        try:
            m = np.array(self.matrix, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise CompensationError(
                f"{self.source}: spillover values are not numbers ({e})"
            ) from None
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise CompensationError(
                f"{self.source}: spillover matrix must be square, got shape {m.shape}"
            )
        if m.shape[0] != len(dets):
            raise CompensationError(
                f"{self.source}: {len(dets)} detector names for a {m.shape[0]}x{m.shape[1]} matrix"
            )
        if len(set(dets)) != len(dets):
            dup = sorted({d for d in dets if dets.count(d) > 1})
            raise CompensationError(f"{self.source}: duplicate detector names {dup}")
        if not np.all(np.isfinite(m)):
            raise CompensationError(f"{self.source}: spillover matrix has non-finite values")
        m.setflags(write=False)
        object.__setattr__(self, "matrix", m)

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_keyword(
        cls, text: str, path: str | PathLike | None = None, keyword: str = "$SPILLOVER"
    ) -> Spillover:
        """Parse the ``$SPILLOVER``/``SPILL``/``$COMP`` value ``"n,det1,...,detn,v11,...,vnn"``.

        Whitespace, newlines and a trailing comma are tolerated. A ``$COMP`` value without
        detector names (``"n,v11,...,vnn"``) gets placeholder names ``"#1"``..``"#n"`` that
        `compensate` maps to the first n fluorescence channels.
        """
        where = f"{keyword} of {path}" if path is not None else keyword
        # empty fields (a trailing comma, a line break after a comma) carry nothing
        parts = [p.strip() for p in re.split(r"[,\n\r]", str(text)) if p.strip()]
        if not parts:
            raise CompensationError(f"{where}: empty spillover value")
        try:
            n = int(float(parts[0]))
        except (ValueError, OverflowError):
            raise CompensationError(
                f"{where}: first field must be the number of detectors, got {parts[0]!r}"
            ) from None
        if n <= 0:
            raise CompensationError(f"{where}: number of detectors must be positive, got {n}")
        rest = parts[1:]
        if len(rest) == n * n and all(_is_number(p) for p in rest):
            names = [f"#{i + 1}" for i in range(n)]
            values = rest
        elif len(rest) == n + n * n:
            names, values = rest[:n], rest[n:]
        else:
            raise CompensationError(
                f"{where}: expected {n} names and {n * n} values after n={n}, "
                f"got {len(rest)} fields"
            )
        try:
            arr = np.array([float(v) for v in values]).reshape(n, n)
        except ValueError as e:
            raise CompensationError(f"{where}: non-numeric spillover value ({e})") from None
        return cls(tuple(names), arr, source=where)

    @classmethod
    def from_sample(cls, sample: Any) -> Spillover | None:
        """The spillover stored in a sample's keywords, or None if it has none."""
        key = spillover_keyword(sample.keywords)
        if key is None:
            return None
        return cls.from_keyword(sample.keywords[key], path=sample.path or sample.name, keyword=key)

    @classmethod
    def from_file(cls, path: str | PathLike) -> Spillover:
        """Read a CSV/TSV matrix: a header row of detector names, then one row per detector.

        An optional first label column (row names, or an empty/``#`` corner cell) is
        ignored. A leading ``#`` on the header is allowed. Delimiter: comma, tab or
        semicolon, detected from the header.
        """
        p = Path(path)
        text = _read_matrix_text(p)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) < 2:
            raise CompensationError(f"{p}: a spillover file needs a header row and matrix rows")
        header_line = lines[0].lstrip()
        if header_line.startswith("#"):
            header_line = header_line[1:]
        delim = (
            "\t"
            if "\t" in header_line
            else (";" if header_line.count(";") > header_line.count(",") else ",")
        )
        rows = list(csv.reader(io.StringIO("\n".join([header_line, *lines[1:]])), delimiter=delim))
        header = [h.strip() for h in rows[0]]
        while header and header[-1] == "":
            header.pop()
        body = []
        for r in rows[1:]:
            r = [c.strip() for c in r]
            while r and r[-1] == "":
                r.pop()
            body.append(r)
        n_rows = len(body)
        labelled = bool(body) and all(len(r) == len(header) + 1 for r in body)
        if header and header[0] in ("", "#") and all(len(r) == len(header) for r in body):
            header = header[1:]
            labelled = True
        names = header
        n = len(names)
        if n_rows != n:
            raise CompensationError(
                f"{p}: {n} detector names in the header but {n_rows} matrix rows; "
                "a spillover matrix must be square"
            )
        values = []
        for k, r in enumerate(body, start=2):
            cells = r[1:] if labelled else r
            if len(cells) != n:
                raise CompensationError(
                    f"{p}: line {k} has {len(cells)} values, expected {n} (one per detector)"
                )
            try:
                values.append([float(c) for c in cells])
            except ValueError:
                raise CompensationError(f"{p}: line {k} has a non-numeric value: {cells}") from None
        return cls(tuple(names), np.array(values), source=str(p))

    @classmethod
    def identity(cls, detectors: Sequence[str], source: str = "identity") -> Spillover:
        """No spillover (compensation leaves values unchanged)."""
        return cls(tuple(detectors), np.eye(len(detectors)), source=source)

    # --- use ------------------------------------------------------------------------------

    @cached_property
    def inverse(self) -> np.ndarray:
        """``inv(matrix)`` in float64 (computed once); raises if the matrix is singular."""
        cond = np.linalg.cond(self.matrix)
        if not np.isfinite(cond) or cond > _COND_LIMIT:
            raise CompensationError(
                f"{self.source}: spillover matrix is singular or nearly so "
                f"(condition number {cond:.3g}); check for duplicated or zero rows"
            )
        inv = np.linalg.inv(self.matrix)
        inv.setflags(write=False)
        return inv

    def indices(self, sample: Any) -> list[int]:
        """Column index of each detector in ``sample`` (validating as `validate` does)."""
        names = list(sample.channel_names)
        where = getattr(sample, "path", None) or getattr(sample, "name", "") or "<sample>"
        if all(d.startswith("#") and d[1:].isdigit() for d in self.detectors):
            fluo = [i for i, k in enumerate(sample.channels["kind"]) if k == "fluorescence"]
            if len(fluo) < len(self.detectors):
                raise CompensationError(
                    f"{where}: {self.source} has {len(self.detectors)} unnamed detectors but the "
                    f"file has only {len(fluo)} fluorescence channels"
                )
            return fluo[: len(self.detectors)]
        out = []
        missing = []
        folded = {_fold(n): i for i, n in enumerate(names)}
        for d in self.detectors:
            if d in names:
                out.append(names.index(d))
            elif _fold(d) in folded:
                out.append(folded[_fold(d)])
            else:
                missing.append(d)
        if missing:
            raise CompensationError(
                f"{where}: detectors {missing} of {self.source} are not channels of this file "
                f"(channels: {names}); the matrix must name detectors by $PnN"
            )
        if len(set(out)) != len(out):
            raise CompensationError(
                f"{where}: two detectors of {self.source} map to the same channel"
            )
        kinds = list(sample.channels["kind"])
        bad = [names[i] for i in out if kinds[i] != "fluorescence"]
        if bad:
            raise CompensationError(
                f"{where}: {self.source} includes non-fluorescence channels {bad}"
            )
        return out

    def validate(self, sample: Any) -> Spillover:
        """Check the matrix against a sample: detectors present, not singular. Returns self."""
        self.indices(sample)
        _ = self.inverse
        return self

    def to_keyword(self) -> str:
        """The ``$SPILLOVER`` keyword value for this matrix."""
        vals = ",".join(_fmt(v) for v in self.matrix.reshape(-1))
        return f"{len(self.detectors)},{','.join(self.detectors)},{vals}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "detectors": list(self.detectors),
            "matrix": self.matrix.tolist(),
        }

    def __repr__(self) -> str:
        return f"Spillover({len(self.detectors)} detectors from {self.source!r})"


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _fold(name: str) -> str:
    """Loose detector-name key: case, spaces, and FlowJo's ``Comp-``/``<...>`` wrappers."""
    s = name.strip()
    if s.startswith("<") and s.endswith(">"):
        s = s[1:-1]
    if s.lower().startswith("comp-"):
        s = s[5:]
    return re.sub(r"\s+", "", s).upper()


# --- applying ------------------------------------------------------------------------------


def compensate_array(
    events: np.ndarray,
    spillover: Spillover,
    indices: Sequence[int],
    dtype=np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``events[:, indices] @ inv(S)`` on an events x channels array; other columns kept.

    One matrix product over all columns (the non-detector part of the matrix is the
    identity, which copies those columns exactly). ``dtype=np.float64`` for reference
    checks. ``out``: the array to write into (``events`` itself for in place, when the
    caller owns it: no second events-sized array); a new one when None.
    """
    return _apply(events, spillover.inverse, indices, dtype, out)


def decompensate_array(
    events: np.ndarray,
    spillover: Spillover,
    indices: Sequence[int],
    dtype=np.float32,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The inverse of `compensate_array`: ``events[:, indices] @ S``."""
    return _apply(events, spillover.matrix, indices, dtype, out)


#: rows per block of the compensation product: a block's result (rows x channels) is the
#: only temporary, so compensating in place needs 6.5 MB at 25 channels, not a second
#: events-sized array. Each row's result does not depend on the block it is in (checked
#: bit for bit against one product over all rows in tests/test_compensation.py).
_ROWS = 65_536


def _apply(
    events: np.ndarray,
    block: np.ndarray,
    indices: Sequence[int],
    dtype,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``out = events`` with ``out[:, indices] = events[:, indices] @ block``.

    Done as ONE product per block of rows with an all-channel matrix that is the identity
    outside the detectors (multiplying by 1 and adding exact zeros copies those columns
    unchanged), which beats gathering and scattering the detector columns. A NaN or
    infinity in a non-detector column would spread through those zeros (0 * inf = nan), so
    in a block whose result is not all finite the columns are redone separately. OpenBLAS
    is held to one thread: a tall, narrow single-precision product gains nothing from a
    second thread and suffers when the cores are busy. ``out`` may be ``events`` (in
    place: each block is read before it is written).
    """
    x = np.asarray(events)
    if x.ndim != 2:
        raise CompensationError(f"events must be 2-D (events x channels), got shape {x.shape}")
    dtype = np.dtype(dtype)
    if out is None:
        out = np.empty(x.shape, dtype=dtype)
    elif out.shape != x.shape or out.dtype != dtype:
        raise CompensationError(
            f"out must be {dtype} of shape {x.shape}, got {out.dtype} {out.shape}"
        )
    idx = np.asarray(indices, dtype=np.intp)
    full = np.eye(x.shape[1], dtype=np.float64)
    full[np.ix_(idx, idx)] = block
    full = full.astype(dtype)
    small = np.asarray(block, dtype=dtype)
    others = np.setdiff1d(np.arange(x.shape[1]), idx)
    with one_thread("blas"), np.errstate(invalid="ignore", over="ignore"):
        for start in range(0, len(x), _ROWS):
            xs = np.ascontiguousarray(x[start : start + _ROWS], dtype=dtype)
            res = xs @ full
            if not np.isfinite(res.sum()):
                res[:, others] = xs[:, others]
                res[:, idx] = xs[:, idx] @ small
            out[start : start + _ROWS] = res
    return out


def _where(sample) -> str:
    return str(sample.path) if getattr(sample, "path", None) else (sample.name or "<sample>")


def _resolve(sample, spillover) -> Spillover | None:
    if spillover is None:
        return None
    if isinstance(spillover, Spillover):
        return spillover
    if isinstance(spillover, str) and spillover in ("file", "auto"):
        sp = Spillover.from_sample(sample)
        if sp is None and spillover == "file":
            raise CompensationError(
                f"{_where(sample)}: no spillover keyword ({', '.join(SPILLOVER_KEYWORDS)}); "
                "pass spillover=None to skip compensation, 'auto' to skip it when absent, "
                "or a matrix file"
            )
        return sp
    if isinstance(spillover, (str, PathLike)):
        return Spillover.from_file(spillover)
    if isinstance(spillover, np.ndarray):
        raise CompensationError(
            "a bare array has no detector names; use Spillover(detectors, matrix)"
        )
    raise CompensationError(f"cannot use {type(spillover).__name__} as a spillover matrix")


def _state(sample) -> tuple[bool, bool]:
    """(compensated, transformed) as the sample's history leaves it."""
    compensated = transformed = False
    for h in sample.history:
        step = h.get("step")
        if step == "compensate":
            compensated = True
        elif step == "decompensate":
            compensated = False
        elif step == "transform":
            transformed = True
        elif step == "inverse_transform":
            transformed = False
    return compensated, transformed


# --- modes: which spillover a file gets -----------------------------------------------------

#: compensation modes of templates and of ``--compensation`` (besides a matrix file path);
#: ``"file"`` is the older name of ``"keyword"``
COMPENSATION_MODES = ("auto", "keyword", "none")
_MODE_SYNONYMS = {"file": "keyword", "none": "none", "auto": "auto", "keyword": "keyword"}
#: keywords whose true value says the stored events are already compensated
COMPENSATED_KEYWORDS = ("ALREADY_COMPENSATED", "COMPENSATED", "$COMPENSATED")
_TRUE = {"TRUE", "T", "YES", "Y", "1"}


def normalize_mode(mode: str | PathLike | None) -> str:
    """``"auto"``, ``"keyword"``, ``"none"`` or a matrix path as given (None -> ``"none"``,
    ``"file"`` -> ``"keyword"``)."""
    if mode is None:
        return "none"
    text = str(mode)
    return _MODE_SYNONYMS.get(text.strip().lower(), text) if isinstance(mode, str) else text


def compensated_signs(sample: Any) -> list[str]:
    """Signs in a file that its events are already compensated (empty: none found).

    FlowJo names the compensated parameters of an export ``Comp-<detector>``; some
    exporters (and converted files) carry an explicit keyword such as
    ``ALREADY_COMPENSATED=TRUE``. BD FACSDiva exports are uncompensated with the
    acquisition matrix in ``SPILL``, so a DIVA file with ``SPILL`` shows no sign.
    """
    signs = []
    names = [str(n) for n in getattr(sample, "channel_names", [])]
    comp = [n for n in names if n.lower().startswith("comp-")]
    if comp:
        shown = ", ".join(comp[:3]) + (", ..." if len(comp) > 3 else "")
        signs.append(f"{len(comp)} channel(s) named Comp-... ({shown})")
    kw = getattr(sample, "keywords", {}) or {}
    for key in COMPENSATED_KEYWORDS:
        value = kw.get(key)
        if value is not None and str(value).strip().upper() in _TRUE:
            signs.append(f"keyword {key}={value}")
    return signs


@dataclass(frozen=True)
class CompensationChoice:
    """What one file gets: the matrix to apply (None: none) and why, for provenance.

    ``status`` is ``"applied"`` (``spillover`` set), ``"already"`` (the history or the
    file says the events are compensated), ``"assumed"`` (``auto`` found no spillover
    keyword and treats the data as compensated: a warning and a QC line) or ``"off"``
    (mode ``none``).
    """

    mode: str
    status: str
    spillover: Spillover | None
    reason: str

    def record(self) -> dict[str, Any]:
        """JSON-ready summary (the matrix itself goes into the compensate history step)."""
        return {
            "mode": self.mode,
            "status": self.status,
            "source": self.spillover.source if self.spillover is not None else None,
            "reason": self.reason,
        }


def choose_compensation(
    sample: Any, mode: str | PathLike | Spillover | None, base: Path | None = None
) -> CompensationChoice:
    """Decide how to compensate ``sample`` under ``mode``, never twice.

    ``auto``: the file's spillover keyword, unless the history or the file (`Comp-`
    channels, an ``ALREADY_COMPENSATED`` keyword) shows the events are compensated;
    without a keyword the data are treated as already compensated (status
    ``"assumed"``). ``keyword``: the file's spillover keyword, an error if it has none.
    ``none``: nothing. A matrix path (relative to ``base`` when given) or a `Spillover`:
    that matrix. ``keyword`` and a matrix raise `CompensationError` on a file that shows
    signs of being compensated already, instead of compensating it a second time.
    """
    if isinstance(mode, Spillover):
        label, spill = "matrix", mode
    else:
        label = normalize_mode(mode)
        spill = None
    where = _where(sample)
    done, _ = _state(sample)
    if done:
        return CompensationChoice(label, "already", None, "compensated earlier in this run")
    if label == "none":
        return CompensationChoice(label, "off", None, "compensation turned off (mode none)")
    signs = compensated_signs(sample)
    if label == "auto":
        if signs:
            return CompensationChoice(
                label, "already", None, "the file is already compensated: " + "; ".join(signs)
            )
        sp = Spillover.from_sample(sample)
        if sp is None:
            return CompensationChoice(
                label,
                "assumed",
                None,
                f"no spillover keyword ({', '.join(SPILLOVER_KEYWORDS)}): treated as already "
                "compensated (an export of compensated data); give --compensation FILE if not",
            )
        return CompensationChoice(label, "applied", sp, f"spillover from {sp.source}")
    if signs:
        what = "its spillover keyword" if label == "keyword" else "a matrix"
        raise CompensationError(
            f"{where}: the file is already compensated ({'; '.join(signs)}); applying "
            f"{what} would compensate it twice. Use compensation 'none' or 'auto'"
        )
    if label == "keyword":
        sp = Spillover.from_sample(sample)
        if sp is None:
            raise CompensationError(
                f"{where}: no spillover keyword ({', '.join(SPILLOVER_KEYWORDS)}); use "
                "compensation 'auto' (treat the data as compensated), 'none', or a matrix file"
            )
        return CompensationChoice(label, "applied", sp, f"spillover from {sp.source}")
    if spill is None:
        path = Path(label)
        if base is not None and not path.is_absolute() and not path.is_file():
            path = base / path
        spill = Spillover.from_file(path)
        label = "matrix"
    return CompensationChoice(label, "applied", spill, f"matrix {spill.source}")


def compensate(sample, spillover: Spillover | str | PathLike | None = "file"):
    """Compensate the fluorescence detectors of a `Sample` (float32, one matrix product).

    Parameters
    ----------
    sample : a Sample on the raw (uncompensated, untransformed) scale.
    spillover : ``"file"`` (the sample's own ``$SPILLOVER``/``SPILL``/``$COMP``; an error
        if absent), ``"auto"`` (the file's if present, else unchanged), a `Spillover`, a
        path to a CSV/TSV matrix, or None (unchanged).

    Returns
    -------
    A new Sample whose history ends with ``{"step": "compensate", "source", "detectors",
    "matrix"}``; the same sample when there is nothing to apply.
    """
    sp = _resolve(sample, spillover)
    if sp is None:
        return sample
    compensated, transformed = _state(sample)
    if transformed:
        raise CompensationError(
            f"{_where(sample)}: the sample is transformed; compensate the raw values first"
        )
    if compensated:
        raise CompensationError(
            f"{_where(sample)}: already compensated; decompensate first to use another matrix"
        )
    return _apply_to_sample(sample, sp, "compensate", compensate_array)


def decompensate(sample, spillover: Spillover | str | PathLike | None = None):
    """Undo compensation: with no ``spillover``, the matrix recorded by `compensate`."""
    if spillover is None:
        rec = next((h for h in reversed(sample.history) if h.get("step") == "compensate"), None)
        if rec is None:
            raise CompensationError(f"{_where(sample)}: no compensate step in its history")
        sp = Spillover(tuple(rec["detectors"]), np.array(rec["matrix"]), source=rec["source"])
    else:
        sp = _resolve(sample, spillover)
    return _apply_to_sample(sample, sp, "decompensate", decompensate_array)


def _apply_to_sample(sample, sp: Spillover, step: str, kernel, overwrite: bool = False):
    """Run ``kernel`` (compensate_array or decompensate_array) on the sample's detectors and
    record the matrix used, so the step can be audited and undone. ``overwrite``: write
    into ``sample.events`` (for a caller that owns them and drops ``sample``)."""
    idx = sp.indices(sample)
    names = sample.channel_names
    record = {
        "step": step,
        "source": sp.source,
        "detectors": [names[i] for i in idx],
        "matrix": sp.matrix.tolist(),
    }
    ev = sample.events
    out = ev if overwrite and ev.dtype == np.float32 and ev.flags.c_contiguous else None
    if out is not None and not ev.flags.writeable:
        out = None
    return sample.with_events(kernel(ev, sp, idx, out=out), step=record)


__all__ = [
    "COMPENSATED_KEYWORDS",
    "COMPENSATION_MODES",
    "CompensationChoice",
    "SPILLOVER_KEYWORDS",
    "spillover_keyword",
    "Spillover",
    "choose_compensation",
    "compensate",
    "compensated_signs",
    "compensate_array",
    "decompensate",
    "decompensate_array",
    "normalize_mode",
]
