"""The options of an evaluation, grouped by what they decide (:func:`ropebench.evaluate` takes
them as objects or, as the README shows, as plain keywords)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from ropebench.protocol import DEFAULT_KS

__all__ = ["ProtocolOptions", "SearchOptions", "CatalogueOptions", "ApproximateOptions", "ReportOptions",
           "Options", "group_options"]


@dataclass(frozen=True)
class ProtocolOptions:
    """What is measured: the similarity, the tie policy, the cut-offs, the tasks, the compression
    applied to the vectors first (``fp16``, ``int8``, ``binary``, ``dims=K``), the measures
    (``R@K,MRR`` by default; ``MAP@R``, ``RP``, ``mAP@K`` on request) and the few-shot tasks
    (``fewshot=True``: shots, draws and the draws' seed)."""

    metric: str = "cosine"
    ties: str = "expected"
    ks: str | Sequence[int] = DEFAULT_KS
    tasks: str | Sequence[str] | None = None
    compress: str | None = None
    measures: str | Sequence[str] | None = None
    fewshot: bool = False
    shots: str | Sequence[int] = (1, 5)
    draws: int = 10
    fewshot_seed: int = 0


@dataclass(frozen=True)
class SearchOptions:
    """How the test set is searched: the engine (``one-pass``, ``faiss``, ``torch``, ``dask`` or an
    engine object), threads, a progress bar on stderr, and for ``torch`` the device (``cpu``,
    ``cuda``, ``cuda:N``, ``mps``; default: the input tensor's, else cuda when available, else cpu)
    and the screening precision (``fp32`` or ``bf16``; default: measured once per process)."""

    engine: Any = None
    threads: int | None = None
    progress: bool = False
    device: str | None = None
    screen: str | None = None


@dataclass(frozen=True)
class CatalogueOptions:
    """A distractor catalogue joining every task's gallery (docs/scale.md) and where its shards run.

    ``runner``: a runner object the caller manages (e.g. a Dask runner on its own cluster; not closed).
    """

    distractors: Sequence[str | os.PathLike[str]] | None = None
    distractor_sizes: str | Sequence[int | str] | None = None
    scheduler: str | None = None
    workers: int | None = None
    shard_rows: int | None = None
    runner: Any = None


@dataclass(frozen=True)
class ApproximateOptions:
    """Approximate search with a ``faiss.index_factory`` index and its measured agreement."""

    index: str | None = None
    nprobe: int | None = None
    ef_search: int | None = None
    agreement_queries: int = 2000
    seed: int = 0


@dataclass(frozen=True)
class ReportOptions:
    """What the result carries besides the numbers: bootstrap intervals, per-category numbers."""

    ci: bool = True
    by: str | None = None


@dataclass(frozen=True)
class Options:
    protocol: ProtocolOptions
    search: SearchOptions
    catalogue: CatalogueOptions
    approximate: ApproximateOptions
    report: ReportOptions


_GROUPS = (("protocol", ProtocolOptions), ("search", SearchOptions), ("catalogue", CatalogueOptions),
           ("approximate", ApproximateOptions), ("report", ReportOptions))


def group_options(given: Mapping[str, Any], flat: Mapping[str, Any]) -> Options:
    """Option objects from ``given`` (objects by group name, or None) and plain keywords ``flat``
    (each belongs to exactly one group; it overrides that group's field).

    Raises:
        TypeError: an unknown keyword, as for any Python function.
    """
    owner = {f.name: group for group, kind in _GROUPS for f in fields(kind)}
    unknown = sorted(set(flat) - set(owner))
    if unknown:
        raise TypeError(f"evaluate() got unexpected keyword arguments: {', '.join(unknown)}")
    built: dict[str, Any] = {}
    for group, kind in _GROUPS:
        value = given.get(group) or kind()
        mine = {name: v for name, v in flat.items() if owner[name] == group}
        built[group] = replace(value, **mine) if mine else value
    return Options(**built)
