"""The cluster-robust (CR1) t-test of a mean and the Student's t distribution it needs.

Notation as in :mod:`ropebench.stats`. The t distribution's tail comes from the regularised
incomplete beta function, computed here: the package does not depend on scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ropebench.stats.resampling import TOLERANCE, _cluster_index, grouped_sums

__all__ = ["TTest", "cluster_robust_t", "cr1_variance", "t_statistic", "t_two_sided_p"]


def cr1_variance(squared_scores: np.ndarray | float, n_clusters: np.ndarray | float) -> np.ndarray:
    """Cluster-robust (CR1) variance of a linear statistic ``Σ_i ψ_i``: ``V = G/(G−1) · Σ_c ψ_c²``.

    Args:
        squared_scores: ``Σ_c ψ_c²`` per column, (k,) or a scalar, where ``ψ_c = Σ_{i∈c} ψ_i``;
            for a mean ``ψ_i = (d_i − Δ)/N`` (with one query per cluster V = s²/N).
        n_clusters: G, the clusters holding the column's queries, (k,) or a scalar.

    Returns:
        float64 (k,); NaN where G < 2.
    """
    meat = np.atleast_1d(np.asarray(squared_scores, dtype=np.float64))
    g = np.broadcast_to(np.asarray(n_clusters, dtype=np.float64), meat.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(g >= 2, g / (g - 1.0) * meat, np.nan)


def _continued_fraction(a: float, b: float, x: float) -> float:
    # Lentz's method for the continued fraction of the incomplete beta function (NR §6.4).
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _continued_fraction(a, b, x) / a
    return 1.0 - front * _continued_fraction(b, a, 1.0 - x) / b


def t_two_sided_p(t: float, df: float) -> float:
    """Two-sided p of Student's t: ``P(|T_df| ≥ |t|) = I_{df/(df+t²)}(df/2, 1/2)``; NaN if undefined."""
    if not (math.isfinite(df) and df > 0) or math.isnan(t):
        return math.nan
    if math.isinf(t):
        return 0.0
    return min(1.0, _incomplete_beta(df / 2.0, 0.5, df / (df + t * t)))


@dataclass(frozen=True)
class TTest:
    """A cluster-robust t-test of a mean: statistic, degrees of freedom, two-sided p, d_z."""

    t: float
    df: float
    p: float
    d_z: float


def cluster_robust_t(values: np.ndarray, clusters: np.ndarray | None = None) -> TTest:
    """Cluster-robust one-sample t-test of the mean of ``values`` (paired differences d).

    ``t = Δ / √V`` with ``V = G/(G−1) · Σ_c U_c² / N²``, ``U_c = Σ_{i∈c} (d_i − Δ)`` (CR1);
    ``df = G − 1``; ``d_z = Δ / s`` with ``s`` the sample standard deviation of d over queries.
    With one query per cluster this is the paired t-test (V = s²/N, df = N − 1).
    V = 0 gives t = 0, p = 1 when Δ = 0 and t = ±inf, p = 0 otherwise.
    """
    d = np.asarray(values, dtype=np.float64).ravel()
    index, n_clusters = _cluster_index(clusters, len(d))
    delta = float(d.mean())
    scores = grouped_sums(d - delta, index, n_groups=n_clusters) / len(d)
    variance = float(cr1_variance(float((scores**2).sum()), n_clusters)[0])
    t = t_statistic(delta, variance)
    sd = float(d.std(ddof=1)) if len(d) > 1 else math.nan
    d_z = delta / sd if sd > 0 else math.nan
    return TTest(t=t, df=n_clusters - 1.0, p=t_two_sided_p(t, n_clusters - 1.0), d_z=d_z)


def t_statistic(delta: float, variance: float) -> float:
    """``Δ / √V``; V = 0 gives 0 when |Δ| ≤ 1e-9 and ±inf otherwise; NaN V gives NaN."""
    if math.isnan(variance):
        return math.nan
    if variance <= 0.0:
        return 0.0 if abs(delta) <= TOLERANCE else math.copysign(math.inf, delta)
    return delta / math.sqrt(variance)
