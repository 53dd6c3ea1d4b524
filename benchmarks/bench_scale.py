"""Cohort scale: gate and cluster on 1 and 2 processes and on a 2-worker Dask cluster, and
one file of 10 million events.

Part 1, the cohort: ``--files`` simulated FCS files (default 100, 25 channels, ``--events``
each) are gated with the ``tregs`` template and clustered (``cluster``: pre-gated on
``live``, a 10x10 map trained on 2,000 events per file, every event of every file mapped)
three ways, each in a fresh process: serially (``jobs=1``), on 2 worker processes
(``jobs=2``) and on a ``dask.distributed.LocalCluster`` of 2 single-threaded worker
processes. Reported per run: wall time, events per second per core (all events of the
cohort / wall time / cores used), the speed-up over the serial run, the peak resident
memory of the calling process and the largest peak of a worker (``ru_maxrss``: of the pool's
processes after they exit; of each Dask worker, asked after the run). The tables of the
parallel runs are compared with the serial one (they must be identical).

Part 2, one large file: a 1M-event and a 10M-event file (25 channels; 10M x 25 float32 is
1 GB) are written to the temporary folder, gated by ``gate`` (which compensates and
transforms a file it reads in place) in a fresh process each, and deleted. Reported: time,
CPU time, and the peak resident memory during the gating minus the process's size before it
(Linux ``clear_refs``/``VmHWM``), as a multiple of the float32 event matrix. Targets:
peak <= 2.5x the matrix, 10M time <= 11x the 1M time.

Every process runs with one BLAS thread. The machine may be shared: the load average before
and after is printed and written into the report, with the speed-up of 2 processes over one
per verb (wall clock; on a loaded machine it is said to be so). Run once, with ``nice``:
``nice python benchmarks/bench_scale.py [--files 100] [--events 50000] [--big 10000000]
[--out docs/scale.md]``. A full run writes the whole report; a partial one (``--verbs
cluster``, ``--no-big``, ``--no-dask``) replaces only its own section of it, e.g.
``python benchmarks/bench_scale.py --verbs cluster --no-big`` for `cluster` on 1 and 2
processes and Dask with its CPU time per phase.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SINGLE_THREAD = {
    k: "1"
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
}
CLUSTER_KW = {"template": "tregs", "parent": "live", "grid": (10, 10), "n_metaclusters": 12,
              "subsample_per_sample": 2_000, "n_resamples": 20, "seed": 0,
              "on_error": "skip"}  # fmt: skip


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1]) / 1024.0
    return float("nan")


def _maxrss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # kB on Linux


def _worker_peak_mb() -> float:
    return _maxrss_mb()


def _cpu_s(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


# --- part 1: the cohort -------------------------------------------------------------------

#: the per-file passes of `cluster` (`immunoprofile.clustering.passes`), by function
PASSES = {
    "_prepare_pass": "pass 1: read, prepare, pre-gate",
    "_map_pass": "pass 2: map every event",
    "_resolution_pass": "pass 3: resolution counts",
    "_event_bits_pass": "pass 4: populations named per event",
}


#: the row of the worker processes' CPU outside the passes' per-file work
POOL = "worker processes: start, tasks in and out, exit"


def _record_phases(api: Any, log: Path) -> list[dict[str, Any]]:
    """Record the CPU time of each phase of the `cluster` runs that follow: per phase the
    calling process's CPU (all its threads) and the wall time. The per-file passes are the
    parallel phases; the steps between them run in the caller. Every file's work in a
    pass also appends its process's CPU time to ``log`` (from whichever process ran it:
    the pool's workers, forked from this one, run the recording functions too), so that
    `_worker_phases` can tell the passes' CPU in the workers, whose processes live
    through all the passes."""
    rec: list[dict[str, Any]] = []

    def timed(name: Any, fn: Any) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            c0, t0 = _cpu_s(), time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                rec.append({"phase": name(a) if callable(name) else name,
                            "caller": _cpu_s() - c0, "workers": 0.0,
                            "wall": time.perf_counter() - t0})  # fmt: skip

        return wrapper

    def per_file(fn: Any) -> Any:
        def wrapper(*a: Any) -> Any:
            c0 = _cpu_s()
            try:
                return fn(*a)
            finally:
                with open(log, "a") as fh:
                    fh.write(f"{fn.__name__} {os.getpid()} {_cpu_s() - c0!r}\n")

        # pickled by name: a worker finds this wrapper where the function was
        wrapper.__module__, wrapper.__qualname__ = fn.__module__, fn.__qualname__
        wrapper.__name__ = fn.__name__
        return wrapper

    for name in PASSES:
        setattr(api, name, per_file(getattr(api, name)))
    api.run_pass = timed(lambda a: PASSES.get(a[0].__name__, a[0].__name__), api.run_pass)
    api.SOM.fit = timed("SOM training", api.SOM.fit)
    api.ConsensusMetaclustering.fit = timed("consensus metaclustering",
                                            api.ConsensusMetaclustering.fit)  # fmt: skip
    api._group_medians = timed("cluster medians", api._group_medians)
    api.name_clusters = timed("naming clusters", api.name_clusters)
    api.sample_membership = timed("per-sample membership", api.sample_membership)
    return rec


def _worker_phases(phases: list[dict[str, Any]], log: Path, children_cpu: float) -> None:
    """Each pass's CPU in the worker processes (its files' work there, from ``log``), and
    a row `POOL` for the rest of the workers' CPU (``children_cpu``, all of it)."""
    per_pass: dict[str, float] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            name, pid, cpu = line.split()
            if int(pid) != os.getpid():
                per_pass[PASSES[name]] = per_pass.get(PASSES[name], 0.0) + float(cpu)
    for label, cpu in per_pass.items():
        row = next(p for p in phases if p["phase"] == label)  # each pass ran in the caller
        row["workers"] = cpu
    if children_cpu > 0:
        phases.append({"phase": POOL, "caller": 0.0, "wall": 0.0,
                       "workers": children_cpu - sum(per_pass.values())})  # fmt: skip


def cohort_worker(verb: str, mode: str, folder: str) -> dict[str, Any]:
    """One run of ``verb`` (gate|cluster) on the cohort in ``folder``, ``mode`` serial|
    processes|dask; in a fresh process."""
    import immunoprofile as ip

    files = sorted(str(p) for p in Path(folder).glob("*.fcs"))
    jobs = 2 if mode == "processes" else 1
    lc = client = None
    scheduler = None
    if mode == "dask":
        from dask.distributed import Client, LocalCluster

        lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(lc)
        client.run(lambda: __import__("immunoprofile.gating.engine"))  # imports not timed
        scheduler = client
        dask_cpu0 = sum(client.run(_cpu_s).values())
    s0, h0, t0 = _cpu_s(), _cpu_s(resource.RUSAGE_CHILDREN), time.perf_counter()
    c0 = s0 + h0
    phases: list[dict[str, Any]] = []
    log = Path(folder) / f"passes_{mode}.log"
    log.unlink(missing_ok=True)
    if verb == "gate":
        res = ip.gate(files, "tregs", jobs=jobs, scheduler=scheduler)
        table = res.table()
    else:
        from immunoprofile.clustering import api  # what ``ip.cluster`` imports: timed

        imported = _cpu_s() - c0, time.perf_counter() - t0
        phases = _record_phases(api, log)
        phases.append({"phase": "import", "caller": imported[0], "workers": 0.0,
                       "wall": imported[1]})  # fmt: skip
        res = ip.cluster(files, jobs=jobs, scheduler=scheduler, **CLUSTER_KW)
        table = res.table()
    wall = time.perf_counter() - t0
    cpu = _cpu_s() + _cpu_s(resource.RUSAGE_CHILDREN) - c0  # pools have exited: counted
    if phases:
        caller = _cpu_s() - s0
        known = sum(p["caller"] for p in phases)
        phases.append({"phase": "other (caller)", "caller": caller - known, "workers": 0.0,
                       "wall": wall - sum(p["wall"] for p in phases)})  # fmt: skip
        _worker_phases(phases, log, _cpu_s(resource.RUSAGE_CHILDREN) - h0)
    workers = []
    if client is not None:
        cpu += sum(client.run(_cpu_s).values()) - dask_cpu0
        workers = list(client.run(_worker_peak_mb).values())
        client.close()
        lc.close()
    elif jobs > 1:
        workers = [_maxrss_mb(resource.RUSAGE_CHILDREN)]
    out = Path(folder) / f"table_{verb}_{mode}.csv"
    table.to_csv(out, index=False)
    return {"wall": wall, "cpu": cpu, "caller_mb": _maxrss_mb(), "worker_mb": workers,
            "table": str(out), "phases": phases}  # fmt: skip


def _fresh(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, **SINGLE_THREAD, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True, env=env
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _file_events(folder: Path) -> int:
    from immunoprofile.io.fcs import read_fcs_header

    return sum(read_fcs_header(p).n_events for p in folder.glob("*.fcs"))


def _markdown(rows: list[dict[str, Any]], formats: dict[str, str]) -> str:
    """A Markdown table of ``rows`` (dicts with the same keys), numbers per ``formats``."""
    head = list(rows[0])
    cells = [[format(r[k], formats.get(k, "")) for k in head] for r in rows]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---:" for _ in head) + "|"]
    out += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(out)


# --- part 2: one large file ---------------------------------------------------------------


def big_worker(path: str) -> dict[str, Any]:
    """Gate one file with ``gate`` (as the command line does), measuring from a warm start."""
    import immunoprofile as ip
    from immunoprofile.io.fcs import read_fcs_header

    warm = Path(path).with_name("warm.fcs")
    ip.gate([str(warm)], "tregs")  # imports and first-call costs, not timed
    meta = read_fcs_header(path)
    n, p = meta.n_events, meta.n_channels
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    base = _status_mb("VmRSS")
    c0, t0 = time.process_time(), time.perf_counter()
    res = ip.gate([path], "tregs")
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status_mb("VmHWM") - base
    if len(res.errors()):
        raise SystemExit(res.errors().to_string())
    matrix = n * p * 4 / 2**20
    counts = res.table().set_index("population")["count"].to_dict()
    return {"events": n, "channels": p, "wall": wall, "cpu": cpu, "peak_mb": peak,
            "matrix_mb": matrix, "counts": counts}  # fmt: skip


def _write_file(path: Path, events: int, seed: int) -> None:
    import immunoprofile as ip
    from immunoprofile.simulate.cohort import simulate_sample

    s, _ = simulate_sample(events=events, seed=seed, name=path.stem)
    ip.write_fcs(s, path)


# --- CPU per phase of `cluster` ------------------------------------------------------------


def _phase_totals(phases: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for p in phases:
        t = out.setdefault(p["phase"], {"caller": 0.0, "workers": 0.0, "wall": 0.0})
        for k in ("caller", "workers", "wall"):
            t[k] += p[k]
    return out


def _phase_section(serial: list[dict[str, Any]], two: list[dict[str, Any]]) -> list[str]:
    """The `cluster` runs' CPU per phase, and the speed-up 2 processes could reach if the
    per-file passes halved and everything else stayed (Amdahl)."""
    a, b = _phase_totals(serial), _phase_totals(two)
    order = ["import", PASSES["_prepare_pass"], "SOM training", "consensus metaclustering",
             PASSES["_map_pass"], "cluster medians", "naming clusters",
             "per-sample membership", PASSES["_resolution_pass"],
             PASSES["_event_bits_pass"], "other (caller)", POOL]  # fmt: skip
    rows = []
    for ph in [*order, *(k for k in a if k not in order)]:
        x, y = a.get(ph), b.get(ph)
        if x is None and y is None:
            continue
        x = x or {"caller": 0.0, "workers": 0.0, "wall": 0.0}
        y = y or {"caller": 0.0, "workers": 0.0, "wall": 0.0}
        where = "workers" if ph in PASSES.values() or ph == POOL else "caller"
        rows.append({"phase": ph, "in": where,
                     "serial cpu s": x["caller"], "serial wall s": x["wall"],
                     "2 proc. caller cpu s": y["caller"], "2 proc. workers cpu s": y["workers"],
                     "2 proc. wall s": y["wall"]})  # fmt: skip
    par = sum(r["serial cpu s"] for r in rows if r["in"] == "workers")
    total = sum(r["serial cpu s"] for r in rows)
    bound = total / (total - par + par / 2)
    imp = sum(r["serial cpu s"] for r in rows if r["phase"] == "import")
    bound_no_import = (total - imp) / (total - imp - par + par / 2)
    # what an idle machine's 2-process wall time comes to by CPU times: the caller's steps
    # between the passes one after the other, the passes' CPU (workers and caller) on 2
    # cores, the pool's own CPU included
    steps = sum(r["2 proc. caller cpu s"] for r in rows if r["in"] == "caller")
    shared = sum(r["2 proc. caller cpu s"] + r["2 proc. workers cpu s"] for r in rows
                 if r["in"] == "workers")  # fmt: skip
    by_cpu = total / (steps + shared / 2)
    fmt = {k: ".2f" for k in rows[0] if k not in ("phase", "in")}
    return [
        "### `cluster`: CPU time per phase",
        "",
        "From the two `cluster` runs above: per phase, the calling process's CPU time (all "
        "its threads) and its worker processes' (2 processes: each pass's per-file work "
        "there, and in a row of its own what else the workers used), and the wall time. The "
        "per-file passes run in the workers; the rest runs in the caller between them.",
        "",
        _markdown(rows, fmt),
        "",
        f"Serially the per-file passes are {par:.1f} of {total:.1f} CPU seconds "
        f"({100 * par / total:.0f} %); if they halved on 2 processes and the rest stayed, "
        f"the speed-up would be {bound:.2f}x (Amdahl's bound for this split; "
        f"{bound_no_import:.2f}x without the import). From the CPU times of the 2-process "
        f"run (the caller's steps one after the other, {steps:.2f} s, and the passes' CPU in "
        f"the workers and the caller, {shared:.2f} s, on 2 cores) an idle machine would give "
        f"{by_cpu:.2f}x.",
        "",
    ]


# --- the report -------------------------------------------------------------------------------

#: the cores' worth of CPU other work may use during the serial and 2-process runs of a
#: verb for the machine to count as idle
IDLE_OTHERS = 0.15


def _machine_busy(since: tuple[float, float, float] | None = None) -> Any:
    """CPU seconds all processes of the machine used (``/proc/stat``), this process's and
    its children's (the runs, their workers), and the time: a snapshot; given an earlier
    one, the cores' worth of CPU that other work used in between."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    machine = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    now = (machine, _cpu_s() + _cpu_s(resource.RUSAGE_CHILDREN), time.perf_counter())
    if since is None:
        return now
    other = (now[0] - since[0]) - (now[1] - since[1])
    return max(other, 0.0) / max(now[2] - since[2], 1e-9)


def _command(args: argparse.Namespace) -> str:
    """The options of this run, as typed to repeat it."""
    out = f"--files {args.files} --events {args.events}"
    out += " --no-big" if args.no_big else f" --big {args.big}"
    out += " --no-dask" if args.no_dask else ""
    if set(args.verbs) != {"gate", "cluster"}:
        out += " --verbs " + " ".join(args.verbs)
    return out


def _speedups(rows: list[dict[str, Any]], load_before: str, others: dict[str, float]) -> list[str]:
    """One line per verb: the wall-clock speed-up of 2 processes over one, against the
    target, with the load around the runs and the CPU other work used meanwhile (the load
    average after counts this benchmark's own processes; the speed-up means little when
    other work ran)."""
    after = _load()
    out = []
    for r in rows:
        if r["run"] == "2 processes":
            other = others.get(r["verb"], float("nan"))
            out.append(
                f"- `{r['verb']}`: 2 processes {r['speed-up']:.2f}x one process, wall clock "
                f"(target 1.7x); load average (1/5/15 min) before {load_before}, after "
                f"{after}; other work used {other:.2f} cores on average during its serial "
                "and 2-process runs: "
                + ("an idle machine." if other < IDLE_OTHERS else
                   "**a loaded machine**: other work shared the 2 cores, so this speed-up is "
                   "not that of an idle machine; the CPU times per phase still hold.")
            )  # fmt: skip
    return out


def _write(args: argparse.Namespace, lines: list[str]) -> None:
    """The whole report for a full run; a partial run (``--no-big``, ``--no-dask`` or one
    verb) replaces only its own section of ``--out`` (between markers naming its options;
    appended the first time), so the rest of the report stays."""
    out = Path(args.out)
    full = not (args.no_big or args.no_dask) and set(args.verbs) == {"gate", "cluster"}
    if full or not out.exists():
        out.write_text("\n".join(lines))
        print(f"wrote {out}")
        return
    key = _command(args)
    start, end = f"<!-- bench_scale {key} -->", f"<!-- /bench_scale {key} -->"
    # the run's own headings one level under the section's
    body = [f"## Latest run of `bench_scale.py {key}`", ""]
    body += [("#" + x) if x.startswith("##") else x for x in lines[2:]]
    block = "\n".join([start, *body, end])
    text = out.read_text()
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    out.write_text(text)
    print(f"wrote the section {start} of {out}")


# --- main -----------------------------------------------------------------------------------


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=100)
    ap.add_argument("--events", type=int, default=50_000, help="events per cohort file")
    ap.add_argument("--big", type=int, default=10_000_000, help="events of the large file")
    ap.add_argument("--small", type=int, default=1_000_000, help="events of its reference")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(REPO / "docs" / "scale.md"))
    ap.add_argument("--no-dask", action="store_true", help="skip the LocalCluster runs")
    ap.add_argument("--no-big", action="store_true", help="skip the large file")
    ap.add_argument("--verbs", nargs="+", default=["gate", "cluster"],
                    choices=["gate", "cluster"], help="the verbs run on the cohort")  # fmt: skip
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        kind, *rest = args.worker
        got = cohort_worker(*rest) if kind == "cohort" else big_worker(*rest)
        print(json.dumps(got))
        return 0

    import pandas as pd

    import immunoprofile as ip

    load_before = _load()
    lines = [
        "# Scale: a cohort on 1 and 2 processes and on Dask, and one 10M-event file",
        "",
        f"Generated by `nice python benchmarks/bench_scale.py {_command(args)}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {platform.machine()} with "
        f"{os.cpu_count()} cores (Python {platform.python_version()}). Load average "
        f"(1/5/15 min) before: {load_before}.",
        "",
    ]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        folder = Path(tmp) / "cohort"
        patients = (args.files + 1) // 2
        ip.simulate_cohort(folder, patients=patients, events=args.events, seed=args.seed)
        extra = sorted(folder.glob("*.fcs"))[args.files :]
        for p in extra:  # an odd --files: one follow-up less
            p.unlink()
        total = _file_events(folder)
        n_files = len(list(folder.glob("*.fcs")))
        modes = ["serial", "processes"] + ([] if args.no_dask else ["dask"])
        phase_runs: dict[str, list[dict[str, Any]]] = {}
        others: dict[str, float] = {}  # cores other work used during a verb's two runs
        for verb in args.verbs:
            base = None
            for mode in modes:
                if mode == "serial":
                    busy0 = _machine_busy()
                r = _fresh(["--worker", "cohort", verb, mode, str(folder)])
                if mode == "processes":
                    others[verb] = _machine_busy(busy0)
                cores = 1 if mode == "serial" else 2
                same = None
                if base is None:
                    base = r
                else:
                    a = pd.read_csv(base["table"])
                    b = pd.read_csv(r["table"])
                    same = a.equals(b)
                rows.append(
                    {"verb": verb, "run": mode if mode == "serial" else f"2 {mode}",
                     "wall s": r["wall"], "events/s/core": total / r["wall"] / cores,
                     "cpu s": r["cpu"], "events/cpu-s": total / r["cpu"],
                     "speed-up": base["wall"] / r["wall"], "caller peak MB": r["caller_mb"],
                     "worker peak MB": max(r["worker_mb"] or [r["caller_mb"]]),
                     "same table": "reference" if same is None else ("yes" if same else "NO")}
                )  # fmt: skip
                print(rows[-1], flush=True)
                if r.get("phases") and mode in ("serial", "processes"):
                    phase_runs[mode] = r["phases"]
    text = _markdown(rows, {"wall s": ".1f", "events/s/core": ",.0f", "speed-up": ".2f",
                            "cpu s": ".1f", "events/cpu-s": ",.0f",
                            "caller peak MB": ".0f", "worker peak MB": ".0f"})  # fmt: skip
    print(text)
    lines += [
        f"## A cohort of {n_files} files ({total:,} events, 25 channels)",
        "",
        f"`gate` with the `tregs` template; `cluster` with `{CLUSTER_KW}`. Each run in a "
        "fresh process, one BLAS thread per process. events/s/core = all events / wall time "
        "/ cores used; cpu s: CPU time of the caller and its workers (Dask: the workers' "
        "processes; the scheduler and nannies not counted), events/cpu-s = all events / cpu s "
        "(what a core does when it is not shared). Worker peak: the largest peak resident memory of a worker process "
        "(the process pool's, or each Dask worker's); caller peak: the calling process.",
        "",
        text,
        "",
    ]
    if len(phase_runs) == 2:
        lines += _phase_section(phase_runs["serial"], phase_runs["processes"])
        print("\n".join(lines[-12:]))

    summary = _speedups(rows, load_before, others)
    print("\n".join(summary), flush=True)
    lines += [*summary, ""]
    if args.no_big:
        _write(args, lines)
        return 0
    big_rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_big_") as tmp:
        tmp = Path(tmp)
        _write_file(tmp / "warm.fcs", 20_000, args.seed + 1)
        for n in (args.small, args.big):
            path = tmp / f"big_{n}.fcs"
            _write_file(path, n, args.seed + 2)
            r = _fresh(["--worker", "big", str(path)])
            path.unlink()
            big_rows.append(r)
            print({k: v for k, v in r.items() if k != "counts"}, flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    small, big = big_rows
    btext = _markdown(
        [{"events": r["events"], "matrix MB": r["matrix_mb"], "wall s": r["wall"],
          "cpu s": r["cpu"], "peak MB": r["peak_mb"], "peak / matrix": r["peak_mb"] /
          r["matrix_mb"]} for r in big_rows],
        {"events": ",", "matrix MB": ".0f", "wall s": ".2f", "cpu s": ".2f", "peak MB": ".0f",
         "peak / matrix": ".2f"},
    )  # fmt: skip
    print(btext)
    ratio_wall = big["wall"] / small["wall"]
    ratio_cpu = big["cpu"] / small["cpu"]
    scale = big["events"] / small["events"]
    summary = (
        f"{big['events']:,} events vs {small['events']:,} ({scale:.0f}x the events): "
        f"{ratio_wall:.1f}x the wall time, {ratio_cpu:.1f}x the CPU time (target <= 11x); "
        f"peak memory {big['peak_mb'] / big['matrix_mb']:.2f}x the float32 event matrix "
        "(target <= 2.5x)."
    )
    print(summary)
    lines += [
        "## One large file",
        "",
        "`gate` (`tregs`) on one simulated file, each in a fresh process after a warm-up "
        "gating of a small file. Peak: the growth of the resident set during the gating "
        "(Linux VmHWM after clear_refs), which includes reading the file.",
        "",
        btext,
        "",
        summary,
        "",
        f"Load average after: {_load()}.",
        "",
    ]
    _write(args, lines)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
