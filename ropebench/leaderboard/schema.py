"""Schema checks for leaderboard files: entries (``ropebench.entry/1``), suite files
(``ropebench.suite/1``) and the results files ``leaderboard add`` accepts (``ropebench.results/1``).

Every check returns the list of *all* problems it found (empty = valid), each a sentence that
names the field, so a user fixes a file in one pass. Nothing here reads a file.

Counts: a ``computed`` entry stores, per task, the four counts of a results file (``n_queries``,
``n_skipped``, ``n_gallery``, ``n_tied``) and exactly the metrics of its protocol's Ks. A
``published`` entry stores what the paper printed: any non-empty subset of canonical metric keys,
counts optional (the ROPE paper gives none), and no files, since it cannot be recomputed.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from ropebench.leaderboard.paths import relative_problem
from ropebench.protocol import ALL_TASKS, DOMAINS
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
    "text_problems",
    "latex_problems",
    "declaration_problems",
]

ENTRY_SCHEMA = "ropebench.entry/1"
SUITE_SCHEMA = "ropebench.suite/1"
COUNTS: tuple[str, ...] = ("n_queries", "n_skipped", "n_gallery", "n_tied")
# \Z, not $: "$" also matches before a final newline, and "name\n" must not pass as a name.
# At most 100 characters: a name becomes file names (<entry>.per_query.parquet) of at most 255 bytes.
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\Z")
# Canonical measure keys (protocol.MEASURE_PATTERN): R@K, MRR@K, and with protocol.measures MAP@R, RP, mAP@K.
_METRIC_KEY = re.compile(r"^((R|MRR|mAP)@[1-9][0-9]*|MAP@R|RP)\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_PROTOCOL_VALUES = {"metric": ("cosine", "ip", "l2"),
                    "ties": ("expected", "pessimistic", "optimistic"),
                    "search": ("exact",),
                    "scores": ("float64",)}

_ENTRY_KEYS = {"schema", "name", "label", "label_latex", "suite", "description", "source", "kind",
               "protocol", "submission", "manifest", "per_query", "test_set", "ropebench_version",
               "created", "results", "model", "training_data", "fewshot"}
_SUITE_KEYS = {"schema", "name", "title", "description", "label_column", "entries", "captions",
               "metrics", "protocol", "manifest", "items", "products", "baseline"}
MAX_LABEL = 200  # characters of a row label
# Bidirectional overrides reorder what a reader sees; like control characters they have no place in a label.
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _nonempty_str(data: Mapping[str, Any], key: str, problems: list[str]) -> None:
    if not isinstance(data.get(key), str) or not data[key].strip():
        problems.append(f"{key!r} must be a non-empty string")


def text_problems(value: Any, key: str, *, limit: int | None = None) -> list[str]:
    """Problems of a one-line text field (a label, a title): no newline, carriage return, other
    control or bidirectional-override character, at most ``limit`` characters."""
    if not isinstance(value, str):
        return []  # the type is reported by the caller
    bad = sorted({char for char in value if unicodedata.category(char) in ("Cc", "Zl", "Zp") or char in _BIDI})
    problems = []
    if bad:
        shown = ", ".join(f"U+{ord(char):04X}" + (" (newline)" if char == "\n" else " (carriage return)"
                                                 if char == "\r" else "") for char in bad)
        problems.append(f"{key!r} {value!r} must be one line of text without control characters (found "
                        f"{shown}): it is a table cell in every format")
    if limit is not None and len(value) > limit:
        problems.append(f"{key!r} has {len(value)} characters: at most {limit}")
    return problems


def latex_problems(value: Any, key: str = "label_latex") -> list[str]:
    r"""Problems of a LaTeX fragment used as a table cell: one line, balanced braces, and no
    unescaped ``&`` (a column break) or ``\\`` (a row break) that would split the table row."""
    if not isinstance(value, str):
        return []
    problems = text_problems(value, key, limit=MAX_LABEL)
    depth, breaks, index = 0, [], 0
    while index < len(value):
        char = value[index]
        if char == "\\":
            if value[index + 1:index + 2] == "\\":
                breaks.append("\\\\")
            index += 2
            continue
        if char == "&":
            breaks.append("&")
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            break
        index += 1
    if depth != 0:
        problems.append(f"{key!r} {value!r}: braces are not balanced; it would break the whole LaTeX table")
    if breaks:
        problems.append(f"{key!r} {value!r}: an unescaped '{breaks[0]}' would split the table row; write "
                        "\\& for an ampersand")
    return problems


def check_protocol(protocol: Any, *, where: str = "protocol", partial: bool = False) -> list[str]:
    """Problems of a protocol object. ``partial``: a suite may fix only some fields."""
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
    problems += _compression_problems(protocol, where)
    if "measures" in protocol and _measures_of(protocol) is None:
        problems.append(f"{where}.measures is {protocol['measures']!r}: must be the measure families `evaluate "
                        "--measures` records, e.g. [\"R@K\", \"MRR\", \"MAP@R\", \"RP\"]")
    problems += [f"{where}.{key} is not a protocol field" for key in protocol
                 if key not in ("metric", "ties", "ks", "search", "scores", "group_exclusion", "compression",
                                "bytes_per_item", "measures")]
    return problems


def _measures_of(protocol: Any) -> tuple[str, ...] | None:
    """The protocol's measure families (default R@K, MRR), or None when ``measures`` is malformed."""
    from ropebench.errors import UsageError
    from ropebench.protocol import parse_measures

    if not isinstance(protocol, Mapping) or "measures" not in protocol:
        return None if not isinstance(protocol, Mapping) else parse_measures(None)
    value = protocol["measures"]
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        return None
    try:
        families = parse_measures(value)
    except UsageError:
        return None
    return families if list(families) == value else None


def _compression_problems(protocol: Mapping[str, Any], where: str) -> list[str]:
    """``compression`` (a canonical ``--compress`` spelling) and ``bytes_per_item`` come together."""
    from ropebench.compress import parse_compression
    from ropebench.errors import UsageError

    if "compression" not in protocol and "bytes_per_item" not in protocol:
        return []
    problems = []
    value = protocol.get("compression")
    try:
        spec = parse_compression(value) if isinstance(value, str) else None
    except UsageError:
        spec = None
    if spec is None or spec.name != value:
        problems.append(f"{where}.compression is {value!r}: must be fp16, int8, binary or dims=K "
                        "(as `evaluate --compress` records it)")
    if not (_is_count(protocol.get("bytes_per_item")) and protocol["bytes_per_item"] > 0):
        problems.append(f"{where}.bytes_per_item is {protocol.get('bytes_per_item')!r}: must be a positive integer "
                        "recorded with protocol.compression")
    return problems


def _check_tasks(tasks: Any, *, where: str, ks: list[int] | None, ci: bool = False,
                 measures: tuple[str, ...] | None = None) -> list[str]:
    """``ks`` given: full results (counts + exactly those metrics); None: published subset.
    ``ci``: a task may also carry ``"ci"`` (intervals, in results files; entries leave them out)."""
    if not isinstance(tasks, Mapping) or not tasks:
        return [f"{where!r} must be a non-empty object keyed by task ({', '.join(ALL_TASKS)})"]
    problems = []
    expected = metric_names(tuple(ks), measures) if ks else None
    for task, values in tasks.items():
        at = f"{where}.{task}"
        if task not in ALL_TASKS:
            problems.append(f"{where} has unknown task {task!r}: tasks are {', '.join(ALL_TASKS)}")
            continue
        if not isinstance(values, Mapping):
            problems.append(f"{at} must be an object")
            continue
        metrics = [key for key in values if key not in COUNTS and not (ci and key == "ci")]
        problems += [f"{at}.{key} is not a canonical metric key (R@K, MRR@K, MAP@R, RP or mAP@K)"
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
    elif relative_problem(path):
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


def _check_test_set(value: Any, where: str) -> list[str]:
    """``{"items": {"P": n, "V": n, "L": n}, "products": n}``: what an entry was computed on."""
    if not isinstance(value, Mapping):
        return [f"{where!r} must be an object with 'items' and 'products'"]
    problems = [f"{where}.{key} is not a known field" for key in value if key not in ("items", "products")]
    items = value.get("items")
    if not isinstance(items, Mapping) or not all(k in DOMAINS and _is_count(v) for k, v in items.items()):
        problems.append(f"{where}.items must map domains ({', '.join(DOMAINS)}) to item counts")
    if value.get("products") is not None and not _is_count(value["products"]):
        problems.append(f"{where}.products must be a count or null")
    return problems


def check_entry(entry: Any) -> list[str]:
    """All schema problems of one leaderboard entry."""
    if not isinstance(entry, Mapping):
        return ["an entry must be a JSON object"]
    problems = _check_document(entry, ENTRY_SCHEMA, "an entry", _ENTRY_KEYS,
                               ("name", "label", "suite", "description", "source"))
    for key in ("name", "suite"):
        if isinstance(entry.get(key), str) and not NAME_PATTERN.match(entry[key]):
            problems.append(f"{key!r} {entry[key]!r} must match {NAME_PATTERN.pattern}")
    problems += text_problems(entry.get("label"), "label", limit=MAX_LABEL)
    if "label_latex" in entry:
        _nonempty_str(entry, "label_latex", problems)
        problems += latex_problems(entry["label_latex"])
    from ropebench.leaderboard.metadata import metadata_problems

    problems += metadata_problems(entry)
    kind = entry.get("kind")
    if kind == "computed":
        problems += check_protocol(entry.get("protocol"))
        problems += _check_file_ref(entry.get("submission"), "submission",
                                    extra=("n_items", "dim", "dtype"))
        if entry.get("manifest") is not None:  # None: a self-labelled submission
            problems += _check_file_ref(entry["manifest"], "manifest")
        elif "manifest" not in entry:
            problems.append("'manifest' is missing (null for a self-labelled submission)")
        if "per_query" in entry:
            problems += _check_file_ref(entry["per_query"], "per_query")
        if "test_set" in entry:
            problems += _check_test_set(entry["test_set"], "test_set")
        protocol = entry.get("protocol")
        ks = protocol.get("ks") if isinstance(protocol, Mapping) else None
        # Without usable ks (a protocol problem, reported) the values are checked, not the keys.
        usable = isinstance(ks, list) and ks and all(_is_count(k) and k > 0 for k in ks)
        problems += _check_tasks(entry.get("results"), where="results", ks=ks if usable else None,
                                 measures=_measures_of(protocol))
        if "fewshot" in entry:
            problems += _check_fewshot(entry["fewshot"])
    elif kind == "published":
        problems += [f"{key!r} is only for computed entries: a published entry cannot be "
                     "recomputed" for key in ("submission", "manifest", "per_query", "test_set") if key in entry]
        if "protocol" in entry:
            problems += check_protocol(entry["protocol"], partial=True)
        problems += _check_tasks(entry.get("results"), where="results", ks=None)
    else:
        problems.append(f"'kind' is {kind!r}: must be 'published' or 'computed'")
    return problems


def declaration_problems(suite: Mapping[str, Any]) -> list[str]:
    """Problems of what a suite declares it is about: ``manifest`` (``{"path", "sha256"}``, path
    optional for a manifest kept elsewhere, or null), ``items`` per domain and ``products``.
    A suite must declare its manifest's sha256, or both ``items`` and ``products``."""
    problems = []
    manifest = suite.get("manifest")
    if isinstance(manifest, str):
        problems.append(f"'manifest' is the path {manifest!r} without its sha256: declare "
                        f'{{"path": "{manifest}", "sha256": "<sha256sum of the file>"}} so a changed '
                        "manifest cannot pass unnoticed")
    elif manifest is not None:
        if not isinstance(manifest, Mapping):
            problems.append("'manifest' must be null or an object with 'sha256' (and 'path')")
        else:
            problems += [f"manifest.{key} is not a known field" for key in manifest if key not in ("path", "sha256")]
            if not isinstance(manifest.get("sha256"), str) or not _SHA256.match(manifest["sha256"]):
                problems.append("manifest.sha256 must be 64 lower-case hex digits")
            path = manifest.get("path")
            if path is not None and (not isinstance(path, str) or relative_problem(path)):
                problems.append(f"manifest.path {path!r} must be relative to the directory holding "
                                "leaderboards/, in POSIX form, without '..'")
    items, products = suite.get("items"), suite.get("products")
    if items is not None and (not isinstance(items, Mapping) or set(items) != set(DOMAINS)
                              or not all(_is_count(v) for v in items.values())):
        problems.append(f"'items' must map each domain ({', '.join(DOMAINS)}) to its number of items")
    if products is not None and not (_is_count(products) and products > 0):
        problems.append("'products' must be the (positive) number of products")
    if (items is None) != (products is None):
        problems.append("'items' and 'products' are declared together")
    if not isinstance(manifest, Mapping) and (items is None or products is None) and not problems:
        problems.append("the suite declares nothing about its test set: give 'manifest' "
                        '({"path", "sha256"}) or \'items\' and \'products\' (create suites with '
                        "`ropebench leaderboard init`)")
    return problems


def check_suite(suite: Any) -> list[str]:
    """All schema problems of a suite file ``leaderboards/<suite>/suite.json``."""
    if not isinstance(suite, Mapping):
        return ["a suite file must be a JSON object"]
    problems = _check_document(suite, SUITE_SCHEMA, "a suite", _SUITE_KEYS,
                               ("name", "title", "label_column"))
    if isinstance(suite.get("name"), str) and not NAME_PATTERN.match(suite["name"]):
        problems.append(f"'name' {suite['name']!r} must match {NAME_PATTERN.pattern}")
    for key in ("title", "label_column"):
        problems += text_problems(suite.get(key), key, limit=MAX_LABEL)
    entries = suite.get("entries")
    if (not isinstance(entries, list) or not all(isinstance(e, str) for e in entries)
            or len(set(entries)) != len(entries)):
        problems.append("'entries' must be a list of distinct entry names (the row order)")
    else:
        problems += [f"'entries' has {e!r}: an entry name is a file name in this directory and must match "
                     f"{NAME_PATTERN.pattern} (no '/', no '..')" for e in entries if not NAME_PATTERN.match(e)]
    captions = suite.get("captions", {})
    if not isinstance(captions, Mapping) or not all(
            key in ("1", "2") and isinstance(value, str) for key, value in captions.items()):
        problems.append("'captions' must map '1' and/or '2' to the table captions")
    metrics = suite.get("metrics")
    if metrics is not None and (not isinstance(metrics, list) or not metrics
                                or not all(isinstance(m, str) and _METRIC_KEY.match(m)
                                           for m in metrics)):
        problems.append("'metrics' must be a list of canonical metric keys such as 'R@1'")
    baseline = suite.get("baseline")
    if baseline is not None and (not isinstance(baseline, str) or not isinstance(entries, list)
                                 or baseline not in entries):
        problems.append(f"'baseline' is {baseline!r}: it must name one of the suite's entries (the entry "
                        "`ropebench table --significance` compares every other computed entry with)")
    problems += check_protocol(suite.get("protocol"), partial=True)
    problems += declaration_problems(suite)
    return problems


def check_results(results: Any) -> list[str]:
    """All problems of a results file as ``leaderboard add`` needs it."""
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
    reference = results.get("per_query")
    if reference is not None and (not isinstance(reference, Mapping) or not isinstance(reference.get("path"), str)
                                  or not reference["path"] or not isinstance(reference.get("sha256"), str)
                                  or not _SHA256.match(reference["sha256"])):
        problems.append("'per_query' must be null or record the per-query file's 'path' (relative to the results "
                        "file) and 'sha256'")
    ks = protocol.get("ks") if isinstance(protocol, Mapping) else None
    if isinstance(ks, list) and ks and all(_is_count(k) and k > 0 for k in ks):
        problems += _check_tasks(results.get("tasks"), where="tasks", ks=ks, ci=True, measures=_measures_of(protocol))
    return problems


_FEWSHOT_COUNTS = ("n_queries", "n_skipped", "n_ways")
_FEWSHOT_VALUES = ("acc", "acc_macro", "acc@5", "sd")


def _check_fewshot(section: Any) -> list[str]:
    """An entry's few-shot section (docs/fewshot.md): its draws' settings and, per direction and
    shot count, the counts and the accuracies in percent (null where no query was scored)."""
    from ropebench.protocol import CROSS_TASKS

    if not isinstance(section, Mapping) or set(section) != {"protocol", "tasks"}:
        return ["'fewshot' must be an object with exactly 'protocol' and 'tasks'"]
    problems = []
    settings = section["protocol"]
    if not isinstance(settings, Mapping) or set(settings) != {"shots", "draws", "seed"}:
        problems.append("fewshot.protocol must be {shots, draws, seed}")
    else:
        shots = settings["shots"]
        if not isinstance(shots, list) or not shots or not all(_is_count(k) and k > 0 for k in shots):
            problems.append(f"fewshot.protocol.shots is {shots!r}: must be positive integers")
        if not (_is_count(settings["draws"]) and settings["draws"] > 0):
            problems.append(f"fewshot.protocol.draws is {settings['draws']!r}: must be a positive integer")
        if not _is_count(settings["seed"]):
            problems.append(f"fewshot.protocol.seed is {settings['seed']!r}: must be a non-negative integer")
    tasks = section["tasks"]
    if not isinstance(tasks, Mapping) or not tasks:
        return problems + ["fewshot.tasks must be a non-empty object keyed by direction (P2V, V2P, ...)"]
    for direction, by_shots in tasks.items():
        if direction not in CROSS_TASKS:
            problems.append(f"fewshot.tasks: {direction!r} is not a cross-domain direction")
            continue
        if not isinstance(by_shots, Mapping) or not by_shots:
            problems.append(f"fewshot.tasks.{direction} must be an object keyed by 'K-shot'")
            continue
        for shots, cell in by_shots.items():
            where = f"fewshot.tasks.{direction}.{shots}"
            if not (isinstance(shots, str) and re.fullmatch(r"[1-9][0-9]*-shot", shots)):
                problems.append(f"fewshot.tasks.{direction}: {shots!r} is not 'K-shot'")
                continue
            if not isinstance(cell, Mapping) or set(cell) != set(_FEWSHOT_COUNTS + _FEWSHOT_VALUES):
                problems.append(f"{where} must hold exactly {', '.join(_FEWSHOT_COUNTS + _FEWSHOT_VALUES)}")
                continue
            problems += [f"{where}.{key} must be a non-negative integer" for key in _FEWSHOT_COUNTS
                         if not _is_count(cell[key])]
            problems += [f"{where}.{key} must be a number in 0-100 or null" for key in _FEWSHOT_VALUES
                         if cell[key] is not None and not (isinstance(cell[key], (int, float))
                                                          and not isinstance(cell[key], bool)
                                                          and 0 <= cell[key] <= 100)]
    return problems
