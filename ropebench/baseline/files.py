"""Reading simulated splits and writing submissions (pyarrow; no torch, no training math)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ropebench.errors import DataError, UsageError
from ropebench.protocol import canonical_domain

__all__ = ["load_split", "write_submission"]


def load_split(path: str | os.PathLike[str], *, labelled: bool) -> dict[str, np.ndarray]:
    """Read ``train.parquet`` (labelled) or ``test.parquet`` into column arrays.

    Returns ``item_id``, ``domain`` (codes), ``features`` (float32 ``(n, f)``) and, when
    ``labelled``, ``product_id``. Raises DataError naming the file and column on bad input.
    """
    from ropebench.io.parquet import read_parquet

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; create it with `ropebench baseline simulate --out {path.parent}`")
    table = read_parquet(path)
    needed = ["item_id", "domain", "features"] + (["product_id"] if labelled else [])
    missing = [name for name in needed if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(needed)}")
    domains = [canonical_domain(d) for d in table.column("domain").to_pylist()]
    unknown = sorted({str(raw) for raw, d in zip(table.column("domain").to_pylist(), domains) if d is None})
    if unknown:
        raise DataError(f"{path}: column domain has unknown value(s) {', '.join(unknown[:5])}; use P, V or L")
    features = table.column("features").combine_chunks()
    try:
        matrix = np.stack(features.to_numpy(zero_copy_only=False)).astype(np.float32)
    except ValueError as error:
        raise DataError(f"{path}: column features must be lists of one constant length ({error})") from None
    columns = {
        "item_id": np.asarray(table.column("item_id").to_pylist(), dtype=object),
        "domain": np.asarray(domains),
        "features": matrix,
    }
    if labelled:
        columns["product_id"] = np.asarray(table.column("product_id").to_pylist(), dtype=object)
    return columns


def write_submission(path: str | os.PathLike[str], item_ids: np.ndarray, embeddings: np.ndarray,
                     *, dtype: str = "float32") -> None:
    """Write a submission parquet: ``item_id`` (string) and ``embedding`` as
    ``fixed_size_list<dtype>[dim]`` (docs/formats.md), atomically.

    ``dtype`` is ``float32`` or ``float16`` (half the size; the bundled sample uses it).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ropebench.io.files import atomic_write_with

    if dtype not in ("float32", "float16"):
        raise UsageError(f"dtype must be float32 or float16, got {dtype!r}")
    values = np.ascontiguousarray(embeddings, dtype=np.dtype(dtype))
    flat = pa.array(values.reshape(-1), type=pa.from_numpy_dtype(values.dtype))
    table = pa.Table.from_arrays(
        [pa.array([str(i) for i in item_ids], type=pa.string()),
         pa.FixedSizeListArray.from_arrays(flat, values.shape[1])],
        names=["item_id", "embedding"])
    atomic_write_with(path, lambda tmp: pq.write_table(table, tmp))

