"""The leaderboard's files: finding the root, loading suites and their entries.

Layout (paths inside entries are relative to ``base``, the directory that holds the root)::

    leaderboards/README.md                      how to submit, and one generated block per suite
    leaderboards/<suite>/suite.json             entry order, label column, captions, protocol, test set
    leaderboards/<suite>/<entry>.json           one entry (schema ropebench.entry/1)
    leaderboards/<suite>/<entry>.per_query.parquet   a computed entry's per-query table (optional)

Loading reads under the root's shared lock, through an unfinished commit's journal (see
:mod:`ropebench.leaderboard.transaction`), only inside the root and only regular files. A file
of the suite's directory that ``suite.json`` does not list (an *orphan*) does not stop the
suite from loading: it is listed in :attr:`Suite.orphans`, and ``verify`` reports it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ropebench
from ropebench.errors import DataError, UsageError
from ropebench.leaderboard import paths
from ropebench.leaderboard.schema import NAME_PATTERN, check_entry, check_suite
from ropebench.leaderboard.transaction import pending, shared
from ropebench.render.tables import DEFAULT_METRICS, Table, matrix_table, task_table

__all__ = ["Suite", "find_root", "suite_names", "load_suite", "read_suite", "suite_tables", "entry_matrix",
           "read_json", "base_of", "README", "SUITE_FILE", "PER_QUERY_SUFFIX", "View", "check_suite_name"]

README = "README.md"
SUITE_FILE = "suite.json"
PER_QUERY_SUFFIX = ".per_query.parquet"
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9:._-]")


def find_root(root: str | os.PathLike[str] | None = None, *, for_writing: bool = False) -> Path:
    """The ``leaderboards`` directory: ``root`` if given, else ``./leaderboards`` when the current
    directory has one, else the copy beside the package's source checkout (an editable install),
    else (for reading only) ``<sys.prefix>/share/ropebench/leaderboards``.

    ``for_writing``: only ``./leaderboards``; a copy found beside the package or installed with
    it is never changed from elsewhere. A lab keeps its own root (``ropebench leaderboard init
    SUITE --root DIR``).
    """
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            what = "a file, not a directory" if path.exists() else "no such directory"
            raise UsageError(f"--root {root}: {what}. Fix: pass the leaderboards/ directory, or create one with "
                             "`ropebench leaderboard init SUITE --root DIR`")
        return path
    candidates = [Path("leaderboards")]
    if not for_writing:  # a change goes where the user is, never to a copy found elsewhere
        candidates += [Path(ropebench.__file__).resolve().parents[1] / "leaderboards",
                       Path(sys.prefix) / "share" / "ropebench" / "leaderboards"]
    for path in candidates:
        if (path / README).is_file() or any(path.glob(f"*/{SUITE_FILE}")):
            return path
    if for_writing:
        raise UsageError("no leaderboards/ directory here to change (copies found beside or installed with "
                         "ropebench are never changed from elsewhere): run from your repository, pass --root "
                         "DIR, or create a suite of your own with `ropebench leaderboard init SUITE --root DIR`")
    raise UsageError("no leaderboards/ directory found (looked in ./leaderboards, beside the "
                     "ropebench source and in <prefix>/share/ropebench): run from a ropebench "
                     "checkout or pass --root DIR")


def base_of(root: Path) -> Path:
    """The directory holding the root: paths inside entries are relative to it."""
    return Path(os.path.abspath(root)).parent


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file (a regular file, at most 64 MiB, not nested absurdly deep); DataError
    naming the file and the position on failure."""
    return paths.read_json(path)


def check_suite_name(name: str) -> None:
    """UsageError unless ``name`` can be a suite (a directory of the root: no '/', no '..')."""
    if not NAME_PATTERN.match(name):
        raise UsageError(f"suite {name!r}: a suite name is a directory name of 1 to 100 lower-case letters, digits, "
                         "'.', '_' and '-' (starting with a letter or digit). Fix: e.g. my-test-set")


class View:
    """The root as readers see it: through an unfinished commit's journal, inside the root only."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.moves = pending(root)

    def source(self, path: Path) -> Path | None:
        """Where the current content of ``path`` is (None: it does not exist)."""
        if path in self.moves:
            temp = self.moves[path]
            if temp is None:
                return None
            if temp.exists():
                return temp
        return path if os.path.lexists(path) else None

    def exists(self, path: Path) -> bool:
        return self.source(path) is not None

    def read_json(self, path: Path, what: str) -> Any:
        source = self.source(path)
        if source is None:
            raise DataError(f"{path}: no such file")
        paths.confined(path, self.root, what)
        return paths.read_json(source, what=what, top=self.root)

    def read_text(self, path: Path, what: str) -> str | None:
        source = self.source(path)
        if source is None:
            return None
        paths.confined(path, self.root, what)
        data = paths.read_bytes(source, what, limit=None)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None

    def names(self, directory: Path) -> set[str]:
        """File names in ``directory``, pending additions included and deletions excluded."""
        try:
            found = {p.name for p in directory.iterdir()}
        except OSError:
            found = set()
        found |= {t.name for t, temp in self.moves.items() if t.parent == directory and temp is not None}
        return {name for name in found if self.exists(directory / name)}


@dataclass(frozen=True)
class Suite:
    """A suite as loaded: its spec (suite.json), its entries in declared order, and the files of
    its directory that suite.json does not list (orphans, reported by verify)."""

    name: str
    directory: Path
    spec: Mapping[str, Any]
    entries: tuple[Mapping[str, Any], ...]
    orphans: tuple[str, ...] = ()

    @property
    def label_column(self) -> str:
        return str(self.spec["label_column"])

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(self.spec.get("metrics") or DEFAULT_METRICS)

    def entry(self, name: str) -> Mapping[str, Any]:
        for entry in self.entries:
            if entry["name"] == name:
                return entry
        raise UsageError(f"suite {self.name!r} has no entry {name!r}: entries are "
                         f"{', '.join(e['name'] for e in self.entries) or '(none)'}")


def suite_names(root: Path) -> list[str]:
    """Every suite under ``root`` (a directory holding suite.json), sorted."""
    view = View(root)
    try:
        directories = [d for d in root.iterdir() if NAME_PATTERN.match(d.name)]
    except OSError:
        return []
    return sorted(d.name for d in directories if view.exists(d / SUITE_FILE))


def _orphans(view: View, directory: Path, listed: list[str], where: Path) -> list[str]:
    wanted = {f"{n}.json" for n in listed} | {f"{n}{PER_QUERY_SUFFIX}" for n in listed} | {SUITE_FILE}
    return [f"{directory / name}: not listed in {where} 'entries' (left by an interrupted change or copied "
            "by hand): add its name to 'entries' or delete the file"
            for name in sorted(view.names(directory))
            if (name.endswith(".json") or name.endswith(PER_QUERY_SUFFIX)) and not name.startswith(".")
            and name not in wanted]


def read_suite(root: Path, name: str, *, view: View | None = None) -> tuple[Suite | None, list[str]]:
    """Load a suite, collecting every problem instead of stopping at the first (orphan files are
    not problems here: they are in the returned suite's ``orphans``)."""
    if view is None:
        with shared(root):
            return read_suite(root, name, view=View(root))
    check_suite_name(name)
    directory = root / name
    spec_path = directory / SUITE_FILE
    if not view.exists(spec_path):
        return None, [f"{spec_path}: no such suite file (known suites: "
                      f"{', '.join(suite_names(root)) or 'none'})"]
    try:
        spec = view.read_json(spec_path, "suite file")
    except DataError as error:
        return None, [str(error)]
    problems = [f"{spec_path}: {p}" for p in check_suite(spec)]
    if problems:
        return None, problems
    if spec["name"] != name:
        problems.append(f"{spec_path}: 'name' is {spec['name']!r} but the directory is {name!r}")
    entries = []
    for entry_name in spec["entries"]:
        path = directory / f"{entry_name}.json"
        try:
            entry = view.read_json(path, "entry file")
        except DataError as error:
            problems.append(str(error) + f" (listed in {spec_path})")
            continue
        found = [f"{path}: {p}" for p in check_entry(entry)]
        if not found and entry["name"] != entry_name:
            found.append(f"{path}: 'name' is {entry['name']!r}, the file name says {entry_name!r}")
        if not found and entry["suite"] != name:
            found.append(f"{path}: 'suite' is {entry['suite']!r}, the directory says {name!r}")
        problems += found
        if not found:
            entries.append(entry)
    labels = [entry["label"] for entry in entries]
    problems += [f"{spec_path}: label {label!r} is used by more than one entry"
                 for label in sorted(set(labels)) if labels.count(label) > 1]
    orphans = _orphans(view, directory, spec["entries"], spec_path)
    return Suite(name, directory, spec, tuple(entries), tuple(orphans)), problems


def load_suite(root: Path, name: str, *, view: View | None = None) -> Suite:
    """Load a suite; DataError listing every problem when anything is invalid (orphan files of
    its directory are not: they stay out of the tables and ``verify`` reports them)."""
    check_suite_name(name)
    if view is None:
        with shared(root):
            return load_suite(root, name, view=View(root))
    if not view.exists(root / name / SUITE_FILE):
        raise UsageError(f"unknown suite {name!r} in {root}: known suites are "
                         f"{', '.join(suite_names(root)) or 'none'}. Fix: use one of those, pass the --root that "
                         f"holds it, or create it with `ropebench leaderboard init {name} --root {root}`")
    suite, problems = read_suite(root, name, view=view)
    if problems or suite is None:
        raise DataError(f"suite {name!r} is invalid:\n  - " + "\n  - ".join(problems))
    return suite


def _safe_key(table: Table) -> Table:
    """A table whose key (LaTeX ``\\label``, HTML ``id``) holds only ``A-Za-z0-9:._-``: keys are
    built from names, and a name may come from any file name (``table --entry my#1.json``)."""
    return replace(table, key=_UNSAFE_KEY.sub("-", table.key))


def suite_tables(suite: Suite, which: str = "all") -> list[Table]:
    """Table 1 and/or Table 2 of a suite (``which``: ``1``, ``2`` or ``all``)."""
    captions = suite.spec.get("captions", {})
    tables = [task_table(suite.entries, kind, metrics=suite.metrics,
                         label_column=suite.label_column, caption=captions.get(kind),
                         key=suite.name)
              for kind in ("1", "2") if which in (kind, "all")]
    return [_safe_key(table) for table in tables if table.rows]


def entry_matrix(suite: Suite, entry: Mapping[str, Any], metric: str) -> Table:
    """The 3×3 domain matrix of one entry."""
    return _safe_key(matrix_table(entry["results"], metric=metric, entry=entry["name"],
                                  label=entry["label"], label_column=suite.label_column, key=suite.name))
