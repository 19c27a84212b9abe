"""Reading leaderboard files safely: inside the root, regular files only, bounded JSON.

Every file the leaderboard reads goes through here. A path named by a leaderboard file is
relative and stays inside its top directory (``leaderboards/`` for suite and entry files, the
directory holding it for submissions and manifests) even after links are resolved; a
non-regular file (a link to ``/dev/zero``, a named pipe, a device) is refused from its
``stat`` before it is opened, so nothing hangs and nothing outside is hashed or echoed.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ropebench.errors import DataError

__all__ = ["MAX_JSON_BYTES", "confined", "file_kind", "check_regular", "check_tree", "read_bytes", "read_json",
           "relative_problem"]

MAX_JSON_BYTES = 64 << 20  # leaderboard and results JSON files are kilobytes; refuse anything absurd

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_kind(mode: int) -> str:
    """``"a regular file"``, ``"a named pipe"``, ... for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def relative_problem(path: str) -> str | None:
    """Why ``path`` (as written in a leaderboard file) is not a safe relative POSIX path, or None."""
    if not path or path.startswith("/") or "\\" in path or "\0" in path:
        return "must be a relative POSIX path"
    if any(part in ("..", "") for part in path.split("/")):
        return "must not contain '..' or empty parts"
    return None


def confined(path: Path, top: Path, what: str) -> Path:
    """The real path of ``path``; DataError when it (through any link) lies outside ``top``.

    ``top`` itself may be a link (an installed copy); what counts is where ``path`` really is.
    """
    real, real_top = Path(os.path.realpath(path)), Path(os.path.realpath(top))
    if real != real_top and real_top not in real.parents:
        raise DataError(f"{what} {path} resolves to {real}, outside {top}: leaderboard files are never "
                        f"followed out of it. Fix: replace the link with the file itself, inside {top}")
    return real


def _named(path: Path, what: str) -> str:
    return f"{what} {path}" if what else str(path)


def check_regular(path: Path, what: str = "", *, directory_ok: bool = False) -> os.stat_result:
    """``stat`` of ``path``, which must be a regular file (or a directory when allowed).

    Raises:
        DataError: missing, a directory, a named pipe, a device, ... — refused without opening it.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        broken = " (a link whose target does not exist)" if os.path.islink(path) else ""
        raise DataError(f"{_named(path, what)}: no such file{broken}") from None
    except OSError as error:
        raise DataError(f"{_named(path, what)}: cannot be read ({error.strerror or error})") from None
    if stat.S_ISREG(info.st_mode) or (directory_ok and stat.S_ISDIR(info.st_mode)):
        return info
    if stat.S_ISDIR(info.st_mode):
        raise DataError(f"{_named(path, what)}: cannot be read (Is a directory). Fix: pass the file itself")
    raise DataError(f"{_named(path, what)} is {file_kind(info.st_mode)}, not a regular file: refused without "
                    "reading it. Fix: put the file itself there")


def check_tree(path: Path, top: Path, what: str) -> Path:
    """The real path of a data file or directory source: inside ``top`` (links resolved), a
    regular file, or a directory whose every file and folder is inside ``top`` and regular.
    Nothing is opened. Returns the real path."""
    real = confined(path, top, what)
    info = check_regular(path, what, directory_ok=True)
    if stat.S_ISDIR(info.st_mode):
        for inner in sorted(Path(path).rglob("*")):
            confined(inner, top, what)
            if not inner.is_dir():
                check_regular(inner, what)
    return real


def read_bytes(path: Path, what: str = "", *, limit: int | None = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file, checked before and after opening (never blocks on a pipe)."""
    check_regular(path, what)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise DataError(f"{_named(path, what)}: cannot be read ({error.strerror or error})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):  # replaced between the two looks
            raise DataError(f"{_named(path, what)} is {file_kind(info.st_mode)}, not a regular file: refused")
        if limit is not None and info.st_size > limit:
            raise DataError(f"{_named(path, what)}: {info.st_size:,} bytes, more than the {limit:,} a leaderboard "
                            "JSON file may have. Fix: pass the file ropebench wrote")
        return handle.read()


def read_json(path: str | os.PathLike[str], *, what: str = "", top: Path | None = None) -> Any:
    """Parse a JSON file; DataError naming the file and the position on failure.

    ``top``: the file must lie inside it (links resolved). Deeply nested JSON is a DataError,
    not a RecursionError.
    """
    path = Path(path)
    if top is not None:
        confined(path, top, what or "file")
    data = read_bytes(path, what)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not valid JSON (not UTF-8: {error.reason} at byte {error.start})") from None
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    except RecursionError:
        raise DataError(f"{path}: not a usable JSON file: nested too deeply to be read (a ropebench file "
                        "is a few levels deep). Fix: pass the file ropebench wrote") from None
