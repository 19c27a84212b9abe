"""What every engine shares: the arrays of one task, the first-hit counts it returns, and the
engine interface with its counters. No search and no I/O here.

An engine turns prepared vectors and labels into, per task, the first-hit counts ``a, t, p`` of
each query: ``a`` irrelevant gallery items strictly above the query's best relevant score ``s+``,
``t`` irrelevant items exactly at ``s+``, ``p`` relevant items at ``s+``. Measures are computed
from these counts alone (:mod:`ropebench.measures`), so engines that agree on the counts agree on
every number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["TaskData", "FirstHits", "SearchRun", "Engine", "COUNTERS"]

# Every engine reports these counters (0 where a path does not exist in that engine), so a test
# can bound them and a results file records how the numbers were computed.
COUNTERS: tuple[str, ...] = (
    "queries_rescored",  # queries whose counts came from an exact rescoring of their whole row
    "queries_censored",  # queries with max K items above their band: a = max K recorded, misses at every K
    "blocks_tiled",  # similarity blocks computed in tiles by the engine's main path
    "blocks_small",  # blocks small enough to be scored by the exact kernel directly
    "blocks_fallback",  # blocks handed to a fallback path (e.g. too many relevant pairs to list)
    "faiss_searches",  # FAISS index searches run
)


@dataclass(frozen=True)
class TaskData:
    """The arrays of one task ``X2Y``.

    Attributes:
        queries: ``(nq, d')`` float32 query vectors (already prepared for inner product).
        gallery: ``(ng, d')`` float32 gallery vectors.
        query_products, gallery_products: int64 product codes.
        query_rows: ``(nq,)`` int64 row of each query inside the gallery (intra-domain tasks,
            for self-exclusion), or None for cross-domain tasks.
        query_groups, gallery_groups: int64 group codes (-1 = none) for group exclusion in
            intra-domain tasks, or None.
    """

    queries: np.ndarray
    gallery: np.ndarray
    query_products: np.ndarray
    gallery_products: np.ndarray
    query_rows: np.ndarray | None = None
    query_groups: np.ndarray | None = None
    gallery_groups: np.ndarray | None = None

    @property
    def intra(self) -> bool:
        return self.query_rows is not None

    def n_relevant(self) -> np.ndarray:
        """Eligible relevant gallery items per query (0 = the query is skipped)."""
        n_products = int(max(self.query_products.max(initial=-1), self.gallery_products.max(initial=-1))) + 1
        per_product = np.bincount(self.gallery_products, minlength=n_products)
        count = per_product[self.query_products]
        if not self.intra:
            return count
        if self.query_groups is None or self.gallery_groups is None:
            return count - 1  # the query itself
        # Items sharing both product and group with the query (itself included) are excluded.
        excluded = _pair_counts(self.gallery_products, self.gallery_groups, self.query_products, self.query_groups)
        return count - np.where(self.query_groups >= 0, excluded, 1)

    def n_excluded(self) -> np.ndarray:
        """Gallery items each query excludes (itself and its group), whatever their product."""
        if not self.intra:
            return np.zeros(len(self.queries), dtype=np.int64)
        groups = self.gallery_groups
        if self.query_groups is None or groups is None:
            return np.ones(len(self.queries), dtype=np.int64)
        # One slot at least: a domain whose items all have a null group (-1) has no group sizes.
        sizes = np.bincount(groups[groups >= 0], minlength=max(int(groups.max(initial=-1)), 0) + 1)
        return np.where(self.query_groups >= 0, sizes[np.maximum(self.query_groups, 0)], 1).astype(np.int64)


def _pair_counts(g_first: np.ndarray, g_second: np.ndarray, q_first: np.ndarray, q_second: np.ndarray) -> np.ndarray:
    """For each query, how many gallery rows share both its codes (codes >= -1)."""
    width = int(max(g_second.max(initial=0), q_second.max(initial=0))) + 2
    keys = np.concatenate([g_first * width + g_second + 1, q_first * width + q_second + 1])
    _, inverse = np.unique(keys, return_inverse=True)
    counts = np.bincount(inverse[: len(g_first)], minlength=int(inverse.max(initial=-1)) + 1)
    return counts[inverse[len(g_first):]]


@dataclass(frozen=True)
class FirstHits:
    """First-hit counts of the scored queries of one task.

    Attributes:
        scored: ``(nq,)`` bool, False for skipped queries (no eligible relevant item).
        a, t, p: ``(n_scored,)`` int64 counts for the scored queries, in query order. Where
            ``censored`` is True, the exact ``a`` was not computed: the query misses at every K, and
            ``a, t, p`` are stored as ``max K, 0, 1``.
        censored: ``(n_scored,)`` bool.
        n_rescored: how many queries the engine rescored exactly (a counter, not a result).
    """

    scored: np.ndarray
    a: np.ndarray
    t: np.ndarray
    p: np.ndarray
    censored: np.ndarray
    n_rescored: int = 0  # queries whose counts came from an exact rescoring of their whole row



@dataclass(frozen=True)
class SearchRun:
    """What an engine returns: first-hit counts per task and its counters."""

    hits: Mapping[str, FirstHits]
    counters: Mapping[str, int] = field(default_factory=dict)


class Engine(Protocol):
    """The interface every engine implements; engines are registered by name in
    :mod:`ropebench.engines`.

    ``search`` receives, per task, a :class:`TaskData` whose vectors are already prepared for an
    inner product (cosine normalised, l2 augmented) and returns the counts of every query.
    """

    name: str

    def search(
        self,
        task_data: Mapping[str, TaskData],
        tasks: Sequence[str],
        *,
        max_k: int,
        exact_censored: bool,
        threads: int,
        symmetric_scores: bool,
        on_start: Callable[[int, str], None] | None = None,
        on_progress: Callable[[int], None] | None = None,
    ) -> SearchRun:
        """First-hit counts of ``tasks``. ``symmetric_scores``: ``q·g`` may serve both directions
        of a cross block (False for l2, whose query and gallery sides differ). ``on_start`` is
        called with a total and its unit, ``on_progress`` with units done."""
        ...
