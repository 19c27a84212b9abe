"""What an evaluation derives from its per-query counts besides the task numbers: the per-query
table, each task's bootstrap interval, and the numbers per category. Rows are always put in a
canonical order (task, then item_id), so nothing here depends on the submission's row order."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ropebench.dataset import Dataset
from ropebench.engines import FirstHits
from ropebench.protocol import DOMAINS, split_task
from ropebench.results import PER_QUERY_METADATA_KEY

__all__ = ["per_query_builder", "task_intervals_of", "by_category", "uncategorised", "query_columns", "id_order"]


def per_query_builder(dataset: Dataset, members: Mapping[str, np.ndarray], tasks: Sequence[str],
                       hits: Mapping[str, FirstHits], columns: Mapping[str, Mapping[str, np.ndarray]],
                       protocol: Mapping[str, Any]) -> Callable[[], Any]:
    """A function building the per-query table on first use (pyarrow is imported only then)."""

    def build() -> Any:
        import json

        import pyarrow as pa

        from ropebench.io.arrow import from_numpy, id_array, string_array

        parts: dict[str, list[np.ndarray]] = {"task": [], "rows": [], "a": [], "t": [], "p": [], "censored": []}
        names = list(next(iter(columns.values())).keys()) if columns else []
        values: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for task in tasks:
            h = hits[task]
            rows = members[split_task(task)[0]][h.scored]
            # Canonical order (by item_id), so the file does not depend on the submission's row order.
            order = id_order(dataset.item_ids[rows])
            parts["task"].append(np.full(len(rows), task, dtype=object))
            parts["rows"].append(rows[order])
            for key, array in (("a", h.a), ("t", h.t), ("p", h.p), ("censored", h.censored)):
                parts[key].append(np.asarray(array)[order])
            for name in names:
                values[name].append(np.asarray(columns[task][name])[order])

        def cat(chunks: list[np.ndarray], dtype: Any) -> np.ndarray:
            return np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)

        rows = cat(parts["rows"], np.int64)
        # Built from buffers (from_numpy, string_array): pa.array would import pandas.
        table: dict[str, Any] = {
            "task": string_array(cat(parts["task"], object).tolist()),
            "item_id": id_array(dataset.item_ids[rows]),
            "product_id": id_array(dataset.product_ids[rows]),
            "domain": string_array([DOMAINS[code] for code in dataset.domains[rows].tolist()]),
        }
        if dataset.categories is not None:
            table["category"] = _category_array(dataset.categories[rows])
        for key in ("a", "t", "p"):
            table[key] = from_numpy(cat(parts[key], np.int64).astype(np.int64))
        table["censored"] = from_numpy(cat(parts["censored"], bool).astype(bool))
        for name in names:
            table[name] = from_numpy(cat(values[name], np.float64).astype(np.float64))
        metadata = {PER_QUERY_METADATA_KEY: json.dumps({"protocol": dict(protocol)}).encode()}
        return pa.table(table).replace_schema_metadata(metadata)

    return build


def id_order(ids: np.ndarray) -> np.ndarray:
    """A stable order of ids that does not depend on row order (strings and integers alike)."""
    if ids.dtype == object:
        return np.array(sorted(range(len(ids)), key=lambda i: (type(ids[i]).__name__, ids[i])), dtype=np.int64)
    return np.argsort(ids, kind="stable")



def query_columns(dataset: Dataset, members: Mapping[str, np.ndarray], tasks: Sequence[str],
                   hits: Mapping[str, FirstHits], columns: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """The scored queries of every task as plain arrays: task, product id, row, measures.

    Rows are in canonical order (task, then item_id) and products are named by their ids, so
    nothing computed from these arrays (sums, resampling) depends on the submission's row order.
    """
    rows = [members[split_task(task)[0]][hits[task].scored] for task in tasks]
    orders = [id_order(dataset.item_ids[r]) for r in rows]
    names = list(columns[tasks[0]]) if tasks else []
    out: dict[str, Any] = {
        "task": np.concatenate([np.full(len(r), task, dtype=object) for r, task in zip(rows, tasks)]),
        "rows": np.concatenate([r[o] for r, o in zip(rows, orders)]) if rows else np.zeros(0, dtype=np.int64),
    }
    out["product_id"] = dataset.product_ids[out["rows"]]
    for name in names:
        out[name] = np.concatenate([np.asarray(columns[task][name])[o] for task, o in zip(tasks, orders)])
    return out


def task_intervals_of(dataset: Dataset, members: Mapping[str, np.ndarray], tasks: Sequence[str],
                      hits: Mapping[str, FirstHits], columns: Mapping[str, Mapping[str, np.ndarray]]
                      ) -> dict[str, dict[str, tuple[float, float] | None]]:
    """Each task's 95% product-level bootstrap interval of every measure (10,000 resamples, seed 0)."""
    from ropebench.stats import task_intervals

    table = query_columns(dataset, members, tasks, hits, columns)
    del table["rows"]
    if len(table["task"]) == 0:
        return {}
    found = task_intervals(table, resamples=10_000, seed=0)
    return {task: {name: (None if np.isnan(low) else (low, high)) for name, (low, high) in cells.items()}
            for task, cells in found.items()}


def by_category(dataset: Dataset, members: Mapping[str, np.ndarray], tasks: Sequence[str],
                 hits: Mapping[str, FirstHits], columns: Mapping[str, Mapping[str, np.ndarray]]
                 ) -> dict[str, dict[str, dict[str, Any]]]:
    """``{category: {task: {"n_queries": n, "R@1": …}}}``: the same numbers over each category's
    queries (the query's category), exactly rounded means as for the whole task."""
    import math

    assert dataset.categories is not None  # noqa: S101  (checked by the caller)
    table = query_columns(dataset, members, tasks, hits, columns)
    categories = dataset.categories[table["rows"]]
    names = [name for name in table if name not in ("task", "rows", "product_id")]
    out: dict[str, dict[str, dict[str, Any]]] = {}
    # A query without a category (null) is not in the category named "None": only ``missing``
    # reports it (see :func:`uncategorised`).
    values = categories.tolist()
    for category in sorted({str(c) for c in values if c is not None}):
        in_category = np.array([c is not None and str(c) == category for c in values], dtype=bool)
        per_task: dict[str, dict[str, Any]] = {}
        for task in tasks:
            chosen = in_category & (table["task"] == task)
            n = int(chosen.sum())
            if n == 0:
                continue
            per_task[task] = {"n_queries": n, **{name: math.fsum(table[name][chosen].tolist()) / n for name in names}}
        out[category] = per_task
    return out


def fewshot_rows(dataset: Dataset, members: Mapping[str, np.ndarray], columns: Mapping[str, Mapping[str, np.ndarray]],
                 scored: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Few-shot per-query rows as arrays: ``task`` (``V2P/1-shot``), ``rows``, ``product_id``, ``acc``,
    ``acc@5`` (percent, averaged over draws), in canonical order (task, then item_id)."""
    tasks = list(columns)
    rows = [members[task[0]][scored[task]] for task in tasks]
    orders = [id_order(dataset.item_ids[r]) for r in rows]
    out: dict[str, Any] = {
        "task": np.concatenate([np.full(len(r), task, dtype=object) for r, task in zip(rows, tasks)])
        if tasks else np.zeros(0, dtype=object),
        "rows": np.concatenate([r[o] for r, o in zip(rows, orders)]) if tasks else np.zeros(0, dtype=np.int64),
    }
    out["product_id"] = dataset.product_ids[out["rows"]]
    for name in ("acc", "acc@5"):
        out[name] = np.concatenate([np.asarray(columns[t][name])[o] for t, o in zip(tasks, orders)]) \
            if tasks else np.zeros(0)
    return out


def fewshot_table_builder(dataset: Dataset, table: Mapping[str, Any], protocol: Mapping[str, Any],
                          fewshot: Mapping[str, Any]) -> Callable[[], Any]:
    """A function building the few-shot per-query pyarrow Table (``task item_id product_id domain
    [category] acc acc@5``) on first use; its metadata holds the protocol and the few-shot settings.
    Columns are built as the retrieval table's are, so both kinds of rows share one file."""

    def build() -> Any:
        import json

        import pyarrow as pa

        from ropebench.io.arrow import from_numpy, id_array, string_array

        rows = table["rows"]
        columns: dict[str, Any] = {
            "task": string_array(table["task"].tolist()),
            "item_id": id_array(dataset.item_ids[rows]),
            "product_id": id_array(dataset.product_ids[rows]),
            "domain": string_array([DOMAINS[code] for code in dataset.domains[rows].tolist()]),
        }
        if dataset.categories is not None:
            columns["category"] = _category_array(dataset.categories[rows])
        for name in ("acc", "acc@5"):
            columns[name] = from_numpy(np.asarray(table[name], dtype=np.float64))
        metadata = {PER_QUERY_METADATA_KEY: json.dumps({"protocol": dict(protocol), "fewshot": dict(fewshot)}).encode()}
        return pa.table(columns).replace_schema_metadata(metadata)

    return build


def uncategorised(dataset: Dataset, members: Mapping[str, np.ndarray], tasks: Sequence[str],
                  hits: Mapping[str, FirstHits], columns: Mapping[str, Mapping[str, np.ndarray]]
                  ) -> dict[str, dict[str, Any]]:
    """``{task: {"n_queries": n, "R@1": …}}`` over the queries whose manifest ``category`` is
    null; empty when every query has one."""
    import math

    if dataset.categories is None:
        return {}
    table = query_columns(dataset, members, tasks, hits, columns)
    missing = np.array([c is None for c in dataset.categories[table["rows"]].tolist()], dtype=bool)
    names = [name for name in table if name not in ("task", "rows", "product_id")]
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        chosen = missing & (table["task"] == task)
        n = int(chosen.sum())
        if n:
            out[task] = {"n_queries": n, **{name: math.fsum(table[name][chosen].tolist()) / n for name in names}}
    return out


def _category_array(values: np.ndarray) -> Any:
    """The per-query ``category`` column: the manifest's values, nulls kept as nulls."""
    from ropebench.io.arrow import from_numpy, id_array, string_array

    items = values.tolist()
    if values.dtype.kind in "iu" or all(v is not None for v in items):
        return id_array(values)
    present = [v for v in items if v is not None]
    valid = np.array([v is not None for v in items], dtype=bool)
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        big = any(v > np.iinfo(np.int64).max for v in present)
        filled = np.array([0 if v is None else v for v in items], dtype=np.uint64 if big else np.int64)
        return from_numpy(filled, valid=valid)
    return string_array([None if v is None else str(v) for v in items])
