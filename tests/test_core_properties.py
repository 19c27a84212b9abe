"""The protocol's properties, through every registered engine at sizes that reach its real paths
(tiles for one-pass, several FAISS batches and truncated candidate lists for faiss): a plain
float64 brute force agrees query for query, row order and pre-normalisation change nothing, the
per-query table averages to the aggregates, and the engines agree with each other.

The ``engine`` argument is parametrized in tests/conftest.py; :func:`assert_reached` fails a run
that only took a shortcut.
"""

from __future__ import annotations

import functools
import math
from math import comb

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import (
    ENGINE_NAMES,
    KS,
    POLICIES,
    SHORT_KS,
    SIMILARITIES,
    Data,
    Spy,
    assert_matches_reference,
    assert_reached,
    assert_same_per_query,
    configured_engine,
    continuous_data,
    drawn_data,
    resized,
    tied_data,
)

SIZES = st.sampled_from([4, 16, 64])  # one-pass tile / estimate batch / band cap; FAISS query batch - 1


def examples(n: int) -> settings:
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@functools.cache
def _continuous(metric: str) -> tuple[Data, dict]:
    data = continuous_data(11, groups=True)
    return data, data.reference(metric=metric, ties="expected", ks=SHORT_KS)


@functools.cache
def _tied(metric: str, ties: str) -> tuple[Data, dict]:
    data = tied_data(12, metric, groups=True)
    return data, data.reference(metric=metric, ties=ties, ks=KS)


def assert_columns_average_to_measures(result) -> None:
    """A per-query column's exactly rounded mean over a task is the task's number, bit for bit."""
    table = result.per_query
    tasks = table.column("task").to_pylist()
    for name in result.measure_names:
        column = table.column(name).to_pylist()
        for task, cells in result.tasks.items():
            values = [value for value, row_task in zip(column, tasks) if row_task == task]
            assert len(values) == cells.n_queries, task
            if values:
                assert math.fsum(values) / len(values) == cells[name], (task, name)
            else:
                assert cells[name] is None, (task, name)


# -- the float64 brute force, query for query ---------------------------------------------------


@pytest.mark.parametrize("metric", SIMILARITIES)
def test_float64_reference_on_continuous_data_with_groups(engine, metric):
    data, reference = _continuous(metric)
    spy = Spy(engine)
    result = data.evaluate(spy, metric=metric, ks=SHORT_KS, ci=False)
    assert_reached(spy)
    # Float32 may order a float64 near tie either way; those queries are left out, and are few.
    assert_matches_reference(result, reference)
    assert sum(r.n_skipped for r in result.tasks.values()) > 0  # the data has unanswerable queries
    assert result.protocol["group_exclusion"] is True
    assert result.environment["engine"]["name"] == engine.name


@pytest.mark.parametrize("ties", POLICIES)
@pytest.mark.parametrize("metric", SIMILARITIES)
def test_float64_reference_on_tied_data_under_every_policy(engine, metric, ties):
    data, reference = _tied(metric, ties)
    spy = Spy(engine)
    result = data.evaluate(spy, metric=metric, ties=ties, ks=KS, ci=False)
    assert_reached(spy)
    assert_matches_reference(result, reference)
    assert sum(r.n_tied for r in result.tasks.values()) > 50  # the ties are real
    if metric == "cosine":
        # Normalised integer vectors are not integers: their ties sit inside the band and are
        # settled in float64 (under ip and l2 the float32 screen of these integers is exact).
        assert spy.counters["pairs_settled"] > 0
    assert_columns_average_to_measures(result)


@pytest.mark.parametrize("ties", POLICIES)
def test_constant_embedding_scores_chance_never_100(engine, ties):
    # Every score ties: a = 0, t = n_gallery - p. Expected R@K = 1 - C(t, K)/C(t + p, K);
    # pessimistic = 0 once t >= K; optimistic = 100.
    rng = np.random.default_rng(5)
    n = 480
    domains, products = np.array(["P", "V"] * (n // 2)), rng.integers(0, 10, n)
    data = Data(np.ones((n, 4), dtype=np.float32), domains, products, np.arange(n))
    spy = Spy(engine)
    task = data.evaluate(spy, ties=ties, tasks="P2V", ci=False).tasks["P2V"]
    assert_reached(spy)
    gallery_products = products[domains == "V"]
    for k in KS:
        chance = []
        for q in np.flatnonzero(domains == "P"):
            p = int((gallery_products == products[q]).sum())
            t = len(gallery_products) - p
            chance.append(1 - comb(t, k) / comb(t + p, k))
        expected = {"expected": 100 * np.mean(chance), "pessimistic": 0.0, "optimistic": 100.0}[ties]
        assert task[f"R@{k}"] == pytest.approx(expected, abs=1e-9)
    assert task.n_tied == task.n_queries == n // 2
    if ties == "expected":
        assert task["R@1"] < 20


def test_a_domain_without_items(engine):
    """Tasks reading a domain with no items have no query (all numbers None) or no gallery (all
    queries skipped); the other tasks are unchanged."""
    data = tied_data(13, "ip").without_domain("L")
    spy = Spy(engine)
    result = data.evaluate(spy, metric="ip", ks=SHORT_KS, ci=False)
    assert_reached(spy)
    assert_matches_reference(result, data.reference(metric="ip", ks=SHORT_KS))
    for task in ("L2P", "L2V", "L2L"):
        assert result.tasks[task].n_queries == result.tasks[task].n_skipped == 0
        assert result.tasks[task]["R@1"] is None
    for task in ("P2L", "V2L"):
        assert result.tasks[task].n_queries == 0 and result.tasks[task].n_skipped > 0
        assert result.tasks[task].n_gallery == 0


@examples(25)
@given(data=st.sampled_from(SIMILARITIES).flatmap(lambda m: st.tuples(st.just(m), drawn_data(m))),
       ties=st.sampled_from(POLICIES), size=SIZES)
def test_float64_reference_on_drawn_data(engine, data, ties, size):
    """Query for query against the brute force; on the way: every number in [0, 100], R@K
    non-decreasing in K, MRR below R@max K, and the per-query columns averaging to the numbers."""
    metric, drawn = data
    ks = (1, 2, 3, 5, 8)
    result = drawn.evaluate(resized(engine, size), metric=metric, ties=ties, ks=ks, threads=1, ci=False)
    assert_matches_reference(result, drawn.reference(metric=metric, ties=ties, ks=ks))
    for cells in result.tasks.values():
        values = [cells[f"R@{k}"] for k in ks]
        if values[0] is not None:
            assert all(0.0 <= v <= 100.0 for v in values + [cells["MRR@8"]])
            assert values == sorted(values)
            assert cells["MRR@8"] <= values[-1]
    assert_columns_average_to_measures(result)


# -- invariances --------------------------------------------------------------------------------


@examples(15)
@given(metric=st.sampled_from(SIMILARITIES), ties=st.sampled_from(POLICIES), size=SIZES, draw=st.data())
def test_row_order_never_changes_a_number(engine, metric, ties, size, draw):
    data = draw.draw(drawn_data(metric), label="data")
    # Two threads run the one-pass worker pool (tiles finishing in any order); FAISS's own
    # threads are not ropebench code, and slow on shared cores.
    threads = draw.draw(st.sampled_from([1, 2]), label="threads") if engine.name == "one-pass" else 1
    order = np.array(draw.draw(st.permutations(range(len(data.products))), label="order"), dtype=np.int64)
    engine = resized(engine, size)
    options = {"metric": metric, "ties": ties, "ks": SHORT_KS, "threads": threads, "ci": False}
    first = data.evaluate(engine, **options)
    second = data.take(order).evaluate(engine, **options)
    assert first.to_json()["tasks"] == second.to_json()["tasks"]  # every count and number, bit for bit
    assert first.per_query.equals(second.per_query)  # rows in item_id order, whatever the input order


MISSES = {
    # Item 0 (ip score +1) has its only relevant item at -1, below 8 items at +1 and tied with 8
    # at -1 (one-pass with a band cap of 4: censored or band-capped first, by tile order).
    "band": (np.array([1.0, -1.0] + [-1.0] * 8 + [1.0] * 8), np.array([1, 1, *range(2, 18)])),
    # Hypothesis's shrunk case for FAISS: which tied rows fill its candidate list depends on
    # their order, and with them whether the miss is proven from the list.
    "list": (np.array([0.13, -0.13, -0.13, 0.13, 0.13, 0.13, 0.13, 0.13]), np.array([1, 1, 0, 0, 0, 0, 0, 0])),
}


@pytest.mark.parametrize("case", list(MISSES))
def test_a_query_missing_at_every_k_has_one_per_query_row_whatever_the_order(engine, case):
    """Whether an engine proves early that item 0 misses at every K (censored: a = max K,
    t = 0) or counts it out must not depend on the input's row order: the per-query file is a
    result too, and its measures are the same either way."""
    values, products = MISSES[case]
    data = Data(values.astype(np.float32)[:, None], np.array(["P"] * len(values)), products, np.arange(len(values)))
    engine = resized(engine, 4)
    options = {"metric": "ip", "tasks": "P2P", "ks": SHORT_KS, "threads": 1, "ci": False}
    expected = data.evaluate(engine, **options)
    rng = np.random.default_rng(0)
    rows = set()
    for _ in range(8):
        result = data.take(rng.permutation(len(values))).evaluate(engine, **options)
        assert result.tasks == expected.tasks
        rows.add(tuple(result.per_query.column(name)[0].as_py() for name in ("a", "t", "p", "censored")))
    assert len(rows) == 1, rows


def test_row_order_never_changes_a_number_or_an_interval(engine):
    """The seeded larger case, with the bootstrap intervals on: bit for bit."""
    data = continuous_data(14, groups=True)
    order = np.random.default_rng(0).permutation(len(data.products))
    spy = Spy(engine)
    first = data.evaluate(spy, metric="cosine", ks=SHORT_KS)
    second = data.take(order).evaluate(spy, metric="cosine", ks=SHORT_KS)
    assert_reached(spy)
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert all(cells.ci is not None for cells in first.tasks.values() if cells.n_queries)
    assert first.per_query.equals(second.per_query)


@examples(10)
@given(size=SIZES, draw=st.data())
def test_prenormalised_input_gives_identical_numbers_under_cosine(engine, size, draw):
    data = draw.draw(drawn_data("cosine", min_items=10), label="data")
    # A positive scale per item (every copy of a direction keeps its power-of-two relation).
    scale = np.exp2(draw.draw(st.lists(st.integers(-3, 3), min_size=len(data.products),
                                       max_size=len(data.products)), label="scales"))
    raw = data.embeddings.astype(np.float64) * scale[:, None]
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    engine = resized(engine, size)
    first = data.with_embeddings(raw.astype(np.float32)).evaluate(engine, ks=SHORT_KS, threads=1, ci=False)
    second = data.with_embeddings(unit.astype(np.float32)).evaluate(engine, ks=SHORT_KS, threads=1, ci=False)
    assert first.to_json()["tasks"] == second.to_json()["tasks"]


# -- the engines agree with each other, query for query ---------------------------------------


@pytest.mark.skipif(len(ENGINE_NAMES) < 2, reason="one engine registered")
@examples(15)
@given(metric=st.sampled_from(SIMILARITIES), size=SIZES, draw=st.data())
def test_engines_agree_query_for_query_on_drawn_data(metric, size, draw):
    data = draw.draw(drawn_data(metric, max_items=200), label="data")
    results = [data.evaluate(configured_engine(name, size), metric=metric, ks=SHORT_KS, threads=1, ci=False)
               for name in ENGINE_NAMES]
    for other in results[1:]:
        assert results[0].to_json()["tasks"] == other.to_json()["tasks"]
        assert_same_per_query(results[0], other)


@pytest.mark.skipif(len(ENGINE_NAMES) < 2, reason="one engine registered")
@pytest.mark.parametrize("metric", SIMILARITIES)
@pytest.mark.parametrize("kind", ["continuous", "tied"])
def test_engines_agree_query_for_query(metric, kind):
    data = continuous_data(15, groups=True) if kind == "continuous" else tied_data(16, metric, groups=True)
    spies = [Spy(configured_engine(name)) for name in ENGINE_NAMES]
    results = [data.evaluate(spy, metric=metric, ks=KS, ci=False) for spy in spies]
    for spy in spies:
        assert_reached(spy)
    for other in results[1:]:
        assert results[0].to_json()["tasks"] == other.to_json()["tasks"]
        assert_same_per_query(results[0], other)


@pytest.mark.slow
@pytest.mark.skipif(len(ENGINE_NAMES) < 2, reason="one engine registered")
@examples(300)
@given(metric=st.sampled_from(SIMILARITIES), ties=st.sampled_from(POLICIES), size=SIZES, draw=st.data())
def test_engines_agree_on_many_drawn_cases(metric, ties, size, draw):
    """The drawn comparison at depth (-m slow): more cases and larger data."""
    data = draw.draw(drawn_data(metric, max_items=400, max_dim=8), label="data")
    results = [data.evaluate(configured_engine(name, size), metric=metric, ties=ties, ks=SHORT_KS, threads=1,
                             ci=False) for name in ENGINE_NAMES]
    assert_matches_reference(results[0], data.reference(metric=metric, ties=ties, ks=SHORT_KS))
    for other in results[1:]:
        assert results[0].to_json()["tasks"] == other.to_json()["tasks"]
        assert_same_per_query(results[0], other)
