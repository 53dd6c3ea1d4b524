"""Shared fixtures. Real data from public projects lives in ../shared/realdata (never copied
into the repo); tests that need it skip, saying why, when the folder is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REALDATA = Path(
    os.environ.get("IMMUNOPROFILE_REALDATA", REPO.parent / "shared" / "realdata")
).resolve()


@pytest.fixture(scope="session")
def realdata() -> Path:
    """Root of the real-data folder; skips the test when it is absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (set IMMUNOPROFILE_REALDATA)")
    return REALDATA
