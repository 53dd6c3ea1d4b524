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
