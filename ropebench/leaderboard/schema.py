"""Schema checks for leaderboard files: entries (``ropebench.entry/1``), suite files
(``ropebench.suite/1``) and the results files ``leaderboard add`` accepts (``ropebench.results/1``).

Every check returns the list of *all* problems it found (empty = valid), each a sentence that
names the field, so a user fixes a file in one pass. Nothing here reads a file.

Counts: a ``computed`` entry stores, per task, the four counts of DESIGN §4 (``n_queries``,
``n_skipped``, ``n_gallery``, ``n_tied``) and exactly the metrics of its protocol's Ks. A
``published`` entry stores what the paper printed: any non-empty subset of canonical metric keys,
counts optional (the ROPE paper gives none), and no files, since it cannot be recomputed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ropebench.protocol import ALL_TASKS
from ropebench.protocol import measure_names as metric_names
from ropebench.results import RESULTS_SCHEMA

__all__ = [
    "ENTRY_SCHEMA",
    "SUITE_SCHEMA",
    "COUNTS",
    "NAME_PATTERN",
    "check_entry",
    "check_suite",
    "check_results",
    "check_protocol",
]

ENTRY_SCHEMA = "ropebench.entry/1"
SUITE_SCHEMA = "ropebench.suite/1"
COUNTS: tuple[str, ...] = ("n_queries", "n_skipped", "n_gallery", "n_tied")
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_METRIC_KEY = re.compile(r"^(R|MRR)@[1-9][0-9]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PROTOCOL_VALUES = {"metric": ("cosine", "ip", "l2"),
                    "ties": ("expected", "pessimistic", "optimistic"),
                    "search": ("exact",)}

_ENTRY_KEYS = {"schema", "name", "label", "label_latex", "suite", "description", "source", "kind",
               "protocol", "submission", "manifest", "ropebench_version", "created", "results"}
_SUITE_KEYS = {"schema", "name", "title", "description", "label_column", "entries", "captions",
               "metrics", "protocol", "manifest"}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _nonempty_str(data: Mapping[str, Any], key: str, problems: list[str]) -> None:
    if not isinstance(data.get(key), str) or not data[key].strip():
        problems.append(f"{key!r} must be a non-empty string")


def check_protocol(protocol: Any, *, where: str = "protocol", partial: bool = False) -> list[str]:
    """Problems of a protocol object (DESIGN §4). ``partial``: a suite may fix only some fields."""
    if not isinstance(protocol, Mapping):
        return [f"{where!r} must be an object"]
    problems = []
    required = () if partial else ("metric", "ties", "ks", "search", "group_exclusion")
    problems += [f"{where}.{key} is missing" for key in required if key not in protocol]
    for key, allowed in _PROTOCOL_VALUES.items():
        if key in protocol and protocol[key] not in allowed:
            problems.append(f"{where}.{key} is {protocol[key]!r}: must be one of {', '.join(allowed)}"
                            + (" (leaderboard entries use exact search)" if key == "search" else ""))
    if "ks" in protocol:
        ks = protocol["ks"]
        if (not isinstance(ks, list) or not ks or not all(_is_count(k) and k > 0 for k in ks)
                or ks != sorted(set(ks))):
            problems.append(f"{where}.ks is {ks!r}: must be increasing positive integers")
    if "group_exclusion" in protocol and not isinstance(protocol["group_exclusion"], bool):
        problems.append(f"{where}.group_exclusion must be true or false")
    problems += [f"{where}.{key} is not a protocol field" for key in protocol
                 if key not in ("metric", "ties", "ks", "search", "group_exclusion")]
    return problems


def _check_tasks(tasks: Any, *, where: str, ks: list[int] | None) -> list[str]:
    """``ks`` given: full results (counts + exactly those metrics); None: published subset."""
    if not isinstance(tasks, Mapping) or not tasks:
        return [f"{where!r} must be a non-empty object keyed by task ({', '.join(ALL_TASKS)})"]
    problems = []
    expected = metric_names(tuple(ks)) if ks else None
    for task, values in tasks.items():
        at = f"{where}.{task}"
        if task not in ALL_TASKS:
            problems.append(f"{where} has unknown task {task!r}: tasks are {', '.join(ALL_TASKS)}")
            continue
        if not isinstance(values, Mapping):
            problems.append(f"{at} must be an object")
            continue
        metrics = [key for key in values if key not in COUNTS]
        problems += [f"{at}.{key} is not a canonical metric key (R@K or MRR@K)"
                     for key in metrics if not _METRIC_KEY.match(key)]
        problems += [f"{at}.{key} = {values[key]!r}: must be a number in [0, 100]"
                     for key in metrics if _METRIC_KEY.match(key)
                     and not (_is_number(values[key]) and 0 <= values[key] <= 100)]
        problems += [f"{at}.{key} = {values[key]!r}: must be a non-negative integer"
                     for key in COUNTS if key in values and not _is_count(values[key])]
        if expected is None:
            if not metrics:
                problems.append(f"{at} has no metric")
            continue
        problems += [f"{at}.{key} is missing" for key in (*COUNTS, *expected) if key not in values]
        problems += [f"{at}.{key} is not among the protocol's metrics ({', '.join(expected)})"
                     for key in metrics if _METRIC_KEY.match(key) and key not in expected]
        if values.get("n_queries") == 0:
            problems.append(f"{at}.n_queries is 0: a task without scored queries has no score")
    return problems


def _check_file_ref(ref: Any, where: str, *, extra: tuple[str, ...] = ()) -> list[str]:
    if not isinstance(ref, Mapping):
        return [f"{where!r} must be an object with 'path' and 'sha256'"]
    problems = []
    path = ref.get("path")
    if not isinstance(path, str) or not path:
        problems.append(f"{where}.path must be a non-empty string")
    elif path.startswith("/") or "\\" in path or ".." in path.split("/"):
        problems.append(f"{where}.path {path!r} must be relative to the directory holding "
                        "leaderboards/, in POSIX form, without '..'")
    if not isinstance(ref.get("sha256"), str) or not _SHA256.match(ref["sha256"]):
        problems.append(f"{where}.sha256 must be 64 lower-case hex digits")
    problems += [f"{where}.{key} is not a known field" for key in ref
                 if key not in ("path", "sha256", *extra)]
    return problems


def _check_document(data: Mapping[str, Any], schema: str, what: str, fields: set[str],
                    strings: tuple[str, ...]) -> list[str]:
    """The checks every leaderboard file shares: schema tag, known fields, required strings."""
    problems = []
    if data.get("schema") != schema:
        problems.append(f"'schema' is {data.get('schema')!r}: must be {schema!r}")
    problems += [f"{key!r} is not {what} field" for key in data if key not in fields]
    for key in strings:
        _nonempty_str(data, key, problems)
    return problems


def check_entry(entry: Any) -> list[str]:
    """All schema problems of one leaderboard entry (DESIGN §5)."""
    if not isinstance(entry, Mapping):
        return ["an entry must be a JSON object"]
    problems = _check_document(entry, ENTRY_SCHEMA, "an entry", _ENTRY_KEYS,
                               ("name", "label", "suite", "description", "source"))
    for key in ("name", "suite"):
        if isinstance(entry.get(key), str) and not NAME_PATTERN.match(entry[key]):
            problems.append(f"{key!r} {entry[key]!r} must match {NAME_PATTERN.pattern}")
    if "label_latex" in entry:
        _nonempty_str(entry, "label_latex", problems)
    kind = entry.get("kind")
    if kind == "computed":
        problems += check_protocol(entry.get("protocol"))
        problems += _check_file_ref(entry.get("submission"), "submission",
                                    extra=("n_items", "dim", "dtype"))
        if entry.get("manifest") is not None:  # None: a self-labelled submission
            problems += _check_file_ref(entry["manifest"], "manifest")
        elif "manifest" not in entry:
            problems.append("'manifest' is missing (null for a self-labelled submission)")
        protocol = entry.get("protocol")
        ks = protocol.get("ks") if isinstance(protocol, Mapping) else None
        # Without usable ks (a protocol problem, reported) the values are checked, not the keys.
        usable = isinstance(ks, list) and ks and all(_is_count(k) and k > 0 for k in ks)
        problems += _check_tasks(entry.get("results"), where="results", ks=ks if usable else None)
    elif kind == "published":
        problems += [f"{key!r} is only for computed entries: a published entry cannot be "
                     "recomputed" for key in ("submission", "manifest") if key in entry]
        if "protocol" in entry:
            problems += check_protocol(entry["protocol"], partial=True)
        problems += _check_tasks(entry.get("results"), where="results", ks=None)
    else:
        problems.append(f"'kind' is {kind!r}: must be 'published' or 'computed'")
    return problems


def check_suite(suite: Any) -> list[str]:
    """All schema problems of a suite file ``leaderboards/<suite>/suite.json``."""
    if not isinstance(suite, Mapping):
        return ["a suite file must be a JSON object"]
    problems = _check_document(suite, SUITE_SCHEMA, "a suite", _SUITE_KEYS,
                               ("name", "title", "label_column"))
    entries = suite.get("entries")
    if (not isinstance(entries, list) or not all(isinstance(e, str) for e in entries)
            or len(set(entries)) != len(entries)):
        problems.append("'entries' must be a list of distinct entry names (the row order)")
    captions = suite.get("captions", {})
    if not isinstance(captions, Mapping) or not all(
            key in ("1", "2") and isinstance(value, str) for key, value in captions.items()):
        problems.append("'captions' must map '1' and/or '2' to the table captions")
    metrics = suite.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not metrics
                                or not all(isinstance(m, str) and _METRIC_KEY.match(m)
                                           for m in metrics)):
        problems.append("'metrics' must be a list of canonical metric keys such as 'R@1'")
    problems += check_protocol(suite.get("protocol"), partial=True)
    manifest = suite.get("manifest")
    if manifest is not None and (not isinstance(manifest, str) or not manifest):
        problems.append("'manifest' must be null or the path of the suite's manifest")
    return problems


def check_results(results: Any) -> list[str]:
    """All problems of a results file (DESIGN §4) as ``leaderboard add`` needs it."""
    if not isinstance(results, Mapping):
        return ["a results file must be a JSON object"]
    problems = []
    if results.get("schema") != RESULTS_SCHEMA:
        problems.append(f"'schema' is {results.get('schema')!r}: must be {RESULTS_SCHEMA!r} "
                        "(write it with `ropebench evaluate SUB --out results.json`)")
    protocol = results.get("protocol")
    # search is checked against the suite so the message can name it; here only the shape.
    problems += [p for p in check_protocol(protocol) if not p.startswith("protocol.search is")]
    submission = results.get("submission")
    if not isinstance(submission, Mapping) or not submission.get("path") \
            or not isinstance(submission.get("sha256"), str):
        problems.append("'submission' must record the submission's 'path' and 'sha256'")
    manifest = results.get("manifest")
    if manifest is not None and (not isinstance(manifest, Mapping) or not manifest.get("path")
                                 or not isinstance(manifest.get("sha256"), str)):
        problems.append("'manifest' must be null or record the manifest's 'path' and 'sha256'")
    ks = protocol.get("ks") if isinstance(protocol, Mapping) else None
    if isinstance(ks, list) and ks and all(_is_count(k) and k > 0 for k in ks):
        problems += _check_tasks(results.get("tasks"), where="tasks", ks=ks)
    return problems
