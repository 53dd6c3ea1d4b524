"""GateResults and ClusterResult keep one results protocol (immunoprofile.results):
samples of every input, errors as a table, table(), write() returning the paths."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from immunoprofile.batch import ERROR_COLUMNS
from immunoprofile.clustering.api import cluster
from immunoprofile.gating.run import gate
from immunoprofile.quantify import TABLE_COLUMNS
from immunoprofile.results import BatchResults


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list[str]:
    from immunoprofile.simulate import simulate_cohort

    d = tmp_path_factory.mktemp("protocol_cohort")
    simulate_cohort(d, patients=2, visits=("baseline", "week24"), events=3000, seed=5)
    good = sorted(str(p) for p in d.glob("*.fcs"))
    bad = d / "P07_week24.fcs"
    bad.write_bytes(b"FCS3.1" + b" " * 40)  # a HEADER and nothing else
    return [good[0], str(bad), *good[1:]]


@pytest.fixture(scope="module")
def results(files):
    g = gate(files, "immune_profile")
    c = cluster(files, template="immune_profile", parent="live", grid=(4, 4),
                n_metaclusters=4, n_resamples=5, on_error="skip")  # fmt: skip
    return {"gate": g, "cluster": c}


@pytest.mark.parametrize("verb", ["gate", "cluster"])
def test_both_results_follow_the_protocol(results, files, verb, tmp_path):
    res = results[verb]
    assert isinstance(res, BatchResults)
    # every input, in input order, the failed one included
    assert res.samples == [Path(f).stem for f in files]
    err = res.errors
    assert isinstance(err, pd.DataFrame) and list(err.columns) == list(ERROR_COLUMNS)
    assert err["sample"].tolist() == ["P07_week24"] and err["file"].tolist() == [files[1]]
    assert err["error_type"].iloc[0].endswith("Error") and files[1] in err["message"].iloc[0]
    tab = res.table()
    assert set(TABLE_COLUMNS) <= set(tab.columns)
    # the failed file has no rows; each of the four others has its rows
    assert sorted(tab["sample"].unique()) == sorted(Path(f).stem for f in files if "P07" not in f)
    written = res.write(tmp_path / verb)
    assert written and all(isinstance(p, Path) and p.is_file() for p in written)
    names = {p.name for p in written}
    assert {"populations.csv", "errors.csv"} <= names
    on_disk = pd.read_csv(tmp_path / verb / "errors.csv")
    assert on_disk["file"].tolist() == [files[1]]


def test_calling_errors_still_works_with_a_deprecation_warning(results):
    res = results["gate"]
    with pytest.warns(DeprecationWarning, match="use res.errors, not res.errors()"):
        called = res.errors()
    pd.testing.assert_frame_equal(called, pd.DataFrame(res.errors))


def test_a_clustered_file_is_found_by_name_or_position(results):
    c = results["cluster"]
    assert c.clustered_samples == [s for s in c.samples if s != "P07_week24"]
    name = c.clustered_samples[1]
    by_name = c.population_mask(name, "T")
    assert (by_name == c.population_mask(1, "T")).all()
    # the mask's events are the T row of the table
    row = c.table().query("sample == @name and population == 'T'").iloc[0]
    assert int(by_name.sum()) == row["count"]
    assert c.counts().index.tolist() == c.clustered_samples
