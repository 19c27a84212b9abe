"""Rendering of the paper's tables (Table 1, Table 2) and of the 3×3 domain matrix.

Pure functions: entries (the dicts of ``leaderboards/<suite>/<entry>.json``) in, text out. This
is the only place a number is rounded (two decimals, ``65.20``); the machine formats (csv, json)
carry the unrounded values. No file is read or written here.

Formats: ``markdown`` (GitHub pipes), ``latex`` (booktabs), ``csv``, ``html`` (a standalone
page), ``json`` and ``text``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ropebench.errors import UsageError
from ropebench.protocol import CROSS_TASKS, DOMAINS, INTRA_TASKS
from ropebench.render.numbers import format_number, grid

SIGNIFICANT = "†"  # marks a cell that differs significantly from the suite's baseline entry

__all__ = [
    "FORMATS",
    "DEFAULT_METRICS",
    "Row",
    "Table",
    "task_table",
    "matrix_table",
    "fewshot_table",
    "FEWSHOT_COLUMNS",

    "format_number",
    "markdown_grid",
]

FORMATS: tuple[str, ...] = ("markdown", "latex", "csv", "html", "json", "text")
DEFAULT_METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "R@20", "R@50")
TASKS_OF: dict[str, tuple[str, ...]] = {"1": CROSS_TASKS, "2": INTRA_TASKS}
DEFAULT_CAPTIONS: dict[str, str] = {"1": "Cross-domain retrieval", "2": "Intra-domain retrieval"}
FEWSHOT_COLUMNS: tuple[str, ...] = ("acc", "sd", "acc_macro", "acc@5")


@dataclass(frozen=True)
class Row:
    """One table row: a group (task code, or query domain of the matrix) and one entry's values."""

    group: str
    entry: str
    label: str
    label_latex: str | None
    values: tuple[float | None, ...]
    # Optional annotations, one per value: a significant difference from the suite's baseline
    # (shown as a dagger) and a 95% interval (shown as ± half-width).
    marks: tuple[bool, ...] | None = None
    intervals: tuple[tuple[float, float] | None, ...] | None = None
    # A 95% rank interval per value among the suite's computed entries (shown as "(1–2)"), and a
    # short text cell after the label (the letter groups of the ranks table).
    ranks: tuple[tuple[int, int] | None, ...] | None = None
    tag: str | None = None


@dataclass(frozen=True)
class Table:
    """A rendered-to-be table.

    Attributes:
        kind: ``"1"``, ``"2"`` or ``"matrix"``.
        key: identifier for LaTeX ``\\label`` and HTML ``id`` (e.g. ``rope-test-table1``).
        title: ``"Table 1"``; captions are printed as ``Table 1. <caption>``.
        group_header: header of the first column (``tasks``, or ``query \\ gallery``).
        label_header: header of the row-label column, or None when it is not displayed.
        label_name: name of the label field in csv/json (always present there).
        value_headers: metric names (tables 1, 2) or gallery domains (matrix).
        metric: the matrix's metric; None for tables 1 and 2 (and the ranks table).
        tag_header: header of a text column after the label (the ranks table's ``group``), or None.
    """

    kind: str
    key: str
    title: str
    caption: str
    group_header: str
    label_header: str | None
    label_name: str
    value_headers: tuple[str, ...]
    rows: tuple[Row, ...]
    metric: str | None = None
    tag_header: str | None = None

    def records(self) -> list[dict[str, Any]]:
        """Unrounded rows for csv/json, every field present."""
        out = []
        for row in self.rows:
            head: dict[str, Any] = {"table": self.kind}
            if self.kind == "ranks":
                head.update(rank=int(row.group), entry=row.entry)
            elif self.metric is None:
                head.update(task=row.group, entry=row.entry)
            else:
                head.update(metric=self.metric, entry=row.entry, query=row.group)
            head[self.label_name] = row.label
            if self.tag_header is not None:
                # the few-shot table's n_ways is a count, kept a number in csv/json
                head[self.tag_header] = int(row.tag) if self.kind == "fewshot" and row.tag else row.tag
            record = {**head, **dict(zip(self.value_headers, row.values))}
            if any(r.intervals is not None for r in self.rows):  # every record has the same fields
                intervals = row.intervals or (None,) * len(self.value_headers)
                for name, bounds in zip(self.value_headers, intervals):
                    record[f"{name} low"], record[f"{name} high"] = bounds if bounds is not None else (None, None)
            if any(r.ranks is not None for r in self.rows):
                ranks = row.ranks or (None,) * len(self.value_headers)
                for name, bounds in zip(self.value_headers, ranks):
                    record[f"{name} rank low"], record[f"{name} rank high"] = bounds if bounds is not None \
                        else (None, None)
            if any(r.marks is not None for r in self.rows):
                marks = row.marks or (False,) * len(self.value_headers)
                record.update({f"{name} significant": bool(flag) for name, flag in zip(self.value_headers, marks)})
            out.append(record)
        return out

    def columns(self) -> list[str]:
        """Field names of :meth:`records`, in order."""
        extra: list[str] = []
        if any(row.intervals is not None for row in self.rows):
            extra += [f"{name} {end}" for name in self.value_headers for end in ("low", "high")]
        if any(row.ranks is not None for row in self.rows):
            extra += [f"{name} rank {end}" for name in self.value_headers for end in ("low", "high")]
        if any(row.marks is not None for row in self.rows):
            extra += [f"{name} significant" for name in self.value_headers]
        tag = [self.tag_header] if self.tag_header is not None else []
        if self.kind == "ranks":
            return ["table", "rank", "entry", self.label_name, *tag, *self.value_headers, *extra]
        if self.metric is None:
            return ["table", "task", "entry", self.label_name, *tag, *self.value_headers, *extra]
        return ["table", "metric", "entry", self.label_name, "query", *self.value_headers, *extra]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def task_table(
    entries: Sequence[Mapping[str, Any]],
    kind: str,
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    label_column: str = "label",
    caption: str | None = None,
    key: str = "ropebench",
) -> Table:
    """Table 1 (``kind="1"``: the six cross tasks) or Table 2 (``"2"``: P2P, V2V, L2L).

    One row per (task, entry) for every entry that reports the task; tasks in protocol order,
    entries in the order given. Missing metrics are empty cells.
    """
    if kind not in TASKS_OF:
        raise UsageError(f"unknown table {kind!r}: choose from {', '.join(TASKS_OF)}")
    tasks, caption = TASKS_OF[kind], caption or DEFAULT_CAPTIONS[kind]
    rows = []
    for task in tasks:
        for entry in entries:
            result = entry.get("results", {}).get(task)
            if result is None:
                continue
            rows.append(
                Row(
                    group=task,
                    entry=str(entry["name"]),
                    label=str(entry.get("label", entry["name"])),
                    label_latex=entry.get("label_latex"),
                    values=tuple(_number(result.get(metric)) for metric in metrics),
                )
            )
    # The label column is shown when it tells rows apart: the paper's Table 2 has one model
    # and no loss column.
    shown = len({row.entry for row in rows}) > 1
    return Table(
        kind=kind,
        key=f"{key}-table{kind}",
        title=f"Table {kind}",
        caption=caption,
        group_header="tasks",
        label_header=label_column if shown else None,
        label_name=label_column,
        value_headers=tuple(metrics),
        rows=tuple(rows),
    )


def matrix_table(
    results: Mapping[str, Mapping[str, Any]],
    *,
    metric: str = "R@1",
    entry: str = "",
    label: str = "",
    label_column: str = "label",
    key: str = "ropebench",
) -> Table:
    """3×3 matrix of ``metric``: rows = query domain, columns = gallery domain.

    ``results`` is the ``tasks`` object of a results file (or an entry's ``results``); tasks it
    lacks are empty cells.
    """
    rows = tuple(
        Row(group=query, entry=entry, label=label, label_latex=None,
            values=tuple(_number(results.get(f"{query}2{gallery}", {}).get(metric))
                         for gallery in DOMAINS))
        for query in DOMAINS
    )
    name = f"{label} ({entry})" if label and label != entry else entry
    return Table(
        kind="matrix",
        key=f"{key}-matrix-{entry}",
        title="Matrix",
        caption=f"{metric} of {name}: query domain (rows) × gallery domain (columns)",
        group_header="query \\ gallery",
        label_header=None,
        label_name=label_column,
        value_headers=DOMAINS,
        rows=rows,
        metric=metric,
    )


def fewshot_table(entries: Sequence[Mapping[str, Any]], *, label_column: str = "label", ci: bool = False,
                  key: str = "ropebench") -> Table:
    """Few-shot classification (docs/fewshot.md): one row per (task ``V2P/1-shot``, entry) of every
    entry with a ``fewshot`` section, directions in protocol order, then shots; columns ``n_ways``
    and ``acc sd acc_macro acc@5`` (percent). ``ci``: each acc with its stored 95% interval."""
    from ropebench.protocol import fewshot_task_order

    cells: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    settings = []
    for entry in entries:
        section = entry.get("fewshot")
        if not isinstance(section, Mapping):
            continue
        protocol = section.get("protocol") or {}
        settings.append(f"{protocol.get('draws', '?')} draws, seed {protocol.get('seed', '?')}")
        for direction, by_shots in (section.get("tasks") or {}).items():
            for shots, numbers in by_shots.items():
                cells.setdefault(f"{direction}/{shots}", []).append((entry, numbers))
    rows = []
    for task in sorted(cells, key=fewshot_task_order):
        for entry, numbers in cells[task]:
            bounds = (numbers.get("ci") or {}).get("acc") if ci else None
            rows.append(Row(
                group=task, entry=str(entry["name"]), label=str(entry.get("label", entry["name"])),
                label_latex=entry.get("label_latex"),
                values=tuple(_number(numbers.get(name)) for name in FEWSHOT_COLUMNS),
                intervals=((tuple(bounds),) + (None,) * 3) if ci and bounds else None,
                tag=None if numbers.get("n_ways") is None else str(int(numbers["n_ways"]))))
    shown = len({row.entry for row in rows}) > 1
    drawn = "; ".join(sorted(set(settings))) or "no draws"
    return Table(
        kind="fewshot",
        key=f"{key}-fewshot",
        title="Few-shot",
        caption=f"Cross-domain few-shot classification, accuracy in % (sd over draws; {drawn})",
        group_header="tasks",
        label_header=label_column if shown else None,
        label_name=label_column,
        value_headers=FEWSHOT_COLUMNS,
        rows=tuple(rows),
        tag_header="n_ways",
    )


# --------------------------------------------------------------------------- rendering


def markdown_grid(header: Sequence[str], body: Sequence[Sequence[str]], n_text: int) -> str:
    """A GitHub pipe table; the first ``n_text`` columns left-aligned, the rest right."""
    return grid(header, body, "markdown", n_text=n_text)
