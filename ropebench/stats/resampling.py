"""Resampling matrices over clusters (sign flips ε, bootstrap counts W) and the exact sums they multiply.

The matrices are functions of ``(seed, B, G)`` only, drawn in row blocks from their own PCG64
streams; the sums are computed on a power-of-two grid, so every machine gives the same bits.
Notation as in :mod:`ropebench.stats`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import numpy as np

__all__ = [
    "TOLERANCE",
    "Kind",
    "Stratum",
    "bootstrap_counts",
    "exact_grid",
    "grouped_sums",
    "resampled_sums",
    "sign_flips",
    "single_threaded_blas",
    "stratified_sums",
]

TOLERANCE = 1e-9  # percentage points: |Δ*| counts as "as extreme as |Δ|" within this distance
_BLOCK_ELEMENTS = 1 << 20  # entries of one block of a resampling matrix (8 MB as float64)
_MAX_BLOCK_ROWS = 1024

Kind = Literal["signs", "counts"]
Stratum = tuple[np.ndarray, Sequence[int]]


def _block_rows(n_clusters: int) -> int:
    return max(1, min(_MAX_BLOCK_ROWS, _BLOCK_ELEMENTS // max(1, n_clusters)))


def _generator(kind: Kind, seed: int, stratum: int = 0) -> np.random.Generator:
    # Stream 2s (signs) and 2s + 1 (counts) of PCG64(seed), each 2^127 steps from the next:
    # stratum 0 draws its signs from PCG64(seed) itself; strata can be drawn in any order.
    if kind not in ("signs", "counts"):
        raise ValueError(f"kind must be 'signs' or 'counts', not {kind!r}")
    bit_generator = np.random.PCG64(seed)
    jumps = 2 * stratum + (kind == "counts")
    return np.random.Generator(bit_generator.jumped(jumps) if jumps else bit_generator)


_SIGN_VALUES = np.array([-1.0, 1.0])


def _blocks(rng: np.random.Generator, kind: Kind, n_clusters: int, resamples: int) -> Iterator[np.ndarray]:
    """Yield the rows of a (B × G) resampling matrix as float64 blocks; the block sizes are part of its definition."""
    if resamples < 1 or n_clusters < 1:
        raise ValueError(f"need resamples >= 1 and n_clusters >= 1 (got {resamples}, {n_clusters})")
    step = _block_rows(n_clusters)
    for start in range(0, resamples, step):
        rows = min(step, resamples - start)
        size = rows * n_clusters
        if kind == "signs":
            # One random bit per entry: ε = ±1 (looked up straight into float64, one pass).
            bits = np.unpackbits(np.frombuffer(rng.bytes((size + 7) // 8), dtype=np.uint8), count=size)
            yield _SIGN_VALUES[bits].reshape(rows, n_clusters)
        else:
            # G draws with replacement per row, counted: a multinomial(G, 1/G) row. Drawn as
            # indices + bincount one row at a time (cache-sized; several times faster than
            # Generator.multinomial, which draws G binomials per row).
            block = np.empty((rows, n_clusters))
            for row in block:
                row[:] = np.bincount(rng.integers(0, n_clusters, size=n_clusters, dtype=np.int64),
                                     minlength=n_clusters)
            yield block


def sign_flips(n_clusters: int, *, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """The sign-flip matrix ε, int8 (B × G) of ±1, as used by :func:`resampled_sums`."""
    return np.concatenate(list(_blocks(_generator("signs", seed), "signs", n_clusters, resamples))).astype(np.int8)


def bootstrap_counts(n_clusters: int, *, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """The bootstrap count matrix W, int64 (B × G); every row sums to G."""
    return np.concatenate(list(_blocks(_generator("counts", seed), "counts", n_clusters, resamples))).astype(np.int64)


def exact_grid(values: np.ndarray) -> np.ndarray:
    """Round each column of ``values`` (G × k) onto a power-of-two grid on which sums are exact.

    With ``q`` such that ``G · max_c |x_c| < 2^(52 − q)``, every ``x_c`` becomes a multiple of
    ``2^-q``: any sum ``Σ_c M_bc x_c`` with ``Σ_c |M_bc| ≤ G`` (signs, or counts summing to G)
    and each of its partial sums is then an integer multiple of ``2^-q`` below ``2^52 · 2^-q``,
    exact in float64 in any order. So every BLAS, thread count and block size gives the same
    bits. A value moves by at most ``G · max|x| · 2^-53`` (7e-14 of a point for a task mean
    at ROPE size). Rounding twice, or a subset of the rows, changes nothing more.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values.copy()
    _, top = np.frexp(len(values) * np.abs(values).max(axis=0))  # G · max|x| < 2^top
    scale = np.ldexp(1.0, 52 - top)  # powers of two: multiplying by them is exact
    return np.rint(values * scale) / scale


def resampled_sums(values: np.ndarray, *, kind: Kind, resamples: int = 10_000, seed: int = 0) -> np.ndarray:
    """``M @ values`` for the resampling matrix ``M`` (ε or W), streamed in row blocks.

    Args:
        values: float (G × k), e.g. per-cluster sums, one column per cell.
        kind: ``"signs"`` (ε, :func:`sign_flips`) or ``"counts"`` (W, :func:`bootstrap_counts`).

    Returns:
        float64 (B × k): row ``b`` is ``Σ_c M_bc values_c``, computed exactly for ``values`` on
        :func:`exact_grid` (which they are rounded to first), so the result is the same on every
        machine.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be 2-D (clusters × columns), got shape {values.shape}")
    return stratified_sums([(values, range(values.shape[1]))], values.shape[1], kind=kind,
                           resamples=resamples, seed=seed)


def single_threaded_blas(entries: int) -> AbstractContextManager[Any]:
    """Run BLAS on one thread while resampling ``entries`` (B × G) matrix entries, if that many.

    The products here are thin (block rows × G × a few dozen columns): BLAS threads mostly wait
    for each other, the more so on a busy machine, and resampling runs its own threads. Setting
    the limit costs milliseconds, so small problems run as they are.
    """
    if entries < 4 * _BLOCK_ELEMENTS:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def stratified_sums(strata: Sequence[Stratum], n_columns: int, *, kind: Kind, resamples: int = 10_000,
                    seed: int = 0) -> np.ndarray:
    """:func:`resampled_sums` of several strata, each resampled within itself.

    Args:
        strata: ``(values, columns)`` pairs: a stratum's clusters (G_s × len(columns)) and the
            output columns they add to. Stratum ``s`` has its own matrix from stream ``2s``
            (signs) or ``2s + 1`` (counts) of ``PCG64(seed)`` (``jumped``), so its bootstrap
            counts resample its own clusters (a stratified bootstrap). With one query per
            cluster each task is a stratum, and a query meets only its own task's columns.
            Stratum 0 uses the streams of :func:`sign_flips` and :func:`bootstrap_counts`.
        n_columns: k, the width of the result.

    Returns:
        float64 (B × k): the strata's exact sums, added in stratum order.
    """
    indexes = [np.asarray(columns, dtype=np.intp) for _, columns in strata]

    def stratum_sums(number: int) -> np.ndarray:
        part = exact_grid(np.asarray(strata[number][0], dtype=np.float64))
        sums = np.empty((resamples, part.shape[1]))
        start = 0
        for block in _blocks(_generator(kind, seed, number), kind, len(part), resamples):
            sums[start:start + len(block)] = block @ part
            start += len(block)
        return sums

    # Strata draw from their own streams, so they can run on several cores (numpy releases
    # the GIL while drawing and counting); the partial sums are added in stratum order.
    workers = min(len(strata), os.cpu_count() or 1)
    with single_threaded_blas(resamples * sum(len(values) for values, _ in strata)):
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                partials = list(pool.map(stratum_sums, range(len(strata))))
        else:
            partials = [stratum_sums(number) for number in range(len(strata))]
    out = np.zeros((resamples, n_columns))
    for index, partial in zip(indexes, partials):
        out[:, index] += partial
    return out


def grouped_sums(values: np.ndarray, groups: np.ndarray, *, n_groups: int) -> np.ndarray:
    """Per-group column sums, exact and independent of row order.

    Args:
        values: finite float (n,) or (n × k).
        groups: int (n,), each in ``[0, n_groups)``.

    Returns:
        float64 (n_groups × k), or (n_groups,) for 1-D values. Each column is summed as 64-bit
        integers in units of ``2^-e``, with ``e`` chosen from the column's ``Σ|v|`` so no sum
        can overflow (about 2^-36 for percentages over 300,000 queries): shuffling the rows
        changes no bit of the result, which float summation cannot promise.
    """
    values = np.asarray(values, dtype=np.float64)
    matrix = values.reshape(len(values), -1)
    groups = np.asarray(groups, dtype=np.int64)
    out = np.zeros((n_groups, matrix.shape[1]))
    if len(matrix):
        if not np.all(np.isfinite(matrix)):
            raise ValueError("grouped_sums: values must be finite")
        _, top = np.frexp(np.abs(matrix).sum(axis=0))  # Σ|v| < 2^top
        scale = np.ldexp(1.0, 61 - top)  # powers of two: multiplying by them is exact
        order = np.argsort(groups, kind="stable")
        sorted_groups = groups[order]
        starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
        fixed = np.rint(matrix[order] * scale).astype(np.int64)
        out[sorted_groups[starts]] = np.add.reduceat(fixed, starts, axis=0).astype(np.float64) / scale
    return out if values.ndim == 2 else out[:, 0]


def _as_matrix(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(len(values), -1)


def _cluster_index(clusters: np.ndarray | None, n: int) -> tuple[np.ndarray, int]:
    if clusters is None:
        return np.arange(n), n
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    index = index.ravel()
    # Clusters take rows of the resampling matrices in the order of their labels' text, as
    # products do in ropebench.io.per_query.column_codes: 10 before 2 for integer and string ids alike.
    order = sorted(range(len(labels)), key=lambda i: (str(labels[i]), type(labels[i]).__name__))
    position = np.empty(len(labels), dtype=np.int64)
    position[np.asarray(order, dtype=np.int64)] = np.arange(len(labels))
    index = position[index] if len(index) else index
    return index, int(index.max(initial=-1)) + 1
