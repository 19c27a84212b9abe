"""Rank intervals across a field of systems, and the groups that cannot be told apart.

One product-level bootstrap serves every entry, task and measure: resample ``b`` draws the
products with the counts ``W_b`` (:func:`~ropebench.stats.resampling.bootstrap_counts`, seed 0),
every entry's cell mean is ``mean*_be = Σ_c W_bc S_ce / Σ_c W_bc n_c`` with ``S_ce`` the sum of
the entry's per-query values over product ``c`` (the same denominator for every entry), and
each entry is ranked among the entries in that resample:

    rank*_be = 1 + #{e' : mean*_be' > mean*_be}      (rank 1 = best; ties share the better rank)

The 95% rank interval is the percentile interval of ``rank*_e`` over the B resamples, taken as
observed ranks (``numpy.quantile(..., method="inverted_cdf")`` at 2.5% and 97.5%), so its ends
are integers. Because the sums are exact (:func:`~ropebench.stats.resampling.exact_grid`), two
entries with identical per-query values have identical resampled means, and always tie.

The primary cell ``cross/R@1`` is the unweighted mean of the six cross-domain tasks' R@1,
resampled from the same draws.

Groups: entries ``i`` and ``j`` differ at α when the Holm-adjusted (over the cell's pairs)
two-sided percentile-bootstrap p of ``Δ = mean_i − mean_j`` from the same resamples,
``p = min(1, 2·min(1 + #{Δ*_b ≤ 0}, 1 + #{Δ*_b ≥ 0}) / (B + 1))`` (0 within 1e-9 points), is below
α — the test that rejects exactly when 0 lies outside the percentile interval of Δ, so it agrees
with the intervals ``compare`` reports; two identical entries always give p = 1. The entries
that do not differ are summarised by a compact letter display (Piepho 2004, insert-absorb):
entries that share a letter cannot be told apart; letters run from the best entry down.

Pure numpy, no file I/O; the leaderboard reads the per-query files
(:mod:`ropebench.leaderboard.ranking`).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ropebench.protocol import CROSS_TASKS
from ropebench.stats.inference import holm, ratio
from ropebench.stats.resampling import TOLERANCE, grouped_sums, resampled_sums

__all__ = ["TaskColumns", "Ranking", "rank_intervals", "resample_ranks", "letter_groups", "percentile_p", "PRIMARY"]

PRIMARY = "cross/R@1"
_CHUNK_ELEMENTS = 1 << 22  # B-rows × E × E booleans compared at once


@dataclass(frozen=True)
class TaskColumns:
    """One task's per-query values for the entries that report it, rows aligned across entries.

    Attributes:
        products: int64 (n,) product code of each query row, in ``[0, n_products)``.
        entries: the entries (names) whose values are given, in field order.
        values: ``{measure: float64 (n, len(entries))}``, percent, one column per entry.
    """

    products: np.ndarray
    entries: tuple[str, ...]
    values: Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Ranking:
    """Rank intervals of a field of entries; cells are ``"P2V/R@1"`` … and ``"cross/R@1"``.

    Attributes:
        entries: every entry ranked somewhere, in field order.
        estimates: ``{cell: {entry: mean}}`` (percent), the point estimates.
        ranks: ``{cell: {entry: rank}}``, the entry's rank on the point estimates.
        intervals: ``{cell: {entry: (low, high)}}``, the 95% rank interval (integers).
        groups: ``{cell: {entry: letters}}``; entries sharing a letter cannot be told apart at α.
        settings: resamples, seed, level, alpha, unit.
    """

    entries: tuple[str, ...]
    estimates: Mapping[str, Mapping[str, float]]
    ranks: Mapping[str, Mapping[str, int]]
    intervals: Mapping[str, Mapping[str, tuple[int, int]]]
    groups: Mapping[str, Mapping[str, str]]
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def cells(self) -> tuple[str, ...]:
        return tuple(self.intervals)

    def to_json(self) -> dict[str, Any]:
        """``{"ranks": {entry: {cell: [low, high]}}, "groups": {cell: {entry: letters}}, …}``."""
        ranks: dict[str, dict[str, list[int]]] = {entry: {} for entry in self.entries}
        for cell, by_entry in self.intervals.items():
            for entry, (low, high) in by_entry.items():
                ranks[entry][cell] = [int(low), int(high)]
        return {"ranks": ranks,
                "rank": {cell: dict(by_entry) for cell, by_entry in self.ranks.items()},
                "groups": {cell: dict(by_entry) for cell, by_entry in self.groups.items()},
                "rank_settings": dict(self.settings)}


def resample_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks within each row: ``1 + #{e' : x_e' > x_e}`` (rank 1 = largest; ties share the better rank).

    Args:
        values: float (B × E).

    Returns:
        int64 (B × E).
    """
    values = np.asarray(values, dtype=np.float64)
    n_rows, width = values.shape
    out = np.empty((n_rows, width), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, width * width))
    for start in range(0, n_rows, step):
        block = values[start:start + step]
        out[start:start + step] = 1 + (block[:, None, :] > block[:, :, None]).sum(axis=2)
    return out


def _rank_bounds(ranks: np.ndarray, level: float) -> np.ndarray:
    """(E × 2) int: the percentile interval of each column of integer ranks, as observed ranks."""
    quantiles = [(1.0 - level) / 2.0, (1.0 + level) / 2.0]
    return np.quantile(ranks, quantiles, axis=0, method="inverted_cdf").T.astype(np.int64)


def letter_groups(order: Sequence[int], different: np.ndarray) -> list[str]:
    """Compact letter display: entries that share a letter are not significantly different.

    Piepho's insert-absorb algorithm: start with one group holding every entry; for each
    significantly different pair, split every group holding both into one without each; drop
    groups contained in another. Letters are given from the group holding the best entry down.

    Args:
        order: entry indexes from best to worst (by point estimate).
        different: bool (E × E), symmetric; True where the pair differs significantly.

    Returns:
        One string of letters per entry (index order), e.g. ``["a", "ab", "b"]``.
    """
    width = len(order)
    groups: list[frozenset[int]] = [frozenset(range(width))]
    for i in range(width):
        for j in range(i + 1, width):
            if not different[i, j]:
                continue
            split: list[frozenset[int]] = []
            for group in groups:
                if i in group and j in group:
                    split += [group - {i}, group - {j}]
                else:
                    split.append(group)
            unique = list(dict.fromkeys(split))
            groups = [g for g in unique if g and not any(g < other for other in unique)]
    position = {entry: rank for rank, entry in enumerate(order)}
    groups.sort(key=lambda g: sorted(position[e] for e in g))
    symbols = string.ascii_lowercase + string.ascii_uppercase
    names = [symbols[k] if k < len(symbols) else f"[{k + 1}]" for k in range(len(groups))]
    return ["".join(name for name, group in zip(names, groups) if entry in group) for entry in range(width)]


def percentile_p(replicates: np.ndarray, *, tolerance: float = TOLERANCE) -> np.ndarray:
    """Two-sided percentile-bootstrap p of each column: ``min(1, 2·min(1 + #{Δ* ≤ 0}, 1 + #{Δ* ≥ 0}) / (B + 1))``.

    Args:
        replicates: float (B × k), resampled differences Δ* (no NaN).
    """
    replicates = np.asarray(replicates, dtype=np.float64)
    below = (replicates <= tolerance).sum(axis=0)
    above = (replicates >= -tolerance).sum(axis=0)
    return np.minimum(1.0, 2.0 * (1.0 + np.minimum(below, above)) / (replicates.shape[0] + 1.0))


def _cell(entries: Sequence[str], estimates: np.ndarray, replicates: np.ndarray, level: float,
          alpha: float) -> dict[str, Any]:
    """Observed ranks, rank intervals and letter groups of one cell.

    ``replicates`` (B × E) are the resampled means, ordered as ``estimates`` (E,); a resample
    without a query of the cell (NaN) is dropped.
    """
    valid = np.isfinite(replicates).all(axis=1)
    replicates = replicates[valid]
    observed = resample_ranks(estimates[None, :])[0]
    bounds = _rank_bounds(resample_ranks(replicates), level)
    width = len(entries)
    pairs = [(i, j) for i in range(width) for j in range(i + 1, width)]
    different = np.zeros((width, width), dtype=bool)
    if pairs:
        left, right = np.array(pairs).T
        p = percentile_p(replicates[:, left] - replicates[:, right])
        significant = holm(p) < alpha
        different[left[significant], right[significant]] = True
        different |= different.T
    order = sorted(range(width), key=lambda e: (-estimates[e], e))
    letters = letter_groups(order, different)
    return {"estimates": {e: float(v) for e, v in zip(entries, estimates)},
            "ranks": {e: int(r) for e, r in zip(entries, observed)},
            "intervals": {e: (int(b[0]), int(b[1])) for e, b in zip(entries, bounds)},
            "groups": dict(zip(entries, letters))}


def rank_intervals(tasks: Mapping[str, TaskColumns], *, n_products: int, resamples: int = 10_000, seed: int = 0,
                   level: float = 0.95, alpha: float = 0.05, primary: bool = True) -> Ranking:
    """Rank intervals and letter groups of every (task, measure) cell, and of ``cross/R@1``.

    Args:
        tasks: ``{task: TaskColumns}``; an entry is ranked in a task's cells among the entries
            that report the task.
        n_products: G, the number of product codes (the clusters resampled).
        resamples, seed: the bootstrap (B draws of G products, from ``PCG64(seed)``'s counts stream).
        level: of the rank intervals. alpha: of the pairwise tests behind the groups.
        primary: also rank ``cross/R@1`` among the entries that report R@1 on all six cross tasks.

    Returns:
        :class:`Ranking`.
    """
    layout: list[tuple[str, str, slice]] = []  # (task, measure, columns of its entries)
    count_column: dict[str, int] = {}
    blocks = []
    width = 0
    for task, columns in tasks.items():
        for measure, values in columns.values.items():
            layout.append((task, measure, slice(width, width + len(columns.entries))))
            blocks.append(grouped_sums(values, columns.products, n_groups=n_products))
            width += len(columns.entries)
        count_column[task] = width
        blocks.append(grouped_sums(np.ones(len(columns.products)), columns.products, n_groups=n_products)[:, None])
        width += 1
    if not blocks:
        return Ranking((), {}, {}, {}, {}, _settings(resamples, seed, level, alpha))
    sums = np.concatenate(blocks, axis=1)  # G × width: exact per-product sums
    totals = sums.sum(axis=0)  # exact too (on the grid every partial sum is representable)
    replicated = resampled_sums(sums, kind="counts", resamples=resamples, seed=seed)  # B × width
    cells: dict[str, dict[str, Any]] = {}
    task_means: dict[str, tuple[np.ndarray, np.ndarray, tuple[str, ...]]] = {}
    for task, measure, span in layout:
        entries = tasks[task].entries
        denominator = replicated[:, count_column[task]][:, None]
        means = ratio(replicated[:, span], denominator)
        estimates = totals[span] / totals[count_column[task]]
        cells[f"{task}/{measure}"] = _cell(entries, estimates, means, level, alpha)
        if measure == "R@1":
            task_means[task] = (estimates, means, entries)
    if primary and all(task in task_means for task in CROSS_TASKS):
        shared = [e for e in task_means[CROSS_TASKS[0]][2] if all(e in task_means[t][2] for t in CROSS_TASKS)]
        if shared:
            picks = {t: [task_means[t][2].index(e) for e in shared] for t in CROSS_TASKS}
            primary_estimates = np.mean([task_means[t][0][picks[t]] for t in CROSS_TASKS], axis=0)
            primary_means = np.mean([task_means[t][1][:, picks[t]] for t in CROSS_TASKS], axis=0)
            cells = {PRIMARY: _cell(shared, primary_estimates, primary_means, level, alpha), **cells}
    order = [e for columns in tasks.values() for e in columns.entries]
    return Ranking(
        entries=tuple(dict.fromkeys(order)),
        estimates={cell: found["estimates"] for cell, found in cells.items()},
        ranks={cell: found["ranks"] for cell, found in cells.items()},
        intervals={cell: found["intervals"] for cell, found in cells.items()},
        groups={cell: found["groups"] for cell, found in cells.items()},
        settings=_settings(resamples, seed, level, alpha),
    )


def _settings(resamples: int, seed: int, level: float, alpha: float) -> dict[str, Any]:
    return {"unit": "product", "resamples": resamples, "seed": seed, "level": level, "alpha": alpha,
            "interval": "percentile", "test": "bootstrap", "correction": "holm"}
