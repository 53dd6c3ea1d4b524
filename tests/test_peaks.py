"""`immunoprofile._peaks.find_peaks` against ``scipy.signal.find_peaks`` with a prominence:
the same peaks and prominences on smoothed histograms, plateaus, ties and edges."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks as scipy_find_peaks

from immunoprofile._peaks import find_peaks


def _signals(seed: int, n: int = 400) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = [np.zeros(0), np.zeros(2), np.array([0.0, 1.0, 0.0]), np.array([1.0, 1.0, 1.0]),
           np.array([0.0, 2.0, 2.0, 0.0]), np.array([0.0, 2.0, 2.0, 2.0, 1.0, 3.0])]  # fmt: skip
    for _ in range(n):
        m = int(rng.integers(3, 300))
        kind = int(rng.integers(0, 3))
        if kind == 0:  # a smoothed histogram, as the gates and the cluster naming use
            h = np.histogram(rng.normal(size=int(rng.integers(50, 5000))), bins=m)[0]
            x = gaussian_filter1d(h.astype(float), rng.uniform(0.5, 4.0), mode="constant")
            out.append(np.r_[0.0, x, 0.0])
        elif kind == 1:  # plateaus and ties everywhere
            out.append(rng.integers(0, 4, m).astype(float))
        else:
            out.append(np.round(rng.normal(size=m), 1))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_same_peaks_and_prominences_as_scipy(seed):
    rng = np.random.default_rng(seed + 100)
    for x in _signals(seed):
        top = float(x.max()) if x.size else 1.0
        for p in (0.0, float(rng.uniform(0.0, 1.0)) * top):
            ref, props = scipy_find_peaks(x, prominence=p)
            got, prom = find_peaks(x, p)
            assert np.array_equal(got, ref)
            assert np.array_equal(prom, props["prominences"])


def test_rejects_a_2d_signal():
    with pytest.raises(ValueError, match="1-D"):
        find_peaks(np.zeros((3, 3)), 0.0)
