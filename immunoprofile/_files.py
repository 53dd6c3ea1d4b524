"""Atomic file output: every file immunoprofile writes goes through here.

A file is written under a temporary name in its destination folder and renamed onto its
final name, so readers never see a half-written file and a failure leaves the previous
file (or nothing) in place. The temporary file is created private (``mkstemp``); before
the rename it gets the permissions an ordinary ``open()`` would give (0666 less the
umask), so results on a shared disk stay readable by colleagues.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def _default_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(
    path: str | os.PathLike, writer: Callable[[Path], object], *, suffix: str = ".tmp"
) -> Path:
    """Call ``writer(tmp_path)`` and rename the temporary file onto ``path``.

    ``suffix`` is the temporary file's ending, for writers that insist on one (``.h5ad``).
    Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically."""

    def _write(p: Path) -> None:
        with open(p, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)

    return atomic_write(path, _write)
