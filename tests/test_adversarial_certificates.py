"""Adversarial cases for the exactness certificates (docs/exactness.md, docs/screening.md,
docs/fewshot.md): each case sits where a band is tightest or an assumption is thinnest, and the
counts must still be those of the float64 score, number for number.

- the floating-point environment: every band's underflow floor (and the float64 settlement itself)
  assumes IEEE gradual underflow; a thread with flush-to-zero / denormals-are-zero (what
  ``torch.set_flush_denormal(True)`` sets, and ropebench's own trainer sets while it trains) drops
  subnormal products silently;
- the bf16 residual band (core/bound.py::residual_bound) on the real CPU kernel: scores that round
  up to a power of two (the half-ulp binade edge), inputs at bf16 halfway points, inputs already
  bf16 (ρ = 0), residuals that are themselves subnormal times huge partners;
- the relevant levels' bands (core/bands.py, levels.py): bit-identical and 1-ulp-apart relevant
  items, irrelevant items equal to a level, against the float64 brute force on every engine;
- the few-shot combined screen (core/combine.py): products that are bit-identical copies (exact
  prototype ties, every query tied between two prototypes to the last bit), k = 10 shots, ip norms
  over 10⁶;
- torch shards (torch/shards.py): thresholds below zero (a zero item, or a zero padding row,
  scores 0 > T), zero and copied catalogue items, shards of one item, catalogue-size prefixes.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ropebench
from ropebench.errors import UsageError
from tests.conftest import NO_TORCH, TORCH, per_query_counts

needs_torch = pytest.mark.skipif(not TORCH, reason=NO_TORCH)

# -- the floating-point environment ---------------------------------------------------------------


def _subnormal_tie_data() -> dict[str, np.ndarray]:
    """ip, one P2V query ``(2⁻⁶⁴, 0, 0)``: its relevant item scores ``T = 2⁻¹²⁷`` and an irrelevant
    one ``3·2⁻¹²⁸ > T`` — both subnormal float32 products, exact with gradual underflow. Their band
    is a few 2⁻¹⁴⁶ wide (the products are tiny), so a screen that flushes them to 0 decides the
    irrelevant item *below* T without settling it: ``a`` becomes 0 instead of 1."""
    a = 2.0 ** -64
    embeddings = np.array([[a, 0, 0], [2 * a, 0, 0], [3 * a, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    return {"embeddings": embeddings, "domains": np.array(["P", "V", "V", "P", "V"]),
            "product_ids": np.array([0, 0, 1, 2, 2]), "item_ids": np.arange(5)}


def test_subnormal_products_are_counted_as_their_float64_score():
    result = ropebench.evaluate(**_subnormal_tie_data(), metric="ip", tasks="P2V", ci=False, threads=1)
    assert per_query_counts(result, "P2V")[0] == (1, 0, 1, False)


@needs_torch
def test_a_thread_that_flushes_subnormals_is_refused_not_miscounted():
    """torch.set_flush_denormal(True) (FTZ/DAZ in this thread, inherited by the threads it starts)
    flushes numpy's float32 *and* float64 subnormals: no band's floor covers that, and the float64
    settlement is no longer the protocol's score. evaluate refuses, saying how to fix it."""
    import torch

    outcome: dict[str, object] = {}

    def run() -> None:  # a thread of its own: its FP environment dies with it
        torch.set_flush_denormal(True)
        try:
            result = ropebench.evaluate(**_subnormal_tie_data(), metric="ip", tasks="P2V", ci=False, threads=1)
            outcome["counts"] = per_query_counts(result, "P2V")[0]
        except UsageError as error:
            outcome["error"] = str(error)
        finally:
            torch.set_flush_denormal(False)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if "counts" in outcome:
        assert outcome["counts"] == (1, 0, 1, False), "a flushed subnormal product was miscounted"
    else:
        assert "set_flush_denormal(False)" in str(outcome["error"])
