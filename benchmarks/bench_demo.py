"""Time the demo (simulate + gate + cluster + compare + report) and check what it recovers.

Prints the wall time of each stage and, per endpoint, the true median change of the
simulated cohort beside the measured Hodges–Lehmann change with its exact CI. This is the
long check behind the ``slow`` test ``test_demo_recovers_known_effect``.

Run: ``python benchmarks/bench_demo.py [--quick] [--events N] [--jobs J]``
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 visits, no clustering")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()

    from immunoprofile.pipeline import run_demo

    visits = ("baseline", "week24") if args.quick else ("baseline", "week24", "week48")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        t0 = time.perf_counter()
        r = run_demo(out, events=args.events, visits=visits, cluster=not args.quick, jobs=args.jobs)
        total = time.perf_counter() - t0
        stamps = {
            "simulate": out / "cohort" / "samplesheet.csv",
            "gate": out / "gating" / "samples.csv",
            "cluster": out / "clustering" / "agreement.csv",
            "compare": out / "comparison" / "stats.csv",
            "report": out / "report.html",
        }
        times = {k: p.stat().st_mtime for k, p in stamps.items() if p.is_file()}
        truth = pd.read_csv(out / "truth_check.csv")
        size = (out / "report.html").stat().st_size
    start = min(times.values()) - 0.0
    print(f"demo: {len(visits)} visits x 7 patients x {args.events:,} events, jobs={args.jobs}")
    print(f"{'stage':<10}{'done at (s after simulate)':>28}")
    for k, v in times.items():
        print(f"{k:<10}{v - start:>28.1f}")
    print(f"total wall time {total:.1f} s; report {size / 1e6:.1f} MB")
    t = truth[(truth["measure"] == "percent_of_parent")]
    t = t[t["population"].isin(["Treg", "Th17", "B", "NK"])]
    cols = ["population", "followup_visit", "true_change", "measured_change", "hl_ci_low",
            "hl_ci_high", "true_in_ci", "measured_direction"]  # fmt: skip
    print(t[cols].round(3).to_string(index=False))
    ok = bool(t["true_in_ci"].all())
    d = t.groupby("population")["measured_direction"].agg(set).to_dict()
    ok &= d.get("Treg") == {"up"} and d.get("Th17") == {"down"}
    print("effect recovered (Treg up, Th17 down, truth in every CI):", ok)
    print(f"report: {r.report} (deleted with the temporary folder)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
