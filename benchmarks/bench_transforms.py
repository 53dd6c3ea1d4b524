"""Transform and compensation speed and agreement: immunoprofile against flowutils.

flowutils is the C implementation flowkit calls for its transforms and compensation, so
its numbers are flowkit's too. Everything runs on one thread (BLAS limited to one
thread before numpy loads). Data: 1,000,000 events x 11 fluorescence detectors (11 M
values), compensated-looking: a spread of negatives around zero and log-normal positives
up to and beyond T = 262144, plus 1 % of large negatives and huge values, so the whole
real range is exercised.

Columns: best-of-``--repeat`` time of each implementation, the speed-up, and the largest
absolute difference (on the 0..1 display scale for transforms; in data units for
compensation). "table build" is the one-off cost of a new logicle parameter set.

Run: ``python benchmarks/bench_transforms.py [--events 1000000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def make_values(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    neg = rng.normal(0, 300, n)
    pos = rng.lognormal(7.5, 1.8, n)
    x = np.where(rng.random(n) < 0.4, neg, pos)
    wild = rng.random(n) < 0.01
    x[wild] = rng.choice([-1, 1], wild.sum()) * 10 ** rng.uniform(3, 12, wild.sum())
    return x.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from immunoprofile import transforms as T
    from immunoprofile.compensation import Spillover, compensate_array

    try:
        from flowutils import compensate as fu_comp
        from flowutils import transforms as fu
    except ImportError:
        print("flowutils is not installed (pip install flowutils): nothing to compare with")
        return 1

    n_det = 11
    values = make_values(args.events * n_det)
    ref_in = values.astype(np.float64)  # flowutils works in float64
    rows = []

    def bench_tr(label, ours, theirs):
        t_ours, y = best(lambda: ours.apply(values), args.repeat)
        t_ref, ref = best(lambda: theirs(ref_in), max(1, args.repeat - 1))
        diff = float(np.nanmax(np.abs(y.astype(np.float64) - ref)))
        rows.append((label, f"{values.size / 1e6:.0f}M", t_ours, t_ref, diff))

    p = dict(t=262144, w=0.5, m=4.5, a=0)
    T.Logicle(**p).apply(values[:10])  # build the table once, timed separately below
    bench_tr("logicle", T.Logicle(**p), lambda x: fu.logicle(x, None, **p))
    T.Hyperlog(**p).apply(values[:10])
    bench_tr("hyperlog", T.Hyperlog(**p), lambda x: fu.hyperlog(x, None, **p))
    q = dict(t=262144, m=4.5, a=0)
    bench_tr("arcsinh (fasinh)", T.Arcsinh(**q), lambda x: fu.asinh(x, None, **q))

    t0 = time.perf_counter()
    T._logicle_table(262144.0, 0.73, 4.5, 0.0)
    rows.append(("logicle table build", "1 set", time.perf_counter() - t0, float("nan"), 0.0))

    # compensation: events x channels with scatter, 11 detectors and time
    rng = np.random.default_rng(1)
    n = args.events
    dets = [f"D{i}-A" for i in range(n_det)]
    spill = np.eye(n_det) + rng.uniform(0, 0.15, (n_det, n_det)) * (1 - np.eye(n_det))
    sp = Spillover(tuple(dets), spill, source="bench")
    events = np.empty((n, n_det + 4), dtype=np.float32)
    events[:, :3] = rng.uniform(0, 262144, (n, 3))
    events[:, 3 : 3 + n_det] = values[: n * n_det].reshape(n, n_det)
    events[:, -1] = np.arange(n)
    idx = list(range(3, 3 + n_det))
    compensate_array(events[:1000], sp, idx)
    t_ours, comp = best(lambda: compensate_array(events, sp, idx), args.repeat)
    ev64 = events.astype(np.float64)
    t_ref, ref = best(lambda: fu_comp.compensate(ev64, spill, idx), max(1, args.repeat - 1))
    rel = float(np.max(np.abs(comp - ref)) / np.max(np.abs(ref[:, idx])))
    rows.append((f"compensate {n_det} det", f"{n / 1e6:g}M ev", t_ours, t_ref, rel))

    # the whole step on a Sample: compensate, then the default transform spec
    # (logicle on the 11 detectors, linear on scatter, time untouched)
    from immunoprofile.compensation import compensate
    from immunoprofile.sample import Sample, make_channel_table
    from immunoprofile.transforms import transform

    names = ["FSC-A", "FSC-H", "SSC-A", *dets, "Time"]
    table = make_channel_table(names, ranges=[262144] * (len(names) - 1) + [1e6])
    sample = Sample(events, table, {"$SPILLOVER": sp.to_keyword()}, name="bench")

    def ours_pipeline():
        return transform(compensate(sample))

    def their_pipeline():
        out = fu_comp.compensate(ev64, spill, idx)
        out = fu.logicle(out, idx, t=262144, w=0.5, m=4.5, a=0)
        out[:, :3] /= 262144
        return out

    ours_pipeline()
    t_ours, res = best(ours_pipeline, args.repeat)
    t_ref, ref = best(their_pipeline, max(1, args.repeat - 1))
    diff = float(np.nanmax(np.abs(res.events[:, idx].astype(np.float64) - ref[:, idx])))
    rows.append(("compensate+transform", f"{n / 1e6:g}M ev", t_ours, t_ref, diff))

    print(f"{'operation':<22} {'values':>8} {'immunoprofile s':>16} {'flowutils s':>12} "
          f"{'speed-up':>9} {'max |diff|':>11}")  # fmt: skip
    for label, size, a, b, d in rows:
        sp_up = f"{b / a:8.1f}x" if np.isfinite(b) else f"{'':>9}"
        bs = f"{b:12.3f}" if np.isfinite(b) else f"{'':>12}"
        print(f"{label:<22} {size:>8} {a:16.4f} {bs} {sp_up} {d:11.2e}")
    print("(compensation difference is relative to the largest compensated value; float32 "
          "against float64; compensate+transform difference on the display scale, dominated by\n"
          " float32 rounding in compensating the 1 % of values far beyond T)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
