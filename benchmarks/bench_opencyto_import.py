"""Imported openCyto templates against the built-in ones, on simulated samples with
per-event truth.

The HIPC Lyoplate ``treg.csv`` and ``bcell.csv`` (read-only, ../shared/realdata/openCyto)
are imported with `opencyto_to_template`, pruned to the simulator's panel
(`prune_template`: CCR4, CD45RO and HLA-DR are not stained), and applied like any
template. For each canonical population, the table gives the F1 score of the gated
events against the truth and the absolute error of its percentage of the parent
population's truth, as a median over the samples, for the imported and the built-in
template.

    python benchmarks/bench_opencyto_import.py [--samples 4] [--events 30000] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from immunoprofile.gating.engine import apply_template  # noqa: E402
from immunoprofile.interop.opencyto import opencyto_to_template, prune_template  # noqa: E402
from immunoprofile.simulate.biology import truth_mask  # noqa: E402
from immunoprofile.simulate.cohort import simulate_sample  # noqa: E402

# canonical population -> (parent, population(s) of the imported template, of the built-in)
TREG = {
    "lymphocytes": (None, ["lymph"], ["lymphocytes"]),
    "T": ("lymphocytes", ["CD3"], ["T"]),
    "CD4": ("T", ["CD4"], ["CD4"]),
    "Treg": ("CD4", ["CD25+CD127-"], ["Treg"]),
}
BCELL = {
    "lymphocytes": (None, ["lymph"], ["lymphocytes"]),
    "B": ("lymphocytes", ["CD19"], ["B"]),
    "B_naive": ("B", ["IgD+CD27-"], ["B_naive"]),
    "B_memory": ("B", ["IgD+CD27+", "IgD-CD27+"], ["B_memory"]),
    "B_transitional": ("B", ["Transitional"], ["B_transitional"]),
    "plasmablasts": ("B", ["Plasmablasts"], ["plasmablasts"]),
}


def _f1(pred: np.ndarray, truth: np.ndarray) -> float:
    tp = np.count_nonzero(pred & truth)
    denom = np.count_nonzero(pred) + np.count_nonzero(truth)
    return 2.0 * tp / denom if denom else 1.0


def evaluate(csv: Path, builtin: str, mapping: dict, samples: int, events: int) -> None:
    t_imp = opencyto_to_template(csv)
    rows: dict[str, dict[str, list[float]]] = {p: {} for p in mapping}
    seconds = {"imported": 0.0, "built-in": 0.0}
    for k in range(samples):
        sample, labels = simulate_sample(events=events, seed=100 + k, name=f"sim{k}")
        pruned, _ = prune_template(t_imp, sample)
        for which, tmpl in (("imported", pruned), ("built-in", builtin)):
            t0 = time.perf_counter()
            res = apply_template(sample, tmpl, seed=0)
            seconds[which] += time.perf_counter() - t0
            for pop, (parent, imp_names, own_names) in mapping.items():
                names = imp_names if which == "imported" else own_names
                if not all(n in res.masks for n in names):
                    continue
                pred = np.logical_or.reduce([res.masks[n] for n in names])
                truth = truth_mask(labels, pop)
                par = truth_mask(labels, parent) if parent else np.ones_like(truth)
                err = abs(
                    100.0 * pred.sum() / max(par.sum(), 1) - 100.0 * truth.sum() / max(par.sum(), 1)
                )
                rows[pop].setdefault(f"{which} F1", []).append(_f1(pred, truth))
                rows[pop].setdefault(f"{which} err", []).append(err)
    print(f"\n{csv.name} (imported) vs built-in {builtin!r}: {samples} samples x {events} events")
    print(
        f"{'population':16s} {'F1 imported':>12s} {'F1 built-in':>12s} {'|err| imp pp':>13s} {'|err| b-in pp':>14s}"
    )
    for pop, r in rows.items():

        def med(key: str, r: dict = r) -> str:
            v = r.get(key)
            return f"{np.median(v):.3f}" if v else "-"

        print(
            f"{pop:16s} {med('imported F1'):>12s} {med('built-in F1'):>12s} {med('imported err'):>13s} {med('built-in err'):>14s}"
        )
    print(
        f"gating time per sample: imported {seconds['imported'] / samples:.2f} s, built-in "
        f"{seconds['built-in'] / samples:.2f} s  [shared 2-core machine under load]"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("IMMUNOPROFILE_REALDATA", str(REPO.parent / "shared" / "realdata"))
    ap.add_argument("--realdata", default=default)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--quick", action="store_true", help="1 sample of 10,000 events")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.events = 1, 10_000
    d = Path(args.realdata) / "openCyto" / "inst" / "extdata" / "gating_template"
    if not d.is_dir():
        print(f"openCyto templates not found under {d}; pass --realdata")
        return 2
    evaluate(d / "treg.csv", "tregs", TREG, args.samples, args.events)
    evaluate(d / "bcell.csv", "b_cells", BCELL, args.samples, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
