"""The engines themselves: their default sizes on data big enough to tile, the counters that
prove a path ran (and bound the slow ones), band caps, per-task fallbacks, censoring, the
registry and FAISS's thread setting. Properties shared by every engine are in
tests/test_core_properties.py.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ropebench
from ropebench import engines
from ropebench.engines import COUNTERS, SearchRequest, SearchRun, engine_names, get_engine, register_engine
from ropebench.engines.core import censor
from ropebench.engines.faiss import FaissEngine
from ropebench.engines.onepass import SMALL_BLOCK, OnePassEngine
from ropebench.errors import UsageError
from tests.conftest import (
    ENGINE_NAMES,
    KS,
    SHORT_KS,
    TEST_SETTINGS,
    Data,
    Spy,
    assert_matches_reference,
    assert_reached,
    assert_same_per_query,
    configured_engine,
    continuous_data,
    tied_data,
)


@pytest.fixture(scope="module")
def moderate():
    """3 domains × 1,100 items at d=32: every block exceeds the default small-block size."""
    data = continuous_data(21, sizes=(1100, 1100, 1100), n_products=150, dim=32, noise=1.6)
    assert 1100 * 1100 * 32 > SMALL_BLOCK
    return data


@pytest.fixture(scope="module")
def representative():
    """Continuous data like a trained model's: 3 × 1,500 items, d=32, 200 products, R@50 ≈ 90%."""
    return continuous_data(22, sizes=(1500, 1500, 1500), n_products=200, dim=32, noise=1.6)


def test_default_settings_tile_every_block_at_moderate_size(moderate):
    """The engines exactly as users get them, on data where no block takes the small-block
    shortcut: the one-pass engine agrees with FAISS query for query and with the float64 brute force."""
    one_pass, faiss = Spy(OnePassEngine()), Spy(FaissEngine())
    first = moderate.evaluate(one_pass, metric="cosine", ks=KS, ci=False)
    second = moderate.evaluate(faiss, metric="cosine", ks=KS, ci=False)
    assert one_pass.counters["blocks_tiled"] == 6  # 3 cross blocks (read both ways) + 3 intra blocks
    assert one_pass.counters["blocks_small"] == 0
    assert one_pass.counters["queries_censored"] > 0  # misses at max K stopped early
    assert faiss.counters["faiss_searches"] == 9
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert_same_per_query(first, second)
    # The brute force on two of the tasks (a cross block read by columns, an intra block): 1 s each.
    subset = ("V2P", "L2L")
    first = dataclasses.replace(first, tasks={task: first.tasks[task] for task in subset})
    assert_matches_reference(first, moderate.reference(metric="cosine", ks=KS, tasks=subset))


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
@pytest.mark.parametrize("sizes", ["default", "test"])
def test_rescoring_and_settlement_are_rare_on_continuous_data(representative, engine_name, sizes):
    """The counter bounds: fewer than 1% of queries are screened again against their whole row,
    and float64 settlement touches band pairs only: fewer than 1 per 100 queries on such data."""
    engine = get_engine(engine_name) if sizes == "default" else configured_engine(engine_name)
    spy = Spy(engine)
    result = representative.evaluate(spy, metric="cosine", ks=KS, ci=False)
    n_queries = sum(cells.n_queries for cells in result.tasks.values())
    counters = spy.counters
    assert counters["queries_rescored"] < 0.01 * n_queries, (counters, n_queries)
    # Settled band pairs: 7-11 of 13,197 queries' candidates here (measured); thresholds need one
    # relevant pair per query, and a few more where relevant scores nearly tie. A bf16 screen's
    # band is ~100 times wider (docs/screening.md): 46,802 pairs here (3.5 per query, measured).
    per_query = 5 if result.environment["engine"].get("screen") == "bf16" else 0.01
    assert counters["pairs_settled"] < per_query * n_queries, (counters, n_queries)
    assert n_queries <= counters["relevant_settled"] < 1.01 * n_queries, (counters, n_queries)
    # Misses at max K are many here (R@50 ≈ 90%): they are censored, not rescored.
    misses = sum(1 for value in result.per_query.column("R@50").to_pylist() if value == 0)
    assert misses > 0.05 * n_queries
    if sizes == "test":
        assert_reached(spy)


def test_massive_exact_ties_are_settled_pair_by_pair():
    """Integer data with thousands of exact ties: every tie is counted (settled in float64, or
    decided by the screen where every float32 score is exact), and the engines agree."""
    data = tied_data(23, "ip", groups=True)
    spy = Spy(OnePassEngine(dataclasses.replace(TEST_SETTINGS, tile=40)))
    first = data.evaluate(spy, metric="ip", ks=KS, ci=False)
    assert_reached(spy)
    second = data.evaluate(configured_engine("faiss"), metric="ip", ks=KS, ci=False)
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert_same_per_query(first, second)
    assert_matches_reference(first, data.reference(metric="ip", ks=KS))


def test_products_with_hundreds_of_items_stay_on_the_one_pass_path():
    """A few products with hundreds of items per domain: thresholds come from per-product units,
    with no list of relevant pairs and no fallback to FAISS."""
    data = tied_data(24, "ip", sizes=(400, 300, 200), n_products=12)
    spy = Spy(OnePassEngine(TEST_SETTINGS))
    first = data.evaluate(spy, metric="ip", ks=KS, ci=False)
    assert spy.counters["faiss_searches"] == 0 and spy.counters["blocks_tiled"] == 6, spy.counters
    second = data.evaluate(configured_engine("faiss"), metric="ip", ks=KS, ci=False)
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert_same_per_query(first, second)


def test_l2_searches_every_task_in_its_own_block(moderate):
    """l2 scores are not symmetric under the query/gallery split: 9 blocks, read by rows."""
    spy = Spy(OnePassEngine())
    result = moderate.evaluate(spy, metric="l2", ks=SHORT_KS, ci=False)
    assert spy.counters["blocks_tiled"] == 9
    other = moderate.evaluate(configured_engine("faiss"), metric="l2", ks=SHORT_KS, ci=False)
    assert result.to_json()["tasks"] == other.to_json()["tasks"]
    assert_same_per_query(result, other)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_censoring_changes_no_count_it_keeps(engine, metric):
    """Asked for exact counts, an engine computes every query's a; otherwise a query with max K
    items above its first hit may stop early (censored: a >= max K known; the contract records it as
    max K, 0, 1 by the core's one censoring rule). The rest is equal."""
    data = continuous_data(25, groups=True)
    task_data = data.task_data(metric)
    options = {"max_k": max(SHORT_KS), "threads": 2 if engine.name == "one-pass" else 1,
               "symmetric_scores": metric != "l2"}
    quick = engine.search(SearchRequest(task_data, tuple(task_data), exact_censored=False, **options))
    exact = engine.search(SearchRequest(task_data, tuple(task_data), exact_censored=True, **options))
    assert isinstance(quick, SearchRun) and set(quick.counters) == set(COUNTERS)
    assert exact.counters["queries_censored"] == 0
    if engine.name == "one-pass":
        assert quick.counters["queries_censored"] > 0
    for task, hits in quick.hits.items():
        full = exact.hits[task]
        assert np.array_equal(hits.scored, full.scored), task
        kept = ~hits.censored
        for name in ("a", "t", "p"):
            assert np.array_equal(getattr(hits, name)[kept], getattr(full, name)[kept]), (task, name)
        assert (full.a[hits.censored] >= options["max_k"]).all(), task
        assert (hits.a[hits.censored] >= options["max_k"]).all(), task
        a, t, p, censored = censor(hits.a, hits.t, hits.p, hits.censored, options["max_k"])
        assert (a[censored] == options["max_k"]).all() and (t[censored] == 0).all() and (p[censored] == 1).all()


def test_groups_in_only_some_domains(engine):
    """Groups recorded for one domain only (e.g. clips of one live stream) and none for the
    others: every intra task still runs, and a domain without groups excludes only the query."""
    data = continuous_data(26, sizes=(200, 150, 150))
    groups = np.array([None] * len(data.products), dtype=object)
    live = np.flatnonzero(data.domains == "L")
    groups[live] = (np.arange(len(live)) // 3).astype(object)
    grouped = dataclasses.replace(data, groups=groups)
    spy = Spy(engine)
    result = grouped.evaluate(spy, metric="cosine", ks=SHORT_KS, ci=False)
    assert_reached(spy)
    assert_matches_reference(result, grouped.reference(metric="cosine", ks=SHORT_KS))


def test_the_result_records_the_engine_and_only_libraries_that_ran(engine):
    data = continuous_data(27, sizes=(120, 100, 80))
    spy = Spy(engine)
    result = data.evaluate(spy, metric="ip", ks=SHORT_KS, ci=False)
    recorded = result.environment["engine"]
    assert recorded["name"] == engine.name
    assert recorded["counters"] == spy.counters
    assert list(recorded["counters"]) == list(COUNTERS)
    assert ("faiss" in result.environment) == (spy.counters["faiss_searches"] > 0)


def test_unknown_engine_names_the_choices_and_old_spellings_work():
    with pytest.raises(UsageError, match="unknown engine 'fast'.*one-pass.*faiss.*dask"):
        ropebench.evaluate(embeddings=np.eye(4, dtype=np.float32), domains=list("PPVV"), product_ids=[0, 1, 0, 1],
                           engine="fast")
    assert get_engine("per-task").name == "faiss"
    assert get_engine("onepass").name == get_engine().name == "one-pass"
    assert set(engine_names()) >= {"one-pass", "faiss"}


def test_registered_engine_is_chosen_by_name(monkeypatch):
    monkeypatch.setattr(engines, "_REGISTRY", dict(engines._REGISTRY))  # leave the real registry alone

    class Recording(FaissEngine):
        name = "recording"
        calls = 0

        def search(self, *args, **kwargs):
            type(self).calls += 1
            return super().search(*args, **kwargs)

    register_engine("recording", Recording)
    assert "recording" in engine_names()
    data = continuous_data(28, sizes=(60, 50, 40))
    result = data.evaluate("recording", metric="ip", ks=SHORT_KS, ci=False)
    assert Recording.calls == 1
    assert result.environment["engine"]["name"] == "recording"
    assert result.to_json()["tasks"] == data.evaluate("faiss", metric="ip", ks=SHORT_KS, ci=False).to_json()["tasks"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 60), dim=st.sampled_from([7, 64, 128]), n_products=st.integers(1, 5), draw=st.data())
def test_copies_tie_in_tiny_blocks(n, dim, n_products, draw):
    """The default engine on tiny blocks (the small-block path): BLAS's small-matrix and
    matrix-vector kernels may round bit-identical rows differently at different positions, so
    such blocks are scored by the exact kernel, which scores each distinct row once."""
    seed = draw.draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    source = draw.draw(hnp.arrays(np.int64, n, elements=st.integers(-1, n - 1)), label="copy of")
    copies = np.flatnonzero(source >= 0)
    embeddings[copies] = embeddings[source[copies]]
    domains = np.array(["P", "V", "L"])[draw.draw(hnp.arrays(np.int8, n, elements=st.integers(0, 2)), label="domains")]
    products = draw.draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_products - 1)), label="products")
    data = Data(embeddings, domains, products, np.arange(n))
    spy = Spy(OnePassEngine())
    result = data.evaluate(spy, metric="ip", ks=(1, 5), ci=False)
    assert spy.counters["blocks_small"] > 0 and spy.counters["blocks_tiled"] == 0
    assert_matches_reference(result, data.reference(metric="ip", ks=(1, 5)))


def test_evaluate_dataset_leaves_the_dataset_intact():
    data = tied_data(29, "ip", sizes=(120, 100, 80), groups=True)
    dataset = ropebench.validate(**{k: v for k, v in data.arrays().items()}, metric="ip")
    from ropebench.evaluation import evaluate_dataset

    before = dataset.embeddings.copy()
    result = evaluate_dataset(dataset, metric="ip", ks=KS, engine=configured_engine("one-pass"), threads=2, ci=False)
    assert dataset.embeddings is not None and np.array_equal(dataset.embeddings, before)
    again = data.evaluate(configured_engine("one-pass"), metric="ip", ks=KS, ci=False)
    assert result.to_json()["tasks"] == again.to_json()["tasks"]
    assert result.per_query.equals(again.per_query)


@pytest.mark.skipif("faiss" not in ENGINE_NAMES, reason="no faiss engine")
def test_faiss_thread_setting_is_restored_when_the_search_loaded_faiss():
    """--threads applies to FAISS only inside the evaluation, also when FAISS is first imported there."""
    evaluate = ("import numpy as np, ropebench; "
                "ropebench.evaluate(embeddings=np.eye(6, dtype=np.float32), domains=list('PPVVLL'), "
                "product_ids=[0, 1, 0, 1, 0, 1], metric='ip', tasks='P2V', ks=(1,), threads=1, engine='faiss', "
                "ci=False); ")
    after = subprocess.run([sys.executable, "-c", evaluate + "import faiss; print(faiss.omp_get_max_threads())"],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    fresh = subprocess.run([sys.executable, "-c", "import faiss; print(faiss.omp_get_max_threads())"],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    assert after == fresh


@pytest.mark.slow
def test_default_engines_agree_at_a_quarter_of_rope_size():
    """ROPE-like data at ¼ size (23,045 items, d=128; -m slow): the default engines agree query
    for query, and exact rescoring stays under 1% of queries."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from rope_size import generate
    finally:
        sys.path.pop(0)
    embeddings, domains, products = generate(scale=0.25, dim=128)
    data = Data(embeddings, domains, products, np.arange(len(products)))
    spies = [Spy(get_engine(name)) for name in ENGINE_NAMES]
    results = [data.evaluate(spy, ci=False) for spy in spies]
    n_queries = sum(cells.n_queries for cells in results[0].tasks.values())
    for spy in spies:
        assert spy.counters["queries_rescored"] < 0.01 * n_queries, (spy.name, spy.counters)
    for other in results[1:]:
        assert results[0].to_json()["tasks"] == other.to_json()["tasks"]
        assert_same_per_query(results[0], other)


@pytest.mark.parametrize("settings_name", ["test", "default"])
def test_copies_tie_exactly_in_the_tiled_path(settings_name):
    """Bit-identical rows (copies, and power-of-two multiples under cosine) at different positions
    of a tile tie exactly. The tile GEMM scores them with different BLAS kernels, one ulp apart at
    times: before the band was settled pair by pair this lost ties (n_tied 26 instead of 31 in
    P2V at tile 64; 12 instead of 13 over all tasks at the default tile)."""
    rng = np.random.default_rng(1)
    n, dim = (1200, 12) if settings_name == "test" else (9000, 16)
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    domains = rng.choice(np.array(["P", "V", "L"]), n)
    products = rng.integers(0, n // 6, n)
    source = rng.choice(n, n // 15, replace=False)
    target = rng.choice(np.setdiff1d(np.arange(n), source), len(source), replace=False)
    embeddings[target] = embeddings[source] * rng.choice(np.array([1, 2, 4], np.float32), (len(source), 1))
    domains[target] = domains[source]
    tiled = OnePassEngine(TEST_SETTINGS) if settings_name == "test" else OnePassEngine()
    spy = Spy(tiled)
    first = ropebench.evaluate(embeddings=embeddings, domains=domains, product_ids=products, engine=spy, ci=False)
    assert spy.counters["blocks_tiled"] > 0
    second = ropebench.evaluate(embeddings=embeddings, domains=domains, product_ids=products,
                                engine=FaissEngine(), ci=False)  # copies within one FAISS block here
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert sum(cells.n_tied for cells in first.tasks.values()) > 0
