"""Preparing vectors so that every similarity is an inner product for the screening kernels, and
counting first hits from lists of screened scores. Shared by every engine; no I/O here.

All three similarities are inner products here: ``cosine`` on L2-normalised copies and ``l2``
as ``[q, 1] · [2g, -|g|^2] = -|q - g|^2 + |q|^2``, which ranks a query's gallery exactly as
the negative squared distance does (``|q|^2`` is constant per query). For ``l2`` the data is
first translated by a common centre (the coordinate-wise lower median), so distances between
points far from the origin do not cancel catastrophically and translating every embedding by
one vector leaves every number unchanged.
"""

from __future__ import annotations

import numpy as np

from ropebench.engines.base import TaskData
from ropebench.engines.core.scores import tree_sum

__all__ = ["prepare_vectors", "score_vectors", "l2_center", "counts_from_scores", "eligible_mask", "NORMALIZE_BATCH"]

NORMALIZE_BATCH = 4096  # rows normalised per float64 block (bounds its temporary)


def l2_center(embeddings: np.ndarray) -> np.ndarray:
    """The coordinate-wise lower median of ``(n, d)`` embeddings, as float64 ``(d,)``.

    An element of the data in every coordinate, so it moves exactly with a translation of the
    data (``center(X + v) == center(X) + v`` whenever ``X + v`` is exact) and does not depend on
    the row order. Subtracting it in float64 is exact for float32 inputs.
    """
    if len(embeddings) == 0:
        return np.zeros(embeddings.shape[1], dtype=np.float64)
    middle = (len(embeddings) - 1) // 2
    # Partitioning the float32 values picks one of them per coordinate: the same element as in
    # float64, at half the memory.
    # ``+ 0.0`` makes a median zero +0.0 whichever of -0.0 and +0.0 the selection picked (another
    # selection, e.g. on a torch device, picks another), so the translated rows' bits are fixed.
    return np.partition(np.asarray(embeddings), middle, axis=0)[middle].astype(np.float64) + 0.0


def prepare_vectors(
    embeddings: np.ndarray, metric: str, *, center: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Query-side and gallery-side float32 vectors whose inner product ranks as ``metric``.

    Never modifies ``embeddings``. For ``cosine`` and ``ip`` both sides are the same array.

    Args:
        embeddings: ``(n, d)`` floats.
        metric: ``cosine``, ``ip`` or ``l2``.
        center: ``(d,)`` l2 only: subtracted (in float64) before anything else; pass the same
            centre for every domain of one evaluation (see :func:`l2_center`).
    """
    if metric == "cosine":
        # Normalise in float64 (the norm summed in the fixed order of the exact score, so the same
        # on every CPU) and round once: vectors with the same direction (x and 2x, or integer
        # vectors) become bit-identical float32 rows, so their scores tie exactly.
        vectors = np.empty(embeddings.shape, dtype=np.float32)
        for start in range(0, len(vectors), NORMALIZE_BATCH):
            block = np.asarray(embeddings[start:start + NORMALIZE_BATCH], dtype=np.float64)
            norm = np.sqrt(tree_sum(block * block))
            # A zero vector stays zero (validation refuses them in submissions; a few-shot prototype
            # whose supports cancel exactly is one, and scores 0 against every query).
            block /= np.where(norm > 0, norm, 1.0)[:, None]
            vectors[start:start + NORMALIZE_BATCH] = block
        return vectors, vectors
    if metric == "ip":
        vectors = np.ascontiguousarray(embeddings, dtype=np.float32)
        return vectors, vectors
    # l2: [q, 1] · [2g, -|g|²] on data translated by ``center`` (see the module docstring).
    n, d = embeddings.shape
    queries = np.empty((n, d + 1), dtype=np.float32)
    gallery = np.empty_like(queries)
    shift = np.zeros(d, dtype=np.float64) if center is None else np.asarray(center, dtype=np.float64)
    for start in range(0, n, NORMALIZE_BATCH):
        block = np.asarray(embeddings[start:start + NORMALIZE_BATCH], dtype=np.float64) - shift
        rows = slice(start, start + len(block))
        queries[rows, :-1] = block
        # 2g and |g|² from the float32 values actually searched, so q·g and |g|² round alike;
        # |g|² summed in float64 in the exact score's fixed order and rounded once, so every
        # device gives these bits (the torch engine prepares a tensor on its own device).
        centred = queries[rows, :-1]
        np.multiply(centred, np.float32(2.0), out=gallery[rows, :-1])
        wide = centred.astype(np.float64)
        with np.errstate(over="ignore"):  # beyond float32: -inf, as a float32 sum gave (validation refuses it)
            gallery[rows, -1] = -tree_sum(wide * wide, overwrite=True)
    queries[:, -1] = 1.0
    return queries, gallery


def score_vectors(embeddings: np.ndarray, metric: str, prepared: np.ndarray) -> np.ndarray | None:
    """The float32 vectors of the score's definition when they differ from the screening vectors
    ``prepared`` (``l2``: the submitted vectors, untranslated); None when they are the same."""
    if metric != "l2":
        return None
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def counts_from_scores(
    scores: np.ndarray, relevant: np.ndarray, eligible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``a, t, p`` and "has an eligible relevant item" from score rows (any column order)."""
    relevant_eligible = relevant & eligible
    best = np.where(relevant_eligible, scores, -np.inf).max(axis=1, initial=-np.inf)
    has = np.isfinite(best)
    above = scores > best[:, None]
    equal = scores == best[:, None]
    irrelevant = eligible & ~relevant
    a = np.count_nonzero(above & irrelevant, axis=1)
    t = np.count_nonzero(equal & irrelevant, axis=1)
    p = np.count_nonzero(equal & relevant_eligible, axis=1)
    return a, t, p, has


def eligible_mask(data: TaskData, query_index: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """``(len(query_index), ncol)`` mask of gallery items a query may retrieve (not itself, not its group)."""
    if data.query_rows is None:  # cross-domain: nothing excluded
        return np.ones(columns.shape, dtype=bool)
    eligible = columns != data.query_rows[query_index, None]
    if data.query_groups is not None and data.gallery_groups is not None:
        groups = data.query_groups[query_index, None]
        eligible &= ~((data.gallery_groups[columns] == groups) & (groups >= 0))
    return eligible
