"""Distractor catalogues for tests: written as parquet with chosen row-group sizes, and the
single-gallery run they must equal (test items and distractors passed as one submission).

Distractors get products of their own, one each, so as queries of the combined run they are all
skipped and every scored query is a test item: the combined run's numbers *are* the numbers of
the test set against the enlarged gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.conftest import Data, per_query_counts, same_counts

ID_OFFSET = 1_000_000  # distractor ids
PRODUCT_OFFSET = 10_000_000  # distractor products (one per distractor)


@dataclass(frozen=True)
class Distractors:
    embeddings: np.ndarray  # (n, d) float32
    domains: np.ndarray  # (n,) "P" / "V" / "L"
    item_ids: np.ndarray  # (n,) int64

    def take(self, rows: Any) -> Distractors:
        return Distractors(self.embeddings[rows], self.domains[rows], self.item_ids[rows])


def integer_distractors(data: Data, seed: int, n: int, *, copies: int = 0, low: int = -2, high: int = 2,
                        scale: float = 1.0) -> Distractors:
    """Small-integer vectors (exact float32 scores under ip and l2), the first ``copies`` of them
    copies of random test items (each in its test item's domain, so it ties with it exactly)."""
    rng = np.random.default_rng(seed)
    dim = data.embeddings.shape[1]
    embeddings = (rng.integers(low, high + 1, (n, dim)) * scale).astype(np.float32)
    domains = rng.choice(np.array(["P", "V", "L"]), n)
    source = rng.integers(0, len(data.embeddings), copies)
    embeddings[:copies] = data.embeddings[source]
    domains[:copies] = data.domains[source]
    return Distractors(embeddings, domains, ID_OFFSET + np.arange(n, dtype=np.int64))


def write_catalogue(path: Path, distractors: Distractors, row_groups: Sequence[int] | int, *,
                    products: np.ndarray | None = None, domain_column: bool = True,
                    embedding_type: Any = None) -> Path:
    """Write ``distractors`` to one parquet file with the given row-group sizes (an int: all equal)."""
    n = len(distractors.item_ids)
    dim = distractors.embeddings.shape[1]
    sizes = [row_groups] * (-(-n // row_groups)) if isinstance(row_groups, int) else list(row_groups)
    columns: dict[str, Any] = {"item_id": pa.array(distractors.item_ids)}
    if domain_column:
        columns["domain"] = pa.array(distractors.domains.tolist(), type=pa.string())
    if products is not None:
        columns["product_id"] = pa.array(products)
    values = pa.array(distractors.embeddings.ravel())
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(values, dim) if embedding_type is None else \
        pa.array(list(distractors.embeddings), type=embedding_type)
    table = pa.table(columns)
    with pq.ParquetWriter(path, table.schema) as writer:
        start = 0
        for size in sizes:
            if start >= n:
                break
            writer.write_table(table.slice(start, size), row_group_size=max(1, size))
            start += size
    return path


def random_row_groups(rng: np.random.Generator, n: int, largest: int) -> list[int]:
    """Row-group sizes between 1 and ``largest`` that add up to ``n``."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, largest + 1)))
    sizes[-1] -= sum(sizes) - n
    return sizes


def combined(data: Data, distractors: Distractors) -> dict[str, Any]:
    """The arrays of the single-gallery run (test items first, then the distractors)."""
    groups = None if data.groups is None else list(data.groups) + [None] * len(distractors.item_ids)
    return {"embeddings": np.concatenate([data.embeddings, distractors.embeddings]),
            "domains": np.concatenate([data.domains, distractors.domains]),
            "product_ids": np.concatenate([data.products, PRODUCT_OFFSET + np.arange(len(distractors.item_ids))]),
            "item_ids": np.concatenate([data.item_ids, distractors.item_ids]), "group_ids": groups}


def assert_same_numbers(result: Any, single: Any) -> None:
    """Every task's counts, n_tied and measures equal the single-gallery run's, and every test
    query's first-hit counts too (a censored query matches any ``a >= max K``)."""
    max_k = max(result.ks)
    for task, mine in result.tasks.items():
        theirs = single.tasks[task]
        for key in ("n_queries", "n_gallery", "n_tied", *result.measure_names):
            assert mine[key] == theirs[key], (task, key, mine[key], theirs[key])
        a, b = per_query_counts(result, task), per_query_counts(single, task)
        assert set(a) == set(b), task
        wrong = {q: (a[q], b[q]) for q in a if not same_counts(a[q], b[q], max_k)}
        assert not wrong, (task, dict(list(wrong.items())[:5]))


class ShuffledRunner:
    """Runs shards one after another in a seeded random order (answers arrive out of catalogue order)."""

    name = "shuffled"

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.seen: list[int] = []

    @property
    def workers(self) -> int:
        return 1

    def map(self, function: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any) -> Iterator[Any]:
        items = list(items)
        for position in self.rng.permutation(len(items)):
            self.seen.append(int(getattr(items[position], "index", position)))
            yield function(items[position], shared)

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "workers": 1}

    def close(self) -> None:
        pass
