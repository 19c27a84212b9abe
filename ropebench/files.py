"""Small file helpers shared by results, leaderboards and the CLI: hashing and atomic writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ropebench.errors import DataError

__all__ = ["sha256_file", "atomic_write_text", "atomic_write_with", "writable_directory"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, or of every file below a directory (sorted relative paths + bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def writable_directory(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` if needed and check it can be written to; DataError if not."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"{directory}: cannot create this directory ({error.strerror or error}). "
                        "Fix: choose a writable location") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError(f"{directory}: not writable. Fix: choose a writable location")
    return directory


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure anywhere leaves ``path`` as it was (absent or the previous version) and removes
    the temporary file, so a reader never sees a half-written result or leaderboard file.
    """
    path = Path(path)
    writable_directory(path.parent)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise DataError(f"{path}: cannot be written ({error.strerror or error}). "
                        "Fix: choose a path in a writable directory") from None
    os.close(handle)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_with`."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write_with(path, write)
