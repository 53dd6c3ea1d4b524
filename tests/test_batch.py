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
