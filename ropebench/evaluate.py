"""Public entry points: evaluate() and validate(). (Being written — signature is the contract.)"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from ropebench.results import EvaluationResult


def evaluate(
    submission: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    embeddings: Any = None,
    domains: Sequence[Any] | None = None,
    product_ids: Sequence[Any] | None = None,
    item_ids: Sequence[Any] | None = None,
    group_ids: Sequence[Any] | None = None,
    metric: str = "cosine",
    ties: str = "expected",
    ks: Sequence[int] = (1, 5, 10, 20, 50),
    tasks: str | Sequence[str] | None = None,
    threads: int | None = None,
    per_query: bool = False,
    progress: bool = False,
) -> EvaluationResult:
    raise NotImplementedError
