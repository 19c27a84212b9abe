"""A comparison of two evaluations as a table: text, markdown, LaTeX (booktabs) or JSON.

The primary hypothesis comes first, then every task and measure. Measures and Δ are rounded to
two decimals (Δ signed), p-values to four significant digits (``<0.0001`` below that); ``*``
marks a significant row (primary: unadjusted p < α; other cells: Holm-adjusted p < α).
"""

from __future__ import annotations

from typing import Any

from ropebench.render.numbers import MISSING, format_number, grid

__all__ = ["FORMATS", "render_comparison"]

FORMATS: tuple[str, ...] = ("text", "markdown", "latex", "json")
HEADER = ("task", "measure", "A", "B", "Δ", "95% CI", "p", "p (Holm)", "W/T/L", "queries", "products", "deff")
_MARK = "*"
_TEST_NAMES = {"randomization": "paired sign-flip randomization test", "bootstrap": "centred bootstrap test",
               "t": "cluster-robust t-test"}


def format_p(value: float | None) -> str:
    """``0.0123456`` -> ``"0.01235"``; below 0.0001 -> ``"<0.0001"``; None -> ``"–"``."""
    if value is None:
        return MISSING
    return "<0.0001" if value < 1e-4 else f"{value:#.4g}"


def _signed(value: float | None) -> str:
    return MISSING if value is None else f"{value:+.2f}"


def _interval(ci: Any) -> str:
    low, high = ci
    return MISSING if low is None or high is None else f"[{_signed(low)}, {_signed(high)}]"


def _rows(comparison: Any, mark: str) -> list[list[str]]:
    rows = []
    primary = comparison.primary
    if primary is not None:
        rows.append([f"{primary.hypothesis.split('/')[0]} (primary)", primary.hypothesis.split("/")[1],
                     format_number(primary.a), format_number(primary.b),
                     _signed(primary.delta) + (mark if primary.significant else ""), _interval(primary.ci),
                     format_p(primary.p), MISSING, MISSING, MISSING, MISSING, format_number(primary.design_effect)])
    for cell in comparison.cells:
        rows.append([cell.task, cell.measure, format_number(cell.a), format_number(cell.b),
                     _signed(cell.delta) + (mark if cell.significant else ""), _interval(cell.ci),
                     format_p(cell.p), format_p(cell.p_holm), f"{cell.wins}/{cell.ties}/{cell.losses}",
                     str(cell.n_queries), str(cell.n_products), format_number(cell.design_effect)])
    return rows


def legend(comparison: Any, mark: str = _MARK) -> list[str]:
    """The lines that say what the table's numbers are: inputs, test, unit, B, seed, marks."""
    settings = comparison.settings
    unit = "products" if settings.unit == "product" else "queries"
    names = [ref.path or "(in-memory table)" for ref in (comparison.a, comparison.b)]
    adjusted = (f"Holm-adjusted over {len(comparison.cells)} cells" if settings.correction == "holm"
                else "unadjusted")
    return [
        f"A: {names[0]}",
        f"B: {names[1]}",
        f"Δ = A − B in points, 95% percentile bootstrap interval over {unit}; "
        f"p: {_TEST_NAMES.get(settings.test, settings.test)} over {unit}; "
        f"B = {settings.resamples} resamples, seed {settings.seed}.",
        f"{mark} significant at α = {settings.alpha:g} (primary cross/R@1: unadjusted; other cells: {adjusted}). "
        "W/T/L: queries A wins/ties/loses; deff: design effect (product- over query-level variance of Δ).",
    ]


def _latex_escape(text: str) -> str:
    replacements = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                    "<": r"$<$", ">": r"$>$", "Δ": r"$\Delta$", "α": r"$\alpha$", "−": r"$-$", "–": "--"}
    return "".join(replacements.get(char, char) for char in text)


def _latex(comparison: Any) -> str:
    rows = _rows(comparison, "\x00")  # a placeholder, replaced by a superscript after escaping
    caption = _latex_escape(" ".join(legend(comparison, "\x00")[2:])).replace("\x00", "$^{*}$")
    lines = [
        "% Requires \\usepackage{booktabs}.",
        "\\begin{table}[t]",
        "\\centering",
        "\\caption{" + caption + "}",
        "\\begin{tabular}{ll" + "r" * (len(HEADER) - 2) + "}",
        "\\toprule",
        " & ".join(_latex_escape(text) for text in HEADER) + " \\\\",
        "\\midrule",
    ]
    for index, row in enumerate(rows):
        cells = [_latex_escape(text).replace("\x00", "$^{*}$") for text in row]
        lines.append(" & ".join(cells) + " \\\\")
        if index == 0 and comparison.primary is not None and len(rows) > 1:
            lines.append("\\midrule")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def render_comparison(comparison: Any, fmt: str = "text") -> str:
    """Render a :class:`~ropebench.compare.Comparison` as ``text``, ``markdown``, ``latex`` or ``json``."""
    from ropebench.errors import UsageError

    if fmt == "json":
        text: str = comparison.dumps()
        return text
    if fmt == "latex":
        return _latex(comparison)
    if fmt not in ("text", "markdown"):
        raise UsageError(f"unknown format {fmt!r}: choose from {', '.join(FORMATS)}")
    table = grid(HEADER, _rows(comparison, _MARK), fmt, n_text=2)
    if fmt == "markdown":  # two trailing spaces: a markdown line break
        return table + "\n" + "\n".join(f"{line}  " for line in legend(comparison, "\\" + _MARK)) + "\n"
    return table + "\n" + "\n".join(legend(comparison)) + "\n"
