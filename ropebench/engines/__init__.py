"""Search engines behind one contract (:class:`~ropebench.engines.base.Engine`:
``search(SearchRequest) -> SearchRun``), chosen by name.

The registry holds three kinds of parts, all imported only when chosen (the default path never
imports FAISS, Dask or torch):

- **engines** search a test set: ``one-pass`` (the default) computes each similarity block once
  for every task that reads it; ``faiss`` runs one exact FAISS search per task; ``torch`` runs the
  one-pass algorithm on a torch device, screening in float32 or bf16 (extra ``ropebench[torch]``).
- **runners** run a distractor catalogue's shards: ``in-process`` (threads, the default) or
  ``dask`` (a Dask cluster).
- **compositions** wrap an engine: ``catalogue`` extends the test set by a distractor catalogue
  on a runner; ``approximate`` searches a FAISS index and measures its agreement with exact search.

``--engine dask`` is a name for the default engine with the ``dask`` runner (:func:`resolve`).
Every engine decides every comparison through the exactness core (:mod:`ropebench.engines.core`),
so engines that agree on the counts agree on every number.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ropebench.engines.base import COUNTERS, Engine, FirstHits, SearchRequest, SearchRun, TaskData
from ropebench.errors import MissingExtraError, UsageError

__all__ = ["engine_names", "DEFAULT_ENGINE", "get_engine", "register_engine", "resolve", "Choice", "get_runner",
           "runner_names", "composition_names", "get_composition", "Engine", "FirstHits", "SearchRequest",
           "SearchRun", "TaskData", "COUNTERS"]

DEFAULT_ENGINE = "one-pass"
DEFAULT_RUNNER = "in-process"

# name -> "module:factory" (imported on first use) or a factory registered at run time.
_REGISTRY: dict[str, str | Callable[..., Engine]] = {
    "one-pass": "ropebench.engines.onepass:OnePassEngine",
    "faiss": "ropebench.engines.faiss:FaissEngine",
    "torch": "ropebench.engines.torch:TorchEngine",
}
_RUNNERS: dict[str, str] = {
    "in-process": "ropebench.engines.runners:ThreadRunner",
    "dask": "ropebench.engines.dask:DaskRunner",
}
_COMPOSITIONS: dict[str, str] = {
    "catalogue": "ropebench.engines.compose:CatalogueEngine",
    "approximate": "ropebench.engines.approximate:ApproximateEngine",
}
_ALIASES = {"per-task": "faiss", "onepass": "one-pass"}  # earlier spellings keep working
_RUNNER_NAMES = {"dask": (DEFAULT_ENGINE, "dask")}  # engine names that choose a runner
_EXTRAS = {"torch": "torch"}  # a library an engine imports -> the extra that installs it


@dataclass(frozen=True)
class Choice:
    """An ``--engine`` value resolved: the test set's engine and the runner of catalogue shards."""

    engine: str
    runner: str


def engine_names() -> tuple[str, ...]:
    """The registered engine names."""
    return tuple(_REGISTRY)


def runner_names() -> tuple[str, ...]:
    return tuple(_RUNNERS)


def composition_names() -> tuple[str, ...]:
    return tuple(_COMPOSITIONS)


def register_engine(name: str, factory: str | Callable[..., Engine]) -> None:
    """Register an engine factory (``"module:Class"`` or a callable) under ``name``."""
    _REGISTRY[name] = factory


def _load(factory: str) -> Any:
    module, attribute = factory.split(":")
    return getattr(importlib.import_module(module), attribute)


def resolve(name: str | None) -> Choice:
    """An ``--engine`` name as (engine, runner): ``dask`` is the default engine on the Dask runner."""
    if name is None:
        return Choice(DEFAULT_ENGINE, DEFAULT_RUNNER)
    if name in _RUNNER_NAMES:
        engine, runner = _RUNNER_NAMES[name]
        return Choice(engine, runner)
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise UsageError(f"unknown engine {name!r}: choose from {', '.join([*_REGISTRY, *_RUNNER_NAMES])} "
                         "(dask: the default engine, with a distractor catalogue's shards on a Dask cluster)")
    return Choice(key, DEFAULT_RUNNER)


def get_engine(name: str | Engine | None = None, **options: Any) -> Engine:
    """An engine instance by name (default ``one-pass``); an engine object is returned as is."""
    if name is not None and not isinstance(name, str):
        return name
    key = resolve(name).engine
    factory = _REGISTRY[key]
    if isinstance(factory, str):
        try:
            factory = _load(factory)
        except ModuleNotFoundError as error:
            if error.name not in _EXTRAS:
                raise
            raise MissingExtraError(f"--engine {key} needs {error.name}, which is not installed. Fix: pip install "
                                    f"'ropebench[{_EXTRAS[error.name]}]'") from None
    return factory(**options)


def get_runner(name: str, **options: Any) -> Any:
    """A runner instance by name (``in-process`` or ``dask``)."""
    if name not in _RUNNERS:
        raise UsageError(f"unknown runner {name!r}: choose from {', '.join(_RUNNERS)}")
    return _load(_RUNNERS[name])(**options)


def get_composition(name: str, *args: Any, **options: Any) -> Engine:
    """A composition (``catalogue`` or ``approximate``) wrapping the engines it is given."""
    if name not in _COMPOSITIONS:
        raise UsageError(f"unknown composition {name!r}: choose from {', '.join(_COMPOSITIONS)}")
    return _load(_COMPOSITIONS[name])(*args, **options)
