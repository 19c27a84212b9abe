"""The all-relevant counter's compiled loops (ropebench/engines/kernels/levels.py) against its numpy
code, batch by batch: the same guess of each candidate's place among its query's levels, the same
candidates left to float64 settlement, the same counts, dead levels and cut-offs, with every
metric's band, queries wider than the padding, non-finite screens and wrong guesses."""

from __future__ import annotations

import numpy as np
import pytest

from ropebench.engines.core import FP32, LevelCounter, task_bound
from ropebench.engines.core.rows import irrelevant_eligible
from ropebench.engines.onepass import OnePassEngine, OnePassSettings
from tests.test_relevant_measures import near_tie_data

pytest.importorskip("numba")

from ropebench.engines.kernels import levels as level_kernels  # noqa: E402  (numba is needed)

STATE = ("starts", "tied", "live", "above_last", "lo", "level_lo", "level_hi", "item")


def eligible_candidates(task_data, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every irrelevant eligible (query, gallery row) pair of a task, in random order, with its
    float32 screen."""
    scores = task_data.queries @ task_data.gallery.T
    q, g = np.nonzero(np.ones(scores.shape, dtype=bool))
    keep = irrelevant_eligible(task_data, q, g)
    order = rng.permutation(int(keep.sum()))
    q, g = q[keep][order], g[keep][order]
    return q, g, scores[q, g]


@pytest.mark.parametrize("pad", [64, 3])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("seed", range(3))
def test_the_compiled_loops_count_as_numpy_does(monkeypatch, seed, metric, pad):
    """Two counters of each task, one per path, fed the same batches of every irrelevant eligible
    candidate (in random order; some screens +inf, -inf or NaN, some a level's lower end); with
    ``pad`` 3 most queries have more levels than the padding (the float64 guess)."""
    from ropebench.engines.core import levels

    monkeypatch.setattr(levels, "_PAD_WIDTH", pad)
    rng = np.random.default_rng(seed)
    settled = wide = 0
    for task_data in near_tie_data(seed).task_data(metric).values():
        bound = task_bound(task_data, FP32)
        numpy_counter = LevelCounter(task_data, bound, 5)
        compiled = LevelCounter(task_data, bound, 5, compiled=level_kernels)
        assert compiled.compiled is level_kernels
        wide += int((np.diff(compiled.offsets) > compiled.padded_guess.shape[1]).sum())
        q, g, values = eligible_candidates(task_data, rng)
        # Screens equal to a level's float32 lower end (the guess's ties).
        n_levels = np.diff(compiled.offsets)[q]
        tied = np.flatnonzero((rng.random(len(values)) < 0.05) & (n_levels > 0))
        level = compiled.offsets[q[tied]] + rng.integers(0, 1 << 30, len(tied)) % n_levels[tied]
        values[tied] = compiled.guess[level]
        # ... or the float32 just below its float64 lower end (where a float32 and a float64 guess differ).
        below = tied[::2]
        lower = compiled.screen_lo[level[::2]]
        rounded = lower.astype(np.float32)
        values[below] = np.where(rounded < lower, rounded, np.nextafter(rounded, np.float32(-np.inf)))
        odd = rng.random(len(values)) < 0.01
        values[odd] = rng.choice(np.array([np.inf, -np.inf, np.nan], dtype=np.float32), int(odd.sum()))
        for start in range(0, len(q), 97):
            batch = slice(start, start + 97)
            want = numpy_counter.sort_out(q[batch], g[batch], values[batch])
            got = compiled.sort_out(q[batch], g[batch], values[batch])
            for w, x in zip(want[:3], got[:3], strict=True):
                assert np.array_equal(w, x)
            assert want[3] == got[3]
            settled += got[3]
            assert np.array_equal(numpy_counter.take(want), compiled.take(got))
            for name in STATE:
                assert np.array_equal(getattr(numpy_counter, name), getattr(compiled, name), equal_nan=True), name
        finished = numpy_counter.finish(), compiled.finish()
        assert all(np.array_equal(a, b) for a, b in zip(*(vars(f).values() for f in finished), strict=True))
    assert settled > 0
    assert wide > 0 or pad == 64


def test_exact_bands_keep_numpy():
    """An exact band (every screen is the score) has its own numpy rule: no compiled loop."""
    from ropebench.engines.core.bound import bound_for

    task_data = next(iter(near_tie_data(0).task_data("cosine").values()))
    counter = LevelCounter(task_data, bound_for("cosine", 8, FP32, exact=True), compiled=level_kernels)
    assert counter.compiled is None


def test_a_wrong_compiled_guess_changes_no_number(monkeypatch):
    """The compiled guess, shifted by a level, fails its float64 checks: those candidates are
    settled instead, and every number and per-query row is the same."""
    from ropebench.engines.core import levels

    data = near_tie_data(7)
    measures = "R@K,MRR,MAP@R,RP,mAP@5"
    engine = OnePassEngine(OnePassSettings(tile=16, small_block=0, compiled=True))
    init = levels.LevelCounter.__init__
    counters: dict[bool, list] = {False: [], True: []}
    shift = [False]

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        assert self.compiled is not None
        if shift[0]:
            self.guess = np.roll(self.guess, 1)
        counters[shift[0]].append(self)

    monkeypatch.setattr(levels.LevelCounter, "__init__", spy)
    want = data.evaluate(engine, ci=False, threads=1, measures=measures, per_query=True)
    shift[0] = True
    got = data.evaluate(engine, ci=False, threads=1, measures=measures, per_query=True)
    assert got.to_json()["tasks"] == want.to_json()["tasks"]
    assert got.per_query.to_pandas().equals(want.per_query.to_pandas())
    assert sum(c.settled for c in counters[True]) > sum(c.settled for c in counters[False])


@pytest.mark.parametrize("shape", [(64, 70), (7, 100), (100, 7), (33, 65), (1, 5), (3, 1)])
@pytest.mark.parametrize("groups", [32, 3, 1])
def test_compiled_row_maxima_are_numpys(shape, groups):
    """The floors' group maxima by rows, compiled: the same values, NaN where a group holds a NaN,
    the items past ``groups * (n // groups)`` left out as numpy leaves them out."""
    from ropebench.engines.core.levels import group_maxima

    rng = np.random.default_rng(sum(shape) * groups)
    scores = rng.standard_normal(shape).astype(np.float32)
    scores[rng.random(shape) < 0.02] = np.nan
    scores[rng.random(shape) < 0.02] = np.inf
    want = group_maxima(scores, True, groups)
    got = level_kernels.row_maxima(scores, groups)
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got, want, equal_nan=True)
