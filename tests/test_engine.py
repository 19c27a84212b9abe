"""The one-pass engine (ropebench.onepass) gives exactly the per-task engine's counts and numbers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ropebench import onepass
from ropebench.api import evaluate_dataset
from ropebench.domains import ALL_TASKS as TASKS
from ropebench.validate import dataset_from_arrays
from tests.reference import reference_evaluate


@pytest.fixture(autouse=True)
def _tiles_even_for_small_blocks(request, monkeypatch):
    """Integer data scores exactly in float32, so the tiled path is exercised at any size (by
    default blocks under SMALL_BLOCK multiply-adds are scored by exact_counts instead)."""
    if "small_blocks" not in request.keywords:
        monkeypatch.setattr(onepass, "SMALL_BLOCK", 0)


def _tied_data(seed: int, n: int = 2400, dim: int = 12, n_products: int = 120, groups: bool = True):
    """Small-integer embeddings (every inner product is exact in float32, so ties are real)
    with duplicated rows, products missing from some domains, and optional groups."""
    rng = np.random.default_rng(seed)
    products = rng.integers(0, n_products, n)
    domains = rng.choice(np.array(["P", "V", "L"]), n, p=[0.4, 0.35, 0.25])
    domains[products % 17 == 0] = "P"  # these products have no video or live item: skipped queries
    base = rng.integers(-2, 3, (n_products, dim))
    noise = rng.integers(-1, 2, (n, dim)) * (rng.random((n, 1)) < 0.6)
    embeddings = (base[products] + noise).astype(np.float32)
    embeddings[rng.integers(0, n, n // 8)] = embeddings[rng.integers(0, n, n // 8)]  # exact duplicates
    group_ids = rng.integers(0, n // 6, n) if groups else None
    return embeddings, domains, products, group_ids


def _run(dataset, engine: str, *, metric: str, ties: str, per_query: bool, ks=(1, 5, 10, 20, 50)):
    return evaluate_dataset(dataset, metric=metric, ties=ties, ks=ks, tasks=TASKS, threads=2,
                            per_query=per_query, progress=False, submission_info={}, manifest_info=None,
                            load_seconds=0.0, started=time.perf_counter(), engine=engine)


def _assert_same(one, per_task, per_query: bool) -> None:
    assert list(one.tasks) == list(per_task.tasks) == list(TASKS)
    for task in TASKS:
        assert one.tasks[task] == per_task.tasks[task], task  # counts, n_tied and every metric, exactly
    if per_query:
        assert one.per_query.equals(per_task.per_query)  # per-query a, t, p and hit probabilities


@pytest.mark.parametrize("ties", ["expected", "pessimistic", "optimistic"])
@pytest.mark.parametrize("groups", [False, True])
def test_engines_identical_on_tied_integer_data(ties, groups):
    embeddings, domains, products, group_ids = _tied_data(seed=7, groups=groups)
    dataset = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric="ip")
    one = _run(dataset, "one-pass", metric="ip", ties=ties, per_query=True)
    per_task = _run(dataset, "per-task", metric="ip", ties=ties, per_query=True)
    _assert_same(one, per_task, per_query=True)
    assert sum(one.tasks[t].n_tied for t in TASKS) > 100  # the data really is tied
    assert sum(one.tasks[t].n_skipped for t in TASKS) > 0


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_engines_identical_without_per_query_output(metric):
    """Censoring (queries missing at every K stop early) must not change any reported number."""
    embeddings, domains, products, group_ids = _tied_data(seed=11)
    dataset = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric=metric)
    _assert_same(_run(dataset, "one-pass", metric=metric, ties="expected", per_query=False),
                 _run(dataset, "per-task", metric=metric, ties="expected", per_query=False), per_query=False)


def test_engines_identical_on_cosine_with_duplicated_rows():
    """Float embeddings whose only ties are bit-identical rows (copies and positive multiples)."""
    rng = np.random.default_rng(3)
    n, n_products = 2000, 100
    products = rng.integers(0, n_products, n)
    domains = rng.choice(np.array(["P", "V", "L"]), n)
    embeddings = rng.normal(size=(n_products, 24))[products] + 1.5 * rng.normal(size=(n, 24))
    source = rng.integers(0, n, 300)
    embeddings[rng.integers(0, n, 300)] = embeddings[source] * rng.choice([1.0, 2.0, 0.5], (300, 1))
    dataset = dataset_from_arrays(embeddings.astype(np.float32), domains, products, metric="cosine")
    one = _run(dataset, "one-pass", metric="cosine", ties="expected", per_query=True)
    _assert_same(one, _run(dataset, "per-task", metric="cosine", ties="expected", per_query=True), per_query=True)
    assert sum(one.tasks[t].n_tied for t in TASKS) > 0


def test_one_pass_matches_float64_reference():
    embeddings, domains, products, group_ids = _tied_data(seed=5, n=600, n_products=40)
    dataset = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric="ip")
    one = _run(dataset, "one-pass", metric="ip", ties="expected", per_query=True)
    reference = reference_evaluate(embeddings, domains, products, list(group_ids), metric="ip")
    for task in TASKS:
        rows = one.per_query[one.per_query.task == task]
        # The reference lists queries in input order; the per-query frame sorts by item_id = row.
        assert sorted(zip(rows.a, rows.t, rows.p)) == sorted(reference[task]["counts"]), task
        for name in ("R@1", "R@10", "R@50", "MRR@50"):
            assert one.tasks[task][name] == pytest.approx(reference[task][name], abs=1e-9), (task, name)


def test_fallbacks_small_tiles_and_band_cap(monkeypatch):
    """Tiny tiles, tiny estimate batches and a tiny band cap (massive ties go to exact rescoring) change nothing."""
    monkeypatch.setattr(onepass, "TILE", 70)
    monkeypatch.setattr(onepass, "ESTIMATE_SCORES", 16)
    monkeypatch.setattr(onepass, "BAND_CAP", 3)
    embeddings, domains, products, group_ids = _tied_data(seed=13, n=900, n_products=30)
    embeddings[:200] = 1.0  # a block of constant embeddings: everything ties
    dataset = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric="ip")
    for per_query in (False, True):
        _assert_same(_run(dataset, "one-pass", metric="ip", ties="expected", per_query=per_query),
                     _run(dataset, "per-task", metric="ip", ties="expected", per_query=per_query), per_query)


def test_tasks_with_too_many_relevant_pairs_use_the_per_task_path(monkeypatch):
    """A block whose relevant pairs exceed MAX_PAIRS is searched per task; nothing changes."""
    calls = []
    original = onepass.first_hit_counts

    def spy(data, **kwargs):
        calls.append(len(data.queries))
        return original(data, **kwargs)

    embeddings, domains, products, group_ids = _tied_data(seed=17, n=1200, n_products=20)
    dataset = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric="ip")
    counts = sorted(onepass.n_relevant_pairs(data) for data in _all_task_data(dataset))
    monkeypatch.setattr(onepass, "first_hit_counts", spy)
    monkeypatch.setattr(onepass, "MAX_PAIRS", counts[4])  # the larger blocks go over it
    _assert_same(_run(dataset, "one-pass", metric="ip", ties="expected", per_query=True),
                 _run(dataset, "per-task", metric="ip", ties="expected", per_query=True), per_query=True)
    assert 0 < len(calls) < 9  # some tasks, not all, went to the per-task path in the one-pass run


def _all_task_data(dataset):
    from ropebench.api import _task_data
    from ropebench.domains import DOMAINS
    from ropebench.search import TaskData, prepare_vectors

    members = {code: np.flatnonzero(dataset.domains == i) for i, code in enumerate(DOMAINS)}
    vectors = prepare_vectors(dataset.embeddings, "ip")
    return [_task_data(dataset, members, task, vectors[0], vectors[1], TaskData) for task in TASKS]


def test_engine_subset_of_tasks_and_unknown_engine():
    embeddings, domains, products, _ = _tied_data(seed=2, n=500, n_products=30, groups=False)
    dataset = dataset_from_arrays(embeddings, domains, products, metric="ip")
    subset = ("V2P", "L2L")
    kwargs = dict(metric="ip", ties="expected", ks=(1, 10), tasks=subset, threads=1, per_query=False,
                  progress=False, submission_info={}, manifest_info=None, load_seconds=0.0,
                  started=time.perf_counter())
    one = evaluate_dataset(dataset, engine="one-pass", **kwargs)
    assert list(one.tasks) == list(subset)
    assert one.tasks == evaluate_dataset(dataset, engine="per-task", **kwargs).tasks
    with pytest.raises(ValueError, match="unknown engine"):
        evaluate_dataset(dataset, engine="fast", **kwargs)


@pytest.mark.small_blocks
@pytest.mark.parametrize("seed", range(40))
def test_copies_tie_in_tiny_blocks(seed):
    """Tiny float blocks with bit-identical rows: BLAS's small-matrix and matrix-vector kernels
    may round copies differently, so such blocks are scored by exact_counts, which scores each
    distinct row once. The truth: float64 products summed per pair (identical rows, identical sums)."""
    rng = np.random.default_rng(seed)
    n, dim = int(rng.integers(3, 60)), int(rng.choice([7, 64, 128]))
    embeddings = rng.normal(size=(n, dim)).astype(np.float32)
    embeddings[rng.integers(0, n, n // 2)] = embeddings[rng.integers(0, n, n // 2)]
    products = rng.integers(0, int(rng.integers(1, 6)), n)
    domains = rng.choice(np.array(["P", "V", "L"]), n)
    dataset = dataset_from_arrays(embeddings, domains, products, metric="ip")
    one = _run(dataset, "one-pass", metric="ip", ties="expected", per_query=True, ks=(1, 5))
    for task in TASKS:
        rows = one.per_query[one.per_query.task == task]
        query_rows, gallery_rows = np.flatnonzero(domains == task[0]), np.flatnonzero(domains == task[2])
        expected = []
        for q in query_rows:
            scores = (embeddings[q].astype(np.float64) * embeddings[gallery_rows].astype(np.float64)).sum(axis=1)
            eligible = gallery_rows != q
            relevant = (products[gallery_rows] == products[q]) & eligible
            if relevant.any():
                best = scores[relevant].max()
                other = eligible & ~relevant
                expected.append((int((scores[other] > best).sum()), int((scores[other] == best).sum()),
                                 int((scores[relevant] == best).sum())))
        assert sorted(zip(rows.a, rows.t, rows.p)) == sorted(expected), (task, seed)


def test_faiss_thread_setting_is_restored_when_the_search_loaded_faiss():
    """--threads applies to FAISS only inside the evaluation, also when FAISS is first imported there."""
    import subprocess
    import sys

    evaluate = ("import numpy as np, time; from ropebench.api import evaluate_dataset; "
                "from ropebench.validate import dataset_from_arrays; "
                "d = dataset_from_arrays(np.eye(6, dtype=np.float32), list('PPVVLL'), [0, 1, 0, 1, 0, 1], metric='ip'); "
                "evaluate_dataset(d, metric='ip', ties='expected', ks=(1,), tasks=('P2V',), threads=1, per_query=False, "
                "progress=False, submission_info={}, manifest_info=None, load_seconds=0.0, started=time.perf_counter(), "
                "engine='per-task'); ")
    after = subprocess.run([sys.executable, "-c", evaluate + "import faiss; print(faiss.omp_get_max_threads())"],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    fresh = subprocess.run([sys.executable, "-c", "import faiss; print(faiss.omp_get_max_threads())"],
                           capture_output=True, text=True, check=True).stdout.split()[-1]
    assert after == fresh


def test_released_embeddings_are_not_needed_after_the_split():
    """evaluate() lets the one-pass engine drop the matrix once each domain has its copy;
    nothing after that (metrics, per-query rows) may need it."""
    embeddings, domains, products, group_ids = _tied_data(seed=23, n=600, n_products=30)
    kept = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric="ip")
    released = dataset_from_arrays(embeddings, domains, products, group_ids=group_ids, metric="ip")
    kwargs = dict(metric="ip", ties="expected", ks=(1, 5, 10, 20, 50), tasks=TASKS, threads=2, per_query=True,
                  progress=False, submission_info={}, manifest_info=None, load_seconds=0.0,
                  started=time.perf_counter())
    one = evaluate_dataset(released, release_embeddings=True, **kwargs)
    assert released.embeddings is None and released.n_items == 600
    _assert_same(one, evaluate_dataset(kept, **kwargs), per_query=True)
    assert kept.embeddings is not None
