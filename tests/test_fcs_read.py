"""FCS reading on files built byte by byte and on files from independent writers."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from fcs_builder import build_fcs, pack_columns, standard_keywords

import immunoprofile
from immunoprofile.exceptions import (
    EventCountError,
    FCSDataTypeError,
    FCSWarning,
    MarkerNotFoundError,
    MultipleDataSetsError,
)
from immunoprofile.io.fcs import read_fcs, read_fcs_datasets, read_fcs_header

RNG = np.random.default_rng(7)


def _float_file(n=50, p=3, order="1,2,3,4", dtype="<f4", **kw):
    ev = RNG.normal(500, 200, size=(n, p)).astype(np.float32)
    names = [f"CH{i}" for i in range(p)]
    datatype = "F" if dtype[-2:] == "f4" else "D"
    bits = 32 if datatype == "F" else 64
    keys = standard_keywords(n, names, datatype=datatype, bits=bits, byteord=order)
    raw = ev.astype(dtype).tobytes()
    return ev, build_fcs(keys, raw, **kw)


@pytest.mark.parametrize(
    "order,dtype",
    [("1,2,3,4", "<f4"), ("4,3,2,1", ">f4"), ("1,2,3,4,5,6,7,8", "<f8"), ("4,3,2,1", ">f8")],
)
def test_float_and_double_both_byte_orders(order, dtype):
    ev, blob = _float_file(order=order, dtype=dtype)
    s = read_fcs(blob)
    assert s.events.dtype == np.float32 and s.events.flags.c_contiguous
    np.testing.assert_array_equal(s.events, ev)
    assert s.n_events == 50 and s.channel_names == ["CH0", "CH1", "CH2"]


def test_mixed_byte_order_3412():
    # $BYTEORD 3,4,1,2: the first stored byte is the third least significant
    ev = np.array([[1.5, -2.25], [1e6, 3.0]], dtype=np.float32)
    little = ev.astype("<f4").view(np.uint8).reshape(-1, 4)
    stored = little[:, [2, 3, 0, 1]].tobytes()
    keys = standard_keywords(2, ["A", "B"], byteord="3,4,1,2")
    np.testing.assert_array_equal(read_fcs(build_fcs(keys, stored)).events, ev)


@pytest.mark.parametrize("bits", [8, 16, 32, 64])
@pytest.mark.parametrize("order", ["<", ">"])
def test_integer_widths_masked_to_range(bits, order):
    n = 40
    top = {8: 200, 16: 60000, 32: 4_000_000_000, 64: 2**40}[bits]
    raw = RNG.integers(0, top, size=(n, 2), dtype=np.uint64)
    dt = f"{order}u{bits // 8}"
    rng_val = 128 if bits == 8 else 1024
    byteord = "1,2,3,4" if order == "<" else "4,3,2,1"
    keys = standard_keywords(
        n, ["FSC-A", "FL1-A"], datatype="I", bits=bits, byteord=byteord, ranges=[rng_val, rng_val]
    )
    s = read_fcs(build_fcs(keys, raw.astype(dt).tobytes()), scale=False)
    np.testing.assert_array_equal(s.events, (raw & (rng_val - 1)).astype(np.float32))


def test_mixed_bit_widths_and_24_bit():
    n = 30
    a = RNG.integers(0, 2**16, n)
    b = RNG.integers(0, 2**32, n)
    c = RNG.integers(0, 2**24, n)
    keys = standard_keywords(
        n,
        ["A", "B", "C"],
        datatype="I",
        bits=[16, 32, 24],
        ranges=[65536, 2**20, 2**24],
        byteord="4,3,2,1",
    )
    c_bytes = c.astype(">u4").view(np.uint8).reshape(n, 4)[:, 1:]  # 3 big-endian bytes
    rows = np.concatenate(
        [
            a.astype(">u2").view(np.uint8).reshape(n, 2),
            b.astype(">u4").view(np.uint8).reshape(n, 4),
            c_bytes,
        ],
        axis=1,
    )
    s = read_fcs(build_fcs(keys, rows.tobytes()), scale=False)
    np.testing.assert_array_equal(s.events[:, 0], a.astype(np.float32))
    np.testing.assert_array_equal(s.events[:, 1], (b & (2**20 - 1)).astype(np.float32))
    np.testing.assert_array_equal(s.events[:, 2], c.astype(np.float32))
    assert list(s.channels["bits"]) == [16, 32, 24]


def test_per_parameter_datatype_fcs32():
    n = 10
    a = RNG.integers(0, 1000, n)
    b = RNG.normal(size=n).astype(np.float32)
    keys = standard_keywords(n, ["A", "B"], datatype="I", bits=[16, 32], extra={"$P2DATATYPE": "F"})
    data = pack_columns([a, b], ["<u2", "<f4"])
    s = read_fcs(build_fcs(keys, data, version="3.2"), scale=False)
    np.testing.assert_array_equal(s.events, np.c_[a, b].astype(np.float32))


def test_channel_to_scale_rules():
    # hand-worked: gain 4 -> raw/4; log 4 decades over range 1024 with f2=0 -> 10**(4*raw/1024);
    # log with f2=2 -> 2 * 10**(...); Time x $TIMESTEP
    raw = np.array([[512, 256, 768, 100], [0, 1024 - 1, 0, 7]], dtype=np.uint16)
    keys = standard_keywords(
        2,
        ["FSC-H", "FL1-H", "FL2-H", "Time"],
        datatype="I",
        bits=16,
        extra={"$P1G": "4", "$P2E": "4,0", "$P3E": "4,2", "$TIMESTEP": "0.5", "$P4G": "9"},
    )
    s = read_fcs(build_fcs(keys, raw.astype("<u2").tobytes()))
    expect = np.array(
        [
            [128, 10 ** (4 * 256 / 1024), 2 * 10 ** (4 * 768 / 1024), 50],
            [0, 10 ** (4 * 1023 / 1024), 2.0, 3.5],
        ],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(s.events, expect.astype(np.float32))
    # the table's range is the top of the returned scale
    np.testing.assert_allclose(s.channels["range"], [256, 1e4, 2e4, 512])
    raw_s = read_fcs(build_fcs(keys, raw.astype("<u2").tobytes()), scale=False)
    np.testing.assert_array_equal(raw_s.events, raw.astype(np.float32))


@pytest.mark.parametrize("delim", ["/", "|", "\x0c", "\\", "*", "\t", "~"])
def test_any_delimiter_and_doubled_escapes(delim):
    ev, _ = _float_file(n=5, p=2)
    keys = standard_keywords(5, ["A", "B"], extra={"$P1S": f"CD3{delim}CD28", "NOTE": "x"})
    s = read_fcs(build_fcs(keys, ev.tobytes(), delim=delim))
    assert s.markers == ["CD3" + delim + "CD28", None]
    assert s.keywords["NOTE"] == "x"
    np.testing.assert_array_equal(s.events, ev)


def test_empty_values_written_without_escaping():
    # "$P1S//" with an empty value (a common writer fault): read literally
    ev = np.ones((2, 2), np.float32)
    keys = standard_keywords(2, ["A", "B"])
    blob = build_fcs({**keys, "$P1S": "", "$P2S": "CD4"}, ev.tobytes())
    s = read_fcs(blob)
    assert s.markers == [None, "CD4"]


def test_header_zero_offsets_defer_to_text_and_keywords_case_insensitive():
    ev, _ = _float_file(n=7, p=2)
    keys = {k.lower(): v for k, v in standard_keywords(7, ["a", "b"]).items()}
    blob = build_fcs(keys, ev.tobytes(), header_data=False)
    assert blob[26:42] == b"       0       0"
    s = read_fcs(blob)
    np.testing.assert_array_equal(s.events, ev)
    assert "$TOT" in s.keywords and "$tot" not in s.keywords


def test_fcs20_without_tot_and_text_offsets():
    ev, _ = _float_file(n=9, p=2)
    keys = standard_keywords(9, ["A", "B"], tot=False)
    s = read_fcs(build_fcs(keys, ev.tobytes(), version="2.0", text_data=False))
    assert s.n_events == 9
    np.testing.assert_array_equal(s.events, ev)


def test_zero_padded_numbers_and_latin1_text():
    ev = np.arange(6, dtype=np.float32).reshape(3, 2)
    keys = standard_keywords(3, ["A", "B"], extra={"$OP": "Jos\xe9"})
    keys["$TOT"] = "0000000003"
    keys["$PAR"] = "02"
    s = read_fcs(build_fcs(keys, ev.tobytes()))
    assert s.keywords["$OP"] == "Jos\xe9" and s.n_events == 3


def test_supplemental_text_merged():
    ev = np.zeros((1, 1), np.float32)
    stext = b"|$SRC|blood|$CYT|not-primary|"
    keys = standard_keywords(1, ["A"], extra={"$CYT": "primary"})
    # STEXT placed after DATA; offsets are absolute
    blob0 = build_fcs({**keys, "$BEGINSTEXT": "0" * 10, "$ENDSTEXT": "0" * 10}, ev.tobytes())
    s0 = len(blob0)
    keys.update({"$BEGINSTEXT": f"{s0:010d}", "$ENDSTEXT": f"{s0 + len(stext) - 1:010d}"})
    blob = build_fcs(keys, ev.tobytes()) + stext
    assert len(blob) == s0 + len(stext)
    s = read_fcs(blob)
    assert s.keywords["$SRC"] == "blood" and s.keywords["$CYT"] == "primary"


def _two_datasets():
    ev1 = np.full((3, 2), 1.0, np.float32)
    ev2 = np.full((4, 2), 2.0, np.float32)
    second = build_fcs(standard_keywords(4, ["A", "B"], extra={"$CYT": "two"}), ev2.tobytes())
    # the first data set's $NEXTDATA is its own length, written with a fixed width
    k1 = standard_keywords(3, ["A", "B"], extra={"$CYT": "one"})
    k1["$NEXTDATA"] = "0" * 8
    first_len = len(build_fcs(k1, ev1.tobytes()))
    k1["$NEXTDATA"] = f"{first_len:08d}"
    first = build_fcs(k1, ev1.tobytes())
    assert len(first) == first_len
    return first + second, ev1, ev2, first_len


def test_nextdata_chain():
    blob, ev1, ev2, off = _two_datasets()
    sets = read_fcs_datasets(blob)
    assert [(d["index"], d["offset"], d["n_events"]) for d in sets] == [(0, 0, 3), (1, off, 4)]
    with pytest.warns(FCSWarning, match="2 data sets"):
        s = read_fcs(blob)
    np.testing.assert_array_equal(s.events, ev1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s2 = read_fcs(blob, dataset=1)
    np.testing.assert_array_equal(s2.events, ev2)
    assert s2.keywords["$CYT"] == "two" and s2.history[0]["dataset"] == 1
    with pytest.raises(MultipleDataSetsError, match="data set 5 does not exist.*holds 2"):
        read_fcs(blob, dataset=5)
    with pytest.raises(MultipleDataSetsError, match="holds 2 data sets"):
        read_fcs(blob, dataset=None)


def test_subsets_of_events_and_channels(tmp_path):
    ev, blob = _float_file(n=100, p=4)
    p = tmp_path / "x.fcs"
    p.write_bytes(blob)
    for src in (blob, p, str(p)):
        s = read_fcs(src, channels=["CH2", 0], events=10)
        np.testing.assert_array_equal(s.events, ev[:10][:, [2, 0]])
        s = read_fcs(src, events=slice(5, 90, 7))
        np.testing.assert_array_equal(s.events, ev[5:90:7])
        idx = np.array([99, 0, 50, 50])
        np.testing.assert_array_equal(read_fcs(src, events=idx).events, ev[idx])
        mask = ev[:, 0] > 500
        np.testing.assert_array_equal(
            read_fcs(src, events=mask, channels=["ch1"]).events, ev[mask][:, [1]]
        )
    with pytest.raises(MarkerNotFoundError, match="CH0"):
        read_fcs(blob, channels=["nope"])


def test_sources_path_bytes_fileobj(tmp_path):
    ev, blob = _float_file(n=20, p=2)
    p = tmp_path / "my sample.fcs"
    p.write_bytes(blob)
    a = read_fcs(p)
    assert a.name == "my sample" and a.path == p
    assert a.history == [
        {"step": "read", "file": str(p), "dataset": 0, "scale": True, "version": "3.1"}
    ]
    with open(p, "rb") as fh:
        np.testing.assert_array_equal(read_fcs(fh).events, ev)
    np.testing.assert_array_equal(read_fcs(io.BytesIO(blob)).events, ev)
    np.testing.assert_array_equal(read_fcs(bytearray(blob)).events, ev)


def test_header_only_reading():
    ev, blob = _float_file(n=20, p=2)
    meta = read_fcs_header(blob[:-40])  # DATA cut short: the header reader does not care
    assert meta.n_events == 20 and meta.version == "3.1"
    assert list(meta.channels["name"]) == ["CH0", "CH1"]


def test_lazy_public_names():
    assert immunoprofile.read_fcs is read_fcs
    assert immunoprofile.read_fcs_datasets is read_fcs_datasets


# --- files from independent writers -----------------------------------------------------


def test_reads_flowio_written_file(tmp_path):
    flowio = pytest.importorskip("flowio")
    ev = RNG.normal(1000, 300, size=(300, 3)).astype(np.float32)
    p = tmp_path / "flowio.fcs"
    with open(p, "wb") as fh:
        flowio.create_fcs(
            fh,
            ev.ravel().tolist(),
            ["FSC-A", "SSC-A", "FL1-A"],
            opt_channel_names=[None, None, "CD3"],
            metadata_dict={"CYT": "X|Y"},
        )
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, ev)
    assert s.markers == [None, None, "CD3"] and s.keywords["$CYT"] == "X|Y"


def test_reads_fcswrite_file(tmp_path):
    fcswrite = pytest.importorskip("fcswrite")
    ev = RNG.uniform(0, 5000, size=(250, 2))
    p = tmp_path / "fcswrite.fcs"
    fcswrite.write_fcs(str(p), ["FSC-A", "CD4 PE"], ev, compat_chn_names=False)
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, ev.astype(np.float32))
    assert s.channel_names == ["FSC-A", "CD4 PE"]


def test_inspect_command_goes_on_past_bad_files(tmp_path):
    from click.testing import CliRunner

    from immunoprofile.cli import main

    ev = np.ones((4, 2), np.float32)
    keys = standard_keywords(
        4,
        ["FSC-A", "FL1-A"],
        extra={
            "$P2S": "CD25",
            "$CYT": "TestCyt",
            "$DATE": "01-JAN-2024",
            "$BTIM": "10:00:00",
            "$SPILLOVER": "1,FL1-A,1",
        },
    )
    good = tmp_path / "good.fcs"
    good.write_bytes(build_fcs(keys, ev.tobytes()))
    bad = tmp_path / "bad.fcs"
    bad.write_bytes(b"this is not FCS at all")
    res = CliRunner().invoke(main, ["inspect", str(bad), str(good)])
    assert res.exit_code == 1
    assert "not an FCS file" in res.output and "bad.fcs" in res.output
    for text in (
        "FCS 3.1",
        "4 events",
        "2 channels",
        "TestCyt",
        "01-JAN-2024 10:00:00",
        "spillover: yes ($SPILLOVER)",
        "CD25",
        "FL1-A",
    ):
        assert text in res.output


@pytest.mark.parametrize("value", ["/x", "x/", "/x/", "a//b", "//x//"])
def test_values_starting_or_ending_with_the_delimiter(value):
    # FCS escapes a delimiter by doubling it; runs of 3 or 5 mix an escape and a separator,
    # resolved by keywords never starting or ending with the delimiter
    ev = np.ones((1, 1), np.float32)
    keys = standard_keywords(1, ["A"], extra={"NOTE": value, "$P1S": value})
    s = read_fcs(build_fcs(keys, ev.tobytes(), delim="/"))
    assert s.keywords["NOTE"] == value and s.markers == [value]


def test_text_mode_file_object_is_refused(tmp_path):
    ev, blob = _float_file(n=3, p=1)
    p = tmp_path / "t.fcs"
    p.write_bytes(blob)
    with open(p, encoding="latin-1") as fh, pytest.raises(TypeError, match="binary mode"):
        read_fcs(fh)


class _CountingReader(io.BytesIO):
    """A binary file object that counts the bytes handed out."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, n=-1):
        out = super().read(n)
        self.bytes_read += len(out)
        return out

    def readinto(self, b):
        k = super().readinto(b)
        self.bytes_read += k
        return k


def test_only_the_rows_asked_for_are_read():
    ev, blob = _float_file(n=5000, p=4)
    data_start = int(blob[26:34])
    fh = _CountingReader(blob)
    s = read_fcs(fh, events=slice(100, 110))
    np.testing.assert_array_equal(s.events, ev[100:110])
    assert fh.bytes_read <= data_start + 10 * 16  # HEADER + TEXT + 10 events of 16 bytes
    fh = _CountingReader(blob)
    read_fcs_header(fh)
    assert fh.bytes_read <= data_start


def test_ascii_fixed_width_and_delimited():
    vals = np.array([[12, 3, 1023], [0, 45, 512]])
    kw = standard_keywords(
        2, ["FSC-H", "SSC-H", "FL1-H"], datatype="A", bits=[4, 3, 5], extra={"$P3E": "4,0"}
    )
    data = b"".join(f"{a:>4}{b:>3}{c:>5}".encode() for a, b, c in vals)
    s = read_fcs(build_fcs(kw, data, version="2.0"))
    np.testing.assert_array_equal(s.events[:, :2], vals[:, :2].astype(np.float32))
    np.testing.assert_array_equal(
        s.events[:, 2], (10 ** (4 * vals[:, 2] / 1024)).astype(np.float32)
    )
    np.testing.assert_array_equal(
        read_fcs(build_fcs(kw, data), scale=False, events=[1]).events, vals[[1]].astype("f4")
    )
    kw = standard_keywords(2, ["A", "B", "C"], datatype="A", bits="*")
    kw.update({f"$P{i}B": "*" for i in (1, 2, 3)})
    data = b"12,3 1023\r\n0\t45,512 "
    s = read_fcs(build_fcs(kw, data), channels=["C", "A"])
    np.testing.assert_array_equal(s.events, vals[:, [2, 0]].astype(np.float32))
    with pytest.raises(EventCountError, match="need 6 ASCII values"):
        read_fcs(build_fcs(kw, b"1 2 3 4"))
    with pytest.raises(FCSDataTypeError, match="not a number"):
        read_fcs(build_fcs(kw, b"1 2 3 4 x 6"))


def test_empty_values_beside_escaped_delimiters_flowio_layout(tmp_path):
    # flowio 1.4 writes an empty value as "//" and escapes "/" inside values as "//"
    # in the same TEXT: after a keyword an even run can only be an empty value
    flowio = pytest.importorskip("flowio")
    ev = np.arange(12, dtype=np.float32).reshape(4, 3)
    path = tmp_path / "flowio_empty.fcs"
    with open(path, "wb") as fh:
        flowio.create_fcs(
            fh,
            ev.ravel().tolist(),
            ["FSC-A", "SSC-A", "FL1-A"],
            opt_channel_names=["", "", "CD3 FITC"],
            metadata_dict={"$COM": "", "PROJECT": "", "NOTE": "a/b", "LAST": ""},
        )
    assert b"/$COM//PROJECT//NOTE/a//b/LAST//" in path.read_bytes()
    s = read_fcs(path)
    assert s.keywords["$COM"] == "" and s.keywords["PROJECT"] == ""
    assert s.keywords["NOTE"] == "a/b" and s.keywords["LAST"] == ""
    assert s.markers == [None, None, "CD3 FITC"]
    np.testing.assert_array_equal(s.events, ev)


@pytest.mark.parametrize("run,value", [("//", ""), ("////", "/"), ("///x/", "/x")])
def test_delimiter_runs_after_a_keyword(run, value):
    # keywords are never empty and never hold a delimiter: an even run after a keyword
    # is a value of (k - 2) / 2 delimiters, an odd run a separator and escaped delimiters
    from immunoprofile.io.fcs import _parse_text, _Source

    raw = f"/$TOT/2/NOTE{run}NEXT/1/".encode("ascii")
    got = _parse_text(raw, _Source(raw), 0)
    assert got == {"$TOT": "2", "NOTE": value, "NEXT": "1"}
