"""Rendering of the paper's tables (Table 1, Table 2) and of the 3×3 domain matrix.

Pure functions: entries (the dicts of ``leaderboards/<suite>/<entry>.json``) in, text out. This
is the only place a number is rounded (two decimals, ``65.20``); the machine formats (csv, json)
carry the unrounded values. No file is read or written here.

Formats: ``markdown`` (GitHub pipes), ``latex`` (booktabs), ``csv``, ``html`` (a standalone
page), ``json`` and ``text``.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ropebench.errors import UsageError
from ropebench.protocol import CROSS_TASKS, DOMAINS, INTRA_TASKS
from ropebench.render.numbers import MISSING, format_number, grid

SIGNIFICANT = "†"  # marks a cell that differs significantly from the suite's baseline entry

__all__ = [
    "FORMATS",
    "DEFAULT_METRICS",
    "Row",
    "Table",
    "task_table",
    "matrix_table",
    "render",
    "format_number",
    "markdown_grid",
]

FORMATS: tuple[str, ...] = ("markdown", "latex", "csv", "html", "json", "text")
DEFAULT_METRICS: tuple[str, ...] = ("R@1", "R@5", "R@10", "R@20", "R@50")
TASKS_OF: dict[str, tuple[str, ...]] = {"1": CROSS_TASKS, "2": INTRA_TASKS}
DEFAULT_CAPTIONS: dict[str, str] = {"1": "Cross-domain retrieval", "2": "Intra-domain retrieval"}


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
        metric: the matrix's metric; None for tables 1 and 2.
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

    def records(self) -> list[dict[str, Any]]:
        """Unrounded rows for csv/json, every field present."""
        out = []
        for row in self.rows:
            head: dict[str, Any] = {"table": self.kind}
            if self.metric is None:
                head.update(task=row.group, entry=row.entry)
            else:
                head.update(metric=self.metric, entry=row.entry, query=row.group)
            head[self.label_name] = row.label
            record = {**head, **dict(zip(self.value_headers, row.values))}
            if any(r.intervals is not None for r in self.rows):  # every record has the same fields
                intervals = row.intervals or (None,) * len(self.value_headers)
                for name, bounds in zip(self.value_headers, intervals):
                    record[f"{name} low"], record[f"{name} high"] = bounds if bounds is not None else (None, None)
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
        if any(row.marks is not None for row in self.rows):
            extra += [f"{name} significant" for name in self.value_headers]
        if self.metric is None:
            return ["table", "task", "entry", self.label_name, *self.value_headers, *extra]
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


# --------------------------------------------------------------------------- rendering


def _best_cells(table: Table) -> set[tuple[int, int]]:
    """(row, column) of the best value per column: within each task for tables 1 and 2,
    over the whole column for the matrix. Compared as printed, so equal printed values tie;
    a group of one row is not highlighted (nothing to compare with)."""
    if table.metric is None:
        groups: dict[str, list[int]] = {}
        for index, row in enumerate(table.rows):
            groups.setdefault(row.group, []).append(index)
        blocks = list(groups.values())
    else:
        blocks = [list(range(len(table.rows)))]
    best: set[tuple[int, int]] = set()
    for block in blocks:
        if len(block) < 2:
            continue
        for column in range(len(table.value_headers)):
            printed = {i: table.rows[i].values[column] for i in block}
            values = [round(v, 2) for v in printed.values() if v is not None]
            if values:
                top = max(values)
                best.update((i, column) for i, v in printed.items()
                            if v is not None and round(v, 2) == top)
    return best


def _grid(table: Table, highlight: bool, mark: Any) -> tuple[list[str], list[list[str]]]:
    """Header and display cells (strings); ``mark(text)`` decorates a highlighted cell."""
    best = _best_cells(table) if highlight else set()
    header = [table.group_header]
    if table.label_header is not None:
        header.append(table.label_header)
    header.extend(table.value_headers)
    body = []
    for i, row in enumerate(table.rows):
        cells = [row.group] + ([row.label] if table.label_header is not None else [])
        for j, value in enumerate(row.values):
            text = format_number(value)
            bounds = row.intervals[j] if row.intervals is not None else None
            if value is not None and bounds is not None:
                text += f" ± {format_number((bounds[1] - bounds[0]) / 2)}"
            if row.marks is not None and row.marks[j]:
                text += SIGNIFICANT
            cells.append(mark(text) if (i, j) in best else text)
        body.append(cells)
    return header, body


def _first_in_group(table: Table) -> list[int]:
    """For each row, the size of its group if it starts one, else 0 (for grouped task cells)."""
    spans = [0] * len(table.rows)
    start = 0
    for i in range(1, len(table.rows) + 1):
        if i == len(table.rows) or table.rows[i].group != table.rows[start].group:
            spans[start] = i - start
            start = i
    return spans


def markdown_grid(header: Sequence[str], body: Sequence[Sequence[str]], n_text: int) -> str:
    """A GitHub pipe table; the first ``n_text`` columns left-aligned, the rest right."""
    return grid(header, body, "markdown", n_text=n_text)


def _markdown(table: Table, highlight: bool) -> str:
    header, body = _grid(table, highlight, lambda text: f"**{text}**")
    n_text = len(header) - len(table.value_headers)
    return f"**{table.title}.** {table.caption}\n\n" + markdown_grid(header, body, n_text)


def _text(table: Table, highlight: bool) -> str:
    header, body = _grid(table, highlight, lambda text: f"{text}*")
    spans = _first_in_group(table)
    for i, cells in enumerate(body):
        if spans[i] == 0:  # repeated task: left blank so groups read as blocks
            cells[0] = ""
    n_text = len(header) - len(table.value_headers)
    lines = [f"{table.title}. {table.caption}", grid(header, body, "text", n_text=n_text).rstrip("\n")]
    if highlight:
        lines.append("* best per column" + (" within a task" if table.metric is None else ""))
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}


def _label_key(key: str) -> str:
    """A ``\\label`` key: only characters LaTeX's label mechanism takes as they are."""
    return re.sub(r"[^A-Za-z0-9:._-]", "-", key)


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def _latex(table: Table, highlight: bool) -> str:
    header, body = _grid(table, highlight, lambda text: f"\\textbf{{{text}}}")
    spans = _first_in_group(table)
    has_label = table.label_header is not None
    n_text = len(header) - len(table.value_headers)
    lines = [
        "% Requires \\usepackage{booktabs} and \\usepackage{multirow}.",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{_latex_escape(table.caption)}}}",
        f"\\label{{tab:{_label_key(table.key)}}}",
        f"\\begin{{tabular}}{{{'l' * n_text}{'r' * len(table.value_headers)}}}",
        "\\toprule",
        " & ".join(_latex_escape(text) for text in header) + " \\\\",
        "\\midrule",
    ]
    grouped = any(span > 1 for span in spans)
    for i, (row, cells) in enumerate(zip(table.rows, body)):
        if grouped and spans[i] and i > 0:
            lines.append("\\midrule")
        if spans[i] > 1:
            first = f"\\multirow{{{spans[i]}}}{{*}}{{{_latex_escape(row.group)}}}"
        elif spans[i] == 1:
            first = _latex_escape(row.group)
        else:
            first = ""
        out = [first]
        if has_label:
            out.append(row.label_latex if row.label_latex else _latex_escape(row.label))
        # Value cells are digits, "\textbf{...}" or the en dash; the dash becomes "--".
        out += [text.replace(MISSING, "--").replace(" ± ", r" $\pm$ ").replace(SIGNIFICANT, r"$^{\dagger}$")
                for text in cells[n_text:]]
        lines.append(" & ".join(out) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _html_table(table: Table, highlight: bool) -> str:
    esc = html.escape
    header, body = _grid(table, highlight, lambda text: f"\0{text}")
    spans = _first_in_group(table)
    n_text = len(header) - len(table.value_headers)
    lines = [
        f'<table id="{esc(table.key)}">',
        f"<caption><strong>{esc(table.title)}.</strong> {esc(table.caption)}</caption>",
        "<thead><tr>" + "".join(f'<th scope="col">{esc(text)}</th>' for text in header)
        + "</tr></thead>",
        "<tbody>",
    ]
    for i, cells in enumerate(body):
        parts = []
        if spans[i]:
            rowspan = f' rowspan="{spans[i]}"' if spans[i] > 1 else ""
            parts.append(f'<th scope="row"{rowspan}>{esc(cells[0])}</th>')
        parts += [f"<td>{esc(text)}</td>" for text in cells[1:n_text]]
        for text in cells[n_text:]:
            shown = f"<strong>{esc(text[1:])}</strong>" if text.startswith("\0") else esc(text)
            shown = shown.replace(SIGNIFICANT, f"<sup>{SIGNIFICANT}</sup>")
            parts.append(f'<td class="num">{shown}</td>')
        lines.append("<tr>" + "".join(parts) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines) + "\n"


_HTML_STYLE = """\
body { font-family: system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; margin: 1.5em 0; border-top: 2px solid; border-bottom: 2px solid; }
caption { caption-side: top; text-align: left; padding-bottom: 0.5em; }
thead th { border-bottom: 1px solid; }
th, td { padding: 0.25em 0.75em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def _html_page(tables: Sequence[Table], highlight: bool, title: str) -> str:
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>",
        f"<style>\n{_HTML_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{esc(title)}</h1>",
    ]
    parts += [_html_table(table, highlight).rstrip("\n") for table in tables]
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _csv(tables: Sequence[Table]) -> str:
    buffer = io.StringIO()
    columns: list[str] = []
    for table in tables:
        for name in table.columns():
            if name not in columns:
                columns.append(name)
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", restval="")
    writer.writeheader()
    for table in tables:
        for record in table.records():
            writer.writerow({k: ("" if v is None else v) for k, v in record.items()})
    return buffer.getvalue()


def _json(tables: Sequence[Table], title: str) -> str:
    document = {
        "title": title,
        "tables": [
            {"table": table.kind, "title": table.title, "caption": table.caption,
             **({"metric": table.metric} if table.metric else {}),
             "columns": table.columns(), "rows": table.records()}
            for table in tables
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render(
    tables: Sequence[Table],
    fmt: str,
    *,
    highlight: bool = False,
    title: str = "ropebench",
) -> str:
    """Render tables in one format; several tables are separated by a blank line.

    ``highlight`` bolds the best value per column (within each task for tables 1 and 2); it
    is refused for csv and json, which carry raw values. ``title`` names the HTML page and the
    JSON document.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if highlight and fmt in ("csv", "json"):
        raise UsageError(f"--highlight does not apply to {fmt}, which carries unrounded values; "
                         "drop --highlight or choose markdown, latex, html or text")
    if fmt == "csv":
        return _csv(tables)
    if fmt == "json":
        return _json(tables, title)
    if fmt == "html":
        return _html_page(tables, highlight, title)
    one = {"markdown": _markdown, "latex": _latex, "text": _text}[fmt]
    return "\n".join(one(table, highlight) for table in tables)
