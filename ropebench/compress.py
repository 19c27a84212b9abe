"""Compressed embeddings (``evaluate --compress``): what a catalogue costs to store, and what it scores.

Four compressions, each a function of one float32 vector (the vectors ropebench scores), returned
as float32 so the metric then applies exactly as to any submission:

- ``fp16``: IEEE half precision, round to nearest even, back to float32. ``2·d`` bytes.
- ``int8``: per vector, in float64, ``q = round_half_even(x · 127 / max|x|)`` (an integer in
  [−127, 127]), scored as ``float32(q · max|x| / 127)``. ``d + 4`` bytes (the codes and the
  vector's scale ``max|x|``, a float32; cosine does not need the scale, but ip does).
- ``binary``: ``x > 0`` → +1, else −1, as float32, so the inner product is ``d − 2·Hamming``.
  ``ceil(d / 8)`` bytes.
- ``dims=K``: the first ``K`` dimensions (Matryoshka-style truncation). ``4·K`` bytes.

So ``evaluate(SUB, compress=C)`` gives exactly the numbers of evaluating ``compress_vectors(SUB, C)``
written as an ordinary submission: the compressed matrix goes through the same validation
(a vector that overflows float16, or is all zeros after truncation under cosine, is reported the
same way) and the same search. Results record ``protocol.compression`` (the canonical spelling)
and ``protocol.bytes_per_item``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ropebench.errors import UsageError

__all__ = ["COMPRESSIONS", "Compression", "parse_compression", "compress_vectors",
           "compress_dataset", "compression_protocol", "bytes_per_item", "uncompressed_bytes_per_item",
           "compression_label"]

COMPRESSIONS: tuple[str, ...] = ("fp16", "int8", "binary", "dims=K")
_DIMS = re.compile(r"^dims=([0-9]+)$")
_ITEMSIZE = {"float16": 2, "float32": 4, "float64": 8}


@dataclass(frozen=True)
class Compression:
    """One compression: ``kind`` is ``fp16``, ``int8``, ``binary`` or ``dims``; ``dims`` is K for ``dims``."""

    kind: str
    dims: int | None = None

    @property
    def name(self) -> str:
        """The canonical spelling: the CLI argument and the value of ``protocol.compression``."""
        return f"dims={self.dims}" if self.kind == "dims" else self.kind

    def bytes_per_item(self, dim: int) -> int:
        """Bytes one item's compressed vector takes, for an input of dimension ``dim``."""
        if self.kind == "fp16":
            return 2 * dim
        if self.kind == "int8":
            return dim + 4
        if self.kind == "binary":
            return math.ceil(dim / 8)
        return 4 * int(self.dims or 0)

    def apply(self, matrix: np.ndarray) -> np.ndarray:
        """The compressed vectors of a ``(n, d)`` float32 matrix: a new ``(n, d')`` float32 C-contiguous array.

        Never modifies ``matrix``. ``d' = K`` for ``dims=K``, else ``d``.
        """
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise UsageError(f"--compress {self.name}: expected a 2-d (n, d) matrix, got shape {matrix.shape}")
        if self.kind == "dims" and (self.dims or 0) > matrix.shape[1]:
            raise UsageError(f"--compress {self.name}: the embeddings have only {matrix.shape[1]} dimensions. "
                             f"Fix: choose K ≤ {matrix.shape[1]}")
        x = matrix.astype(np.float32, copy=False)
        if self.kind == "fp16":
            with np.errstate(over="ignore"):  # overflow to ±inf is reported by validation, as for a submission
                return np.ascontiguousarray(x.astype(np.float16).astype(np.float32))
        if self.kind == "binary":
            return np.where(x > 0, np.float32(1.0), np.float32(-1.0))
        if self.kind == "dims":
            return np.ascontiguousarray(x[:, : self.dims])
        return _int8(x)


def _int8(x: np.ndarray) -> np.ndarray:
    """Per-vector symmetric int8 quantisation, decided in float64 (see the module docstring).

    Rows go in cache-sized blocks, each operation in place, so the float64 work stays in cache
    and the matrix is read and written once.
    """
    out = np.empty(x.shape, dtype=np.float32)
    step = max(1, (1 << 15) // max(1, x.shape[1]))
    block = np.empty((step, x.shape[1]))
    scale = np.empty((step, 1))
    for start in range(0, len(x), step):
        rows = min(step, len(x) - start)
        values, factor = block[:rows], scale[:rows]
        values[...] = x[start:start + rows]
        np.abs(values, out=values)
        np.max(values, axis=1, keepdims=True, out=factor)
        factor[factor == 0] = 1.0  # an all-zero row stays zero (q = 0)
        values[...] = x[start:start + rows]
        values *= 127.0
        values /= factor
        np.rint(values, out=values)  # round half to even
        values *= factor
        values /= 127.0
        out[start:start + rows] = values  # float64 -> float32, rounded once
    return out


def parse_compression(text: str | Compression | None) -> Compression | None:
    """``"fp16"``, ``"int8"``, ``"binary"`` or ``"dims=K"`` (case and spaces ignored) → a :class:`Compression`.

    Raises:
        UsageError: anything else, naming the choices.
    """
    if text is None or isinstance(text, Compression):
        return text
    spelled = str(text).strip().lower().replace(" ", "")
    if spelled in ("fp16", "int8", "binary"):
        return Compression(spelled)
    match = _DIMS.match(spelled)
    if match and int(match.group(1)) >= 1:
        return Compression("dims", int(match.group(1)))
    raise UsageError(f"--compress {text!r}: choose fp16, int8, binary or dims=K with K ≥ 1 (e.g. dims=64)")


def compress_vectors(matrix: Any, compression: str | Compression) -> np.ndarray:
    """``matrix`` (``(n, d)``, any float dtype, numpy or torch) compressed as ``evaluate --compress`` does.

    The input is first taken to float32 (the precision every submission is scored in), then
    compressed. Write the result with :func:`ropebench.write_submission` to evaluate it as an
    ordinary submission.
    """
    from ropebench.io.validation import as_numpy

    spec = parse_compression(compression)
    if spec is None:
        raise UsageError("compress_vectors needs a compression: fp16, int8, binary or dims=K")
    with np.errstate(over="ignore", under="ignore"):
        return spec.apply(np.asarray(as_numpy(matrix), dtype=np.float32))


def compress_dataset(dataset: Any, compression: Compression, *, metric: str) -> Any:
    """A copy of a validated dataset whose embeddings are compressed and validated again.

    Raises:
        DataError: the compressed vectors fail a check a submission of them would fail
            (±inf after fp16, all-zero rows under cosine after dims=K), naming the rows.
    """
    from ropebench.io.validation import check_matrix

    compressed = compression.apply(dataset.embeddings)
    check_matrix(compressed, dataset.item_ids, f"submission after --compress {compression.name}", metric)
    return replace(dataset, embeddings=compressed, dim=int(compressed.shape[1]))


def compression_protocol(compression: Compression, dim: int) -> dict[str, Any]:
    """What a result's protocol records of a compression: ``compression`` and ``bytes_per_item``."""
    return {"compression": compression.name, "bytes_per_item": compression.bytes_per_item(dim)}


def uncompressed_bytes_per_item(submission: Mapping[str, Any]) -> int | None:
    """``dim × bytes of its dtype`` from a results file's ``submission`` record, or None when unknown."""
    dim, itemsize = submission.get("dim"), _ITEMSIZE.get(str(submission.get("dtype")))
    if isinstance(dim, int) and not isinstance(dim, bool) and dim > 0 and itemsize:
        return dim * itemsize
    return None


def bytes_per_item(document: Mapping[str, Any]) -> int | None:
    """Bytes per item a results file (or entry) stands for: ``protocol.bytes_per_item`` when it was
    compressed, else the submission's ``dim × itemsize``; None when neither is known."""
    protocol = document.get("protocol") or {}
    recorded = protocol.get("bytes_per_item") if isinstance(protocol, Mapping) else None
    if isinstance(recorded, int) and not isinstance(recorded, bool):
        return recorded
    submission = document.get("submission")
    return uncompressed_bytes_per_item(submission) if isinstance(submission, Mapping) else None


def compression_label(document: Mapping[str, Any]) -> str:
    """``"int8"`` etc. for a compressed result, ``"none"`` otherwise (for plots and listings)."""
    protocol = document.get("protocol") or {}
    value = protocol.get("compression") if isinstance(protocol, Mapping) else None
    return str(value) if value else "none"


def ordered(names: Sequence[str]) -> list[str]:
    """Compression names from the largest representation to the smallest (for legends)."""
    rank = {"none": 0, "fp16": 1, "int8": 2, "binary": 4}
    return sorted(names, key=lambda name: (rank.get(name, 3), name))
