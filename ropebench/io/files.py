"""Small file helpers shared by results, leaderboards and the CLI: hashing and atomic writes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ropebench.errors import DataError, UsageError

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


def _special_kind(path: Path) -> str | None:
    """What an existing path that is neither a regular file nor absent is ("a directory",
    "a character device", …); None for a regular file or a missing path."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    return ("a named pipe" if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode) else
            "a block device" if stat.S_ISBLK(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def _refuse_special(path: Path) -> None:
    # Outputs are renamed over their target: over /dev/null (as root) that would replace the
    # device node itself with a results file, and over a pipe it would silently unlink the pipe.
    kind = _special_kind(path)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not a regular file. Fix: name a regular file (or leave the option out)")


def regular_input(path: str | os.PathLike[str], what: str, *, fix: str = "give a regular file") -> Path:
    """Check, before anything opens it, that the input ``path`` is a regular file.

    Uses ``os.stat`` only: opening a named pipe blocks until a writer appears, and reading a link
    to ``/dev/zero`` never ends. A missing path, a link loop, a directory, a pipe, a device or a
    socket raises a DataError naming ``what``, the path and ``fix``.
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        dangling = os.path.islink(path)
        raise DataError(f"{what} {path}: {'a link to a missing file' if dangling else 'no such file'}. "
                        "Fix: check the path") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DataError(f"{what} {path}: a symbolic link loop (the link points, directly or through others, "
                            "back at itself). Fix: point the link at a real file") from None
        raise DataError(f"{what} {path}: cannot be accessed ({error.strerror or error}). "
                        "Fix: check the path and its permissions") from None
    kind = _special_kind(path) if not stat.S_ISREG(mode) else None
    if kind == "a directory":
        raise DataError(f"{what} {path}: is a directory, not a file. Fix: {fix}")
    if kind is not None:
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
    add("per-query file", data.get("per_query"), here, here.parent.parent.parent)
    for key in ("submission", "manifest"):
        add(key, data.get(key), Path.cwd(), here, here.parent.parent.parent)
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
        kind = _special_kind(Path(path))
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


def _temp_beside(path: Path, created: list[Path]) -> str:
    """A new empty temporary file in ``path``'s directory (created if needed; the directories
    made are appended to ``created`` so a failure can remove them again)."""
    _refuse_special(path)
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
                tmp = _temp_beside(path, created)
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

        table = result.per_query
        if table is None:
            raise UsageError("this result has no per-query data to write")
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
