"""Population tables from hand-worked counts."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from immunoprofile.quantify import (
    TABLE_COLUMNS,
    concat_tables,
    per_visit,
    population_table,
    safe_name,
    write_population_tables,
)

# a small hierarchy: 10000 events -> lymphocytes 6000 -> singlets 5400 -> live 5000
# -> T 3000 -> CD4 2000 -> Treg 100 ; live -> nonT 2000 -> B 500
COUNTS = {
    "lymphocytes": 6000,
    "singlets": 5400,
    "live": 5000,
    "T": 3000,
    "CD4": 2000,
    "Treg": 100,
    "nonT": 2000,
    "B": 500,
}
PARENTS = {
    "lymphocytes": None,
    "singlets": "lymphocytes",
    "live": "singlets",
    "T": "live",
    "CD4": "T",
    "Treg": "CD4",
    "nonT": "live",
    "B": "nonT",
}


def _one(sample="s1", patient="P01", visit="baseline", lym=None, counts=COUNTS):
    return population_table(
        counts, PARENTS, 10000, sample=sample, patient=patient, visit=visit,
        lymphocytes_per_ul=lym,
    )  # fmt: skip


def test_columns_exact_and_order():
    t = _one()
    assert tuple(t.columns) == TABLE_COLUMNS
    assert list(t["population"]) == list(COUNTS)
    assert (t["sample"] == "s1").all() and (t["visit"] == "baseline").all()


def test_hand_worked_percentages():
    t = _one().set_index("population")
    assert t.at["lymphocytes", "parent"] == "root"
    assert t.at["lymphocytes", "parent_count"] == 10000
    assert t.at["lymphocytes", "percent_of_parent"] == pytest.approx(60.0)
    assert t.at["lymphocytes", "percent_of_lymphocytes"] == pytest.approx(100.0)
    assert t.at["singlets", "percent_of_parent"] == pytest.approx(90.0)
    assert t.at["Treg", "parent"] == "CD4"
    assert t.at["Treg", "parent_count"] == 2000
    assert t.at["Treg", "percent_of_parent"] == pytest.approx(5.0)
    assert t.at["Treg", "percent_of_lymphocytes"] == pytest.approx(100 / 6000 * 100)
    assert t.at["B", "percent_of_parent"] == pytest.approx(25.0)
    assert t.at["B", "percent_of_lymphocytes"] == pytest.approx(500 / 60)
    assert "cells_per_ul" not in t.columns


def test_cells_per_ul():
    t = _one(lym=1500.0).set_index("population")
    # Treg are 1/60 of lymphocytes -> 25 cells/uL of 1500 lymphocytes/uL
    assert t.at["Treg", "cells_per_ul"] == pytest.approx(25.0)
    assert t.at["lymphocytes", "cells_per_ul"] == pytest.approx(1500.0)
    assert t.at["B", "cells_per_ul"] == pytest.approx(125.0)


def test_empty_parent_gives_nan_and_no_lymphocyte_population():
    counts = dict(COUNTS, CD4=0, Treg=0)
    t = _one(counts=counts).set_index("population")
    assert t.at["Treg", "count"] == 0
    assert math.isnan(t.at["Treg", "percent_of_parent"])
    assert t.at["CD4", "percent_of_parent"] == 0.0
    # template without a lymphocyte gate: percent_of_lymphocytes is NaN, not invented
    t2 = population_table({"T": 30, "CD4": 20}, {"T": None, "CD4": "T"}, 100, sample="x")
    assert t2["percent_of_lymphocytes"].isna().all()
    assert list(t2["percent_of_parent"]) == [30.0, pytest.approx(66.666666)]


def test_populations_above_lymphocytes_have_no_percent_of_lymphocytes():
    t = population_table(
        {"cells": 900, "lymphocytes": 450, "T": 300},
        {"cells": None, "lymphocytes": "cells", "T": "lymphocytes"},
        1000, sample="x",
    )  # fmt: skip
    t = t.set_index("population")
    assert math.isnan(t.at["cells", "percent_of_lymphocytes"])
    assert t.at["T", "percent_of_lymphocytes"] == pytest.approx(300 / 4.5)


def test_concat_keeps_cells_per_ul_and_int_counts():
    t = concat_tables([_one("a", lym=1000.0), _one("b", patient="P02")])
    assert list(t.columns) == [*TABLE_COLUMNS, "cells_per_ul"]
    assert t["count"].dtype == np.int64
    assert t.loc[t["sample"] == "b", "cells_per_ul"].isna().all()
    empty = concat_tables([])
    assert list(empty.columns) == list(TABLE_COLUMNS) and len(empty) == 0


def test_per_visit_wide():
    counts2 = dict(COUNTS, Treg=200)
    t = concat_tables(
        [
            _one("P01_b", "P01", "baseline"),
            _one("P02_b", "P02", "baseline", counts=counts2),
            _one("P01_w", "P01", "week24", counts=counts2),
            _one("x", "", ""),
        ]
    )
    wide = per_visit(t)
    assert set(wide) == {"baseline", "week24", "unassigned"}
    b = wide["baseline"]
    assert list(b.index) == ["P01", "P02"]
    assert list(b.columns) == list(COUNTS)
    assert b.at["P01", "Treg"] == pytest.approx(5.0)
    assert b.at["P02", "Treg"] == pytest.approx(10.0)
    assert list(wide["unassigned"].index) == ["x"]
    counts_wide = per_visit(t, "count")
    assert counts_wide["week24"].at["P01", "Treg"] == 200
    with pytest.raises(KeyError, match="no column"):
        per_visit(t, "nope")


def test_per_visit_two_tubes_of_one_patient():
    t = concat_tables([_one("t1", "P01", "baseline"), _one("t2", "P01", "baseline")])
    assert list(per_visit(t)["baseline"].index) == ["P01/t1", "P01/t2"]


def test_writers(tmp_path):
    t = concat_tables([_one("P01_b", "P01", "baseline"), _one("P01_w", "P01", "week 24")])
    write_population_tables(t, tmp_path)
    back = pd.read_csv(tmp_path / "populations.csv", keep_default_na=False)
    assert list(back.columns) == list(TABLE_COLUMNS)
    assert len(back) == 2 * len(COUNTS)
    pq = pd.read_parquet(tmp_path / "populations.parquet")
    pd.testing.assert_frame_equal(pq, t)
    w = pd.read_csv(tmp_path / "populations_week_24.csv", index_col=0)
    b_parent = t.set_index("population").loc["B", "parent"].iloc[0]
    assert w.at["P01", f"B (% of {b_parent})"] == pytest.approx(25.0)
    assert (tmp_path / "populations_baseline.csv").exists()
    sheets = pd.read_excel(tmp_path / "populations.xlsx", sheet_name=None, index_col=0)
    assert set(sheets) == {"baseline", "week 24", "metadata"}
    assert sheets["baseline"].at["P01", "Treg (% of CD4)"] == pytest.approx(5.0)
    assert not list(tmp_path.glob(".*.tmp"))


def test_safe_name():
    assert safe_name("week 24") == "week_24"
    assert safe_name("../x") == "x"
    assert safe_name("") == "unassigned"


def test_lab_tables_round_name_unit_and_parent_and_carry_counts():
    from immunoprofile.quantify import lab_tables

    t = pd.DataFrame(
        {
            "sample": ["s1", "s1", "s2", "s2"], "patient": ["P1", "P1", "P2", "P2"],
            "visit": ["v1"] * 4, "population": ["CD4", "Treg"] * 2,
            "parent": ["T", "CD4"] * 2, "count": [700, 63, 650, 40],
            "parent_count": [1000, 700, 1000, 650],
            "percent_of_parent": [70.0, 9.000000000000001, 65.0, 6.153846153846154],
            "percent_of_lymphocytes": [56.0, 5.04, 52.0, 3.2],
        }
    )  # fmt: skip
    lab = lab_tables(t)["v1"]
    assert list(lab.columns) == ["CD4 (% of T)", "CD4 (events)", "Treg (% of CD4)", "Treg (events)"]
    assert lab.loc["P2", "Treg (% of CD4)"] == 6.15 and lab.loc["P1", "Treg (% of CD4)"] == 9.0
    assert lab.loc["P2", "Treg (events)"] == 40
    lymph = lab_tables(t, "percent_of_lymphocytes")["v1"]
    assert "Treg (% of lymphocytes)" in lymph.columns


def test_xlsx_metadata_sheet(tmp_path):
    from immunoprofile.quantify import lab_tables, table_metadata, write_xlsx

    t = pd.DataFrame(
        {"sample": ["s1"], "patient": ["P1"], "visit": ["v1"], "population": ["CD4"],
         "parent": ["T"], "count": [700], "parent_count": [1000],
         "percent_of_parent": [70.0], "percent_of_lymphocytes": [56.0]}
    )  # fmt: skip
    files = pd.DataFrame({"sample": ["s1"], "file": ["/data/s1.fcs"]})
    meta = table_metadata("tregs", "percent_of_parent", files)
    write_xlsx(lab_tables(t), tmp_path / "p.xlsx", meta, files)
    sheets = pd.read_excel(tmp_path / "p.xlsx", sheet_name=None, header=None)
    assert list(sheets) == ["v1", "metadata"]
    md = sheets["metadata"]
    items = dict(zip(md[0], md[1]))
    import immunoprofile

    assert items["template"] == "tregs"
    assert items["immunoprofile version"] == immunoprofile.__version__
    assert str(items["written (UTC)"])[:2] == "20" and items["files"] in (1, "1")
    assert "/data/s1.fcs" in md.astype(str).to_numpy().ravel().tolist()
