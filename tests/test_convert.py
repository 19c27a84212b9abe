"""Converters (COPE infer.py shards, ROPE pair files, npz) and write_submission."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ropebench
from ropebench.cli.convert import convert
from ropebench.errors import DataError, UsageError
from ropebench.io.cope import convert_cope
from ropebench.io.files import sha256_file
from ropebench.io.pairs import convert_npz, convert_rope_pairs
from ropebench.io.submission import read_metadata, write_submission

DIM = 8
SIZES = {"P": 21, "V": 18, "L": 15}  # P and L odd: DistributedSampler pads them over 2 ranks
SUFFIX = {"P": "item", "V": "photo", "L": "live"}
# Values whose str() takes the exponent form, signed zero, a subnormal, float32's extremes.
SPECIAL = np.array([2.0**-17, -0.0, 1e-45, 3.4028234663852886e38, -1.1754943508222875e-38, 1e-05, 0.1, -2.5],
                   dtype=np.float32)


def rank_indices(n: int, world: int, rank: int, order: list[int] | None = None) -> list[int]:
    """DistributedSampler: its (seeded, shuffled by default) order, padded by repeating its start."""
    indices = list(range(n)) if order is None else list(order)
    total = math.ceil(n / world) * world
    indices += indices[: total - n]
    return indices[rank:total:world]


def write_like_infer(output_dir: Path, local_rank: int, domain: str, keys: list[tuple[str, ...]],
                     emb: np.ndarray) -> None:
    """A copy of infer.py's write loop (evaluate(): fw1/fw2/fw3)."""
    feats = emb.astype("float32").tolist()
    with open(os.path.join(output_dir, str(local_rank) + "_" + SUFFIX[domain]), "w") as fw:
        for key, feat in zip(keys, feats):  # noqa: FURB122  (infer.py's loop, kept as written there)
            fw.write("\t".join([*key, ",".join([str(x) for x in feat])]) + "\n")


class Fixture:
    """Two node directories of two GPUs each (world size 4) written by infer.py's loop, and the truth.

    DistributedSampler pads P (21 items) with 3, V (18) with 2 and L (15) with 1 repeated item;
    the repeated copies are perturbed by ``delta``, as a copy computed in another batch may be.
    """

    def __init__(self, root: Path, *, seed: int = 0, delta: float = 2.0**-10) -> None:
        rng = np.random.default_rng(seed)
        self.dirs = [root / "node0", root / "node1"]
        for d in self.dirs:
            d.mkdir()
        self.ids: list[str] = []
        self.domains: list[str] = []
        self.products: list[int] = []
        self.live_fields: dict[str, tuple[str, str, str]] = {}
        chunks = []
        identity = rng.standard_normal((6, DIM)).astype(np.float32)
        for domain, n in SIZES.items():
            products = rng.integers(0, 6, n)
            emb = (identity[products] + 0.8 * rng.standard_normal((n, DIM))).astype(np.float32)
            emb[0] = SPECIAL  # a padded item, so the special values also meet the duplicate logic
            if domain == "L":
                keys = [(str(1000 + i), str(1668122889829 + 60000 * i), str(1668122949829 + 60000 * i))
                        for i in range(n)]
                ids = ["|".join(k) for k in keys]
                self.live_fields.update(zip(ids, keys))
            else:
                base = 7 if domain == "P" else 3179594
                keys = [(str(base + i),) for i in range(n)]
                ids = [k[0] for k in keys]
            # infer.py's DistributedSampler shuffles (seeded); item 0 goes first so that the special
            # values are among the padded repeats.
            order = [0, *(rng.permutation(n - 1) + 1).tolist()]
            for rank in range(4):
                share = rank_indices(n, 4, rank, order)
                padded = np.arange(rank, 4 * len(share), 4) >= n  # positions past n are the repeats
                rows = emb[share]
                rows[padded] += np.float32(delta)  # only there: -0.0 + 0.0 would lose the sign
                write_like_infer(self.dirs[rank // 2], rank % 2, domain, [keys[i] for i in share], rows)
            self.ids += ids
            self.domains += [domain] * n
            self.products += products.tolist()
            chunks.append(emb)
        self.embeddings = np.concatenate(chunks)
        self.delta = delta

    def manifest(self, path: Path, *, drop: int = 0, add: tuple[str, ...] = ()) -> Path:
        ids, domains, products = self.ids[drop:], self.domains[drop:], self.products[drop:]
        table = pa.table({"item_id": ids + list(add), "domain": domains + ["P"] * len(add),
                          "product_id": products + [0] * len(add)})
        pq.write_table(table, path)
        return path


@pytest.fixture
def shards(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)


def test_cope_round_trip_is_bit_exact_and_keeps_the_first_padded_copy(shards: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cope.parquet"
    report = convert_cope(shards.dirs, out)
    table = pq.read_table(out)
    ids = table.column("item_id").to_pylist()
    assert sorted(ids) == sorted(shards.ids) and len(ids) == len(set(ids))
    matrix = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    truth = dict(zip(shards.ids, _bits(shards.embeddings)))
    # Bit-exact (signed zero, subnormal, float32 max included), and never the perturbed repeat.
    assert all((row == truth[i]).all() for i, row in zip(ids, _bits(matrix)))
    reports = {r.domain: r for r in report.domains}
    assert {d: (r.files, r.rows, r.duplicates, r.items) for d, r in reports.items()} == {
        "P": (4, 24, 3, 21), "V": (4, 20, 2, 18), "L": (4, 16, 1, 15)}
    # |SPECIAL + delta - SPECIAL| is delta wherever delta is not lost to rounding (e.g. at 0.1)
    assert all(r.max_duplicate_difference == pytest.approx(shards.delta, rel=1e-3) for r in reports.values())
    assert "duplicates" in report.summary() and "0.000977" in report.summary()


def test_cope_live_ids_and_raw_fields(shards: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cope.parquet"
    convert_cope(shards.dirs, out)
    table = pq.read_table(out).to_pydict()
    for item, domain, *fields in zip(table["item_id"], table["domain"], table["live_id"], table["starttime"],
                                     table["endtime"]):
        assert domain == dict(zip(shards.ids, shards.domains))[item]
        assert tuple(fields) == (shards.live_fields[item] if domain == "L" else (None, None, None))
    short = tmp_path / "short.parquet"
    convert_cope(shards.dirs, short, live_id="L{live_id}")
    live = [i for i in pq.read_table(short).column("item_id").to_pylist() if i.startswith("L")]
    assert sorted(live) == sorted("L" + shards.live_fields[i][0] for i in shards.live_fields)
    with pytest.raises(UsageError, match="unknown field"):
        convert_cope(shards.dirs, short, live_id="{live_id}|{start}")


def test_cope_provenance_records_every_shard(shards: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cope.parquet"
    convert_cope(shards.dirs, out)
    record = read_metadata(out)
    assert record is not None and record["converter"] == "cope"
    files = sorted(p for d in shards.dirs for p in d.iterdir())
    assert sorted(s["path"] for s in record["sources"]) == sorted(map(str, files))
    assert all(s["sha256"] == sha256_file(s["path"]) for s in record["sources"])


def test_cope_coverage_report_and_require_complete(shards: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cope.parquet"
    manifest = shards.manifest(tmp_path / "m.parquet", drop=1, add=("999", "998"))  # P: 1 unknown, 2 missing
    report = convert_cope(shards.dirs, out, manifest=manifest)
    p = next(r for r in report.domains if r.domain == "P")
    assert (p.manifest_items, p.missing, p.unknown) == (22, 2, 1)
    assert p.unknown_examples == (shards.ids[0],) and set(p.missing_examples) == {"999", "998"}
    assert "cannot be evaluated" in report.summary() and out.exists()
    out.unlink()
    with pytest.raises(DataError, match="do not cover"):
        convert_cope(shards.dirs, out, manifest=manifest, require_complete=True)
    assert not out.exists()
    complete = convert_cope(shards.dirs, out, manifest=shards.manifest(tmp_path / "full.parquet"),
                            require_complete=True)
    assert complete.check.startswith("validated against manifest")
    assert all(r.missing == 0 and r.unknown == 0 for r in complete.domains)


def test_converted_submission_scores_like_the_arrays(shards: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cope.parquet"
    manifest = shards.manifest(tmp_path / "m.parquet")
    convert_cope(shards.dirs, out, manifest=manifest)
    from_file = ropebench.evaluate(out, manifest=manifest).to_json()["tasks"]
    from_arrays = ropebench.evaluate(embeddings=shards.embeddings, domains=shards.domains,
                                     product_ids=shards.products, item_ids=shards.ids).to_json()["tasks"]
    # Counts and measures are exact; the bootstrap interval ("ci") currently depends on row order.
    assert {t: {k: v for k, v in r.items() if k != "ci"} for t, r in from_file.items()} == {
        t: {k: v for k, v in r.items() if k != "ci"} for t, r in from_arrays.items()}
    order = [shards.ids.index(i) for i in pq.read_table(out).column("item_id").to_pylist()]
    in_file_order = ropebench.evaluate(
        embeddings=shards.embeddings[order], domains=[shards.domains[i] for i in order],
        product_ids=[shards.products[i] for i in order], item_ids=[shards.ids[i] for i in order]).to_json()["tasks"]
    assert from_file == in_file_order


@pytest.mark.parametrize(("line", "message"), [
    ("8\t0.5,0.5\textra\n", "3 tab-separated field(s), expected 2"),
    ("8\t0.5,abc," + ",".join(["1.0"] * (DIM - 2)) + "\n", "'abc', which is not a number"),
    ("8\t" + ",".join(["1.0"] * (DIM + 1)) + "\n", f"has {DIM + 1} values, expected d={DIM}"),
    ("8\t" + ",".join(["1.0"] * (DIM - 1)) + ",\n", "'', which is not a number"),
    ("8\t" + ",".join(["nan"] * DIM) + "\n", "NaN or ±inf"),
    ("\t" + ",".join(["1.0"] * DIM) + "\n", "empty id field"),
])
def test_cope_malformed_line_names_file_and_line(shards: Fixture, tmp_path: Path, line: str,
                                                 message: str) -> None:
    shard = shards.dirs[1] / "0_item"
    lines = shard.read_text().splitlines(keepends=True)
    lines.insert(3, line)
    shard.write_text("".join(lines))
    out = tmp_path / "cope.parquet"
    with pytest.raises(DataError) as error:
        convert_cope(shards.dirs, out)
    assert f"{shard}:4: " in str(error.value) and message in str(error.value)
    assert not out.exists()


def test_cope_parses_python_float_spellings_exactly(tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    values = ["1e-05", "-0.0", "0.1", "1.401298464324817e-45", "3.4028234663852886e+38", "-2.5", "7.62939453125e-06",
              "0.30000001192092896"]
    (node / "0_item").write_text("a\t" + ",".join(values) + "\n")
    (node / "0_photo").write_text("b\t" + ",".join(values) + "\n")
    out = tmp_path / "x.parquet"
    report = convert_cope([node], out)
    got = np.array(pq.read_table(out).column("embedding").to_pylist()[0], dtype=np.float32)
    assert (_bits(got) == _bits(np.array([float(v) for v in values], dtype=np.float32))).all()
    assert report.rounded_values == 2 * 2  # 1e-05 and 0.1 are not float32 values, in both files


def test_cope_refuses_ids_shared_across_domains_and_bad_inputs(tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    (node / "0_item").write_text("7\t1.0,2.0\n")
    (node / "0_photo").write_text("7\t1.0,3.0\n")
    with pytest.raises(DataError, match="--domain-prefix"):
        convert_cope([node], tmp_path / "x.parquet")
    convert_cope([node], tmp_path / "x.parquet", domain_prefix=True)
    assert pq.read_table(tmp_path / "x.parquet").column("item_id").to_pylist() == ["P:7", "V:7"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: holds no infer.py output.*missing: not a directory"):
        convert_cope([tmp_path / "empty", tmp_path / "missing"], tmp_path / "y.parquet")
    with pytest.raises(DataError, match="is also an input"):
        convert_cope([node], node / "0_item")
    assert (node / "0_item").read_text() == "7\t1.0,2.0\n"


def test_cope_takes_empty_shards_crlf_and_a_last_line_without_newline(tmp_path: Path) -> None:
    node = tmp_path / "node"
    node.mkdir()
    (node / "0_item").write_bytes(b"")  # a rank that wrote nothing
    (node / "1_item").write_bytes(b"7\t1.0,2.0\r\n")
    (node / "0_live").write_bytes(b"5\t100\t200\t0.5,-0.0")
    report = convert_cope([node], tmp_path / "x.parquet")
    assert pq.read_table(tmp_path / "x.parquet").to_pydict()["item_id"] == ["7", "5|100|200"]
    assert "1 empty shard file(s)" in report.summary()
    with pytest.raises(UsageError, match="--require-complete needs --manifest"):
        convert_cope([node], tmp_path / "y.parquet", require_complete=True)


def test_cli_cope_writes_report_to_stderr_only(shards: Fixture, tmp_path: Path) -> None:
    out = tmp_path / "cope.parquet"
    manifest = shards.manifest(tmp_path / "m.parquet")
    result = CliRunner().invoke(convert, ["cope", *map(str, shards.dirs), "--out", str(out), "-m", str(manifest),
                                          "--require-complete"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "validated against manifest" in result.stderr and "domain  files" in result.stderr
    refused = CliRunner().invoke(convert, ["cope", str(shards.dirs[0]), "-m", str(manifest), "--out", str(manifest)])
    assert isinstance(refused.exception, DataError) and "is also an input" in str(refused.exception)


def test_every_convert_command_documents_an_example() -> None:
    for name, command in convert.commands.items():
        assert "Example:" in (command.help or ""), name
    assert "Example:" in (convert.help or "")


# --- rope-pairs and npz ------------------------------------------------------------------------


def _pair_files(tmp_path: Path) -> list[Path]:
    contents = {
        "pages": "99721, 7\n99721, 8\n26140, 9\n\n26140, 9\n",  # README format; a repeated line
        "videos": "26140,3179594\r\n99721\t3179595\r\n",  # no space; tab; CRLF
        "lives": "99721 2240805\n",
    }
    paths = []
    for name, text in contents.items():
        paths.append(tmp_path / f"test_product_{name}_pair.txt")
        paths[-1].write_text(text, newline="")
    return paths


def test_rope_pairs_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "manifest.parquet"
    report = convert_rope_pairs(*_pair_files(tmp_path), out)
    table = pq.read_table(out)
    assert table.schema.field("item_id").type == pa.int64() and table.schema.field("product_id").type == pa.int64()
    assert table.to_pydict() == {"item_id": [7, 8, 9, 3179594, 3179595, 2240805],
                                 "domain": ["P", "P", "P", "V", "V", "L"],
                                 "product_id": [99721, 99721, 26140, 26140, 99721, 99721]}
    assert report.repeated_lines == {"P": 1, "V": 0, "L": 0}
    assert (report.n_products, report.products_in_all_domains) == (2, 1)
    record = read_metadata(out)
    assert record is not None and [s["sha256"] for s in record["sources"]] == [
        sha256_file(p) for p in _pair_files(tmp_path)]


def test_rope_pairs_errors(tmp_path: Path) -> None:
    pages, videos, lives = _pair_files(tmp_path)
    out = tmp_path / "manifest.parquet"
    pages.write_text("1, 7\n2, 8, 9\n")
    with pytest.raises(DataError, match=rf"{pages}:2: '2, 8, 9' is not 'product_id, item_id'"):
        convert_rope_pairs(pages, videos, lives, out)
    pages.write_text("1, 7\n2, 7\n")
    with pytest.raises(DataError, match="listed under more than one product"):
        convert_rope_pairs(pages, videos, lives, out)
    pages.write_text("1, 2240805\n")
    with pytest.raises(DataError, match="more than one domain"):
        convert_rope_pairs(pages, videos, lives, out)
    convert_rope_pairs(pages, videos, lives, out, domain_prefix=True)
    assert "P:2240805" in pq.read_table(out).column("item_id").to_pylist()
    with pytest.raises(DataError, match="is also an input"):
        convert_rope_pairs(pages, videos, lives, lives)


def test_rope_pairs_keeps_ids_that_are_not_canonical_integers_as_text(tmp_path: Path) -> None:
    pages, videos, lives = _pair_files(tmp_path)
    pages.write_text("1, 007\n2, 8\n")
    convert_rope_pairs(pages, videos, lives, tmp_path / "m.parquet")
    assert pq.read_table(tmp_path / "m.parquet").column("item_id").to_pylist()[:2] == ["007", "8"]


def test_npz_round_trip_self_labelled_and_with_manifest(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    embeddings = rng.standard_normal((12, 4))  # float64: stored as float32
    ids = np.array([f"item{i}" for i in range(12)])
    domains = np.array(["P", "video", "live"] * 4)
    products = np.arange(12) % 3
    arrays = tmp_path / "arrays.npz"
    np.savez(arrays, embeddings=embeddings, item_ids=ids, domains=domains, product_ids=products, extra=products)
    out = tmp_path / "sub.parquet"
    report = convert_npz(arrays, out)
    assert report.check == "validated (self-labelled)" and report.ignored_keys == ("extra",)
    table = pq.read_table(out)
    assert table.column("item_id").to_pylist() == ids.tolist()
    assert table.column("domain").to_pylist() == ["P", "V", "L"] * 4
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
    assert (np.array(table.column("embedding").to_pylist()) == embeddings.astype(np.float32)).all()
    assert read_metadata(out)["sources"][0]["sha256"] == sha256_file(arrays)  # type: ignore[index]
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"item_id": ids, "domain": domains, "product_id": products}), manifest)
    np.savez(arrays, embeddings=embeddings, item_ids=ids)
    assert convert_npz(arrays, out, manifest=manifest).check.startswith("validated against manifest")
    zero = embeddings.copy()
    zero[3] = 0.0  # no direction under cosine: the written file fails validation, so nothing is written
    np.savez(arrays, embeddings=zero, item_ids=ids, domains=domains, product_ids=products)
    with pytest.raises(DataError, match=rf"{tmp_path / 'zero.parquet'}.*all zeros.*'item3'"):
        convert_npz(arrays, tmp_path / "zero.parquet")
    assert not (tmp_path / "zero.parquet").exists()
    np.savez(arrays, embeddings=embeddings, item_ids=np.array(list(ids), dtype=object))
    with pytest.raises(DataError, match="dtype=str"):
        convert_npz(arrays, out)
    np.savez(arrays, embeddings=embeddings)
    with pytest.raises(DataError, match="item_ids missing"):
        convert_npz(arrays, out)


# --- write_submission ------------------------------------------------------------------------


@pytest.mark.parametrize("ids", [
    np.array([5, -3, 2**62], dtype=np.int64),
    np.array([2**64 - 1, 2**63, 1], dtype=np.uint64),
    [2**64 - 1, 2**63 + 5, 0],
    ["a", "β", ""],
])
def test_write_submission_keeps_ids_exact(tmp_path: Path, ids: Any) -> None:
    out = write_submission(tmp_path / "s.parquet", ids, np.ones((3, 2), dtype=np.float16), ["P", "V", "L"], [1, 1, 2])
    table = pq.read_table(out)
    assert table.column("item_id").to_pylist() == [int(i) if not isinstance(i, str) else i for i in ids]
    expected = pa.string() if isinstance(ids[0], str) else (pa.uint64() if max(map(int, ids)) >= 2**63 else pa.int64())
    assert table.schema.field("item_id").type == expected
    assert ropebench.validate(out).n_items == 3


def test_write_submission_refuses_bad_input_and_keeps_the_old_file(tmp_path: Path) -> None:
    out = tmp_path / "s.parquet"
    out.write_bytes(b"old")
    embeddings = np.ones((4, 3), dtype=np.float32)
    embeddings[2, 1] = np.nan
    with pytest.raises(DataError) as error:
        write_submission(out, ["a", "b", "a", "c"], embeddings, domains=["P", "P", "X", "V"], product_ids=[1, 2])
    message = str(error.value)
    assert "4 problems" in message
    assert "argument 'item_ids': 1 id(s) appear more than once (2 rows) (e.g. item_id 'a')" in message
    assert "argument 'embeddings': 1 row(s) contain NaN or ±inf" in message and "'a'" in message
    assert "argument 'domains': 1 row(s) with unknown domain 'X' (e.g. item_id 'a')" in message
    assert "argument 'product_ids': has 2 entries for 4 item_ids" in message and "Fix:" in message
    with pytest.raises(DataError, match="has 2 rows for 3 item_ids"):
        write_submission(out, [1, 2, 3], np.ones((2, 3)))
    with pytest.raises(DataError, match="beyond float32's range"):
        write_submission(out, [1], np.array([[1e300]]))
    with pytest.raises(DataError, match="mixes str and int"):
        write_submission(out, [1, "2"], np.ones((2, 3)))
    assert out.read_bytes() == b"old"


def test_write_submission_takes_torch_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    weights = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    embeddings = weights * 2
    out = write_submission(tmp_path / "t.parquet", torch.arange(5), embeddings, metadata={"run": "x"})
    table = pq.read_table(out)
    assert table.column("item_id").to_pylist() == [0, 1, 2, 3, 4]
    got = np.array(table.column("embedding").to_pylist(), dtype=np.float32)
    assert (got == (weights.detach().numpy() * 2).astype(np.float32)).all()
    assert read_metadata(out)["run"] == "x"  # type: ignore[index]
    half = write_submission(tmp_path / "h.parquet", [1, 2], torch.ones(2, 3, dtype=torch.bfloat16))
    assert pq.read_table(half).column("embedding").to_pylist() == [[1.0] * 3] * 2
