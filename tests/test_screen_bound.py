"""The bf16 screen's certified bound (docs/screening.md), checked against the real torch kernel.

First what the kernel does, by hand-computed cases (each would fail under the other plausible
behaviour); then the bound on every pair of adversarially drawn data: norms spread over many
orders of magnitude, near-cancelling pairs, long vectors, l2 far from the origin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ropebench.engines.core import BF16, bound_for
from ropebench.engines.core.bound import pair_widths

torch = pytest.importorskip("torch", reason="torch is not installed (extra ropebench[torch])")


def _bf16_mm(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch's CPU bf16 matmul of float32 inputs, as the engine screens (float64 copy of the output)."""
    out = torch.mm(torch.from_numpy(x).bfloat16(), torch.from_numpy(y).bfloat16().T)
    assert out.dtype == torch.bfloat16  # the score is returned in bf16: the output rounding is real
    return out.double().numpy()


@pytest.mark.parametrize("k", [8, 128, 1024, 4096])
def test_the_kernel_accumulates_in_float32_through_the_whole_k(k):
    """[1, 2⁻⁹ × m, −2⁻⁹ × m] · 1: every partial sum 1 + j·2⁻⁹ is exact in float32 but not in bf16,
    so a kernel storing partial sums in bf16 (between K blocks) would not return exactly 1."""
    m = (k - 1) // 2
    x = np.zeros((2, k), dtype=np.float32)
    x[:, 0] = 1.0
    x[:, 1:m + 1] = 2.0 ** -9
    x[:, m + 1:2 * m + 1] = -(2.0 ** -9)
    assert _bf16_mm(x, np.ones((3, k), dtype=np.float32))[0, 0] == 1.0


def test_the_output_and_inputs_round_to_nearest_even():
    # 1 + 2⁻⁸ is halfway between bf16 neighbours 1 and 1 + 2⁻⁷: ties to even gives 1;
    # 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: ties to even gives 1 + 2⁻⁶ (truncation: 1 + 2⁻⁷).
    ones = np.ones((1, 2), dtype=np.float32)
    assert _bf16_mm(np.array([[1.0, 2 ** -8]], dtype=np.float32), ones)[0, 0] == 1.0
    assert _bf16_mm(np.array([[1.0, 3 * 2 ** -8]], dtype=np.float32), ones)[0, 0] == 1 + 2 ** -6
    # An input just above a halfway point rounds up (truncation would give 1).
    x = np.array([[1 + 2 ** -8 + 2 ** -20]], dtype=np.float32)
    assert _bf16_mm(x, np.ones((1, 1), dtype=np.float32))[0, 0] == 1 + 2 ** -7


def test_underflowing_products_are_flushed_and_inputs_outside_the_normal_range_are_refused():
    """A product below 2⁻¹²⁶ comes back as 0 (flush to zero: the floor is 2⁻¹²⁵ per term, not
    2⁻¹⁵⁰); subnormal or overflowing inputs are outside the bound, and :meth:`covers` says so."""
    x = np.zeros((1, 4), dtype=np.float32)
    x[0, 0] = 2.0 ** -70
    assert _bf16_mm(x, x)[0, 0] == 0.0 and float(np.float32(2.0 ** -140)) > 0
    assert bound_for("ip", 4, BF16).floor == 6 * 2.0 ** -125
    assert BF16.covers(np.array([[0.0, 2.0 ** -126, -1e38]], dtype=np.float32))
    assert not BF16.covers(np.array([[1.0, 2.0 ** -127]], dtype=np.float32))
    assert not BF16.covers(np.array([[np.finfo(np.float32).max]], dtype=np.float32))


def _exact_dot(x: np.ndarray, y: np.ndarray) -> float:
    return math.fsum((x.astype(np.float64) * y.astype(np.float64)).tolist())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.sampled_from([1, 2, 7, 16, 128, 1000, 4096]), spread=st.floats(0, 12), cancel=st.booleans(),
       halfway=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_bf16_band_holds_on_every_pair(dim, spread, cancel, halfway, seed):
    """|bf16 screen − exact| <= the BF16 band's width on every pair: norms spread over 10^±spread,
    pairs cancelling to a tiny fraction of |x||y| (where the output rounding of a large partial
    result no longer hides anything), inputs near bf16 halfway points (largest input rounding)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10, dim)) * 10.0 ** rng.uniform(-spread, spread, (10, 1))
    y = rng.normal(size=(8, dim)) * 10.0 ** rng.uniform(-spread, spread, (8, 1))
    if halfway:  # each element just off a bf16 halfway point, all rounding the same way
        x = _near_halfway(x)
        y = _near_halfway(y)
    x, y = x.astype(np.float32), y.astype(np.float32)
    if cancel:
        y[:4] = (-x[:4] * np.float32(1.0001) + rng.normal(size=(4, dim)).astype(np.float32)
                 * np.float32(1e-3) * np.abs(x[:4]).max(axis=1, keepdims=True))
    assert BF16.covers(x) and BF16.covers(y)
    screened = _bf16_mm(x, y)
    nx, ny = np.linalg.norm(x.astype(np.float64), axis=1), np.linalg.norm(y.astype(np.float64), axis=1)
    width = pair_widths(bound_for("ip", dim, BF16), nx[:, None], ny[None, :], screened)
    for i in range(len(x)):
        for j in range(len(y)):
            error = abs(screened[i, j] - _exact_dot(x[i], y[j]))
            assert error <= width[i, j], (i, j, dim, error, width[i, j])


def _near_halfway(values: np.ndarray) -> np.ndarray:
    """Each value moved onto (just above) a point halfway between two bf16 numbers."""
    exponent = np.floor(np.log2(np.abs(values) + 1e-300))
    step = 2.0 ** (exponent - 7)  # bf16 spacing at that magnitude
    return (np.floor(values / step) + 0.5 + 2.0 ** -12) * step


@settings(max_examples=30, deadline=None)
@given(dim=st.sampled_from([1, 5, 16, 128]), offset=st.sampled_from([0.0, 1e3, 1e5]), seed=st.integers(0, 2**32 - 1))
def test_the_bf16_l2_band_holds_far_from_the_origin(dim, offset, seed):
    """The bf16-screened ``[x, 1]·[2y, −|y|²]`` minus ``|x|²`` is within its width of ``−|q − g|²``."""
    from tests.test_exactness import assert_l2_band

    emb = (np.random.default_rng(seed).normal(size=(16, dim)) + offset).astype(np.float32)
    assert_l2_band(emb, BF16, _bf16_mm)


def test_the_bound_is_tight_enough_to_be_worth_checking():
    """The drawn errors reach a real fraction of the band (a bound far above every error would
    let a kernel that rounds worse than modelled pass unnoticed)."""
    rng = np.random.default_rng(3)
    x = _near_halfway(rng.normal(size=(64, 128))).astype(np.float32)
    screened = _bf16_mm(x, x)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    width = pair_widths(bound_for("ip", 128, BF16), norms[:, None], norms[None, :], screened)
    exact = x.astype(np.float64) @ x.astype(np.float64).T
    assert (np.abs(screened - exact) / width).max() > 0.2
