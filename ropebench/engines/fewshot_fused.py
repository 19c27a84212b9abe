"""The few-shot linear screen's compiled path: the tables the kernels of
:mod:`ropebench.engines.kernels.fewshot` read, and one tile's two passes (docs/fewshot.md, "How it is
searched"). Used when numba is installed (the ``fast`` extra); the numpy path of
:mod:`ropebench.engines.fewshot_screen` gives the same counts without it, more slowly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Tables", "tables", "Interleaved", "interleave", "row_products", "run_rows", "run_columns"]

# Candidates per pass before the outputs grow (the pass then runs again, its counts zeroed).
CAPACITY = 4096


@dataclass(frozen=True)
class Tables:
    """One direction's support tables, by support product slot (the side's product order).

    Attributes:
        support: ``(n_products, J, max k)`` int32, each support's slot inside its product.
        weights: ``(n_products, J)`` float32 ``w`` of the product's prototype (NaN: not a way).
        w_hi, w_lo: ``(G, n_products)`` float32 largest / smallest ``w`` over the group's ways (NaN: none).
        group_of: ``(J,)`` int64 each column's group; group_k: ``(G,)`` int64 the group's shot count;
            group_margin: ``(G,)`` float32 the bound's ``c_k = k (k + 4) 2⁻²³``, rounded up.
        product_code: ``(n_products,)`` int64 product codes.
    """

    support: np.ndarray
    weights: np.ndarray
    w_hi: np.ndarray
    w_lo: np.ndarray
    group_of: np.ndarray
    group_k: np.ndarray
    group_margin: np.ndarray
    product_code: np.ndarray

    @property
    def usable(self) -> bool:
        """The kernels' preconditions: at most 8 shot counts, and no negative weight (the bound's
        ``w ≥ 0``; cosine and ip prototypes never have one)."""
        from ropebench.engines.kernels.fewshot import MAX_GROUPS

        return len(self.group_k) <= MAX_GROUPS and not bool((self.weights < 0).any())


def tables(slot: np.ndarray, starts: np.ndarray, product_codes: np.ndarray, shots: Sequence[int],
           ways: Sequence[tuple[np.ndarray, np.ndarray]]) -> Tables:
    """Tables of one support side (items ordered by product: item ``i`` in product ``slot[i]``, whose
    first item is ``starts[slot]``).

    Args:
        shots: each column's shot count ``k``.
        ways: per column, ``(rows (n_ways, k) side positions of each way's supports, w (n_ways,))``.
    """
    n_products, n_columns = len(product_codes), len(shots)
    groups = sorted(set(shots))
    group_of = np.array([groups.index(k) for k in shots], dtype=np.int64)
    support = np.zeros((n_products, n_columns, max(groups, default=1)), dtype=np.int32)
    weights = np.full((n_products, n_columns), np.nan, dtype=np.float32)
    for j, (rows, w) in enumerate(ways):
        if len(rows):
            slots = slot[rows[:, 0]]
            support[slots, j, :rows.shape[1]] = rows - starts[slots][:, None]
            weights[slots, j] = w
    w_hi = np.full((len(groups), n_products), np.nan, dtype=np.float32)
    w_lo = np.full((len(groups), n_products), np.nan, dtype=np.float32)
    for g in range(len(groups)):
        block = weights[:, group_of == g]
        way = ~np.isnan(block)
        some = way.any(axis=1)
        w_hi[g, some] = np.where(way, block, -np.inf).max(axis=1)[some]
        w_lo[g, some] = np.where(way, block, np.inf).min(axis=1)[some]
    k = np.array(groups, dtype=np.int64)
    margin = (k * (k + 4)).astype(np.float64) * 2.0 ** -23
    rounded = margin.astype(np.float32)
    rounded = np.where(rounded < margin, np.nextafter(rounded, np.float32(np.inf)), rounded).astype(np.float32)
    return Tables(support, weights, w_hi, w_lo, group_of, k, rounded, np.asarray(product_codes, dtype=np.int64))


@dataclass(frozen=True)
class Interleaved:
    """The column side's items in the order the X2Y kernel reads them: inside each tile, each run of
    equal-size products slot-major (item ``t`` of product ``p`` at ``base + t · n_p + p``).

    Attributes:
        order: ``(n,)`` the side position of each interleaved item.
        runs: per tile, ``(n_runs, 4)`` int64 ``(first column in the tile, products, size, first slot)``.
    """

    order: np.ndarray
    runs: list[np.ndarray]


def interleave(runs_of_tile: Sequence[Sequence[tuple[int, int, int, int, int]]], starts: np.ndarray,
               edges: np.ndarray) -> Interleaved:
    """The interleaved order of a side from its tiles' runs (``_Side.runs``: first product, last + 1,
    first item, last item + 1, size)."""
    order = np.empty(int(edges[-1]), dtype=np.int64)
    runs = []
    for tile, found in enumerate(runs_of_tile):
        c0 = int(edges[tile])
        described = []
        for p0, p1, s0, s1, size in found:
            n_p = p1 - p0
            # position base + t * n_p + p holds item starts[p0 + p] + t
            items = (starts[p0:p1][None, :] + np.arange(size)[:, None]).reshape(-1)
            order[s0:s1] = items
            described.append((s0 - c0, n_p, size, p0))
        runs.append(np.array(described, dtype=np.int64).reshape(-1, 4))
    return Interleaved(order, runs)


def row_products(starts: np.ndarray, slot: np.ndarray, r0: int, r1: int) -> np.ndarray:
    """The products of rows ``[r0, r1)`` (whole products): ``(n, 3)`` ``(first row in the tile, size, slot)``."""
    if r1 <= r0:
        return np.zeros((0, 3), dtype=np.int64)
    slots = np.arange(int(slot[r0]), int(slot[r1 - 1]) + 1)
    return np.stack([starts[slots] - r0, starts[slots + 1] - starts[slots], slots], axis=1).astype(np.int64)


def _run(kernel, scores: np.ndarray, layout: np.ndarray, t: Tables, query_code: np.ndarray, lo: np.ndarray,
         hi: np.ndarray, counts: np.ndarray, formed: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass; grows its outputs and runs again (counts and ``formed`` as before) when they overflow."""
    capacity = CAPACITY
    before = formed.copy()
    while True:
        out = (np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.int64),
               np.empty(capacity, dtype=np.int64), np.empty(capacity, dtype=np.float32))
        n = kernel(scores, layout, t.group_of, t.group_k, t.group_margin, t.support, t.weights, t.w_hi, t.w_lo,
                   query_code, t.product_code, lo, hi, counts, formed, *out)
        if n <= capacity:
            return out[0][:n], out[1][:n], out[2][:n], out[3][:n]
        counts[...] = 0
        formed[...] = before
        capacity = n


def run_rows(scores: np.ndarray, runs: np.ndarray, t: Tables, query_code: np.ndarray, lo: np.ndarray,
             hi: np.ndarray, counts: np.ndarray, formed: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """X2Y over one tile: ``lo``, ``hi``, ``counts`` ``(rows, J)``; ``formed`` (1,) the combined
    scores formed, added to. Returns candidates' support product slots, rows,
    columns and values."""
    from ropebench.engines.kernels.fewshot import rows_pass

    return _run(rows_pass, scores, runs, t, query_code, np.ascontiguousarray(lo), np.ascontiguousarray(hi), counts,
                formed)


def run_columns(scores: np.ndarray, products: np.ndarray, t: Tables, query_code: np.ndarray, lo: np.ndarray,
                hi: np.ndarray, counts: np.ndarray, formed: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Y2X over one tile: ``lo``, ``hi``, ``counts`` ``(J, columns)``; returns candidates' support
    product slots, columns (queries), J-columns and values."""
    from ropebench.engines.kernels.fewshot import columns_pass

    return _run(columns_pass, scores, products, t, query_code, np.ascontiguousarray(lo), np.ascontiguousarray(hi),
                counts, formed)
