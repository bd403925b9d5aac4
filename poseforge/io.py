"""Atomic file writes (temp file in the same folder, then rename), crash-safe folder swaps, stale temp
file clean-up, safe JSON reading and file digests."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import PoseforgeError

_UMASK = os.umask(0)
os.umask(_UMASK)
_HASH_CHUNK = 1 << 20


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash mid-write leaves the old file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes 0600 files (and some writers, e.g. safetensors, recreate the file): give the usual permissions
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` as JSON atomically (compact by default: COCO files are large)."""
    separators = None if indent else (",", ":")
    write_bytes_atomic(path, json.dumps(obj, indent=indent, separators=separators).encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file is a one-line :class:`PoseforgeError`."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except FileNotFoundError:
        raise PoseforgeError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise PoseforgeError(f"{path}: is a directory, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PoseforgeError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:  # json's decoder recurses per nesting level
        raise PoseforgeError(f"{path}: not valid JSON (nested too deeply)") from None


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks (a few ms for a 4 MB model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------- folders
# The swap protocol of replace_directory: ``.<name>.new`` is being written (never trusted), ``.<name>.ready``
# is complete (renamed from .new only after every file in it was written), ``.<name>.old`` is the previous
# folder while the complete one is renamed in.
def damaged_zip_member(path: str | os.PathLike) -> str | None:
    """The first member of a zip archive whose bytes fail its CRC-32, or ``None`` when all pass.

    ``torch.save`` writes zip archives with a CRC per tensor record but ``torch.load`` never checks them,
    so a flipped bit in a training checkpoint would load as silently wrong weights; this reads every
    record once (zlib's CRC runs at GB/s). A file that is not a zip archive (the legacy pickle format)
    returns ``None``: there is nothing to check.
    """
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:  # raises BadZipFile on a CRC mismatch at the end of the read
                    while member.read(1 << 22):
                        pass
    except zipfile.BadZipFile as e:
        text = str(e)
        if "File is not a zip file" in text:
            return None
        match = re.search(r"Bad CRC-32 for file '([^']+)'", text)
        return match.group(1) if match else f"zip structure ({text})"
    except (OSError, EOFError, ValueError) as e:  # truncated or garbled directory
        return f"zip structure ({e})"
    return None


def _sibling(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}")


def _fsync_dir(folder: Path) -> None:
    """Make renames in ``folder`` durable (best effort: some file systems cannot open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def recover_directory(target: str | os.PathLike) -> Path | None:
    """Finish or undo a :func:`replace_directory` that a crash interrupted; returns ``target`` if it exists.

    A complete ``.ready`` folder is swapped in; otherwise a missing ``target`` gets its ``.old`` copy back
    (the last good one, also what the earlier protocol left when it died between its two renames); a
    ``.new`` folder is always partial and removed. The only good copy is never deleted.
    """
    target = Path(target)
    new, ready, old = (_sibling(target, k) for k in ("new", "ready", "old"))
    if new.exists():
        shutil.rmtree(new)
    if ready.exists():
        if target.exists():
            if old.exists():  # a leftover of an earlier swap's clean-up: target is newer than it
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(ready, target)
        _fsync_dir(target.parent)
    elif old.exists() and not target.exists():
        os.replace(old, target)
        _fsync_dir(target.parent)
    if old.exists() and target.exists():  # the swap was done; only the old folder's removal was cut short
        shutil.rmtree(old)
    return target if target.exists() else None


def replace_directory(target: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Build a folder with ``write(tmp_folder)`` beside ``target``, then swap it in.

    Steps: ``write(.new)``; rename ``.new`` -> ``.ready`` (now known complete); ``target`` -> ``.old``;
    ``.ready`` -> ``target``; delete ``.old``. A crash at any point leaves either a complete ``target``
    or a complete ``.ready`` / ``.old`` beside it, which :func:`recover_directory` (run first here, and
    by the trainer on start) turns back into a complete ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(target)
    new, ready, old = (_sibling(target, k) for k in ("new", "ready", "old"))
    new.mkdir()
    try:
        write(new)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    os.replace(new, ready)
    _fsync_dir(target.parent)
    if target.exists():
        os.replace(target, old)
    os.replace(ready, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


# atomic_path's mkstemp names (".<name>.<8 random chars>.tmp") and the hub's downloads (".part")
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.(tmp|part)$")


def clean_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files a killed writer left in ``folder`` (poseforge's own temp names only).

    Call only when no other process writes into ``folder`` (a run folder at the start of training).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if _TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
