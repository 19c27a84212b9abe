"""``ropebench leaderboard verify``: every entry checked, computed entries re-evaluated, the
rendered leaderboard compared byte for byte.

What is checked, per suite: the suite file and every entry against the schema; files of the
suite's directory that ``suite.json`` does not list (orphans); the suite's declared manifest
(its sha256); for every computed entry, the test set it was computed on against the suite's
declaration, its files (inside the directory holding the root, regular, sha256), its stored
per-query file (sha256, one row per scored query, per-task means equal to the stored numbers),
and a re-evaluation that must reproduce every stored cell within one query's worth and every
count exactly; finally the README block against a fresh rendering.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ropebench
from ropebench.errors import DataError, UsageError
from ropebench.io.files import sha256_file
from ropebench.leaderboard import paths
from ropebench.leaderboard.integrity import ComputedOn, items_from_tasks, labels_summary, test_set_problems
from ropebench.leaderboard.readme import rendered_block
from ropebench.leaderboard.schema import COUNTS
from ropebench.leaderboard.store import (
    README,
    SUITE_FILE,
    Suite,
    View,
    base_of,
    check_suite_name,
    read_suite,
    suite_names,
)
from ropebench.leaderboard.transaction import shared

__all__ = ["VerifyReport", "verify"]

_MEAN_TOLERANCE = 1e-6  # per-query means against stored numbers: the same floats, summed in another order


@dataclass
class VerifyReport:
    """What ``verify`` found: every problem (empty = ok) and what it checked."""

    problems: list[str] = field(default_factory=list)
    suites: int = 0
    entries: int = 0
    computed: int = 0
    cells: int = 0
    counts: int = 0
    per_query: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        return (f"ok: {self.suites} suite(s), {self.entries} entries ({self.computed} computed "
                f"re-evaluated, {self.entries - self.computed} published schema-checked); "
                f"{self.cells} metric cells re-checked within one query's worth "
                f"(100/n_queries percentage points) and {self.counts} counts exactly; "
                + (f"{self.per_query} per-query file(s) checked; " if self.per_query else "")
                + "test sets as declared; rendered leaderboards up to date")


def _api_evaluate() -> Any:
    # Looked up at call time on the package, the public API, so tests can replace it.
    return ropebench.evaluate


def _data_file(ref: Mapping[str, Any], base: Path, top: Path, what: str, where: str,
               report: VerifyReport) -> Path | None:
    """The checked path of a file an entry refers to, or None (problem reported)."""
    path = base / ref["path"]
    try:
        paths.confined(path, top, what)
        if not path.exists():
            report.problems.append(
                f"{where}: {what} {ref['path']} is not at {path} (verify re-evaluates computed entries from "
                f"their files, found relative to {base}, the directory holding the leaderboard). Fix: put "
                f"the file there (sha256 {ref['sha256']}), or run verify where it is")
            return None
        if what == "submission":
            paths.check_tree(path, top, what)
        else:
            paths.check_regular(path, what)
        digest = sha256_file(path)
    except DataError as error:
        report.problems.append(f"{where}: {error}")
        return None
    if digest != ref["sha256"]:
        report.problems.append(f"{where}: {what} {ref['path']} sha256 mismatch: entry records "
                               f"{ref['sha256']}, file has {digest}")
        return None
    return path


def _check_per_query(entry: Mapping[str, Any], path: Path, where: str, report: VerifyReport) -> None:
    """The stored per-query table must hold one row per scored query, with the stored means."""
    import pyarrow.compute as pc

    from ropebench.io.parquet import read_parquet

    try:
        table = read_parquet(path)
    except DataError as error:
        report.problems.append(f"{where}: {error}")
        return
    report.per_query += 1
    if "task" not in table.column_names:
        report.problems.append(f"{where}: per-query file {path} has no 'task' column")
        return
    for task, stored in entry["results"].items():
        rows = table.filter(pc.equal(table.column("task"), task))
        if rows.num_rows != stored["n_queries"]:
            report.problems.append(f"{where}: per-query file: {task} has {rows.num_rows} rows, the entry "
                                   f"{stored['n_queries']} scored queries")
            continue
        for key, value in stored.items():
            if key in COUNTS or key not in rows.column_names or value is None:
                continue
            mean = pc.mean(rows.column(key)).as_py()
            if mean is None or abs(mean - value) > _MEAN_TOLERANCE:
                report.problems.append(f"{where}: per-query file: {task} {key} averages {mean}, the entry "
                                       f"stores {value}")


def _test_set(suite: Suite, entry: Mapping[str, Any], labels: Path | None, where: str,
              report: VerifyReport) -> None:
    items, problems = items_from_tasks(entry["results"])
    products = None
    if labels is not None:
        try:
            _, products = labels_summary(labels, "manifest" if entry.get("manifest") else "submission")
        except DataError as error:
            problems.append(str(error))
    recorded = entry.get("test_set")
    if recorded is not None and products is not None and recorded.get("products") != products:
        problems.append(f"test_set.products: the entry records {recorded.get('products')}, its files have "
                        f"{products}")
    if recorded is not None and products is None:
        products = recorded.get("products")
    manifest = entry.get("manifest")
    facts = ComputedOn(items=items, products=products, manifest_sha256=manifest["sha256"] if manifest else None)
    problems += test_set_problems(suite.name, suite.spec, facts, who=f"entry {entry['name']!r}")
    report.problems += [f"{where}: {p}" for p in problems]


def _published(suite: Suite, entry: Mapping[str, Any], where: str, report: VerifyReport) -> None:
    """A published entry that prints counts must print those of the suite's test set."""
    items, problems = items_from_tasks(entry["results"])
    if items and suite.spec.get("items") is not None:
        problems += test_set_problems(suite.name, {**suite.spec, "manifest": None}, ComputedOn(items=items),
                                      who=f"entry {entry['name']!r}")
    report.problems += [f"{where}: {p}" for p in problems]


def _suite_manifest(suite: Suite, base: Path, report: VerifyReport) -> None:
    manifest = suite.spec.get("manifest")
    if not isinstance(manifest, Mapping) or not manifest.get("path"):
        return
    _data_file(manifest, base, base, "manifest", f"{suite.name} (suite.json)", report)


def _recheck(suite: Suite, entry: Mapping[str, Any], root: Path, where: str, report: VerifyReport) -> None:
    """Check the files of a computed entry, re-evaluate it and compare every cell."""
    base = base_of(root)
    found: dict[str, Path] = {}
    usable = True
    for what in ("submission", "manifest"):
        ref = entry.get(what)
        if ref is None:
            continue
        path = _data_file(ref, base, base, what, where, report)
        usable &= path is not None
        if path is not None:
            found[what] = path
    labels = found.get("manifest") if entry.get("manifest") else found.get("submission")
    _test_set(suite, entry, labels, where, report)
    if entry.get("per_query"):
        path = _data_file(entry["per_query"], base, root, "per-query file", where, report)
        if path is not None:
            _check_per_query(entry, path, where, report)
    if not usable:
        return  # numbers from other files would say nothing about this entry
    protocol = entry["protocol"]
    try:
        fresh = _api_evaluate()(
            str(found["submission"]), manifest=str(found["manifest"]) if "manifest" in found else None,
            metric=protocol["metric"], ties=protocol["ties"], ks=tuple(protocol["ks"]),
            tasks=list(entry["results"]), ci=False,  # intervals are not stored in entries
            compress=protocol.get("compression"), measures=protocol.get("measures"),
            **_fewshot_options(entry.get("fewshot"))).to_json()
    except ropebench.RopebenchError as error:
        report.problems.append(f"{where}: re-evaluation failed: {error}")
        return
    # ``scores`` is checked where stored (entries added before it was recorded lack it).
    for key in ("group_exclusion", "search", "scores", "compression", "bytes_per_item"):
        if (key != "scores" or key in protocol) and fresh["protocol"].get(key) != protocol.get(key):
            report.problems.append(f"{where}: protocol.{key}: stored {protocol.get(key)!r}, "
                                   f"recomputed {fresh['protocol'].get(key)!r}")
    _recheck_fewshot(entry.get("fewshot"), fresh.get("fewshot"), where, report)
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
                    report.problems.append(f"{where}: {task} {key}: stored {value}, recomputed {again.get(key)}")
                continue
            report.cells += 1
            if again.get(key) is None or abs(again[key] - value) > tolerance * (1 + 1e-9):
                report.problems.append(
                    f"{where}: {task} {key}: stored {value:.6f}, recomputed "
                    + ("missing" if again.get(key) is None else f"{again[key]:.6f}")
                    + f" (tolerance {tolerance:.6f} = 100/{stored['n_queries']} queries)")


def _fewshot_options(section: Any) -> dict[str, Any]:
    """The evaluate options that recompute an entry's few-shot section (none without one)."""
    if not isinstance(section, Mapping):
        return {}
    settings = section.get("protocol", {})
    return {"fewshot": True, "shots": tuple(settings.get("shots", (1, 5))), "draws": settings.get("draws", 10),
            "fewshot_seed": settings.get("seed", 0)}


def _recheck_fewshot(stored: Any, fresh: Any, where: str, report: VerifyReport) -> None:
    """Every stored few-shot count exactly, every accuracy within one query's worth."""
    if not isinstance(stored, Mapping):
        return
    fresh_tasks = (fresh or {}).get("tasks", {})
    for direction, by_shots in stored.get("tasks", {}).items():
        for shots, cell in by_shots.items():
            again = fresh_tasks.get(direction, {}).get(shots)
            if again is None:
                report.problems.append(f"{where}: few-shot {direction} {shots}: stored, but not recomputed")
                continue
            tolerance = 100.0 / max(1, cell.get("n_queries") or 1)
            for key, value in cell.items():
                if key in ("n_queries", "n_skipped", "n_ways"):
                    report.counts += 1
                    if again.get(key) != value:
                        report.problems.append(f"{where}: few-shot {direction} {shots} {key}: stored {value}, "
                                               f"recomputed {again.get(key)}")
                    continue
                report.cells += 1
                other = again.get(key)
                if (value is None) != (other is None) or (value is not None and abs(other - value) >
                                                           tolerance * (1 + 1e-9)):
                    report.problems.append(f"{where}: few-shot {direction} {shots} {key}: stored {value}, "
                                           f"recomputed {other}")


def verify(root: Path, names: Sequence[str] | None = None) -> VerifyReport:
    """Check suites (default: all): schema, orphans, test sets, files and sha256, per-query files,
    re-evaluation of computed entries, and the README's rendered blocks. Published entries are
    never re-evaluated."""
    report = VerifyReport()
    names = list(dict.fromkeys(names or ()))  # a suite named twice is checked once
    for name in names:
        check_suite_name(name)
    with shared(root):  # a consistent snapshot; the slow re-evaluation runs after the lock is released
        view = View(root)
        known = suite_names(root)
        unknown = [n for n in names or () if n not in known]
        if unknown:  # bad input, not a failed check: exit 2 rather than 1
            raise UsageError(f"unknown suite {', '.join(map(repr, unknown))}: known suites are "
                             f"{', '.join(known) or 'none'}. Fix: use one of those, or pass the --root that holds it")
        if not names:
            names = known
            report.problems += [f"{d}: a directory without {SUITE_FILE}" for d in sorted(root.iterdir())
                                if d.is_dir() and not d.name.startswith(".") and d.name not in known]
            if not names:
                report.problems.append(f"{root}: no suite (a directory with {SUITE_FILE})")
        try:
            text = view.read_text(root / README, "README")
        except DataError as error:
            report.problems.append(str(error))
            text = ""
        loaded = [(name, *read_suite(root, name, view=view)) for name in names]
    for name, suite, problems in loaded:
        report.problems += problems
        if suite is None:
            continue
        report.problems += list(suite.orphans)
        report.suites += 1
        _suite_manifest(suite, base_of(root), report)
        for entry in suite.entries:
            report.entries += 1
            if entry["kind"] != "computed":
                _published(suite, entry, f"{name}/{entry['name']}", report)
                continue
            report.computed += 1
            _recheck(suite, entry, root, f"{name}/{entry['name']}", report)
        if problems:
            continue  # the fresh rendering would lack the broken entries anyway
        if text is None:
            report.problems.append(f"{root / README}: missing; run `ropebench leaderboard render`")
        elif rendered_block(suite) not in text:
            report.problems.append(
                f"{root / README}: the rendered leaderboard of suite {name!r} differs from a fresh "
                "rendering (or is missing); run `ropebench leaderboard render` and commit it")
    return report
