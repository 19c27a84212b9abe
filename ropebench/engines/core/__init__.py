"""The exactness core: every comparison an engine makes is decided as float64 decides it.

One error model (:mod:`.bound`, parameterised by the screening :mod:`.precision`), one float64
evaluation with a fixed summation order (:mod:`.scores`), one decision rule and one censoring rule
(:mod:`.decide`), the thresholds (:mod:`.relevant`) and whole-row counting (:mod:`.rows`). Engines
screen however they like (numpy float32 tiles, FAISS, a catalogue shard on a Dask worker) and hand
their candidates to a :class:`~.decide.Judge`; docs/exactness.md derives the bound.
"""

from __future__ import annotations

import numpy as np

from ropebench.engines.core.bound import Bound, bound_for, integer_exact, residual_bound
from ropebench.engines.core.decide import Decision, Judge, censor, settle
from ropebench.engines.core.levels import (
    ALL_RELEVANT,
    FIRST_HIT,
    LevelCounter,
    RelevantLevels,
    fill_levels,
    level_row_counts,
)
from ropebench.engines.core.precision import BF16, FP32, Precision
from ropebench.engines.core.relevant import Best, best_relevant
from ropebench.engines.core.rows import irrelevant_eligible, row_counts
from ropebench.engines.core.scores import exact_scores, tree_sum
from ropebench.engines.core.task import FirstHits, TaskData

__all__ = ["TaskData", "FirstHits", "judge_task", "task_bound", "Judge", "Decision", "Best", "Bound", "Precision",
           "FP32", "BF16", "censor", "settle", "row_counts", "irrelevant_eligible", "exact_scores", "tree_sum",
           "bound_for", "residual_bound", "best_relevant", "check_range", "RelevantLevels", "LevelCounter",
           "level_row_counts", "fill_levels", "FIRST_HIT", "ALL_RELEVANT"]


def task_bound(data: TaskData, precision: Precision = FP32, other_gallery: float | None = 0.0) -> Bound:
    """The band of a task screened in ``precision`` (``other_gallery``: more gallery vectors'
    largest ``|x|`` if all integers, None if not — e.g. a distractor catalogue)."""
    dim = data.exact_queries.shape[1]
    return bound_for(data.metric, dim, precision,
                     exact=integer_exact(data.queries, data.gallery, precision, other_gallery))


def check_range(data: TaskData, other_norm: float = 0.0) -> None:
    """Refuse vectors whose float32 screened scores could overflow (|q|·|g| near float32's maximum)."""
    from ropebench.errors import DataError

    q_norm, g_norm = data.screen_norms
    top_q, top_g = float(q_norm.max(initial=0.0)), max(float(g_norm.max(initial=0.0)), other_norm)
    if top_q * top_g > 1e37 or (data.metric == "l2" and top_g * top_g > 1e37):
        raise DataError(f"embedding norms up to {max(top_q, top_g):.3g}: their scores overflow float32 "
                        "(3.4e38), so no float32 screen can rank them. Fix: rescale the embeddings")


def judge_task(data: TaskData, precision: Precision = FP32, *, other_gallery: float | None = 0.0,
               other_norm: float = 0.0, residuals: tuple[np.ndarray, np.ndarray] | None = None) -> Judge:
    """The thresholds of a task's queries, decided in float64, and the judge for its candidates.

    ``precision``: the engine's screening precision (the thresholds' own relevant pairs are always
    screened by numpy in float32). The judge's ``p`` and ``relevant_settled`` come with it.
    ``residuals``: ``(nq,)`` and ``(ng,)`` norms of ``x̂ − x``, the rounding the engine applied to
    each query and gallery vector before screening: a ``cosine``/``ip`` task then gets the narrower
    :func:`~.bound.residual_bound` (other tasks, and exact integer screens, keep their band).
    """
    check_range(data, other_norm)
    best = best_relevant(data, task_bound(data, FP32))
    bound = task_bound(data, precision, other_gallery)
    if residuals is None or bound.exact or data.metric not in ("cosine", "ip"):
        residuals = None
    else:
        bound = residual_bound(data.exact_queries.shape[1], precision)
    return Judge(data.metric, bound, data.exact_queries, data.screen_norms[0], data.offset, best.best, best.p,
                 best.settled, residuals)
