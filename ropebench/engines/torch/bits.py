"""Selecting bf16 scores by their bit patterns, in numpy (no torch): on the CPU a comparison of the
int16 bits costs a tenth of torch's bf16 ``>=`` (docs/screening.md). Shared by the test set's tiles
(:mod:`.blocks`), the catalogue's shards (:mod:`.shards`) and the screen's timing (:mod:`.device`)."""

from __future__ import annotations

import numpy as np

__all__ = ["bf16_at_least"]


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
