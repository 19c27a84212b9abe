"""Bad and edge inputs through the real command line, one generated case at a time.

Every case builds its files in a fresh directory and runs ``ropebench evaluate`` with ``--out``
and ``--per-query``. A bad input must exit 2 with one message that names the file, the column
(where there is one), the count and the fix, print no traceback, and write nothing: neither
output, no temporary file, no directory. An edge input that is valid must exit 0 and write both.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench.cli import cli

D = 4
IDS = ["p0", "p1", "v0", "v1", "l0", "l1"]
DOMAINS = ["P", "P", "V", "V", "L", "L"]
PRODUCTS = ["A", "B", "A", "B", "A", "B"]
_OMIT = object()  # a column left out


def vectors(n: int = 6, d: int = D, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def fixed(rows: Any, value_type: pa.DataType = pa.float32()) -> pa.Array:
    rows = np.asarray(rows, dtype=np.float64)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.ravel(), type=value_type), rows.shape[1])


def table(**columns: Any) -> pa.Table:
    """The valid self-labelled submission with some columns replaced (``_OMIT`` drops one)."""
    base: dict[str, Any] = {"item_id": IDS, "domain": DOMAINS, "product_id": PRODUCTS, "embedding": fixed(vectors())}
    base.update(columns)
    return pa.table({name: value for name, value in base.items() if value is not _OMIT})


def manifest(**columns: Any) -> pa.Table:
    base: dict[str, Any] = {"item_id": IDS, "domain": DOMAINS, "product_id": PRODUCTS}
    base.update(columns)
    return pa.table({name: value for name, value in base.items() if value is not _OMIT})


@dataclass
class Case:
    """One generated input: ``build(directory)`` writes the files and returns the arguments
    after ``evaluate``; ``expect`` are fragments of the message (or of stderr when exit is 0)."""

    name: str
    build: Callable[[Path], list[str]]
    expect: list[str] = field(default_factory=list)
    exit_code: int = 2
    outputs: bool = True  # add --out and --per-query in a separate directory


CASES: list[Case] = []


def case(name: str, *expect: str, exit_code: int = 2, outputs: bool = True) -> Callable[..., Any]:
    def register(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(name, build, list(expect), exit_code, outputs))
        return build
    return register


def submission(directory: Path, data: pa.Table, name: str = "sub.parquet") -> str:
    path = directory / name
    pq.write_table(data, path)
    return str(path)


def with_manifest(directory: Path, sub: pa.Table, man: pa.Table) -> list[str]:
    return [submission(directory, sub), "--manifest", submission(directory, man, "manifest.parquet")]


def parts(directory: Path, files: dict[str, pa.Table]) -> list[str]:
    folder = directory / "by_domain"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, folder / name)
    return [str(folder)]


def domain_rows(code: str, **columns: Any) -> pa.Table:
    rows = [i for i, d in enumerate(DOMAINS) if d == code]
    data = table(**columns).take(rows)
    return data.drop_columns(["domain"])


# -- files that are not readable parquet ------------------------------------------------------

@case("empty file", "sub.parquet", "cannot be read as parquet", "0 bytes", "Fix:")
def _(d: Path) -> list[str]:
    (d / "sub.parquet").write_bytes(b"")
    return [str(d / "sub.parquet")]


@case("garbage bytes", "sub.parquet", "cannot be read as parquet", "Fix:")
def _(d: Path) -> list[str]:
    (d / "sub.parquet").write_bytes(os.urandom(300))
    return [str(d / "sub.parquet")]


@case("csv named parquet", "sub.parquet", "cannot be read as parquet", "Fix:")
def _(d: Path) -> list[str]:
    (d / "sub.parquet").write_text("item_id,embedding\np0,1;2;3;4\n")
    return [str(d / "sub.parquet")]


for share in (0.3, 0.6, 0.95):
    @case(f"truncated to {share:.0%}", "sub.parquet", "cannot be read as parquet", "truncated", "Fix:")
    def _(d: Path, share: float = share) -> list[str]:
        path = Path(submission(d, table()))
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * share)])
        return [str(path)]


@case("missing path", "nope.parquet", "no such file or directory", "Fix:")
def _(d: Path) -> list[str]:
    return [str(d / "nope.parquet")]


@case("named pipe as submission", "sub.parquet", "not a regular file (a named pipe)", "Fix:")
def _(d: Path) -> list[str]:
    os.mkfifo(d / "sub.parquet")
    return [str(d / "sub.parquet")]


@case("/dev/null as submission", "/dev/null", "not a regular file (a character device)", "Fix:")
def _(d: Path) -> list[str]:
    return ["/dev/null"]


@case("zero-size fixed list", "sub.parquet", "column 'embedding'", "zero dimension", "6 rows", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=pa.array([[]] * 6, type=pa.list_(pa.float32(), 0))))]


@case("decodes beyond free memory", "sub.parquet", "too large to read", "Fix:")
def _(d: Path) -> list[str]:
    (d / "memory.txt").write_text("64")  # read by the test's monkeypatch of available_memory
    return [submission(d, table())]


@case("unreadable file", "sub.parquet", "cannot be opened", "Fix: make the file readable")
def _(d: Path) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("root reads any file: permissions cannot be tested")
    path = submission(d, table())
    os.chmod(path, 0)
    return [path]


@case("a column name twice", "sub.parquet", "column 'item_id' appears more than once", "Fix:")
def _(d: Path) -> list[str]:
    data = table()
    twice = pa.Table.from_arrays([data.column("item_id"), *data.columns], names=["item_id", *data.column_names])
    return [submission(d, twice)]


@case("ids that are not UTF-8", "sub.parquet", "cannot be read as parquet", "Fix:")
def _(d: Path) -> list[str]:
    path = d / "sub.parquet"
    pq.write_table(table(item_id=["ZZZZ"] + IDS[1:]), path, compression="none", use_dictionary=False,
                   write_statistics=False)
    data = path.read_bytes()
    assert data.count(b"ZZZZ") == 1
    path.write_bytes(data.replace(b"ZZZZ", b"\xff\xfe\xfd\xfc"))  # parquet readers do not check UTF-8
    return [str(path)]


# -- directories ---------------------------------------------------------------------------------

@case("directory without parquet files", "holds no *.parquet file", "Fix:")
def _(d: Path) -> list[str]:
    (d / "empty_dir").mkdir()
    (d / "empty_dir" / "notes.txt").write_text("x")
    return [str(d / "empty_dir")]


@case("directory with a non-domain file name", "images.parquet", "'images' is not a domain name", "Fix: rename")
def _(d: Path) -> list[str]:
    return parts(d, {"P.parquet": domain_rows("P"), "images.parquet": domain_rows("V")})


@case("directory with a pipe named like a domain", "V.parquet", "not a regular file (a named pipe)", "Fix:")
def _(d: Path) -> list[str]:
    folder = parts(d, {"P.parquet": domain_rows("P")})[0]
    os.mkfifo(Path(folder) / "V.parquet")
    return [folder]


@case("directory files with different d", "column 'embedding'", "varying dimension (4, 8)", "2 rows do not",
      "'v0', 'v1'", "Fix:")
def _(d: Path) -> list[str]:
    return parts(d, {"P.parquet": domain_rows("P"), "V.parquet": domain_rows("V", embedding=fixed(vectors(d=8))),
                     "L.parquet": domain_rows("L")})


@case("directory files with different id types", "column 'item_id' is string in P.parquet, int64 in V.parquet",
      "Fix:")
def _(d: Path) -> list[str]:
    return parts(d, {"P.parquet": domain_rows("P"), "V.parquet": domain_rows("V", item_id=list(range(6)))})


@case("directory file that is truncated", "L.parquet", "cannot be read as parquet", "Fix:")
def _(d: Path) -> list[str]:
    folder = parts(d, {"P.parquet": domain_rows("P"), "L.parquet": domain_rows("L")})[0]
    broken = Path(folder) / "L.parquet"
    broken.write_bytes(broken.read_bytes()[:50])
    return [folder]


@case("hive folder disagrees with domain column", "domain=P", "column 'domain' holds 'V' in 1 of 2 rows",
      "folder says P", "Fix: move those rows")
def _(d: Path) -> list[str]:
    rows = table().take([0, 2])  # p0 (P) and v0 (V) in the P folder
    return parts(d, {"domain=P/part-0.parquet": rows})


@case("hive folder with an unknown domain", "domain=tv", "'tv' is not a domain name", "Fix:")
def _(d: Path) -> list[str]:
    return parts(d, {"domain=P/part-0.parquet": domain_rows("P"), "domain=tv/part-0.parquet": domain_rows("V")})


# -- columns of the submission ------------------------------------------------------------------

@case("empty table", "sub.parquet", "column 'embedding'", "holds no rows", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table().slice(0, 0))]


@case("missing embedding column", "sub.parquet", "column 'embedding'", "is missing", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=_OMIT))]


@case("missing item_id column", "sub.parquet", "column 'item_id'", "is missing", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=_OMIT))]


@case("embedding as strings", "column 'embedding'", "has type string", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=[",".join(map(str, row)) for row in vectors()]))]


@case("nested embedding lists", "column 'embedding'", "has type list<", "expected fixed_size_list", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=pa.array([[[1.0, 2.0]]] * 6)))]


@case("integer embeddings", "column 'embedding'", "int64>", "expected fixed_size_list", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=pa.array([[1, 2, 3, 4]] * 6)))]


@case("embedding as one float per row", "column 'embedding'", "has type double", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=[1.0] * 6))]


@case("float item ids", "column 'item_id'", "has type double", "expected string or integer", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=[0.5, 1.5, 2.5, 3.5, 4.5, 5.5]))]


@case("NaN item ids", "column 'item_id'", "has type double", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=[float("nan")] * 6))]


@case("boolean item ids", "column 'item_id'", "has type bool", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=[True, False] * 3))]


@case("null item ids", "column 'item_id'", "2 rows with a null item_id", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=["p0", None, "v0", "v1", None, "l1"]))]


@case("duplicate item ids", "column 'item_id'", "1 item_id appears more than once (2 rows)", "'v0'", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=["p0", "p1", "v0", "v0", "l0", "l1"]))]


@case("many duplicates show five examples", "column 'item_id'", "6 item_ids appear more than once (12 rows)",
      "'d0', 'd1', 'd2', 'd3', 'd4')", "Fix:")
def _(d: Path) -> list[str]:
    ids = [f"d{i % 6}" for i in range(12)]
    return [submission(d, pa.table({"item_id": ids, "domain": DOMAINS * 2, "product_id": PRODUCTS * 2,
                                    "embedding": fixed(vectors(12))}))]


@case("null embeddings", "column 'embedding'", "2 rows with a null embedding", "'p1', 'l0'", "Fix:")
def _(d: Path) -> list[str]:
    rows: list[Any] = vectors().tolist()
    rows[1] = rows[4] = None
    return [submission(d, table(embedding=pa.array(rows, type=pa.list_(pa.float32()))))]


@case("every embedding null", "column 'embedding'", "has no non-null embedding in its 6 rows", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=pa.array([None] * 6, type=pa.list_(pa.float32()))))]


@case("nulls inside embedding lists", "column 'embedding'", "2 rows hold null values inside the embedding list",
      "'p0', 'l1'", "Fix:")
def _(d: Path) -> list[str]:
    rows: list[Any] = vectors().tolist()
    rows[0][1] = None
    rows[5][3] = None
    return [submission(d, table(embedding=pa.array(rows, type=pa.list_(pa.float32()))))]


@case("varying dimension", "column 'embedding'", "varying dimension (3, 4)", "1 row does not", "'v1'", "Fix:")
def _(d: Path) -> list[str]:
    rows: list[Any] = vectors().tolist()
    rows[3] = rows[3][:3]
    return [submission(d, table(embedding=pa.array(rows, type=pa.list_(pa.float64()))))]


@case("empty embedding lists", "column 'embedding'", "zero dimension", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=pa.array([[]] * 6, type=pa.list_(pa.float32()))))]


for bad, label in ((np.nan, "NaN"), (np.inf, "inf"), (-np.inf, "-inf")):
    @case(f"{label} values", "column 'embedding'", "1 row contain NaN or ±inf", "'v0'", "Fix:")
    def _(d: Path, bad: float = bad) -> list[str]:
        rows = vectors()
        rows[2, 1] = bad
        return [submission(d, table(embedding=fixed(rows)))]


@case("float64 values beyond float32", "column 'embedding'", "exceed float32's range", "'p1'", "Fix: scale")
def _(d: Path) -> list[str]:
    rows = vectors()
    rows[1, 0] = -1e39
    return [submission(d, table(embedding=fixed(rows, pa.float64())))]


@case("float64 values that vanish in float32", "column 'embedding'", "round to zero in float32", "'l0'", "Fix:")
def _(d: Path) -> list[str]:
    rows = vectors()
    rows[4] = 1e-300
    return [submission(d, table(embedding=fixed(rows, pa.float64())))]


@case("all-zero rows under cosine", "column 'embedding'", "1 row are all zeros", "'p0'", "Fix:")
def _(d: Path) -> list[str]:
    rows = vectors()
    rows[0] = 0
    return [submission(d, table(embedding=fixed(rows)))]


for metric in ("ip", "l2"):
    @case(f"scores overflow float32 under {metric}", "column 'embedding'", f"whose {metric} scores overflow float32",
          "'v1'", "Fix:")
    def _(d: Path, metric: str = metric) -> list[str]:
        rows = vectors()
        rows[3] = 1e20
        return [submission(d, table(embedding=fixed(rows))), "--metric", metric]


@case("float16 infinities", "column 'embedding'", "contain NaN or ±inf", "'l1'", "Fix:")
def _(d: Path) -> list[str]:
    rows = vectors()
    rows[5, 0] = np.inf
    return [submission(d, table(embedding=fixed(rows, pa.float16())))]


# -- labels of a self-labelled submission -------------------------------------------------------

@case("self-labelled without domain", "column 'domain'", "is missing", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(domain=_OMIT))]


@case("self-labelled without product_id", "column 'product_id'", "is missing", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(product_id=_OMIT))]


@case("unknown domain spelling", "column 'domain'", "1 row with unknown domain 'tv'", "'l1'", "Fix: use one of")
def _(d: Path) -> list[str]:
    return [submission(d, table(domain=["P", "P", "V", "V", "L", "tv"]))]


@case("null domain", "column 'domain'", "1 row with unknown domain", "'p1'", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(domain=["P", None, "V", "V", "L", "L"]))]


@case("domains as numbers", "column 'domain'", "6 rows with unknown domain '0', '1', '2'", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(domain=[0, 0, 1, 1, 2, 2]))]


@case("null product ids", "column 'product_id'", "1 row with a null value", "'v1'", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(product_id=["A", "B", "A", None, "A", "B"]))]


@case("float product ids", "column 'product_id'", "has type double", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(product_id=[1.0, 2.0] * 3))]


@case("list product ids", "column 'product_id'", "has type list", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(product_id=[[1], [2]] * 3))]


@case("float group ids", "column 'group_id'", "has type double", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table(group_id=[0.5] * 6))]


# -- a submission with a manifest ------------------------------------------------------------------

@case("manifest missing", "manifest", "no such file or directory", "Fix:")
def _(d: Path) -> list[str]:
    return [submission(d, table()), "--manifest", str(d / "manifest.parquet")]


@case("manifest is garbage", "manifest.parquet", "cannot be read as parquet", "Fix:")
def _(d: Path) -> list[str]:
    (d / "manifest.parquet").write_bytes(b"PAR1 not really")
    return [submission(d, table()), "--manifest", str(d / "manifest.parquet")]


@case("manifest without product_id", "manifest.parquet column 'product_id'", "is missing", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(), manifest(product_id=_OMIT))


@case("manifest with duplicate ids", "manifest.parquet column 'item_id'", "1 item_id appears more than once",
      "'p0'", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(), manifest(item_id=["p0", "p0", "v0", "v1", "l0", "l1"]))


@case("coverage below 100%", "manifest.parquet column 'item_id'", "2 items have no embedding",
      "coverage 66.67%", "'v1', 'l1'", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table().take([0, 1, 2, 4]), manifest())


@case("embeddings not in the manifest", "sub.parquet column 'item_id'", "1 embedding for items not in the manifest",
      "'zz'", "Fix:")
def _(d: Path) -> list[str]:
    man = manifest().take([0, 1, 2, 3, 4, 5])
    sub = pa.concat_tables([table(), table().slice(0, 1).set_column(0, "item_id", pa.array(["zz"]))])
    return with_manifest(d, sub, man)


@case("domain disagrees with the manifest", "sub.parquet column 'domain'", "1 row disagree with the manifest",
      "'v1'", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(domain=["P", "P", "V", "L", "L", "L"]), manifest())


@case("product disagrees with the manifest", "sub.parquet column 'product_id'", "2 rows disagree with the manifest",
      "'p0', 'l1'", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(product_id=["B", "B", "A", "B", "A", "A"]), manifest())


@case("manifest with an unknown domain", "manifest.parquet column 'domain'", "unknown domain 'page_x'", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(domain=_OMIT), manifest(domain=["page_x"] + DOMAINS[1:]))


@case("manifest with null products", "manifest.parquet column 'product_id'", "1 row with a null value", "'l0'",
      "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(domain=_OMIT, product_id=_OMIT),
                         manifest(product_id=["A", "B", "A", "B", None, "B"]))


@case("manifest with float ids", "manifest.parquet column 'item_id'", "has type double", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(), manifest(item_id=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))


@case("manifest empty", "manifest.parquet: holds no rows", "6 embeddings for items not in the manifest", "Fix:")
def _(d: Path) -> list[str]:
    return with_manifest(d, table(domain=_OMIT, product_id=_OMIT), manifest().slice(0, 0))


@case("every problem at once despite a duplicate", "4 problems", "appears more than once", "unknown domain 'tv'",
      "have no embedding", "'p1'", "column 'product_id': 1 row disagree")
def _(d: Path) -> list[str]:
    sub = table(item_id=["p0", "p0", "v0", "v1", "l0", "l1"], domain=_OMIT,
                product_id=["A", "A", "A", "B", "A", "X"])
    return with_manifest(d, sub, manifest(domain=DOMAINS[:5] + ["tv"]))


@case("uint64 id off by one against string ids", "1 embedding for items not in the manifest",
      "18446744073709551515", "have no embedding", "'18446744073709551615'", "Fix:")
def _(d: Path) -> list[str]:
    big = [2**64 - 1 - i for i in range(6)]
    sub = table(item_id=pa.array([big[0] - 100] + big[1:], pa.uint64()), domain=_OMIT, product_id=_OMIT)
    return with_manifest(d, sub, manifest(item_id=[str(b) for b in big]))


@case("integer ids against zero-padded string ids", "have no embedding", "'007'", "Fix:")
def _(d: Path) -> list[str]:
    sub = table(item_id=[7, 8, 9, 10, 11, 12], domain=_OMIT, product_id=_OMIT)
    return with_manifest(d, sub, manifest(item_id=["007", "8", "9", "10", "11", "12"]))


# -- options and output paths --------------------------------------------------------------------

@case("--out names the submission", "--out", "is the submission", "Fix:", outputs=False)
def _(d: Path) -> list[str]:
    sub = submission(d, table())
    return [sub, "--out", sub]


@case("--per-query names the manifest", "--per-query", "is the manifest", "Fix:", outputs=False)
def _(d: Path) -> list[str]:
    args = with_manifest(d, table(), manifest())
    return [*args, "--per-query", args[2], "--out", str(d.parent / "out" / "r.json")]


@case("--out and --per-query are one file", "both name", "Fix:", outputs=False)
def _(d: Path) -> list[str]:
    target = str(d.parent / "out" / "same")
    return [submission(d, table()), "--out", target, "--per-query", target]


@case("--out inside a directory submission", "would destroy the input", "Fix:", outputs=False)
def _(d: Path) -> list[str]:
    folder = parts(d, {"P.parquet": domain_rows("P"), "V.parquet": domain_rows("V")})[0]
    return [folder, "--out", str(Path(folder) / "results.json")]


@case("--out is a named pipe", "is a named pipe, not a regular file", "Fix:", outputs=False)
def _(d: Path) -> list[str]:
    os.mkfifo(d / "pipe")
    return [submission(d, table()), "--out", str(d / "pipe")]


for option, value, fragment in (("--ks", "0", "--ks"), ("--ks", "1,x", "--ks"), ("--tasks", "P2X", "unknown task"),
                                ("--metric", "dot", "dot"), ("--ties", "random", "random"),
                                ("--threads", "0", "threads"), ("--engine", "annoy", "unknown engine"),
                                ("--measure", "R@7", "--measure R@7 is not computed"),
                                ("--measure", "recall", "canonical measure key")):
    @case(f"{option} {value}", fragment)
    def _(d: Path, option: str = option, value: str = value) -> list[str]:
        return [submission(d, table()), option, value]


# -- valid edges: exit 0, both files written -------------------------------------------------------

@case("only one domain", "note:", "no query or no gallery item", exit_code=0)
def _(d: Path) -> list[str]:
    return [submission(d, table(domain=["P"] * 6))]


@case("K far beyond every gallery", "note: K = 10000000 exceeds the largest gallery", exit_code=0)
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=fixed(np.ones((6, D))))), "--ks", "1,10000000"]


@case("K beyond int64", "note: K = 100000000000000000000 exceeds", exit_code=0)
def _(d: Path) -> list[str]:
    return [submission(d, table()), "--ks", "1,100000000000000000000"]


@case("--ks without 1 and no --measure", exit_code=0)
def _(d: Path) -> list[str]:
    return [submission(d, table()), "--ks", "2,3"]


@case("uint64 ids above 2^63", exit_code=0)
def _(d: Path) -> list[str]:
    return [submission(d, table(item_id=pa.array([2**63 + i for i in range(6)], pa.uint64())))]


@case("huge d", exit_code=0)
def _(d: Path) -> list[str]:
    return [submission(d, table(embedding=fixed(vectors(d=1 << 16), pa.float16())))]


@case("string_view ids", exit_code=0)
def _(d: Path) -> list[str]:
    if int(pa.__version__.split(".")[0]) < 20:  # older pyarrow cannot write string_view to parquet
        pytest.skip(f"pyarrow {pa.__version__} cannot write string_view columns")
    return [submission(d, table(item_id=pa.array(IDS, pa.string_view())))]


@case("directories named like files (Spark output)", exit_code=0)
def _(d: Path) -> list[str]:
    return parts(d, {f"{code}.parquet/part-00000.parquet": domain_rows(code) for code in "PVL"})


@case("hive-partitioned directory", exit_code=0)
def _(d: Path) -> list[str]:
    return parts(d, {f"domain={code}/part-0.parquet": domain_rows(code) for code in "PVL"})


@case("all-zero rows are fine under ip", exit_code=0)
def _(d: Path) -> list[str]:
    rows = vectors()
    rows[0] = 0
    return [submission(d, table(embedding=fixed(rows))), "--metric", "ip"]


def _tidy(path: Path) -> list[str]:
    """Everything below ``path`` (names relative to it)."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


def test_there_are_at_least_sixty_cases():
    assert len(CASES) >= 60, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_bad_and_edge_inputs(item: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ropebench.io import parquet

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    args = item.build(inputs)
    if (inputs / "memory.txt").exists():
        limit = int((inputs / "memory.txt").read_text())
        monkeypatch.setattr(parquet, "available_memory", lambda: limit)
    out, per_query = outputs / "r.json", outputs / "q.parquet"
    if item.outputs:
        args = [*args, "--out", str(out), "--per-query", str(per_query)]
    before = _tidy(inputs)
    result = CliRunner().invoke(cli, ["evaluate", *args, "--format", "json"])
    assert result.exit_code == item.exit_code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output and "Warning" not in result.stderr
    for fragment in item.expect:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert _tidy(inputs) == before  # no input touched, no stray file beside the inputs
    if item.exit_code == 2:
        assert result.stderr.startswith(("Error:", "Usage:")) and result.stdout == ""
        assert _tidy(outputs) == []  # nothing written, not even the directory
    else:
        assert out.exists() and per_query.exists() and _tidy(outputs) == ["q.parquet", "r.json"]
