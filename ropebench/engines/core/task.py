"""The arrays of one task and the first-hit counts an engine returns for it (the core's data)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ropebench.engines.core.scores import screen_norms, translated_norms

__all__ = ["TaskData", "FirstHits"]


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
        metric: the similarity the vectors were prepared for (``cosine``, ``ip`` or ``l2``).
        score_queries, score_gallery: the float32 vectors of the score's definition, where they
            differ from the screening vectors (``l2``: the submitted vectors, untranslated);
            None: the screening vectors themselves (cosine, ip).
        center: ``l2``: the translation the screening vectors were made with (float64).
        query_set, gallery_set: names of the item sets the queries and the gallery come from
            (from the task registry; engines pair blocks by them and never parse task names).
    """

    queries: np.ndarray
    gallery: np.ndarray
    query_products: np.ndarray
    gallery_products: np.ndarray
    query_rows: np.ndarray | None = None
    query_groups: np.ndarray | None = None
    gallery_groups: np.ndarray | None = None
    metric: str = "ip"
    score_queries: np.ndarray | None = None
    score_gallery: np.ndarray | None = None
    center: np.ndarray | None = None
    query_set: str = "queries"
    gallery_set: str = "gallery"

    @property
    def exact_queries(self) -> np.ndarray:
        """The queries' float32 vectors of the definition (settled in float64)."""
        return self.queries if self.score_queries is None else self.score_queries

    @property
    def exact_gallery(self) -> np.ndarray:
        return self.gallery if self.score_gallery is None else self.score_gallery

    @cached_property
    def screen_norms(self) -> tuple[np.ndarray, np.ndarray]:
        """Float64 norms of the screening vectors (``l2``: of the translated coordinates)."""
        q = screen_norms(self.queries, self.metric, "queries")
        g = q if self.gallery is self.queries else screen_norms(self.gallery, self.metric, "gallery")
        return q, g

    @cached_property
    def offset(self) -> np.ndarray | None:
        """``l2``: ``|q − c|²`` per query (the screen scores ``|q − c|² − |q − g|²``); else None."""
        if self.metric != "l2":
            return None
        return translated_norms(self.exact_queries, self.center)

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
        n_rescored: how many queries the engine screened again against their whole gallery (a
            counter, not a result).
    """

    scored: np.ndarray
    a: np.ndarray
    t: np.ndarray
    p: np.ndarray
    censored: np.ndarray
    n_rescored: int = 0  # queries whose counts came from an exact rescoring of their whole row
