"""FCS reading speed: immunoprofile against numpy.fromfile, flowio, fcsparser and flowkit.

Files (written once into a temporary folder):

* ``float32 LE``: 1,000,000 events x 14 channels, $DATATYPE F, little-endian, written by
  `immunoprofile.write_fcs`: the layout of modern cytometers;
* ``float32 BE``: the same events big-endian ($BYTEORD 4,3,2,1), as BD FACSDiva writes;
* ``int 16/32 mixed``: 14 integer channels alternating 16 and 32 bits, masked by $PnR
  (the layout that defeats a single-dtype read).

``numpy.fromfile`` reads only the DATA segment with the right dtype (the floor: what
any reader must at least do). Each reader runs in its own fresh process; the time is the
median of ``--repeat`` runs after one warm-up (file in the page cache), and peak memory is
the process's peak resident set size (VmHWM, reset after the warm-up) minus its size then;
``x fromfile`` compares medians. flowio is timed to an
array (``FlowData(...).as_array(preprocess=False)``), flowkit to ``Sample(path)`` (which
preprocesses), fcsparser to ``parse(path)`` in its own virtual environment when it
cannot be installed beside numpy 2 (``--fcsparser-python``; fcsparser >= 0.2.5 pins
numpy < 2).

Unless ``--quick``, a file whose DATA ends past byte 99,999,999 (2,000,000 x 14 float32,
HEADER offsets 0, $BEGINDATA/$ENDDATA in TEXT) is also written and read back, checking
that the values are identical.

Run: ``python benchmarks/bench_read.py [--quick] [--events N] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

FCSPARSER_VENV = Path("/work/venvs/fcsparser/bin/python")


def _status_mb(field: str) -> float:
    """A VmRSS/VmHWM figure of this process in MB (Linux /proc), or ru_maxrss elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> None:
    """Reset the process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


# --- files ----------------------------------------------------------------------------------


def _events(n: int, p: int = 14):
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.lognormal(6, 1.5, size=(n, p)).astype(np.float32)


def make_files(folder: Path, n: int) -> dict[str, Path]:
    """The three benchmark files; returns label -> path."""
    import numpy as np

    from immunoprofile.io.write import write_fcs
    from immunoprofile.sample import Sample, make_channel_table

    ev = _events(n)
    names = ["FSC-A", "FSC-H", "SSC-A"] + [f"FL{i}-A" for i in range(1, 11)] + ["Time"]
    s = Sample(ev, make_channel_table(names, ranges=[262144] * 14), {"$CYT": "bench"})
    out = {"float32 LE": write_fcs(s, folder / "f32le.fcs")}
    # big-endian copy: same TEXT but $BYTEORD 4,3,2,1 and swapped DATA
    raw = out["float32 LE"].read_bytes()
    d0, d1 = int(raw[26:34]), int(raw[34:42])
    text = raw[58:d0].replace(b"1,2,3,4", b"4,3,2,1")
    assert len(text) == d0 - 58
    be = folder / "f32be.fcs"
    be.write_bytes(raw[:58] + text + ev.astype(">f4").tobytes())
    assert d1 == len(raw) - 1
    out["float32 BE"] = be
    # mixed 16/32-bit integers, ranges that need masking
    bits = [16 if i % 2 == 0 else 32 for i in range(14)]
    fmt = [">u2" if b == 16 else ">u4" for b in bits]
    rec = np.empty(n, dtype=[(f"c{i}", f) for i, f in enumerate(fmt)])
    for i, f in enumerate(fmt):
        rec[f"c{i}"] = (ev[:, i] * 7).astype(np.uint64) % (2**16 if f == ">u2" else 2**32)
    kw = {
        "$BYTEORD": "4,3,2,1",
        "$DATATYPE": "I",
        "$MODE": "L",
        "$PAR": "14",
        "$TOT": str(n),
        "$NEXTDATA": "0",
    }
    for i, (name, b) in enumerate(zip(names, bits), start=1):
        kw.update(
            {
                f"$P{i}N": name,
                f"$P{i}B": str(b),
                f"$P{i}E": "0,0",
                f"$P{i}R": "65536" if b == 16 else "16777216",
            }
        )
    out["int 16/32 mixed"] = _write_raw(folder / "int_mixed.fcs", kw, rec.tobytes())
    return out


def _write_raw(path: Path, kw: dict[str, str], data: bytes) -> Path:
    """A plain FCS 3.1 file around ``data`` (offsets computed here, '/' delimiter)."""
    begin = 0
    for _ in range(5):
        kw["$BEGINDATA"], kw["$ENDDATA"] = str(begin), str(begin + len(data) - 1)
        text = ("/" + "".join(f"{k}/{v}/" for k, v in kw.items())).encode()
        if 58 + len(text) == begin:
            break
        begin = 58 + len(text)
    end = begin + len(data) - 1
    hdr = f"FCS3.1    {58:>8}{begin - 1:>8}{begin:>8}{end:>8}{0:>8}{0:>8}".encode()
    path.write_bytes(hdr + text + data)
    return path


# --- workers (one fresh process each) --------------------------------------------------------


def _worker(reader: str, path: str, repeat: int) -> dict:
    import numpy as np

    if reader == "immunoprofile":
        from immunoprofile.io.fcs import read_fcs

        def run():
            return read_fcs(path, scale=False).events

    elif reader == "numpy.fromfile":
        from immunoprofile.io.fcs import read_fcs_header

        meta = read_fcs_header(path)
        c = meta._chans
        order = ">" if meta.byte_order == ">" else "<"
        if len({ch.width for ch in c}) == 1:
            dt = np.dtype(f"{order}{'f' if c[0].kind == 'f' else 'u'}{c[0].width}")
            count = meta.n_events * meta.n_channels
        else:
            dt = np.dtype([(f"c{i}", f"{order}u{ch.width}") for i, ch in enumerate(c)])
            count = meta.n_events
        start = meta.data_offsets[0]

        def run():
            return np.fromfile(path, dtype=dt, count=count, offset=start)

    elif reader == "flowio":
        import flowio

        def run():
            return flowio.FlowData(path).as_array(preprocess=False)

    elif reader == "flowkit":
        import warnings

        warnings.simplefilter("ignore")
        import flowkit

        def run():
            return flowkit.Sample(path).get_events(source="raw")

    elif reader == "fcsparser":
        import fcsparser

        def run():
            return fcsparser.parse(path, reformat_meta=False)[1]

    else:
        raise SystemExit(f"unknown reader {reader}")
    run()  # warm-up: page cache, lazy imports
    base = _status_mb("VmRSS")
    _reset_peak()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - t)
        del out
    return {
        "seconds": statistics.median(times),
        "best": min(times),
        "peak_mb": _status_mb("VmHWM") - base,
    }


def _run_worker(python: str, reader: str, path: Path, repeat: int) -> dict | str:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [python, __file__, "--worker", reader, "--arg", str(path), "--repeat", str(repeat)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["failed"])[-1]
        return last[:70]
    return json.loads(res.stdout.strip().splitlines()[-1])


# --- main ------------------------------------------------------------------------------------


def _big_file_check(folder: Path) -> str:
    import numpy as np

    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.io.write import write_fcs
    from immunoprofile.sample import Sample, make_channel_table

    ev = _events(2_000_000)
    s = Sample(ev, make_channel_table([f"C{i}" for i in range(14)]), {})
    p = write_fcs(s, folder / "big.fcs")
    hdr = p.read_bytes()[:58] if p.stat().st_size < 2**20 else open(p, "rb").read(58)
    t = time.perf_counter()
    back = read_fcs(p)
    dt = time.perf_counter() - t
    same = np.array_equal(back.events, ev)
    return (
        f"{p.stat().st_size:,} B file, HEADER DATA offsets {hdr[26:42].split()}, "
        f"read in {dt * 1000:.0f} ms, identical: {same}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 events, 3 repeats")
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--readers", default="numpy.fromfile,immunoprofile,flowio,fcsparser,flowkit")
    ap.add_argument("--fcsparser-python", default=str(FCSPARSER_VENV))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--arg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.arg, args.repeat)))
        return
    n, repeat = (100_000, 3) if args.quick else (args.events, args.repeat)
    folder = Path(tempfile.mkdtemp(prefix="bench_read_"))
    try:
        files = make_files(folder, n)
        readers = args.readers.split(",")
        print(
            f"FCS read benchmark: {n:,} events x 14 channels, median of {repeat} runs "
            f"(warm page cache), one process per reader; {os.cpu_count()} CPUs, shared"
        )
        print()
        head = (
            f"{'file':<17} {'reader':<15} {'median ms':>10} {'best ms':>8} "
            f"{'x fromfile':>11} {'peak MB':>8}"
        )
        print(head)
        print("-" * len(head))
        for label, path in files.items():
            floor = None
            for r in readers:
                python = sys.executable
                if r == "fcsparser":
                    try:
                        import fcsparser  # noqa: F401
                    except ImportError:
                        python = args.fcsparser_python
                        if not Path(python).exists():
                            print(f"{label:<17} {r:<15} {'not installable beside numpy 2':>31}")
                            continue
                res = _run_worker(python, r, path, repeat)
                if isinstance(res, str):
                    print(f"{label:<17} {r:<15} failed: {res}")
                    continue
                ms, best = res["seconds"] * 1000, res["best"] * 1000
                if r == "numpy.fromfile":
                    floor = ms
                ratio = f"{ms / floor:.2f}" if floor else "-"
                print(
                    f"{label:<17} {r:<15} {ms:>10.1f} {best:>8.1f} {ratio:>11} "
                    f"{res['peak_mb']:>8.0f}"
                )
        if not args.quick:
            print()
            print("DATA beyond byte 99,999,999:", _big_file_check(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
