"""The built wheel carries the built-in templates and the schema, so that bare template
names resolve after a normal, non-editable ``pip install .``."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BUILTINS = sorted(p.stem for p in (REPO / "gating").glob("*.json"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run([*cmd, "-w", str(out), str(REPO)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {proc.stderr.strip()[-300:]}")
    (whl,) = out.glob("immunoprofile-*.whl")
    return whl


def test_wheel_contains_templates_and_schema(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for stem in BUILTINS:
        assert f"immunoprofile/builtin_templates/{stem}.json" in names
    assert any(n.startswith("immunoprofile/schemas/") and n.endswith(".json") for n in names)
    assert "immunoprofile/html/report.html.j2" in names  # the report's layout


def test_installed_wheel_resolves_bare_names(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
    )
    code = (
        "import immunoprofile, json;"
        "from immunoprofile.gating.template import list_templates;"
        "names = list_templates();"
        "t = immunoprofile.load_template('tregs');"
        "print(json.dumps([immunoprofile.__file__, names, [p.name for p in t.populations]]))"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    import json

    module_file, names, populations = json.loads(proc.stdout)
    assert Path(module_file).is_relative_to(target)  # the installed copy, not the source tree
    assert set(BUILTINS) <= set(names)
    assert "Treg" in populations and "lymphocytes" in populations
