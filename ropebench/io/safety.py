"""What a command may read and where it may write: the one place for input and output path safety.

Inputs are ``stat``-ed before anything opens them (a named pipe blocks an ``open``, a link to
``/dev/zero`` never ends, a link loop raises deep inside a library), and outputs are refused
before any work when they are an input, a file an input records (a results file's per-query
file), another output, a directory, a device or pipe, or lie where nothing can be written.
:mod:`ropebench.io.files` writes the files once these checks have passed.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ropebench.errors import DataError, UsageError

__all__ = ["same_file", "regular_input", "recorded_files", "inputs_and_records", "unwritable_parent",
           "check_output_paths", "special_kind", "refuse_special", "kind_of_mode"]


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two paths name the same file or directory (links and ``..`` resolved), or one
    lies inside the other (an output inside a directory input would change that input)."""
    pa_, pb = Path(a), Path(b)
    try:
        if pa_.exists() and pb.exists() and os.path.samefile(pa_, pb):
            return True
    except OSError:
        pass
    # realpath, not Path.resolve(): a symbolic link loop makes resolve() raise (Python < 3.13).
    ra, rb = Path(os.path.realpath(pa_)), Path(os.path.realpath(pb))
    return ra == rb or rb in ra.parents or ra in rb.parents


def kind_of_mode(mode: int) -> str | None:
    """What an ``st_mode`` that is not a regular file describes ("a directory", "a named pipe",
    "a character device", …); None for a regular file. Every message about such paths uses these words."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    return ("a named pipe" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def special_kind(path: Path) -> str | None:
    """:func:`kind_of_mode` of an existing path (followed through links); None for a regular
    file or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return kind_of_mode(mode)


def refuse_special(path: Path) -> None:
    # Outputs are renamed over their target: over /dev/null (as root) that would replace the
    # device node itself with a results file, and over a pipe it would silently unlink the pipe.
    kind = special_kind(path)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not a regular file. Fix: name a regular file (or leave the option out)")


def regular_input(path: str | os.PathLike[str], what: str, *, fix: str = "give a regular file",
                  allow_directory: bool = False) -> Path:
    """Check, before anything opens it, that the input ``path`` is a regular file (or, with
    ``allow_directory``, a directory).

    Uses ``os.stat`` only: opening a named pipe blocks until a writer appears, and reading a link
    to ``/dev/zero`` never ends. A missing path, a link loop, a pipe, a device, a socket (and a
    directory unless allowed) raises a DataError naming ``what``, the path and ``fix``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        dangling = os.path.islink(path)
        missing = "no such file or directory" if allow_directory else "no such file"
        raise DataError(f"{what} {path}: {'a link to a missing file' if dangling else missing}. "
                        "Fix: check the path") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DataError(f"{what} {path}: a symbolic link loop (the link points, directly or through others, "
                            "back at itself). Fix: point the link at a real file") from None
        raise DataError(f"{what} {path}: cannot be accessed ({error.strerror or error}). "
                        "Fix: check the path and its permissions") from None
    kind = kind_of_mode(mode)
    if kind == "a directory" and not allow_directory:
        raise DataError(f"{what} {path}: is a directory, not a file. Fix: {fix}")
    if kind is not None and kind != "a directory":
        raise DataError(f"{what} {path}: not a regular file ({kind}); it is not read, since reading a pipe or a "
                        f"device can block or never end. Fix: {fix}")
    return path


def recorded_files(path: str | os.PathLike[str]) -> list[tuple[str, Path]]:
    """The files a JSON input records, that an output must not overwrite: a results file's
    per-query file (relative to its directory, or for a leaderboard entry to the directory that
    holds ``leaderboards/``), submission and manifest; a comparison's A and B. Anything that is
    not a readable JSON object records nothing (the command reports that itself)."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode) or os.path.getsize(path) > (64 << 20):
            return []
        with open(path, "rb") as handle:
            if handle.read(1) not in (b"{", b" ", b"\n", b"\t", b"\r"):
                return []
            handle.seek(0)
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return []
    if not isinstance(data, dict):
        return []
    found: list[tuple[str, Path]] = []

    def add(label: str, value: Any, *bases: Path) -> None:
        if isinstance(value, dict):
            value = value.get("path")
        if not isinstance(value, str) or not value:
            return
        candidate = Path(value)
        if candidate.is_absolute():
            found.append((label, candidate))
        else:
            found.extend((label, base / candidate) for base in bases)

    here = path.parent
    add("per-query file", data.get("per_query"), here, here.parent.parent)
    for key in ("submission", "manifest"):
        add(key, data.get(key), Path.cwd(), here, here.parent.parent)
    for key in ("a", "b"):
        add(f"input {key.upper()}", data.get(key), Path.cwd(), here)
    return found


def inputs_and_records(inputs: Mapping[str, str | os.PathLike[str] | None]) -> dict[str, str | os.PathLike[str] | None]:
    """``inputs`` plus every file they record (see :func:`recorded_files`), named for messages
    as "per-query file recorded by A" and so on."""
    out: dict[str, str | os.PathLike[str] | None] = dict(inputs)
    for what, source in inputs.items():
        if source is None:
            continue
        seen: set[str] = set()
        for label, recorded in recorded_files(source):
            key = os.path.realpath(recorded)
            if key in seen:
                continue
            seen.add(key)
            out[f"{label} recorded by {what} ({source}), i.e." + " " * len(seen)] = recorded
    return out


def unwritable_parent(path: Path) -> Path | None:
    """The nearest existing ancestor directory of ``path`` when it cannot be written, else None
    (nothing is created here: checking before the work must leave no trace)."""
    parent = Path(os.path.abspath(path)).parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return parent
    return None


def check_output_paths(outputs: Mapping[str, str | os.PathLike[str] | None],
                       inputs: Mapping[str, str | os.PathLike[str] | None]) -> None:
    """Refuse, before any work, an output path that is an input or another output, that is not
    a regular file (a directory, a device such as ``/dev/null``, a pipe), or that lies in a
    directory that cannot be written.

    Args:
        outputs: option name -> path (None = not written), e.g. ``{"--out": "r.json"}``.
        inputs: what each input is -> path, e.g. ``{"submission": "s.parquet"}``.

    Raises:
        UsageError: naming the options and the paths; nothing has been written.
    """
    problems = []
    given = [(name, path) for name, path in outputs.items() if path is not None]
    for name, path in given:
        kind = special_kind(Path(path))
        if kind is None and os.fspath(path).endswith(("/", os.sep)):
            kind = "a directory"
        if kind is not None:
            problems.append(f"{name} {path} is {kind}, not a regular file. Fix: name a regular file"
                            + (" (or leave the option out to write nothing)" if kind != "a directory" else ""))
        for what, source in inputs.items():
            if source is not None and same_file(path, source):
                problems.append(f"{name} {path} is the {what.rstrip()} {source}: writing it would destroy the input. "
                                "Fix: choose another output path")
        blocked = unwritable_parent(Path(path))
        if blocked is not None and kind is None:
            why = "not a directory" if blocked.exists() and not blocked.is_dir() else "not writable"
            problems.append(f"{name} {path}: cannot create this directory or write in it ({blocked} is {why}). "
                            "Fix: choose a path in a writable directory")
    for i, (name, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_file(path, other_path):
                problems.append(f"{name} and {other} both name {path}: one would replace the other. "
                                "Fix: give each output its own path")
    if problems:
        raise UsageError("refused before any work, nothing written:\n  - " + "\n  - ".join(problems))
