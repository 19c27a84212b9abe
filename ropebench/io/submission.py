"""Writing a submission parquet from arrays, and the checks every converter runs on what it wrote.

A submission written here has ``item_id`` (integer or string, exactly as given), ``embedding``
(``fixed_size_list<float32>[d]``), and optionally ``domain`` (canonical ``P``/``V``/``L``),
``product_id`` and extra columns. Provenance goes into the parquet schema metadata under the key
``b"ropebench"`` as a JSON object.

Embeddings are always stored as float32: ropebench scores in float32, so a float64 submission
would carry digits the evaluation never reads, and float16 widens to float32 exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ropebench.errors import DataError, RopebenchError
from ropebench.io.files import atomic_write_with, sha256_file
from ropebench.protocol import canonical_domain

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = [
    "METADATA_KEY",
    "Problems",
    "as_numpy",
    "check_submission_file",
    "read_metadata",
    "refuse_output_among_inputs",
    "source_records",
    "submission_table",
    "write_submission",
    "write_table_atomically",
]

METADATA_KEY = b"ropebench"
_RESERVED = ("item_id", "embedding", "domain", "product_id")
_EXAMPLES = 5


class Problems:
    """Collects every problem of one call, so the user sees them all at once."""

    def __init__(self, headline: str) -> None:
        self.headline = headline
        self.lines: list[str] = []

    def add(self, where: str, what: str, examples: Sequence[Any] = (), fix: str = "") -> None:
        line = f"{where}: {what}"
        if len(examples):
            line += " (e.g. item_id " + ", ".join(repr(v) for v in list(examples)[:_EXAMPLES]) + ")"
        if fix:
            line += f". Fix: {fix}"
        self.lines.append(line)

    def raise_if_any(self) -> None:
        if self.lines:
            noun = "problem" if len(self.lines) == 1 else "problems"
            raise DataError(f"{self.headline}: {len(self.lines)} {noun}, nothing was written:\n  - "
                            + "\n  - ".join(self.lines))


def as_numpy(values: Any) -> np.ndarray:
    """A numpy array from an array-like; torch tensors (any device, requires_grad) are duck-typed.

    Torch is never imported: anything with ``detach``, ``cpu`` and ``numpy`` is treated as a tensor.
    """
    if hasattr(values, "detach") and hasattr(values, "cpu") and hasattr(values, "numpy"):
        tensor = values.detach()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
            tensor = tensor.float()  # numpy has no bfloat16; float32 holds every bfloat16 exactly
        return np.asarray(tensor.cpu().numpy())
    return np.asarray(values)


def _objects(values: Any) -> np.ndarray:
    """A 1-d object array of a plain sequence, without numpy's type guessing ([1, "a"] -> strings)."""
    items = list(values)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def _id_array(values: Any, name: str, problems: Problems) -> pa.Array | None:
    """Ids (item or product) as an Arrow int64, uint64 or string array, exactly as given."""
    import pyarrow as pa

    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        if not (pa.types.is_integer(array.type) or pa.types.is_string(array.type)
                or pa.types.is_large_string(array.type)):
            problems.add(f"argument '{name}'", f"has Arrow type {array.type}", fix="pass integer or string ids")
            return None
        if array.null_count:
            problems.add(f"argument '{name}'", f"has {array.null_count} null value(s)", fix="give every row an id")
            return None
        return array
    if isinstance(values, np.ndarray) or hasattr(values, "__array__") or hasattr(values, "detach"):
        array = as_numpy(values)
    else:
        array = _objects(values)
    if array.ndim != 1:
        problems.add(f"argument '{name}'", f"has shape {array.shape}", fix="pass a 1-d sequence, one id per row")
        return None
    kind = array.dtype.kind
    if kind == "u" and array.dtype.itemsize == 8:
        return pa.array(array, type=pa.uint64())  # ids above 2**63 keep their value
    if kind in "iu":
        return pa.array(array.astype(np.int64, copy=False), type=pa.int64())
    if kind == "U":
        return pa.array(array.astype(object), type=pa.string())
    if kind != "O":
        problems.add(f"argument '{name}'", f"has dtype {array.dtype} (floats, booleans and bytes are not exact ids)",
                     fix="pass integer ids (int64/uint64) or strings")
        return None
    return _object_ids(array, name, problems)


def _object_ids(array: np.ndarray, name: str, problems: Problems) -> pa.Array | None:
    import pyarrow as pa

    items = array.tolist()
    is_str = [isinstance(v, str) for v in items]
    is_int = [isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items]
    if all(is_str):
        return pa.array(items, type=pa.string())
    if all(is_int):
        ints = [int(v) for v in items]
        if not ints or (min(ints) >= -(2**63) and max(ints) < 2**63):
            return pa.array(ints, type=pa.int64())
        if min(ints) >= 0 and max(ints) < 2**64:
            return pa.array(ints, type=pa.uint64())
        problems.add(f"argument '{name}'", "holds integers outside the 64-bit range", fix="pass them as strings")
        return None
    bad = [v for v, s, i in zip(items, is_str, is_int) if not (s or i)]
    if bad:
        problems.add(f"argument '{name}'", f"has {len(bad)} value(s) that are neither str nor int, e.g. "
                     + ", ".join(repr(v) for v in bad[:_EXAMPLES]), fix="pass integer or string ids, no nulls")
    else:
        problems.add(f"argument '{name}'", "mixes str and int ids", fix="convert every id to str (or every id to int)")
    return None


def _examples(ids: pa.Array | None, rows: np.ndarray) -> list[Any]:
    if ids is None or not len(rows):
        return []
    return ids.take(np.asarray(rows[:_EXAMPLES], dtype=np.int64)).to_pylist()


def _duplicates(ids: pa.Array, name: str, problems: Problems) -> None:
    import pyarrow.compute as pc

    counts = pc.value_counts(ids)  # in order of first appearance
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        rows = int(pc.sum(repeated.field("counts")).as_py())
        problems.add(f"argument '{name}'", f"{len(repeated)} id(s) appear more than once ({rows} rows)",
                     repeated.field("values").to_pylist(), "keep one row per item (drop the repeats)")


def _embedding_matrix(embeddings: Any, problems: Problems) -> np.ndarray | None:
    array = as_numpy(embeddings)
    if array.ndim != 2 or array.shape[1] == 0 or array.dtype.kind not in "fiu":
        problems.add("argument 'embeddings'", f"has shape {array.shape} and dtype {array.dtype}",
                     fix="pass a 2-d float array (n, d) with d > 0")
        return None
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, reported below
        return np.ascontiguousarray(array, dtype=np.float32)


def _domain_array(domains: Any, ids: pa.Array | None, problems: Problems) -> pa.Array | None:
    import pyarrow as pa

    values = as_numpy(domains) if hasattr(domains, "__array__") or hasattr(domains, "detach") else _objects(domains)
    if values.ndim != 1:
        problems.add("argument 'domains'", f"has shape {values.shape}", fix="pass one domain per row")
        return None
    uniques, inverse = np.unique(values.astype(object).astype(str), return_inverse=True)
    codes = np.array([canonical_domain(u) or "" for u in uniques.tolist()] + [""], dtype=object)[inverse]
    unknown = np.flatnonzero(codes == "")
    if len(unknown):
        names = sorted({str(v) for v in values[unknown].tolist()})
        problems.add("argument 'domains'", f"{len(unknown)} row(s) with unknown domain "
                     + ", ".join(map(repr, names[:_EXAMPLES])), _examples(ids, unknown),
                     "use P/V/L or page/video/live (any spelling of the three domains)")
        return None
    return pa.array(codes.tolist(), type=pa.string())


def submission_table(
    item_ids: Any,
    embeddings: Any,
    domains: Any = None,
    product_ids: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    extra_columns: Mapping[str, Any] | None = None,
) -> pa.Table:
    """Build (and check) the Arrow table :func:`write_submission` writes. Arguments as there."""
    import pyarrow as pa

    from ropebench._version import __version__

    problems = Problems("write_submission")
    ids = _id_array(item_ids, "item_ids", problems)
    matrix = _embedding_matrix(embeddings, problems)
    n = len(ids) if ids is not None else (len(matrix) if matrix is not None else None)
    columns: dict[str, pa.Array] = {}
    if ids is not None:
        _duplicates(ids, "item_ids", problems)
        columns["item_id"] = ids
    if matrix is not None and n is not None:
        if len(matrix) != n:
            problems.add("argument 'embeddings'", f"has {len(matrix)} rows for {n} item_ids",
                         fix="pass one embedding row per item_id, in the same order")
        else:
            bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
            if len(bad):
                problems.add("argument 'embeddings'", f"{len(bad)} row(s) contain NaN or ±inf (or values beyond "
                             "float32's range)", _examples(ids, bad), "replace them with finite values")
            columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])
    labels = {"domain": (domains, "domains"), "product_id": (product_ids, "product_ids")}
    for column, (values, argument) in labels.items():
        if values is None:
            continue
        array = _domain_array(values, ids, problems) if column == "domain" else _id_array(values, argument, problems)
        if array is not None and n is not None and len(array) != n:
            problems.add(f"argument '{argument}'", f"has {len(array)} entries for {n} item_ids",
                         fix="pass one entry per item_id")
        elif array is not None:
            columns[column] = array
    for name, values in (extra_columns or {}).items():
        if name in _RESERVED:
            problems.add(f"extra column '{name}'", "clashes with a submission column",
                         fix=f"rename it (reserved: {', '.join(_RESERVED)})")
            continue
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(
            as_numpy(values) if hasattr(values, "__array__") else list(values))
        if n is not None and len(array) != n:
            problems.add(f"extra column '{name}'", f"has {len(array)} entries for {n} item_ids",
                         fix="pass one entry per item_id")
        else:
            columns[name] = array
    problems.raise_if_any()
    assert matrix is not None and ids is not None  # raise_if_any returned: both were built
    record = {"writer": "ropebench.write_submission", "ropebench_version": __version__,
              "n_items": len(ids), "dim": int(matrix.shape[1]), **(metadata or {})}
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(record, sort_keys=True).encode()})


def write_table_atomically(
    path: str | os.PathLike[str], table: pa.Table, *, check: Callable[[str], Any] | None = None
) -> None:
    """Write ``table`` as parquet to a temporary file, run ``check(tmp_path)``, then rename onto ``path``.

    A failing check leaves ``path`` untouched; its message names ``path``, not the temporary file.
    """
    import pyarrow.parquet as pq

    def write(tmp: str) -> None:
        pq.write_table(table, tmp)
        if check is not None:
            try:
                check(tmp)
            except DataError as error:
                raise DataError(str(error).replace(tmp, os.fspath(path))) from None

    atomic_write_with(path, write)


def write_submission(
    path: str | os.PathLike[str],
    item_ids: Any,
    embeddings: Any,
    domains: Any = None,
    product_ids: Any = None,
    *,
    metadata: Mapping[str, Any] | None = None,
    extra_columns: Mapping[str, Any] | None = None,
) -> Path:
    """Write a valid submission parquet, atomically (the old file stays if anything fails).

    Args:
        path: the parquet file to write.
        item_ids: ``(n,)`` unique ids: int (int64; uint64 ids above 2**63 stay uint64) or str.
            A list, numpy array, Arrow array or torch tensor.
        embeddings: ``(n, d)`` floats (numpy array or torch tensor on any device, any dtype,
            ``requires_grad`` allowed; never modified). Stored as float32, see the module docstring.
        domains: optional ``(n,)`` domain spellings (``P``, ``video``, ``live_stream``, ...),
            stored as the codes ``P``/``V``/``L``.
        product_ids: optional ``(n,)`` product ids (int or str). With ``domains`` the file is
            self-labelled: it can be evaluated without a manifest.
        metadata: JSON-serialisable provenance, stored in the schema metadata under ``b"ropebench"``.
        extra_columns: more columns (name -> ``(n,)`` array), e.g. the raw fields of a live id.

    Returns:
        The path written.

    Raises:
        DataError: listing every problem at once (row counts that differ, non-finite values,
            duplicate or null ids, unknown domains), with the argument, the count, up to five
            example ids and the fix. Nothing is written then.

    Example:
        >>> write_submission("sub.parquet", ids, model(x), domains=["P"] * len(ids))  # doctest: +SKIP
    """
    table = submission_table(item_ids, embeddings, domains, product_ids,
                             metadata=metadata, extra_columns=extra_columns)
    write_table_atomically(path, table)
    return Path(path)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``b"ropebench"`` provenance record of a parquet file, or None when it has none."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(METADATA_KEY)
    return None if raw is None else dict(json.loads(raw))


def check_submission_file(path: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None) -> str:
    """Validate a written submission; return one line saying what was checked.

    With a manifest, or with its own ``domain`` and ``product_id`` columns, this is the full
    validation ``ropebench validate`` runs. Without labels only what the file itself can show is
    checked: readable, unique ids, one dimension, finite values.

    Raises:
        DataError: the problems found.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from ropebench.io.parquet import embedding_matrix, read_parquet
    from ropebench.io.validation import load_dataset

    if manifest is not None or {"domain", "product_id"} <= set(pq.read_schema(path).names):
        load_dataset(path, manifest)
        return f"validated against manifest {manifest}" if manifest is not None else "validated (self-labelled)"
    table = read_parquet(Path(path))
    problems = Problems(f"submission {path}")
    if pc.count_distinct(table.column("item_id")).as_py() != table.num_rows:
        problems.add("column 'item_id'", "has repeated ids", fix="keep one row per item")
    matrix, structural, _, _ = embedding_matrix(table.column("embedding"))
    if structural is not None:
        problems.add("column 'embedding'", structural[0], fix=structural[1])
    elif matrix is not None and not np.isfinite(matrix).all():
        problems.add("column 'embedding'", "holds NaN or ±inf", fix="replace them with finite values")
    problems.raise_if_any()
    return "checked ids and embeddings (no labels: validate with a manifest before evaluating)"


def source_records(paths: Sequence[str | os.PathLike[str]]) -> list[dict[str, str]]:
    """``[{"path": …, "sha256": …}]`` for the provenance record of a converted file."""
    return [{"path": os.fspath(p), "sha256": sha256_file(p)} for p in paths]


def refuse_output_among_inputs(out: str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> None:
    """DataError when ``out`` is one of the inputs, a directory, a pipe or device, or lies where
    it cannot be written (below a file, a read-only directory): checked before any work.

    An output *inside* a directory input is allowed here (a converter's shard directory is not
    changed by a file written beside the shards)."""
    from ropebench.io.safety import check_output_paths

    target = os.path.realpath(out)
    if os.path.isdir(target) or os.fspath(out).endswith(("/", os.sep)):
        raise DataError(f"--out {out}: is a directory. Fix: give a file name, e.g. {Path(out) / 'out.parquet'}")
    for source in inputs:
        if os.path.realpath(source) == target:
            raise DataError(f"--out {out}: is also an input ({source}); writing it would destroy the input. "
                            "Fix: choose another output path")
    try:
        check_output_paths({"--out": out}, {})
    except RopebenchError as error:
        raise DataError(str(error)) from None
