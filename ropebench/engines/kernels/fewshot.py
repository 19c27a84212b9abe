"""Compiled kernels of the few-shot linear screen (numba; the ``fast`` extra): one pass over a tile's
item scores that finds the combined scores at or above each query's cut-off without forming the
others (docs/fewshot.md, "How it is searched"; docs/exactness.md, "Pruned combinations").

For one query and one support product the kernel first takes the product's largest item score
``m₁``, its second largest ``m₂`` and its smallest ``m₀`` (one vectorised pass over the tile). Every
combination of ``k`` of the product's supports then satisfies ``Σ ŝ ≤ T = m₁ + (k − 1) m₂``
exactly, and the float32 value the kernel computes for it, ``v = fl(w · fl(Σ ŝ))`` (``k − 1``
additions and one product, ``w ≥ 0``), is within ``γ_k(u) · w · k · a`` of ``w Σ ŝ``
(``a = max(|m₁|, |m₀|)``, ``u = 2⁻²⁴``). The kernel computes, in float32, ::

    B = w⁺ · T̂ + (w_max · (c_k · a) + 2⁻¹²⁶),      c_k = k (k + 4) 2⁻²³ (rounded up)

(``T̂`` the float32 ``T``, exact for ``k = 1``; ``w⁺`` the group's largest way weight where
``T̂ ≥ 0``, else its smallest). ``c_k`` covers ``γ_k(u) ≤ 1.01 k u``, ``T̂``'s two roundings, a
sign of ``T̂`` that differs from ``T``'s, and ``B``'s own roundings (2⁻¹²⁶, the smallest normal
float32, covers products that underflow: they round by an absolute 2⁻¹⁵⁰): every ``v`` of the
(query, product, shot count) is at most ``B`` (docs/exactness.md, "Pruned combinations"). Where
``B`` is below the query's lowest cut-off among that shot count's columns no ``v`` can be a
candidate, and the product is skipped. The rest are combined support by support, compared with
their column's cut-off ``lo`` and level ``hi`` as on the numpy path: above ``hi`` counted in bulk,
in ``[lo, hi]`` returned as candidates, judged by the band of :mod:`ropebench.engines.core.combine`
(``v``'s own rounding is one of the ``K`` terms that band allows). Weights are finite and the
scores cannot overflow (the caller refuses combinations that could, as on the numpy path).

Two layouts, one per direction of a tile ``S = X_tile · Y_tileᵀ``:

* ``X2Y`` (:func:`rows_pass`): queries are the tile's rows; the support products are its columns,
  laid out *slot-major* inside each run of equal-size products (item ``t`` of product ``p`` at
  ``base + t · n_p + p``), so the per-product statistics vectorise over products;
* ``Y2X`` (:func:`columns_pass`): queries are the tile's columns; the support products are runs of
  its rows, so the statistics vectorise over queries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["rows_pass", "columns_pass", "own_scores", "MAX_GROUPS", "LANES"]

# Shot counts per call: one bit each in a uint8 mask (more: the numpy path runs).
MAX_GROUPS = 8
# Y2X: where more than n (k + 2) / DENSE of a product's n queries pass a shot count's bound, its
# columns are combined for every query, vectorised (cheaper than query by query; measured on ROPE-size
# tiles).
DENSE = 64
# Added to the bound's margin: covers the absolute (underflow) errors of B's and v's products, at most
# 2^-150 each, which the relative margin c_k a does not cover where w_max c_k a is subnormal. The
# smallest normal float32 (2^-126), not 2^-147: a subnormal operand in every bound can cost x86 CPUs a
# microcode assist per operation.
UNDERFLOW = np.float32(2.0 ** -126)
# (Each pass writes a candidate's record (bulk count or output) out in full: a helper function for it,
# even with inline="always", made few-shot 2.3 times slower at ROPE size, one thread: 13.7 -> 32 s.)


@njit(nogil=True, cache=True)
def rows_pass(scores, runs, group_of, group_k, group_margin, support, weights, w_hi, w_lo, query_code,
              product_code, lo, hi, counts, formed, out_product, out_query, out_column,
              out_value):  # pragma: no cover - compiled
    """X2Y: queries are ``scores``' rows (tile rows ``0…``); returns the number of candidates found
    (when above the outputs' length, the caller runs again with larger outputs: counts too).

    Args:
        scores: ``(n_rows, n_columns)`` float32, columns slot-major inside each run.
        runs: ``(n_runs, 4)`` int64: ``(first column, products, size, first product slot)``.
        group_of: ``(J,)`` each column's group (shot count); group_k: ``(G,)`` its ``k``;
            group_margin: ``(G,)`` float32 ``k (k + 4) 2⁻²³`` rounded up.
        support: ``(n_products, J, max k)`` int32 slot ``t`` of each support inside its product.
        weights: ``(n_products, J)`` float32 ``w`` (NaN: the product is not a way of the column).
        w_hi, w_lo: ``(G, n_products)`` float32 largest / smallest way weight (NaN: none).
        query_code, product_code: product codes of the rows and of the support products.
        lo, hi: ``(n_rows, J)`` float32 cut-off and bulk level.
        counts: ``(n_rows, J)`` int64, bulk counts added to.
        formed: ``(1,)`` int64, the combined scores formed, added to.
    """
    n_rows = scores.shape[0]
    n_groups = group_k.shape[0]
    n_columns = group_of.shape[0]
    widest = 8
    for r in range(runs.shape[0]):
        widest = max(widest, runs[r, 1])
    m1 = np.empty(widest, np.float32)
    m2 = np.empty(widest, np.float32)
    m0 = np.empty(widest, np.float32)
    mask = np.zeros((widest + 7) // 8 * 8, np.uint8)
    words = mask.view(np.uint64)
    n_out = 0
    n_formed = 0
    capacity = out_product.shape[0]
    low = np.empty(n_groups, np.float32)
    for q in range(n_rows):
        row = scores[q]
        low[:] = np.inf
        for j in range(n_columns):
            low[group_of[j]] = min(low[group_of[j]], lo[q, j])
        for r in range(runs.shape[0]):
            base, n_p, size, p0 = runs[r, 0], runs[r, 1], runs[r, 2], runs[r, 3]
            a1 = m1[:n_p]
            a2 = m2[:n_p]
            a0 = m0[:n_p]
            first = row[base:base + n_p]
            for p in range(n_p):
                a1[p] = first[p]
                a2[p] = -np.inf
                a0[p] = first[p]
            for t in range(1, size):
                seg = row[base + t * n_p:base + (t + 1) * n_p]
                for p in range(n_p):
                    x = seg[p]
                    top = a1[p]
                    smaller = x if x < top else top
                    a2[p] = smaller if smaller > a2[p] else a2[p]
                    a1[p] = top if top > x else x
                    a0[p] = x if x < a0[p] else a0[p]
            any_group = 0
            for g in range(n_groups):
                any_group += _mark_rows(a1, a2, a0, group_k[g], group_margin[g], w_hi[g, p0:p0 + n_p],
                                        w_lo[g, p0:p0 + n_p], low[g], mask, np.uint8(1 << g))
            if any_group == 0:
                continue
            code = query_code[q]
            for word in range((n_p + 7) // 8):
                if words[word] == 0:
                    continue
                for p in range(word * 8, min(word * 8 + 8, n_p)):
                    bits = mask[p]
                    if bits == 0:
                        continue
                    mask[p] = 0
                    slot = p0 + p
                    if product_code[slot] == code:
                        continue
                    for j in range(n_columns):
                        g = group_of[j]
                        if not (bits >> g) & 1:
                            continue
                        w = weights[slot, j]
                        if not w == w:
                            continue
                        n_formed += 1
                        total = row[base + support[slot, j, 0] * n_p + p]
                        for t in range(1, group_k[g]):
                            total += row[base + support[slot, j, t] * n_p + p]
                        v = w * total
                        if v >= lo[q, j]:
                            if v > hi[q, j]:
                                counts[q, j] += 1
                            else:
                                if n_out < capacity:
                                    out_product[n_out] = slot
                                    out_query[n_out] = q
                                    out_column[n_out] = j
                                    out_value[n_out] = v
                                n_out += 1
    formed[0] += n_formed
    return n_out


@njit(nogil=True, cache=True)
def _mark_rows(a1, a2, a0, k, margin, w_hi, w_lo, cut, mask, bit):  # pragma: no cover - compiled
    """Set ``bit`` in ``mask[i]`` where ``B`` (module docstring) of product ``i`` (weights
    ``w_hi[i]``, ``w_lo[i]``) reaches the query's ``cut``; returns how many. NaN weights never pass."""
    found = 0
    extra = np.float32(k - 1)
    for i in range(a1.shape[0]):
        top = a1[i] if k == 1 else a1[i] + extra * a2[i]
        amax = max(abs(a1[i]), abs(a0[i]))
        w = w_hi[i] if top >= 0 else w_lo[i]
        passed = w * top + (w_hi[i] * (margin * amax) + UNDERFLOW) >= cut
        mask[i] = mask[i] | (bit if passed else np.uint8(0))
        found += passed
    return found


@njit(nogil=True, cache=True)
def _mark_columns(a1, a2, a0, k, margin, w_hi, w_lo, cut, mask, bit):  # pragma: no cover - compiled
    """:func:`_mark_rows` for one product (weights ``w_hi``, ``w_lo``) against each query's ``cut[i]``."""
    found = 0
    extra = np.float32(k - 1)
    for i in range(a1.shape[0]):
        top = a1[i] if k == 1 else a1[i] + extra * a2[i]
        amax = max(abs(a1[i]), abs(a0[i]))
        w = w_hi if top >= 0 else w_lo
        passed = w * top + (w_hi * (margin * amax) + UNDERFLOW) >= cut[i]
        mask[i] = mask[i] | (bit if passed else np.uint8(0))
        found += passed
    return found


@njit(nogil=True, cache=True)
def columns_pass(scores, products, group_of, group_k, group_margin, support, weights, w_hi, w_lo, query_code,
                 product_code, lo, hi, counts, formed, out_product, out_query, out_column,
                 out_value):  # pragma: no cover - compiled
    """Y2X: queries are ``scores``' columns; the support products are runs of its rows.

    Args:
        products: ``(n_products_in_tile, 3)`` int64: ``(first row, size, product slot)``.
        lo, hi: ``(J, n_columns)`` float32; counts: ``(J, n_columns)``.
        The rest as in :func:`rows_pass` (``support`` holds each support's row inside its product).
    """
    n_queries = scores.shape[1]
    n_groups = group_k.shape[0]
    n_columns = group_of.shape[0]
    a1 = np.empty(n_queries, np.float32)
    a2 = np.empty(n_queries, np.float32)
    a0 = np.empty(n_queries, np.float32)
    pad = (n_queries + 7) // 8 * 8
    mask = np.zeros(pad, np.uint8)
    words = mask.view(np.uint64)
    acc = np.empty(n_queries, np.float32)
    hits = np.zeros(pad, np.uint8)
    hit_words = hits.view(np.uint64)
    low = np.full((n_groups, n_queries), np.inf, np.float32)  # each group's smallest cut-off
    for j in range(n_columns):
        least = low[group_of[j]]
        cut = lo[j]
        for q in range(n_queries):
            least[q] = min(least[q], cut[q])
    n_out = 0
    n_formed = 0
    capacity = out_product.shape[0]
    for i in range(products.shape[0]):
        first, size, slot = products[i, 0], products[i, 1], products[i, 2]
        row = scores[first]
        for q in range(n_queries):
            a1[q] = row[q]
            a2[q] = -np.inf
            a0[q] = row[q]
        for t in range(1, size):
            row = scores[first + t]
            for q in range(n_queries):
                x = row[q]
                top = a1[q]
                smaller = x if x < top else top
                a2[q] = smaller if smaller > a2[q] else a2[q]
                a1[q] = top if top > x else x
                a0[q] = x if x < a0[q] else a0[q]
        code = product_code[slot]
        any_group = 0
        for g in range(n_groups):
            k = group_k[g]
            bit = np.uint8(1 << g)
            found = _mark_columns(a1, a2, a0, k, group_margin[g], w_hi[g, slot], w_lo[g, slot], low[g], mask, bit)
            if found * DENSE <= n_queries * (k + 2):
                any_group += found
                continue
            # Many queries let through: every score of the group's columns, vectorised over queries.
            keep = ~bit
            for q in range(n_queries):
                mask[q] &= keep
            for j in range(n_columns):
                w = weights[slot, j]
                if group_of[j] != g or not w == w:
                    continue
                n_formed += n_queries
                lo_j = lo[j]
                row = scores[first + support[slot, j, 0]]
                hit = 0
                if k == 1:
                    for q in range(n_queries):
                        v = w * row[q]
                        acc[q] = v
                        h = v >= lo_j[q]
                        hits[q] = h
                        hit += h
                else:
                    second = scores[first + support[slot, j, 1]]
                    for q in range(n_queries):
                        acc[q] = row[q] + second[q]
                    for t in range(2, k):
                        row = scores[first + support[slot, j, t]]
                        for q in range(n_queries):
                            acc[q] += row[q]
                    for q in range(n_queries):
                        v = w * acc[q]
                        acc[q] = v
                        h = v >= lo_j[q]
                        hits[q] = h
                        hit += h
                if hit == 0:
                    continue
                for word in range(hit_words.shape[0]):
                    if hit_words[word] == 0:
                        continue
                    for q in range(word * 8, min(word * 8 + 8, n_queries)):
                        if hits[q] == 0:
                            continue
                        hits[q] = 0
                        if query_code[q] == code:
                            continue
                        v = acc[q]
                        if v >= lo[j, q]:
                            if v > hi[j, q]:
                                counts[j, q] += 1
                            else:
                                if n_out < capacity:
                                    out_product[n_out] = slot
                                    out_query[n_out] = q
                                    out_column[n_out] = j
                                    out_value[n_out] = v
                                n_out += 1
        if any_group == 0:
            continue
        for word in range(words.shape[0]):
            if words[word] == 0:
                continue
            for q in range(word * 8, min(word * 8 + 8, n_queries)):
                bits = mask[q]
                if bits == 0:
                    continue
                mask[q] = 0
                if query_code[q] == code:
                    continue
                for j in range(n_columns):
                    g = group_of[j]
                    if not (bits >> g) & 1:
                        continue
                    w = weights[slot, j]
                    if not w == w:
                        continue
                    k = group_k[g]
                    n_formed += 1
                    total = scores[first + support[slot, j, 0], q]
                    for t in range(1, k):
                        total += scores[first + support[slot, j, t], q]
                    v = w * total
                    if v >= lo[j, q]:
                        if v > hi[j, q]:
                            counts[j, q] += 1
                        else:
                            if n_out < capacity:
                                out_product[n_out] = slot
                                out_query[n_out] = q
                                out_column[n_out] = j
                                out_value[n_out] = v
                            n_out += 1
    formed[0] += n_formed
    return n_out


# own_scores: partial sums per dot product, in a fixed order (no fastmath: the same bits on every CPU).
LANES = 16


@njit(nogil=True, cache=True)
def own_scores(queries, rows, gallery, own):  # pragma: no cover - compiled
    """The float32 screen of each pair ``(queries[rows[i]], gallery[own[i]])``: a dot product in
    ``LANES`` partial sums (coordinate ``t`` into sum ``t mod LANES``, the tail of ``d mod LANES``
    coordinates summed after them, then the partial sums in order). Any order of the ``d`` products'
    sum is within the pair band's ``γ_d`` term (docs/exactness.md); this one vectorises, and nothing is
    gathered first (a few-shot task's thresholds: 5 times faster than numpy's gathers and einsum)."""
    out = np.empty(rows.shape[0], np.float32)
    d = queries.shape[1]
    whole = d - d % LANES
    acc = np.zeros(LANES, np.float32)
    for i in range(rows.shape[0]):
        a = queries[rows[i]]
        b = gallery[own[i]]
        for lane in range(LANES):
            acc[lane] = 0
        for t0 in range(0, whole, LANES):
            for lane in range(LANES):
                acc[lane] += a[t0 + lane] * b[t0 + lane]
        total = np.float32(0)
        for t in range(whole, d):
            total += a[t] * b[t]
        for lane in range(LANES):
            total += acc[lane]
        out[i] = total
    return out
