import os
import stat

import numpy as np
import pytest

from immunoprofile._files import atomic_write, atomic_write_text
from immunoprofile.io.write import write_fcs
from immunoprofile.sample import Sample, make_channel_table


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(p):
    return stat.S_IMODE(p.stat().st_mode)


def test_text_written_with_ordinary_permissions(tmp_path, umask_022):
    p = atomic_write_text(tmp_path / "sub" / "a.csv", "x,y\n1,2\n")
    assert p.read_text() == "x,y\n1,2\n"
    assert _mode(p) == 0o644  # not mkstemp's private 0600


def test_fcs_written_with_ordinary_permissions(tmp_path, umask_022):
    s = Sample(np.zeros((3, 1), np.float32), make_channel_table(["FL1-A"], ranges=[1024]))
    assert _mode(write_fcs(s, tmp_path / "a.fcs")) == 0o644


def test_failure_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    target = atomic_write_text(tmp_path / "a.txt", "old")

    def broken(p):
        p.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.txt"]


# --- write_owned: a manifest, and removal of what the writer no longer produces ------------


def _writes(folder, *names):
    def write():
        return [atomic_write_text(folder / n, n) for n in names]

    return write


def test_write_owned_removes_only_its_own_stale_files(tmp_path):
    import json

    from immunoprofile._files import MANIFEST, owned_files, write_owned

    d = tmp_path / "out"
    d.mkdir()
    first = _writes(d, "populations.csv", "populations_baseline.csv", "populations_week24.csv")
    written, removed = write_owned(d, [], first, "test", "populations_*.csv")
    assert [p.name for p in written] == ["populations.csv", "populations_baseline.csv",
                                         "populations_week24.csv"]  # fmt: skip
    assert removed == []
    assert owned_files(d) == {"populations.csv", "populations_baseline.csv",
                              "populations_week24.csv"}  # fmt: skip
    # a file of the user's that matches the pattern but no manifest lists
    (d / "populations_notes.csv").write_text("mine")
    # a manifest tampered with to point outside the folder is not followed
    outside = tmp_path / "populations_outside.csv"
    outside.write_text("outside")
    m = json.loads((d / MANIFEST).read_text())
    m["files"] += ["../populations_outside.csv", str(outside)]
    (d / MANIFEST).write_text(json.dumps(m))

    second = _writes(d, "populations.csv", "populations_baseline.csv")
    written, removed = write_owned(d, [], second, "test", "populations_*.csv")
    assert [p.name for p in removed] == ["populations_week24.csv"]
    assert sorted(p.name for p in d.iterdir()) == [
        MANIFEST, "populations.csv", "populations_baseline.csv", "populations_notes.csv",
    ]  # fmt: skip
    assert outside.read_text() == "outside"
    assert json.loads((d / MANIFEST).read_text())["files"] == [
        "populations.csv", "populations_baseline.csv",
    ]  # fmt: skip


def test_write_owned_failure_removes_nothing_but_remembers_what_it_planned(tmp_path):
    from immunoprofile._files import owned_files, write_owned

    d = tmp_path / "out"
    d.mkdir()
    write_owned(
        d, [], _writes(d, "populations_a.csv", "populations_b.csv"), "t", "populations_*.csv"
    )

    def failing():
        atomic_write_text(d / "populations_c.csv", "c")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_owned(d, ["populations_c.csv"], failing, "t", "populations_*.csv")
    # nothing removed; the file the failed write created is known as owned
    assert {p.name for p in d.glob("populations_*.csv")} == {
        "populations_a.csv", "populations_b.csv", "populations_c.csv",
    }  # fmt: skip
    assert owned_files(d) == {"populations_a.csv", "populations_b.csv", "populations_c.csv"}
    _, removed = write_owned(d, [], _writes(d, "populations_a.csv"), "t", "populations_*.csv")
    assert sorted(p.name for p in removed) == ["populations_b.csv", "populations_c.csv"]
    # no manifest, or an unreadable one: nothing is known to be owned
    (d / "outputs.json").write_text("{not json")
    assert owned_files(d) == set()
    _, removed = write_owned(d, [], _writes(d, "populations.csv"), "t", "populations_*.csv")
    assert removed == [] and (d / "populations_a.csv").is_file()


def test_write_owned_never_removes_another_writers_files(tmp_path):
    from immunoprofile._files import owned_files, write_owned

    d = tmp_path / "shared"
    d.mkdir()
    write_owned(d, [], _writes(d, "errors.csv", "populations_a.csv"), "gate", "*.csv")
    assert owned_files(d, "gate") == {"errors.csv", "populations_a.csv"}
    assert owned_files(d, "cluster") == set()
    _, removed = write_owned(d, [], _writes(d, "populations.csv"), "cluster", "*.csv")
    assert removed == [] and (d / "errors.csv").is_file() and (d / "populations_a.csv").is_file()
