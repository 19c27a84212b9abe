"""Reading submissions and manifests from parquet (DESIGN.md §3). No metric code lives here.

A source is a parquet file, or a directory holding one parquet file per domain (named by any
accepted spelling: ``P.parquet``, ``short_videos.parquet``) or a hive-partitioned
``domain=…/`` dataset. Reading never builds a Python object per row: embeddings go from Arrow
buffers to one contiguous float32 matrix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ropebench.protocol import SPELLINGS, canonical_domain
from ropebench.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["Source", "read_source", "read_parquet", "embedding_matrix", "column_kind", "to_numpy"]

_READ_BATCH = 8192  # rows decoded at a time: larger batches multiply the decoder's peak memory
_FLOAT_NAMES = {"halffloat": "float16", "float": "float32", "double": "float64"}


def _bits(buffer: "pa.Buffer", offset: int, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")[offset:offset + n].astype(bool)


def to_numpy(array: "pa.Array | pa.ChunkedArray", *, null: Any = None) -> np.ndarray:
    """A numeric or boolean Arrow array as a numpy array, read from its buffers.

    ``pyarrow``'s own ``to_numpy`` (and ``pa.scalar``) import pandas on first use, 0.25 s of
    every evaluation. Nulls become ``null``; with ``null=None`` an array with nulls is an error.
    """
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        parts = [to_numpy(chunk, null=null) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=array.type.to_pandas_dtype())
    if array.null_count and null is None:
        raise ValueError("to_numpy: the array has nulls")
    n, offset = len(array), array.offset
    validity, data = array.buffers()[:2]
    if pa.types.is_boolean(array.type):
        values = _bits(data, offset, n) if n else np.zeros(0, dtype=bool)
    else:
        dtype = np.dtype(array.type.to_pandas_dtype())
        values = np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize) if n else \
            np.zeros(0, dtype=dtype)
    if array.null_count:
        values = np.where(_bits(validity, offset, n), values, null)
    return values


@dataclass(frozen=True)
class Source:
    """A table read from disk, with the path it came from (for messages and provenance)."""

    path: str
    table: "pa.Table"


def read_parquet(path: Path) -> "pa.Table":
    """Read one parquet file; DataError naming the file if it is unreadable or truncated."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Batch by batch: decoding a whole list column at once peaks at several times its size.
        reader = pq.ParquetFile(path, memory_map=True)
        batches = list(reader.iter_batches(batch_size=_READ_BATCH))
        return pa.Table.from_batches(batches, schema=reader.schema_arrow)
    except (pa.ArrowException, OSError) as error:
        raise DataError(
            f"{path}: cannot be read as parquet ({error}). "
            "Fix: re-write the file with pyarrow/pandas `to_parquet` (is it truncated or not parquet?)."
        ) from None


def _domain_of_path(path: Path, root: Path) -> str | None:
    """The domain a file inside a directory source belongs to: `domain=X/` part or the file stem."""
    for part in path.relative_to(root).parts[:-1]:
        key, _, value = part.partition("=")
        if key == "domain":
            return value
    return path.name.split(".")[0]


def read_source(path: str | os.PathLike[str], *, what: str) -> Source:
    """Read a parquet file or a per-domain directory into one Arrow table.

    For a directory, a ``domain`` column is set from each file's name (or its ``domain=…``
    folder); a file that also has a ``domain`` column must agree with its name.

    Args:
        path: file or directory.
        what: ``"submission"`` or ``"manifest"``, for messages.

    Raises:
        DataError: missing path, unreadable file, a directory file whose name is no domain
            spelling, or files whose columns do not match.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} {path}: no such file or directory. Fix: check the path.")
    if path.is_file():
        return Source(str(path), read_parquet(path))

    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise DataError(
            f"{what} directory {path}: holds no *.parquet file. Fix: one file per domain, "
            "named P.parquet / V.parquet / L.parquet (or any accepted spelling), or domain=…/ folders."
        )
    problems, tables = [], []
    for file in files:
        spelling = _domain_of_path(file, path)
        code = canonical_domain(spelling)
        if code is None:
            problems.append(
                f"{file}: {spelling!r} is not a domain name; accepted: {', '.join(sorted(SPELLINGS))}"
            )
            continue
        table = read_parquet(file)
        if "domain" in table.column_names:
            inner = {canonical_domain(v) for v in table.column("domain").to_pylist()}
            if inner != {code}:
                problems.append(
                    f"{file}: column 'domain' holds {sorted(map(str, inner))} but the file name says {code}"
                )
                continue
            table = table.drop_columns(["domain"])
        tables.append(table.append_column("domain", pa.array(np.full(table.num_rows, code))))
    if problems:
        raise DataError(
            f"{what} directory {path}: {len(problems)} problem(s):\n  - " + "\n  - ".join(problems)
        )
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as error:
        raise DataError(
            f"{what} directory {path}: the per-domain files have incompatible columns ({error}). "
            "Fix: write every file with the same columns and types."
        ) from None
    if pa.types.is_dictionary(table.schema.field("domain").type):  # hive partitions
        table = table.set_column(
            table.schema.get_field_index("domain"), "domain", pc.cast(table.column("domain"), pa.string())
        )
    return Source(str(path), table)


def column_kind(type_: "pa.DataType") -> str | None:
    """Classify an Arrow type as ``"int"``, ``"str"``, or None (unsupported) for id columns."""
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_integer(type_):
        return "int"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_):
        return "str"
    return None


def embedding_matrix(
    column: "pa.ChunkedArray",
) -> tuple[np.ndarray | None, tuple[str, str] | None, str, np.ndarray]:
    """Turn an embedding column into an ``(n, d)`` float32 matrix without per-row Python objects.

    Args:
        column: ``fixed_size_list<float16|float32|float64>[d]`` or ``list``/``large_list`` of floats.

    Returns:
        ``(matrix, problem, dtype, bad_rows)``: the float32 matrix (C-contiguous) or None; a
        structural problem as ``(what, fix)`` (wrong type, varying or zero length) or None; the
        value dtype name; a boolean mask of rows that are null or have a varying length.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    type_ = column.type
    n = len(column)
    no_rows = np.zeros(n, dtype=bool)
    is_list = pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_)
    if not is_list or not pa.types.is_floating(type_.value_type):
        return None, (
            f"has type {type_}; expected fixed_size_list<float32>[d] or list<float16|float32|float64>",
            "store each embedding as a list of floats (e.g. pa.list_(pa.float32(), d))",
        ), str(type_), no_rows
    dtype = _FLOAT_NAMES.get(str(type_.value_type), str(type_.value_type))
    chunks = [c for c in column.chunks if len(c)] if isinstance(column, pa.ChunkedArray) else [column]
    null_rows = np.concatenate([np.zeros(0, dtype=bool)] + [to_numpy(c.is_null()) for c in chunks])
    lengths = np.concatenate([np.zeros(0, dtype=np.int64)] + [
        to_numpy(pc.list_value_length(c), null=-1).astype(np.int64) for c in chunks])
    valid_lengths = lengths[~null_rows]
    if valid_lengths.size == 0:
        return None, ("has no non-null embedding", "give every item an embedding"), dtype, null_rows
    values, counts = np.unique(valid_lengths, return_counts=True)
    d = int(values[np.argmax(counts)])
    bad = null_rows | (lengths != d)
    if d == 0:
        return None, ("has zero dimension (empty lists)", "store d > 0 values per item"), dtype, bad
    if bad.any():
        problem = None
        if len(values) > 1:
            problem = (
                f"has varying dimension ({', '.join(map(str, values.tolist()))}); most rows have d={d}",
                "every embedding must have the same length",
            )
        return None, problem, dtype, bad
    matrix = np.empty((n, d), dtype=np.float32)
    row = 0
    for chunk in chunks:  # one float32 copy, filled chunk by chunk (no combined Arrow copy)
        flat = chunk.flatten()
        if flat.null_count:
            # A null inside a list cannot be a number: name those rows.
            parents = to_numpy(pc.list_parent_indices(chunk))
            inner_null = to_numpy(flat.is_null())
            bad[row + np.unique(parents[inner_null])] = True
        else:
            matrix[row:row + len(chunk)] = to_numpy(flat).reshape(len(chunk), d)
        row += len(chunk)
    if bad.any():
        return None, ("holds null values inside embeddings", "store finite floats"), dtype, bad
    return matrix, None, dtype, bad
