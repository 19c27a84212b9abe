"""The validated in-memory test set every engine works from (built by :mod:`ropebench.io.validation`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ropebench.protocol import DOMAINS

__all__ = ["Dataset"]


@dataclass(frozen=True)
class Dataset:
    """A validated test set: one row per item, in submission order. Never modified after validation.

    Attributes:
        item_ids: ``(n,)`` int64, uint64 or object (str) array, unique; ids keep their exact value.
        domains: ``(n,)`` int8, index into ``DOMAINS`` (0 = P, 1 = V, 2 = L).
        product_ids: ``(n,)`` original product ids (for per-query output).
        product_codes: ``(n,)`` int64, equal codes = same product.
        group_codes: ``(n,)`` int64 (-1 = no group), or None without a ``group_id`` column.
        embeddings: ``(n, d)`` float32, C-contiguous; None in a copy made by :meth:`without_embeddings`.
        dtype: value type of the submitted embeddings (``float16``/``float32``/``float64``).
        categories: ``(n,)`` object array of the manifest's ``category`` column, or None.
        dim: embedding dimension ``d`` (kept when the matrix is dropped).
        resident: a torch tensor's validated float32 matrix kept on its device
            (:class:`ropebench.engines.torch.resident.ResidentMatrix`), then ``embeddings`` is None;
            else None.
    """

    item_ids: np.ndarray
    domains: np.ndarray
    product_ids: np.ndarray
    product_codes: np.ndarray
    group_codes: np.ndarray | None
    embeddings: np.ndarray | None
    dtype: str
    categories: np.ndarray | None = None
    dim: int = 0
    resident: Any = None

    def __post_init__(self) -> None:
        if self.embeddings is not None and not self.dim:
            object.__setattr__(self, "dim", int(self.embeddings.shape[1]))  # derived once, at construction

    @property
    def n_items(self) -> int:
        return int(len(self.item_ids))

    @property
    def n_products(self) -> int:
        return int(self.product_codes.max(initial=-1)) + 1

    def without_embeddings(self) -> Dataset:
        """A copy without the embedding matrix: a consumer that has made its own prepared copies
        drops its reference to the original matrix so the memory can be freed."""
        return replace(self, embeddings=None, resident=None)

    def members(self, domain: str) -> np.ndarray:
        """Rows of one domain code, in submission order."""
        return np.flatnonzero(self.domains == DOMAINS.index(domain))

    def domain_counts(self) -> dict[str, int]:
        counts = np.bincount(self.domains, minlength=len(DOMAINS))
        return {code: int(counts[index]) for index, code in enumerate(DOMAINS)}
