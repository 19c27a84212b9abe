"""Changing the leaderboard as one transaction: a lock, a journal, atomic renames.

Every change (``add``, ``init``, ``render``) runs under an exclusive ``fcntl.flock`` on
``<root>/.lock``, so concurrent writers serialise; readers take a shared lock when they can.
A change is first built completely in memory, then committed in three steps:

1. every new file is written to a temporary file beside its target (``.<name>.<hex>.tmp``)
   and flushed to disk; any failure here removes the temporaries and changes nothing;
2. the journal ``<root>/.journal.json`` is written atomically, naming each temporary file and
   its target: this rename is the commit point;
3. each temporary file is renamed over its target, then the journal is removed.

A kill before step 2 leaves the old leaderboard (plus temporaries, removed by the next writer);
a kill after it leaves the journal, and every reader already sees the new leaderboard through
it (:func:`pending`); the next command that takes the lock finishes the renames
(:func:`recover`). So a reader only ever sees the old or the new leaderboard.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from ropebench.errors import DataError
from ropebench.leaderboard.paths import confined, relative_problem

__all__ = ["LOCK", "JOURNAL", "exclusive", "shared", "commit", "recover", "pending"]

LOCK = ".lock"
JOURNAL = ".journal.json"
JOURNAL_SCHEMA = "ropebench.journal/1"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # a lock file that is a link is not followed (nor created through)
_TEMP = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")
# (root, thread) pairs holding a root's exclusive lock: that thread's own reads must not wait for it;
# another thread's reads do (flock locks belong to open files, so a second open() waits).
_HELD: set[tuple[str, int]] = set()


def _step(name: str) -> None:
    """A point between two steps of a commit; does nothing (tests replace it to kill or fail there)."""


def _key(root: Path) -> tuple[str, int]:
    return os.path.realpath(root), threading.get_ident()


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the root's exclusive lock (waiting for other writers), after finishing any journal."""
    if _key(root) in _HELD:
        yield
        return
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o666)
    except OSError as error:
        raise DataError(f"{root}: cannot create the lock file {root / LOCK} ({error.strerror or error}); "
                        "the leaderboard cannot be changed here. Fix: make the directory writable, or "
                        "create a suite of your own with `ropebench leaderboard init SUITE --root DIR`") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _HELD.add(_key(root))
        try:
            recover(root)
            yield
        finally:
            _HELD.discard(_key(root))
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def shared(root: Path) -> Iterator[None]:
    """Hold the root's shared lock while reading, when the lock file can be opened.

    A journal left by a killed writer is finished first when the root is writable; in a
    read-only root (an installed copy) readers see through it instead (:func:`pending`).
    """
    if _key(root) in _HELD:
        yield
        return
    fd = None
    for flags in (os.O_RDWR | os.O_CREAT | _NOFOLLOW, os.O_RDONLY | _NOFOLLOW):
        with contextlib.suppress(OSError):
            fd = os.open(root / LOCK, flags, 0o666)
            break
    if fd is None:
        yield
        return
    try:
        if (root / JOURNAL).exists() and os.access(root, os.W_OK):
            fcntl.flock(fd, fcntl.LOCK_EX)
            with contextlib.suppress(DataError, OSError):
                recover(root)
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def _read_journal(root: Path) -> list[tuple[Path, Path | None]]:
    """(target, temporary or None for a deletion) of an unfinished commit; [] when there is none."""
    path = root / JOURNAL
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError, RecursionError) as error:
        raise DataError(f"{path}: an unfinished change that cannot be read ({error}). Fix: look at the "
                        "files it names, then delete it") from None
    moves = data.get("moves") if isinstance(data, dict) and data.get("schema") == JOURNAL_SCHEMA else None
    if not isinstance(moves, list):
        raise DataError(f"{path}: not a ropebench journal. Fix: delete it")
    out: list[tuple[Path, Path | None]] = []
    for move in moves:
        target, temp = (move.get("target"), move.get("tmp")) if isinstance(move, dict) else (None, None)
        if not isinstance(target, str) or relative_problem(target) or not (
                temp is None or (isinstance(temp, str) and not relative_problem(temp))):
            raise DataError(f"{path}: a move {move!r} names a path outside {root}. Fix: delete the journal")
        try:
            for name in (target, temp):
                if name is not None:
                    confined((root / name).parent, root, "journal entry")
        except DataError:
            raise DataError(f"{path}: a move {move!r} leads out of {root} through a link. Fix: delete the "
                            "journal") from None
        out.append((root / target, None if temp is None else root / temp))
    return out


def pending(root: Path) -> dict[Path, Path | None]:
    """Targets an unfinished commit will replace: target -> its new content (a temporary file),
    or None when the target is deleted. Only moves not yet done are listed."""
    try:
        moves = _read_journal(root)
    except DataError:
        return {}
    return {target: temp for target, temp in moves if temp is None and target.exists()
            or temp is not None and temp.exists()}


def recover(root: Path) -> list[Path]:
    """Finish an unfinished commit and remove temporaries of an abandoned one (lock held).

    Returns the targets it changed.
    """
    done = []
    for target, temp in _read_journal(root):
        if temp is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target)
                done.append(target)
        elif temp.exists():
            os.replace(temp, target)
            done.append(target)
    if (root / JOURNAL).exists():
        for directory in {t.parent for t in done} | {root}:
            _fsync_dir(directory)
        os.unlink(root / JOURNAL)
        _fsync_dir(root)
    for directory in [root, *(d for d in root.iterdir() if d.is_dir() and not d.is_symlink())]:
        for path in directory.iterdir():
            if _TEMP.match(path.name) and path.is_file():
                with contextlib.suppress(OSError):
                    os.unlink(path)
    return done


def _relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()


def _write_temp(target: Path, data: bytes) -> Path:
    temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(temp, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise DataError(f"{target}: cannot be written ({error.strerror or error}); nothing was changed. "
                        "Fix: make the file and its directory writable, or free disk space") from None
    return temp


def _check_target(root: Path, target: Path) -> None:
    if target.parent != root and target.parent.parent != root:
        raise DataError(f"{target}: not a leaderboard file of {root}")
    if os.path.lexists(target) and (target.is_symlink() or not target.is_file()):
        kind = "a link" if target.is_symlink() else "not a regular file"
        raise DataError(f"{target} is {kind}: the leaderboard replaces only regular files; nothing was "
                        "changed. Fix: put the file itself there")
    # Permission bits are honoured even by root: a file made read-only says "do not change me".
    for path, fix in ((target, f"`chmod u+w {target}`"), (target.parent, f"`chmod u+w {target.parent}`")):
        if os.path.lexists(path) and (not os.stat(path).st_mode & 0o222 or not os.access(path, os.W_OK)):
            raise DataError(f"{path} is not writable; nothing was changed. Fix: {fix}")


def commit(root: Path, changes: Mapping[Path, bytes | None]) -> None:
    """Replace (bytes) or delete (None) files of the leaderboard as one transaction (lock held).

    Raises:
        DataError: a target cannot be written; nothing was changed.
    """
    if _key(root) not in _HELD:
        raise RuntimeError("commit() needs the exclusive lock: use `with exclusive(root):`")
    _step("begin")
    for target in changes:
        _check_target(root, target)
    temps: dict[Path, Path | None] = {}
    staged: Path | None = None
    try:
        for target, data in changes.items():
            temps[target] = None if data is None else _write_temp(target, data)
            _step(f"written {_relative(root, target)}")
        journal = {"schema": JOURNAL_SCHEMA, "moves": [
            {"target": _relative(root, target), "tmp": None if temp is None else _relative(root, temp)}
            for target, temp in temps.items()]}
        staged = _write_temp(root / JOURNAL, (json.dumps(journal, indent=2) + "\n").encode())
        _step("journal written")
        os.replace(staged, root / JOURNAL)  # the commit point
    except BaseException as error:
        # Nothing was renamed yet: without its temporary files even a committed journal changes nothing.
        for temp in (*temps.values(), staged):
            if temp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
        with contextlib.suppress(OSError):
            os.unlink(root / JOURNAL)
        if isinstance(error, OSError):
            raise DataError(f"{root}: the change could not be written ({error.strerror or error}); nothing "
                            "was changed. Fix: make the leaderboard writable, or free disk space") from None
        raise
    _fsync_dir(root)
    _step("committed")
    for target, temp in temps.items():
        try:
            if temp is None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)
            else:
                os.replace(temp, target)
        except OSError as error:
            raise DataError(f"{target}: the change is committed ({root / JOURNAL}) but this file could not "
                            f"be replaced ({error.strerror or error}). Readers already see the new "
                            "leaderboard; fix the cause and run any `ropebench leaderboard` command to "
                            "finish") from None
        _step(f"replaced {_relative(root, target)}")
    for directory in {target.parent for target in temps}:
        _fsync_dir(directory)
    os.unlink(root / JOURNAL)
    _fsync_dir(root)
    _step("done")
