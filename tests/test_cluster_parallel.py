"""`cluster` with its per-file passes in worker processes, in a scratch folder and on a Dask
`LocalCluster`: the same result as the serial run, down to every table it writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.clustering import api
from immunoprofile.clustering.api import cluster
from immunoprofile.clustering.passes import chunk_bounds, load_events, run_pass, store_events
from immunoprofile.gating import run
from immunoprofile.io.write import write_fcs
from immunoprofile.simulate.cohort import simulate_sample

SEEDS = [int(s) % 10_000 for s in np.random.SeedSequence(1616).generate_state(4)]
KW = {"template": "tregs", "parent": "live", "grid": (5, 5), "n_metaclusters": 6,
      "n_resamples": 10, "subsample_per_sample": 3_000, "seed": 7}  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cohort")
    out = []
    for k, (p, v) in enumerate([("P1", "baseline"), ("P1", "week24"), ("P2", "baseline")]):
        s, _ = simulate_sample(events=6_000, seed=SEEDS[k], name=f"{p}_{v}")
        path = d / f"{p}_{v}.fcs"
        write_fcs(s, path)
        out.append(str(path))
    bad = d / "P2_week24.fcs"
    bad.write_bytes(b"not an FCS file" * 20)
    return [*out, str(bad)]


@pytest.fixture(scope="module")
def serial(files):
    return cluster(files, on_error="skip", **KW)


def _same(a, b) -> None:
    pd.testing.assert_frame_equal(a.table(), b.table())
    pd.testing.assert_frame_equal(a.metaclusters(), b.metaclusters())
    pd.testing.assert_frame_equal(a.errors, b.errors)
    for x, y in zip(a.nodes, b.nodes):
        assert np.array_equal(x, y)
    assert np.array_equal(a.train_events, b.train_events)
    assert np.array_equal(a.som.cluster_centers_, b.som.cluster_centers_)


def test_two_processes_give_the_serial_result(files, serial, tmp_path):
    assert serial.clustered_samples == ["P1_baseline", "P1_week24", "P2_baseline"]
    assert list(serial.errors["file"]) == [files[3]]
    par = cluster(files, on_error="skip", jobs=2, scratch=tmp_path / "scratch", **KW)
    _same(serial, par)
    # every event of every file was mapped: one node per event of the pre-gate
    for i, nd in enumerate(par.nodes):
        assert nd.shape == (par.rows[i].size,) and par.rows[i].size > 3_000
    assert list((tmp_path / "scratch").iterdir()) == []  # the files' events removed


def test_a_bad_file_still_raises_in_parallel(files):
    from immunoprofile.exceptions import FCSError

    with pytest.raises(FCSError):
        cluster(files, jobs=2, **KW)


def test_events_between_passes_round_trip(tmp_path):
    X = np.random.default_rng(SEEDS[0]).normal(size=(1_000, 3)).astype(np.float32)
    assert store_events(X, None, "a") is X
    path = store_events(X, tmp_path, "a")
    got = load_events(path)
    assert isinstance(got, np.memmap) and np.array_equal(got, X)
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]
    assert run_pass(divmod, [(7, 2), (9, 4)], jobs=2) == [(3, 1), (2, 1)]


def test_chunk_bounds_split_the_total_evenly():
    assert chunk_bounds([1] * 10, 3) == [(0, 4), (4, 7), (7, 10)]
    # by size: the large first file is a run of its own
    assert chunk_bounds([5, 1, 1, 1, 1, 1], 2) == [(0, 1), (1, 6)]
    # never an empty run, never more runs than items; one run per item at most
    assert chunk_bounds([1, 1, 1, 1, 1, 100], 3) == [(0, 4), (4, 5), (5, 6)]
    assert chunk_bounds([1, 1, 1], 8) == [(0, 1), (1, 2), (2, 3)]
    assert chunk_bounds([3, 3], 1) == [(0, 2)]
    assert chunk_bounds([], 4) == []


def test_run_pass_in_chunks_gives_every_task_its_result(monkeypatch):
    from immunoprofile import progress

    shown: list[str] = []

    class Bar:
        def start(self): ...
        def stop(self): ...
        def update(self, task, advance=1, last=""):  # noqa: ANN001
            shown.append(last)

    monkeypatch.setattr(progress, "file_bar", lambda label, total: (Bar(), 0))
    tasks = [(n, 3) for n in range(10, 20)]
    done: list[tuple[int, tuple]] = []
    got = run_pass(divmod, tasks, jobs=2, chunks=3, sizes=[1] * 10, progress=True,
                   names=[f"f{k}" for k in range(10)], on_done=lambda i, r: done.append((i, r)))  # fmt: skip
    assert got == [divmod(n, 3) for n in range(10, 20)]
    # told of every task once, with its own result; the bar names every task
    assert sorted(done) == [(k, divmod(10 + k, 3)) for k in range(10)]
    assert sorted(shown) == sorted(f"f{k}: ok" for k in range(10))
    # serially the chunks do not matter
    assert run_pass(divmod, tasks, jobs=1, chunks=3) == got


def test_passes_after_the_map_go_in_runs_to_local_workers_only():
    assert api._pass_chunks(2, None) == 2 * api.CHUNKS_PER_WORKER
    assert api._pass_chunks(3, "processes") == 3 * api.CHUNKS_PER_WORKER
    assert api._pass_chunks(1, None) is None
    assert api._pass_chunks(2, "synchronous") is None
    assert api._pass_chunks(2, "tcp://127.0.0.1:8786") is None


def test_dask_local_cluster_gate_and_cluster(files, serial, tmp_path):
    """Both verbs on a 2-worker LocalCluster (processes): the serial tables."""
    distributed = pytest.importorskip("dask.distributed")
    good = files[:3]
    gated = run.gate(good, "tregs")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as lc:
        remote_gate = run.gate(good, "tregs", scheduler=lc.scheduler_address)
        remote = cluster(
            files, on_error="skip", scheduler=lc.scheduler_address, scratch=tmp_path, **KW
        )
    pd.testing.assert_frame_equal(gated.table(), remote_gate.table())
    _same(serial, remote)


def test_cluster_cli_jobs_two_writes_the_same_tables(files, tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    outs = []
    for jobs in ("1", "2"):
        out = tmp_path / f"j{jobs}"
        args = ["cluster", *files[:3], "--out", str(out), "--template", "tregs", "--parent",
                "live", "--grid", "5x5", "--metaclusters", "6", "--seed", "7", "--jobs", jobs]  # fmt: skip
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
        outs.append(out)
    for name in ("populations.csv", "metaclusters.csv", "metacluster_counts.csv"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    assert Path(outs[0] / "populations.csv").stat().st_size > 500


def test_prepare_pass_returns_the_error_of_a_bad_file(files):
    got = api._prepare_pass(3, files[3], "bad", None, None, None, 0, [], None)
    assert "P2_week24.fcs" in str(got) and isinstance(got, Exception)


def test_resolution_pass_counts_every_event_of_the_file(files, serial):
    """Pass 3 evaluates each event's own gate only inside its parent's clusters; its counts
    are those of every event of the file (gate or rule, and the parent by cluster)."""
    from immunoprofile.clustering.naming import DEFAULT_RULES, own_gate
    from immunoprofile.gating.template import load_template

    tpl = load_template("tregs")
    base_of = api._gate_bases(tpl, DEFAULT_RULES)
    gate_pops = list(dict.fromkeys([*base_of, *(b for b in base_of.values() if b)]))
    prep, _ = api._prepare_pass(0, files[0], "P1_baseline", serial.markers, tpl, "live",
                                KW["seed"], gate_pops, None)  # fmt: skip
    assert np.array_equal(prep.rows, serial.rows[0])
    naming, nodes, member = serial.naming, serial.nodes[0], serial.sample_members[0]
    cl = serial._cluster_of_node[nodes]
    pops = [p for p, par in naming.parents.items() if par is not None]
    got, gated = api._resolution_pass(
        prep.light(), nodes, serial._cluster_of_node, naming, member, base_of, pops
    )
    gate_in, gate_known = api._event_gates(prep, base_of, pops)
    assert gated == set(gate_in) and {"CD4", "Treg", "Treg_naive"} <= gated
    X = prep.events()
    for pop in pops:
        a = member[pop].to_numpy()[cl]
        b = own_gate(naming, X, pop, gate_in, gate_known)
        b &= member[naming.parents[pop]].to_numpy()[cl]
        want = (int((a & b).sum()), int(a.sum()), int(b.sum()))
        assert got[pop] == want, pop
    assert got["CD4"][1] > 1_000 and got["Treg"][2] > 0


def test_markers_of_the_first_usable_file_hold_for_all(files, tmp_path):
    """Without markers, every file is read at once choosing its own; the first usable
    file's choice holds for the cohort: a file whose channels come in another order goes
    again with it. The same result as when those markers are given."""
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.sample import Sample

    s = read_fcs(files[1])
    perm = np.r_[np.arange(s.events.shape[1])[::-1]]
    swapped = tmp_path / "P1_week24_swapped.fcs"
    write_fcs(
        Sample(np.ascontiguousarray(s.events[:, perm]), s.channels.iloc[perm].reset_index(drop=True),
               {k: v for k, v in s.keywords.items() if not k.startswith("$P")}, name=s.name),
        swapped,
    )  # fmt: skip
    cohort = [files[3], files[0], str(swapped), files[2]]  # the first file cannot be read
    chosen = api.default_markers(read_fcs(files[0]))
    assert api.default_markers(read_fcs(swapped)) != chosen
    given = cluster(cohort, markers=chosen, on_error="skip", **KW)
    for jobs in (1, 2):
        got = cluster(cohort, on_error="skip", jobs=jobs, **KW)
        assert got.markers == chosen
        _same(given, got)
    assert given.clustered_samples == ["P1_baseline", "P1_week24_swapped", "P2_baseline"]
