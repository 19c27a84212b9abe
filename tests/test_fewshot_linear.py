"""The few-shot linear screen (ropebench/engines/fewshot_screen.py): its band (core/combine.py) tried
adversarially, and its counts equal to the per-task path's — the reference — number for number, on
uneven data, planted near-ties between prototypes, spread norms, shuffled rows and 1 or 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ropebench
import ropebench.evaluation as evaluation
from ropebench.engines import fewshot_screen, kernels
from ropebench.engines.core import FP32, bound_for, exact_scores
from ropebench.engines.core.bound import pair_widths
from ropebench.engines.core.combine import combination_bound, combination_weights, effective_norms
from ropebench.engines.core.decide import censor
from ropebench.engines.exact import prepare_vectors
from ropebench.engines.fewshot_screen import LinearSettings, linear_applies, linear_search
from ropebench.engines.onepass import OnePassSettings, one_pass_first_hits
from ropebench.fewshot import FewshotSpec, fewshot_tasks, prototypes, support_columns
from ropebench.protocol import DOMAINS
from ropebench.tasks import build_task_data, prepare_domains
from tests.test_fewshot import uneven_data

# -- the band ---------------------------------------------------------------------------------------


def _supports(rng: np.random.Generator, dim: int, k: int, spread: float, kind: str) -> np.ndarray:
    """``k`` float32 supports: independent with norms over 10^±spread, near-duplicates of one vector
    (a few ulps apart), or nearly cancelling pairs (their sum far smaller than each)."""
    base = rng.normal(size=(k, dim)) * 10.0 ** rng.uniform(-spread, spread, (k, 1))
    if kind == "duplicates":
        base = base[:1] * (1 + rng.normal(size=(k, dim)) * 1e-7)
    elif kind == "cancel" and k > 1:
        base[1::2] = -base[0:-1:2][: len(base[1::2])] * (1 + 1e-4) + rng.normal(size=(len(base[1::2]), dim)) * 1e-3
    return base.astype(np.float32)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.sampled_from([1, 3, 16, 128, 600]), k=st.integers(1, 6), spread=st.floats(0, 5),
       kind=st.sampled_from(["independent", "duplicates", "cancel"]), metric=st.sampled_from(["cosine", "ip"]),
       extra=st.integers(0, 7), seed=st.integers(0, 2**32 - 1))
def test_the_combined_band_holds_on_every_pair(dim, k, spread, kind, metric, extra, seed):
    """|combined screen − float64 score of (q, float32 prototype)| <= the band, for every pair,
    combined as the screen does (float32 GEMM of the supports, then a float32 product with the
    weights, zeros for the product's other items) and in a second summation order."""
    rng = np.random.default_rng(seed)
    n_protos = 4
    raw = np.concatenate([_supports(rng, dim, k, spread, kind) for _ in range(n_protos)])
    items, _ = prepare_vectors(raw, metric)
    positions = np.arange(n_protos * k).reshape(n_protos, k)
    means = prototypes(items, positions, metric)
    assume(metric == "ip" or bool(np.any(means != 0, axis=1).all()))  # a zero mean has no direction
    gallery, _ = prepare_vectors(means, metric)  # the float32 prototypes
    queries, _ = prepare_vectors((rng.normal(size=(7, dim)) * 10.0 ** rng.uniform(-spread, spread, (7, 1))
                                  ).astype(np.float32), metric)
    weights = combination_weights(gallery, items, positions)
    terms = k + extra  # the product's other items enter the combination with weight 0
    norms = effective_norms(gallery, items, positions, weights, terms)
    bound = combination_bound(dim, float(np.abs(weights).max()), terms)
    matrix = np.zeros((n_protos * k + extra, n_protos), dtype=np.float32)
    for j in range(n_protos):
        matrix[positions[j], j] = weights[j]
    items_all = np.concatenate([items, rng.normal(size=(extra, dim)).astype(np.float32)])
    scores = queries @ items_all.T
    combined = [scores @ matrix, (matrix.T @ scores.T).T]
    q_norm = np.sqrt(np.einsum("ij,ij->i", queries.astype(np.float64), queries.astype(np.float64)))
    for i in range(len(queries)):
        exact = exact_scores(queries, gallery, np.full(n_protos, i), np.arange(n_protos), metric)
        for values in combined:
            width = pair_widths(bound, np.full(n_protos, q_norm[i]), norms, values[i].astype(np.float64))
            assert (np.abs(values[i].astype(np.float64) - exact) <= width).all(), (i, values[i], exact, width)


def test_the_combined_band_is_the_plain_band_for_one_ip_shot():
    """Tight: a one-shot ip prototype is its support (w = 1, nothing to round), and its band is the
    plain pair band of numpy's float32 GEMM plus the combination's own rounding (K = 3 terms)."""
    rng = np.random.default_rng(3)
    dim = 128
    items = rng.normal(size=(5, dim)).astype(np.float32)
    positions = np.arange(5)[:, None]
    gallery = prototypes(items, positions, "ip")
    weights = combination_weights(gallery, items, positions)
    assert (weights == 1).all() and (gallery == items).all()
    norms = effective_norms(gallery, items, positions, weights, 3)
    item_norms = np.linalg.norm(items.astype(np.float64), axis=1)
    plain = bound_for("ip", dim, FP32).pair * item_norms
    assert (norms >= plain).all()
    assert (norms <= plain * (1 + 3.5 / dim)).all()


@pytest.mark.parametrize("offset", [1e-6, 1e-4, 1e-2])
def test_the_combined_band_covers_a_prototype_off_its_supports(offset):
    """The band's ``|p − w Σ y_i|`` term: a prototype moved ``offset`` off the span of its supports
    (orthogonally, so no weight can absorb it), scored by a query along the move, is still within
    the band of the score screened from the supports — and only about ``offset · |q|`` wider."""
    rng = np.random.default_rng(5)
    dim, k = 16, 3
    items = rng.normal(size=(k, dim)).astype(np.float32)
    positions = np.arange(k)[None, :]
    mean = items.astype(np.float64).mean(axis=0)
    away = rng.normal(size=dim)
    away -= items.astype(np.float64).T @ np.linalg.lstsq(items.astype(np.float64).T, away, rcond=None)[0]
    away /= np.linalg.norm(away)
    gallery = (mean + offset * away).astype(np.float32)[None, :]
    queries = (away * 10).astype(np.float32)[None, :]
    weights = combination_weights(gallery, items, positions)
    norms = effective_norms(gallery, items, positions, weights, k)
    bound = combination_bound(dim, float(weights[0]), k)
    screened = (queries @ items.T) @ np.repeat(weights, k)[:, None]
    exact = exact_scores(queries, gallery, np.array([0]), np.array([0]), "ip")
    width = pair_widths(bound, np.array([10.0]), norms, screened[0].astype(np.float64))
    assert abs(float(screened[0, 0]) - exact[0]) <= width[0]
    assert abs(float(screened[0, 0]) - exact[0]) > 0.5 * offset * 10  # the move is what the band covers
    screen_band = 10 * bound_for("ip", dim, FP32).pair * k * float(np.linalg.norm(items, axis=1).max())
    assert width[0] <= 10 * offset * 1.01 + screen_band


def test_the_combined_band_grows_only_with_the_weights_of_cancelling_supports():
    """A prototype whose supports nearly cancel (|Σ y_i| ≪ Σ|y_i|) gets a band as wide as the
    supports' scores are uncertain: ĝ ≈ c · w Σ|y_i|, not more."""
    rng = np.random.default_rng(4)
    dim = 64
    a = rng.normal(size=dim).astype(np.float32)
    items = np.stack([a, (-a * np.float32(0.999)).astype(np.float32)])
    positions = np.array([[0, 1]])
    gallery = prototypes(items, positions, "ip")
    weights = combination_weights(gallery, items, positions)
    norms = effective_norms(gallery, items, positions, weights, 2)
    spread = float(abs(weights[0])) * float(np.linalg.norm(items.astype(np.float64), axis=1).sum())
    c = bound_for("ip", dim, FP32).pair
    assert spread > 100 * float(np.linalg.norm(gallery.astype(np.float64)))  # it does cancel
    assert c * spread * 0.9 <= norms[0] <= c * spread * 1.1


# -- the counts: the linear screen against the per-task path ------------------------------------------

SMALL = LinearSettings(rows=16, columns=24)
# Both ways of combining scores: numpy, and the compiled kernels where numba is installed.
PATHS = [False, pytest.param(True, marks=pytest.mark.skipif(not kernels.available(), reason="needs numba"))]


def _tasks(emb, domains, products, ids, metric, shots=(1, 2, 5), draws=3):
    dataset = ropebench.validate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids, metric=metric)
    members = {code: dataset.members(code) for code in DOMAINS}
    vectors = prepare_domains(dataset.embeddings, members, DOMAINS, metric, None)
    spec = FewshotSpec(tuple(shots), draws, 0)
    names = fewshot_tasks(spec)
    task_data = build_task_data(dataset, members, vectors, names, metric, None)
    return names, task_data, support_columns(dataset, members, spec)


def _near_ties(seed: int, metric: str):
    """uneven data whose products 0 and 1 share near-copies of their items (prototypes a few ulps
    apart, so queries meet prototypes within float32 error of their own) and, under ip, norms
    spread over 10³."""
    emb, domains, products, ids = uneven_data(seed)
    rng = np.random.default_rng(seed)
    emb = emb.copy()
    if metric == "ip":
        emb *= (10.0 ** rng.uniform(0, 3, (len(emb), 1))).astype(np.float32)
    ones, zeros = np.flatnonzero(products == 1), np.flatnonzero(products == 0)
    for target in ones:
        same = zeros[domains[zeros] == domains[target]]
        if len(same):
            source = emb[rng.choice(same)].copy()
            for index in rng.choice(emb.shape[1], size=2, replace=False):
                source[index] = np.nextafter(source[index], np.float32(np.inf))
            emb[target] = source
    return emb, domains, products, ids


def _same_hits(first, second, names, max_k=5):
    """Equal counts after the one censoring rule (``max_k`` None: exact counts, nothing censored)."""
    for name in names:
        a, b = first[name], second[name]
        assert np.array_equal(a.scored, b.scored), name
        if max_k is None:
            assert not a.censored.any() and not b.censored.any()
            found, expected = (a.a, a.t, a.p), (b.a, b.t, b.p)
        else:
            found, expected = censor(a.a, a.t, a.p, a.censored, max_k), censor(b.a, b.t, b.p, b.censored, max_k)
        for mine, theirs in zip(found, expected, strict=True):
            assert np.array_equal(mine, theirs), name


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("make", ["uneven", "near_ties"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("fused", PATHS)
def test_the_linear_screen_counts_as_the_per_task_path(metric, make, threads, fused):
    """First-hit counts of every (direction, shots, draw) task equal the per-task path's, with tiles
    of a few products (many tiles, several runs of product sizes per tile), products lacking
    supports and skipped queries; on planted near-ties the band settles pairs in float64. Scores
    combined by numpy and by the kernels."""
    data = uneven_data(7) if make == "uneven" else _near_ties(8, metric)
    names, task_data, columns = _tasks(*data, metric)
    assert linear_applies(task_data, columns)
    small = LinearSettings(rows=SMALL.rows, columns=SMALL.columns, fused=fused)
    run = linear_search(task_data, columns, max_k=5, threads=threads, settings=small)
    assert run is not None
    reference = one_pass_first_hits(task_data, names, max_k=5, threads=threads,
                                    settings=OnePassSettings(tile=8, small_block=0))
    _same_hits(run.hits, reference, names)
    exact = linear_search(task_data, columns, max_k=5, exact_censored=True, settings=small)
    assert exact is not None
    full = one_pass_first_hits(task_data, names, max_k=5, exact_censored=True)
    _same_hits(exact.hits, full, names, max_k=None)
    if make == "near_ties":
        assert run.counters["pairs_settled"] > 0
    n_pairs = sum(int(task_data[name].queries.shape[0]) * len(task_data[name].gallery) for name in names)
    assert run.counters["pairs_settled"] <= 0.05 * n_pairs  # the band is narrow: few pairs settle


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.sampled_from([1, 3, 16, 128, 600]), spread=st.floats(0, 5), metric=st.sampled_from(["cosine", "ip"]),
       kind=st.sampled_from(["independent", "duplicates", "cancel"]), seed=st.integers(0, 2**32 - 1),
       compiled=st.sampled_from([False, True] if kernels.available() else [False]))
def test_the_threshold_interval_holds_the_threshold(dim, spread, metric, kind, seed, compiled):
    """T (the float64 score of a query's own prototype, by the definition) lies in the interval the
    linear screen knows it by before settling — the float32 screen ± the pair band — for queries and
    prototypes with norms spread over 10^±spread, near-copies and nearly cancelling vectors, the
    screen computed by numpy or by the compiled kernel (another order of the sum); and settling
    replaces the interval by T itself."""
    rng = np.random.default_rng(seed)
    n = 12
    queries, _ = prepare_vectors(_supports(rng, dim, n, spread, kind), metric)
    gallery, _ = prepare_vectors(_supports(rng, dim, 4, spread, kind), metric)
    assume(metric == "ip" or bool(np.any(queries != 0, axis=1).all() and np.any(gallery != 0, axis=1).all()))
    from ropebench.engines.core.task import TaskData

    data = TaskData(queries=queries, gallery=gallery, query_products=np.arange(n) % 5,
                    gallery_products=np.arange(4), metric=metric)
    found = fewshot_screen._Thresholds(data, compiled=compiled)
    low, high = found.low.copy(), found.high.copy()
    scored = np.arange(n) % 5 < 4
    assert np.array_equal(np.isfinite(low), scored) and found.p.tolist() == scored.astype(int).tolist()
    exact = exact_scores(queries, gallery, np.flatnonzero(scored), (np.arange(n) % 5)[scored], metric)
    assert (low[scored] <= exact).all() and (exact <= high[scored]).all()
    assert (low[scored] < high[scored]).all()
    assert found.settle(np.arange(n)).tolist() == np.flatnonzero(scored).tolist()
    assert np.array_equal(found.low[scored], exact) and np.array_equal(found.high[scored], exact)
    assert len(found.settle(np.arange(n))) == 0 and found.settled == scored.sum()  # each settled once


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dim=st.sampled_from([1, 3, 16, 128, 600]), spread=st.floats(0, 5), metric=st.sampled_from(["cosine", "ip"]),
       kind=st.sampled_from(["independent", "duplicates", "cancel"]), n_columns=st.integers(1, 5),
       n_pairs=st.integers(0, 1500), seed=st.integers(0, 2**32 - 1))
def test_settling_every_column_at_once_gives_the_scores_of_one_column_at_a_time(dim, spread, metric, kind, n_columns,
                                                                                n_pairs, seed):
    """The linear screen settles a tile's pairs of every column in one float64 batch
    (``column_scores``, more than one batch of 1,024 pairs included): the bits of ``exact_scores``
    column by column; and thresholds whose scored queries are gathered once for several tasks are
    those each task gathers for itself."""
    from ropebench.engines.core.combine import column_scores
    from ropebench.engines.core.task import TaskData

    rng = np.random.default_rng(seed)
    queries, _ = prepare_vectors(_supports(rng, dim, 7, spread, kind), metric)
    galleries = [prepare_vectors(_supports(rng, dim, 4, spread, kind), metric)[0] for _ in range(n_columns)]
    q, column, g = rng.integers(0, 7, n_pairs), rng.integers(0, n_columns, n_pairs), rng.integers(0, 4, n_pairs)
    expected = np.empty(n_pairs)
    for j in range(n_columns):
        pick = column == j
        expected[pick] = exact_scores(queries, galleries[j], q[pick], g[pick], metric)
    assert column_scores(queries, galleries, q, column, g, metric).tobytes() == expected.tobytes()
    shared: list = []
    batch = fewshot_screen.THRESHOLD_BATCH
    for gallery in galleries:
        data = TaskData(queries=queries, gallery=gallery, query_products=np.arange(7) % 5,
                        gallery_products=np.arange(4), metric=metric)
        alone = fewshot_screen._Thresholds(data)
        try:  # batches of 2 and 1 queries: each row's dot product alone, the same bits
            fewshot_screen.THRESHOLD_BATCH = 1 + n_pairs % 2
            together = fewshot_screen._Thresholds(data, shared)
        finally:
            fewshot_screen.THRESHOLD_BATCH = batch
        assert alone.low.tobytes() == together.low.tobytes() and alone.high.tobytes() == together.high.tobytes()
        scored = np.flatnonzero(np.arange(7) % 5 < 4)
        screened = np.einsum("ij,ij->i", queries[scored], gallery[np.arange(7)[scored] % 5])  # in one go
        plain = fewshot_screen._Thresholds(data)
        assert (plain.low[scored] < screened).all() and (screened < plain.high[scored]).all()
    assert len(shared) == 1  # every task scores the same queries: gathered once


def test_column_judges_share_only_thresholds_that_are_the_judges_own():
    """The one-batch settlement compares with the stacked thresholds where each judge compares with
    its own ``best``: ColumnJudges takes a shared ``(J, n)`` array only when its rows are those
    arrays themselves (a copy would go stale as thresholds settle), and then settles in one batch."""
    from ropebench.engines.core.combine import ColumnJudges
    from ropebench.engines.core.decide import Judge

    queries, gallery = np.ones((3, 2), dtype=np.float32), np.ones((2, 2), dtype=np.float32)
    best, q_norm = np.zeros((2, 3)), np.ones(3)
    judges = [Judge("ip", combination_bound(2, 1.0, 1), queries, q_norm, None, best[j]) for j in range(2)]
    norms = [np.ones(2), np.ones(2)]
    shared = ColumnJudges(judges, [gallery, gallery], norms, best=best)
    assert shared.batched and shared.screen is best
    assert not ColumnJudges(judges, [gallery, gallery], norms).batched
    with pytest.raises(ValueError):
        ColumnJudges(judges, [gallery, gallery], norms, best=best.copy())
    best[1, 2] = 2.0  # settled in place: seen by the judge and the band test alike
    found = shared.decide(np.array([2, 2]), np.array([0, 1]), np.array([0, 1]), np.array([2.0, 2.0], dtype=np.float32))
    assert found.above.tolist() == [True, False] and found.tie.tolist() == [False, True]


@settings(max_examples=100, deadline=None)
@given(high=hnp.arrays(np.float64, 6, elements=st.floats(-1e30, 1e30) | st.just(-np.inf)),
       q_norm=hnp.arrays(np.float64, 6, elements=st.floats(0, 1e6)), g_top=st.floats(0, 1e6),
       weight=st.floats(0, 10), terms=st.integers(1, 40))
def test_the_bulk_level_is_above_every_band(high, q_norm, g_top, weight, terms):
    """A combined score is counted above its threshold without a decision only above ``hi``: at
    least the top of the threshold's interval plus the widest band of the column's prototypes (in
    exact arithmetic: compared as fractions), and +inf for queries not scored."""
    from fractions import Fraction

    from ropebench.engines.core import Judge

    bound = combination_bound(16, weight, terms)
    judge = Judge("ip", bound, np.zeros((6, 16), dtype=np.float32), q_norm, None, np.where(np.isfinite(high), high,
                                                                                           -np.inf))
    level = fewshot_screen._sure_level(judge, high, g_top)
    width = pair_widths(bound, q_norm, np.full(6, g_top), np.zeros(6))
    for i in range(6):
        top = Fraction(float(np.finfo(np.float32).max))
        if not np.isfinite(high[i]) or Fraction(high[i]) + Fraction(width[i]) > top:
            assert level[i] == np.inf
        else:
            assert level[i].dtype == np.float32 and Fraction(float(level[i])) >= Fraction(high[i]) + Fraction(width[i])


def _drawn(draw, metric: str):
    """Small drawn data whose ties and near-ties sit at the edges the screen decides by: integer
    entries of both signs (negative scores; exact copies across products, so prototypes tie with a
    query's own one and candidates fall inside its threshold's interval), optionally scaled off the
    integers and nudged a few ulps, zero vectors (ip), and products with a single item."""
    n = draw(st.integers(12, 60))
    dim = draw(st.integers(1, 5))
    base = draw(hnp.arrays(np.int8, (n, dim), elements=st.integers(-3, 3)))
    emb = base.astype(np.float32) * np.float32(draw(st.sampled_from([1.0, 0.1, 3e-3])))
    nudged = draw(hnp.arrays(np.bool_, n))
    emb[nudged] = np.nextafter(emb[nudged], np.float32(np.inf))
    if metric == "cosine":
        zero = ~emb.any(axis=1)
        emb[zero, 0] = 1.0  # cosine has no zero vectors
    n_products = draw(st.integers(2, 9))
    products = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_products - 1)))
    domains = np.array(list("PVL"))[draw(st.permutations(list(range(n)))) % np.array(3)]
    ids = np.array([f"item-{i}" for i in range(n)], dtype=object)
    return emb, domains, products, ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), metric=st.sampled_from(["cosine", "ip"]), threads=st.sampled_from([1, 2]))
def test_threshold_intervals_and_bulk_counts_at_their_edges(data, metric, threads):
    """Thresholds known by an interval (settled only where a candidate's band reaches it) and scores
    above the bulk level counted without a decision give the per-task path's counts, number for
    number, on drawn data full of exact ties, negative scores, zero prototypes and one-item products;
    with max K and counted exactly."""
    emb, domains, products, ids = _drawn(data.draw, metric)
    names, task_data, columns = _tasks(emb, domains, products, ids, metric, shots=(1, 2), draws=2)
    assume(linear_applies(task_data, columns))
    settings_ = LinearSettings(rows=data.draw(st.integers(1, 12)), columns=data.draw(st.integers(1, 12)),
                               fused=data.draw(st.booleans()) and kernels.available())
    run = linear_search(task_data, columns, max_k=5, threads=threads, settings=settings_)
    # Supports that cancel to subnormals (a weight beyond float32) are declined: the per-task path
    # runs (test_supports_that_cancel_to_subnormals_send_few_shot_to_the_per_task_path).
    assume(run is not None)
    reference = one_pass_first_hits(task_data, names, max_k=5, settings=OnePassSettings(tile=8, small_block=0))
    _same_hits(run.hits, reference, names)
    exact = linear_search(task_data, columns, max_k=5, exact_censored=True, threads=threads, settings=settings_)
    assert exact is not None
    _same_hits(exact.hits, one_pass_first_hits(task_data, names, max_k=5, exact_censored=True), names, max_k=None)
    scored = sum(int(h.scored.sum()) for h in exact.hits.values())
    assert exact.counters["relevant_settled"] <= scored
    above = sum(int(h.a.sum()) for h in exact.hits.values())
    # Every pair above its threshold is counted once: in bulk, or decided (the rest of the decided
    # are tied with it or below it).
    assert exact.counters["prototype_pairs_bulk"] <= above <= exact.counters["prototype_pairs_bulk"] + \
        exact.counters["prototype_pairs_decided"]


def test_thresholds_settle_on_demand_and_scores_above_count_in_bulk():
    """ROPE-like data (benchmarks/rope_size.py at 2%): few thresholds are settled in float64 (those
    a candidate's band reaches) and almost every pair above its threshold is counted in bulk; the
    counts are the per-task path's."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rope_size import generate

    emb, domains, products = generate(scale=0.02)
    ids = np.array([f"i{i}" for i in range(len(emb))], dtype=object)
    names, task_data, columns = _tasks(emb, domains, products, ids, "cosine", shots=(1, 5), draws=3)
    run = linear_search(task_data, columns, max_k=5, exact_censored=True)
    assert run is not None
    _same_hits(run.hits, one_pass_first_hits(task_data, names, max_k=5, exact_censored=True), names, max_k=None)
    scored = sum(int(h.scored.sum()) for h in run.hits.values())
    above = sum(int(h.a.sum()) for h in run.hits.values())
    assert 0 < run.counters["relevant_settled"] <= 0.05 * scored
    assert run.counters["prototype_pairs_bulk"] >= 0.99 * above > 0
    assert run.counters["prototype_pairs_decided"] <= 0.01 * above


def _fewshot(monkeypatch, linear: bool, **options):
    with monkeypatch.context() as patch:
        if linear:
            patch.setattr(fewshot_screen, "LinearSettings", lambda: SMALL)
        else:
            patch.setattr(evaluation, "_linear_fewshot", lambda *args, **kwargs: None)
        return ropebench.evaluate(fewshot=True, tasks="P2V", ci=True, **options)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_the_fewshot_section_and_rows_are_those_of_the_per_task_path(monkeypatch, metric):
    """Through ``evaluate``: the same few-shot numbers (bootstrap intervals included) and per-query
    rows as the per-task path, also with the rows shuffled and on two threads; the result records
    which screen ran."""
    emb, domains, products, ids = _near_ties(11, metric)
    options = dict(metric=metric, shots="1,2,5", draws=4)
    reference = _fewshot(monkeypatch, False, embeddings=emb, domains=domains, product_ids=products, item_ids=ids,
                         **options)
    assert reference.fewshot["screen"] == "per-task"
    order = np.random.default_rng(0).permutation(len(emb))
    for threads, rows in ((1, slice(None)), (2, order)):
        found = _fewshot(monkeypatch, True, embeddings=emb[rows], domains=domains[rows], product_ids=products[rows],
                         item_ids=ids[rows], threads=threads, **options)
        assert found.fewshot["screen"] == "linear"
        assert found.fewshot["tasks"] == reference.fewshot["tasks"]
        keys = [("task", "ascending"), ("item_id", "ascending")]
        mine, theirs = found.fewshot_per_query.sort_by(keys), reference.fewshot_per_query.sort_by(keys)
        assert mine.num_rows == theirs.num_rows > 0 and mine.equals(theirs)


def test_other_engines_and_metrics_keep_the_per_task_path():
    emb, domains, products, ids = uneven_data(2)
    common = dict(embeddings=emb, domains=domains, product_ids=products, item_ids=ids, fewshot=True, draws=2,
                  tasks="P2V", ci=False)
    assert ropebench.evaluate(**common).fewshot["screen"] == "linear"
    assert ropebench.evaluate(**common, metric="l2").fewshot["screen"] == "per-task"
    assert ropebench.evaluate(**common, engine="faiss").fewshot["screen"] == "per-task"


def test_sums_that_could_overflow_take_the_per_task_path(monkeypatch):
    """ip vectors of norm 2e18: a combination of support scores could leave float32, so the linear
    screen declines and the per-task path counts (the same numbers as forcing it)."""
    emb, domains, products, ids = uneven_data(2)
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True) * np.float32(2e18)).astype(np.float32)
    common = dict(embeddings=emb, domains=domains, product_ids=products, item_ids=ids, metric="ip", draws=2)
    declined = _fewshot(monkeypatch, True, **common)
    assert declined.fewshot["screen"] == "per-task"
    assert declined.fewshot["tasks"] == _fewshot(monkeypatch, False, **common).fewshot["tasks"]


@pytest.mark.slow
def test_the_linear_screen_at_a_larger_size(monkeypatch):
    """ROPE-like data (benchmarks/rope_size.py at 2%): default tiles, the full protocol."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from rope_size import generate

    emb, domains, products = generate(scale=0.02)
    common = dict(embeddings=emb, domains=domains, product_ids=products, fewshot=True, tasks="P2V", ci=False,
                  threads=2)
    with monkeypatch.context() as patch:
        patch.setattr(evaluation, "_linear_fewshot", lambda *args, **kwargs: None)
        reference = ropebench.evaluate(**common)
    found = ropebench.evaluate(**common)
    assert found.fewshot["screen"] == "linear" and reference.fewshot["screen"] == "per-task"
    assert found.fewshot["tasks"] == reference.fewshot["tasks"]


def test_supports_that_cancel_to_subnormals_send_few_shot_to_the_per_task_path():
    """Two supports of one product that cancel to subnormal coordinates (±1 with 1e-45 elsewhere, a
    case hypothesis found): the prototype is their normalised mean, so the weight ``p ≈ w Σ y``
    would be about 1e44, beyond float32. The linear screen declines (no overflow, no warning) and
    the per-task path gives the numbers."""
    base = np.zeros((12, 4), dtype=np.float32)
    base[4, 0], base[10, 0] = -1.0, 1.0
    emb = np.nextafter(base, np.float32(np.inf))  # the zeros become the smallest subnormal
    domains = np.array(list("PVL"))[np.arange(12) % 3]
    products = np.zeros(12, dtype=np.int64)
    ids = np.array([f"item-{i}" for i in range(12)], dtype=object)
    names, task_data, columns = _tasks(emb, domains, products, ids, "cosine", shots=(1, 2), draws=2)
    assert linear_applies(task_data, columns)
    assert linear_search(task_data, columns, max_k=5, settings=LinearSettings(rows=1, columns=1)) is None


def test_each_domain_is_laid_out_once_for_the_two_pairs_it_is_in(monkeypatch):
    """P is the rows of (P, V) and (P, L), V the columns of (P, V) and the rows of (V, L): each
    domain's side (order, tiles, vectors in that order) is built once, whichever task's codes
    array describes it, and the counts are those of sides built per pair."""
    emb, domains, products, ids = uneven_data(4)
    names, task_data, columns = _tasks(emb, domains, products, ids, "cosine", shots=(1, 2), draws=2)
    built = []
    side = fewshot_screen._Side

    def counted(*args, **kwargs):
        built.append(1)
        return side(*args, **kwargs)

    settings = LinearSettings(rows=16, columns=16, fused=False)
    monkeypatch.setattr(fewshot_screen, "_Side", counted)
    shared = linear_search(task_data, columns, max_k=5, settings=settings)
    assert len(built) == 3
    monkeypatch.setattr(fewshot_screen._Plan, "of", staticmethod(
        lambda *args, of=fewshot_screen._Plan.of: of(*args[:5])))  # no sharing: a side per pair and role
    built.clear()
    alone = linear_search(task_data, columns, max_k=5, settings=settings)
    assert len(built) == 6
    assert shared is not None and alone is not None
    _same_hits(shared.hits, alone.hits, names)
