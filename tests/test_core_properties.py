"""FAISS path vs a plain float64 brute force, and invariances (hypothesis) over every metric."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ropebench
from tests.reference import reference_evaluate

KS = (1, 5, 10, 20, 50)
POLICIES = ("expected", "pessimistic", "optimistic")


def random_set(seed, n=400, n_products=40, dim=12, duplicates=True):
    rng = np.random.default_rng(seed)
    products = rng.integers(0, n_products, n)
    domains = rng.choice(["P", "V", "L"], n)
    centres = rng.normal(size=(n_products, dim))
    emb = (centres[products] + rng.normal(scale=1.2, size=(n, dim))).astype(np.float32)
    if duplicates:  # exact ties: copies of a few vectors across products and domains
        emb[::9] = emb[4]
        emb[1::13] = emb[7]
    groups = rng.integers(0, n // 3, n)
    return emb, domains, products, groups


def assert_same(result, reference, *, tol=1e-9):
    for task, cells in result.tasks.items():
        for key, value in cells.items():
            expected = reference[task][key]
            if value is None or expected is None:
                assert value == expected, (task, key)
            else:
                assert value == pytest.approx(expected, abs=tol), (task, key, value, expected)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("ties", POLICIES)
@pytest.mark.parametrize("grouped", [False, True])
def test_faiss_path_equals_float64_brute_force(metric, ties, grouped):
    emb, domains, products, groups = random_set(7)
    group_ids = groups if grouped else None
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, group_ids=group_ids,
                                metric=metric, ties=ties, per_query=True)
    reference = reference_evaluate(emb, domains, products, None if group_ids is None else list(group_ids),
                                   metric=metric, ties=ties)
    assert_same(result, reference)
    assert sum(r["n_tied"] for r in result.tasks.values()) > 0  # the duplicates did create ties
    # The per-query counts agree too (rows sorted by item_id = query order here).
    for task in result.tasks:
        mine = result.per_query[result.per_query["task"] == task][["a", "t", "p"]].to_numpy()
        np.testing.assert_array_equal(mine, np.array(reference[task]["counts"]).reshape(-1, 3))


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_integer_embeddings_with_massive_ties(metric):
    # Values in {-1, 0, 1}^3: 27 distinct vectors for 300 items, ties everywhere, including
    # tie blocks longer than FAISS's candidate list.
    rng = np.random.default_rng(3)
    n = 300
    emb = rng.integers(-1, 2, (n, 3)).astype(np.float32)
    domains, products = rng.choice(["P", "V", "L"], n), rng.integers(0, 25, n)
    for ties in POLICIES:
        result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, metric=metric, ties=ties)
        assert_same(result, reference_evaluate(emb, domains, products, metric=metric, ties=ties))


@pytest.mark.parametrize("ties", POLICIES)
def test_constant_embedding_scores_chance_never_100(ties):
    # Every score ties: a = 0, t = n_gallery - p. Expected R@K = 1 - C(t, K)/C(t + p, K);
    # pessimistic = 0 when t >= max K; optimistic = 100.
    rng = np.random.default_rng(5)
    n = 240
    domains, products = np.array(["P", "V"] * (n // 2)), rng.integers(0, 10, n)
    emb = np.ones((n, 4), dtype=np.float32)
    task = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, ties=ties,
                              tasks="P2V").tasks["P2V"]
    queries = np.flatnonzero(domains == "P")
    gallery_products = products[domains == "V"]
    for k in KS:
        chance = []
        for q in queries:
            p = int((gallery_products == products[q]).sum())
            t = len(gallery_products) - p
            if p:
                chance.append(1 - comb(t, k) / comb(t + p, k))
        expected = {"expected": 100 * np.mean(chance), "pessimistic": 0.0, "optimistic": 100.0}[ties]
        assert task[f"R@{k}"] == pytest.approx(expected, abs=1e-9)
    if ties == "expected":
        assert task["R@1"] < 20


# -- hypothesis: small sets with many ties -------------------------------------------------

small_sets = st.integers(min_value=0, max_value=2**31 - 1).map(
    lambda seed: (seed, np.random.default_rng(seed)))


def _draw(rng, n):
    emb = rng.integers(-2, 3, (n, 3)).astype(np.float32)
    emb[~emb.any(axis=1)] = 1.0  # no zero rows (cosine)
    return emb, rng.choice(["P", "V", "L"], n), rng.integers(0, 6, n), rng.integers(0, 8, n)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(small_sets, st.integers(8, 60), st.sampled_from(["cosine", "ip", "l2"]), st.sampled_from(POLICIES),
       st.booleans())
def test_row_order_never_changes_a_number(seeded, n, metric, ties, grouped):
    _, rng = seeded
    emb, domains, products, groups = _draw(rng, n)
    ids = np.array([f"item{i}" for i in range(n)], dtype=object)
    order = rng.permutation(n)
    kwargs = {"metric": metric, "ties": ties, "ks": (1, 2, 5), "per_query": True}
    first = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids,
                               group_ids=groups if grouped else None, **kwargs)
    second = ropebench.evaluate(embeddings=emb[order], domains=domains[order], product_ids=products[order],
                                item_ids=ids[order], group_ids=groups[order] if grouped else None, **kwargs)
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert first.per_query.equals(second.per_query)


@settings(max_examples=25, deadline=None)
@given(small_sets, st.integers(8, 60), st.sampled_from(["cosine", "ip", "l2"]), st.sampled_from(POLICIES))
def test_recall_is_non_decreasing_in_k_and_within_range(seeded, n, metric, ties):
    _, rng = seeded
    emb, domains, products, _ = _draw(rng, n)
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, metric=metric,
                                ties=ties, ks=(1, 2, 3, 5, 8, 13))
    for cells in result.tasks.values():
        values = [cells[f"R@{k}"] for k in (1, 2, 3, 5, 8, 13)]
        if values[0] is None:
            continue
        assert all(0.0 <= v <= 100.0 for v in values + [cells["MRR@13"]])
        assert values == sorted(values)
        assert cells["MRR@13"] <= values[-1] + 1e-9


@settings(max_examples=15, deadline=None)
@given(small_sets, st.integers(10, 80))
def test_prenormalised_input_gives_identical_numbers_under_cosine(seeded, n):
    _, rng = seeded
    emb = rng.normal(size=(n, 6)).astype(np.float32) * rng.uniform(0.1, 10, (n, 1)).astype(np.float32)
    domains, products = rng.choice(["P", "V", "L"], n), rng.integers(0, 6, n)
    unit = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    raw = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products)
    normalised = ropebench.evaluate(embeddings=unit, domains=domains, product_ids=products)
    assert raw.to_json()["tasks"] == normalised.to_json()["tasks"]
