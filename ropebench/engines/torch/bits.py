"""Selecting bf16 scores by their bit patterns, in numpy (no torch): on the CPU a comparison of the
int16 bits costs a tenth of torch's bf16 ``>=`` (docs/screening.md). Shared by the test set's tiles
(:mod:`.blocks`), the catalogue's shards (:mod:`.shards`) and the screen's timing (:mod:`.device`)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bf16_at_least", "bf16_values", "select_bits", "mask_buffer"]


def bf16_at_least(bits: np.ndarray, tau: float, out: np.ndarray) -> np.ndarray:
    """Mask of bf16 values (their int16 bit patterns) ``>= tau``, or a superset of it.

    ``tau`` (float32) is first rounded down to bf16. For a positive bound, bf16 order is int16
    order of the bits (negative values have the sign bit set, so negative int16); otherwise a
    value passes when it is non-negative or its magnitude is at most the bound's.
    """
    pattern = int(np.array([tau], dtype=np.float32).view(np.uint32)[0])
    high, low = pattern >> 16, pattern & 0xFFFF
    if high >> 15 == 0 and high != 0:  # tau > 0: truncating is rounding down
        return np.greater_equal(bits, np.int16(high), out=out)
    magnitude = (high & 0x7FFF) + (1 if (high >> 15 and low) else 0)  # a negative tau: round away from 0
    np.greater_equal(bits, np.int16(0), out=out)
    out |= bits <= np.int16(-32768 + magnitude)
    return out


def bf16_values(bits: np.ndarray) -> np.ndarray:
    """float32 values of bf16 bit patterns (exact: a bf16 is the top half of a float32)."""
    return (bits.astype(np.int32) << 16).view(np.float32)


def select_bits(bits: np.ndarray, tau: float, mask: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row, column and float32 value of every score of a bf16 tile (its ``(rows, columns)`` int16
    bit patterns) at or above ``tau`` (or a superset: :func:`bf16_at_least`); None when ``tau`` is
    not finite (nothing to collect). ``mask``: scratch of at least the tile's size."""
    if not np.isfinite(tau):
        return None
    flat = np.flatnonzero(bf16_at_least(bits, tau, mask[: bits.size].reshape(bits.shape)))
    r, c = np.divmod(flat, bits.shape[1])
    return r, c, bf16_values(bits.reshape(-1)[flat])


def mask_buffer(buffers: Any, size: int, least: int) -> np.ndarray:
    """This thread's selection scratch in ``buffers`` (a ``threading.local``): at least ``size``
    booleans, made with ``least`` (one full tile) or more and reused across tiles."""
    mask: np.ndarray | None = getattr(buffers, "mask", None)
    if mask is None or mask.size < size:
        mask = buffers.mask = np.empty(max(size, least), dtype=bool)
    return mask
