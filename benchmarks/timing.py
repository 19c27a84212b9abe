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
