"""From first-hit counts to R@K and MRR under a tie policy. Pure numpy, no I/O.

Every query is described by three counts against its gallery (after exclusions), where ``s+``
is the best score among its relevant items:

- ``a``: irrelevant items scoring strictly above ``s+``;
- ``t``: irrelevant items scoring exactly ``s+``;
- ``p``: relevant items scoring exactly ``s+`` (at least 1).

Tie policies place the first relevant item among the ``t + p`` tied items:

- ``optimistic``: first (rank ``a + 1``);
- ``pessimistic``: after every tied irrelevant item (rank ``a + t + 1``);
- ``expected``: uniformly at random; with ``R`` the position of the first relevant item among
  the tied ones, ``P(R > r) = C(t, r) / C(t + p, r)``, so
  ``P(rank <= K) = 1 - C(t, K - a) / C(t + p, K - a)`` for ``K > a`` and 0 otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ropebench.engines.core.levels import ALL_RELEVANT, FIRST_HIT, RelevantLevels
from ropebench.errors import UsageError
from ropebench.protocol import TIE_POLICIES, measure_names

__all__ = ["hit_probabilities", "reciprocal_rank", "count_tied", "summarize", "measure_columns", "MEASURES",
           "Measure", "counts_needed", "map_depth", "exact_sum"]


@dataclass(frozen=True)
class Measure:
    """One measure family of ``--measures``: its spelling, the counts it needs from an engine
    (``first_hit``: ``a, t, p``; ``all_relevant``: every relevant level) and what it is."""

    family: str
    needs: str
    description: str


# The measure registry: engines compute the all-relevant counts only when a chosen measure needs them.
MEASURES: dict[str, Measure] = {m.family: m for m in (
    Measure("R@K", FIRST_HIT, "P(first hit within the top K), one key per K (Success@K)"),
    Measure("MRR", FIRST_HIT, "mean reciprocal rank of the first hit, 0 beyond max K"),
    Measure("MAP@R", ALL_RELEVANT, "mean average precision at R (Musgrave et al., 2020)"),
    Measure("RP", ALL_RELEVANT, "R-Precision: relevant items in the top R, over R"),
    Measure("mAP@K", ALL_RELEVANT, "average precision cut at K, over min(R, K)"),
)}


def _family(name: str) -> Measure:
    return MEASURES["mAP@K" if name.startswith("mAP@") else name]


def counts_needed(families: Sequence[str]) -> frozenset[str]:
    """The counts an engine must provide for these measure families (first-hit counts always)."""
    return frozenset({FIRST_HIT} | {_family(f).needs for f in families})


def map_depth(families: Sequence[str]) -> int:
    """The largest K of the ``mAP@K`` families (0: none)."""
    return max((int(f[4:]) for f in families if f.startswith("mAP@")), default=0)

_CHUNK = 1 << 22  # survival-table cells per chunk of tied queries (32 MiB of float64)
# No rank exceeds a gallery's size, so every K from here on gives the numbers K = _K_CAP gives;
# clamping lets any positive K (even beyond int64) through the int64 arithmetic unchanged.
_K_CAP = 1 << 62


def _cutoffs(ks: Sequence[int]) -> np.ndarray:
    """``(1, len(ks))`` int64 cut-offs, each clamped to :data:`_K_CAP`."""
    return np.asarray([min(int(k), _K_CAP) for k in ks], dtype=np.int64)[None, :]


def _check_policy(ties: str) -> None:
    if ties not in TIE_POLICIES:
        raise UsageError(f"unknown tie policy {ties!r}: choose from {', '.join(TIE_POLICIES)}")


def _survival(t: np.ndarray, p: np.ndarray, max_r: int) -> np.ndarray:
    """``S[:, r] = P(R > r) = C(t, r) / C(t + p, r)`` for ``r = 0 .. max_r``, shape ``(n, max_r + 1)``.

    Built as the running product of ``(t - i) / (t + p - i)``; a factor turns 0 once ``i = t``,
    which is ``C(t, r) = 0`` for ``r > t``.
    """
    t = t.astype(np.float64)[:, None]
    p = p.astype(np.float64)[:, None]
    i = np.arange(max_r, dtype=np.float64)[None, :]
    factors = np.clip(t - i, 0.0, None) / (t + p - i).clip(min=1.0)
    out = np.ones((t.shape[0], max_r + 1), dtype=np.float64)
    np.cumprod(factors, axis=1, out=out[:, 1:])
    return out


def _chunks(tied: np.ndarray, width: int) -> list[np.ndarray]:
    """Split the tied queries so that one survival table holds at most ``_CHUNK`` cells."""
    per_chunk = max(1, _CHUNK // max(width, 1))
    return [tied[i:i + per_chunk] for i in range(0, len(tied), per_chunk)]


def hit_probabilities(a: np.ndarray, t: np.ndarray, p: np.ndarray, ks: Sequence[int], ties: str) -> np.ndarray:
    """``P(first hit within top K)`` per query and K, shape ``(n_queries, len(ks))``, values in [0, 1].

    Args:
        a, t, p: ``(n_queries,)`` integer counts (see module docstring); ``p >= 1``.
        ks: cut-offs K.
        ties: ``expected``, ``pessimistic`` or ``optimistic``.
    """
    _check_policy(ties)
    a = np.asarray(a, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    p = np.asarray(p, dtype=np.int64)
    k = _cutoffs(ks)
    if ties == "optimistic":
        return (a[:, None] < k).astype(np.float64)
    if ties == "pessimistic":
        return ((a + t)[:, None] < k).astype(np.float64)
    out = (a[:, None] < k).astype(np.float64)  # exact where nothing ties with the first hit (t = 0)
    tied = np.flatnonzero(t > 0)
    if len(tied):
        # S(r) = 0 for r > t, so no table needs more than max(t) + 1 columns, however large K is:
        # memory and time are bounded by the gallery, not by K.
        width = int(min(int(k.max()), int(t[tied].max()) + 1))
        for rows in _chunks(tied, width):
            survival = _survival(t[rows], p[rows], width)
            depth = np.clip(k - a[rows, None], 0, width)  # tied positions that fit in the top K
            out[rows] = np.where(depth > 0, 1.0 - np.take_along_axis(survival, depth, axis=1), 0.0)
    return out


def reciprocal_rank(a: np.ndarray, t: np.ndarray, p: np.ndarray, max_k: int, ties: str) -> np.ndarray:
    """``E[1 / rank]`` of the first hit, counting 0 beyond ``max_k``; shape ``(n_queries,)``."""
    _check_policy(ties)
    max_k = min(int(max_k), _K_CAP)
    a = np.asarray(a, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    p = np.asarray(p, dtype=np.int64)
    if ties in ("optimistic", "pessimistic"):
        rank = a + 1 if ties == "optimistic" else a + t + 1
        return np.where(rank <= max_k, 1.0 / rank, 0.0)
    out = np.where(a + 1 <= max_k, 1.0 / (a + 1), 0.0)  # exact where nothing ties (t = 0)
    tied = np.flatnonzero(t > 0)
    if len(tied):
        # P(R = r) = 0 for r > t + 1: the table stops there (see hit_probabilities).
        width = int(min(max_k, int(t[tied].max()) + 1))
        r = np.arange(1, width + 1)[None, :]  # position among the tied items
        for rows in _chunks(tied, width):
            survival = _survival(t[rows], p[rows], width)
            p_first_at = survival[:, :-1] - survival[:, 1:]  # P(R = r)
            rank = a[rows, None] + r
            out[rows] = np.where(rank <= max_k, p_first_at / rank, 0.0).sum(axis=1)
    return out


def count_tied(a: np.ndarray, t: np.ndarray, ks: Sequence[int]) -> int:
    """Queries whose R@K at some K differs between the optimistic and pessimistic policies."""
    a = np.asarray(a, dtype=np.int64)[:, None]
    t = np.asarray(t, dtype=np.int64)[:, None]
    k = _cutoffs(ks)
    return int(((a < k) != (a + t < k)).any(axis=1).sum())


def measure_columns(a: np.ndarray, t: np.ndarray, p: np.ndarray, ks: Sequence[int], ties: str, *,
                    names: Sequence[str] | None = None, levels: RelevantLevels | None = None
                    ) -> dict[str, np.ndarray]:
    """Per-query values of every measure, in percent: ``{"R@1": (n,), …, "MRR@{max K}": (n,)}``.

    ``names``: the measure keys wanted (default ``R@K`` and ``MRR@{max K}``); ``MAP@R``, ``RP`` and
    ``mAP@K`` need ``levels``, the all-relevant counts (:mod:`ropebench.measures_relevant`).
    The per-query table stores exactly these columns, so a column's mean over a task is the
    task's number (:func:`summarize`).
    """
    ks = tuple(ks)
    names = measure_names(ks) if names is None else tuple(names)
    out: dict[str, np.ndarray] = {}
    if any(name.startswith("R@") for name in names):
        hits = hit_probabilities(a, t, p, ks, ties)
        out.update({f"R@{k}": 100.0 * hits[:, i] for i, k in enumerate(ks)})
    mrr = f"MRR@{max(ks)}"
    if mrr in names:
        out[mrr] = 100.0 * reciprocal_rank(a, t, p, max(ks), ties)
    rest = [name for name in names if name not in out]
    if rest:
        from ropebench.measures_relevant import relevant_columns

        _check_policy(ties)
        if levels is None:
            raise ValueError(f"{', '.join(rest)} need the all-relevant counts (levels=)")
        out.update(relevant_columns(levels, rest, ties))
    return {name: out[name] for name in names}


def summarize(a: np.ndarray, t: np.ndarray, p: np.ndarray, ks: Sequence[int], ties: str,
              columns: dict[str, np.ndarray] | None = None, *, names: Sequence[str] | None = None
              ) -> dict[str, float | None]:
    """``{"R@K": ..., "MRR@{max K}": ...}`` in percent (mean over queries); None with no query.

    ``columns``: the per-query values from :func:`measure_columns`, when already computed;
    ``names``: the measure keys (default ``R@K`` and ``MRR@{max K}``).
    """
    ks = tuple(ks)
    names = measure_names(ks) if names is None else tuple(names)
    if len(a) == 0:
        return dict.fromkeys(names)
    if columns is None:
        columns = measure_columns(a, t, p, ks, ties)
    # math.fsum is exactly rounded, so the mean does not depend on the order of the queries.
    # (100 × x is exact for 0 and 1 and rounds once otherwise, as 100 × mean did before.)
    return {name: exact_sum(columns[name]) / len(a) for name in names}


def exact_sum(values: np.ndarray) -> float:
    """``math.fsum(values)``: the exact sum, rounded once, so it does not depend on the order of the
    values; the 0s and 1s that most per-query columns are made of counted instead of listed (the
    same exact sum: 10 times faster on a column of 30,000 first-hit accuracies)."""
    values = np.asarray(values, dtype=np.float64)
    ones = values == 1.0
    rest = values[~ones & (values != 0.0)]
    return math.fsum([float(np.count_nonzero(ones)), *rest.tolist()])
