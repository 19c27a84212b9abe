"""Domain codes, their accepted spellings and the nine retrieval tasks (DESIGN.md §1)."""

from __future__ import annotations

from collections.abc import Iterable

from ropebench.errors import UsageError

__all__ = [
    "DOMAINS",
    "DOMAIN_NAMES",
    "CROSS_TASKS",
    "INTRA_TASKS",
    "ALL_TASKS",
    "SPELLINGS",
    "canonical_domain",
    "parse_tasks",
    "split_task",
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


def canonical_domain(spelling: object) -> str | None:
    """Return the code (``P``/``V``/``L``) of an accepted spelling, or None if it is unknown."""
    if not isinstance(spelling, str):
        return None
    return SPELLINGS.get(spelling.strip().lower())


def split_task(task: str) -> tuple[str, str]:
    """``"P2V"`` -> ``("P", "V")`` (query domain, gallery domain)."""
    return task[0], task[2]


def parse_tasks(tasks: str | Iterable[str] | None) -> tuple[str, ...]:
    """Parse a task selection (``"P2V,V2P"`` or an iterable) into canonical codes in §1 order.

    None selects all nine tasks. Raises UsageError naming every unknown task at once.
    """
    if tasks is None:
        return ALL_TASKS
    items = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    wanted, unknown = set(), []
    for item in items:
        code = str(item).strip().upper()
        if code in ALL_TASKS:
            wanted.add(code)
        elif code:
            unknown.append(str(item).strip())
    if unknown:
        raise UsageError(
            f"unknown task(s) {', '.join(map(repr, unknown))}: "
            f"choose from {','.join(ALL_TASKS)}"
        )
    if not wanted:
        raise UsageError(f"no task selected: choose from {','.join(ALL_TASKS)}")
    return tuple(t for t in ALL_TASKS if t in wanted)
