"""Every bash and Python block of README.md runs as written.

The blocks run in document order in one scratch folder, each in a fresh process (a
Python block gets no variables from an earlier one, so a block missing its own
``import immunoprofile as ip`` fails here as it would for a reader), with an
``immunoprofile`` command on PATH. A block may be left out only by a marker on the line
before it, ``<!-- readme-test: skip (reason) -->``, for what does not belong in a test run
(installing the package, the test suite itself, benchmarks that take many minutes); the
reasons are checked. No block may need the real-data folder (``../shared/realdata``,
absent for a user of the package): the blocks run with ``IMMUNOPROFILE_REALDATA`` set to
a missing folder and nothing beside the scratch folder, so one that reads real data fails
here; the example files come from ``immunoprofile examples``.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

README = REPO / "README.md"
FENCE = re.compile(
    r"(?:<!-- readme-test: skip \((?P<why>[^)]+)\) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S
)
ALLOWED_SKIPS = ("installs the package", "the test suite itself", "benchmark")


def readme_blocks() -> list[tuple[int, str, str, str | None]]:
    """(line, language, code, skip reason) of every bash/python block, in order."""
    text = README.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group("lang") not in ("bash", "python"):
            continue
        line = text[: m.start("body")].count("\n")
        out.append((line, m.group("lang"), m.group("body"), m.group("why")))
    return out


def test_skipped_blocks_say_why_and_are_few():
    blocks = readme_blocks()
    skipped = [(line, why) for line, _, _, why in blocks if why]
    assert len(blocks) > 25
    for line, why in skipped:
        assert why.startswith(ALLOWED_SKIPS), (line, why)
    run = [b for b in blocks if not b[3]]
    assert len(run) >= 0.7 * len(blocks)
    for line, _, code, _ in run:  # a benchmark or an install must say it is one
        assert not re.search(r"python benchmarks/|pip install", code), f"README line {line}"


def test_no_block_reads_the_real_data_folder():
    for line, _, code, why in readme_blocks():
        if not why:
            assert not re.search(r"realdata|\.\./shared", code), f"README line {line}"


def test_python_blocks_import_what_they_use():
    for line, lang, code, _ in readme_blocks():
        if lang == "python" and re.search(r"\bip\.", code):
            assert "import immunoprofile as ip" in code, f"README line {line}: no import"


def test_readme_blocks_run_as_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shim = tmp_path / "bin"
    shim.mkdir()
    cmd = shim / "immunoprofile"
    cmd.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m immunoprofile "$@"\n')
    cmd.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["COLUMNS"] = "120"
    env["IMMUNOPROFILE_REALDATA"] = str(tmp_path / "no-realdata")  # as for a package user
    ran, left = 0, []
    for line, lang, code, why in readme_blocks():
        if why:
            continue
        if _missing_extra(code):  # e.g. the plain-install CI environment has no flowkit
            left.append(line)
            continue
        if lang == "bash":
            argv = ["bash", "-euo", "pipefail", "-c", code]
        else:
            argv = [sys.executable, "-c", code]
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"README line {line} ({lang}) failed with exit {proc.returncode}:\n{code}\n"
            f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
        )
        ran += 1
    assert ran >= 20
    if left:
        pytest.skip(f"ran {ran} blocks; {len(left)} need an extra not installed (lines {left})")


# What a README block uses that only an extra installs (module -> pattern in the block).
EXTRA_USES = {
    "flowkit": re.compile(r"to_flowkit|from_flowkit|import flowkit"),
    "anndata": re.compile(r"h5ad|anndata"),
    "umap": re.compile(r"--umap|umap=True"),
    "distributed": re.compile(r"--scheduler|dask\.distributed"),
}


def _missing_extra(code: str) -> bool:
    """Whether the block uses a package of an extra that is not installed here."""
    return any(
        pattern.search(code) and importlib.util.find_spec(module) is None
        for module, pattern in EXTRA_USES.items()
    )


@pytest.mark.slow
def test_readme_demo_table_is_what_the_demo_prints(tmp_path):
    """The demo's summary table quoted in the README equals the one `immunoprofile demo`
    prints (rows compared cell by cell)."""
    text = README.read_text(encoding="utf-8")
    quoted = text.split("the report's key results carry the same numbers")[1].split("```text\n")[1]
    quoted_rows = [_cells(r) for r in quoted.split("```")[0].splitlines() if r.startswith("│")]
    env = dict(os.environ, COLUMNS="120")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-m", "immunoprofile", "demo", "--out", str(tmp_path / "d")],
        capture_output=True, text=True, env=env, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = [_cells(r) for r in proc.stdout.splitlines() if r.startswith("│")]
    assert printed == quoted_rows


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip("│ ").split("│")]
