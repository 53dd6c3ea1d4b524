"""Import gates from another tool into an immunoprofile template: Gating-ML 2.0 (.xml), a
FlowJo workspace (FlowJo 10 .wsp, FlowJo 9 .xml/.wsp) or an openCyto CSV template.

`import_gates` is what ``immunoprofile import-gates`` runs; it returns the template (a
validated dict, ready to save) with what a user should know about it: per-sample gates,
FlowJo magnetic gates, and (given the workspace's FCS files) immunoprofile's count of
every population beside FlowJo's.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from immunoprofile._files import atomic_write_text
from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.gating.template import validate_template
from immunoprofile.interop.flowjo import read_wsp
from immunoprofile.interop.gatingml import read_gatingml, strategy_to_template
from immunoprofile.interop.opencyto import opencyto_to_template

COUNT_COLUMNS = ("sample", "population", "flowjo", "immunoprofile")


@dataclass
class ImportedGates:
    """An imported template and what came with it.

    ``template`` : the template as a validated dict (`save` writes it as JSON).
    ``sample_gates`` : per workspace sample with gates of its own: ``name, populations,
    match`` (how `gate` recognises its file).
    ``magnetic`` : populations whose FlowJo gate is magnetic (their imported position is
    the drawn one; FlowJo counted at a position moved onto each sample).
    ``counts`` : with FCS files, one row per matched sample and population: ``sample,
    population, flowjo, immunoprofile`` (`COUNT_COLUMNS`).
    ``missing`` : workspace samples without an FCS file; ``unused`` : FCS files that are
    no sample of the workspace.
    """

    template: dict[str, Any]
    sample_gates: list[dict[str, Any]] = field(default_factory=list)
    magnetic: list[str] = field(default_factory=list)
    counts: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=COUNT_COLUMNS))
    missing: list[str] = field(default_factory=list)
    unused: list[Path] = field(default_factory=list)

    @property
    def n_populations(self) -> int:
        return len(self.template["populations"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write the template as JSON, atomically."""

        return atomic_write_text(Path(path), json.dumps(self.template, indent=2) + "\n")


def xml_root(path: str | os.PathLike) -> str | None:
    """The local name of an XML file's root element (None when it is not XML): tells a
    FlowJo workspace saved as .xml (FlowJo 9) from Gating-ML."""
    try:
        for _, el in ET.iterparse(path, events=("start",)):
            return el.tag.rsplit("}", 1)[-1]
    except ET.ParseError:
        return None
    return None


def import_gates(
    file: str | os.PathLike,
    name: str | None = None,
    group: str | None = None,
    sample: str | None = None,
    fcs: Sequence[str | os.PathLike] = (),
    spillover_csv: str | os.PathLike | None = None,
) -> ImportedGates:
    """Read the gates of ``file`` into an immunoprofile template.

    Parameters
    ----------
    file : Gating-ML 2.0 (.xml), FlowJo workspace (.wsp, or a FlowJo 9 .xml) or openCyto
        template (.csv).
    name : the template's name (default: the file's stem).
    group, sample : workspace: the group or sample whose gating tree becomes the template.
    fcs : workspace: FCS files, matched to its samples by name, gated by immunoprofile and
        counted beside the counts FlowJo stored.
    spillover_csv : workspace: where a sample's FlowJo compensation matrix is written (the
        template points at it); without it the matrix is not carried over.

    Raises `ImmunoprofileError` (a `TemplateError` for gates that cannot be imported or a
    template that does not validate) naming the file.
    """

    src = Path(file)
    kind = src.suffix.lower()
    out: ImportedGates
    if kind == ".xml" and xml_root(src) != "Workspace":
        out = ImportedGates(strategy_to_template(read_gatingml(src), name or src.stem))
    elif kind in (".wsp", ".xml"):
        out = _from_workspace(src, name, group, sample, fcs, spillover_csv)
    elif kind == ".csv":
        out = ImportedGates(opencyto_to_template(src, name))
    else:
        raise ImmunoprofileError(
            f"{src}: unknown gate file type {src.suffix!r} (expected .xml, .wsp or .csv)"
        )
    validate_template(out.template)
    return out


def _from_workspace(
    src: Path,
    name: str | None,
    group: str | None,
    sample: str | None,
    fcs: Sequence[str | os.PathLike],
    spillover_csv: str | os.PathLike | None,
) -> ImportedGates:

    ws = read_wsp(src)
    tmpl = ws.to_template(group=group, sample=sample, name=name, spillover_csv=spillover_csv)
    out = ImportedGates(
        tmpl,
        sample_gates=[
            {"name": e["name"], "populations": len(e["gates"]), "match": dict(e["match"])}
            for e in tmpl.get("samples", [])
        ],
        magnetic=list(ws.magnetic_populations()),
    )
    if fcs:
        matched, out.missing, out.unused = ws.match_files(fcs)
        rows = [
            {k: r[k] for k in COUNT_COLUMNS}
            for sid, path in matched.items()
            for r in ws.compare_counts(sid, path)
        ]
        # object columns: a count FlowJo did not store stays None, the others stay ints
        out.counts = pd.DataFrame(rows, columns=list(COUNT_COLUMNS), dtype=object)
    return out


__all__ = ["COUNT_COLUMNS", "ImportedGates", "import_gates", "xml_root"]
