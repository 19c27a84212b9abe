"""``evaluate --compress``: each compression as the protocol defines it, and the numbers of the
compressed vectors evaluated as an ordinary submission, for cosine and ip.

The reference compressions here are written independently of :mod:`ropebench.compress` (other
numpy calls, element by element where it is cheap), so a slip in the module cannot hide itself.
"""

from __future__ import annotations

import json
import math
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import ropebench
from ropebench.cli import cli
from ropebench.compress import bytes_per_item, parse_compression
from ropebench.errors import UsageError

COMPRESSIONS = ("fp16", "int8", "binary", "dims=5")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def reference(matrix: np.ndarray, compression: str) -> np.ndarray:
    """Each compression of DESIGN's definition, computed another way than the module does."""
    if compression == "fp16":
        return np.array([[float(np.float16(v)) for v in row] for row in matrix.tolist()], dtype=np.float32)
    if compression == "int8":
        out = []
        for row in matrix.astype(np.float64).tolist():
            scale = max(abs(v) for v in row)
            codes = [int(Decimal(v * 127 / scale).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)) for v in row]
            assert all(-127 <= c <= 127 for c in codes)
            out.append([np.float32(c * scale / 127) for c in codes])
        return np.array(out, dtype=np.float32)
    if compression == "binary":
        return (2.0 * (matrix > 0) - 1.0).astype(np.float32)
    if compression.startswith("dims="):
        return matrix[:, : int(compression.split("=")[1])].copy()
    raise AssertionError(compression)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, list[str], list[str], list[int]]:
    """A self-labelled raw submission: 25 products × 3 domains × 3 items, d = 12, product centres + noise."""
    directory = tmp_path_factory.mktemp("compress")
    rng = np.random.default_rng(7)
    products = [p for p in range(25) for _ in range(9)]
    domains = [d for _ in range(25) for d in "PVL" for _ in range(3)]
    ids = [f"{d}{i}" for i, d in enumerate(domains)]
    centres = rng.normal(size=(25, 12))
    matrix = (centres[products] + 0.8 * rng.normal(size=(len(ids), 12))).astype(np.float32)
    matrix[0, :5] = [4.0, -2.0, 1.0, 0.5, -0.25]  # values on int8's half-way points (scale 4: x·127/4)
    ropebench.write_submission(directory / "raw.parquet", ids, matrix, domains, products)
    return directory, matrix, ids, domains, products


def test_int8_by_hand() -> None:
    # scale 254: q = x·127/254 = x/2 -> 127, 0.5 -> 0, 1.5 -> 2, 2.5 -> 2 (half to even), -3.5 -> -4;
    # scored as q·254/127 = 2q.
    x = np.array([[254.0, 1.0, 3.0, 5.0, -7.0]], dtype=np.float32)
    assert ropebench.compress_vectors(x, "int8").tolist() == [[254.0, 0.0, 4.0, 4.0, -8.0]]


def test_binary_inner_product_is_d_minus_twice_hamming() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 19)).astype(np.float32)
    x[0, 3] = 0.0  # zero is not > 0: -1
    b = ropebench.compress_vectors(x, "binary")
    assert b[0, 3] == -1.0
    hamming = (x[:, None, :] > 0) != (x[None, :, :] > 0)
    assert np.array_equal(b @ b.T, 19 - 2 * hamming.sum(axis=2))


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compressions_match_the_definitions(data, compression: str) -> None:
    matrix = data[1]
    before = matrix.copy()
    assert np.array_equal(ropebench.compress_vectors(matrix, compression), reference(matrix, compression))
    assert np.array_equal(matrix, before)  # the caller's data is never changed


def test_bytes_per_item_and_spellings() -> None:
    assert [parse_compression(c).bytes_per_item(100) for c in ("fp16", "INT8", "binary", " dims=64 ")] == \
        [200, 104, 13, 256]
    assert parse_compression("Dims=7").name == "dims=7"
    for bad in ("fp8", "dims=0", "dims=", "dims=x", "int4"):
        with pytest.raises(UsageError, match="choose fp16, int8, binary or dims=K"):
            parse_compression(bad)
    assert bytes_per_item({"protocol": {}, "submission": {"dim": 128, "dtype": "float16"}}) == 256
    assert bytes_per_item({"protocol": {"compression": "binary", "bytes_per_item": 16}}) == 16


@pytest.mark.parametrize("metric", ["cosine", "ip"])
@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_compress_gives_the_numbers_of_the_compressed_submission(data, metric: str, compression: str) -> None:
    directory, matrix, ids, domains, products = data
    own = directory / f"own-{compression}-{metric}.parquet"
    ropebench.write_submission(own, ids, reference(matrix, compression), domains, products)
    outputs = {}
    for name, args in (("flag", [str(directory / "raw.parquet"), "--compress", compression]), ("own", [str(own)])):
        json_path, per_query = directory / f"{name}-{compression}-{metric}.json", directory / f"{name}.pq"
        result = run("evaluate", *args, "--metric", metric, "--quiet", "--out", str(json_path),
                     "--per-query", str(per_query))
        assert result.exit_code == 0, result.output
        outputs[name] = (json.loads(json_path.read_text()), pq.read_table(per_query))
    flag, own_result = outputs["flag"][0], outputs["own"][0]
    assert flag["tasks"] == own_result["tasks"]  # every count, measure and interval, bit for bit
    assert outputs["flag"][1].select(["task", "item_id", "a", "t", "p", "R@1", "MRR@50"]).equals(
        outputs["own"][1].select(["task", "item_id", "a", "t", "p", "R@1", "MRR@50"]))
    spec = parse_compression(compression)
    assert flag["protocol"]["compression"] == compression
    assert flag["protocol"]["bytes_per_item"] == spec.bytes_per_item(12)
    assert "compression" not in own_result["protocol"]
    assert flag["submission"]["dim"] == 12  # the file's dimension, whatever was kept of it
    stored = json.loads(outputs["flag"][1].schema.metadata[b"ropebench"])
    assert stored["protocol"]["compression"] == compression  # the per-query file says so too


def test_compressed_and_raw_results_compare(data, tmp_path: Path) -> None:
    directory = data[0]
    for name, extra in (("raw", []), ("int8", ["--compress", "int8"])):
        result = run("evaluate", str(directory / "raw.parquet"), *extra, "--quiet", "--out",
                     str(tmp_path / f"{name}.json"), "--per-query", str(tmp_path / f"{name}.parquet"))
        assert result.exit_code == 0, result.output
    result = run("compare", str(tmp_path / "int8.json"), str(tmp_path / "raw.json"), "--resamples", "200",
                 "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["primary"]["hypothesis"] == "cross/R@1"
    assert abs(document["primary"]["delta"]) < 5  # int8 keeps nearly every first hit


def test_fp16_overflow_is_reported_like_a_submission(tmp_path: Path) -> None:
    ids = ["a", "b", "c", "d"]
    matrix = np.array([[1e5, 1.0], [1.0, 2.0], [2.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    ropebench.write_submission(tmp_path / "big.parquet", ids, matrix, ["P", "V", "P", "V"], [1, 1, 2, 2])
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "big.parquet"), "--compress", "fp16"])
    assert result.exit_code == 2
    assert "after --compress fp16" in result.output and "NaN or ±inf" in result.output and "'a'" in result.output
    assert not (tmp_path / "out.json").exists()


def test_dims_beyond_the_embedding_and_unknown_compressions_are_refused(data, tmp_path: Path) -> None:
    directory = data[0]
    result = CliRunner().invoke(cli, ["evaluate", str(directory / "raw.parquet"), "--compress", "dims=13"])
    assert result.exit_code == 2 and "only 12 dimensions" in result.output
    result = CliRunner().invoke(cli, ["evaluate", str(directory / "raw.parquet"), "--compress", "int4"])
    assert result.exit_code == 2 and "choose fp16, int8, binary or dims=K" in result.output


def test_dims_that_leave_a_zero_vector_under_cosine(tmp_path: Path) -> None:
    matrix = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.5, 1.0, 0.0]], dtype=np.float32)
    ropebench.write_submission(tmp_path / "s.parquet", ["a", "b", "c", "d"], matrix, list("PVPV"), [1, 1, 2, 2])
    result = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "s.parquet"), "--compress", "dims=2"])
    assert result.exit_code == 2 and "all zeros" in result.output and "'a'" in result.output
    assert run("evaluate", str(tmp_path / "s.parquet"), "--compress", "dims=2", "--metric", "ip",
               "--quiet").exit_code == 0


def test_python_api_records_the_compression() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 8)).astype(np.float32)
    result = ropebench.evaluate(embeddings=x, domains=["P", "V", "L"] * 10, product_ids=[i // 3 for i in range(30)],
                                compress="binary", ci=False)
    assert result.protocol["compression"] == "binary"
    assert result.protocol["bytes_per_item"] == math.ceil(8 / 8)


def test_plot_of_the_deployment_tradeoff(data, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    directory = data[0]
    paths = []
    for name, extra in (("raw", []), ("int8", ["--compress", "int8"]), ("binary", ["--compress", "binary"])):
        paths.append(str(tmp_path / f"{name}.json"))
        assert run("evaluate", str(directory / "raw.parquet"), *extra, "--quiet", "--out", paths[-1]).exit_code == 0
    result = run("plot", *paths, "--kind", "compression", "--out", str(tmp_path / "figures"), "--format", "svg")
    assert result.exit_code == 0, result.output
    svg = (tmp_path / "figures" / "compression.svg").read_text()
    assert "bytes per item" in svg and "binary" in svg and "int8" in svg
    from ropebench.render.plot_compression import compression_tradeoff

    figure = compression_tradeoff([json.loads(Path(p).read_text()) for p in paths])
    xs = sorted(float(x) for x in figure.axes[0].lines[-1].get_xdata())  # the frontier
    assert xs[0] == 2.0  # binary: ceil(12 / 8) bytes


@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("compression", ["int8", "dims=5"])
def test_compress_with_distractors_compresses_the_catalogue_alike(tmp_path: Path, metric: str,
                                                                  compression: str) -> None:
    """--compress with --distractors: every shard is compressed as the test set is, so the numbers
    equal evaluating the independently compressed submission against the compressed catalogue."""
    from tests.catalogue_data import Distractors, write_catalogue
    from tests.conftest import continuous_data

    test = continuous_data(5, (60, 50, 40), n_products=12, dim=8)
    rng = np.random.default_rng(5)
    raw = Distractors(rng.normal(size=(120, 8)).astype(np.float32), rng.choice(np.array(list("PVL")), 120),
                      10_000 + np.arange(120))
    catalogue = write_catalogue(tmp_path / "raw-d.parquet", raw, 25)
    own = write_catalogue(tmp_path / "own-d.parquet", Distractors(reference(raw.embeddings, compression),
                                                                  raw.domains, raw.item_ids), 25)
    flag = ropebench.evaluate(**test.arrays(), metric=metric, compress=compression, distractors=[catalogue],
                              distractor_sizes="0,60,all", shard_rows=25, ci=False)
    arrays = {**test.arrays(), "embeddings": reference(test.embeddings, compression)}
    mine = ropebench.evaluate(**arrays, metric=metric, distractors=[own], distractor_sizes="0,60,all", shard_rows=25,
                              ci=False)
    assert flag.to_json()["tasks"] == mine.to_json()["tasks"]
    assert flag.extra["distractor_curve"] == mine.extra["distractor_curve"]
    assert flag.protocol["compression"] == compression
