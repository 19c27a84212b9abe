"""Edge cases of the shared cross blocks (onepass.SharedCross) and of the levels' compiled loops
(from an adversarial review): blocks the engine counts row by row, tied data with censoring, a
linear screen that declines midway, and inputs of other dtypes, where sharing the few-shot
screen's tiles must change no number, per-query row or counter but ``pairs_settled``, and the
compiled loops must give numpy's outputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ropebench.engines import fewshot_screen, onepass
from ropebench.engines.onepass import OnePassEngine, OnePassSettings
from tests.conftest import TEST_SETTINGS, continuous_data, tied_data

pytest.importorskip("numba")  # the blocks are shared only with the compiled tile selection

FEWSHOT = dict(fewshot=True, shots="1,3", draws=2, ci=False)


def small_few_shot_tiles(monkeypatch) -> None:
    settings = fewshot_screen.LinearSettings
    monkeypatch.setattr(fewshot_screen, "LinearSettings", lambda: settings(rows=17, columns=23, fused=False))


def read_pairs(monkeypatch) -> list[tuple[str, str]]:
    calls: list[tuple[str, str]] = []
    read = onepass.SharedCross.read

    def spy(self, x, y, *args):
        calls.append((x, y))
        read(self, x, y, *args)

    monkeypatch.setattr(onepass.SharedCross, "read", spy)
    return calls


def shared_and_separate(monkeypatch, data, engine, **options):
    shared = data.evaluate(engine, **options, **FEWSHOT)
    with monkeypatch.context() as m:
        m.setattr(OnePassEngine, "shared_cross", lambda self, request: None)
        separate = data.evaluate(engine, **options, **FEWSHOT)
    return shared, separate


def test_cross_blocks_the_engine_counts_row_by_row_keep_their_counters(monkeypatch):
    """With the compiled selection asked for and the default small-block size, the engine counts the
    small cross blocks row by row (no censoring, ``blocks_small``); read from the few-shot tiles
    they were counted as tiled blocks, with censored queries: other counters than without sharing."""
    data = continuous_data(3, (90, 80, 70), n_products=12)
    engine = OnePassEngine(OnePassSettings(compiled=True))  # small_block: the default
    shared, separate = shared_and_separate(monkeypatch, data, engine, ks="1", threads=1, per_query=True)
    assert shared.to_json()["tasks"] == separate.to_json()["tasks"]
    assert shared.per_query.to_pandas().equals(separate.per_query.to_pandas())
    assert shared.environment["engine"]["counters"] == separate.environment["engine"]["counters"]


def tied_cosine_runs(monkeypatch):
    data = tied_data(0, "cosine", (90, 80, 70), n_products=12, groups=True)
    engine = OnePassEngine(dataclasses.replace(TEST_SETTINGS, tile=16, compiled=True))
    small_few_shot_tiles(monkeypatch)
    return shared_and_separate(monkeypatch, data, engine, ks="1,5,10", threads=1, per_query=True)


def test_counters_with_one_thread_are_those_of_separate_blocks_but_pairs_settled(monkeypatch):
    """With one thread, exact ties (cosine) and censoring: every number, per-query row and counter
    but ``pairs_settled`` is that of separate blocks."""
    shared, separate = tied_cosine_runs(monkeypatch)
    assert shared.to_json()["tasks"] == separate.to_json()["tasks"]
    assert shared.per_query.to_pandas().equals(separate.per_query.to_pandas())
    counters = shared.environment["engine"]["counters"], separate.environment["engine"]["counters"]
    assert {**counters[0], "pairs_settled": 0} == {**counters[1], "pairs_settled": 0}


def huge_norms(data, big: str, tiny: str):
    """ip vectors with norms just inside the engine's range for ``big`` domains (|x|·|y| < 1e37) and
    tiny elsewhere: the linear screen runs the first pair, then declines on a pair of two big domains
    (its combined scores could overflow float32)."""
    embeddings = np.clip(data.embeddings.astype(np.float64), -1, 1)
    for domain in "PVL":
        rows = data.domains == domain
        scale = 3.1e18 if domain in big else 1e-17
        embeddings[rows] *= scale / np.linalg.norm(embeddings[rows], axis=1, keepdims=True)
    return data.with_embeddings(embeddings.astype(np.float32))


def test_a_screen_declining_midway_discards_what_was_read(monkeypatch):
    """The linear screen reads (P, V), then declines on (P, L) (``_Unbounded``): few-shot takes the
    per-task path, and the retrieval tasks half read from its tiles must be searched anew."""
    data = huge_norms(continuous_data(3, (90, 80, 70), n_products=12), "PL", "V")
    engine = OnePassEngine(dataclasses.replace(TEST_SETTINGS, tile=16, compiled=True))
    small_few_shot_tiles(monkeypatch)
    calls = read_pairs(monkeypatch)
    shared, separate = shared_and_separate(monkeypatch, data, engine, metric="ip", threads=2, per_query=True)
    assert ("P", "V") in calls  # some tiles were read before the screen declined
    assert "fewshot_screen" not in str(shared.fewshot)  # the per-task path
    assert shared.to_json()["tasks"] == separate.to_json()["tasks"]
    assert shared.fewshot["tasks"] == separate.fewshot["tasks"]
    assert shared.per_query.to_pandas().equals(separate.per_query.to_pandas())
    counters = shared.environment["engine"]["counters"], separate.environment["engine"]["counters"]
    assert counters[0]["blocks_tiled"] == counters[1]["blocks_tiled"]


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_the_compiled_loops_take_other_dtypes_and_tiny_screens(metric):
    """int32 candidate indices, float64 screens, subnormal and signed-zero screens, empty batches:
    the compiled guess, band, settlements and counts are numpy's."""
    from ropebench.engines.core import FP32, LevelCounter, task_bound
    from ropebench.engines.kernels import levels as level_kernels
    from tests.test_levels_kernels import eligible_candidates
    from tests.test_relevant_measures import near_tie_data

    rng = np.random.default_rng(1)
    tasks = [*tied_data(1, metric, (40, 30, 20), n_products=8, groups=True).task_data(metric).values(),
             *near_tie_data(1).task_data(metric).values()]
    checked = 0
    for task_data in tasks:
        bound = task_bound(task_data, FP32)
        numpy_counter = LevelCounter(task_data, bound, 5)
        compiled = LevelCounter(task_data, bound, 5, compiled=level_kernels)
        if compiled.compiled is None:
            continue
        q, g, values = eligible_candidates(task_data, rng)
        tiny = rng.random(len(values)) < 0.05
        values[tiny] = rng.choice(np.array([1e-40, -1e-40, 0.0, -0.0, 1e-45], dtype=np.float32), int(tiny.sum()))
        for index, value_type in ((np.int32, np.float64), (np.int32, np.float32), (np.int64, np.float64)):
            for start in range(0, len(q) + 1, 131):  # the last batch may be empty
                batch = slice(start, start + 131)
                args = q[batch].astype(index), g[batch].astype(index), values[batch].astype(value_type)
                want, got = numpy_counter.sort_out(*args), compiled.sort_out(*args)
                for w, x in zip(want[:3], got[:3], strict=True):
                    assert np.array_equal(w, x)
                assert want[3] == got[3]
                assert np.array_equal(numpy_counter.take(want), compiled.take(got))
                checked += len(args[0])
        for name in ("starts", "tied", "live", "above_last", "lo"):
            assert np.array_equal(getattr(numpy_counter, name), getattr(compiled, name)), name
    assert checked > 0
