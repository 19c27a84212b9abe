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

import numpy as np

__all__ = ["Precision", "FP32", "BF16", "BF16_TENSOR_CORES", "U64", "U32", "gamma", "by_name",
           "gradual_underflow"]

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
        underflow: the absolute error of one product or partial sum that leaves the normal range
            (2⁻¹⁵⁰ with gradual underflow, counted generously as 2⁻¹⁴⁶; 2⁻¹²⁶ for kernels that
            flush subnormal results to zero, as AVX512-BF16 and AMX do).
        min_input: the smallest non-zero input magnitude the bound covers (kernels that treat
            subnormal inputs as zero would otherwise drop a term); 0: every float32 is covered.
        max_input: the largest input magnitude that stays finite in the kernel's input format.
    """

    name: str
    u_in: float
    u_acc: float
    u_out: float
    integer_limit: float
    underflow: float = 2.0 ** -146
    min_input: float = 0.0
    max_input: float = float(np.finfo(np.float32).max)

    def covers(self, vectors: np.ndarray) -> bool:
        """Whether every element of ``vectors`` is zero or within ``[min_input, max_input]`` in
        magnitude (the bound's precondition; docs/screening.md)."""
        if not vectors.size:
            return True
        magnitude = np.abs(vectors)
        if float(magnitude.max()) > self.max_input:
            return False
        return not self.min_input or not bool(((magnitude > 0) & (magnitude < self.min_input)).any())


FP32 = Precision("fp32", 0.0, U32, 0.0, float(1 << 24))
# torch's CPU bf16 matmul, as measured (docs/screening.md, tests/test_screen_bound.py): inputs rounded
# to nearest bfloat16 (8-bit significand), products accumulated in float32 through the whole K
# (oneDNN, AVX512-BF16 / AMX: denormals treated as zero and flushed), the score rounded to nearest
# bfloat16. Subnormal inputs would be dropped, hence min_input; the largest float32 values would
# round to inf, hence max_input (the largest finite bfloat16, 0x7F7F).
BF16 = Precision("bf16", 2.0 ** -8, U32, 2.0 ** -8, float(1 << 8), underflow=2.0 ** -125,
                 min_input=2.0 ** -126, max_input=float(np.float32(3.3895313892515355e38)))
# GPU tensor cores (not measured here: no GPU): exact bf16 products, float32 accumulation that may
# truncate instead of rounding (Fasi et al., 2021), so twice the float32 unit roundoff.
BF16_TENSOR_CORES = Precision("bf16", 2.0 ** -8, 2 * U32, 2.0 ** -8, float(1 << 8), underflow=2.0 ** -125,
                              min_input=2.0 ** -126, max_input=BF16.max_input)

_BY_NAME = {"fp32": FP32, "bf16": BF16}


def by_name(name: str) -> Precision:
    """The CPU precision called ``name`` (``fp32`` or ``bf16``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown screening precision {name!r}: choose from {', '.join(_BY_NAME)}") from None


def gamma(n: int, u: float) -> float:
    """Higham's ``γ_n = n u / (1 - n u)``: the relative error bound of a sum or dot product of n terms."""
    if n * u >= 1:
        raise ValueError(f"no error bound: {n} terms at unit roundoff {u}")
    return n * u / (1.0 - n * u)


def gradual_underflow() -> bool:
    """Whether this thread's float32 and float64 arithmetic keeps subnormal numbers (IEEE gradual
    underflow), as every band's floor and the float64 settlement assume: no flush-to-zero of
    results (FTZ) and no denormals-are-zero on inputs (DAZ). x86 keeps both flags per thread
    (MXCSR), and new threads inherit them; ``torch.set_flush_denormal(True)`` sets both."""
    results = []
    for dtype, smallest_normal, smallest in ((np.float32, 2.0 ** -126, 2.0 ** -149), (np.float64, 2.0 ** -1022,
                                                                                          2.0 ** -1074)):
        normal = np.array([smallest_normal], dtype=dtype)
        subnormal = np.array([smallest], dtype=dtype)
        results.append(bool((normal * dtype(0.5))[0] != 0))  # FTZ: a subnormal result flushed to 0
        results.append(bool((subnormal * dtype(2.0 ** 30))[0] != 0))  # DAZ: a subnormal input read as 0
    return all(results)
