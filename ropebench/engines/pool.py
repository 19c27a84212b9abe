"""Running an engine's tiles on its worker pool: shared by the one-pass engine, the torch engine's
tile loop and the few-shot linear screen (no engine imports another for it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_tiles"]


def run_tiles(pool: ThreadPoolExecutor | None, tiles: Sequence[tuple[int, int]],
              run_tile: Callable[[tuple[int, int]], None]) -> None:
    """Every tile, on the worker pool (or here, in order, without one)."""
    if pool is None:
        for tile in tiles:
            run_tile(tile)
    else:
        for _ in pool.map(run_tile, tiles):
            pass
