"""Measures over every relevant item — MAP@R, R-Precision (``RP``) and ``mAP@K`` — from the
all-relevant counts of :class:`~ropebench.engines.core.levels.RelevantLevels`. Pure numpy, no I/O.

With ``R`` a query's eligible relevant items and ``rel_i`` whether rank ``i`` holds one
(Musgrave et al., 2020, "A Metric Learning Reality Check"; pytorch-metric-learning's
``mean_average_precision_at_r`` and ``r_precision``):

- ``RP = |relevant ∩ top R| / R``;
- ``MAP@R = (1/R) Σ_{i≤R} rel_i · P@i`` with ``P@i = |relevant ∩ top i| / i``;
- ``mAP@K = (1/min(R, K)) Σ_{i≤K} rel_i · P@i``.

The items of one level (``r`` relevant and ``n`` irrelevant items at one float64 score, below ``A``
items) hold ranks ``A + 1 … A + m``, ``m = r + n``, in an order the tie policy decides:

- ``optimistic``: the relevant ones first; ``pessimistic``: the irrelevant ones first;
- ``expected``: uniformly at random, in exact expectation (McSherry & Najork, 2008): rank
  ``A + j`` holds a relevant item with probability ``r/m``, and given that, the level's relevant
  items before it number ``(j − 1)(r − 1)/(m − 1)`` in expectation, so by linearity
  ``E[rel_{A+j} · P@(A+j)] = (r/m) · (ρ + 1 + (j − 1)(r − 1)/(m − 1)) / (A + j)`` with ``ρ`` the
  relevant items of better levels; and ``E|relevant ∩ top C|`` takes ``r · min(m, C − A)/m`` from
  the level.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ropebench.engines.core.levels import RelevantLevels

__all__ = ["precision_sum", "relevant_in_top", "relevant_columns", "RELEVANT_FAMILIES"]

RELEVANT_FAMILIES = ("MAP@R", "RP")  # and mAP@K


def _levels(levels: RelevantLevels) -> tuple[np.ndarray, ...]:
    query = levels.query_of_level
    rel_above = levels.relevant_above
    start = levels.above + rel_above  # items strictly above the level
    return query, rel_above, start, levels.tied, levels.relevant


def precision_sum(levels: RelevantLevels, cutoff: np.ndarray, ties: str) -> np.ndarray:
    """``E[Σ_{i ≤ C} rel_i · P@i]`` per query (``cutoff``: ``C`` per query), shape ``(n,)``."""
    query, rho, start, n, r = _levels(levels)
    m = n + r
    span = np.clip(cutoff[query] - start, 0, m)  # the level's ranks within the top C
    owner = np.repeat(np.arange(len(m)), span)
    j = np.arange(len(owner)) - np.repeat(np.cumsum(span) - span, span) + 1  # 1-based position in its level
    rank = (start[owner] + j).astype(np.float64)
    r_o, n_o, rho_o, m_o = r[owner], n[owner], rho[owner], m[owner]
    if ties == "optimistic":
        value = np.where(j <= r_o, (rho_o + j) / rank, 0.0)
    elif ties == "pessimistic":
        value = np.where(j > n_o, (rho_o + j - n_o) / rank, 0.0)
    else:
        share = np.where(m_o > 1, (r_o - 1) / np.maximum(m_o - 1, 1), 0.0)
        value = (r_o / m_o) * (rho_o + 1 + (j - 1) * share) / rank
    return np.bincount(query[owner], weights=value, minlength=len(levels.n_relevant))


def relevant_in_top(levels: RelevantLevels, cutoff: np.ndarray, ties: str) -> np.ndarray:
    """``E|relevant ∩ top C|`` per query, shape ``(n,)``."""
    query, _, start, n, r = _levels(levels)
    room = cutoff[query] - start
    if ties == "optimistic":
        value = np.clip(room, 0, r).astype(np.float64)
    elif ties == "pessimistic":
        value = np.clip(room - n, 0, r).astype(np.float64)
    else:
        value = r * np.clip(room, 0, n + r) / (n + r)
    return np.bincount(query, weights=value, minlength=len(levels.n_relevant))


def relevant_columns(levels: RelevantLevels, names: Sequence[str], ties: str) -> dict[str, np.ndarray]:
    """Per-query values in percent of the all-relevant measures among ``names`` (``MAP@R``, ``RP``,
    ``mAP@K``); other names are ignored."""
    big_r = levels.n_relevant.astype(np.int64)
    denominator = np.maximum(big_r, 1).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "MAP@R":
            out[name] = 100.0 * precision_sum(levels, big_r, ties) / denominator
        elif name == "RP":
            out[name] = 100.0 * relevant_in_top(levels, big_r, ties) / denominator
        elif name.startswith("mAP@"):
            k = int(name[4:])
            cut = np.minimum(big_r, k)
            out[name] = 100.0 * precision_sum(levels, np.full(len(big_r), k, dtype=np.int64), ties) \
                / np.maximum(cut, 1)
    return out
