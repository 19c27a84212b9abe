"""``ropebench leaderboard verify``: every entry checked, computed entries re-evaluated, the
rendered leaderboard compared byte for byte."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ropebench
from ropebench.errors import UsageError
from ropebench.io.files import sha256_file
from ropebench.leaderboard.readme import rendered_block
from ropebench.leaderboard.schema import COUNTS
from ropebench.leaderboard.store import README, SUITE_FILE, manifest_problems, read_suite, suite_names

__all__ = ["VerifyReport", "verify"]


@dataclass
class VerifyReport:
    """What ``verify`` found: every problem (empty = ok) and what it checked."""

    problems: list[str] = field(default_factory=list)
    suites: int = 0
    entries: int = 0
    computed: int = 0
    cells: int = 0
    counts: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"ok: {self.suites} suite(s), {self.entries} entries ({self.computed} computed "
                f"re-evaluated, {self.entries - self.computed} published schema-checked); "
                f"{self.cells} metric cells re-checked within one query's worth "
                f"(100/n_queries percentage points) and {self.counts} counts exactly; "
                "rendered leaderboards up to date")


def _api_evaluate() -> Any:
    # Looked up at call time on the package, the public API, so tests can replace it.
    return ropebench.evaluate


def _recheck(entry: Mapping[str, Any], base: Path, where: str, report: VerifyReport) -> None:
    """Check the files of a computed entry, re-evaluate it and compare every cell."""
    paths, usable = {}, True
    for what in ("submission", "manifest"):
        ref = entry.get(what)
        if ref is None:
            continue
        path = base / ref["path"]
        if not path.exists():
            report.problems.append(f"{where}: {what} {ref['path']} does not exist")
            usable = False
            continue
        digest = sha256_file(path)
        if digest != ref["sha256"]:
            report.problems.append(f"{where}: {what} {ref['path']} sha256 mismatch: entry "
                                   f"records {ref['sha256']}, file has {digest}")
            usable = False
        paths[what] = path
    if not usable:
        return  # numbers from other files would say nothing about this entry
    protocol = entry["protocol"]
    try:
        fresh = _api_evaluate()(
            str(paths["submission"]), manifest=str(paths["manifest"]) if "manifest" in paths
            else None, metric=protocol["metric"], ties=protocol["ties"], ks=tuple(protocol["ks"]),
            tasks=list(entry["results"])).to_json()
    except ropebench.RopebenchError as error:
        report.problems.append(f"{where}: re-evaluation failed: {error}")
        return
    for key in ("group_exclusion", "search"):
        if fresh["protocol"].get(key) != protocol.get(key):
            report.problems.append(f"{where}: protocol.{key}: stored {protocol.get(key)!r}, "
                                   f"recomputed {fresh['protocol'].get(key)!r}")
    for task, stored in entry["results"].items():
        again = fresh["tasks"].get(task)
        if again is None:
            report.problems.append(f"{where}: {task}: stored, but not recomputed")
            continue
        tolerance = 100.0 / stored["n_queries"]
        for key, value in stored.items():
            if key in COUNTS:
                report.counts += 1
                if again.get(key) != value:
                    report.problems.append(f"{where}: {task} {key}: stored {value}, "
                                           f"recomputed {again.get(key)}")
                continue
            report.cells += 1
            if again.get(key) is None or abs(again[key] - value) > tolerance * (1 + 1e-9):
                report.problems.append(
                    f"{where}: {task} {key}: stored {value:.6f}, recomputed "
                    + ("missing" if again.get(key) is None else f"{again[key]:.6f}")
                    + f" (tolerance {tolerance:.6f} = 100/{stored['n_queries']} queries)")


def verify(root: Path, names: Sequence[str] | None = None) -> VerifyReport:
    """Check suites (default: all): schema, files and sha256, re-evaluation of computed entries,
    and the README's rendered blocks. Published entries are never re-evaluated."""
    report = VerifyReport()
    unknown = [n for n in names or () if not (root / n / SUITE_FILE).is_file()]
    if unknown:  # bad input, not a failed check: exit 2 rather than 1
        raise UsageError(f"unknown suite {', '.join(map(repr, unknown))}: known suites are "
                         f"{', '.join(suite_names(root)) or 'none'}")
    if not names:
        names = suite_names(root)
        report.problems += [f"{d}: a directory without {SUITE_FILE}" for d in sorted(root.iterdir())
                            if d.is_dir() and not (d / SUITE_FILE).exists()]
        if not names:
            report.problems.append(f"{root}: no suite (a directory with {SUITE_FILE})")
    readme = root / README
    text = readme.read_text(encoding="utf-8") if readme.is_file() else None
    for name in names:
        suite, problems = read_suite(root, name)
        report.problems += problems
        if suite is None:
            continue
        report.suites += 1
        for entry in suite.entries:
            report.entries += 1
            if entry["kind"] != "computed":
                continue
            report.computed += 1
            where = f"{name}/{entry['name']}"
            report.problems += [f"{where}: {p}" for p in
                                manifest_problems(suite, root.parent, entry["manifest"],
                                                   replacing=entry["name"])]
            _recheck(entry, root.parent, where, report)
        if problems:
            continue  # the fresh rendering would lack the broken entries anyway
        fresh = rendered_block(suite)
        if text is None:
            report.problems.append(f"{readme}: missing; run `ropebench leaderboard render`")
        elif fresh not in text:
            report.problems.append(
                f"{readme}: the rendered leaderboard of suite {name!r} differs from a fresh "
                "rendering (or is missing); run `ropebench leaderboard render` and commit it")
    return report
