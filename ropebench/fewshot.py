"""Cross-domain few-shot classification (docs/fewshot.md): supports, prototypes, the task type, and
the numbers from the engine's first-hit counts. No I/O here.

Direction ``X2Y``: classify every item of domain X among the products that have at least k items
in domain Y, each represented by the prototype (mean) of k of its Y items. Accuracy is R@1 of the
query against the prototype gallery, through the same exact engine as retrieval (ties between
prototypes count in expectation), and ``acc@5`` is R@5.

Each draw is its own task (``V2P/1-shot/3@0``: direction, shots, draw, seed) whose gallery is that
draw's prototypes, so a query meets only its own draw's prototypes: the engine needs no new
exclusion rule, and the floating-point work is the same as one gallery of all draws' prototypes
with the other draws excluded (the query block is shared; only the gallery changes per draw).
"""

from __future__ import annotations

import math
import re
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ropebench.dataset import Dataset
from ropebench.engines.base import FirstHits, TaskData
from ropebench.errors import UsageError
from ropebench.protocol import CROSS_TASKS, DOMAINS
from ropebench.tasks import TaskType, Vectors, register_task_type

__all__ = ["FewshotSpec", "parse_shots", "support_rows", "support_columns", "prototypes", "fewshot_tasks",
           "FEWSHOT_TASK", "draw_numbers", "fewshot_section", "FEWSHOT_KS"]

FEWSHOT_KS = (1, 5)  # acc = R@1, acc@5 = R@5 against the prototypes
FEWSHOT_TASK = re.compile(r"^([PVL])2([PVL])/([1-9][0-9]*)-shot/([0-9]+)@([0-9]+)$")


@dataclass(frozen=True)
class FewshotSpec:
    """The few-shot protocol's settings: shots (k), draws (R) and the draws' seed."""

    shots: tuple[int, ...] = (1, 5)
    draws: int = 10
    seed: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"shots": list(self.shots), "draws": self.draws, "seed": self.seed}


def parse_shots(shots: str | Sequence[int | str]) -> tuple[int, ...]:
    items = shots.split(",") if isinstance(shots, str) else list(shots)
    out: set[int] = set()
    for item in items:
        text = str(item).strip()
        if not text.isdigit() or int(text) < 1:
            raise UsageError(f"--shots: {text!r} is not a positive integer (e.g. --shots 1,5)")
        out.add(int(text))
    if not out:
        raise UsageError("--shots: empty (e.g. --shots 1,5)")
    return tuple(sorted(out))


class _Memo:
    """Values computed once per set of live objects (a data set, a rows array, prepared vectors),
    keyed by their identities plus plain values and checked through weak references (an ``id`` alone
    is reused once its object is freed: a later evaluation then got another data set's prototypes,
    seen as a gallery of the wrong dimension). Nothing is kept alive by a key; the entries of objects
    that died are dropped at every insert, so one evaluation's 60 prototype sets never push out each
    other (a clear-all at 65 entries, stale ones included, made a second evaluation in one process
    build nearly every set twice), and at most ``limit`` live entries are kept (oldest first out).
    Thread-safe: the few-shot tasks are built side by side."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.found: dict[tuple[Any, ...], tuple[tuple[weakref.ref[Any], ...], Any]] = {}
        self.lock = threading.Lock()
        self.gates: dict[tuple[Any, ...], threading.Lock] = {}

    def once(self, owners: tuple[Any, ...], key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """The value stored for ``owners`` (the very objects) and ``key``, computed by ``compute``
        and stored where there is none: once, also when two threads ask for it at the same time.
        Owners that cannot be weakly referenced (a list of rows, say) get their value computed,
        not stored."""
        try:
            refs = tuple(weakref.ref(owner) for owner in owners)
        except TypeError:
            return compute()
        full = (*(id(owner) for owner in owners), *key)
        found = self._get(full, owners)
        if found is not None:
            return found
        with self.lock:
            gate = self.gates.setdefault(full, threading.Lock())
        try:
            with gate:
                found = self._get(full, owners)
                if found is None:
                    found = compute()
                    with self.lock:
                        self.found = {k: v for k, v in self.found.items() if all(r() is not None for r in v[0])}
                        while len(self.found) >= self.limit:
                            del self.found[next(iter(self.found))]
                        self.found[full] = (refs, found)
        finally:
            with self.lock:
                self.gates.pop(full, None)
        return found

    def _get(self, full: tuple[Any, ...], owners: tuple[Any, ...]) -> Any:
        with self.lock:
            hit = self.found.get(full)
        if hit is not None and all(ref() is owner for ref, owner in zip(hit[0], owners, strict=True)):
            return hit[1]
        return None

    def clear(self) -> None:
        with self.lock:
            self.found.clear()


# Live entries: one evaluation asks for 3 string orders, 3 x draws draw orders and 3 x shots x draws
# prototype sets (60 by default); a few evaluations' worth stay while their data live.
_ORDERS = _Memo(16)


def _string_order(dataset: Dataset, rows: np.ndarray) -> np.ndarray:
    """Positions of ``rows`` ordered by (``str(product_id)``, ``str(item_id)``): the same for every
    draw, so computed once per (dataset, rows array) (a weak reference: nothing is kept alive)."""
    def compute() -> np.ndarray:
        products = [str(p) for p in dataset.product_ids[rows].tolist()]
        items = [str(i) for i in dataset.item_ids[rows].tolist()]
        return np.asarray(sorted(range(len(rows)), key=lambda i: (products[i], items[i])), dtype=np.int64)

    return _ORDERS.once((dataset, rows), (), compute)


def _keys(dataset: Dataset, rows: np.ndarray, seed: int, draw: int, domain: str) -> np.ndarray:
    """``default_rng([seed, draw, y]).random(n_Y)`` assigned to Y's items ordered by
    (``str(product_id)``, ``str(item_id)``)."""
    order = _string_order(dataset, rows)
    keys = np.empty(len(rows))
    generator = np.random.default_rng([seed, draw, DOMAINS.index(domain)])
    keys[order] = generator.random(len(rows))
    return keys


_DRAWS = _Memo(256)


def _draw_order(dataset: Dataset, members: np.ndarray, domain: str, seed: int, draw: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One draw's items ordered by (product code, key): the order, its codes, each product's first
    position and size. The same for every shot count, and asked for by every task of the draw and by
    the linear screen: computed once per (dataset, rows array, domain, seed, draw)."""
    def compute() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        keys = _keys(dataset, members, seed, draw, domain)
        codes = dataset.product_codes[members]
        order = np.lexsort((keys, codes))
        sorted_codes = codes[order]
        starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        return order, sorted_codes, starts, np.diff(np.r_[starts, len(order)])

    order, sorted_codes, starts, sizes = _DRAWS.once((dataset, members), (domain, seed, draw), compute)
    return order, sorted_codes, starts, sizes


def support_rows(dataset: Dataset, members: np.ndarray, domain: str, seed: int, draw: int, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The supports of one draw: ``(product codes (n_ways,), positions (n_ways, k))``, positions into
    ``members`` (the domain's rows), each product's k items with the smallest keys, products with
    fewer than k items left out; products in code order."""
    order, sorted_codes, starts, sizes = _draw_order(dataset, members, domain, seed, draw)
    ways = sizes >= k
    first = starts[ways]
    # lexsort by (code, key): within a product, supports in ascending key order
    positions = order[first[:, None] + np.arange(k)[None, :]] if len(first) else np.zeros((0, k), dtype=np.int64)
    return sorted_codes[first], positions


def prototypes(definition: np.ndarray, positions: np.ndarray, metric: str) -> np.ndarray:
    """``(n_ways, d)`` float32 prototypes: the float64 mean of each product's support vectors of the
    score's definition (cosine: normalised), normalised again under cosine, rounded to float32 once."""
    from ropebench.engines.core.scores import tree_sum

    if not len(positions):
        return np.zeros((0, definition.shape[1]), dtype=np.float32)
    # Summed in support order (smallest key first), one support at a time, then divided by k; the
    # norm with the protocol's fixed pairwise order: every step is defined, so anyone gets the bits.
    total = definition[positions[:, 0]].astype(np.float64)
    total += 0.0  # 0 + y: y, and -0.0 becomes +0.0, as summing from zeros made it
    for i in range(1, positions.shape[1]):
        np.add(total, definition[positions[:, i]], out=total)  # float32 widened exactly, as astype does
    mean = total / positions.shape[1]
    if metric == "cosine":
        norm = np.sqrt(tree_sum(mean * mean))
        mean = mean / np.where(norm > 0, norm, 1.0)[:, None]
    return mean.astype(np.float32)


def support_columns(dataset: Dataset, members: Mapping[str, np.ndarray], spec: FewshotSpec) -> dict[str, Any]:
    """Per few-shot task, where its prototypes come from (for the linear screen,
    :mod:`ropebench.engines.fewshot_screen`): the same supports :func:`prototypes` averaged."""
    from ropebench.engines.fewshot_screen import SupportColumn

    out: dict[str, Any] = {}
    drawn: dict[tuple[str, int, int], np.ndarray] = {}  # V2P and L2P share their supports
    for direction in CROSS_TASKS:
        x, y = direction[0], direction[2]
        for k in spec.shots:
            for draw in range(spec.draws):
                if (y, k, draw) not in drawn:
                    drawn[(y, k, draw)] = support_rows(dataset, members[y], y, spec.seed, draw, k)[1]
                out[task_name(direction, k, draw, spec.seed)] = SupportColumn(x, y, (k, draw), drawn[(y, k, draw)])
    return out


def task_name(direction: str, k: int, draw: int, seed: int) -> str:
    return f"{direction}/{k}-shot/{draw}@{seed}"


def fewshot_tasks(spec: FewshotSpec) -> list[str]:
    """Every (direction, shots, draw) task of the protocol, in the order the results report them."""
    return [task_name(direction, k, draw, spec.seed) for direction in CROSS_TASKS for k in spec.shots
            for draw in range(spec.draws)]


_CACHE = _Memo(256)


def _prototype_gallery(dataset: Dataset, members: Mapping[str, np.ndarray], vectors: Mapping[str, Vectors],
                       domain: str, k: int, draw: int, seed: int, metric: str, center: np.ndarray | None
                       ) -> tuple[np.ndarray, Vectors]:
    """One draw's prototypes of domain Y (shared by both directions into Y within one build).

    Cached by the identity of Y's prepared vectors and the dataset, each checked through a weak
    reference: an ``id`` alone is reused once its object is freed, and a later evaluation then got
    another data set's prototypes (seen as a gallery of the wrong dimension)."""
    from ropebench.engines.exact import prepare_vectors, score_vectors

    own = vectors[domain]

    def compute() -> tuple[np.ndarray, Vectors]:
        codes, positions = support_rows(dataset, members[domain], domain, seed, draw, k)
        definition = own.exact if own.exact is not None else own.queries
        raw = prototypes(definition, positions, metric)
        queries, gallery = prepare_vectors(raw, metric, center=center)
        return codes, Vectors(queries, gallery, score_vectors(raw, metric, queries))

    codes, found = _CACHE.once((own, dataset), (domain, k, draw, seed, metric), compute)
    return codes, found


def _build(dataset: Dataset, members: Mapping[str, np.ndarray], vectors: Mapping[str, Vectors], task: str,
           metric: str, center: np.ndarray | None) -> TaskData:
    match = FEWSHOT_TASK.match(task)
    if match is None:
        raise KeyError(task)
    x, y, k, draw, seed = match.group(1), match.group(2), int(match.group(3)), int(match.group(4)), int(match.group(5))
    codes, gallery = _prototype_gallery(dataset, members, vectors, y, k, draw, seed, metric, center)
    return TaskData(
        queries=vectors[x].queries, gallery=gallery.gallery,
        query_products=dataset.product_codes[members[x]], gallery_products=codes,
        metric=metric, score_queries=vectors[x].exact, score_gallery=gallery.exact, center=center,
        query_set=x, gallery_set=f"{y}/{k}-shot/{draw}@{seed}",
    )


register_task_type(TaskType("fewshot", (), _build, pattern=FEWSHOT_TASK))


def draw_numbers(hits: FirstHits, products: np.ndarray, ties: str,
                 groups: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, float, float]:
    """One draw's per-query ``acc`` and ``acc@5`` (fractions, scored queries) and its ``acc``,
    ``acc_macro`` (mean over products of their queries' mean); ``products``: the scored queries' codes
    (``groups``: :func:`product_groups` of them, where the caller has it: the draws of one task share it)."""
    from ropebench.measures import exact_sum, hit_probabilities

    probability = hit_probabilities(hits.a, hits.t, hits.p, FEWSHOT_KS, ties)
    acc, at5 = probability[:, 0], probability[:, 1]
    if not len(acc):
        return acc, at5, math.nan, math.nan
    inverse, counts = groups if groups is not None else product_groups(products)
    sums = np.bincount(inverse, weights=acc, minlength=len(counts))
    return acc, at5, exact_sum(acc) / len(acc), exact_sum(sums / counts) / len(counts)


def product_groups(products: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each query's product among the distinct ``products`` and each product's query count."""
    _, inverse, counts = np.unique(products, return_inverse=True, return_counts=True)
    return inverse, counts


def fewshot_section(spec: FewshotSpec, task_data: Mapping[str, TaskData], hits: Mapping[str, FirstHits],
                    ties: str) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, dict[str, np.ndarray]],
                                        dict[str, np.ndarray]]:
    """The ``fewshot.tasks`` numbers (without ``ci``), per-query columns ``acc`` / ``acc@5`` in percent
    (averaged over draws) and the scored query positions, per reported task ``V2P/1-shot``."""
    from ropebench.measures import exact_sum

    out: dict[str, dict[str, dict[str, Any]]] = {}
    columns: dict[str, dict[str, np.ndarray]] = {}
    scored_rows: dict[str, np.ndarray] = {}
    for direction in CROSS_TASKS:
        for k in spec.shots:
            name = f"{direction}/{k}-shot"
            per_draw, macro, acc_sum, at5_sum = [], [], None, None
            scored = n_ways = groups = None
            for draw in range(spec.draws):
                task = task_name(direction, k, draw, spec.seed)
                h, data = hits[task], task_data[task]
                if scored is None or not np.array_equal(h.scored, scored):  # the draws score the same queries
                    groups = product_groups(data.query_products[h.scored])
                scored, n_ways = h.scored, len(data.gallery_products)
                acc, at5, mean, mean_macro = draw_numbers(h, data.query_products[h.scored], ties, groups)
                acc_sum = acc if acc_sum is None else acc_sum + acc
                at5_sum = at5 if at5_sum is None else at5_sum + at5
                per_draw.append(mean)
                macro.append(mean_macro)
            assert scored is not None and acc_sum is not None and at5_sum is not None
            n = int(scored.sum())
            acc_col = 100.0 * acc_sum / spec.draws
            at5_col = 100.0 * at5_sum / spec.draws
            columns[name] = {"acc": acc_col, "acc@5": at5_col}
            scored_rows[name] = np.flatnonzero(scored)
            sd = float(np.std(100.0 * np.asarray(per_draw), ddof=1)) if spec.draws > 1 and n else None
            out.setdefault(direction, {})[f"{k}-shot"] = {
                "n_queries": n, "n_skipped": int(len(scored) - n), "n_ways": int(n_ways or 0),
                "acc": exact_sum(acc_col) / n if n else None,
                "acc_macro": 100.0 * math.fsum(macro) / len(macro) if n else None,
                "acc@5": exact_sum(at5_col) / n if n else None,
                "sd": sd,
            }
    return out, columns, scored_rows
