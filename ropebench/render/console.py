"""Text and markdown views of one evaluation (what ``ropebench evaluate`` prints).

Rendering is the only place a number is rounded (2 decimals, as in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ropebench.protocol import DOMAINS, measure_names
from ropebench.render.numbers import format_number, grid

__all__ = ["render_evaluation", "render_validation", "render_by_category", "format_interval"]


def _table(headers: list[str], rows: list[list[Any]], fmt: str) -> str:
    return grid(headers, rows, fmt, n_text=1).rstrip("\n")


def format_interval(value: float | None, bounds: Any, style: str) -> str:
    """``67.79 ± 2.10`` (``style="pm"``: half the interval's width) or ``67.79 [65.70, 69.90]``
    (``"bounds"``); the bare number when there is no interval."""
    text = format_number(value)
    if value is None or not bounds:
        return text
    low, high = bounds
    if style == "pm":
        return f"{text} ± {format_number((high - low) / 2)}"
    return f"{text} [{format_number(low)}, {format_number(high)}]"


def render_evaluation(result: Mapping[str, Any], fmt: str = "text", *, matrix_measure: str = "R@1",
                      ci: str | None = None) -> str:
    """The 3×3 domain matrix of ``matrix_measure`` and the per-task table, from a results JSON dict.

    ``ci``: ``"pm"`` or ``"bounds"`` shows each task's 95% interval beside its numbers.
    """
    tasks = result["tasks"]
    protocol = result["protocol"]
    submission = result["submission"]
    measure_keys = list(measure_names(protocol["ks"]))
    source = submission.get("path") or "arrays"
    header = (f"{source}: {submission['n_items']} items, d={submission['dim']} ({submission['dtype']}); "
              f"metric {protocol['metric']}, ties {protocol['ties']}, {protocol['search']} search")
    matrix_rows = [[q] + [format_number(tasks[f"{q}2{g}"].get(matrix_measure)) if f"{q}2{g}" in tasks else ""
                          for g in DOMAINS] for q in DOMAINS]
    task_rows = [[task, str(r["n_queries"]), str(r["n_skipped"]), str(r["n_gallery"]), str(r["n_tied"])]
                 + [format_interval(r.get(key), (r.get("ci") or {}).get(key), ci) if ci else format_number(r.get(key))
                    for key in measure_keys] for task, r in tasks.items()]
    matrix_title = f"{matrix_measure}: query domain (rows) × gallery domain (columns)"
    parts = [
        header if fmt == "text" else f"**{header}**",
        "",
        matrix_title if fmt == "text" else f"{matrix_title}:",
        "",
        _table(["query \\ gallery", *DOMAINS], matrix_rows, fmt),
        "",
        _table(["task", "n_queries", "n_skipped", "n_gallery", "n_tied", *measure_keys], task_rows, fmt),
    ]
    if ci:
        parts += ["", "Intervals: 95% product-level bootstrap (10,000 resamples, seed 0)."]
    by_category = result.get("by_category")
    missing = result.get("by_category_missing")
    if by_category or missing:
        parts += ["", render_by_category(by_category or {}, measure_keys, fmt, missing=missing).rstrip("\n")]
    return "\n".join(parts) + "\n"


def render_validation(dataset: Any, submission: str, manifest: str | None) -> str:
    """One short summary of what validation found valid."""
    counts = dataset.domain_counts()
    per_domain = ", ".join(f"{code} {counts[code]}" for code in DOMAINS)
    labels = f"labels from {manifest}" if manifest else "self-labelled (domain, product_id columns)"
    groups = "yes" if dataset.group_codes is not None else "no"
    n_products = len(set(dataset.product_codes.tolist()))
    return (f"valid: {submission}\n"
            f"  items:    {dataset.n_items} ({per_domain})\n"
            f"  products: {n_products}\n"
            f"  embedding: d={dataset.dim}, {dataset.dtype}\n"
            f"  labels:   {labels}; group_id: {groups}\n")


def render_by_category(by_category: Mapping[str, Mapping[str, Mapping[str, Any]]], measure_keys: list[str],
                       fmt: str, *, missing: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """One row per (category, task): the task's numbers over that category's queries; queries
    whose category is null last, as "(no category)"."""
    rows = [[str(category), task, str(cells["n_queries"])] + [format_number(cells.get(key)) for key in measure_keys]
            for category, tasks in by_category.items() for task, cells in tasks.items()]
    rows += [["(no category)", task, str(cells["n_queries"])] + [format_number(cells.get(key)) for key in measure_keys]
             for task, cells in (missing or {}).items()]
    title = "By category (the query's category):"
    return title + "\n\n" + grid(["category", "task", "n_queries", *measure_keys], rows, fmt, n_text=2)
