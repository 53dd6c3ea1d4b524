"""Which gate of a template each population uses on one file, before any event is gated.

Tubes differ in what they measure: one has FSC-H, another only FSC-W; one excludes T and B
cells by CD3 and CD19, another by a single ``Lineage`` dump channel. A template population
lists its gate and then ``alternatives``; `plan_template` takes, per population, the first
whose markers the file has. A population marked ``optional`` whose options all lack a
marker is *skipped*: its parent's events pass to its children and it has no row of its
own (a singlet gate on a file without any height or width channel). A population that is
neither is *missing*, and `Plan.error` names every missing marker of every such population
in one message, with what the file has, so one run shows all that a panel lacks.

The plan works on the channel table alone (no events), so ``templates check`` can run it
on the header of a file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from immunoprofile.compensation import choose_compensation
from immunoprofile.exceptions import AmbiguousMarkerError, ImmunoprofileError, MarkerNotFoundError
from immunoprofile.gating.adaptive import AdaptiveGate
from immunoprofile.gating.gates import BooleanGate, Gate
from immunoprofile.gating.template import PopulationSpec, Template, load_template
from immunoprofile.io.fcs import read_fcs
from immunoprofile.panel import Panel

#: the column of a derived dimension in `Plan.columns` (the engine computes it)
DERIVED = -1

#: status of a population in a plan
USED, ALTERNATIVE, SKIPPED, MISSING, BLOCKED = (
    "gate", "alternative", "skipped", "missing", "blocked",
)  # fmt: skip


@dataclass(frozen=True)
class Step:
    """What one population does on one file.

    ``status``: ``gate`` (its own gate), ``alternative`` (alternative ``option``; 0 is
    the gate itself), ``skipped`` (optional, the file lacks what every option needs),
    ``missing`` (essential, the file lacks it) or ``blocked`` (its own markers are there
    but a population it depends on is missing). ``lacks`` holds, per option tried, the
    markers the file does not have.
    """

    population: str
    status: str
    option: int | None = None
    gate: Gate | AdaptiveGate | None = None
    lacks: tuple[tuple[str, ...], ...] = ()
    reason: str = ""

    @property
    def runs(self) -> bool:
        return self.status in (USED, ALTERNATIVE)

    def describe(self) -> str:
        """One line: ``FSC-A, FSC-W (alternative 1)``, ``skipped: the file lacks ...``."""
        if self.status == USED:
            return _dims_text(self.gate)
        if self.status == ALTERNATIVE:
            return f"{_dims_text(self.gate)} (alternative {self.option})"
        return f"{self.status}: {self.reason}"

    def record(self) -> dict[str, Any]:
        """JSON-ready: status, option, the dims used, and why when not its own gate."""
        out: dict[str, Any] = {"status": self.status, "option": self.option}
        if self.gate is not None:
            out["dims"] = list(self.gate.dims)
        if self.reason:
            out["reason"] = self.reason
        return out


def _dims_text(gate: Gate | AdaptiveGate | None) -> str:
    if gate is None:
        return ""
    if isinstance(gate, BooleanGate):
        return f"{gate.op} of {', '.join(gate.dims)}"
    return " x ".join(gate.dims)


def _lacks_text(lacks: tuple[tuple[str, ...], ...]) -> str:
    """``FSC-H; or FSC-W; or SSC-A, SSC-H`` (per option, the markers it lacks)."""
    return "; or ".join(dict.fromkeys(", ".join(m) for m in lacks))


@dataclass
class Plan:
    """The choice of every population of ``template`` for one file (see the module
    docstring). ``columns`` maps each marker the running gates use to its column."""

    template: Template
    source: str
    steps: dict[str, Step]
    columns: dict[str, int]
    has: str = ""
    _resolved: Template | None = field(default=None, repr=False)

    @property
    def missing(self) -> list[Step]:
        """Essential populations whose markers the file lacks (in template order)."""
        return [s for s in self.steps.values() if s.status == MISSING]

    @property
    def skipped(self) -> list[Step]:
        return [s for s in self.steps.values() if s.status == SKIPPED]

    @property
    def ok(self) -> bool:
        """True when every population either runs or is an optional step skipped."""
        return all(s.status in (USED, ALTERNATIVE, SKIPPED) for s in self.steps.values())

    def error(self) -> MarkerNotFoundError:
        """One error naming every missing marker of the template, per population, with
        the markers and channels the file has."""
        lines = [
            f"  {s.population}: {_lacks_text(s.lacks)}" for s in self.steps.values()
            if s.status == MISSING
        ]  # fmt: skip
        blocked = [
            f"{s.population} ({s.reason})" for s in self.steps.values() if s.status == BLOCKED
        ]
        names = sorted({m for s in self.missing for opt in s.lacks for m in opt})
        if names:
            text = (
                f"{self.source}: template {self.template.name!r} needs markers this file "
                f"lacks ({', '.join(names)}); per population (';' separates alternatives):\n"
                + "\n".join(lines)
            )
        else:
            text = f"{self.source}: template {self.template.name!r} cannot run on this file:"
        if blocked:
            text += f"\n  and so cannot gate: {'; '.join(blocked)}"
        text += f"\n{self.has}"
        return MarkerNotFoundError(text)

    def resolved(self) -> Template:
        """The template as this file runs it: each population with the gate it uses,
        skipped steps left out, and their children hung on the nearest kept ancestor."""
        if self._resolved is not None:
            return self._resolved
        if not self.ok:
            raise self.error()
        t = self.template
        kept: list[PopulationSpec] = []
        parent_of = {p.name: p.parent for p in t.populations}

        def kept_ancestor(name: str | None) -> str | None:
            while name is not None and self.steps[name].status == SKIPPED:
                name = parent_of[name]
            return name

        for p in t.populations:
            step = self.steps[p.name]
            if step.status == SKIPPED:
                continue
            kept.append(
                replace(
                    p,
                    parent=kept_ancestor(p.parent),
                    gate=step.gate,
                    alternatives=(),
                    optional=False,
                )
            )
        reference = t.reference
        if reference is not None and reference in self.steps:
            reference = kept_ancestor(reference)
        self._resolved = replace(t, populations=tuple(kept), reference=reference)
        return self._resolved

    def record(self) -> dict[str, dict[str, Any]]:
        """Per population, JSON-ready: what it used, or why it was skipped."""
        return {name: s.record() for name, s in self.steps.items()}

    def summary(self) -> str:
        """``singlets: skipped (...); nonT: Lineage (alternative 1)``: every population
        that does not use its own gate ('' when all do)."""
        return "; ".join(
            f"{s.population}: {s.describe()}" for s in self.steps.values() if s.status != USED
        )


def _file_has(sample: Any, panel: Any) -> str:
    markers = [f"{m} ({n})" for n, m in zip(panel.names, panel.labels) if m]
    return (
        f"Markers in this file: {', '.join(markers) if markers else '(none: no $PnS)'}. "
        f"Channels: {', '.join(panel.names)}."
    )


def resolve_name(sample: Any, template: Template, name: str, panel: Any = None) -> int:
    """Column of one marker or channel name of ``template`` in ``sample``: a pinned
    channel (``template.channels``) by exact $PnN, else the name and then its aliases
    through `immunoprofile.panel.Panel`. Raises `MarkerNotFoundError` (the panel's
    message for the name itself) or `AmbiguousMarkerError`."""

    panel = panel if panel is not None else Panel(sample)
    pinned = template.channels.get(name)
    if pinned is not None:
        try:
            return sample.channel_names.index(pinned)
        except ValueError:
            raise MarkerNotFoundError(
                f"{panel.source}: template {template.name!r} pins {name} to channel "
                f"{pinned!r}, which the file lacks; channels are {sample.channel_names}"
            ) from None
    first_error: MarkerNotFoundError | None = None
    for candidate in [name, *template.aliases.get(name, [])]:
        try:
            return int(panel.index(candidate))
        except AmbiguousMarkerError:
            raise
        except MarkerNotFoundError as exc:
            if first_error is None:
                first_error = exc
    assert first_error is not None
    raise first_error


def _absent_label(template: Template, name: str) -> str:
    pinned = template.channels.get(name)
    if pinned is None:
        return name
    return f"{name} (the template pins {name} to channel {pinned!r}, which the file lacks)"


def plan_template(sample: Any, template: Template) -> Plan:
    """Choose, for every population of ``template``, the gate ``sample`` supports.

    ``sample`` needs only its channel table (a Sample read with ``events=0`` will do).
    Never raises for a missing marker: see `Plan.ok` and `Plan.error`. An ambiguous
    marker (two channels carry it) raises `AmbiguousMarkerError` at once.
    """

    panel = Panel(sample)
    found: dict[str, int | None] = {}

    in_file: dict[str, int | None] = {}

    def lookup(name: str) -> int | None:
        if name not in in_file:
            try:
                in_file[name] = resolve_name(sample, template, name, panel)
            except AmbiguousMarkerError:
                raise
            except MarkerNotFoundError:
                in_file[name] = None
        return in_file[name]

    def column(name: str) -> int | None:
        if name not in found:
            if name in template.dimensions:
                # a derived dimension: the engine computes it when its channels are there
                srcs = template.dimension_channels(name)
                found[name] = DERIVED if all(lookup(c) is not None for c in srcs) else None
            else:
                found[name] = lookup(name)
        return found[name]

    steps: dict[str, Step] = {}
    used: dict[str, int] = {}
    for p in template.populations:
        parent = steps.get(p.parent) if p.parent is not None else None
        if isinstance(p.gate, BooleanGate):
            bad = [d for d in p.gate.dims if not steps[d].runs]
            if parent is not None and parent.status in (MISSING, BLOCKED):
                steps[p.name] = Step(
                    p.name, BLOCKED, reason=f"its parent {p.parent} cannot be gated"
                )
            elif not bad:
                steps[p.name] = Step(p.name, USED, 0, p.gate)
            elif p.optional:
                steps[p.name] = Step(
                    p.name, SKIPPED, reason=f"combines {', '.join(bad)}, which this file skips"
                )
            else:
                steps[p.name] = Step(
                    p.name, BLOCKED, reason=f"combines {', '.join(bad)}, which cannot be gated"
                )
            continue
        lacks: list[tuple[str, ...]] = []
        chosen: Step | None = None
        for k, g in enumerate(p.options):
            absent = tuple(_absent_label(template, d) for d in g.dims if column(d) is None)
            if absent:
                lacks.append(absent)
                continue
            tried = "" if k == 0 else f"the file lacks {_lacks_text(tuple(lacks))}"
            chosen = Step(p.name, USED if k == 0 else ALTERNATIVE, k, g, tuple(lacks), tried)
            break
        if chosen is None:
            reason = f"the file lacks {_lacks_text(tuple(lacks))}"
            status = SKIPPED if p.optional else MISSING
            chosen = Step(p.name, status, lacks=tuple(lacks), reason=reason)
        elif parent is not None and parent.status in (MISSING, BLOCKED):
            chosen = Step(
                p.name, BLOCKED, lacks=chosen.lacks, reason=f"its parent {p.parent} cannot be gated"
            )
        if chosen.runs:
            for d in chosen.gate.dims:
                used[d] = found[d]  # type: ignore[assignment]
        steps[p.name] = chosen
    return Plan(
        template=template,
        source=panel.source,
        steps=steps,
        columns=used,
        has=_file_has(sample, panel),
    )


def check_files(template: Template, files: Any) -> list[tuple[str, Plan | None, Any, str | None]]:
    """`plan_template` for each file, reading only its header and TEXT (no events):
    ``(file, plan, sample, None)``, or ``(file, None, None, error message)`` for a file
    that cannot be read or has an ambiguous marker."""

    out: list[tuple[str, Plan | None, Any, str | None]] = []
    for f in files:
        try:
            sample = read_fcs(f, events=0)
            out.append((str(f), plan_template(sample, template), sample, None))
        except (ImmunoprofileError, OSError) as exc:
            out.append((str(f), None, None, f"{type(exc).__name__}: {exc}"))
    return out


#: columns of `TemplateCheck.table`
CHECK_COLUMNS = ("file", "population", "parent", "status", "detail")


@dataclass
class FileCheck:
    """What `check_template` found for one file: its `Plan` (None when the file could
    not be read: ``error`` says why), how it will be compensated (``compensation``, or
    ``compensation_error``), and ``problems``: every reason it cannot be gated as is."""

    file: str
    plan: Plan | None = None
    compensation: Any = None  # immunoprofile.compensation.CompensationChoice
    compensation_error: str | None = None
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        out = [x for x in (self.error, self.compensation_error) if x]
        if self.plan is not None and not self.plan.ok:
            out.append(str(self.plan.error()))
        return out

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def n_gated(self) -> int:
        """Populations that will be gated (their own gate or an alternative)."""
        return 0 if self.plan is None else sum(s.runs for s in self.plan.steps.values())

    def steps(self) -> pd.DataFrame:
        """One row per population of the template, in template order: ``population,
        parent, status`` (`Step.status`) and ``detail``: the dimensions it gates on (and
        why an alternative), or why it is skipped, missing or blocked."""
        rows = []
        if self.plan is not None:
            for p in self.plan.template.populations:
                step = self.plan.steps[p.name]
                detail = step.describe() if step.runs else step.reason
                if step.status == ALTERNATIVE:
                    detail = f"{step.describe()}; {step.reason}"
                rows.append((self.file, p.name, p.parent or None, step.status, detail))
        return pd.DataFrame(rows, columns=list(CHECK_COLUMNS))


@dataclass
class TemplateCheck:
    """`check_template`'s answer: the template and one `FileCheck` per file (input
    order)."""

    template: Template
    files: list[FileCheck]

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def n_problems(self) -> int:
        return sum(len(f.problems) for f in self.files)

    def table(self) -> pd.DataFrame:
        """Every file x population (`FileCheck.steps`; `CHECK_COLUMNS`)."""
        parts = [f.steps() for f in self.files if f.plan is not None]
        if not parts:
            return pd.DataFrame(columns=list(CHECK_COLUMNS))
        return pd.concat(parts, ignore_index=True)


def check_template(
    template: Template | str | os.PathLike,
    files: str | os.PathLike | Iterable[str | os.PathLike],
    compensation: str | os.PathLike | None = None,
) -> TemplateCheck:
    """Before gating: which populations of ``template`` each file supports, which
    alternatives it will use, which optional steps it skips, what it lacks, and how it
    will be compensated (``compensation``: the template's mode unless given; a matrix
    file of the template is taken relative to the template's folder). Reads only the
    files' headers and TEXT; a file that cannot be read is a `FileCheck` with its
    ``error``. What ``immunoprofile templates check`` prints.

    Examples
    --------
    >>> chk = check_template("tregs", ["P01_baseline.fcs"])  # doctest: +SKIP
    >>> chk.ok, chk.table().query("status != 'gate'")  # doctest: +SKIP
    """
    t = template if isinstance(template, Template) else load_template(template)
    paths = [files] if isinstance(files, str | os.PathLike) else list(files)
    how = t.compensation if compensation is None else compensation
    base = t.source.parent if compensation is None and t.source else None
    out = []
    for f, plan, sample, error in check_files(t, paths):
        chk = FileCheck(f, plan, error=error)
        if plan is not None:
            try:
                chk.compensation = choose_compensation(sample, how, base=base)
            except ImmunoprofileError as exc:
                chk.compensation_error = str(exc)
        out.append(chk)
    return TemplateCheck(t, out)


__all__ = [
    "CHECK_COLUMNS",
    "FileCheck",
    "Plan",
    "Step",
    "TemplateCheck",
    "check_files",
    "check_template",
    "plan_template",
    "resolve_name",
]
