"""Accuracy of the built-in gating templates against the simulator's per-event truth.

Simulates a default cohort (drift 1) and a strong-drift cohort (drift 2), writes them as
FCS files, reads them back, gates every file with the four built-in templates (``tregs``,
``th17``, ``b_cells``, ``nk_cells``) and compares every population with its truth
(`immunoprofile.simulate.truth_mask`): per-event F1, and the error of percent-of-parent
in percentage points (gated parent vs true parent). Writes the table to
``docs/gating_accuracy.md`` and prints it.

    python benchmarks/gating_accuracy.py                 # 7 patients x 2 visits x 100k events
    python benchmarks/gating_accuracy.py --patients 3 --events 50000 --out /tmp/acc.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from immunoprofile.gating.engine import apply_template  # noqa: E402
from immunoprofile.gating.template import load_template  # noqa: E402
from immunoprofile.io.fcs import read_fcs  # noqa: E402
from immunoprofile.simulate import (  # noqa: E402
    POPULATION_LEAVES,
    read_truth,
    simulate_cohort,
    truth_mask,
)

TEMPLATES = ("tregs", "th17", "b_cells", "nk_cells")
#: issue 4's targets: F1 >= 0.95 for these, >= 0.90 for Th17 and the subsets
MAIN = {"T", "CD4", "Treg", "B", "NK"}
#: gates of the shared trunk, reported without a target (see the notes in the output)
TRUNK = {"lymphocytes", "singlets", "live", "nonT"}
FREQ_MEDIAN, FREQ_MAX = 0.5, 1.5


def f1_score(truth: np.ndarray, gated: np.ndarray) -> float:
    denom = int(truth.sum()) + int(gated.sum())
    return 2.0 * int(np.count_nonzero(truth & gated)) / denom if denom else 1.0


def evaluate(cohort_name: str, info, templates) -> tuple[pd.DataFrame, list[float]]:
    """One row per file x template x population; and the seconds per file x template."""
    rows, seconds = [], []
    for fcs, truth_path in zip(info.fcs, info.truth):
        raw = read_fcs(fcs)
        labels = read_truth(truth_path)
        for t in templates:
            t0 = time.perf_counter()
            res = apply_template(raw, t)
            seconds.append(time.perf_counter() - t0)
            for p in t.populations:
                if p.name not in POPULATION_LEAVES:
                    continue
                tm = truth_mask(labels, p.name)
                gm = res.masks[p.name]
                if p.parent is None:
                    tp = gp = np.ones(len(tm), dtype=bool)
                else:
                    tp, gp = truth_mask(labels, p.parent), res.masks[p.parent]
                truth_pct = 100.0 * tm.sum() / max(int(tp.sum()), 1)
                gated_pct = 100.0 * gm.sum() / max(int(gp.sum()), 1)
                rows.append(
                    {
                        "cohort": cohort_name,
                        "template": t.name,
                        "file": fcs.name,
                        "population": p.name,
                        "parent": p.parent or "",
                        "f1": f1_score(tm, gm),
                        "truth_pct": truth_pct,
                        "gated_pct": gated_pct,
                        "error": gated_pct - truth_pct,
                        "fallback": bool(res.fitted[p.name]["fallback"]),
                    }
                )
    return pd.DataFrame(rows), seconds


def cohort_drifts(strong_drift: float) -> dict[str, float]:
    """The two cohorts' names and drifts; cohort i is simulated with seed + i."""
    return {"default": 1.0, f"strong drift (x{strong_drift:g})": strong_drift}


def run_cohorts(
    patients: int, events: int, seed: int, strong_drift: float
) -> tuple[pd.DataFrame, list[float]]:
    """Simulate both cohorts (seeds ``seed`` and ``seed + 1``) into a temporary folder,
    gate every file with the four templates; the per-file table and seconds per gating."""
    templates = [load_template(n) for n in TEMPLATES]
    frames, seconds = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, drift) in enumerate(cohort_drifts(strong_drift).items()):
            info = simulate_cohort(
                Path(tmp) / f"c{i}", patients=patients, events=events, seed=seed + i, drift=drift
            )
            df, sec = evaluate(name, info, templates)
            frames.append(df)
            seconds += sec
    return pd.concat(frames, ignore_index=True), seconds


def f1_target(population: str) -> float | None:
    """Issue 4's F1 target for a population; None for the trunk (no target)."""
    if population in TRUNK:
        return None
    return 0.95 if population in MAIN else 0.90


def meets_targets(population: str, f1_min: float, err_median: float, err_max: float) -> bool:
    """Whether a population's F1 minimum and |error| median/max over files meet issue 4."""
    target = f1_target(population)
    if target is None:
        return True
    return f1_min >= target and err_median <= FREQ_MEDIAN and err_max <= FREQ_MAX


def first_template_rows(df: pd.DataFrame, by: tuple[str, ...] = ()) -> pd.DataFrame:
    """Each (``by`` x) cohort x file x population once, from the first template holding it."""
    return df.drop_duplicates([*by, "cohort", "file", "population"])


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per cohort x population (each population once: from the first template holding it)."""
    first = first_template_rows(df)
    out = []
    for (cohort, pop), g in first.groupby(["cohort", "population"], sort=False):
        err = g["error"].abs()
        target = f1_target(pop)
        ok = meets_targets(pop, g["f1"].min(), err.median(), err.max())
        out.append(
            {
                "cohort": cohort,
                "population": pop,
                "template": g["template"].iloc[0],
                "files": len(g),
                "truth % of parent (median)": g["truth_pct"].median(),
                "F1 median": g["f1"].median(),
                "F1 min": g["f1"].min(),
                "F1 target": "-" if target is None else f"{target:.2f}",
                "|error| median (pp)": err.median(),
                "|error| max (pp)": err.max(),
                "bias (pp)": g["error"].mean(),
                "fallbacks": int(g["fallback"].sum()),
                "meets targets": "-" if pop in TRUNK else ("yes" if ok else "NO"),
            }
        )
    return pd.DataFrame(out)


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            v = r[c]
            if isinstance(v, float):
                cells.append(f"{v:.3f}" if c.startswith("F1") else f"{v:.2f}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


START, END = "<!-- gating-accuracy:start -->", "<!-- gating-accuracy:end -->"


def _update_readme(readme: Path, report: str) -> None:
    """Put the report (without its title) between the README's gating-accuracy markers."""
    if not readme.is_file():
        return
    text = readme.read_text()
    if START not in text or END not in text:
        return
    body = report.split("\n", 2)[2].strip()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body}\n\n(`docs/gating_accuracy.md`)\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=7)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strong-drift", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "gating_accuracy.md")
    ap.add_argument(
        "--readme",
        type=Path,
        default=ROOT / "README.md",
        help="README whose gating-accuracy block gets the table (only with the default --out)",
    )
    args = ap.parse_args(argv)

    per_file, seconds = run_cohorts(args.patients, args.events, args.seed, args.strong_drift)
    table = summarise(per_file)
    n_files = per_file.groupby("cohort")["file"].nunique().to_dict()
    failing = table[table["meets targets"] == "NO"]
    text = [
        "# Gating accuracy of the built-in templates on simulated cohorts",
        "",
        "Made by `python benchmarks/gating_accuracy.py` (do not edit by hand). Cohorts: "
        + ", ".join(f"{k}: {v} files" for k, v in n_files.items())
        + f" ({args.patients} patients x baseline/week24, {args.events:,} events per file, "
        f"seed {args.seed}). Every file is written as FCS, read back, compensated with its "
        "own $SPILLOVER, logicle-transformed and gated with `tregs`, `th17`, `b_cells` and "
        "`nk_cells`; each population is compared with the simulator's per-event truth.",
        "",
        "F1 is per event (gated mask against true mask over all events). The error is the "
        "gated percent of the gated parent minus the true percent of the true parent, in "
        "percentage points; median and max are over files. Targets: F1 >= 0.95 for T, CD4, "
        f"Treg, B, NK and >= 0.90 for Th17 and the subsets; |error| median <= {FREQ_MEDIAN} "
        f"and max <= {FREQ_MAX} pp.",
        "",
        to_markdown(table),
        "",
        f"Populations missing a target: {', '.join(sorted(set(failing['population']))) or 'none'}.",
        "",
        "Notes. `lymphocytes`, `singlets`, `live` and `nonT` (the trunk shared by all "
        "templates) carry no target. The simulator's truth counts dead lymphocytes and "
        "lymphocyte doublets as `lymphocytes` and dead cells as `singlets`; the scatter gate "
        "leaves most dead cells (smaller, more granular) and doublets out and the singlet "
        "gate sees few doublets, so their percent-of-parent differs from that truth by "
        "design, while `live` (live singlet lymphocytes) matches it closely. Percentages of "
        "the populations below `live` use the gated parents, so trunk errors show up in "
        "them only through the events actually misplaced.",
        "",
        f"Gating time per file and template (read excluded; compensation, transform and "
        f"every gate included): median {np.median(seconds):.2f} s, "
        f"{args.events / np.median(seconds) / 1e6:.2f} M events/s, measured on a 2-core "
        "machine shared with other work (under load).",
        "",
    ]
    out = "\n".join(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out)
    if args.out == ROOT / "docs" / "gating_accuracy.md":
        _update_readme(args.readme, out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
