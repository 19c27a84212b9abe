"""Cross-domain few-shot classification (docs/fewshot.md) against an independent, plain
re-implementation of the protocol on uneven data (products lacking supports, skipped queries, rows
in random order, string ids, planted ties), number for number, through every engine."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ropebench
from ropebench.errors import UsageError
from tests.reference import p_hit, pairwise, scores64

DIRECTIONS = ("P2V", "V2P", "P2L", "L2P", "V2L", "L2V")


def uneven_data(seed: int, n: int = 260, dim: int = 6):
    rng = np.random.default_rng(seed)
    products = rng.integers(0, 30, n)
    domains = rng.choice(list("PVL"), n, p=[0.5, 0.3, 0.2])
    centres = rng.normal(size=(30, dim))
    emb = (centres[products] + 0.9 * rng.normal(size=(n, dim))).astype(np.float32)
    emb[5:40:3] = emb[6:41:3]  # duplicates: tied prototypes and tied queries
    ids = np.array([f"item-{rng.integers(1 << 30)}-{i}" for i in range(n)], dtype=object)
    order = rng.permutation(n)
    return emb[order], domains[order], products[order], ids[order]


def plain_fewshot(emb, domains, products, ids, *, shots, draws, seed, metric, ties):
    """The protocol of docs/fewshot.md written out one query at a time."""
    vectors = emb.astype(np.float64)
    if metric == "cosine":
        vectors = (vectors / np.sqrt(pairwise(vectors * vectors))[:, None]).astype(np.float32).astype(np.float64)
    out = {}
    for direction in DIRECTIONS:
        x, y = direction[0], direction[2]
        support = [i for i in range(len(ids)) if domains[i] == y]
        support.sort(key=lambda i: (str(products[i]), str(ids[i])))
        queries = [i for i in range(len(ids)) if domains[i] == x]
        for k in shots:
            accs, macros, at5s, per_query = [], [], [], {}
            for r in range(draws):
                keys = np.random.default_rng([seed, r, "PVL".index(y)]).random(len(support))
                chosen: dict = {}
                for position in np.argsort(keys, kind="stable"):
                    chosen.setdefault(products[support[position]], []).append(support[position])
                protos, labels = [], []
                for product in sorted(chosen, key=lambda p: p):
                    if len(chosen[product]) >= k:
                        total = np.zeros(emb.shape[1])
                        for item in chosen[product][:k]:
                            total = total + vectors[item]
                        mean = total / k
                        if metric == "cosine":
                            mean = mean / math.sqrt(pairwise(mean[None, :] * mean[None, :])[0])
                        protos.append(mean.astype(np.float32).astype(np.float64))
                        labels.append(product)
                protos = np.array(protos).reshape(len(protos), emb.shape[1])
                if metric == "cosine" and len(protos):  # the metric's own preparation, as for any item
                    protos = (protos / np.sqrt(pairwise(protos * protos))[:, None]).astype(np.float32).astype(float)
                labels = np.array(labels)
                acc, at5, by_product = [], [], {}
                for q in queries:
                    if products[q] not in set(labels.tolist()):
                        continue
                    s = scores64(vectors[q], protos, metric)
                    best = s[labels == products[q]].max()
                    a, t = int((s > best).sum()), int((s == best).sum()) - 1
                    acc.append(p_hit(a, t, 1, 1, ties))
                    at5.append(p_hit(a, t, 1, 5, ties))
                    by_product.setdefault(products[q], []).append(acc[-1])
                    per_query.setdefault(ids[q], []).append(acc[-1])
                if acc:
                    accs.append(100 * np.mean(acc))
                    at5s.append(100 * np.mean(at5))
                    macros.append(100 * np.mean([np.mean(v) for v in by_product.values()]))
            n = len(per_query)
            out[(direction, f"{k}-shot")] = {
                "n_queries": n, "n_skipped": len(queries) - n, "n_ways": len(labels),
                "acc": float(np.mean(accs)) if n else None, "acc@5": float(np.mean(at5s)) if n else None,
                "acc_macro": float(np.mean(macros)) if n else None,
                "sd": float(np.std(accs, ddof=1)) if n and draws > 1 else None,
                "per_query": {i: 100 * float(np.mean(v)) for i, v in per_query.items()}}
    return out


@pytest.mark.parametrize("metric,ties", [("cosine", "expected"), ("l2", "pessimistic"), ("ip", "optimistic")])
def test_equals_an_independent_implementation(engine, metric, ties):
    emb, domains, products, ids = uneven_data(3)
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids,
                                metric=metric, ties=ties, tasks="P2V", fewshot=True, shots="1,3", draws=3,
                                fewshot_seed=7, engine=engine, threads=1)
    want = plain_fewshot(emb, domains, products, ids, shots=(1, 3), draws=3, seed=7, metric=metric, ties=ties)
    section = result.fewshot
    assert section["protocol"] == {"shots": [1, 3], "draws": 3, "seed": 7}
    table = result.fewshot_per_query.to_pandas()
    for (direction, shots), cells in want.items():
        got = section["tasks"][direction][shots]
        for key in ("n_queries", "n_skipped", "n_ways"):
            assert got[key] == cells[key], (direction, shots, key)
        for key in ("acc", "acc@5", "acc_macro", "sd"):
            assert got[key] == pytest.approx(cells[key], abs=1e-9), (direction, shots, key)
        rows = table[table.task == f"{direction}/{shots}"].set_index("item_id")["acc"]
        assert rows.to_dict() == pytest.approx(cells["per_query"], abs=1e-9)
        low, high = got["ci"]["acc"]
        assert low <= got["acc"] <= high
        assert result.summary()[f"fewshot/{direction}/{shots}"] == got["acc"]
    # Some queries are skipped (products without k supports) and the 1-shot task has ways
    assert any(c["n_skipped"] for c in want.values()) and all(c["n_ways"] for c in want.values())


def test_supports_are_nested_and_shared():
    from ropebench.fewshot import support_rows
    from ropebench.io.validation import dataset_from_arrays

    emb, domains, products, ids = uneven_data(4)
    dataset = dataset_from_arrays(emb, domains, products, item_ids=ids)
    members = dataset.members("P")
    for draw in range(3):
        one_codes, one = support_rows(dataset, members, "P", 0, draw, 1)
        three_codes, three = support_rows(dataset, members, "P", 0, draw, 3)
        first = dict(zip(one_codes.tolist(), one[:, 0].tolist()))
        for code, row in zip(three_codes.tolist(), three.tolist()):
            assert first[code] == row[0]  # the 1-shot support is the first of the 3-shot ones
    # Another draw gives other supports
    assert not np.array_equal(support_rows(dataset, members, "P", 0, 0, 1)[1],
                              support_rows(dataset, members, "P", 0, 1, 1)[1])


def test_constant_embeddings_score_chance(engine):
    emb, domains, products, ids = uneven_data(5)
    emb = np.ones_like(emb)
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids, tasks="P2V",
                                fewshot=True, shots="1", draws=2, engine=engine, threads=1, ci=False)
    for by_shots in result.fewshot["tasks"].values():
        cells = by_shots["1-shot"]
        assert cells["acc"] == pytest.approx(100 / cells["n_ways"])
        assert cells["acc@5"] == pytest.approx(100 * min(5, cells["n_ways"]) / cells["n_ways"])
        assert cells["sd"] == 0.0


def test_row_order_and_round_trip(tmp_path):
    emb, domains, products, ids = uneven_data(6)
    first = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids, tasks="P2V",
                               fewshot=True, draws=2, ci=False)
    order = np.random.default_rng(1).permutation(len(ids))
    second = ropebench.evaluate(embeddings=emb[order], domains=domains[order], product_ids=products[order],
                                item_ids=ids[order], tasks="P2V", fewshot=True, draws=2, ci=False)
    assert first.fewshot["tasks"] == second.fewshot["tasks"]
    assert first.fewshot_per_query.equals(second.fewshot_per_query)
    first.write(tmp_path / "r.json")
    back = ropebench.load_results(tmp_path / "r.json")
    assert back.fewshot == first.to_json()["fewshot"]
    assert back.summary() == first.summary()


def test_bad_shots():
    emb, domains, products, ids = uneven_data(6)
    with pytest.raises(UsageError, match="--shots"):
        ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, fewshot=True, shots="0,x")


def test_the_cli_prints_the_fewshot_table_beside_the_retrieval_table():
    from click.testing import CliRunner

    from ropebench.cli import cli

    result = CliRunner().invoke(cli, ["evaluate", "sample_embeddings/cls_cd.parquet", "--manifest",
                                      "sample_embeddings/manifest.parquet", "--tasks", "P2V", "--fewshot", "--draws",
                                      "2", "--shots", "1", "-q"])
    assert result.exit_code == 0, result.output
    table = result.stdout.split("Few-shot classification")[1]
    assert "sd over 2 draws, seed 0" in table
    rows = [line.split() for line in table.splitlines() if line.endswith("]") and "1-shot" in line]
    assert [row[0] for row in rows] == ["P2V", "V2P", "P2L", "L2P", "V2L", "L2V"]


def test_per_query_file_holds_the_fewshot_rows_and_reads_back_both_tables(tmp_path):
    import pyarrow.parquet as pq

    from ropebench.io.per_query import split_table

    emb, domains, products, ids = uneven_data(7)
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids,
                                tasks="P2V,V2P", fewshot=True, shots="1,2", draws=2, ci=False)
    result.write(tmp_path / "r.json", per_query=tmp_path / "r.parquet")
    stored = pq.read_table(tmp_path / "r.parquet")
    # one file: 2 retrieval tasks' rows, then the few-shot rows, with the few-shot columns null in the former
    assert len(stored) == len(result.per_query) + len(result.fewshot_per_query)
    assert set(stored.column("task").to_pylist()) == {"P2V", "V2P"} | {
        f"{d}/{k}-shot" for d in DIRECTIONS for k in (1, 2) if f"{k}-shot" in result.fewshot["tasks"].get(d, {})}
    back = ropebench.load_results(tmp_path / "r.json")
    assert back == result
    assert back.per_query.equals(result.per_query, check_metadata=True)
    assert back.fewshot_per_query.equals(result.fewshot_per_query, check_metadata=True)
    # a results file without few-shot still splits to (table, None)
    assert split_table(result.per_query)[1] is None


def test_a_prototype_whose_supports_cancel_is_a_zero_vector(engine):
    # Product 0's two V items cancel exactly: its 2-shot prototype is the zero vector, which scores
    # 0 against every query (it used to become NaN under cosine and its query was dropped as unscored).
    emb = np.array([[1, 0], [0, 1], [-1, -0.1], [1, 0.2], [-1, -0.2], [0.1, 1], [0.2, 1], [-1, 0], [-1, -0.2],
                    [1, 0.05], [0, 1.1], [-1, -0.3]], dtype=np.float32)
    domains = np.array(list("PPPVVVVVVLLL"))
    products = np.array([0, 1, 2, 0, 0, 1, 1, 2, 2, 0, 1, 2])
    result = ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, tasks="P2V", fewshot=True,
                                shots="2", draws=2, ci=False, engine=engine, threads=1)
    cells = result.fewshot["tasks"]["P2V"]["2-shot"]
    # P item 0 (product 0) scores 0 with its zero prototype and 0.148 with product 1's: second place;
    # items 1 and 2 find their own prototypes first.
    assert (cells["n_queries"], cells["n_skipped"], cells["n_ways"]) == (3, 0, 3)
    assert cells["acc"] == pytest.approx(200 / 3) and cells["acc@5"] == 100.0 and cells["sd"] == 0.0


def test_the_prototype_cache_is_keyed_by_identity_not_by_a_reusable_id(monkeypatch):
    # CPython reuses the id of a freed object: an evaluation once received the prototypes of an
    # earlier evaluation's data (a 6-dimensional gallery for 2-dimensional queries). Every id the
    # few-shot module takes is made equal here, so only an identity check tells the data sets apart.
    from ropebench import fewshot

    def run(emb, domains, products, ids):
        return ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids,
                                  tasks="P2V", fewshot=True, shots="1,3", draws=2, ci=False, threads=1).fewshot

    first, second = uneven_data(3), uneven_data(8, dim=3)
    fewshot._CACHE.clear()
    want = run(*second)
    fewshot._CACHE.clear()
    monkeypatch.setattr(fewshot, "id", lambda obj: 42, raising=False)
    run(*first)
    assert run(*second)["tasks"] == want["tasks"]


def test_each_prototype_set_is_built_once_per_evaluation_even_after_many_evaluations(monkeypatch):
    # The caches used to be cleared whole once they held 65 entries, dead ones included: the third
    # ROPE-size evaluation in one process (60 prototype sets each) built nearly every set twice.
    # Entries of data that died are dropped instead; each evaluation builds each (domain, shots,
    # draw) set once, with the tasks built side by side (threads=2) too.
    from ropebench import fewshot

    built = []
    original = fewshot.prototypes
    monkeypatch.setattr(fewshot, "prototypes", lambda *args: built.append(1) or original(*args))
    for seed in range(6):
        built.clear()
        emb, domains, products, ids = uneven_data(seed)
        ropebench.evaluate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids, fewshot=True,
                           shots="1,2", draws=7, ci=False, threads=2)
        assert len(built) == 3 * 2 * 7, seed  # V2P and L2P share P's prototypes, and so on
        del emb
    assert len(fewshot._CACHE.found) <= 3 * 2 * 7 + fewshot._CACHE.limit // 2


def test_a_prototype_coordinate_of_negative_zeros_is_positive_zero():
    # The protocol's sum starts from zeros: 0 + (-0.0) is +0.0, so a coordinate that is -0.0 in
    # every support is +0.0 in the prototype (k = 1 included), under ip and cosine alike.
    from ropebench.fewshot import prototypes

    supports = np.array([[-0.0, 1.0], [-0.0, 2.0], [3.0, -0.0]], dtype=np.float32)
    for metric in ("ip", "cosine"):
        for positions in (np.array([[0]]), np.array([[0, 1]])):
            found = prototypes(supports, positions, metric)
            assert not np.signbit(found[0, 0]), (metric, positions.tolist())


def test_supports_of_rows_given_as_a_list_are_those_of_the_array():
    # The caches keep weak references to their owners; rows that cannot be weakly referenced (a
    # list) are computed, not cached, with the same supports.
    from ropebench import fewshot

    emb, domains, products, ids = uneven_data(5)
    dataset = ropebench.validate(embeddings=emb, domains=domains, product_ids=products, item_ids=ids)
    rows = dataset.members("V")
    as_array = fewshot.support_rows(dataset, rows, "V", 0, 3, 2)
    as_list = fewshot.support_rows(dataset, rows.tolist(), "V", 0, 3, 2)
    assert all(np.array_equal(a, b) for a, b in zip(as_array, as_list, strict=True))


def test_the_few_shot_cache_computes_once_for_two_threads_and_forgets_a_failure():
    # Two threads asking for one value at the same time: the second waits for the first's value
    # instead of computing it again. A computation that raises stores nothing and leaves no gate
    # behind: the next call computes.
    import threading

    from ropebench.fewshot import _Memo

    memo, owner = _Memo(4), np.arange(3)
    started, release, calls, found = threading.Event(), threading.Event(), [], []

    def slow() -> str:
        calls.append(1)
        started.set()
        release.wait(5)
        return "value"

    first = threading.Thread(target=lambda: found.append(memo.once((owner,), ("k",), slow)))
    first.start()
    started.wait(5)
    second = threading.Thread(target=lambda: found.append(memo.once((owner,), ("k",), slow)))
    second.start()
    second.join(0.3)  # long enough to reach the gate (without one it would compute meanwhile)
    release.set()
    first.join(5)
    second.join(5)
    assert found == ["value", "value"] and len(calls) == 1

    def fails() -> str:
        raise RuntimeError("no value")

    with pytest.raises(RuntimeError):
        memo.once((owner,), ("other",), fails)
    assert not memo.gates and memo.once((owner,), ("other",), lambda: "later") == "later"
