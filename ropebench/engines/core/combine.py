"""The band of a *combined* screen: a score screened as a weighted sum of other screened scores.

A few-shot prototype is (up to its rounding) a multiple of the sum of its supports, so its score
against a query can be screened from the query's screened scores against the supports themselves
(docs/exactness.md, "Combined screens"). For one query ``x`` and one prototype ``p`` (float32, the
vector the score is defined with) whose screen is ::

    v = fl32( Σ_i w ŝ_i ),   ŝ_i = the screened score of x against support y_i (i = 1 … k)

with one float32 weight ``w`` per prototype, ``m = w Σ_i y_i`` (exact) and ``s₆₄`` the float64
score of ``(x, p)``:

    |v − s₆₄| ≤ |x| · [ A (c + γ_K(u₃₂)(1 + c)) + B + γ_d(u₆₄) |p| ] · M + floor

where ``A = w Σ_i |y_i|``, ``B ≥ |p − m|`` (computed in float64 with its own rounding added),
``c`` the support screen's relative bound (:func:`item_coefficient`), ``K`` the number of terms the
combination sums (zeros included), and ``M = 1 + 2⁻¹²`` (bound.MARGIN). The bracket depends on the
prototype only, so it is the prototype's *effective norm* ``ĝ`` and the band is an ordinary
:class:`~ropebench.engines.core.bound.Bound` with ``pair = 1``: ``w = |x| · ĝ + floor``. A
:class:`~ropebench.engines.core.decide.Judge` built with it decides and settles combined screens
exactly as it does plain ones.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ropebench.engines.core.bound import MARGIN, Bound, pair_widths
from ropebench.engines.core.decide import Decision, Judge
from ropebench.engines.core.precision import FP32, U32, U64, Precision, gamma
from ropebench.engines.core.scores import SETTLE_BATCH, exact_scores, tree_sum
from ropebench.engines.core.stored import stored

__all__ = ["item_coefficient", "support_sums", "combination_weights", "effective_norms", "combination_bound",
           "ColumnJudges", "column_scores"]


def item_coefficient(dim: int, precision: Precision = FP32) -> float:
    """``c``: ``|ŝ − x·y| ≤ c |x||y|`` for one support's screened score (cosine/ip; the settlement
    term of :func:`~ropebench.engines.core.bound.bound_for` is not in it: it belongs to the prototype)."""
    eps = precision.u_in
    item = (2 * eps + eps * eps) + gamma(dim, precision.u_acc) * (1 + eps) ** 2
    return item + precision.u_out / (1.0 - precision.u_out) * (1 + item)


def support_sums(items: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float64 ``Σ_i y_i`` ``(n, d)`` and ``Σ_i |y_i|`` ``(n,)`` of each row of ``positions`` (n, k)."""
    total = np.zeros((len(positions), items.shape[1]), dtype=np.float64)
    norms = np.zeros(len(positions), dtype=np.float64)
    for i in range(positions.shape[1]):
        support = items[positions[:, i]].astype(np.float64)
        total += support
        norms += np.sqrt(np.einsum("ij,ij->i", support, support))
    return total, norms


def combination_weights(prototypes: np.ndarray, items: np.ndarray, positions: np.ndarray,
                        sums: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """One float32 weight per prototype: the least-squares ``w`` of ``p ≈ w Σ_i y_i`` (``1/k`` for ip,
    ``1/(k|mean|)`` for cosine, up to rounding; 0 when the supports sum to zero; ±inf beyond
    float32's range). Any finite weight is correct — the bound measures ``|p − w Σ y_i|`` — the
    least-squares one keeps it smallest. ``sums``: :func:`support_sums` of ``positions``, when the
    caller has them."""
    if not len(positions):
        return np.zeros(0, dtype=np.float32)
    total, _ = sums if sums is not None else support_sums(items, positions)
    square = np.einsum("ij,ij->i", total, total)
    cross = np.einsum("ij,ij->i", total, prototypes.astype(np.float64))
    safe = np.where(square > 0, square, 1.0)
    weights = np.where(square > 0, cross / safe, 0.0)
    # Supports that nearly cancel (a sum of subnormals) have a weight beyond float32: inf, which
    # the linear screen declines (the per-task path runs).
    with np.errstate(over="ignore"):
        return weights.astype(np.float32)


def effective_norms(prototypes: np.ndarray, items: np.ndarray, positions: np.ndarray, weights: np.ndarray,
                    terms: np.ndarray | int, precision: Precision = FP32,
                    sums: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The effective norm ``ĝ`` of each prototype (the module docstring's bracket, times ``M``).

    Args:
        prototypes: ``(n, d)`` float32, the vectors the score is defined with.
        items: ``(n_items, d)`` float32 support vectors as the support screen used them.
        positions: ``(n, k)`` rows of ``items``: each prototype's supports.
        weights: ``(n,)`` float32 ``w`` the combination multiplies by.
        terms: ``K``, the number of terms each prototype's combination sums (zeros included).
        precision: the support screen's precision.
        sums: :func:`support_sums` of ``positions``, when the caller has them.
    """
    n, dim = prototypes.shape
    if not n:
        return np.zeros(0, dtype=np.float64)
    k = positions.shape[1]
    total, support_norms = sums if sums is not None else support_sums(items, positions)
    w = weights.astype(np.float64)
    p = prototypes.astype(np.float64)
    # |p − w Σ y| in float64: the sum is within γ_{k−1}(u64) Σ|y_ij| per coordinate, the product and
    # the difference add two roundings, so the computed residual is within γ_{k+1}(u64)(|p| + A) of
    # the exact one (triangle inequality over coordinates); its norm's own rounding is covered by M.
    residual = p - w[:, None] * total
    p_norm = np.sqrt(np.einsum("ij,ij->i", p, p))
    spread = np.abs(w) * support_norms  # A
    gap = np.sqrt(np.einsum("ij,ij->i", residual, residual)) + gamma(k + 1, U64) * (p_norm + spread)  # B
    c = item_coefficient(dim, precision)
    k_terms = np.broadcast_to(np.asarray(terms, dtype=np.float64), (n,))
    combine = k_terms * U32 / (1.0 - k_terms * U32)  # γ_K(u32), the float32 combination
    if (k_terms * U32 >= 1).any():
        raise ValueError("no error bound: too many terms in one combination")
    return (spread * (c + combine * (1 + c)) + gap + gamma(dim, U64) * p_norm) * MARGIN


def combination_bound(dim: int, weight_max: float, terms_max: int, precision: Precision = FP32) -> Bound:
    """The :class:`Bound` of combined screens: ``pair = 1`` (the norms are the effective norms) and a
    floor for subnormal products — ``(d + 2)`` per support score, scaled by the weight, plus the
    combination's own ``K + 2`` — applied only where ``|x| · ĝ > 0``."""
    floor = (abs(weight_max) * terms_max * (dim + 2) * precision.underflow + (terms_max + 2) * FP32.underflow)
    return Bound(1.0, 0.0, 0.0, 0.0, floor * MARGIN, 0.0)


def column_scores(queries: np.ndarray, galleries: Sequence[np.ndarray], q: np.ndarray, column: np.ndarray,
                  g: np.ndarray, metric: str) -> np.ndarray:
    """Float64 scores of the pairs ``(queries[q[i]], galleries[column[i]][g[i]])``: the values of
    :func:`~ropebench.engines.core.scores.exact_scores` (row by row the same exact products and the
    same tree sum), the pairs of every column in one batch — a tile's few candidates spread over
    many columns cost one float64 pass, not one per column."""
    out = np.empty(len(q), dtype=np.float64)
    if not len(q):
        return out
    columns = np.unique(column).tolist()
    if metric not in ("cosine", "ip") or stored(queries) or any(stored(galleries[j]) for j in columns):
        for j in columns:
            pick = np.flatnonzero(column == j)
            out[pick] = exact_scores(queries, galleries[j], q[pick], g[pick], metric)
        return out
    for start in range(0, len(q), SETTLE_BATCH):
        part = slice(start, start + SETTLE_BATCH)
        left = queries[q[part]].astype(np.float64)
        if len(columns) == 1:
            right = galleries[columns[0]][g[part]].astype(np.float64)
        else:
            right = np.empty_like(left)
            here, rows = column[part], g[part]
            for j in columns:
                pick = here == j
                right[pick] = galleries[j][rows[pick]]
        np.multiply(left, right, out=left)
        out[part] = tree_sum(left, overwrite=True)
    return out


class ColumnJudges:
    """Several tasks that share their queries, one :class:`Judge` per *column* (a prototype set),
    decided together: the band test of :meth:`Judge.decide`, vectorised over columns; the pairs
    inside their band go to their column's judge, which settles them in float64.

    Args:
        judges: one per column, sharing their queries (``q_norm``) and one bound
            (:func:`combination_bound`).
        galleries: column j's float32 prototypes (the vectors the score is defined with).
        norms: column j's effective norms (:func:`effective_norms`).
        best: optionally a ``(J, n_queries)`` array whose row j *is* judge j's ``best`` (a view,
            updated in place by the caller, as the linear screen settles its thresholds): then the
            stacked screen is that array itself, and where the judges' own band test is this one
            (no residual band, no l2 offset, shared query vectors) the unsure pairs of every column
            are settled here in one float64 batch (:func:`column_scores`) instead of column by column.
    """

    def __init__(self, judges: Sequence[Judge], galleries: Sequence[np.ndarray], norms: Sequence[np.ndarray],
                 best: np.ndarray | None = None) -> None:
        self.bound = judges[0].bound
        if self.bound.exact or any(judge.bound != self.bound for judge in judges):
            raise ValueError("ColumnJudges: the judges must share one (inexact) bound")
        self.judges, self.galleries = list(judges), list(galleries)
        self.q_norm = judges[0].q_norm
        # (J, n_queries); with ``best``, that array itself (below)
        self.screen = best if best is not None else np.stack([judge.screen for judge in judges])
        self.extra = np.stack([judge.extra for judge in judges])
        sizes = [len(norm) for norm in norms]
        self.offset = np.r_[0, np.cumsum(sizes)[:-1]].astype(np.int64)
        self.norms = np.concatenate(list(norms)) if norms else np.zeros(0)
        first = self.judges[0]
        self.batched = False
        if best is not None:
            if best.ndim != 2 or len(best) != len(self.judges) or not all(
                    judge.screen is judge.best and _is_row(judge.best, best, j) for j, judge in enumerate(self.judges)):
                raise ValueError("ColumnJudges: best's rows must be the judges' best (and screen) themselves")
            self.screen = best  # the same values, shared: a settled best reaches the band test
            self.batched = all(judge.q_residual is None and judge.g_residual is None
                               and judge.exact_queries is first.exact_queries and judge.q_norm is first.q_norm
                               and judge.metric == first.metric for judge in self.judges)

    def decide(self, query: np.ndarray, column: np.ndarray, gallery: np.ndarray, values: np.ndarray) -> Decision:
        """Candidate ``i`` is ``(query[i], gallery[i])`` of column ``column[i]``, screened ``values[i]``."""
        g_norm = self.norms[self.offset[column] + gallery]
        v = values.astype(np.float64)
        diff = v - self.screen[column, query]
        width = pair_widths(self.bound, self.q_norm[query], g_norm, v) + self.extra[column, query]
        finite = np.isfinite(v)
        above = finite & (diff > width)
        # A width of 0 is an exact screen (a zero vector): equality there is a tie as it stands.
        tie = finite & (width == 0) & (diff == 0)
        unsure = ~above & ~tie & ~(finite & (diff < -width))
        settled = 0
        if unsure.any() and self.batched:
            # The judges' band test is the one above, so each would settle exactly these pairs;
            # ``screen`` is their ``best`` itself, so the comparison is Judge.decide's.
            pick = np.flatnonzero(unsure)
            q, j = query[pick], column[pick]
            s = column_scores(self.judges[0].exact_queries, self.galleries, q, j, gallery[pick],
                              self.judges[0].metric)
            best = self.screen[j, q]
            above[pick], tie[pick] = s > best, s == best
            settled = len(pick)
        elif unsure.any():
            for j in np.unique(column[unsure]).tolist():
                pick = np.flatnonzero(unsure & (column == j))
                found = self.judges[j].decide(query[pick], gallery[pick], values[pick], self.galleries[j],
                                              g_norm[pick])
                above[pick], tie[pick] = found.above, found.tie
                settled += found.settled
        return Decision(above, tie, settled)


def _is_row(row: np.ndarray, array: np.ndarray, j: int) -> bool:
    """Whether ``row`` is a view of row ``j`` of ``array`` (the same memory, not a copy)."""
    view = array[j]
    return row.base is array and row.shape == view.shape and row.strides == view.strides and \
        row.__array_interface__["data"][0] == view.__array_interface__["data"][0]
