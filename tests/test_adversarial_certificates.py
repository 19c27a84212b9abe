"""Adversarial cases for the exactness certificates (docs/exactness.md, docs/screening.md,
docs/fewshot.md): each case sits where a band is tightest or an assumption is thinnest, and the
counts must still be those of the float64 score, number for number.

- the floating-point environment: every band's underflow floor (and the float64 settlement itself)
  assumes IEEE gradual underflow; a thread with flush-to-zero / denormals-are-zero (what
  ``torch.set_flush_denormal(True)`` sets, and ropebench's own trainer sets while it trains) drops
  subnormal products silently;
- the bf16 residual band (core/bound.py::residual_bound) on the real CPU kernel: scores that round
  up to a power of two (the half-ulp binade edge), inputs at bf16 halfway points, inputs already
  bf16 (ρ = 0), residuals that are themselves subnormal times huge partners;
- the relevant levels' bands (core/bands.py, levels.py): bit-identical and 1-ulp-apart relevant
  items, irrelevant items equal to a level, against the float64 brute force on every engine;
- the few-shot combined screen (core/combine.py): products that are bit-identical copies (exact
  prototype ties, every query tied between two prototypes to the last bit), k = 10 shots, ip norms
  over 10⁶;
- torch shards (torch/shards.py): thresholds below zero (a zero item, or a zero padding row,
  scores 0 > T), zero and copied catalogue items, shards of one item, catalogue-size prefixes.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ropebench
from ropebench.errors import UsageError
from tests.catalogue_data import Distractors, write_catalogue
from tests.conftest import NO_TORCH, TORCH, Data, configured_engine, per_query_counts, resized, same_counts
from tests.reference import reference_relevant

needs_torch = pytest.mark.skipif(not TORCH, reason=NO_TORCH)

# -- the floating-point environment ---------------------------------------------------------------


def _subnormal_tie_data() -> dict[str, np.ndarray]:
    """ip, one P2V query ``(2⁻⁶⁴, 0, 0)``: its relevant item scores ``T = 2⁻¹²⁷`` and an irrelevant
    one ``3·2⁻¹²⁸ > T`` — both subnormal float32 products, exact with gradual underflow. Their band
    is a few 2⁻¹⁴⁶ wide (the products are tiny), so a screen that flushes them to 0 decides the
    irrelevant item *below* T without settling it: ``a`` becomes 0 instead of 1."""
    a = 2.0 ** -64
    embeddings = np.array([[a, 0, 0], [2 * a, 0, 0], [3 * a, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    return {"embeddings": embeddings, "domains": np.array(["P", "V", "V", "P", "V"]),
            "product_ids": np.array([0, 0, 1, 2, 2]), "item_ids": np.arange(5)}


def test_subnormal_products_are_counted_as_their_float64_score():
    result = ropebench.evaluate(**_subnormal_tie_data(), metric="ip", tasks="P2V", ci=False, threads=1)
    assert per_query_counts(result, "P2V")[0] == (1, 0, 1, False)


@needs_torch
def test_a_thread_that_flushes_subnormals_is_refused_not_miscounted():
    """torch.set_flush_denormal(True) (FTZ/DAZ in this thread, inherited by the threads it starts)
    flushes numpy's float32 *and* float64 subnormals: no band's floor covers that, and the float64
    settlement is no longer the protocol's score. evaluate refuses, saying how to fix it."""
    import torch

    outcome: dict[str, object] = {}

    def run() -> None:  # a thread of its own: its FP environment dies with it
        outcome["flushing"] = torch.set_flush_denormal(True)  # False where the CPU cannot flush
        try:
            result = ropebench.evaluate(**_subnormal_tie_data(), metric="ip", tasks="P2V", ci=False, threads=1)
            outcome["counts"] = per_query_counts(result, "P2V")[0]
        except UsageError as error:
            outcome["error"] = str(error)
        finally:
            torch.set_flush_denormal(False)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    if not outcome["flushing"]:
        pytest.skip("this CPU cannot flush subnormals (torch.set_flush_denormal returned False)")
    assert "set_flush_denormal(False)" in str(outcome.get("error")), \
        f"a flushing thread was not refused: {outcome}"


# -- the bf16 residual band on the real kernel ---------------------------------------------------


def _bf16_screen(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    import torch

    from ropebench.engines.torch.device import exact_kernels

    with exact_kernels(torch.device("cpu")):
        return (torch.from_numpy(x).bfloat16() @ torch.from_numpy(y).bfloat16().T).float().numpy().astype(np.float64)


def _edge_inputs(kind: str, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if kind == "power_of_two":  # x·y = 2^e (1 − 2⁻⁹ − δ): rounds *up* to 2^e, the half-ulp binade edge
        x, y = np.zeros((8, dim), np.float32), np.zeros((8, dim), np.float32)
        x[:, 0] = 2.0 ** (np.arange(8) - 4)
        y[:, 0] = 1 - 2.0 ** -9 - 2.0 ** -20 * np.arange(8)
        y[4:] *= -1  # negative scores round away from zero to -2^e
        return x, y
    if kind == "halfway":  # every input exactly halfway between two bf16 numbers: ρ as large as it gets
        bits = rng.normal(size=(12, dim)).astype(np.float32).view(np.uint32)
        x = ((bits & 0xFFFF0000) | 0x8000).view(np.float32)
        return x, x[::-1].copy()
    if kind == "bf16_exact":  # ρ = 0: only the accumulation and the output's half ulp are left
        import torch

        x = torch.from_numpy(rng.normal(size=(12, dim)).astype(np.float32)).bfloat16().float().numpy()
        y = torch.from_numpy(rng.normal(size=(12, dim)).astype(np.float32)).bfloat16().float().numpy()
        return x, y
    if kind == "spread":  # ip norms over 10^±6, scores of both signs
        x = (rng.normal(size=(12, dim)) * 10.0 ** rng.uniform(-6, 6, (12, 1))).astype(np.float32)
        y = (rng.normal(size=(12, dim)) * 10.0 ** rng.uniform(-6, 6, (12, 1))).astype(np.float32)
        return x, y
    # The smallest normal float32 with low bits set: its residual is itself subnormal, and the
    # partner is huge, so the residual term r·y is far above the floor.
    x = np.full((4, dim), np.float32(2.0 ** -126))
    x = (x.view(np.uint32) + np.arange(1, 5, dtype=np.uint32)[:, None] * np.uint32(0x3FFF)).view(np.float32)
    y = np.full((4, dim), np.float32(1e30))
    y[1::2] *= -1
    y[:, ::2] *= np.float32(0.75)
    return x, y


@needs_torch
@pytest.mark.parametrize("dim", [1, 3, 257, 4096])
@pytest.mark.parametrize("kind", ["power_of_two", "halfway", "bf16_exact", "spread", "subnormal_residual"])
def test_the_residual_band_holds_at_its_edges(kind, dim):
    """|bf16 screen − float64 score| <= the residual band on every pair, where each term of the band is
    tight: these errors reach within 2⁻¹² of the width (the margin M) for d = 1."""
    import torch

    from ropebench.engines.core import BF16, residual_bound
    from ropebench.engines.core.bound import pair_widths
    from ropebench.engines.torch.blocks import residual_norms

    x, y = _edge_inputs(kind, dim, np.random.default_rng(dim))
    assert BF16.covers(x) and BF16.covers(y)
    screened = _bf16_screen(x, y)
    nx, ny = np.linalg.norm(x.astype(np.float64), axis=1), np.linalg.norm(y.astype(np.float64), axis=1)
    rx = residual_norms(x, torch.device("cpu"), torch.bfloat16)
    ry = residual_norms(y, torch.device("cpu"), torch.bfloat16)
    assert rx is not None and ry is not None
    if kind == "subnormal_residual":
        assert (rx > 0).all() and (rx < 2.0 ** -126).all()
    width = pair_widths(residual_bound(dim, BF16), nx[:, None], ny[None, :], screened, rx[:, None], ry[None, :])
    exact = x.astype(np.float64) @ y.astype(np.float64).T
    assert (np.abs(screened - exact) <= width).all()


# -- the relevant levels' bands --------------------------------------------------------------------


def _level_edge_data(seed: int, metric: str, dim: int = 8, n_products: int = 10) -> Data:
    """Items of a product are bit-identical copies of one vector (exact ties among levels), copies
    one ulp away in one coordinate (bands that meet: settled), within 1e-6, or unrelated; a quarter
    of all items are copies of *other* items (irrelevant items exactly equal to some level); under
    ip, norms over 10^±3; groups on some items (intra tasks exclude them)."""
    rng = np.random.default_rng(seed)
    domains = np.repeat(np.array(["P", "V", "L"]), (45, 40, 35))
    n = len(domains)
    products = rng.integers(0, n_products, n).astype(np.int64)
    embeddings = rng.normal(size=(n_products, dim)).astype(np.float32)[products]
    kind = rng.integers(0, 4, n)
    for i in np.flatnonzero(kind == 1):
        j = rng.integers(0, dim)
        embeddings[i, j] = np.nextafter(embeddings[i, j], np.float32(np.inf))
    embeddings[kind == 2] += (rng.normal(size=(int((kind == 2).sum()), dim)) * 1e-6).astype(np.float32)
    embeddings[kind == 3] = rng.normal(size=(int((kind == 3).sum()), dim)).astype(np.float32)
    steal = rng.random(n) < 0.25
    embeddings[steal] = embeddings[rng.integers(0, n, int(steal.sum()))]
    if metric == "ip":
        embeddings *= (10.0 ** rng.integers(-3, 4, (n, 1))).astype(np.float32)
    groups = np.array([None if g < 0 else int(g) for g in rng.integers(-1, 4, n)], dtype=object)
    return Data(embeddings, domains, products, np.arange(n, dtype=np.int64), groups)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_levels_of_identical_and_one_ulp_apart_relevant_items_are_the_brute_force(engine, metric):
    """MAP@R, RP and mAP@10 per query equal the float64 brute force with tie expectation: the bands
    of identical relevant items coincide (one level of several items, settled), those one ulp
    apart meet (settled, two levels), and irrelevant copies of a relevant item tie with its level."""
    data = _level_edge_data(3, metric)
    result = data.evaluate(resized(engine, 16), metric=metric, ci=False, measures="R@K,MRR,MAP@R,RP,mAP@10")
    counters = result.environment["engine"]["counters"]
    assert counters["relevant_settled"] > 0 and counters["pairs_settled"] > 0  # the bands met: settled
    reference = reference_relevant(data.embeddings, data.domains, data.products, list(data.groups), metric=metric,
                                   map_ks=(10,))
    table = result.per_query.to_pandas()
    for task in result.tasks:
        rows = table[table.task == task].set_index("item_id")
        assert len(rows) == len(reference[task]["per_query"]) > 0
        for row, values in reference[task]["per_query"].items():
            for name in ("MAP@R", "RP", "mAP@10"):
                assert rows.loc[row, name] == pytest.approx(values[name], abs=1e-9), (task, row, name)


# -- the few-shot combined screen ------------------------------------------------------------------


def _twin_products(seed: int, metric: str, dim: int = 8) -> tuple[np.ndarray, ...]:
    """Every product has 11 items per domain (many products of one size: one run per tile); product
    1 is a bit-identical copy of product 0 and product 3 of product 2 in reversed item order, so
    their prototypes are equal (exactly, or up to the summation order) and every query of product 0
    is tied with a foreign prototype to the last bit; ip norms over 10^±3 (applied before copying)."""
    rng = np.random.default_rng(seed)
    n_products, per = 12, 11
    products = np.repeat(np.arange(n_products), 3 * per).astype(np.int64)
    domains = np.tile(np.repeat(np.array(["P", "V", "L"]), per), n_products)
    n = len(products)
    embeddings = rng.normal(size=(n_products, dim))[products] + 0.5 * rng.normal(size=(n, dim))
    if metric == "ip":
        embeddings *= 10.0 ** rng.uniform(-3, 3, (n, 1))
    for domain in "PVL":
        for source, target, step in ((0, 1, 1), (2, 3, -1)):
            a = np.flatnonzero((products == source) & (domains == domain))
            b = np.flatnonzero((products == target) & (domains == domain))
            embeddings[b] = embeddings[a][::step]
    return embeddings.astype(np.float32), domains, products, np.arange(n, dtype=np.int64)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_twin_prototypes_with_ten_shots_count_as_the_per_task_path(metric):
    """Exact prototype ties (a query's combined scores against two equal prototypes can differ in
    their last bits: different supports, so different screens) are settled, and counted as ties;
    10 shots out of 11 items; exact counts and censored ones."""
    from ropebench.engines.fewshot_screen import LinearSettings, linear_search
    from ropebench.engines.onepass import one_pass_first_hits
    from tests.test_fewshot_linear import _same_hits, _tasks

    names, task_data, columns = _tasks(*_twin_products(5, metric), metric, shots=(1, 3, 10), draws=2)
    settings = LinearSettings(rows=22, columns=33)
    exact = linear_search(task_data, columns, max_k=5, exact_censored=True, settings=settings)
    assert exact is not None
    reference = one_pass_first_hits(task_data, names, max_k=5, exact_censored=True)
    _same_hits(exact.hits, reference, names, max_k=None)
    assert sum(int(hits.t.sum()) for hits in reference.values()) > 0  # the twins tie
    assert exact.counters["pairs_settled"] > 0
    censored = linear_search(task_data, columns, max_k=5, settings=settings)
    assert censored is not None
    _same_hits(censored.hits, one_pass_first_hits(task_data, names, max_k=5), names)


# -- torch shards ----------------------------------------------------------------------------------


def _negative_thresholds(seed: int, dim: int = 6) -> tuple[Data, Distractors]:
    """ip test items of which half point away from their product (many thresholds ``T < 0``, where
    a zero item — or a zero padding row of a tile — scores 0 > T), norms over 10^±2; a catalogue of
    exact copies of test items (ties with relevant levels), zero items, negated test items, 1-ulp
    neighbours of test items and random items."""
    rng = np.random.default_rng(seed)
    domains = np.repeat(np.array(["P", "V", "L"]), (40, 35, 30))
    n = len(domains)
    products = rng.integers(0, 15, n).astype(np.int64)
    embeddings = rng.normal(size=(15, dim))[products] + 0.3 * rng.normal(size=(n, dim))
    embeddings[rng.random(n) < 0.5] *= -1
    embeddings = (embeddings * 10.0 ** rng.uniform(-2, 2, (n, 1))).astype(np.float32)
    data = Data(embeddings, domains, products, np.arange(n, dtype=np.int64), np.array([None] * n, dtype=object))
    m = 60
    items = (rng.normal(size=(m, dim)) * 10.0 ** rng.uniform(-2, 2, (m, 1))).astype(np.float32)
    item_domains = rng.choice(np.array(["P", "V", "L"]), m)
    for rows, make in ((slice(0, 20), lambda v: v), (slice(30, 40), lambda v: -v),
                       (slice(40, 50), lambda v: np.nextafter(v, np.float32(np.inf)))):
        source = rng.integers(0, n, rows.stop - rows.start)
        items[rows], item_domains[rows] = make(embeddings[source]), domains[source]
    items[20:30] = 0.0
    order = rng.permutation(m)
    return data, Distractors(items[order], item_domains[order], 1_000_000 + np.arange(m, dtype=np.int64))


@needs_torch
@pytest.mark.parametrize("screen", ["bf16", "fp32"])
def test_shards_below_zero_thresholds_count_as_the_default_engine(screen, tmp_path):
    """Per query and at every catalogue prefix, torch shards of 1 to 7 items (tiles mostly zero
    padding) count what the default engine counts, with thresholds below zero."""
    from ropebench.engines.core import judge_task

    data, catalogue = _negative_thresholds(0)
    task_data = data.task_data("ip")
    assert sum(int((judge_task(task_data[t]).best < 0).sum()) for t in task_data) > 20
    path = write_catalogue(tmp_path / "c.parquet", catalogue, [1, 2, 1, 7, 3, 1] + [5] * 10)
    for sizes, shard_rows in (("all", 1), ("0,1,7,33,all", 3)):
        options = dict(**data.arrays(), distractors=[path], distractor_sizes=sizes, metric="ip", ks=(1, 5, 10),
                       shard_rows=shard_rows, ci=False)
        mine = ropebench.evaluate(engine=configured_engine("torch", screen=screen), **options)
        theirs = ropebench.evaluate(**options)
        assert mine.environment["engine"]["shards"]["screen"] == f"torch-{screen}"
        assert mine.extra.get("distractor_curve") == theirs.extra.get("distractor_curve")
        for task in theirs.tasks:
            a, b = per_query_counts(mine, task), per_query_counts(theirs, task)
            assert set(a) == set(b)
            assert all(same_counts(a[q], b[q], 10) for q in b), task
