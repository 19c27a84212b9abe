"""The task registry: what a task's queries, gallery and exclusions are.

A *task type* turns a validated dataset's prepared vectors into one :class:`TaskData` per task:
the query vectors, the gallery vectors, their product codes and the items each query excludes.
Engines receive only these arrays (and the names of the item sets on each side, by which the
one-pass engine pairs the two directions of a block); no engine parses a task name.

Built in: ``retrieval``, the nine ``X2Y`` tasks of the protocol (queries from domain X, gallery
all items of domain Y; intra-domain tasks exclude the query itself and its group). Another task
type (a gallery of class prototypes, say) registers a builder with :func:`register_task_type`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ropebench.dataset import Dataset
from ropebench.engines.base import TaskData
from ropebench.protocol import ALL_TASKS, split_task

__all__ = ["TaskType", "Vectors", "register_task_type", "task_type", "task_types", "build_task_data",
           "prepare_domains"]


@dataclass(frozen=True)
class Vectors:
    """One item set's prepared vectors: query side, gallery side (the same array unless l2) and
    the float32 vectors of the score's definition where they differ (l2), else None."""

    queries: np.ndarray
    gallery: np.ndarray
    exact: np.ndarray | None


Builder = Callable[[Dataset, Mapping[str, np.ndarray], Mapping[str, Vectors], str, str, "np.ndarray | None"], TaskData]


@dataclass(frozen=True)
class TaskType:
    """A kind of task: its name, the task names it answers (listed, or matching ``pattern`` when
    they depend on settings, as few-shot draws do), and its builder."""

    name: str
    tasks: tuple[str, ...]
    build: Builder
    pattern: re.Pattern[str] | None = None


_TYPES: dict[str, TaskType] = {}


def register_task_type(task_type: TaskType) -> None:
    """Register a task type (its task names must not collide with another type's)."""
    taken = {task for other in _TYPES.values() if other.name != task_type.name for task in other.tasks}
    clash = sorted(set(task_type.tasks) & taken)
    if clash:
        raise ValueError(f"task names {clash} are already registered")
    _TYPES[task_type.name] = task_type


def task_types() -> tuple[str, ...]:
    return tuple(_TYPES)


def task_type(task: str) -> TaskType:
    """The type answering ``task``."""
    for kind in _TYPES.values():
        if task in kind.tasks or (kind.pattern is not None and kind.pattern.match(task)):
            return kind
    raise KeyError(task)


def prepare_domains(embeddings: np.ndarray, members: Mapping[str, np.ndarray], domains: Sequence[str],
                    metric: str, center: np.ndarray | None) -> dict[str, Vectors]:
    """One prepared, contiguous copy per domain, shared by every task (and by both sides of a
    block unless the metric is l2); no full-size prepared copy is ever made. ``center``: l2's
    translation (:func:`ropebench.engines.exact.l2_center` of all embeddings), else None."""
    from ropebench.engines.exact import prepare_vectors, score_vectors

    out = {}
    for code in domains:
        queries, gallery = prepare_vectors(embeddings[members[code]], metric, center=center)
        out[code] = Vectors(queries, gallery, score_vectors(embeddings[members[code]], metric, queries))
    return out


def _retrieval(dataset: Dataset, members: Mapping[str, np.ndarray], vectors: Mapping[str, Vectors], task: str,
               metric: str, center: np.ndarray | None) -> TaskData:
    query_domain, gallery_domain = split_task(task)
    q, g = members[query_domain], members[gallery_domain]
    groups = dataset.group_codes
    intra = query_domain == gallery_domain
    return TaskData(
        queries=vectors[query_domain].queries,
        gallery=vectors[gallery_domain].gallery,
        query_products=dataset.product_codes[q],
        gallery_products=dataset.product_codes[g],
        query_rows=np.arange(len(q), dtype=np.int64) if intra else None,
        query_groups=groups[q] if intra and groups is not None else None,
        gallery_groups=groups[g] if intra and groups is not None else None,
        metric=metric,
        score_queries=vectors[query_domain].exact,
        score_gallery=vectors[gallery_domain].exact,
        center=center,
        query_set=query_domain,
        gallery_set=gallery_domain,
    )


register_task_type(TaskType("retrieval", ALL_TASKS, _retrieval))


def build_task_data(dataset: Dataset, members: Mapping[str, np.ndarray], vectors: Mapping[str, Vectors],
                    tasks: Sequence[str], metric: str, center: np.ndarray | None, threads: int = 1
                    ) -> dict[str, TaskData]:
    """Per task, the arrays an engine receives, built by the task's registered type (``threads``:
    tasks built side by side, as few-shot's 120 prototype galleries are; the same arrays)."""
    def build(task: str) -> TaskData:
        return task_type(task).build(dataset, members, vectors, task, metric, center)

    if threads > 1 and len(tasks) > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=threads) as pool:
            return dict(zip(tasks, pool.map(build, tasks), strict=True))
    return {task: build(task) for task in tasks}
