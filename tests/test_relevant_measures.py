"""MAP@R, R-Precision and mAP@K (measures over every relevant item): hand-computed cases, a brute
force over every tie order, the independent reference through every engine, and pytorch-metric-
learning / ir_measures / ranx on tie-free data, query for query."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ropebench
from ropebench.engines.core.levels import RelevantLevels
from ropebench.errors import UsageError
from ropebench.measures_relevant import relevant_columns
from ropebench.protocol import measure_names, parse_measures
from tests.conftest import (
    POLICIES,
    SIMILARITIES,
    Data,
    Spy,
    assert_reached,
    continuous_data,
    drawn_data,
    resized,
    tied_data,
)
from tests.reference import reference_relevant, relevant_measures

NAMES = ("MAP@R", "RP", "mAP@3", "mAP@10")


def levels_of(queries: list[list[tuple[float, bool]]], depth_k: int = 10) -> RelevantLevels:
    """RelevantLevels from each query's (score, relevant) items, counted plainly."""
    n_rel, offsets, above, tied, relevant, depth = [], [0], [], [], [], []
    for items in queries:
        rel_scores = sorted({s for s, r in items if r}, reverse=True)
        big_r = sum(r for _, r in items)
        n_rel.append(big_r)
        depth.append(max(big_r, depth_k))
        rho = 0
        for level in rel_scores:
            a = sum(1 for s, r in items if not r and s > level)
            if a + rho < depth[-1]:
                above.append(a)
                tied.append(sum(1 for s, r in items if not r and s == level))
                relevant.append(sum(1 for s, r in items if r and s == level))
            rho += sum(1 for s, r in items if r and s == level)
        offsets.append(len(above))
    array = np.asarray
    return RelevantLevels(array(n_rel, dtype=np.int64), array(depth, dtype=np.int64), array(offsets, dtype=np.int64),
                          array(above, dtype=np.int64), array(tied, dtype=np.int64), array(relevant, dtype=np.int64))


def brute_force(items: list[tuple[float, bool]], ties: str) -> dict[str, float]:
    """Every order of the items consistent with their scores (all permutations within each score),
    measured directly and averaged (expected), or the worst / best order (pessimistic / optimistic)."""
    big_r = sum(r for _, r in items)
    groups = [[r for s, r in items if s == level] for level in sorted({s for s, _ in items}, reverse=True)]
    results = []
    for orders in itertools.product(*[sorted(set(itertools.permutations(g))) for g in groups]):
        rel = [r for order in orders for r in order]
        values = {}
        for name, cut, den in [("MAP@R", big_r, big_r), ("RP", big_r, big_r), ("mAP@3", 3, min(big_r, 3)),
                               ("mAP@10", 10, min(big_r, 10))]:
            hits = ap = 0.0
            for i, r in enumerate(rel[:cut], start=1):
                hits += r
                ap += r * hits / i
            values[name] = 100 * (hits if name == "RP" else ap) / den
        results.append(values)
    if ties == "expected":  # distinct label orders of a group are equally likely (multinomial symmetry)
        return {name: sum(v[name] for v in results) / len(results) for name in NAMES}
    pick = min if ties == "pessimistic" else max
    # the pessimistic order puts irrelevant items first in every group: the minimum of every measure
    return {name: pick(v[name] for v in results) for name in NAMES}


def test_hand_computed_map_at_r_and_r_precision():
    # R = 3 relevant items at ranks 1, 3, 5 (no ties): P@1 = 1, P@3 = 2/3; rank 5 > R.
    # MAP@R = (1 + 2/3) / 3 = 5/9; RP = 2/3; mAP@10 = (1 + 2/3 + 3/5) / 3 = 34/45.
    items = [(9, True), (8, False), (7, True), (6, False), (5, True), (4, False)]
    cols = relevant_columns(levels_of([items]), NAMES, "expected")
    assert cols["MAP@R"][0] == pytest.approx(100 * 5 / 9)
    assert cols["RP"][0] == pytest.approx(100 * 2 / 3)
    assert cols["mAP@10"][0] == pytest.approx(100 * 34 / 45)
    # One relevant item tied with one irrelevant item at the top (R = 1): expected AP = 1/2·1 + 1/2·0
    # within R = 1; pessimistic 0, optimistic 100.
    tie = [(5, True), (5, False), (1, False)]
    for ties, want in (("expected", 50.0), ("pessimistic", 0.0), ("optimistic", 100.0)):
        assert relevant_columns(levels_of([tie]), ("MAP@R", "RP"), ties)["MAP@R"][0] == pytest.approx(want)


@settings(max_examples=200, deadline=None)
@given(items=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=7)
       .filter(lambda xs: any(r for _, r in xs)), ties=st.sampled_from(POLICIES))
def test_every_tie_order_brute_force(items, ties):
    """The closed forms equal the average (or the worst / best) over every order of tied items."""
    items = [(float(s), r) for s, r in items]
    got = relevant_columns(levels_of([items]), NAMES, ties)
    want = brute_force(items, ties)
    for name in NAMES:
        assert got[name][0] == pytest.approx(want[name], abs=1e-9), name
    # The reference's enumeration agrees too (it is what every engine is checked against).
    reference = relevant_measures(np.array([s for s, _ in items]), np.array([r for _, r in items]), ties, (3, 10))
    for name in NAMES:
        assert 100 * reference[name] == pytest.approx(want[name], abs=1e-9)


def test_measure_names_and_parsing():
    assert parse_measures(None) == ("R@K", "MRR")
    assert parse_measures("rp, map@r,MRR,R@K,mAP@100,map@20") == ("R@K", "MRR", "MAP@R", "RP", "mAP@20", "mAP@100")
    assert measure_names((1, 5), parse_measures("R@K,MRR,MAP@R,RP")) == ("R@1", "R@5", "MRR@5", "MAP@R", "RP")
    with pytest.raises(UsageError, match="'R@10'.*'nDCG'"):
        parse_measures("R@10,nDCG")


def test_default_measures_ask_no_extra_counts(engine):
    """The default R@K,MRR: the engine is not asked for all-relevant counts and computes none."""
    data = continuous_data(3, (60, 50, 40), n_products=12, dim=8)
    spy = _Recorder(engine)
    result = data.evaluate(spy, ci=False)
    assert spy.requests[0].counts == frozenset({"first_hit"}) and not spy.levels[0]
    assert "measures" not in result.protocol and "MAP@R" not in result.tasks["P2V"].measures
    result = data.evaluate(spy, ci=False, measures="MAP@R,RP")
    assert "all_relevant" in spy.requests[1].counts
    # one-pass and faiss count them in their own pass; another engine (torch) leaves them to the
    # contract's whole-row fallback (engines.core.levels.fill_levels).
    own_path = engine.name in ("one-pass", "faiss")
    assert set(spy.levels[1]) == (set(result.tasks) if own_path else set())
    assert result.protocol["measures"] == ["MAP@R", "RP"] and list(result.tasks["P2V"].measures) == ["MAP@R", "RP"]


class _Recorder(Spy):
    def __init__(self, engine):
        super().__init__(engine)
        self.requests, self.levels = [], []

    def search(self, request):
        self.requests.append(request)
        run = super().search(request)
        self.levels.append(dict(run.levels))
        return run


@pytest.mark.parametrize("metric", ["cosine", pytest.param("ip", marks=pytest.mark.slow),
                                    pytest.param("l2", marks=pytest.mark.slow)])
def test_reference_on_tied_data_with_groups_every_policy(engine, metric):
    """Planted ties (duplicates, constant vectors), groups: every engine equals the brute force,
    query for query, under every tie policy; the per-query columns average to the numbers."""
    data = tied_data(5, metric, (120, 100, 80), n_products=20, groups=True)
    spy = Spy(engine)
    for ties in POLICIES:
        result = data.evaluate(spy, metric=metric, ties=ties, ci=False, measures="R@K,MRR,MAP@R,RP,mAP@7")
        reference = reference_relevant(data.embeddings, data.domains, data.products, list(data.groups),
                                       metric=metric, ties=ties, map_ks=(7,))
        table = result.per_query.to_pandas()
        ids = data.item_ids.tolist()
        for task, cells in result.tasks.items():
            rows = table[table.task == task].set_index("item_id")
            for name in ("MAP@R", "RP", "mAP@7"):
                assert cells[name] == pytest.approx(reference[task][name], abs=1e-9), (task, name, ties)
                for row, values in reference[task]["per_query"].items():
                    assert rows.loc[ids[row], name] == pytest.approx(values[name], abs=1e-9)
                assert math.fsum(rows[name].tolist()) / len(rows) == cells[name]
                assert 0.0 <= cells[name] <= 100.0
    assert_reached(spy)


def test_intervals_per_query_file_and_json_round_trip(tmp_path):
    data = continuous_data(4, (80, 70, 60), n_products=15, dim=8)
    result = data.evaluate(None, measures="R@K,MRR,MAP@R,RP,mAP@20")
    names = measure_names(result.ks, result.protocol["measures"])
    assert names[-3:] == ("MAP@R", "RP", "mAP@20")
    for cells in result.tasks.values():
        assert set(cells["ci"]) == set(names)
        low, high = cells["ci"]["MAP@R"]
        assert low <= cells["MAP@R"] <= high
    written = result.write(tmp_path / "r.json", per_query=tmp_path / "q.parquet")
    back = ropebench.load_results(tmp_path / "r.json")
    assert back == written and back.measure_names == names
    assert {"MAP@R", "RP", "mAP@20"} <= set(back.per_query.column_names)
    assert "P2V/MAP@R" in back.summary() and "cross/RP" in back.summary()


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.sampled_from(SIMILARITIES).flatmap(lambda m: st.tuples(st.just(m), drawn_data(m))),
       ties=st.sampled_from(POLICIES), size=st.sampled_from([4, 16, 64]))
def test_reference_on_drawn_data(engine, data, ties, size):
    metric, drawn = data
    result = drawn.evaluate(resized(engine, size), metric=metric, ties=ties, threads=1, ci=False,
                            measures="MAP@R,RP,mAP@3")
    reference = reference_relevant(drawn.embeddings, drawn.domains, drawn.products,
                                   None if drawn.groups is None else list(drawn.groups),
                                   metric=metric, ties=ties, map_ks=(3,))
    for task, cells in result.tasks.items():
        for name in ("MAP@R", "RP", "mAP@3"):
            if reference[task][name] is None:
                assert cells[name] is None
            else:
                assert cells[name] == pytest.approx(reference[task][name], abs=1e-9), (task, name)


def test_row_order_changes_nothing(engine):
    data = tied_data(8, "cosine", (90, 80, 70), n_products=15, groups=True)
    first = data.evaluate(engine, ci=False, measures="MAP@R,RP,mAP@5")
    order = np.random.default_rng(0).permutation(len(data.item_ids))
    second = data.take(order).evaluate(engine, ci=False, measures="MAP@R,RP,mAP@5")
    assert first.to_json()["tasks"] == second.to_json()["tasks"]
    assert first.per_query.equals(second.per_query)


def test_refused_with_distractors_or_an_index():
    data = continuous_data(3, (20, 20, 20), n_products=5, dim=4)
    with pytest.raises(UsageError, match="MAP@R"):
        data.evaluate(None, measures="MAP@R", index="Flat")


def _tie_free(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Queries (one domain) against a gallery (another), continuous: no two scores tie."""
    rng = np.random.default_rng(seed)
    gallery_labels = np.repeat(np.arange(12), rng.integers(1, 6, 12))
    query_labels = rng.integers(0, 12, 40)
    centres = rng.normal(size=(12, 8))
    gallery = (centres[gallery_labels] + 1.2 * rng.normal(size=(len(gallery_labels), 8))).astype(np.float32)
    queries = (centres[query_labels] + 1.2 * rng.normal(size=(40, 8))).astype(np.float32)
    return queries, query_labels, gallery, gallery_labels


def _ours(queries, query_labels, gallery, gallery_labels) -> dict[str, np.ndarray]:
    emb = np.concatenate([queries, gallery])
    domains = ["V"] * len(queries) + ["P"] * len(gallery)
    products = np.concatenate([query_labels, gallery_labels])
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, metric="ip", tasks="V2P",
                                measures="MAP@R,RP", ci=False, threads=1, item_ids=np.arange(len(emb)))
    table = result.per_query.to_pandas().sort_values("item_id")
    return {name: table[name].to_numpy() / 100 for name in ("MAP@R", "RP")}


def test_pytorch_metric_learning_query_for_query():
    torch = pytest.importorskip("torch")
    accuracy = pytest.importorskip("pytorch_metric_learning.utils.accuracy_calculator")
    queries, query_labels, gallery, gallery_labels = _tie_free(1)
    ours = _ours(queries, query_labels, gallery, gallery_labels)
    calculator = accuracy.AccuracyCalculator(include=("mean_average_precision_at_r", "r_precision"),
                                             knn_func=_InnerProductKnn(torch), return_per_class=False)
    for row in range(len(queries)):  # query for query (their numbers are means)
        one = slice(row, row + 1)
        found = calculator.get_accuracy(torch.from_numpy(queries[one]), torch.from_numpy(query_labels[one]),
                                        torch.from_numpy(gallery), torch.from_numpy(gallery_labels),
                                        ref_includes_query=False)
        assert found["mean_average_precision_at_r"] == pytest.approx(ours["MAP@R"][row], abs=1e-6)
        assert found["r_precision"] == pytest.approx(ours["RP"][row], abs=1e-6)


class _InnerProductKnn:
    """Exact inner-product kNN for pytorch-metric-learning (its default is FAISS L2)."""

    def __init__(self, torch):
        self.torch = torch

    def __call__(self, query, k, reference, ref_includes_query):
        scores = query.double() @ reference.double().T
        distances, indices = self.torch.topk(scores, k, dim=1)
        return distances, indices


@pytest.mark.slow  # ranx compiles with numba on first use (~8 s)
@pytest.mark.filterwarnings("ignore::Warning")  # numba (ranx) warns about its own typing on import and first call
def test_ir_measures_and_ranx_r_precision_query_for_query():
    ir_measures = pytest.importorskip("ir_measures")
    ranx = pytest.importorskip("ranx")
    queries, query_labels, gallery, gallery_labels = _tie_free(2)
    ours = _ours(queries, query_labels, gallery, gallery_labels)
    scores = queries.astype(np.float64) @ gallery.astype(np.float64).T
    qrels = {f"q{i}": {f"d{j}": 1 for j in np.flatnonzero(gallery_labels == query_labels[i])}
             for i in range(len(queries))}
    run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(len(gallery))} for i in range(len(queries))}
    found = {m.query_id: m.value for m in ir_measures.iter_calc([ir_measures.Rprec], qrels, run)}
    ranx_qrels = ranx.Qrels(qrels)
    per_query = ranx.evaluate(ranx_qrels, ranx.Run(run), "r-precision", return_mean=False)
    ranx_rp = dict(zip(ranx_qrels.keys(), per_query))  # ranx orders queries its own way
    for i in range(len(queries)):
        assert found[f"q{i}"] == pytest.approx(ours["RP"][i], abs=1e-9)
        assert ranx_rp[f"q{i}"] == pytest.approx(ours["RP"][i], abs=1e-9)


def test_queries_with_many_levels_take_the_sorting_path(monkeypatch, engine):
    """Queries with more levels than the padded comparison holds are counted by one sort: same numbers."""
    from ropebench.engines.core import levels

    data = tied_data(9, "cosine", (70, 60, 50), n_products=8, groups=True)
    want = data.evaluate(engine, ci=False, measures="MAP@R,RP,mAP@5").to_json()["tasks"]
    monkeypatch.setattr(levels, "_PAD_WIDTH", 1)
    assert data.evaluate(engine, ci=False, measures="MAP@R,RP,mAP@5").to_json()["tasks"] == want


def test_floors_stay_below_the_depth_th_best_and_change_no_number(monkeypatch, engine):
    """Each query's floor (the certified bound that stops collection near rank depth) is at most its
    depth-th best eligible float64 score, and evaluating without floors gives the same numbers and
    per-query rows."""
    from ropebench.engines.core import levels
    from ropebench.engines.core.scores import exact_scores

    data = tied_data(11, "cosine", (90, 80, 70), n_products=10, groups=True)
    seen = []
    finish = levels.LevelCounter.finish

    def spy_finish(self, scored=None):
        seen.append((self.data, self.floor.copy(), self.depth.copy()))
        return finish(self, scored)

    monkeypatch.setattr(levels.LevelCounter, "finish", spy_finish)
    measures = "R@K,MRR,MAP@R,RP,mAP@5"
    small = resized(engine, 16)
    with_floors = data.evaluate(small, ci=False, threads=1, measures=measures)
    assert any(np.isfinite(floor).any() for _, floor, _ in seen), "no floor was ever certified"
    for task_data, floor, depth in seen:
        nq, ng = len(task_data.queries), len(task_data.gallery)
        q, g = np.repeat(np.arange(nq), ng), np.tile(np.arange(ng), nq)
        scores = exact_scores(task_data.exact_queries, task_data.exact_gallery, q, g, task_data.metric).reshape(nq, ng)
        eligible = np.ones((nq, ng), dtype=bool)
        if task_data.query_rows is not None:
            eligible[np.arange(nq), task_data.query_rows] = False
            if task_data.query_groups is not None and task_data.gallery_groups is not None:
                group = task_data.query_groups[:, None]
                eligible &= ~((task_data.gallery_groups[None, :] == group) & (group >= 0))
        for i in np.flatnonzero(np.isfinite(floor)):
            ranked = np.sort(scores[i][eligible[i]])[::-1]
            assert len(ranked) >= depth[i] and floor[i] <= ranked[depth[i] - 1]
    monkeypatch.setattr(levels.LevelCounter, "add_maxima", lambda self, q, items, values: q[:0])
    without = data.evaluate(small, ci=False, threads=1, measures=measures)
    assert without.to_json()["tasks"] == with_floors.to_json()["tasks"]
    assert without.per_query.to_pandas().equals(with_floors.per_query.to_pandas())


def near_tie_data(seed: int) -> Data:
    """Continuous data where a quarter of the rows are another row with one coordinate moved by one
    float32 ulp: relevant items whose float32 bands meet without tying, and irrelevant items whose
    float64 score falls inside a relevant item's band."""
    data = continuous_data(seed, (90, 80, 70), n_products=10, dim=8, groups=True)
    rng = np.random.default_rng(seed)
    embeddings = data.embeddings.copy()
    n = len(embeddings)
    source, target = rng.integers(0, n, n // 4), rng.integers(0, n, n // 4)
    embeddings[target] = embeddings[source]
    column = rng.integers(0, embeddings.shape[1], len(target))
    embeddings[target, column] = np.nextafter(embeddings[target, column], np.float32(np.inf))
    return data.with_embeddings(embeddings)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_relevant_bands_hold_each_float64_score_and_never_meet(metric):
    """The certificate behind settling relevant items only where their bands meet: every level's
    interval holds the float64 score of each of its items, an unsettled level is one item, a query's
    intervals are disjoint and descending, and the levels are those of settling every relevant pair
    (same items tied, same order); the best level gives each query's T and p."""
    from ropebench.engines.core import FP32, LevelCounter, best_relevant, task_bound
    from ropebench.engines.core.bands import relevant_bands
    from ropebench.engines.core.scores import exact_scores

    unsettled = settled_in_groups = 0
    for data in (near_tie_data(1), tied_data(3, metric, (90, 80, 70), n_products=12, groups=True),
                 continuous_data(2, (60, 50, 40), n_products=8, dim=8)):
        for task_data in data.task_data(metric).values():
            bands = relevant_bands(task_data, task_bound(task_data, FP32))
            exact = relevant_bands(task_data, None)  # every relevant pair settled: lo == hi, the score
            assert np.array_equal(bands.offsets, exact.offsets) and np.array_equal(bands.relevant, exact.relevant)
            assert (exact.item == -1).all() and np.array_equal(exact.lo, exact.hi)
            assert (bands.lo <= exact.lo).all() and (exact.lo <= bands.hi).all()
            settled = bands.item < 0
            assert np.array_equal(bands.lo[settled], exact.lo[settled])
            assert np.array_equal(bands.hi[settled], exact.lo[settled])
            query = np.repeat(np.arange(len(bands.offsets) - 1), np.diff(bands.offsets))
            alone = ~settled
            assert (bands.relevant[alone] == 1).all()
            scores = exact_scores(task_data.exact_queries, task_data.exact_gallery, query[alone], bands.item[alone],
                                  metric)
            assert np.array_equal(scores, exact.lo[alone])
            same = query[1:] == query[:-1]
            assert (bands.hi[1:][same] < bands.lo[:-1][same]).all()  # disjoint, descending
            unsettled += int(alone.sum())
            settled_in_groups += bands.settled
            # The first-hit judge built from the levels has best_relevant's T and p, bit for bit.
            bound = task_bound(task_data, FP32)
            judge = LevelCounter(task_data, bound).judge(bound)
            best = best_relevant(task_data, bound)
            assert np.array_equal(judge.best, best.best) and np.array_equal(judge.p, best.p)
    assert unsettled > 0 and settled_in_groups > 0


def test_levels_settled_by_band_and_in_batches_change_no_number(monkeypatch, engine):
    """Relevant items known by their band (settled on demand) and level candidates decided in
    batches give the numbers and per-query rows of settling every relevant pair and deciding every
    tile's candidates at once; a candidate inside an unsettled level's band did settle it."""
    from ropebench.engines import onepass
    from ropebench.engines.core import levels

    calls = []
    settle_levels = levels.LevelCounter._settle_levels

    def spy(self, index):
        calls.append(len(index))
        settle_levels(self, index)

    monkeypatch.setattr(levels.LevelCounter, "_settle_levels", spy)
    measures = "R@K,MRR,MAP@R,RP,mAP@5"
    for data, metric in ((near_tie_data(4), "cosine"), (tied_data(6, "cosine", (90, 80, 70), n_products=10,
                                                                    groups=True), "cosine"),
                         (near_tie_data(5), "ip")):
        small = resized(engine, 16)
        banded = data.evaluate(small, metric=metric, ci=False, threads=1, measures=measures, per_query=True)
        monkeypatch.setattr(levels, "SETTLE_BY_BAND", False)
        monkeypatch.setattr(onepass, "LEVEL_BATCH", 1)
        # Two workers deciding every tile's level candidates outside the lock, concurrently.
        plain = data.evaluate(small, metric=metric, ci=False, threads=2, measures=measures, per_query=True)
        monkeypatch.setattr(levels, "SETTLE_BY_BAND", True)
        monkeypatch.setattr(onepass, "LEVEL_BATCH", onepass.LEVEL_BATCH)
        assert banded.to_json()["tasks"] == plain.to_json()["tasks"]
        assert banded.per_query.to_pandas().equals(plain.per_query.to_pandas())
    assert sum(calls) > 0, "no candidate fell inside an unsettled level's band"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("outliers", [0, 2, 64])
def test_tile_selection_below_the_outliers_keeps_every_candidate(monkeypatch, outliers, dtype):
    """The one-pass tile selection with levels (one pass at the LEVEL_OUTLIERS-th lowest cut-off, the
    rows and columns below it one by one) selects every score at or above its row's or its column's
    cut-off (ties included; NaN scores never), as the one pass at the lowest cut-off does."""
    from ropebench.engines import onepass

    monkeypatch.setattr(onepass, "LEVEL_OUTLIERS", outliers)
    rng = np.random.default_rng(outliers)
    for n_r, n_c in ((70, 90), (3, 200), (130, 2), (1, 1)):
        scores = rng.standard_normal((n_r, n_c)).astype(np.float32)
        scores[rng.random((n_r, n_c)) < 0.02] = np.nan
        threshold_r = rng.uniform(0.5, 2.0, n_r).astype(np.float32)
        threshold_c = rng.uniform(0.5, 2.0, n_c).astype(np.float32)
        threshold_r[rng.random(n_r) < 0.1] = -3.0  # queries with no floor yet
        threshold_c[rng.random(n_c) < 0.1] = np.inf  # not collecting
        threshold_r[0] = scores[0, 0]  # a tie with the cut-off is selected
        # Cut-offs in float64 (between two float32 values: compared as float64, not rounded).
        threshold_r, threshold_c = threshold_r.astype(dtype), threshold_c.astype(dtype)
        if dtype is np.float64:
            threshold_r[1:] += 1e-12
            threshold_c -= 1e-12
        mask = np.empty((n_r, n_c), dtype=bool)
        onepass._select_with_outliers(scores, threshold_r, threshold_c, mask)
        wanted = (scores >= threshold_r[:, None]) | (scores >= threshold_c[None, :])
        assert not (wanted & ~mask).any()
        assert not (mask & ~(scores >= min(threshold_r.min(), threshold_c.min()))).any()


def test_a_wrong_float32_guess_of_a_candidates_level_changes_no_number(monkeypatch):
    """LevelCounter.sort_out guesses each candidate's place among the levels in float32 and confirms
    it in float64: with guesses shifted by whole levels the candidates are settled instead, and every
    number and per-query row is the same."""
    from ropebench.engines.core import levels

    data = near_tie_data(7)
    measures = "R@K,MRR,MAP@R,RP,mAP@5"
    want = data.evaluate(None, ci=False, threads=1, measures=measures, per_query=True)
    init = levels.LevelCounter.__init__
    settled = []

    def shifted(self, *args, **kwargs):
        init(self, *args, **kwargs)
        guess = np.roll(self.padded_guess, 1, axis=1)  # every guess one level off (NaN where none)
        self.padded_guess = guess
        settled.append(self)

    monkeypatch.setattr(levels.LevelCounter, "__init__", shifted)
    got = data.evaluate(None, ci=False, threads=1, measures=measures, per_query=True)
    assert got.to_json()["tasks"] == want.to_json()["tasks"]
    assert got.per_query.to_pandas().equals(want.per_query.to_pandas())
    assert sum(counter.settled for counter in settled) > 0


def test_level_guess_by_binary_search_is_the_row_count(monkeypatch):
    """The binary search of a candidate's padded row (LevelCounter.sort_out's float32 guess) counts
    exactly the row's values above the candidate wherever a row is non-increasing with NaN padding
    last (ties, NaN and infinite candidates, queries wider than the padding), as the whole-row
    comparison does; and the guess by the whole row gives the same numbers."""
    from ropebench.engines.core import levels

    monkeypatch.setattr(levels, "_PAD_WIDTH", 8)
    rng = np.random.default_rng(11)
    for n_q in (1, 5, 40):
        n_levels = rng.integers(0, 13, n_q)
        offsets = np.concatenate([[0], np.cumsum(n_levels)])
        level_q = np.repeat(np.arange(n_q), n_levels)
        # Descending within a query, with repeats (float32 rounding of close float64 levels).
        values = np.round(rng.standard_normal(len(level_q)), 1)
        values = np.concatenate([-np.sort(-values[offsets[i]:offsets[i + 1]]) for i in range(n_q)])
        padded = levels._padded(level_q, values, offsets).astype(np.float32)
        q = rng.integers(0, n_q, 500)
        y = np.round(rng.standard_normal(500), 1).astype(np.float32)
        y[:3] = [np.nan, np.inf, -np.inf]
        at_level = rng.integers(0, max(len(values), 1), 50)
        if len(values):
            q[3:53], y[3:53] = level_q[at_level], values[at_level].astype(np.float32)  # ties with a level
        want = levels._count_levels(padded, level_q, values.astype(np.float32), offsets, q, y, strict=True)
        got = levels._guess_levels(padded, level_q, values.astype(np.float32), offsets, q, y)
        assert np.array_equal(got, want), n_q

    data = near_tie_data(8)
    measures = "R@K,MRR,MAP@R,RP,mAP@5"
    by_search = data.evaluate(None, ci=False, threads=1, measures=measures, per_query=True)
    monkeypatch.setattr(levels, "GUESS_BY_SEARCH", False)
    by_row = data.evaluate(None, ci=False, threads=1, measures=measures, per_query=True)
    assert by_search.to_json()["tasks"] == by_row.to_json()["tasks"]
    assert by_search.per_query.to_pandas().equals(by_row.per_query.to_pandas())


def test_tiles_in_waves_collect_fewer_level_candidates_whatever_the_threads(monkeypatch):
    """The one-pass engine meets a block's tiles in waves of diagonals when it counts levels, so a
    query's next tile comes after the candidates of its last were decided (row order collected a
    row's next tiles first): fewer level candidates than row order on one thread, about as many on
    two workers as on one, and the same numbers and per-query rows in every case."""
    from ropebench.engines import onepass
    from ropebench.engines.core import levels

    collected: list[int] = []
    finish = levels.LevelCounter.finish

    def spy_finish(self, scored=None):
        collected.append(self.collected)
        return finish(self, scored)

    monkeypatch.setattr(levels.LevelCounter, "finish", spy_finish)
    # Batches decided every few tiles, as at full size (64k candidates: a few 2048-tiles).
    monkeypatch.setattr(onepass, "LEVEL_BATCH", 2048)
    data = continuous_data(3, (700, 650, 600), n_products=60, dim=16, noise=1.5)
    small = resized(onepass.OnePassEngine(), 48)
    measures = "R@K,MRR,MAP@R,RP"

    def run(threads: int) -> tuple[int, object]:
        collected.clear()
        result = data.evaluate(small, ci=False, threads=threads, measures=measures, per_query=True)
        return sum(collected), result

    waves_1, want = run(1)
    waves_2, two = run(2)
    monkeypatch.setattr(onepass, "_waves", lambda tiles, n_r, symmetric: tiles)
    rows_1, plain = run(1)
    for other in (two, plain):
        assert other.to_json()["tasks"] == want.to_json()["tasks"]
        assert other.per_query.to_pandas().equals(want.per_query.to_pandas())
    assert waves_1 < 0.85 * rows_1, (waves_1, rows_1)
    assert waves_2 < 1.1 * waves_1, (waves_2, waves_1)


def test_waves_hold_every_tile_once():
    """The wave order is a permutation of the tiles; a wave's tiles have distinct rows (and distinct
    columns where the block has at least as many tile columns as rows)."""
    from ropebench.engines.onepass import _waves

    for n_l, n_r, symmetric in ((5, 5, True), (1, 1, True), (4, 7, False), (7, 4, False), (6, 6, False), (1, 3, False)):
        tiles = [(i, j) for i in range(n_l) for j in range(i if symmetric else 0, n_r)]
        order = _waves(tiles, n_r, symmetric)
        assert sorted(order) == sorted(tiles) and len(order) == len(tiles)
        for start in range(0, len(order), n_l if not symmetric else 1):
            wave = order[start:start + (n_l if not symmetric else 1)]
            assert len({i for i, _ in wave}) == len(wave)
            if not symmetric and n_r >= n_l:
                assert len({j for _, j in wave}) == len(wave)


def test_a_blocks_level_state_is_released_once_its_tiles_are_done(monkeypatch):
    """The one-pass engine finishes a block's readers when its tiles are done and drops their level
    state (the padded levels, floors): while a block runs, no earlier block's LevelCounter is alive
    (peak memory of one block, not of every task)."""
    import gc
    import weakref

    from ropebench.engines import onepass
    from ropebench.engines.core import levels

    made: list[weakref.ref] = []
    init = levels.LevelCounter.__init__

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(weakref.ref(self))

    alive_at_start = []
    run_block = onepass._run_block

    def spy_run(block, *args):
        gc.collect()
        alive_at_start.append(sum(ref() is not None for ref in made))
        run_block(block, *args)

    monkeypatch.setattr(levels.LevelCounter, "__init__", spy_init)
    monkeypatch.setattr(onepass, "_run_block", spy_run)
    data = continuous_data(4, (300, 250, 200), n_products=30, dim=8)
    data.evaluate(resized(onepass.OnePassEngine(), 32), ci=False, threads=1, measures="MAP@R,RP")
    assert len(alive_at_start) == 6 and len(made) == 9
    assert max(alive_at_start) <= 2, alive_at_start  # the block's own readers (two for a cross block)


def test_levels_dropped_by_steps_are_the_levels_recounted(monkeypatch):
    """Dead levels dropped step by step from each touched query's last live one leave the live levels
    and the candidates above the last of them that recounting all its levels gives, after every
    batch (tied data with groups, mAP@K deeper than R, level candidates in small batches)."""
    from ropebench.engines import onepass
    from ropebench.engines.core import levels

    checked = []
    drop = levels.LevelCounter._drop_levels

    def both(self, rows):
        stepped = drop(self, rows)
        recounted = self._live_levels(rows)
        assert np.array_equal(stepped[0], recounted[0]) and np.array_equal(stepped[1], recounted[1])
        checked.append(int((stepped[0] < self.live[rows]).sum()))
        return stepped

    monkeypatch.setattr(levels.LevelCounter, "_drop_levels", both)
    monkeypatch.setattr(onepass, "LEVEL_BATCH", 64)
    for data in (tied_data(7, "cosine", (90, 80, 70), n_products=6, groups=True), near_tie_data(8)):
        for measures in ("MAP@R,RP", "MAP@R,mAP@20"):
            stepped = data.evaluate(resized(onepass.OnePassEngine(), 16), ci=False, threads=1, measures=measures,
                                    per_query=True)
            monkeypatch.setattr(levels, "LIVE_BY_STEPS", False)
            recounted = data.evaluate(resized(onepass.OnePassEngine(), 16), ci=False, threads=1,
                                      measures=measures, per_query=True)
            monkeypatch.setattr(levels, "LIVE_BY_STEPS", True)
            assert stepped.to_json()["tasks"] == recounted.to_json()["tasks"]
            assert stepped.per_query.to_pandas().equals(recounted.per_query.to_pandas())
    assert sum(checked) > 0, "no level died during the tiles"
