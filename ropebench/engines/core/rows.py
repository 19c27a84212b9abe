"""Whole-row counting: a query screened against its entire gallery and every candidate decided by
the core — for small blocks, the faiss engine's incomplete lists and the approximate index's
exact reference."""

from __future__ import annotations

import numpy as np

from ropebench.engines.core.decide import Judge
from ropebench.engines.core.task import TaskData

__all__ = ["row_counts", "irrelevant_eligible", "ROW_BATCH"]

ROW_BATCH = 256  # queries per block: (256 × gallery) float32 screened scores


def irrelevant_eligible(data: TaskData, q: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Mask of pairs that count against the query: another product, not itself, not its group."""
    keep = data.gallery_products[g] != data.query_products[q]
    if data.query_rows is not None:
        keep &= g != data.query_rows[q]
        if data.query_groups is not None and data.gallery_groups is not None:
            group = data.query_groups[q]
            keep &= ~((data.gallery_groups[g] == group) & (group >= 0))
    return keep


def row_counts(data: TaskData, judge: Judge, query_index: np.ndarray, batch: int = ROW_BATCH
               ) -> tuple[np.ndarray, np.ndarray, int]:
    """``a`` and ``t`` of the given (scored) queries against the whole gallery, and pairs settled."""
    a = np.zeros(len(query_index), dtype=np.int64)
    t = np.zeros(len(query_index), dtype=np.int64)
    settled = 0
    if not len(query_index) or not len(data.gallery):
        return a, t, settled
    g_norm = data.screen_norms[1]
    lo = judge.cutoff(float(g_norm.max(initial=0.0)))
    for start in range(0, len(query_index), batch):
        rows = query_index[start:start + batch]
        scores = data.queries[rows] @ data.gallery.T
        r, g = np.nonzero(~(scores < lo[rows, None]))  # NaN screens are candidates too
        q = rows[r]
        keep = irrelevant_eligible(data, q, g)
        r, q, g = r[keep], q[keep], g[keep]
        decision = judge.decide(q, g, scores[r, g], data.exact_gallery, g_norm[g])
        a[start:start + len(rows)] = np.bincount(r[decision.above], minlength=len(rows))
        t[start:start + len(rows)] = np.bincount(r[decision.tie], minlength=len(rows))
        settled += decision.settled
    return a, t, settled
