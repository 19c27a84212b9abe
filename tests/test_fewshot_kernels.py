"""The few-shot kernels (ropebench/engines/kernels/fewshot.py, numba): every combined score at or
above its cut-off is found — counted in bulk above ``hi``, returned as a candidate in ``[lo, hi]`` —
whatever their bound skipped, against a brute force that forms every combination with the same
float32 operations; and the linear screen gives the numpy path's counts through them."""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ropebench.engines import fewshot_fused, fewshot_screen, kernels
from ropebench.engines.fewshot_screen import LinearSettings, linear_search

pytest.importorskip("numba")


def _combined(scores_of, support: np.ndarray, k: int, w: np.float32) -> np.float32:
    """``fl(w · fl(Σ ŝ))``, summed in support order: the kernels' float32 operations, one by one."""
    total = np.float32(scores_of(int(support[0])))
    for t in range(1, k):
        total = np.float32(total + np.float32(scores_of(int(support[t]))))
    return np.float32(w * total)


def _case(seed: int, n_queries: int, level: str):
    """A drawn support side (products of 1–7 items, ordered by size as the screen orders them), its
    tables for shot counts up to 6 (some products not ways, some weights 0), and float32 scores of
    both signs over 10^±6 with exact duplicates; cut-offs are chosen among the combined scores
    themselves (exact ties), ±inf, or spread ("low": most pairs pass the bound, "high": few do)."""
    rng = np.random.default_rng(seed)
    n_products = int(rng.integers(1, 9))
    sizes = np.sort(rng.integers(1, 8, n_products))
    codes = np.repeat(np.arange(n_products), sizes)
    side = fewshot_screen._Side(np.zeros((len(codes), 1), dtype=np.float32), codes, tile=len(codes))
    shots = sorted(rng.choice([1, 2, 3, 6], size=int(rng.integers(1, 6))).tolist())
    ways = []
    for k in shots:
        products = [p for p in range(n_products) if side.sizes[p] >= k and rng.random() < 0.85]
        rows = np.array([side.starts[p] + rng.choice(side.sizes[p], k, replace=False) for p in products],
                        dtype=np.int64).reshape(-1, k)
        w = rng.choice([0.0, 0.25, 1.0, 3.0, rng.uniform(0, 5)], size=len(products)).astype(np.float32)
        ways.append((rows, w))
    tables = fewshot_fused.tables(side.slot, side.starts, side.product_codes, shots, ways)
    magnitude = 10.0 ** rng.uniform(-6, 6, (n_queries, 1))
    scores = (rng.normal(size=(n_queries, len(codes))) * magnitude).astype(np.float32)
    scores[:, rng.random(len(codes)) < 0.2] = scores[:, :1]  # exact duplicates
    query_code = rng.integers(-1, n_products, n_queries)
    return rng, side, tables, scores, query_code, shots, level


def _reference(scores_of_query, tables, query_code, lo, hi, n_queries):
    """Every (query, product, column) formed: bulk counts and the candidates' (product, query,
    column, value)."""
    n_columns = len(tables.group_of)
    counts = np.zeros((n_queries, n_columns), dtype=np.int64)
    found = []
    for q in range(n_queries):
        for slot in range(len(tables.product_code)):
            if tables.product_code[slot] == query_code[q]:
                continue
            for j in range(n_columns):
                w = tables.weights[slot, j]
                if np.isnan(w):
                    continue
                k = int(tables.group_k[tables.group_of[j]])
                v = _combined(lambda t, q=q, slot=slot: scores_of_query(q, slot, t), tables.support[slot, j], k, w)
                if v >= lo[q, j]:
                    if v > hi[q, j]:
                        counts[q, j] += 1
                    else:
                        found.append((slot, q, j, float(v)))
    return counts, sorted(found)


def _cutoffs(rng, values: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray]:
    """``lo`` per (query, column) from the formed values (ties), ±inf or shifted; ``hi`` ≥ ``lo``."""
    finite = values[np.isfinite(values)]
    pick = rng.choice(finite, size=values.shape) if len(finite) else np.zeros(values.shape)
    quantile = {"low": 0.1, "high": 0.97}[level]
    spread = np.quantile(finite, quantile) if len(finite) else 0.0
    lo = np.where(rng.random(values.shape) < 0.5, pick, spread).astype(np.float32)
    lo[rng.random(values.shape) < 0.05] = np.inf
    lo[rng.random(values.shape) < 0.03] = -np.inf
    with np.errstate(invalid="ignore"):  # -inf + inf: NaN, replaced below
        hi = np.where(rng.random(values.shape) < 0.3, lo, lo + np.abs(lo) * rng.uniform(0, 1, values.shape))
    hi = np.where(rng.random(values.shape) < 0.1, np.inf, hi)
    hi = np.where(np.isnan(hi), np.inf, hi).astype(np.float32)
    return lo, np.maximum(hi, lo)


def _all_values(scores_of_query, tables, n_queries) -> np.ndarray:
    values = np.full((n_queries, len(tables.group_of)), np.nan, dtype=np.float32)
    for q in range(n_queries):
        for slot in range(len(tables.product_code)):
            for j in range(len(tables.group_of)):
                w = tables.weights[slot, j]
                if not np.isnan(w):
                    k = int(tables.group_k[tables.group_of[j]])
                    values[q, j] = _combined(lambda t, q=q, slot=slot: scores_of_query(q, slot, t),
                                             tables.support[slot, j], k, w)
    return values


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_queries=st.integers(1, 90), level=st.sampled_from(["low", "high"]))
def test_the_rows_pass_finds_every_combined_score_at_or_above_its_cut_off(seed, n_queries, level):
    """X2Y: queries are rows, support products slot-major columns; bulk counts and candidates equal
    the brute force's, exact ties at ``lo`` and ``hi`` included."""
    rng, side, tables, scores, query_code, shots, level = _case(seed, n_queries, level)
    inter = fewshot_fused.interleave([side.runs(0, len(side.codes))], side.starts, np.array([0, len(side.codes)]))
    assert sorted(inter.order.tolist()) == list(range(len(side.codes)))

    def of(q: int, slot: int, t: int) -> np.float32:
        return scores[q, side.starts[slot] + t]

    lo, hi = _cutoffs(rng, _all_values(of, tables, n_queries), level)
    counts = np.zeros(lo.shape, dtype=np.int64)
    formed = np.zeros(1, dtype=np.int64)
    laid_out = np.ascontiguousarray(scores[:, inter.order])  # tile column c: the side's item inter.order[c]
    with mock.patch.object(fewshot_fused, "CAPACITY", 1 if seed % 2 else fewshot_fused.CAPACITY):
        product, query, column, value = fewshot_fused.run_rows(laid_out, inter.runs[0], tables, query_code, lo, hi,
                                                               counts, formed)
    expected_counts, expected = _reference(of, tables, query_code, lo, hi, n_queries)
    assert np.array_equal(counts, expected_counts)
    assert sorted(zip(product.tolist(), query.tolist(), column.tolist(), value.tolist(), strict=True)) == expected
    assert formed[0] <= n_queries * tables.weights.size


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_queries=st.integers(1, 300), level=st.sampled_from(["low", "high"]))
def test_the_columns_pass_finds_every_combined_score_at_or_above_its_cut_off(seed, n_queries, level):
    """Y2X: queries are columns, support products runs of rows; query by query where few pass the
    bound, every query vectorised where many do (both reached: "high" and "low" cut-offs)."""
    rng, side, tables, scores, query_code, shots, level = _case(seed, n_queries, level)
    tile = np.ascontiguousarray(scores.T)  # rows: the side's items in order

    def of(q: int, slot: int, t: int) -> np.float32:
        return tile[side.starts[slot] + t, q]

    values = _all_values(of, tables, n_queries)
    lo, hi = _cutoffs(rng, values, level)
    counts = np.zeros(lo.T.shape, dtype=np.int64)
    formed = np.zeros(1, dtype=np.int64)
    products = fewshot_fused.row_products(side.starts, side.slot, 0, len(side.codes))
    # Outputs with room for one candidate on odd seeds: the pass runs again with room for all.
    with mock.patch.object(fewshot_fused, "CAPACITY", 1 if seed % 2 else fewshot_fused.CAPACITY):
        product, query, column, value = fewshot_fused.run_columns(
            tile, products, tables, query_code, np.ascontiguousarray(lo.T), np.ascontiguousarray(hi.T), counts,
            formed)
    expected_counts, expected = _reference(of, tables, query_code, lo, hi, n_queries)
    assert np.array_equal(counts.T, expected_counts)
    assert sorted(zip(product.tolist(), query.tolist(), column.tolist(), value.tolist(), strict=True)) == expected


def test_the_bound_skips_most_pairs_on_rope_like_data():
    """On ROPE-like data (benchmarks/rope_size.py at 2%) the kernels form a small share of the
    combined scores the numpy path forms (the counter bounds the bound's work), with the same counts."""
    import sys
    from pathlib import Path

    from tests.test_fewshot_linear import _same_hits, _tasks

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rope_size import generate

    emb, domains, products = generate(scale=0.02)
    ids = np.array([f"i{i}" for i in range(len(emb))], dtype=object)
    names, task_data, columns = _tasks(emb, domains, products, ids, "cosine", shots=(1, 5), draws=3)
    fused = linear_search(task_data, columns, max_k=5, settings=LinearSettings(fused=True))
    plain = linear_search(task_data, columns, max_k=5, settings=LinearSettings(fused=False))
    assert fused is not None and plain is not None
    _same_hits(fused.hits, plain.hits, names)
    assert 0 < fused.counters["prototype_scores_formed"] <= 0.5 * plain.counters["prototype_scores_formed"]
    for name in ("pairs_settled", "relevant_settled", "prototype_pairs_bulk", "prototype_pairs_decided"):
        assert fused.counters[name] == plain.counters[name], name


def test_outputs_grow_when_a_tile_has_more_candidates_than_room(monkeypatch):
    """Through the screen, on planted near-ties: a pass whose candidates overflow its outputs runs
    again with room for all (its bulk counts not doubled): the numpy path's counts."""
    from tests.test_fewshot_linear import _near_ties, _same_hits, _tasks

    monkeypatch.setattr(fewshot_fused, "CAPACITY", 1)
    names, task_data, columns = _tasks(*_near_ties(8, "ip"), "ip")
    small = dict(rows=16, columns=24)
    fused = linear_search(task_data, columns, max_k=5, settings=LinearSettings(**small, fused=True))
    plain = linear_search(task_data, columns, max_k=5, settings=LinearSettings(**small, fused=False))
    assert fused is not None and plain is not None and fused.counters["prototype_pairs_decided"] > 1
    _same_hits(fused.hits, plain.hits, names)


def test_asking_for_the_kernels_without_numba_says_how_to_install_them(monkeypatch):
    from tests.test_fewshot import uneven_data
    from tests.test_fewshot_linear import _tasks

    names, task_data, columns = _tasks(*uneven_data(3), "cosine")
    monkeypatch.setattr(kernels, "_AVAILABLE", [False])
    with pytest.raises(ImportError, match=r"few-shot kernels: numba is needed, pip install 'ropebench\[fast\]'"):
        linear_search(task_data, columns, max_k=5, settings=LinearSettings(fused=True))
    assert linear_search(task_data, columns, max_k=5) is not None  # by default: the numpy path


def _one_product_count(item: np.ndarray, w: np.float32, direction: str) -> tuple[int, np.float32, Any]:
    """One product of three items scored ``item``, one 3-shot column of weight ``w`` summing them in
    order, a query of another product with its cut-off at the combined score itself and its bulk
    level below it: the kernel's bulk count for it (1 unless the bound skipped it), the combined
    score and the tables."""
    side = fewshot_screen._Side(np.zeros((3, 1), dtype=np.float32), np.zeros(3, dtype=np.int64), tile=3)
    tables = fewshot_fused.tables(side.slot, side.starts, side.product_codes, [3],
                                  [(np.array([[0, 1, 2]]), np.array([w], dtype=np.float32))])
    value = _combined(lambda t: item[t], tables.support[0, 0], 3, w)
    lo = np.full((1, 1), value, dtype=np.float32)
    hi = np.full((1, 1), np.nextafter(value, np.float32(-np.inf)), dtype=np.float32)
    counts = np.zeros((1, 1), dtype=np.int64)
    formed = np.zeros(1, dtype=np.int64)
    codes = np.array([5])
    if direction == "rows":
        inter = fewshot_fused.interleave([side.runs(0, 3)], side.starts, np.array([0, 3]))
        fewshot_fused.run_rows(item[inter.order][None, :].copy(), inter.runs[0], tables, codes, lo, hi, counts,
                               formed)
    else:
        products = fewshot_fused.row_products(side.starts, side.slot, 0, 3)
        fewshot_fused.run_columns(item[:, None].copy(), products, tables, codes, lo, hi, counts, formed)
    return int(counts[0, 0]), value, tables


@pytest.mark.parametrize("direction", ["rows", "columns"])
def test_the_margin_covers_a_sum_rounded_above_its_bound(direction):
    """Supports scored 1, 0.6 ulp, 0.6 ulp summed in that order round up twice (1 + 2 ulp) while
    ``m₁ + 2 m₂`` rounds once (1 + 1 ulp): a cut-off at the sum itself is reached, and only the
    bound's margin keeps the product from being skipped."""
    ulp = np.float32(2.0 ** -23)
    item = np.array([1.0, 0.6 * ulp, 0.6 * ulp], dtype=np.float32)
    count, value, _ = _one_product_count(item, np.float32(1.0), direction)
    assert value == np.float32(1) + 2 * ulp > np.float32(np.float32(1) + np.float32(2 * item[1]))
    assert count == 1


@pytest.mark.parametrize("direction", ["rows", "columns"])
def test_the_bound_covers_products_that_underflow(direction):
    """Supports scored 2⁻¹²³, 0.625 ulp, 0.625 ulp sum one ulp above ``fl(m₁ + 2 m₂)`` (as above), and a
    weight near 2⁻¹⁰ puts ``w · Σ ŝ`` among the subnormals, where the products round by an absolute
    half of 2⁻¹⁴⁹ (here ``v`` one step above ``fl(w T̂)``) and the relative margin ``w c_k a`` rounds
    to 0: the bound must still reach ``v``."""
    item = np.array([2.0 ** -123, 5 * 2.0 ** -149, 5 * 2.0 ** -149], dtype=np.float32)
    w = np.float32((2 ** 23 + 62) * 2.0 ** -33)
    count, value, tables = _one_product_count(item, w, direction)
    top = np.float32(item[0] + np.float32(2 * item[1]))
    assert value > np.float32(w * top) > 0 and np.float32(w * np.float32(tables.group_margin[0] * item[0])) == 0
    assert count == 1


def test_the_kernels_combine_by_default_only_on_large_tasks(monkeypatch):
    """By default (``fused`` None) the kernels run from ``FUSED_SCORES`` (query, prototype) scores on
    (importing numba and loading them cost about half a second), numpy below: every combined score
    formed on small data, fewer once the threshold is lowered; the same counts."""
    from tests.test_fewshot_linear import _near_ties, _same_hits, _tasks

    names, task_data, columns = _tasks(*_near_ties(8, "cosine"), "cosine")
    small = LinearSettings(rows=16, columns=24)
    plain = linear_search(task_data, columns, max_k=5, settings=small)
    monkeypatch.setattr(fewshot_screen, "FUSED_SCORES", 0)
    fused = linear_search(task_data, columns, max_k=5, settings=small)
    assert plain is not None and fused is not None
    _same_hits(fused.hits, plain.hits, names)
    assert fused.counters["prototype_scores_formed"] < plain.counters["prototype_scores_formed"]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dim=st.sampled_from([1, 5, 16, 17, 128, 130]), n=st.integers(0, 40))
def test_own_scores_sums_in_its_stated_order_within_the_band(seed, dim, n):
    """The thresholds' compiled dot products: coordinate t into partial sum t mod 16, the tail after
    them, then the partial sums in order, in float32 (the same bits on every CPU: no fastmath); within
    γ_d Σ|x_i y_i| of the exact dot product, the band's accumulation term."""
    from ropebench.engines.core.precision import U32, gamma
    from ropebench.engines.kernels.fewshot import LANES, own_scores

    rng = np.random.default_rng(seed)
    queries = (rng.normal(size=(9, dim)) * 10.0 ** rng.uniform(-3, 3, (9, 1))).astype(np.float32)
    gallery = (rng.normal(size=(4, dim)) * 10.0 ** rng.uniform(-3, 3, (4, 1))).astype(np.float32)
    rows, own = rng.integers(0, 9, n), rng.integers(0, 4, n)
    found = own_scores(queries, rows, gallery, own)
    whole = dim - dim % LANES
    for i in range(n):
        a, b = queries[rows[i]], gallery[own[i]]
        lanes = [np.float32(0)] * LANES
        for t in range(whole):
            lanes[t % LANES] = np.float32(lanes[t % LANES] + np.float32(a[t] * b[t]))
        total = np.float32(0)
        for t in range(whole, dim):
            total = np.float32(total + np.float32(a[t] * b[t]))
        for lane in lanes:
            total = np.float32(total + lane)
        assert found[i].tobytes() == total.tobytes()
        exact = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
        assert abs(float(found[i]) - exact) <= gamma(dim + 1, U32) * float(np.abs(a.astype(np.float64) * b).sum())
