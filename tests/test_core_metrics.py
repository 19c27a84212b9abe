"""Hand-computed cases for every protocol rule (DESIGN.md §2), through the public API."""

from __future__ import annotations

import numpy as np
import pytest

import ropebench
from ropebench.errors import DataError, UsageError
from ropebench.measures import count_tied, hit_probabilities, reciprocal_rank
from ropebench.protocol import parse_ks

KS = (1, 2, 3, 4)


def run(emb, domains, products, **options):
    options.setdefault("metric", "ip")
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
    assert (result.tasks["P2L"]["n_queries"], result.tasks["P2L"]["n_skipped"], result.tasks["P2L"]["R@1"]) == (0, 4, None)
    assert (result.tasks["L2P"]["n_queries"], result.tasks["L2P"]["n_gallery"], result.tasks["L2P"]["R@1"]) == (0, 4, None)
    assert result.tasks["P2V"]["n_queries"] == 4 and result.tasks["P2V"]["R@1"] is not None
    assert result.to_json()["tasks"]["L2L"]["MRR@1"] is None
