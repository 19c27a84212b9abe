"""Shared by the benchmarks: the best of a few wall-clock runs (the least disturbed by other load)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of(function: Callable[[], Any], repeat: int) -> float:
    """The shortest of ``repeat`` runs of ``function()``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def catalogue_gemm(test: dict, distractors: dict) -> None:
    """numpy's float32 GEMM of every test domain against every distractor domain, in square
    4096 x 4096 tiles (64 MiB), OpenBLAS threading each GEMM: the catalogue's GEMM bound."""
    import numpy as np

    side = 4096
    buffer = np.empty(side * side, dtype=np.float32)
    for x in "PVL":
        for y in "PVL":
            left, right = test[x], distractors[y]
            for i0 in range(0, len(left), side):
                for j0 in range(0, len(right), side):
                    a, b = left[i0:i0 + side], right[j0:j0 + side]
                    np.matmul(a, b.T, out=buffer[: len(a) * len(b)].reshape(len(a), len(b)))
