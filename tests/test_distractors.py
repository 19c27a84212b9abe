"""Distractors streamed by shard give the numbers of one combined gallery, at every nested size,
and a bad catalogue is refused with every problem named before any search."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ropebench
from ropebench.engines.onepass import OnePassEngine
from ropebench.engines.runners import ThreadRunner
from ropebench.errors import DataError, UsageError
from tests.catalogue_data import (
    Distractors,
    ShuffledRunner,
    assert_same_numbers,
    combined,
    integer_distractors,
    random_row_groups,
    write_catalogue,
)
from tests.conftest import KS, SHORT_KS, TEST_SETTINGS, Data, continuous_data, drawn_data, tied_data


def _run(data: Data, catalogue: list[Path], **options: Any) -> ropebench.EvaluationResult:
    options.setdefault("ci", False)
    return ropebench.evaluate(**data.arrays(), distractors=catalogue, **options)


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("ks", [KS, SHORT_KS])
@pytest.mark.parametrize("values", ["integer", "half"])
def test_shards_in_any_order_equal_one_combined_gallery(engine, metric, ks, values, tmp_path):
    """Vectors with exact scores full of ties, copies of test items among the distractors, random
    row groups of 1 to 40 rows (ties straddle shards), shards answered in random order.

    Integers are recognised as exact and their ties counted in the shards; half-integers score
    exactly too but are not recognised, so their ties go through the band and its settlement."""
    data = tied_data(3, metric, groups=True)
    rng = np.random.default_rng(7)
    distractors = integer_distractors(data, 7, 700, copies=150)
    if values == "half":
        data = data.with_embeddings(data.embeddings * np.float32(0.5) + np.float32(0.25))
        distractors = dataclasses.replace(distractors, embeddings=distractors.embeddings * np.float32(0.5)
                                          + np.float32(0.25))
    path = write_catalogue(tmp_path / "d.parquet", distractors, random_row_groups(rng, 700, 40))
    runner = ShuffledRunner(11)
    result = _run(data, [path], engine=engine, metric=metric, ks=ks, shard_rows=25, runner=runner)
    single = ropebench.evaluate(**combined(data, distractors), engine=engine, metric=metric, ks=ks, ci=False)
    assert_same_numbers(result, single)
    assert runner.seen != sorted(runner.seen) and len(runner.seen) > 20  # many shards, out of order
    counters = result.environment["engine"]["counters"]
    # bf16 holds integers exactly only up to 2^8: l2's screening vectors [2g, -|g|^2] of these data
    # pass that, so a bf16 screen of the shards is not exact there and its ties go through the band.
    bf16_l2 = getattr(engine, "screen", None) == "bf16" and metric == "l2"
    if values == "integer" and not bf16_l2:
        assert counters["distractor_pairs_settled"] == 0  # exact screen: ties counted in the shards
    else:
        assert counters["distractor_pairs_settled"] > 0
    assert sum(result.tasks[t]["n_tied"] for t in result.tasks) > 100


def test_copies_of_test_items_tie_exactly_under_cosine(tmp_path):
    """Float vectors whose only ties are bit-identical rows: copies and power-of-two multiples of
    test items as distractors tie with them exactly, as in a combined gallery (searched by the
    faiss engine and by the one-pass engine in small tiles, whose band settlement keeps copies tied)."""
    data = continuous_data(5, dim=12)
    rng = np.random.default_rng(5)
    distractors = integer_distractors(data, 5, 500, copies=300)
    scale_by = rng.choice(np.array([0.5, 1.0, 2.0, 4.0], dtype=np.float32), (300, 1))
    distractors.embeddings[:300] *= scale_by
    path = write_catalogue(tmp_path / "d.parquet", distractors, random_row_groups(rng, 500, 60))
    result = _run(data, [path], engine="faiss", metric="cosine", shard_rows=64)
    single = ropebench.evaluate(**combined(data, distractors), engine="faiss", metric="cosine", ci=False)
    assert_same_numbers(result, single)
    tiled = ropebench.evaluate(**combined(data, distractors), engine=OnePassEngine(TEST_SETTINGS), metric="cosine",
                               ci=False)
    assert_same_numbers(tiled, single)
    assert sum(result.tasks[t]["n_tied"] for t in result.tasks) > 20  # the copies do tie
    assert result.environment["engine"]["counters"]["distractor_pairs_settled"] > 0


def test_a_near_tie_inside_the_band_is_settled_exactly(engine, tmp_path):
    """Large vectors: scores a quarter apart lie inside the rounding band (its half-width is
    about 0.7 here: γ_4 |q||g| with |q||g| ≈ 3·10⁶), so only the float64 settlement tells s+ - ¼,
    s+ and s+ + ¼ apart. The scores are exact in float32, but the values are not integers, so they
    are not recognised as exact: the band and its settlement decide."""
    # q·g = 1000² · 3 + g[3]: the last coordinate moves a score by exactly 1.
    test = np.array([[1000, 1000, 1000, 1], [1000, 1000, 1000, 500.5], [0, 3, 0, 0], [0, 0, 3, 0],
                     [3, 0, 0, 0], [0, 0, 0, 3]], dtype=np.float32)
    data = Data(test, np.array(["P", "V", "V", "P", "V", "P"]), np.array([0, 0, 1, 1, 2, 2]),
                np.arange(6, dtype=np.int64))
    near = np.array([[1000, 1000, 1000, 500.75], [1000, 1000, 1000, 500.5], [1000, 1000, 1000, 500.25],
                     [1000, 1000, 1000, 497.5], [1000, 1000, 1000, 503.5]], dtype=np.float32)
    distractors = Distractors(near, np.array(["V"] * 5), 100 + np.arange(5, dtype=np.int64))
    path = write_catalogue(tmp_path / "d.parquet", distractors, [2, 3])
    result = _run(data, [path], engine=engine, metric="ip", tasks="P2V", shard_rows=2)
    # Query 0 (P2V): s+ = 3,000,500.5; above it 500.75 and 503.5 (a = 2), at it the copy (t = 1).
    row = [r for r in result.per_query.to_pylist() if r["item_id"] == 0][0]
    assert (row["a"], row["t"], row["p"]) == (2, 1, 1)
    assert result.environment["engine"]["counters"]["distractor_pairs_settled"] >= 3
    single = ropebench.evaluate(**combined(data, distractors), engine=engine, metric="ip", tasks="P2V", ci=False)
    assert_same_numbers(result, single)


def test_a_zero_query_ties_with_every_distractor_without_listing_them(tmp_path):
    """Under ip a zero query scores exactly 0 with everything: all distractors of the gallery
    domain tie with s+ = 0 in any computation, and are counted in the shards."""
    data = continuous_data(13, sizes=(40, 40, 40), dim=6)
    in_v = set(data.products[data.domains == "V"].tolist())
    zero = next(i for i in range(len(data.domains)) if data.domains[i] == "P" and data.products[i] in in_v)
    data.embeddings[zero] = 0.0
    distractors = Distractors(np.random.default_rng(13).normal(size=(90, 6)).astype(np.float32),
                              np.array(list("PVL" * 30)), 7000 + np.arange(90))
    path = write_catalogue(tmp_path / "d.parquet", distractors, 20)
    result = _run(data, [path], metric="ip", shard_rows=20)
    single = ropebench.evaluate(**combined(data, distractors), metric="ip", engine="faiss", ci=False)
    assert_same_numbers(result, single)
    rows = [r for r in result.per_query.to_pylist() if r["item_id"] == zero and r["task"] == "P2V"]
    assert rows[0]["a"] == 0 and rows[0]["t"] >= 30  # every distractor of V (30) ties
    # A zero query's band is a point: its ties are counted without settlement.
    assert result.environment["engine"]["counters"]["distractor_pairs_settled"] < 30


def test_massive_near_ties_are_settled_on_the_shard(tmp_path):
    """Distractors that are copies of the gallery's items, at half scale so the screen is not
    recognised as exact: every one lies in its queries' band and is settled where the shard runs,
    with nothing listed for the client; the counts equal one combined gallery's."""
    data = tied_data(14, "ip").with_embeddings(tied_data(14, "ip").embeddings * np.float32(0.5))
    copies = data.embeddings[data.domains == "V"]
    distractors = Distractors(copies, np.array(["V"] * len(copies)), 50_000 + np.arange(len(copies)))
    path = write_catalogue(tmp_path / "d.parquet", distractors, 40)
    result = _run(data, [path], metric="ip", tasks="P2V", shard_rows=40)
    assert result.environment["engine"]["counters"]["distractor_pairs_settled"] > len(copies)
    single = ropebench.evaluate(**combined(data, distractors), metric="ip", tasks="P2V", ci=False)
    assert_same_numbers(result, single)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_nested_sizes_equal_separate_runs(metric, tmp_path):
    data = tied_data(4, metric) if metric == "ip" else continuous_data(4)
    distractors = integer_distractors(data, 4, 600, copies=100)
    path = write_catalogue(tmp_path / "d.parquet", distractors, 50)
    curve = _run(data, [path], metric=metric, distractor_sizes="0,130,1e2,all", shard_rows=75)
    assert curve.extra["distractors"]["sizes"] == [0, 100, 130, 600]
    document = curve.extra["distractor_curve"]
    alone = ropebench.evaluate(**data.arrays(), metric=metric, ci=False)
    for position, size in enumerate(document["sizes"]):
        single = alone if size == 0 else _run(data, [path], metric=metric, distractor_sizes=str(size), shard_rows=75)
        for task in curve.tasks:
            for name in curve.measure_names:
                assert document["tasks"][task][name][position] == single.tasks[task][name], (size, task, name)
            assert document["n_gallery"][task][position] == single.tasks[task]["n_gallery"], (size, task)
            assert document["n_tied"][task][position] == single.tasks[task]["n_tied"], (size, task)
    assert curve.to_json()["tasks"] == single.to_json()["tasks"]  # the main numbers: the largest size


def test_result_records_the_catalogue_and_reads_back(tmp_path):
    data = continuous_data(6)
    distractors = integer_distractors(data, 6, 300)
    first = write_catalogue(tmp_path / "a.parquet", distractors.take(slice(0, 120)), 40)
    folder = tmp_path / "more"
    folder.mkdir()
    write_catalogue(folder / "b.parquet", distractors.take(slice(120, 300)), 60)
    result = _run(data, [first, folder], distractor_sizes="0,200,all", ci=True)
    record = result.extra["distractors"]
    assert record["paths"] == [str(first), str(folder)] and len(record["sha256"]) == 2
    assert sum(record["n_items"].values()) == 300 and record["sizes"] == [0, 200, 300]
    counts = {code: int((distractors.domains == code).sum()) for code in "PVL"}
    assert record["n_items"] == counts
    test_counts = {code: int((data.domains == code).sum()) for code in "PVL"}
    for task, value in result.tasks.items():
        assert value["n_gallery"] == test_counts[task[2]] + counts[task[2]]
    written = result.write(tmp_path / "r.json", per_query=tmp_path / "q.parquet")
    again = ropebench.load_results(tmp_path / "r.json")
    assert again.to_json() == written.to_json()
    assert again.extra["distractor_curve"]["sizes"] == [0, 200, 300]
    assert json.loads(pq.read_schema(tmp_path / "q.parquet").metadata[b"ropebench"])["protocol"]["search"] == "exact"


def test_few_queries_are_settled_on_continuous_data(tmp_path):
    """The band is narrow: on float data without copies almost no query needs settling."""
    data = continuous_data(8, sizes=(600, 500, 400), dim=24)
    rng = np.random.default_rng(8)
    distractors = Distractors(rng.normal(size=(3000, 24)).astype(np.float32), rng.choice(np.array(list("PVL")), 3000),
                              10_000 + np.arange(3000))
    path = write_catalogue(tmp_path / "d.parquet", distractors, 500)
    result = _run(data, [path], metric="cosine", shard_rows=500)
    counters = result.environment["engine"]["counters"]
    assert counters["distractor_shards"] == 6
    assert counters["distractor_pairs_settled"] <= 0.01 * sum(result.tasks[t]["n_queries"] for t in result.tasks)


def test_a_large_row_group_is_read_in_pieces(tmp_path):
    from ropebench.io.distractors import plan_catalogue, read_shard

    distractors = _catalogue(100, dim=3)
    path = write_catalogue(tmp_path / "d.parquet", distractors, [100])
    catalogue = plan_catalogue([path], shard_rows=30)
    assert [(s.row_groups, s.skip, s.n_rows) for s in catalogue.shards] == [((0,), 0, 25), ((0,), 25, 25),
                                                                            ((0,), 50, 25), ((0,), 75, 25)]
    rows = [read_shard(shard) for shard in catalogue.shards]
    assert np.array_equal(np.concatenate([r.matrix for r in rows]), distractors.embeddings)
    assert np.array_equal(np.concatenate([r.positions for r in rows]), np.arange(100))


def test_the_in_process_runner_holds_a_few_shards_at_a_time():
    running, peak = [0], [0]

    def work(item: int, shared: int) -> int:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        running[0] -= 1
        return item * shared

    assert sorted(ThreadRunner(2).map(work, iter(range(50)), 3)) == [3 * i for i in range(50)]
    assert peak[0] <= 4


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=drawn_data("ip", max_items=60), extra=st.integers(1, 60), largest=st.integers(1, 20),
       seed=st.integers(0, 2**16))
def test_drawn_data_and_shards_equal_one_gallery(data, extra, largest, seed, tmp_path_factory):
    rng = np.random.default_rng(seed)
    dim = data.embeddings.shape[1]
    distractors = Distractors(rng.integers(-2, 3, (extra, dim)).astype(np.float32),
                              rng.choice(np.array(list("PVL")), extra), 100_000 + np.arange(extra))
    path = write_catalogue(tmp_path_factory.mktemp("c") / "d.parquet", distractors,
                           random_row_groups(rng, extra, largest))
    result = _run(data, [path], metric="ip", ks=SHORT_KS, runner=ShuffledRunner(seed), shard_rows=largest,
                  engine="faiss")
    single = ropebench.evaluate(**combined(data, distractors), metric="ip", ks=SHORT_KS, engine="faiss", ci=False)
    assert_same_numbers(result, single)


# -- a bad catalogue ------------------------------------------------------------------------------


def _refused(data: Data, paths: list[Path], metric: str = "cosine") -> str:
    with pytest.raises(DataError) as error:
        _run(data, paths, metric=metric)
    message = str(error.value)
    assert "Fix:" in message
    return message


@pytest.fixture
def small() -> Data:
    return continuous_data(9, sizes=(30, 30, 30), dim=4)


def _catalogue(n: int = 20, dim: int = 4) -> Distractors:
    rng = np.random.default_rng(1)
    return Distractors(rng.normal(size=(n, dim)).astype(np.float32), np.array(list("PVL" * n), dtype="U8")[:n],
                       5000 + np.arange(n))


def test_every_embedding_problem_is_named_with_ids_and_counted_over_shards(small, tmp_path):
    bad = _catalogue(30)
    bad.embeddings[[3, 17, 25]] = np.nan
    bad.embeddings[[5, 22]] = 0.0
    path = write_catalogue(tmp_path / "bad.parquet", bad, 7)  # problems spread over several shards
    message = _refused(small, [path])
    assert f"distractors {path} column 'embedding': 3 rows contain NaN or ±inf (e.g. item_id 5003, 5017, 5025)" \
        in message
    assert "2 rows are all zeros, which have no direction under cosine (e.g. item_id 5005, 5022)" in message
    assert "2 problems found, nothing was evaluated" in message


def test_scores_that_would_overflow_float32_are_refused_under_ip(small, tmp_path):
    big = _catalogue(10)
    big.embeddings[[2, 7]] = 1e19  # finite in float32, but their inner products are not
    path = write_catalogue(tmp_path / "big.parquet", big, 5)
    message = _refused(small, [path], metric="ip")
    assert "column 'embedding': 2 rows hold values above" in message and "(e.g. item_id 5002, 5007)" in message


def test_a_dimension_other_than_the_test_sets_is_refused(small, tmp_path):
    fixed = write_catalogue(tmp_path / "fixed.parquet", _catalogue(dim=6), 10)
    assert "dimension 6, but the test set's embeddings have d=4" in _refused(small, [fixed])
    listed = write_catalogue(tmp_path / "list.parquet", _catalogue(dim=5), 10, embedding_type=pa.list_(pa.float32()))
    message = _refused(small, [listed])
    assert "has dimension 5, but the test set's embeddings have d=4" in message and "20 rows" not in message


def test_domain_ids_and_products_are_checked_against_the_test_set(small, tmp_path):
    bad = _catalogue(12)
    bad.domains[[1, 4]] = "tv"
    bad.item_ids[[2, 6]] = [7, 11]  # ids of test items
    bad.item_ids[8] = bad.item_ids[9]  # a duplicate
    products = np.array([900 + i for i in range(12)], dtype=np.int64)
    products[[3, 5]] = small.products[:2]
    path = write_catalogue(tmp_path / "bad.parquet", bad, 5, products=products)
    message = _refused(small, [path])
    assert "column 'domain': 2 rows with unknown domain 'tv' (e.g. item_id 5001, 5004). Fix: use one of" in message
    assert "2 distractor(s) have the item_id of a test-set item (e.g. item_id 7, 11)" in message
    assert "1 item_id(s) appear more than once (2 rows) (e.g. item_id 5009)" in message
    assert "product_id(s) of the test set appear among the distractors" in message
    assert "4 problems found" in message


def test_duplicates_across_files_and_missing_columns_or_paths(small, tmp_path):
    one = write_catalogue(tmp_path / "one.parquet", _catalogue(10), 5)
    two = write_catalogue(tmp_path / "two.parquet", _catalogue(10), 5)  # the same ids again
    assert "10 item_id(s) appear more than once (20 rows)" in _refused(small, [one, two])
    nameless = write_catalogue(tmp_path / "items.parquet", _catalogue(10), 5, domain_column=False)
    message = _refused(small, [nameless, tmp_path / "absent.parquet"])
    assert "column(s) 'domain' missing" in message and "absent.parquet: no such file or directory" in message
    folder = tmp_path / "by_domain"
    folder.mkdir()
    write_catalogue(folder / "short_videos.parquet", _catalogue(10), 5, domain_column=False)  # named by domain
    assert _run(small, [folder]).extra["distractors"]["n_items"] == {"P": 0, "V": 10, "L": 0}


def test_unreadable_files_null_ids_and_wrong_types(small, tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    assert "cannot be read as parquet" in _refused(small, [junk])
    table = pa.table({"item_id": pa.array([1.5, 2.5]), "domain": ["P", "V"],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4)})
    pq.write_table(table, tmp_path / "floats.parquet")
    assert "column 'item_id': has type double; expected string or integer" in _refused(small, [tmp_path /
                                                                                             "floats.parquet"])
    table = pa.table({"item_id": pa.array(["a", None]), "domain": ["P", "V"],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(8, np.float32)), 4)})
    pq.write_table(table, tmp_path / "nulls.parquet")
    assert "1 row with a null item_id" in _refused(small, [tmp_path / "nulls.parquet"])


def test_options_that_do_not_fit_are_refused(small, tmp_path):
    path = write_catalogue(tmp_path / "d.parquet", _catalogue(20), 10)
    for sizes, text in (("0,21", "holds 20 items"), ("-1", "not a list of item counts"), ("1.5", "not a list")):
        with pytest.raises(UsageError, match=text):
            _run(small, [path], distractor_sizes=sizes)
    with pytest.raises(UsageError, match="needs --distractors"):
        ropebench.evaluate(**small.arrays(), distractor_sizes="0,10")
    with pytest.raises(UsageError, match="go with --engine dask"):
        _run(small, [path], workers=2)
    with pytest.raises(UsageError, match="no catalogue to run"):
        ropebench.evaluate(**small.arrays(), engine="dask")


# -- the command line ------------------------------------------------------------------------------


def test_the_command_line_evaluates_with_a_catalogue(tmp_path):
    from click.testing import CliRunner

    from ropebench.cli import cli

    data = continuous_data(15, sizes=(60, 50, 40), dim=6)
    submission = tmp_path / "sub.parquet"
    ropebench.write_submission(submission, data.item_ids, data.embeddings, domains=data.domains,
                               product_ids=data.products)
    distractors = _catalogue(40, dim=6)
    path = write_catalogue(tmp_path / "d.parquet", distractors, 10)
    out = tmp_path / "r.json"
    done = CliRunner().invoke(cli, ["evaluate", str(submission), "--distractors", str(path), "--distractor-sizes",
                                    "0,20,all", "--out", str(out), "--format", "json", "--quiet"])
    assert done.exit_code == 0, done.output
    document = json.loads(out.read_text())
    assert document["distractors"]["sizes"] == [0, 20, 40] and document["distractor_curve"]["sizes"] == [0, 20, 40]
    assert json.loads(done.output) == document
    api = ropebench.evaluate(str(submission), distractors=[str(path)], distractor_sizes="0,20,all", ci=True)
    assert api.to_json()["tasks"] == document["tasks"]
    bad = write_catalogue(tmp_path / "bad.parquet", _catalogue(40, dim=5), 10)
    done = CliRunner().invoke(cli, ["evaluate", str(submission), "--distractors", str(bad), "--out", str(out)])
    assert done.exit_code == 2 and "dimension 5, but the test set's embeddings have d=6" in done.output
    done = CliRunner().invoke(cli, ["evaluate", str(submission), "--engine", "dask"])
    assert done.exit_code == 2 and "no catalogue to run" in done.output
    done = CliRunner().invoke(cli, ["evaluate", str(submission), "--distractors", str(path), "--out", str(path)])
    assert done.exit_code == 2 and "distractor catalogue #1" in done.output
