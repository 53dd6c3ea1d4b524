"""Regenerate ``trial_analysis.ipynb`` from ``trial_analysis.py`` (cells split at ``# %%``)
and run it, so the notebook is stored with its outputs and inline figures.

The script is the source of truth; ``tests/test_examples.py`` checks the two agree and
that the stored notebook ran cleanly. Run: ``python examples/make_notebook.py``
(``--no-execute`` writes the cells only). The notebook runs in a scratch folder with the
script's default parameters; nothing it writes is kept but the outputs in the notebook.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent


def script_cells(path: Path = HERE / "trial_analysis.py") -> tuple[str, list[str]]:
    """The module docstring and the code cells of the tutorial script."""
    text = path.read_text(encoding="utf-8")
    doc = ast.get_docstring(ast.parse(text)) or ""
    parts = re.split(r"(?m)^(?=# %%)", text)  # a cell starts at a line beginning "# %%"
    cells = [c.strip("\n") for c in parts if c.startswith("# %%")]
    return doc, cells


def build() -> nbformat.NotebookNode:
    doc, cells = script_cells()
    nb = nbformat.v4.new_notebook()
    title, _, rest = doc.partition("\n")
    nb.cells.append(nbformat.v4.new_markdown_cell(f"# {title}\n{rest}"))
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in cells)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 1800) -> nbformat.NotebookNode:
    """Run every cell in a scratch folder with this source tree importable; outputs are
    kept in the cells (figures as PNG)."""
    import os
    import tempfile

    from nbclient import NotebookClient

    repo = str(HERE.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory() as tmp:
        client = NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": tmp}},
            record_timing=False,
        )  # fmt: skip
        client.execute()
    return nb


if __name__ == "__main__":
    import sys

    nb = build()
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
    if "--no-execute" not in sys.argv[1:]:
        nb = execute(nb)
    nbformat.write(nb, HERE / "trial_analysis.ipynb")
    print(f"wrote {HERE / 'trial_analysis.ipynb'} ({len(nb.cells)} cells)")
