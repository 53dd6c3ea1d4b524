"""Trial analysis end to end with the immunoprofile Python API.

The question of the trial (7 people with progressive multiple sclerosis given autologous
mesenchymal stromal cells): how did regulatory T cells, Th17 cells, B cells and NK cells
change from baseline to week 24 (and week 48) in each patient, and is the change
consistent across patients?

This tutorial answers it on a simulated cohort with a known effect (Treg up, Th17 down,
B and NK unchanged), so every number can be checked against the truth. Replace the
simulation step with your own FCS files and samplesheet to analyse real data.

Run it as a script (``python examples/trial_analysis.py --out trial_example``); the
notebook ``trial_analysis.ipynb`` holds the same cells. Each ``# %%`` starts a cell.
"""

# %% Parameters: a smaller cohort runs faster (e.g. PATIENTS = 3, EVENTS = 5_000)
import argparse
import sys
from pathlib import Path

OUT = Path("trial_example")  # everything is written below this folder
PATIENTS = 7  # the trial enrolled 7 patients
EVENTS = 20_000  # events per FCS file
VISITS = ("baseline", "week24", "week48")
SEED = 0  # every random step is seeded: the same seed gives the same numbers
JOBS = 2  # files gated in parallel processes

if __name__ == "__main__" and "ipykernel" not in sys.modules:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--patients", type=int, default=PATIENTS)
    ap.add_argument("--events", type=int, default=EVENTS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--jobs", type=int, default=JOBS)
    ap.add_argument("--visits", nargs="+", default=list(VISITS), help="the first is the baseline")
    args = ap.parse_args()
    OUT, PATIENTS, EVENTS, SEED, JOBS = args.out, args.patients, args.events, args.seed, args.jobs
    VISITS = tuple(args.visits)

# %% 1. A cohort of FCS files
# `simulate_cohort` writes one FCS file per patient and visit, a samplesheet that says which
# file is which patient and visit, and the true population frequencies of every file.
import immunoprofile as ip

cohort = OUT / "cohort"
ip.simulate_cohort(cohort, patients=PATIENTS, visits=VISITS, events=EVENTS, seed=SEED)
files = sorted(cohort.glob("*.fcs"))
samplesheet = cohort / "samplesheet.csv"
print(f"{len(files)} FCS files, e.g. {files[0].name}")

# %% 2. Look at one file
# A Sample holds the events (float32, events x channels), the channel table (PnN name,
# PnS marker, range) and the TEXT keywords.
s = ip.read_fcs(files[0])
print(s)
print(s.channels[["name", "marker", "range"]].to_string(index=False))

# %% 3. The gating template
# Templates name markers, not channels, so one template serves every cytometer. The
# built-in `immune_profile` template covers Treg, Th17/Th1/Th2, B and NK cells and their
# subsets, with data-adaptive gates that find their position in each file.
template = ip.load_template("immune_profile")
print([p.name for p in template.populations])

# %% 4. Gate every file
# `gate` compensates, transforms and gates each file; a file that fails is reported in
# `.errors` and the others go on. `.table()` is the tidy population table: one row per
# sample x population with counts, percent of parent and percent of lymphocytes.
res = ip.gate(files, template, samplesheet=samplesheet, jobs=JOBS, seed=SEED)
table = res.table()
print(res.errors if len(res.errors) else "every file gated")
print(table[table["population"].isin(["Treg", "Th17", "B", "NK"])].head(8).to_string())
written = res.write(OUT / "gating")  # populations.csv, per-visit tables, gates.json, qc.csv

# %% 4b. Look at the gates of one file
# Every gate on its parent's events, axes in the instrument's units (logicle decades), the
# parent named in each title. In a notebook the figure shows inline by itself.
res.plot(res.samples[0], "Treg")

# %% 5. Per-visit tables: patients x populations, one per visit
for visit, wide in res.per_visit("percent_of_parent").items():
    cols = [c for c in ("Treg", "Th17", "B", "NK") if c in wide.columns]
    print(f"--- {visit}\n{wide[cols].round(2).to_string()}")

# %% 6. Unsupervised clustering as a cross-check of the gates
# A self-organising map with consensus metaclustering, on live cells, with clusters
# named by marker rules; the agreement table compares the clustered frequency of each
# population with the gated one (Lin's concordance, Bland-Altman bias). Its `naming`
# column says which populations the SOM nodes carry (an independent check) and which were
# named per event by each sample's own template gate (agreement by construction).
from immunoprofile.clustering.agreement import agreement_table

cl = ip.cluster(
    files, template=template, parent="live", samplesheet=samplesheet, seed=SEED,
    n_metaclusters=20,
)  # fmt: skip
agreement = agreement_table(table, cl.table(include_metaclusters=False), naming=cl.naming_table())
print(agreement.round(3).to_string(index=False))

# %% 7. Change from baseline, per patient
# `compare` pairs each patient's follow-up visits with their baseline: difference in
# percentage points, fold change and log2 ratio. A patient who missed a visit keeps rows
# with missing values, and `.problems` says so.
cmp = ip.compare(table, baseline="baseline", followup=list(VISITS[1:]))
ch = cmp.changes
print(
    ch[(ch["population"] == "Treg") & (ch["measure"] == "percent_of_parent")][
        ["patient", "followup_visit", "baseline", "followup", "difference", "log2_ratio"]
    ]
    .round(3)
    .to_string(index=False)
)
print(cmp.problems if len(cmp.problems) else "no missing visits or identities")

# %% 8. Cohort statistics for the four endpoints
# Hodges-Lehmann median change with its exact confidence interval, exact signed-rank p
# (the `test` column says which exact test), BH q across populations. With 7 patients the
# smallest possible two-sided exact p is 2/128 = 0.0156: read the effect sizes first.
ep = cmp.endpoint_stats(measure="percent_of_parent")
cols = ["population", "followup_visit", "n_pairs", "median_baseline", "median_followup",
        "hl_estimate", "hl_ci_low", "hl_ci_high", "direction", "p_value", "q_value", "test"]  # fmt: skip
print(ep[cols].round(4).to_string(index=False))

# %% 9. The simulated truth: did the analysis recover the known effect?
# The simulator wrote the true frequency of every population in every file; comparing that
# truth the same way gives the true median change to set beside the measured one.
from immunoprofile.pipeline import truth_check

truth_file = cohort / "truth_frequencies.csv"
if truth_file.is_file():
    import pandas as pd

    truth = pd.read_csv(truth_file, dtype={"patient": str, "visit": str})
    check = truth_check(truth, cmp)
    check = check[check["population"].isin(["Treg", "Th17", "B", "NK"])]
    print(check.round(3).to_string(index=False))

# %% 10. Plots
from immunoprofile.plots import paired

figs = OUT / "figures"
figs.mkdir(parents=True, exist_ok=True)
endpoints = ["Treg", "Th17", "B", "NK"]
paired.save(paired.paired_plot(cmp.changes, populations=endpoints), figs / "paired.png")
paired.save(paired.forest_plot(cmp.stats, populations=endpoints), figs / "forest.png")
paired.save(paired.log2_heatmap(cmp.changes, followup_visit=VISITS[1]), figs / "heatmap.png")
print(sorted(p.name for p in figs.glob("*.png")))
paired.forest_plot(cmp.stats, populations=endpoints)  # shows inline in a notebook

# %% 11. The report: one HTML file to email
from immunoprofile.report import build_report, fitted_gates_table

report = build_report(
    OUT / "report.html",
    cmp,
    table,
    cohort=res.summary(),
    qc=res.qc(),
    errors=res.errors,
    fitted_gates=fitted_gates_table(res.fitted_gates()),
    agreement=agreement,
    provenance={"template name": template.name},
    command="examples/trial_analysis.py",
)
print(f"report: {report}")
