"""Property: whatever is done to a valid file's HEADER, TEXT or length, the reader returns a
Sample or raises an FCSError: never another exception, never a hang, and never an
allocation out of proportion to the file (declared sizes are checked against the file)."""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from fcs_builder import build_fcs, pack_columns, standard_keywords

from immunoprofile.exceptions import FCSError
from immunoprofile.io.fcs import read_fcs, read_fcs_datasets, read_fcs_header
from immunoprofile.sample import Sample

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck


def _bases() -> list[tuple[dict[str, str], bytes, dict]]:
    rng = np.random.default_rng(3)
    out = []
    ev = rng.normal(size=(12, 3)).astype("<f4")
    out.append((standard_keywords(12, ["FSC-A", "SSC-A", "Time"]), ev.tobytes(), {}))
    a, b = rng.integers(0, 2**16, 9), rng.integers(0, 2**32, 9)
    kw = standard_keywords(
        9,
        ["A", "B"],
        datatype="I",
        bits=[16, 32],
        byteord="4,3,2,1",
        extra={"$P1E": "4,1", "$P2G": "2", "$TIMESTEP": "0.1"},
    )
    out.append((kw, pack_columns([a, b], [">u2", ">u4"]), {}))
    kw = standard_keywords(7, ["X"], datatype="D", bits=64, tot=False)
    out.append(
        (kw, rng.normal(size=7).astype("<f8").tobytes(), {"version": "2.0", "text_data": False})
    )
    kw = standard_keywords(3, ["A", "B"], datatype="A", bits=[3, 4])
    out.append((kw, b" 12  34  5   6 78   9", {}))
    kw = standard_keywords(3, ["A", "B"], datatype="A", bits="*")
    out.append((kw, b"1 2,3 4\n5 6 ", {}))
    return out


BASES = _bases()
KEYS = [
    "$TOT",
    "$PAR",
    "$BEGINDATA",
    "$ENDDATA",
    "$P1B",
    "$P2B",
    "$BYTEORD",
    "$DATATYPE",
    "$NEXTDATA",
    "$P1R",
    "$P1E",
    "$P1G",
    "$TIMESTEP",
    "$BEGINSTEXT",
    "$ENDSTEXT",
    "$MODE",
]
SPECIAL = ";  ;0;1,2;4,3,2,1;3,4,1,2;I;F;D;A;nan;inf;1e400;4,0;0,0;-1;8;24;64;12;*".split(";")
VALUES = st.one_of(
    st.integers(-5, 10**12).map(str),
    st.sampled_from([*SPECIAL, "9" * 30]),
    st.text(alphabet="0123456789,./|$ eEIFDA*-", max_size=12),
)


def _read_all(blob: bytes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for fn in (read_fcs, read_fcs_header, read_fcs_datasets):
            try:
                out = fn(blob)
            except FCSError:
                continue
            if fn is read_fcs:
                assert isinstance(out, Sample)
                assert out.events.dtype == np.float32
                # the subset paths (index arrays, strided slices, channel picks) too
                n = out.n_events
                sub = read_fcs(blob, events=slice(None, None, 2), channels=[0])
                assert sub.events.shape == ((n + 1) // 2, 1)
                if n:
                    assert read_fcs(blob, events=[n - 1, 0]).events.shape[0] == 2


def _check(blob: bytes) -> None:
    _read_all(blob)  # first without tracing, so one-time caches do not count
    tracemalloc.start()
    try:
        _read_all(blob)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # float32 out of 1-byte integers is 4x the data; allow for copies and bookkeeping
    assert peak <= 16 * len(blob) + 2_000_000, f"peak {peak} B for a {len(blob)} B file"


FUZZ = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.integers(0, len(BASES) - 1), st.sampled_from(KEYS), VALUES)
def test_keyword_values_mutated(i, key, value):
    kw, data, opts = BASES[i]
    _check(build_fcs({**kw, key: value}, data, **opts))


@FUZZ
@given(st.integers(0, len(BASES) - 1), st.data())
def test_bytes_overwritten(i, data):
    kw, payload, opts = BASES[i]
    blob = bytearray(build_fcs(kw, payload, **opts))
    text_end = int(blob[18:26])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, text_end))
        chunk = data.draw(
            st.one_of(
                st.binary(min_size=1, max_size=8),
                st.text("0123456789 /", min_size=1, max_size=8).map(str.encode),
            )
        )
        blob[pos : pos + len(chunk)] = chunk
    _check(bytes(blob))


@FUZZ
@given(st.integers(0, len(BASES) - 1), st.integers(-400, 64), st.binary(max_size=64))
def test_length_changed(i, cut, tail):
    kw, payload, opts = BASES[i]
    blob = build_fcs(kw, payload, **opts)
    blob = blob[: len(blob) + cut] if cut < 0 else blob + tail[:cut]
    _check(blob)


@FUZZ
@given(st.integers(0, 5), st.integers(0, 10**9))
def test_header_offsets_mutated(field, value):
    kw, payload, opts = BASES[0]
    blob = bytearray(build_fcs(kw, payload, **opts))
    blob[10 + 8 * field : 18 + 8 * field] = f"{value:>8}"[-8:].encode()
    _check(bytes(blob))


def _two_sets() -> bytes:
    ev = np.arange(8, dtype="<f4")
    kw = standard_keywords(4, ["A", "B"], extra={"$NEXTDATA": "0" * 8})
    n1 = len(build_fcs(kw, ev.tobytes()))
    kw["$NEXTDATA"] = f"{n1:08d}"
    second = standard_keywords(2, ["A", "B", "C", "D"], datatype="I", bits=16)
    return build_fcs(kw, ev.tobytes()) + build_fcs(second, ev.astype("<u2").tobytes())


TWO = _two_sets()


@FUZZ
@given(st.data())
def test_two_data_sets_mutated(data):
    blob = bytearray(TWO)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        chunk = data.draw(st.binary(min_size=1, max_size=6))
        blob[pos : pos + len(chunk)] = chunk
    _check(bytes(blob))
    for k in (1, 2):
        try:
            read_fcs(bytes(blob), dataset=k)
        except FCSError:
            pass


def test_damaged_data_offset_of_delimited_data_is_an_fcs_error():
    # found by test_bytes_overwritten: HEADER bytes 24-30 overwritten put DATA past the end
    # of an in-memory file (np.frombuffer raised a bare ValueError)
    kw, payload, opts = BASES[4]
    blob = bytearray(build_fcs(kw, payload, **opts))
    blob[24:31] = b"0000001"
    _check(bytes(blob))
    with pytest.raises(FCSError):
        read_fcs(bytes(blob))
