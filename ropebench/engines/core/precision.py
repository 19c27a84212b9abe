"""Screening precisions: how a screened score may differ from the exact one.

A screening kernel turns the float32 vectors of the definition into scores in some precision. Its
error is described by three unit roundoffs (Higham, *Accuracy and Stability of Numerical
Algorithms*, 2nd ed., §2–3): the relative rounding of each input element to the kernel's format,
the unit roundoff of its accumulation, and the relative rounding of the score it returns. The
band (:mod:`ropebench.engines.core.bound`) is a function of these three numbers only, so a new
kernel (bf16 on a GPU, say) brings a :class:`Precision` and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Precision", "FP32", "BF16", "U64", "U32", "gamma"]

U32 = 2.0 ** -24  # unit roundoff of float32
U64 = 2.0 ** -53  # unit roundoff of float64


@dataclass(frozen=True)
class Precision:
    """A screening kernel's rounding.

    Attributes:
        name: e.g. ``fp32``.
        u_in: relative rounding of each input element when the kernel converts it (0: the float32
            vectors are used as they are).
        u_acc: unit roundoff of the accumulation (in any summation order, with or without FMA).
        u_out: relative rounding of the returned score (0: returned in the accumulation format).
        integer_limit: integers up to this magnitude are exact in the input, the accumulation and
            the output; a block whose every partial sum stays below it is scored exactly.
    """

    name: str
    u_in: float
    u_acc: float
    u_out: float
    integer_limit: float


FP32 = Precision("fp32", 0.0, U32, 0.0, float(1 << 24))
# Inputs rounded to bfloat16 (8-bit significand), products accumulated in float32, output in bfloat16.
BF16 = Precision("bf16", 2.0 ** -8, U32, 2.0 ** -8, float(1 << 8))


def gamma(n: int, u: float) -> float:
    """Higham's ``γ_n = n u / (1 - n u)``: the relative error bound of a sum or dot product of n terms."""
    if n * u >= 1:
        raise ValueError(f"no error bound: {n} terms at unit roundoff {u}")
    return n * u / (1.0 - n * u)
