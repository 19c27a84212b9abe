"""ropebench: evaluation toolkit and leaderboard for cross-domain product retrieval on ROPE.

Public API::

    import ropebench
    result = ropebench.evaluate("submission.parquet", manifest="manifest.parquet")
    result.to_json()          # the results JSON of DESIGN.md §4
    result.tasks["P2V"]["R@1"]

Importing ropebench is cheap: faiss, pyarrow and pandas are imported on first use, and torch
never (only ``ropebench.baseline`` needs it).
"""

from __future__ import annotations

from typing import Any

from ropebench.errors import DataError, MissingExtraError, RopebenchError, UsageError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "evaluate",
    "validate",
    "EvaluationResult",
    "RopebenchError",
    "DataError",
    "UsageError",
    "MissingExtraError",
]

from ropebench.api import evaluate, validate  # noqa: E402  (numpy only; faiss/pyarrow load lazily)


def __getattr__(name: str) -> Any:
    # Lazy: `import ropebench` must not pay for pyarrow/pandas until a result is built.
    if name == "EvaluationResult":
        from ropebench.results import EvaluationResult

        return EvaluationResult
    raise AttributeError(f"module 'ropebench' has no attribute {name!r}")
