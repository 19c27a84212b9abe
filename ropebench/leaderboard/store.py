"""The leaderboard's files: finding the root, loading suites and entries, adding an entry.

Layout (paths inside entries are relative to ``base``, the directory that holds ``leaderboards/``)::

    leaderboards/README.md              schema, how to submit, and one generated block per suite
    leaderboards/<suite>/suite.json     entry order, label column, captions, expected protocol
    leaderboards/<suite>/<entry>.json   one entry (schema ropebench.entry/1)

The rendered leaderboard of a suite is the block of ``leaderboards/README.md`` between
``<!-- BEGIN ropebench leaderboard: <suite> ... -->`` and ``<!-- END ropebench leaderboard:
<suite> -->``; ``add`` and ``render`` rewrite it, ``verify`` compares it byte for byte.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ropebench
from ropebench.leaderboard.schema import ENTRY_SCHEMA, NAME_PATTERN, check_entry, check_results, check_suite
from ropebench.errors import DataError, UsageError
from ropebench.io.files import atomic_write_text, sha256_file
from ropebench.render.tables import DEFAULT_METRICS, Table, matrix_table, task_table

__all__ = ["Suite", "find_root", "suite_names", "load_suite", "read_suite", "suite_tables", "entry_matrix",
           "add_entry", "read_json", "manifest_problems", "README", "SUITE_FILE"]

README = "README.md"
SUITE_FILE = "suite.json"


def find_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The ``leaderboards`` directory: ``root`` if given, else ``./leaderboards`` when the current
    directory has one, else the copy beside the package's source checkout (an editable install),
    else ``<sys.prefix>/share/ropebench/leaderboards``."""
    if root is not None:
        path = Path(root)
        if not path.is_dir():
            raise UsageError(f"--root {root}: no such directory (pass the leaderboards/ directory)")
        return path
    candidates = [Path("leaderboards"),
                  Path(ropebench.__file__).resolve().parents[1] / "leaderboards",
                  Path(sys.prefix) / "share" / "ropebench" / "leaderboards"]
    for path in candidates:
        if (path / README).is_file() or any(path.glob(f"*/{SUITE_FILE}")):
            return path
    raise UsageError("no leaderboards/ directory found (looked in ./leaderboards, beside the "
                     "ropebench source and in <prefix>/share/ropebench): run from a ropebench "
                     "checkout or pass --root DIR")


def read_json(path: Path) -> Any:
    """Parse a JSON file; DataError naming the file and the position on failure."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    except OSError as error:  # a directory, no permission, ...
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class Suite:
    """A suite as loaded: its spec (suite.json) and its entries in declared order."""

    name: str
    directory: Path
    spec: Mapping[str, Any]
    entries: tuple[Mapping[str, Any], ...]

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
    return sorted(path.parent.name for path in root.glob(f"*/{SUITE_FILE}"))


def read_suite(root: Path, name: str) -> tuple[Suite | None, list[str]]:
    """Load a suite, collecting every problem instead of stopping at the first."""
    directory = root / name
    spec_path = directory / SUITE_FILE
    if not spec_path.is_file():
        return None, [f"{spec_path}: no such suite file (known suites: "
                      f"{', '.join(suite_names(root)) or 'none'})"]
    try:
        spec = read_json(spec_path)
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
            entry = read_json(path)
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
    listed = {f"{n}.json" for n in spec["entries"]} | {SUITE_FILE}
    problems += [f"{path}: not listed in {spec_path} 'entries'"
                 for path in sorted(directory.glob("*.json")) if path.name not in listed]
    labels = [entry["label"] for entry in entries]
    problems += [f"{spec_path}: label {label!r} is used by more than one entry"
                 for label in sorted(set(labels)) if labels.count(label) > 1]
    return Suite(name, directory, spec, tuple(entries)), problems


def load_suite(root: Path, name: str) -> Suite:
    """Load a suite; DataError listing every problem when anything is invalid."""
    if not (root / name / SUITE_FILE).is_file():
        raise UsageError(f"unknown suite {name!r} in {root}: known suites are "
                         f"{', '.join(suite_names(root)) or 'none'}")
    suite, problems = read_suite(root, name)
    if problems or suite is None:
        raise DataError(f"suite {name!r} is invalid:\n  - " + "\n  - ".join(problems))
    return suite


def suite_tables(suite: Suite, which: str = "all") -> list[Table]:
    """Table 1 and/or Table 2 of a suite (``which``: ``1``, ``2`` or ``all``)."""
    captions = suite.spec.get("captions", {})
    tables = [task_table(suite.entries, kind, metrics=suite.metrics,
                         label_column=suite.label_column, caption=captions.get(kind),
                         key=suite.name)
              for kind in ("1", "2") if which in (kind, "all")]
    return [table for table in tables if table.rows]


def entry_matrix(suite: Suite, entry: Mapping[str, Any], metric: str) -> Table:
    """The 3×3 domain matrix of one entry."""
    return matrix_table(entry["results"], metric=metric, entry=entry["name"],
                        label=entry["label"], label_column=suite.label_column, key=suite.name)


# ------------------------------------------------------------------------------------- add


def _locate(recorded: str, override: str | None, results_path: Path, what: str) -> Path:
    """The file a results file refers to: ``override``, else its recorded path taken as is,
    relative to the current directory, then to the results file's directory."""
    candidates = [Path(override)] if override else [Path(recorded), results_path.parent / recorded]
    for path in candidates:
        if path.exists():
            return path
    option = f"--{what}"
    raise DataError(f"{results_path}: {what} {recorded!r} not found (tried "
                    f"{', '.join(map(str, candidates))}); pass {option} PATH")


def _relative(path: Path, base: Path, what: str) -> str:
    try:
        return path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        raise DataError(f"{what} {path} is outside {base.resolve()}, the directory holding "
                        "leaderboards/: copy it there (verify re-evaluates it from its path) "
                        f"and pass --{what} with the copy") from None


def add_entry(
    results_path: str | os.PathLike[str],
    *,
    root: Path,
    suite: str,
    name: str,
    label: str,
    description: str = "",
    source: str | None = None,
    label_latex: str | None = None,
    submission: str | None = None,
    manifest: str | None = None,
    force: bool = False,
) -> Path:
    """Add (or with ``force`` replace) a computed entry from a results file; return its path.

    Refuses, naming the field: a results file that is not valid, a protocol other than the
    suite's (metric, ties, ks, non-exact search), a manifest other than the suite's (sha256),
    referenced files that changed since evaluation or lie outside the repository.
    """
    results_path = Path(results_path)
    spec = load_suite(root, suite)
    if not NAME_PATTERN.match(name):
        raise UsageError(f"--name {name!r}: use lower-case letters, digits, '.', '_' and '-'")
    if not label.strip():
        raise UsageError("--label must not be empty: it is the row label in the tables")
    target = spec.directory / f"{name}.json"
    if target.exists() and not force:
        raise UsageError(f"{target} exists: pass --force to replace entry {name!r} of {suite!r}")
    results = read_json(results_path)
    problems = check_results(results)
    if problems:
        raise DataError(f"{results_path}: not a usable results file:\n  - "
                        + "\n  - ".join(problems))
    problems = [f"protocol.{key}: the results have {results['protocol'].get(key)!r}, suite "
                f"{suite!r} requires {want!r}"
                for key, want in spec.spec["protocol"].items()
                if results["protocol"].get(key) != want]
    if results["protocol"].get("search") != "exact" and "search" not in spec.spec["protocol"]:
        problems.append(f"protocol.search: the results have {results['protocol'].get('search')!r}; "
                        "leaderboard entries need exact search")
    clash = [e["name"] for e in spec.entries if e["label"] == label and e["name"] != name]
    if clash:
        # Checked before anything is written: a duplicate label would leave a suite that no
        # longer loads (the entry file and suite.json written, the rendering refused).
        problems.append(f"label {label!r} is already used by entry {clash[0]!r}: choose another --label")
    base = root.parent
    files: dict[str, dict[str, Any] | None] = {"manifest": None}
    for what, override in (("submission", submission), ("manifest", manifest)):
        recorded = results[what]
        if recorded is None:
            continue
        path = _locate(str(recorded["path"]), override, results_path, what)
        digest = sha256_file(path)
        if digest != recorded["sha256"]:
            problems.append(f"{what} {path}: sha256 on disk {digest} differs from "
                            f"{recorded['sha256']} in the results: re-run evaluate")
        extra = {k: recorded[k] for k in ("n_items", "dim", "dtype") if k in recorded}
        files[what] = {"path": _relative(path, base, what), "sha256": digest, **extra}
    problems += manifest_problems(spec, base, files["manifest"], replacing=name)
    if problems:
        raise DataError(f"{results_path}: cannot be added to suite {suite!r}:\n  - "
                        + "\n  - ".join(problems))
    version = results.get("ropebench_version", ropebench.__version__)
    entry: dict[str, Any] = {
        "schema": ENTRY_SCHEMA, "name": name, "label": label,
        **({"label_latex": label_latex} if label_latex else {}),
        "suite": suite, "description": description or f"{label} ({name})",
        "source": source or f"computed by ropebench {version}", "kind": "computed",
        "protocol": results["protocol"], "submission": files["submission"],
        "manifest": files["manifest"], "ropebench_version": version,
        "created": results.get("created", ""), "results": results["tasks"],
    }
    if not entry["created"]:
        del entry["created"]
    atomic_write_text(target, _dumps(entry))
    if name not in spec.spec["entries"]:
        atomic_write_text(spec.directory / SUITE_FILE,
                          _dumps({**spec.spec, "entries": [*spec.spec["entries"], name]}))
    from ropebench.leaderboard.readme import render_readme

    render_readme(root, [suite])
    return target


def manifest_problems(suite: Suite, base: Path, manifest: Mapping[str, Any] | None,
                       *, replacing: str | None = None) -> list[str]:
    """A computed entry must use the suite's manifest: the declared file, or, when the suite
    declares none, the manifest of its other computed entries."""
    got = manifest["sha256"] if manifest else None
    declared = suite.spec.get("manifest")
    if declared:
        path = base / declared
        want = sha256_file(path) if path.exists() else None
        if want is None:
            return [f"suite {suite.name!r} declares manifest {declared}, which does not exist"]
        if got != want:
            return [f"manifest: the results were evaluated against sha256 {got}, suite "
                    f"{suite.name!r} uses {declared} (sha256 {want})"]
        return []
    others = {e["manifest"]["sha256"] if e.get("manifest") else None: e["name"]
              for e in suite.entries if e["kind"] == "computed" and e["name"] != replacing}
    if others and got not in others:
        return [f"manifest: sha256 {got} differs from the manifest of entry "
                f"{next(iter(others.values()))!r} of suite {suite.name!r}"]
    return []


