"""Few-shot's cross-domain blocks read by the retrieval tasks too (ropebench/engines/onepass.py,
SharedCross): with ``--fewshot`` on the one-pass engine each ``X · Yᵀ`` is computed once, in the
few-shot screen's tiles, and read there by ``X2Y`` and ``Y2X``. Every number, per-query row and
counter is the one of reading the blocks separately; where sharing does not apply (all-relevant
measures, l2, one direction of a pair, a composition) nothing is shared and nothing changes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ropebench.engines import fewshot_screen, onepass
from ropebench.engines.onepass import OnePassEngine
from tests.conftest import TEST_SETTINGS, continuous_data, tied_data

FEWSHOT = dict(fewshot=True, shots="1,3", draws=2, ci=False)


def small_few_shot_tiles(monkeypatch, fused: bool | None) -> None:
    """The few-shot screen in tiles of 17 x 23 items (whole products), so a block has many."""
    settings = fewshot_screen.LinearSettings
    monkeypatch.setattr(fewshot_screen, "LinearSettings", lambda: settings(rows=17, columns=23, fused=fused))


def read_counts(monkeypatch) -> list[int]:
    """Spy on SharedCross.read: one entry per tile read for the retrieval tasks."""
    calls: list[int] = []
    read = onepass.SharedCross.read

    def spy(self, *args):
        calls.append(1)
        read(self, *args)

    monkeypatch.setattr(onepass.SharedCross, "read", spy)
    return calls


def unshared(monkeypatch) -> None:
    monkeypatch.setattr(OnePassEngine, "shared_cross", lambda self, request: None)


pytest.importorskip("numba")  # the blocks are shared only with the compiled tile selection


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_shared_blocks_give_the_numbers_of_separate_blocks(monkeypatch, metric, threads, fused):
    data = tied_data(5, metric, (90, 80, 70), n_products=12, groups=True) if metric == "ip" else \
        continuous_data(3, (90, 80, 70), n_products=12)
    engine = OnePassEngine(dataclasses.replace(TEST_SETTINGS, tile=16, compiled=True))
    small_few_shot_tiles(monkeypatch, fused)
    calls = read_counts(monkeypatch)
    shared = data.evaluate(engine, metric=metric, threads=threads, per_query=True, **FEWSHOT)
    assert len(calls) > 3  # three pairs, several tiles each
    with monkeypatch.context() as m:
        unshared(m)
        separate = data.evaluate(engine, metric=metric, threads=threads, per_query=True, **FEWSHOT)
    assert shared.to_json()["tasks"] == separate.to_json()["tasks"]
    assert shared.fewshot["tasks"] == separate.fewshot["tasks"]
    assert shared.per_query.to_pandas().equals(separate.per_query.to_pandas())
    counters = shared.environment["engine"]["counters"], separate.environment["engine"]["counters"]
    # pairs_settled depends on the order a censored query met its tiles (docs/fewshot.md); on one
    # thread every other counter is the same.
    if threads == 1:
        assert {**counters[0], "pairs_settled": 0} == {**counters[1], "pairs_settled": 0}
    assert counters[0]["blocks_tiled"] == counters[1]["blocks_tiled"]
    alone = data.evaluate(engine, metric=metric, threads=threads, per_query=True, ci=False)
    assert alone.to_json()["tasks"] == shared.to_json()["tasks"]


def test_the_search_computes_only_the_blocks_not_read(monkeypatch):
    """The retrieval search is asked for the intra-domain tasks only: the cross ones were read."""
    asked = []
    search = OnePassEngine.search

    def spy(self, request):
        asked.append(tuple(request.tasks))
        return search(self, request)

    monkeypatch.setattr(OnePassEngine, "search", spy)
    small_few_shot_tiles(monkeypatch, False)
    engine = OnePassEngine(dataclasses.replace(TEST_SETTINGS, compiled=True))
    result = continuous_data(4, (90, 80, 70), n_products=12).evaluate(engine, **FEWSHOT)
    assert asked == [("P2P", "V2V", "L2L")]
    assert set(result.tasks) == {"P2V", "P2L", "V2P", "V2L", "L2P", "L2V", "P2P", "V2V", "L2L"}


@pytest.mark.parametrize("options", [dict(measures="R@K,MRR,MAP@R,RP"), dict(metric="l2"), dict(tasks="P2V,P2P"),
                                     dict(tasks="cross", measures="R@K,MRR,mAP@5")])
def test_nothing_is_shared_where_it_does_not_apply(monkeypatch, options):
    """All-relevant measures (their levels are counted in the engine's own tiles), l2 (no linear
    screen) and a pair asked for in one direction only: the blocks are read by the search alone,
    with the same numbers."""
    data = continuous_data(6, (90, 80, 70), n_products=12)
    engine = OnePassEngine(dataclasses.replace(TEST_SETTINGS, compiled=True))
    calls = read_counts(monkeypatch)
    small_few_shot_tiles(monkeypatch, False)
    got = data.evaluate(engine, **options, **FEWSHOT)
    assert not calls
    unshared(monkeypatch)
    want = data.evaluate(engine, **options, **FEWSHOT)
    assert got.to_json()["tasks"] == want.to_json()["tasks"] and got.fewshot["tasks"] == want.fewshot["tasks"]


def test_a_pair_from_other_vectors_is_not_read():
    """A tile is read only when computed from the very arrays the retrieval tasks query with."""
    from ropebench.engines.base import SearchRequest

    data = continuous_data(7, (40, 30, 20), n_products=6)
    task_data = data.task_data("cosine")
    request = SearchRequest(task_data=task_data, tasks=("P2V", "V2P"), max_k=5)
    shared = onepass.SharedCross(request, compiled=True)
    p, v = task_data["P2V"].queries, task_data["V2P"].queries
    shared.restrict({("P", "V"): (p.copy(), v)})
    assert shared.tasks == [] and shared.pairs == {}
    shared = onepass.SharedCross(request, compiled=True)
    shared.restrict({("V", "P"): (v, p)})
    assert shared.tasks == ["P2V", "V2P"]
    scores = p @ v.T
    shared.read("P", "V", np.arange(len(p)), np.arange(len(v)), scores)
    run = shared.run()
    direct = onepass.one_pass_first_hits(task_data, ("P2V", "V2P"), max_k=5)
    for task in ("P2V", "V2P"):
        for name in ("scored", "a", "t", "p", "censored"):
            assert np.array_equal(getattr(run.hits[task], name), getattr(direct[task], name)), (task, name)


def test_nothing_is_shared_with_numpys_tile_selection(monkeypatch):
    """numpy selects a tile at its lowest cut-off, and the few-shot screen's tiles hold queries in
    product order, whose cut-offs spread widely: without the compiled selection nothing is shared."""
    data = continuous_data(8, (90, 80, 70), n_products=12)
    calls = read_counts(monkeypatch)
    small_few_shot_tiles(monkeypatch, False)
    got = data.evaluate(OnePassEngine(dataclasses.replace(TEST_SETTINGS, compiled=False)), **FEWSHOT)
    assert not calls
    want = data.evaluate(OnePassEngine(dataclasses.replace(TEST_SETTINGS, compiled=True)), **FEWSHOT)
    assert got.to_json()["tasks"] == want.to_json()["tasks"] and got.fewshot["tasks"] == want.fewshot["tasks"]


@pytest.mark.parametrize("missing", ["L", "P"])
def test_a_domain_without_items_changes_no_number(monkeypatch, missing):
    """Without one domain's items (its few-shot tasks have no queries or no supports: the linear
    screen declines, and nothing is shared) the numbers are those without sharing."""
    data = continuous_data(9, (90, 80, 70), n_products=12).without_domain(missing)
    engine = OnePassEngine(dataclasses.replace(TEST_SETTINGS, compiled=True))
    small_few_shot_tiles(monkeypatch, False)
    got = data.evaluate(engine, **FEWSHOT)
    unshared(monkeypatch)
    want = data.evaluate(engine, **FEWSHOT)
    assert got.to_json()["tasks"] == want.to_json()["tasks"] and got.fewshot["tasks"] == want.fewshot["tasks"]
