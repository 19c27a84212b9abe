"""Each table format written out: markdown, text, LaTeX (booktabs), HTML, csv and json.

The table model and its builders are in :mod:`ropebench.render.tables`; numbers are formatted by
:mod:`ropebench.render.numbers`, the only place they are rounded.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ropebench.errors import UsageError
from ropebench.render.numbers import MISSING, format_number, grid
from ropebench.render.tables import FORMATS, SIGNIFICANT, Table, markdown_grid

__all__ = ["render", "markdown", "text", "latex", "html_page", "csv_text", "json_text"]


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
    if table.tag_header is not None:
        header.append(table.tag_header)
    header.extend(table.value_headers)
    body = []
    for i, row in enumerate(table.rows):
        cells = [row.group] + ([row.label] if table.label_header is not None else [])
        cells += [row.tag or ""] if table.tag_header is not None else []
        for j, value in enumerate(row.values):
            text = format_number(value)
            bounds = row.intervals[j] if row.intervals is not None else None
            if value is not None and bounds is not None:
                text += f" ± {format_number((bounds[1] - bounds[0]) / 2)}"
            ranks = row.ranks[j] if row.ranks is not None else None
            if value is not None and ranks is not None:
                text += f" ({ranks[0]}–{ranks[1]})"
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


def markdown(table: Table, highlight: bool) -> str:
    header, body = _grid(table, highlight, lambda text: f"**{text}**")
    n_text = len(header) - len(table.value_headers)
    return f"**{table.title}.** {table.caption}\n\n" + markdown_grid(header, body, n_text)


def text(table: Table, highlight: bool) -> str:
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
    # Captions carry these (± half-width, † significance mark, α): pdflatex without a Unicode
    # font setup stops at the raw characters.
    "±": r"$\pm$", "†": r"$^{\dagger}$", "α": r"$\alpha$", "Δ": r"$\Delta$", "−": r"$-$", "–": "--",
}


def _label_key(key: str) -> str:
    """A ``\\label`` key: only characters LaTeX's label mechanism takes as they are."""
    return re.sub(r"[^A-Za-z0-9:._-]", "-", key)


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def latex(table: Table, highlight: bool) -> str:
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
        if table.tag_header is not None:
            out.append(_latex_escape(row.tag or ""))
        # Value cells are digits, "\textbf{...}" or the en dash; the dash becomes "--".
        out += [text.replace(MISSING, "--").replace(" ± ", r" $\pm$ ").replace(SIGNIFICANT, r"$^{\dagger}$")
                .replace("–", "--")
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


def html_page(tables: Sequence[Table], highlight: bool, title: str) -> str:
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


def csv_text(tables: Sequence[Table]) -> str:
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


def json_text(tables: Sequence[Table], title: str, extra: Mapping[str, Any] | None = None) -> str:
    document = {
        "title": title,
        "tables": [
            {"table": table.kind, "title": table.title, "caption": table.caption,
             **({"metric": table.metric} if table.metric else {}),
             "columns": table.columns(), "rows": table.records()}
            for table in tables
        ],
        **(extra or {}),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render(
    tables: Sequence[Table],
    fmt: str,
    *,
    highlight: bool = False,
    title: str = "ropebench",
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render tables in one format; several tables are separated by a blank line.

    ``highlight`` bolds the best value per column (within each task for tables 1 and 2); it
    is refused for csv and json, which carry raw values. ``title`` names the HTML page and the
    JSON document; ``extra`` adds top-level keys to the JSON document (``ranks``, ``groups``).
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    if highlight and fmt in ("csv", "json"):
        raise UsageError(f"--highlight does not apply to {fmt}, which carries unrounded values; "
                         "drop --highlight or choose markdown, latex, html or text")
    if fmt == "csv":
        return csv_text(tables)
    if fmt == "json":
        return json_text(tables, title, extra)
    if fmt == "html":
        return html_page(tables, highlight, title)
    one = {"markdown": markdown, "latex": latex, "text": text}[fmt]
    return "\n".join(one(table, highlight) for table in tables)
