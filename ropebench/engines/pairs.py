"""The relevant pairs of a similarity block and each query's estimate of its best relevant score.

Before the one-pass engine computes a block ``left · rightᵀ``, every product's (left items ×
right items) sub-block is scored with small batched matmuls: that lists the block's relevant
pairs and gives every row of either side a float32 estimate of its best relevant score ``s+``
and the scale of its rounding error, from which the engine sets each query's band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropebench.engines.base import TaskData

__all__ = ["RelevantPairs", "relevant_pairs", "n_relevant_pairs"]


@dataclass
class RelevantPairs:
    """Every eligible relevant pair of a block (row ``x`` of left, row ``y`` of right) and, per
    row of each side, the estimate of its best relevant score and the scale of its rounding error."""

    x: np.ndarray
    y: np.ndarray
    estimate_left: np.ndarray
    estimate_right: np.ndarray
    scale_left: np.ndarray
    scale_right: np.ndarray


def _pow2(n: np.ndarray) -> np.ndarray:
    """Smallest power of two >= n (n >= 1)."""
    return (1 << np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)).astype(np.int64)


def _by_product(products: np.ndarray, n_products: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    order = np.argsort(products, kind="stable")
    count = np.bincount(products, minlength=n_products)
    return order, np.cumsum(count) - count, count


def n_relevant_pairs(data: TaskData) -> int:
    """How many (query, gallery) pairs of the same product a task has (exclusions not subtracted)."""
    n_products = int(max(data.query_products.max(initial=-1), data.gallery_products.max(initial=-1))) + 1
    count_q = np.bincount(data.query_products, minlength=n_products)
    count_g = np.bincount(data.gallery_products, minlength=n_products)
    return int(np.dot(count_q, count_g))


def relevant_pairs(left: np.ndarray, right: np.ndarray, data: TaskData, estimate_scores: int) -> RelevantPairs:
    """Score every product's (left items × right items) block with small batched matmuls.

    ``data`` is the task reading ``left · rightᵀ`` by rows (its products, self-exclusion and
    groups). Products are cut into units of ``(≤ pl left items, all nr right items)`` padded to
    powers of two, and units of one padded shape are multiplied as one stack.
    """
    n_products = int(max(data.query_products.max(initial=-1), data.gallery_products.max(initial=-1))) + 1
    order_l, start_l, count_l = _by_product(data.query_products, n_products)
    order_r, start_r, count_r = _by_product(data.gallery_products, n_products)
    common = np.flatnonzero((count_l > 0) & (count_r > 0))
    size_r = _pow2(count_r[common])
    # Powers of two (estimate_scores is one), so few distinct shapes.
    piece = np.minimum(_pow2(count_l[common]), np.maximum(1, estimate_scores // size_r))
    pieces = -(-count_l[common] // piece)
    product = np.repeat(common, pieces)
    piece, size_r = np.repeat(piece, pieces), np.repeat(size_r, pieces)
    offset = (np.arange(len(product)) - np.repeat(np.cumsum(pieces) - pieces, pieces)) * piece
    n_left = np.minimum(piece, count_l[product] - offset)

    norm_l = np.linalg.norm(left, axis=1).astype(np.float64)
    norm_r = np.linalg.norm(right, axis=1).astype(np.float64)
    estimate_l = np.full(len(left), -np.inf)
    estimate_r = np.full(len(right), -np.inf)
    scale_l = np.zeros(len(left))
    scale_r = np.zeros(len(right))
    xs, ys = [], []
    shape_key = piece * (int(size_r.max(initial=1)) + 1) + size_r
    for key in np.unique(shape_key):
        units = np.flatnonzero(shape_key == key)
        pl, sr = int(piece[units[0]]), int(size_r[units[0]])
        per_batch = max(1, estimate_scores // (pl * sr))
        for b in range(0, len(units), per_batch):
            u = units[b:b + per_batch]
            p = product[u]
            valid_l = np.arange(pl)[None, :] < n_left[u][:, None]
            rows_l = order_l[start_l[p][:, None] + offset[u][:, None] + np.where(valid_l, np.arange(pl), 0)]
            valid_r = np.arange(sr)[None, :] < count_r[p][:, None]
            rows_r = order_r[start_r[p][:, None] + np.where(valid_r, np.arange(sr), 0)]
            scores = np.matmul(left[rows_l], right[rows_r].transpose(0, 2, 1))
            ok = valid_l[:, :, None] & valid_r[:, None, :]
            if data.intra:
                ok &= rows_l[:, :, None] != rows_r[:, None, :]
                if data.query_groups is not None and data.gallery_groups is not None:
                    group_l = data.query_groups[rows_l][:, :, None]
                    ok &= ~((group_l == data.gallery_groups[rows_r][:, None, :]) & (group_l >= 0))
            scores = np.where(ok, scores, np.float32(-np.inf))
            np.maximum.at(estimate_l, rows_l[valid_l], scores.max(axis=2)[valid_l])
            np.maximum.at(estimate_r, rows_r[valid_r], scores.max(axis=1)[valid_r])
            top_r = np.where(valid_r, norm_r[rows_r], 0.0).max(axis=1)
            top_l = np.where(valid_l, norm_l[rows_l], 0.0).max(axis=1)
            np.maximum.at(scale_l, rows_l[valid_l], (norm_l[rows_l] * top_r[:, None])[valid_l])
            np.maximum.at(scale_r, rows_r[valid_r], (norm_r[rows_r] * top_l[:, None])[valid_r])
            k, i, j = np.nonzero(ok)
            xs.append(rows_l[k, i])
            ys.append(rows_r[k, j])
    empty = np.zeros(0, dtype=np.int64)
    return RelevantPairs(np.concatenate(xs) if xs else empty, np.concatenate(ys) if ys else empty,
                     estimate_l, estimate_r, scale_l, scale_r)


