"""One definition of a results folder: the names every writer uses, the manifest, and how
`report` and `run` find what was written.

A folder is written by one of four writers, each recording what it wrote in the folder's
manifest ``outputs.json`` (`immunoprofile._files.write_owned`):

* ``immunoprofile gate`` (`GateResults.write`): `GATING` files;
* ``immunoprofile cluster`` (`ClusterResult.write`): `CLUSTERING` files;
* ``immunoprofile compare`` (`Comparison.write`): `COMPARISON` files;
* ``immunoprofile run``: `RUN` files at the top and one folder per stage (`STAGES`:
  ``gating/``, ``clustering/``, ``comparison/``).

`ResultsFolder` reads a folder back by these definitions: which stage lives where (by
``run.json`` and the stage folders, else by the manifest's writer, else by the files a
writer always writes) and the path of each named output, so the report reads exactly what
was written instead of guessing file names.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from immunoprofile.quantify import VISIT_FILES  # per-visit lab tables (a glob)

#: the manifest every writer leaves in its folder
MANIFEST = "outputs.json"

#: the folder `immunoprofile gate` writes into when no --out is given (in the current folder)
DEFAULT_OUT = "immunoprofile-results"


#: what `immunoprofile gate` writes (names, and globs for per-visit tables and figures)
GATING = {
    "populations": "populations.csv",
    "populations_parquet": "populations.parquet",
    "per_visit": VISIT_FILES,
    "workbook": "populations.xlsx",
    "gates": "gates.json",
    "provenance": "provenance.json",
    "qc": "qc.csv",
    "errors": "errors.csv",
    "samples": "samples.csv",
    "manifest": MANIFEST,
}
#: what `immunoprofile run` adds to its gating folder
FILE_PROVENANCE = "file_provenance.csv"
#: the figures folder of a stage (``gate --plots``; `immunoprofile run` for each stage)
PLOTS = "plots"

#: what `immunoprofile cluster` writes
CLUSTERING = {
    "populations": "populations.csv",
    "populations_parquet": "populations.parquet",
    "metaclusters": "metaclusters.csv",
    "metacluster_counts": "metacluster_counts.csv",
    "thresholds": "thresholds.csv",
    "unassigned": "unassigned.csv",
    "sample_gates": "sample_gates.csv",
    "resolution": "resolution.csv",
    "umap": "umap.csv",
    "errors": "errors.csv",
    "agreement": "agreement.csv",
    "agreement_pairs": "agreement_pairs.csv",
    "figures": "*.png",
    "manifest": MANIFEST,
}
#: outputs of `immunoprofile cluster` a run may or may not produce; one recorded by an
#: earlier run into the same folder and not produced now is removed
CLUSTERING_OPTIONAL = (
    "sample_gates.csv", "resolution.csv", "umap.csv", "errors.csv", "agreement.csv",
    "agreement_pairs.csv", "agreement.png", "heatmap.png", "som_grid.png", "umap_*.png",
)  # fmt: skip

#: what `immunoprofile compare` writes
COMPARISON = {
    "changes": "changes.csv",
    "stats": "stats.csv",
    "problems": "problems.csv",
    "comparison": "comparison.json",
    "report": "report.html",
}

#: every name `immunoprofile compare` may write into its output folder (with the report's
#: figures folder)
COMPARE_OUTPUTS = (*COMPARISON.values(), PLOTS)

#: what `immunoprofile run` writes at the top of its folder
RUN = {
    "run": "run.json",
    "report": "report.html",
    "truth_check": "truth_check.csv",
    "plots": "plots",
}
#: the stage folders of `immunoprofile run`
STAGES = {"gating": "gating", "clustering": "clustering", "comparison": "comparison"}

#: the writer named in each stage's manifest
WRITERS = {
    "gating": "immunoprofile gate",
    "clustering": "immunoprofile cluster",
    "comparison": "immunoprofile compare",
}
#: the file every writer of a stage always writes (how a folder without a manifest is told)
SIGNATURE = {
    "gating": "samples.csv",
    "clustering": "metaclusters.csv",
    "comparison": "stats.csv",
}
NAMES = {"gating": GATING, "clustering": CLUSTERING, "comparison": COMPARISON, "run": RUN}


def outputs(stage: str) -> tuple[str, ...]:
    """Every name (or glob) a stage's writer may put in its folder (for
    `immunoprofile._files.check_output_dir`)."""
    return tuple(NAMES[stage].values())


def _writer(folder: Path) -> str | None:
    """The writer recorded in a folder's manifest, or None."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("writer") if isinstance(data, dict) else None


@dataclass
class ResultsFolder:
    """A results folder read back by the one definition (see the module docstring).

    ``stages`` maps each stage found (``gating``, ``clustering``, ``comparison``) to its
    folder; `path` gives the path of one named output of a stage when it was written.
    """

    root: Path
    stages: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: str | os.PathLike) -> ResultsFolder:
        root = Path(directory)
        stages: dict[str, Path] = {}
        for stage, name in STAGES.items():
            sub = root / name
            if sub.is_dir() and (_writer(sub) or (sub / SIGNATURE[stage]).is_file()):
                stages[stage] = sub
        # the folder itself: a stage's own output folder (gate, cluster or compare)
        writer = _writer(root)
        for stage, w in WRITERS.items():
            if stage in stages:
                continue
            if writer == w or (writer is None and (root / SIGNATURE[stage]).is_file()):
                stages[stage] = root
        if (
            not stages.keys() & {"gating", "clustering"}
            and (root / GATING["populations"]).is_file()
        ):
            stages["gating"] = root  # a population table alone, as any tool may leave it
        return cls(root, stages)

    def path(self, stage: str, name: str) -> Path | None:
        """The output ``name`` (a key of the stage's table: ``"qc"``, ``"errors"``...) of
        ``stage`` when it was written (``stage="run"``: the folder's own files)."""
        folder = self.root if stage == "run" else self.stages.get(stage)
        if folder is None:
            return None
        p = folder / (PLOTS if name == "plots" else NAMES[stage][name])
        return p if p.exists() else None

    def has(self, stage: str) -> bool:
        return stage in self.stages


__all__ = [
    "CLUSTERING",
    "CLUSTERING_OPTIONAL",
    "COMPARE_OUTPUTS",
    "COMPARISON",
    "DEFAULT_OUT",
    "FILE_PROVENANCE",
    "GATING",
    "MANIFEST",
    "NAMES",
    "PLOTS",
    "RUN",
    "STAGES",
    "WRITERS",
    "ResultsFolder",
    "VISIT_FILES",
    "outputs",
]
