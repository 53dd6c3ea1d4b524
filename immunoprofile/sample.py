"""`Sample`: one data set of one FCS file, the object that flows through the pipeline.

Events are a single C-contiguous float32 array (events x channels). Every stage that
changes the values (compensation, transformation) returns a new `Sample` sharing the
channel table and keywords, and appends a provenance record to ``history`` so that a
result can be audited and reproduced.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile.exceptions import BlankSampleError, MarkerNotFoundError

CHANNEL_COLUMNS = ("name", "marker", "range", "bits", "gain", "log_decades", "log_offset", "kind")

_SCATTER = re.compile(r"^(FSC|SSC|FS|SS)(\b|[-_ ]|$)", re.IGNORECASE)
_TIME = re.compile(r"^time$", re.IGNORECASE)


def channel_kind(name: str) -> str:
    """Classify a channel by its $PnN: ``scatter``, ``time`` or ``fluorescence``."""
    if _TIME.match(name.strip()):
        return "time"
    if _SCATTER.match(name.strip()):
        return "scatter"
    return "fluorescence"


def marker_or_none(value: Any) -> str | None:
    """A $PnS marker as text, or None when it is missing or blank.

    pandas 3 stores a missing value in a text column as NaN (a float, and truthy), so
    every reader of the channel table goes through here rather than testing truthiness.
    """
    if value is None or (isinstance(value, float) and value != value):
        return None
    if value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def normalise_markers(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its ``marker`` column as object dtype holding text or None.

    Returns the same frame when it already is; otherwise a copy (the caller's frame is
    never modified, as channel tables are shared between samples).
    """
    if "marker" not in table.columns:
        return table
    col = table["marker"]
    values = [marker_or_none(v) for v in col]
    if col.dtype == object and all(a is b or a == b for a, b in zip(col, values)):
        return table
    out = table.copy()
    out["marker"] = pd.Series(values, index=table.index, dtype=object)
    return out


def make_channel_table(
    names: Sequence[str],
    markers: Sequence[str | None] | None = None,
    ranges: Sequence[float] | None = None,
    bits: Sequence[int] | None = None,
    gains: Sequence[float] | None = None,
    log_decades: Sequence[float] | None = None,
    log_offsets: Sequence[float] | None = None,
) -> pd.DataFrame:
    """Build the channel table every `Sample` carries (one row per channel, in file order)."""
    n = len(names)
    return pd.DataFrame(
        {
            "name": list(names),
            "marker": pd.Series(
                [marker_or_none(m) for m in markers] if markers is not None else [None] * n,
                dtype=object,
            ),
            "range": np.asarray(ranges if ranges is not None else [0.0] * n, dtype=float),
            "bits": np.asarray(bits if bits is not None else [32] * n, dtype=int),
            "gain": np.asarray(gains if gains is not None else [1.0] * n, dtype=float),
            "log_decades": np.asarray(
                log_decades if log_decades is not None else [0.0] * n, dtype=float
            ),
            "log_offset": np.asarray(
                log_offsets if log_offsets is not None else [0.0] * n, dtype=float
            ),
            "kind": [channel_kind(x) for x in names],
        }
    )


def blank_reason(events: np.ndarray, kinds: Sequence[str]) -> str | None:
    """Why these events carry no measurement, or None when they do.

    Blank: no events; no finite value in any scatter or fluorescence channel; or every such
    channel holding one constant value (an all-zero file). The time channel is left out:
    a blank acquisition still counts time.
    """
    if events.shape[0] == 0:
        return "the file holds no events"
    cols = [j for j, k in enumerate(kinds) if k != "time"] or list(range(events.shape[1]))
    if not cols:
        return "the file holds no channels"
    # per-column minimum and maximum of the finite values: one reduction over the rows when
    # every value is finite (a NaN or infinity shows in them), else over blocks of rows (a
    # copy of all columns would cost a second events-sized array on a large file)
    lo = events.min(axis=0)[cols].astype(np.float64)
    hi = events.max(axis=0)[cols].astype(np.float64)
    seen = np.ones(len(cols), dtype=bool)
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        rows = 0  # no block to look at
    else:
        rows = events.shape[0]
        lo = np.full(len(cols), np.inf)
        hi = np.full(len(cols), -np.inf)
        seen = np.zeros(len(cols), dtype=bool)
    for start in range(0, rows, _BLANK_ROWS):
        sub = events[start : start + _BLANK_ROWS][:, cols]
        finite = np.isfinite(sub)
        seen |= finite.any(axis=0)
        lo = np.minimum(lo, np.where(finite, sub, np.inf).min(axis=0))
        hi = np.maximum(hi, np.where(finite, sub, -np.inf).max(axis=0))
    if not seen.any():
        return "no event has a finite value (every value is NaN or infinite)"
    if np.all(~seen | (lo == hi)):
        values = sorted({float(v) for v in lo[np.isfinite(lo)]})
        shown = ", ".join(f"{v:g}" for v in values[:3])
        return (
            f"every channel holds a single constant value ({shown}) in all "
            f"{events.shape[0]} events: a blank or failed acquisition"
        )
    return None


_BLANK_ROWS = 65_536  # rows per block of `blank_reason`


def check_not_blank(sample: Sample) -> Sample:
    """``sample``, or `BlankSampleError` naming the file when it carries no measurement."""
    reason = blank_reason(sample.events, list(sample.channels["kind"]))
    if reason is not None:
        where = str(sample.path) if sample.path is not None else (sample.name or "<sample>")
        raise BlankSampleError(f"{where}: no usable events: {reason}")
    return sample


@dataclass(eq=False)
class Sample:
    """Events of one FCS data set with their channel table, keywords and provenance.

    Attributes
    ----------
    events : float32 array (n_events, n_channels), C-contiguous.
    channels : DataFrame with columns ``name`` ($PnN), ``marker`` ($PnS or None),
        ``range``, ``bits``, ``gain``, ``log_decades``, ``log_offset``, ``kind``.
    keywords : TEXT keywords as read, keys upper-cased (FCS keywords are case-insensitive).
    path : the file it came from, if any.
    name : a short identifier (the file stem by default).
    history : provenance records, one dict per processing step, oldest first.
    """

    events: np.ndarray
    channels: pd.DataFrame
    keywords: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    name: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        ev = np.asarray(self.events)
        if ev.ndim != 2:
            raise ValueError(f"events must be 2-D (events x channels), got shape {ev.shape}")
        if ev.dtype != np.float32 or not ev.flags.c_contiguous:
            ev = np.ascontiguousarray(ev, dtype=np.float32)
        self.events = ev
        self.channels = normalise_markers(self.channels)
        if len(self.channels) != ev.shape[1]:
            raise ValueError(
                f"channel table has {len(self.channels)} rows but events have {ev.shape[1]} columns"
            )
        if self.path is not None:
            self.path = Path(self.path)
            if not self.name:
                self.name = self.path.stem
        self.keywords = {str(k).upper(): v for k, v in self.keywords.items()}

    # --- shape and names ---------------------------------------------------------

    @property
    def n_events(self) -> int:
        return int(self.events.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.events.shape[1])

    @property
    def channel_names(self) -> list[str]:
        return list(self.channels["name"])

    @property
    def markers(self) -> list[str | None]:
        return list(self.channels["marker"])

    def channel_index(self, name: str) -> int:
        """Index of a channel by its exact $PnN name (see `immunoprofile.panel` for markers)."""
        names = self.channel_names
        try:
            return names.index(name)
        except ValueError:
            raise MarkerNotFoundError(
                f"{self.name or '<sample>'}: no channel named {name!r}; channels are {names}"
            ) from None

    def column(self, name: str) -> np.ndarray:
        """Values of one channel (a strided view, no copy)."""
        return self.events[:, self.channel_index(name)]

    # --- derived samples ------------------------------------------------------------

    def with_events(self, events: np.ndarray, step: dict[str, Any] | None = None) -> Sample:
        """A new Sample with other event values (same channels), recording ``step``."""
        history = [*self.history, step] if step is not None else list(self.history)
        return replace(self, events=events, history=history)

    def subset(self, mask: np.ndarray) -> Sample:
        """The events selected by a boolean mask (or index array), as a new Sample."""
        return replace(self, events=self.events[mask], history=list(self.history))

    def to_dataframe(self, label: str = "name") -> pd.DataFrame:
        """Events as a DataFrame, columns labelled by channel ``name`` or ``marker``."""
        if label == "marker":
            cols = [m if m else n for n, m in zip(self.channels["name"], self.channels["marker"])]
        else:
            cols = self.channel_names
        return pd.DataFrame(self.events, columns=cols, copy=False)

    # --- deprecated: exchange with flowkit is `immunoprofile.interop.exchange`'s job ------

    @classmethod
    def from_flowkit(cls, fk_sample: Any, source: str = "raw") -> Sample:
        """Deprecated: use ``immunoprofile.interop.exchange.from_flowkit`` (``ip.from_flowkit``)."""
        warnings.warn(
            "Sample.from_flowkit(fk) is deprecated: use ip.from_flowkit(fk) "
            "(immunoprofile.interop.exchange); the method goes away in a later release",
            DeprecationWarning,
            stacklevel=2,
        )
        from immunoprofile.interop.exchange import from_flowkit

        return from_flowkit(fk_sample, source=source)

    def to_flowkit(self, sample_id: str | None = None) -> Any:
        """Deprecated: use ``immunoprofile.interop.exchange.to_flowkit`` (``ip.to_flowkit``)."""
        warnings.warn(
            "Sample.to_flowkit() is deprecated: use ip.to_flowkit(sample) "
            "(immunoprofile.interop.exchange); the method goes away in a later release",
            DeprecationWarning,
            stacklevel=2,
        )
        from immunoprofile.interop.exchange import to_flowkit

        return to_flowkit(self, sample_id=sample_id)

    def __repr__(self) -> str:
        return (
            f"Sample({self.name!r}, {self.n_events} events x {self.n_channels} channels, "
            f"steps={[h.get('step') for h in self.history]})"
        )
