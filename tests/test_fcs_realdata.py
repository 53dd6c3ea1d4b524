"""Every real FCS file under ../shared/realdata reads correctly or raises its named error.

Expected values are those of MANIFEST.md (sections C, D and the fcsparser files of G),
which transcribes them from FlowIO's and FlowKit's own tests.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from immunoprofile.exceptions import (
    DataOffsetDiscrepancyError,
    FCSWarning,
    MultipleDataSetsError,
    NotFCSError,
    TruncatedFCSError,
)
from immunoprofile.io.fcs import read_fcs, read_fcs_datasets, read_fcs_header

pytestmark = pytest.mark.realdata

FLOWIO = Path("FlowIO/data/fcs_files")
TRUTH = Path("FlowIO/data/truth")
FCSP = Path("fcsparser/fcsparser/tests/data/FlowCytometers")

# files that must raise, and the error they must raise
BAD = {
    FLOWIO / "data_start_offset_discrepancy_example.fcs": DataOffsetDiscrepancyError,
    FLOWIO / "data_stop_offset_discrepancy_example.fcs": DataOffsetDiscrepancyError,
    Path("FlowKit/data/noncompliant/data_start_offset_discrepancy_example.fcs"): (
        DataOffsetDiscrepancyError
    ),
    Path("FlowKit/data/noncompliant/data_stop_offset_discrepancy_example.fcs"): (
        DataOffsetDiscrepancyError
    ),
    FCSP / "corrupted/corrupted.fcs": NotFCSError,
    # only HEADER and TEXT were kept of this file (3931 of 2165912 bytes)
    FCSP / "cytek-nl-2000/sample_header.fcs": TruncatedFCSError,
}


def _all_fcs(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.suffix.lower() in (".fcs", ".lmd") and p.is_file()
    )


def test_every_real_file_reads_or_raises_its_error(realdata):
    files = _all_fcs(realdata)
    assert len(files) >= 40
    for f in files:
        rel = f.relative_to(realdata)
        if rel in BAD:
            with pytest.raises(BAD[rel]) as exc:
                read_fcs(f)
            assert str(f) in str(exc.value)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FCSWarning)
            s = read_fcs(f)
        meta = read_fcs_header(f)
        assert s.events.shape == (meta.n_events, meta.n_channels), rel
        assert s.events.dtype == np.float32 and s.events.flags.c_contiguous
        assert int(s.keywords.get("$TOT", s.n_events)) == s.n_events


def test_data1_raw_and_scaled_exact(realdata):
    f = realdata / FLOWIO / "data1.fcs"
    raw = np.load(realdata / TRUTH / "data1_original_events.npy")
    pre = np.load(realdata / TRUTH / "data1_preprocessed.npy")
    np.testing.assert_array_equal(read_fcs(f, scale=False).events, raw.astype(np.float32))
    s = read_fcs(f)
    np.testing.assert_array_equal(s.events, pre.astype(np.float32))
    assert s.channel_names == [
        "FSC-H",
        "SSC-H",
        "FL1-H",
        "FL2-H",
        "FL3-H",
        "FL2-A",
        "FL4-H",
        "Time",
    ]
    assert s.keywords["$CYT"] == "FACSCalibur" and s.n_events == 13367
    assert list(s.channels["gain"][:2]) == [3.67, 8.0]
    assert list(s.channels["log_decades"]) == [0, 0, 4, 4, 4, 0, 4, 0]


def test_b01_preprocessed_exact(realdata):
    s = read_fcs(realdata / FLOWIO / "B01 KC-A-W---91-US.fcs")
    truth = np.load(realdata / TRUTH / "B01 KC-A-W---91-US_preprocessed_events.npy")
    np.testing.assert_array_equal(s.events, truth.astype(np.float32))
    assert "$SPILLOVER" in s.keywords


def test_variable_int_example(realdata):
    s = read_fcs(realdata / FLOWIO / "variable_int_example.fcs", scale=False)
    expected = [49135, 61373, 48575, 49135, 61373, 48575, 7523, 598, 49135, 61373, 48575,
                49135, 61373, 48575, 28182, 61200, 48575, 49135, 32445, 30797, 19057, 49135,
                61373, 48575, 5969, 8265081, 61266, 48575, 49135, 20925, 61265, 48575, 27961,
                25200, 61287, 48575, 9795, 49135, 29117, 49135, 61373, 48575, 61228, 48575, 22,
                21760, 49135, 20413, 49135, 23997, 19807, 15691602]  # fmt: skip
    np.testing.assert_array_equal(s.events.ravel(), np.array(expected, dtype=np.float32))


def test_coulter_two_data_sets(realdata):
    f = realdata / FLOWIO / "coulter.lmd"
    sets = read_fcs_datasets(f)
    assert [(d["version"], d["n_channels"], d["n_events"]) for d in sets] == [
        ("2.0", 8, 18110),
        ("3.0", 8, 18110),
    ]
    assert sets[1]["offset"] == 363602
    with pytest.warns(FCSWarning, match="2 data sets"):
        first = read_fcs(f, scale=False)
    assert first.keywords["$CYT"] == "Cytomics FC 500"
    with pytest.raises(MultipleDataSetsError):
        read_fcs(f, dataset=None)
    with pytest.raises(MultipleDataSetsError, match="does not exist"):
        read_fcs(f, dataset=2)
    with pytest.warns(FCSWarning, match="one byte past"):
        second = read_fcs(f, dataset=1, scale=False)
    expected = [61056, 131840, 46, 324, 10309, 104, 11912, 0, 257280, 378656, 139, 1728,
                58688, 354, 58720, 0, 164128, 305376, 159, 924, 29024, 208, 29728, 0]  # fmt: skip
    np.testing.assert_array_equal(second.events.ravel()[:24], np.array(expected, np.float32))


def test_g11_and_100715_big_endian(realdata):
    g = read_fcs(realdata / FLOWIO / "G11.fcs")
    assert g.events.shape == (5785, 12)
    s = read_fcs(realdata / FLOWIO / "100715.fcs", scale=False)
    assert s.events.shape == (65016, 16)
    assert int((s.column("SSC-A") < 0).sum()) == 2  # FlowKit's filter_negative_scatter test
    assert s.keywords["SPILL"].startswith("13,")
    assert float(s.keywords["$TIMESTEP"]) == 0.08
    # float data, no gain, no Time channel: scaling changes nothing
    np.testing.assert_array_equal(read_fcs(realdata / FLOWIO / "100715.fcs").events, s.events)


def test_3fitc_flowio_file(realdata):
    s = read_fcs(realdata / FLOWIO / "3FITC_4PE_004.fcs")
    assert s.events.shape == (94569, 4) and s.keywords["$CYT"] == "FACScan"
    with open(realdata / FLOWIO / "3FITC_4PE_004.fcs", "rb") as fh:
        np.testing.assert_array_equal(read_fcs(fh).events, s.events)


def test_test_comp_example_off_by_one_tolerated(realdata):
    with pytest.warns(FCSWarning, match="one byte past"):
        s = read_fcs(realdata / "FlowKit/data/test_comp_example.fcs", scale=False)
    assert s.events.shape == (10703, 18)
    assert s.events[0, s.channel_index("FSC-A")] == np.float32(118103.25)
    dump = np.fromfile(realdata / "FlowKit/data/test_comp_example.npy").reshape(10703, 18)
    np.testing.assert_array_equal(s.events, dump.astype(np.float32))


def test_noncompliant_offsets_choosable(realdata):
    f = realdata / FLOWIO / "data_start_offset_discrepancy_example.fcs"
    good = read_fcs(realdata / FLOWIO / "variable_int_example.fcs", scale=False)
    np.testing.assert_array_equal(read_fcs(f, offsets="text", scale=False).events, good.events)


def test_fcsparser_files(realdata):
    cytek = read_fcs(realdata / FCSP / "Cytek_xP5/Cytek_xP5.fcs", scale=False)
    assert cytek.events.shape == (23126, 8) and list(cytek.channels["bits"]) == [24] * 8
    assert cytek.events[:, 1:].max() <= 1023  # 24-bit values masked to $PnR=1024
    meta = read_fcs_header(realdata / FCSP / "cytek-nl-2000/sample_header.fcs")
    assert meta.n_events == 20000 and meta.n_channels == 27
    large = read_fcs(realdata / FCSP / "fake_large_fcs/fake_large_fcs.fcs")
    assert large.events.shape == (11585, 11)
    lmd = read_fcs(realdata / FCSP / "fake_bitmask_error/fcs1_cleaned.lmd", scale=False)
    assert lmd.events.shape == (50000, 7) and lmd.events.max() <= 1023
    beads = realdata / "FlowKit/data/4_color_beads"
    for f in beads.glob("*.fcs"):
        s = read_fcs(f)  # form-feed delimiter
        assert s.events.shape == (5000, 11) and "SPILL" in s.keywords


def test_subsets_agree_with_the_full_read(realdata):
    f = realdata / FLOWIO / "data1.fcs"
    pre = np.load(realdata / TRUTH / "data1_preprocessed.npy").astype(np.float32)
    every3 = np.arange(0, 13367, 3)
    s = read_fcs(f, channels=["FL1-H", "FSC-H", "Time"], events=every3)
    np.testing.assert_array_equal(s.events, pre[every3][:, [2, 0, 7]])
    s = read_fcs(f, channels=[6], events=slice(100, None))
    np.testing.assert_array_equal(s.events, pre[100:, [6]])
    assert s.channels.loc[0, "range"] == 10_000.0  # log 4 decades: top of the scale
