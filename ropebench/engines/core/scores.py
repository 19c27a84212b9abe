"""The exact score: the metric's similarity of two float32 vectors, evaluated in float64 with one
fixed summation order.

Every product of two float32 numbers is exact in float64; the ``d`` products (or squared
differences, for ``l2``) are then summed as a binary tree: padded with zeros to a power of two,
the second half is added onto the first until one column is left. The order depends on nothing
but ``d``, so the same two vectors give the same bits on every CPU, BLAS and engine, and two
bit-identical vectors always tie.
"""

from __future__ import annotations

import numpy as np

from ropebench.engines.core.stored import stored

__all__ = ["tree_sum", "exact_scores", "screen_norms", "translated_norms", "SETTLE_BATCH"]

SETTLE_BATCH = 1 << 10  # pairs per float64 block (1k x d float64 temporaries stay in cache: 30% faster than 16k)


def tree_sum(terms: np.ndarray, overwrite: bool = False) -> np.ndarray:
    """Row sums of a ``(n, d)`` float64 array in the fixed pairwise order (a new array; with
    ``overwrite``, a C-contiguous ``terms`` is used as the scratch space, same bits)."""
    n, d = terms.shape
    if d == 0:
        return np.zeros(n, dtype=np.float64)
    width = 1 << max(0, (d - 1).bit_length())
    if width != d:
        padded = np.zeros((n, width), dtype=np.float64)
        padded[:, :d] = terms
        terms = padded
    elif not (overwrite and terms.flags.c_contiguous):
        terms = terms.copy()
    while width > 1:
        width //= 2
        np.add(terms[:, :width], terms[:, width:2 * width], out=terms[:, :width])
    return terms[:, 0].copy()


def exact_scores(queries: np.ndarray, gallery: np.ndarray, q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    """Float64 scores of the pairs ``(queries[q[i]], gallery[g[i]])`` by the definition.

    Args:
        queries, gallery: float32 vectors of the definition (cosine: normalised once; ip: as
            submitted; l2: as submitted, not translated).
        q, g: ``(n,)`` row indices.
        metric: ``cosine`` and ``ip`` give ``q·g``; ``l2`` gives ``-|q - g|²``.
    """
    if stored(queries) and stored(gallery):  # computed where the vectors are, the same bits
        return queries.exact_scores(gallery, q, g, metric)
    out = np.empty(len(q), dtype=np.float64)
    for start in range(0, len(q), SETTLE_BATCH):
        left = queries[q[start:start + SETTLE_BATCH]].astype(np.float64)
        right = gallery[g[start:start + SETTLE_BATCH]].astype(np.float64)
        if metric == "l2":
            np.subtract(left, right, out=left)
            np.multiply(left, left, out=left)
            out[start:start + len(left)] = -tree_sum(left, overwrite=True)
        else:
            np.multiply(left, right, out=left)
            out[start:start + len(left)] = tree_sum(left, overwrite=True)
    return out


def screen_norms(vectors: np.ndarray, metric: str, side: str) -> np.ndarray:
    """Float64 norms of screening vectors (``l2``: of the translated coordinates only)."""
    if stored(vectors):
        return vectors.screen_norms(metric, side)
    if metric != "l2":
        return np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
    body = vectors[:, :-1]
    norm = np.sqrt(np.einsum("ij,ij->i", body, body, dtype=np.float64))
    return norm / 2.0 if side == "gallery" else norm


def translated_norms(vectors: np.ndarray, center: np.ndarray | None) -> np.ndarray:
    """``|q − c|²`` in float64 with the fixed summation order (the ``l2`` screening offset)."""
    if stored(vectors):
        return vectors.translated_norms(center)
    out = np.empty(len(vectors), dtype=np.float64)
    shift = np.zeros(vectors.shape[1]) if center is None else np.asarray(center, dtype=np.float64)
    for start in range(0, len(vectors), 1 << 14):
        block = vectors[start:start + (1 << 14)].astype(np.float64) - shift
        out[start:start + len(block)] = tree_sum(block * block)
    return out
