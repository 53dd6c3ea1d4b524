"""What an FCS file holds, from its HEADER and TEXT only (the events are not read): what
``immunoprofile inspect`` prints, for a notebook as well.

`describe_fcs` describes one file (FCS version, event and channel counts, data sets,
cytometer, acquisition date, the spillover keyword compensation can use, the reader's
notes, and a table of channels); `describe_files` describes many and goes on past a file
that cannot be read, listing it in an errors table.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from immunoprofile.compensation import spillover_keyword
from immunoprofile.exceptions import FCSError, FCSWarning
from immunoprofile.io.fcs import read_fcs_datasets, read_fcs_header
from immunoprofile.sample import marker_or_none

#: columns of `FCSDescription.channels`
CHANNEL_COLUMNS = ("channel", "marker", "range", "bits", "scale")
#: columns of the errors table of `describe_files`
DESCRIBE_ERROR_COLUMNS = ("file", "error_type", "message")


@dataclass
class FCSDescription:
    """One data set of an FCS file as its HEADER and TEXT describe it.

    ``dataset`` counts from 0 (of ``n_datasets`` in the ``$NEXTDATA`` chain);
    ``cytometer`` is ``$CYT`` and ``acquired`` ``$DATE $BTIM`` (empty when absent);
    ``spillover`` names the keyword holding a spillover matrix (None without one);
    ``notes`` are the reader's warnings about the file; ``channels`` has one row per
    channel (`CHANNEL_COLUMNS`, ``scale`` as ``lin``, ``log 4 dec``, with ``gain`` when
    not 1), indexed from 1.
    """

    file: str
    version: str
    n_events: int
    n_channels: int
    dataset: int
    n_datasets: int
    cytometer: str
    acquired: str
    spillover: str | None
    channels: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    keywords: dict[str, str] = field(default_factory=dict, repr=False)

    def summary(self) -> dict[str, Any]:
        """The description without its channel table and keywords, as one table row."""
        return {
            "file": self.file,
            "version": self.version,
            "events": self.n_events,
            "channels": self.n_channels,
            "dataset": self.dataset,
            "datasets": self.n_datasets,
            "cytometer": self.cytometer,
            "acquired": self.acquired,
            "spillover": self.spillover,
            "notes": "; ".join(self.notes),
        }


def _scale(log_decades: float, gain: float) -> str:
    text = f"log {log_decades:g} dec" if log_decades > 0 else "lin"
    return text if gain in (0.0, 1.0) else f"{text} gain {gain:g}"


def describe_fcs(path: str | os.PathLike, dataset: int = 0) -> FCSDescription:
    """Describe one data set of an FCS file from its HEADER and TEXT.

    Raises `FCSError` (a subclass naming the cause) when the file cannot be read, or its
    DATA segment does not lie in the file; a file whose TEXT cannot be described (an
    odd keyword value) raises `FCSError` naming it too.

    Examples
    --------
    >>> d = describe_fcs("cohort/P01_baseline.fcs")  # doctest: +SKIP
    >>> d.n_events, d.spillover, d.channels.loc[1, "channel"]  # doctest: +SKIP
    (20000, '$SPILLOVER', 'FSC-A')
    """
    f = str(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FCSWarning)
        meta = read_fcs_header(path, dataset=dataset, check_data=True)
        sets = read_fcs_datasets(path)
    try:
        kw = meta.keywords
        date = " ".join(x for x in (kw.get("$DATE", "").strip(), kw.get("$BTIM", "").strip()) if x)
        rows = [
            (str(r.name), marker_or_none(r.marker) or "", float(r.range), int(r.bits),
             _scale(float(r.log_decades), float(r.gain)))
            for r in meta.channels.itertuples(index=False)
        ]  # fmt: skip
        channels = pd.DataFrame(rows, columns=list(CHANNEL_COLUMNS))
        channels.index = pd.RangeIndex(1, len(rows) + 1, name="#")
        return FCSDescription(
            file=f,
            version=str(meta.version),
            n_events=int(meta.n_events),
            n_channels=int(meta.n_channels),
            dataset=int(meta.dataset),
            n_datasets=len(sets),
            cytometer=kw.get("$CYT", "").strip(),
            acquired=date,
            spillover=spillover_keyword(kw),
            channels=channels,
            notes=[str(w.message) for w in caught],
            keywords=dict(kw),
        )
    except Exception as exc:  # noqa: BLE001 - one odd file must not hide the others
        raise FCSError(f, f"cannot be described ({type(exc).__name__}: {exc})") from exc


def describe_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike], dataset: int = 0
) -> tuple[list[FCSDescription], pd.DataFrame]:
    """`describe_fcs` of every file, in order, going on past a file that cannot be read:
    the descriptions, and an errors table (``file, error_type, message``), one row per
    file that could not be described."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    described, errors = [], []
    for p in items:
        try:
            described.append(describe_fcs(p, dataset=dataset))
        except FCSError as exc:
            errors.append({"file": str(p), "error_type": type(exc).__name__, "message": str(exc)})
    return described, pd.DataFrame(errors, columns=list(DESCRIBE_ERROR_COLUMNS))


def files_table(descriptions: Iterable[FCSDescription]) -> pd.DataFrame:
    """One row per described file (`FCSDescription.summary`)."""
    return pd.DataFrame([d.summary() for d in descriptions])


__all__ = [
    "CHANNEL_COLUMNS",
    "DESCRIBE_ERROR_COLUMNS",
    "FCSDescription",
    "describe_fcs",
    "describe_files",
    "files_table",
]
