"""Bad input, odd files and faults through every command other than ``evaluate``'s data checks.

Each generated case builds its files in a fresh directory (the working directory of the run),
runs one ``ropebench`` command line and asserts: the exit code; no traceback; every fragment of
the message; and, for a refusal (exit 2), that nothing below the directory was written, changed
or removed, not even a temporary file. Files that might block (pipes) or never end (a link to
``/dev/zero``) are only ever ``lstat``-ed by the checks here; an alarm fails a case that hangs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ropebench.cli import cli

HANG_SECONDS = 20


@dataclass
class Case:
    name: str
    build: Callable[[Path], list[str]]
    expect: list[str] = field(default_factory=list)
    exit_code: int = 2
    written: list[str] = field(default_factory=list)  # paths an exit-0 case must have written


CASES: list[Case] = []


def case(name: str, *expect: str, exit_code: int = 2, written: tuple[str, ...] = ()) -> Callable[..., Any]:
    def register(build: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(name, build, list(expect), exit_code, list(written)))
        return build
    return register


# -- shared inputs: two small evaluations with per-query files, made once -------------------------

def _tiny_arrays(seed: int, *, integer_products: bool = False) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n_products = 12
    products = np.repeat(np.arange(n_products), 3)
    domains = np.tile(["P", "V", "L"], n_products)
    centres = rng.normal(size=(n_products, 8))
    embeddings = (centres[products] + rng.normal(scale=0.8, size=(len(products), 8))).astype(np.float32)
    items = [f"{d}{i}" for i, d in enumerate(domains)]
    labels = products if integer_products else np.array([f"c{p}" for p in products])
    return {"embeddings": embeddings, "domains": domains, "product_ids": labels, "item_ids": items}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """a.json/a.pq.parquet and b.json/b.pq.parquet (a per-query file each), a submission and its
    manifest, a comparison and a distractor curve."""
    import ropebench
    from ropebench.compare import compare

    root = tmp_path_factory.mktemp("seeds")
    for name, seed in (("a", 0), ("b", 1)):
        result = ropebench.evaluate(**_tiny_arrays(seed), ks="1,5,10")
        result.write(root / f"{name}.json", per_query=root / f"{name}.pq.parquet")
    arrays = _tiny_arrays(0)
    ropebench.write_submission(root / "sub.parquet", arrays["item_ids"], arrays["embeddings"])
    pq.write_table(pa.table({"item_id": arrays["item_ids"], "domain": arrays["domains"],
                             "product_id": arrays["product_ids"]}), root / "manifest.parquet")
    (root / "cmp.json").write_text(compare(root / "a.json", root / "b.json", resamples=50).dumps())
    return root


@pytest.fixture()
def workdir(tmp_path: Path, seeds: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from ropebench.cli import options

    for item in seeds.iterdir():
        shutil.copy2(item, tmp_path / item.name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(options, "SCHEDULER_PROBE_SECONDS", options.SCHEDULER_PROBE_SECONDS)  # a case may shorten it
    yield tmp_path
    while _OPEN:
        _OPEN.pop().close()


def _snapshot(root: Path) -> dict[str, str]:
    """Every entry below ``root``: regular files by content, others by kind (never opened)."""
    seen = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory) / name
            mode = os.lstat(path).st_mode
            key = str(path.relative_to(root))
            if stat.S_ISREG(mode):
                seen[key] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(mode):
                seen[key] = "link -> " + os.readlink(path)
            else:
                seen[key] = f"mode {stat.S_IFMT(mode)}"
    return seen


@pytest.fixture()
def alarm() -> Iterator[None]:
    def hung(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the command did not finish within {HANG_SECONDS} s (it hangs)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def fifo(d: Path, name: str) -> str:
    os.mkfifo(d / name)
    return name


def zero_link(d: Path, name: str) -> str:
    os.symlink("/dev/zero", d / name)
    return name


def loop_link(d: Path, name: str) -> str:
    os.symlink(name, d / name)
    return name


def dangling(d: Path, name: str) -> str:
    os.symlink("does-not-exist", d / name)
    return name


def garbage(d: Path, name: str, data: bytes = b"\x00\x01not this format") -> str:
    (d / name).write_bytes(data)
    return name


def json_file(d: Path, name: str, data: Any) -> str:
    (d / name).write_text(json.dumps(data))
    return name


def edited(d: Path, source: str, name: str, change: Callable[[dict[str, Any]], Any]) -> str:
    data = json.loads((d / source).read_text())
    change(data)
    return json_file(d, name, data)


# ---------------------------------------------------------------------------------------------
# compare

@case("compare --out is the per-query file A records", "--out a.pq.parquet", "per-query file recorded by input A",
      "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--out", "a.pq.parquet"]


@case("compare --out is the per-query file B records", "per-query file recorded by input B", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--out", "b.pq.parquet"]


@case("compare --out is B's per-query file through a link", "per-query file recorded by input B", "Fix:")
def _(d: Path) -> list[str]:
    os.symlink("b.pq.parquet", d / "alias.parquet")
    return ["compare", "a.json", "b.json", "--out", "alias.parquet"]


@case("compare --out is the per-query file a leaderboard entry records", "per-query file recorded by input A",
      "Fix:")
def _(d: Path) -> list[str]:
    # An entry records its per-query file relative to the directory that holds leaderboards/.
    (d / "leaderboards" / "mine").mkdir(parents=True)
    shutil.copy(d / "a.pq.parquet", d / "leaderboards" / "mine" / "e.per_query.parquet")
    json_file(d / "leaderboards" / "mine", "e.json", {"schema": "ropebench.entry/1", "per_query": {
        "path": "leaderboards/mine/e.per_query.parquet", "sha256": "0" * 64}})
    return ["compare", "leaderboards/mine/e.json", "b.json", "--out", "leaderboards/mine/e.per_query.parquet"]


@case("compare --out is A", "is the input A a.json", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--out", "a.json"]


@case("compare --out is a directory (trailing slash)", "is a directory", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--out", "new/"]


@case("compare --out below a file", "cannot create this directory", "a.json is not a directory", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--out", "a.json/c.json"]


@case("compare --out is a named pipe", "is a named pipe", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--out", fifo(d, "pipe.json")]


for _kind, _make in (("a named pipe", fifo), ("a link to /dev/zero", zero_link)):
    @case(f"compare A is {_kind}", "A ", "not a regular file", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        return ["compare", make(d, "x.json"), "b.json"]


@case("compare B is a symlink loop", "B loop.json", "symbolic link loop", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", loop_link(d, "loop.json")]


@case("compare B is a dangling link", "B gone.json", "a link to a missing file", "Fix:")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", dangling(d, "gone.json")]


# ---------------------------------------------------------------------------------------------
# convert

for _kind, _make in (("a named pipe", fifo), ("a link to /dev/zero", zero_link), ("a symlink loop", loop_link),
                     ("a dangling link", dangling)):
    @case(f"convert npz of {_kind}", "npz file x.npz", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        return ["convert", "npz", make(d, "x.npz"), "--out", "sub2.parquet"]

    @case(f"convert rope-pairs with {_kind}", "pair file (V) v.txt", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        (d / "p.txt").write_text("1, 7\n")
        (d / "l.txt").write_text("1, 9\n")
        return ["convert", "rope-pairs", "p.txt", make(d, "v.txt"), "l.txt", "--out", "m.parquet"]

    @case(f"convert cope with a shard that is {_kind}", "shard", "0_photo", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        (d / "node").mkdir()
        (d / "node" / "0_item").write_text("7\t0.1,0.2\n")
        make(d / "node", "0_photo")
        return ["convert", "cope", "node", "--out", "cope.parquet"]


@case("convert npz of a .npy file", "npz file x.npz", "single .npy array", "Fix: numpy.savez")
def _(d: Path) -> list[str]:
    with open(d / "x.npz", "wb") as handle:
        np.save(handle, np.eye(3))
    return ["convert", "npz", "x.npz", "--out", "sub2.parquet"]


@case("convert npz of a truncated archive", "npz file x.npz", "cannot be read as .npz", "truncated", "Fix:")
def _(d: Path) -> list[str]:
    np.savez(d / "full.npz", embeddings=np.eye(3), item_ids=[1, 2, 3])
    data = (d / "full.npz").read_bytes()
    (d / "x.npz").write_bytes(data[: len(data) // 2])
    return ["convert", "npz", "x.npz", "--out", "sub2.parquet"]


@case("convert npz of text", "npz file x.npz", "not an .npz archive", "Fix:")
def _(d: Path) -> list[str]:
    return ["convert", "npz", garbage(d, "x.npz", b"embeddings,item_ids\n"), "--out", "sub2.parquet"]


@case("convert npz with object ids", "npz file x.npz", "array 'item_ids'", "Python objects", "Fix:")
def _(d: Path) -> list[str]:
    np.savez(d / "x.npz", embeddings=np.eye(3), item_ids=np.array(["a", 1, None], dtype=object))
    return ["convert", "npz", "x.npz", "--out", "sub2.parquet"]


_NPZ_ARRAYS: list[tuple[str, dict[str, Any], str]] = [
    ("1-d embeddings", {"embeddings": np.ones(3), "item_ids": [1, 2, 3]}, "array 'embeddings'"),
    ("fewer ids than rows", {"embeddings": np.eye(3), "item_ids": [1, 2]}, "array 'embeddings'"),
    ("short domains", {"embeddings": np.eye(3), "item_ids": [1, 2, 3], "domains": ["P", "V"]}, "array 'domains'"),
    ("text embeddings", {"embeddings": np.array([["a", "b"], ["c", "d"]]), "item_ids": [1, 2]},
     "array 'embeddings'"),
    ("NaN embeddings", {"embeddings": np.eye(3) * np.nan, "item_ids": [1, 2, 3]}, "array 'embeddings'"),
    ("float ids", {"embeddings": np.eye(3), "item_ids": [1.5, 2, 3]}, "array 'item_ids'"),
    ("2-d ids", {"embeddings": np.eye(3), "item_ids": [[1], [2], [3]]}, "array 'item_ids'"),
    ("no item_ids", {"embeddings": np.eye(3)}, "item_ids"),
]
for _label, _arrays, _fragment in _NPZ_ARRAYS:
    @case(f"convert npz with {_label}", "npz file x.npz", _fragment, "Fix:")
    def _(d: Path, arrays: dict[str, Any] = _arrays) -> list[str]:
        np.savez(d / "x.npz", **arrays)
        return ["convert", "npz", "x.npz", "--out", "sub2.parquet"]


@case("convert cope with two different vectors under one id", "different vector", "'7'", exit_code=0,
      written=("cope.parquet",))
def _(d: Path) -> list[str]:
    (d / "node").mkdir()
    (d / "node" / "0_item").write_text("7\t0.1,0.2\n8\t0.3,0.1\n")
    (d / "node" / "1_item").write_text("7\t0.5,0.9\n")
    return ["convert", "cope", "node", "--out", "cope.parquet"]


# ---------------------------------------------------------------------------------------------
# a directory where a file is expected: ropebench's message with a fix, not click's bare one

for _label, _args in (("compare A", ["compare", "adir", "b.json"]),
                      ("compare --out", ["compare", "a.json", "b.json", "--out", "adir"]),
                      ("convert npz input", ["convert", "npz", "adir", "--out", "x.parquet"]),
                      ("convert npz --out", ["convert", "npz", "adir", "--out", "adir"]),
                      ("convert rope-pairs input", ["convert", "rope-pairs", "adir", "adir", "adir", "--out", "m.pq"]),
                      ("evaluate --out", ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--out", "adir"]),
                      ("evaluate --per-query", ["evaluate", "sub.parquet", "-m", "manifest.parquet",
                                                "--per-query", "adir"]),
                      ("plot input", ["plot", "adir", "--kind", "matrix", "--out", "figures"]),
                      ("leaderboard add results", ["leaderboard", "add", "adir", "--suite", "mine", "--name", "x",
                                                   "--label", "X", "--root", "lb"])):
    @case(f"a directory as {_label}", "adir", "Fix:")
    def _(d: Path, args: list[str] = _args) -> list[str]:
        (d / "adir").mkdir()
        if "add" in args:
            _suite(d)
        return args


# ---------------------------------------------------------------------------------------------
# evaluate: a symlink loop given as the submission (the last failure of the first adversarial set)

@case("evaluate a symlink loop with --out", "submission loop.parquet", "symbolic link loop", "Fix:")
def _(d: Path) -> list[str]:
    return ["evaluate", loop_link(d, "loop.parquet"), "--out", "r.json"]


def _closed_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_EVALUATE_OPTIONS: list[tuple[str, list[str], list[str]]] = [
    ("--nprobe without --index", ["--nprobe", "4"], ["--nprobe only applies with --index", "Fix:"]),
    ("--ef-search without --index", ["--ef-search", "64"], ["--ef-search only applies with --index", "Fix:"]),
    ("--agreement-queries without --index", ["--agreement-queries", "10"],
     ["--agreement-queries only applies with --index"]),
    ("--distractor-sizes without --distractors", ["--distractor-sizes", "0,all"],
     ["--distractor-sizes only applies with --distractors"]),
    ("--workers without dask", ["--workers", "2"], ["--workers only applies with --engine dask"]),
    ("--scheduler without dask", ["--scheduler", "tcp://127.0.0.1:8786"], ["--scheduler only applies with"]),
    ("every lone option at once", ["--nprobe", "4", "--ef-search", "8"], ["--nprobe only", "--ef-search only"]),
    ("--engine dask without --distractors", ["--engine", "dask"], ["no catalogue to run", "Fix:"]),
    ("--workers 100000", ["--engine", "dask", "--workers", "100000"], ["--workers 100000", "worker processes",
                                                                      "Fix:"]),
    ("--scheduler and --workers", ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:8786", "--workers", "2"],
     ["give one of them"]),
    ("--scheduler that is not an address", ["--engine", "dask", "--scheduler", "not a url"],
     ["--scheduler 'not a url': not a scheduler address", "Fix:"]),
    ("--scheduler with an unknown scheme", ["--engine", "dask", "--scheduler", "http://127.0.0.1:8786"],
     ["not a scheduler address"]),
    ("--scheduler on port 0", ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:0"], ["not a port number"]),
    ("--scheduler on port 99999", ["--engine", "dask", "--scheduler", "tcp://127.0.0.1:99999"],
     ["not a port number"]),
    ("--index with more lists than training vectors", ["--index", "IVF4096,Flat"],
     ["--index IVF4096,Flat", "training vectors", "Fix: use fewer lists"]),
]
_EVALUATE_OPTIONS.append(("--ks with 101 cut-offs", ["--ks", ",".join(map(str, range(1, 102)))],
                          ["--ks: 101 cut-offs; at most 100", "Fix:"]))
_EVALUATE_OPTIONS.append(("--distractor-sizes with 101 sizes", ["--distractors", "sub.parquet", "--distractor-sizes",
                                                                 ",".join(map(str, range(101)))],
                          ["101 sizes; at most 100", "Fix:"]))
for _flag in (["--measure", "R@5"], ["--ci"], ["--ci-bounds"]):
    _EVALUATE_OPTIONS.append((f"{_flag[0]} with --format json", [*_flag, "--format", "json"],
                              [f"{'--ci / --ci-bounds' if _flag[0].startswith('--ci') else _flag[0]} only applies "
                               "with --format text or markdown", "Fix: drop"]))
_EVALUATE_OPTIONS.append(("--per-query with --no-per-query", ["--per-query", "q.parquet", "--no-per-query"],
                          ["contradict", "Fix:"]))
for _value in ("nan", "inf", "-inf", "1e400", "-1", "2.5", "ten", ""):
    _EVALUATE_OPTIONS.append((f"--distractor-sizes {_value!r}", ["--distractors", "sub.parquet",
                                                                  "--distractor-sizes", _value],
                              ["--distractor-sizes", "Fix:"]))
for _name, _extra, _expect in _EVALUATE_OPTIONS:
    @case(f"evaluate {_name}", *_expect)
    def _(d: Path, extra: list[str] = _extra) -> list[str]:
        return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--out", "r.json", *extra]


for _kind, _make in (("a named pipe", fifo), ("a link to /dev/zero", zero_link), ("a symlink loop", loop_link)):
    @case(f"evaluate --distractors directory holding {_kind} named like a shard", "distractors", "x.parquet",
          "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        (d / "catalogue").mkdir()
        make(d / "catalogue", "x.parquet")
        return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--out", "r.json", "--distractors", "catalogue"]


@case("evaluate --no-per-query without --out", "--no-per-query only applies with --out", "Fix:")
def _(d: Path) -> list[str]:
    return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--no-per-query"]


@case("evaluate --out writes the per-query file beside it", exit_code=0, written=("r.json", "r.per_query.parquet"))
def _(d: Path) -> list[str]:
    return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--out", "r.json", "-q"]


@case("evaluate --out --no-per-query writes the JSON alone", exit_code=0, written=("r.json",))
def _(d: Path) -> list[str]:
    return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--out", "r.json", "--no-per-query", "-q"]


@case("evaluate --scheduler at a closed port fails fast", "cannot reach a scheduler", "Fix:")
def _(d: Path) -> list[str]:
    return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--engine", "dask", "--out", "r.json",
            "--scheduler", f"tcp://127.0.0.1:{_closed_port()}"]


@case("evaluate --scheduler at a port that is not Dask's", "not a Dask scheduler", "no handshake", "Fix:")
def _(d: Path) -> list[str]:
    import socket

    from ropebench.cli import options

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # connections complete in the backlog; nothing is ever sent
    _OPEN.append(listener)
    options.SCHEDULER_PROBE_SECONDS = 0.3  # restored by the workdir fixture's monkeypatch below
    return ["evaluate", "sub.parquet", "-m", "manifest.parquet", "--engine", "dask", "--out", "r.json",
            "--distractors", "sub.parquet", "--scheduler", f"tcp://127.0.0.1:{listener.getsockname()[1]}"]


_OPEN: list[Any] = []


# ---------------------------------------------------------------------------------------------
# compare: statistics options and protocol notes

@case("compare --resamples beyond memory", "--resamples 1,000,000,000,000", "GiB", "Fix: use --resamples")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--resamples", "1000000000000"]


@case("compare --resamples in scientific notation", "--resamples", "not a valid integer")
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--resamples", "1e9"]


@case("compare cosine against l2 says so", "note: A was evaluated under cosine, B under l2", exit_code=0)
def _(d: Path) -> list[str]:
    edited(d, "b.json", "b2.json", lambda data: data["protocol"].update(metric="l2"))
    return ["compare", "a.json", "b2.json", "--resamples", "20"]


@case("compare a results file of an older schema", "ropebench.results/0", "Fix:", "another ropebench version")
def _(d: Path) -> list[str]:
    edited(d, "b.json", "old.json", lambda data: data.update(schema="ropebench.results/0"))
    return ["compare", "a.json", "old.json"]


# ---------------------------------------------------------------------------------------------
# plot

_PLOT_KINDS = ("curves", "matrix", "difficulty", "compare", "distractors")
_MALFORMED: list[tuple[str, Any]] = [
    ("a list", [1, 2]),
    ("results with tasks as a list", {"schema": "ropebench.results/1", "tasks": [1]}),
    ("results with a text value", {"schema": "ropebench.results/1", "tasks": {"P2V": {"R@1": "high"}}}),
    ("results with a broken ci", {"schema": "ropebench.results/1", "tasks": {"P2V": {"R@1": 5, "ci": {"R@1": 3}}}}),
    ("comparison without cells' fields", {"schema": "ropebench.comparison/1", "cells": [{"task": "P2V"}]}),
    ("comparison with cells as text", {"schema": "ropebench.comparison/1", "cells": "none"}),
    ("curve with too few values", {"sizes": [1, 2], "tasks": {"P2V": {"R@1": [1.0]}}}),
    ("curve with sizes as text", {"sizes": "x", "tasks": 3}),
    ("an unknown schema", {"schema": "something/9"}),
]
for _label, _data in _MALFORMED:
    for _kind in ("matrix", "curves", "compare", "distractors"):
        @case(f"plot --kind {_kind} of {_label}", "bad.json", "Fix:", exit_code=2)
        def _(d: Path, data: Any = _data, kind: str = _kind) -> list[str]:
            return ["plot", json_file(d, "bad.json", data), "--kind", kind, "--out", "figures"]


for _kind in ("curves", "difficulty"):
    @case(f"plot --kind {_kind} with --measure", "--measure only applies with --kind matrix", "Fix: drop --measure")
    def _(d: Path, kind: str = _kind) -> list[str]:
        return ["plot", "a.json", "--kind", kind, "--out", "figures", "--measure", "R@5"]


@case("plot of invalid JSON", "bad.json", "not valid JSON", "Fix:")
def _(d: Path) -> list[str]:
    return ["plot", garbage(d, "bad.json", b"{not json"), "--kind", "matrix", "--out", "figures"]


@case("plot of deeply nested JSON", "bad.json", "Fix:")
def _(d: Path) -> list[str]:
    return ["plot", garbage(d, "bad.json", b"[" * 100000 + b"]" * 100000), "--kind", "matrix", "--out", "figures"]


@case("plot of a named pipe", "not a regular file", "Fix:")
def _(d: Path) -> list[str]:
    return ["plot", fifo(d, "pipe.json"), "--kind", "matrix", "--out", "figures"]


@case("plot difficulty of a garbage parquet", "not a readable per-query parquet file")
def _(d: Path) -> list[str]:
    return ["plot", garbage(d, "q.parquet"), "--kind", "difficulty", "--out", "figures"]


@case("plot difficulty of results whose per-query file was replaced", "a.pq.parquet", "sha256 differs", "Fix:")
def _(d: Path) -> list[str]:
    shutil.copy(d / "b.pq.parquet", d / "a.pq.parquet")
    return ["plot", "a.json", "--kind", "difficulty", "--out", "figures"]


@case("plot difficulty of results without a per-query file", "a.json", "no per-query file", "Fix:")
def _(d: Path) -> list[str]:
    edited(d, "a.json", "a.json", lambda data: data.pop("per_query"))
    return ["plot", "a.json", "--kind", "difficulty", "--out", "figures"]


@case("plot --out below a file", "--out a.json/figures", "a.json is not a directory", "Fix:")
def _(d: Path) -> list[str]:
    return ["plot", "a.json", "--kind", "matrix", "--out", "a.json/figures"]


@case("plot --out is a file", "Fix:")
def _(d: Path) -> list[str]:
    return ["plot", "a.json", "--kind", "matrix", "--out", "a.json"]


@case("plot --format unknown", "--format", "png,svg,pdf")
def _(d: Path) -> list[str]:
    return ["plot", "a.json", "--kind", "matrix", "--out", "figures", "--format", "gif"]


@case("plot writes every figure", exit_code=0, written=("figures/matrix-a.png", "figures/matrix-a.svg"))
def _(d: Path) -> list[str]:
    return ["plot", "a.json", "--kind", "matrix", "--out", "figures", "--format", "png,svg"]


# ---------------------------------------------------------------------------------------------
# leaderboard init / site

for _bad_name in ("abc\n", "a" * 101, "a" * 260, "../x", "Upper", "_under", "", "a b", "caf\u00e9"):
    @case(f"leaderboard init suite {_bad_name[:12]!r}{'…' if len(_bad_name) > 12 else ''} ({len(_bad_name)})",
          "a suite name", "Fix:")
    def _(d: Path, name: str = _bad_name) -> list[str]:
        return ["leaderboard", "init", name, "--items", "1,2,3", "--products", "2", "--root", "lb"]


@case("leaderboard init of 100 characters", exit_code=0, written=("lb/" + "a" * 100 + "/suite.json",))
def _(d: Path) -> list[str]:
    return ["leaderboard", "init", "a" * 100, "--items", "1,2,3", "--products", "2", "--root", "lb"]


def _site(out: str) -> list[str]:
    return ["leaderboard", "site", "--no-plots", "--out", out]


@case("leaderboard site --out .", "--out .", "current directory", "Fix:")
def _(d: Path) -> list[str]:
    return _site(".")


@case("leaderboard site --out ..", "current directory", "Fix:")
def _(d: Path) -> list[str]:
    return _site("..")


@case("leaderboard site --out below a file", "a.json is not a directory", "Fix:")
def _(d: Path) -> list[str]:
    return _site("a.json/site")


@case("leaderboard site --out at a dangling link", "dangling symbolic link", "Fix:")
def _(d: Path) -> list[str]:
    return _site(dangling(d, "site"))


@case("leaderboard site --out at a link to a directory", "a symbolic link", "Fix:")
def _(d: Path) -> list[str]:
    (d / "real").mkdir()
    os.symlink("real", d / "site")
    return _site("site")


@case("leaderboard site --out is a directory it did not build", "did not build", "Fix:")
def _(d: Path) -> list[str]:
    (d / "mine").mkdir()
    (d / "mine" / "notes.txt").write_text("mine")
    return _site("mine")


@case("leaderboard site --out inside the leaderboard", "inside the leaderboard", "Fix:")
def _(d: Path) -> list[str]:
    _suite(d)
    return ["leaderboard", "site", "--no-plots", "--root", "lb", "--out", "lb/site"]


@case("leaderboard site --out is a file", "Fix:")
def _(d: Path) -> list[str]:
    return _site("a.json")


# ---------------------------------------------------------------------------------------------
# convert: output paths

def _npz(d: Path) -> str:
    np.savez(d / "x.npz", embeddings=np.eye(3), item_ids=[1, 2, 3])
    return "x.npz"


_CONVERT_OUTPUTS: list[tuple[str, Callable[[Path], str], list[str]]] = [
    ("the input itself", lambda d: "x.npz", ["also an input", "Fix:"]),
    ("a directory", lambda d: (d / "outdir").mkdir() or "outdir", ["directory", "Fix:"]),
    ("below a file", lambda d: "a.json/out.parquet", ["Fix:"]),
    ("a named pipe", lambda d: fifo(d, "out.parquet"), ["named pipe", "Fix:"]),
    ("a link to /dev/zero", lambda d: zero_link(d, "out.parquet"), ["character device", "Fix:"]),
]
for _label, _make_out, _expect in _CONVERT_OUTPUTS:
    @case(f"convert npz --out is {_label}", *_expect)
    def _(d: Path, make: Any = _make_out) -> list[str]:
        return ["convert", "npz", _npz(d), "--out", make(d)]

    @case(f"convert rope-pairs --out is {_label}", *_expect[-1:])
    def _(d: Path, make: Any = _make_out) -> list[str]:
        for name in ("p.txt", "v.txt", "l.txt"):
            (d / name).write_text("1, 7\n")
        out = make(d)
        return ["convert", "rope-pairs", "p.txt", "v.txt", "l.txt", "--out", "p.txt" if out == "x.npz" else out]


for _label, _text in (("a line with one field", "17\n"), ("a line with three fields", "1, 7, 9\n"),
                      ("Latin-1 bytes", None)):
    @case(f"convert rope-pairs with {_label}", "p.txt:1", "Fix:")
    def _(d: Path, text: Any = _text) -> list[str]:
        if text is None:
            (d / "p.txt").write_bytes(b"1, caf\xe9\n")
        else:
            (d / "p.txt").write_text(text)
        for name in ("v.txt", "l.txt"):
            (d / name).write_text("1, 7\n")
        return ["convert", "rope-pairs", "p.txt", "v.txt", "l.txt", "--out", "m.parquet"]


@case("convert cope of a missing directory", "nowhere", "not a directory", "Fix:")
def _(d: Path) -> list[str]:
    return ["convert", "cope", "nowhere", "--out", "cope.parquet"]


@case("convert cope --require-complete without --manifest", "--require-complete needs --manifest")
def _(d: Path) -> list[str]:
    (d / "node").mkdir()
    (d / "node" / "0_item").write_text("7\t0.1,0.2\n")
    return ["convert", "cope", "node", "--out", "cope.parquet", "--require-complete"]


@case("convert cope with a bad --live-id", "--live-id", "Fix:")
def _(d: Path) -> list[str]:
    (d / "node").mkdir()
    (d / "node" / "0_item").write_text("7\t0.1,0.2\n")
    return ["convert", "cope", "node", "--out", "cope.parquet", "--live-id", "{starttime}"]


@case("convert npz writes a submission", exit_code=0, written=("sub2.parquet",))
def _(d: Path) -> list[str]:
    return ["convert", "npz", _npz(d), "--out", "sub2.parquet"]


# ---------------------------------------------------------------------------------------------
# compare: odd inputs

for _label, _make_input, _expect in (
        ("garbage bytes", lambda d: garbage(d, "x.json"), ["x.json"]),
        ("an empty file", lambda d: garbage(d, "x.json", b""), ["x.json"]),
        ("a JSON list", lambda d: json_file(d, "x.json", [1, 2]), ["x.json", "Fix:"]),
        ("a comparison file", lambda d: "cmp.json", ["cmp.json", "Fix:"]),
        ("a truncated parquet file", lambda d: garbage(d, "x.parquet", b"PAR1" + b"\0" * 40),
         ["x.parquet", "Fix:"]),
        ("a results file whose per-query file is gone", lambda d: (os.remove(d / "b.pq.parquet"), "b.json")[1],
         ["b.pq.parquet", "Fix:"]),
        ("a results file whose per-query file changed", lambda d: (garbage(d, "b.pq.parquet"), "b.json")[1],
         ["sha256", "Fix:"]),
        ("a missing file", lambda d: "missing.json", ["missing.json", "Fix:"]),
        ("a directory", lambda d: (d / "dir.json").mkdir() or "dir.json", ["dir.json"]),
):
    @case(f"compare B is {_label}", *_expect)
    def _(d: Path, make: Any = _make_input) -> list[str]:
        return ["compare", "a.json", make(d), "--out", "c.json"]


@case("compare A whose recorded per-query file is a named pipe", "per-query file", "named pipe", "Fix:")
def _(d: Path) -> list[str]:
    os.remove(d / "a.pq.parquet")
    fifo(d, "a.pq.parquet")
    return ["compare", "a.json", "b.json", "--out", "c.json"]


@case("compare results of another test set", "not two evaluations of the same test set", "Fix:")
def _(d: Path) -> list[str]:
    import ropebench

    arrays = _tiny_arrays(2)
    arrays["item_ids"] = [f"other{i}" for i in range(len(arrays["item_ids"]))]
    ropebench.evaluate(**arrays, ks="1,5,10").write(d / "other.json", per_query=d / "other.pq.parquet")
    return ["compare", "a.json", "other.json", "--out", "c.json"]


@case("compare with other Ks", "Ks", "Fix:")
def _(d: Path) -> list[str]:
    import ropebench

    ropebench.evaluate(**_tiny_arrays(1), ks="1,5").write(d / "k.json", per_query=d / "k.pq.parquet")
    return ["compare", "a.json", "k.json", "--out", "c.json"]


@case("compare writes its JSON", exit_code=0, written=("c.json",))
def _(d: Path) -> list[str]:
    return ["compare", "a.json", "b.json", "--resamples", "20", "--out", "c.json"]


# ---------------------------------------------------------------------------------------------
# leaderboard add / list / verify

def _suite(d: Path) -> None:
    result = CliRunner().invoke(cli, ["leaderboard", "init", "mine", "--manifest", "manifest.parquet",
                                      "--root", "lb", "--ks", "1,5,10"])
    assert result.exit_code == 0, result.output


for _label, _make_results, _expect in (
        ("a named pipe", lambda d: fifo(d, "r.json"), ["r.json", "Fix:"]),
        ("a symlink loop", lambda d: loop_link(d, "r.json"), ["r.json"]),
        ("garbage", lambda d: garbage(d, "r.json"), ["r.json"]),
        ("a missing file", lambda d: "r.json", ["r.json"]),
        ("a comparison", lambda d: "cmp.json", ["cmp.json"]),
):
    @case(f"leaderboard add of {_label}", *_expect)
    def _(d: Path, make: Any = _make_results) -> list[str]:
        _suite(d)
        return ["leaderboard", "add", make(d), "--suite", "mine", "--name", "x", "--label", "X", "--root", "lb"]


for _label, _args, _expect in (
        ("a name with a newline", ["--name", "x\n"], ["--name", "file name"]),
        ("a two-line label", ["--label", "a\nb"], ["--label"]),
        ("an unknown suite", ["--suite", "nope"], ["nope"]),
):
    @case(f"leaderboard add with {_label}", *_expect)
    def _(d: Path, args: list[str] = _args) -> list[str]:
        _suite(d)
        base = {"--suite": "mine", "--name": "x", "--label": "X"}
        base.update(dict(zip(args[::2], args[1::2])))
        return ["leaderboard", "add", "a.json", *[item for pair in base.items() for item in pair], "--root", "lb"]


for _command in (["list"], ["verify"], ["render"]):
    @case(f"leaderboard {_command[0]} with a missing --root", "--root nowhere", "no such directory")
    def _(d: Path, command: list[str] = _command) -> list[str]:
        return ["leaderboard", *command, "--root", "nowhere"]


for _label, _root, _expect in (("a file", "a.json", "is a file, not a directory"),
                               ("below a file", "a.json/lb", "a.json is not a directory")):
    @case(f"leaderboard init --root {_label}", _expect, "Fix:")
    def _(d: Path, root: str = _root) -> list[str]:
        return ["leaderboard", "init", "mine", "--items", "1,2,3", "--products", "2", "--root", root]

    for _command in (["list"], ["verify"], ["render"], ["site", "--out", "site"]):
        @case(f"leaderboard {_command[0]} --root {_label}", "--root", "Fix:")
        def _(d: Path, root: str = _root, command: list[str] = _command) -> list[str]:
            return ["leaderboard", *command, "--root", root]


@case("leaderboard init --items without --products", "--items and --products go together")
def _(d: Path) -> list[str]:
    return ["leaderboard", "init", "mine", "--items", "1,2,3", "--root", "lb"]


@case("leaderboard init with malformed --items", "--items", "31388,29810,30981")
def _(d: Path) -> list[str]:
    return ["leaderboard", "init", "mine", "--items", "1,2", "--products", "3", "--root", "lb"]


@case("leaderboard init of an existing suite", "exists", exit_code=2)
def _(d: Path) -> list[str]:
    _suite(d)
    return ["leaderboard", "init", "mine", "--items", "1,2,3", "--products", "3", "--root", "lb"]


# ---------------------------------------------------------------------------------------------
# validate, table and baseline: the same odd files

for _kind, _make in (("a named pipe", fifo), ("a link to /dev/zero", zero_link), ("a symlink loop", loop_link),
                     ("a dangling link", dangling)):
    @case(f"validate {_kind}", "submission x.parquet", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        return ["validate", make(d, "x.parquet")]

    @case(f"validate with a manifest that is {_kind}", "manifest m.parquet", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        return ["validate", "sub.parquet", "--manifest", make(d, "m.parquet")]

    @case(f"table --entry {_kind}", "x.json")
    def _(d: Path, make: Any = _make) -> list[str]:
        return ["table", "--table", "matrix", "--entry", make(d, "x.json")]

    @case(f"leaderboard init --manifest {_kind}", "m.parquet", "Fix:")
    def _(d: Path, make: Any = _make) -> list[str]:
        return ["leaderboard", "init", "mine", "--manifest", make(d, "m.parquet"), "--root", "lb"]


@case("table --entry of garbage", "x.json")
def _(d: Path) -> list[str]:
    return ["table", "--table", "matrix", "--entry", garbage(d, "x.json")]


@case("table --entry of a comparison", "cmp.json", "neither a results file")
def _(d: Path) -> list[str]:
    return ["table", "--table", "matrix", "--entry", "cmp.json"]


@case("table --entry of two results", exit_code=0)
def _(d: Path) -> list[str]:
    return ["table", "--table", "matrix", "--entry", "a.json", "--entry", "b.json"]


for _label, _out in (("a named pipe", "pipe"), ("below a file", "a.json/x.parquet"), ("a directory", "adir")):
    @case(f"baseline train --out {_label}", "--out", "Fix:")
    def _(d: Path, out: str = _out) -> list[str]:
        pytest.importorskip("torch")
        if out == "pipe":
            fifo(d, "pipe")
        if out == "adir":
            (d / "adir").mkdir()
        return ["baseline", "train", "sim", "--loss", "cls", "--out", out, "--epochs", "1"]


@case("baseline train of a missing data directory", "train.parquet", "baseline simulate")
def _(d: Path) -> list[str]:
    pytest.importorskip("torch")
    return ["baseline", "train", "nowhere", "--loss", "cls", "--out", "t.parquet", "--epochs", "1"]


@case("baseline simulate --out below a file", "a.json", "Fix:")
def _(d: Path) -> list[str]:
    return ["baseline", "simulate", "--out", "a.json/sim", "--products", "20"]


# ---------------------------------------------------------------------------------------------

def test_there_are_many_cases() -> None:
    assert len({c.name for c in CASES}) == len(CASES)
    assert len(CASES) >= 150, len(CASES)


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_command_case(item: Case, workdir: Path, alarm: None) -> None:
    if "plot" in item.name.split() and importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (extra ropebench[plot])")
    args = item.build(workdir)
    before = _snapshot(workdir)
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == item.exit_code, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    for fragment in item.expect:
        assert fragment in result.output, (fragment, result.output)
    after = _snapshot(workdir)
    if item.exit_code == 2:
        assert result.stderr.startswith(("Error:", "Usage:")), result.stderr
        assert after == before  # nothing written, changed or removed; no temporary file left
    else:
        for path in item.written:
            assert path in after and path not in before, (path, sorted(after))
        assert not [name for name in after if name.endswith(".tmp")]
