"""Each way an FCS file can be broken gets its own named error, naming file, place and cause."""

from __future__ import annotations

import numpy as np
import pytest
from fcs_builder import build_fcs, standard_keywords

from immunoprofile.exceptions import (
    DataOffsetDiscrepancyError,
    EventCountError,
    FCSDataTypeError,
    FCSError,
    FCSOffsetError,
    FCSTextError,
    FCSWarning,
    NotFCSError,
    TruncatedFCSError,
)
from immunoprofile.io.fcs import read_fcs, read_fcs_datasets, read_fcs_header

EV = np.arange(20, dtype=np.float32).reshape(10, 2)


def _kw(**extra):
    return standard_keywords(10, ["A", "B"], extra={k: str(v) for k, v in extra.items()})


def _good(**kw):
    return build_fcs(_kw(), EV.tobytes(), **kw)


def _raises(blob, cls, match, tmp_path, **read_kw):
    """The error must be `cls`, mention `match`, and name the file it came from."""
    p = tmp_path / "broken file.fcs"
    p.write_bytes(blob)
    with pytest.raises(cls, match=match) as exc:
        read_fcs(p, **read_kw)
    assert str(p) in str(exc.value)
    assert isinstance(exc.value, FCSError)
    return exc.value


def test_good_file_reads():
    np.testing.assert_array_equal(read_fcs(_good()).events, EV)


@pytest.mark.parametrize(
    "blob", [b"", b"hello world, not a flow file" * 10, b"\x89PNG\r\n\x1a\n" + b"\0" * 100]
)
def test_not_fcs(blob, tmp_path):
    _raises(blob, NotFCSError, "not an FCS file", tmp_path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FCSError, match="cannot open"):
        read_fcs(tmp_path / "absent.fcs")
    with pytest.raises(FCSError, match="cannot open"):
        read_fcs(tmp_path)


def test_truncated_in_header_text_and_data(tmp_path):
    blob = _good()
    _raises(blob[:30], TruncatedFCSError, "HEADER is 30 bytes", tmp_path)
    text_end = int(blob[18:26])
    e = _raises(blob[: text_end - 5], TruncatedFCSError, "TEXT ends at byte", tmp_path)
    assert e.offset == 18
    e = _raises(blob[:-3], TruncatedFCSError, r"\$TOT=10 events of 8 bytes need DATA", tmp_path)
    assert e.offset == int(blob[26:34])


def test_header_fields_not_numbers(tmp_path):
    blob = bytearray(_good())
    blob[10:18] = b"  12x45 "
    e = _raises(bytes(blob), FCSOffsetError, "TEXT start field '12x45' is not a number", tmp_path)
    assert e.offset == 10


def test_text_offsets_impossible(tmp_path):
    blob = bytearray(_good())
    blob[10:18] = b"      20"  # TEXT inside the HEADER
    _raises(bytes(blob), FCSOffsetError, "TEXT offsets 20-", tmp_path)
    blob = bytearray(_good())
    blob[18:26] = b"      40"  # end before start
    _raises(bytes(blob), FCSOffsetError, "impossible", tmp_path)


def test_text_pointing_at_garbage(tmp_path):
    blob = bytearray(_good())
    blob[10:18] = b"      60"  # two bytes late: TEXT starts with a keyword letter
    _raises(bytes(blob), FCSTextError, "cannot be a delimiter", tmp_path)


def test_garbled_text_odd_fields(tmp_path):
    blob = _good()
    # remove the final value and its delimiter -> an odd number of fields
    t1 = int(blob[18:26])
    text = blob[58 : t1 + 1]
    cut = text[:-1].rfind(b"/")
    broken = blob[:58] + text[: cut + 1] + b" " * (len(text) - cut - 1) + blob[t1 + 1 :]
    _raises(broken, FCSTextError, "does not split into keyword/value pairs", tmp_path)


def test_garbled_text_names_byte_offset_and_previous_keyword():
    # a control byte in place of a keyword: the error gives its byte and the keyword before
    keys = _kw()
    blob = bytearray(build_fcs({**keys, "NOTE": "ok", "LAST": "1"}, EV.tobytes()))
    t0 = int(blob[10:18])
    at = blob.index(b"LAST", t0)
    blob[at : at + 4] = b"\x01\x02ST"
    with pytest.raises(FCSTextError) as info:
        read_fcs(bytes(blob))
    err = info.value
    assert err.offset == at and err.keyword == "NOTE"
    assert f"byte {at}" in str(err) and "after keyword 'NOTE'" in str(err)


@pytest.mark.parametrize(
    "change,cls,match",
    [
        ({"$DATATYPE": "X"}, FCSDataTypeError, "unknown data type 'X'"),
        ({"$DATATYPE": "A", "$P1B": "*"}, FCSDataTypeError, "every parameter"),
        ({"$DATATYPE": "A", "$P1B": "x"}, FCSDataTypeError, "ASCII field width 'x'"),
        ({"$BYTEORD": "1,2,9"}, FCSDataTypeError, "byte order '1,2,9'"),
        ({"$MODE": "C"}, FCSDataTypeError, "list mode"),
        ({"$P1B": "64"}, FCSDataTypeError, r"needs 32-bit values but \$P1B is 64"),
        ({"$PAR": "two"}, FCSTextError, "'two' is not a number"),
        ({"$TOT": "1.5"}, FCSTextError, "not a whole number"),
        ({"$P2E": "4"}, FCSTextError, "is not 'f1,f2'"),
        ({"$P2R": "abc"}, FCSTextError, "keyword \\$P2R"),
    ],
)
def test_keyword_errors(change, cls, match, tmp_path):
    kw = _kw()
    kw.update(change)
    _raises(build_fcs(kw, EV.tobytes()), cls, match, tmp_path)


def test_missing_required_keywords(tmp_path):
    for key in ("$PAR", "$DATATYPE"):
        kw = _kw()
        del kw[key]
        _raises(build_fcs(kw, EV.tobytes()), FCSTextError, f"keyword \\{key}", tmp_path)


def test_integer_width_not_whole_bytes(tmp_path):
    kw = standard_keywords(10, ["A", "B"], datatype="I", bits=[16, 12])
    _raises(build_fcs(kw, b"\0" * 40), FCSDataTypeError, "12 bits is not supported", tmp_path)


def test_tot_disagrees_with_data_length(tmp_path):
    kw = _kw()
    kw["$TOT"] = "8"  # 10 events stored
    e = _raises(build_fcs(kw, EV.tobytes()), EventCountError, "need 64 DATA bytes", tmp_path)
    assert e.keyword == "$TOT"
    # DATA declared shorter than $TOT needs, though the bytes exist after it
    _raises(
        build_fcs(_kw(), EV.tobytes(), data_end_shift=-8, trailer=b"\0" * 16),
        EventCountError,
        "holds 72",
        tmp_path,
    )


def test_one_byte_long_segment_is_tolerated_with_warning(tmp_path):
    blob = build_fcs(_kw(), EV.tobytes(), data_end_shift=1, trailer=b"\0")
    with pytest.warns(FCSWarning, match="one byte past"):
        s = read_fcs(blob)
    np.testing.assert_array_equal(s.events, EV)
    # two bytes off is not a known fault
    blob2 = build_fcs(_kw(), EV.tobytes(), data_end_shift=2, trailer=b"\0\0")
    _raises(blob2, EventCountError, "holds 82", tmp_path)


def test_header_and_text_offsets_disagree(tmp_path):
    blob = bytearray(_good())
    d0, d1 = int(blob[26:34]), int(blob[34:42])
    blob[26:42] = f"{d0 - 8:>8}{d1 - 8:>8}".encode()
    e = _raises(bytes(blob), DataOffsetDiscrepancyError, "HEADER puts DATA at", tmp_path)
    assert e.offset == 26
    # the caller may choose which to trust
    np.testing.assert_array_equal(read_fcs(bytes(blob), offsets="text").events, EV)
    shifted = read_fcs(bytes(blob), offsets="header").events
    assert shifted.shape == EV.shape and not np.array_equal(shifted, EV)


def test_no_data_offsets_anywhere(tmp_path):
    blob = build_fcs(_kw(), EV.tobytes(), header_data=False, text_data=False)
    _raises(blob, FCSOffsetError, "neither HEADER nor", tmp_path)


def test_supplemental_text_outside_file_warns():
    kw = _kw(**{"$BEGINSTEXT": "99999990", "$ENDSTEXT": "99999999"})
    with pytest.warns(FCSWarning, match="supplemental TEXT"):
        s = read_fcs(build_fcs(kw, EV.tobytes()))
    np.testing.assert_array_equal(s.events, EV)


def test_header_reader_raises_the_same_errors():
    with pytest.raises(NotFCSError):
        read_fcs_header(b"nope")
    with pytest.raises(TruncatedFCSError):
        read_fcs_header(_good()[:-3], check_data=True)


def test_nextdata_loops_and_outside_file_do_not_hang():
    for value in ("00000000", "99999999"):
        kw = _kw()
        kw["$NEXTDATA"] = value
        blob = build_fcs(kw, EV.tobytes())
        if value == "00000000":
            # the first data set pointing back to itself (offset 0 means "none" in FCS)
            np.testing.assert_array_equal(read_fcs(blob).events, EV)
        else:
            with pytest.warns(FCSWarning, match="NEXTDATA"):
                s = read_fcs(blob)
            np.testing.assert_array_equal(s.events, EV)


def test_second_data_set_pointing_back_to_the_first():
    # data set 1's $NEXTDATA is relative to its own start: -offset would point to byte 0,
    # a positive offset of its own length points past the end; both end the chain
    kw = _kw()
    kw["$NEXTDATA"] = "0" * 8
    n1 = len(build_fcs(kw, EV.tobytes()))
    kw["$NEXTDATA"] = f"{n1:08d}"
    first = build_fcs(kw, EV.tobytes())
    second = build_fcs({**_kw(), "$NEXTDATA": f"{-n1}"}, EV.tobytes())
    with pytest.warns(FCSWarning, match="2 data sets"):
        read_fcs(first + second)


def test_bad_second_data_set_is_listed_not_fatal():
    kw = _kw()
    kw["$NEXTDATA"] = "0" * 8
    n1 = len(build_fcs(kw, EV.tobytes()))
    kw["$NEXTDATA"] = f"{n1:08d}"
    blob = build_fcs(kw, EV.tobytes()) + b"garbage that is not a HEADER" * 4
    with pytest.warns(FCSWarning):
        np.testing.assert_array_equal(read_fcs(blob).events, EV)
    sets = read_fcs_datasets(blob)
    assert sets[0]["n_events"] == 10 and "not an FCS data set" in sets[1]["error"]
    with pytest.raises(NotFCSError, match=f"byte {n1}"):
        read_fcs(blob, dataset=1)
