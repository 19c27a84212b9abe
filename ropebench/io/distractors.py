"""A distractor catalogue on disk: planned into shards from parquet metadata, read one shard at a
time, and checked like a submission. No search here.

A catalogue is one or more parquet files or directories (``item_id``, ``domain``, ``embedding``
and optionally ``product_id``; in a directory a file without a ``domain`` column takes its domain
from its name, ``P.parquet``, or its ``domain=…/`` folder). Its *order* is the order of the paths
given, files of a directory sorted by path, rows in file order; an item's *position* in that
order decides which nested prefix (``--distractor-sizes``) it belongs to.

A shard is a run of consecutive row groups of one file, merged up to ``shard_rows`` rows; a larger
row group is cut into pieces of at most ``shard_rows`` rows (each piece reads its row group and
keeps its rows), so memory grows with the row group and the shard, not with the catalogue.
Validation (:mod:`ropebench.io.distractor_checks`) reads shards the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ropebench.errors import DataError
from ropebench.io.safety import regular_input
from ropebench.protocol import DOMAINS, canonical_domain

__all__ = ["Shard", "Catalogue", "ShardRows", "plan_catalogue", "read_shard", "read_table", "domain_codes",
           "SHARD_ROWS"]

# Rows per shard: an 8 MiB float32 matrix at d=128, about 5 s of one core against ROPE's queries;
# small enough that the last shards leave the workers evenly loaded.
SHARD_ROWS = 16_384
_READ_BATCH = 8192  # rows decoded at a time (larger batches multiply the decoder's peak memory)


@dataclass(frozen=True)
class Shard:
    """Rows of one file: catalogue positions ``start .. start + n_rows - 1``, read from
    ``row_groups`` after skipping ``skip`` rows of the first (a large row group is cut in pieces).

    ``domain``: the domain code the file's name gives (a file without a ``domain`` column).
    """

    index: int
    path: str
    row_groups: tuple[int, ...]
    start: int
    n_rows: int
    domain: str | None = None
    skip: int = 0


@dataclass(frozen=True)
class Catalogue:
    """The planned catalogue: the paths as given, its files and shards in catalogue order."""

    paths: tuple[str, ...]
    files: tuple[str, ...]
    shards: tuple[Shard, ...]
    n_rows: int


@dataclass(frozen=True)
class ShardRows:
    """One shard read into memory: per row, its catalogue position, domain code and vector."""

    positions: np.ndarray  # (n,) int64
    domains: np.ndarray  # (n,) int8 index into DOMAINS; -1 where the spelling is unknown
    matrix: np.ndarray  # (n, d) float32


def _regular_files(path: Path, problems: list[str]) -> list[Path]:
    """The parquet files a catalogue path stands for (a file, or a directory's files sorted)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        problems.append(f"distractors {path}: no such file or directory. Fix: check the path")
        return []
    except OSError as error:
        problems.append(f"distractors {path}: cannot be accessed ({error.strerror or error}). Fix: check its "
                        "permissions")
        return []
    if stat.S_ISREG(mode):
        return [path]
    if not stat.S_ISDIR(mode):
        problems.append(f"distractors {path}: not a regular file or directory. Fix: give parquet files or a "
                        "directory of them")
        return []
    files = []
    for candidate in sorted(path.rglob("*.parquet")):
        if candidate.is_dir():  # Spark writes a "file" as a directory of parts: its parts are listed too
            continue
        try:
            regular_input(candidate, "distractors")
        except DataError as error:  # a pipe or a link to /dev/zero named like a shard: never read, never skipped
            problems.append(str(error).replace(" Fix: give a regular file", " Fix: replace it with a parquet file "
                                               "or remove it"))
            continue
        files.append(candidate)
    if not files and not problems:
        problems.append(f"distractors directory {path}: holds no *.parquet file. Fix: write the catalogue as "
                        "parquet files (item_id, domain, embedding)")
    return files


def _path_domain(file: Path, root: Path) -> str | None:
    """The domain a file's place names: a ``domain=X`` folder below ``root``, else its stem."""
    parts = file.relative_to(root).parts[:-1] if file != root else ()
    for part in parts:
        key, _, value = part.partition("=")
        if key == "domain":
            return canonical_domain(value)
    return canonical_domain(file.name.split(".")[0])


def plan_catalogue(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                   dim: int | None = None, shard_rows: int = SHARD_ROWS) -> Catalogue:
    """Plan the shards of a catalogue from parquet footers alone (no data is read).

    Args:
        paths: parquet files and/or directories, in catalogue order.
        dim: the test set's dimension ``d``: a ``fixed_size_list`` embedding of another size is
            reported here already.
        shard_rows: consecutive row groups are merged into one shard up to this many rows.

    Raises:
        DataError: every missing, unreadable or ill-shaped file, at once.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    given = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not given:
        raise DataError("distractors: no path given. Fix: pass parquet files or directories")
    problems: list[str] = []
    shards: list[Shard] = []
    files: list[str] = []
    start = 0
    for root in map(Path, given):
        for file in _regular_files(root, problems):
            try:
                reader = pq.ParquetFile(file)
            except (pa.ArrowException, OSError) as error:
                problems.append(f"distractors {file}: cannot be read as parquet ({error}). Fix: re-write it with "
                                "pyarrow (is it truncated, or not parquet?)")
                continue
            schema = reader.schema_arrow
            names = set(schema.names)
            path_domain = _path_domain(file, root) if root.is_dir() else canonical_domain(file.name.split(".")[0])
            missing = [name for name in ("item_id", "embedding") if name not in names]
            if "domain" not in names and path_domain is None:
                missing.append("domain")
            if missing:
                problems.append(f"distractors {file}: column(s) {', '.join(repr(m) for m in missing)} missing "
                                f"(it has {', '.join(schema.names) or 'none'}). Fix: write item_id, domain and "
                                "embedding (or name the file after its domain, e.g. P.parquet)")
                continue
            kind = schema.field("embedding").type
            if dim is not None and pa.types.is_fixed_size_list(kind) and kind.list_size != dim:
                problems.append(f"distractors {file} column 'embedding': dimension {kind.list_size}, but the test "
                                f"set's embeddings have d={dim}. Fix: embed the catalogue with the same model")
                continue
            files.append(str(file))
            metadata = reader.metadata
            group: list[int] = []
            rows = 0
            for index in range(metadata.num_row_groups):
                n = metadata.row_group(index).num_rows
                if group and rows + n > shard_rows:
                    shards.append(Shard(len(shards), str(file), tuple(group), start, rows, path_domain))
                    start, group, rows = start + rows, [], 0
                if n > shard_rows:  # a large row group: pieces of at most shard_rows rows (each reads the group)
                    pieces = -(-n // shard_rows)
                    cuts = [n * piece // pieces for piece in range(pieces + 1)]
                    for skip, stop in zip(cuts[:-1], cuts[1:]):
                        shards.append(Shard(len(shards), str(file), (index,), start, stop - skip, path_domain, skip))
                        start += stop - skip
                    continue
                group.append(index)
                rows += n
            if group and rows:
                shards.append(Shard(len(shards), str(file), tuple(group), start, rows, path_domain))
                start += rows
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        raise DataError(f"distractors: {len(problems)} {noun} found, nothing was evaluated:\n  - "
                        + "\n  - ".join(problems))
    return Catalogue(tuple(str(p) for p in given), tuple(files), tuple(shards), start)


def read_table(shard: Shard, columns: Sequence[str]) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    reader = pq.ParquetFile(shard.path, memory_map=True)
    present = [name for name in columns if name in reader.schema_arrow.names]
    try:
        batches = list(reader.iter_batches(batch_size=_READ_BATCH, row_groups=list(shard.row_groups),
                                           columns=present))
    except (pa.ArrowException, OSError) as error:
        raise DataError(f"distractors {shard.path}: row groups {list(shard.row_groups)} cannot be read "
                        f"({error}). Fix: re-write the file") from None
    table = pa.Table.from_batches(batches, schema=reader.schema_arrow.empty_table().select(present).schema)
    return table.slice(shard.skip, shard.n_rows) if shard.skip or table.num_rows != shard.n_rows else table


def domain_codes(table: Any, shard: Shard) -> np.ndarray:
    """int8 domain codes of a shard's rows (-1 for an unknown or null spelling)."""
    import pyarrow.compute as pc

    from ropebench.io.arrow import to_numpy

    if "domain" not in table.column_names:
        return np.full(table.num_rows, DOMAINS.index(shard.domain) if shard.domain else -1, dtype=np.int8)
    encoded = pc.dictionary_encode(table.column("domain")).combine_chunks()
    lookup = np.array([DOMAINS.index(c) if (c := canonical_domain(v)) else -1
                       for v in encoded.dictionary.to_pylist()] + [-1], dtype=np.int8)
    indices = to_numpy(encoded.indices, null=len(lookup) - 1).astype(np.int64)  # a null spelling -> -1
    return lookup[indices]


def read_shard(shard: Shard) -> ShardRows:
    """Read one shard's positions, domain codes and float32 vectors (the search's input).

    Raises:
        DataError: the embedding column cannot be turned into a matrix (validation reports why).
    """
    from ropebench.io.arrow import embedding_matrix

    table = read_table(shard, ("domain", "embedding"))
    matrix, structural, _, _ = embedding_matrix(table.column("embedding"))
    if matrix is None:
        raise DataError(f"distractors {shard.path} column 'embedding': {structural[0] if structural else 'unreadable'}"
                        ". Fix: validate the catalogue first")
    positions = np.arange(shard.start, shard.start + shard.n_rows, dtype=np.int64)
    return ShardRows(positions, domain_codes(table, shard), matrix)
