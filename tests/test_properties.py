"""Properties of the three readers of user-written tables (hypothesis): the samplesheet
reader, the run-configuration reader and `compare`'s input table. Whatever they are given,
they return a result or raise their own error class (never another exception), and what
they return agrees with an independent reading of the same input."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from immunoprofile.cohort import read_samplesheet
from immunoprofile.comparison import compare
from immunoprofile.exceptions import ComparisonError, ConfigError, IdentityError
from immunoprofile.pipeline import CONFIG_KEYS, load_config

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given, settings, HealthCheck = hypothesis.given, hypothesis.settings, hypothesis.HealthCheck

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text a user may type in a cell: letters, digits, punctuation, spaces, quotes, commas,
# non-ASCII; no NUL and no line breaks (a quoted line break is tested separately)
cell = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    max_size=12,
)


def _write(text: str | bytes, suffix: str = ".csv") -> Path:
    d = Path(tempfile.mkdtemp())
    p = d / f"input{suffix}"
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return p


# --- samplesheet ---------------------------------------------------------------------------


@SETTINGS
@given(
    rows=st.lists(st.tuples(cell, cell, cell), min_size=1, max_size=6),
    trailing=st.booleans(),
    bom=st.booleans(),
    crlf=st.booleans(),
)
def test_samplesheet_round_trip(rows, trailing, bom, crlf):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n" if crlf else "\n")
    w.writerow(["file", "patient", "visit"] + ([""] if trailing else []))
    for r in rows:
        w.writerow(list(r) + ([""] if trailing else []))
    p = _write(("\ufeff" if bom else "") + buf.getvalue())
    # independent expectation: csv module, stripped cells, blank lines skipped
    kept = [tuple(c.strip() for c in r) for r in rows if any(c.strip() for c in r)]
    try:
        sheet = read_samplesheet(p)
    except IdentityError as exc:
        files = [r[0] for r in kept]
        no_file = any(f == "" for f in files)
        contradictory = any(len({r[1:] for r in kept if r[0] == f}) > 1 for f in set(files))
        assert no_file or contradictory, f"refused a valid samplesheet: {exc}"
        return
    expect = list(dict.fromkeys(kept))  # identical duplicates are listed once
    seen: dict[str, tuple] = {}
    for r in expect:
        seen.setdefault(r[0], r)
    assert list(sheet["file"]) == list(seen)
    assert list(zip(sheet["file"], sheet["patient"], sheet["visit"])) == list(seen.values())


@SETTINGS
@given(data=st.binary(max_size=400))
def test_samplesheet_arbitrary_bytes(data):
    p = _write(b"file,patient,visit\n" + data)
    try:
        sheet = read_samplesheet(p)
    except IdentityError:
        return
    assert list(sheet.columns)[:3] == ["file", "patient", "visit"]
    assert (sheet["file"] != "").all()


@SETTINGS
@given(header=st.lists(cell, min_size=0, max_size=5), body=st.text(max_size=200))
def test_samplesheet_arbitrary_text(header, body):
    p = _write(",".join(header) + "\n" + body)
    try:
        read_samplesheet(p)
    except IdentityError:
        pass


# --- run configuration ---------------------------------------------------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(allow_nan=False) | cell,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(cell, inner, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(sorted(CONFIG_KEYS)) | cell


@SETTINGS
@given(cfg=st.dictionaries(keys, json_value, max_size=6), yaml_form=st.booleans())
def test_config_reader_only_raises_config_error(cfg, yaml_form):
    if yaml_form:
        import yaml

        p = _write(yaml.safe_dump(cfg, allow_unicode=True), ".yaml")
    else:
        p = _write(json.dumps(cfg), ".json")
    try:
        out = load_config(p)
    except ConfigError:
        return
    assert set(out) <= CONFIG_KEYS
    # what was accepted has the documented types
    for k in ("jobs", "seed", "n_metaclusters"):
        if k in out:
            assert isinstance(out[k], int) and not isinstance(out[k], bool)
    for k in ("cluster", "umap"):
        if k in out:
            assert isinstance(out[k], bool)
    if "files" in out:
        assert all(isinstance(f, str) and Path(f).is_absolute() for f in out["files"])


@SETTINGS
@given(
    jobs=st.integers(1, 64),
    seed=st.integers(0, 2**31),
    files=st.lists(st.text("abcdefgh_.*", min_size=1, max_size=8), min_size=1, max_size=4),
    cluster=st.booleans(),
)
def test_valid_config_is_read_back(jobs, seed, files, cluster):
    cfg = {"files": files, "jobs": jobs, "seed": seed, "cluster": cluster, "baseline": "bl"}
    p = _write(json.dumps(cfg), ".json")
    out = load_config(p)
    assert out["jobs"] == jobs and out["seed"] == seed and out["cluster"] is cluster
    assert out["files"] == [str(p.parent / f) for f in files]


@SETTINGS
@given(text=st.text(max_size=300))
def test_config_arbitrary_yaml_text(text):
    p = _write(text, ".yaml")
    try:
        load_config(p)
    except ConfigError:
        pass


# --- compare's input table -----------------------------------------------------------------

value = st.one_of(
    st.floats(min_value=0, max_value=100, allow_nan=False),
    st.just(float("nan")),
    st.just(float("inf")),
    st.floats(min_value=-50, max_value=-0.01),
    st.floats(min_value=100.5, max_value=1e6),
    st.sampled_from(["n/a", "", "12,5", "x"]),
)


def _valid(v) -> float | None:
    """Independent reading of one cell: a usable percentage, or None."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x) or x < 0 or x > 100:
        return None
    return x


@SETTINGS
@given(
    n_patients=st.integers(1, 6),
    populations=st.lists(
        st.sampled_from(["T", "B", "NK", "Treg"]), min_size=1, max_size=3, unique=True
    ),  # fmt: skip
    values=st.lists(value, min_size=48, max_size=48),
    drop=st.lists(st.booleans(), min_size=48, max_size=48),
)
def test_compare_input_table(n_patients, populations, values, drop):
    rows, k = [], 0
    for i in range(n_patients):
        for v in ("baseline", "week24"):
            for pop in populations:
                if not drop[k]:
                    rows.append({"sample": f"P{i}_{v}", "patient": f"P{i}", "visit": v,
                                 "population": pop, "percent_of_parent": values[k]})  # fmt: skip
                k += 1
    t = pd.DataFrame(rows, columns=["sample", "patient", "visit", "population",
                                    "percent_of_parent"])  # fmt: skip
    try:
        cmp = compare(t, baseline="baseline", followup="week24", value="percent_of_parent")
    except ComparisonError:
        visits = set(t["visit"])
        assert "baseline" not in visits or "week24" not in visits
        return
    # every pair counted is a pair of usable values, and every usable pair is counted
    good = {(r.patient, r.visit, r.population): _valid(r.percent_of_parent)
            for r in t.itertuples()}  # fmt: skip
    for s in cmp.stats.itertuples():
        pairs = [
            (good.get((f"P{i}", "baseline", s.population)), good.get((f"P{i}", "week24",
                                                                      s.population)))
            for i in range(n_patients)
        ]  # fmt: skip
        expect = [(a, b) for a, b in pairs if a is not None and b is not None]
        assert s.n_pairs == len(expect)
        if expect:
            d = sorted(b - a for a, b in expect)
            assert math.isclose(s.median_change, float(np.median(d)), abs_tol=1e-9)
    # every value left out is named
    invalid = sum(
        1 for r in t.itertuples()
        if _valid(r.percent_of_parent) is None and str(r.percent_of_parent).strip() not in
        ("", "nan")
    )  # fmt: skip
    assert (cmp.problems["kind"] == "invalid_value").sum() == invalid
