"""``table --ranks``: every computed entry's 95% rank interval among the suite's computed entries.

Reads the per-query files that computed entries store, aligns their rows by ``(task, item_id)``
and hands the columns to :func:`ropebench.stats.ranks.rank_intervals` (one product-level
bootstrap shared by all entries, B = 10,000, seed 0). Published entries have no per-query data:
they are neither ranked nor counted in the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ropebench.errors import UsageError
from ropebench.leaderboard.significance import per_query_of
from ropebench.leaderboard.store import Suite
from ropebench.protocol import ALL_TASKS
from ropebench.render.tables import Row, Table
from ropebench.stats.ranks import PRIMARY, Ranking, TaskColumns, rank_intervals

__all__ = ["suite_ranking", "field_columns", "with_ranks", "ranks_table", "ranks_note", "with_note"]


def field_columns(tables: Mapping[str, Any]) -> tuple[dict[str, TaskColumns], int]:
    """Per-query tables of several entries → aligned per-task columns and the number of products.

    Rows pair by ``(task, item_id)``; within a task every entry that reports it must hold the
    same queries with the same products (one test set), else UsageError naming the entry.
    Measures are those every table has.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ropebench.io.per_query import column_floats, measure_columns

    names = list(tables)
    if not names:
        return {}, 0
    measures = [m for m in measure_columns(tables[names[0]]) if all(m in tables[n].column_names for n in names)]
    parts: dict[str, dict[str, Any]] = {}
    for name in names:
        table = tables[name]
        for task in ALL_TASKS:
            part = table.filter(pc.equal(table.column("task"), pa.scalar(task)))
            if part.num_rows:
                parts.setdefault(task, {})[name] = part
    products: dict[str, Any] = {}
    aligned: dict[str, dict[str, Any]] = {}
    for task, by_entry in parts.items():
        reference_name = next(iter(by_entry))
        reference = _sorted(by_entry[reference_name])
        aligned[task] = {reference_name: reference}
        ids = reference.column("item_id")
        for name, part in list(by_entry.items())[1:]:
            part = part if part.column("item_id").equals(ids) else _sorted(part)
            if part.num_rows != reference.num_rows or not _same(part.column("item_id"), ids):
                raise UsageError(f"--ranks: entry {name!r} and entry {reference_name!r} hold different {task} queries "
                                 f"({part.num_rows} and {reference.num_rows} rows): ranks compare entries on one "
                                 "test set. Fix: re-evaluate both on the suite's manifest")
            if not _same(part.column("product_id"), reference.column("product_id")):
                raise UsageError(f"--ranks: entries {name!r} and {reference_name!r} give {task} queries different "
                                 "products. Fix: re-evaluate both on the suite's manifest")
            aligned[task][name] = part
        products[task] = pc.cast(reference.column("product_id"), pa.string())
    tasks = list(aligned)
    encoded = pa.chunked_array([products[t] for t in tasks], type=pa.string()).combine_chunks().dictionary_encode()
    codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    n_products = len(encoded.dictionary)
    out: dict[str, TaskColumns] = {}
    start = 0
    for task in tasks:
        entries = tuple(aligned[task])
        size = aligned[task][entries[0]].num_rows
        values = {m: np.column_stack([column_floats(aligned[task][e], m) for e in entries]) for m in measures}
        out[task] = TaskColumns(products=codes[start:start + size], entries=entries, values=values)
        start += size
    return out, n_products


def _sorted(part: Any) -> Any:
    import pyarrow.compute as pc

    return part.take(pc.sort_indices(part, sort_keys=[("item_id", "ascending")]))


def _same(a: Any, b: Any) -> bool:
    import pyarrow as pa
    import pyarrow.compute as pc

    if a.type != b.type:
        a, b = pc.cast(a, pa.string()), pc.cast(b, pa.string())
    return bool(a.equals(b))


def suite_ranking(suite: Suite, *, base: Path, resamples: int = 10_000, seed: int = 0,
                  alpha: float = 0.05) -> Ranking:
    """The rank intervals of the suite's computed entries (those with a per-query file).

    Raises:
        UsageError: the suite has no computed entry with a per-query file.
    """
    tables = {entry["name"]: frame for entry in suite.entries
              if (frame := per_query_of(entry, base)) is not None}
    if not tables:
        raise UsageError(f"--ranks: suite {suite.name!r} has no computed entry with a per-query file (published "
                         "entries cannot be resampled). Fix: add entries with `ropebench leaderboard add` from "
                         "results written with --per-query")
    columns, n_products = field_columns(tables)
    return rank_intervals(columns, n_products=n_products, resamples=resamples, seed=seed, alpha=alpha)


def with_ranks(table: Table, ranking: Ranking) -> Table:
    """Table 1 / 2 with each computed entry's rank interval beside every cell."""
    if table.metric is not None or table.kind not in ("1", "2"):
        return table
    rows = []
    for row in table.rows:
        found = tuple(ranking.intervals.get(f"{row.group}/{m}", {}).get(row.entry) for m in table.value_headers)
        rows.append(dataclasses.replace(row, ranks=found if any(f is not None for f in found) else None))
    return dataclasses.replace(table, rows=tuple(rows))


def with_note(caption: str, note: str) -> str:
    """A caption followed by a note, as sentences."""
    caption = caption.rstrip()
    return f"{caption} {note}" if caption.endswith((".", "!", "?", ":")) else f"{caption}. {note}"


def ranks_note(ranking: Ranking) -> str:
    settings = ranking.settings
    return (f"Beside a value, (lo–hi): its 95% rank interval among the {len(ranking.entries)} computed entries "
            "(rank 1 = best, ties share the better rank; one product-level bootstrap shared by all entries, "
            f"{settings['resamples']:,} resamples, seed {settings['seed']}); published entries are not ranked.")


def ranks_table(suite: Suite, ranking: Ranking, *, key: str) -> Table | None:
    """The field ordered by ``cross/R@1``: rank, entry, value (lo–hi) and the letter groups."""
    cell = ranking.intervals.get(PRIMARY)
    if not cell:
        return None
    labels = {e["name"]: e for e in suite.entries}
    order = sorted(cell, key=lambda e: (ranking.ranks[PRIMARY][e], list(ranking.entries).index(e)))
    rows: Sequence[Row] = tuple(
        Row(group=str(ranking.ranks[PRIMARY][name]), entry=name,
            label=str(labels.get(name, {}).get("label", name)), label_latex=labels.get(name, {}).get("label_latex"),
            values=(ranking.estimates[PRIMARY][name],), ranks=(cell[name],), tag=ranking.groups[PRIMARY][name])
        for name in order)
    alpha = ranking.settings["alpha"]
    caption = (f"Ranking by {PRIMARY} (the mean R@1 of the six cross-domain tasks). {ranks_note(ranking)} "
               f"Entries sharing a letter in 'group' cannot be told apart at α = {alpha} (paired product-level "
               "bootstrap, Holm-adjusted over all pairs).")
    return Table(kind="ranks", key=f"{key}-ranks", title="Ranks", caption=caption, group_header="rank",
                 label_header=suite.label_column, label_name=suite.label_column, value_headers=(PRIMARY,),
                 rows=tuple(rows), tag_header="group")
