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
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from immunoprofile.exceptions import OutputError

if TYPE_CHECKING:
    import pandas as pd


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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        writer(Path(tmp))
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OutputError):
            raise
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
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


# --- text cells that spreadsheets would run as formulas -----------------------------------

#: a cell starting with one of these is a formula to Excel/LibreOffice when a CSV is opened
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape_cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with every text cell (values, index and column labels) that a spreadsheet
    would run as a formula prefixed by ``'`` (OWASP's advice against CSV injection).

    Only text is touched: numbers, including negative ones, stay numbers. Identities come
    from samplesheets and FCS keywords written outside the lab (``PATIENT_ID`` of
    ``=HYPERLINK(...)``), so every CSV immunoprofile writes goes through here. Returns
    ``df`` itself when nothing needs escaping.
    """
    import pandas as pd

    def text_columns(frame: pd.DataFrame) -> list:
        return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c].dtype)]

    cols = text_columns(df)
    needs = any(df[c].map(lambda v: _escape_cell(v) is not v).any() for c in cols)
    index_needs = any(_escape_cell(v) is not v for v in df.index)
    label_needs = any(_escape_cell(v) is not v for v in df.columns)
    if not (needs or index_needs or label_needs):
        return df
    out = df.copy()
    for c in cols:
        out[c] = out[c].map(_escape_cell).astype(object)
    if index_needs:
        out.index = pd.Index([_escape_cell(v) for v in out.index], name=out.index.name)
    if label_needs:
        out.columns = [_escape_cell(v) for v in out.columns]
    return out


def unescape_cell(value: object) -> object:
    """Undo `spreadsheet_safe` on one cell read back from a CSV immunoprofile wrote."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


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


# --- the output folder: checked before the work, marked while it is written --------------

#: present in an output folder while a write is under way (and left by an interrupted one)
INCOMPLETE = "INCOMPLETE"
_INCOMPLETE_TEXT = (
    "This folder is being written by {writer}, or that write was interrupted (killed, disk "
    "full): its files may mix two runs. Run the command again; a complete write removes "
    "this file.\n"
)
#: temporary files `atomic_write` makes (``.<name>.<8 random characters><suffix>``)
_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.(tmp|h5ad)$")


def check_output_dir(
    out_dir: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    writes: Iterable[str] = (),
) -> Path:
    """Make sure ``out_dir`` can take the outputs, before any work is done.

    Checks it is (or can be created as) a folder that a file can be created in (a private
    probe file, removed at once, as are the folders made for it), and refuses when one of ``inputs`` is a file
    this run would replace: one in ``out_dir`` whose name is among ``writes`` (names or
    globs such as ``populations_*.csv``).

    Raises
    ------
    OutputError
        Naming the path and the cause.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"output folder {out} exists and is not a folder")
    created = [p for p in (out, *out.parents) if not p.exists()]
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=out, prefix=".write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write into output folder {out}: {exc.strerror or exc}") from None
    finally:
        for p in created:  # deepest first: a run that stops early leaves no empty folders
            try:
                p.rmdir()
            except OSError:
                break
    here = out.resolve()
    globs = list(writes)
    for item in inputs:
        if item is None:
            continue
        p = Path(item)
        try:
            resolved = p.resolve()
        except OSError:
            continue
        if resolved.parent == here and any(fnmatch.fnmatchcase(p.name, g) for g in globs):
            raise OutputError(
                f"input {p} is inside the output folder {out} under a name this run writes "
                f"({p.name}); it would be overwritten. Move it, or choose another --out"
            )
    return out


def begin_write(out_dir: Path, writer: str) -> None:
    """Mark ``out_dir`` incomplete and remove temporary files an interrupted write left."""
    for p in out_dir.iterdir():
        if _TEMP.match(p.name) and p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
    atomic_write_text(out_dir / INCOMPLETE, _INCOMPLETE_TEXT.format(writer=writer))


def end_write(out_dir: Path) -> None:
    """Clear the incomplete mark: every file of the write is in place."""
    (out_dir / INCOMPLETE).unlink(missing_ok=True)


def refuse_incomplete(path: str | os.PathLike, what: str = "results") -> None:
    """Raise `OutputError` when ``path`` (a folder, or a file in one) carries the
    incomplete mark of an unfinished write."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent
    if (folder / INCOMPLETE).exists():
        raise OutputError(
            f"{what} in {folder} are incomplete: a write there was interrupted or is under "
            f"way ({folder / INCOMPLETE} is present); run the command that writes them again"
        )


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
    out.mkdir(parents=True, exist_ok=True)
    begin_write(out, writer)
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
    end_write(out)
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
