"""Exception hierarchy. Every error a user can cause has its own class and a message
that names the file, the place (byte offset, keyword, population, marker) and the cause."""

from __future__ import annotations

from os import PathLike


class ImmunoprofileError(Exception):
    """Base class of every error immunoprofile raises on purpose."""


# --- FCS files -------------------------------------------------------------------


class FCSError(ImmunoprofileError):
    """An FCS file could not be read or written.

    Parameters
    ----------
    path : the file (or a description such as ``"<bytes>"``).
    cause : what is wrong, in words.
    offset : byte offset in the file where the problem is, if known.
    keyword : the TEXT keyword involved, if any.
    """

    def __init__(
        self,
        path: str | PathLike | None,
        cause: str,
        *,
        offset: int | None = None,
        keyword: str | None = None,
    ) -> None:
        self.path = str(path) if path is not None else "<unknown>"
        self.cause = cause
        self.offset = offset
        self.keyword = keyword
        where = []
        if offset is not None:
            where.append(f"byte {offset}")
        if keyword is not None:
            where.append(f"keyword {keyword}")
        place = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{self.path}{place}: {cause}")

    def __reduce__(self) -> tuple:
        # picklable (a worker process returns it to the caller): rebuilt from its parts
        import functools

        make = functools.partial(type(self), offset=self.offset, keyword=self.keyword)
        return (make, (self.path, self.cause))


class NotFCSError(FCSError):
    """The file does not start with an FCS HEADER."""


class TruncatedFCSError(FCSError):
    """The file ends before a segment it declares."""


class FCSOffsetError(FCSError):
    """A segment offset points outside the file or is inconsistent."""


class DataOffsetDiscrepancyError(FCSOffsetError):
    """HEADER and TEXT ($BEGINDATA/$ENDDATA) disagree on where DATA is."""


class FCSTextError(FCSError):
    """The TEXT segment is garbled (bad delimiter, odd number of fields, missing keyword)."""


class FCSDataTypeError(FCSError):
    """$DATATYPE, $BYTEORD, $MODE or $PnB describe a layout this reader does not support."""


class EventCountError(FCSError):
    """$TOT disagrees with the length of the DATA segment."""


class MultipleDataSetsError(FCSError):
    """The file holds several data sets and the caller asked for a specific one that is absent
    (or asked, with ``dataset=None``, for a file holding exactly one)."""


class FCSWarning(UserWarning):
    """An FCS file was read despite a known, tolerated fault (named in the message), or holds
    more than the part that was read (other data sets)."""


# --- panel, compensation, transforms -----------------------------------------------


class MarkerNotFoundError(ImmunoprofileError, KeyError):
    """A marker or channel named by the user is not in the sample's panel."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class AmbiguousMarkerError(MarkerNotFoundError):
    """A marker name matches more than one channel."""


class CompensationError(ImmunoprofileError, ValueError):
    """A spillover matrix is malformed, singular, or does not match the file."""


class CompensationWarning(UserWarning):
    """Files were not compensated because they carry no spillover and were taken to be
    compensated exports (compensation mode ``auto``)."""


class TransformError(ImmunoprofileError, ValueError):
    """A transform specification is invalid."""


# --- templates and gating ----------------------------------------------------------


class TemplateError(ImmunoprofileError, ValueError):
    """A gating template is invalid (schema, unknown parent, cycle, duplicate, gate type)."""


class GatingMLError(TemplateError):
    """A Gating-ML document is malformed or uses something the reader does not support."""


class WorkspaceError(TemplateError):
    """A FlowJo workspace is malformed or uses something the reader does not support."""


class UnsupportedMethodError(TemplateError):
    """An openCyto template uses gating methods immunoprofile has no counterpart for."""


class ExchangeError(ImmunoprofileError, ValueError):
    """An object handed over from (or to) another library cannot be converted."""


class GatingError(ImmunoprofileError):
    """A gate could not be evaluated on a sample."""


class ClusteringError(ImmunoprofileError):
    """Clustering could not run on the given input."""


# --- cohort and statistics ----------------------------------------------------------


class IdentityError(ImmunoprofileError, ValueError):
    """Which patient and visit a file belongs to could not be determined or is contradictory."""


class IdentityClashError(IdentityError):
    """Several files claim the same patient, visit (and tube); the message names them all."""


class IdentityClashWarning(UserWarning):
    """Several files claim the same patient, visit (and tube): they are gated, but kept out
    of the per-visit tables and the comparison (the message names the files)."""


class ComparisonError(ImmunoprofileError, ValueError):
    """A population table cannot be compared (missing columns, visits, or identities)."""


class ConfigError(ImmunoprofileError, ValueError):
    """A run configuration (``immunoprofile run --config``) is unreadable or invalid."""


class ReportError(ImmunoprofileError, ValueError):
    """A results folder cannot be turned into a report (a file in it is unreadable or
    not in the layout immunoprofile writes)."""


class BlankSampleError(ImmunoprofileError, ValueError):
    """A file holds no usable events: none at all, none finite, or every channel one
    constant value (an all-zero export of a failed acquisition)."""


class OutputError(ImmunoprofileError, OSError):
    """An output location cannot be written (not a folder, not writable, full), or a
    write would replace one of the run's own input files."""


# --- simulation ---------------------------------------------------------------------


class SimulationError(ImmunoprofileError, ValueError):
    """A simulation was asked for with invalid parameters (counts, visits, effects)."""
