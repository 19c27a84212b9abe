"""An independent, deliberately plain float64 implementation of DESIGN.md §2 for cross-checks.

One query at a time, no FAISS, no shared code with ropebench.search or ropebench.metrics:
scores in float64, the rank distribution of the first hit enumerated exactly with math.comb.
"""

from __future__ import annotations

from math import comb

import numpy as np

DOMAIN_OF = {"P": "P", "V": "V", "L": "L"}


def scores64(queries: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    q = queries.astype(np.float64)
    g = gallery.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    if metric == "l2":
        return -((q[:, None, :] - g[None, :, :]) ** 2).sum(axis=2)
    return q @ g.T


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


def reference_evaluate(emb, domains, products, groups=None, *, metric="cosine", ties="expected",
                       ks=(1, 5, 10, 20, 50), tasks=("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")):
    """{task: {"n_queries", "n_skipped", "n_gallery", "n_tied", "R@K"..., "MRR@maxK", "counts": [(a,t,p)]}}."""
    emb = np.asarray(emb)
    domains = np.asarray(domains)
    products = np.asarray(products)
    out = {}
    for task in tasks:
        qd, gd = task[0], task[2]
        qi = np.flatnonzero(domains == qd)
        gi = np.flatnonzero(domains == gd)
        s = scores64(emb[qi], emb[gi], metric) if len(qi) and len(gi) else np.zeros((len(qi), len(gi)))
        hits, rrs, counts, tied, skipped = [], [], [], 0, 0
        for row, q in enumerate(qi):
            eligible = np.ones(len(gi), dtype=bool)
            if qd == gd:
                eligible &= gi != q
                if groups is not None and groups[q] is not None:
                    eligible &= np.array([groups[j] != groups[q] for j in gi], dtype=bool)
            relevant = (products[gi] == products[q]) & eligible
            if not relevant.any():
                skipped += 1
                continue
            best = s[row][relevant].max()
            irrelevant = eligible & ~relevant
            a = int((s[row][irrelevant] > best).sum())
            t = int((s[row][irrelevant] == best).sum())
            p = int((s[row][relevant] == best).sum())
            counts.append((a, t, p))
            hits.append([p_hit(a, t, p, k, ties) for k in ks])
            rrs.append(rr(a, t, p, max(ks), ties))
            tied += any((a < k) != (a + t < k) for k in ks)
        res = {"n_queries": len(counts), "n_skipped": skipped, "n_gallery": len(gi), "n_tied": tied,
               "counts": counts}
        for i, k in enumerate(ks):
            res[f"R@{k}"] = 100 * float(np.mean([h[i] for h in hits])) if hits else None
        res[f"MRR@{max(ks)}"] = 100 * float(np.mean(rrs)) if rrs else None
        out[task] = res
    return out
