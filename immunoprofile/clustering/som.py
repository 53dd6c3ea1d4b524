"""Self-organising map (SOM) for cytometry events, trained in batch mode.

FlowSOM (Van Gassen et al., 2015, Cytometry A 87:636) trains a Kohonen map on the
transformed markers and then clusters the map's nodes. The original trains online, one
event at a time; here the map is trained with the batch SOM rule (Kohonen, 2013, Neural
Networks 37:52, section 5), which gives the same kind of map but lets every step be a
matrix product over all events:

1. best-matching unit (BMU) of every event: ``argmin_k ||w_k||^2 - 2 x . w_k`` (the
   ``||x||^2`` term does not change the arg-min), computed chunk by chunk so that at most
   ``chunk_size x n_nodes`` distances exist at a time;
2. per-node sums and counts of the events they won (``bincount``);
3. every node moves to the neighbourhood-weighted mean ``W = H S / H n`` where
   ``H = exp(-g^2 / 2 sigma^2)`` is the Gaussian kernel of grid distances ``g`` between
   nodes; ``sigma`` shrinks geometrically from about two thirds of the grid diameter
   (FlowSOM's default radius is the 0.67 quantile of grid distances) to ``sigma_end``.

The last epochs use a small ``sigma``, so the map ends as a topology-ordered k-means.
The early, wide-neighbourhood epochs only place the map coarsely and run on a random
subsample (``coarse_events``), so large inputs cost about four passes over every event.
All arithmetic on events is float32; the map is initialised on the plane of the first two
principal components (deterministic), or from random events (``init="random"``, seeded).
Step 1 may run on several threads (``n_threads``): the blocks of rows of each chunk are
shared out between them, the next chunk's while step 2 adds up this one's; every block is
the one a single thread computes, and step 2 adds the chunks up in order, so the map does
not depend on the number of threads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from immunoprofile._threads import one_thread
from immunoprofile.exceptions import ClusteringError

__all__ = ["SOM", "grid_coordinates"]

#: distances of events to nodes computed at once (float32: 4 MB, about a core's cache;
#: 10,485 events of a 100-node map)
_BLOCK_VALUES = 1 << 20


def _block_rows(codes: np.ndarray) -> int:
    """Rows of events whose distances to ``codes`` are computed at once."""
    return max(256, _BLOCK_VALUES // codes.shape[0])


def _bmu_block(
    Xc: np.ndarray,
    s: int,
    rows: int,
    codes: np.ndarray,
    half_sq: np.ndarray,
    out: np.ndarray,
) -> None:
    """Best-matching units of rows ``s`` to ``s + rows`` of ``Xc``, into ``out``."""
    d = Xc[s : s + rows] @ codes.T
    np.subtract(half_sq, d, out=d)
    d.argmin(axis=1, out=out[s : s + rows])


def grid_coordinates(grid: tuple[int, int]) -> np.ndarray:
    """Integer (row, column) coordinates of the nodes of a rectangular grid, row-major."""
    rows, cols = grid
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    return np.column_stack([rr.ravel(), cc.ravel()]).astype(np.float32)


def _check_events(X: np.ndarray, what: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ClusteringError(f"{what}: expected a 2-D events x markers array, got shape {X.shape}")
    if X.shape[0] == 0:
        raise ClusteringError(f"{what}: no events")
    X = np.ascontiguousarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).any(axis=1).sum())
        raise ClusteringError(f"{what}: {bad} events hold NaN or infinite values")
    return X


class SOM:
    """A batch-trained self-organising map with a scikit-learn style contract.

    Parameters
    ----------
    grid : (rows, columns) of the map; ``rows * columns`` nodes.
    n_epochs : passes over the training events.
    sigma_start : initial neighbourhood width in grid units; None = 2/3 of the grid's
        largest side (about FlowSOM's 0.67-quantile radius).
    sigma_end : final neighbourhood width (small: the map ends as k-means).
    init : ``"pca"`` (nodes spread on the first two principal components) or
        ``"random"`` (nodes start at random events).
    seed : seeds every random step (random initialisation).
    chunk_size : events per block when computing distances (bounds memory).
    coarse_events : epochs whose neighbourhood is still wide (``sigma >= 1`` grid unit)
        only place the map coarsely, so they train on a random subsample of this many
        events (None = always all events); the fine epochs and the final assignment use
        every event.
    n_threads : threads finding the best-matching units of the blocks of events in
        ``fit`` and ``predict`` (each block's matrix product runs on one BLAS thread),
        the next chunk's while the per-node sums of this one are added up. The map is
        the same for any number: every block is computed alike and the per-node sums
        are added up in chunk order.

    Attributes
    ----------
    cluster_centers_ : float32 (n_nodes, n_markers), the node codes.
    grid_ : float32 (n_nodes, 2), grid coordinates of the nodes.
    counts_ : int64 (n_nodes,), training events won by each node in the last epoch.
    quantization_error_ : mean distance of training events to their BMU, last epoch.
    n_features_in_ : number of markers seen in ``fit``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(m, 0.1, (500, 3)) for m in (0.0, 1.0)]).astype("float32")
    >>> som = SOM(grid=(3, 3), seed=0).fit(X)
    >>> som.predict(X).shape
    (1000,)
    """

    def __init__(
        self,
        grid: tuple[int, int] = (10, 10),
        n_epochs: int = 10,
        sigma_start: float | None = None,
        sigma_end: float = 0.3,
        init: str = "pca",
        seed: int = 0,
        chunk_size: int = 65536,
        coarse_events: int | None = 100_000,
        n_threads: int = 1,
    ) -> None:
        self.grid = grid
        self.n_epochs = n_epochs
        self.sigma_start = sigma_start
        self.sigma_end = sigma_end
        self.init = init
        self.seed = seed
        self.chunk_size = chunk_size
        self.coarse_events = coarse_events
        self.n_threads = n_threads

    # --- parameters ---------------------------------------------------------------------

    def _validate_params(self) -> None:
        g = tuple(self.grid)
        if len(g) != 2 or any(int(v) != v or v < 1 for v in g) or g[0] * g[1] < 2:
            raise ClusteringError(
                f"SOM grid must be two positive integers with >= 2 nodes, got {self.grid}"
            )
        if int(self.n_epochs) < 1:
            raise ClusteringError(f"SOM n_epochs must be >= 1, got {self.n_epochs}")
        if self.init not in ("pca", "random"):
            raise ClusteringError(f"SOM init must be 'pca' or 'random', got {self.init!r}")
        if int(self.chunk_size) < 1:
            raise ClusteringError(f"SOM chunk_size must be >= 1, got {self.chunk_size}")
        if int(self.n_threads) < 1:
            raise ClusteringError(f"SOM n_threads must be >= 1, got {self.n_threads}")

    def _initial_codes(self, X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n_nodes = self.grid_.shape[0]
        if self.init == "random" or X.shape[1] < 2 or X.shape[0] < 3:
            idx = rng.choice(X.shape[0], size=n_nodes, replace=X.shape[0] < n_nodes)
            return X[idx].copy()
        # Linear initialisation: span the grid over +-2 standard deviations of the
        # first two principal components (computed on at most 50k events).
        sub = X if X.shape[0] <= 50_000 else X[rng.choice(X.shape[0], 50_000, replace=False)]
        mean = sub.mean(axis=0, dtype=np.float64)
        cov = np.cov(sub, rowvar=False, dtype=np.float64)
        vals, vecs = np.linalg.eigh(np.atleast_2d(cov))
        order = np.argsort(vals)[::-1][:2]
        sd = np.sqrt(np.maximum(vals[order], 1e-12))
        rows, cols = self.grid
        # grid coordinate in [-1, 1] along each side; the longer side takes PC1
        g = self.grid_.astype(np.float64)
        u = (g[:, 0] / max(rows - 1, 1)) * 2 - 1
        v = (g[:, 1] / max(cols - 1, 1)) * 2 - 1
        if cols > rows:
            u, v = v, u
        codes = mean + 2 * (
            u[:, None] * sd[0] * vecs[:, order[0]] + v[:, None] * sd[1] * vecs[:, order[1]]
        )
        return codes.astype(np.float32)

    # --- core ---------------------------------------------------------------------------

    @contextmanager
    def _threads(self) -> Iterator[Executor | None]:
        """``n_threads`` threads for the blocks of `_bmus` (each matrix product on one
        BLAS thread), or None for one."""
        threads = int(getattr(self, "n_threads", 1))
        if threads <= 1:
            yield None
            return
        with one_thread("blas"), ThreadPoolExecutor(threads) as pool:
            yield pool

    def _bmu_chunk(self, Xc: np.ndarray, codes: np.ndarray, half_sq: np.ndarray) -> np.ndarray:
        # argmin ||x - w||^2 == argmin (||w||^2 / 2 - x . w), in blocks of rows whose
        # distances stay in the core's cache (an event's distances, and so its unit, do
        # not depend on the rows it is computed with)
        out = np.empty(Xc.shape[0], dtype=np.intp)
        rows = _block_rows(codes)
        for s in range(0, Xc.shape[0], rows):
            _bmu_block(Xc, s, rows, codes, half_sq, out)
        return out

    def _bmus(
        self,
        X: np.ndarray,
        codes: np.ndarray,
        half_sq: np.ndarray,
        pool: Executor | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, best-matching units)`` of every chunk of ``X``, in order. With a
        thread ``pool`` the chunks' blocks of rows (the same blocks as on one thread) are
        computed on its threads, the next chunk's while the caller adds up this one's
        (at most two chunks' units and a block's distances per thread exist at a time)."""
        step = int(self.chunk_size)
        starts = range(0, X.shape[0], step)
        if pool is None:
            for start in starts:
                yield start, self._bmu_chunk(X[start : start + step], codes, half_sq)
            return
        rows = _block_rows(codes)

        def submit(start: int) -> tuple[int, np.ndarray, list[Future]]:
            Xc = X[start : start + step]
            out = np.empty(Xc.shape[0], dtype=np.intp)
            blocks = range(0, Xc.shape[0], rows)
            return start, out, [pool.submit(_bmu_block, Xc, s, rows, codes, half_sq, out)
                                for s in blocks]  # fmt: skip

        window: deque = deque(submit(s) for s in starts[:2])
        later = iter(starts[2:])
        while window:
            start, out, futures = window.popleft()
            nxt = next(later, None)
            if nxt is not None:  # queued behind this chunk's blocks
                window.append(submit(nxt))
            for f in futures:
                f.result()
            yield start, out

    def _epoch_sums(
        self,
        X: np.ndarray,
        codes: np.ndarray,
        labels_out: np.ndarray | None = None,
        error: bool = False,
        pool: Executor | None = None,
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-node event sums (float64) and counts, and (if asked) the summed squared error."""
        n_nodes, n_dim = codes.shape
        sums = np.zeros((n_nodes, n_dim), dtype=np.float64)
        counts = np.zeros(n_nodes, dtype=np.int64)
        half_sq = 0.5 * np.einsum("ij,ij->i", codes, codes)
        sq_err = 0.0
        step = int(self.chunk_size)
        for start, bmu in self._bmus(X, codes, half_sq, pool):
            Xc = X[start : start + step]
            if labels_out is not None:
                labels_out[start : start + step] = bmu
            counts += np.bincount(bmu, minlength=n_nodes)
            for j in range(n_dim):  # loop over markers, not events
                sums[:, j] += np.bincount(bmu, weights=Xc[:, j], minlength=n_nodes)
            if error:
                diff = Xc - codes[bmu]
                sq_err += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
        return sums, counts, sq_err

    def fit(self, X: np.ndarray, y: None = None) -> SOM:
        """Train the map on events ``X`` (n_events x n_markers, transformed scale).

        Raises
        ------
        ClusteringError
            When ``X`` is not a finite 2-D array or the parameters are invalid.
        """
        self._validate_params()
        X = _check_events(X, "SOM.fit")
        rng = np.random.default_rng(self.seed)
        self.grid_ = grid_coordinates(tuple(int(v) for v in self.grid))
        diff = self.grid_[:, None, :] - self.grid_[None, :, :]
        grid_sq = (diff**2).sum(axis=2).astype(np.float64)
        codes = self._initial_codes(X, rng)

        s0 = self.sigma_start if self.sigma_start is not None else max(self.grid) * 2.0 / 3.0
        s1 = min(float(self.sigma_end), s0)
        n_ep = int(self.n_epochs)
        sigmas = s0 * (s1 / s0) ** (np.arange(n_ep) / max(n_ep - 1, 1))
        coarse = None
        if self.coarse_events is not None and X.shape[0] > int(self.coarse_events):
            idx = np.sort(rng.choice(X.shape[0], size=int(self.coarse_events), replace=False))
            coarse = X[idx]
        with self._threads() as pool:
            for sigma in sigmas:
                data = coarse if coarse is not None and sigma >= 1.0 else X
                sums, counts, _ = self._epoch_sums(data, codes, pool=pool)
                H = np.exp(-grid_sq / (2.0 * sigma**2))
                num = H @ sums
                den = H @ counts.astype(np.float64)
                ok = den > 1e-12
                codes[ok] = (num[ok] / den[ok, None]).astype(np.float32)
            self.labels_ = np.empty(X.shape[0], dtype=np.int32)
            _, counts, sq_err = self._epoch_sums(
                X, codes, labels_out=self.labels_, error=True, pool=pool
            )
        self.cluster_centers_ = codes
        self.counts_ = counts
        self.quantization_error_ = float(np.sqrt(sq_err / X.shape[0]))
        self.n_features_in_ = X.shape[1]
        return self

    def _check_fitted(self, X: np.ndarray, what: str) -> np.ndarray:
        if not hasattr(self, "cluster_centers_"):
            raise ClusteringError(f"{what}: the SOM is not fitted yet; call fit() first")
        X = _check_events(X, what)
        if X.shape[1] != self.n_features_in_:
            raise ClusteringError(
                f"{what}: the SOM was fitted on {self.n_features_in_} markers, got {X.shape[1]}"
            )
        return X

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Index of the best-matching node of every event (int32, length n_events)."""
        X = self._check_fitted(X, "SOM.predict")
        codes = self.cluster_centers_
        half_sq = 0.5 * np.einsum("ij,ij->i", codes, codes)
        out = np.empty(X.shape[0], dtype=np.int32)
        step = int(self.chunk_size)
        with self._threads() as pool:
            for start, bmu in self._bmus(X, codes, half_sq, pool):
                out[start : start + step] = bmu
        return out

    def fit_predict(self, X: np.ndarray, y: None = None) -> np.ndarray:
        """Train on ``X`` and return the node of every event."""
        return self.fit(X).labels_
