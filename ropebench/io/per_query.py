"""Per-query tables: their columns as numpy arrays, and the two sides of a comparison, loaded and paired.

A per-query table is the parquet file ``ropebench evaluate --per-query`` writes (or the table of a
result object): one row per scored query and task, with ``task``, ``item_id``, ``product_id`` and
one float column per measure (``R@1`` … ``MRR@50``, percent). Reading it is I/O; the statistics
over its columns (:mod:`ropebench.stats`) stay pure numpy, and :mod:`ropebench.compare` gets its
two inputs from here already checked and sorted alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ropebench.errors import DataError, UsageError
from ropebench.protocol import (
    ALL_TASKS,
    FEWSHOT_MEASURE_PATTERN,
    FEWSHOT_TASK_PATTERN,
    MEASURE_PATTERN,
    measure_order,
)

__all__ = ["InputRef", "Side", "protocol_of", "column_codes", "column_floats", "measure_columns", "pair_sides",
           "protocol_notes", "combine_tables", "split_table", "FEWSHOT_METADATA_KEY"]

_METADATA_KEY = b"ropebench"  # parquet schema metadata of a per-query file: {"protocol": {...}, ...}
# The few-shot rows' own metadata ({"protocol": …, "fewshot": {"shots", "draws", "seed"}}) inside a
# file that holds both kinds of rows; the retrieval rows keep ``_METADATA_KEY`` byte for byte.
FEWSHOT_METADATA_KEY = b"ropebench.fewshot"
_ROW_KEYS = ("task", "item_id", "product_id", "domain", "category")
_EXAMPLES = 5

# Per-query table columns as numpy arrays. A pyarrow Table is read through its buffers
# (ropebench.io.parquet.to_numpy): pyarrow's own conversions import pandas, a quarter second
# of every evaluation. A mapping of column name to array is accepted too.


def _arrow_column(table: Any, name: str) -> Any:
    if name not in _column_names(table):
        raise DataError(f"per-query table: no column {name!r}. Fix: pass the table written by "
                        "`ropebench evaluate --per-query`")
    column = table.column(name)
    if column.null_count:
        raise DataError(f"per-query table: column {name!r} has {column.null_count} null value(s). Fix: re-run "
                        "`ropebench evaluate --per-query`; every scored query has every column")
    return column


def _column_names(table: Any) -> list[str]:
    return list(table.keys()) if isinstance(table, Mapping) else list(table.column_names)


def column_floats(table: Any, name: str) -> np.ndarray:
    """A numeric column of a per-query table as float64 (n,); DataError if missing, null, not numeric or not finite."""
    if isinstance(table, Mapping):
        values = np.asarray(table[name])
    else:
        import pyarrow as pa

        from ropebench.io.parquet import to_numpy

        column = _arrow_column(table, name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
            raise DataError(f"per-query table: column {name!r} is {column.type}, not a number. Fix: pass the "
                            "table written by `ropebench evaluate --per-query`")
        values = to_numpy(column)
    if values.dtype.kind not in "fiu":
        raise DataError(f"per-query table: column {name!r} holds {values.dtype}, not numbers. Fix: pass the table "
                        "written by `ropebench evaluate --per-query`")
    values = values.astype(np.float64)
    if not np.all(np.isfinite(values)):
        bad = int((~np.isfinite(values)).sum())
        raise DataError(f"per-query table: column {name!r} has {bad} NaN or infinite value(s). Fix: re-run "
                        "`ropebench evaluate --per-query`")
    return values


def column_codes(table: Any, name: str, *, order: Sequence[Any] | None = None) -> tuple[np.ndarray, list[Any]]:
    """Codes of a label column: ``(codes int64 (n,), labels)`` with ``labels[codes[i]]`` the i-th value.

    Labels are sorted (those in ``order`` first, in that order), so codes do not depend on row order.
    """
    if isinstance(table, Mapping):
        labels_array, codes = np.unique(np.asarray(table[name]), return_inverse=True)
        labels = labels_array.tolist()
    else:
        import pyarrow as pa

        from ropebench.io.parquet import to_numpy

        column = _arrow_column(table, name)
        if pa.types.is_integer(column.type):
            labels_array, codes = np.unique(to_numpy(column), return_inverse=True)
            labels = labels_array.tolist()
        else:  # strings: Arrow's dictionary encoding, one Python object per distinct label only
            encoded = column.combine_chunks().dictionary_encode()
            labels, codes = encoded.dictionary.to_pylist(), to_numpy(encoded.indices)
    codes = np.asarray(codes, dtype=np.int64).ravel()
    rank = {label: i for i, label in enumerate(order or ())}
    # Labels outside ``order`` sort by their text, so product 10 comes before product 2 whether
    # the ids are spelled as integers or as strings: the bootstrap's resampling matrix rows are
    # assigned to products in this order, and an interval must depend only on which products
    # there are, not on the type their ids were written with.
    sorted_labels = sorted(labels, key=lambda label: (rank.get(label, len(rank)), str(label), type(label).__name__))
    position = {label: i for i, label in enumerate(sorted_labels)}
    remap = np.array([position[label] for label in labels], dtype=np.int64)
    return (remap[codes] if len(codes) else codes), sorted_labels


def measure_columns(table: Any) -> list[str]:
    """Measure column names (``R@K`` by K, then ``MRR@K``) of a per-query table."""
    found = [name for name in _column_names(table)
             if MEASURE_PATTERN.match(name) or FEWSHOT_MEASURE_PATTERN.match(name)]
    return sorted(found, key=measure_order)


def combine_tables(retrieval: Any, fewshot: Any) -> Any:
    """One per-query table holding the retrieval rows, then the few-shot rows (task ``V2P/1-shot``).

    A retrieval row has no ``acc`` column value and a few-shot row no ``a t p censored R@K …``
    (nulls); :func:`split_table` gives both tables back exactly, metadata included.
    """
    import pyarrow as pa

    if fewshot is None:
        return retrieval
    metadata = dict(retrieval.schema.metadata or {})
    metadata[FEWSHOT_METADATA_KEY] = (fewshot.schema.metadata or {}).get(_METADATA_KEY, b"{}")
    combined = pa.concat_tables([retrieval.replace_schema_metadata(None), fewshot.replace_schema_metadata(None)],
                                promote_options="default")
    return combined.replace_schema_metadata(metadata)


def split_table(table: Any) -> tuple[Any, Any]:
    """``(retrieval rows, few-shot rows or None)`` of a per-query table written by ropebench."""
    import pyarrow.compute as pc

    if table is None or "task" not in table.column_names:
        return table, None
    tasks = table.column("task")
    fewshot_rows = pc.match_substring_regex(tasks, FEWSHOT_TASK_PATTERN.pattern)
    metadata = dict(table.schema.metadata or {})
    fewshot_metadata = metadata.pop(FEWSHOT_METADATA_KEY, None)
    if fewshot_metadata is None and not pc.any(fewshot_rows).as_py():
        return table, None
    fewshot_columns = [name for name in table.column_names if name in _ROW_KEYS or FEWSHOT_MEASURE_PATTERN.match(name)]
    retrieval_columns = [name for name in table.column_names if not FEWSHOT_MEASURE_PATTERN.match(name)]
    retrieval = table.filter(pc.invert(fewshot_rows)).select(retrieval_columns).replace_schema_metadata(metadata)
    fewshot = table.filter(fewshot_rows).select(fewshot_columns)
    fewshot = fewshot.replace_schema_metadata(None if fewshot_metadata is None else {_METADATA_KEY: fewshot_metadata})
    return retrieval, fewshot


@dataclass(frozen=True)
class InputRef:
    """Where one side came from: the file given (results JSON or per-query parquet) and its sha256."""

    path: str | None
    sha256: str | None


@dataclass(frozen=True)
class Side:
    """One input of a comparison: its per-query table and the protocol it was evaluated under."""

    name: str  # "A (path)" for messages
    ref: InputRef
    table: Any  # pyarrow.Table: the retrieval rows
    protocol: Mapping[str, Any] | None
    fewshot: Any = None  # pyarrow.Table of the few-shot rows (task V2P/1-shot), if any

    def fewshot_side(self) -> Side:
        """The few-shot rows as a side of their own, under the protocol and few-shot settings they
        were evaluated with."""
        name = f"{self.name}, few-shot rows"
        protocol = dict(protocol_of(self.fewshot, name) or self.protocol or {})
        settings = _metadata(self.fewshot, name).get("fewshot")
        if settings is not None:
            protocol["fewshot"] = settings
        return Side(name, self.ref, self.fewshot, protocol)


def _metadata(table: Any, name: str) -> dict[str, Any]:
    raw = (table.schema.metadata or {}).get(_METADATA_KEY)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DataError(f"{name}: the parquet metadata key 'ropebench' is not a JSON object. Fix: re-write the "
                        "file with `ropebench evaluate --per-query`")
    return data


def protocol_of(table: Any, name: str) -> Mapping[str, Any] | None:
    data = _metadata(table, name)
    if not data:
        return None
    try:
        return dict(data.get("protocol") or {})
    except (ValueError, TypeError):
        raise DataError(f"{name}: the parquet metadata key 'ropebench' has no protocol object. Fix: re-write the "
                        "file with `ropebench evaluate --per-query`") from None


def _examples(keys: list[tuple[Any, Any]]) -> str:
    try:
        ordered = sorted(keys)
    except TypeError:  # ids of mixed types
        ordered = sorted(keys, key=repr)
    shown = ", ".join(f"({task}, {item!r})" for task, item in ordered[:_EXAMPLES])
    return shown + (", …" if len(keys) > _EXAMPLES else "")


def _prepare(side: Side) -> Any:
    """The side's table sorted by (task, item_id), after its own checks."""
    import pyarrow.compute as pc

    table = side.table
    missing = [c for c in ("task", "item_id", "product_id") if c not in table.column_names]
    if missing:
        raise DataError(f"{side.name}: missing column(s) {', '.join(missing)}. Fix: pass the per-query table "
                        "written by `ropebench evaluate --per-query`")
    for column in ("task", "item_id", "product_id"):
        if table.column(column).null_count:
            raise DataError(f"{side.name}: column {column!r} has {table.column(column).null_count} null value(s). "
                            "Fix: every scored query has a task, an item_id and a product_id; re-run `ropebench "
                            "evaluate --out R.json`")
    for measure in measure_columns(table):  # bad values named with the side and file, before any statistics
        try:
            column_floats(table, measure)
        except DataError as error:
            raise DataError(f"{side.name}: {str(error).replace('per-query table: ', '')}") from None
    table = table.sort_by([("task", "ascending"), ("item_id", "ascending")])
    unknown = sorted(task for task in set(pc.unique(table.column("task")).to_pylist()) - set(ALL_TASKS)
                     if not FEWSHOT_TASK_PATTERN.match(str(task)))
    if unknown:
        raise DataError(f"{side.name}: unknown task(s) {', '.join(map(repr, unknown[:_EXAMPLES]))}. "
                        f"Tasks are {' '.join(ALL_TASKS)} and few-shot tasks such as V2P/1-shot. "
                        "Fix: pass the per-query file ropebench wrote, unedited")
    if len(table) > 1:
        task, item = table.column("task"), table.column("item_id")
        same = pc.and_(pc.equal(task[1:], task[:-1]), pc.equal(item[1:], item[:-1]))
        if pc.any(same).as_py():
            rows = table.slice(1).filter(same)
            keys = list(zip(rows.column("task").to_pylist(), rows.column("item_id").to_pylist()))
            raise DataError(f"{side.name}: {len(keys)} duplicated (task, item_id) row(s), e.g. {_examples(keys)}. "
                            "Fix: one row per scored query and task, as `ropebench evaluate --per-query` writes")
    return table


def pair_sides(a: Side, b: Side) -> tuple[Any, Any, list[str]]:
    """Both tables sorted and checked to hold the same rows, protocol and measures."""
    import pyarrow as pa
    import pyarrow.compute as pc

    problems = []
    for key, what in (("ties", "tie policy"), ("ks", "Ks"), ("fewshot", "few-shot protocol (shots, draws, seed)")):
        if a.protocol and b.protocol and key in a.protocol and key in b.protocol \
                and a.protocol[key] != b.protocol[key]:
            problems.append(f"{what}: {a.protocol[key]!r} in A, {b.protocol[key]!r} in B")
    measures = measure_columns(a.table)
    other = measure_columns(b.table)
    if measures != other:
        problems.append(f"measures: A has {' '.join(measures) or 'none'}, B has {' '.join(other) or 'none'}")
    table_a, table_b = _prepare(a), _prepare(b)
    items_a, items_b = table_a.column("item_id"), table_b.column("item_id")
    if items_a.type != items_b.type:
        try:  # the same integer ids stored as int64 in one file and uint64 in the other
            if not (pa.types.is_integer(items_a.type) and pa.types.is_integer(items_b.type)):
                raise pa.ArrowInvalid("not both integers")
            items_b = pc.cast(items_b, items_a.type)  # safe: an id that does not fit is an error
            table_b = table_b.set_column(table_b.schema.get_field_index("item_id"), "item_id", items_b)
        except pa.ArrowInvalid:
            problems.append(f"item_id type: {items_a.type} in A, {items_b.type} in B")
    if not problems:
        same = len(table_a) == len(table_b) and (len(table_a) == 0 or pc.all(pc.and_(
            pc.equal(table_a.column("task"), table_b.column("task")), pc.equal(items_a, items_b))).as_py())
        if not same:
            keys_a = set(zip(table_a.column("task").to_pylist(), items_a.to_pylist()))
            keys_b = set(zip(table_b.column("task").to_pylist(), items_b.to_pylist()))
            only_a, only_b = list(keys_a - keys_b), list(keys_b - keys_a)
            problems.append(f"rows: {len(only_a)} (task, item_id) row(s) only in A"
                            + (f", e.g. {_examples(only_a)}" if only_a else "")
                            + f"; {len(only_b)} only in B" + (f", e.g. {_examples(only_b)}" if only_b else ""))
    if not problems:
        products_a, products_b = table_a.column("product_id"), table_b.column("product_id")
        if products_a.type != products_b.type and not (pa.types.is_integer(products_a.type)
                                                       and pa.types.is_integer(products_b.type)):
            problems.append(f"product_id type: {products_a.type} in A, {products_b.type} in B")
        else:
            differ = pc.invert(pc.equal(pc.cast(products_a, pa.string()), pc.cast(products_b, pa.string())))
            if pc.any(differ).as_py():
                rows = table_a.filter(differ)
                keys = list(zip(rows.column("task").to_pylist(), rows.column("item_id").to_pylist()))
                problems.append(f"product_id: {len(keys)} paired row(s) have another product in B, "
                                f"e.g. {_examples(keys)}")
    if not measures and not problems:
        problems.append("measures: no R@K or MRR@K column")
    if problems:
        raise UsageError(f"{a.name} and {b.name} are not two evaluations of the same test set under the same "
                         "protocol:\n  - " + "\n  - ".join(problems)
                         + "\nFix: evaluate both submissions on the same manifest with the same --ties and --ks (and, "
                         "for few-shot rows, the same --shots --draws --seed)")
    return table_a, table_b, measures


def _search_of(protocol: Mapping[str, Any]) -> str:
    if protocol.get("search") == "approximate":
        index = protocol.get("index")
        factory = index.get("factory") if isinstance(index, Mapping) else index
        return f"approximate search ({factory})" if factory else "approximate search"
    return "exact search"


def protocol_notes(a: Side, b: Side) -> list[str]:
    """What differs between A's and B's protocols without making the comparison invalid: the
    similarity, exact against approximate search, a distractor catalogue. Δ then measures these
    choices as well as the two systems, which a reader of the numbers should be told."""
    if not a.protocol or not b.protocol:
        return []
    notes = []
    metric_a, metric_b = a.protocol.get("metric"), b.protocol.get("metric")
    if metric_a and metric_b and metric_a != metric_b:
        notes.append(f"A was evaluated under {metric_a}, B under {metric_b}: Δ compares the two similarities as "
                     "well as the two systems")
    search_a, search_b = _search_of(a.protocol), _search_of(b.protocol)
    if search_a != search_b:
        notes.append(f"A used {search_a}, B {search_b}: Δ includes the approximate index's misses "
                     "(leaderboard numbers are exact)")
    compression_a, compression_b = a.protocol.get("compression"), b.protocol.get("compression")
    if compression_a != compression_b:
        notes.append(f"A was compressed as {compression_a or 'nothing'}, B as {compression_b or 'nothing'}")
    return notes
