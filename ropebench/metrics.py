"""From first-hit counts to R@K and MRR under a tie policy (DESIGN.md §2). Pure numpy, no I/O.

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

import numpy as np

from ropebench.errors import UsageError

__all__ = ["TIE_POLICIES", "parse_ks", "hit_probabilities", "reciprocal_rank", "count_tied", "summarize"]

TIE_POLICIES = ("expected", "pessimistic", "optimistic")
DEFAULT_KS = (1, 5, 10, 20, 50)


def parse_ks(ks: str | Sequence[int] | None) -> tuple[int, ...]:
    """``"1,5,10"`` or ``[10, 1]`` -> sorted unique ``(1, 5, 10)``; every K must be a positive integer."""
    if ks is None:
        return DEFAULT_KS
    items = ks.split(",") if isinstance(ks, str) else list(ks)
    values, bad = set(), []
    for item in items:
        try:
            value = int(str(item).strip())
        except ValueError:
            bad.append(str(item).strip())
            continue
        if value < 1 or str(value) != str(item).strip().lstrip("+"):
            bad.append(str(item).strip())
        else:
            values.add(value)
    if bad or not values:
        raise UsageError(f"--ks: {', '.join(map(repr, bad)) or 'empty'} is not a list of positive integers "
                         f"(e.g. 1,5,10,20,50)")
    return tuple(sorted(values))


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
    k = np.asarray(ks, dtype=np.int64)[None, :]
    if ties == "optimistic":
        return (a[:, None] < k).astype(np.float64)
    if ties == "pessimistic":
        return ((a + t)[:, None] < k).astype(np.float64)
    out = (a[:, None] < k).astype(np.float64)  # exact where nothing ties with the first hit (t = 0)
    tied = np.flatnonzero(t > 0)
    if len(tied):
        survival = _survival(t[tied], p[tied], int(k.max()))
        depth = np.clip(k - a[tied, None], 0, None)  # tied positions that fit in the top K
        out[tied] = np.where(depth > 0, 1.0 - np.take_along_axis(survival, depth, axis=1), 0.0)
    return out


def reciprocal_rank(a: np.ndarray, t: np.ndarray, p: np.ndarray, max_k: int, ties: str) -> np.ndarray:
    """``E[1 / rank]`` of the first hit, counting 0 beyond ``max_k``; shape ``(n_queries,)``."""
    _check_policy(ties)
    a = np.asarray(a, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    p = np.asarray(p, dtype=np.int64)
    if ties in ("optimistic", "pessimistic"):
        rank = a + 1 if ties == "optimistic" else a + t + 1
        return np.where(rank <= max_k, 1.0 / rank, 0.0)
    out = np.where(a + 1 <= max_k, 1.0 / (a + 1), 0.0)  # exact where nothing ties (t = 0)
    tied = np.flatnonzero(t > 0)
    if len(tied):
        survival = _survival(t[tied], p[tied], max_k)
        r = np.arange(1, max_k + 1)[None, :]  # position among the tied items
        p_first_at = survival[:, :-1] - survival[:, 1:]  # P(R = r)
        rank = a[tied, None] + r
        out[tied] = np.where(rank <= max_k, p_first_at / rank, 0.0).sum(axis=1)
    return out


def count_tied(a: np.ndarray, t: np.ndarray, ks: Sequence[int]) -> int:
    """Queries whose R@K at some K differs between the optimistic and pessimistic policies."""
    a = np.asarray(a, dtype=np.int64)[:, None]
    t = np.asarray(t, dtype=np.int64)[:, None]
    k = np.asarray(ks, dtype=np.int64)[None, :]
    return int(((a < k) != (a + t < k)).any(axis=1).sum())


def summarize(a: np.ndarray, t: np.ndarray, p: np.ndarray, ks: Sequence[int], ties: str) -> dict[str, float | None]:
    """``{"R@K": ..., "MRR@{max K}": ...}`` in percent (100 × mean over queries); None with no query."""
    ks = tuple(ks)
    names = [f"R@{k}" for k in ks] + [f"MRR@{max(ks)}"]
    if len(a) == 0:
        return dict.fromkeys(names)
    hits = hit_probabilities(a, t, p, ks, ties)
    columns = [hits[:, i] for i in range(len(ks))] + [reciprocal_rank(a, t, p, max(ks), ties)]
    # math.fsum is exactly rounded, so the mean does not depend on the order of the queries.
    return {name: 100.0 * math.fsum(column.tolist()) / len(a) for name, column in zip(names, columns)}
