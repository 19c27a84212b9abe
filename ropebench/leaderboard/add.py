"""``leaderboard add``: a computed entry from a results file, as one transaction.

Everything is checked and rendered in memory first: the results file, the files it refers to
(sha256), the test set it was computed on against the suite's declaration, the protocol, the
name and the label. Then, under the root's exclusive lock, the suite is read again, the entry,
its per-query file, ``suite.json`` and the README are built, and all of them are committed
together (:func:`ropebench.leaderboard.transaction.commit`): either all change or none does.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ropebench
from ropebench.errors import DataError, UsageError
from ropebench.io.files import sha256_file
from ropebench.leaderboard import paths
from ropebench.leaderboard.integrity import ComputedOn, items_from_tasks, labels_summary, test_set_problems
from ropebench.leaderboard.metadata import filled_model, metadata_problems, read_metadata
from ropebench.leaderboard.readme import readme_with
from ropebench.leaderboard.schema import (
    ENTRY_SCHEMA,
    MAX_LABEL,
    NAME_PATTERN,
    check_entry,
    check_results,
    latex_problems,
    text_problems,
)
from ropebench.leaderboard.store import (
    PER_QUERY_SUFFIX,
    README,
    SUITE_FILE,
    Suite,
    View,
    base_of,
    check_suite_name,
    load_suite,
)
from ropebench.leaderboard.transaction import commit, exclusive

__all__ = ["add_entry", "dumps", "data_file"]


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def data_file(path: Path, base: Path, what: str) -> tuple[str, Path]:
    """A submission or manifest as an entry records it: its path relative to ``base`` (the
    directory holding the root) and its real path; refused when it lies outside ``base`` after
    links are resolved, or is not a regular file (a directory source: every file in it)."""
    paths.check_regular(path, what, directory_ok=True)
    real_base = Path(os.path.realpath(base))
    if real_base not in Path(os.path.realpath(path)).parents:
        raise DataError(f"{what} {path} is outside {real_base}, the directory holding the leaderboard: "
                        "verify re-evaluates entries from files found there. Fix: copy it below "
                        f"{real_base} and pass --{what} with the copy (or keep the leaderboard root beside "
                        "your submissions: --root DIR)")
    real = paths.check_tree(path, real_base, what)
    return real.relative_to(real_base).as_posix(), real


def _locate(recorded: str, override: str | None, results_path: Path, what: str) -> Path:
    """The file a results file refers to: ``override``, else its recorded path taken as is
    (relative to the current directory), then relative to the results file's directory."""
    candidates = [Path(override)] if override else [Path(recorded), results_path.parent / recorded]
    for path in candidates:
        if os.path.lexists(path):
            return path
    raise DataError(f"{results_path}: {what} {recorded!r} not found (tried "
                    f"{', '.join(map(str, candidates))}). Fix: pass --{what} PATH")


@dataclass(frozen=True)
class _Prepared:
    """What the results file says, checked against its files: everything but the suite."""

    results: Mapping[str, Any]
    files: Mapping[str, dict[str, Any] | None]
    per_query: bytes | None
    computed_on: ComputedOn


def refuse_kind_of_run(results_path: Path, results: Any) -> None:
    """Say plainly why a distractor or approximate result cannot be an entry (instead of the
    schema problems its extra fields would otherwise raise).

    A suite's entries all mean one protocol: exact search over the test set alone. A result
    with a distractor catalogue ranks against more items, and an approximate one may miss
    neighbours, so neither number is comparable with the entries beside it.
    """
    if not isinstance(results, Mapping):
        return
    protocol: Mapping[str, Any] = results["protocol"] if isinstance(results.get("protocol"), Mapping) else {}
    reasons = []
    if protocol.get("search") == "approximate" or "index" in protocol:
        index = protocol.get("index")
        factory = index.get("factory") if isinstance(index, Mapping) else index
        reasons.append(f"it used approximate search (--index {factory}): leaderboard entries are exact, so every "
                       "number in a suite comes from the same exhaustive search. Fix: evaluate again without --index "
                       "(and --nprobe/--ef-search) and add that results file")
    distractors = results.get("distractors")
    if distractors:
        counts = distractors.get("n_items") if isinstance(distractors, Mapping) else None
        total = f" ({sum(counts.values()):,} extra gallery items)" if isinstance(counts, Mapping) and all(
            isinstance(v, int) for v in counts.values()) else ""
        reasons.append(f"it was evaluated with a distractor catalogue{total}: a suite's entries rank against its "
                       "test set alone, so numbers with distractors are not comparable with them. Fix: evaluate "
                       "again without --distractors and add that results file (keep this one for `ropebench plot "
                       "--kind distractors`)")
    if reasons:
        raise DataError(f"{results_path}: cannot be a leaderboard entry; nothing written:\n  - "
                        + "\n  - ".join(reasons))


def _prepare(results_path: Path, base: Path, submission: str | None, manifest: str | None) -> _Prepared:
    results = paths.read_json(results_path, what="results file")
    refuse_kind_of_run(results_path, results)
    problems = check_results(results)
    if problems:
        raise DataError(f"{results_path}: not a usable results file:\n  - " + "\n  - ".join(problems))
    files: dict[str, dict[str, Any] | None] = {"manifest": None}
    real: dict[str, Path] = {}
    for what, override in (("submission", submission), ("manifest", manifest)):
        recorded = results[what]
        if recorded is None:
            continue
        path = _locate(str(recorded["path"]), override, results_path, what)
        relative, real[what] = data_file(path, base, what)
        digest = sha256_file(real[what])
        if digest != recorded["sha256"]:
            problems.append(f"{what} {path}: sha256 on disk {digest} differs from {recorded['sha256']} in "
                            "the results. Fix: re-run evaluate on the file as it is now")
        extra = {k: recorded[k] for k in ("n_items", "dim", "dtype") if k in recorded}
        files[what] = {"path": relative, "sha256": digest, **extra}
    per_query = None
    reference = results.get("per_query")
    if isinstance(reference, Mapping) and isinstance(reference.get("path"), str):
        path = results_path.parent / reference["path"]
        try:
            per_query = paths.read_bytes(path, "per-query file", limit=None)
        except DataError as error:
            raise DataError(f"{results_path} records a per-query file: {error}. Fix: keep the per-query file "
                            "where evaluate wrote it (its path is relative to the results file), or re-run "
                            "`ropebench evaluate … --out R.json --per-query Q.parquet`") from None
        if hashlib.sha256(per_query).hexdigest() != reference.get("sha256"):
            problems.append(f"per-query file {path}: its sha256 differs from the one {results_path} records. "
                            "Fix: re-run `ropebench evaluate … --out R.json --per-query Q.parquet`")
    items, disagreements = items_from_tasks(results["tasks"])
    problems += disagreements
    if problems:
        raise DataError(f"{results_path}: cannot be added:\n  - " + "\n  - ".join(problems))
    labels = real.get("manifest") or real["submission"]
    _, products = labels_summary(labels, "manifest" if "manifest" in real else "submission")
    computed_on = ComputedOn(items=items, products=products,
                             manifest_sha256=files["manifest"]["sha256"] if files["manifest"] else None)
    return _Prepared(results, files, per_query, computed_on)


def _argument_problems(name: str, label: str, label_latex: str | None, description: str,
                       source: str | None) -> list[str]:
    problems = []
    if not NAME_PATTERN.match(name):
        problems.append(f"--name {name!r}: use 1 to 100 lower-case letters, digits, '.', '_' and '-', starting with a "
                        "letter or digit (it is a file name)")
    if not label.strip():
        problems.append("--label must not be empty: it is the row label in the tables")
    problems += [p.replace("'label'", "--label", 1) for p in text_problems(label, "label", limit=MAX_LABEL)]
    if label_latex is not None:
        problems += [p.replace("'label_latex'", "--label-latex", 1) for p in latex_problems(label_latex)]
    for option, value in (("--description", description), ("--source", source)):
        problems += [p.replace(f"'{option[2:]}'", option, 1) for p in text_problems(value, option[2:], limit=2000)]
    return problems


def _suite_problems(suite: Suite, name: str, label: str, prepared: _Prepared, force: bool,
                    exists: bool) -> list[str]:
    spec, results = suite.spec, prepared.results
    problems = []
    if exists and not force:
        listed = name in spec["entries"]
        problems.append(f"entry {name!r} exists in suite {suite.name!r}" + ("" if listed else
                        " (a file suite.json does not list)") + ": pass --force to replace it")
    problems += [f"protocol.{key}: the results have {results['protocol'].get(key)!r}, suite "
                 f"{suite.name!r} requires {want!r}"
                 for key, want in spec["protocol"].items() if results["protocol"].get(key) != want]
    if results["protocol"].get("search") != "exact" and "search" not in spec["protocol"]:
        problems.append(f"protocol.search: the results have {results['protocol'].get('search')!r}; "
                        "leaderboard entries need exact search")
    clash = [e["name"] for e in suite.entries if e["label"] == label and e["name"] != name]
    if clash:
        problems.append(f"label {label!r} is already used by entry {clash[0]!r}: choose another --label")
    digest = prepared.files["submission"]["sha256"] if prepared.files["submission"] else None
    same = [e["name"] for e in suite.entries if e["name"] != name and e["kind"] == "computed"
            and e["submission"]["sha256"] == digest and _measured(e["protocol"]) == _measured(results["protocol"])]
    if same:
        problems.append(f"the same submission (sha256 {digest}) is already entry {same[0]!r} under the same "
                        f"protocol: one row per model. Fix: pass --name {same[0]} --force to replace it")
    problems += test_set_problems(suite.name, spec, prepared.computed_on)
    return problems


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
    metadata: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> Path:
    """Add (or with ``force`` replace) a computed entry from a results file; return its path.

    Refuses, naming the field and what differs: a results file that is not valid; a protocol
    other than the suite's (metric, ties, ks, non-exact search); a test set other than the one
    the suite is about (manifest sha256, items per domain, products); referenced files that
    changed since evaluation, lie outside the directory holding the root, or are not regular
    files; a label that is not one line or is used by another entry; a submission already in
    the suite; an existing entry without ``force``. Nothing is written then.

    ``metadata``: a JSON file (or dict) with ``model`` and/or ``training_data``
    (:mod:`ropebench.leaderboard.metadata`); ``model.bytes_per_item`` (and the embedding's dim
    and dtype) are filled from the results when not given. Re-add with ``force`` to edit them.

    Raises:
        UsageError: bad name, label or suite; DataError: the results cannot be added (or a file
            cannot be written — nothing was changed).
    """
    results_path, root = Path(results_path), Path(root)
    check_suite_name(suite)
    problems = _argument_problems(name, label, label_latex, description, source)
    if isinstance(metadata, Mapping):
        problems += metadata_problems(metadata)
        extra = dict(metadata)
    else:
        extra = read_metadata(metadata) if metadata is not None else {}
    if problems:
        raise UsageError("refused, nothing written:\n  - " + "\n  - ".join(problems))
    before = load_suite(root, suite)  # an unknown or broken suite is reported before any file is hashed
    existing = before.directory / f"{name}.json"
    if not force and os.path.lexists(existing):
        raise UsageError(f"{existing} exists: pass --force to replace entry {name!r} of {suite!r}")
    prepared = _prepare(results_path, base_of(root), submission, manifest)
    with exclusive(root):
        view = View(root)
        current = load_suite(root, suite, view=view)
        target = current.directory / f"{name}.json"
        problems = _suite_problems(current, name, label, prepared, force, view.exists(target))
        if problems:
            raise DataError(f"{results_path}: cannot be added to suite {suite!r}; nothing written:\n  - "
                            + "\n  - ".join(problems))
        entry = _entry(prepared, root, suite, name, label, label_latex, description, source)
        entry["model"] = filled_model(extra.get("model"), prepared.results)
        if not entry["model"]:
            del entry["model"]
        if extra.get("training_data"):
            entry["training_data"] = dict(extra["training_data"])
        problems = check_entry(entry)
        if problems:  # a results file whose numbers the entry schema refuses
            raise DataError(f"{results_path}: the entry would not be valid:\n  - " + "\n  - ".join(problems))
        changes = _changes(root, current, entry, prepared, view)
        commit(root, changes)
    return target


def _entry(prepared: _Prepared, root: Path, suite: str, name: str, label: str, label_latex: str | None,
           description: str, source: str | None) -> dict[str, Any]:
    results = prepared.results
    version = results.get("ropebench_version", ropebench.__version__)
    per_query = None
    if prepared.per_query is not None:
        per_query = {"path": f"{Path(os.path.abspath(root)).name}/{suite}/{name}{PER_QUERY_SUFFIX}",
                     "sha256": hashlib.sha256(prepared.per_query).hexdigest()}
    entry: dict[str, Any] = {
        "schema": ENTRY_SCHEMA, "name": name, "label": label,
        **({"label_latex": label_latex} if label_latex else {}),
        "suite": suite, "description": description or f"{label} ({name})",
        "source": source or f"computed by ropebench {version}", "kind": "computed",
        "protocol": results["protocol"], "submission": prepared.files["submission"],
        "manifest": prepared.files["manifest"], **({"per_query": per_query} if per_query else {}),
        "test_set": prepared.computed_on.to_json(),
        "ropebench_version": version, "created": results.get("created", ""),
        "results": {task: {k: v for k, v in cells.items() if k != "ci"} for task, cells in results["tasks"].items()},
    }
    if results.get("fewshot"):  # the paper's second task, without its intervals (as the retrieval cells)
        section = results["fewshot"]
        entry["fewshot"] = {"protocol": section["protocol"],
                            "tasks": {direction: {shots: {k: v for k, v in cell.items() if k not in ("ci",)}
                                                  for shots, cell in by_shots.items()}
                                      for direction, by_shots in section["tasks"].items()}}
    if not entry["created"]:
        del entry["created"]
    return entry


def _changes(root: Path, current: Suite, entry: dict[str, Any], prepared: _Prepared,
             view: View) -> dict[Path, bytes | None]:
    """Every file the new leaderboard differs in: per-query file, entry, suite.json, README."""
    name, directory = entry["name"], current.directory
    changes: dict[Path, bytes | None] = {}
    per_query = directory / f"{name}{PER_QUERY_SUFFIX}"
    if prepared.per_query is not None:
        changes[per_query] = prepared.per_query
    elif view.exists(per_query):
        changes[per_query] = None  # a replaced entry's old per-query file would describe other numbers
    changes[directory / f"{name}.json"] = dumps(entry).encode("utf-8")
    names = list(current.spec["entries"])
    if name not in names:
        names.append(name)
        changes[directory / SUITE_FILE] = dumps({**current.spec, "entries": names}).encode("utf-8")
    by_name = {**{e["name"]: e for e in current.entries}, name: entry}
    entries = tuple(by_name[n] for n in names if n in by_name)
    updated = replace(current, spec={**current.spec, "entries": names}, entries=entries)
    changes[root / README] = readme_with(root, [updated], view=view).encode("utf-8")
    return changes


def _measured(protocol: Any) -> Any:
    """The fields that decide what is measured (``scores`` only records how comparisons are decided)."""
    return {key: value for key, value in protocol.items() if key != "scores"} if isinstance(protocol, dict) \
        else protocol
