"""Simulator speed, and how well the built-in template recovers the simulator's truth.

Part 1 (speed): an in-memory 20,000-event sample, one 100,000-event file written to disk,
the default cohort (7 patients x 2 visits x 100,000 events), the same with week48, and a
1,000,000-event sample. Wall-clock seconds, best of ``--repeat`` runs.

Part 2 (truth recovery, when the gating engine is importable): per-event F1, precision and
recall of every population of the ``immune_profile`` template against the simulator's
truth (`immunoprofile.simulate.truth_mask`), at drift 0, 1 and 2, over ``--files`` files
each. This measures the data and the gates together: a population whose F1 is low at every
drift is either hard in the data or badly gated; one that drops with drift is a gate that
does not adapt.

Run: ``python benchmarks/bench_simulate.py [--repeat 3] [--files 3] [--no-gating] [--quick]``

Timings depend on machine load; they are not asserted anywhere.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def speed(repeat: int, quick: bool = False) -> list[tuple[str, float]]:
    """Seconds for each simulation task (``quick``: without the 1M-event sample and the
    three-visit cohort)."""
    from immunoprofile.simulate import simulate_cohort, simulate_sample

    rows = []
    rows.append(("sample, 20k events, in memory", _best(lambda: simulate_sample(20_000), repeat)))
    if not quick:
        rows.append(
            ("sample, 1M events, in memory", _best(lambda: simulate_sample(1_000_000), repeat))
        )
    with tempfile.TemporaryDirectory() as tmp:
        rows.append(
            (
                "1 file x 100k events, written",
                _best(
                    lambda: simulate_cohort(
                        Path(tmp) / "one", patients=1, visits=("baseline",), seed=0
                    ),
                    repeat,
                ),
            )
        )
        rows.append(
            (
                "default cohort 7 x 2 x 100k, written",
                _best(lambda: simulate_cohort(Path(tmp) / "c2", seed=0), repeat),
            )
        )
        if quick:
            return rows
        rows.append(
            (
                "cohort 7 x 3 x 100k (week48), written",
                _best(
                    lambda: simulate_cohort(
                        Path(tmp) / "c3", visits=("baseline", "week24", "week48"), seed=0
                    ),
                    repeat,
                ),
            )
        )
    return rows


def truth_recovery(files: int, events: int = 100_000) -> dict[float, dict[str, np.ndarray]]:
    """drift -> population -> array (files x [F1, precision, recall])."""
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.simulate import POPULATION_LEAVES, simulate_sample, truth_mask

    out: dict[float, dict[str, np.ndarray]] = {}
    for drift in (0.0, 1.0, 2.0):
        acc: dict[str, list[tuple[float, float, float]]] = {}
        for seed in range(files):
            sample, labels = simulate_sample(events=events, seed=100 + seed, drift=drift)
            res = apply_template(sample, "immune_profile")
            for pop, mask in res.masks.items():
                if pop not in POPULATION_LEAVES:
                    continue
                truth = truth_mask(labels, pop)
                tp = float(np.count_nonzero(mask & truth))
                n_gate, n_true = float(mask.sum()), float(truth.sum())
                f1 = 2 * tp / (n_gate + n_true) if n_gate + n_true else 1.0
                acc.setdefault(pop, []).append(
                    (f1, tp / n_gate if n_gate else 1.0, tp / n_true if n_true else 1.0)
                )
        out[drift] = {k: np.array(v) for k, v in acc.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--no-gating", action="store_true", help="skip part 2")
    ap.add_argument("--quick", action="store_true", help="one repeat, one file per drift")
    args = ap.parse_args()
    if args.quick:
        args.repeat, args.files = 1, 1

    print(f"Simulator speed (wall clock, best of {args.repeat})")
    print(f"{'task':42s} {'seconds':>8s}")
    for name, sec in speed(args.repeat, args.quick):
        print(f"{name:42s} {sec:8.2f}")

    if args.no_gating:
        return
    try:
        res = truth_recovery(args.files)
    except ImportError as exc:  # the gating engine or compensation is not installed
        print(f"\ntruth recovery skipped: {exc}")
        return
    print(
        f"\nimmune_profile template vs simulator truth: mean per-event F1 over {args.files} files"
    )
    print("(min F1 in brackets; precision/recall at drift 1)")
    drifts = list(res)
    print(f"{'population':16s}" + "".join(f"{'drift ' + str(d):>18s}" for d in drifts) + "   P/R")
    for pop in res[drifts[0]]:
        cells = "".join(
            f"{res[d][pop][:, 0].mean():10.3f} ({res[d][pop][:, 0].min():.3f})" for d in drifts
        )
        pr = res[1.0][pop].mean(axis=0)
        print(f"{pop:16s}{cells}   {pr[1]:.3f}/{pr[2]:.3f}")


if __name__ == "__main__":
    main()
