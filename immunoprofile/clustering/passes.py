"""The per-file passes of `cluster`: run serially, in worker processes or on a Dask cluster.

FlowSOM clusters a cohort larger than memory in two steps (Van Gassen et al., 2015,
Cytometry A 87:636): the map is trained on a subsample of every file, then every event of
every file is mapped to its node. `cluster` does the per-file work in passes:

1. *prepare*: read, compensate, transform and pre-gate one file, keep its marker columns;
2. *map*: every clustered event of one file to its SOM node, and the file's per-cluster
   counts of its own gates (for naming);
3. *resolve*: how well the named clusters agree with each event's own gate, counted;
4. *name events*: the populations named per event (when the clusters do not resolve
   them), one bit-field per file;

and in between trains the map and its metaclusters on the pooled subsample and names the
clusters in the calling process, which so never touches every event of the cohort. A
pass is a function applied to one file at a time, so a worker holds one file.
Between passes a file's clustered events live in memory (serial runs) or in a scratch
folder as ``.npy`` (parallel runs), read back memory-mapped one file at a time; on a Dask
cluster that folder must be on storage every worker and the caller can reach.

The passes give the same values wherever they run: each file's work depends only on the
file and the seed, and the subsample is drawn in the calling process.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from immunoprofile.exceptions import ImmunoprofileError

__all__ = ["load_events", "run_pass", "store_events"]


def store_events(X: np.ndarray, scratch: str | os.PathLike | None, key: str) -> np.ndarray | str:
    """Keep one file's clustered events between passes: the array itself (``scratch``
    None) or the path of a ``.npy`` written atomically into ``scratch``."""
    if scratch is None:
        return X
    path = Path(scratch) / f"{key}.npy"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, X, allow_pickle=False)
    os.replace(tmp, path)
    return str(path)


def load_events(stored: np.ndarray | str) -> np.ndarray:
    """The events kept by `store_events` (a read-only memory map when on disk)."""
    if isinstance(stored, np.ndarray):
        return stored
    return np.load(stored, mmap_mode="r", allow_pickle=False)


def run_pass(
    fn: Callable[..., Any],
    tasks: Sequence[tuple],
    jobs: int = 1,
    scheduler: Any = None,
    on_done: Callable[[int, Any], None] = lambda i, r: None,
    progress: bool = False,
    label: str = "files",
    names: Sequence[str] | None = None,
    pool: Any = None,
) -> list[Any]:
    """``[fn(*t) for t in tasks]``, serially, on ``jobs`` worker processes, or on Dask
    (``scheduler``: an address such as ``tcp://host:8786``, a ``Client``, ``"threads"`` or
    ``"processes"``), through the package's one batch runner (`immunoprofile.batch`).

    ``fn`` must be a module-level function (it is pickled to the workers). Results come
    back in task order; ``on_done(i, result)`` is called as each task finishes. An
    exception raised by ``fn`` stops the pass (functions that must go on past a bad file
    return their error instead); so does a worker process that dies. ``progress``: a bar
    labelled ``label`` over the tasks (named by ``names``), started once worker processes
    exist (its drawing thread must not run while a pool forks). ``pool``: worker
    processes shared by the passes (`immunoprofile.batch.local_pool`), used with ``jobs``
    > 1 and no ``scheduler``."""
    from immunoprofile.batch import Task, run_batch

    batch = [
        Task(i, f"task {i + 1} of {len(tasks)}", names[i] if names else "", tuple(t))
        for i, t in enumerate(tasks)
    ]
    outs = run_batch(
        fn, batch, jobs, scheduler, progress=progress, label=label, catch=(),
        on_done=lambda o: on_done(o.index, o.value), pool=pool,
    )  # fmt: skip
    for o in outs:
        if not o.ok:  # only a dead worker: fn's own exceptions propagate
            raise ImmunoprofileError(o.message or "a worker process died")
    return [o.value for o in outs]
