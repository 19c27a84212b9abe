"""Tests and intervals from resampled sums: randomization and bootstrap p-values, percentile
intervals, Holm's adjustment, the design effect, and the per-task intervals of an evaluation.

Notation as in :mod:`ropebench.stats`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ropebench.errors import DataError
from ropebench.protocol import ALL_TASKS
from ropebench.stats.resampling import (
    TOLERANCE,
    _as_matrix,
    _cluster_index,
    exact_grid,
    grouped_sums,
    resampled_sums,
)

__all__ = [
    "bootstrap_means",
    "bootstrap_p",
    "design_effect",
    "holm",
    "percentile_interval",
    "randomization_p",
    "ratio",
    "sign_flip_test",
    "task_intervals",
]


def randomization_p(observed: np.ndarray, replicates: np.ndarray, *, tolerance: float = TOLERANCE) -> np.ndarray:
    """Two-sided Monte-Carlo p-value ``(1 + #{b : |Δ*_b| ≥ |Δ| − tol}) / (B + 1)``.

    Args:
        observed: (k,) the statistic Δ. replicates: (B × k) its null replicates Δ*.
    """
    observed = np.abs(np.asarray(observed, dtype=np.float64))
    extreme = np.abs(replicates) >= observed - tolerance
    return (1.0 + extreme.sum(axis=0)) / (replicates.shape[0] + 1.0)


def sign_flip_test(values: np.ndarray, clusters: np.ndarray | None = None, *, resamples: int = 10_000,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Paired sign-flip randomization test of the mean of ``values`` (differences) over clusters.

    ``Δ = Σ_i d_i / N``; ``Δ*_b = Σ_c ε_bc D_c / N`` with ``D_c`` the sum of ``d`` over cluster
    ``c``; p as in :func:`randomization_p`. Flipping every query of a cluster together is exact
    under the null that A and B are exchangeable within each cluster.

    Args:
        values: (n,) or (n × k) per-query differences d. clusters: (n,) labels, or None for
            one cluster per query.

    Returns:
        ``(delta, p)``, each (k,).
    """
    d = _as_matrix(values)
    index, n_clusters = _cluster_index(clusters, len(d))
    sums = exact_grid(grouped_sums(d, index, n_groups=n_clusters))  # Δ and Δ* on one exact grid
    delta = sums.sum(axis=0) / len(d)
    null = resampled_sums(sums, kind="signs", resamples=resamples, seed=seed) / len(d)
    return delta, randomization_p(delta, null)


def bootstrap_means(values: np.ndarray, clusters: np.ndarray | None = None, *, resamples: int = 10_000,
                    seed: int = 0) -> np.ndarray:
    """Cluster-bootstrap replicates of the mean over queries.

    ``mean*_b = Σ_c W_bc S_c / Σ_c W_bc n_c``: a resampled cluster brings all its queries, so
    the number of queries varies between resamples (a ratio estimator).

    Returns:
        float64 (B × k); a row whose resample holds no query is NaN (drop it).
    """
    x = _as_matrix(values)
    index, n_clusters = _cluster_index(clusters, len(x))
    sums = grouped_sums(np.column_stack([x, np.ones(len(x))]), index, n_groups=n_clusters)
    totals = resampled_sums(sums, kind="counts", resamples=resamples, seed=seed)
    return ratio(totals[:, :-1], totals[:, -1:])


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator`` (broadcast), NaN where the denominator is 0 (a resample without queries)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def percentile_interval(replicates: np.ndarray, *, level: float = 0.95) -> np.ndarray:
    """Percentile interval per column: the (1−level)/2 and (1+level)/2 quantiles of the replicates.

    NaN replicates (resamples without a query) are dropped first; a column with none left gets
    ``(nan, nan)``. Quantiles interpolate linearly (numpy's default).

    Returns:
        float64 (k × 2): low, high.
    """
    replicates = _as_matrix(replicates)
    out = np.full((replicates.shape[1], 2), np.nan)
    quantiles = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    finite = np.isfinite(replicates)
    whole = finite.all(axis=0)
    if whole.any():
        out[whole] = np.quantile(replicates[:, whole], quantiles, axis=0).T
    for column in np.flatnonzero(~whole & finite.any(axis=0)):
        out[column] = np.quantile(replicates[finite[:, column], column], quantiles)
    return out


def bootstrap_p(observed: np.ndarray, replicates: np.ndarray, *, tolerance: float = TOLERANCE) -> np.ndarray:
    """Two-sided p from the centred bootstrap distribution.

    The replicates centred on the estimate, ``Δ*_b − Δ``, stand for the null distribution:
    ``p = (1 + #{b : |Δ*_b − Δ| ≥ |Δ| − tol}) / (B' + 1)`` over the B' resamples that are not
    NaN. ``Δ = 0`` gives p = 1.
    """
    observed = np.asarray(observed, dtype=np.float64)
    replicates = _as_matrix(replicates)
    valid = np.isfinite(replicates)
    extreme = valid & (np.abs(replicates - observed) >= np.abs(observed) - tolerance)
    return (1.0 + extreme.sum(axis=0)) / (valid.sum(axis=0) + 1.0)


def holm(p: np.ndarray | Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment: ``p_holm(j) = max_{i≤j} min(1, (m − i + 1) p_(i))`` over sorted p.

    Monotone in the raw p, never below it, capped at 1; ties keep their input order.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.size and not np.all((p >= 0) & (p <= 1)):
        raise ValueError("holm: every p-value must lie in [0, 1]")
    m = p.size
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty_like(p)
    out[order] = adjusted
    return out


def design_effect(cluster_scores: np.ndarray, query_scores_squared: np.ndarray) -> np.ndarray:
    """Design effect (Kish's deff), a ratio of **variances**: product-level over query-level.

    ``deff = Σ_c (Σ_{i∈c} ψ_i)² / Σ_i ψ_i²`` for the residual scores ψ of a statistic (for a
    mean, ψ_i ∝ d_i − Δ): 1 when queries of a cluster are uncorrelated, larger when they move
    together. ``√deff`` is how much wider the product-level interval is than the query-level one.

    Args:
        cluster_scores: (G × k) per-cluster sums of ψ. query_scores_squared: (k,) Σ_i ψ_i².

    Returns:
        float64 (k,); NaN where Σ ψ² = 0 (no variation).
    """
    numerator = (_as_matrix(cluster_scores) ** 2).sum(axis=0)
    denominator = np.asarray(query_scores_squared, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def task_intervals(per_query_table: Any, *, resamples: int = 10_000, seed: int = 0,
                   level: float = 0.95) -> dict[str, dict[str, tuple[float, float]]]:
    """Product-level bootstrap percentile interval of every measure of every task.

    One count matrix W over the products of all tasks serves every cell: a task's products
    carry their sums, the others zero, and ``mean*_b = Σ_c W_bc S_c / Σ_c W_bc n_c``.

    Args:
        per_query_table: a pyarrow Table (or a mapping of column name to array) with ``task``,
            ``product_id`` and one float column per measure (``R@1`` … ``MRR@50``, percent).

    Returns:
        ``{task: {measure: (low, high)}}`` in task order (P2V … L2L); an interval is
        ``(nan, nan)`` only if no resample holds a query of the task.
    """
    # Reading the table's columns is I/O, kept apart from the statistics in ropebench.io.
    from ropebench.io.per_query import column_codes, column_floats, measure_columns

    tasks, task_labels = column_codes(per_query_table, "task", order=ALL_TASKS)
    products, product_labels = column_codes(per_query_table, "product_id")
    measures = measure_columns(per_query_table)
    if not measures:
        raise DataError("per-query table: no measure column (R@K or MRR@K). Fix: pass the table "
                        "written by `ropebench evaluate --per-query`")
    values = np.column_stack([column_floats(per_query_table, name) for name in measures] + [np.ones(len(tasks))])
    n_tasks, n_products, width = len(task_labels), len(product_labels), len(measures) + 1
    # Columns task-major: [measures of task 0, count of task 0, measures of task 1, ...].
    sums = grouped_sums(values, products * n_tasks + tasks, n_groups=n_products * n_tasks)
    matrix = sums.reshape(n_products, n_tasks * width)
    totals = resampled_sums(matrix, kind="counts", resamples=resamples, seed=seed).reshape(resamples, n_tasks, width)
    means = ratio(totals[:, :, :-1], totals[:, :, -1:]).reshape(resamples, -1)
    bounds = percentile_interval(means, level=level).reshape(n_tasks, len(measures), 2)
    return {str(task): {name: (float(low), float(high)) for name, (low, high) in zip(measures, bounds[t])}
            for t, task in enumerate(task_labels)}
