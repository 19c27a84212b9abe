"""Faults, hostile inputs and concurrent writers against the leaderboard.

Every change must leave the old leaderboard or the new one: concurrent ``add`` processes all
land; a process killed at any step of a commit leaves a suite that loads and is old or new;
a README that cannot be written changes nothing. Reads stay inside the root and never open a
non-regular file. Labels are one line and escaped wherever they are rendered. A suite only
takes results computed on the test set it declares.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import ropebench
from ropebench import leaderboard as lb
from ropebench.cli import cli
from ropebench.errors import DataError, UsageError
from ropebench.leaderboard import transaction
from ropebench.leaderboard.store import View
from ropebench.render.table_formats import render

REPO = Path(__file__).resolve().parents[1]
KS = [1, 5, 10, 20, 50]


# ----------------------------------------------------------------------------- fixtures


def write_manifest(directory: Path, n_products: int = 12) -> None:
    ids = [f"{d}{p}-{c}" for p in range(n_products) for d in "PVL" for c in range(2)]
    pq.write_table(pa.table({"item_id": ids, "domain": [i[0] for i in ids],
                             "product_id": [int(i[1:].split("-")[0]) for i in ids]}), directory / "manifest.parquet")


def write_submission(directory: Path, name: str, seed: int) -> Path:
    """Embeddings for every item of the manifest: product centres plus seeded noise."""
    table = pq.read_table(directory / "manifest.parquet")
    products = np.asarray(table.column("product_id").to_pylist())
    rng = np.random.default_rng(seed)
    embeddings = (rng.normal(size=(products.max() + 1, 8))[products]
                  + rng.normal(size=(len(products), 8))).astype(np.float32)
    path = directory / f"{name}.parquet"
    pq.write_table(pa.table({"item_id": table.column("item_id"),
                             "embedding": pa.array(list(embeddings), type=pa.list_(pa.float32()))}), path)
    return path


def evaluate_into(base: Path, name: str, seed: int, *, per_query: bool = False) -> Path:
    """``data/<name>.parquet`` evaluated (paths relative to ``base``), results in ``base/<name>.json``."""
    write_submission(base / "data", name, seed)
    result = ropebench.evaluate(f"data/{name}.parquet", manifest="data/manifest.parquet", ci=False)
    out = base / f"{name}.json"
    result.write(out, per_query=base / f"{name}.pq.parquet" if per_query else None)
    return out


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A lab's directory: data/ (manifest + submission a), leaderboards/tiny with entry a."""
    (tmp_path / "data").mkdir()
    write_manifest(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    lb.init_suite(tmp_path / "leaderboards", "tiny", manifest="data/manifest.parquet")
    lb.add_entry(evaluate_into(tmp_path, "a", 0), root=tmp_path / "leaderboards", suite="tiny", name="a", label="A")
    return tmp_path


def main(*args: str) -> Result:
    """The whole command line, as a user runs it (errors become exit codes)."""
    return CliRunner().invoke(cli, list(args))


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the leaderboard but the lock file."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != transaction.LOCK}


def assert_clean_refusal(result: Result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in result.output, result.output


def child(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ropebench", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})})


# --------------------------------------------------------------------------- integrity


def test_rope_test_refuses_the_simulated_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A copy of the repository's leaderboards and sample, so a wrongly accepted entry lands in tmp.
    shutil.copytree(REPO / "leaderboards", tmp_path / "leaderboards", ignore=shutil.ignore_patterns(".*"))
    (tmp_path / "sample_embeddings").mkdir()
    for name in ("cls_cd.parquet", "manifest.parquet"):
        shutil.copy(REPO / "sample_embeddings" / name, tmp_path / "sample_embeddings" / name)
    monkeypatch.chdir(tmp_path)
    result = main("evaluate", "sample_embeddings/cls_cd.parquet", "--manifest", "sample_embeddings/manifest.parquet",
                  "--out", "cls_cd.json", "--quiet")
    assert result.exit_code == 0, result.output
    before = snapshot(tmp_path / "leaderboards")
    result = main("leaderboard", "add", "cls_cd.json", "--suite", "rope-test", "--name", "sample", "--label", "S",
                  "--root", "leaderboards")
    assert_clean_refusal(result, "the result has 906/879/847 items (P/V/L) and 300 products; suite 'rope-test' is "
                                 "about 31,388/29,810/30,981 items and 2,527 products")
    assert snapshot(tmp_path / "leaderboards") == before
    # the same file is welcome where it belongs
    result = main("leaderboard", "add", "cls_cd.json", "--suite", "rope-sim", "--name", "again", "--label", "again",
                  "--root", "leaderboards")
    assert_clean_refusal(result, "the same submission")  # rope-sim already holds it, as cls-cd


def test_counts_edited_to_match_are_still_refused(base: Path) -> None:
    lb.init_suite(base / "leaderboards", "big", items={"P": 31388, "V": 29810, "L": 30981}, products=2527)
    results = json.loads((base / "a.json").read_text())
    for task, cells in results["tasks"].items():  # pretend to be the ROPE test split
        size = {"P": 31388, "V": 29810, "L": 30981}
        cells["n_skipped"] = size[task[0]] - cells["n_queries"]
        cells["n_gallery"] = size[task[2]]
    (base / "edited.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="and 12 products; suite 'big' is about .* and 2,527 products"):
        lb.add_entry(base / "edited.json", root=base / "leaderboards", suite="big", name="x", label="X")
    results["tasks"]["P2V"]["n_gallery"] = 1  # and tasks that contradict each other
    (base / "edited.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="the tasks disagree on the number of V items"):
        lb.add_entry(base / "edited.json", root=base / "leaderboards", suite="big", name="x", label="X")


def test_a_malformed_per_query_reference_is_refused_not_ignored(base: Path) -> None:
    results = json.loads((base / "a.json").read_text())
    (base / "odd.json").write_text(json.dumps({**results, "per_query": {"path": 7}}))
    with pytest.raises(DataError, match="'per_query' must be null or record the per-query file's 'path'"):
        lb.add_entry(base / "odd.json", root=base / "leaderboards", suite="tiny", name="o", label="O")


def test_a_suite_must_declare_its_test_set(base: Path) -> None:
    spec_path = base / "leaderboards" / "tiny" / "suite.json"
    spec = json.loads(spec_path.read_text())
    del spec["items"], spec["products"]
    spec["manifest"] = "data/manifest.parquet"  # a path without sha256 proves nothing
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match="'manifest' is the path 'data/manifest.parquet' without its sha256"):
        lb.load_suite(base / "leaderboards", "tiny")
    spec["manifest"] = None
    spec_path.write_text(json.dumps(spec))
    with pytest.raises(DataError, match="declares nothing about its test set"):
        lb.load_suite(base / "leaderboards", "tiny")


def test_verify_checks_the_declaration_and_the_per_query_file(base: Path) -> None:
    root = base / "leaderboards"
    lb.add_entry(evaluate_into(base, "b", 1, per_query=True), root=root, suite="tiny", name="b", label="B")
    entry = json.loads((root / "tiny" / "b.json").read_text())
    assert entry["per_query"]["path"] == "leaderboards/tiny/b.per_query.parquet"
    assert entry["test_set"] == {"items": {"P": 24, "V": 24, "L": 24}, "products": 12}
    assert lb.verify(root).ok
    spec_path = root / "tiny" / "suite.json"
    spec = json.loads(spec_path.read_text())
    spec_path.write_text(json.dumps({**spec, "products": 13}))
    lb.render_readme(root)
    problems = "\n".join(lb.verify(root).problems)
    assert "tiny/a: test set: entry 'a' has 24/24/24 items (P/V/L) and 12 products; suite 'tiny' is about" in problems
    spec_path.write_text(json.dumps(spec))
    lb.render_readme(root)
    table = pq.read_table(root / "tiny" / "b.per_query.parquet")
    pq.write_table(table.slice(1), root / "tiny" / "b.per_query.parquet")
    problems = "\n".join(lb.verify(root).problems)
    assert "tiny/b: per-query file leaderboards/tiny/b.per_query.parquet sha256 mismatch" in problems


# ------------------------------------------------------------------- transactional add


def test_concurrent_adds_all_land(base: Path) -> None:
    results = [evaluate_into(base, f"c{k}", 10 + k) for k in range(4)]
    before = lb.load_suite(base / "leaderboards", "tiny").spec["entries"]
    procs = [child(["leaderboard", "add", r.name, "--suite", "tiny", "--name", r.stem, "--label", r.stem.upper(),
                    "--root", "leaderboards"], base) for r in results]
    outcomes = [(p.communicate(timeout=120)[1], p.returncode) for p in procs]
    assert [code for _, code in outcomes] == [0] * 4, outcomes
    suite = lb.load_suite(base / "leaderboards", "tiny")
    assert sorted(suite.spec["entries"]) == sorted([*before, "c0", "c1", "c2", "c3"])
    assert suite.orphans == ()
    assert lb.verify(base / "leaderboards").ok


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(5))
def test_concurrent_adds_all_land_round_after_round(base: Path, round_: int) -> None:
    test_concurrent_adds_all_land(base)


_KILLED_CHILD = """
import sys, time
from ropebench.leaderboard import transaction
KILL_AT = sys.argv[1]
def step(name):
    if name == KILL_AT:
        print("at", name, flush=True)
        time.sleep(600)
transaction._step = step
from ropebench.cli import main
sys.argv = ["ropebench", *sys.argv[2:]]
main()
"""

STEPS = ["begin", "written tiny/b.per_query.parquet", "written tiny/b.json", "written tiny/suite.json",
         "written README.md", "journal written", "committed", "replaced tiny/b.per_query.parquet",
         "replaced tiny/b.json", "replaced tiny/suite.json", "replaced README.md", "done"]
QUICK_STEPS = ["written tiny/b.json", "committed", "replaced tiny/b.json"]


def _kill_at(base: Path, step: str) -> None:
    process = subprocess.Popen([sys.executable, "-c", _KILLED_CHILD, step, "leaderboard", "add", "b.json", "--suite",
                                "tiny", "--name", "b", "--label", "B", "--root", "leaderboards"],
                               cwd=base, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline()
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert line == f"at {step}\n", (line, stderr)


@pytest.fixture
def old_and_new(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, bytes],
                                                                                        dict[str, bytes]]]:
    """The leaderboard before and after adding b (with its per-query file), the add done in a copy."""
    evaluate_into(base, "b", 1, per_query=True)
    old = snapshot(base / "leaderboards")
    copy = tmp_path_factory.mktemp("copy") / "lab"
    shutil.copytree(base, copy)
    lb.add_entry(copy / "b.json", root=copy / "leaderboards", suite="tiny", name="b", label="B",
                 submission=str(copy / "data" / "b.parquet"), manifest=str(copy / "data" / "manifest.parquet"))
    yield base, old, snapshot(copy / "leaderboards")


def _check_after_kill(base: Path, step: str, old: dict[str, bytes], new: dict[str, bytes]) -> None:
    root = base / "leaderboards"
    committed = STEPS.index(step) >= STEPS.index("committed")
    # Readers see through the journal without changing anything (as in a read-only copy).
    suite, problems = lb.read_suite(root, "tiny", view=View(root))
    assert problems == [] and suite is not None and suite.orphans == ()
    assert suite.spec["entries"] == (["a", "b"] if committed else ["a"])
    # The next command that takes the lock finishes (or discards) the change: old or new, byte for byte.
    assert lb.verify(root).ok
    with transaction.exclusive(root):
        pass
    assert snapshot(root) == (new if committed else old), step


@pytest.mark.parametrize("step", QUICK_STEPS)
def test_a_killed_add_leaves_the_old_or_the_new_leaderboard(old_and_new: Any, step: str) -> None:
    base, old, new = old_and_new
    _kill_at(base, step)
    _check_after_kill(base, step, old, new)


@pytest.mark.slow
@pytest.mark.parametrize("step", [s for s in STEPS if s not in QUICK_STEPS])
def test_a_killed_add_leaves_the_old_or_the_new_leaderboard_at_every_step(old_and_new: Any, step: str) -> None:
    test_a_killed_add_leaves_the_old_or_the_new_leaderboard(old_and_new, step)


@pytest.mark.slow
def test_adds_killed_at_random_times(old_and_new: Any) -> None:
    base, old, new = old_and_new
    rng = np.random.default_rng(0)
    outcomes = set()
    for _ in range(12):
        process = child(["leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--force",
                         "--root", "leaderboards"], base)
        time.sleep(rng.uniform(0.1, 1.2))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        assert lb.load_suite(base / "leaderboards", "tiny").orphans == ()
        with transaction.exclusive(base / "leaderboards"):
            pass
        state = snapshot(base / "leaderboards")
        assert state in (old, new)
        outcomes.add(state == new)
        if state == new:  # start again from the old leaderboard
            shutil.rmtree(base / "leaderboards")
            for name, data in old.items():
                (base / "leaderboards" / name).parent.mkdir(parents=True, exist_ok=True)
                (base / "leaderboards" / name).write_bytes(data)


def test_readme_that_cannot_be_written_changes_nothing(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    evaluate_into(base, "b", 1, per_query=True)
    root = base / "leaderboards"
    before = snapshot(root)
    real_write = transaction._write_temp

    def full_disk(target: Path, data: bytes) -> Path:
        if target.name == "README.md":
            raise DataError(f"{target}: cannot be written (No space left on device); nothing was changed")
        return real_write(target, data)

    with monkeypatch.context() as patched:
        patched.setattr(transaction, "_write_temp", full_disk)
        result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--root",
                      "leaderboards")
    assert_clean_refusal(result, "README.md: cannot be written (No space left on device); nothing was changed")
    assert snapshot(root) == before and not list(root.rglob("*.tmp"))
    (root / "README.md").unlink()
    (root / "README.md").mkdir()  # not a file that can be replaced
    before = snapshot(root)
    result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--root",
                  "leaderboards")
    assert_clean_refusal(result, "README.md: cannot be read (Is a directory)")
    assert snapshot(root) == before


def test_read_only_readme_changes_nothing(base: Path) -> None:
    # the permission bits are honoured even when running as root
    evaluate_into(base, "b", 1)
    root = base / "leaderboards"
    (root / "README.md").chmod(0o444)
    before = snapshot(root)
    result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--root",
                  "leaderboards")
    assert_clean_refusal(result, "README.md is not writable; nothing was changed. Fix: `chmod u+w")
    assert snapshot(root) == before
    (root / "README.md").chmod(0o644)
    (root / "tiny").chmod(0o555)  # nor can a suite directory that was made read-only
    try:
        result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--root",
                      "leaderboards")
    finally:
        (root / "tiny").chmod(0o755)
    assert_clean_refusal(result, "tiny is not writable; nothing was changed")
    assert snapshot(root) == before


def test_same_file_twice_force_and_label_clash(base: Path) -> None:
    root = base / "leaderboards"
    args = ["leaderboard", "add", "a.json", "--suite", "tiny", "--root", "leaderboards"]
    assert_clean_refusal(main(*args, "--name", "a", "--label", "A"), "a.json exists: pass --force")
    assert_clean_refusal(main(*args, "--name", "a2", "--label", "A2"), "is already entry 'a' under the same protocol")
    evaluate_into(base, "b", 1, per_query=True)
    assert main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--root",
                "leaderboards").exit_code == 0
    result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "A", "--force",
                  "--root", "leaderboards")
    assert_clean_refusal(result, "label 'A' is already used by entry 'a'")
    # replacing b by a result without a per-query file removes the old one (it described other numbers)
    evaluate_into(base, "b2", 2)
    assert main("leaderboard", "add", "b2.json", "--suite", "tiny", "--name", "b", "--label", "B'", "--force",
                "--root", "leaderboards").exit_code == 0
    assert not (root / "tiny" / "b.per_query.parquet").exists()
    assert lb.load_suite(root, "tiny").spec["entries"] == ["a", "b"] and lb.verify(root).ok


def test_an_orphan_entry_file_does_not_stop_the_suite_from_loading(base: Path) -> None:
    root = base / "leaderboards"
    shutil.copy(root / "tiny" / "a.json", root / "tiny" / "stray.json")
    assert [e["name"] for e in lb.load_suite(root, "tiny").entries] == ["a"]
    assert main("table", "--suite", "tiny", "--root", "leaderboards").exit_code == 0
    result = main("leaderboard", "verify", "--root", "leaderboards")
    assert result.exit_code == 1 and "stray.json: not listed in" in result.output


# ------------------------------------------------------------------------------- paths


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail instead of hanging forever if something reads from /dev/zero or a pipe."""
    def hung(*_: Any) -> None:
        raise TimeoutError("the leaderboard read a file that never ends")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_non_regular_entry_files_are_refused_unread(base: Path, alarm: None, kind: str) -> None:
    path = base / "leaderboards" / "tiny" / "a.json"
    path.unlink()
    if kind == "dev-zero":
        path.symlink_to("/dev/zero")
        message = "a.json resolves to /dev/zero, outside leaderboards: leaderboard files are never followed out"
    else:
        os.mkfifo(path)
        message = "a.json is a named pipe, not a regular file: refused without reading it"
    result = main("leaderboard", "verify", "--root", "leaderboards")
    assert result.exit_code == 1 and message in result.output
    assert_clean_refusal(main("table", "--suite", "tiny", "--root", "leaderboards"), message)


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_a_results_file_that_never_ends_is_refused_unread(base: Path, alarm: None, kind: str) -> None:
    if kind == "dev-zero":
        (base / "r.json").symlink_to("/dev/zero")
    else:
        os.mkfifo(base / "r.json")
    named = "a character device" if kind == "dev-zero" else "a named pipe"
    assert_clean_refusal(main("leaderboard", "add", "r.json", "--suite", "tiny", "--name", "p", "--label", "P",
                              "--root", "leaderboards"), f"r.json is {named}, not a regular file")


def test_links_out_of_the_root_are_never_followed(base: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    secret = outside / "secret.json"
    secret.write_text(json.dumps({"private_key_field": 1}))
    entry = base / "leaderboards" / "tiny" / "a.json"
    entry.unlink()
    entry.symlink_to(secret)
    result = main("leaderboard", "verify", "--root", "leaderboards")
    assert result.exit_code == 1 and "outside" in result.output and "private_key_field" not in result.output
    # nor is a suite directory that is a link out of the root
    entry.unlink()
    shutil.move(str(base / "leaderboards" / "tiny"), str(outside / "tiny"))
    (base / "leaderboards" / "tiny").symlink_to(outside / "tiny")
    result = main("leaderboard", "verify", "--root", "leaderboards")
    assert result.exit_code == 1 and f"resolves to {outside / 'tiny' / 'suite.json'}, outside" in result.output


def test_a_directory_submission_with_a_link_out_is_refused(base: Path, tmp_path_factory: Any) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.parquet").write_bytes(b"not yours")
    hive = base / "data" / "hive"
    shutil.copytree(base / "data", hive, ignore=shutil.ignore_patterns("hive"))
    (hive / "extra.parquet").symlink_to(outside / "secret.parquet")
    results = json.loads((base / "a.json").read_text())
    results["submission"]["path"] = "data/hive"
    (base / "hive.json").write_text(json.dumps(results))
    with pytest.raises(DataError, match="extra.parquet resolves to .*secret.parquet, outside"):
        lb.add_entry(base / "hive.json", root=base / "leaderboards", suite="tiny", name="h", label="H")
    path = base / "leaderboards" / "tiny" / "a.json"  # an entry pointing at it: verify does not hash it
    path.write_text(json.dumps({**json.loads(path.read_text()), "submission": {
        **json.loads(path.read_text())["submission"], "path": "data/hive"}}))
    assert any("extra.parquet resolves to" in p for p in lb.verify(base / "leaderboards").problems)


def test_a_journal_leading_out_of_the_root_is_refused(base: Path, tmp_path_factory: Any) -> None:
    root = base / "leaderboards"
    outside = tmp_path_factory.mktemp("outside")
    (root / "escape").symlink_to(outside)
    (root / "tiny" / ".x.0123abcd.tmp").write_text("payload")
    (root / transaction.JOURNAL).write_text(json.dumps({"schema": "ropebench.journal/1", "moves": [
        {"target": "escape/owned.txt", "tmp": "tiny/.x.0123abcd.tmp"}]}))
    with pytest.raises(DataError, match="leads out of .* through a link"):
        lb.add_entry(base / "a.json", root=root, suite="tiny", name="a", label="A", force=True)
    assert not (outside / "owned.txt").exists()


def test_a_linked_submission_outside_the_base_is_refused_by_add_and_verify(base: Path,
                                                                          tmp_path_factory: Any) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (base / "data" / "a.parquet").rename(outside / "a.parquet")
    (base / "data" / "a.parquet").symlink_to(outside / "a.parquet")
    problems = "\n".join(lb.verify(base / "leaderboards").problems)
    assert f"resolves to {outside / 'a.parquet'}, outside" in problems
    with pytest.raises(DataError, match="is outside"):
        lb.add_entry(base / "a.json", root=base / "leaderboards", suite="tiny", name="a", label="A", force=True)


@pytest.mark.parametrize("name", ["../../outside", "/etc/passwd", "sub/entry", ".."])
def test_entries_with_paths_in_suite_json_are_refused(base: Path, name: str) -> None:
    (base / "outside.json").write_text(json.dumps({"schema": "ropebench.entry/1", "private_key_field": 1}))
    spec_path = base / "leaderboards" / "tiny" / "suite.json"
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "entries": ["a", name]}))
    result = main("leaderboard", "verify", "--root", "leaderboards")
    assert result.exit_code == 1
    assert f"'entries' has {name!r}: an entry name is a file name in this directory" in result.output
    assert "private_key_field" not in result.output
    assert_clean_refusal(main("table", "--suite", "tiny", "--root", "leaderboards"), "'entries' has")
    assert_clean_refusal(main("leaderboard", "verify", "--suite", "../leaderboards/tiny", "--root", "leaderboards"),
                         "a suite name is a directory name")


def test_entry_file_references_with_dotdot_are_schema_errors(base: Path) -> None:
    path = base / "leaderboards" / "tiny" / "a.json"
    entry = json.loads(path.read_text())
    entry["submission"]["path"] = "../elsewhere/a.parquet"
    path.write_text(json.dumps(entry))
    assert "submission.path '../elsewhere/a.parquet' must be relative" in "\n".join(lb.verify(base / "leaderboards")
                                                                                     .problems)


@pytest.mark.parametrize("where", ["entry", "suite", "results"])
def test_deeply_nested_json_is_a_clean_error(base: Path, where: str) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    if where == "results":
        (base / "deep.json").write_text(deep)
        assert_clean_refusal(main("leaderboard", "add", "deep.json", "--suite", "tiny", "--name", "d", "--label", "D",
                                  "--root", "leaderboards"), "nested too deeply")
        return
    (base / "leaderboards" / "tiny" / ("a.json" if where == "entry" else "suite.json")).write_text(deep)
    result = main("leaderboard", "verify", "--root", "leaderboards")
    assert result.exit_code == 1 and "nested too deeply" in result.output and "Traceback" not in result.output


# ------------------------------------------------------------------------------ labels


@pytest.mark.parametrize("label", ["two\nlines", "carriage\rreturn", "tab\there", "bell\x07", "rtl\u202eoverride"])
def test_labels_are_one_line(base: Path, label: str) -> None:
    evaluate_into(base, "b", 1)
    before = snapshot(base / "leaderboards")
    result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", label, "--root",
                  "leaderboards")
    assert_clean_refusal(result, "--label", "must be one line of text without control characters")
    assert snapshot(base / "leaderboards") == before
    # a label edited by hand is caught by verify
    path = base / "leaderboards" / "tiny" / "a.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "label": label}))
    assert any("must be one line" in p for p in lb.verify(base / "leaderboards").problems)


@pytest.mark.parametrize(("latex", "message"), [
    ("w {\\mathcal{L}", "braces are not balanced"),
    ("a & b", "an unescaped '&'"),
    ("a \\\\ b", "an unescaped '\\\\' would split the table row"),
])
def test_latex_labels_that_break_a_table_are_refused(base: Path, latex: str, message: str) -> None:
    evaluate_into(base, "b", 1)
    result = main("leaderboard", "add", "b.json", "--suite", "tiny", "--name", "b", "--label", "B", "--label-latex",
                  latex, "--root", "leaderboards")
    assert_clean_refusal(result, message)


HOSTILE = "<script>alert(1)</script> | &amp; 50% $x_1$ #1 {b} ~^\\"


def test_hostile_labels_are_escaped_in_every_rendering(base: Path) -> None:
    root = base / "leaderboards"
    evaluate_into(base, "b", 1)
    lb.add_entry(base / "b.json", root=root, suite="tiny", name="b", label=HOSTILE,
                 description="<img src=x onerror=alert(2)>", source="<b>bold</b>")
    readme = (root / "README.md").read_text()
    assert "<script>" not in readme and "<img" not in readme and "<b>" not in readme
    assert "&lt;script&gt;alert(1)&lt;/script&gt; \\| &amp; 50% $x_1$ #1 {b} ~^\\" in readme
    assert lb.verify(root).ok
    suite = lb.load_suite(root, "tiny")
    latex = render(lb.suite_tables(suite), "latex")
    assert "\\$x\\_1\\$ \\#1 \\{b\\} \\textasciitilde{}\\textasciicircum{}\\textbackslash{}" in latex
    assert "50\\%" in latex and "\\label{tab:tiny-table1}" in latex
    page = render(lb.suite_tables(suite), "html")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; | &amp;amp;" in page


def test_latex_labels_built_from_file_names_are_safe(base: Path) -> None:
    shutil.copy(base / "a.json", base / "my results #1 {x}%.json")
    result = main("table", "--table", "matrix", "--entry", "my results #1 {x}%.json", "--format", "latex")
    assert result.exit_code == 0, result.output
    assert "\\label{tab:results-matrix-my-results--1--x--}" in result.output


def test_suite_names_that_would_break_a_latex_label_are_refused(base: Path) -> None:
    assert_clean_refusal(main("leaderboard", "init", "a#b%", "--items", "1,1,1", "--products", "1", "--root",
                              "leaderboards"), "a suite name is a directory name")
    spec_path = base / "leaderboards" / "tiny" / "suite.json"
    spec_path.write_text(json.dumps({**json.loads(spec_path.read_text()), "name": "ti}ny"}))
    with pytest.raises(DataError, match="'name' 'ti}ny' must match"):
        lb.load_suite(base / "leaderboards", "tiny")


# ------------------------------------------------------------------ a lab's own suite


def test_a_lab_runs_its_own_suite_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = tmp_path / "lab"
    (lab / "data").mkdir(parents=True)
    write_manifest(lab / "data", n_products=10)
    elsewhere = tmp_path / "elsewhere"  # not a repository, no leaderboards/ of its own
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert_clean_refusal(main("leaderboard", "init", "mine"), "a suite declares the test set it is about")
    result = main("leaderboard", "init", "mine", "--manifest", str(lab / "data" / "manifest.parquet"), "--root",
                  str(lab / "leaderboards"), "--title", "Our test set")
    assert result.exit_code == 0, result.output
    assert "created suite mine (20 P, 20 V, 20 L items, 10 products, manifest sha256" in result.output
    spec = json.loads((lab / "leaderboards" / "mine" / "suite.json").read_text())
    assert spec["manifest"]["path"] == "data/manifest.parquet" and spec["products"] == 10
    assert "### mine: Our test set" in (lab / "leaderboards" / "README.md").read_text()
    assert_clean_refusal(main("leaderboard", "init", "mine", "--items", "1,1,1", "--products", "1", "--root",
                              str(lab / "leaderboards")), "suite 'mine' exists")
    # evaluate and add from elsewhere: paths recorded relative to here, stored relative to lab/
    write_submission(lab / "data", "ours", 3)
    result = main("evaluate", str(lab / "data" / "ours.parquet"), "--manifest", str(lab / "data" / "manifest.parquet"),
                  "--out", "ours.json", "--per-query", "ours.pq.parquet", "--quiet")
    assert result.exit_code == 0, result.output
    assert_clean_refusal(main("leaderboard", "add", "ours.json", "--suite", "mine", "--name", "ours", "--label", "O"),
                         "no leaderboards/ directory here to change")
    result = main("leaderboard", "add", "ours.json", "--suite", "mine", "--name", "ours", "--label", "O", "--root",
                  str(lab / "leaderboards"))
    assert result.exit_code == 0, result.output
    entry = json.loads((lab / "leaderboards" / "mine" / "ours.json").read_text())
    assert entry["submission"]["path"] == "data/ours.parquet"
    result = main("leaderboard", "verify", "--root", str(lab / "leaderboards"))
    assert result.exit_code == 0 and "1 per-query file(s) checked" in result.output, result.output
    # the lab moves its data: verify says what it needs, and where
    (lab / "data" / "ours.parquet").rename(elsewhere / "ours.parquet")
    result = main("leaderboard", "verify", "--root", str(lab / "leaderboards"))
    assert result.exit_code == 1
    assert f"mine/ours: submission data/ours.parquet is not at {lab / 'data' / 'ours.parquet'}" in result.output
    assert f"put the file there (sha256 {entry['submission']['sha256']})" in result.output


def test_a_suite_about_declared_counts(base: Path) -> None:
    root = base / "leaderboards"
    result = main("leaderboard", "init", "counted", "--items", "24,24,24", "--products", "12", "--root",
                  "leaderboards")
    assert result.exit_code == 0, result.output
    lb.add_entry(base / "a.json", root=root, suite="counted", name="a", label="A")
    lb.init_suite(root, "other", items={"P": 24, "V": 24, "L": 24}, products=11)
    with pytest.raises(DataError, match="24/24/24 items \\(P/V/L\\) and 12 products; suite 'other' is about "
                                        "24/24/24 items and 11 products"):
        lb.add_entry(base / "a.json", root=root, suite="other", name="a", label="A")
    with pytest.raises(DataError, match="has 24/24/24 items .* and 12 products, not the declared"):
        lb.init_suite(root, "wrong", manifest="data/manifest.parquet", products=11)
    with pytest.raises(UsageError, match="a suite declares the test set"):
        lb.init_suite(root, "none")
    assert lb.verify(root).ok
