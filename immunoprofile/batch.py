"""The one batch runner of the package: per-file work over many files, serially, in worker
processes (``jobs=N``) or on Dask (``scheduler=``), with the same results in every case.

`gate` and `cluster` both hand their per-file work to `run_batch`; what is common to a
batch of files lives here as well: naming the inputs (`describe`, `input_names`), checking
them (`as_inputs`), turning a failure into an error row that names the file
(`error_message`, `error_row`, `ERROR_COLUMNS`), announcing files that claim one identity
(`warn_clashes`, `clash_rows`) and the progress bar over files.

A failed file never stops the batch: the work's exception (of the classes given as
``catch``) becomes an `Outcome` with ``error_type`` and ``message``; a worker process that
dies becomes one too (``WorkerDied``). Outcomes come back in input order, whatever order
the files finished in.

Schedulers: ``None`` (``jobs`` local processes, 1 = this process), ``"synchronous"``,
``"threads"`` and ``"processes"`` (Dask's local schedulers, ``jobs`` workers), a Dask
scheduler address (``"tcp://host:8786"``) or a ``dask.distributed.Client``. On a cluster,
arguments shared by several files (a template) are sent to the workers once.
"""

from __future__ import annotations

import os
import pickle
import time
import traceback
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immunoprofile.cohort import CLASH_ADVICE, CLASH_ERROR, clash_of, clash_summary
from immunoprofile.exceptions import IdentityClashWarning, ImmunoprofileError
from immunoprofile.sample import Sample

#: columns of every ``errors.csv`` (gating and clustering)
ERROR_COLUMNS = (
    "file", "sample", "error_type", "message", "patient", "visit", "tube", "other_files",
)  # fmt: skip
#: Dask's local schedulers, by name
LOCAL_SCHEDULERS = ("synchronous", "threads", "processes")


# --- inputs ------------------------------------------------------------------------------


def describe(item: Any) -> str:
    """The file an input stands for: its path, or an in-memory sample's path or name."""
    if isinstance(item, Sample):
        return str(item.path) if item.path is not None else (item.name or "<sample>")
    return str(item)


def as_inputs(inputs: Any, what: str) -> list[Any]:
    """The inputs of a batch as a list of paths and `Sample` objects (one is accepted);
    `TypeError` naming the first input that is neither."""
    if isinstance(inputs, str | os.PathLike | Sample):
        return [inputs]
    if isinstance(inputs, bytes | dict) or not hasattr(inputs, "__iter__"):
        raise TypeError(
            f"{what}: expected FCS file paths or Samples (one, or a list of them); got "
            f"{type(inputs).__name__}"
        )
    items = list(inputs)
    for i, x in enumerate(items):
        if not isinstance(x, str | os.PathLike | Sample):
            raise TypeError(
                f"{what}: input {i} is a {type(x).__name__}; expected an FCS file path "
                "(str or pathlib.Path) or an immunoprofile Sample"
            )
    return items


def absolute(item: Any) -> Any:
    """A path made absolute (``str``), anything else as given: what a Dask worker needs, its
    working folder being its own (on another machine, files on shared storage)."""
    if isinstance(item, str | os.PathLike) and not isinstance(item, Sample):
        return os.path.abspath(item)
    return item


def input_names(items: Sequence[Any]) -> tuple[list[str], list[str]]:
    """The file of every input (`describe`) and its sample name: a `Sample`'s own name, else
    one derived from the file names (`immunoprofile.cohort.sample_names`), unique per file
    even when in-memory samples share a name (rows are keyed by sample)."""
    from immunoprofile.cohort import make_unique, sample_names

    files = [describe(x) for x in items]
    given = [x.name if isinstance(x, Sample) and x.name else None for x in items]
    return files, make_unique([g or d for g, d in zip(given, sample_names(files))])


# --- errors --------------------------------------------------------------------------------


def error_message(exc: BaseException, file: str, also: Sequence[str] = ()) -> str:
    """The message of a file's failure: the exception's text, where in the code an
    unexpected one happened (for a bug report), and the file when the text names neither
    it, its base name nor any of ``also`` (its sample name)."""
    msg = str(exc) or repr(exc)
    if not isinstance(exc, ImmunoprofileError):
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            last = tb[-1]
            msg = f"{msg} (at {Path(last.filename).name}:{last.lineno})"
    if not any(n and n in msg for n in (file, Path(file).name, *also)):
        msg = f"{file}: {msg}"
    return msg


def error_row(file: str, sample: str, error_type: str, message: str, identity: Any = None,
              other_files: str = "") -> dict[str, str]:  # fmt: skip
    """One row of ``errors.csv`` (`ERROR_COLUMNS`)."""
    return {
        "file": file,
        "sample": sample,
        "error_type": error_type,
        "message": message,
        "patient": getattr(identity, "patient", "") if identity is not None else "",
        "visit": getattr(identity, "visit", "") if identity is not None else "",
        "tube": getattr(identity, "tube", "") if identity is not None else "",
        "other_files": other_files,
    }


def clash_row(ident: Any, clashes: Sequence[Any], kept: str) -> dict[str, str] | None:
    """The ``errors.csv`` row of a file whose identity another file also claims (None when
    none does); ``kept`` says what became of the file (``"clustered, in
    populations.csv"``)."""
    clash = clash_of(ident.sample, clashes)
    if clash is None:
        return None
    others = clash.others(ident.file)
    message = (
        f"{ident.file}: {clash.identity} (from its {ident.source}) is also claimed by "
        f"{', '.join(others)}; {kept}; " + CLASH_ADVICE
    )
    return error_row(ident.file, ident.sample, CLASH_ERROR, message, ident, ";".join(others))


def clash_rows(identities: Sequence[Any], clashes: Sequence[Any], kept: str) -> list[dict]:
    """`clash_row` of every file that has one, input order."""
    rows = (clash_row(ident, clashes, kept) for ident in identities)
    return [r for r in rows if r is not None]


def warn_clashes(clashes: Sequence[Any], what: str, stacklevel: int = 3) -> None:
    """One `IdentityClashWarning` naming every group of files that claim one identity;
    ``what`` says what the batch does with them."""
    warnings.warn(
        clash_summary(clashes) + ". " + what + CLASH_ADVICE,
        IdentityClashWarning,
        stacklevel=stacklevel + 1,
    )


# --- one file --------------------------------------------------------------------------------


@dataclass
class Task:
    """One file's work: ``work(*args)``; ``file`` and ``sample`` name it in error rows."""

    index: int
    file: str
    sample: str
    args: tuple = ()


@dataclass
class Outcome:
    """What one file's work produced: its ``value``, or the failure (``error_type``,
    ``message``; ``exception`` where it could travel back from the worker)."""

    index: int
    file: str
    sample: str
    value: Any = None
    error_type: str | None = None
    message: str | None = None
    seconds: float = 0.0
    exception: BaseException | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error_type is None


def _guarded(work: Callable[..., Any], task: Task, catch: tuple[type, ...]) -> Outcome:
    """Run one task; an exception of ``catch`` becomes the outcome's error."""
    t0 = time.perf_counter()
    out = Outcome(task.index, task.file, task.sample)
    try:
        out.value = work(*task.args)
    except catch as exc:
        out.error_type = type(exc).__name__
        out.message = error_message(exc, task.file, (task.sample,))
        try:  # keep the exception itself when it can cross a process boundary
            pickle.loads(pickle.dumps(exc))
            out.exception = exc
        except Exception:  # noqa: BLE001 - an unpicklable exception still has its message
            out.exception = None
    out.seconds = time.perf_counter() - t0
    return out


# --- progress ------------------------------------------------------------------------------


def failure_of(o: Outcome) -> str | None:
    """The error type of a file's failure, or None when it worked: the outcome's own error,
    or one the per-file work recorded in its value instead of raising (work that must go on
    past a bad file returns the exception, or a record with an ``error_type``, such as
    `immunoprofile.gating.run.FileOutcome`)."""
    if not o.ok:
        return o.error_type
    if isinstance(o.value, BaseException):
        return type(o.value).__name__
    recorded = getattr(o.value, "error_type", None)
    return recorded if isinstance(recorded, str) else None


class FileBar:
    """A bar over files (rich, on stderr), started only once worker processes exist: its
    drawing thread must not run while a pool forks."""

    def __init__(self, label: str, total: int, enabled: bool) -> None:
        self.label, self.total = label, total
        self._t0, self._closed = time.perf_counter(), False
        self._bar: Any = None
        if enabled:
            from immunoprofile.progress import file_bar

            self._bar, self._task = file_bar(label, total)
        self._started = False

    def start(self) -> None:
        if self._bar is not None and not self._started:
            self._bar.start()
            self._started = True

    def done(self, o: Outcome) -> None:
        if self._bar is not None:
            failed = failure_of(o)
            status = "ok" if failed is None else f"FAILED ({failed})"
            self._bar.update(self._task, advance=1, last=f"{o.sample}: {status}")

    def stop(self) -> None:
        if self._bar is not None and self._started:
            self._bar.stop()
            self._started = False

    def close(self) -> None:
        """Stop the bar and log ``label: N in S s`` at INFO (once)."""
        self.stop()
        if not self._closed:
            self._closed = True
            from immunoprofile.progress import log

            log.info("%s: %d in %.1f s", self.label, self.total, time.perf_counter() - self._t0)

    def __enter__(self) -> FileBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Notify:
    """A `FileBar` that also tells the caller of each finished task."""

    def __init__(self, bar: FileBar, on_done: Callable[[Outcome], None]) -> None:
        self._bar, self._on_done = bar, on_done

    def start(self) -> None:
        self._bar.start()

    def done(self, o: Outcome) -> None:
        self._bar.done(o)
        self._on_done(o)

    def stop(self) -> None:
        self._bar.stop()

    def close(self) -> None:
        self._bar.close()


# --- the runner -------------------------------------------------------------------------------


def check_jobs(jobs: Any, what: str) -> int:
    """``jobs`` as an int >= 1, or `ValueError`."""
    import numpy as np

    if isinstance(jobs, bool) or not isinstance(jobs, int | np.integer) or jobs < 1:
        raise ValueError(f"{what}: jobs must be a whole number >= 1, got {jobs!r}")
    return int(jobs)


def run_batch(
    work: Callable[..., Any],
    tasks: Sequence[Task],
    jobs: int = 1,
    scheduler: Any = None,
    progress: bool | FileBar = False,
    label: str = "files",
    catch: type | tuple[type, ...] = Exception,
    fail_fast: bool = False,
    on_done: Callable[[Outcome], None] | None = None,
    pool: ProcessPoolExecutor | None = None,
) -> list[Outcome]:
    """Run ``work(*task.args)`` for every task; one `Outcome` per task, in task order.

    ``work`` must be a module-level function (it is sent to worker processes) and
    deterministic: every scheduler then gives the same outcomes. Exceptions of ``catch``
    become error outcomes and the batch goes on; others propagate (a bug is not a bad
    file). With ``fail_fast`` the batch stops at the first error outcome instead (in
    parallel, files not started yet are cancelled), for callers that raise it.
    ``progress``: show a bar over the files labelled ``label``, or a `FileBar` the caller
    owns (one bar over several calls). ``on_done(outcome)`` is called as each task
    finishes (in the calling process, in the order they finish). ``pool``: the worker
    processes to use when ``jobs`` > 1 and ``scheduler`` is None (`local_pool`; several
    batches then share its workers), instead of a pool of the batch's own.
    """
    catch = catch if isinstance(catch, tuple) else (catch,)
    tasks = list(tasks)
    if not tasks:
        return []
    own = not isinstance(progress, FileBar)
    bar = FileBar(label, len(tasks), bool(progress)) if own else progress
    if on_done is not None:
        bar = _Notify(bar, on_done)
    try:
        if scheduler is None:
            outs = _run_local(work, tasks, int(jobs), catch, bar, fail_fast, pool)
        elif isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
            outs = _run_dask_local(work, tasks, scheduler, int(jobs), catch, bar)
        else:
            outs = _run_distributed(work, tasks, scheduler, catch, bar)
    finally:
        if own:
            bar.close()
    order = {t.index: k for k, t in enumerate(tasks)}
    return sorted(outs, key=lambda o: order[o.index])


def _mp_context() -> Any:
    """Start method for worker processes.

    ``fork`` where the platform has it and it is safe enough (Linux): workers start at once
    with the modules already imported, and scripts without an ``if __name__ ==
    "__main__"`` guard still work (``spawn``/``forkserver`` re-run the main script in every
    worker). Elsewhere the platform default (``spawn`` on macOS and Windows)."""
    import multiprocessing as mp
    import sys

    if sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods():
        return mp.get_context("fork")
    return mp.get_context()


def local_pool(jobs: int) -> ProcessPoolExecutor | None:
    """``jobs`` worker processes that several batches can share (``run_batch(pool=)``),
    or None when ``jobs`` is 1. Its workers start with its first batch and stay until it
    is shut down (``with local_pool(jobs) as pool:``); a batch that needs another module
    than this process had imported then imports it in every worker."""
    if int(jobs) <= 1:
        return None
    return ProcessPoolExecutor(max_workers=int(jobs), mp_context=_mp_context())


def _run_local(
    work: Callable[..., Any], tasks: list[Task], jobs: int, catch: tuple, bar: FileBar,
    fail_fast: bool = False, shared: ProcessPoolExecutor | None = None,
) -> list[Outcome]:  # fmt: skip
    if jobs <= 1 or len(tasks) <= 1:
        bar.start()
        outs = []
        for t in tasks:
            o = _guarded(work, t, catch)
            bar.done(o)
            outs.append(o)
            if fail_fast and not o.ok:
                break
        return outs
    from contextlib import nullcontext

    own = shared is None
    outs = []
    with (
        ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=_mp_context())
        if own else nullcontext(shared)
    ) as pool:  # fmt: skip
        futures = {pool.submit(_guarded, work, t, catch): t for t in tasks}
        bar.start()  # workers exist now
        for fut in as_completed(futures):
            t = futures[fut]
            try:
                o = fut.result()
            except BrokenProcessPool as exc:
                o = _died(t, exc)
            bar.done(o)
            outs.append(o)
            if fail_fast and not o.ok:
                for f in futures:
                    f.cancel()
                if own:
                    pool.shutdown(wait=True, cancel_futures=True)
                break
    return outs


def _died(t: Task, exc: BaseException) -> Outcome:
    return Outcome(
        t.index, t.file, t.sample, error_type="WorkerDied",
        message=f"{t.file}: the worker process working on this file died ({exc})",
    )  # fmt: skip


def _run_dask_local(
    work: Callable[..., Any], tasks: list[Task], scheduler: str, jobs: int, catch: tuple,
    bar: FileBar,
) -> list[Outcome]:  # fmt: skip
    dask = _import_dask("dask", scheduler)
    calls = [dask.delayed(_guarded, pure=False)(work, t, catch) for t in tasks]
    bar.start()
    kw = {} if scheduler == "synchronous" else {"num_workers": max(int(jobs), 1)}
    outs = list(dask.compute(*calls, scheduler=scheduler, **kw))
    for o in outs:
        bar.done(o)
    return outs


def _import_dask(module: str, scheduler: Any) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImmunoprofileError(
            f"scheduler {scheduler!r} needs {module}, which is not installed; "
            "install the extra: pip install 'immunoprofile[dask]'"
        ) from None


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | os.PathLike | Sample)


def _run_distributed(
    work: Callable[..., Any], tasks: list[Task], scheduler: Any, catch: tuple, bar: FileBar
) -> list[Outcome]:
    distributed = _import_dask("dask.distributed", scheduler)
    own = not isinstance(scheduler, distributed.Client)
    try:
        client = distributed.Client(scheduler) if own else scheduler
    except (OSError, ValueError, TypeError) as exc:
        raise ImmunoprofileError(f"cannot connect to Dask scheduler {scheduler!r}: {exc}") from None
    try:
        # an argument several files share (a template) goes to the workers once
        seen: dict[int, int] = {}
        for t in tasks:
            for a in t.args:
                if not _plain(a):
                    seen[id(a)] = seen.get(id(a), 0) + 1
        scattered: dict[int, Any] = {}
        for t in tasks:
            for a in t.args:
                if seen.get(id(a), 0) > 1 and id(a) not in scattered:
                    # one future for the whole value (a list or dict would be scattered
                    # item by item, keyed by its own keys), under a key of its own: a
                    # key named by the content, scattered again by the next batch, can
                    # be released by this one's futures meanwhile ("lost dependencies")
                    scattered[id(a)] = client.scatter([a], broadcast=True, hash=False)[0]
        futures = []
        for t in tasks:
            args = tuple(scattered.get(id(a), a) if not _plain(a) else a for a in t.args)
            bare = Task(t.index, t.file, t.sample)  # the arguments travel as ``args``
            futures.append(client.submit(_run_task, work, bare, args, catch, pure=False))
        bar.start()
        outs = []
        for fut in distributed.as_completed(futures):
            o = fut.result()
            bar.done(o)
            outs.append(o)
        return outs
    finally:
        if own:
            client.close()


def _run_task(work: Callable[..., Any], task: Task, args: tuple, catch: tuple) -> Outcome:
    """A task on a Dask worker, its shared arguments resolved by the scheduler."""
    return _guarded(work, Task(task.index, task.file, task.sample, args), catch)


def raise_first(outcomes: Iterable[Outcome]) -> None:
    """Raise the first failure among ``outcomes`` (input order) as it was raised, or as an
    `ImmunoprofileError` with its message where the exception could not travel back."""
    for o in outcomes:
        if o.ok:
            continue
        if o.exception is not None:
            raise o.exception
        raise ImmunoprofileError(o.message or o.error_type or "failed")


__all__ = [
    "ERROR_COLUMNS",
    "FileBar",
    "LOCAL_SCHEDULERS",
    "Outcome",
    "Task",
    "absolute",
    "as_inputs",
    "check_jobs",
    "clash_row",
    "clash_rows",
    "describe",
    "error_message",
    "error_row",
    "failure_of",
    "input_names",
    "local_pool",
    "raise_first",
    "run_batch",
    "warn_clashes",
]
