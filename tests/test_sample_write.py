import numpy as np
import pytest

from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table


@pytest.fixture
def small_sample():
    rng = np.random.default_rng(0)
    ev = rng.normal(100, 50, size=(500, 4)).astype(np.float32)
    ch = make_channel_table(
        ["FSC-A", "SSC-A", "FITC-A", "Time"], [None, None, "CD3", None], [262144] * 4
    )
    return Sample(ev, ch, {"$CYT": "Test|Cytometer", "$SPILLOVER": "1,FITC-A,1"}, name="s")


def test_channel_kinds(small_sample):
    assert list(small_sample.channels["kind"]) == ["scatter", "scatter", "fluorescence", "time"]


def test_written_file_reads_in_flowio(tmp_path, small_sample):
    flowio = pytest.importorskip("flowio")
    p = write_fcs(small_sample, tmp_path / "out.fcs")
    fd = flowio.FlowData(str(p))
    assert fd.event_count == 500
    ev = np.reshape(np.array(fd.events, dtype=np.float32), (-1, 4))
    np.testing.assert_array_equal(ev, small_sample.events)
    assert fd.text["cyt"] == "Test|Cytometer"  # a delimiter absent from the values is chosen
    assert fd.text["p3s"] == "CD3"


def test_write_mask(tmp_path, small_sample):
    flowio = pytest.importorskip("flowio")
    mask = small_sample.events[:, 0] > 100
    p = write_fcs(small_sample, tmp_path / "sub.fcs", mask=mask)
    assert flowio.FlowData(str(p)).event_count == int(mask.sum())
    assert not list(tmp_path.glob(".*.tmp"))
