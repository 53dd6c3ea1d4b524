"""Gating accuracy of the built-in templates over several simulator seeds.

Runs the evaluation of ``benchmarks/gating_accuracy.py`` (both cohorts: default drift and
strong drift) once per seed and writes ``docs/gating_robustness.md``: one summary row per
seed x cohort, one row per population over all seeds, and every miss of an issue-4 target
with its seed, cohort, population, file and value. Nothing is left out: a seed on which a
population misses its target shows up here even when seed 0 (the accuracy doc) is clean.

    python benchmarks/gating_robustness.py                       # seeds 0 10 20 30, 7 patients
    python benchmarks/gating_robustness.py --seeds 0 10 --patients 3 --events 50000 \\
        --out /tmp/robust.md --jobs 2
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from gating_accuracy import (  # noqa: E402
    FREQ_MAX,
    FREQ_MEDIAN,
    TRUNK,
    f1_target,
    first_template_rows,
    run_cohorts,
    summarise,
    to_markdown,
)


def per_file_rows(seeds: list[int], patients: int, events: int, strong_drift: float, jobs: int):
    """The per-file table of gating_accuracy for every seed, with a ``seed`` column first."""

    def tagged(seed: int, df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(seed=seed)[["seed", *df.columns]]

    args = [(patients, events, s, strong_drift) for s in seeds]
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(run_cohorts, *zip(*args)))
    else:
        results = [run_cohorts(*a) for a in args]
    return pd.concat([tagged(s, r[0]) for s, r in zip(seeds, results)], ignore_index=True)


def _targeted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of populations that carry a target, each file x population once."""
    first = first_template_rows(df, by=("seed",))
    return first[~first["population"].isin(TRUNK)]


def seed_cohort_tables(per_file: pd.DataFrame) -> pd.DataFrame:
    """gating_accuracy's summary (per cohort x population) for every seed, target rows only."""
    out = []
    for seed, g in per_file.groupby("seed", sort=True):
        table = summarise(g.drop(columns="seed"))
        out.append(table[table["meets targets"] != "-"].assign(seed=seed))
    return pd.concat(out, ignore_index=True)


def seed_summary(per_file: pd.DataFrame) -> pd.DataFrame:
    """One row per seed x cohort: populations missing a target, worst F1 and worst |error|."""
    tables = seed_cohort_tables(per_file)
    rows = []
    for (seed, cohort), g in tables.groupby(["seed", "cohort"], sort=False):
        worst_f1 = g.loc[g["F1 min"].idxmin()]
        worst_err = g.loc[g["|error| max (pp)"].idxmax()]
        missing = sorted(g.loc[g["meets targets"] == "NO", "population"])
        rows.append(
            {
                "seed": seed,
                "cohort": cohort,
                "files": int(g["files"].max()),
                "populations missing a target": ", ".join(missing) or "none",
                "worst F1 (min over files)": f"{worst_f1['F1 min']:.3f} ({worst_f1['population']})",
                "worst |error| (pp, max over files)": f"{worst_err['|error| max (pp)']:.2f} "
                f"({worst_err['population']})",
            }
        )
    return pd.DataFrame(rows)


def population_table(per_file: pd.DataFrame) -> pd.DataFrame:
    """One row per target population over every seed x cohort."""
    tables = seed_cohort_tables(per_file)
    files = _targeted(per_file)
    rows = []
    for pop, g in files.groupby("population", sort=False):
        t = tables[tables["population"] == pop]
        err = g["error"].abs()
        rows.append(
            {
                "population": pop,
                "F1 target": f"{f1_target(pop):.2f}",
                "F1 min": g["f1"].min(),
                "|error| median (pp)": err.median(),
                "|error| median, worst seed-cohort (pp)": t["|error| median (pp)"].max(),
                "|error| max (pp)": err.max(),
                "seed-cohorts meeting targets": f"{int((t['meets targets'] == 'yes').sum())}"
                f"/{len(t)}",
            }
        )
    return pd.DataFrame(rows)


def miss_list(per_file: pd.DataFrame) -> pd.DataFrame:
    """Every miss of a target: a file's F1 below target, a file's |error| above the max, a
    seed-cohort's |error| median above the median target (file ``median of N files``)."""
    files = _targeted(per_file)
    rows = []
    for _, r in files.iterrows():
        target = f1_target(r["population"])
        base = {k: r[k] for k in ("seed", "cohort", "population", "file")}
        if r["f1"] < target:
            rows.append({**base, "what": "F1", "value": f"{r['f1']:.3f} < {target:.2f}"})
        if abs(r["error"]) > FREQ_MAX:
            rows.append(
                {**base, "what": "|error|", "value": f"{abs(r['error']):.2f} > {FREQ_MAX} pp"}
            )
    for (seed, cohort, pop), g in files.groupby(["seed", "cohort", "population"], sort=False):
        med = g["error"].abs().median()
        if med > FREQ_MEDIAN:
            rows.append(
                {
                    "seed": seed,
                    "cohort": cohort,
                    "population": pop,
                    "file": f"median of {len(g)} files",
                    "what": "|error| median",
                    "value": f"{med:.2f} > {FREQ_MEDIAN} pp",
                }
            )
    cols = ["seed", "cohort", "population", "file", "what", "value"]
    if not rows:
        return pd.DataFrame(columns=cols)
    order = {c: i for i, c in enumerate(dict.fromkeys(files["cohort"]))}
    out = pd.DataFrame(rows, columns=cols)
    out = out.assign(_c=out["cohort"].map(order))
    return out.sort_values(["seed", "_c", "population", "file", "what"], kind="stable").drop(
        columns="_c"
    )


def _commit() -> str:
    """Short id of the checked-out commit, with ``+changes`` when tracked files differ."""
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "immunoprofile", "benchmarks"]
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (+ uncommitted changes)" if dirty else "")


def report(per_file: pd.DataFrame, seeds: list[int], patients: int, events: int, commit: str):
    """The markdown document from the per-file table of every seed."""
    misses = miss_list(per_file)
    n_cohorts = per_file[["seed", "cohort"]].drop_duplicates().shape[0]
    text = [
        "# Gating accuracy of the built-in templates over simulator seeds",
        "",
        "Made by `python benchmarks/gating_robustness.py` (do not edit by hand) on commit "
        f"`{commit}`. Seeds {', '.join(map(str, seeds))}: for seed s the default cohort is "
        "simulated with seed s and the strong-drift cohort with seed s + 1, exactly as "
        "`benchmarks/gating_accuracy.py --seed s` does (that script's evaluation is reused: "
        f"{patients} patients x baseline/week24, {events:,} events per file, FCS round trip, "
        "templates `tregs`, `th17`, `b_cells`, `nk_cells`, per-event truth). "
        "`docs/gating_accuracy.md` is the full table for seed 0.",
        "",
        "Targets (issue 4): F1 >= 0.95 for T, CD4, Treg, B, NK and >= 0.90 for Th17 and the "
        f"subsets, per file; |error| of percent-of-parent median <= {FREQ_MEDIAN} pp over a "
        f"cohort's files and max <= {FREQ_MAX} pp. The trunk ({', '.join(sorted(TRUNK))}) "
        "carries no target and is left out.",
        "",
        "## Per seed and cohort",
        "",
        to_markdown(seed_summary(per_file)),
        "",
        f"## Per population over all {n_cohorts} seed-cohorts",
        "",
        "F1 min and |error| median/max over every file of every seed-cohort; the worst "
        "seed-cohort median is the one the median target applies to.",
        "",
        to_markdown(population_table(per_file)),
        "",
        f"## Every miss ({len(misses)})",
        "",
    ]
    if misses.empty:
        text.append("None.")
    else:
        text += [
            f"- seed {r.seed}, {r.cohort}, {r.population}, {r.file}: {r.what} {r.value}"
            for r in misses.itertuples()
        ]
    text.append("")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 10, 20, 30])
    ap.add_argument("--patients", type=int, default=7)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--strong-drift", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "gating_robustness.md")
    args = ap.parse_args(argv)
    seeds = sorted(set(args.seeds))
    commit = _commit()  # before the run: the code that is about to be measured
    per_file = per_file_rows(seeds, args.patients, args.events, args.strong_drift, args.jobs)
    out = report(per_file, seeds, args.patients, args.events, commit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
