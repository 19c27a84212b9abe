"""Search engines behind one interface (:class:`~ropebench.engines.base.Engine`), chosen by name.

``one-pass`` (the default) computes each similarity block once for every task that reads it;
``faiss`` runs one exact FAISS search per task (the reference, and the one-pass engine's
fallback). Every engine returns the same first-hit counts; the result records which one ran and
its counters. Engines are imported only when chosen, so the default path never imports FAISS.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ropebench.engines.base import COUNTERS, Engine, FirstHits, SearchRun, TaskData
from ropebench.errors import UsageError

__all__ = ["engine_names", "DEFAULT_ENGINE", "get_engine", "register_engine", "Engine", "FirstHits", "SearchRun",
           "TaskData", "COUNTERS"]

DEFAULT_ENGINE = "one-pass"

# name -> "module:factory" (imported on first use) or a factory registered at run time.
_REGISTRY: dict[str, str | Callable[..., Engine]] = {
    "one-pass": "ropebench.engines.onepass:OnePassEngine",
    "faiss": "ropebench.engines.faiss:FaissEngine",
}
_ALIASES = {"per-task": "faiss", "onepass": "one-pass"}  # earlier spellings keep working


def engine_names() -> tuple[str, ...]:
    """The registered engine names."""
    return tuple(_REGISTRY)


def register_engine(name: str, factory: str | Callable[..., Engine]) -> None:
    """Register an engine factory (``"module:Class"`` or a callable) under ``name``."""
    _REGISTRY[name] = factory


def get_engine(name: str | Engine | None = None, **options: Any) -> Engine:
    """An engine instance by name (default ``one-pass``); an engine object is returned as is."""
    if name is None:
        name = DEFAULT_ENGINE
    if not isinstance(name, str):
        return name
    key = _ALIASES.get(name, name)
    factory = _REGISTRY.get(key)
    if factory is None:
        raise UsageError(f"unknown engine {name!r}: choose from {', '.join(_REGISTRY)}, or dask (with "
                         "--distractors: it runs a distractor catalogue's shards on a Dask cluster)")
    if isinstance(factory, str):
        module, attribute = factory.split(":")
        factory = getattr(importlib.import_module(module), attribute)
    return factory(**options)
