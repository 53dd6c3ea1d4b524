"""Golden run: every output of the command line on a small simulated cohort, compared with
the outputs committed in ``tests/golden/`` (sha256 of each file, normalised only where a
value must change from one run to the next).

The point is refactoring: moving code between modules, sharing the batch runner or the
results-folder writer must not change one byte a user gets. A change of output that is
meant (a gating or statistics change) regenerates the goldens, on purpose and in the same
commit::

    python tests/test_golden_run.py --update

What is normalised, and nothing else (`NORMALISED`):

* the temporary folder the run happens in (absolute paths in tables, JSON and the report);
* per-file wall-clock seconds (``samples.csv`` and the report's table of files);
* the date and time a table or report was written (``YYYY-MM-DD HH:MM UTC``);
* the software versions recorded in ``run.json``, and the `` (source tree)`` after the
  report's own version (present or not depending on whether packaging metadata lies in
  the source folder);
* xlsx workbooks are compared cell by cell (the zip container stores write times).

The goldens hold for the library versions they were made with (`ENVIRONMENT`); where any of
those differs (the plain-install CI environment with pandas 3), last-digit differences of
floating point are possible, and the test skips, naming the versions.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
MANIFEST = GOLDEN / "golden_run.json"
#: libraries whose version the outputs' bytes may depend on
ENVIRONMENT = ("numpy", "scipy", "pandas", "scikit-learn", "matplotlib", "pyarrow", "openpyxl")
#: text outputs stored whole beside the manifest, so that a failure shows a diff
KEEP_TEXT = (".csv",)
NORMALISED = (
    "temporary folder -> <TMP>",
    "samples.csv seconds column and the report's seconds cells -> <SECONDS>",
    "YYYY-MM-DD HH:MM UTC -> <WHEN> (report, xlsx metadata sheet)",
    "run.json versions -> <VERSIONS>",
    "' (source tree)' after immunoprofile's version in the report -> removed",
    "xlsx: compared cell by cell, not as zip bytes",
)

# --- the run ---------------------------------------------------------------------------


def _invoke(args: list[str]) -> None:
    from click.testing import CliRunner

    from immunoprofile.cli import main

    res = CliRunner().invoke(main, ["-q", *args], catch_exceptions=False)
    # every step here is expected to succeed on the simulated cohort
    assert res.exit_code == 0, f"immunoprofile {' '.join(args)} -> {res.exit_code}\n{res.output}"


def produce(root: Path) -> Path:
    """Simulate the cohort into ``root`` and run the command line on it, as a user would;
    returns the folder holding every output."""
    from immunoprofile.simulate import simulate_cohort

    old = Path.cwd()
    os.chdir(root)
    try:
        simulate_cohort("cohort", patients=3, visits=("baseline", "week24"), events=3000, seed=7)
        fcs = sorted(str(p.relative_to(root)) for p in (root / "cohort").glob("*.fcs"))
        sheet = "cohort/samplesheet.csv"
        # gate (with QC and per-gate plots) + cluster + compare + report in one
        _invoke(["run", *fcs, "--samplesheet", sheet, "--out", "out/run", "--seed", "3"])
        # gate alone, by pattern, two processes
        _invoke(["gate", "-t", "immune_profile", *fcs, "--out", "out/gate", "--jobs", "2",
                 "--pattern", r"(?P<patient>P\d+)_(?P<visit>\w+)\.fcs", "--seed", "1"])  # fmt: skip
        # cluster alone, with agreement against the gating table and its figures
        _invoke(["cluster", *fcs, "--out", "out/cluster", "--samplesheet", sheet,
                 "--grid", "6x6", "--metaclusters", "8", "--parent", "live", "--seed", "2",
                 "--gating", "out/gate/populations.csv"])  # fmt: skip
        # compare + report from the gate folder's table
        _invoke(["compare", "out/gate/populations.csv", "--out", "out/compare"])
        # events with population labels, one FCS per input
        _invoke(["export", "--format", "fcs", "-t", "immune_profile", *fcs[:2],
                 "--out", "out/export", "--population", "T"])  # fmt: skip
    finally:
        os.chdir(old)
    return root / "out"


# --- normalisation -----------------------------------------------------------------------

_WHEN = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}( UTC)?")
_HTML_SECONDS = re.compile(
    r'(<td class="">\d+</td><td class="">)\d+\.\d+(</td><td class="l">[^<]*\.fcs</td>)'
)


def _text(path: Path, rel: str, tmp: list[str]) -> bytes:
    text = path.read_text(encoding="utf-8")
    for t in tmp:
        text = text.replace(t, "<TMP>")
    if rel.endswith("samples.csv"):
        k = text.splitlines()[0].split(",").index("seconds")  # the fields before: no commas
        seconds = re.compile(rf"^(?P<head>(?:[^,\"]*,){{{k}}})[0-9.]+,", re.MULTILINE)
        text = seconds.sub(lambda m: m["head"] + "<SECONDS>,", text)
    if rel.endswith(".html"):
        text = text.replace(" (source tree)", "")
        text = _HTML_SECONDS.sub(r"\1<SECONDS>\2", text)
        text = _WHEN.sub("<WHEN>", text)
    if rel.endswith("run.json"):
        obj = json.loads(text)
        obj["versions"] = "<VERSIONS>"
        text = json.dumps(obj, indent=2)
    return text.encode("utf-8")


def _xlsx(path: Path, rel: str, tmp: list[str]) -> bytes:
    import openpyxl

    wb = openpyxl.load_workbook(path)
    lines = []
    for ws in wb.worksheets:
        lines.append(f"== {ws.title}")
        for row in ws.iter_rows(values_only=True):
            cells = []
            for v in row:
                s = repr(v)
                for t in tmp:
                    s = s.replace(t, "<TMP>")
                cells.append(_WHEN.sub("<WHEN>", s))
            lines.append("\t".join(cells))
    return "\n".join(lines).encode("utf-8")


def normalised(path: Path, rel: str, tmp: list[str]) -> bytes:
    """The bytes of one output as compared (see the module docstring)."""
    how: Callable[[Path, str, list[str]], bytes]
    if path.suffix in (".csv", ".json", ".html", ".txt"):
        how = _text
    elif path.suffix == ".xlsx":
        how = _xlsx
    else:
        return path.read_bytes()
    return how(path, rel, tmp)


def digest(out: Path, root: Path) -> dict[str, bytes]:
    """Every output file (path relative to ``out``) -> its normalised bytes."""
    tmp = sorted({str(root), str(root.resolve())}, key=len, reverse=True)
    return {
        p.relative_to(out).as_posix(): normalised(p, p.relative_to(out).as_posix(), tmp)
        for p in sorted(out.rglob("*"))
        if p.is_file()
    }


def _versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in ENVIRONMENT}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the test ----------------------------------------------------------------------------


def test_outputs_match_the_golden_run(tmp_path: Path) -> None:
    golden = json.loads(MANIFEST.read_text(encoding="utf-8"))
    differ = {k: (golden["environment"].get(k), v) for k, v in _versions().items()
              if golden["environment"].get(k) != v}  # fmt: skip
    if differ:
        pytest.skip(f"goldens made with other library versions (golden, here): {differ}")
    got = digest(produce(tmp_path), tmp_path)
    want: dict[str, str] = golden["files"]
    assert sorted(got) == sorted(want), (
        f"output files differ: new {sorted(set(got) - set(want))}, "
        f"missing {sorted(set(want) - set(got))}"
    )
    changed = [k for k in want if _sha(got[k]) != want[k]]
    details = []
    for k in changed:
        kept = GOLDEN / "run" / k
        if kept.is_file():
            import difflib

            diff = difflib.unified_diff(
                kept.read_text(encoding="utf-8").splitlines(),
                got[k].decode("utf-8").splitlines(),
                f"golden/{k}",
                k,
                lineterm="",
                n=0,
            )
            details.append("\n".join(list(diff)[:12]))
    assert not changed, (
        f"{len(changed)} of {len(want)} outputs differ from the golden run: {changed}\n"
        + "\n".join(details)
        + "\nA refactor must not change outputs; if the change is meant, regenerate with "
        "`python tests/test_golden_run.py --update` and say why in the commit."
    )


def update() -> None:
    """Regenerate ``tests/golden/`` from a fresh run."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        got = digest(produce(root), root)
    if (GOLDEN / "run").exists():
        shutil.rmtree(GOLDEN / "run")
    for rel, data in got.items():
        if rel.endswith(KEEP_TEXT):
            dest = GOLDEN / "run" / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
    manifest = {
        "note": "sha256 of every output of tests/test_golden_run.py's run, normalised as its "
        "docstring says; regenerate with python tests/test_golden_run.py --update",
        "normalised": list(NORMALISED),
        "environment": _versions(),
        "files": {rel: _sha(data) for rel, data in got.items()},
    }
    MANIFEST.parent.mkdir(parents=True, exist_ok=True)
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"{len(got)} outputs -> {MANIFEST}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_golden_run.py --update")
    sys.path.insert(0, str(HERE.parent))
    update()
