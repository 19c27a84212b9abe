"""ropebench.stats: resampling matrices, sign-flip and bootstrap tests, CR1 t, Holm, design effect."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pytest

from ropebench import stats


def _clustered(seed: int, n_clusters: int = 10, *, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-query differences with a per-cluster component, and their cluster labels."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, n_clusters)
    clusters = np.repeat(np.arange(n_clusters), sizes)
    values = shift + rng.normal(0, 3, n_clusters)[clusters] + rng.normal(0, 1, len(clusters))
    return values, clusters


def _exact_sign_flip_p(values: np.ndarray, clusters: np.ndarray) -> float:
    """All 2^G sign vectors: p = #{s : |Σ s_c D_c| ≥ |Σ D_c| − tol·N} / 2^G (the identity included)."""
    n_clusters = int(clusters.max()) + 1
    sums = np.bincount(clusters, weights=values, minlength=n_clusters)
    observed = abs(sums.sum()) / len(values)
    signs = np.array(list(itertools.product((-1.0, 1.0), repeat=n_clusters)))
    null = np.abs(signs @ sums) / len(values)
    return float(np.mean(null >= observed - stats.TOLERANCE))


# -- resampling matrices -------------------------------------------------------------------


def test_matrices_are_signs_and_multinomial_counts_fixed_by_the_seed() -> None:
    signs = stats.sign_flips(37, resamples=4000, seed=3)
    counts = stats.bootstrap_counts(37, resamples=4000, seed=3)
    assert signs.shape == counts.shape == (4000, 37)
    assert set(np.unique(signs)) == {-1, 1}
    assert abs(signs.mean()) < 0.02  # 148,000 fair signs: sd 0.0026
    assert np.all(counts.sum(axis=1) == 37) and counts.min() >= 0
    # A multinomial(G, 1/G) count has mean 1 and variance 1 - 1/G.
    assert counts.mean() == pytest.approx(1.0)
    assert counts.var() == pytest.approx(1 - 1 / 37, abs=0.02)
    assert np.array_equal(signs, stats.sign_flips(37, resamples=4000, seed=3))
    assert not np.array_equal(signs, stats.sign_flips(37, resamples=4000, seed=4))
    assert not np.array_equal(counts, stats.bootstrap_counts(37, resamples=4000, seed=4))


@pytest.mark.parametrize("kind", ["signs", "counts"])
def test_resampled_sums_is_the_matrix_times_the_values(kind: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.normal(size=(2000, 5))  # several row blocks of the matrix
    matrix = (stats.sign_flips if kind == "signs" else stats.bootstrap_counts)(2000, resamples=1500, seed=9)
    streamed = stats.resampled_sums(values, kind=kind, resamples=1500, seed=9)  # type: ignore[arg-type]
    np.testing.assert_allclose(streamed, matrix @ values, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", ["signs", "counts"])
def test_resampled_sums_are_exact_whatever_the_summation_order(kind: str) -> None:
    from fractions import Fraction

    rng = np.random.default_rng(1)
    values = stats.exact_grid(rng.normal(size=(300, 2)) * np.array([1e-3, 1e4]))
    assert np.array_equal(stats.exact_grid(values), values)  # rounding again changes nothing
    assert np.array_equal(stats.exact_grid(values[:40, 1:]), values[:40, 1:])  # nor does a subset
    matrix = (stats.sign_flips if kind == "signs" else stats.bootstrap_counts)(300, resamples=20, seed=2)
    streamed = stats.resampled_sums(values, kind=kind, resamples=20, seed=2)  # type: ignore[arg-type]
    exact = [[float(sum(Fraction(int(m)) * Fraction(float(v)) for m, v in zip(row, column)))
              for column in values.T] for row in matrix]
    assert np.array_equal(streamed, np.array(exact))


def test_stratified_counts_resample_each_stratum_within_itself() -> None:
    first = np.ones((10, 1))  # stratum 0: 10 clusters, column 0 counts them
    second = np.column_stack([np.ones(20), np.arange(20.0)])  # stratum 1: columns 1 and 2
    strata = [(first, [0]), (second, [1, 2])]
    totals = stats.stratified_sums(strata, 3, kind="counts", resamples=500, seed=1)
    assert np.all(totals[:, 0] == 10) and np.all(totals[:, 1] == 20)  # fixed stratum sizes
    assert totals[:, 2].std() > 0
    # Stratum 0 draws from the streams of the unstratified matrices.
    np.testing.assert_array_equal(totals[:, :1], stats.bootstrap_counts(10, resamples=500, seed=1) @ first)
    signs = stats.stratified_sums(strata, 3, kind="signs", resamples=500, seed=1)
    np.testing.assert_array_equal(signs[:, :1], stats.sign_flips(10, resamples=500, seed=1) @ first)
    assert not np.array_equal(signs[:, 1], stats.sign_flips(20, resamples=500, seed=1) @ second[:, 0])
    # The same 30 clusters drawn together: the stratum sizes vary.
    pooled = stats.resampled_sums(np.vstack([np.c_[first, np.zeros(10)], second[:, :1] * [[0, 1]]]),
                                  kind="counts", resamples=500, seed=1)
    assert pooled[:, 0].std() > 0 and np.all(pooled.sum(axis=1) == 30)


def test_grouped_sums_are_exact_and_ignore_row_order() -> None:
    rng = np.random.default_rng(5)
    values = rng.random((5000, 4)) * 100
    values[:, 3] = rng.choice([0.0, 100.0 / 3, 50.0], 5000)
    groups = rng.integers(0, 70, 5000)
    reference = np.zeros((80, 4))
    np.add.at(reference, groups, values)
    sums = stats.grouped_sums(values, groups, n_groups=80)
    np.testing.assert_allclose(sums, reference, rtol=0, atol=1e-9)
    for _ in range(3):
        order = rng.permutation(5000)
        assert np.array_equal(stats.grouped_sums(values[order], groups[order], n_groups=80), sums)
    assert np.all(sums[70:] == 0)


# -- sign-flip randomization test ------------------------------------------------------------


@pytest.mark.parametrize(("seed", "n_clusters", "shift"), [(1, 8, 0.0), (2, 11, 1.5), (3, 12, 2.5), (4, 6, 0.0)])
def test_sign_flip_monte_carlo_matches_exact_enumeration(seed: int, n_clusters: int, shift: float) -> None:
    values, clusters = _clustered(seed, n_clusters, shift=shift)
    exact = _exact_sign_flip_p(values, clusters)
    resamples = 100_000
    delta, p = stats.sign_flip_test(values, clusters, resamples=resamples, seed=seed)
    assert delta[0] == pytest.approx(values.mean(), abs=1e-9)
    tolerance = 4 * math.sqrt(exact * (1 - exact) / resamples) + 2 / resamples
    assert abs(p[0] - exact) <= tolerance, (p[0], exact)


def test_sign_flip_counts_ties_at_the_observed_value() -> None:
    # Two clusters with equal |D|: half of the 4 sign vectors reach |Δ| exactly -> p = 1/2, or
    # 1 when the sums cancel. Without the tolerance, float noise could drop some of these.
    values = np.array([0.1, 0.2, 0.3])
    clusters = np.array([0, 0, 1])
    assert _exact_sign_flip_p(values, clusters) == 0.5
    _, p = stats.sign_flip_test(values, clusters, resamples=20_000, seed=0)
    assert p[0] == pytest.approx(0.5, abs=0.02)
    _, p = stats.sign_flip_test(np.array([0.3, -0.1, -0.2]), clusters, resamples=1000, seed=0)
    assert p[0] == 1.0


def test_query_level_sign_flips_match_scipy_permutation_test() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(12)
    x = rng.normal(0.4, 1.0, 40)
    y = rng.normal(0.0, 1.0, 40)
    resamples = 50_000
    _, mine = stats.sign_flip_test(x - y, None, resamples=resamples, seed=0)
    theirs = scipy_stats.permutation_test(
        (x, y), lambda a, b, axis: np.mean(a - b, axis=axis), permutation_type="samples", vectorized=True,
        n_resamples=resamples, alternative="two-sided", random_state=np.random.default_rng(1)).pvalue
    assert 0.005 < theirs < 0.5  # a p-value the comparison can resolve
    assert abs(mine[0] - theirs) <= 4 * math.sqrt(2 * theirs * (1 - theirs) / resamples) + 1e-3


# -- bootstrap ------------------------------------------------------------------------------


def test_query_level_bootstrap_interval_matches_scipy_bootstrap() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(12)
    values = rng.exponential(2.0, 60)  # skewed: the percentile interval is not symmetric
    replicates = stats.bootstrap_means(values, None, resamples=20_000, seed=0)
    low, high = stats.percentile_interval(replicates)[0]
    theirs = scipy_stats.bootstrap((values,), np.mean, method="percentile", n_resamples=20_000,
                                   confidence_level=0.95, random_state=np.random.default_rng(1)).confidence_interval
    standard_error = values.std(ddof=1) / math.sqrt(len(values))
    assert low == pytest.approx(theirs.low, abs=0.1 * standard_error)
    assert high == pytest.approx(theirs.high, abs=0.1 * standard_error)
    assert high - values.mean() > values.mean() - low  # the right skew shows


def test_cluster_bootstrap_is_the_ratio_of_resampled_sums() -> None:
    values, clusters = _clustered(7, 9)
    replicates = stats.bootstrap_means(values, clusters, resamples=300, seed=2)[:, 0]
    counts = stats.bootstrap_counts(9, resamples=300, seed=2)
    sums = np.bincount(clusters, weights=values)
    sizes = np.bincount(clusters)
    np.testing.assert_allclose(replicates, (counts @ sums) / (counts @ sizes), rtol=1e-12)


def test_resamples_without_queries_are_dropped() -> None:
    # Task "P2V" lives in product 0 only: a resample that misses product 0 has no P2V query.
    table = {"task": np.array(["P2V"] * 2 + ["V2P"] * 4), "product_id": np.array([0, 0, 0, 1, 2, 2]),
             "R@1": np.array([100.0, 0.0, 100.0, 0.0, 100.0, 100.0])}
    counts = stats.bootstrap_counts(3, resamples=400, seed=0)
    empty = counts[:, 0] == 0
    assert 0 < empty.sum() < 400  # (2/3)^3 of the resamples
    intervals = stats.task_intervals(table, resamples=400, seed=0)
    # With the same counts, P2V's mean is 50 whenever it exists: the empty rows are not NaN-poisoned.
    assert intervals["P2V"]["R@1"] == (50.0, 50.0)
    replicates = stats.ratio(np.column_stack([counts @ [50.0, 0, 0]]), np.column_stack([counts @ [1.0, 0, 0]]))
    assert np.isnan(replicates[empty]).all()
    # Every valid replicate equals Δ = 50, none is as far from it as |Δ| -> p = 1 / (B' + 1).
    p = stats.bootstrap_p(np.array([50.0]), replicates)
    assert p[0] == 1.0 / ((~empty).sum() + 1)  # B' counts only resamples with queries


def test_task_intervals_match_a_direct_computation_and_ignore_row_order() -> None:
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(3)
    n = 600
    tasks = rng.choice(["P2V", "V2P", "L2L"], n)
    products = rng.integers(0, 25, n)
    r1 = np.where(rng.random(n) < 0.3 + 0.02 * products, 100.0, 0.0)
    mrr = r1 / 2 + rng.random(n) * 10
    table = pa.table({"task": tasks, "item_id": np.arange(n), "product_id": products, "R@1": r1, "MRR@50": mrr})
    intervals = stats.task_intervals(table, resamples=2000, seed=0)
    assert list(intervals) == ["P2V", "V2P", "L2L"]  # task order, not alphabetical
    assert list(intervals["P2V"]) == ["R@1", "MRR@50"]
    counts = stats.bootstrap_counts(25, resamples=2000, seed=0)
    # Row c of the resampling matrix is the c-th product in the order of the ids' text (10 before
    # 2), so the interval does not depend on whether ids are spelled as integers or strings.
    products = _text_ranks(products)
    for task in ("P2V", "L2L"):
        rows = tasks == task
        sizes = np.bincount(products[rows], minlength=25)
        for name, values in (("R@1", r1), ("MRR@50", mrr)):
            sums = np.bincount(products[rows], weights=values[rows], minlength=25)
            replicates = (counts @ sums) / (counts @ sizes)
            expected = np.quantile(replicates, [0.025, 0.975])
            assert intervals[task][name] == pytest.approx(tuple(expected), abs=1e-9)
            assert expected[0] < values[rows].mean() < expected[1]
    order = rng.permutation(n)
    assert stats.task_intervals(table.take(order), resamples=2000, seed=0) == intervals
    as_mapping = {name: table.column(name).to_numpy() for name in table.column_names}
    assert stats.task_intervals(as_mapping, resamples=2000, seed=0) == intervals


# -- t-test -------------------------------------------------------------------------------------


def _sakai_differences() -> np.ndarray:
    # Sakai's textbook case: 20 paired differences, mean 0.0750, sample variance 0.0251 (as
    # printed, rounded to 4 decimals): t = 2.116, p = 0.048, d_z = 0.473. Variance exactly 0.0251
    # would give t = 0.075 / sqrt(0.0251 / 20) = 2.117; 0.02513 (also printed 0.0251) gives 2.116.
    z = np.random.default_rng(0).standard_normal(20)
    z = (z - z.mean()) / z.std(ddof=1)
    return 0.0750 + math.sqrt(0.02513) * z


def test_sakai_textbook_t_test() -> None:
    d = _sakai_differences()
    assert round(d.mean(), 4) == 0.0750 and round(d.var(ddof=1), 4) == 0.0251
    for clusters in (None, np.arange(20), np.arange(20)[::-1] * 7):  # one query per cluster
        result = stats.cluster_robust_t(d, clusters)
        assert (round(result.t, 3), round(result.p, 3), round(result.d_z, 3)) == (2.116, 0.048, 0.473)
        assert result.df == 19


def test_paired_t_agrees_with_scipy() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    d = _sakai_differences()
    reference = scipy_stats.ttest_1samp(d, 0.0)
    result = stats.cluster_robust_t(d)
    assert result.t == pytest.approx(reference.statistic, rel=1e-9)
    assert result.p == pytest.approx(reference.pvalue, rel=1e-9)
    for t, df in [(0.0, 3), (0.3, 2526), (2.1, 19), (8.0, 2526), (40.0, 5), (1.5, 1.0), (-3.0, 7)]:
        assert stats.t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-9, abs=1e-300)


def test_cluster_robust_t_of_identical_copies_is_the_t_test_of_cluster_values() -> None:
    # Every cluster holds m identical queries: V = Σ (m(v_c − Δ))² · G/(G−1) / (G m)² = s_v² / G,
    # so the cluster-robust t is the one-sample t of the G cluster values, df = G − 1.
    rng = np.random.default_rng(4)
    cluster_values = rng.normal(0.3, 1.0, 15)
    values = np.repeat(cluster_values, 4)
    result = stats.cluster_robust_t(values, np.repeat(np.arange(15), 4))
    expected_t = cluster_values.mean() / (cluster_values.std(ddof=1) / math.sqrt(15))
    assert result.t == pytest.approx(expected_t, rel=1e-9)
    assert result.df == 14
    naive = stats.cluster_robust_t(values)  # treating the copies as independent overstates t
    assert naive.t == pytest.approx(expected_t * math.sqrt(59 / 14), rel=1e-9)


def test_t_of_constant_differences() -> None:
    assert stats.cluster_robust_t(np.zeros(5)).p == 1.0
    assert stats.cluster_robust_t(np.full(5, 2.0)).p == 0.0
    assert math.isnan(stats.cluster_robust_t(np.array([1.0, 2.0]), np.array([0, 0])).p)  # one cluster


# -- Holm, design effect ------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> running max 0.06
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm([0.5, 0.6]), [1.0, 1.0])  # capped at 1
    with pytest.raises(ValueError, match="0, 1"):
        stats.holm([0.1, 1.5])


def test_holm_is_monotone_and_never_below_raw_p() -> None:
    rng = np.random.default_rng(8)
    for _ in range(50):
        p = rng.random(rng.integers(1, 60)) ** 3
        adjusted = stats.holm(p)
        assert np.all(adjusted >= p) and np.all(adjusted <= 1)
        order = np.argsort(p)
        assert np.all(np.diff(adjusted[order]) >= 0)


def test_design_effect_of_independent_queries_and_of_copies() -> None:
    rng = np.random.default_rng(2)
    residuals = rng.normal(size=40)
    one_per_cluster = stats.design_effect(residuals[:, None], np.array([np.sum(residuals**2)]))
    assert one_per_cluster[0] == pytest.approx(1.0)
    copies = np.repeat(residuals[:10], 4)  # 4 identical queries per cluster: deff = 4
    sums = np.bincount(np.repeat(np.arange(10), 4), weights=copies)
    assert stats.design_effect(sums[:, None], np.array([np.sum(copies**2)]))[0] == pytest.approx(4.0)
    assert np.isnan(stats.design_effect(np.zeros((3, 1)), np.zeros(1))[0])


# -- null simulation ------------------------------------------------------------------------------


def test_null_simulation_product_level_holds_alpha_query_level_does_not() -> None:
    # Two systems from the same distribution; each product gets its own effect per system, so a
    # product's queries move together. Product-level sign flips are exact under this null.
    rejections = {"product": 0, "query": 0}
    n_seeds = 1000
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        sizes = rng.integers(3, 12, 30)
        clusters = np.repeat(np.arange(30), sizes)
        hidden = rng.normal(size=30)[clusters]
        a = np.where(hidden + rng.normal(size=30)[clusters] + rng.normal(0, 0.7, len(clusters)) > 0, 100.0, 0.0)
        b = np.where(hidden + rng.normal(size=30)[clusters] + rng.normal(0, 0.7, len(clusters)) > 0, 100.0, 0.0)
        _, p_product = stats.sign_flip_test(a - b, clusters, resamples=199, seed=seed)
        _, p_query = stats.sign_flip_test(a - b, None, resamples=199, seed=seed)
        rejections["product"] += p_product[0] < 0.05
        rejections["query"] += p_query[0] < 0.05
    assert 0.02 <= rejections["product"] / n_seeds <= 0.08, rejections
    assert rejections["query"] / n_seeds > 0.15, rejections


def test_importing_stats_imports_neither_pandas_nor_scipy() -> None:
    code = "import sys, ropebench.stats; print(sorted({'pandas', 'scipy'} & set(sys.modules)))"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def _text_ranks(products: np.ndarray) -> np.ndarray:
    """Each product's position among the distinct products sorted by their text."""
    rank = {value: i for i, value in enumerate(sorted(set(products.tolist()), key=str))}
    return np.array([rank[value] for value in products.tolist()], dtype=np.int64)


def test_task_intervals_do_not_depend_on_how_product_ids_are_spelled() -> None:
    pa = pytest.importorskip("pyarrow")
    rng = np.random.default_rng(4)
    n = 400
    tasks = rng.choice(["P2V", "V2P"], n)
    products = rng.integers(0, 30, n)  # 2 < 10 as integers, "10" < "2" as strings
    r1 = np.where(rng.random(n) < 0.2 + 0.02 * products, 100.0, 0.0)
    as_integers = pa.table({"task": tasks, "product_id": products, "R@1": r1})
    as_strings = pa.table({"task": tasks, "product_id": [str(p) for p in products.tolist()], "R@1": r1})
    assert stats.task_intervals(as_integers, resamples=500) == stats.task_intervals(as_strings, resamples=500)
