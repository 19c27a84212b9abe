"""Arrow <-> numpy without pandas: numbers and bools read straight from Arrow buffers, the
embedding column as one float32 matrix, and id arrays written with their exact values and types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["id_array", "from_numpy", "string_array", "to_numpy", "column_kind", "embedding_matrix",
           "float32_range"]


def _validity(valid: np.ndarray | None) -> Any:
    import pyarrow as pa

    if valid is None or bool(np.all(valid)):
        return None
    return pa.py_buffer(np.packbits(np.asarray(valid, dtype=bool), bitorder="little"))


def from_numpy(values: np.ndarray, *, valid: np.ndarray | None = None) -> Any:
    """A pyarrow array of a numeric or bool numpy array, built from its buffer.

    ``pa.array`` imports pandas on first use (a quarter second of every evaluation that writes
    a per-query file); ``Array.from_buffers`` does not. ``valid``: False marks a null.
    """
    import pyarrow as pa

    values = np.ascontiguousarray(values)
    n = len(values)
    if values.dtype == bool:
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
        return pa.Array.from_buffers(pa.bool_(), n, [_validity(valid), data])
    type_ = {"i": {1: pa.int8(), 2: pa.int16(), 4: pa.int32(), 8: pa.int64()},
             "u": {1: pa.uint8(), 2: pa.uint16(), 4: pa.uint32(), 8: pa.uint64()},
             "f": {2: pa.float16(), 4: pa.float32(), 8: pa.float64()}}[values.dtype.kind][values.dtype.itemsize]
    return pa.Array.from_buffers(type_, n, [_validity(valid), pa.py_buffer(values.astype(values.dtype.newbyteorder("="),
                                                                                         copy=False))])


def string_array(items: list[Any]) -> Any:
    """A pyarrow ``string`` (``large_string`` past 2 GiB) array of Python strings; None is null."""
    import pyarrow as pa

    encoded = [b"" if item is None else item.encode("utf-8") for item in items]
    lengths = np.fromiter((len(e) for e in encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    large = offsets[-1] > np.iinfo(np.int32).max
    valid = np.array([item is not None for item in items], dtype=bool)
    offset_buffer = pa.py_buffer(offsets if large else offsets.astype(np.int32))
    return pa.Array.from_buffers(pa.large_string() if large else pa.string(), len(encoded),
                                 [_validity(valid), offset_buffer, pa.py_buffer(b"".join(encoded))])


def id_array(values: np.ndarray) -> Any:
    """A pyarrow array of ids or labels with their exact value and type.

    int64 stays int64 and uint64 stays uint64 (an id above 2^63 is never reinterpreted as a
    negative number); an object array of strings becomes ``string``; an object array of Python
    ints becomes int64 or, when a value needs it, uint64. Built without ``pa.array`` (pandas).
    """
    if values.dtype.kind in "iu":
        return from_numpy(values)
    items = values.tolist()
    if all(isinstance(v, str) for v in items):
        return string_array(items)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        big = any(v > np.iinfo(np.int64).max for v in items)
        return from_numpy(np.array(items, dtype=np.uint64 if big else np.int64))
    # Validation refuses mixed or float ids; reaching here is a bug, not a user error to paper over.
    kinds = sorted({type(v).__name__ for v in items})
    raise TypeError(f"ids of mixed or unsupported types ({', '.join(kinds)}) cannot be written exactly")


_FLOAT_NAMES = {"halffloat": "float16", "float": "float32", "double": "float64"}


def _bits(buffer: pa.Buffer, offset: int, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(buffer, dtype=np.uint8), bitorder="little")[offset:offset + n].astype(bool)


def _numpy_dtype(type_: Any) -> np.dtype:
    """The numpy dtype of a fixed-width Arrow number or bool type, without asking pyarrow
    (``DataType.to_pandas_dtype`` imports pandas on some pyarrow versions)."""
    import pyarrow as pa

    if pa.types.is_boolean(type_):
        return np.dtype(bool)
    if pa.types.is_floating(type_):
        return np.dtype(f"f{type_.bit_width // 8}")
    if pa.types.is_integer(type_):
        return np.dtype(f"{'i' if pa.types.is_signed_integer(type_) else 'u'}{type_.bit_width // 8}")
    raise TypeError(f"{type_} is not a fixed-width number type")


def to_numpy(array: pa.Array | pa.ChunkedArray, *, null: Any = None) -> np.ndarray:
    """A numeric or boolean Arrow array as a numpy array, read from its buffers.

    ``pyarrow``'s own ``to_numpy`` (and ``pa.scalar``) import pandas on first use, 0.25 s of
    every evaluation. Nulls become ``null``; with ``null=None`` an array with nulls is an error.
    """
    import pyarrow as pa

    if isinstance(array, pa.ChunkedArray):
        parts = [to_numpy(chunk, null=null) for chunk in array.chunks]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=_numpy_dtype(array.type))
    if array.null_count and null is None:
        raise ValueError("to_numpy: the array has nulls")
    n, offset = len(array), array.offset
    validity, data = array.buffers()[:2]
    if pa.types.is_boolean(array.type):
        values = _bits(data, offset, n) if n else np.zeros(0, dtype=bool)
    else:
        dtype = _numpy_dtype(array.type)
        values = np.frombuffer(data, dtype=dtype, count=n, offset=offset * dtype.itemsize) if n else \
            np.zeros(0, dtype=dtype)
    if array.null_count:
        values = np.where(_bits(validity, offset, n), values, null)
    return values


def column_kind(type_: pa.DataType) -> str | None:
    """Classify an Arrow type as ``"int"``, ``"str"``, or None (unsupported) for id columns."""
    import pyarrow as pa

    if pa.types.is_dictionary(type_):
        type_ = type_.value_type
    if pa.types.is_integer(type_):
        return "int"
    if pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_string_view(type_):
        return "str"
    return None


def embedding_matrix(
    column: pa.ChunkedArray,
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
    if n == 0:
        return None, ("holds no rows (the table is empty)", "write one row per item"), dtype, null_rows
    if valid_lengths.size == 0:
        return None, (f"has no non-null embedding in its {n} rows", "give every item an embedding"), dtype, null_rows
    values, counts = np.unique(valid_lengths, return_counts=True)
    d = int(values[np.argmax(counts)])
    bad = null_rows | (lengths != d)
    if d == 0:
        return None, ("has zero dimension (empty lists)", "store d > 0 values per item"), dtype, bad
    if bad.any():
        problem = None
        if len(values) > 1:
            off = int(((lengths != d) & ~null_rows).sum())
            problem = (
                f"has varying dimension ({', '.join(map(str, values.tolist()))}); most rows have d={d}, "
                f"{off} {'row does' if off == 1 else 'rows do'} not",
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
            # float64 values beyond float32's range become inf here, silently: validation names
            # them (see float32_range) instead of letting numpy's warning reach the user.
            with np.errstate(over="ignore"):
                matrix[row:row + len(chunk)] = to_numpy(flat).reshape(len(chunk), d)
        row += len(chunk)
    if bad.any():
        k = int(bad.sum())
        return None, (f"{k} {'row holds' if k == 1 else 'rows hold'} null values inside the embedding list",
                      "store a finite float at every position (a missing value is not a number)"), dtype, bad
    return matrix, None, dtype, bad


def float32_range(column: pa.ChunkedArray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the given rows of a float64 embedding column (``rows``: bool mask or indices), which
    hold finite values beyond float32's range (they became ±inf) and which hold non-zero values
    that all round to zero in float32 (the row became all zeros).

    Only called on rows already found inf or all-zero in float32, so a valid submission never
    pays for a second pass over its float64 values.

    Returns:
        ``(overflow, underflow)``: bool masks over the selected rows.
    """
    import pyarrow as pa

    index = np.flatnonzero(rows) if rows.dtype == bool else np.asarray(rows)
    if not len(index):
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    picked = column.take(pa.array(index))
    flat = picked.combine_chunks() if isinstance(picked, pa.ChunkedArray) else picked
    values = to_numpy(flat.flatten(), null=np.nan).astype(np.float64).reshape(len(index), -1)
    finite = np.isfinite(values).all(axis=1)
    biggest = np.abs(np.where(np.isfinite(values), values, 0.0)).max(axis=1)
    overflow = finite & (biggest > float(np.finfo(np.float32).max))
    with np.errstate(over="ignore", under="ignore"):
        underflow = finite & (biggest > 0) & ~values.astype(np.float32).any(axis=1)
    return overflow, underflow

