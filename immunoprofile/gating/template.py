"""Gating templates: JSON files that describe a gating hierarchy, and their loader.

A template names markers, not channels (``"CD25"``, not ``"PE-A"``), so one template serves
every cytometer; it may pin a marker to a channel (``"channels": {"CD25": "PE-A"}``) or
add aliases (``"aliases": {"CD25": ["IL2RA"]}``). It says how to compensate
(``"compensation": "auto" | "keyword" | "none" | <matrix path>``, see
`immunoprofile.compensation.choose_compensation`) and which transforms to apply
(``"transforms"``, a spec for `immunoprofile.transforms.transform`). Its ``populations``
each have a ``name``, a ``parent`` and a ``gate``: a static gate of
`immunoprofile.gating.gates` or a data-adaptive gate of `immunoprofile.gating.adaptive`.

Real tubes differ in what they measure, so a population may list ``alternatives``: gates
tried in order when a file lacks a marker of the gate before (singlets on FSC-A x FSC-H,
else FSC-W, else SSC-A x SSC-H), and may be ``optional``: when the file has the markers
of none of them, the step is skipped (its parent's events pass to its children, and it
has no row of its own). `immunoprofile.gating.plan` decides this per file.

Validation happens in two steps, both raising `TemplateError` with the file and the place:
the shipped JSON Schema (``immunoprofile/schemas/template.schema.json``) checks the shape,
then semantic checks build every gate (unknown gate type, bad or unknown fields), and
check the hierarchy (duplicate names, unknown parents, boolean operands, cycles).

Built-in templates live in the package ``immunoprofile.builtin_templates`` (the
``gating/`` folder of the source tree) and resolve by bare name: ``load_template("tregs")``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from immunoprofile.compensation import Spillover, normalize_mode
from immunoprofile.exceptions import GatingError, ImmunoprofileError, TemplateError
from immunoprofile.gating.adaptive import AdaptiveGate, adaptive_from_dict, is_adaptive
from immunoprofile.gating.dimensions import DerivedDimension, Unmixing
from immunoprofile.gating.gates import GATE_TYPES, BooleanGate, Gate, gate_from_dict
from immunoprofile.hierarchy import ROOT

_SOURCE_TEMPLATES = Path(__file__).resolve().parents[2] / "gating"


@dataclass(frozen=True)
class PopulationSpec:
    """One population of a template.

    Attributes
    ----------
    name : population name (unique in the template).
    parent : parent population, or None for the root (all events).
    gate : a static `Gate` or an unfitted `AdaptiveGate` (fitted per sample by the engine).
    description : free text.
    expected : plausible percent of parent as ``(low, high)`` (published healthy and patient
        ranges), or None; a value outside it is a QC flag (`immunoprofile.gating.qc`).
    expected_source : where that range comes from.
    """

    name: str
    parent: str | None
    gate: Gate | AdaptiveGate
    description: str = ""
    alternatives: tuple[Gate | AdaptiveGate, ...] = ()
    optional: bool = False

    @property
    def options(self) -> tuple[Gate | AdaptiveGate, ...]:
        """The gate, then its alternatives: the first whose markers a file has is used."""
        return (self.gate, *self.alternatives)

    expected: tuple[float, float] | None = None
    expected_source: str = ""

    @property
    def adaptive(self) -> bool:
        return isinstance(self.gate, AdaptiveGate)

    @property
    def is_boolean(self) -> bool:
        return isinstance(self.gate, BooleanGate)

    @property
    def gate_type(self) -> str:
        return self.gate.type_name

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "parent": self.parent}
        if self.description:
            out["description"] = self.description
        out["gate"] = self.gate.to_dict()
        if self.alternatives:
            out["alternatives"] = [g.to_dict() for g in self.alternatives]
        if self.optional:
            out["optional"] = True
        if self.expected is not None:
            out["expected"] = {"percent_of_parent": list(self.expected)}
            if self.expected_source:
                out["expected"]["source"] = self.expected_source
        return out


@dataclass(frozen=True)
class SampleGates:
    """Gates of one sample (a workspace lets each sample's gates move from its group's).

    ``match``: ``file`` (the FCS file name, case-insensitive) and/or FCS keywords the file
    must all carry (``$FIL``, ``$TOT``, ...); ``gates``: population -> its gate for the
    matching files; ``transforms``/``compensation``: the sample's own, when given.
    """

    name: str
    match: dict[str, str]
    gates: dict[str, Gate | AdaptiveGate]
    transforms: dict[str, Any] | None = None
    compensation: str | None = None

    def matches(self, file_name: str | None, keywords: dict[str, str]) -> bool:
        """True when every entry of ``match`` holds for this file."""
        for key, want in self.match.items():
            if key == "file":
                if not file_name or Path(file_name).name.lower() != str(want).lower():
                    return False
            elif str(keywords.get(key.upper(), "")).strip() != str(want).strip():
                return False
        return True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "match": dict(self.match)}
        out["gates"] = {k: g.to_dict() for k, g in self.gates.items()}
        if self.transforms is not None:
            out["transforms"] = self.transforms
        if self.compensation is not None:
            out["compensation"] = self.compensation
        return out


@dataclass(frozen=True)
class Template:
    """A validated gating template (see the module docstring).

    ``populations`` are ordered so that every population comes after its parent and after
    the populations a boolean gate combines.
    """

    name: str
    description: str
    populations: tuple[PopulationSpec, ...]
    transforms: dict[str, Any] | None = None
    compensation: str | None = "auto"
    source: Path | None = None
    channels: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, list[str]] = field(default_factory=dict)
    reference: str | None = None
    matrices: dict[str, Unmixing] = field(default_factory=dict)
    dimensions: dict[str, DerivedDimension] = field(default_factory=dict)
    samples: tuple[SampleGates, ...] = ()

    # --- per-sample gates ---------------------------------------------------------------

    def sample_gates(self, file_name: str | None, keywords: dict[str, str]) -> SampleGates | None:
        """The first per-sample entry matching a file (its name and keywords), or None."""
        for entry in self.samples:
            if entry.matches(file_name, keywords):
                return entry
        return None

    def for_sample(self, entry: SampleGates) -> Template:
        """This template with ``entry``'s gates (and transforms/compensation) in place."""
        from dataclasses import replace

        pops = tuple(
            replace(p, gate=entry.gates[p.name]) if p.name in entry.gates else p
            for p in self.populations
        )
        return replace(
            self,
            populations=pops,
            transforms=self.transforms if entry.transforms is None else entry.transforms,
            compensation=self.compensation if entry.compensation is None else entry.compensation,
            samples=(),
        )

    # --- preparation -------------------------------------------------------------------

    def preparation(self, compensation: str | PathLike | None = None) -> dict[str, Any]:
        """The keyword arguments of `immunoprofile.prepare.prepare` this template asks for.

        ``compensation`` overrides the template's mode. A mode naming one of the template's
        ``matrices`` becomes that matrix as a `Spillover`; a relative matrix path of the
        template's own is relative to the template file.
        """
        how: Any = self.compensation if compensation is None else compensation
        if isinstance(how, str) and how in self.matrices:
            how = self._matrix_spillover(how)
        base = self.source.parent if compensation is None and self.source else None
        return {"compensation": how, "transforms": self.transforms, "base": base}

    def _matrix_spillover(self, mid: str) -> Spillover:
        """A matrix of the template's own ``matrices`` as the spillover to compensate with."""
        m = self.matrices[mid]
        if m.fluorochromes != m.detectors or m.inverted:
            raise GatingError(
                f"template {self.name!r}: compensation names matrix {mid!r}, which is not a "
                "square spillover over its detectors"
            )
        return Spillover(m.detectors, np.asarray(m.matrix), source=f"template matrix {mid}")

    # --- lookup ----------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.populations]

    def population(self, name: str) -> PopulationSpec:
        """The population called ``name`` (TemplateError if absent)."""
        for p in self.populations:
            if p.name == name:
                return p
        raise TemplateError(
            f"template {self.name!r} has no population {name!r}; it has {self.names}"
        )

    def children(self, name: str | None) -> list[PopulationSpec]:
        """Populations whose parent is ``name`` (None: the root populations)."""
        return [p for p in self.populations if p.parent == name]

    def markers(self) -> list[str]:
        """Markers (or channel names) the gates and their alternatives look at, in order
        of first use (a derived dimension by the channels it is computed from)."""
        out: list[str] = []
        for p in self.populations:
            for g in p.options:
                if isinstance(g, BooleanGate):
                    continue
                for d in g.dims:
                    for n in self.dimension_channels(d):
                        if n not in out:
                            out.append(n)
        return out

    def dimension_channels(self, name: str) -> tuple[str, ...]:
        """The markers/channels a gate dimension reads: itself, or for a derived dimension
        its channels (a matrix's fluorochrome by the matrix's detectors)."""
        dim = self.dimensions.get(name)
        if dim is None:
            return (name,)
        m = self.matrices.get(dim.compensation)
        out: list[str] = []
        for src in dim.sources:
            out.extend(m.detectors if m is not None and src in m.fluorochromes else (src,))
        return tuple(dict.fromkeys(out))

    @property
    def reference_population(self) -> str | None:
        """Denominator of ``percent_of_lymphocytes``: ``reference``, else ``lymphocytes``."""
        if self.reference:
            return self.reference
        return "lymphocytes" if "lymphocytes" in self.names else None

    # --- output ------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``validate_template(t.to_dict())`` gives an equal template)."""
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        out["compensation"] = self.compensation
        out["transforms"] = self.transforms
        if self.channels:
            out["channels"] = dict(self.channels)
        if self.aliases:
            out["aliases"] = {k: list(v) for k, v in self.aliases.items()}
        if self.reference:
            out["reference"] = self.reference
        if self.matrices:
            out["matrices"] = {k: m.to_dict() for k, m in self.matrices.items()}
        if self.dimensions:
            out["dimensions"] = {k: d.to_dict() for k, d in self.dimensions.items()}
        out["populations"] = [p.to_dict() for p in self.populations]
        if self.samples:
            out["samples"] = [e.to_dict() for e in self.samples]
        return out

    def outline(self) -> list[dict[str, Any]]:
        """The hierarchy, parents before children, one entry per population: ``population,
        parent, depth`` (1 = a root population) and ``gate``, the gate in words
        (``[adaptive threshold] CD25+ CD127-; else skipped``), as `tree` and ``immunoprofile
        templates show`` print it."""
        rows: list[dict[str, Any]] = []

        def walk(parent: str | None, depth: int) -> None:
            for p in self.children(parent):
                kind = f"adaptive {p.gate_type}" if p.adaptive else p.gate_type
                extra = "".join(f"; else {_gate_summary(g)}" for g in p.alternatives)
                if p.optional:
                    extra += "; else skipped"
                gate = f"[{kind}] {_gate_summary(p.gate)}{extra}"
                rows.append({"population": p.name, "parent": parent, "depth": depth,
                             "gate": gate})  # fmt: skip
                walk(p.name, depth + 1)

        walk(None, 1)
        return rows

    def tree(self) -> str:
        """The hierarchy as an indented text tree, one population per line with its gate."""
        lines = [f"{self.name}: {self.description}" if self.description else self.name]
        lines += [f"{'  ' * r['depth']}{r['population']}  {r['gate']}" for r in self.outline()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Template({self.name!r}, {len(self.populations)} populations)"


def _gate_summary(g: Gate | AdaptiveGate) -> str:
    """``CD25+ CD127-``, ``NK and not NK_CD56bright`` or ``FSC-A, SSC-A``."""
    if isinstance(g, BooleanGate):
        ops = [f"not {d}" if c else d for d, c in zip(g.dims, g.complement)]
        return f"not {g.dims[0]}" if g.op == "not" else f" {g.op} ".join(ops)
    signs = getattr(g, "signs", None)
    side = getattr(g, "side", None)
    if signs is None and side is not None and len(g.dims) == 1:
        signs = (side,)
    if signs is not None and len(signs) == len(g.dims):
        return " ".join(f"{d}{s}" for d, s in zip(g.dims, signs))
    return ", ".join(g.dims)


# --- schema ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def template_schema() -> dict[str, Any]:
    """The JSON Schema templates are validated against (shipped in the package)."""
    from importlib.resources import files

    text = files("immunoprofile").joinpath("schemas/template.schema.json").read_text("utf-8")
    return json.loads(text)


def _schema_errors(obj: Any) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(template_schema())
    out = []
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        place = _json_place(obj, list(err.absolute_path))
        out.append(f"{place}: {err.message}")
    return out


def _json_place(obj: Any, path: list[Any]) -> str:
    """``populations[3] (CD4).gate.dims`` style location of a JSON path."""
    parts = []
    node = obj
    for key in path:
        if isinstance(key, int):
            label = f"[{key}]"
            try:
                node = node[key]
                if isinstance(node, dict) and "name" in node:
                    label += f" ({node['name']})"
            except (IndexError, KeyError, TypeError):
                pass
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(key))
            try:
                node = node[key]
            except (KeyError, TypeError):
                pass
    return "".join(parts) or "template"


# --- loading ----------------------------------------------------------------------------


def _builtin_dir():
    """The folder (a Traversable) holding the built-in templates."""
    from importlib.resources import files

    try:
        return files("immunoprofile.builtin_templates")
    except ModuleNotFoundError:
        return _SOURCE_TEMPLATES


def list_templates() -> list[str]:
    """Names of the built-in templates."""
    d = _builtin_dir()
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".json"))


def templates_table() -> pd.DataFrame:
    """The built-in templates, one row each: ``name``, ``populations`` (how many),
    ``markers`` (comma-separated), ``description``, and ``error``: why a template does
    not load (empty when it does). What ``immunoprofile templates list`` prints."""
    rows = []
    for name in list_templates():
        try:
            t = load_template(name)
        except ImmunoprofileError as exc:
            rows.append((name, None, "", "", str(exc)))
            continue
        rows.append((name, len(t.populations), ", ".join(t.markers()), t.description or "", ""))
    df = pd.DataFrame(rows, columns=["name", "populations", "markers", "description", "error"])
    return df.astype({"populations": "Int64"})


def _builtin_text(name: str) -> str | None:
    stem = name[:-5] if name.endswith(".json") else name
    ref = _builtin_dir().joinpath(f"{stem}.json")
    return ref.read_text("utf-8") if ref.is_file() else None


#: the deepest nesting a template may have (a boolean gate of boolean gates stays far below)
MAX_TEMPLATE_DEPTH = 64


def _check_depth(obj: Any, where: str) -> None:
    """`TemplateError` when lists/objects nest deeper than `MAX_TEMPLATE_DEPTH` (checked
    without recursion, before anything recursive such as the schema sees it)."""
    stack = [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_TEMPLATE_DEPTH:
            raise TemplateError(
                f"{where}: nested more than {MAX_TEMPLATE_DEPTH} levels deep; not a gating template"
            )
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def _parse_json(text: str, where: str) -> Any:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except RecursionError:
        raise TemplateError(
            f"{where}: nested too deeply to read (more than {MAX_TEMPLATE_DEPTH} levels is "
            "not a gating template)"
        ) from None
    _check_depth(obj, where)
    return obj


def load_template(name_or_path: str | PathLike | Template | dict) -> Template:
    """Load a template by built-in name (``"tregs"``), by file path, or from a dict.

    An existing file wins over a built-in of the same name; ``"tregs.json"`` that is not a
    file resolves to the built-in ``tregs``.

    Raises
    ------
    TemplateError : not found (the message lists the built-ins), invalid JSON, schema
        violation, or a semantic error (see `validate_template`).
    """
    if isinstance(name_or_path, Template):
        return name_or_path
    if isinstance(name_or_path, dict):
        return validate_template(name_or_path)
    if not isinstance(name_or_path, str | PathLike):
        raise TypeError(
            "load_template expects a built-in template name, the path of a JSON template, "
            f"a dict or a Template; got {type(name_or_path).__name__}"
        )
    path = Path(name_or_path)
    if path.is_file():
        try:
            text = path.read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{path}: cannot read template: {exc}") from None
        return _build(_parse_json(text, str(path)), path)
    name = str(name_or_path)
    is_bare = path.parent == Path(".") and path.suffix in ("", ".json")
    if is_bare:
        text = _builtin_text(name)
        if text is not None:
            stem = name[:-5] if name.endswith(".json") else name
            return _build(_parse_json(text, f"built-in template {stem}"), None, builtin=stem)
    raise TemplateError(
        f"template {name!r} is neither a file nor a built-in template; built-ins: "
        f"{', '.join(list_templates())}"
    )


def validate_template(obj_or_path: str | PathLike | dict | Template) -> Template:
    """Validate a template (a dict, a path or a built-in name) and return it.

    Raises `TemplateError` naming the file and the place of the first problems.
    """
    if isinstance(obj_or_path, dict):
        _check_depth(obj_or_path, "template")
        return _build(obj_or_path, None)
    return load_template(obj_or_path)


def _build(obj: Any, path: Path | None, builtin: str | None = None) -> Template:
    where = (
        str(path)
        if path is not None
        else (f"built-in template {builtin}" if builtin else "template")
    )
    if not isinstance(obj, dict):
        raise TemplateError(f"{where}: a template must be a JSON object, got {type(obj).__name__}")
    errors = _schema_errors(obj)
    if errors:
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise TemplateError(f"{where}: " + "; ".join(errors[:5]) + more)

    pops_json = obj["populations"]
    seen: dict[str, int] = {}
    specs: list[PopulationSpec] = []
    for i, pj in enumerate(pops_json):
        name = pj["name"]
        place = f"{where}: populations[{i}] ({name})"
        if name in seen:
            raise TemplateError(
                f"{place}: duplicate population name {name!r} (first at populations[{seen[name]}])"
            )
        if name == ROOT:
            raise TemplateError(
                f"{place}: {ROOT!r} cannot name a population: population tables use it as "
                "the parent of top-level populations (all events)"
            )
        seen[name] = i
        gate = _build_gate(pj["gate"], place)
        alternatives = tuple(
            _build_gate(g, f"{place}.alternatives[{k}]")
            for k, g in enumerate(pj.get("alternatives") or ())
        )
        if alternatives and any(isinstance(g, BooleanGate) for g in (gate, *alternatives)):
            raise TemplateError(
                f"{place}: a boolean gate cannot have alternatives (it combines populations, "
                "which every file has)"
            )
        expected, source = _expected(pj.get("expected"), place)
        specs.append(
            PopulationSpec(
                name=name,
                parent=pj.get("parent"),
                gate=gate,
                description=pj.get("description", ""),
                alternatives=alternatives,
                optional=bool(pj.get("optional", False)),
                expected=expected,
                expected_source=source,
            )
        )

    names = set(seen)
    for i, p in enumerate(specs):
        place = f"{where}: populations[{i}] ({p.name})"
        if p.parent is not None and p.parent not in names:
            raise TemplateError(
                f"{place}: unknown parent {p.parent!r}; populations are {sorted(names)}"
                + _did_you_mean(p.parent, names)
            )
        if p.parent == p.name:
            raise TemplateError(f"{place}: a population cannot be its own parent")
        if p.is_boolean:
            for d in p.gate.dims:
                if d not in names:
                    raise TemplateError(
                        f"{place}: boolean gate refers to unknown population {d!r}"
                        + _did_you_mean(d, names)
                    )
                if d == p.name:
                    raise TemplateError(f"{place}: boolean gate refers to itself")

    ordered = _topological(specs, where)
    reference = obj.get("reference")
    if reference is not None and reference not in names:
        raise TemplateError(f"{where}: reference population {reference!r} is not in the template")
    channels = dict(obj.get("channels") or {})
    aliases = {k: list(v) for k, v in (obj.get("aliases") or {}).items()}
    matrices = {k: Unmixing.from_dict(k, v, where) for k, v in (obj.get("matrices") or {}).items()}
    dimensions = {
        k: DerivedDimension.from_dict(k, v, matrices, where)
        for k, v in (obj.get("dimensions") or {}).items()
    }
    samples = tuple(
        _sample_gates(e, i, specs, where) for i, e in enumerate(obj.get("samples") or [])
    )
    return Template(
        name=obj["name"],
        description=obj.get("description", ""),
        populations=tuple(ordered),
        transforms=obj.get("transforms"),
        compensation=_compensation_mode(obj.get("compensation", "auto")),
        source=path,
        channels=channels,
        aliases=aliases,
        reference=reference,
        matrices=matrices,
        dimensions=dimensions,
        samples=samples,
    )


def _sample_gates(
    obj: dict[str, Any], i: int, specs: list[PopulationSpec], where: str
) -> SampleGates:
    """One ``samples`` entry: its gates must name populations of the template, and keep
    each population's kind (a boolean stays a boolean on the same operands' names)."""
    by_name = {p.name: p for p in specs}
    gates: dict[str, Gate | AdaptiveGate] = {}
    for pop, spec in obj["gates"].items():
        place = f"{where}: samples[{i}] ({obj['name']}).gates.{pop}"
        if pop not in by_name:
            raise TemplateError(
                f"{place}: no population {pop!r} in the template" + _did_you_mean(pop, by_name)
            )
        gate = _build_gate(spec, place)
        if isinstance(gate, BooleanGate) != by_name[pop].is_boolean or (
            isinstance(gate, BooleanGate) and set(gate.dims) != set(by_name[pop].gate.dims)
        ):
            raise TemplateError(
                f"{place}: a per-sample gate must combine the same populations as the "
                "template's (boolean gates) or be a geometric gate where it has one"
            )
        gates[pop] = gate
    return SampleGates(
        name=obj["name"],
        match={str(k): str(v) for k, v in obj["match"].items()},
        gates=gates,
        transforms=obj.get("transforms"),
        compensation=obj.get("compensation"),
    )


def _compensation_mode(value: str | None) -> str:
    """``auto``/``keyword``/``none`` (``file`` is the older name of ``keyword``), or a
    matrix path kept as written."""
    return normalize_mode(value)


def _expected(spec: dict[str, Any] | None, place: str) -> tuple[tuple[float, float] | None, str]:
    """A population's plausible range (low, high) and its source; the schema checked types."""
    if not spec:
        return None, ""
    low, high = (float(x) for x in spec["percent_of_parent"])
    if low > high:
        raise TemplateError(
            f"{place}: expected percent_of_parent [{low:g}, {high:g}] has low above high"
        )
    return (low, high), str(spec.get("source", ""))


def _build_gate(spec: dict[str, Any], place: str) -> Gate | AdaptiveGate:
    type_name = spec.get("type")
    if is_adaptive(spec):
        return adaptive_from_dict(spec, where=place)
    if type_name not in GATE_TYPES:  # the schema's enum normally catches this first
        raise TemplateError(f"{place}: unknown gate type {type_name!r}")
    try:
        return gate_from_dict(spec)
    except TemplateError as exc:
        raise TemplateError(f"{place}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"{place}: {type_name} gate: {exc}") from None


def _topological(specs: list[PopulationSpec], where: str) -> list[PopulationSpec]:
    """Order populations so dependencies (parent, boolean operands) come first; stable."""
    deps = {}
    for p in specs:
        d = [p.parent] if p.parent is not None else []
        if p.is_boolean:
            d += list(p.gate.dims)
        deps[p.name] = d
    state: dict[str, int] = {}  # 1 visiting, 2 done
    out: list[PopulationSpec] = []
    by_name = {p.name: p for p in specs}

    def visit(name: str, chain: list[str]) -> None:
        s = state.get(name)
        if s == 2:
            return
        if s == 1:
            cyc = chain[chain.index(name) :] + [name]
            raise TemplateError(f"{where}: cycle in the gating hierarchy: {' -> '.join(cyc)}")
        state[name] = 1
        for d in deps[name]:
            visit(d, [*chain, name])
        state[name] = 2
        out.append(by_name[name])

    for p in specs:
        visit(p.name, [])
    return out


def _did_you_mean(word: str, choices) -> str:
    import difflib

    lower = {c.lower(): c for c in choices}
    close = [
        lower[c] for c in difflib.get_close_matches(word.lower(), list(lower), n=3, cutoff=0.6)
    ]
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


__all__ = [
    "PopulationSpec",
    "SampleGates",
    "Template",
    "list_templates",
    "load_template",
    "template_schema",
    "templates_table",
    "validate_template",
]
