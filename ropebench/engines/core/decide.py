"""Deciding, pair by pair, how a screened score compares with its query's threshold — the one
band and the one float64 settlement every engine uses.

A query's threshold is ``T``, the float64 score of its best eligible relevant item
(:mod:`ropebench.engines.core.relevant`); in the screening frame it is ``T + offset`` (``offset =
|x|²`` under ``l2``, where the screen scores ``|x|² − |q − g|²``; 0 otherwise). A candidate whose
screened score lies more than its width (:mod:`ropebench.engines.core.bound`) above or below the
threshold is decided by the screen; every other one is *settled*: its float64 score
(:mod:`ropebench.engines.core.scores`) is compared with ``T`` exactly. So every comparison comes out
as float64 decides it, whichever kernel screened, in whichever order.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ropebench.engines.core.bound import Bound, pair_widths, query_terms
from ropebench.engines.core.scores import exact_scores

__all__ = ["Judge", "Decision", "settle", "censor"]


@dataclass(frozen=True)
class Decision:
    """Per candidate: strictly above the threshold, exactly at it; and how many were settled."""

    above: np.ndarray
    tie: np.ndarray
    settled: int


class Judge:
    """One task's queries with their thresholds: decides candidates and sets screening cut-offs.

    Args:
        metric: ``cosine``, ``ip`` or ``l2``.
        bound: the task's band coefficients.
        exact_queries: the queries' float32 vectors of the definition (for settlement).
        q_norm: ``(nq,)`` screening norms of the queries.
        offset: ``(nq,)`` the screening frame's offset (``|x|²`` under l2), or None.
        best: ``(nq,)`` float64 ``T`` (−inf: the query is not scored).
        p, relevant_settled: relevant items at ``T`` per query, and relevant pairs settled to find ``T``.
        residuals: with a residual band (:func:`~.bound.residual_bound`), the ``(nq,)`` and
            ``(ng,)`` residual norms of the queries' and the gallery's screened inputs.
    """

    def __init__(self, metric: str, bound: Bound, exact_queries: np.ndarray, q_norm: np.ndarray,
                 offset: np.ndarray | None, best: np.ndarray, p: np.ndarray | None = None,
                 relevant_settled: int = 0, residuals: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if bound.residual and residuals is None:
            raise ValueError("a residual band needs the residual norms of both sides")
        self.metric, self.bound, self.exact_queries = metric, bound, exact_queries
        self.q_residual: np.ndarray | None = None if residuals is None else residuals[0]
        self.g_residual: np.ndarray | None = None if residuals is None else residuals[1]
        self.p = np.zeros(len(best), dtype=np.int64) if p is None else p
        self.relevant_settled = relevant_settled
        self.q_norm = q_norm
        self.best = best
        self.screen = best if offset is None else best + offset
        self.extra = query_terms(bound, q_norm, best)

    def subset(self, rows: np.ndarray) -> Judge:
        """The same judge for queries ``rows`` only (renumbered 0..len(rows)-1)."""
        judge = Judge.__new__(Judge)
        judge.metric, judge.bound = self.metric, self.bound
        judge.exact_queries = np.ascontiguousarray(self.exact_queries[rows])
        judge.q_norm, judge.best, judge.screen = self.q_norm[rows], self.best[rows], self.screen[rows]
        judge.extra, judge.p, judge.relevant_settled = self.extra[rows], self.p[rows], 0
        judge.q_residual = None if self.q_residual is None else self.q_residual[rows]
        judge.g_residual = self.g_residual
        return judge

    def cutoff(self, g_norm_max: float) -> np.ndarray:
        """Float32 cut-off per query: a screened score below it is surely below the threshold
        for every gallery item of norm at most ``g_norm_max`` (+inf for queries not scored)."""
        b = self.bound
        top = np.full(len(self.q_norm), g_norm_max)
        # The width grows with |y| and ρy separately, so their maxima bound every item's.
        top_residual = None if self.g_residual is None else np.full(len(top), self.g_residual.max(initial=0.0))
        width = pair_widths(replace(b, output=0.0), self.q_norm, top, np.zeros(len(top)), self.q_residual,
                            top_residual) + self.extra
        # |ŝ| <= |T'| + w  =>  w <= (w0 + k|T'|) / (1 - k).
        finite = np.isfinite(self.screen)
        if b.output:
            width = (width + b.output * np.where(finite, np.abs(self.screen), 0.0)) / (1.0 - b.output)
        low = self.screen - width
        lo = low.astype(np.float32)
        lo = np.where(lo > low, np.nextafter(lo, np.float32(-np.inf)), lo)  # round down
        return np.where(finite, lo, np.float32(np.inf)).astype(np.float32)

    def decide(self, q: np.ndarray, g: np.ndarray, values: np.ndarray, exact_gallery: np.ndarray,
               g_norm: np.ndarray) -> Decision:
        """Decide candidates ``(q[i], g[i])`` with screened scores ``values[i]``.

        ``exact_gallery``: the items' float32 vectors of the definition (rows ``g``);
        ``g_norm``: ``(len(q),)`` the candidates' screening norms.
        """
        v = values.astype(np.float64)
        diff = v - self.screen[q]
        if self.bound.exact:
            return Decision(diff > 0, diff == 0, 0)
        q_residual = None if self.q_residual is None else self.q_residual[q]
        g_residual = None if self.g_residual is None else self.g_residual[g]
        width = pair_widths(self.bound, self.q_norm[q], g_norm, v, q_residual, g_residual) + self.extra[q]
        finite = np.isfinite(v)
        above = finite & (diff > width)
        # A width of 0 is an exact screen (a zero vector): equality there is a tie as it stands.
        tie = finite & (width == 0) & (diff == 0)
        unsure = ~above & ~tie & ~(finite & (diff < -width))
        n = int(np.count_nonzero(unsure))
        if n:
            pick = np.flatnonzero(unsure)
            s = settle(self.exact_queries, exact_gallery, q[pick], g[pick], self.metric)
            above[pick] = s > self.best[q[pick]]
            tie[pick] = s == self.best[q[pick]]
        return Decision(above, tie, n)


def settle(queries: np.ndarray, gallery: np.ndarray, q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
    """Float64 scores of pairs, each distinct (query, gallery row) pair computed once."""
    if len(q) > 64:
        key = q.astype(np.int64) * (int(g.max()) + 1) + g
        distinct, inverse = np.unique(key, return_inverse=True)
        if len(distinct) < len(key):
            width = int(g.max()) + 1
            return exact_scores(queries, gallery, distinct // width, distinct % width, metric)[inverse.reshape(-1)]
    return exact_scores(queries, gallery, q, g, metric)


def censor(a: np.ndarray, t: np.ndarray, p: np.ndarray, censored: np.ndarray, max_k: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The one censoring rule: a query with ``max K`` items above its first hit (or one an engine
    stopped counting) misses at every K, and is recorded as ``a, t, p = max K, 0, 1``, censored.

    Whether an engine stopped counting such a query or counted it fully depends on the order it met
    the gallery in; recording all of them one way makes per-query output independent of row order,
    thread count, shard layout and engine. No measure changes. Returns new arrays.
    """
    beyond = censored | (a >= max_k)
    if not beyond.any():
        return a, t, p, beyond
    a, t, p = a.copy(), t.copy(), p.copy()
    a[beyond], t[beyond], p[beyond] = max_k, 0, 1
    return a, t, p, beyond
