"""The batch runner (immunoprofile.batch) and the two verbs built on it: the same outcomes
serially, in processes and on Dask's local schedulers; a bad file is an error row and the
batch goes on; cluster --jobs 2 gives the same table as --jobs 1."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile import batch
from immunoprofile.batch import Task, run_batch
from immunoprofile.cli import main
from immunoprofile.clustering.api import cluster
from immunoprofile.exceptions import FCSError, GatingError, ImmunoprofileError


def _square(x: int) -> int:
    if x == 3:
        raise GatingError("no such thing as three")
    if x == 5:
        raise KeyError("a bug, not a bad file")
    return x * x


def _die(x: int) -> int:
    if x == 1:
        os._exit(3)  # the worker process dies
    return x


def _tasks(values) -> list[Task]:
    return [Task(i, f"f{v}.fcs", f"f{v}", (v,)) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("jobs", "scheduler"), [(1, None), (2, None), (2, "threads"), (1, "synchronous")]
)
def test_outcomes_in_input_order_with_error_rows(jobs, scheduler):
    if scheduler is not None:
        pytest.importorskip("dask")
    outs = run_batch(_square, _tasks([4, 3, 2, 0]), jobs, scheduler, catch=ImmunoprofileError)
    assert [o.index for o in outs] == [0, 1, 2, 3]
    assert [o.value for o in outs] == [16, None, 4, 0]
    bad = outs[1]
    assert not bad.ok and bad.error_type == "GatingError"
    # the message names the file (the exception's text did not)
    assert bad.message == "f3.fcs: no such thing as three"
    assert isinstance(bad.exception, GatingError)


def test_an_uncaught_exception_is_a_bug_and_propagates():
    with pytest.raises(KeyError):
        run_batch(_square, _tasks([1, 5]), catch=ImmunoprofileError)
    # caught as any Exception, it is an error row with where it happened
    outs = run_batch(_square, _tasks([1, 5]))
    assert outs[1].error_type == "KeyError"
    assert "(at test_batch.py:" in outs[1].message and outs[1].message.startswith("f5.fcs: ")


def test_on_done_hears_of_every_task_in_the_order_they_finish():
    heard = []
    outs = run_batch(_square, _tasks([2, 3, 4]), jobs=2, catch=ImmunoprofileError,
                     on_done=lambda o: heard.append((o.index, o.ok)))  # fmt: skip
    assert sorted(heard) == [(0, True), (1, False), (2, True)]
    assert [o.value for o in outs] == [4, None, 16]


def test_fail_fast_stops_serial_batch_at_the_first_error():
    outs = run_batch(_square, _tasks([2, 3, 4]), catch=ImmunoprofileError, fail_fast=True)
    assert [o.index for o in outs] == [0, 1]
    with pytest.raises(GatingError, match="three"):
        batch.raise_first(outs)


def test_batches_share_the_workers_of_a_local_pool():
    assert batch.local_pool(1) is None
    pool = batch.local_pool(2)
    try:
        first = run_batch(os.getpid, [Task(i, f"f{i}", f"f{i}") for i in range(6)], 2, pool=pool)
        outs = run_batch(_square, _tasks([4, 3, 2]), 2, catch=ImmunoprofileError, pool=pool)
        again = run_batch(os.getpid, [Task(i, f"f{i}", f"f{i}") for i in range(6)], 2, pool=pool)
    finally:
        pool.shutdown()
    assert [o.value for o in outs] == [16, None, 4] and outs[1].error_type == "GatingError"
    workers = {o.value for o in first} | {o.value for o in again}
    assert os.getpid() not in workers and len(workers) <= 2  # the same two processes


def test_a_dead_worker_is_an_error_row():
    outs = run_batch(_die, _tasks([0, 1]), jobs=2)
    assert outs[1].error_type == "WorkerDied" and "f1.fcs" in outs[1].message
    # the pool broke: the other file is either done or reported, never lost
    assert outs[0].ok or outs[0].error_type == "WorkerDied"


def test_inputs_are_checked_and_named():
    with pytest.raises(TypeError, match="input 1 is a int"):
        batch.as_inputs(["a.fcs", 3], "cluster")
    files, names = batch.input_names(["d/P01_baseline.fcs", "e/P01_baseline.fcs", "x.fcs"])
    assert files == ["d/P01_baseline.fcs", "e/P01_baseline.fcs", "x.fcs"]
    assert len(set(names)) == 3 and names[2] == "x"
    with pytest.raises(ValueError, match="jobs must be a whole number"):
        batch.check_jobs(0, "cluster")


# --- cluster on the batch runner ------------------------------------------------------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> list[str]:
    from immunoprofile.simulate import simulate_cohort

    d = tmp_path_factory.mktemp("batch_cohort")
    simulate_cohort(d, patients=3, visits=("baseline", "week24"), events=3000, seed=11)
    files = sorted(str(p) for p in d.glob("*.fcs"))
    bad = d / "P09_baseline.fcs"  # a truncated copy: unreadable
    bad.write_bytes(Path(files[0]).read_bytes()[:5000])
    return [files[0], str(bad), *files[1:]]


SMALL = dict(grid=(5, 5), n_metaclusters=6, n_resamples=10, seed=4, template="immune_profile",
             parent="live", on_error="skip")  # fmt: skip


def test_cluster_jobs_2_gives_the_same_table_as_jobs_1(cohort):
    one = cluster(cohort, **SMALL)
    two = cluster(cohort, jobs=2, **SMALL)
    pd.testing.assert_frame_equal(one.table(), two.table(), check_exact=True)
    pd.testing.assert_frame_equal(one.errors, two.errors)
    # the bad file is an error row naming it; the six others are clustered
    assert one.errors["file"].tolist() == [cohort[1]]
    assert one.errors["error_type"].iloc[0] == "TruncatedFCSError"
    assert one.samples == [Path(f).stem for f in cohort]
    assert one.clustered_samples == [Path(f).stem for f in cohort if f != cohort[1]]
    assert len(one.table()["sample"].unique()) == 6


def test_cluster_on_dask_threads_gives_the_same_table(cohort):
    pytest.importorskip("dask")
    one = cluster(cohort[2:], **SMALL)
    threads = cluster(cohort[2:], scheduler="threads", jobs=2, **SMALL)
    pd.testing.assert_frame_equal(one.table(), threads.table(), check_exact=True)


def test_cluster_raises_the_first_bad_file_with_on_error_raise(cohort):
    with pytest.raises(FCSError, match="P09_baseline"):
        cluster(cohort, jobs=2, **{**SMALL, "on_error": "raise"})


def test_cli_cluster_jobs_2_writes_the_same_table_as_jobs_1(cohort, tmp_path):
    args = ["cluster", *cohort[2:], "--grid", "5x5", "--metaclusters", "6", "--no-plots",
            "--parent", "live", "--seed", "4"]  # fmt: skip
    for jobs in ("1", "2"):
        r = CliRunner().invoke(main, [*args, "--jobs", jobs, "-o", str(tmp_path / jobs)])
        assert r.exit_code == 0, r.output
    for name in ("populations.csv", "metaclusters.csv", "metacluster_counts.csv"):
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes()


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_gate_on_dask_local_schedulers_gives_the_serial_results(cohort, scheduler):
    pytest.importorskip("dask")
    from immunoprofile.exceptions import IdentityClashWarning
    from immunoprofile.gating.run import gate

    files = cohort[:3]  # the bad file is the second
    with pytest.warns(IdentityClashWarning, match="2 files share an identity") as caught:
        one = gate(files, "tregs")
        other = gate(files, "tregs", scheduler=scheduler, jobs=2)
    # announced where gate was called, whatever ran the files
    assert {Path(w.filename).name for w in caught} == {"test_batch.py"}
    pd.testing.assert_frame_equal(one.table(), other.table(), check_exact=True)
    pd.testing.assert_frame_equal(pd.DataFrame(one.errors), pd.DataFrame(other.errors))
    # the truncated copy fails, and its TEXT still claims P01_baseline's identity
    err = other.errors
    assert err.loc[err["error_type"] != "IdentityClashError", "file"].tolist() == [cohort[1]]
    assert sorted(err.loc[err["error_type"] == "IdentityClashError", "file"]) == sorted(cohort[:2])
    assert one.samples == other.samples == [Path(f).stem for f in files]


# --- the progress bar's word for each file ----------------------------------------------------


class _Bar:
    """Stands in for the rich bar: records the text shown after each file."""

    def __init__(self, shown: list[str]) -> None:
        self.shown = shown

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None: ...

    def update(self, task, advance=1, last="") -> None:  # noqa: ANN001
        self.shown.append(last)


@pytest.fixture
def shown(monkeypatch) -> list[str]:
    from immunoprofile import progress

    texts: list[str] = []
    monkeypatch.setattr(progress, "file_bar", lambda label, total: (_Bar(texts), 0))
    return texts


def _returns_its_error(x: int) -> object:
    return GatingError("three") if x == 3 else x


def test_bar_marks_work_that_returns_its_error_failed(shown):
    outs = run_batch(_returns_its_error, _tasks([1, 3]), jobs=2, progress=True)
    assert [o.ok for o in outs] == [True, True]  # the work went on past the bad file
    assert sorted(shown) == ["f1: ok", "f3: FAILED (GatingError)"]
    assert [batch.failure_of(o) for o in outs] == [None, "GatingError"]


@pytest.mark.parametrize("jobs", [1, 2])
def test_cluster_bar_marks_the_bad_file_failed(cohort, shown, jobs):
    cluster(cohort[:3], jobs=jobs, progress=True, **SMALL)
    # reading (the truncated copy fails), then the two others' later passes: in processes
    # each pass has its bar (mapping the events, resolving populations, naming events)
    assert [s for s in shown if s.startswith("P09")] == ["P09_baseline: FAILED (TruncatedFCSError)"]
    assert all(s.endswith(": ok") for s in shown if not s.startswith("P09"))
    assert shown.count("P01_week24: ok") == (1 if jobs == 1 else 4)


@pytest.mark.parametrize("jobs", [1, 2])
def test_gate_bar_marks_the_bad_file_failed(cohort, shown, jobs):
    from immunoprofile.gating.run import gate

    with pytest.warns(Warning):  # the truncated copy claims P01_baseline's identity
        gate(cohort[:3], "tregs", jobs=jobs, progress=True)
    assert sorted(shown) == sorted(
        ["P01_baseline: ok", "P09_baseline: FAILED (TruncatedFCSError)", "P01_week24: ok"]
    )


# --- a Dask cluster of other machines: absolute paths ------------------------------------------


def test_gate_sends_absolute_paths_to_a_dask_cluster(cohort, tmp_path, monkeypatch):
    """A worker on another machine has a working folder of its own: `gate` resolves the
    files, the plots folder and a spillover file before sending them."""
    distributed = pytest.importorskip("dask.distributed")
    from immunoprofile.gating.run import gate

    good = cohort[2:4]
    serial = gate(good, "tregs")
    monkeypatch.chdir(Path(good[0]).parent)
    relative = [Path(f).name for f in good]
    elsewhere = tmp_path / "worker_folder"
    elsewhere.mkdir()
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc, distributed.Client(lc) as client:  # fmt: skip
        client.run(os.chdir, str(elsewhere))  # the worker now sits in another folder
        assert list(client.run(os.getcwd).values()) == [str(elsewhere)]
        remote = gate(relative, "tregs", scheduler=client, plots_dir="plots")
    assert remote.errors.empty, remote.errors["message"].tolist()
    pd.testing.assert_frame_equal(
        serial.table().drop(columns=["sample"]), remote.table().drop(columns=["sample"])
    )
    # the figures went to ./plots of the caller, not of the worker
    made = sorted(p.parent.name for p in Path("plots").glob("*/*.png"))
    assert set(made) == {Path(f).stem for f in good} and not (elsewhere / "plots").exists()


def test_gate_sends_absolute_paths_to_dask_only(cohort, monkeypatch):
    from immunoprofile.gating import run

    sent: list[tuple] = []

    class Sent(Exception):
        pass

    def record(work, tasks, *a, **k):  # noqa: ANN001
        sent.extend(t.args for t in tasks)
        raise Sent

    monkeypatch.setattr(run, "run_batch", record)
    monkeypatch.chdir(Path(cohort[2]).parent)
    name = Path(cohort[2]).name
    with pytest.raises(Sent):
        run.gate([name], "tregs", scheduler="tcp://127.0.0.1:1", plots_dir="p")
    with pytest.raises(Sent):
        run.gate([name], "tregs", plots_dir="p")
    (_, dask_item, dask_file, *_rest), (_, local_item, local_file, *_) = sent
    assert dask_item == cohort[2] and dask_file == name  # rows keep the path as given
    assert sent[0][5] == str(Path("p").resolve()) and sent[1][5] == "p"
    assert local_item == name


def _lookup(table: dict, names: list, x: int) -> str:
    return f"{names[x]}={table[names[x]]}"


def test_shared_list_and_dict_arguments_on_a_dask_cluster_batch_after_batch():
    """Arguments every task shares go to the workers once, each as one value under a key of
    its own: a list or dict shared by consecutive batches (the passes of `cluster`) reaches
    every task whole (it was scattered item by item, keyed by its content, and a second
    batch lost it: "lost dependencies")."""
    distributed = pytest.importorskip("dask.distributed")
    table, names = {"T": 1, "CD4": 2, "Treg": 3}, ["T", "CD4", "Treg"]
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc, distributed.Client(lc) as client:  # fmt: skip
        for _ in range(4):
            tasks = [Task(i, f"f{i}", f"f{i}", (table, names, i % 3)) for i in range(6)]
            outs = run_batch(_lookup, tasks, scheduler=client)
            assert [o.value for o in outs] == ["T=1", "CD4=2", "Treg=3"] * 2
