"""The ``immunoprofile`` command line: a thin shell over the public API.

Only click is imported at start-up; each command imports what it needs when it runs, so
``immunoprofile --help`` answers at once.
"""

from __future__ import annotations

import sys

import click

from immunoprofile import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="immunoprofile")
def main() -> None:
    """Flow cytometry immune profiling: FCS files to per-visit population tables and
    baseline-to-follow-up statistics."""


def fail(message: str, code: int = 1) -> None:
    """Print an error to stderr and exit with ``code``."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


# === inspect (FCS reading) =================================================


_SPILL_KEYS = ("$SPILLOVER", "SPILL", "$SPILL", "SPILLOVER", "$COMP", "COMP")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--dataset", default=0, show_default=True, help="Data set to describe.")
def inspect(files: tuple[str, ...], dataset: int) -> None:
    """Describe FCS FILES: channels, markers, events, version, spillover, date, cytometer.

    Only HEADER and TEXT are read. A file that cannot be read is reported and the
    command goes on to the next one, exiting non-zero at the end.
    """
    import warnings

    from rich.console import Console
    from rich.table import Table

    from immunoprofile.exceptions import FCSError, FCSWarning
    from immunoprofile.io.fcs import read_fcs_datasets, read_fcs_header

    console = Console(highlight=False)
    failed = 0
    for f in files:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", FCSWarning)
            try:
                meta = read_fcs_header(f, dataset=dataset, check_data=True)
                sets = read_fcs_datasets(f)
            except FCSError as exc:
                failed += 1
                click.secho(f"error: {exc}", fg="red", err=True)
                continue
        kw = meta.keywords
        spill = next((k for k in _SPILL_KEYS if kw.get(k, "").strip()), None)
        date = " ".join(x for x in (kw.get("$DATE", "").strip(), kw.get("$BTIM", "").strip()) if x)
        console.print(f"[bold]{f}[/bold]")
        console.print(
            f"  FCS {meta.version} | {meta.n_events} events | {meta.n_channels} channels | "
            f"data set {meta.dataset + 1} of {len(sets)}"
        )
        console.print(f"  cytometer: {kw.get('$CYT', '').strip() or '-'} | acquired: {date or '-'}")
        console.print(f"  spillover: {'yes (' + spill + ')' if spill else 'no'}")
        for w in caught:
            console.print(f"  [yellow]note: {w.message}[/yellow]")
        table = Table(show_edge=False, pad_edge=False, box=None)
        for col in ("#", "channel", "marker", "range", "bits", "scale"):
            table.add_column(col)
        for i, row in enumerate(meta.channels.itertuples(index=False), start=1):
            scale = f"log {row.log_decades:g} dec" if row.log_decades > 0 else "lin"
            if row.gain not in (0.0, 1.0):
                scale += f" gain {row.gain:g}"
            table.add_row(
                str(i), row.name, row.marker or "", f"{row.range:.10g}", str(row.bits), scale
            )
        console.print(table)
        console.print()
    if failed:
        fail(f"{failed} of {len(files)} file(s) could not be read")


# === simulate ==============================================================


# === templates =============================================================


@main.group()
def templates() -> None:
    """List, show and validate gating templates."""


def _gate_label(pop: object) -> str:
    gate = getattr(pop, "gate", None)
    kind = getattr(gate, "type_name", None) or type(gate).__name__
    if getattr(pop, "adaptive", False):
        kind = f"adaptive {kind}"
    dims = getattr(gate, "dims", ()) or ()
    signs = getattr(gate, "signs", None) or (
        (gate.side,) if isinstance(getattr(gate, "side", None), str) else None
    )
    if kind == "boolean":
        terms = [("not " if c else "") + d for d, c in zip(dims, gate.complement)]
        what = f"not {terms[0]}" if gate.op == "not" else f" {gate.op} ".join(terms)
    elif signs is not None and len(signs) == len(dims):
        what = " ".join(f"{d}{s}" for d, s in zip(dims, signs))
    else:
        what = ", ".join(map(str, dims))
    return f"[{kind}] {what}"


@templates.command("list")
def templates_list() -> None:
    """List the built-in templates with their populations and markers."""
    from rich.console import Console
    from rich.table import Table

    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.template import list_templates, load_template

    found = list_templates()
    names = list(found.keys()) if isinstance(found, dict) else [str(x) for x in found]
    table = Table(title="built-in templates (use the name with --template)")
    for col in ("name", "populations", "markers", "description"):
        table.add_column(col, overflow="fold")
    for name in names:
        try:
            t = load_template(name)
        except ImmunoprofileError as exc:
            table.add_row(name, "-", "-", f"[red]invalid: {exc}[/red]")
            continue
        markers = ", ".join(t.markers())
        table.add_row(name, str(len(t.populations)), markers, getattr(t, "description", "") or "")
    Console().print(table)


@templates.command("show")
@click.argument("name")
def templates_show(name: str) -> None:
    """Show template NAME (built-in name or JSON path) as a population tree."""
    from rich.console import Console
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
    for p in t.populations:  # parents come before their children
        parent = nodes.get(p.parent or None, root)
        nodes[p.name] = parent.add(f"[bold]{p.name}[/bold]  [dim]{_gate_label(p)}[/dim]")
    Console().print(root)


@templates.command("validate")
@click.argument("file", type=click.Path(dir_okay=False))
def templates_validate(file: str) -> None:
    """Check a template FILE against the schema and its hierarchy; exit 1 if invalid."""
    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.template import load_template, validate_template

    try:
        t = validate_template(file)
        if not hasattr(t, "populations"):
            t = load_template(file)
    except ImmunoprofileError as exc:
        fail(str(exc))
    click.echo(
        f"{file}: valid ({len(t.populations)} populations, markers: {', '.join(t.markers())})"
    )


# === gate ==================================================================


@main.command("gate")
@click.option(
    "--template",
    "-t",
    "template",
    required=True,
    help="Built-in template name (tregs, th17, ...) or a template JSON file.",
)
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "-o",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Output folder (created; files in it are replaced atomically).",
)
@click.option(
    "--samplesheet",
    type=click.Path(dir_okay=False, exists=True),
    help="CSV with columns file,patient,visit[,tube][,lymphocytes_per_ul].",
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
@click.option("--plots", is_flag=True, help="Write a gating plot per sample into OUT/plots/.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary table.")
def gate_cmd(
    template: str,
    files: tuple[str, ...],
    out: str,
    samplesheet: str | None,
    pattern: str | None,
    patient_keyword: tuple[str, ...],
    visit_keyword: tuple[str, ...],
    jobs: int,
    scheduler: str | None,
    plots: bool,
    quiet: bool,
) -> None:
    """Gate FILES with a template and write per-visit population tables into OUT.

    Writes populations.csv/.parquet (one row per sample x population),
    populations_<visit>.csv and populations.xlsx (patients x populations per visit),
    gates.json (fitted gates per sample), qc.csv, errors.csv and samples.csv. A file that
    fails is listed in errors.csv and the others are still gated; the exit status is 1 if
    any file failed.
    """
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from immunoprofile.exceptions import ImmunoprofileError
    from immunoprofile.gating.run import gate

    out_dir = Path(out)
    try:
        res = gate(
            list(files),
            template,
            samplesheet=samplesheet,
            pattern=pattern,
            jobs=jobs,
            scheduler=scheduler,
            progress=not quiet,
            plots_dir=out_dir / "plots" if plots else None,
            patient_keyword=list(patient_keyword) or None,
            visit_keyword=list(visit_keyword) or None,
        )
        res.write(out_dir)
    except ImmunoprofileError as exc:
        fail(str(exc))
    summary = res.summary()
    table = res.table()
    errors = res.errors()
    if not quiet:
        t = Table(
            title=f"{len(summary)} file(s) gated with {getattr(res.template, 'name', template)}"
        )
        for col in ("sample", "patient", "visit", "events", "status", "qc flags"):
            t.add_column(col, justify="right" if col in ("events", "qc flags") else "left")
        for row in summary.itertuples():
            status = "[green]ok[/green]" if row.status == "ok" else f"[red]{row.status}[/red]"
            events = f"{int(row.events):,}" if row.status == "ok" else "-"
            t.add_row(
                row.sample, row.patient or "-", row.visit or "-", events, status, str(row.qc_flags)
            )
        Console().print(t)
    click.echo(
        f"wrote {len(table)} population rows for {len(summary) - len(errors)} sample(s) to "
        f"{out_dir}/ (populations.csv, per-visit tables, gates.json, qc.csv, errors.csv)"
    )
    if len(errors):
        for e in errors.itertuples():
            click.secho(f"failed: {e.message}", fg="red", err=True)
        fail(f"{len(errors)} of {len(summary)} file(s) failed; see {out_dir / 'errors.csv'}")


# === cluster ===============================================================


# === compare / report / run / demo =========================================


# === import-gates / export-gates / export ==================================


if __name__ == "__main__":  # pragma: no cover
    main()
