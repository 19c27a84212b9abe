"""Ids and labels as exact numpy arrays: integers stay integers (uint64 above 2^63 included),
strings stay strings, nulls are recognised in every spelling, and two id columns of different
types are compared by their exact values. Used by validation; no file is read here."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["exact_ints", "nulls", "common_ids", "as_text", "is_null", "factorize", "positions", "as_numpy",
           "label_array"]

_INT_RANGE = (int(np.iinfo(np.int64).min), int(np.iinfo(np.uint64).max))  # ids an Arrow column can hold


def exact_ints(values: np.ndarray) -> np.ndarray:
    """Integer ids as int64, except uint64 ids that do not fit int64: those stay uint64, so an
    id keeps its exact value (never reinterpreted as a negative number)."""
    if values.dtype == np.uint64 and len(values) and int(values.max()) > np.iinfo(np.int64).max:
        return values
    return values.astype(np.int64, copy=False)


def nulls(values: np.ndarray) -> np.ndarray:
    if values.dtype == object:
        return np.fromiter((v is None for v in values), dtype=bool, count=len(values))
    return np.zeros(len(values), dtype=bool)


def common_ids(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Make two id arrays comparable exactly: as they are if both have one integer dtype; as
    Python ints if their integer dtypes differ (int64 vs uint64 would meet in float64 and lose
    digits); else both as strings (``17`` matches ``"17"``, decimal text of the exact value)."""
    if a.dtype != object and b.dtype != object:
        if a.dtype == b.dtype:
            return a, b
        return a.astype(object), b.astype(object)
    return as_text(a), as_text(b)


def as_text(values: np.ndarray) -> np.ndarray:
    """Ids as decimal text (object array), nulls kept as None so they match nothing."""
    if values.dtype != object:
        return values.astype(str).astype(object)
    out = np.empty(len(values), dtype=object)
    out[:] = [None if v is None else str(v) for v in values.tolist()]
    return out


def is_null(value: Any) -> bool:
    """None, NaN (also as numpy floats), NaT and pandas.NA, without importing pandas."""
    if value is None:
        return True
    if isinstance(value, (str, int)):
        return False
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return True  # pandas.NA: a comparison with it is neither true nor false


def factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``0..u-1`` numbered in order of first appearance (-1 for a null) and the ``u`` values.

    Integer arrays are factorized by sorting; object arrays (strings, None) through a dict, so a
    value equals another exactly when Python's ``==`` and ``hash`` say so.
    """
    if values.dtype != object:
        uniques, first, inverse = np.unique(values, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        rank = np.empty(len(uniques), dtype=np.int64)
        rank[order] = np.arange(len(uniques))
        return rank[inverse.reshape(-1)], uniques[order]
    table: dict[Any, int] = {}
    codes = np.array([table.setdefault(v, len(table)) for v in values.tolist()], dtype=np.int64)
    keys = list(table)
    null = np.array([is_null(k) for k in keys], dtype=bool)
    if null.any():  # renumber without the null keys (None, NaN), which become -1
        renumber = np.where(null, -1, np.cumsum(~null) - 1)
        codes = renumber[codes] if len(codes) else codes
        keys = [k for k, n in zip(keys, null) if not n]
    uniques = np.empty(len(keys), dtype=object)
    uniques[:] = keys
    return codes, uniques


def positions(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row of each value in ``keys`` (unique), or -1 where it is not there."""
    codes, _ = factorize(np.concatenate([keys, values]) if keys.dtype == values.dtype else
                          np.concatenate([keys.astype(object), values.astype(object)]))
    row_of_code = np.full(int(codes.max(initial=-1)) + 1, -1, dtype=np.int64)
    key_codes = codes[: len(keys)]
    row_of_code[key_codes[key_codes >= 0]] = np.flatnonzero(key_codes >= 0)
    value_codes = codes[len(keys):]
    return np.where(value_codes >= 0, row_of_code[np.maximum(value_codes, 0)], -1)


def as_numpy(values: Any) -> np.ndarray:
    """A numpy array from a numpy array, a sequence, or a tensor (torch and the like: detached,
    moved to the CPU, bfloat16 widened to float32), without importing torch."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        tensor = values.detach().cpu()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":  # numpy has no bfloat16
            tensor = tensor.float()
        return np.asarray(tensor.numpy())
    return np.asarray(values)


def label_array(values: Sequence[Any]) -> np.ndarray:
    """Labels as int64 (uint64 above 2^63), or as objects with every null spelling (NaN, NaT,
    pandas.NA) made None. A Python list is never handed to ``np.asarray`` as is: it would turn
    ``[1, "a"]`` into the strings ``["1", "a"]`` and hide the mix."""
    if isinstance(values, (list, tuple)):
        array = np.empty(len(values), dtype=object)
        for i, value in enumerate(values):  # element by element: a nested list stays one (refused) value
            array[i] = value
        items = [int(v) for v in array.tolist() if isinstance(v, (int, np.integer)) and not isinstance(v, bool)]
        if items and len(items) == len(array) and _INT_RANGE[0] <= min(items) and max(items) <= _INT_RANGE[1]:
            big = max(items) > np.iinfo(np.int64).max
            if not (big and min(items) < 0):  # else Python ints keep both signs exactly
                return np.array(items, dtype=np.uint64 if big else np.int64)
    else:
        array = as_numpy(values)
    if array.dtype.kind in "iu":
        return exact_ints(array)
    kind = array.dtype.kind
    array = array.astype(object)
    if kind not in "US":  # numpy strings cannot be null
        null = np.fromiter((is_null(v) for v in array.tolist()), dtype=bool, count=len(array))
        array[null] = None
    return array
