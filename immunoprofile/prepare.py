"""The prepare step: compensate, then transform, one sample.

Gating and clustering both start from a sample on its analysis scale. This module is that
one step, below both: it takes the compensation mode and the transform spec themselves
(not a gating template), so clustering without a template, a template's gating and a
notebook all prepare a sample the same way. A step the sample's history shows was done
already is skipped, so a prepared sample can be prepared again for free.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile.compensation import (
    Spillover,
    _apply_to_sample,
    choose_compensation,
    compensate_array,
)
from immunoprofile.sample import Sample
from immunoprofile.transforms import TransformSpec, transform


def done(sample: Sample, *steps: str) -> bool:
    """Whether the sample's history holds one of ``steps`` (e.g. ``"transform"``)."""
    return any(isinstance(h, dict) and h.get("step") in steps for h in sample.history)


def prepare(
    sample: Sample,
    *,
    compensation: str | PathLike | Spillover | None = "auto",
    transforms: Mapping[str, Any] | TransformSpec | str | None = None,
    base: Path | None = None,
    overwrite: bool = False,
) -> Sample:
    """Compensate and transform ``sample``, skipping what its history shows was done.

    Parameters
    ----------
    sample : the Sample as read.
    compensation : ``"auto"`` (the file's spillover keyword unless the file shows it is
        compensated already; without one the data are taken as compensated),
        ``"keyword"`` (``"file"``; an error without one), ``"none"`` (or None), a matrix
        file, or a `Spillover`. See `immunoprofile.compensation.choose_compensation`. The
        decision is recorded in the history as a ``compensation`` step (mode, status,
        source, reason).
    transforms : a spec for `immunoprofile.transforms.transform`; None applies no
        transform (the events stay on the compensated scale).
    base : the folder a relative matrix path is relative to (e.g. a template's folder).
    overwrite : compensate and transform in ``sample.events`` itself, for a caller that owns
        that array and drops ``sample`` (e.g. a file it read to gate it): no second
        events-sized array. The values are the same either way.

    Returns
    -------
    A new Sample (or ``sample`` itself when nothing was left to do).
    """
    transformed = done(sample, "transform")
    own = overwrite
    if not transformed and not done(sample, "compensation"):
        choice = choose_compensation(sample, compensation, base=base)
        sample = sample.with_events(sample.events, step={"step": "compensation", **choice.record()})
        if choice.spillover is not None:
            compensated = _apply_to_sample(
                sample, choice.spillover, "compensate", compensate_array, overwrite=overwrite
            )
            # events this call made itself can take the transform in place (one events-sized
            # array less: memory and the time to allocate it)
            own = overwrite or not np.may_share_memory(compensated.events, sample.events)
            sample = compensated
    if transforms is not None and not transformed:
        sample = transform(sample, transforms, overwrite=own)
    return sample


__all__ = ["done", "prepare"]
