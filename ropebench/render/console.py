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
    measure_keys = list(measure_names(protocol["ks"], protocol.get("measures")))
    source = submission.get("path") or "arrays"
    header = (f"{source}: {submission['n_items']} items, d={submission['dim']} ({submission['dtype']}); "
              f"metric {protocol['metric']}, ties {protocol['ties']}, {protocol['search']} search")
    if protocol.get("compression"):
        header += f"; compressed {protocol['compression']} ({protocol.get('bytes_per_item')} bytes per item)"
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
    parts += _special_run(result, measure_keys, matrix_measure, fmt)
    parts += _fewshot(result.get("fewshot"), fmt)
    by_category = result.get("by_category")
    missing = result.get("by_category_missing")
    if by_category or missing:
        parts += ["", render_by_category(by_category or {}, measure_keys, fmt, missing=missing).rstrip("\n")]
    return "\n".join(parts) + "\n"


def _fewshot(section: Mapping[str, Any] | None, fmt: str) -> list[str]:
    """The few-shot classification table (``--fewshot``): one row per direction and shot count."""
    if not section or not section.get("tasks"):
        return []
    settings = section.get("protocol", {})
    title = (f"Few-shot classification (accuracy in %, sd over {settings.get('draws')} draws, seed "
             f"{settings.get('seed')}; docs/fewshot.md)")
    rows = []
    for task, by_shots in section["tasks"].items():
        for shots, cell in by_shots.items():
            low_high = (cell.get("ci") or {}).get("acc")
            rows.append([task, shots, str(cell.get("n_queries")), str(cell.get("n_skipped")), str(cell.get("n_ways")),
                         format_number(cell.get("acc")), format_number(cell.get("sd")),
                         format_number(cell.get("acc_macro")), format_number(cell.get("acc@5"))]
                        + ([f"[{format_number(low_high[0])}, {format_number(low_high[1])}]"] if low_high else []))
    header = ["task", "shots", "n_queries", "n_skipped", "n_ways", "acc", "sd", "acc_macro", "acc@5"]
    if any(len(row) > len(header) for row in rows):
        header.append("acc 95% CI")
        rows = [row + [""] * (len(header) - len(row)) for row in rows]
    return ["", title if fmt == "text" else f"{title}:", "", _table(header, rows, fmt)]


def _special_run(result: Mapping[str, Any], measure_keys: list[str], measure: str, fmt: str) -> list[str]:
    """What made a run special, so the printed numbers are not read as plain exact ones: an
    approximate index's agreement with exact search, a distractor catalogue and its curve."""
    parts: list[str] = []
    protocol = result.get("protocol") or {}
    agreement = result.get("agreement")
    if protocol.get("search") == "approximate" and isinstance(agreement, Mapping) and agreement:
        index: Mapping[str, Any] = protocol["index"] if isinstance(protocol.get("index"), Mapping) else {}
        settings = ", ".join(f"{key} {index[key]}" for key in ("nprobe", "ef_search") if index.get(key) is not None)
        title = (f"Agreement with exact search (--index {index.get('factory')}{', ' + settings if settings else ''}): "
                 "the share of the checked queries whose first-hit rank is unchanged, and |ΔR@K| over the checked "
                 "queries (points)")
        rows = []
        for task, cells in agreement.items():
            if not isinstance(cells, Mapping):
                continue
            delta: Mapping[str, Any] = cells["delta"] if isinstance(cells.get("delta"), Mapping) else {}
            unchanged = cells.get("unchanged")
            rows.append([task, str(cells.get("queries", "")),
                         format_number(None if unchanged is None else 100 * unchanged) + "%"]
                        + [format_number(delta.get(key)) for key in measure_keys])
        parts += ["", title if fmt == "text" else f"{title}:", "",
                  _table(["task", "checked", "unchanged", *(f"|Δ{key}|" for key in measure_keys)], rows, fmt)]
    distractors = result.get("distractors")
    if isinstance(distractors, Mapping):
        counts: Mapping[str, Any] = distractors["n_items"] if isinstance(distractors.get("n_items"), Mapping) else {}
        total = sum(int(v) for v in counts.values() if isinstance(v, int))
        paths = ", ".join(str(p) for p in distractors.get("paths") or [])
        per_domain = ", ".join(f"{code} {counts.get(code, 0):,}" for code in DOMAINS)
        parts += ["", f"Distractor catalogue: {paths} ({total:,} items: {per_domain}), in every task's gallery of "
                      "its domain (n_gallery counts them)."]
    curve = result.get("distractor_curve")
    if isinstance(curve, Mapping) and isinstance(curve.get("sizes"), list) and isinstance(curve.get("tasks"), Mapping):
        tasks = [task for task, cells in curve["tasks"].items() if isinstance(cells, Mapping) and measure in cells]
        rows = []
        for position, size in enumerate(curve["sizes"]):
            row = [f"{size:,}" if isinstance(size, int) else str(size)]
            for task in tasks:
                values = curve["tasks"][task][measure]
                row.append(format_number(values[position]) if isinstance(values, list) and position < len(values)
                           else "")
            rows.append(row)
        title = f"{measure} against catalogue size (distractors added, nested prefixes)"
        parts += ["", title if fmt == "text" else f"{title}:", "", _table(["distractors", *tasks], rows, fmt)]
    return parts


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
