"""Exchange with flowkit, FlowCytometryTools-like objects, AnnData and FCS."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from immunoprofile.interop.exchange import (
    ExchangeError,
    Measurement,
    export_fcs,
    from_fcmeasurement,
    from_flowkit,
    population_labels,
    to_anndata,
    to_fcmeasurement,
    to_flowkit,
    write_h5ad,
)
from immunoprofile.sample import Sample, make_channel_table


@pytest.fixture
def sample():
    rng = np.random.default_rng(1)
    ev = rng.normal(100, 30, size=(500, 3)).astype(np.float32)
    ch = make_channel_table(["FSC-A", "FL1-A", "FL2-A"], [None, "CD3", "CD4"], [262144] * 3)
    return Sample(ev, ch, {"$CYT": "test", "SPILL": "2,FL1-A,FL2-A,1,0.1,0,1"}, name="s1")


def _template(tmp_path=None):
    from immunoprofile.gating.template import validate_template

    return validate_template(
        {
            "name": "t",
            "compensation": "none",
            "transforms": None,
            "populations": [
                {"name": "big", "gate": {"type": "range", "dims": ["FSC-A"], "min": 100}},
                {
                    "name": "cd3",
                    "parent": "big",
                    "gate": {"type": "range", "dims": ["CD3"], "min": 110},
                },
            ],
        }
    )


def test_flowkit_round_trip(sample):
    pytest.importorskip("flowkit")
    fk_s = to_flowkit(sample)
    assert list(fk_s.pnn_labels) == sample.channel_names
    assert list(fk_s.pns_labels) == ["", "CD3", "CD4"]
    back = from_flowkit(fk_s)
    np.testing.assert_array_equal(back.events, sample.events)
    assert back.channel_names == sample.channel_names
    assert back.markers == [None, "CD3", "CD4"]
    assert back.history[-1]["via"] == "flowkit"


def test_from_flowkit_real_file_matches_our_reader(realdata):
    fk = pytest.importorskip("flowkit")
    from immunoprofile.io.fcs import read_fcs

    path = realdata / "FlowKit" / "data" / "gate_ref" / "data1.fcs"
    ours = read_fcs(path)
    theirs = from_flowkit(fk.Sample(str(path)))
    np.testing.assert_allclose(theirs.events, ours.events, rtol=1e-6)
    assert theirs.markers == ours.markers
    assert theirs.keywords["$CYT"] == "FACSCalibur"
    assert theirs.keywords["$P3E"] == "4,0"


def test_from_flowkit_rejects_other_objects():
    with pytest.raises(ExchangeError, match="not a flowkit.Sample"):
        from_flowkit(object())


class _FakeFCMeasurement:
    """Stand-in with FlowCytometryTools' FCMeasurement attributes (the package itself does
    not import on Python 3.11 / numpy 2)."""

    def __init__(self, data: pd.DataFrame, meta: dict, ID: str = "m1") -> None:
        self.data = data
        self.meta = meta
        self.ID = ID

    @property
    def channel_names(self):
        return tuple(self.data.columns)


def test_fcmeasurement_like_objects(sample):
    data = pd.DataFrame(sample.events, columns=sample.channel_names)
    channels = pd.DataFrame({"$PnN": sample.channel_names, "$PnS": ["", "CD3", "CD4"]})
    meta = {"$CYT": "x", "$P2R": "1024", "_channels_": channels, "_channel_names_": ()}
    s = from_fcmeasurement(_FakeFCMeasurement(data, meta))
    np.testing.assert_array_equal(s.events, sample.events)
    assert s.markers == [None, "CD3", "CD4"]
    assert s.channels["range"].tolist()[1] == 1024.0
    assert s.name == "m1"
    m = to_fcmeasurement(sample)
    assert m.channel_names == tuple(sample.channel_names)
    assert m.meta["$P2S"] == "CD3"
    np.testing.assert_array_equal(m.data.to_numpy(), sample.events)
    again = from_fcmeasurement(m)
    np.testing.assert_array_equal(again.events, sample.events)
    assert again.markers == sample.markers
    with pytest.raises(ExchangeError, match="lacks .meta"):
        from_fcmeasurement(type("X", (), {"data": data})())


@pytest.mark.skipif(
    importlib.util.find_spec("FlowCytometryTools") is None,
    reason="FlowCytometryTools is not installed (its 0.5.1 does not import on Python 3.11/numpy 2)",
)
def test_real_fcmeasurement(realdata):  # pragma: no cover - needs FlowCytometryTools
    from FlowCytometryTools import FCMeasurement

    path = realdata / "FlowKit" / "data" / "gate_ref" / "data1.fcs"
    s = from_fcmeasurement(FCMeasurement(ID="d", datafile=str(path)))
    assert s.n_events == 13367


def test_population_labels_most_specific():
    masks = {
        "a": np.array([1, 1, 0, 1], bool),
        "b": np.array([0, 1, 0, 1], bool),
        "c": np.array([0, 0, 0, 1], bool),
    }
    lab = population_labels(masks, ["a", "b", "c"])
    assert list(lab) == ["a", "b", "ungated", "c"]


def test_anndata_from_gating_result(sample, tmp_path):
    pytest.importorskip("anndata")
    from immunoprofile.gating.engine import apply_template

    res = apply_template(sample, _template())
    other = Sample(sample.events[:100].copy(), sample.channels, name="s2")
    res2 = apply_template(other, _template())
    meta = pd.DataFrame(
        {"sample": ["s1", "s2"], "patient": ["P1", "P2"], "visit": ["baseline", "week24"]}
    )
    clusters = {"s1": np.arange(500) % 4}
    path = write_h5ad([res, res2], tmp_path / "out.h5ad", metadata=meta, clusters=clusters)
    import anndata

    a = anndata.read_h5ad(path)
    assert a.shape == (600, 3)
    assert list(a.var_names) == ["FSC-A", "FL1-A", "FL2-A"]
    np.testing.assert_array_equal(a.X[:500], sample.events)
    obs1 = a.obs[a.obs["sample"] == "s1"]
    assert int(obs1["pop_cd3"].sum()) == res.counts["cd3"]
    assert int((obs1["population"] == "cd3").sum()) == res.counts["cd3"]
    assert int((obs1["population"] == "big").sum()) == res.counts["big"] - res.counts["cd3"]
    assert set(a.obs.loc[a.obs["sample"] == "s2", "visit"]) == {"week24"}
    assert (a.obs.loc[a.obs["sample"] == "s2", "cluster"] == -1).all()
    assert list(obs1["cluster"][:5]) == [0, 1, 2, 3, 0]
    assert "cd3" in a.uns["immunoprofile"]["gating_json"]


def test_anndata_rejects_mismatched_channels(sample):
    pytest.importorskip("anndata")
    other = Sample(
        sample.events[:, :2].copy(), sample.channels.iloc[:2].reset_index(drop=True), name="x"
    )
    with pytest.raises(ExchangeError, match="differ"):
        to_anndata([sample, other])


def test_export_fcs_population_and_cluster_columns(sample, tmp_path):
    from immunoprofile.gating.engine import apply_template
    from immunoprofile.io.fcs import read_fcs

    res = apply_template(sample, _template())
    clusters = np.arange(500) % 3
    out = export_fcs(
        sample,
        tmp_path / "big.fcs",
        mask=res.masks["big"],
        populations=res.masks,
        order=["big", "cd3"],
        clusters=clusters,
        cluster_names={0: "x", 1: "y", 2: "z"},
    )
    back = read_fcs(out)
    assert back.n_events == res.counts["big"]
    assert back.channel_names == ["FSC-A", "FL1-A", "FL2-A", "population", "cluster"]
    np.testing.assert_array_equal(back.events[:, :3], sample.events[res.masks["big"]])
    pop = back.events[:, 3]
    assert int((pop == 2).sum()) == res.counts["cd3"]  # 0 ungated, 1 big, 2 cd3
    assert int((pop == 1).sum()) == res.counts["big"] - res.counts["cd3"]
    np.testing.assert_array_equal(back.events[:, 4], clusters[res.masks["big"]] + 1)
    assert back.keywords["IMMUNOPROFILE_POPULATIONS"] == "0=ungated;1=big;2=cd3"
    assert back.keywords["IMMUNOPROFILE_CLUSTERS"].startswith("0=unclustered;1=x")
    with pytest.raises(ExchangeError, match="cluster labels"):
        export_fcs(sample, tmp_path / "bad.fcs", clusters=np.zeros(3))


def test_measurement_dataclass_channel_names():
    m = Measurement("id", pd.DataFrame({"a": [1.0], "b": [2.0]}))
    assert m.channel_names == ("a", "b")


def test_anndata_with_cluster_result():
    pytest.importorskip("anndata")
    import immunoprofile as ip
    from immunoprofile.interop.exchange import cluster_labels
    from immunoprofile.simulate.cohort import simulate_sample

    a, _ = simulate_sample(events=3000, seed=1, name="a")
    b, _ = simulate_sample(events=2000, seed=2, name="b")
    cl = ip.cluster([a, b], n_metaclusters=4, grid=(4, 4), n_resamples=5, n_epochs=2, seed=0)
    ad = to_anndata([a, b], clusters=cl)
    obs_b = ad.obs[ad.obs["sample"] == "b"]
    np.testing.assert_array_equal(obs_b["cluster"].to_numpy(), cluster_labels(cl, 1))
    names = cl.metacluster_names()
    # the name of each event's metacluster, MC01 being label 0
    first = int(obs_b["cluster"].iloc[0])
    assert obs_b["cluster_name"].iloc[0] == names[f"MC{first + 1:02d}"]


def test_cli_export_h5ad_and_fcs(tmp_path):
    pytest.importorskip("anndata")
    import anndata
    from click.testing import CliRunner

    from immunoprofile.cli import main
    from immunoprofile.io.fcs import read_fcs
    from immunoprofile.io.write import write_fcs
    from immunoprofile.simulate.cohort import simulate_sample

    files = []
    for k, visit in enumerate(("baseline", "week24")):
        s, _ = simulate_sample(events=4000, seed=10 + k, name=f"P01_{visit}")
        files.append(str(write_fcs(s, tmp_path / f"P01_{visit}.fcs")))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"file,patient,visit\n{files[0]},P01,baseline\n{files[1]},P01,week24\n")
    out = tmp_path / "c.h5ad"
    r = CliRunner().invoke(
        main,
        [
            "export",
            "--format",
            "h5ad",
            "--template",
            "tregs",
            *files,
            "--out",
            str(out),
            "--samplesheet",
            str(sheet),
        ],
    )
    assert r.exit_code == 0, r.output
    a = anndata.read_h5ad(out)
    assert a.n_obs == 8000 and set(a.obs["visit"]) == {"baseline", "week24"}

    def export_fcs(population: str, out):
        args = ["export", "--format", "fcs", "--template", "tregs", files[0]]
        return CliRunner().invoke(main, [*args, "--population", population, "--out", str(out)])

    r = export_fcs("CD4", tmp_path / "fcs")
    assert r.exit_code == 0, r.output
    back = read_fcs(tmp_path / "fcs" / "P01_baseline.CD4.fcs")
    assert back.channel_names[-1] == "population"
    n_cd4 = int(a.obs.loc[a.obs["sample"] == "P01_baseline", "pop_CD4"].sum())
    assert back.n_events == n_cd4
    r = export_fcs("nope", tmp_path / "x")
    assert r.exit_code == 1 and "no population 'nope'" in r.output
