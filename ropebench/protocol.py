"""The protocol's vocabulary, each word spelled once: domains, tasks, similarities, tie policies,
cut-offs and measure names.

Words: the *metric* is the similarity a search ranks by (``cosine``, ``ip``, ``l2``, as FAISS
calls it and as ``protocol.metric`` records it); a *measure* is what is computed from the ranks
(``R@10``, ``MRR@50``, as ir_measures calls it). The CLI's choices, the JSON keys and the table
columns all come from here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from ropebench.errors import UsageError

__all__ = [
    "DOMAINS",
    "DOMAIN_NAMES",
    "SPELLINGS",
    "CROSS_TASKS",
    "INTRA_TASKS",
    "ALL_TASKS",
    "TASK_GROUPS",
    "METRICS",
    "TIE_POLICIES",
    "DEFAULT_KS",
    "MEASURE_PATTERN",
    "canonical_domain",
    "split_task",
    "parse_tasks",
    "parse_ks",
    "measure_names",
    "check_measure",
    "MEASURE_FAMILIES",
    "DEFAULT_MEASURES",
    "parse_measures",
    "measure_order",
    "FEWSHOT_MEASURE_PATTERN",
    "FEWSHOT_TASK_PATTERN",
    "fewshot_task_order",
]

DOMAINS: tuple[str, ...] = ("P", "V", "L")
DOMAIN_NAMES: dict[str, str] = {"P": "product page", "V": "short video", "L": "live stream"}

# Every accepted spelling, lower-cased, mapped to its code.
SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("p", "page", "product_page", "product_pages"), "P"),
    **dict.fromkeys(("v", "video", "short_video", "short_videos"), "V"),
    **dict.fromkeys(("l", "live", "live_stream", "live_streams"), "L"),
}

CROSS_TASKS: tuple[str, ...] = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V")
INTRA_TASKS: tuple[str, ...] = ("P2P", "V2V", "L2L")
ALL_TASKS: tuple[str, ...] = CROSS_TASKS + INTRA_TASKS
TASK_GROUPS: dict[str, tuple[str, ...]] = {"cross": CROSS_TASKS, "intra": INTRA_TASKS, "all": ALL_TASKS}

METRICS: tuple[str, ...] = ("cosine", "ip", "l2")  # similarities: what the search ranks by
TIE_POLICIES: tuple[str, ...] = ("expected", "pessimistic", "optimistic")
DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 20, 50)
# Canonical measure keys: R@10, MRR@50, MAP@R, RP, mAP@100 (the JSON key, the CLI word, the column).
MEASURE_PATTERN = re.compile(r"^((R|MRR|mAP)@[1-9][0-9]*|MAP@R|RP)$")
# --measures chooses families: R@K (one key per K of --ks), MRR (MRR@{max K}), MAP@R, RP, mAP@K (a
# concrete K, e.g. mAP@100). The default is the paper's.
# Few-shot classification's per-query measures (its rows' columns; docs/fewshot.md).
FEWSHOT_MEASURE_PATTERN = re.compile(r"^acc(@[1-9][0-9]*)?$")
# A reported few-shot task (a per-query row's task, a table row): direction and shots, ``V2P/1-shot``.
FEWSHOT_TASK_PATTERN = re.compile(r"^(P2V|V2P|P2L|L2P|V2L|L2V)/([1-9][0-9]*)-shot$")
MEASURE_FAMILIES: tuple[str, ...] = ("R@K", "MRR", "MAP@R", "RP", "mAP@K")
DEFAULT_MEASURES: tuple[str, ...] = ("R@K", "MRR")
_MAP_AT_K = re.compile(r"^map@([1-9][0-9]*)$", re.IGNORECASE)


def canonical_domain(spelling: object) -> str | None:
    """Return the code (``P``/``V``/``L``) of an accepted spelling, or None if it is unknown."""
    if not isinstance(spelling, str):
        return None
    return SPELLINGS.get(spelling.strip().lower())


def split_task(task: str) -> tuple[str, str]:
    """``"P2V"`` -> ``("P", "V")`` (query domain, gallery domain)."""
    return task[0], task[2]


def parse_tasks(tasks: str | Iterable[str] | None) -> tuple[str, ...]:
    """Parse a task selection into canonical codes in the order of :data:`ALL_TASKS`.

    Accepts ``"P2V,V2P"``, an iterable of codes, and the groups ``cross``, ``intra`` and ``all``
    (mixed freely: ``"cross,P2P"``). None selects all nine tasks. Raises UsageError naming every
    unknown task at once.
    """
    if tasks is None:
        return ALL_TASKS
    items = tasks.split(",") if isinstance(tasks, str) else [part for item in tasks for part in str(item).split(",")]
    wanted: set[str] = set()
    unknown: list[str] = []
    for item in items:
        code = str(item).strip()
        if code.lower() in TASK_GROUPS:
            wanted.update(TASK_GROUPS[code.lower()])
        elif code.upper() in ALL_TASKS:
            wanted.add(code.upper())
        elif code:
            unknown.append(code)
    if unknown:
        raise UsageError(
            f"unknown task(s) {', '.join(map(repr, unknown))}: choose from {','.join(ALL_TASKS)} "
            f"or the groups {', '.join(TASK_GROUPS)}"
        )
    if not wanted:
        raise UsageError(f"no task selected: choose from {','.join(ALL_TASKS)} or {', '.join(TASK_GROUPS)}")
    return tuple(t for t in ALL_TASKS if t in wanted)


def parse_ks(ks: str | Sequence[int | str] | None) -> tuple[int, ...]:
    """``"1,5,10"`` or ``[10, 1]`` -> sorted unique ``(1, 5, 10)``; every K must be a positive integer."""
    if ks is None:
        return DEFAULT_KS
    items = ks.split(",") if isinstance(ks, str) else list(ks)
    values, bad = set(), []
    for item in items:
        text = str(item).strip()
        try:
            value = int(text)
        except ValueError:
            bad.append(text)
            continue
        if value < 1 or str(value) != text.lstrip("+"):
            bad.append(text)
        else:
            values.add(value)
    if bad or not values:
        raise UsageError(f"--ks: {', '.join(map(repr, bad)) or 'empty'} is not a list of positive integers "
                         f"(e.g. 1,5,10,20,50)")
    return tuple(sorted(values))


def parse_measures(measures: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"R@K,MRR,MAP@R,RP"`` -> canonical families in a fixed order (``R@K``, ``MRR``, ``MAP@R``,
    ``RP``, then ``mAP@K`` by K). Case-insensitive; ``R-Precision`` and ``MAP@R``'s lower-case
    spelling are accepted. None is the default ``R@K,MRR``. Raises UsageError naming every unknown item."""
    if measures is None:
        return DEFAULT_MEASURES
    items = measures.split(",") if isinstance(measures, str) else [p for m in measures for p in str(m).split(",")]
    found: set[str] = set()
    map_ks: set[int] = set()
    bad: list[str] = []
    spelled = {"r@k": "R@K", "mrr": "MRR", "map@r": "MAP@R", "rp": "RP", "r-precision": "RP", "rprec": "RP"}
    for item in items:
        text = item.strip()
        if not text:
            continue
        match = _MAP_AT_K.match(text)
        if text.lower() in spelled:
            found.add(spelled[text.lower()])
        elif match:
            map_ks.add(int(match.group(1)))
        else:
            bad.append(text)
    if bad or not (found or map_ks):
        raise UsageError(f"--measures: {', '.join(map(repr, bad)) or 'empty'}: choose from R@K, MRR, MAP@R, RP "
                         "and mAP@K with a number (e.g. mAP@100); e.g. --measures R@K,MRR,MAP@R,RP")
    return tuple(f for f in MEASURE_FAMILIES[:4] if f in found) + tuple(f"mAP@{k}" for k in sorted(map_ks))


def measure_order(name: str) -> tuple[int, int]:
    """Sort key of measure keys: R@K by K, MRR@K, MAP@R, RP, mAP@K by K, then few-shot acc, acc@K."""
    if name in ("MAP@R", "RP"):
        return (2 if name == "MAP@R" else 3, 0)
    family, _, k = name.partition("@")
    return ({"R": 0, "MRR": 1, "mAP": 4, "acc": 5}.get(family, 6), int(k) if k.isdigit() else 0)


def fewshot_task_order(name: str) -> tuple[int, int]:
    """Sort key of reported few-shot tasks: direction in the order of CROSS_TASKS, then shots."""
    found = FEWSHOT_TASK_PATTERN.match(name)
    if not found:
        return (len(CROSS_TASKS), 0)
    return (CROSS_TASKS.index(found.group(1)), int(found.group(2)))


def measure_names(ks: Sequence[int], measures: Sequence[str] | None = None) -> tuple[str, ...]:
    """Canonical measure keys for a K list and measure families (default ``R@K,MRR``): ``R@K``
    for each K, ``MRR@{max K}``, then ``MAP@R``, ``RP`` and ``mAP@K`` as chosen."""
    families = DEFAULT_MEASURES if measures is None else tuple(measures)
    out: list[str] = []
    if "R@K" in families:
        out += [f"R@{k}" for k in ks]
    if "MRR" in families:
        out.append(f"MRR@{max(ks)}")
    out += [f for f in families if f in ("MAP@R", "RP") or f.startswith("mAP@")]
    return tuple(out)


def check_measure(name: str, *, option: str = "--measure") -> str:
    """``name`` if it is a canonical measure key (``R@1``, ``MRR@50``), else UsageError."""
    if not MEASURE_PATTERN.match(name):
        raise UsageError(f"{option} {name!r}: use a canonical measure key such as R@1, R@10 or MRR@50")
    return name
