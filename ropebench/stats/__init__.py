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

The package's modules: :mod:`~ropebench.stats.resampling` (the matrices and the exact sums they
multiply), :mod:`~ropebench.stats.inference` (p-values, intervals, Holm, design effect, per-task
intervals) and :mod:`~ropebench.stats.student_t` (the cluster-robust t-test).
"""

from __future__ import annotations

from ropebench.stats.inference import (
    bootstrap_means,
    bootstrap_p,
    design_effect,
    holm,
    percentile_interval,
    randomization_p,
    ratio,
    sign_flip_test,
    task_intervals,
)
from ropebench.stats.resampling import (
    TOLERANCE,
    bootstrap_counts,
    exact_grid,
    grouped_sums,
    resampled_sums,
    sign_flips,
    single_threaded_blas,
    stratified_sums,
)
from ropebench.stats.resampling import Kind as Kind  # type aliases, for callers' annotations
from ropebench.stats.resampling import Stratum as Stratum
from ropebench.stats.student_t import TTest, cluster_robust_t, cr1_variance, t_statistic, t_two_sided_p

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
