"""An independent, deliberately plain float64 implementation of the protocol (docs: relevance,
exclusions, first-hit counts, tie policies) for cross-checks.

One query at a time, no FAISS and no code shared with ropebench: scores in float64, the rank
distribution of the first hit enumerated exactly with ``math.comb``. Besides the aggregate
numbers it returns every scored query's counts ``(a, t, p)`` by input row, and whether the query
is a *near tie*: some eligible item scores within four times a float32 GEMM's error bound
(``(d + 2) u |q| |g|``) of ``s+`` without equalling it in float64. Float32 engines may
legitimately order such a pair either way (the protocol's scores are float32 inner products),
so a comparison leaves those queries out and bounds how many there are.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Any

import numpy as np

ALL_TASKS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")
U32 = 2.0 ** -24  # float32 unit roundoff


def scores64(query: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """One query's float64 scores against a gallery (both already float64, and unit rows for
    cosine), each pair summed on its own: no BLAS, which need not give bit-identical gallery rows
    the same score, and copies must tie."""
    if metric == "l2":
        return -((gallery - query[None, :]) ** 2).sum(axis=1)
    return (gallery * query[None, :]).sum(axis=1)


def p_hit(a: int, t: int, p: int, k: int, ties: str) -> float:
    if ties == "optimistic":
        return float(a < k)
    if ties == "pessimistic":
        return float(a + t < k)
    if k <= a:
        return 0.0
    m = k - a
    return 1.0 - (comb(t, m) / comb(t + p, m) if m <= t else 0.0)


def rr(a: int, t: int, p: int, max_k: int, ties: str) -> float:
    if ties != "expected":
        rank = a + 1 if ties == "optimistic" else a + t + 1
        return 1.0 / rank if rank <= max_k else 0.0
    total = 0.0
    for r in range(1, t + 2):  # position of the first relevant item among the t + p tied ones
        prob = comb(t + p - r, p - 1) / comb(t + p, p)
        if a + r <= max_k:
            total += prob / (a + r)
    return total


def reference_evaluate(emb: Any, domains: Any, products: Any, groups: Sequence[Any] | None = None, *,
                       metric: str = "cosine", ties: str = "expected", ks: Sequence[int] = (1, 5, 10, 20, 50),
                       tasks: Sequence[str] = ALL_TASKS) -> dict[str, dict[str, Any]]:
    """``{task: {"n_queries", "n_skipped", "n_gallery", "n_tied", "R@K"…, "MRR@maxK",
    "counts": {row: (a, t, p)}, "near": {rows}}}``; ``groups``: None or one id per row (None = no group)."""
    emb = np.asarray(emb)
    vectors = emb.astype(np.float64)
    if metric == "cosine":
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    domains = np.asarray(domains)
    products = np.asarray(products)
    group_list = None if groups is None else list(groups)
    dim = emb.shape[1] if emb.ndim == 2 else 0
    # Magnitudes for the float32 error bound: unit vectors for cosine; for l2 the engines
    # compute on data centred near its median, so the bound uses centred norms.
    if metric == "cosine":
        norms = np.ones(len(emb))
    else:
        centred = emb.astype(np.float64) - (np.median(emb, axis=0) if len(emb) else 0.0)
        norms = np.linalg.norm(centred, axis=1)
    out = {}
    for task in tasks:
        qd, gd = task[0], task[2]
        qi = np.flatnonzero(domains == qd)
        gi = np.flatnonzero(domains == gd)
        hits, rrs, tied, skipped = [], [], 0, 0
        counts: dict[int, tuple[int, int, int]] = {}
        near: set[int] = set()
        for q in qi:
            scores = scores64(vectors[q], vectors[gi], metric)
            eligible = np.ones(len(gi), dtype=bool)
            if qd == gd:
                eligible &= gi != q
                if group_list is not None and group_list[q] is not None:
                    eligible &= np.array([group_list[j] != group_list[q] for j in gi], dtype=bool)
            relevant = (products[gi] == products[q]) & eligible
            if not relevant.any():
                skipped += 1
                continue
            best = scores[relevant].max()
            irrelevant = eligible & ~relevant
            a = int((scores[irrelevant] > best).sum())
            t = int((scores[irrelevant] == best).sum())
            p = int((scores[relevant] == best).sum())
            counts[int(q)] = (a, t, p)
            top = norms[gi].max()
            magnitude = (norms[q] + top) ** 2 if metric == "l2" else norms[q] * top
            gap = np.abs(scores[eligible] - best)
            if ((gap > 0) & (gap <= 4 * (dim + 2) * U32 * magnitude)).any():
                near.add(int(q))
            hits.append([p_hit(a, t, p, k, ties) for k in ks])
            rrs.append(rr(a, t, p, max(ks), ties))
            tied += any((a < k) != (a + t < k) for k in ks)
        res: dict[str, Any] = {"n_queries": len(counts), "n_skipped": skipped, "n_gallery": len(gi), "n_tied": tied,
                               "counts": counts, "near": near}
        for i, k in enumerate(ks):
            res[f"R@{k}"] = 100 * float(np.mean([h[i] for h in hits])) if hits else None
        res[f"MRR@{max(ks)}"] = 100 * float(np.mean(rrs)) if rrs else None
        out[task] = res
    return out
