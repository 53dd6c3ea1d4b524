"""The tutorial script and notebook run end to end on a small cohort (3 patients x 2 visits
x 5k events), and the notebook holds exactly the script's cells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")  # the test extra; the core test environment lacks it

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

sys.path.insert(0, str(EXAMPLES))
from make_notebook import script_cells  # noqa: E402

SMALL = {"PATIENTS": 3, "EVENTS": 5_000, "VISITS": ("baseline", "week24")}


def test_notebook_matches_script():
    nb = nbformat.read(EXAMPLES / "trial_analysis.ipynb", as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    _, cells = script_cells()
    assert code == cells, "run `python examples/make_notebook.py` after editing the script"


def test_script_runs_small_cohort(tmp_path):
    out = tmp_path / "ex"
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "trial_analysis.py"), "--out", str(out),
         "--patients", "3", "--events", "5000", "--jobs", "1", "--visits", "baseline", "week24"],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"report: {out / 'report.html'}" in r.stdout
    html = (out / "report.html").read_text()
    assert "2/8 = 0.2500" in html  # n = 3: the smallest exact p is 2/2^3
    stats = pd.read_csv(out / "gating" / "populations.csv")
    assert set(stats["patient"]) == {"P01", "P02", "P03"}
    assert {"paired.png", "forest.png", "heatmap.png"} <= {
        p.name for p in (out / "figures").iterdir()
    }


def test_notebook_code_runs_small_cohort(tmp_path, monkeypatch):
    """Execute the notebook's code cells in order, with the parameters made small."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("matplotlib.pyplot.show", lambda *a, **k: None, raising=False)
    nb = nbformat.read(EXAMPLES / "trial_analysis.ipynb", as_version=4)
    ns: dict = {"__name__": "trial_analysis_notebook"}
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    exec(compile(cells[0], "cell-parameters", "exec"), ns)
    ns.update(SMALL, OUT=tmp_path / "nb", JOBS=1)
    for i, src in enumerate(cells[1:], start=1):
        exec(compile(src, f"cell-{i}", "exec"), ns)
    cmp = ns["cmp"]
    assert set(cmp.changes["patient"]) == {"P01", "P02", "P03"}
    assert Path(ns["report"]).is_file()
    st = cmp.endpoint_stats(measure="percent_of_parent", followup="week24")
    assert set(st["population"]) == {"Treg", "Th17", "B", "NK"}
    assert (st["n_pairs"] == 3).all()


def test_notebook_is_stored_with_outputs_and_inline_figures():
    """The notebook in the repository ran (python examples/make_notebook.py): every code
    cell has its outputs, none failed, and the figures show inline as PNG."""
    nb = nbformat.read(EXAMPLES / "trial_analysis.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) >= 2  # a gate of one file and the forest plot
    assert not any("<Figure" in o.get("data", {}).get("text/plain", "") and
                   "image/png" not in o.get("data", {}) for o in outputs)  # fmt: skip
    text = "".join(o.get("text", "") for o in outputs)
    assert "report:" in text and "every file gated" in text


def test_figures_show_inline_without_matplotlib_inline():
    """Figures the library returns carry _repr_png_, so IPython shows them as pictures."""
    from IPython.core.formatters import PNGFormatter

    from immunoprofile.plots import new_figure

    fig = new_figure(2, 2)
    fig.add_subplot().plot([0, 1], [1, 0])
    png = PNGFormatter()(fig)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
