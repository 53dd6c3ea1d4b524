"""Atomic file output: every file immunoprofile writes goes through here.

A file is written under a temporary name in its destination folder and renamed onto its
final name, so readers never see a half-written file and a failure leaves the previous
file (or nothing) in place. The temporary file is created private (``mkstemp``); before
the rename it gets the permissions an ordinary ``open()`` would give (0666 less the
umask), so results on a shared disk stay readable by colleagues.

A writer whose set of files depends on the data (one ``populations_<visit>.csv`` per
visit) keeps a manifest, ``outputs.json``, of what it wrote (`write_owned`): writing again
into the same folder removes the files of that pattern the last write recorded and this
one no longer produces, so a folder never mixes two runs. Removal goes by the manifest,
not by the pattern alone, so a user's own ``populations_notes.csv`` is never deleted.
"""

from __future__ import annotations

import fnmatch
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
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


# --- outputs owned by a writer: a manifest, and removal of what it no longer writes ---------

#: the manifest a writer keeps in its output folder: the files its last write produced
MANIFEST = "outputs.json"


def owned_files(out_dir: str | os.PathLike, writer: str | None = None) -> set[str]:
    """File names the manifest in ``out_dir`` records (empty when there is none, it cannot
    be read, or, with ``writer``, another writer made it: then nothing is known to be
    owned, and nothing will be removed)."""
    path = Path(out_dir) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or (writer is not None and data.get("writer") != writer):
        return set()
    return {f for f in files if isinstance(f, str) and _plain_name(f)}


def record_outputs(out_dir: str | os.PathLike, names: Iterable[str], writer: str) -> Path:
    """Write the manifest of ``out_dir`` (atomically): ``writer`` and the sorted ``names``."""
    text = json.dumps(
        {
            "writer": writer,
            "note": "files written here by this writer; on its next write into this folder, "
            "those of them it no longer produces are removed",
            "files": sorted(set(names)),
        },
        indent=1,
    )
    return atomic_write_text(Path(out_dir) / MANIFEST, text + "\n")


def _plain_name(name: str) -> bool:
    """A bare file name (no folder part, not ``.``/``..``)."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "/" not in name


def write_owned(
    out_dir: str | os.PathLike,
    planned: Iterable[str],
    write: Callable[[], Sequence[str | os.PathLike]],
    writer: str,
    stale: str | Sequence[str],
) -> tuple[list[Path], list[Path]]:
    """Run ``write()`` (which writes into ``out_dir`` and returns the paths it wrote), then
    remove the files an earlier write recorded that this one did not produce.

    Only files that are (1) listed in the manifest ``out_dir/outputs.json`` of an earlier
    write by the same ``writer`` (`immunoprofile gate` never removes what
    `immunoprofile cluster` wrote into a shared folder, nor the reverse), (2) bare names matching the glob ``stale`` (e.g. ``populations_*.csv``; or
    any of several globs), (3)
    regular files in ``out_dir`` itself, and (4) not written now are removed, and only
    after ``write()`` returned: a write that fails removes nothing. Before writing, the
    manifest is extended by ``planned`` (the names about to be written), so a file created
    by a write that then fails is still known as owned next time.

    Returns the paths written and the paths removed.
    """
    out = Path(out_dir)
    globs = [stale] if isinstance(stale, str) else list(stale)
    previous = owned_files(out, writer)
    record_outputs(out, previous | {n for n in planned if _plain_name(n)}, writer)
    written = [Path(p) for p in write()]
    here = out.resolve()
    names = {p.name for p in written if p.resolve().parent == here}
    removed = []
    for name in sorted(previous - names):
        path = out / name
        ours = any(fnmatch.fnmatchcase(name, g) for g in globs)
        if ours and path.is_file() and not path.is_symlink():
            path.unlink()
            removed.append(path)
    record_outputs(out, names, writer)
    return written, removed


def default_output_folder(base: str | os.PathLike, writer: str, *, limit: int = 1000) -> Path:
    """The folder a command writes into when the user names none: ``base`` when it does
    not exist, is empty, or holds the manifest of an earlier write by ``writer`` (writing
    again there is what a second run of the same command should do); otherwise the first
    ``base-2``, ``base-3``, ... that qualifies, so a folder another writer made (another
    command, or the user's own files) is never written into."""
    base = Path(base)
    for k in range(1, limit + 1):
        cand = base if k == 1 else base.with_name(f"{base.name}-{k}")
        if not cand.exists():
            return cand
        if not cand.is_dir():
            continue
        manifest = cand / MANIFEST
        if manifest.is_file():
            if owned_files(cand, writer) or _manifest_writer(manifest) == writer:
                return cand
            continue
        if not any(cand.iterdir()):
            return cand
    raise OSError(f"no free output folder next to {base} (tried {limit})")


def _manifest_writer(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("writer") if isinstance(data, dict) else None
