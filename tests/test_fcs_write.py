"""FCS writing: exact round trips, keywords kept, readable by flowio and flowkit, atomic."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from fcs_builder import build_fcs, standard_keywords

import immunoprofile.io.write as writer
from immunoprofile.exceptions import FCSWarning
from immunoprofile.io.fcs import read_fcs
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table

SPILL = "2,FITC-A,PE-A,1,0.1,0.02,1"


@pytest.fixture
def sample() -> Sample:
    rng = np.random.default_rng(11)
    ev = rng.normal(1000, 800, size=(1000, 4)).astype(np.float32)
    ev[:, 3] = np.sort(rng.uniform(0, 5000, 1000)).astype(np.float32)
    ch = make_channel_table(
        ["FSC-A", "FITC-A", "PE-A", "Time"],
        [None, "CD4 BV510", "CD25", None],
        [262144, 262144, 100000.5, 5000],
    )
    kw = {
        "$CYT": "Aurora|X/Y",
        "$SPILLOVER": SPILL,
        "$TIMESTEP": "0.01",
        "$P2V": "450",
        "$P2N": "FITC-A",
        "PATIENT_ID": "P03",
        "$OP": "Jos\xe9",
        "EMPTY": "",
    }
    return Sample(ev, ch, kw, name="s")


def test_round_trip_exact(tmp_path, sample):
    p = write_fcs(sample, tmp_path / "out.fcs")
    back = read_fcs(p, scale=False)
    np.testing.assert_array_equal(back.events, sample.events)
    assert back.channel_names == sample.channel_names
    assert back.markers == sample.markers
    np.testing.assert_array_equal(back.channels["range"], sample.channels["range"])
    for key in ("$CYT", "$SPILLOVER", "PATIENT_ID", "$OP", "$TIMESTEP"):
        assert back.keywords[key] == sample.keywords[key]
    assert back.keywords["$P2V"] == "450"  # matched to FITC-A by name
    assert back.keywords["$FIL"] == "out.fcs"
    assert back.keywords["EMPTY"].strip() == ""
    # a built (stored-values) sample keeps $TIMESTEP, so scaled reading scales Time
    scaled = read_fcs(p)
    np.testing.assert_array_equal(
        scaled.column("Time"), (sample.column("Time").astype(np.float64) * 0.01).astype("f4")
    )


def test_layout_of_header_and_text(tmp_path, sample):
    p = write_fcs(sample, tmp_path / "out.fcs")
    raw = p.read_bytes()
    assert raw[:10] == b"FCS3.1    "
    t0, t1, d0, d1 = (int(raw[10 + 8 * i : 18 + 8 * i]) for i in range(4))
    assert t0 == 58 and raw[t0 : t0 + 1] == raw[t1 : t1 + 1]  # TEXT starts and ends with delim
    assert d1 - d0 + 1 == 1000 * 4 * 4 and d1 == len(raw) - 1
    np.testing.assert_array_equal(
        np.frombuffer(raw[d0 : d1 + 1], "<f4").reshape(1000, 4), sample.events
    )


def test_scaled_sample_round_trip_and_timestep(tmp_path):
    # integer file with gain, log amplification and $TIMESTEP, read on the scale
    raw = np.array([[512, 256, 100], [3, 1000, 7]], dtype="<u2")
    kw = standard_keywords(
        2,
        ["FSC-H", "FL1-H", "Time"],
        datatype="I",
        bits=16,
        extra={"$P1G": "4", "$P2E": "4,0", "$TIMESTEP": "0.5"},
    )
    s = read_fcs(build_fcs(kw, raw.tobytes()))
    p = write_fcs(s, tmp_path / "scaled.fcs")
    back = read_fcs(p)
    np.testing.assert_array_equal(back.events, s.events)
    assert back.keywords["$TIMESTEP"] == "1" and "$P1G" not in back.keywords
    np.testing.assert_array_equal(back.channels["range"], s.channels["range"])


def test_stored_sample_keeps_gain_and_warns_for_log(tmp_path):
    raw = np.array([[512, 256], [3, 1000]], dtype="<u2")
    kw = standard_keywords(
        2, ["FSC-H", "FL1-H"], datatype="I", bits=16, extra={"$P1G": "4", "$P2E": "4,0"}
    )
    blob = build_fcs(kw, raw.tobytes())
    s = read_fcs(blob, scale=False)
    with pytest.warns(FCSWarning, match="FL1-H"):
        p = write_fcs(s, tmp_path / "stored.fcs")
    np.testing.assert_array_equal(read_fcs(p, scale=False).events, s.events)
    # linear channel: scaled reading of the copy equals scaled reading of the original
    np.testing.assert_array_equal(read_fcs(p).column("FSC-H"), read_fcs(blob).column("FSC-H"))


def test_population_subset_and_channel_subset(tmp_path, sample):
    mask = sample.events[:, 1] > 1000
    p = write_fcs(sample, tmp_path / "pop.fcs", mask=mask)
    np.testing.assert_array_equal(read_fcs(p, scale=False).events, sample.events[mask])
    idx = np.array([5, 2, 999])
    np.testing.assert_array_equal(
        read_fcs(write_fcs(sample, tmp_path / "i.fcs", mask=idx), scale=False).events,
        sample.events[idx],
    )
    with pytest.raises(ValueError, match="mask has shape"):
        write_fcs(sample, tmp_path / "bad.fcs", mask=mask[:10])
    # a sample read with fewer channels keeps per-channel keywords of the right channel
    first = write_fcs(sample, tmp_path / "all.fcs")
    sub = read_fcs(first, channels=["PE-A", "FITC-A"], scale=False)
    back = read_fcs(write_fcs(sub, tmp_path / "sub.fcs"), scale=False)
    assert back.channel_names == ["PE-A", "FITC-A"]
    assert back.keywords["$P2V"] == "450" and "$P1V" not in back.keywords


def test_zero_events(tmp_path, sample):
    p = write_fcs(sample, tmp_path / "empty.fcs", mask=np.zeros(1000, bool))
    back = read_fcs(p)
    assert back.events.shape == (0, 4)


def test_every_delimiter_in_values_is_escaped(tmp_path, sample):
    nasty = "".join(writer._DELIMS) + "end"
    s = Sample(sample.events, sample.channels, {**sample.keywords, "NOTE": nasty}, name="n")
    back = read_fcs(write_fcs(s, tmp_path / "esc.fcs"))
    assert back.keywords["NOTE"] == nasty


def test_large_data_offsets_go_to_text(tmp_path, sample, monkeypatch):
    # a file whose DATA ends beyond the HEADER limit (the limit lowered to keep it small)
    monkeypatch.setattr(writer, "HEADER_MAX", 5000)
    p = write_fcs(sample, tmp_path / "big.fcs")
    raw = p.read_bytes()
    assert raw[26:42] == b"       0       0"
    np.testing.assert_array_equal(read_fcs(p, scale=False).events, sample.events)


@pytest.mark.slow
def test_data_beyond_99999999_bytes(tmp_path):
    # 6.3M events x 4 channels of float32: DATA ends past byte 100,000,000
    n = 6_300_000
    ev = np.tile(np.arange(4, dtype=np.float32), (n, 1))
    ev[:, 0] = np.arange(n, dtype=np.float32)
    s = Sample(ev, make_channel_table(["A", "B", "C", "D"]), {}, name="big")
    p = write_fcs(s, tmp_path / "big.fcs")
    assert p.stat().st_size > 100_000_000 and p.read_bytes()[26:42] == b"       0       0"
    np.testing.assert_array_equal(read_fcs(p).events, ev)
    flowio = pytest.importorskip("flowio")
    fd = flowio.FlowData(str(p))
    assert fd.event_count == n


def test_readable_by_flowio(tmp_path, sample):
    flowio = pytest.importorskip("flowio")
    fd = flowio.FlowData(str(write_fcs(sample, tmp_path / "f.fcs")))
    np.testing.assert_array_equal(fd.as_array(preprocess=False).astype(np.float32), sample.events)
    assert fd.pns_labels == ["", "CD4 BV510", "CD25", ""]
    assert fd.text["spillover"] == SPILL and fd.text["cyt"] == "Aurora|X/Y"


def test_readable_by_flowkit(tmp_path, sample):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fk = pytest.importorskip("flowkit")
    p = write_fcs(sample, tmp_path / "k.fcs")
    fks = fk.Sample(str(p))
    # flowkit's "raw" events have $TIMESTEP applied, like read_fcs's default scale=True
    np.testing.assert_array_equal(
        fks.get_events(source="raw").astype(np.float32), read_fcs(p).events
    )
    assert fks.pns_labels == ["", "CD4 BV510", "CD25", ""]
    assert fks.event_count == 1000


def test_atomic_on_failure(tmp_path, sample, monkeypatch):
    target = tmp_path / "x.fcs"

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_fcs(sample, target)
    assert not target.exists() and not list(tmp_path.iterdir())


def test_real_file_round_trips(realdata, tmp_path):
    for rel, scale in [
        ("FlowIO/data/fcs_files/data1.fcs", True),
        ("FlowIO/data/fcs_files/B01 KC-A-W---91-US.fcs", True),
        ("FlowIO/data/fcs_files/100715.fcs", False),
        ("FlowKit/data/4_color_beads/Compensation Controls_Red A Stained Control_004.fcs", True),
    ]:
        s = read_fcs(realdata / rel, scale=scale)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FCSWarning)
            p = write_fcs(s, tmp_path / "copy.fcs")
        back = read_fcs(p, scale=scale)
        np.testing.assert_array_equal(back.events, s.events, err_msg=rel)
        assert back.markers == s.markers
        for k in ("$SPILLOVER", "SPILL", "$CYT", "$DATE"):
            assert back.keywords.get(k) == s.keywords.get(k), (rel, k)
