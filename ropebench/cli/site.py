"""Command ``ropebench leaderboard site``: the leaderboard as a static site.

A thin adapter over :func:`ropebench.leaderboard.site.build_site`; attached to the
``leaderboard`` group. Prints every file written on stdout; bad input raises
:class:`~ropebench.errors.RopebenchError` (the main group prints it and exits 2).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

__all__ = ["site"]


@click.command("site")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Directory of the site (created; replaced only if an earlier build made it).")
@click.option("--root", type=click.Path(), default=None,
              help="The leaderboards/ directory [default: ./leaderboards if present, else the copy "
                   "shipped with ropebench].")
@click.option("--no-plots", is_flag=True, help="Leave out the figures (they need the extra ropebench[plot]).")
def site(out: Path, root: str | None, no_plots: bool) -> None:
    """Write the leaderboard as a static site to --out: an index of suites and one page per suite.

    Each suite's page has Table 1, Table 2 and every entry's domain matrix (sortable by any
    column), the plots (with matplotlib installed) and each entry's provenance. The pages load
    nothing from the network: copy the directory to any static host.

    \b
    Example:
      ropebench leaderboard site --out site
      python -m http.server --directory site 8000    # then open http://127.0.0.1:8000/
    """
    from ropebench.errors import DataError
    from ropebench.leaderboard import find_root
    from ropebench.leaderboard.site import build_site

    _check_out(out)
    leaderboards = find_root(root)
    _check_not_replacing(out, leaderboards)
    try:
        with _building(out):
            written = build_site(leaderboards, out, plots=not no_plots)
    except OSError as error:  # a full disk, a permission taken away while building: the old site stays
        raise DataError(f"--out {out}: the site could not be written ({error.strerror or error}); the previous "
                        "site, if any, is unchanged. Fix: free disk space or choose a writable directory") from None
    for path in written:
        click.echo(str(path))


def _check_out(out: Path) -> None:
    """Refuse, before building, an --out the site cannot be moved into: the current directory or
    one above it, a symbolic link (dangling or not: the rename would replace the link, not its
    target), a file, or a place below a file or without write permission."""
    import os

    from ropebench.errors import UsageError
    from ropebench.io.safety import unwritable_parent

    here, target = Path.cwd().resolve(), Path(os.path.realpath(out))
    if target == here or target in here.parents or not out.name or out.name in (".", ".."):
        raise UsageError(f"--out {out}: is the current directory or one above it; the site is built beside --out "
                         "and then moved into place, which cannot replace a directory you are in. Fix: name a "
                         "new directory, e.g. --out site")
    if out.is_symlink():
        state = "a dangling symbolic link" if not out.exists() else "a symbolic link"
        raise UsageError(f"--out {out}: is {state} ({os.readlink(out)}); moving the site into place would replace the "
                         "link itself. Fix: name a plain directory, or remove the link")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a directory. Fix: name a directory, e.g. --out site")
    blocked = unwritable_parent(out)
    if blocked is not None:
        why = "not a directory" if blocked.exists() and not blocked.is_dir() else "not writable"
        raise UsageError(f"--out {out}: cannot be created or replaced ({blocked} is {why}). Fix: choose a "
                         "directory in a writable place")


def _check_not_replacing(out: Path, leaderboards: Path) -> None:
    """The site never replaces the leaderboard it shows, nor a directory an earlier build did not make."""
    import os

    from ropebench.errors import UsageError
    from ropebench.leaderboard.site import MARKER

    root_real, out_real = Path(os.path.realpath(leaderboards)), Path(os.path.realpath(out))
    if out_real == root_real or out_real in root_real.parents or root_real in out_real.parents:
        raise UsageError(f"--out {out}: the site cannot be written over or inside the leaderboard ({leaderboards}). "
                         "Fix: choose a directory outside it, e.g. --out site")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError(f"--out {out}: a non-empty directory that `ropebench leaderboard site` did not build; it is "
                         "not replaced. Fix: choose a new or empty directory, e.g. --out site")


@contextlib.contextmanager
def _building(out: Path) -> Iterator[None]:
    """Hold a lock on --out's parent while building, and first remove what a killed build left.

    A build stages the site in ``.<out>.<12 hex>.tmp`` beside --out (and moves the old site to
    ``.<out>.<12 hex>.old``) before renaming it into place; a build killed half-way leaves that
    directory behind. Builds from this command take the lock, so one found while holding it
    belongs to no running build and is removed.
    """
    import os
    import re
    import shutil

    try:
        import fcntl
    except ImportError:  # no flock here: without the lock a staging directory may be another build's
        yield
        return
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        yield
        return
    handle = os.open(parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        stale = re.compile(rf"\.{re.escape(out.name)}\.[0-9a-f]{{12}}\.(?:tmp|old)\Z")
        for entry in parent.iterdir():
            if stale.match(entry.name) and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
        yield
    finally:
        os.close(handle)  # releases the lock
