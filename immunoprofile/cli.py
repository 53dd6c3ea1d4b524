"""The ``immunoprofile`` command line: a thin shell over the public API.

Only click is imported at start-up; each command imports what it needs when it runs, so
``immunoprofile --help`` answers at once.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from immunoprofile import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="immunoprofile")
@click.option(
    "--verbose",
    "-v",
    count=True,
    help="Log each stage with its duration (-v), or everything (-vv), on stderr.",
)
@click.option(
    "--quiet",
    "-q",
    is_flag=True,
    help="No progress bars or summaries, warnings and errors only (as each command's -q).",
)
def main(verbose: int, quiet: bool) -> None:
    """Flow cytometry immune profiling: FCS files to per-visit population tables and
    baseline-to-follow-up statistics.

    Long stages show progress on stderr (gating, clustering, comparison, report);
    ``immunoprofile -v COMMAND`` also logs each stage with its duration.
    """
    from immunoprofile.progress import configure_logging

    configure_logging(verbose, quiet)


def _quiet(local: bool = False) -> bool:
    """A command's own --quiet, or the one given before the command name."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool(local or (root is not None and root.params.get("quiet")))


def fail(message: str, code: int = 1) -> None:
    """Print an error to stderr and exit with ``code``."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _fail_on_problems(
    failed: Sequence[str], n_files: int, clashes: Sequence[Any], kept: str, out_dir: Path
) -> None:
    """End a batch command (gate, cluster): print each failed file's message, then exit 1
    with one line saying how many files failed and which ones share an identity (``kept``
    says what became of those), pointing at ``out_dir/errors.csv``; return when neither."""
    for message in failed:
        click.secho(f"failed: {message}", fg="red", err=True)
    problems = []
    if failed:
        problems.append(f"{len(failed)} of {n_files} file(s) failed")
    if clashes:
        from immunoprofile.cohort import clash_summary

        problems.append(f"{clash_summary(clashes)} ({kept})")
    if problems:
        fail(f"{'; '.join(problems)}; see {out_dir / 'errors.csv'}")


# === inspect (FCS reading) =================================================


#: the folder `gate` writes into when no --out is given (in the current folder)
DEFAULT_OUT = "immunoprofile-results"


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--dataset", default=0, show_default=True, help="Data set to describe.")
def inspect(files: tuple[str, ...], dataset: int) -> None:
    """Describe FCS FILES: channels, markers, events, version, spillover, date, cytometer.

    Only HEADER and TEXT are read. A file that cannot be read is reported and the
    command goes on to the next one, exiting non-zero at the end.
    """
    from rich.console import Console

    from immunoprofile.describe import describe_files

    described, errors = describe_files(files, dataset=dataset)
    console = Console(highlight=False)
    for d in described:
        _print_description(console, d)
    for message in errors["message"]:
        click.secho(f"error: {message}", fg="red", err=True)
    if len(errors):
        fail(f"{len(errors)} of {len(files)} file(s) could not be read")


def _print_description(console, d) -> None:  # noqa: ANN001
    """One file's summary and channel table (text from the file is escaped: a name such
    as ``tube[1].fcs`` is not rich markup)."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{escape(d.file)}[/bold]")
    console.print(
        f"  FCS {d.version} | {d.n_events} events | {d.n_channels} channels | "
        f"data set {d.dataset + 1} of {d.n_datasets}"
    )
    console.print(
        f"  cytometer: {escape(d.cytometer or '-')} | acquired: {escape(d.acquired or '-')}"
    )
    console.print(f"  spillover: {'yes (' + d.spillover + ')' if d.spillover else 'no'}")
    for note in d.notes:
        console.print(f"  [yellow]note: {escape(note)}[/yellow]")
    table = Table(show_edge=False, pad_edge=False, box=None)
    for col in ("#", "channel", "marker", "range", "bits", "scale"):
        table.add_column(col)
    for i, row in d.channels.iterrows():
        table.add_row(str(i), escape(row["channel"]), escape(row["marker"]),
                      f"{row['range']:.10g}", str(row["bits"]), row["scale"])  # fmt: skip
    console.print(table)
    console.print()


# === simulate ==============================================================


@main.command()
@click.option(
    "--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
    help="Output folder.",
)  # fmt: skip
@click.option("--patients", default=7, show_default=True, type=click.IntRange(1, 999))
@click.option(
    "--visits",
    default="baseline,week24",
    show_default=True,
    help="Comma-separated visit names; the first is the baseline.",
)
@click.option(
    "--events", default=100_000, show_default=True, type=click.IntRange(1), help="Events per file."
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Seed of every random step.",
)
@click.option(
    "--drift",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Scale of per-file instrument drift (2 = strong).",
)
@click.option(
    "--effect",
    "effect_args",
    multiple=True,
    metavar="POP=CHANGE",
    help="Follow-up effect, e.g. Treg=+0.3 (x1.3), Th17=-0.3 (x0.7), NK=x1.5. Repeatable; overrides the default for that population.",
)
@click.option(
    "--no-effects",
    is_flag=True,
    help="No baseline-to-follow-up effect at all (not even the defaults).",
)
@click.option(
    "--plain-markers",
    is_flag=True,
    help="Write bare marker names in $PnS (no fluorochrome suffixes).",
)
@click.option(
    "--tube",
    "tube_args",
    multiple=True,
    metavar="NAME=M1,M2,...",
    help="Several tubes per visit: one file per tube with only these markers, e.g. "
    "--tube tcell=CD3,CD4,CD8,CD25,CD127,FOXP3,CD45RA,Viability,CD14 "
    "--tube bcell=CD3,CD19,CD20,IgD,CD27,CD38,CD24,Viability. Repeatable.",
)
def simulate(
    out_dir: str,
    patients: int,
    visits: str,
    events: int,
    seed: int,
    drift: float,
    effect_args: tuple[str, ...],
    no_effects: bool,
    plain_markers: bool,
    tube_args: tuple[str, ...],
) -> None:
    """Simulate a trial cohort: FCS files, samplesheet.csv and per-event truth.

    Default effect at follow-up visits: Treg share of CD4 x1.3, Th17 share of memory CD4
    x0.7, B and NK unchanged.
    """
    from immunoprofile.comparison import ENDPOINTS
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.simulate import follow_up_effects, parse_effect, simulate_cohort

    try:
        changes = dict(parse_effect(e) for e in effect_args)
    except ImmunoprofileError as exc:
        raise click.BadParameter(str(exc), param_hint="--effect") from None
    tubes = {}
    for arg in tube_args:
        name, _, markers = arg.partition("=")
        if not name.strip() or not markers.strip():
            raise click.BadParameter(f"expected NAME=M1,M2,..., got {arg!r}", param_hint="--tube")
        tubes[name.strip()] = [m.strip() for m in markers.split(",") if m.strip()]
    try:
        info = simulate_cohort(
            out_dir, patients=patients, visits=[v.strip() for v in visits.split(",") if v.strip()],
            events=events, seed=seed, effects=follow_up_effects(changes, defaults=not no_effects),
            drift=drift, plain_markers=plain_markers, tubes=tubes or None,
        )  # fmt: skip
    except ImmunoprofileError as exc:
        fail(str(exc))
    click.echo(f"wrote {len(info.fcs)} FCS files ({events} events each) to {info.out_dir}")
    click.echo(
        f"samplesheet: {info.samplesheet}; truth: *.truth.parquet, {info.frequencies_path.name}"
    )
    click.echo("median truth % of parent (Treg of CD4, Th17 of CD4 memory, B/NK of non-T):")
    click.echo(info.median_truth(ENDPOINTS).round(2).to_string())


@main.command("examples")
@click.option("--out", "-o", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder to write the example files into.")  # fmt: skip
def examples_cmd(out_dir: str) -> None:
    """Write the example files the README uses: a simulated FCS file with a FlowJo 10
    workspace, a Gating-ML 2.0 file and an openCyto template written for it, and a
    simulated CyTOF-like file."""
    from immunoprofile.examples import EXAMPLE_FILES, write_examples

    for p in write_examples(out_dir):
        click.echo(f"{p}: {EXAMPLE_FILES.get(p.name, 'simulated CyTOF-like file (no scatter)')}")


# === templates =============================================================


@main.group()
def templates() -> None:
    """List, show, validate and check gating templates."""


@templates.command("list")
def templates_list() -> None:
    """List the built-in templates with their populations and markers."""
    from rich.console import Console
    from rich.table import Table

    from immunoprofile.gating.template import templates_table

    table = Table(title="built-in templates (use the name with --template)")
    for col in ("name", "populations", "markers", "description"):
        table.add_column(col, overflow="fold")
    for r in templates_table().itertuples():
        if r.error:
            table.add_row(r.name, "-", "-", f"[red]invalid: {r.error}[/red]")
        else:
            table.add_row(r.name, str(r.populations), r.markers, r.description)
    Console().print(table)


@templates.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """Show template NAME (built-in name or JSON path) as a population tree."""
    from rich.console import Console
    from rich.markup import escape
    from rich.tree import Tree

    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.template import load_template

    try:
        t = load_template(name)
    except ImmunoprofileError as exc:
        fail(str(exc))
    title = getattr(t, "name", "") or name
    root = Tree(
        f"[bold]{title}[/bold]  ({len(t.populations)} populations; markers: "
        f"{', '.join(t.markers())})"
    )
    nodes: dict[str | None, Tree] = {None: root}
    for p in t.outline():  # parents come before their children
        parent = nodes.get(p["parent"], root)
        nodes[p["population"]] = parent.add(
            f"[bold]{escape(p['population'])}[/bold]  [dim]{escape(p['gate'])}[/dim]"
        )
    Console().print(root)


@templates.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def templates_validate(file: str) -> None:
    """Check a template FILE against the schema and its hierarchy; exit 1 if invalid."""
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.template import validate_template

    try:
        t = validate_template(file)
    except ImmunoprofileError as exc:
        fail(str(exc))
    click.echo(
        f"{file}: valid ({len(t.populations)} populations, markers: {', '.join(t.markers())})"
    )


@templates.command("check")
@click.argument("template")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--compensation",
    default=None,
    metavar="auto|keyword|none|FILE",
    help="Compensation mode to check (default: the template's).",
)
def templates_check(template: str, files: tuple[str, ...], compensation: str | None) -> None:
    """Before gating: which populations of TEMPLATE each of FILES supports, which
    alternatives it will use, which optional steps it skips, what it lacks, and how it
    will be compensated. Reads only the files' headers. Exit 1 when any file lacks an
    essential marker or cannot be read."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.plan import check_template

    try:
        check = check_template(template, files, compensation=compensation)
    except ImmunoprofileError as exc:
        fail(str(exc))
    name = check.template.name
    console = Console(width=max(Console().width, 100))
    colours = {"gate": "green", "alternative": "cyan", "skipped": "yellow"}
    for f in check.files:
        if f.error is not None:
            console.print(f"[red]{escape(f.file)}: {escape(f.error)}[/red]")
            continue
        table = Table(title=f"{escape(f.file)}: template {name}", title_justify="left")
        for col in ("population", "parent", "status", "uses / lacks"):
            table.add_column(col, overflow="fold")
        for r in f.steps().itertuples():
            colour = colours.get(r.status, "red")
            # a root population's parent is missing: None, or NaN in pandas 3's string column
            parent = r.parent if isinstance(r.parent, str) and r.parent else "-"
            detail = r.detail if isinstance(r.detail, str) else ""
            table.add_row(r.population, parent, f"[{colour}]{r.status}[/{colour}]",
                          escape(detail))  # fmt: skip
        console.print(table)
        if f.compensation is not None:
            c = f.compensation
            console.print(f"  compensation: {c.mode} -> {c.status}: {escape(c.reason)}")
        else:
            console.print(f"  [red]compensation: {escape(str(f.compensation_error))}[/red]")
        if f.plan is not None and not f.plan.ok:
            console.print(f"[red]{escape(str(f.plan.error()))}[/red]")
        else:
            console.print(
                f"  [green]ready[/green]: {f.n_gated} of {len(f.plan.steps)} populations "
                f"will be gated, {len(f.plan.skipped)} optional step(s) skipped"
            )
    if not check.ok:
        fail(f"{check.n_problems} problem(s) in {len(files)} file(s)")


# === gate ==================================================================


@main.command("gate")
@click.option(
    "--template",
    "-t",
    "template",
    required=True,
    multiple=True,
    help="Built-in template name (tregs, th17, ...) or a template JSON file; for several "
    "tubes per visit, TUBE=TEMPLATE once per tube (--template tcell=tregs --template "
    "bcell=b_cells), plus optionally one plain template for any other tube. A samplesheet "
    "'template' column names a file's template and wins.",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "-o",
    "out",
    default=None,
    type=click.Path(file_okay=False),
    help="Output folder (created; files in it are replaced atomically). Default: "
    f"{DEFAULT_OUT}/ in the current folder, or {DEFAULT_OUT}-2/, ... when that folder "
    "holds files another command or person wrote; the folder used is announced.",
)
@click.option(
    "--samplesheet",
    type=click.Path(dir_okay=False, exists=True),
    help="CSV with columns file,patient,visit[,tube][,lymphocytes_per_ul][,control]; control: "
    "fluorescence-minus-one files per marker, e.g. IgD=fmo_IgD.fcs;CD24=fmo_CD24.fcs.",
)
@click.option(
    "--pattern",
    help="Filename regex with named groups patient and visit, e.g. "
    "'(?P<patient>P\\d+)_(?P<visit>\\w+)\\.fcs'.",
)
@click.option(
    "--patient-keyword",
    multiple=True,
    help="FCS keyword holding the patient (default PATIENT_ID, PATIENT, SUBJECT_ID, SUBJECT).",
)
@click.option(
    "--visit-keyword",
    multiple=True,
    help="FCS keyword holding the visit (default VISIT, VISIT_ID, TIMEPOINT).",
)
@click.option(
    "--jobs",
    "-j",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Files gated in parallel processes.",
)
@click.option("--scheduler", help="Dask scheduler address (tcp://host:8786); needs the dask extra.")
@click.option(
    "--plots",
    is_flag=True,
    help="Write a figure per gate and sample into OUT/plots/<sample>/ (instrument units).",
)
@click.option(
    "--seed",
    default=0,
    show_default=True,
    type=click.IntRange(0),
    help="Seed of every random step of the adaptive gates (subsampling, mixture starts).",
)
@click.option(
    "--compensation",
    default=None,
    metavar="auto|keyword|none|FILE",
    help="How to compensate (default: the template's, normally auto). auto: the file's "
    "spillover keyword, unless the file is already compensated (Comp- channels, an "
    "ALREADY_COMPENSATED keyword); a file without one is taken as compensated, with a "
    "warning and a qc.csv line. keyword: the file's spillover keyword (an error without "
    "one). none: no compensation. FILE: a spillover matrix (CSV/TSV).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table.")
def gate_cmd(
    template: tuple[str, ...],
    files: tuple[str, ...],
    out: str,
    samplesheet: str | None,
    pattern: str | None,
    patient_keyword: tuple[str, ...],
    visit_keyword: tuple[str, ...],
    jobs: int,
    scheduler: str | None,
    plots: bool,
    seed: int,
    compensation: str | None,
    quiet: bool,
) -> None:
    """Gate FILES with a template and write per-visit population tables into OUT.

    Writes populations.csv/.parquet (one row per sample x population),
    populations_<visit>.csv and populations.xlsx (patients x populations per visit),
    gates.json (fitted gates per sample), provenance.json (compensation and transforms
    applied per sample, with their parameters), qc.csv, errors.csv, samples.csv and
    outputs.json (what this run wrote; a populations_<visit>.csv an earlier run into OUT
    wrote and this one does not is removed). A file
    that fails is listed in errors.csv and the others are still gated. Files that claim
    the same patient and visit (and tube) are announced before gating, all gated and kept
    in populations.csv, listed in errors.csv, and left out of the per-visit tables. Exit
    status: 0 when every file was gated with its own identity, 1 when any failed or shared
    an identity (or the run could not start), 2 for a usage error.
    """
    from rich.console import Console
    from rich.table import Table

    from immunoprofile.cohort import CLASH_ERROR
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.run import parse_template_args
    from immunoprofile.pipeline import gate_to_folder
    from immunoprofile.results import failures

    try:
        templates = parse_template_args(template)
    except ImmunoprofileError as exc:
        raise click.BadParameter(str(exc), param_hint="--template") from None
    try:
        with _clash_warnings_to_terminal():
            res, out_dir = gate_to_folder(
                files, templates, out, plots=plots, samplesheet=samplesheet, pattern=pattern,
                jobs=jobs, scheduler=scheduler, progress=not _quiet(quiet), seed=seed,
                patient_keyword=list(patient_keyword) or None,
                visit_keyword=list(visit_keyword) or None, compensation=compensation,
            )  # fmt: skip
    except ImmunoprofileError as exc:
        fail(str(exc))
    if out is None:
        click.secho(f"results written to {out_dir}/ (no --out given)", err=True, fg="cyan")
    summary = res.summary()
    table = res.table()
    if not _quiet(quiet):
        t = Table(title=f"{len(summary)} file(s) gated with {res.template_names()}")
        tubes = "tube" in summary.columns
        per_sample = "gates" in summary.columns and summary["gates"].notna().any()
        cols = ("sample", "patient", "visit", *(("tube",) if tubes else ()), "events", "status",
                "qc flags", *(("gates",) if per_sample else ()))  # fmt: skip
        for col in cols:
            t.add_column(col, justify="right" if col in ("events", "qc flags") else "left")
        for row in summary.itertuples():
            status = "[green]ok[/green]" if row.status == "ok" else f"[red]{row.status}[/red]"
            if row.status == CLASH_ERROR:
                status = "[red]identity clash[/red]"
            events = f"{int(row.events):,}" if row.status in ("ok", CLASH_ERROR) else "-"
            tube = (row.tube or "-",) if tubes else ()
            gates = (row.gates or "-",) if per_sample else ()
            t.add_row(
                row.sample, row.patient or "-", row.visit or "-", *tube, events, status,
                str(row.qc_flags), *gates,
            )  # fmt: skip
        Console().print(t)
    _print_files_to_review(res.flagged_files())
    click.echo(
        f"wrote {len(table)} population rows for {len(summary) - res.n_failed} sample(s) to "
        f"{out_dir}/ (populations.csv, per-visit tables, gates.json, provenance.json, qc.csv, "
        "errors.csv)"
    )
    _fail_on_problems(
        list(failures(res.errors)["message"]),
        len(summary),
        res.clashes,
        "gated, in populations.csv, left out of the per-visit tables",
        out_dir,
    )


def _print_files_to_review(flagged: Any, width: int = 160) -> None:
    """The gated files that carry QC flags, one line each with the rules that fired
    (details in qc.csv); shown even with --quiet: a silent wrong number is worse."""
    if flagged is None or not len(flagged):
        return
    click.echo(f"files to review ({len(flagged)}; every flag with its numbers in qc.csv):")
    for row in flagged.itertuples():
        line = f"  {row.sample}: {row.flags} flag(s): {row.rules}"
        click.echo(line if len(line) <= width else line[: width - 3] + "...")


@contextlib.contextmanager
def _clash_warnings_to_terminal() -> Iterator[None]:
    """Show an `IdentityClashWarning` at once, as a plain yellow line on stderr (before the
    progress bar starts), instead of Python's warning format; other warnings unchanged."""
    import warnings

    from immunoprofile.exceptions import CompensationWarning, IdentityClashWarning

    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            if issubclass(category, IdentityClashWarning | CompensationWarning):
                click.secho(f"warning: {message}", fg="yellow", err=True)
            else:
                previous(message, category, filename, lineno, file, line)

        warnings.simplefilter("always", IdentityClashWarning)
        warnings.simplefilter("always", CompensationWarning)
        warnings.showwarning = show
        yield


# === cluster ===============================================================


def _parse_grid(text: str) -> tuple[int, int]:
    import re

    m = re.fullmatch(r"\s*(\d+)\s*[xX*,]\s*(\d+)\s*", text)
    if not m:
        raise click.BadParameter(f"expected ROWSxCOLS such as 10x10, got {text!r}")
    return int(m[1]), int(m[2])


def _parse_metaclusters(text: str) -> int | tuple[int, int]:
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise click.BadParameter(f"expected a number (20) or a range (10-30), got {text!r}")
    return int(m[1]) if m[2] is None else (int(m[1]), int(m[2]))


@main.command("cluster")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Output folder (created; files in it are replaced atomically).")  # fmt: skip
@click.option("--markers", multiple=True,
              help="Markers to cluster on (repeat or comma-separate); default: every stained "
              "fluorescence channel except viability.")  # fmt: skip
@click.option("--metaclusters", "metaclusters", default="20", show_default=True,
              help="Number of metaclusters, or a range (10-30) to choose from by consensus.")  # fmt: skip
@click.option("--grid", default="10x10", show_default=True, help="SOM grid, ROWSxCOLS.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option("--parent", default=None,
              help="Template population to pre-gate on before clustering (e.g. live).")  # fmt: skip
@click.option("--template", "-t", default="immune_profile", show_default=True,
              help="Template giving compensation, transforms and the --parent population; "
              "'none' clusters the values as stored.")  # fmt: skip
@click.option("--subsample", default=20000, show_default=True, type=click.IntRange(min=1),
              help="Events per file in the pooled training set.")  # fmt: skip
@click.option("--name-level", type=click.Choice(["metacluster", "node"]), default="node",
              show_default=True, help="Which clusters carry population names.")  # fmt: skip
@click.option("--sample-gates/--no-sample-gates", default=True, show_default=True,
              help="Decide cluster phenotypes from the template's gates fitted to each "
              "sample (gates every file once); off: the rules' pooled cuts only.")  # fmt: skip
@click.option("--umap", is_flag=True, help="Also compute and draw a UMAP (slow on first use).")
@click.option("--gating", "gating_table", type=click.Path(dir_okay=False, exists=True),
              help="populations.csv from 'immunoprofile gate': writes agreement.csv/.png.")  # fmt: skip
@click.option("--samplesheet", type=click.Path(dir_okay=False, exists=True),
              help="CSV with columns file,patient,visit[,tube][,lymphocytes_per_ul].")  # fmt: skip
@click.option("--pattern", help="Filename regex with named groups patient and visit.")
@click.option("--no-plots", is_flag=True, help="Skip the figures.")
@click.option("--jobs", "-j", default=1, show_default=True, type=click.IntRange(min=1),
              help="Files read and mapped in parallel processes (the same result).")  # fmt: skip
@click.option("--scheduler",
              help="Dask scheduler address (tcp://host:8786): files read and mapped on that "
              "cluster; needs the dask extra.")  # fmt: skip
@click.option("--scratch", type=click.Path(file_okay=False),
              help="Folder for each file's clustered events between reading and mapping "
              "(default: a temporary folder with --jobs > 1 or --scheduler); on a cluster "
              "of several machines, a folder on shared storage.")  # fmt: skip
def cluster_cmd(
    files: tuple[str, ...],
    out: str,
    markers: tuple[str, ...],
    metaclusters: str,
    grid: str,
    seed: int,
    parent: str | None,
    template: str,
    subsample: int,
    name_level: str,
    sample_gates: bool,
    umap: bool,
    gating_table: str | None,
    samplesheet: str | None,
    pattern: str | None,
    no_plots: bool,
    jobs: int,
    scheduler: str | None,
    scratch: str | None,
) -> None:
    """Cluster FILES FlowSOM-style (SOM + consensus metaclusters), name the clusters by
    phenotype and write the population table (method=clustering) into OUT.

    Writes populations.csv/.parquet, metaclusters.csv (name, size and median phenotype of
    every metacluster), metacluster_counts.csv, thresholds.csv, unassigned.csv,
    sample_gates.csv (the per-sample template gates used for naming), and the
    figures heatmap.png and som_grid.png (+ umap_*.png with --umap, agreement.csv and
    agreement.png with --gating). A file that cannot be read or gated is left out and
    listed in errors.csv. Files that claim the same patient and visit (and tube) are all
    clustered and kept in populations.csv (identity_clash True), announced, and listed in
    errors.csv. Exit status: 0 when every file was clustered with its own identity, 1 when
    any failed or shared an identity (or the run could not start), 2 for a usage error.
    """
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.pipeline import cluster_to_folder
    from immunoprofile.results import failures

    try:
        with _clash_warnings_to_terminal():
            res, written = cluster_to_folder(
                files,
                out,
                gating=gating_table,
                plots=not no_plots,
                markers=[m.strip() for item in markers for m in item.split(",") if m.strip()]
                or None,
                n_metaclusters=_parse_metaclusters(metaclusters),
                grid=_parse_grid(grid),
                seed=seed,
                parent=parent,
                template=None if template.lower() == "none" else template,
                subsample_per_sample=subsample,
                umap=umap,
                name_level=name_level,
                samplesheet=samplesheet,
                pattern=pattern,
                sample_gates=sample_gates,
                progress=not _quiet(),
                jobs=jobs,
                scheduler=scheduler,
                scratch=scratch,
            )
    except ImmunoprofileError as exc:
        fail(str(exc))
    summ = res.metaclusters()
    named = summ[summ["name"] != "unassigned"]
    click.echo(
        f"clustered {len(res.clustered_samples)} file(s) on {len(res.markers)} markers into "
        f"{res.n_metaclusters} metaclusters ({len(named)} named, "
        f"{len(summ) - len(named)} unassigned); wrote {len(written)} files to {out}/"
    )
    _fail_on_problems(
        list(failures(res.errors)["message"]),
        len(files),
        res.clashes,
        "clustered, in populations.csv with identity_clash",
        Path(out),
    )


# === compare / report / run / demo =========================================


def _print_stats(cmp, measure: str | None = None) -> None:  # noqa: ANN001
    """Rich table of the statistics the report's key results rest on."""
    from rich.console import Console
    from rich.table import Table

    from immunoprofile.quantify import value_label
    from immunoprofile.report import key_statistics

    st = key_statistics(cmp, measure)
    t = Table(
        title=f"change from {cmp.baseline}",
        caption="HL = Hodges-Lehmann median change (pp = percentage points) with exact CI; "
        "p exact (test W = Wilcoxon signed-rank, S = sign-flip permutation with "
        "ties/zeros); q = Benjamini-Hochberg",
    )
    for col in ("population", "value", "visit", "n", "HL", "exact CI", "p", "q", "test"):
        left = col in ("population", "value", "visit")
        t.add_column(col, justify="left" if left else "right")
    for r in st.itertuples():
        ci = f"{r.hl_ci_low:+.2f}..{r.hl_ci_high:+.2f}" if r.hl_ci_low == r.hl_ci_low else "n/a"
        t.add_row(
            str(r.population),
            value_label(str(r.measure), str(r.parent)),
            str(r.followup_visit),
            str(r.n_pairs),
            f"{r.hl_estimate:+.2f}",
            ci,
            f"{r.p_value:.3g}",
            f"{r.q_value:.3g}",
            "W" if str(r.test).startswith("wilcoxon") else ("S" if "sign" in str(r.test) else "-"),
        )
    Console(width=max(100, Console().width)).print(t)


@main.command("compare")
@click.argument("table", type=click.Path(dir_okay=False, exists=True))
@click.option("--baseline", default="baseline", show_default=True, help="Baseline visit name.")
@click.option(
    "--followup",
    multiple=True,
    help="Follow-up visit (repeat for several); default: every visit besides the baseline.",
)
@click.option(
    "--measure",
    "--value",
    "value",
    multiple=True,
    help="Measure(s) to compare: percent_of_parent, percent_of_lymphocytes, cells_per_ul "
    "(repeatable; default: all present). --value is the same option.",
)
@click.option("--population", multiple=True, help="Restrict to these populations (repeatable).")
@click.option("--conf", default=0.95, show_default=True, help="Confidence level of HL intervals.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--report/--no-report", default=True, show_default=True, help="Write report.html.")
@click.option("--quiet", "-q", is_flag=True, help="No summary table.")
def compare_cmd(
    table: str,
    baseline: str,
    followup: tuple[str, ...],
    value: tuple[str, ...],
    population: tuple[str, ...],
    conf: float,
    out: str,
    report: bool,
    quiet: bool,
) -> None:
    """Per-patient change from baseline and exact cohort statistics from a population TABLE.

    Writes changes.csv (patient x population x measure x follow-up visit), stats.csv
    (population x measure x visit: medians, Hodges-Lehmann change with exact CI, exact
    p, BH q), problems.csv, comparison.json and, unless --no-report, report.html.
    """
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.pipeline import compare_to_folder

    try:
        cmp, html = compare_to_folder(
            table, out, baseline=baseline, followup=list(followup) or None,
            value=list(value) or None, populations=list(population) or None, conf=conf,
            report=report, command=_command_line(), progress=not _quiet(quiet),
        )  # fmt: skip
    except ImmunoprofileError as exc:
        fail(str(exc))
    if not _quiet(quiet):
        _print_stats(cmp)
    for p in cmp.problems.itertuples():
        click.secho(f"note: {p.message}", fg="yellow", err=True)
    click.echo(f"wrote changes.csv, stats.csv, problems.csv to {Path(out)}/")
    if html is not None:
        click.echo(f"report: {html}")


def _command_line() -> str:
    """The running command as it could be typed again: its path and every parameter the
    user gave (defaults left out), rebuilt from click's parsed values."""
    import shlex

    from click.core import ParameterSource

    ctx = click.get_current_context()
    words = ["immunoprofile", *ctx.command_path.split()[1:]]
    for param in ctx.command.params:
        name = param.name
        if name is None or ctx.get_parameter_source(name) in (ParameterSource.DEFAULT, None):
            continue
        value = ctx.params.get(name)
        values = list(value) if isinstance(value, (tuple, list)) else [value]
        if isinstance(param, click.Argument):
            words += [str(v) for v in values]
        elif isinstance(value, bool) or param.is_flag:
            flag = param.opts[0] if value else (param.secondary_opts or param.opts)[0]
            words.append(flag)
        else:
            for v in values:
                words += [param.opts[0], str(v)]
    return " ".join(shlex.quote(w) for w in words)


@main.command("report")
@click.argument("directory", type=click.Path(file_okay=False, exists=True))
@click.option(
    "--out", "-o", type=click.Path(dir_okay=False), help="HTML file (default DIR/report.html)."
)
@click.option("--baseline", help="Recompute the comparison with this baseline visit.")
@click.option("--followup", multiple=True, help="Recompute with these follow-up visit(s).")
@click.option(
    "--measure",
    "--value",
    "measure",
    help="One measure for every endpoint, the tables and the plots (percent_of_parent, "
    "percent_of_lymphocytes, cells_per_ul). Default: B and NK as % of lymphocytes, the "
    "other endpoints as % of parent. --value is the same option.",
)
def report_cmd(
    directory: str,
    out: str | None,
    baseline: str | None,
    followup: tuple[str, ...],
    measure: str | None,
) -> None:
    """Write one self-contained HTML report from a results DIRECTORY.

    DIRECTORY is what `immunoprofile run`/`demo` write, or the output folder of `gate`,
    `cluster` or `compare`. The comparison is read as written. A `gate` or `cluster`
    folder holds none: its report shows what was written (cohort, per-visit tables,
    gating, clustering) and no statistics. --baseline/--followup compute a comparison
    from the population table with those visits, and the report and a warning here say so.
    """
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.progress import stage
    from immunoprofile.report import report_from_dir

    try:
        with stage("writing the report", not _quiet()):
            path = report_from_dir(
                directory,
                out=out,
                baseline=baseline,
                followup=list(followup) or None,
                measure=measure,
            )
    except ImmunoprofileError as exc:
        fail(str(exc))
    click.echo(f"report: {path}")


@main.command("run")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False))
@click.option(
    "--config",
    type=click.Path(dir_okay=False, exists=True),
    help="JSON or YAML file with any of: files, template, samplesheet, pattern, baseline, "
    "followup, out, jobs, cluster, seed, markers, n_metaclusters.",
)
@click.option(
    "--template",
    "-t",
    help="Gating template (built-in name or JSON file).  [default: immune_profile]",
)
@click.option(
    "--samplesheet",
    type=click.Path(dir_okay=False, exists=True),
    help="CSV with columns file,patient,visit[,tube][,lymphocytes_per_ul].",
)
@click.option("--pattern", help="Filename regex with named groups patient and visit.")
@click.option("--baseline", help="Baseline visit name.  [default: baseline]")
@click.option(
    "--followup", multiple=True, help="Follow-up visit(s), repeatable.  [default: all others]"
)
@click.option(
    "--out",
    "-o",
    type=click.Path(file_okay=False),
    help="Output folder.  [default: immunoprofile_results]",
)
@click.option("--jobs", "-j", type=click.IntRange(min=1), help="Parallel processes.  [default: 1]")
@click.option(
    "--cluster/--no-cluster",
    default=None,
    help="Also cluster and report agreement with gating.  [default: cluster]",
)
@click.option("--seed", type=int, help="Seed of every random step.  [default: 0]")
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary table.")
def run_cmd(
    files: tuple[str, ...],
    config: str | None,
    template: str | None,
    samplesheet: str | None,
    pattern: str | None,
    baseline: str | None,
    followup: tuple[str, ...],
    out: str | None,
    jobs: int | None,
    cluster: bool | None,
    seed: int | None,
    quiet: bool,
) -> None:
    """Gate + cluster + compare + report, from FILES or a config file.

    Writes OUT/gating/, OUT/clustering/, OUT/comparison/, OUT/run.json and
    OUT/report.html. Command-line options override the config file; the defaults shown
    apply when neither gives a setting.
    """
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.pipeline import run_from_config

    try:
        with _clash_warnings_to_terminal():
            result = run_from_config(
                config, files=list(files) or None, template=template, samplesheet=samplesheet,
                pattern=pattern, baseline=baseline, followup=list(followup) or None, out=out,
                jobs=jobs, cluster=cluster, seed=seed, command=_command_line(),
                progress=not _quiet(quiet),
            )  # fmt: skip
    except ImmunoprofileError as exc:
        fail(str(exc))
    if not _quiet(quiet):
        _print_stats(result.comparison)
    click.echo(f"report: {result.report}")
    if result.n_failed:
        click.secho(
            f"{result.n_failed} of {result.n_files} file(s) failed; "
            f"see {result.out}/gating/errors.csv",
            fg="red",
            err=True,
        )
    if result.clashes:
        from immunoprofile.cohort import clash_summary

        click.secho(
            f"{clash_summary(result.clashes)} (gated, left out of the per-visit tables, "
            f"clustering and comparison); see {result.out}/gating/errors.csv",
            fg="red",
            err=True,
        )
    if result.n_failed or result.clashes:
        sys.exit(1)


@main.command("demo")
@click.option(
    "--out",
    "-o",
    default="immunoprofile_demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Output folder (the simulated FCS files go in OUT/cohort/).",
)
@click.option(
    "--events", default=20_000, show_default=True, type=click.IntRange(min=1000),
    help="Events per simulated file (more is slower and more precise).",
)  # fmt: skip
@click.option("--patients", default=7, show_default=True, type=click.IntRange(min=2))
@click.option("--seed", default=0, show_default=True, help="Seed of the simulation and analysis.")
@click.option("--jobs", "-j", default=2, show_default=True, type=click.IntRange(min=1))
@click.option("--quiet", "-q", is_flag=True, help="No progress and no summary table.")
def demo_cmd(
    out: str, events: int | None, patients: int, seed: int, jobs: int, quiet: bool
) -> None:
    """Simulate the 7-patient trial cohort and run the whole pipeline on it.

    Simulates FCS files for baseline, week 24 and week 48 with a known effect (Treg up,
    Th17 down, B and NK unchanged), then gates, clusters, compares and writes the report;
    the last line printed is the report's path.
    """
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.pipeline import run_demo

    try:
        result = run_demo(
            out, events=events, patients=patients, seed=seed, jobs=jobs,
            progress=not _quiet(quiet), command=_command_line(),
        )  # fmt: skip
    except ImmunoprofileError as exc:
        fail(str(exc))
    if not _quiet(quiet):
        _print_stats(result.comparison)
        click.echo(f"simulated files: {result.cohort_dir}")
        click.echo(f"took {result.seconds:.0f} s")
    click.echo(str(result.report.resolve()))


# === import-gates / export-gates / export ==================================


@main.command("import-gates")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="Template JSON to write.",
)
@click.option("--name", help="Template name (default: the file's stem).")
@click.option("--group", help="FlowJo group whose gating tree becomes the template.")
@click.option("--sample", "sample_name", help="FlowJo sample whose tree becomes the template.")
@click.option(
    "--fcs",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True),
    help="FCS files of a FlowJo workspace: matched by name, gated by immunoprofile and "
    "compared with the counts FlowJo stored (repeat the option for several files).",
)
def import_gates_cmd(
    file: str,
    out: str,
    name: str | None,
    group: str | None,
    sample_name: str | None,
    fcs: tuple[str, ...],
) -> None:
    """Import gates from Gating-ML 2.0 (.xml), a FlowJo workspace (FlowJo 10 .wsp, or a
    FlowJo 9 .xml/.wsp) or an openCyto CSV template (.csv) into an immunoprofile template.

    For a workspace, each sample's own gates (where they differ from its group's) go into
    the template's ``samples`` section, which `gate` uses for the files they belong to
    (matched by $FIL, else the file name, and $TOT); with --fcs, each matched file's counts
    are set beside FlowJo's.
    """
    from pathlib import Path

    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.interop.importing import import_gates

    dest = Path(out)
    try:
        res = import_gates(file, name=name, group=group, sample=sample_name, fcs=fcs,
                           spillover_csv=dest.with_suffix(".spillover.csv"))  # fmt: skip
        res.save(dest)
    except ImmunoprofileError as exc:
        fail(str(exc))
        return
    for entry in res.sample_gates:
        click.echo(
            f"sample {entry['name']}: its own gates for {entry['populations']} "
            f"population(s), used by `gate` for files matching "
            + ", ".join(f"{k}={v}" for k, v in entry["match"].items())
        )
    for pid in res.magnetic:
        click.echo(
            f"note: {pid!r} has a magnetic gate: FlowJo moves it onto each sample's "
            "events before counting and the workspace keeps only the drawn position, "
            "which is what is imported; FlowJo's counts for it and the populations "
            "below it come from the moved gate",
            err=True,
        )
    for r in res.counts.itertuples():
        fj = "-" if r.flowjo is None else r.flowjo
        click.echo(f"{r.sample}\t{r.population}\tFlowJo {fj}\timmunoprofile {r.immunoprofile}")
    for m in res.missing:
        click.echo(f"no FCS file for workspace sample {m}", err=True)
    for u in res.unused:
        click.echo(f"{u}: not a sample of the workspace", err=True)
    click.echo(f"{res.n_populations} populations -> {dest}")


@main.command("export-gates")
@click.option("--template", "-t", required=True, help="Built-in template name or JSON file.")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Gating-ML file.")
@click.option("--seed", default=0, show_default=True, help="Seed of the adaptive gate fits.")
def export_gates_cmd(template: str, file: str, out: str, seed: int) -> None:
    """Gate FILE with a template and write its gates, at their fitted positions, as
    Gating-ML 2.0 (readable by flowkit, Cytobank and immunoprofile import-gates)."""
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.interop.gatingml import export_gates

    try:
        res, strategy = export_gates(file, template, out, seed=seed)
    except ImmunoprofileError as exc:
        fail(str(exc))
        return
    for pop, n in res.counts.items():
        click.echo(f"{pop}\t{n}")
    click.echo(f"{len(strategy.gates)} gates -> {out}")


@main.command("export")
@click.option(
    "--format",
    "fmt",
    required=True,
    type=click.Choice(["h5ad", "fcs"]),
    help="h5ad: one AnnData of all files; fcs: one file per input.",
)
@click.option("--template", "-t", required=True, help="Built-in template name or JSON file.")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--out",
    "-o",
    required=True,
    type=click.Path(),
    help="The .h5ad file (h5ad) or an output folder (fcs).",
)
@click.option("--population", help="fcs: write only this population's events (default: all).")
@click.option(
    "--samplesheet",
    type=click.Path(dir_okay=False, exists=True),
    help="h5ad: CSV with file,patient,visit,...; its columns go into obs.",
)
@click.option("--seed", default=0, show_default=True, help="Seed of the adaptive gate fits.")
def export_cmd(
    fmt: str,
    template: str,
    files: tuple[str, ...],
    out: str,
    population: str | None,
    samplesheet: str | None,
    seed: int,
) -> None:
    """Gate FILES with a template and export the events with their population labels:
    AnnData (.h5ad, for scanpy) or FCS files with a population column (for FlowJo).

    Every file is read once; a file that cannot be read or gated is reported and the
    others are still exported (exit status 1 when any failed)."""
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.interop.export import export_events

    try:
        res = export_events(list(files), template, fmt, out, population=population,
                            samplesheet=samplesheet, seed=seed)  # fmt: skip
    except ImmunoprofileError as exc:
        fail(str(exc))
    if fmt == "h5ad":
        click.echo(f"{res.n_events} events -> {res.written[0]}")
    else:
        for row in res.exported.itertuples():
            click.echo(f"{row.file}: {row.events} events -> {row.path}")
    for message in res.errors["message"]:
        click.secho(f"failed: {message}", fg="red", err=True)
    if len(res.errors):
        fail(f"{len(res.errors)} of {len(files)} file(s) failed")


if __name__ == "__main__":  # pragma: no cover
    main()
