"""The built wheel carries the built-in templates and the schema, so that bare template
names resolve after a normal, non-editable ``pip install .``."""

from __future__ import annotations

import os
import shutil
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
    # built from a copy: setuptools leaves build/ and immunoprofile.egg-info/ in the tree it
    # builds, and an egg-info in the checkout makes the package look installed to
    # importlib.metadata for every later test run from it
    src = tmp_path_factory.mktemp("src") / "immunoprofile-src"
    skip = shutil.ignore_patterns(".git", "build", "*.egg-info", ".hypothesis", ".*cache*")
    shutil.copytree(REPO / "immunoprofile", src / "immunoprofile", ignore=skip)
    shutil.copytree(REPO / "gating", src / "gating", ignore=skip)
    for name in ("setup.cfg", "setup.py", "pyproject.toml", "README.md", "MANIFEST.in"):
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run([*cmd, "-w", str(out), str(src)], capture_output=True, text=True)
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


# --- every third-party import is declared -----------------------------------------------

#: import name -> distribution, for names whose distribution is not installed here
_DIST_OF = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "PIL": "pillow",
    "umap": "umap-learn",
    "dask": "dask",
    "flowkit": "flowkit",
    "anndata": "anndata",
}
#: optional adapters used only when the user already has the package (never installed by us)
_UNDECLARED_OPTIONAL = {"FlowCytometryTools"}


def _requirement_names(text: str) -> set[str]:
    import re

    out = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def _imports() -> tuple[set[str], set[str]]:
    """Top-level third-party module names imported by the package: at module level (needed
    on import) and anywhere (needed by some call)."""
    import ast

    module_level, anywhere = set(), set()
    for path in (REPO / "immunoprofile").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module.split(".")[0]]
            else:
                continue
            for n in names:
                if n in sys.stdlib_module_names or n in ("immunoprofile", "__future__"):
                    continue
                anywhere.add(n)
                if node in top:
                    module_level.add(n)
    return module_level, anywhere


def _dist(name: str) -> str:
    import importlib.metadata as md

    dists = md.packages_distributions().get(name)
    return (dists[0] if dists else _DIST_OF.get(name, name)).lower().replace("_", "-")


def test_every_import_is_declared():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    required = _requirement_names(cfg["options"]["install_requires"])
    extras = {k: _requirement_names(v) for k, v in cfg["options.extras_require"].items()}
    optional = set().union(*extras.values())
    module_level, anywhere = _imports()
    for name in module_level:
        assert _dist(name) in required, f"{name} is imported on import but not in install_requires"
    for name in anywhere - _UNDECLARED_OPTIONAL:
        assert _dist(name) in required | optional, f"{name} is imported but not declared"
    for name in ("threadpoolctl", "contourpy", "pillow"):
        assert name in required
    # UMAP is optional: its own extra, not a dependency of a plain install
    assert "umap-learn" not in required and extras["umap"] == {"umap-learn"}
