"""The one number formatter and the one text/markdown grid: every rendered number passes here.

Numbers are rounded to two decimals, as the paper prints them (``65.20``); a missing value is an
en dash. Text tables are tabulate's ``simple`` grid and markdown tables its ``pipe`` grid (GitHub
tables with alignment colons), labels left-aligned and numbers right-aligned.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

__all__ = ["MISSING", "format_number", "grid"]

MISSING = "–"  # a cell with no value (a task not reported, or no scored query)
_TABLEFMT = {"text": "simple", "markdown": "pipe"}
_LOCK = threading.Lock()  # MIN_PADDING is a tabulate module setting


def format_number(value: float | None, decimals: int = 2) -> str:
    """``65.2`` -> ``"65.20"``; None -> ``"–"``."""
    return MISSING if value is None else f"{value:.{decimals}f}"


def _markdown_cell(text: str) -> str:
    """A markdown table cell shows its text: ``|`` would end the cell and ``<``/``>`` would be
    read as raw HTML by GitHub (``&`` is left alone, so text escaped before is not escaped twice).
    A ``<`` before a digit, a space or ``=`` cannot open a tag and stays as is, so a p-value
    reads ``<0.0001`` in the terminal too, not ``&lt;0.0001``."""
    return re.sub(r"<(?![0-9.\s=-])", "&lt;", text.replace("|", "\\|")).replace(">", "&gt;")


def grid(header: Sequence[str], body: Sequence[Sequence[str]], fmt: str, *, n_text: int = 1) -> str:
    """A text (``fmt="text"``) or markdown (``"markdown"``) table of already formatted cells.

    The first ``n_text`` columns are left-aligned, the others right-aligned; cells are shown as
    given (no number parsing), and a ``|`` inside a markdown cell is escaped.
    """
    from tabulate import tabulate

    if fmt == "markdown":
        header = [_markdown_cell(cell) for cell in header]
        body = [[_markdown_cell(cell) for cell in row] for row in body]
    import tabulate as tabulate_module

    align = ["left"] * n_text + ["right"] * (len(header) - n_text)
    with _LOCK:
        # No extra padding around headers: a column is as wide as its widest cell, as in the paper.
        saved, tabulate_module.MIN_PADDING = tabulate_module.MIN_PADDING, 0
        try:
            text: str = tabulate([list(row) for row in body], headers=list(header), tablefmt=_TABLEFMT[fmt],
                                 disable_numparse=True, colalign=align)
        finally:
            tabulate_module.MIN_PADDING = saved
    return text + "\n"
