"""Text and markdown views of one evaluation (what ``ropebench evaluate`` prints).

Rendering is the only place a number is rounded (2 decimals, as in the paper).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ropebench.domains import DOMAINS

__all__ = ["format_value", "render_evaluation", "render_validation"]

_TABLEFMT = {"text": "simple", "markdown": "pipe"}  # pipe: GitHub tables with alignment colons


def format_value(value: float | None) -> str:
    """``65.2`` -> ``"65.20"``; a missing value (no scored query) -> ``"–"``."""
    return "–" if value is None else f"{value:.2f}"


def _table(headers: list[str], rows: list[list[Any]], fmt: str) -> str:
    from tabulate import tabulate

    align = ("left",) + ("right",) * (len(headers) - 1)
    return tabulate(rows, headers=headers, tablefmt=_TABLEFMT[fmt], disable_numparse=True, colalign=align)


def render_evaluation(result: Mapping[str, Any], fmt: str = "text", *, matrix_metric: str = "R@1") -> str:
    """The 3×3 domain matrix of ``matrix_metric`` and the per-task table, from a results JSON dict."""
    tasks = result["tasks"]
    protocol = result["protocol"]
    submission = result["submission"]
    metric_keys = [f"R@{k}" for k in protocol["ks"]] + [f"MRR@{max(protocol['ks'])}"]
    source = submission.get("path") or "arrays"
    header = (f"{source}: {submission['n_items']} items, d={submission['dim']} ({submission['dtype']}); "
              f"metric {protocol['metric']}, ties {protocol['ties']}, {protocol['search']} search")
    matrix_rows = [[q] + [format_value(tasks[f"{q}2{g}"].get(matrix_metric)) if f"{q}2{g}" in tasks else ""
                          for g in DOMAINS] for q in DOMAINS]
    task_rows = [[task, str(r["n_queries"]), str(r["n_skipped"]), str(r["n_gallery"]), str(r["n_tied"])]
                 + [format_value(r.get(key)) for key in metric_keys] for task, r in tasks.items()]
    matrix_title = f"{matrix_metric}: query domain (rows) × gallery domain (columns)"
    parts = [
        header if fmt == "text" else f"**{header}**",
        "",
        matrix_title if fmt == "text" else f"{matrix_title}:",
        "",
        _table(["query \\ gallery", *DOMAINS], matrix_rows, fmt),
        "",
        _table(["task", "n_queries", "n_skipped", "n_gallery", "n_tied", *metric_keys], task_rows, fmt),
    ]
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
