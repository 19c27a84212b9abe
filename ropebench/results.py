"""Result objects of an evaluation and their JSON form (DESIGN.md §4, schema ropebench.results/1)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ropebench.files import atomic_write_text

__all__ = ["RESULTS_SCHEMA", "TaskResult", "EvaluationResult", "metric_names"]

RESULTS_SCHEMA = "ropebench.results/1"


def metric_names(ks: tuple[int, ...]) -> tuple[str, ...]:
    """Canonical metric keys for a K list: ``R@K`` for each K, then ``MRR@{max K}``."""
    return tuple(f"R@{k}" for k in ks) + (f"MRR@{max(ks)}",)


@dataclass(frozen=True)
class TaskResult(Mapping[str, Any]):
    """Scores of one task. Behaves as the read-only mapping stored under ``tasks[TASK]`` in JSON.

    Attributes:
        task: task code, e.g. ``"P2V"``.
        n_queries: scored queries (those with at least one relevant gallery item).
        n_skipped: queries without a relevant gallery item (never scored).
        n_gallery: items of the gallery domain, before per-query exclusions.
        n_tied: scored queries whose R@K at some reported K differs between the optimistic
            and the pessimistic tie policy.
        metrics: ``{"R@1": ..., "MRR@50": ...}``, percentages in [0, 100], unrounded; None
            when ``n_queries`` is 0.
    """

    task: str
    n_queries: int
    n_skipped: int
    n_gallery: int
    n_tied: int
    metrics: Mapping[str, float]

    def to_json(self) -> dict[str, Any]:
        return {
            "n_queries": self.n_queries,
            "n_skipped": self.n_skipped,
            "n_gallery": self.n_gallery,
            "n_tied": self.n_tied,
            # None (JSON null) when no query could be scored: a mean over nothing is no number.
            **{name: None if value is None else float(value) for name, value in self.metrics.items()},
        }

    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_json())

    def __len__(self) -> int:
        return 4 + len(self.metrics)


@dataclass(frozen=True)
class EvaluationResult:
    """Everything one evaluation produced; ``to_json()`` is the results file of DESIGN.md §4.

    ``per_query`` (a pandas DataFrame, or None) holds one row per scored query and task; it is
    not part of the JSON and is written with ``--per-query``.
    """

    ropebench_version: str
    created: str
    protocol: Mapping[str, Any]
    submission: Mapping[str, Any]
    manifest: Mapping[str, Any] | None
    environment: Mapping[str, Any]
    timing: Mapping[str, float]
    tasks: Mapping[str, TaskResult]
    per_query: Any = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": RESULTS_SCHEMA,
            "ropebench_version": self.ropebench_version,
            "created": self.created,
            "protocol": dict(self.protocol),
            "submission": dict(self.submission),
            "manifest": None if self.manifest is None else dict(self.manifest),
            "environment": dict(self.environment),
            "timing": dict(self.timing),
            "tasks": {task: result.to_json() for task, result in self.tasks.items()},
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2) + "\n"

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Write the results JSON atomically (temp file + rename)."""
        atomic_write_text(path, self.dumps())

    def matrix(self, metric: str = "R@1") -> dict[str, dict[str, float | None]]:
        """``{query_domain: {gallery_domain: value or None}}`` for the 3×3 domain matrix."""
        from ropebench.domains import DOMAINS

        return {
            q: {g: (self.tasks[f"{q}2{g}"].metrics.get(metric) if f"{q}2{g}" in self.tasks else None)
                for g in DOMAINS}
            for q in DOMAINS
        }
