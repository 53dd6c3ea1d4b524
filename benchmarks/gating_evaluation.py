"""Honest evaluation of the built-in gating templates and of gating QC on fresh seeds.

Every run draws new random seeds (printed, and written into the document), so no gate
constant can be tuned to a fixed seed list. For each seed s two cohorts are simulated,
default drift (seed s) and strong drift (seed s + 1), 7 patients x baseline/week24 at
100,000 events per file (14 files per cohort), written as FCS and read back, and gated
with ``tregs``, ``th17``, ``b_cells`` and ``nk_cells``. Each file gets its own QC flags
(`immunoprofile.gating.qc`) and the cohort-consistency flags of its cohort, exactly as
``immunoprofile gate`` gives them.

Two arms: ``standard`` (the default simulated set-up) and, with ``--widened``, cohorts
whose acquisition and donor conditions are drawn at random
(`immunoprofile.simulate.Conditions.draw`: whole blood, scatter voltages, dim stains,
lymphocytes low on FSC, unimodal IgD/CD24/CD38 donors).

Reported per population: the share of files meeting the targets (F1 >= 0.95 for T, CD4,
Treg, B, NK, >= 0.90 for the rest; |error| of percent of parent <= 1.5 pp), the worst
error; the share of files meeting every target; QC recall (files more than 3 pp off on
live, T, CD4, Treg, Th17, B or NK that carry a flag bearing on that population) and the
false-flag rate (files with a flag although no population is more than 3 pp off).

    python benchmarks/gating_evaluation.py                      # 20 fresh seeds, standard
    python benchmarks/gating_evaluation.py --seeds 4 --widened --jobs 2
    python benchmarks/gating_evaluation.py --seed-list 123 456  # repeat given seeds
"""

from __future__ import annotations

import argparse
import pickle
import secrets
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from immunoprofile.gating.engine import apply_template  # noqa: E402
from immunoprofile.gating.qc import cohort_flags, file_record, flags_on  # noqa: E402
from immunoprofile.gating.template import load_template  # noqa: E402
from immunoprofile.io.fcs import read_fcs  # noqa: E402
from immunoprofile.simulate import (  # noqa: E402
    POPULATION_LEAVES,
    Conditions,
    read_truth,
    simulate_cohort,
    truth_mask,
)

TEMPLATES = ("tregs", "th17", "b_cells", "nk_cells")
MAIN = {"T", "CD4", "Treg", "B", "NK"}
TRUNK = {"lymphocytes", "singlets", "live", "nonT"}
#: populations whose > 3 pp error must carry a QC flag (issue 11)
RECALL_POPULATIONS = ("live", "T", "CD4", "Treg", "Th17", "B", "NK")
FREQ_MAX = 1.5
#: populations whose error does not count towards a file being "off" (see file_table)
UNJUDGED = {"lymphocytes", "singlets"}
#: rules that report a count too small to quote, not a gate that may be wrong: they are
#: counted for recall (the user sees them) but kept apart in the false-flag rate
ADVISORY = {"too_few_events"}
OFF_PP = 3.0


def f1_score(truth: np.ndarray, gated: np.ndarray) -> float:
    denom = int(truth.sum()) + int(gated.sum())
    return 2.0 * int(np.count_nonzero(truth & gated)) / denom if denom else 1.0


def f1_target(population: str) -> float | None:
    if population in TRUNK:
        return None
    return 0.95 if population in MAIN else 0.90


def lost_at(
    truth: np.ndarray,
    gated: np.ndarray,
    population: str,
    parents: dict[str, str | None],
    masks: dict[str, np.ndarray],
) -> str:
    """Where a population's true events were lost, gate by gate from the root (each
    ancestor's gate, then the population's own), and how many false events it kept:
    ``"live 42; B_transitional 4; false 3"``. Says which gate of the chain a miss comes
    from (a subset whose cells a trunk gate drops is no fault of the subset's gate)."""
    chain: list[str] = []
    node: str | None = population
    while node is not None:
        chain.insert(0, node)
        node = parents.get(node)
    kept = truth
    parts = []
    for name in chain:
        n = int(np.count_nonzero(kept & ~masks[name]))
        if n:
            parts.append(f"{name} {n}")
        kept = kept & masks[name]
    false = int(np.count_nonzero(gated & ~truth))
    if false:
        parts.append(f"false {false}")
    return "; ".join(parts)


def run_cohort(
    seed: int, drift: float, patients: int, events: int, widened: bool, records: Path | None = None
):
    """Simulate one cohort, gate every file with every template; one row per file x
    template x population with F1, error and the QC flags bearing on the population."""
    templates = [load_template(n) for n in TEMPLATES]
    cond = Conditions.draw(np.random.default_rng([seed, 7])) if widened else Conditions()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        info = simulate_cohort(
            tmp, patients=patients, events=events, seed=seed, drift=drift, conditions=cond
        )
        per_template: dict[str, list] = {t.name: [] for t in templates}
        for fcs, truth_path, (_, ident) in zip(info.fcs, info.truth, info.samples.iterrows()):
            raw = read_fcs(fcs)
            labels = read_truth(truth_path)
            for t in templates:
                res = apply_template(raw, t)
                parents = {p.name: p.parent for p in t.populations}
                counts = res.counts
                stats = {}
                for p in t.populations:
                    if p.name not in POPULATION_LEAVES:
                        continue
                    tm, gm = truth_mask(labels, p.name), res.masks[p.name]
                    if p.parent is None:
                        tp = gp = np.ones(len(tm), dtype=bool)
                    else:
                        tp, gp = truth_mask(labels, p.parent), res.masks[p.parent]
                    truth_pct = 100.0 * tm.sum() / max(int(tp.sum()), 1)
                    gated_pct = 100.0 * gm.sum() / max(int(gp.sum()), 1)
                    stats[p.name] = (
                        f1_score(tm, gm),
                        truth_pct,
                        gated_pct,
                        lost_at(tm, gm, p.name, parents, res.masks),
                    )
                record = file_record(
                    counts,
                    parents,
                    res.sample.n_events,
                    res.fitted,
                    sample=fcs.stem,
                    patient=ident["patient"],
                    visit=ident["visit"],
                    group=None,
                )
                per_template[t.name].append((fcs.stem, list(res.qc), record, parents, stats))
    cohort = f"drift {drift:g}"
    if records is not None:
        # every file's record, own flags and per-population results: QC rules can be
        # studied on them without gating again
        records.mkdir(parents=True, exist_ok=True)
        with open(records / f"{seed}_{drift:g}.pkl", "wb") as fh:
            pickle.dump({"conditions": cond.describe(), "files": per_template}, fh)
    for tname, files in per_template.items():
        extra = cohort_flags([f[2] for f in files])
        for (stem, own, _, parents, stats), more in zip(files, extra):
            flags = own + more
            rules = sorted({q["flag"] for q in flags})
            for pop, (f1, truth_pct, gated_pct, lost) in stats.items():
                on = flags_on(flags, pop, parents)
                rows.append(
                    {
                        "seed": seed,
                        "cohort": cohort,
                        "conditions": cond.describe(),
                        "template": tname,
                        "file": stem,
                        "population": pop,
                        "f1": f1,
                        "truth_pct": truth_pct,
                        "gated_pct": gated_pct,
                        "error": gated_pct - truth_pct,
                        "lost_at": lost,
                        "flags": "; ".join(
                            dict.fromkeys(f"{q['flag']}:{q.get('population')}" for q in on)
                        ),
                        "file_rules": "; ".join(rules),
                    }
                )
    return pd.DataFrame(rows)


def _one(args: tuple) -> pd.DataFrame:
    return run_cohort(*args)


def evaluate(
    seeds: list[int],
    patients: int,
    events: int,
    strong: float,
    widened: bool,
    jobs: int,
    records: Path | None = None,
):
    tasks = []
    for s in seeds:
        tasks.append((s, 1.0, patients, events, widened, records))
        tasks.append((s + 1, strong, patients, events, widened, records))
    t0 = time.perf_counter()
    frames = []
    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for i, df in enumerate(pool.map(_one, tasks)):
                frames.append(df)
                print(f"  cohort {i + 1}/{len(tasks)} done ({time.perf_counter() - t0:.0f} s)")
    else:
        for i, t in enumerate(tasks):
            frames.append(_one(t))
            print(f"  cohort {i + 1}/{len(tasks)} done ({time.perf_counter() - t0:.0f} s)")
    return pd.concat(frames, ignore_index=True)


# --- summaries ---------------------------------------------------------------------------


def _first(df: pd.DataFrame) -> pd.DataFrame:
    """Each seed x cohort x file x population once (from the first template holding it)."""
    return df.drop_duplicates(["seed", "cohort", "file", "population"])


def _meets(df: pd.DataFrame) -> pd.Series:
    target = df["population"].map(lambda p: f1_target(p) or 0.0)
    return (df["f1"] >= target) & (df["error"].abs() <= FREQ_MAX)


def population_table(df: pd.DataFrame) -> pd.DataFrame:
    first = _first(df)
    first = first[~first["population"].isin(TRUNK) | first["population"].eq("live")]
    rows = []
    for pop, g in first.groupby("population", sort=False):
        tgt = f1_target(pop)
        worst = g.loc[g["error"].abs().idxmax()]
        ok = _meets(g) if tgt is not None else g["error"].abs() <= FREQ_MAX
        rows.append(
            {
                "population": pop,
                "F1 target": "-" if tgt is None else f"{tgt:.2f}",
                "files": len(g),
                "files meeting targets": f"{100 * ok.mean():.1f}%",
                "F1 min": g["f1"].min(),
                "worst error (pp)": f"{worst['error']:+.2f} ({worst['file']}, seed {worst['seed']})",
                "files > 3 pp off": int((g["error"].abs() > OFF_PP).sum()),
            }
        )
    return pd.DataFrame(rows)


def file_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per seed x cohort x file: meets every target, worst error, flagged, off."""
    first = _first(df)
    targeted = first[~first["population"].isin(TRUNK)]
    key = ["seed", "cohort", "file"]
    meets = _meets(targeted).groupby([targeted[k] for k in key]).all().rename("meets_all")
    # lymphocytes and singlets count dead cells and doublets differently from the gates
    # by design (docs/gating_accuracy.md): their error says nothing about a wrong gate
    judged = first[~first["population"].isin(UNJUDGED)]
    off = (judged["error"].abs() > OFF_PP).groupby([judged[k] for k in key]).any().rename("off")
    rules = df["file_rules"].fillna("").str.split("; ")
    gate = rules.map(lambda r: any(x and x not in ADVISORY for x in r))
    advisory = rules.map(lambda r: any(x in ADVISORY for x in r))
    flagged = gate.groupby([df[k] for k in key]).any().rename("flagged")
    adv = advisory.groupby([df[k] for k in key]).any().rename("advisory")
    names = rules.map(lambda r: {x for x in r if x and x not in ADVISORY})
    union = names.groupby([df[k] for k in key]).agg(lambda v: "; ".join(sorted(set().union(*v))))
    return pd.concat([meets, off, flagged, adv, union.rename("rules")], axis=1).reset_index()


def recall_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Every file x population > 3 pp off on a recall population, with its flags."""
    first = _first(df)
    hit = first[first["population"].isin(RECALL_POPULATIONS) & (first["error"].abs() > OFF_PP)]
    return hit[["seed", "cohort", "conditions", "file", "population", "error", "flags"]]


def summary_lines(df: pd.DataFrame) -> list[str]:
    files = file_table(df)
    rec = recall_rows(df)
    caught = rec["flags"].ne("")
    rec_files = rec.groupby(["seed", "cohort", "file"])["flags"].apply(lambda s: s.ne("").all())
    fine = files[~files["off"]]
    false = fine["flagged"].sum()
    adv_only = (fine["advisory"] & ~fine["flagged"]).sum()
    by_rule = fine[fine["flagged"]]["rules"].str.split("; ").explode().value_counts().to_dict()
    rule_text = ", ".join(f"{k} {v}" for k, v in by_rule.items()) or "none"
    return [
        f"- files: {len(files)}; meeting every per-population target: "
        f"{files['meets_all'].sum()} ({100 * files['meets_all'].mean():.1f}%, target >= 97%)",
        f"- QC recall: {int(caught.sum())} of {len(rec)} file x population errors > {OFF_PP:g} pp "
        f"on {', '.join(RECALL_POPULATIONS)} carry a flag bearing on that population "
        f"({100 * caught.mean() if len(rec) else 100:.1f}%); by file "
        f"{int(rec_files.sum())} of {len(rec_files)} (target 100%)",
        f"- false flags: {int(false)} of {len(files)} files ({100 * false / len(files):.1f}%) "
        f"carry a gate flag (any rule but {', '.join(sorted(ADVISORY))}) although no "
        f"population is more than {OFF_PP:g} pp off (target <= 5%); files with a gate flag "
        f"in all: {int(files['flagged'].sum())}; {int(adv_only)} more files carry only "
        f"{', '.join(sorted(ADVISORY))} (a rare subset with fewer than 50 events)",
        f"- rules on the falsely flagged files (a file may carry several): {rule_text}",
    ]


def miss_causes(df: pd.DataFrame) -> pd.DataFrame:
    """Per population, over the file rows missing a target: the true events lost at each
    gate of the chain (summed over those files, largest first) and the false events kept."""
    first = _first(df)
    first = first[~first["population"].isin(TRUNK)]
    miss = first[~_meets(first)]
    rows = []
    for pop, g in miss.groupby("population", sort=False):
        total: dict[str, int] = {}
        for text in g["lost_at"].fillna(""):
            for part in filter(None, str(text).split("; ")):
                name, n = part.rsplit(" ", 1)
                total[name] = total.get(name, 0) + int(n)
        false = total.pop("false", 0)
        lost = sorted(total.items(), key=lambda kv: -kv[1])
        rows.append(
            {
                "population": pop,
                "files missing": len(g),
                "true events lost, by gate": ", ".join(f"{k} {v}" for k, v in lost) or "-",
                "false events kept": false,
            }
        )
    return pd.DataFrame(rows)


def flag_counts(df: pd.DataFrame) -> pd.DataFrame:
    """How often each rule fired (file x template x population rows bearing it)."""
    tags = df["flags"].str.split("; ").explode()
    tags = tags[tags.ne("") & tags.notna()]
    rule = tags.str.split(":").str[0]
    return rule.value_counts().rename_axis("rule").reset_index(name="population rows")


def _md(df: pd.DataFrame) -> str:
    if df.empty:
        return "(none)"
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in df.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in r]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "immunoprofile", "gating"]
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (+ uncommitted changes)" if dirty else "")


def arm_section(name: str, df: pd.DataFrame) -> list[str]:
    rec = recall_rows(df)
    missed = rec[rec["flags"].eq("")]
    conds = df[["seed", "cohort", "conditions"]].drop_duplicates()
    cohorts = df[["seed", "cohort"]].drop_duplicates()
    drawn = sorted(cohorts.loc[cohorts["cohort"] == "drift 1", "seed"])
    text = [f"## {name}", "", f"{len(drawn)} seeds x 2 cohorts (seeds "]
    text[-1] += ", ".join(map(str, drawn)) + ")."
    text += ["", *summary_lines(df)]
    text += ["", "### Per population", ""]
    text += [_md(population_table(df)), ""]
    if "lost_at" in df.columns:
        text += [
            "### Where the files missing a target lost their events",
            "",
            "Over the file rows that miss a population's target: the true events of that "
            "population dropped at each gate of its chain (a trunk gate, an ancestor, or "
            "its own gate), summed over those files, and the false events it kept.",
            "",
            _md(miss_causes(df)),
            "",
        ]
    if name.startswith("Widened"):
        text += ["### Conditions drawn per cohort", "", _md(conds), ""]
    text += [f"### Errors > {OFF_PP:g} pp on {', '.join(RECALL_POPULATIONS)} ({len(rec)})", ""]
    text += [_md(rec.assign(error=rec["error"].map(lambda e: f"{e:+.2f}"))), ""]
    text += [f"Not flagged: {len(missed)}.", "", "### Rules that fired", ""]
    text += [_md(flag_counts(df)), ""]
    return text


def _shown(argv: list[str]) -> list[str]:
    """The command line as the document quotes it (the note's text left out)."""
    out, skip = [], False
    for a in argv:
        if skip:
            out.append("...")
            skip = False
            continue
        out.append(a)
        skip = a == "--note"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20, help="number of fresh random seeds")
    ap.add_argument("--seed-list", type=int, nargs="+", help="repeat these seeds instead")
    ap.add_argument("--patients", type=int, default=7)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--strong-drift", type=float, default=2.0)
    ap.add_argument("--widened", action="store_true", help="also the widened-conditions arm")
    ap.add_argument(
        "--widened-seeds", type=int, help="run the widened arm on the first N seeds only (time)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="cohorts in parallel processes")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "gating_evaluation.md")
    ap.add_argument("--csv", type=Path, help="also write the per-file x population rows")
    ap.add_argument("--commit", help="commit id to name in the document (default: git HEAD)")
    ap.add_argument(
        "--records", type=Path, help="folder for each cohort's file records (pickle, QC studies)"
    )
    ap.add_argument("--note", help="a paragraph placed under the title (e.g. why fewer seeds)")
    args = ap.parse_args(argv)
    # seeds < 2**31 drawn from the OS: new every run, printed so a run can be repeated
    seeds = args.seed_list or sorted(secrets.randbelow(2**31 - 2) for _ in range(args.seeds))
    print("seeds:", " ".join(map(str, seeds)), flush=True)
    commit = args.commit or _commit()
    t0 = time.perf_counter()
    arms = {"Standard cohorts": False}
    if args.widened:
        arms["Widened conditions"] = True
    results = {}
    for name, widened in arms.items():
        print(f"{name}:", flush=True)
        arm_seeds = seeds[: args.widened_seeds] if widened and args.widened_seeds else seeds
        rec = (
            None if args.records is None else args.records / ("widened" if widened else "standard")
        )
        results[name] = evaluate(
            arm_seeds, args.patients, args.events, args.strong_drift, widened, args.jobs, rec
        )
    minutes = (time.perf_counter() - t0) / 60
    text = [
        "# Gating accuracy and QC on fresh random seeds",
        "",
        "Made by `python benchmarks/gating_evaluation.py "
        + " ".join(_shown(argv if argv is not None else sys.argv[1:]))
        + f"` on commit `{commit}` in {minutes:.0f} min. Seeds drawn for this run (default "
        "cohort seed s, strong-drift cohort seed s + 1): "
        + ", ".join(map(str, seeds))
        + f". {args.patients} patients x baseline/week24 = {2 * args.patients} files per "
        f"cohort, {args.events:,} events per file, drift 1 and {args.strong_drift:g}; "
        f"templates {', '.join(TEMPLATES)}; FCS round trip; per-event truth.",
        "",
        "Targets (issue 11): >= 97 % of files meet every per-population target (F1 >= 0.95 "
        f"for {', '.join(sorted(MAIN))}, >= 0.90 for the subsets; |error| of percent of "
        f"parent <= {FREQ_MAX} pp); every file more than {OFF_PP:g} pp off on "
        f"{', '.join(RECALL_POPULATIONS)} carries a QC flag bearing on that population "
        "(on it, an ancestor or the whole file); false flags (a flagged file with no "
        f"population more than {OFF_PP:g} pp off) <= 5 % of files. `live` is listed "
        "(recall population) but, as the trunk, carries no F1 target.",
        "",
    ]
    if args.note:
        text[4:4] = [args.note, ""]
    for name, df in results.items():
        text += arm_section(name, df)
    out = "\n".join(text) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(out)
    if args.csv:
        pd.concat([df.assign(arm=name) for name, df in results.items()], ignore_index=True).to_csv(
            args.csv, index=False
        )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
