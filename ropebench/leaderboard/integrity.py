"""What a result was computed on, and whether that is what a suite is about.

A suite declares its test set (``suite.json``): the sha256 of its manifest where the manifest is
public, and/or the number of items per domain and of products (``rope-test``, whose manifest is
not public: 31,388 / 29,810 / 30,981 items, 2,527 products). A results file records neither
count, so they are derived:

* **items per domain** from the result's own tasks: for a task ``Q2G``, ``n_queries +
  n_skipped`` is the number of items of the query domain Q (every item of Q is a query, scored
  or skipped) and ``n_gallery`` the number of items of the gallery domain G. Tasks that disagree
  are a problem; a domain no task involves is not determined (and cannot change the numbers);
* **products** from the file that labelled the items: the manifest the result was evaluated
  against, or the submission itself when it carries its own labels. ``add`` reads that file
  anyway (its sha256 must match the one the result recorded), and evaluation requires it to
  cover the submission exactly. The per-query file is *not* used for this: it lists scored
  queries only, so a product whose every query was skipped would be missed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropebench.errors import DataError
from ropebench.protocol import ALL_TASKS, DOMAINS, split_task

__all__ = ["ComputedOn", "items_from_tasks", "labels_summary", "declared", "describe", "test_set_problems"]


@dataclass(frozen=True)
class ComputedOn:
    """The test set a result was computed on (what is known of it).

    Attributes:
        items: ``{"P": 906, ...}`` for the domains the result's tasks determine.
        products: number of distinct products, or None when unknown.
        manifest_sha256: sha256 of the manifest the result was evaluated against (None:
            self-labelled submission, or unknown).
    """

    items: Mapping[str, int]
    products: int | None = None
    manifest_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"items": {d: self.items[d] for d in DOMAINS if d in self.items}, "products": self.products}


def items_from_tasks(tasks: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, int], list[str]]:
    """Items per domain implied by a result's task counts, and every disagreement between tasks."""
    seen: dict[str, dict[int, list[str]]] = {}
    for task, counts in tasks.items():
        if task not in ALL_TASKS or not isinstance(counts, Mapping):
            continue  # reported by the schema check
        query, gallery = split_task(task)
        n_queries, n_skipped, n_gallery = (counts.get(k) for k in ("n_queries", "n_skipped", "n_gallery"))
        if isinstance(n_queries, int) and isinstance(n_skipped, int):
            seen.setdefault(query, {}).setdefault(n_queries + n_skipped, []).append(f"{task} n_queries + n_skipped")
        if isinstance(n_gallery, int):
            seen.setdefault(gallery, {}).setdefault(n_gallery, []).append(f"{task} n_gallery")
    items: dict[str, int] = {}
    problems: list[str] = []
    for domain in DOMAINS:
        found = seen.get(domain)
        if not found:
            continue
        if len(found) > 1:
            said = "; ".join(f"{', '.join(where)} say {n:,}" for n, where in sorted(found.items()))
            problems.append(f"the tasks disagree on the number of {domain} items ({said}): the results "
                            "were edited or combined from different runs. Fix: use the file evaluate wrote")
            continue
        items[domain] = next(iter(found))
    return items, problems


def labels_summary(path: str | os.PathLike[str], what: str) -> tuple[dict[str, int], int]:
    """Items per domain and distinct products of a manifest (or a self-labelled submission).

    Reads only the ``domain`` and ``product_id`` columns of a single file; a directory source is
    read whole. Items without a product (distractors) count as items, not as products.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ropebench.io.parquet import read_source
    from ropebench.protocol import canonical_domain

    path = Path(path)
    try:
        if path.is_file():  # ParquetFile, not read_table: pyarrow.dataset would import pandas (0.15 s)
            reader = pq.ParquetFile(path)
            table = reader.read(columns=[c for c in ("domain", "product_id") if c in reader.schema_arrow.names])
        else:
            table = read_source(path, what=what).table
    except DataError:
        raise
    except Exception as error:  # pyarrow's errors: not parquet, truncated, ...
        raise DataError(f"{what} {path}: cannot be read as parquet ({error}). Fix: pass the file "
                        "the evaluation used") from None
    missing = [c for c in ("domain", "product_id") if c not in table.column_names]
    if missing:
        raise DataError(f"{what} {path}: column(s) {', '.join(missing)} missing, so its test set cannot be "
                        "counted. Fix: pass the manifest (item_id, domain, product_id) the evaluation used")
    items: dict[str, int] = {}
    for row in pc.value_counts(table.column("domain")).to_pylist():
        code = canonical_domain(row["values"])
        if code is not None:
            items[code] = items.get(code, 0) + int(row["counts"])
    products = int(pc.count_distinct(table.column("product_id")).as_py())
    return items, products


def declared(spec: Mapping[str, Any]) -> ComputedOn | None:
    """The test set a suite declares, or None when it declares no counts (sha256 only)."""
    items, products = spec.get("items"), spec.get("products")
    manifest = spec.get("manifest")
    sha = manifest.get("sha256") if isinstance(manifest, Mapping) else None
    if items is None and sha is None:
        return None
    return ComputedOn(items=dict(items or {}), products=products, manifest_sha256=sha)


def describe(items: Mapping[str, int], products: int | None, *, order: bool = True) -> str:
    """``"906/879/847 items (P/V/L) and 300 products"``; a domain not determined is ``?``."""
    counts = "/".join(f"{items[d]:,}" if d in items else "?" for d in DOMAINS)
    return (f"{counts} items" + (f" ({'/'.join(DOMAINS)})" if order else "")
            + (f" and {products:,} products" if products is not None else ""))


def test_set_problems(suite: str, spec: Mapping[str, Any], facts: ComputedOn, *, who: str = "the result") -> list[str]:
    """Why ``facts`` is not the test set suite ``suite`` (spec ``spec``) is about; [] when it is."""
    want = declared(spec)
    if want is None:
        return [f"suite {suite!r} declares no test set (no manifest sha256, no item counts): "
                "declare one in its suite.json"]
    problems = []
    manifest = spec.get("manifest")
    if want.manifest_sha256 is not None and facts.manifest_sha256 != want.manifest_sha256:
        where = manifest.get("path") if isinstance(manifest, Mapping) else None
        got = (f"the manifest with sha256 {facts.manifest_sha256}" if facts.manifest_sha256
               else "no manifest (a self-labelled submission)")
        problems.append(f"manifest: {who} was evaluated against {got}; suite {suite!r} is about "
                        + (f"{where} (sha256 {want.manifest_sha256})" if where else f"sha256 {want.manifest_sha256}")
                        + ". Fix: evaluate with --manifest " + (where or "<the suite's manifest>"))
    if want.items:
        differs = [d for d in DOMAINS if d in facts.items and facts.items[d] != want.items.get(d)]
        products_differ = (want.products is not None and facts.products is not None
                           and facts.products != want.products)
        if differs or products_differ:
            problems.append(
                f"test set: {who} has {describe(facts.items, facts.products)}; suite {suite!r} is about "
                f"{describe(want.items, want.products, order=False)}: it was computed on another test set. "
                f"Fix: evaluate on the suite's test set, or add it to a suite about this one "
                "(`ropebench leaderboard init`)")
    return problems
