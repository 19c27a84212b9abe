"""Shared test data and engine configurations.

Data: seeded generators (:func:`continuous_data`, :func:`tied_data`) and hypothesis strategies
that draw the data itself (:func:`drawn_data`), so a failure shrinks to a small example. Every
generator returns a :class:`Data`: embeddings, domains, products, item ids (= the generating
row) and optional groups (None = no group).

Engines: a test that takes an ``engine`` argument runs once per registered engine, each
configured so that small data reaches its real code paths (:func:`configured_engine`): the one-pass
engine splits blocks into 64-item tiles and never uses the small-block shortcut (so does the torch
engine, once with each screen: bf16 and fp32); the FAISS engine searches in batches of 37 queries.
:class:`Spy` records what an engine did, and :func:`assert_reached` fails when a run took a
shortcut instead.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ropebench
from ropebench.engines import Engine, SearchRequest, SearchRun, TaskData, engine_names, get_engine, kernels
from ropebench.engines.exact import l2_center
from ropebench.engines.faiss import FaissEngine
from ropebench.engines.onepass import OnePassEngine, OnePassSettings
from ropebench.protocol import ALL_TASKS, METRICS, TIE_POLICIES

KS = (1, 5, 10, 20, 50)
# A short max K: FAISS lists max K + (most excluded items) candidates, so even small galleries
# truncate its lists (the tie-continuation and censoring paths), and the one-pass engine censors.
SHORT_KS = (1, 2, 5)
POLICIES = TIE_POLICIES
SIMILARITIES = METRICS

# Sizes at which small data reaches the engines' real paths.
TEST_TILE = 64
# The tile selection compiled wherever numba is (small data would otherwise stay on numpy's path;
# the suite also runs one-pass-numpy).
TEST_SETTINGS = OnePassSettings(tile=TEST_TILE, small_block=0, compiled=kernels.available())
TEST_QUERY_BATCH = 37


# The torch engine (extra ropebench[torch]) runs where torch is installed, with both screens.
TORCH = importlib.util.find_spec("torch") is not None
NO_TORCH = "torch is not installed (extra ropebench[torch]): the torch engine is not tested here"
TORCH_SCREENS = ("bf16", "fp32")


def configured_engine(name: str, size: int | None = None, screen: str = "bf16") -> Engine:
    """Engine ``name`` configured for test sizes; ``size`` shrinks its tiles / batches further;
    ``screen``: the torch engine's screening precision."""
    if name == "one-pass":
        settings = TEST_SETTINGS if size is None else dataclasses.replace(TEST_SETTINGS, tile=size)
        return OnePassEngine(settings=settings)
    if name == "faiss":
        return FaissEngine(query_batch=TEST_QUERY_BATCH if size is None else max(1, size - 1))
    if name == "torch":
        from ropebench.engines.torch import TorchEngine, TorchSettings

        return TorchEngine(device="cpu", screen=screen,
                           settings=TorchSettings(tile=TEST_TILE if size is None else size, small_block=0))
    return get_engine(name)  # an engine registered later runs with its defaults until given test sizes


ENGINE_NAMES = tuple(name for name in engine_names() if name != "torch" or TORCH)


def resized(engine: Engine, size: int) -> Engine:
    """The same engine with tiles / query batches of about ``size`` (for hypothesis-sized data)."""
    if isinstance(engine, OnePassEngine):  # keeps its choice of tile selection (compiled or numpy)
        return OnePassEngine(settings=dataclasses.replace(TEST_SETTINGS, tile=size, compiled=engine.settings.compiled))
    return configured_engine(engine.name, size, screen=getattr(engine, "screen", None) or "bf16")


def _engine_params() -> list[Any]:
    params: list[Any] = []
    for name in engine_names():
        if name == "one-pass" and kernels.available():
            # Its tile selection compiled (the default with numba) and by numpy: both real paths.
            params.append(pytest.param(configured_engine(name), id=name))
            params.append(pytest.param(OnePassEngine(settings=dataclasses.replace(TEST_SETTINGS, compiled=False)),
                                       id=f"{name}-numpy"))
        elif name != "torch":
            params.append(pytest.param(configured_engine(name), id=name))
        elif not TORCH:
            params.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=NO_TORCH)))
        else:
            # The fp32 screen runs the same code paths as bf16 with another precision (and the
            # default engine's band): in the slow run only, to keep the default run near a minute.
            params += [pytest.param(configured_engine(name, screen=screen), id=f"{name}-{screen}",
                                    marks=() if screen == "bf16" else pytest.mark.slow)
                       for screen in TORCH_SCREENS]
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``engine``: every registered engine at test sizes (the torch engine once per screen)."""
    if "engine" in metafunc.fixturenames:
        metafunc.parametrize("engine", _engine_params())


class Spy:
    """Wraps an engine and records each search: tasks, the total work announced (tiles for the
    one-pass engine, queries for FAISS) and the counters."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.name = engine.name
        self.runs: list[dict[str, Any]] = []

    def search(self, request: SearchRequest) -> SearchRun:
        record: dict[str, Any] = {"tasks": tuple(request.tasks), "total": None, "unit": None}
        on_start = request.on_start

        def start(total: int, unit: str) -> None:
            record["total"], record["unit"] = total, unit
            if on_start is not None:
                on_start(total, unit)

        run = self.engine.search(request.with_(on_start=start))
        record["counters"] = dict(run.counters)
        self.runs.append(record)
        return run

    @property
    def counters(self) -> dict[str, int]:
        """Counters summed over every search so far."""
        total: dict[str, int] = {}
        for run in self.runs:
            for key, value in run["counters"].items():
                total[key] = total.get(key, 0) + value
        return total


def assert_reached(spy: Spy) -> None:
    """The engine's real path ran, not a shortcut: the one-pass engine tiled some block into
    several tiles and scored no block by the small-block shortcut; FAISS ran several batches for
    some task."""
    assert spy.runs, "the engine never ran"
    counters = spy.counters
    if spy.name in ("one-pass", "torch"):  # the torch engine tiles its blocks as one-pass does
        assert counters["blocks_tiled"] > 0, counters
        tiles = sum(run["total"] for run in spy.runs)
        assert tiles > counters["blocks_tiled"], (tiles, counters)  # some block had several tiles
    elif spy.name == "faiss":
        tasks = sum(len(run["tasks"]) for run in spy.runs)
        assert counters["faiss_searches"] > tasks, counters  # some task ran in several batches
    else:  # pragma: no cover - an engine registered without a test configuration
        pytest.fail(f"no reach check for engine {spy.name!r}: add one to tests/conftest.py")


# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Data:
    """One evaluation's inputs, as arrays."""

    embeddings: np.ndarray  # (n, d) float32
    domains: np.ndarray  # (n,) "P" / "V" / "L"
    products: np.ndarray  # (n,) int64
    item_ids: np.ndarray  # (n,) int64, the generating row
    groups: np.ndarray | None = None  # (n,) object: int or None (no group)

    def arrays(self) -> dict[str, Any]:
        return {"embeddings": self.embeddings, "domains": self.domains, "product_ids": self.products,
                "item_ids": self.item_ids, "group_ids": None if self.groups is None else list(self.groups)}

    def evaluate(self, engine: Engine | str | None = None, **options: Any) -> Any:
        """``ropebench.evaluate`` on these arrays. Threads default to 2 for one-pass (its worker
        pool runs) and 1 for FAISS (its OpenMP threads spin ~10 ms per search on 2 shared cores)."""
        name = getattr(engine, "name", engine) or "one-pass"
        options.setdefault("threads", 1 if name == "faiss" else 2)
        return ropebench.evaluate(**self.arrays(), engine=engine, **options)

    def reference(self, **options: Any) -> dict[str, dict[str, Any]]:
        """The float64 brute force of tests/reference.py, counts keyed by item id."""
        from tests.reference import reference_evaluate

        out = reference_evaluate(self.embeddings, self.domains, self.products,
                                 None if self.groups is None else list(self.groups), **options)
        ids = self.item_ids.tolist()
        for cells in out.values():  # rows -> item ids, as in the per-query table
            cells["counts"] = {ids[row]: counts for row, counts in cells["counts"].items()}
            cells["near"] = {ids[row] for row in cells["near"]}
        return out

    def take(self, rows: np.ndarray) -> Data:
        return Data(self.embeddings[rows], self.domains[rows], self.products[rows], self.item_ids[rows],
                    None if self.groups is None else self.groups[rows])

    def with_embeddings(self, embeddings: np.ndarray) -> Data:
        return dataclasses.replace(self, embeddings=embeddings)

    def without_domain(self, domain: str) -> Data:
        """The data with every item of ``domain`` removed: its tasks have no query or no gallery."""
        return self.take(np.flatnonzero(self.domains != domain))

    def task_data(self, metric: str) -> dict[str, TaskData]:
        """Per task, the :class:`TaskData` an engine receives (the public engine interface)."""
        from ropebench.io.validation import dataset_from_arrays

        dataset = dataset_from_arrays(**self.arrays(), metric=metric)
        from ropebench.tasks import build_task_data, prepare_domains

        embeddings = dataset.embeddings
        center = l2_center(embeddings) if metric == "l2" else None
        members = {code: dataset.members(code) for code in "PVL"}
        vectors = prepare_domains(embeddings, members, "PVL", metric, center)
        return build_task_data(dataset, members, vectors, ALL_TASKS, metric, center)


def _groups(rng: np.random.Generator, n: int, n_groups: int) -> np.ndarray:
    groups = rng.integers(0, max(1, n_groups), n).astype(object)
    groups[rng.random(n) < 0.2] = None  # items without a group
    return groups


def _labels(rng: np.random.Generator, sizes: Sequence[int], n_products: int) -> tuple[np.ndarray, np.ndarray]:
    domains = np.repeat(np.array(["P", "V", "L"]), sizes)
    products = rng.integers(0, n_products, len(domains))
    # Products confined to product pages: their P queries have no cross-domain gallery item
    # (skipped), and a product with one page has no intra-domain one either.
    products[(domains != "P") & (products % 11 == 0)] += 1
    return domains, products.astype(np.int64)


def continuous_data(seed: int, sizes: Sequence[int] = (300, 250, 200), *, n_products: int = 60, dim: int = 16,
                    noise: float = 1.0, groups: bool = False) -> Data:
    """Float data like a trained model's: a product identity vector plus domain offset and noise.
    Exact ties essentially never happen; skipped queries do (see :func:`_labels`)."""
    rng = np.random.default_rng(seed)
    domains, products = _labels(rng, sizes, n_products)
    identity = rng.normal(size=(n_products + 1, dim))
    offset = {code: 0.3 * rng.normal(size=dim) for code in "PVL"}
    embeddings = identity[products] + noise * rng.normal(size=(len(products), dim))
    embeddings += np.stack([offset[code] for code in domains])
    order = rng.permutation(len(products))  # domains interleaved, as in a submission
    data = Data(embeddings.astype(np.float32), domains, products, np.arange(len(products), dtype=np.int64))
    data = data.take(order)
    data = dataclasses.replace(data, item_ids=np.arange(len(order), dtype=np.int64))
    return dataclasses.replace(data, groups=_groups(rng, len(order), len(order) // 4) if groups else None)


def tied_data(seed: int, metric: str, sizes: Sequence[int] = (300, 250, 200), *, n_products: int = 40,
              dim: int = 6, groups: bool = False) -> Data:
    """Data full of exact ties that every correct float32 engine must see as ties.

    ``ip`` and ``l2``: small-integer vectors (every score is an exact float32 integer), with
    duplicated rows and a block of constant vectors. ``cosine``: float vectors whose ties are
    bit-identical after normalisation: copies, power-of-two multiples and constant vectors
    (integer vectors would also tie mathematically between different directions, where float32
    and float64 may round apart).
    """
    rng = np.random.default_rng(seed)
    domains, products = _labels(rng, sizes, n_products)
    n = len(products)
    if metric == "cosine":
        pool = rng.normal(size=(n_products + 1, dim))
        embeddings = pool[products] + 0.8 * rng.normal(size=(n, dim))
        source, target = rng.integers(0, n, n // 4), rng.integers(0, n, n // 4)
        embeddings[target] = embeddings[source] * rng.choice([0.5, 1.0, 2.0, 4.0], (len(source), 1))
        embeddings[_constant(rng, products)] = 1.5
    else:
        base = rng.integers(-2, 3, (n_products + 1, dim))
        noise = rng.integers(-1, 2, (n, dim)) * (rng.random((n, 1)) < 0.6)
        embeddings = (base[products] + noise).astype(np.float64)
        embeddings[rng.integers(0, n, n // 6)] = embeddings[rng.integers(0, n, n // 6)]  # copies
        embeddings[_constant(rng, products)] = 1.0
    order = rng.permutation(n)
    data = Data(embeddings.astype(np.float32), domains, products, np.arange(n, dtype=np.int64)).take(order)
    data = dataclasses.replace(data, item_ids=np.arange(n, dtype=np.int64))
    return dataclasses.replace(data, groups=_groups(rng, n, n // 5) if groups else None)


def _constant(rng: np.random.Generator, products: np.ndarray) -> np.ndarray:
    """Rows made constant: every item of a few products (their queries tie with every other
    constant item, more than a test band cap holds) and 3% of the others."""
    return (products % 13 == 1) | (rng.random(len(products)) < 0.03)


# -- hypothesis: the data itself is drawn, so failures shrink -------------------------------

@st.composite
def drawn_data(draw: Callable[[Any], Any], metric: str, *, min_items: int = 4, max_items: int = 150,
               max_dim: int = 5, groups: bool | None = None) -> Data:
    """Small data full of ties, drawn element by element.

    ``ip``/``l2``: integer vectors in [-2, 2] (exact float32 scores). ``cosine``: rows picked
    from a small pool of float directions and scaled by powers of two, so that ties are exactly
    the bit-identical normalised rows (see :func:`tied_data`).
    """
    n = draw(st.integers(min_items, max_items))
    dim = draw(st.integers(1, max_dim))
    codes = draw(hnp.arrays(np.int8, n, elements=st.integers(0, 2)))
    n_products = draw(st.integers(1, max(1, n // 3)))
    products = draw(hnp.arrays(np.int64, n, elements=st.integers(0, n_products - 1)))
    if metric == "cosine":
        pool_size = draw(st.integers(1, 16))
        pool_seed = draw(st.integers(0, 2**16))
        pool = np.random.default_rng(pool_seed).normal(size=(pool_size, dim))
        index = draw(hnp.arrays(np.int64, n, elements=st.integers(0, pool_size - 1)))
        power = draw(hnp.arrays(np.int64, n, elements=st.integers(-1, 2)))
        embeddings = pool[index] * np.exp2(power)[:, None]
    else:
        embeddings = draw(hnp.arrays(np.int8, (n, dim), elements=st.integers(-2, 2)))
    if groups is None:
        groups = draw(st.booleans())
    group_ids = None
    if groups:
        drawn = draw(hnp.arrays(np.int64, n, elements=st.integers(-1, max(0, n // 4))))
        group_ids = np.array([None if g < 0 else int(g) for g in drawn], dtype=object)
    return Data(np.asarray(embeddings, dtype=np.float32), np.array(["P", "V", "L"])[codes], products,
                np.arange(n, dtype=np.int64), group_ids)


# -- comparing results ------------------------------------------------------------------------


def per_query_counts(result: Any, task: str) -> dict[int, tuple[int, int, int, bool]]:
    """``{item_id: (a, t, p, censored)}`` of one task from ``result.per_query``."""
    table = result.per_query
    columns = {name: table.column(name).to_pylist() for name in ("task", "item_id", "a", "t", "p", "censored")}
    return {int(item): (a, t, p, censored)
            for name, item, a, t, p, censored in zip(*columns.values()) if name == task}


def same_counts(mine: tuple[int, int, int, bool], theirs: tuple[int, int, int, bool], max_k: int) -> bool:
    """Equal first-hit counts, where a censored query (``a >= max K`` known, stored as
    ``max K, 0, 1``) matches any counts with ``a >= max K``: it misses at every K either way."""
    if mine[3] or theirs[3]:
        return mine[0] >= max_k and theirs[0] >= max_k
    return mine[:3] == theirs[:3]


def assert_matches_reference(result: Any, reference: Mapping[str, Mapping[str, Any]]) -> None:
    """Every count, n_tied and measure equals the float64 reference, query for query: zero
    differences, near ties included (both sides evaluate the same float64 definition)."""
    max_k = max(result.ks)
    for task, mine in result.tasks.items():
        theirs = reference[task]
        for key in ("n_queries", "n_skipped", "n_gallery"):
            assert mine[key] == theirs[key], (task, key, mine[key], theirs[key])
        counts = per_query_counts(result, task)
        assert set(counts) == set(theirs["counts"]), task
        wrong = {row: (counts[row], theirs["counts"][row]) for row in counts
                 if not same_counts(counts[row], (*theirs["counts"][row], False), max_k)}
        assert not wrong, (task, dict(list(wrong.items())[:5]))
        assert mine["n_tied"] == theirs["n_tied"], task
        for name in result.measure_names:
            if theirs[name] is None:
                assert mine[name] is None, (task, name)
            else:
                assert mine[name] == pytest.approx(theirs[name], abs=1e-9), (task, name)


def assert_same_per_query(first: Any, second: Any) -> None:
    """Two results have the same queries with the same counts (censoring aside, see
    :func:`same_counts`) and the same per-query measures, bit for bit."""
    max_k = max(first.ks)
    assert list(first.tasks) == list(second.tasks)
    for task in first.tasks:
        mine, theirs = per_query_counts(first, task), per_query_counts(second, task)
        assert set(mine) == set(theirs), task
        wrong = {row: (mine[row], theirs[row]) for row in mine if not same_counts(mine[row], theirs[row], max_k)}
        assert not wrong, (task, dict(list(wrong.items())[:5]))
    measures = list(first.measure_names)
    assert first.per_query.select(["task", "item_id", *measures]).equals(
        second.per_query.select(["task", "item_id", *measures]))


# -- the default run's size --------------------------------------------------------------------

# Matrices whose every cell runs through the same code: the default run keeps the default engine's
# full matrix (and the other engines' first cells); the rest runs with `-m slow`. Each entry:
# (test function, a predicate on the parameter id that marks the cell slow).
_SLOW_CELLS: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("test_shards_in_any_order_equal_one_combined_gallery", lambda id_: not id_.startswith("one-pass")),
    ("test_reference_on_tied_data_with_groups_every_policy",
     lambda id_: not id_.startswith("one-pass") and "cosine" in id_),
    ("test_float64_reference_on_tied_data_under_every_policy",
     lambda id_: not id_.startswith("one-pass") and not id_.endswith("expected")),
    ("test_rescoring_and_settlement_are_rare_on_continuous_data",
     lambda id_: id_.startswith("default") and "one-pass" not in id_),
    ("test_copies_tie_exactly_in_the_tiled_path", lambda id_: id_ == "default"),
    ("test_a_catalogue_split_off_the_gallery_equals_the_float64_reference", lambda id_: "torch" in id_),
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the cells of :data:`_SLOW_CELLS` slow before `-m "not slow"` deselects."""
    for item in items:
        name, _, param = item.name.partition("[")
        for test, slow in _SLOW_CELLS:
            if name == test and param and slow(param.rstrip("]")):
                item.add_marker(pytest.mark.slow)
