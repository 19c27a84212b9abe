"""Compare two evaluations of the same test set: paired tests and intervals over products.

``compare(a, b)`` pairs the per-query rows of A and B by ``(task, item_id)`` and, for every task
and measure (a *cell*), reports A, B, ``Δ = A − B`` (percentage points) with its 95% bootstrap
interval, a p-value, its Holm adjustment over the cells, wins/ties/losses and the design effect.
The primary hypothesis, declared in advance and tested without adjustment, is ``cross/R@1``:
Δ of the unweighted mean of R@1 over the cross-domain tasks (P2V V2P P2L L2P V2L L2V)::

    Δ_P = (1/T) Σ_t Δ_t = Σ_c Σ_t D_ct / (T · N_t)

so a product ``c`` contributes ``P_c = Σ_t D_ct / (T N_t)`` (``D_ct``: the sum of its R@1
differences in task t, ``N_t``: the task's queries); its sign flips flip ``P_c``, and its
bootstrap replicate is the mean over the T tasks of each task's resampled mean.
The statistics are in :mod:`ropebench.stats`; reading and pairing the two inputs is in
:mod:`ropebench.io.per_query`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ropebench import stats
from ropebench.errors import DataError, UsageError
from ropebench.io.per_query import (
    InputRef,
    Side,
    column_codes,
    column_floats,
    pair_sides,
    protocol_notes,
    protocol_of,
    split_table,
)
from ropebench.protocol import ALL_TASKS, CROSS_TASKS, fewshot_task_order
from ropebench.results import load_results

__all__ = [
    "COMPARISON_SCHEMA",
    "CORRECTIONS",
    "PRIMARY",
    "TESTS",
    "UNITS",
    "Cell",
    "Comparison",
    "InputRef",
    "Primary",
    "Settings",
    "compare",
]

COMPARISON_SCHEMA = "ropebench.comparison/1"
PRIMARY = "cross/R@1"
UNITS: tuple[str, ...] = ("product", "query")
TESTS: tuple[str, ...] = ("randomization", "bootstrap", "t")
CORRECTIONS: tuple[str, ...] = ("holm", "none")


def _number(value: Any) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _pair(value: Any) -> tuple[float | None, float | None]:
    return (_number(value[0]), _number(value[1]))


@dataclass(frozen=True)
class Settings:
    unit: str = "product"
    test: str = "randomization"
    resamples: int = 10_000
    seed: int = 0
    alpha: float = 0.05
    correction: str = "holm"
    ci: str = "percentile"


@dataclass(frozen=True)
class Primary:
    """The primary hypothesis ``cross/R@1``; ``significant`` is the unadjusted ``p < alpha``."""

    hypothesis: str
    a: float | None
    b: float | None
    delta: float | None
    ci: tuple[float | None, float | None]
    p: float | None
    significant: bool
    design_effect: float | None


@dataclass(frozen=True)
class Cell:
    """One task and measure. ``delta = a − b`` in points; ``significant`` is ``p_holm < alpha``.

    ``design_effect`` is Kish's deff, product-level over query-level variance of Δ.
    """

    task: str
    measure: str
    a: float | None
    b: float | None
    delta: float | None
    ci: tuple[float | None, float | None]
    p: float | None
    p_holm: float | None
    significant: bool
    wins: int
    ties: int
    losses: int
    n_queries: int
    n_products: int
    design_effect: float | None


@dataclass(frozen=True)
class Comparison:
    """The comparison of two evaluations; ``to_json()`` is a ``ropebench.comparison/1`` object."""

    a: InputRef
    b: InputRef
    settings: Settings
    primary: Primary | None
    cells: tuple[Cell, ...]
    notes: tuple[str, ...] = field(default=(), compare=False)  # protocol differences to tell the reader

    def to_json(self) -> dict[str, Any]:
        def plain(obj: Any) -> dict[str, Any]:
            return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(obj).items()}

        return {"schema": COMPARISON_SCHEMA, "a": asdict(self.a), "b": asdict(self.b),
                "settings": asdict(self.settings), "primary": None if self.primary is None else plain(self.primary),
                "cells": [plain(cell) for cell in self.cells]}

    def dumps(self) -> str:
        """The JSON text (indented, newline-terminated); equal inputs give equal bytes."""
        return json.dumps(self.to_json(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        """Rebuild a comparison from its JSON object (``json.load`` of a file written by ``dumps``)."""
        if not isinstance(data, Mapping) or data.get("schema") != COMPARISON_SCHEMA:
            found = data.get("schema") if isinstance(data, Mapping) else type(data).__name__
            raise DataError(f"not a {COMPARISON_SCHEMA} object (schema: {found!r}). Fix: pass a file written by "
                            "`ropebench compare --out`")
        try:
            primary = data["primary"]
            return cls(a=InputRef(**data["a"]), b=InputRef(**data["b"]), settings=Settings(**data["settings"]),
                       primary=None if primary is None else Primary(**{**primary, "ci": tuple(primary["ci"])}),
                       cells=tuple(Cell(**{**cell, "ci": tuple(cell["ci"])}) for cell in data["cells"]))
        except (KeyError, TypeError) as error:
            raise DataError(f"{COMPARISON_SCHEMA} object with a missing or unexpected field ({error}). "
                            "Fix: pass a file written by `ropebench compare --out`") from None


def _check_settings(settings: Settings) -> None:
    problems = []
    for name, value, allowed in (("unit", settings.unit, UNITS), ("test", settings.test, TESTS),
                                 ("correction", settings.correction, CORRECTIONS)):
        if value not in allowed:
            problems.append(f"{name} {value!r}: choose from {', '.join(allowed)}")
    if not isinstance(settings.resamples, int) or settings.resamples < 1:
        problems.append(f"resamples {settings.resamples!r}: must be a positive integer (10000 by default)")
    if not isinstance(settings.seed, int) or settings.seed < 0:
        problems.append(f"seed {settings.seed!r}: must be a non-negative integer")
    if not 0.0 < settings.alpha < 1.0:
        problems.append(f"alpha {settings.alpha!r}: must lie strictly between 0 and 1")
    if problems:
        raise UsageError("compare: " + "; ".join(problems))


def compare(a: Any, b: Any, *, unit: str = "product", test: str = "randomization", resamples: int = 10_000,
            seed: int = 0, alpha: float = 0.05, correction: str = "holm") -> Comparison:
    """Compare evaluation A with evaluation B, query by query.

    Args:
        a, b: a results JSON path (with its per-query data), a per-query parquet path, a
            pyarrow Table of per-query rows, or an evaluation result object.
        unit: ``"product"`` (resample products: the queries of a product share their relevant
            items) or ``"query"`` (each query its own cluster, as query-level tools do).
        test: ``"randomization"`` (paired sign flips), ``"bootstrap"`` (centred bootstrap) or
            ``"t"`` (cluster-robust t, df = clusters − 1).
        resamples, seed: B and the seed of the resampling matrices, drawn once for every cell.
        alpha: significance level. correction: ``"holm"`` over the cells, or ``"none"``.

    Returns:
        A :class:`Comparison`. Intervals are 95% percentile bootstrap intervals of Δ over the unit.

    Raises:
        UsageError: the two sides differ in tie policy, Ks, measures or rows (the message names
            the difference and up to 5 example rows), or an option is invalid.
        DataError: a file is unreadable or a table malformed.
    """
    settings = Settings(unit=unit, test=test, resamples=resamples, seed=seed, alpha=alpha, correction=correction)
    _check_settings(settings)
    side_a, side_b = load_side(a, "A"), load_side(b, "B")
    table_a, table_b, measures = pair_sides(side_a, side_b)
    fewshot = _fewshot_pair(side_a, side_b)
    primary, cells = _analyse(table_a, table_b, measures, settings)
    if fewshot is not None:
        # Few-shot rows (V2P/1-shot, acc …) are cells like any other: paired over queries,
        # resampled over products, and in the same Holm family.
        _, fewshot_cells = _analyse(*fewshot, settings, task_order=fewshot_task_order)
        cells = _holm_over(cells + fewshot_cells, settings)
    return Comparison(a=side_a.ref, b=side_b.ref, settings=settings, primary=primary, cells=cells,
                      notes=tuple(protocol_notes(side_a, side_b)))


def _fewshot_pair(a: Side, b: Side) -> tuple[Any, Any, list[str]] | None:
    """Both sides' few-shot rows, paired (None when neither has any); UsageError when only one has."""
    if a.fewshot is None and b.fewshot is None:
        return None
    if a.fewshot is None or b.fewshot is None:
        has, lacks = (a, b) if b.fewshot is None else (b, a)
        raise UsageError(f"{a.name} and {b.name} are not two evaluations of the same test set under the same "
                         f"protocol:\n  - rows: {has.name} has few-shot rows (task V2P/1-shot …), {lacks.name} "
                         "has none\nFix: evaluate both with the same --fewshot --shots --draws --seed, or neither")
    return pair_sides(a.fewshot_side(), b.fewshot_side())


def _holm_over(cells: tuple[Cell, ...], settings: Settings) -> tuple[Cell, ...]:
    """The cells with ``p_holm`` and ``significant`` recomputed over all of them as one family."""
    import dataclasses

    p = np.array([1.0 if cell.p is None else cell.p for cell in cells])
    p_holm = stats.holm(p) if settings.correction == "holm" else p
    return tuple(dataclasses.replace(cell, p_holm=_number(value), significant=bool(value < settings.alpha))
                 for cell, value in zip(cells, p_holm))


def _analyse(table_a: Any, table_b: Any, measures: list[str], settings: Settings, *,
             task_order: Any = None) -> tuple[Primary | None, tuple[Cell, ...]]:
    """Every cell and the primary hypothesis from two paired tables (rows sorted alike).
    ``task_order``: a sort key of the task labels (default: the order of ALL_TASKS)."""
    order_of = list(ALL_TASKS)
    if task_order is not None:
        found = column_codes(table_a, "task")[1]
        order_of = sorted(found, key=task_order)
    task, labels = column_codes(table_a, "task", order=order_of)
    order = np.argsort(task, kind="stable")  # tasks in P2V … L2L order, items sorted within
    task = task[order]
    products, product_labels = column_codes(table_a, "product_id")
    products = products[order]
    x_a = np.column_stack([column_floats(table_a, m)[order] for m in measures])
    x_b = np.column_stack([column_floats(table_b, m)[order] for m in measures])
    d = x_a - x_b
    n_tasks, n_measures, n_products = len(labels), len(measures), len(product_labels)
    width = n_measures + 1  # the measures of a task, then its query count
    bounds = np.searchsorted(task, np.arange(n_tasks + 1))
    n_queries = np.diff(bounds)
    starts = bounds[:-1]
    mean_a = np.add.reduceat(x_a, starts) / n_queries[:, None]
    mean_b = np.add.reduceat(x_b, starts) / n_queries[:, None]

    # Per product and task: sums of d and query counts (n_products × n_tasks × width).
    sums = stats.grouped_sums(np.column_stack([d, np.ones(len(d))]), products * n_tasks + task,
                              n_groups=n_products * n_tasks).reshape(n_products, n_tasks, width)
    counts = sums[:, :, -1]
    delta = sums[:, :, :-1].sum(axis=0) / n_queries[:, None]  # (T × M), Σ d / N
    residual_sq = np.add.reduceat((d - delta[task]) ** 2, starts)  # Σ_i (d_i − Δ)², query level
    scores = sums[:, :, :-1] - counts[:, :, None] * delta  # U_ct = Σ_{i∈c} (d_i − Δ_t), product level
    deff = stats.design_effect(scores.reshape(n_products, -1), residual_sq.ravel()).reshape(n_tasks, n_measures)
    products_per_task = (counts > 0).sum(axis=0)

    cross = [t for t, label in enumerate(labels) if label in CROSS_TASKS]  # a prefix of the task order
    r1 = measures.index("R@1") if "R@1" in measures else None
    weight = np.zeros(n_tasks)
    if cross and r1 is not None:
        weight[cross] = 1.0 / (len(cross) * n_queries[cross])  # Δ_P = Σ_t weight_t Σ_i d_it
    has_primary = bool(cross) and r1 is not None
    r1_index = r1 if r1 is not None else 0

    # What the resampling multiplies: one row per cluster, columns task-major [measure sums,
    # count] per task, then the primary's P_c. Products: one stratum holding every column.
    n_columns = n_tasks * width + 1
    strata: list[tuple[np.ndarray, list[int]]]
    if settings.unit == "product":
        strata = [(np.column_stack([sums.reshape(n_products, -1), sums[:, :, r1_index] @ weight]),
                   list(range(n_columns)))]
        clusters = products_per_task.astype(float)
        cluster_scores = scores / n_queries[None, :, None]
        primary_clusters = float((counts[:, cross].sum(axis=1) > 0).sum())
    else:
        # One query per cluster: a task is a stratum (its queries are resampled among
        # themselves); a cross-domain task also carries the primary's column, so a query has one
        # sign in both.
        strata = []
        for t in range(n_tasks):
            rows = slice(bounds[t], bounds[t + 1])
            pieces, columns = [d[rows], np.ones((n_queries[t], 1))], list(range(t * width, (t + 1) * width))
            if t in cross:
                pieces.append(d[rows, r1_index:r1_index + 1] * weight[t])
                columns.append(n_columns - 1)
            strata.append((np.hstack(pieces), columns))
        clusters = n_queries.astype(float)
        cluster_scores = None
        primary_clusters = float(n_queries[cross].sum())
    observed = np.zeros(n_columns)
    for part, columns in strata:  # Δ, summed like every Δ*: exact per stratum, in stratum order
        observed[columns] += stats.exact_grid(part).sum(axis=0)
    cell_observed = observed[:-1].reshape(n_tasks, width)[:, :-1] / n_queries[:, None]
    primary_observed = observed[-1]

    resampled = _resample(strata, n_columns, settings)
    totals = resampled["counts"]
    per_task = totals[:, :-1].reshape(-1, n_tasks, width)
    boot = stats.ratio(per_task[:, :, :-1], per_task[:, :, -1:])  # (B × T × M); NaN: no query of the task
    boot_primary = boot[:, cross, r1_index].mean(axis=1) if has_primary else np.full(len(boot), np.nan)
    ci = stats.percentile_interval(boot.reshape(len(boot), -1)).reshape(n_tasks, n_measures, 2)
    ci_primary = stats.percentile_interval(boot_primary)[0]

    if settings.test == "randomization":
        flipped = resampled["signs"]
        null = flipped[:, :-1].reshape(-1, n_tasks, width)[:, :, :-1] / n_queries[:, None]
        p = stats.randomization_p(cell_observed.ravel(), null.reshape(len(null), -1))
        p_primary = stats.randomization_p(np.array([primary_observed]), flipped[:, -1:])[0]
    elif settings.test == "bootstrap":
        p = stats.bootstrap_p(cell_observed.ravel(), boot.reshape(len(boot), -1))
        p_primary = stats.bootstrap_p(np.array([primary_observed]), boot_primary[:, None])[0]
    else:
        p, p_primary = _t_p(cell_observed, primary_observed, clusters, primary_clusters, cluster_scores,
                            residual_sq / n_queries[:, None] ** 2, cross, r1_index, weight, n_queries)
        if not has_primary:
            p_primary = math.nan
    p = np.where(np.isnan(p), 1.0, p)  # an undefined test (one cluster) rejects nothing
    p_holm = stats.holm(p) if settings.correction == "holm" else p

    tol = stats.TOLERANCE
    tally = {name: np.add.reduceat(test(d).astype(np.int64), starts)
             for name, test in (("wins", lambda v: v > tol), ("losses", lambda v: v < -tol))}
    cells = []
    for t, label in enumerate(labels):
        for m, measure in enumerate(measures):
            k = t * n_measures + m
            wins, losses = int(tally["wins"][t, m]), int(tally["losses"][t, m])
            cells.append(Cell(
                task=str(label), measure=measure, a=_number(mean_a[t, m]), b=_number(mean_b[t, m]),
                delta=_number(mean_a[t, m] - mean_b[t, m]), ci=_pair(ci[t, m]), p=_number(p[k]),
                p_holm=_number(p_holm[k]), significant=bool(p_holm[k] < settings.alpha), wins=wins,
                ties=int(n_queries[t]) - wins - losses, losses=losses, n_queries=int(n_queries[t]),
                n_products=int(products_per_task[t]), design_effect=_number(deff[t, m])))
    primary = None
    if has_primary:
        a_value, b_value = float(mean_a[cross, r1_index].mean()), float(mean_b[cross, r1_index].mean())
        cross_scores = (scores[:, cross, r1_index] * weight[cross]).sum(axis=1)
        cross_sq = float((residual_sq[cross, r1_index] * weight[cross] ** 2).sum())
        p_value = 1.0 if math.isnan(p_primary) else float(p_primary)
        primary = Primary(hypothesis=PRIMARY, a=a_value, b=b_value, delta=a_value - b_value, ci=_pair(ci_primary),
                          p=p_value, significant=bool(p_value < settings.alpha),
                          design_effect=_number(stats.design_effect(cross_scores[:, None], np.array([cross_sq]))[0]))
    return primary, tuple(cells)


def _resample(strata: list[tuple[np.ndarray, list[int]]], n_columns: int, settings: Settings
              ) -> dict[str, np.ndarray]:
    """Bootstrap sums (and sign-flip sums for the randomization test), drawn side by side, each
    on its own core (see :func:`ropebench.stats.single_threaded_blas`)."""
    from concurrent.futures import ThreadPoolExecutor

    kinds: list[stats.Kind] = ["counts", "signs"] if settings.test == "randomization" else ["counts"]
    _check_room(settings.resamples, n_columns, len(kinds), len(strata))
    entries = settings.resamples * sum(len(values) for values, _ in strata)
    with stats.single_threaded_blas(entries), ThreadPoolExecutor(len(kinds)) as pool:
        futures = {kind: pool.submit(stats.stratified_sums, strata, n_columns, kind=kind,
                                     resamples=settings.resamples, seed=settings.seed) for kind in kinds}
        return {kind: future.result() for kind, future in futures.items()}


def _check_room(resamples: int, n_columns: int, kinds: int, n_strata: int) -> None:
    """Refuse, before drawing, a B whose resampling matrices cannot fit in memory.

    Each kind keeps a (B × k) float64 result plus its strata's partial sums, and the analysis
    derives about as much again (ratios, nulls): ~4 (B × k) arrays per kind, counted here.
    """
    from ropebench.io.parquet import available_memory

    per_resample = 8 * n_columns * kinds * (3 + min(n_strata, 2))
    needed = resamples * per_resample
    room = available_memory()
    if room is not None and needed > 0.8 * room:
        fits = max(1, int(0.8 * room // per_resample))
        raise UsageError(f"--resamples {resamples:,}: the resampling matrices need about {needed / 2**30:.1f} GiB "
                         f"and {room / 2**30:.1f} GiB is free; nothing was computed. Fix: use --resamples "
                         f"{min(fits, 10_000):,} (the default, 10,000, gives p-values to 1e-4) or at most {fits:,}")


def _t_p(cell_observed: np.ndarray, primary_observed: float, clusters: np.ndarray, primary_clusters: float,
         cluster_scores: np.ndarray | None, query_variance_terms: np.ndarray, cross: list[int], r1: int,
         weight: np.ndarray, n_queries: np.ndarray) -> tuple[np.ndarray, float]:
    """Cluster-robust t p-values: V = G/(G−1) Σ_c ψ_c², ψ = residual sums / N (CR1), df = G − 1."""
    if cluster_scores is None:  # one query per cluster: Σ_c ψ_c² is the query-level Σ_i ψ_i²
        meat = query_variance_terms
        meat_primary = float((query_variance_terms[cross, r1] * (weight[cross] * n_queries[cross]) ** 2).sum())
    else:
        meat = (cluster_scores ** 2).sum(axis=0)
        primary_scores = (cluster_scores[:, cross, r1] * (weight[cross] * n_queries[cross])).sum(axis=1)
        meat_primary = float((primary_scores ** 2).sum())
    g = np.broadcast_to(clusters[:, None], meat.shape).ravel()
    variance = stats.cr1_variance(meat.ravel(), g)
    p = np.array([stats.t_two_sided_p(stats.t_statistic(float(delta), float(v)), float(gg) - 1.0)
                  for delta, v, gg in zip(cell_observed.ravel(), variance, g)])
    variance_primary = float(stats.cr1_variance(meat_primary, primary_clusters)[0])
    p_primary = stats.t_two_sided_p(stats.t_statistic(primary_observed, variance_primary), primary_clusters - 1.0)
    return p, p_primary


# -- reading one side: a per-query table, a result object, or a file (results JSON or parquet) ----


def load_side(source: Any, label: str) -> Side:
    """A per-query table (with its protocol) from a Table, a result object or a file path."""
    import pyarrow as pa

    if isinstance(source, pa.Table):
        name = f"{label} (table)"
        retrieval, fewshot = split_table(source)
        return Side(name, InputRef(None, None), retrieval, protocol_of(source, name), fewshot)
    if hasattr(source, "per_query") and hasattr(source, "protocol"):  # an EvaluationResult
        return _side_of_result(source, f"{label} (result)", InputRef(None, None))
    if not isinstance(source, (str, os.PathLike)):
        raise UsageError(f"{label}: expected a results JSON path, a per-query parquet path or a pyarrow Table, "
                         f"not {type(source).__name__}")
    path = Path(source)
    name = f"{label} ({path})"
    if not path.is_file():
        if os.path.lexists(path):  # a pipe, a device, a directory or a link loop: named as what it is
            from ropebench.io.safety import regular_input

            regular_input(path, label, fix="pass a results JSON (`ropebench evaluate --out`) or a per-query "
                          "parquet file")
        raise UsageError(f"{name}: no such file. Fix: pass a results JSON (`ropebench evaluate --out`) or a "
                         "per-query parquet file (`--per-query`)")
    from ropebench.io.files import sha256_file

    ref = InputRef(str(source), sha256_file(path))
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != b"PAR1":
        return _side_of_result(load_results(path), name, ref)
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise DataError(f"{name}: unreadable parquet file ({error}). Fix: re-write it with "
                        "`ropebench evaluate --per-query`") from None
    retrieval, fewshot = split_table(table)
    return Side(name, ref, retrieval, protocol_of(table, name), fewshot)


def _side_of_result(result: Any, name: str, ref: InputRef) -> Side:
    import pyarrow as pa

    table = result.per_query
    if table is None:
        raise UsageError(f"{name}: the result has no per-query data. Fix: evaluate with `--per-query FILE` "
                         "and compare those files (or results files written with them)")
    if not isinstance(table, pa.Table):  # a pandas DataFrame from an older result object
        table = pa.Table.from_pandas(table, preserve_index=False)
    return Side(name, ref, table, dict(result.protocol or {}), getattr(result, "fewshot_per_query", None))
