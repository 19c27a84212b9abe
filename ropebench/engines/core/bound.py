"""The band: a certified bound on ``|screened score − exact score|`` for one pair, from the
screening precision, the dimension and the norms of *that pair* (docs/exactness.md derives it).

For one pair the width is ::

    w = pair·|x||y| + gallery·|y|² + both·(|x| + |y|)² + output·|ŝ| + floor

where ``x, y`` are the query's and the item's screening vectors (for ``l2`` their translated
coordinates, without the appended ones), ``ŝ`` the screened score, and the coefficients come from
:func:`bound_for`. A decision against a query's threshold adds the query's own term
(:func:`query_terms`: the rounding of the threshold itself). Everything is multiplied by a margin
``1 + 2⁻¹²`` that covers the rounding of the norms and of the width itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropebench.engines.core.precision import U32, U64, Precision, gamma
from ropebench.engines.core.stored import stored

__all__ = ["Bound", "bound_for", "residual_bound", "pair_widths", "query_terms", "integer_exact", "MARGIN",
           "NORMAL_MIN"]

MARGIN = 1.0 + 2.0 ** -12
NORMAL_MIN = 2.0 ** -126  # the smallest normal float32 (and bfloat16)


@dataclass(frozen=True)
class Bound:
    """Coefficients of one task's band (see the module docstring); ``exact``: every screened
    score of the task is exact (integer vectors, small sums), so the band is the point itself.

    ``residual``: a band from each item's own input rounding (:func:`residual_bound`): the pair's
    widths then need the residual norms ``ρ = |x̂ − x|`` of both sides, ``accumulation`` is the
    coefficient of ``(|x| + ρx)(|y| + ρy)``, and the output term is half an ulp of the score."""

    pair: float
    gallery: float
    both: float
    output: float
    floor: float
    threshold: float
    exact: bool = False
    residual: bool = False
    accumulation: float = 0.0


def bound_for(metric: str, dim: int, precision: Precision, *, exact: bool = False) -> Bound:
    """The band's coefficients for screening ``metric`` scores of ``dim``-dimensional vectors.

    ``cosine``/``ip`` (screen ``x·y`` of the definition's own vectors)::

        |ŝ − x·y| ≤ [(2ε + ε²) + γ_d(u_acc)(1 + ε)²] Σ|x_i y_i| + u_out/(1 − u_out) |ŝ|,  ε = u_in

    ``l2`` (screen ``[x, 1]·[2y, −|y|²]`` on coordinates translated in float64 and rounded to float32,
    each within ``δ = u32 + u64`` of the exact translate): the same with ``ε = (1 + δ)(1 + u_in) − 1``
    on ``2 x·y`` over ``d + 1`` terms, plus the rounding of ``|y|²`` (float32, then the input format).
    The float64 settlement itself is within ``γ_d(u64) Σ|x_i y_i|`` (ip) or
    ``(3u64 + γ_d(u64)) |q − g|² ≤ … (|x| + |y|)²`` (l2) of the exact value; that is added too, so a
    pair outside the band compares with the threshold as its float64 score does.
    """
    if exact:
        return Bound(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, exact=True)
    u_in, u_acc, u_out = precision.u_in, precision.u_acc, precision.u_out
    output = u_out / (1.0 - u_out)
    # Products and sums leaving the normal range lose absolute accuracy (precision.underflow each,
    # d + 2 of them: 2^-150, counted as 2^-146, with gradual underflow; 2^-126 where flushed to zero).
    floor = (dim + 2) * precision.underflow
    settle = gamma(dim, U64)
    if metric in ("cosine", "ip"):
        eps = u_in
        pair = (2 * eps + eps * eps) + gamma(dim, u_acc) * (1 + eps) ** 2 + settle
        return Bound(pair * MARGIN, 0.0, 0.0, output, floor, 0.0)
    if metric != "l2":
        raise ValueError(f"unknown metric {metric!r}")
    delta = U32 + U64 * (1 + U32)  # float64 subtraction, then rounding to float32
    eps = (1 + delta) * (1 + u_in) - 1
    acc = gamma(dim + 1, u_acc) * (1 + eps) ** 2
    pair = 2 * (2 * eps + eps * eps) + 2 * acc
    squares = (1 + u_in) * (1 + gamma(dim, U32)) * (1 + delta) ** 2 - 1  # |y|² as screened
    gallery = squares + acc * (1 + squares)
    both = 3 * U64 + settle  # the settlement of -|q - g|², with |q - g| <= |x| + |y|
    threshold = 4 * U64 + settle  # T + |x|² in float64 (|x|² from the exact translate)
    return Bound(pair * MARGIN, gallery * MARGIN, both * MARGIN, output, floor, threshold * MARGIN)


def residual_bound(dim: int, precision: Precision) -> Bound:
    """The band of a ``cosine``/``ip`` screen whose inputs were rounded by the engine itself, so
    that each item's residual ``r = x̂ − x`` is known (docs/screening.md, "A band from the
    residuals"). With ``ρx = |r_x|``, ``x̂·ŷ − x·y = x·r_y + r_x·y + r_x·r_y``, so ::

        |ŝ − x·y| ≤ |x|ρy + ρx|y| + ρxρy + γ_d(u_acc)(|x| + ρx)(|y| + ρy) + ½ulp(ŝ) + floor

    (plus the float64 settlement's ``γ_d(u64)|x||y|``), in place of ``(2ε + ε²)|x||y|`` for the
    inputs: the same derivation as :func:`bound_for` with each pair's actual rounding instead of
    its worst case (``ρ ≤ u_in |x|``), and the output's actual half-ulp instead of ``u_out|ŝ|``.
    """
    return Bound(gamma(dim, U64) * MARGIN, 0.0, 0.0, precision.u_out / (1.0 - precision.u_out),
                 (dim + 2) * precision.underflow, 0.0, residual=True,
                 accumulation=gamma(dim, precision.u_acc) * MARGIN)


def pair_widths(bound: Bound, q_norm: np.ndarray, g_norm: np.ndarray, values: np.ndarray,
                q_residual: np.ndarray | None = None, g_residual: np.ndarray | None = None) -> np.ndarray:
    """The width of each pair's band, without the query's term (float64). A zero vector's products
    are exact zeros, so the floor (underflow) applies only where some product can be non-zero.
    ``q_residual, g_residual``: the residual norms, with a :func:`residual_bound` (broadcast like
    the norms)."""
    product = q_norm * g_norm
    nonzero = (g_norm > 0) if bound.gallery else (product > 0)
    width = bound.pair * product + bound.floor * nonzero
    if bound.residual:
        if q_residual is None or g_residual is None:
            raise ValueError("a residual band needs the residual norms of both sides")
        width += MARGIN * (q_norm * g_residual + q_residual * g_norm + q_residual * g_residual)
        width += bound.accumulation * (q_norm + q_residual) * (g_norm + g_residual)
        if bound.output:
            width += output_half_ulp(values, bound.output)
        return width
    if bound.gallery:
        width += bound.gallery * g_norm * g_norm
    if bound.both:
        width += bound.both * (q_norm + g_norm) ** 2
    if bound.output:
        width += bound.output * np.abs(values)
    return width


def output_half_ulp(values: np.ndarray, output: float) -> np.ndarray:
    """The rounding of each returned score to a format of unit roundoff ``u`` (``output = u/(1 − u)``):
    at most half its ulp, ``u · 2^⌊log2|ŝ|⌋``, for a normal ``ŝ`` (rounding to nearest is monotone,
    so the unrounded sum lies in ``ŝ``'s binade or the one below); ``output·|ŝ|`` otherwise."""
    magnitude = np.abs(values)
    u = output / (1.0 + output)
    _, exponent = np.frexp(magnitude)
    half_ulp = MARGIN * np.ldexp(u, exponent - 1)  # |ŝ| = m·2^e, m in [0.5, 1): binade 2^(e−1)
    return np.where(magnitude >= NORMAL_MIN, np.minimum(half_ulp, output * magnitude), output * magnitude)


def query_terms(bound: Bound, q_norm: np.ndarray, best: np.ndarray) -> np.ndarray:
    """Each query's own term: the rounding of its threshold in the screening frame."""
    if not bound.threshold:
        return np.zeros(len(q_norm))
    finite = np.where(np.isfinite(best), np.abs(best), 0.0)
    return bound.threshold * (q_norm * q_norm + finite)


def integer_exact(queries: np.ndarray, gallery: np.ndarray, precision: Precision,
                  other_gallery: float | None = 0.0) -> bool:
    """Every screened score is exact: both sides (and ``other_gallery``, the largest ``|x|`` of more
    gallery vectors, None if they are not integers) hold integers and ``d' · max|q| · max|g|``
    stays below the precision's integer limit, so every product and partial sum is exact."""
    if other_gallery is None or not len(queries) or not len(gallery):
        return False
    top = []
    for side in (queries, gallery):
        if stored(side):
            biggest = side.integer_max()
            if biggest is None:
                return False
            top.append(float(biggest))
            continue
        head = side[:64]
        if not np.array_equal(head, np.round(head)) or not np.array_equal(side, np.round(side)):
            return False
        top.append(float(np.abs(side).max()))
    return queries.shape[1] * top[0] * max(top[1], other_gallery) < precision.integer_limit
