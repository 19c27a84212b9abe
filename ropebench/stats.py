"""Resampling statistics over clusters of queries (products): tests, intervals, Holm.

Pure numpy, no file I/O. A query's relevant items are the other items of its product, so the
queries of one product are not independent; every method here resamples *clusters* (products),
and treating each query as its own cluster gives the usual query-level method.

Notation (shapes in the docstrings): ``n`` queries, ``G`` clusters, ``k`` cells (columns),
``B`` resamples. ``S_c`` is the sum of a column over the queries of cluster ``c``, ``n_c`` their
number, ``N = Σ_c n_c``.

Resampling matrices are functions of ``(seed, B, G)`` only and are drawn once per comparison:

- sign flips ``ε`` (B × G, ±1) from ``Generator(PCG64(seed))``;
- bootstrap counts ``W`` (B × G; row ``b`` counts how often each cluster is drawn in ``G``
  draws with replacement, i.e. multinomial) from ``Generator(PCG64(seed).jumped())``, the same
  seed on a non-overlapping stream, so an interval does not depend on which test ran.

Both are generated in row blocks and multiplied with every column at once
(:func:`resampled_sums`), so one draw serves every task and measure of a comparison.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ropebench.errors import DataError
from ropebench.protocol import ALL_TASKS

__all__ = [
    "TOLERANCE",
    "TTest",
    "bootstrap_counts",
    "bootstrap_means",
    "bootstrap_p",
    "cluster_robust_t",
    "cr1_variance",
    "design_effect",
    "exact_grid",
    "grouped_sums",
    "holm",
    "percentile_interval",
    "randomization_p",
    "ratio",
    "resampled_sums",
    "sign_flip_test",
    "sign_flips",
    "single_threaded_blas",
    "stratified_sums",
    "t_statistic",
    "t_two_sided_p",
    "task_intervals",
]

TOLERANCE = 1e-9  # percentage points: |Δ*| counts as "as extreme as |Δ|" within this distance
_BLOCK_ELEMENTS = 1 << 20  # entries of one block of a resampling matrix (8 MB as float64)
_MAX_BLOCK_ROWS = 1024

Kind = Literal["signs", "counts"]
Stratum = tuple[np.ndarray, Sequence[int]]


def _block_rows(n_clusters: int) -> int:
    return max(1, min(_MAX_BLOCK_ROWS, _BLOCK_ELEMENTS // max(1, n_clusters)))


def _generator(kind: Kind, seed: int, stratum: int = 0) -> np.random.Generator:
    # Stream 2s (signs) and 2s + 1 (counts) of PCG64(seed), each 2^127 steps from the next:
    # stratum 0 draws its signs from PCG64(seed) itself; strata can be drawn in any order.
    if kind not in ("signs", "counts"):
        raise ValueError(f"kind must be 'signs' or 'counts', not {kind!r}")
    bit_generator = np.random.PCG64(seed)
    jumps = 2 * stratum + (kind == "counts")
    return np.random.Generator(bit_generator.jumped(jumps) if jumps else bit_generator)


_SIGN_VALUES = np.array([-1.0, 1.0])


def _blocks(rng: np.random.Generator, kind: Kind, n_clusters: int, resamples: int) -> Iterator[np.ndarray]:
    """Yield the rows of a (B × G) resampling matrix as float64 blocks; the block sizes are part of its definition."""
    if resamples < 1 or n_clusters < 1:
        raise ValueError(f"need resamples >= 1 and n_clusters >= 1 (got {resamples}, {n_clusters})")
    step = _block_rows(n_clusters)
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        size = rows * n_clusters
        if kind == "signs":
            # One random bit per entry: ε = ±1 (looked up straight into float64, one pass).
            bits = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8), count=size)
            yield _SIGN_VALUES[bits].reshape(rows, n_clusters)
        else:
            # G draws with replacement per row, counted: a multinomial(G, 1/G) row. Drawn as
            # indices + bincount one row at a time (cache-sized; several times faster than
            # Generator.multinomial, which draws G binomials per row).
            block = np.empty((rows, n_clusters))
            for row in block:
                row[:] = np.bincount(rng.integers(0, n_clusters, size=n_clusters, dtype=np.int64),
                                     minlength=n_clusters)
            yield block


def sign_flips(n_clusters: int, *, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """The sign-flip matrix ε, int8 (B × G) of ±1, as used by :func:`resampled_sums`."""
    return np.concatenate(list(_blocks(_generator("signs", seed), "signs", n_clusters, resamples))).astype(np.int8)


def bootstrap_counts(n_clusters: int, *, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """The bootstrap count matrix W, int64 (B × G); every row sums to G."""
    return np.concatenate(list(_blocks(_generator("counts", seed), "counts", n_clusters, resamples))).astype(np.int64)


def exact_grid(values: np.ndarray) -> np.ndarray:
    """Round each column of ``values`` (G × k) onto a power-of-two grid on which sums are exact.

    With ``q`` such that ``G · max_c |x_c| < 2^(52 − q)``, every ``x_c`` becomes a multiple of
    ``2^-q``: any sum ``Σ_c M_bc x_c`` with ``Σ_c |M_bc| ≤ G`` (signs, or counts summing to G)
    and each of its partial sums is then an integer multiple of ``2^-q`` below ``2^52 · 2^-q``,
    exact in float64 in any order. So every BLAS, thread count and block size gives the same
    bits. A value moves by at most ``G · max|x| · 2^-53`` (7e-14 of a point for a task mean
    at ROPE size). Rounding twice, or a subset of the rows, changes nothing more.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    _, top = np.frexp(len(values) * np.abs(values).max(axis=0))  # G · max|x| < 2^top
    scale = np.ldexp(1.0, 52 - top)  # powers of two: multiplying by them is exact
    return np.rint(values * scale) / scale


def resampled_sums(values: np.ndarray, *, kind: Kind, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """``M @ values`` for the resampling matrix ``M`` (ε or W), streamed in row blocks.

    Args:
        values: float (G × k), e.g. per-cluster sums, one column per cell.
        kind: ``"signs"`` (ε, :func:`sign_flips`) or ``"counts"`` (W, :func:`bootstrap_counts`).

    Returns:
        float64 (B × k): row ``b`` is ``Σ_c M_bc values_c``, computed exactly for ``values`` on
        :func:`exact_grid` (which they are rounded to first), so the result is the same on every
        machine.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (clusters × columns), got shape {values.shape}")
    return stratified_sums([(values, range(values.shape[1]))], values.shape[1], kind=kind,
                           resamples=resamples, seed=seed)


def single_threaded_blas(entries: int) -> AbstractContextManager[Any]:
    """Run BLAS on one thread while resampling ``entries`` (B × G) matrix entries, if that many.

    The products here are thin (block rows × G × a few dozen columns): BLAS threads mostly wait
    for each other, the more so on a busy machine, and resampling runs its own threads. Setting
    the limit costs milliseconds, so small problems run as they are.
    """
    if entries < 4 * _BLOCK_ELEMENTS:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def stratified_sums(strata: Sequence[Stratum], n_columns: int, *, kind: Kind, resamples: int = 10_000,
                    seed: int = 0) -> np.ndarray:
    """:func:`resampled_sums` of several strata, each resampled within itself.

    Args:
        strata: ``(values, columns)`` pairs: a stratum's clusters (G_s × len(columns)) and the
            output columns they add to. Stratum ``s`` has its own matrix from stream ``2s``
            (signs) or ``2s + 1`` (counts) of ``PCG64(seed)`` (``jumped``), so its bootstrap
            counts resample its own clusters (a stratified bootstrap). With one query per
            cluster each task is a stratum, and a query meets only its own task's columns.
            Stratum 0 uses the streams of :func:`sign_flips` and :func:`bootstrap_counts`.
        n_columns: k, the width of the result.

    Returns:
        float64 (B × k): the strata's exact sums, added in stratum order.
    """
    indexes = [np.asarray(columns, dtype=np.intp) for _, columns in strata]

    def stratum_sums(number: int) -> np.ndarray:
        part = exact_grid(np.asarray(strata[number][0], dtype=np.float64))
        sums = np.empty((resamples, part.shape[1]))
        start = 0
        for block in _blocks(_generator(kind, seed, number), kind, len(part), resamples):
            sums[start:start + len(block)] = block @ part
            start += len(block)
        return sums

    # Strata draw from their own streams, so they can run on several cores (numpy releases
    # the GIL while drawing and counting); the partial sums are added in stratum order.
    workers = min(len(strata), os.cpu_count() or 1)
    with single_threaded_blas(resamples * sum(len(values) for values, _ in strata)):
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                partials = list(pool.map(stratum_sums, range(len(strata))))
        else:
            partials = [stratum_sums(number) for number in range(len(strata))]
    out = np.zeros((resamples, n_columns))
    for index, partial in zip(indexes, partials):
        out[:, index] += partial
    return out


def grouped_sums(values: np.ndarray, groups: np.ndarray, *, n_groups: int) -> np.ndarray:
    """Per-group column sums, exact and independent of row order.

    Args:
        values: finite float (n,) or (n × k).
        groups: int (n,), each in ``[0, n_groups)``.

    Returns:
        float64 (n_groups × k), or (n_groups,) for 1-D values. Each column is summed as 64-bit
        integers in units of ``2^-e``, with ``e`` chosen from the column's ``Σ|v|`` so no sum
        can overflow (about 2^-36 for percentages over 300,000 queries): shuffling the rows
        changes no bit of the result, which float summation cannot promise.
    """
    values = np.asarray(values, dtype=np.float64)
    matrix = values.reshape(len(values), -1)
    groups = np.asarray(groups, dtype=np.int64)
    out = np.zeros((n_groups, matrix.shape[1]))
    if len(matrix):
        if not np.all(np.isfinite(matrix)):
            raise ValueError("grouped_sums: values must be finite")
        _, top = np.frexp(np.abs(matrix).sum(axis=0))  # Σ|v| < 2^top
        scale = np.ldexp(1.0, 61 - top)  # powers of two: multiplying by them is exact
        order = np.argsort(groups, kind="stable")
        sorted_groups = groups[order]
        starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
        fixed = np.rint(matrix[order] * scale).astype(np.int64)
        out[sorted_groups[starts]] = np.add.reduceat(fixed, starts, axis=0).astype(np.float64) / scale
    return out if values.ndim == 2 else out[:, 0]


def randomization_p(observed: np.ndarray, replicates: np.ndarray, *, tolerance: float = TOLERANCE) -> np.ndarray:
    """Two-sided Monte-Carlo p-value ``(1 + #{b : |Δ*_b| ≥ |Δ| − tol}) / (B + 1)``.

    Args:
        observed: (k,) the statistic Δ. replicates: (B × k) its null replicates Δ*.
    """
    observed = np.abs(np.asarray(observed, dtype=np.float64))
    extreme = np.abs(replicates) >= observed - tolerance
    return (1.0 + extreme.sum(axis=0)) / (replicates.shape[0] + 1.0)


def _as_matrix(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def _cluster_index(clusters: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    _, index = np.unique(np.asarray(clusters), return_inverse=True)
    return index.ravel(), int(index.max(initial=-1)) + 1


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
