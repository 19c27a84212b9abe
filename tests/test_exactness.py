"""Exact means float64-decided: data built to break float32 decisions, through every engine and
every composition, equal to the float64 reference (tests/reference.py) with zero differences;
and the certified bound itself, tried adversarially.

The planted data (:func:`near_tie_data`) has, under ``ip``, norms spread over 10³ and irrelevant
items of large norm scoring within float32 error of a query's best relevant score; under ``l2``,
every vector far from the origin; under ``cosine``, exact copies, power-of-two multiples and items
one ulp away from another product's items; groups throughout. Each data set is checked to be
adversarial: a plain float32 GEMM decides some of its comparisons differently from float64.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ropebench
from ropebench.engines.core import FP32, bound_for, exact_scores, tree_sum
from ropebench.engines.core.bound import pair_widths
from tests.catalogue_data import Distractors, ShuffledRunner, assert_same_numbers, combined, write_catalogue
from tests.conftest import Data, Spy, assert_matches_reference, assert_reached, configured_engine, continuous_data
from tests.reference import reference_evaluate

KS = (1, 2, 5, 10)
METRICS = ("ip", "l2", "cosine")


def _ulp_neighbour(rng: np.random.Generator, vector: np.ndarray, steps: int = 1) -> np.ndarray:
    """``vector`` with a few coordinates moved ``steps`` float32 ulps up or down."""
    out = vector.copy()
    for index in rng.choice(len(out), size=max(1, len(out) // 6), replace=False):
        for _ in range(steps):
            out[index] = np.nextafter(out[index], np.float32(np.inf) if rng.random() < 0.5 else np.float32(-np.inf))
    return out


def near_tie_data(seed: int, metric: str, sizes: tuple[int, int, int] = (180, 150, 120), dim: int = 24) -> Data:
    """Data planted with comparisons that float32 cannot decide (see the module docstring)."""
    rng = np.random.default_rng(seed)
    data = continuous_data(seed, sizes, n_products=30, dim=dim, noise=1.0, groups=True)
    emb = data.embeddings.astype(np.float32).copy()
    n = len(emb)
    if metric == "ip":
        emb *= (10.0 ** rng.uniform(0, 3, (n, 1))).astype(np.float32)  # norms spread over 10³
    if metric == "l2":
        emb += np.float32(4096.0)  # far from the origin: |q - g|² is a tiny difference of huge numbers
    other = data.products[:, None] != data.products[None, :]
    # Items one ulp (or a few) away from an item of another product, and exact copies.
    targets = rng.choice(n, size=n // 3, replace=False)
    for target in targets:
        source = rng.choice(np.flatnonzero(other[target]))
        kind = rng.random()
        if kind < 0.25:
            emb[target] = emb[source]
        elif kind < 0.4 and metric == "cosine":
            emb[target] = emb[source] * np.float32(rng.choice([0.5, 2.0, 4.0]))
        else:
            emb[target] = _ulp_neighbour(rng, emb[source], steps=int(rng.integers(1, 4)))
    if metric == "ip":
        # Irrelevant items of large norm whose score equals a query's best relevant score up to
        # float32 rounding: g = u · (s+ / q·u) for a random direction u, far larger than g+.
        queries = np.flatnonzero(data.domains == "P")[:40]
        gallery = np.flatnonzero(data.domains == "V")
        spare = rng.choice(np.setdiff1d(gallery, targets), size=len(queries), replace=False)
        for q, slot in zip(queries, spare):
            relevant = gallery[(data.products[gallery] == data.products[q]) & (gallery != slot)]
            if not len(relevant):
                continue
            best = (emb[relevant].astype(np.float64) @ emb[q].astype(np.float64)).max()
            u = rng.normal(size=dim)
            u *= np.sign(u @ emb[q]) or 1.0
            scale = best / (u @ emb[q].astype(np.float64))
            if abs(scale) * np.linalg.norm(u) > 50 * np.linalg.norm(emb[relevant], axis=1).max():
                emb[slot] = _ulp_neighbour(rng, (scale * u).astype(np.float32))
                data.products[slot] = data.products[q] + 1000  # irrelevant to everyone
    return dataclasses.replace(data, embeddings=emb)


def _float32_flips(data: Data, metric: str) -> int:
    """Queries whose first-hit counts a plain float32 GEMM gets wrong (the data is adversarial)."""
    reference = reference_evaluate(data.embeddings, data.domains, data.products, list(data.groups), metric=metric,
                                   ks=KS, tasks=("P2V", "V2V"))
    emb = data.embeddings.astype(np.float32)
    if metric == "cosine":
        emb = (emb / np.linalg.norm(emb.astype(np.float64), axis=1, keepdims=True)).astype(np.float32)
    flips = 0
    for task in ("P2V", "V2V"):
        qi, gi = np.flatnonzero(data.domains == task[0]), np.flatnonzero(data.domains == task[2])
        scores = emb[qi] @ emb[gi].T if metric != "l2" else -(
            (emb[qi] * emb[qi]).sum(1)[:, None] - 2 * emb[qi] @ emb[gi].T + (emb[gi] * emb[gi]).sum(1)[None, :])
        for row, q in enumerate(qi):
            if int(q) not in reference[task]["counts"]:
                continue
            eligible = gi != q
            if task[0] == task[2] and data.groups[q] is not None:
                eligible &= np.array([data.groups[j] != data.groups[q] for j in gi])
            relevant = (data.products[gi] == data.products[q]) & eligible
            best = scores[row][relevant].max()
            irrelevant = eligible & ~relevant
            counts = (int((scores[row][irrelevant] > best).sum()), int((scores[row][irrelevant] == best).sum()),
                      int((scores[row][relevant] == best).sum()))
            flips += counts != reference[task]["counts"][int(q)]
    return flips


@pytest.fixture(scope="module", params=METRICS)
def planted(request: pytest.FixtureRequest) -> tuple[str, Data, dict[str, Any]]:
    metric = request.param
    data = near_tie_data(31, metric)
    reference = data.reference(metric=metric, ks=KS)
    return metric, data, reference


def test_the_planted_data_breaks_float32_decisions(planted):
    metric, data, _ = planted
    assert _float32_flips(data, metric) > 0


def test_every_engine_equals_the_float64_reference(engine, planted):
    metric, data, reference = planted
    spy = Spy(engine)
    result = data.evaluate(spy, metric=metric, ks=KS, ci=False)
    assert_reached(spy)
    assert_matches_reference(result, reference)
    assert result.protocol["scores"] == "float64"
    assert spy.counters["pairs_settled"] > 0  # the near ties went through the float64 settlement


def _split(data: Data, seed: int) -> tuple[Data, Distractors]:
    """A quarter of the items (no group, so nothing about exclusions changes) moved to a catalogue."""
    rng = np.random.default_rng(seed)
    ungrouped = np.array([g is None for g in data.groups])
    moved = ungrouped & (rng.random(len(data.products)) < 0.5)
    kept = np.flatnonzero(~moved)
    distractors = Distractors(data.embeddings[moved], data.domains[moved], 900_000 + np.flatnonzero(moved))
    return data.take(kept), distractors


def _catalogue_split_matches_reference(engine: Any, planted: Any, runner: Any, tmp_path: Path) -> None:
    """The distractor composition on ``runner``: its counts equal one combined gallery's, which
    equal the float64 reference."""
    metric, data, _ = planted
    test, distractors = _split(data, 5)
    path = write_catalogue(tmp_path / "d.parquet", distractors, 17)
    result = ropebench.evaluate(**test.arrays(), distractors=[path], metric=metric, ks=KS, engine=engine,
                                shard_rows=17, ci=False, runner=runner)
    arrays = combined(test, distractors)
    single = ropebench.evaluate(**arrays, metric=metric, ks=KS, engine=engine, ci=False)
    assert_same_numbers(result, single)
    reference = reference_evaluate(arrays["embeddings"], arrays["domains"], arrays["product_ids"],
                                   arrays["group_ids"], metric=metric, ks=KS)
    for task in reference:
        reference[task]["counts"] = {int(arrays["item_ids"][row]): counts
                                     for row, counts in reference[task]["counts"].items()}
    assert_matches_reference(single, reference)


def test_a_catalogue_split_off_the_gallery_equals_the_float64_reference(engine, planted, tmp_path):
    """Every engine under the catalogue composition, shards answered in a shuffled order."""
    _catalogue_split_matches_reference(engine, planted, ShuffledRunner(3), tmp_path)


def test_a_catalogue_on_a_dask_cluster_equals_the_float64_reference(planted, tmp_path):
    """The shards on a Dask cluster of threads (the runner does not depend on the test set's engine,
    so the default engine runs the test set)."""
    pytest.importorskip("distributed")
    from ropebench.engines.dask import DaskRunner

    with DaskRunner(workers=2, processes=False) as runner:
        _catalogue_split_matches_reference(configured_engine("one-pass"), planted, runner, tmp_path)


def test_the_approximate_paths_exact_reference_is_float64_decided(planted):
    """With ``--index``, agreement is measured against exact counts from the core: on every
    sampled query they equal the float64 reference."""
    pytest.importorskip("faiss")
    from ropebench.engines.approximate import ApproximateEngine
    from ropebench.engines.base import SearchRequest
    from ropebench.engines.core import censor

    metric, data, reference = planted
    engine = ApproximateEngine("Flat", agreement_queries=10_000, metric=metric, ks=KS)
    task_data = data.task_data(metric)
    engine.search(SearchRequest(task_data, tuple(task_data), max_k=max(KS), symmetric_scores=metric != "l2"))
    for task, exact in engine.reference.items():
        rows = {task_data_index: item for task_data_index, item in
                enumerate(data.item_ids[data.domains == task[0]])}
        scored = np.flatnonzero(exact.scored)
        a, t, p, censored = censor(exact.a, exact.t, exact.p, exact.censored, max(KS))
        for slot, query in enumerate(scored):
            theirs = reference[task]["counts"][int(rows[query])]
            mine = (int(a[slot]), int(t[slot]), int(p[slot]))
            assert mine == theirs or (censored[slot] and theirs[0] >= max(KS)), (task, query, mine, theirs)


# -- the bound itself --------------------------------------------------------------------------


def _exact_dot(x: np.ndarray, y: np.ndarray) -> float:
    """The dot product of two float32 vectors, correctly rounded (products are exact in float64)."""
    return math.fsum((x.astype(np.float64) * y.astype(np.float64)).tolist())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.sampled_from([1, 3, 16, 128, 1000]), spread=st.floats(0, 6), cancel=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_the_fp32_band_holds_on_every_pair(dim, spread, cancel, seed):
    """|float32 GEMM − exact| <= the band's width for every pair, whatever the BLAS kernel: norms
    spread over 10^spread, long vectors, and near-cancelling pairs (y ≈ −x + small)."""
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(12, dim)) * 10.0 ** rng.uniform(-spread, spread, (12, 1))).astype(np.float32)
    y = (rng.normal(size=(9, dim)) * 10.0 ** rng.uniform(-spread, spread, (9, 1))).astype(np.float32)
    if cancel:
        y[:5] = (-x[:5] * np.float32(1.0001) + rng.normal(size=(5, dim)).astype(np.float32) * 1e-3)
    bound = bound_for("ip", dim, FP32)
    screened = x @ y.T  # numpy's float32 GEMM, the one-pass engine's kernel
    nx, ny = np.linalg.norm(x.astype(np.float64), axis=1), np.linalg.norm(y.astype(np.float64), axis=1)
    width = pair_widths(bound, nx[:, None], ny[None, :], screened.astype(np.float64))
    for i in range(len(x)):
        for j in range(len(y)):
            exact = _exact_dot(x[i], y[j])
            assert abs(float(screened[i, j]) - exact) <= width[i, j], (i, j, dim)
            # and one by one (a matrix-vector kernel, another summation order)
            single = float(np.dot(x[i], y[j]))
            assert abs(single - exact) <= width[i, j], (i, j, dim)


def assert_l2_band(emb: np.ndarray, precision: Any, multiply: Any) -> None:
    """Every pair's screened ``[x, 1]·[2y, −|y|²]`` minus ``|x|²`` (``multiply`` is the screening
    kernel) is within its band, plus the query's own term, of ``−|q − g|²`` evaluated exactly."""
    from ropebench.engines.core.bound import query_terms
    from ropebench.engines.core.scores import screen_norms, translated_norms
    from ropebench.engines.exact import l2_center, prepare_vectors

    center = l2_center(emb)
    queries, gallery = prepare_vectors(emb, "l2", center=center)
    screened = np.asarray(multiply(queries, gallery), dtype=np.float64)
    offsets = translated_norms(emb, center)
    bound = bound_for("l2", emb.shape[1], precision)
    nq, ng = screen_norms(queries, "l2", "queries"), screen_norms(gallery, "l2", "gallery")
    width = pair_widths(bound, nq[:, None], ng[None, :], screened)
    for i in range(len(emb)):
        for j in range(len(emb)):
            diff = emb[i].astype(np.float64) - emb[j].astype(np.float64)
            exact = -math.fsum((diff * diff).tolist())
            slack = query_terms(bound, nq[i:i + 1], np.array([exact]))[0]  # the threshold's own rounding
            assert abs(screened[i, j] - offsets[i] - exact) <= width[i, j] + slack, (i, j)


@settings(max_examples=100, deadline=None)
@given(dim=st.sampled_from([1, 5, 16, 128]), offset=st.sampled_from([0.0, 1e3, 1e5]), seed=st.integers(0, 2**32 - 1))
def test_the_l2_band_holds_far_from_the_origin(dim, offset, seed):
    """The float32-screened ``[x, 1]·[2y, −|y|²]`` minus ``|x|²`` is within its width of ``−|q − g|²``."""
    emb = (np.random.default_rng(seed).normal(size=(20, dim)) + offset).astype(np.float32)
    assert_l2_band(emb, FP32, lambda queries, gallery: queries @ gallery.T)


def test_the_float64_score_has_one_summation_order():
    """The same two vectors give the same bits in any position, and the tree order is the documented one."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 7)).astype(np.float32)
    gallery = np.repeat(rng.normal(size=(1, 7)).astype(np.float32), 5, axis=0)
    scores = exact_scores(x, gallery, np.zeros(5, dtype=np.int64), np.arange(5), "ip")
    assert len(set(scores.tolist())) == 1
    terms = (x[0].astype(np.float64) * gallery[0].astype(np.float64))
    by_hand = ((terms[0] + terms[4]) + (terms[2] + terms[6])) + ((terms[1] + terms[5]) + (terms[3] + 0.0))
    assert tree_sum(terms[None, :])[0] == by_hand == scores[0]


def test_integer_blocks_are_counted_without_settlement(tmp_path: Path):
    """Small integers under ip: every float32 score is exact, the band is a point, ties are
    counted as the screen sees them and nothing is settled."""
    from tests.conftest import configured_engine, tied_data

    data = tied_data(40, "ip")
    spy = Spy(configured_engine("one-pass"))
    result = data.evaluate(spy, metric="ip", ks=KS, ci=False)
    assert spy.counters["pairs_settled"] == 0
    assert sum(r.n_tied for r in result.tasks.values()) > 50
    assert_matches_reference(result, data.reference(metric="ip", ks=KS))
