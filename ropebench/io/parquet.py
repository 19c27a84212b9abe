"""Reading submissions and manifests from parquet (docs/formats.md). No metric code lives here.

A source is a parquet file, or a directory holding one parquet file per domain (named by any
accepted spelling: ``P.parquet``, ``short_videos.parquet``) or a hive-partitioned
``domain=…/`` dataset. Reading never builds a Python object per row: embeddings go from Arrow
buffers to one contiguous float32 matrix.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ropebench.errors import DataError
from ropebench.protocol import SPELLINGS, canonical_domain

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["Source", "read_source", "read_parquet", "embedding_matrix", "float32_range", "column_kind", "to_numpy",
           "available_memory"]

_READ_BATCH = 8192  # rows decoded at a time: larger batches multiply the decoder's peak memory
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


@dataclass(frozen=True)
class Source:
    """A table read from disk, with the path it came from (for messages and provenance)."""

    path: str
    table: pa.Table


def available_memory() -> int | None:
    """Bytes this process can still allocate: the smallest of the kernel's ``MemAvailable`` (plus
    free swap), the room left under an address-space limit (``ulimit -v``) and the room left
    under a cgroup (container) limit; None when none can be read."""
    limits = []
    try:  # free swap counts: slow, but a file that fits there can still be evaluated
        with open("/proc/meminfo", encoding="ascii") as handle:
            fields = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle
                      if line.startswith(("MemAvailable:", "SwapFree:"))}
        if "MemAvailable" in fields:
            limits.append(fields["MemAvailable"] + fields.get("SwapFree", 0))
    except (OSError, ValueError, IndexError):
        pass
    try:  # an address-space limit (ulimit -v) counts mappings and thread stacks too
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/status", encoding="ascii") as handle:
                used = next(int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:"))
            limits.append(soft - used)
    except (ImportError, OSError, ValueError, StopIteration):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max", encoding="ascii") as limit_file, \
                open("/sys/fs/cgroup/memory.current", encoding="ascii") as current_file:
            limit = limit_file.read().strip()
            if limit != "max":
                limits.append(int(limit) - int(current_file.read().strip()))
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _check_schema_and_size(path: Path, reader: pq.ParquetFile) -> None:
    """Refuse, from the footer alone, what decoding would fail on less clearly: a zero-size
    ``fixed_size_list`` (pyarrow cannot read its own such files back) and a file whose decoded
    size exceeds the memory left (decoding would die half-way, or take the machine with it)."""
    import pyarrow as pa

    names = reader.schema_arrow.names
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{path}: column {', '.join(map(repr, repeated))} appears more than once "
                        f"({len(names)} columns: {', '.join(names)}). Fix: keep one column of each name")
    for field in reader.schema_arrow:
        if pa.types.is_fixed_size_list(field.type) and field.type.list_size == 0:
            raise DataError(
                f"{path} column '{field.name}': type {field.type} has zero dimension "
                f"({reader.metadata.num_rows} rows, no value in any). Fix: store d > 0 values per item"
            )
    metadata = reader.metadata
    decoded = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    free = available_memory()
    if free is not None and decoded > free:
        raise DataError(
            f"{path}: too large to read: its {metadata.num_rows} rows decode to {_gib(decoded)} but only "
            f"{_gib(free)} of memory is available. Fix: use a machine with more memory, or store the "
            "embeddings as float16 or with a smaller d"
        )


_OUT_OF_RESOURCES = ("Cannot allocate memory", "Failed to launch worker thread", "Resource temporarily unavailable")


def read_parquet(path: Path) -> pa.Table:
    """Read one parquet file; DataError naming the file if it is unreadable, truncated, or too
    large for the memory left."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # Batch by batch: decoding a whole list column at once peaks at several times its size.
        reader = pq.ParquetFile(path, memory_map=True)
        _check_schema_and_size(path, reader)
        batches = list(reader.iter_batches(batch_size=_READ_BATCH))
        table = pa.Table.from_batches(batches, schema=reader.schema_arrow)
        # Parquet readers do not check string bytes or list offsets: a damaged file can decode to
        # invalid UTF-8 ids that fail much later, far from the file's name.
        table.validate(full=True)
        return table
    except DataError:
        raise
    except (MemoryError, pa.ArrowMemoryError):
        raise DataError(
            f"{path}: too large to read: decoding it ran out of memory. Fix: use a machine with more "
            "memory, or store the embeddings as float16 or with a smaller d"
        ) from None
    except PermissionError as error:
        raise DataError(f"{path}: cannot be opened ({error.strerror}). Fix: make the file readable "
                        "(chmod u+r) or run as a user who may read it") from None
    except (pa.ArrowException, OSError, ValueError) as error:  # ValueError: e.g. column names not UTF-8
        if (isinstance(error, OSError) and error.errno == errno.ENOMEM) or any(
                text in str(error) for text in _OUT_OF_RESOURCES):
            # Mapping the file or starting the decoder's threads failed: the memory limit, not the file.
            raise DataError(
                f"{path}: too large to read within this process's memory limit ({error}). Fix: raise the "
                "limit (ulimit -v, container memory) or use a machine with more memory"
            ) from None
        if isinstance(error, OSError) and error.errno == errno.EACCES:
            raise DataError(f"{path}: cannot be opened (permission denied). Fix: make the file readable "
                            "(chmod u+r) or run as a user who may read it") from None
        raise DataError(
            f"{path}: cannot be read as parquet ({error}). "
            "Fix: re-write the file with pyarrow/pandas `to_parquet` (is it truncated or not parquet?)."
        ) from None


_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def _not_regular(mode: int) -> str | None:
    """What a non-regular, non-directory file is (``"a named pipe"``, …), or None."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _domain_of_path(path: Path, root: Path) -> str | None:
    """The domain a file inside a directory source belongs to: a ``domain=X/`` folder, a folder
    named like a file (``P.parquet/part-0.parquet``, as Spark writes one "file"), or its own name."""
    for part in path.relative_to(root).parts[:-1]:
        key, _, value = part.partition("=")
        if key == "domain":
            return value
        if part.endswith(".parquet"):
            return part.split(".")[0]
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
    # os.stat, never open(): opening a named pipe for reading blocks until someone writes to it.
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{what} {path}: no such file or directory. Fix: check the path.") from None
    except OSError as error:
        raise DataError(f"{what} {path}: cannot be accessed ({error.strerror or error}). "
                        "Fix: check the path and its permissions.") from None
    kind = _not_regular(mode)
    if kind is not None:
        raise DataError(f"{what} {path}: not a regular file ({kind}). "
                        "Fix: give a parquet file or a directory of per-domain parquet files.")
    if stat.S_ISREG(mode):
        return Source(str(path), read_parquet(path))

    problems: list[str] = []
    files = []
    for candidate in sorted(path.rglob("*.parquet")):
        try:
            entry_mode = os.stat(candidate).st_mode
        except OSError as error:
            problems.append(f"{candidate}: cannot be accessed ({error.strerror or error}). "
                            "Fix: remove it or make it readable")
            continue
        entry_kind = _not_regular(entry_mode)
        if entry_kind is not None:
            problems.append(f"{candidate}: not a regular file ({entry_kind}). Fix: replace it with a parquet file "
                            "or remove it")
        elif stat.S_ISREG(entry_mode):
            files.append(candidate)
    if not files and not problems:
        raise DataError(
            f"{what} directory {path}: holds no *.parquet file. Fix: one file per domain, "
            "named P.parquet / V.parquet / L.parquet (or any accepted spelling), or domain=…/ folders."
        )
    tables, sources = [], []
    for file in files:
        spelling = _domain_of_path(file, path)
        code = canonical_domain(spelling)
        if code is None:
            problems.append(
                f"{file}: {spelling!r} is not a domain name. Fix: rename it after its domain "
                f"({', '.join(sorted(SPELLINGS))}), e.g. P.parquet, or move it out of the directory"
            )
            continue
        try:
            table = read_parquet(file)
        except DataError as error:  # every file's problem in one message
            problems.append(str(error))
            continue
        if "domain" in table.column_names:
            disagree = _disagreeing_rows(table, code)
            if disagree is not None:
                named_by = "folder" if "=" in file.parent.name else "file name"
                problems.append(f"{file}: {disagree} but the {named_by} says {code}. Fix: move those rows to the "
                                "file of their domain, or drop the file's 'domain' column if the name is right")
                continue
            table = table.drop_columns(["domain"])
        tables.append(table.append_column("domain", pa.array(np.full(table.num_rows, code))))
        sources.append(file)
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise DataError(
            f"{what} directory {path}: {len(problems)} {noun}, nothing was read:\n  - " + "\n  - ".join(problems)
        )
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException:
        raise DataError(f"{what} directory {path}: the per-domain files disagree on column types: "
                        f"{_type_differences(tables, sources)}. Fix: write every file with the same columns "
                        "and types (ids all strings or all integers)") from None
    if pa.types.is_dictionary(table.schema.field("domain").type):  # hive partitions
        table = table.set_column(
            table.schema.get_field_index("domain"), "domain", pc.cast(table.column("domain"), pa.string())
        )
    return Source(str(path), table)


def _disagreeing_rows(table: pa.Table, code: str) -> str | None:
    """Where a per-domain file's own ``domain`` column names another domain than its file name
    (count and example ids), or None when every row agrees."""
    values = table.column("domain").to_pylist()
    wrong = [i for i, v in enumerate(values) if canonical_domain(str(v)) != code]
    if not wrong:
        return None
    ids = table.column("item_id").to_pylist() if "item_id" in table.column_names else None
    found = sorted({str(values[i]) for i in wrong})[:5]
    line = f"column 'domain' holds {', '.join(map(repr, found))} in {len(wrong)} of {len(values)} rows"
    if ids is not None:
        line += f" (e.g. item_id {', '.join(repr(ids[i]) for i in wrong[:5])})"
    return line


def _type_differences(tables: list[pa.Table], files: list[Path]) -> str:
    """``column 'item_id' is string in P.parquet, int64 in V.parquet`` for every column whose
    type differs between the files of a directory."""
    by_column: dict[str, dict[str, list[str]]] = {}
    for table, file in zip(tables, files):
        for field in table.schema:
            by_column.setdefault(field.name, {}).setdefault(str(field.type), []).append(file.name)
    parts = [f"column '{name}' is " + ", ".join(f"{type_} in {', '.join(names)}" for type_, names in types.items())
             for name, types in by_column.items() if len(types) > 1]
    return "; ".join(parts) or "the files cannot be combined"


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
