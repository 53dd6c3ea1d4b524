"""The command line's rough edges: option names, defaults in --help, the summary table,
--verbose logging and progress for every long stage."""

from __future__ import annotations

import logging
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from immunoprofile.cli import main


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    r = CliRunner().invoke(
        main, ["simulate", "-o", str(d), "--patients", "3", "--events", "4000", "--seed", "2"]
    )
    assert r.exit_code == 0, r.output  # -o works for simulate as for every other command
    assert "wrote 6 FCS files" in r.output
    return d


def _pop_table(seed: int = 0) -> pd.DataFrame:
    rows = []
    for i in range(1, 6):
        for v in ("baseline", "week24"):
            for pop, parent, val in (
                ("Treg", "CD4", 5 + i + (v == "week24")),
                ("B", "nonT", 10.0 + i),
            ):
                rows.append(
                    {"sample": f"P{i}_{v}", "patient": f"P{i}", "visit": v, "population": pop,
                     "parent": parent, "count": 100 * i, "parent_count": 1000,
                     "percent_of_parent": float(val), "percent_of_lymphocytes": val / 3.0}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_compare_takes_measure_and_value_alike(tmp_path):
    _pop_table().to_csv(tmp_path / "p.csv", index=False)
    outs = {}
    for flag in ("--measure", "--value"):
        out = tmp_path / flag.strip("-")
        r = CliRunner().invoke(
            main, ["compare", str(tmp_path / "p.csv"), flag, "percent_of_lymphocytes",
                   "-o", str(out), "--no-report"]
        )  # fmt: skip
        assert r.exit_code == 0, r.output
        outs[flag] = pd.read_csv(out / "stats.csv")
    assert set(outs["--measure"]["measure"]) == {"percent_of_lymphocytes"}
    pd.testing.assert_frame_equal(outs["--measure"], outs["--value"])


def test_summary_table_has_named_columns_and_units(tmp_path):
    _pop_table().to_csv(tmp_path / "p.csv", index=False)
    r = CliRunner().invoke(
        main, ["compare", str(tmp_path / "p.csv"), "-o", str(tmp_path / "o"), "--no-report"]
    )
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if "population" in line)
    cols = [c.strip() for c in re.split(r"[┃│|]", header) if c.strip()]
    assert cols == ["population", "value", "visit", "n", "HL", "exact CI", "p", "q", "test"]
    # B as % of lymphocytes (as the report), Treg as % of its parent CD4
    assert re.search(r"B\s+│\s+% of lymphocytes", r.output)
    assert re.search(r"Treg\s+│\s+% of CD4", r.output)


def test_run_help_shows_its_defaults():
    r = CliRunner().invoke(main, ["run", "--help"])
    text = " ".join(r.output.split())
    for default in ("[default: immune_profile]", "[default: baseline]", "[default: 0]",
                    "[default: 1]", "[default: immunoprofile_results]", "[default: all others]"):  # fmt: skip
        assert default in text, default
    r = CliRunner().invoke(main, ["gate", "--help"])
    assert "--seed" in r.output and "[default: 0; x>=0]" in " ".join(r.output.split())


def test_gate_seed_is_passed_on(cohort, tmp_path):
    files = sorted(str(p) for p in cohort.glob("*.fcs"))[:2]
    r = CliRunner().invoke(
        main, ["-q", "gate", "-t", "tregs", *files, "--seed", "7", "-o", str(tmp_path / "g")]
    )
    assert r.exit_code == 0, r.output
    import immunoprofile as ip

    api = ip.gate(files, "tregs", seed=7).table()
    cli = pd.read_csv(tmp_path / "g" / "populations.csv")
    assert list(cli["count"]) == list(api["count"])
    assert "gated with" not in r.output  # the group's -q silences the summary


def test_verbose_logs_each_stage_and_cluster_shows_progress(cohort, tmp_path, caplog):
    files = sorted(str(p) for p in cohort.glob("*.fcs"))
    with caplog.at_level(logging.INFO, logger="immunoprofile"):
        r = CliRunner().invoke(
            main,
            ["-v", "cluster", *files, "-o", str(tmp_path / "c"), "--metaclusters", "6",
             "--grid", "5x5", "--no-plots", "--subsample", "2000"],
        )  # fmt: skip
    assert r.exit_code == 0, r.output
    messages = [rec.getMessage() for rec in caplog.records]
    assert any(m.startswith("clustering: reading files: 6 in") for m in messages), messages
    assert any(m.startswith("clustering: SOM 5x5 on") for m in messages), messages
    assert any(m.startswith("clustering: consensus metaclustering:") for m in messages)
    assert any(m.startswith("clustering: naming clusters:") for m in messages)


def test_stage_and_counter_log_durations(caplog):
    from immunoprofile.progress import counter, stage

    with caplog.at_level(logging.INFO, logger="immunoprofile"):
        with stage("work", enabled=False):
            pass
        with counter("files", 3, enabled=False) as advance:
            for _ in range(3):
                advance("x")
    msgs = [r.getMessage() for r in caplog.records]
    assert re.fullmatch(r"work: \d+\.\d s", msgs[0]) and re.fullmatch(
        r"files: 3 in \d+\.\d s", msgs[1]
    )
