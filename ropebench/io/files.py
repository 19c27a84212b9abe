"""Small file helpers shared by results, leaderboards and the CLI: hashing and atomic writes.

Which paths may be read and written is decided in :mod:`ropebench.io.safety` (its checks are
re-exported here); this module writes: temporary files beside their targets, renamed together
at the end, with a guardian process that finishes or undoes the step if the writer is killed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ropebench.errors import DataError, UsageError
from ropebench.io.safety import (
    check_output_paths,
    inputs_and_records,
    recorded_files,
    refuse_special,
    regular_input,
    same_file,
    unwritable_parent,
)

__all__ = ["sha256_file", "atomic_write_text", "atomic_write_with", "writable_directory", "check_output_paths",
           "write_together", "same_file", "regular_input", "recorded_files", "inputs_and_records", "unwritable_parent"]


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


def _mkstemp_beside(path: Path) -> str:
    """A new empty temporary file in ``path``'s directory (renamed over ``path`` later)."""
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise DataError(f"{path}: cannot be written ({error.strerror or error}). "
                        "Fix: choose a path in a writable directory") from None
    os.close(handle)
    return tmp


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    A failure anywhere leaves ``path`` as it was (absent or the previous version) and removes
    the temporary file, so a reader never sees a half-written result or leaderboard file; if
    the process is killed while writing, the guardian of :func:`write_files_together` removes
    the temporary file (and directories made for it).
    """
    write_files_together([(path, write)], guard=True)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_with`."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    atomic_write_with(path, write)


def _temp_beside(path: Path, created: list[Path]) -> str:
    """A new empty temporary file in ``path``'s directory (created if needed; the directories
    made are appended to ``created`` so a failure can remove them again)."""
    refuse_special(path)
    missing = [parent for parent in reversed(path.parent.parents) if not parent.exists()]
    if not path.parent.exists():
        missing.append(path.parent)
    created.extend(missing)
    writable_directory(path.parent)
    tmp = _mkstemp_beside(path)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


# The guardian: a tiny child process that outlives a killed writer. It is told each temporary
# file as it is made, then "commit" once every one is complete, then "done". If its pipe closes
# without "done" (the writer died, even by SIGKILL), it finishes the job: after "commit" it
# renames every remaining temporary file into place (all of them are complete, so the new
# state is whole); before "commit" it deletes them (the old state stays). Either way the
# outputs are all old or all new, never one without the other.
_GUARDIAN = r"""
import json, os, sys
plan, made, committed = [], [], False
for line in sys.stdin:
    message = json.loads(line)
    if message[0] == "tmp":
        plan.append(message[1:])
    elif message[0] == "dir":
        made.append(message[1])
    elif message[0] == "commit":
        committed = True
    elif message[0] == "abort":
        committed = False
    elif message[0] == "done":
        sys.exit(0)
for tmp, target in plan:
    try:
        if committed and os.path.exists(tmp):
            os.replace(tmp, target)
        elif not committed:
            os.unlink(tmp)
    except OSError:
        pass
    try:
        os.unlink(tmp + ".old")
    except OSError:
        pass
if not committed:
    for directory in reversed(made):  # directories made for the outputs, deepest first, if empty
        try:
            os.rmdir(directory)
        except OSError:
            pass
"""

# Test hook (documented in tests/test_outputs.py): seconds to sleep between two renames, so a
# test can SIGKILL a real writer at the worst moment. Unset in normal use.
PAUSE_ENV = "ROPEBENCH_TEST_PAUSE_BETWEEN_RENAMES"


class _Guardian:
    """Client side of :data:`_GUARDIAN`; does nothing if the child cannot be started."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        if not sys.executable:
            return
        with contextlib.suppress(OSError, ValueError):
            # Own session: a Ctrl-C meant for the writer must not kill the guardian with it.
            self.process = subprocess.Popen([sys.executable, "-I", "-S", "-c", _GUARDIAN], stdin=subprocess.PIPE,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True, close_fds=True)

    def send(self, *message: str) -> None:
        if self.process is not None and self.process.stdin is not None:
            try:
                self.process.stdin.write((json.dumps(message) + "\n").encode())
                self.process.stdin.flush()
            except OSError:  # the guardian died: carry on without it
                self.process = None

    def close(self) -> None:
        if self.process is None:
            return
        self.send("done")
        with contextlib.suppress(OSError):
            if self.process.stdin is not None:
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def write_files_together(writers: Sequence[tuple[str | os.PathLike[str], Callable[[str], None]]], *,
                         guard: bool | None = None) -> None:
    """Write several files as one step: all new or all old, also when the process is killed.

    Each ``write(tmp)`` fills a temporary file beside its target; only when every one succeeded
    are they renamed, in the given order. On a failure (including a failed rename) the temporary
    files are removed, targets already renamed are put back as they were, and directories made
    for the targets are removed again. With two or more files, a guardian process (see
    :data:`_GUARDIAN`) finishes or undoes the step if this process dies between renames.

    Raises:
        DataError: a target cannot be written (full disk, no permission, not a regular file).
    """
    temps: list[tuple[Path, str]] = []
    created: list[Path] = []
    # The guardian also cleans up after a kill of a single write (guard=True): no stray .tmp file.
    guardian = _Guardian() if (len(writers) > 1 if guard is None else guard) else None
    try:
        try:
            for target, write in writers:
                path = Path(os.path.abspath(target))
                made_before = len(created)
                try:
                    tmp = _temp_beside(path, created)
                except OSError as error:  # a directory or temporary file that cannot be made (full disk, …)
                    raise DataError(f"{path}: cannot be written ({error.strerror or error}). "
                                    "Fix: free disk space or choose a writable location") from None
                temps.append((path, tmp))
                if guardian is not None:
                    for directory in created[made_before:]:
                        guardian.send("dir", str(directory))
                    guardian.send("tmp", tmp, str(path))
                try:
                    write(tmp)
                except OSError as error:
                    raise DataError(f"{path}: cannot be written ({error.strerror or error}). "
                                    "Fix: free disk space or choose a writable location") from None
        except BaseException:
            _remove(tmp for _, tmp in temps)
            _remove_directories(created)
            raise
        if guardian is not None:
            guardian.send("commit")
        with _locked_directories(path.parent for path, _ in temps):
            _rename_all(temps, guardian, created)
    finally:
        if guardian is not None:
            guardian.close()


@contextlib.contextmanager
def _locked_directories(directories: Any) -> Any:
    """Hold an exclusive ``flock`` on each directory (sorted, so two writers cannot deadlock)
    while renaming: two runs writing the same pair of outputs at once then leave one run's
    pair, never one run's results file with the other's per-query file. Locking the directory
    itself leaves no lock file behind; where flock is unavailable the renames go unlocked."""
    handles = []
    try:
        for directory in sorted({str(d) for d in directories}):
            try:
                handle = os.open(directory, os.O_RDONLY)
            except OSError:
                continue
            handles.append(handle)
            with contextlib.suppress(OSError, AttributeError):
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        for handle in handles:
            os.close(handle)  # closing releases the lock


def _rename_all(temps: Sequence[tuple[Path, str]], guardian: _Guardian | None, created: list[Path]) -> None:
    backups: list[tuple[Path, str | None]] = []
    pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
    index = 0
    try:
        for index, (path, tmp) in enumerate(temps):
            if index and pause > 0:
                time.sleep(pause)
            backup = None
            if path.exists():
                backup = tmp + ".old"
                os.link(path, backup)  # the previous version, to restore if this or a later rename fails
            backups.append((path, backup))  # before the rename: a failed rename's backup goes too
            os.replace(tmp, path)
    except BaseException as error:
        if guardian is not None:
            guardian.send("abort")
        for path, backup in reversed(backups):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                else:
                    os.unlink(path)
        # rename() between two links of one file does nothing: the backup of the target whose own
        # rename failed is still there.
        _remove(backup for _, backup in backups if backup is not None)
        _remove(tmp for _, tmp in temps)
        _remove_directories(created)
        if isinstance(error, OSError):
            raise DataError(f"{temps[index][0]}: cannot be written ({error.strerror or error}). "
                            "Fix: choose a writable location; nothing was written") from None
        raise
    _remove(backup for _, backup in backups if backup is not None)


def _remove(paths: Any) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _remove_directories(created: Sequence[Path]) -> None:
    for directory in reversed(created):  # deepest first; only if still empty
        with contextlib.suppress(OSError):
            directory.rmdir()


def write_together(result: Any, *, out: str | os.PathLike[str] | None,
                   per_query: str | os.PathLike[str] | None) -> Any:
    """Write a result's JSON (``out``) and per-query parquet (``per_query``) together.

    When both are written, the JSON records the per-query file (path relative to the JSON's
    directory, and sha256) so :func:`ropebench.load_results` finds it. Returns that result.
    """
    import dataclasses
    import json

    if out is None and per_query is None:
        return result
    if out is not None and per_query is not None:
        check_output_paths({"--out": out, "--per-query": per_query}, {})
    writers: list[tuple[str | os.PathLike[str], Callable[[str], None]]] = []
    if per_query is not None:
        import pyarrow.parquet as pq

        from ropebench.io.per_query import combine_tables

        table = result.per_query
        if table is None:
            raise UsageError("this result has no per-query data to write")
        # Few-shot rows (task V2P/1-shot) go into the same file, after the retrieval rows.
        table = combine_tables(table, getattr(result, "fewshot_per_query", None))
        staged: dict[str, str] = {}

        def write_parquet(tmp: str) -> None:
            pq.write_table(table, tmp)
            staged["sha256"] = sha256_file(tmp)

        writers.append((per_query, write_parquet))
    if out is not None:
        def write_json(tmp: str) -> None:
            written = result
            if per_query is not None:
                relative = os.path.relpath(Path(per_query).resolve(), Path(out).resolve().parent)
                written = dataclasses.replace(result, per_query_file={"path": Path(relative).as_posix(),
                                                                      "sha256": staged["sha256"]})
                holder["result"] = written
            with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
                handle.write(json.dumps(written.to_json(), indent=2) + "\n")
                handle.flush()
                os.fsync(handle.fileno())

        holder: dict[str, Any] = {"result": result}
        writers.append((out, write_json))
        write_files_together(writers)
        return holder["result"]
    write_files_together(writers)
    return result
