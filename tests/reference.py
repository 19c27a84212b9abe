"""An independent, deliberately plain float64 implementation of the protocol (docs: relevance,
exclusions, first-hit counts, tie policies, the float64 score definition) for cross-checks.

One query at a time, no FAISS and no code shared with ropebench: the rank distribution of the
first hit enumerated exactly with ``math.comb``, and every score evaluated as the protocol defines
it — the float32 vectors (cosine: normalised in float64 with the fixed pairwise order and rounded
to float32 once), each product or squared difference in float64, summed in the fixed pairwise
order (pad to a power of two, add the second half onto the first until one term is left). Every
engine must agree with it exactly, count for count. ``near`` lists the queries with an eligible
item within float64 rounding of ``s+`` that does not equal it (counted by tests, never excluded).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Any

import numpy as np

ALL_TASKS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V", "P2P", "V2V", "L2L")
U64 = 2.0 ** -53  # float64 unit roundoff


def pairwise(terms: np.ndarray) -> np.ndarray:
    """Row sums in the protocol's fixed order, written out column by column."""
    columns = [terms[:, i] for i in range(terms.shape[1])]
    if not columns:
        return np.zeros(len(terms))
    size = 1
    while size < len(columns):
        size *= 2
    columns += [np.zeros(len(terms))] * (size - len(columns))
    while len(columns) > 1:
        half = len(columns) // 2
        columns = [columns[i] + columns[half + i] for i in range(half)]
    return columns[0]


def scores64(query: np.ndarray, gallery: np.ndarray, metric: str) -> np.ndarray:
    """One query's float64 scores against a gallery (float64 copies of the float32 vectors)."""
    if metric == "l2":
        return -pairwise((gallery - query[None, :]) ** 2)
    return pairwise(gallery * query[None, :])


def definition_vectors(emb: np.ndarray, metric: str) -> np.ndarray:
    """Float64 copies of the float32 vectors a score is defined on (cosine: normalised in float64
    with the fixed-order norm, rounded to float32 once)."""
    vectors = emb.astype(np.float32).astype(np.float64)
    if metric == "cosine":
        norm = np.sqrt(pairwise(vectors * vectors)) if len(vectors) else np.zeros(0)
        vectors = (vectors / norm[:, None]).astype(np.float32).astype(np.float64)
    return vectors


def _row(vectors: np.ndarray, products: np.ndarray, group_list: list[Any] | None, q: int, gi: np.ndarray,
         intra: bool, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One query's float64 scores against its gallery, the eligible items (not itself, not its
    group) and the eligible relevant ones."""
    scores = scores64(vectors[q], vectors[gi], metric)
    eligible = np.ones(len(gi), dtype=bool)
    if intra:
        eligible &= gi != q
        if group_list is not None and group_list[q] is not None:
            eligible &= np.array([group_list[j] != group_list[q] for j in gi], dtype=bool)
    relevant = (products[gi] == products[q]) & eligible
    return scores, eligible, relevant


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
    vectors = definition_vectors(emb, metric)
    domains = np.asarray(domains)
    products = np.asarray(products)
    group_list = None if groups is None else list(groups)
    dim = emb.shape[1] if emb.ndim == 2 else 0
    # Magnitudes for float64 rounding (near-tie statistics only).
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    out = {}
    for task in tasks:
        qd, gd = task[0], task[2]
        qi = np.flatnonzero(domains == qd)
        gi = np.flatnonzero(domains == gd)
        hits, rrs, tied, skipped = [], [], 0, 0
        counts: dict[int, tuple[int, int, int]] = {}
        near: set[int] = set()
        for q in qi:
            scores, eligible, relevant = _row(vectors, products, group_list, q, gi, qd == gd, metric)
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
            if ((gap > 0) & (gap <= 4 * (dim + 2) * U64 * magnitude)).any():
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


def _group_expectation(rho: int, start: int, r: int, m: int, cutoff: int, ties: str) -> tuple[float, float]:
    """One tie group (``r`` relevant among ``m`` items at ranks ``start + 1 … start + m``, ``rho``
    relevant items above it): ``(E[Σ rel_i · P@i over its ranks ≤ cutoff], E[relevant among them])``,
    by enumerating every placement of the relevant items (each equally likely under random tie
    breaking) when there are few, else by the hypergeometric law position by position."""
    from itertools import combinations

    def value(positions: Sequence[int]) -> tuple[float, float]:
        total, count = 0.0, 0
        for seen, j in enumerate(sorted(positions), start=1):
            if start + j <= cutoff:
                total += (rho + seen) / (start + j)
                count += 1
        return total, float(count)

    if ties == "optimistic":
        return value(range(1, r + 1))
    if ties == "pessimistic":
        return value(range(m - r + 1, m + 1))
    if comb(m, r) <= 5000:
        placements = [value([p + 1 for p in c]) for c in combinations(range(m), r)]
        return (sum(v[0] for v in placements) / len(placements), sum(v[1] for v in placements) / len(placements))
    total = count = 0.0
    for j in range(1, m + 1):  # P(rank j relevant, and s of the j - 1 before it relevant)
        if start + j > cutoff:
            break
        for s in range(0, min(r - 1, j - 1) + 1):
            prob = comb(j - 1, s) * comb(m - j, r - 1 - s) / comb(m, r)
            total += prob * (rho + s + 1) / (start + j)
            count += prob
    return total, count


def relevant_measures(scores: np.ndarray, relevant: np.ndarray, ties: str, map_ks: Sequence[int] = ()
                      ) -> dict[str, float]:
    """MAP@R, RP and mAP@K (fractions, not percent) of one query from its eligible items' float64
    scores and relevance, ties broken by ``ties`` (expected: exact expectation)."""
    big_r = int(relevant.sum())
    out: dict[str, float] = {}
    for name, cutoff, denominator in [("MAP@R", big_r, big_r), ("RP", big_r, big_r)] + [
            (f"mAP@{k}", k, min(big_r, k)) for k in map_ks]:
        above = rho = 0
        ap = hits = 0.0
        for level in sorted(set(scores.tolist()), reverse=True):
            at = scores == level
            r = int((at & relevant).sum())
            m = int(at.sum())
            if r:
                v, c = _group_expectation(rho, above, r, m, cutoff, ties)
                ap += v
                hits += c
            above += m
            rho += r
        out[name] = (hits if name == "RP" else ap) / denominator
    return out


def reference_relevant(emb: Any, domains: Any, products: Any, groups: Sequence[Any] | None = None, *,
                       metric: str = "cosine", ties: str = "expected", tasks: Sequence[str] = ALL_TASKS,
                       map_ks: Sequence[int] = ()) -> dict[str, dict[str, Any]]:
    """``{task: {"MAP@R": %, "RP": %, "mAP@K": %, "per_query": {row: {name: %}}}}`` by brute force."""
    emb = np.asarray(emb)
    vectors = definition_vectors(emb, metric)
    domains = np.asarray(domains)
    products = np.asarray(products)
    group_list = None if groups is None else list(groups)
    out: dict[str, dict[str, Any]] = {}
    for task in tasks:
        qd, gd = task[0], task[2]
        qi = np.flatnonzero(domains == qd)
        gi = np.flatnonzero(domains == gd)
        per_query: dict[int, dict[str, float]] = {}
        for q in qi:
            scores, eligible, relevant = _row(vectors, products, group_list, q, gi, qd == gd, metric)
            if not relevant.any():
                continue
            values = relevant_measures(scores[eligible], relevant[eligible], ties, map_ks)
            per_query[int(q)] = {name: 100 * value for name, value in values.items()}
        names = ["MAP@R", "RP"] + [f"mAP@{k}" for k in map_ks]
        out[task] = {name: (float(np.mean([v[name] for v in per_query.values()])) if per_query else None)
                     for name in names}
        out[task]["per_query"] = per_query
    return out
