"""Regenerate ``trial_analysis.ipynb`` from ``trial_analysis.py`` (cells split at ``# %%``).

The script is the source of truth; ``tests/test_examples.py`` checks the two agree.
Run: ``python examples/make_notebook.py``.
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


if __name__ == "__main__":
    nb = build()
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i:02d}"  # stable ids: regenerating gives the same file
    nbformat.write(nb, HERE / "trial_analysis.ipynb")
    print(f"wrote {HERE / 'trial_analysis.ipynb'} ({len(nb.cells)} cells)")
