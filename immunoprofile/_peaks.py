"""Peaks of a 1-D signal by prominence, in numpy (no import of ``scipy.signal``).

Density-based gates and cluster naming look for the modes of a smoothed histogram and keep
those that stand out (their prominence). ``scipy.signal.find_peaks(x, prominence=p)`` does
this, but importing ``scipy.signal`` costs about half a second in every process that gates
or names clusters (it loads ``scipy.stats``, ``scipy.fft`` and more). `find_peaks` here
gives the same peaks and prominences for that one use, with whole-array operations:

* a local maximum is a run of equal values (a plateau of one or more samples) whose left
  and right neighbours are both lower; the peak is the run's middle sample (the left one
  of the two middles of an even run); a run touching either end of the signal is none;
* its prominence is its height minus the higher of its two bases, where a base is the
  lowest value between the peak and the nearest sample on that side higher than the peak
  (or the end of the signal).
"""

from __future__ import annotations

import numpy as np

__all__ = ["find_peaks"]


def _local_maxima(x: np.ndarray) -> np.ndarray:
    """Middle index of every run of equal values whose neighbours are both lower."""
    n = x.shape[0]
    if n < 3:
        return np.zeros(0, dtype=np.intp)
    # runs of equal values: a run starts where a value differs from the one before it
    start = np.flatnonzero(np.concatenate(([True], x[1:] != x[:-1])))
    end = np.concatenate((start[1:] - 1, [n - 1]))
    inner = (start > 0) & (end < n - 1)
    s, e = start[inner], end[inner]
    v = x[s]
    peak = (x[s - 1] < v) & (x[e + 1] < v)
    return ((s[peak] + e[peak]) // 2).astype(np.intp)


def find_peaks(x: np.ndarray, prominence: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the local maxima of ``x`` whose prominence is at least ``prominence``,
    and those prominences (the same as ``scipy.signal.find_peaks(x,
    prominence=prominence)`` and its ``"prominences"``)."""
    x = np.asarray(x, order="C", dtype=np.float64)
    if x.ndim != 1:
        raise ValueError("`x` must be a 1-D array")
    peaks = _local_maxima(x)
    if peaks.size == 0:
        return peaks, np.zeros(0, dtype=np.float64)
    n = x.shape[0]
    idx = np.arange(n)
    height = x[peaks]
    # samples that bound a peak's bases: not at or below its height (NaN included)
    above = ~(x[None, :] <= height[:, None])
    left = np.where(above & (idx < peaks[:, None]), idx, -1).max(axis=1)
    right = np.where(above & (idx > peaks[:, None]), idx, n).min(axis=1)
    left_min = np.where((idx > left[:, None]) & (idx <= peaks[:, None]), x, np.inf).min(axis=1)
    right_min = np.where((idx >= peaks[:, None]) & (idx < right[:, None]), x, np.inf).min(axis=1)
    prominences = height - np.maximum(left_min, right_min)
    keep = prominence <= prominences
    return peaks[keep], prominences[keep]
