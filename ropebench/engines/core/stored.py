"""Vectors kept off the host (a submitted torch tensor's prepared rows on its device).

The core reads a task's vectors for a few whole-array quantities (norms, ``l2``'s offsets, the
integer check, the relevant pairs' screened scores) and for the rows it settles in float64. An
array that is not a numpy array but has the methods below answers those where it lives; every
other read (``vectors[rows]``, ``np.asarray(vectors)``) copies rows to the host, counted by the
array itself. The core never imports the engine that made it.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeGuard

import numpy as np

__all__ = ["StoredVectors", "stored"]


class StoredVectors(Protocol):
    """``(n, d)`` float32 vectors stored elsewhere; the answers are numpy's, bit for bit, except
    :meth:`screen_norms` and :meth:`unit_scores`, which only need to be within the core's bounds
    (float64 norms summed in another order; float32 scores accumulated in another order)."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, key: Any) -> np.ndarray: ...

    def screen_norms(self, metric: str, side: str) -> np.ndarray: ...

    def translated_norms(self, center: np.ndarray | None) -> np.ndarray: ...

    def integer_max(self) -> float | None: ...

    def covers(self, precision: Any) -> bool: ...

    def unit_scores(self, rows_q: np.ndarray, gallery: Any, rows_g: np.ndarray) -> np.ndarray: ...

    def exact_scores(self, gallery: Any, q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray: ...


def stored(vectors: Any) -> TypeGuard[StoredVectors]:
    """Whether ``vectors`` are kept off the host (see the module docstring)."""
    return not isinstance(vectors, np.ndarray) and hasattr(vectors, "exact_scores")
