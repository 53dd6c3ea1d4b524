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

__all__ = ["chunk_bounds", "load_events", "run_pass", "store_events"]


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
    chunks: int | None = None,
    sizes: Sequence[int] | None = None,
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
    > 1 and no ``scheduler``.

    ``chunks``: send the tasks to the workers in at most this many runs of consecutive
    tasks (`chunk_bounds`, balanced by ``sizes``, e.g. each file's events), each one
    round trip: for passes whose work per file takes milliseconds, a task per file costs
    more in sending, waking and waiting than the work itself. Results, ``on_done`` and
    the bar are still per task. Ignored when the tasks run in this process."""
    from immunoprofile.batch import FileBar, Outcome, Task, run_batch

    tasks = [tuple(t) for t in tasks]
    local = scheduler is None and int(jobs) <= 1
    if chunks is None or local or int(chunks) >= len(tasks):
        batch = [
            Task(i, f"task {i + 1} of {len(tasks)}", names[i] if names else "", t)
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

    bounds = chunk_bounds(sizes if sizes is not None else [1] * len(tasks), int(chunks))
    batch = [
        Task(k, f"tasks {a + 1}-{b} of {len(tasks)}", "", (fn, tasks[a:b]))
        for k, (a, b) in enumerate(bounds)
    ]
    results: list[Any] = [None] * len(tasks)

    class ChunkBar(FileBar):
        """The bar over the tasks, told of each finished chunk: its tasks one by one."""

        def done(self, o: Outcome) -> None:
            if not o.ok:
                return
            for i, value in enumerate(o.value, start=bounds[o.index][0]):
                results[i] = value
                super().done(Outcome(i, "", names[i] if names else "", value))
                on_done(i, value)

    with ChunkBar(label, len(tasks), progress) as bar:
        outs = run_batch(_run_chunk, batch, jobs, scheduler, progress=bar, catch=(), pool=pool)
    for o in outs:
        if not o.ok:  # only a dead worker: fn's own exceptions propagate
            raise ImmunoprofileError(o.message or "a worker process died")
    return results


def _run_chunk(fn: Callable[..., Any], tasks: Sequence[tuple]) -> list[Any]:
    """``[fn(*t) for t in tasks]``: one chunk of a pass, in a worker."""
    return [fn(*t) for t in tasks]


def chunk_bounds(sizes: Sequence[int], n: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of at most ``n`` runs of consecutive items, none empty, that
    split the total of ``sizes`` about evenly: run ``k`` ends at the first item where the
    running total reaches ``k / n`` of the whole."""
    m = len(sizes)
    if m == 0:
        return []
    n = max(1, min(int(n), m))
    total = np.cumsum(np.maximum(np.asarray(sizes, dtype=np.float64), 0.0))
    whole = total[-1]
    out: list[tuple[int, int]] = []
    start = 0
    for k in range(1, n + 1):
        if start >= m:
            break
        if k == n:
            stop = m
        else:
            # the first item at which the running total reaches k/n of the whole
            stop = int(np.searchsorted(total, whole * k / n, side="left")) + 1
            stop = min(max(stop, start + 1), m - (n - k))  # leave one item per later run
            stop = max(stop, start + 1)
        out.append((start, stop))
        start = stop
    return out
