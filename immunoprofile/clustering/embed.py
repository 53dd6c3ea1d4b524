"""2-D UMAP embedding of a clustered subsample (umap-learn, McInnes et al., 2018).

umap-learn compiles its kernels with numba on first use, which takes tens of seconds in a
new process. It is therefore imported only here, only when an embedding is asked for,
and numba's on-disk cache is pointed at a user cache folder (``NUMBA_CACHE_DIR``, unless
already set) so that later processes reuse the compiled code where umap-learn marks its
functions cacheable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile.exceptions import ClusteringError

__all__ = ["umap_embedding", "embed_result", "numba_cache_dir", "require_umap"]

#: what to tell a user whose installation lacks the optional UMAP dependency
UMAP_MISSING = (
    "UMAP needs the optional umap-learn package, which is not installed: "
    "pip install 'immunoprofile[umap]' (or pip install umap-learn)"
)


def require_umap() -> None:
    """Raise `ClusteringError` now, before any clustering work, when umap-learn is absent.

    umap-learn (with numba and llvmlite, about 200 MB) is an optional extra, needed only
    for an embedding; the check finds the module without importing it (importing compiles).
    """
    import importlib.util

    try:
        found = importlib.util.find_spec("umap") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ClusteringError(UMAP_MISSING)


def numba_cache_dir() -> Path:
    """Where numba caches compiled code: ``$NUMBA_CACHE_DIR``, or
    ``$XDG_CACHE_HOME/immunoprofile/numba`` (``~/.cache/...``), created if needed."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    if env:
        path = Path(env)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        path = base / "immunoprofile" / "numba"
    path.mkdir(parents=True, exist_ok=True)
    return path


def umap_embedding(
    X: np.ndarray,
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.2,
) -> np.ndarray:
    """UMAP of the rows of ``X`` into 2-D (float32, n x 2), seeded.

    Raises
    ------
    ClusteringError
        umap-learn is not installed, or ``X`` has too few rows.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] < max(n_neighbors + 1, 3):
        raise ClusteringError(f"UMAP needs at least {n_neighbors + 1} events, got {X.shape[0]}")
    os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    try:
        import umap  # noqa: PLC0415 - heavy, numba-compiled: imported on demand only
    except ImportError as exc:
        raise ClusteringError(UMAP_MISSING) from exc
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        random_state=int(seed),
        n_jobs=1,  # a fixed random_state implies one thread; say so to silence the warning
    )
    return reducer.fit_transform(X).astype(np.float32)


def embed_result(result: Any, n_events: int = 20_000, seed: int = 0) -> pd.DataFrame:
    """UMAP of a subsample of a `ClusterResult`'s training events, balanced across files.

    Returns a DataFrame with ``umap1, umap2, sample, node, metacluster, name`` and one
    column per marker (for colouring), one row per embedded event.
    """
    rng = np.random.default_rng(seed)
    per_file = max(1, int(n_events) // max(1, len(result.identities)))
    idx = []
    for i in range(len(result.identities)):
        rows = np.flatnonzero(result.train_sample == i)
        if rows.size > per_file:
            rows = np.sort(rng.choice(rows, size=per_file, replace=False))
        idx.append(rows)
    sel = np.concatenate(idx)
    X = result.train_events[sel]
    emb = umap_embedding(X, seed=seed)
    nodes = result.train_nodes[sel]
    mcs = result.node_metacluster[nodes]
    cluster_of = mcs if result.name_level == "metacluster" else nodes
    names = result.naming.names.to_numpy()[cluster_of]
    samples = np.asarray(result.samples)[result.train_sample[sel]]
    visits = np.asarray([i.visit for i in result.identities])[result.train_sample[sel]]
    df = pd.DataFrame(
        {
            "umap1": emb[:, 0],
            "umap2": emb[:, 1],
            "sample": samples,
            "visit": visits,
            "node": nodes.astype(int),
            "metacluster": [f"MC{j + 1:02d}" for j in mcs],
            "name": names,
        }
    )
    for j, m in enumerate(result.markers):
        df[m] = X[:, j]
    return df
