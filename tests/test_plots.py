"""Gating plots in instrument units: decade ticks, histogram axes, parent-named titles,
boolean gates drawn on the gate they refer to, ``ax=`` on every plot function."""

from __future__ import annotations

import numpy as np
import pytest

import immunoprofile as ip
from immunoprofile.plots.gating import (
    channel_transform,
    instrument_ticks,
    plot_gate,
    save_gate_plots,
)
from immunoprofile.transforms import Linear, Logicle


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    d = tmp_path_factory.mktemp("one")
    ip.simulate_cohort(d, patients=1, visits=("baseline",), events=8000, seed=5)
    s = ip.read_fcs(next(d.glob("*.fcs")))
    return ip.apply_template(s, ip.load_template("immune_profile"))


def test_logicle_axis_has_flowjo_decades():
    t = Logicle(t=262144.0, w=0.5, m=4.5, a=0.0)
    lim = (float(t.apply(np.array([-500.0]), dtype=np.float64)[0]), 1.0)
    major, labels, minor = instrument_ticks(t, lim)
    assert labels == ["0", "10²", "10³", "10⁴", "10⁵"]
    expect = t.apply(np.array([0.0, 1e2, 1e3, 1e4, 1e5]), dtype=np.float64)
    np.testing.assert_allclose(major, expect, atol=1e-12)
    # minor ticks at 2..9 x each decade from 10^2, inside the view
    m = t.apply(np.array([2e2, 3e2, 2e4, 9e4]), dtype=np.float64)
    assert all(np.isclose(minor, v).any() for v in m)
    assert all(lim[0] <= v <= lim[1] for v in minor)


def test_linear_axis_in_channel_values():
    t = Linear(t=262144.0, a=0.0)
    major, labels, minor = instrument_ticks(t, (0.0, 1.0))
    assert labels == ["0", "50K", "100K", "150K", "200K", "250K"]
    np.testing.assert_allclose(major, np.array([0, 5e4, 1e5, 1.5e5, 2e5, 2.5e5]) / 262144.0)
    assert minor == []


def test_gate_plot_in_instrument_units_names_the_parent(gated):
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    assert plot_gate(gated, "Treg", ax=ax) is fig  # drawn into the given axes
    n = int(gated.counts["Treg"])
    pct = 100 * n / int(gated.counts["CD4"])
    assert ax.get_title() == f"Treg: {n:,} events\n{pct:.1f}% of CD4"
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert "10³" in labels and "10⁴" in labels
    ch = gated.fitted["Treg"]["channels"][0]
    assert type(channel_transform(gated.sample, ch)).__name__ == "Logicle"
    # a 1-D gate: a histogram with an events axis
    fig2 = plot_gate(gated, "T")
    ax2 = fig2.axes[0]
    assert ax2.get_ylabel() == "events" and ax2.get_ylim()[0] == 0
    assert max(p.get_height() for p in ax2.patches if hasattr(p, "get_height")) > 0 or ax2.patches


def test_boolean_gate_is_drawn_on_the_gate_it_refers_to(gated):
    fig = plot_gate(gated, "Treg_memory")  # not Treg_naive
    ax = fig.axes[0]
    assert "not Treg_naive" in ax.get_title()
    assert ax.get_xlabel().startswith("CD45RA") and ax.get_ylabel().startswith("CD25")
    assert len(ax.collections) >= 2  # the parent in grey and the population on top
    assert any(p.get_linestyle() == "--" for p in ax.patches)  # Treg_naive's gate dashed


def test_save_gate_plots_one_png_per_gate(gated, tmp_path):
    from PIL import Image

    paths = save_gate_plots(gated, tmp_path / "s")
    names = [p.name for p in gated.template.populations]
    assert [p.name for p in paths] == [f"{i:02d}_{n}.png" for i, n in enumerate(names, 1)]
    sizes = {Image.open(p).size for p in paths}
    assert len(sizes) == 1 and min(next(iter(sizes))) >= 450  # readable when enlarged


def test_paired_and_clustering_plots_take_ax():
    import pandas as pd
    from matplotlib.figure import Figure

    from immunoprofile.comparison import compare
    from immunoprofile.plots import paired

    rows = [
        {"sample": f"P{i}_{v}", "patient": f"P{i}", "visit": v, "population": "Treg",
         "parent": "CD4", "count": 100, "parent_count": 1000,
         "percent_of_parent": 5.0 + i + (1 if v == "week24" else 0), "percent_of_lymphocytes": 1.0}
        for i in range(5) for v in ("baseline", "week24")
    ]  # fmt: skip
    cmp = compare(pd.DataFrame(rows))
    for fn, data in (
        (paired.forest_plot, cmp.stats),
        (paired.paired_plot, cmp.changes),
    ):
        fig = Figure()
        ax = fig.add_subplot(1, 1, 1)
        assert fn(data, "percent_of_parent", ax=ax) is fig
        assert ax.has_data()
    fig = Figure()
    ax = fig.add_subplot(1, 1, 1)
    assert paired.log2_heatmap(cmp.changes, "percent_of_parent", "week24", ax=ax) is fig
    assert "% of CD4" in " ".join(
        t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))
    )


def test_clustering_plots_take_ax():
    import pandas as pd
    from matplotlib.figure import Figure

    from immunoprofile.plots import clustering as cplots

    emb = pd.DataFrame(
        {"umap1": [0.0, 1.0, 2.0], "umap2": [1.0, 0.0, 1.0], "name": ["T", "B", "T"]}
    )
    fig = Figure()
    ax = fig.add_subplot(1, 2, 1)
    assert cplots.umap_plot(emb, color="name", ax=ax) is fig
    assert len(ax.collections) == 2  # one scatter per category
    summary = pd.DataFrame(
        {"metacluster": ["MC01", "MC02"], "name": ["T", "B"], "percent": [60.0, 40.0],
         "CD3": [0.8, 0.1], "CD19": [0.1, 0.7]}
    )  # fmt: skip
    ax2 = fig.add_subplot(1, 2, 2)
    assert cplots.median_heatmap(summary, ["CD3", "CD19"], ax=ax2) is fig
    assert ax2.get_images()[0].get_array().shape == (2, 2)
