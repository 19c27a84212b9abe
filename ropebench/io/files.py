"""Small file helpers shared by results, leaderboards and the CLI: hashing and atomic writes."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ropebench.errors import DataError, UsageError

__all__ = ["sha256_file", "atomic_write_text", "atomic_write_with", "writable_directory", "check_output_paths",
           "write_together", "same_file"]


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


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when two paths name the same file or directory (links and ``..`` resolved), or one
    lies inside the other (an output inside a directory input would change that input)."""
    pa_, pb = Path(a), Path(b)
    try:
        if pa_.exists() and pb.exists() and os.path.samefile(pa_, pb):
            return True
    except OSError:
        pass
    ra, rb = pa_.resolve(), pb.resolve()
    return ra == rb or rb in ra.parents or ra in rb.parents


def check_output_paths(outputs: Mapping[str, str | os.PathLike[str] | None],
                       inputs: Mapping[str, str | os.PathLike[str] | None]) -> None:
    """Refuse, before any work, an output path that is an input or another output.

    Args:
        outputs: option name -> path (None = not written), e.g. ``{"--out": "r.json"}``.
        inputs: what each input is -> path, e.g. ``{"submission": "s.parquet"}``.

    Raises:
        UsageError: naming both options and the path; nothing has been written.
    """
    problems = []
    given = [(name, path) for name, path in outputs.items() if path is not None]
    for name, path in given:
        if Path(path).is_dir():
            problems.append(f"{name} {path} is a directory. Fix: name a file")
        for what, source in inputs.items():
            if source is not None and same_file(path, source):
                problems.append(f"{name} {path} is the {what} {source}: writing it would destroy the input. "
                                "Fix: choose another output path")
    for i, (name, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_file(path, other_path):
                problems.append(f"{name} and {other} both name {path}: one would replace the other. "
                                "Fix: give each output its own path")
    if problems:
        raise UsageError("refused before any work, nothing written:\n  - " + "\n  - ".join(problems))


def _temp_beside(path: Path) -> str:
    writable_directory(path.parent)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise DataError(f"{path}: cannot be written ({error.strerror or error}). "
                        "Fix: choose a path in a writable directory") from None
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def write_files_together(writers: Sequence[tuple[str | os.PathLike[str], Callable[[str], None]]]) -> None:
    """Write several files as one step: each ``write(tmp)`` fills a temporary file beside its
    target; only when every one succeeded are they renamed, in the given order. On a failure
    (including a failed rename) the temporary files are removed and targets already renamed
    are put back as they were, so either every file is new or none is."""
    temps: list[tuple[Path, str]] = []
    try:
        for target, write in writers:
            path = Path(target)
            tmp = _temp_beside(path)
            temps.append((path, tmp))
            try:
                write(tmp)
            except OSError as error:
                raise DataError(f"{path}: cannot be written ({error.strerror or error}). "
                                "Fix: free disk space or choose a writable location") from None
    except BaseException:
        for _, tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    backups: list[tuple[Path, str | None]] = []
    try:
        for path, tmp in temps:
            backup = None
            if path.exists():
                backup = tmp + ".old"
                os.link(path, backup)  # the previous version, to restore if a later rename fails
            os.replace(tmp, path)
            backups.append((path, backup))
    except BaseException:
        for path, backup in reversed(backups):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                else:
                    os.unlink(path)
        for _, tmp in temps:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    for _, backup in backups:
        if backup is not None:
            with contextlib.suppress(OSError):
                os.unlink(backup)


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
