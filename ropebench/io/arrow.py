"""Arrow arrays from numpy id and label arrays, keeping every value exact (no pandas)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["id_array"]


def id_array(values: np.ndarray) -> Any:
    """A pyarrow array of ids or labels with their exact value and type.

    int64 stays int64 and uint64 stays uint64 (an id above 2^63 is never reinterpreted as a
    negative number); an object array of strings becomes ``string``; an object array of Python
    ints becomes int64 or, when a value needs it, uint64.
    """
    import pyarrow as pa

    if values.dtype.kind in "iu":
        return pa.array(values)
    items = values.tolist()
    if all(isinstance(v, str) for v in items):
        return pa.array(items, type=pa.string())
    if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        big = any(v > np.iinfo(np.int64).max for v in items)
        return pa.array(items, type=pa.uint64() if big else pa.int64())
    # Validation refuses mixed or float ids; reaching here is a bug, not a user error to paper over.
    kinds = sorted({type(v).__name__ for v in items})
    raise TypeError(f"ids of mixed or unsupported types ({', '.join(kinds)}) cannot be written exactly")
