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
from typing import TYPE_CHECKING

import numpy as np

from ropebench.errors import DataError
from ropebench.io.arrow import column_kind, embedding_matrix, float32_range, to_numpy  # noqa: F401  (re-exported)
from ropebench.protocol import SPELLINGS, canonical_domain

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    import pyarrow.parquet as pq

__all__ = ["Source", "read_source", "read_parquet", "embedding_matrix", "float32_range", "column_kind", "to_numpy",
           "available_memory"]

_READ_BATCH = 8192  # rows decoded at a time: larger batches multiply the decoder's peak memory


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


def _not_regular(mode: int) -> str | None:
    """What a non-regular, non-directory file is (``"a named pipe"``, …), or None."""
    from ropebench.io.safety import kind_of_mode

    kind = kind_of_mode(mode)
    return None if kind == "a directory" else kind


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

    from ropebench.io.safety import regular_input

    # os.stat, never open(): opening a named pipe for reading blocks until someone writes to it.
    path = regular_input(path, what, fix="give a parquet file or a directory of per-domain parquet files",
                         allow_directory=True)
    if path.is_file():
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
