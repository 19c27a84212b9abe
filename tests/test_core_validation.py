"""Every validation failure of docs/formats.md: exit 2, the column, the count, example ids, no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ropebench
from ropebench.cli import cli

DIM = 4


def embedding_column(rows, value_type=pa.float32(), fixed=True):
    if fixed or len({len(row) for row in rows}) != 1 or not rows or not len(rows[0]):
        if fixed:
            flat = pa.array(np.asarray(rows, dtype=np.float64).ravel(), type=value_type)
            return pa.FixedSizeListArray.from_arrays(flat, DIM)
        return pa.array(rows, type=pa.list_(value_type))
    # Regular rows through numpy of the value type: older pyarrow cannot cast Python floats to float16.
    flat = pa.array(np.asarray(rows, dtype=value_type.to_pandas_dtype()).ravel())
    offsets = pa.array(np.arange(0, len(flat) + 1, len(rows[0]), dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, flat)


@pytest.fixture
def files(tmp_path):
    """A valid manifest + submission (6 items, 2 products, all three domains) to break one way at a time."""
    ids = ["p0", "p1", "v0", "v1", "l0", "l1"]
    manifest = {"item_id": ids, "domain": ["P", "P", "video", "V", "live_stream", "L"],
                "product_id": ["A", "B", "A", "B", "A", "B"]}
    rng = np.random.default_rng(0)
    submission = {"item_id": ids, "embedding": rng.normal(size=(6, DIM)).tolist()}

    def write(sub=None, man=None, *, sub_table=None):
        sub_path, man_path = tmp_path / "sub.parquet", tmp_path / "manifest.parquet"
        data = dict(submission, **(sub or {}))
        if sub_table is None:
            emb = data.pop("embedding")
            sub_table = pa.table({**data, "embedding": emb if isinstance(emb, pa.Array) else embedding_column(emb)})
        pq.write_table(sub_table, sub_path)
        pq.write_table(pa.table(dict(manifest, **(man or {}))), man_path)
        return str(sub_path), str(man_path)

    return write


def run_evaluate(sub, man, tmp_path, *extra):
    out = tmp_path / "results.json"
    result = CliRunner().invoke(cli, ["evaluate", sub, "--manifest", man, "--out", str(out), *extra])
    return result, out


def assert_rejected(result, out, *fragments):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)
    assert not out.exists()


def test_valid_files_pass(files, tmp_path):
    sub, man = files()
    result, out = run_evaluate(sub, man, tmp_path)
    assert result.exit_code == 0, result.output
    assert out.exists()
    validated = CliRunner().invoke(cli, ["validate", sub, "--manifest", man])
    assert validated.exit_code == 0
    assert "items:    6 (P 2, V 2, L 2)" in validated.output and "d=4, float32" in validated.output


@pytest.mark.parametrize("change, fragments", [
    ({"embedding": [[1, 2, 3, 4]] * 5 + [[1, 2, 3]]},
     ["column 'embedding'", "varying dimension", "'l1'"]),
    ({"embedding": [[]] * 6}, ["column 'embedding'", "zero dimension"]),
    ({"embedding": [[1, 2, 3, 4]] * 4 + [[np.nan, 0, 0, 0], [np.inf, 0, 0, 0]]},
     ["column 'embedding'", "2 rows contain NaN or ±inf", "'l0', 'l1'"]),
    ({"embedding": [[1, 2, 3, 4]] * 5 + [[0, 0, 0, 0]]},
     ["column 'embedding'", "1 row are all zeros", "'l1'", "--metric ip"]),
    ({"item_id": ["p0", "p0", "v0", "v1", "l0", "l1"]},
     ["column 'item_id'", "1 item_id appears more than once", "'p0'"]),
])
def test_bad_embeddings_and_ids(files, tmp_path, change, fragments):
    embedding = change.get("embedding")
    if embedding is not None and len({len(r) for r in embedding}) != 1 or embedding == [[]] * 6:
        change = dict(change, embedding=embedding_column(embedding, fixed=False))
    sub, man = files(change)
    assert_rejected(*run_evaluate(sub, man, tmp_path), *fragments)


def test_all_zero_rows_are_fine_under_ip(files, tmp_path):
    sub, man = files({"embedding": [[1, 2, 3, 4]] * 5 + [[0, 0, 0, 0]]})
    result, out = run_evaluate(sub, man, tmp_path, "--metric", "ip")
    assert result.exit_code == 0, result.output


def test_coverage_and_extra_items(files, tmp_path):
    sub, man = files({"item_id": ["p0", "p1", "v0", "v1", "l0", "zz"]})
    result, out = run_evaluate(sub, man, tmp_path)
    # Both problems at once: an embedding for an unknown item, and a manifest item not embedded.
    assert_rejected(result, out, "2 problems", "1 embedding for items not in the manifest", "'zz'",
                    "1 item have no embedding", "'l1'", "coverage 83.33%")


def test_unknown_domain_and_label_disagreement(files, tmp_path):
    sub, man = files({"domain": ["P", "P", "V", "V", "L", "P"], "product_id": ["A", "B", "A", "B", "A", "X"]},
                     {"domain": ["P", "P", "V", "V", "L", "tv"]})
    result, out = run_evaluate(sub, man, tmp_path)
    assert_rejected(result, out, "column 'domain'", "unknown domain 'tv'", "'l1'")
    sub, man = files({"domain": ["P", "P", "V", "V", "L", "P"], "product_id": ["A", "B", "A", "B", "A", "X"]})
    result, out = run_evaluate(sub, man, tmp_path)
    assert_rejected(result, out, "column 'domain'", "1 row disagree with the manifest",
                    "column 'product_id'", "'l1'")


def test_missing_and_mistyped_columns(files, tmp_path):
    sub, man = files(sub_table=pa.table({"item_id": [1.5, 2.5], "vector": [1, 2]}))
    result, out = run_evaluate(sub, man, tmp_path)
    assert_rejected(result, out, "column 'item_id'", "expected string or integer", "column 'embedding'",
                    "is missing")
    sub, man = files(sub_table=pa.table({"item_id": ["p0"], "embedding": ["1,2,3,4"]}))
    assert_rejected(*run_evaluate(sub, man, tmp_path), "column 'embedding'", "has type string")


def test_self_labelled_submission_needs_labels(files, tmp_path):
    sub, _ = files()
    result = CliRunner().invoke(cli, ["evaluate", sub])
    assert result.exit_code == 2
    assert "column 'domain'" in result.output and "column 'product_id'" in result.output


def test_unreadable_and_truncated_files(files, tmp_path):
    sub, man = files()
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not a parquet file at all")
    assert_rejected(*run_evaluate(str(garbage), man, tmp_path), "garbage.parquet", "cannot be read as parquet")
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes(Path(sub).read_bytes()[:-100])
    assert_rejected(*run_evaluate(str(truncated), man, tmp_path), "truncated.parquet")
    assert_rejected(*run_evaluate(str(tmp_path / "missing.parquet"), man, tmp_path), "no such file")


@pytest.mark.parametrize("value_type", [pa.float16(), pa.float32(), pa.float64()])
@pytest.mark.parametrize("fixed", [True, False])
def test_every_embedding_encoding_gives_the_same_numbers(files, tmp_path, value_type, fixed):
    # Values exactly representable in float16, so all six encodings are the same vectors.
    rows = (np.arange(24).reshape(6, DIM) % 7 - 3).tolist()
    sub, man = files({"embedding": embedding_column(rows, value_type, fixed)})
    result = ropebench.evaluate(sub, manifest=man)
    reference = ropebench.evaluate(embeddings=np.asarray(rows, dtype=np.float32),
                                   domains=["P", "P", "V", "V", "L", "L"], product_ids=list("ABABAB"))
    assert result.to_json()["tasks"] == reference.to_json()["tasks"]
    assert result.submission["dtype"] == {"halffloat": "float16", "float": "float32", "double": "float64"}[
        str(value_type)]


def test_integer_ids_and_per_domain_directory(tmp_path):
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(9, DIM))
    products = [10, 11, 12] * 3
    names = {"P": "product_pages", "V": "short_video", "L": "LIVE"}
    directory = tmp_path / "by_domain"
    directory.mkdir()
    for i, domain in enumerate("PVL"):
        rows = slice(3 * i, 3 * i + 3)
        pq.write_table(pa.table({"item_id": list(range(3 * i, 3 * i + 3)), "product_id": products[rows],
                                 "embedding": embedding_column(emb[rows])}), directory / f"{names[domain]}.parquet")
    from_directory = ropebench.evaluate(directory)
    from_arrays = ropebench.evaluate(embeddings=emb.astype(np.float32), domains=list("PPPVVVLLL"),
                                     product_ids=products, item_ids=list(range(9)))
    assert from_directory.to_json()["tasks"] == from_arrays.to_json()["tasks"]
    hive = tmp_path / "hive" / "domain=short_videos"
    hive.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": [1], "product_id": [1], "embedding": embedding_column(emb[:1])}),
                   hive / "part-0.parquet")
    assert ropebench.validate(tmp_path / "hive").domain_counts() == {"P": 0, "V": 1, "L": 0}


def test_directory_with_unknown_file_name(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    pq.write_table(pa.table({"item_id": [1]}), directory / "images.parquet")
    result = CliRunner().invoke(cli, ["validate", str(directory)])
    assert result.exit_code == 2 and "'images' is not a domain name" in result.output


def test_null_embeddings_and_nulls_inside_embeddings(files, tmp_path):
    rows = [[1.0, 2.0, 3.0, 4.0]] * 6
    null_row = pa.array(rows[:5] + [None], type=pa.list_(pa.float32()))
    sub, man = files({"embedding": null_row})
    assert_rejected(*run_evaluate(sub, man, tmp_path), "column 'embedding'", "1 row with a null embedding",
                    "'l1'", "Fix: give every item an embedding")
    null_inside = pa.array(rows[:4] + [[1.0, None, 3.0, 4.0], rows[5]], type=pa.list_(pa.float32()))
    sub, man = files({"embedding": null_inside})
    assert_rejected(*run_evaluate(sub, man, tmp_path), "column 'embedding'",
                    "1 row holds null values inside the embedding list", "'l0'", "Fix: store a finite float")


def test_structural_problem_message_keeps_its_fix(files, tmp_path):
    sub, man = files({"embedding": embedding_column([[1, 2, 3, 4]] * 5 + [[1, 2, 3]], fixed=False)})
    assert_rejected(*run_evaluate(sub, man, tmp_path), "varying dimension (3, 4); most rows have d=4",
                    "Fix: every embedding must have the same length")


def test_factorize_and_positions_without_pandas():
    """Codes follow first appearance, nulls (None, NaN) are -1; ids are looked up exactly."""
    from ropebench.io.ids import factorize as _factorize
    from ropebench.io.ids import positions as _positions

    codes, uniques = _factorize(np.array(["b", None, "a", "b", float("nan"), "c"], dtype=object))
    assert codes.tolist() == [0, -1, 1, 0, -1, 2] and uniques.tolist() == ["b", "a", "c"]
    codes, uniques = _factorize(np.array([7, 3, 7, 1], dtype=np.int64))
    assert codes.tolist() == [0, 1, 0, 2] and uniques.tolist() == [7, 3, 1]
    assert _positions(np.array([10, 20, 30]), np.array([30, 40, 10])).tolist() == [2, -1, 0]
    keys = np.array(["x", "y"], dtype=object)
    assert _positions(keys, np.array(["y", "z", "x"], dtype=object)).tolist() == [1, -1, 0]


def test_duplicate_ids_listed_in_order_of_first_appearance():
    rng = np.random.default_rng(0)
    with pytest.raises(ropebench.DataError) as error:
        ropebench.validate(embeddings=rng.normal(size=(6, 4)), domains=list("PVLPVL"), product_ids=[1, 1, 1, 2, 2, 2],
                           item_ids=["q", "a", "q", "z", "a", "b"])
    message = str(error.value)
    assert "2 item_ids appear more than once (4 rows)" in message
    assert message.index("'q'") < message.index("'a'")


def test_to_numpy_reads_arrow_buffers_like_pyarrow():
    """Offsets (sliced arrays), nulls, booleans, float16 and chunking, as pyarrow's to_numpy."""
    import pyarrow.compute as pc

    from ropebench.io.parquet import to_numpy

    ints = pa.array([1, None, 3, 4, 5, None, 7, 8, 9, 10])[1:]
    assert to_numpy(ints, null=-5).tolist() == [-5, 3, 4, 5, -5, 7, 8, 9, 10]
    with pytest.raises(ValueError, match="nulls"):
        to_numpy(ints)
    flags = pa.array([True, False, None, True, True, False, False, True, True, False])[2:]
    assert to_numpy(flags.is_null()).tolist() == flags.is_null().to_pylist()
    lists = pa.array([[1.0, 2.0], None, [3.0], []], type=pa.list_(pa.float32()))
    assert to_numpy(pc.list_value_length(lists), null=-1).tolist() == [2, -1, 1, 0]
    half = np.float16
    halves = pa.chunked_array([pa.array(np.array([1.5, 2.5], half)), pa.array(np.array([], half)),
                               pa.array(np.array([4.0], half))])
    values = to_numpy(halves)
    assert values.dtype == np.float16 and values.tolist() == [1.5, 2.5, 4.0]
    assert to_numpy(pa.chunked_array([], type=pa.int64())).shape == (0,)


def test_null_spellings_in_array_labels_are_nulls():
    """pandas.NA, NaN and None all mean 'no group'; a null product id is an error, not a product."""
    import pandas as pd

    emb = np.eye(4, dtype=np.float32)
    for groups in (pd.Series([1, pd.NA, pd.NA, 2], dtype="Int64"), pd.Series(["a", None, pd.NA, "b"], dtype="string"),
                   [1.0, float("nan"), None, 2.0]):
        dataset = ropebench.validate(embeddings=emb, domains=["P"] * 4, product_ids=[0, 0, 0, 0], group_ids=groups,
                                     metric="ip")
        assert dataset.group_codes.tolist() == [0, -1, -1, 1], groups
    with pytest.raises(ropebench.DataError, match="null"):
        ropebench.validate(embeddings=emb, domains=["P"] * 4,
                           product_ids=pd.Series(["x", pd.NA, "y", "x"], dtype="string"))


def test_values_whose_scores_overflow_float32_are_refused_under_ip_and_l2():
    emb = np.ones((4, 8), dtype=np.float32)
    emb[2] = 3e19  # |x|² alone is 9e38 > float32 max: every score with it would be inf
    for metric in ("ip", "l2"):
        with pytest.raises(ropebench.DataError, match="overflow float32"):
            ropebench.validate(embeddings=emb, domains=list("PVLP"), product_ids=[0, 0, 0, 0], metric=metric)
    assert ropebench.validate(embeddings=emb, domains=list("PVLP"), product_ids=[0, 0, 0, 0]).n_items == 4  # cosine


# -- ids keep their exact value ------------------------------------------------------------------

BIG = 2**63  # the first id an int64 cannot hold


def _uint64_files(tmp_path, manifest_ids):
    rng = np.random.default_rng(2)
    ids = [BIG + 5, BIG + 1, 2**64 - 1, 7, BIG + 3, 11]
    sub, man = tmp_path / "sub.parquet", tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"item_id": pa.array(ids, pa.uint64()),
                             "embedding": embedding_column(rng.normal(size=(6, DIM)))}), sub)
    pq.write_table(pa.table({"item_id": manifest_ids(ids), "domain": list("PVLPVL"),
                             "product_id": [1, 1, 1, 2, 2, 2]}), man)
    return ids, str(sub), str(man)


@pytest.mark.parametrize("spelling", ["uint64", "strings"])
def test_uint64_ids_above_2_63_keep_their_value_and_match_string_ids(tmp_path, spelling):
    manifest_ids = (lambda ids: pa.array(ids, pa.uint64())) if spelling == "uint64" else (
        lambda ids: [str(i) for i in ids])
    ids, sub, man = _uint64_files(tmp_path, manifest_ids)
    result = ropebench.evaluate(sub, manifest=man, ks=(1, 2), ci=False)
    column = result.per_query.column("item_id")
    assert column.type == pa.uint64()
    assert set(column.to_pylist()) == set(ids)  # every query of every task: never negative, never rounded
    out = tmp_path / "q.parquet"
    result.write(per_query=out)
    assert set(pq.read_table(out).column("item_id").to_pylist()) == set(ids)


def test_ids_that_cannot_match_exactly_are_refused():
    emb = np.eye(4, dtype=np.float32)
    cases = [({"item_ids": [0.5, 1.5, 2.5, 3.5]}, "'item_ids': holds float values"),
             ({"item_ids": [1, "b", 2, "d"]}, "'item_ids': mixes value types (int 1, str 'b')"),
             ({"product_ids": [1, "1", 2, 2]}, "'product_ids': mixes value types"),
             ({"product_ids": [1.0, 1.0, 2.0, 2.0]}, "'product_ids': holds float values"),
             ({"item_ids": [2**64, 1, 2, 3]}, "integer beyond 64 bits")]
    for change, fragment in cases:
        arrays = {"embeddings": emb, "domains": list("PVLP"), "product_ids": [1, 1, 1, 2], **change}
        with pytest.raises(ropebench.DataError) as error:
            ropebench.validate(**arrays)
        assert fragment in str(error.value) and "Fix:" in str(error.value), (change, str(error.value))


# -- every problem at once, each named for what it is ---------------------------------------------

def test_a_duplicate_id_hides_no_other_problem(files, tmp_path):
    # p0 twice (so p1 has no embedding), an unknown domain and a product label disagreeing.
    sub, man = files({"item_id": ["p0", "p0", "v0", "v1", "l0", "l1"], "product_id": ["A", "A", "A", "B", "A", "X"]},
                     {"domain": ["P", "P", "video", "V", "live_stream", "tv"]})
    assert_rejected(*run_evaluate(sub, man, tmp_path), "4 problems", "1 item_id appears more than once", "'p0'",
                    "unknown domain 'tv'", "1 item have no embedding", "'p1'", "coverage 83.33%",
                    "column 'product_id': 1 row disagree with the manifest", "'l1'")


def test_float64_values_out_of_float32_range_are_named_for_it(files, tmp_path):
    rows = np.random.default_rng(0).normal(size=(6, DIM))
    rows[1, 2] = 1e39  # finite in float64, inf in float32
    rows[3] = [1e-50, -1e-60, 0, 0]  # non-zero in float64, all zeros in float32
    rows[5, 0] = np.nan
    sub, man = files({"embedding": embedding_column(rows, pa.float64())})
    result, out = run_evaluate(sub, man, tmp_path)
    assert_rejected(result, out, "3 problems", "1 row hold finite float64 values that exceed float32's range", "'p1'",
                    "round to zero in float32", "'v1'", "1 row contain NaN or ±inf", "'l1'")
    assert "RuntimeWarning" not in result.output and "overflow encountered" not in result.output
    assert "'p1'" not in result.output.split("NaN or ±inf")[1]  # the overflow row is not blamed on NaN


def test_zero_length_fixed_size_lists_name_the_column(tmp_path):
    path = tmp_path / "zero.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "domain": ["P", "V"], "product_id": [1, 1],
                             "embedding": pa.array([[], []], type=pa.list_(pa.float32(), 0))}), path)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    for fragment in ("zero.parquet column 'embedding'", "zero dimension", "2 rows", "Fix: store d > 0 values"):
        assert fragment in result.output, result.output


def test_hive_file_whose_domain_column_disagrees_with_its_folder(tmp_path):
    folder = tmp_path / "hive" / "domain=P"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": ["a", "b", "c"], "domain": ["P", "video", "P"], "product_id": [1, 1, 2],
                             "embedding": embedding_column(np.ones((3, DIM)))}), folder / "part-0.parquet")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "hive")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    for fragment in ("part-0.parquet", "column 'domain' holds 'video' in 1 of 3 rows", "'b'", "folder says P",
                     "Fix: move those rows"):
        assert fragment in result.output, result.output


def test_pipes_and_devices_are_not_regular_files_and_never_opened(tmp_path):
    import os
    import signal

    fifo = tmp_path / "sub.parquet"
    os.mkfifo(fifo)
    # Opening a FIFO for reading blocks until a writer comes: fail in 10 s rather than hang.
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the named pipe was opened"))
    signal.alarm(10)
    try:
        for path, kind in ((fifo, "a named pipe"), ("/dev/null", "a character device")):
            result = CliRunner().invoke(cli, ["validate", str(path)])
            assert result.exit_code == 2 and "Traceback" not in result.output
            assert f"not a regular file ({kind})" in result.output and "Fix:" in result.output, result.output
            assert "directory" not in result.output.split("Fix:")[0]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_file_that_decodes_beyond_free_memory_is_too_large_not_truncated(files, tmp_path, monkeypatch):
    from ropebench.io import parquet

    sub, man = files()
    monkeypatch.setattr(parquet, "available_memory", lambda: 100)  # bytes: far below the decoded size
    result, out = run_evaluate(sub, man, tmp_path)
    assert_rejected(result, out, "sub.parquet: too large to read", "decode to", "Fix:")
    assert "truncated" not in result.output


def test_unreadable_file_says_permission_not_truncation(files, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any file: permissions cannot be tested")
    sub, man = files()
    os.chmod(sub, 0)
    result, out = run_evaluate(sub, man, tmp_path)
    assert_rejected(result, out, "sub.parquet: cannot be opened", "Fix: make the file readable")


def test_running_out_of_memory_is_a_message_not_a_traceback(files, tmp_path, monkeypatch):
    from ropebench.io import validation

    sub, man = files()

    def no_memory(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(validation, "_validate", no_memory)  # while checking the files
    assert_rejected(*run_evaluate(sub, man, tmp_path), "sub.parquet: ran out of memory while checking it", "Fix:")
    monkeypatch.undo()
    monkeypatch.setattr(ropebench, "evaluate", no_memory)  # during the search
    assert_rejected(*run_evaluate(sub, man, tmp_path), "the evaluation ran out of memory", "Fix:")


def test_available_memory_counts_an_address_space_limit():
    """Under ``ulimit -v`` the room left is the limit minus what the process has mapped."""
    import subprocess
    import sys

    child = ("import resource, sys; from ropebench.io.parquet import available_memory\n"
             "used = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize:'))\n"
             "resource.setrlimit(resource.RLIMIT_AS, (used + 64 * 2**20, resource.RLIM_INFINITY))\n"
             "print(available_memory())")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60, check=True)
    assert 0 < int(done.stdout) <= 64 * 2**20
