"""Each query's threshold: the float64 score ``T`` of its best eligible relevant item, and ``p``,
how many relevant items score exactly ``T``.

Every product's (queries × items) block is screened in float32 with small batched matmuls (units
padded to power-of-two shapes and multiplied as one stack, so the cost follows the relevant pairs,
not the number of products). Within a query's row only items whose band reaches the best lower
end ``max(ŝ − w)`` can be its best, and only those are settled in float64.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ropebench.engines.core.bound import Bound, pair_widths
from ropebench.engines.core.decide import settle
from ropebench.engines.core.stored import stored
from ropebench.engines.core.task import TaskData

__all__ = ["Best", "best_relevant", "product_units", "UNIT_SCORES"]

UNIT_SCORES = 1 << 21  # screened scores per batched matmul


@dataclass(frozen=True)
class Best:
    """Per query: ``best`` (float64 ``T``, −inf when the query has no eligible relevant item),
    ``p`` (relevant items at ``T``), and the relevant pairs settled in float64."""

    best: np.ndarray
    p: np.ndarray
    settled: int

    @property
    def scored(self) -> np.ndarray:
        return np.isfinite(self.best)


def _pow2(n: np.ndarray) -> np.ndarray:
    return (1 << np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)).astype(np.int64)


def product_units(data: TaskData, unit_scores: int = UNIT_SCORES
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Batches of per-product units: ``(rows_q, rows_g, ok)`` with ``rows_q (u, pl)``, ``rows_g
    (u, pg)`` and ``ok (u, pl, pg)`` the eligible relevant pairs (padding, self and group excluded)."""
    n_products = int(max(data.query_products.max(initial=-1), data.gallery_products.max(initial=-1))) + 1
    order_q = np.argsort(data.query_products, kind="stable")
    order_g = np.argsort(data.gallery_products, kind="stable")
    count_q = np.bincount(data.query_products, minlength=n_products)
    count_g = np.bincount(data.gallery_products, minlength=n_products)
    first_q, first_g = np.cumsum(count_q) - count_q, np.cumsum(count_g) - count_g
    common = np.flatnonzero((count_q > 0) & (count_g > 0))
    size_g = _pow2(count_g[common])
    piece = np.minimum(_pow2(count_q[common]), np.maximum(1, unit_scores // size_g))  # queries per unit
    pieces = -(-count_q[common] // piece)
    product, piece, size_g = np.repeat(common, pieces), np.repeat(piece, pieces), np.repeat(size_g, pieces)
    offset = (np.arange(len(product)) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * piece
    n_left = np.minimum(piece, count_q[product] - offset)
    shape = piece * (int(size_g.max(initial=1)) + 1) + size_g
    for key in np.unique(shape):
        units = np.flatnonzero(shape == key)
        pl, pg = int(piece[units[0]]), int(size_g[units[0]])
        per_batch = max(1, unit_scores // (pl * pg))
        for b in range(0, len(units), per_batch):
            u = units[b:b + per_batch]
            valid_q = np.arange(pl)[None, :] < n_left[u][:, None]
            rows_q = order_q[first_q[product[u]][:, None] + offset[u][:, None] + np.where(valid_q, np.arange(pl), 0)]
            valid_g = np.arange(pg)[None, :] < count_g[product[u]][:, None]
            rows_g = order_g[first_g[product[u]][:, None] + np.where(valid_g, np.arange(pg), 0)]
            ok = valid_q[:, :, None] & valid_g[:, None, :]
            if data.query_rows is not None:  # not itself, not its group
                ok &= data.query_rows[rows_q][:, :, None] != rows_g[:, None, :]
                if data.query_groups is not None and data.gallery_groups is not None:
                    group = data.query_groups[rows_q][:, :, None]
                    ok &= ~((data.gallery_groups[rows_g][:, None, :] == group) & (group >= 0))
            yield rows_q, rows_g, ok


def _single_relevant(data: TaskData) -> Best | None:
    """A cross task whose gallery has at most one item per product (few-shot prototypes): each
    query's only relevant item is its ``T`` (the one pair every path would settle). None otherwise."""
    if data.query_rows is not None or not len(data.gallery_products):
        return None
    n_products = int(max(data.query_products.max(initial=-1), data.gallery_products.max(initial=-1))) + 1
    count = np.bincount(data.gallery_products, minlength=n_products)
    if count.max(initial=0) > 1:
        return None
    where = np.full(n_products, -1, dtype=np.int64)
    where[data.gallery_products] = np.arange(len(data.gallery_products))
    item = where[data.query_products]
    q = np.flatnonzero(item >= 0)
    best = np.full(len(data.queries), -np.inf)
    p = np.zeros(len(data.queries), dtype=np.int64)
    if len(q):
        best[q] = settle(data.exact_queries, data.exact_gallery, q, item[q], data.metric)
        p[q] = 1
    return Best(best, p, len(q))


def best_relevant(data: TaskData, bound: Bound, unit_scores: int = UNIT_SCORES) -> Best:
    """``T`` and ``p`` of every query of a task, decided in float64 (see the module docstring).

    ``bound``: the task's band for the float32 screen of its relevant pairs.
    """
    nq = len(data.queries)
    single = _single_relevant(data)
    if single is not None:
        return single
    q_norm, g_norm = data.screen_norms
    cand_q: list[np.ndarray] = []
    cand_g: list[np.ndarray] = []
    for rows_q, rows_g, ok in product_units(data, unit_scores):
        # OpenBLAS's small-matrix kernels can leave a stale floating-point flag behind (seen with
        # all-zero rows); the values are checked for finiteness below instead.
        if stored(data.queries) and stored(data.gallery):  # screened where the vectors are
            scores = data.queries.unit_scores(rows_q, data.gallery, rows_g)
        else:
            with np.errstate(invalid="ignore", over="ignore"):
                scores = np.matmul(data.queries[rows_q], data.gallery[rows_g].transpose(0, 2, 1))
        finite = np.isfinite(scores)
        width = pair_widths(bound, q_norm[rows_q][:, :, None], g_norm[rows_g][:, None, :], scores)
        low = np.where(ok & finite, scores - width, -np.inf).max(axis=2)
        reach = ok & (~finite | (scores + width >= low[:, :, None]))
        k, i, j = np.nonzero(reach)
        cand_q.append(rows_q[k, i])
        cand_g.append(rows_g[k, j])
    best = np.full(nq, -np.inf)
    p = np.zeros(nq, dtype=np.int64)
    if not cand_q:
        return Best(best, p, 0)
    q, g = np.concatenate(cand_q), np.concatenate(cand_g)
    if not len(q):
        return Best(best, p, 0)
    s = settle(data.exact_queries, data.exact_gallery, q, g, data.metric)
    np.maximum.at(best, q, s)
    np.add.at(p, q[s == best[q]], 1)
    return Best(best, p, len(q))
