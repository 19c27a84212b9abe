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

from ropebench.engines.core import BF16, bound_for, residual_bound
from ropebench.engines.core.bound import output_half_ulp, pair_widths
from tests.test_exactness import assert_l2_band  # at the top: importing it inside a @given test nests @given

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


def _residuals(x: np.ndarray) -> np.ndarray:
    """The engine's residual norms of ``x`` rounded to bf16 on the CPU (what the kernel multiplies)."""
    from ropebench.engines.torch.blocks import residual_norms

    out = residual_norms(x, torch.device("cpu"), torch.bfloat16)
    assert out is not None
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.sampled_from([1, 2, 7, 16, 128, 1000, 4096]), spread=st.floats(0, 12), cancel=st.booleans(),
       halfway=st.booleans(), exact_inputs=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_the_residual_band_holds_on_every_pair(dim, spread, cancel, halfway, exact_inputs, seed):
    """|bf16 screen − exact| <= the residual band's width on every pair, with each vector's own
    residual norm: the same adversarial draws as the worst-case band (halfway inputs make ρ as
    large as it gets, all one way; cancelling pairs leave the input terms alone), plus inputs that
    are bf16 numbers already (ρ = 0: only the accumulation and output terms are left). The residual
    band is never wider than the worst case."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(10, dim)) * 10.0 ** rng.uniform(-spread, spread, (10, 1))
    y = rng.normal(size=(8, dim)) * 10.0 ** rng.uniform(-spread, spread, (8, 1))
    if halfway:
        x, y = _near_halfway(x), _near_halfway(y)
    x, y = x.astype(np.float32), y.astype(np.float32)
    if cancel:
        y[:4] = (-x[:4] * np.float32(1.0001) + rng.normal(size=(4, dim)).astype(np.float32)
                 * np.float32(1e-3) * np.abs(x[:4]).max(axis=1, keepdims=True))
    if exact_inputs:  # already bf16: nothing is rounded on the way in
        x = torch.from_numpy(x).bfloat16().float().numpy()
        y = torch.from_numpy(y).bfloat16().float().numpy()
    assert BF16.covers(x) and BF16.covers(y)
    screened = _bf16_mm(x, y)
    nx, ny = np.linalg.norm(x.astype(np.float64), axis=1), np.linalg.norm(y.astype(np.float64), axis=1)
    rx, ry = _residuals(x), _residuals(y)
    if exact_inputs:
        assert not rx.any() and not ry.any()
    width = pair_widths(residual_bound(dim, BF16), nx[:, None], ny[None, :], screened, rx[:, None], ry[None, :])
    assert (width <= pair_widths(bound_for("ip", dim, BF16), nx[:, None], ny[None, :], screened)).all()
    for i in range(len(x)):
        for j in range(len(y)):
            error = abs(screened[i, j] - _exact_dot(x[i], y[j]))
            assert error <= width[i, j], (i, j, dim, error, width[i, j])


def test_the_residual_band_is_tight_and_narrower_than_the_worst_case():
    """On unit vectors (cosine) the drawn errors reach a real fraction of the residual band, and
    the band is about half the worst case's (ρ is about 0.4 · 2⁻⁸ |x| for ordinary data)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(64, 128))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    screened = _bf16_mm(x, x)
    norms = np.linalg.norm(x.astype(np.float64), axis=1)
    residuals = _residuals(x)
    width = pair_widths(residual_bound(128, BF16), norms[:, None], norms[None, :], screened, residuals[:, None],
                        residuals[None, :])
    worst = pair_widths(bound_for("ip", 128, BF16), norms[:, None], norms[None, :], screened)
    exact = x.astype(np.float64) @ x.astype(np.float64).T
    assert (np.abs(screened - exact) / width).max() > 0.2
    assert 0.3 < float(np.median(width / worst)) < 0.7


def test_half_an_ulp_of_the_output():
    # bf16 ulps: 2⁻⁷ on [1, 2), 2⁻⁸ on [0.5, 1); half of them; subnormal and zero scores keep u·|ŝ|.
    output = 2.0 ** -8 / (1 - 2.0 ** -8)
    values = np.array([1.0, 1.9921875, 0.5, -0.75, 0.0, 2.0 ** -130])
    got = output_half_ulp(values, output)
    assert got[0] == pytest.approx(2.0 ** -8, rel=1e-3) and got[1] == pytest.approx(2.0 ** -8, rel=1e-3)
    assert got[2] == pytest.approx(2.0 ** -9, rel=1e-3) and got[3] == pytest.approx(2.0 ** -9, rel=1e-3)
    assert got[4] == 0.0 and got[5] == output * 2.0 ** -130
    assert (got <= output * np.abs(values)).all()
