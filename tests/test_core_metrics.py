"""Hand-computed cases for every protocol rule (docs/protocol.md), through the public API."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ropebench
from ropebench.engines.faiss import FaissEngine
from ropebench.engines.onepass import OnePassEngine, OnePassSettings
from ropebench.errors import DataError, UsageError
from ropebench.measures import count_tied, hit_probabilities, reciprocal_rank
from ropebench.protocol import parse_ks

KS = (1, 2, 3, 4)


def run(emb, domains, products, **options):
    options.setdefault("metric", "ip")
    options.setdefault("ci", False)  # bootstrap intervals are tested elsewhere; here they only cost time
    return ropebench.evaluate(embeddings=np.asarray(emb, dtype=np.float32), domains=domains,
                              product_ids=products, **options)


# One P query q=[1] against V items scoring (ip) 3, 2, 2, 2, 1:
#   v0=[3] irrelevant, v1=[2] relevant, v2=[2] irrelevant, v3=[2] irrelevant, v4=[1] relevant.
# s+ = 2 (v1); a = 1 (v0), t = 2 (v2, v3), p = 1 (v1).
TIE_EMB = [[1], [3], [2], [2], [2], [1]]
TIE_DOM = ["P", "V", "V", "V", "V", "V"]
TIE_PROD = ["x", "y", "x", "z", "w", "x"]


@pytest.mark.parametrize("ties, expected", [
    # optimistic: rank a + 1 = 2 -> hit from K = 2.
    ("optimistic", [0, 100, 100, 100]),
    # pessimistic: rank a + t + 1 = 4 -> hit from K = 4.
    ("pessimistic", [0, 0, 0, 100]),
    # expected: K=1 <= a -> 0; K=2: 1 - C(2,1)/C(3,1) = 1/3; K=3: 1 - C(2,2)/C(3,2) = 2/3;
    # K=4: 1 - C(2,3)/C(3,3) = 1 - 0 = 1.
    ("expected", [0, 100 / 3, 200 / 3, 100]),
])
def test_tie_policies_on_exact_integer_ties(ties, expected):
    result = run(TIE_EMB, TIE_DOM, TIE_PROD, ties=ties, ks=KS, tasks="P2V")
    task = result.tasks["P2V"]
    assert [task[f"R@{k}"] for k in KS] == pytest.approx(expected, abs=1e-12)
    assert task["n_tied"] == 1  # optimistic hits at K=2, pessimistic does not
    assert (task["n_queries"], task["n_skipped"], task["n_gallery"]) == (1, 0, 5)


@pytest.mark.parametrize("ties, mrr", [
    ("optimistic", 100 / 2),  # rank 2
    ("pessimistic", 100 / 4),  # rank 4
    # the relevant item is 1st, 2nd or 3rd of the three tied, each with 1/3: ranks 2, 3, 4.
    ("expected", 100 * (1 / 2 + 1 / 3 + 1 / 4) / 3),
])
def test_mrr_under_each_tie_policy(ties, mrr):
    task = run(TIE_EMB, TIE_DOM, TIE_PROD, ties=ties, ks=KS, tasks="P2V").tasks["P2V"]
    assert task["MRR@4"] == pytest.approx(mrr, abs=1e-12)


def test_mrr_is_zero_beyond_max_k():
    # Rank 4 under pessimistic, but max K = 3: reciprocal rank counts 0.
    task = run(TIE_EMB, TIE_DOM, TIE_PROD, ties="pessimistic", ks=(1, 3), tasks="P2V").tasks["P2V"]
    assert task["MRR@3"] == 0.0


def test_queries_without_relevant_item_are_skipped_not_scored():
    # P items of products x (has a V item) and y (has none). Only the x query is scored:
    # it finds its V item first -> R@1 = 100, not 50.
    result = run([[1], [1], [1]], ["P", "P", "V"], ["x", "y", "x"], ks=(1,), tasks="P2V")
    task = result.tasks["P2V"]
    assert (task["n_queries"], task["n_skipped"], task["R@1"]) == (1, 1, 100.0)


def test_intra_domain_excludes_the_query_by_row_not_by_score():
    # P items a, b (product A) and c (product B), all the same vector [1].
    # Query a: gallery {b (relevant, 1), c (irrelevant, 1)}: a=0, t=1, p=1 -> expected R@1 = 1/2.
    # Same for b. Query c has no other B item: skipped.
    # Dropping "rank 1" or "distance 0" instead would remove b or c and give 0 or 100.
    task = run([[1], [1], [1]], ["P", "P", "P"], ["A", "A", "B"], ks=(1,), tasks="P2P").tasks["P2P"]
    assert (task["n_queries"], task["n_skipped"], task["R@1"]) == (2, 1, 50.0)


def test_group_exclusion_removes_near_duplicates_of_the_same_stream():
    # L clips: x1=[1,0] and x2=[1,0] (product A, stream s1), x3=[0,1] (A, stream s2), x4=[1,1] (B).
    emb = [[1, 0], [1, 0], [0, 1], [1, 1]]
    domains, products = ["L"] * 4, ["A", "A", "A", "B"]
    # With groups: query x1 excludes x2; relevant x3 scores 0 below x4 (1): a=1 -> R@1=0, R@2=1.
    #   x2 likewise. Query x3: x1, x2 relevant at 0, x4 at 0 (ip [0,1]·[1,1] = 1): a=1 -> R@2 = 1.
    grouped = run(emb, domains, products, group_ids=["s1", "s1", "s2", "s3"], ks=(1, 2), tasks="L2L")
    task = grouped.tasks["L2L"]
    assert (task["n_queries"], task["n_skipped"], task["R@1"], task["R@2"]) == (3, 1, 0.0, 100.0)
    assert grouped.protocol["group_exclusion"] is True
    # Without groups: query x1 finds x2 (relevant, 1) tied with x4 (1): R@1 = 1/2; x2 the same;
    # x3 is still behind x4: 0. Mean R@1 = (0.5 + 0.5 + 0) / 3.
    plain = run(emb, domains, products, ks=(1, 2), tasks="L2L").tasks["L2L"]
    assert plain["R@1"] == pytest.approx(100 / 3)


@pytest.mark.parametrize("metric, r1", [
    ("ip", 100.0),  # [1,0]·[2,0] = 2 > [1,0]·[0.5,0] = 0.5: the relevant item wins
    ("cosine", 50.0),  # both have cosine 1: a tie, expected R@1 = 1/2
    ("l2", 0.0),  # |[1,0]-[2,0]|^2 = 1 > |[1,0]-[0.5,0]|^2 = 0.25: the irrelevant item wins
])
def test_similarity_metrics_rank_differently(metric, r1):
    emb = [[1, 0], [2, 0], [0.5, 0]]
    task = run(emb, ["P", "V", "V"], ["a", "a", "b"], metric=metric, ks=(1,), tasks="P2V").tasks["P2V"]
    assert task["R@1"] == r1


def test_cosine_with_large_relevant_item_differs_from_ip():
    # q=[1,0]; relevant [10,10] (ip 10, cosine 0.707), irrelevant [0.5,0] (ip 0.5, cosine 1).
    emb = [[1, 0], [10, 10], [0.5, 0]]
    args = (emb, ["P", "V", "V"], ["a", "a", "b"])
    assert run(*args, metric="ip", ks=(1,), tasks="P2V").tasks["P2V"]["R@1"] == 100.0
    assert run(*args, metric="cosine", ks=(1,), tasks="P2V").tasks["P2V"]["R@1"] == 0.0


def test_metric_functions_directly():
    a, t, p = np.array([0, 2, 5]), np.array([3, 0, 1]), np.array([1, 2, 1])
    # query 0: all four tied, expected P(hit@1) = 1 - C(3,1)/C(4,1) = 1/4; query 1: rank 3;
    # query 2: rank 6 (optimistic) or 7 (pessimistic).
    assert hit_probabilities(a, t, p, (1, 3), "expected")[:, 0] == pytest.approx([0.25, 0, 0])
    assert hit_probabilities(a, t, p, (1, 3), "expected")[:, 1] == pytest.approx([1 - 1 / 4, 1, 0])
    assert reciprocal_rank(a, t, p, 10, "optimistic") == pytest.approx([1, 1 / 3, 1 / 6])
    assert reciprocal_rank(a, t, p, 10, "pessimistic") == pytest.approx([1 / 4, 1 / 3, 1 / 7])
    # n_tied: query 0 (opt hit@1, pes not) and query 2 (K=6? no: ks (1,3) both miss) -> 1.
    assert count_tied(a, t, (1, 3)) == 1
    assert count_tied(a, t, (1, 3, 6)) == 2  # now query 2 hits at 6 optimistically only


def test_parse_ks_sorts_and_rejects_bad_values():
    assert parse_ks("10,1,5,1") == (1, 5, 10)
    for bad in ("0", "1,x", "", "-3", "1.5"):
        with pytest.raises(UsageError):
            parse_ks(bad)


def test_usage_errors_are_clear():
    with pytest.raises(UsageError, match="unknown task"):
        run(TIE_EMB, TIE_DOM, TIE_PROD, tasks="P2X")
    with pytest.raises(UsageError, match="tie policy"):
        run(TIE_EMB, TIE_DOM, TIE_PROD, ties="random")
    with pytest.raises(DataError, match="unknown domain"):
        run(TIE_EMB, ["P", "V", "V", "V", "V", "Q"], TIE_PROD)


def test_caller_embeddings_are_not_modified():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 4)).astype(np.float32)
    before = emb.copy()
    ropebench.evaluate(embeddings=emb, domains=["P", "V", "L"] * 10, product_ids=np.arange(30) % 5)
    np.testing.assert_array_equal(emb, before)


def test_a_domain_without_items_gives_skips_and_null_metrics():
    # P and V items only: P2L queries all skipped (no gallery), L2P has no query; both null.
    rng = np.random.default_rng(0)
    result = run(rng.normal(size=(8, 3)), ["P", "V"] * 4, [0, 0, 1, 1, 2, 2, 3, 3], ks=(1,), metric="cosine")
    p2l, l2p = result.tasks["P2L"], result.tasks["L2P"]
    assert (p2l["n_queries"], p2l["n_skipped"], p2l["R@1"]) == (0, 4, None)
    assert (l2p["n_queries"], l2p["n_gallery"], l2p["R@1"]) == (0, 4, None)
    assert result.tasks["P2V"]["n_queries"] == 4 and result.tasks["P2V"]["R@1"] is not None
    assert result.to_json()["tasks"]["L2L"]["MRR@1"] is None


# -- l2 far from the origin: translating the data changes no number (docs/protocol.md) ---

# The default engine, the one-pass engine at sizes where 90 items fill several tiles (no
# small-block shortcut), and FAISS in several query batches: every code path sees the data.
L2_ENGINES = {
    "one-pass": "one-pass",
    "one-pass-tiled": OnePassEngine(OnePassSettings(tile=16, small_block=0)),
    "faiss": FaissEngine(query_batch=7),
}


@st.composite
def translated_pair(draw):
    """Dyadic data ``k / 64`` (|k| <= 64, so the spread is at most 2) and one offset vector whose
    coordinates are ``m * 2^e`` (|m| <= 3, e <= 14: up to 2.5e4 x the spread). Every translated
    value needs at most 23 significant bits, so it is exact in float32: any change in a number
    is the evaluation's doing, not the input's rounding."""
    n = draw(st.integers(6, 90))
    d = draw(st.integers(1, 4))
    k = draw(hnp.arrays(np.int64, (n, d), elements=st.integers(-64, 64)))
    domains = np.array(["P", "V", "L"])[draw(hnp.arrays(np.int8, n, elements=st.integers(0, 2)))]
    products = draw(hnp.arrays(np.int64, n, elements=st.integers(0, max(1, n // 4))))
    exponent = draw(st.integers(0, 14))
    multiples = draw(hnp.arrays(np.int64, d, elements=st.integers(-3, 3)))
    base = k / 64.0
    moved = base + multiples * 2.0 ** exponent
    assert (moved.astype(np.float32).astype(np.float64) == moved).all()  # the premise: exact in float32
    return base.astype(np.float32), moved.astype(np.float32), domains, products


@pytest.mark.parametrize("search_engine", list(L2_ENGINES.values()), ids=list(L2_ENGINES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=translated_pair())
def test_l2_numbers_do_not_move_with_the_data(search_engine, data):
    base, moved, domains, products = data
    options = dict(domains=domains, product_ids=products, metric="l2", ks=(1, 2, 5), engine=search_engine, threads=1,
                   ci=False)
    here, there = ropebench.evaluate(embeddings=base, **options), ropebench.evaluate(embeddings=moved, **options)
    assert here.to_json()["tasks"] == there.to_json()["tasks"]
    columns = ["task", "item_id", "a", "t", "p", "R@1", "R@2", "R@5", "MRR@5"]
    assert here.per_query.select(columns).equals(there.per_query.select(columns))


@pytest.mark.parametrize("engine_name", ["one-pass", "faiss"])
def test_l2_far_from_the_origin_ranks_like_exact_float64(engine_name):
    # 40 products, one P query and one V item each, 0.001 apart; products 0.01 apart; then every
    # vector moved to 100 + x. |q|² + |g|² − 2q·g in float32 loses everything below ~1e-3 there
    # (it gave R@1 10.06 with 27 of 40 queries tied); the exact ranking of the same float32
    # vectors, computed here in float64, puts every relevant item first.
    rng = np.random.default_rng(3)
    pages = 0.01 * rng.normal(size=(40, 16))
    videos = pages + 0.001 * rng.normal(size=(40, 16))
    emb = (np.vstack([pages, videos]) + 100.0).astype(np.float32)
    exact = emb.astype(np.float64)
    distances = ((exact[:40, None, :] - exact[None, 40:, :]) ** 2).sum(axis=2)
    reference_r1 = 100.0 * np.mean(distances.argmin(axis=1) == np.arange(40))
    assert reference_r1 == 100.0
    task = ropebench.evaluate(embeddings=emb, domains=["P"] * 40 + ["V"] * 40, product_ids=list(range(40)) * 2,
                              metric="l2", tasks="P2V", engine=engine_name, ci=False).tasks["P2V"]
    assert (task["R@1"], task["n_tied"]) == (reference_r1, 0)


# -- cut-offs far beyond the gallery ------------------------------------------------------------

_HUGE_K_CHILD = """
import resource, sys, time
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
import ropebench
n = 1200  # 400 items per domain, 6 per product (2 per domain), every embedding the same
flat = pa.array(np.ones(n * 4, dtype=np.float32))
pq.write_table(pa.table({"item_id": np.arange(n), "domain": np.array(list("PVL"))[np.arange(n) % 3],
                         "product_id": np.arange(n) // 6,
                         "embedding": pa.FixedSizeListArray.from_arrays(flat, 4)}), sys.argv[1])
ropebench.evaluate(sys.argv[1], ks=(1,)).per_query  # everything imported and warmed up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
result = ropebench.evaluate(sys.argv[1], ks=(1, 10_000_000))
result.per_query
seconds = time.perf_counter() - started
extra = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
task = result.tasks["P2V"]
print(seconds, extra, task["R@1"], task["R@10000000"], result.tasks["P2P"]["R@1"])
"""


def test_huge_k_on_tied_data_stays_small(tmp_path):
    """K = 10^7 on 1,200 constant embeddings: the tie tables stop at max(t) + 1 columns, so
    memory follows the gallery (400 items), not K. Measured in a fresh process (its peak RSS is
    its own); before the clamp this took a MemoryError. (No wall-clock assertion: timings belong
    to benchmarks/.)"""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _HUGE_K_CHILD, str(tmp_path / "tied.parquet")],
                          capture_output=True, text=True, timeout=120, check=True)
    _seconds, extra, r1, r_huge, intra_r1 = map(float, done.stdout.split())
    assert extra < 200 * 2**20, extra
    # Chance level, not 100: P2V has p = 2 relevant among 400 tied items -> R@1 = 2/400;
    # P2P excludes the query: p = 1 among 399 -> 1/399. Every query hits within K = 10^7.
    assert r1 == pytest.approx(100 * 2 / 400) and intra_r1 == pytest.approx(100 / 399) and r_huge == 100.0


def test_k_beyond_every_gallery_is_noted_on_stderr(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from ropebench.cli import cli

    path = tmp_path / "tied.parquet"
    flat = pa.array(np.ones(12 * 2, dtype=np.float32))
    pq.write_table(pa.table({"item_id": list(range(12)), "domain": list("PVL") * 4,
                             "product_id": [0, 0, 0, 1, 1, 1] * 2,
                             "embedding": pa.FixedSizeListArray.from_arrays(flat, 2)}), path)
    result = CliRunner().invoke(cli, ["evaluate", str(path), "--ks", "1,10000000", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert "note: K = 10000000 exceeds the largest gallery (4 items)" in result.stderr
    assert "note:" not in result.stdout  # stdout stays data
    assert '"R@10000000": 100.0' in result.stdout


def test_tie_tables_do_not_grow_with_k():
    """The arithmetic itself: 2,000 tied queries (t = 500) at K = 10^9 allocate what K = 501 does."""
    import tracemalloc

    a, t, p = np.zeros(2000, dtype=np.int64), np.full(2000, 500), np.ones(2000, dtype=np.int64)
    peaks = []
    for k in (501, 10**9):
        tracemalloc.start()
        hits = hit_probabilities(a, t, p, (1, k), "expected")
        rr = reciprocal_rank(a, t, p, k, "expected")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert hits[:, 1] == pytest.approx(1.0) and hits[:, 0] == pytest.approx(1 / 501)
        assert rr == pytest.approx(np.mean(1 / np.arange(1, 502)))  # uniform rank among 501 tied items
    assert peaks[1] <= 1.1 * peaks[0] + (1 << 20), peaks


@pytest.mark.parametrize("ties", ["expected", "pessimistic", "optimistic"])
def test_k_beyond_int64_gives_the_numbers_of_any_k_past_the_gallery(ties):
    # Ranks never exceed the gallery (here a + t + p <= 9), so K = 10 and K = 10^20 agree.
    a, t, p = np.array([0, 2, 5]), np.array([3, 0, 3]), np.array([1, 2, 1])
    big = 10**20  # beyond int64: it once overflowed the int64 table of cut-offs
    assert hit_probabilities(a, t, p, (1, big), ties).tolist() == hit_probabilities(a, t, p, (1, 10), ties).tolist()
    assert reciprocal_rank(a, t, p, big, ties).tolist() == reciprocal_rank(a, t, p, 10, ties).tolist()
    assert count_tied(a, t, (1, big)) == count_tied(a, t, (1, 10))
    task = run(TIE_EMB, TIE_DOM, TIE_PROD, ks=(1, big), tasks="P2V", ties=ties).tasks["P2V"]
    assert task[f"R@{big}"] == 100.0


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.sampled_from([0.0, 1.0, 0.5, 1 / 3, 100.0, 1e-300]),
                                 st.floats(-1e300, 1e300, allow_nan=False)), max_size=300),
       seed=st.integers(0, 2**32 - 1))
def test_exact_sum_is_fsum_whatever_the_order(values, seed):
    """The means' exact sum counts the 0s and 1s instead of listing them: math.fsum's value, bit
    for bit, in any order of the values."""
    import math

    from ropebench.measures import exact_sum

    array = np.array(values, dtype=np.float64)
    want = math.fsum(values)
    assert exact_sum(array) == want or (math.isnan(want) and math.isnan(exact_sum(array)))
    shuffled = np.random.default_rng(seed).permutation(array)
    assert np.float64(exact_sum(shuffled)).tobytes() == np.float64(exact_sum(array)).tobytes()
