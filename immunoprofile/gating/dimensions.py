"""Derived gate dimensions of a template: columns computed per gate rather than per file.

A template's ``compensation`` and ``transforms`` give each channel one analysis scale.
Gating-ML 2.0 (Spidlen et al., Cytometry A 87:683, 2015) is freer: each gate dimension
names its own compensation (``uncompensated``, the file's ``FCS`` spillover or a
``spectrumMatrix``), its own scale transformation, or a ratio of two channels
(``fratio``). A template says the same with two optional sections:

``"matrices"``: spectrum matrices by id, ``{"fluorochromes": [...], "detectors": [...],
"matrix": [[...], ...], "inverted": false}`` (rows are fluorochromes, columns detectors;
unmixed values solve ``detectors = fluorochromes @ matrix`` by least squares).

``"dimensions"``: named columns a gate may put in its ``dims``::

    "logicle(FL1-H)": {"channel": "FL1-H", "compensation": "MySpill",
                        "transform": {"type": "logicle", "t": 1000, "w": 0.5, "m": 4.5, "a": 0}}
    "FL2/FL1":        {"ratio": {"numerator": "FL2-H", "denominator": "FL1-H", "a": 1, "b": 0, "c": 0}}

``compensation`` is ``"none"`` (default), ``"file"`` (the file's spillover; none in the
file means uncompensated, as Gating-ML says) or a matrix id; ``transform`` is a spec of
`immunoprofile.transforms.transform_from_dict` or null. A ratio is ``a * (x - b) / (y - c)``
of its two (compensated) channels, then the transform; ``clip: [low, high]`` then sets
values outside the interval on its edges (a plot's axis range, where FlowJo 9 draws, and
gates, the events beyond it). Derived columns are computed in
float64 from the sample as read, before the template's own compensation and transforms,
so gate boundaries compare as the specification expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from immunoprofile.compensation import Spillover
from immunoprofile.exceptions import CompensationError, GatingError, TemplateError
from immunoprofile.transforms import transform_from_dict


@dataclass(frozen=True)
class Unmixing:
    """A spectrum matrix: ``fluorochromes`` rows x ``detectors`` columns."""

    id: str
    fluorochromes: tuple[str, ...]
    detectors: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]
    inverted: bool = False

    @classmethod
    def from_dict(cls, mid: str, spec: Mapping[str, Any], where: str = "template") -> Unmixing:
        try:
            out = cls(
                str(mid),
                tuple(map(str, spec["fluorochromes"])),
                tuple(map(str, spec["detectors"])),
                tuple(tuple(float(v) for v in row) for row in spec["matrix"]),
                bool(spec.get("inverted", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TemplateError(f"{where}: matrix {mid!r}: {exc}") from None
        m = np.asarray(out.matrix, dtype=np.float64)
        if m.shape != (len(out.fluorochromes), len(out.detectors)):
            raise TemplateError(
                f"{where}: matrix {mid!r} is {m.shape[0]} x {m.shape[1] if m.ndim > 1 else 0}"
                f" but names {len(out.fluorochromes)} fluorochromes and "
                f"{len(out.detectors)} detectors"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "fluorochromes": list(self.fluorochromes),
            "detectors": list(self.detectors),
            "matrix": [list(r) for r in self.matrix],
        }
        if self.inverted:
            out["inverted"] = True
        return out

    def unmixing(self) -> np.ndarray:
        """Detectors x fluorochromes ``U`` with ``fluorochromes = detectors @ U``."""
        return unmixing_matrix(self.matrix, self.inverted, self.id)


def unmixing_matrix(matrix: Any, inverted: bool, mid: str) -> np.ndarray:
    """Detectors x fluorochromes ``U`` of a Gating-ML spectrum matrix (fluorochromes x
    detectors): its transpose when it is stored inverted already, else its inverse (square)
    or pseudo-inverse (more detectors than fluorochromes)."""
    m = np.asarray(matrix, dtype=np.float64)
    if inverted:
        return m.T
    if m.shape[0] == m.shape[1]:
        try:
            return np.linalg.inv(m)
        except np.linalg.LinAlgError:
            raise CompensationError(f"spectrum matrix {mid!r} is singular") from None
    return np.linalg.pinv(m)


@dataclass(frozen=True)
class DerivedDimension:
    """One named derived column (see the module docstring)."""

    name: str
    channel: str | None = None
    ratio: tuple[str, str] | None = None
    coefficients: tuple[float, float, float] = (1.0, 0.0, 0.0)  # ratio a, b, c
    compensation: str = "none"
    transform: Mapping[str, Any] | None = None
    clip: tuple[float, float] | None = None

    @classmethod
    def from_dict(
        cls, name: str, spec: Mapping[str, Any], matrices: Mapping[str, Unmixing], where: str
    ) -> DerivedDimension:
        place = f"{where}: dimensions.{name}"
        comp = str(spec.get("compensation") or "none")
        if comp not in ("none", "file") and comp not in matrices:
            raise TemplateError(
                f"{place}: compensation {comp!r} is neither 'none', 'file' nor a matrix of the "
                f"template (matrices: {sorted(matrices)})"
            )
        tr = spec.get("transform")
        if tr is not None:
            try:
                transform_from_dict(dict(tr))
            except Exception as exc:  # noqa: BLE001 - any bad spec is a template error here
                raise TemplateError(f"{place}: transform: {exc}") from None
        clip = spec.get("clip")
        if clip is not None:
            try:
                lo, hi = (float(v) for v in clip)
            except (TypeError, ValueError):
                raise TemplateError(f"{place}: clip must be [low, high]") from None
            if not lo < hi:
                raise TemplateError(f"{place}: clip [{lo}, {hi}] is empty")
            clip = (lo, hi)
        ratio = spec.get("ratio")
        if (ratio is None) == (spec.get("channel") is None):
            raise TemplateError(f"{place}: give exactly one of 'channel' and 'ratio'")
        if ratio is not None:
            try:
                pair = (str(ratio["numerator"]), str(ratio["denominator"]))
                coef = tuple(float(ratio.get(k, d)) for k, d in (("a", 1), ("b", 0), ("c", 0)))
            except (KeyError, TypeError, ValueError) as exc:
                raise TemplateError(f"{place}: ratio: {exc}") from None
            return cls(name, None, pair, coef, comp, tr, clip)  # type: ignore[arg-type]
        return cls(name, str(spec["channel"]), None, (1.0, 0.0, 0.0), comp, tr, clip)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.ratio is not None:
            a, b, c = self.coefficients
            out["ratio"] = {"numerator": self.ratio[0], "denominator": self.ratio[1]}
            out["ratio"].update({"a": a, "b": b, "c": c})
        else:
            out["channel"] = self.channel
        out["compensation"] = self.compensation
        out["transform"] = None if self.transform is None else dict(self.transform)
        if self.clip is not None:
            out["clip"] = list(self.clip)
        return out

    @property
    def sources(self) -> tuple[str, ...]:
        """The channel or fluorochrome names this column is computed from."""
        return self.ratio if self.ratio is not None else (self.channel,)  # type: ignore[return-value]


class DerivedColumns:
    """Computes derived columns of one sample, sharing compensated channels between them.

    ``channel(name)`` returns a channel's values (float64) given a marker or channel name;
    ``spillover`` is the file's ``(detectors, matrix)`` or None.
    """

    def __init__(
        self,
        channel: Callable[[str], np.ndarray],
        matrices: Mapping[str, Unmixing],
        spillover: tuple[list[str], np.ndarray] | None,
    ) -> None:
        self._channel = channel
        self._matrices = matrices
        self._spill = spillover
        self._unmixed: dict[str, dict[str, np.ndarray]] = {}

    def _compensated(self, name: str, comp: str) -> np.ndarray:
        if comp == "none":
            return self._channel(name)
        if comp == "file":
            if self._spill is None or name not in self._spill[0]:
                return self._channel(name)
            if comp not in self._unmixed:
                dets, mat = self._spill
                x = np.column_stack([self._channel(d) for d in dets])
                try:
                    y = np.linalg.solve(np.asarray(mat, dtype=np.float64).T, x.T).T
                except np.linalg.LinAlgError:
                    raise CompensationError("the file's spillover matrix is singular") from None
                self._unmixed[comp] = {d: y[:, i] for i, d in enumerate(dets)}
            return self._unmixed[comp][name]
        m = self._matrices[comp]
        if name not in m.fluorochromes:
            return self._channel(name)
        if comp not in self._unmixed:
            x = np.column_stack([self._channel(d) for d in m.detectors])
            y = x @ m.unmixing()
            self._unmixed[comp] = {f: y[:, i] for i, f in enumerate(m.fluorochromes)}
        return self._unmixed[comp][name]

    def compute(self, dim: DerivedDimension) -> np.ndarray:
        """The column of ``dim`` over all events (float64)."""
        if dim.ratio is not None:
            a, b, c = dim.coefficients
            x = self._compensated(dim.ratio[0], dim.compensation)
            y = self._compensated(dim.ratio[1], dim.compensation)
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = a * (x - b) / (y - c)
        else:
            vals = self._compensated(dim.channel, dim.compensation)  # type: ignore[arg-type]
        if dim.transform is not None:
            t = transform_from_dict(dict(dim.transform))
            with np.errstate(divide="ignore", invalid="ignore"):
                vals = np.asarray(t.apply(vals, dtype=np.float64), dtype=np.float64)
        if dim.clip is not None:
            vals = np.clip(vals, dim.clip[0], dim.clip[1])
        return vals

    def channels_of(self, dim: DerivedDimension) -> list[str]:
        """The file channels (or markers) ``dim`` reads, matrices' detectors included."""
        out: list[str] = []
        for src in dim.sources:
            m = self._matrices.get(dim.compensation)
            if m is not None and src in m.fluorochromes:
                out.extend(m.detectors)
            elif dim.compensation == "file" and self._spill is not None and src in self._spill[0]:
                out.extend(self._spill[0])
            else:
                out.append(src)
        return out


def file_spillover(sample: Any) -> tuple[list[str], np.ndarray] | None:
    """The spillover a Sample's keywords carry as ``(detectors, matrix)``, or None."""

    sp = Spillover.from_sample(sample)
    if sp is None:
        return None
    dets = list(sp.detectors)
    if all(d.startswith("#") for d in dets):  # $COMP without names: the first n detectors
        fluo = [
            n for n, k in zip(sample.channel_names, sample.channels["kind"]) if k == "fluorescence"
        ]
        dets = fluo[: len(dets)]
    return dets, np.asarray(sp.matrix, dtype=np.float64)


def is_unscaled(sample: Any) -> bool:
    """True for a Sample straight from ``read_fcs(..., scale=False)`` (stored values)."""
    h = sample.history
    return (
        len(h) == 1
        and isinstance(h[0], dict)
        and h[0].get("step") == "read"
        and (h[0].get("scale") is False)
    )


def raw_column(sample: Any, j: int) -> np.ndarray:
    """Column ``j`` of a sample as read, on the FCS channel scale, in float64.

    A sample read with ``scale=False`` holds stored values: log-amplified channels
    ($PnE = f1,f2 with f1 > 0) become ``10**(f1 * x / $PnR) * f2`` (f2 = 1 when 0), linear
    channels ``x / $PnG`` and Time ``x * $TIMESTEP`` (FCS 3.1, section 3.3), here in
    float64 since Gating-ML boundaries are compared exactly. A scaled sample's values are
    widened as they are.
    """
    x = sample.events[:, j].astype(np.float64)
    if not is_unscaled(sample):
        return x
    row = sample.channels.iloc[j]
    decades = float(row["log_decades"] or 0.0)
    if decades > 0:
        offset = float(row["log_offset"] or 0.0)
        rng = float(row["range"]) if row["range"] else 1.0
        return 10.0 ** (decades * x / rng) * (offset if offset > 0 else 1.0)
    if row["kind"] == "time":
        try:
            step = float(str(sample.keywords.get("$TIMESTEP", "1")).strip() or 1.0)
        except ValueError:
            step = 1.0
        return x * step
    gain = float(row["gain"]) if row["gain"] else 1.0
    return x / gain if gain != 1.0 else x


def scaled_columns(sample: Any) -> dict[str, np.ndarray]:
    """Every channel of a sample as read on the channel scale in float64 (`raw_column`)."""
    return {n: raw_column(sample, j) for j, n in enumerate(sample.channel_names)}


def check_unprocessed(sample: Any, what: str) -> None:
    """Derived columns start from the values as read: refuse a compensated/transformed
    sample (its history says so) rather than compensate or transform twice."""
    done = [h.get("step") for h in sample.history if isinstance(h, dict)]
    if any(step in ("compensate", "transform") for step in done):
        raise GatingError(
            f"{sample.name or '<sample>'}: {what} computes its own compensation and "
            f"transforms from the values as read, but this sample was already processed "
            f"({done}); pass the sample as read"
        )


__all__ = [
    "DerivedColumns",
    "DerivedDimension",
    "Unmixing",
    "check_unprocessed",
    "file_spillover",
    "is_unscaled",
    "raw_column",
    "scaled_columns",
]
