"""Example files shipped with the package, so that every README example runs on a plain
install: a simulated FCS file and, written for it, a FlowJo 10 workspace (with the counts
FlowJo would store), a Gating-ML 2.0 file and an openCyto gating template; and a
simulated CyTOF-like file, written on demand.

``immunoprofile examples --out DIR`` (or `write_examples`) copies them into a folder;
`example_path` gives a shipped file's path. ``examples/make_example_data.py`` in the
source tree authors the shipped files.
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

from immunoprofile.exceptions import ImmunoprofileError
from immunoprofile.io.write import write_fcs
from immunoprofile.simulate.mass_cytometry import simulate_cytof

#: shipped file -> what it is
EXAMPLE_FILES: dict[str, str] = {
    "example.fcs": "simulated tube, 4,000 events: CD3, CD4, CD8, CD25, CD127, CD19, "
    "viability, with $SPILLOVER",
    "example.wsp": "FlowJo 10 workspace on example.fcs, with the counts of its 13 populations",
    "example_gates.xml": "Gating-ML 2.0 gates on example.fcs (polygon, rectangle, ratio, "
    "quadrant, ellipsoid, boolean; fasinh scales, the file's compensation)",
    "example_opencyto.csv": "openCyto gating template for the same panel",
}
#: written by `write_examples` from a seed rather than shipped
CYTOF_FILE = "cytof_example.fcs"
CYTOF_EVENTS, CYTOF_SEED = 20_000, 5


def example_path(name: str) -> Path:
    """Path of a shipped example file (a key of `EXAMPLE_FILES`)."""
    if name not in EXAMPLE_FILES:
        raise ImmunoprofileError(
            f"no example file {name!r}; the examples are {', '.join(EXAMPLE_FILES)}"
        )
    return Path(str(resources.files("immunoprofile") / "example_data" / name))


def write_examples(out: str | os.PathLike, cytof: bool = True) -> list[Path]:
    """Copy the shipped example files into ``out`` (created if needed) and, with
    ``cytof``, write the simulated CyTOF-like file (`simulate_cytof`, fixed seed);
    returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [Path(shutil.copyfile(example_path(n), out / n)) for n in EXAMPLE_FILES]
    if cytof:
        sample, _ = simulate_cytof(CYTOF_EVENTS, CYTOF_SEED, name="cytof_example")
        written.append(write_fcs(sample, out / CYTOF_FILE))
    return written
