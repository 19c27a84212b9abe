"""ropebench: evaluation toolkit and leaderboard for cross-domain product retrieval on ROPE.

Public API::

    import ropebench
    result = ropebench.evaluate("submission.parquet", manifest="manifest.parquet")
    result.tasks["P2V"]["R@1"]            # one number
    result.summary()                      # {"P2V/R@1": …, "cross/R@1": …} for loggers
    result.per_query                      # one row per scored query and task (pyarrow Table)
    result.write("results.json", per_query="per_query.parquet")
    ropebench.load_results("results.json")   # the same result, read back

Importing ropebench is cheap: numpy only. pyarrow loads when a file is read, FAISS when a FAISS
search runs, and torch never (only ``ropebench.baseline`` uses it).
"""

from __future__ import annotations

from typing import Any

from ropebench._version import __version__
from ropebench.errors import DataError, MissingExtraError, RopebenchError, UsageError
from ropebench.evaluation import evaluate, validate

__all__ = [
    "__version__",
    "evaluate",
    "validate",
    "load_results",
    "write_submission",
    "compress_vectors",
    "compare",
    "EvaluationResult",
    "TaskResult",
    "Dataset",
    "RopebenchError",
    "DataError",
    "UsageError",
    "MissingExtraError",
]

_LAZY = {
    "load_results": ("ropebench.results", "load_results"),
    "EvaluationResult": ("ropebench.results", "EvaluationResult"),
    "TaskResult": ("ropebench.results", "TaskResult"),
    "Dataset": ("ropebench.dataset", "Dataset"),
    "write_submission": ("ropebench.io.submission", "write_submission"),
    "compare": ("ropebench.compare", "compare"),
    "compress_vectors": ("ropebench.compress", "compress_vectors"),
}


def __getattr__(name: str) -> Any:
    # Lazy, so that `import ropebench` stays cheap (numpy only).
    if name in _LAZY:
        import importlib

        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'ropebench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
