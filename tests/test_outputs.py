"""Output files: refused before any work when they would destroy an input or each other, and
written together, all or none, also on a full disk and when the writer is killed.

The kill test uses the one test hook of :mod:`ropebench.io.files`: the environment variable
``ROPEBENCH_TEST_PAUSE_BETWEEN_RENAMES`` (seconds) makes the writer sleep between renaming its
finished temporary files into place, so a real child process can be SIGKILLed at the worst moment.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ropebench
from ropebench.cli import cli
from ropebench.errors import UsageError
from ropebench.io.files import PAUSE_ENV, _Guardian, check_output_paths


def _write_submission(path: Path, *, labelled: bool = True) -> None:
    rng = np.random.default_rng(0)
    n = 12
    columns = {"item_id": [f"i{i}" for i in range(n)],
               "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 4), pa.float32()), 4)}
    if labelled:
        columns.update(domain=list("PVL") * 4, product_id=[i // 3 for i in range(n)])
    pq.write_table(pa.table(columns), path)


@pytest.fixture
def inputs(tmp_path):
    """A self-labelled submission, a manifest for it, and a per-domain directory submission."""
    sub, man = tmp_path / "sub.parquet", tmp_path / "manifest.parquet"
    _write_submission(sub)
    table = pq.read_table(sub)
    pq.write_table(table.select(["item_id", "domain", "product_id"]), man)
    directory = tmp_path / "by_domain"
    directory.mkdir()
    for code in "PVL":
        rows = [i for i, d in enumerate(table.column("domain").to_pylist()) if d == code]
        pq.write_table(table.take(rows).drop_columns(["domain"]), directory / f"{code}.parquet")
    return sub, man, directory


def _no_work(monkeypatch):
    """Make any evaluation fail loudly: a refusal must come before the work."""
    def boom(*args, **kwargs):
        raise AssertionError("the evaluation ran before the output paths were checked")
    monkeypatch.setattr(ropebench, "evaluate", boom)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".old")))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", ["out=submission", "per-query=submission", "out=manifest", "per-query=manifest",
                                  "out inside directory submission", "out=directory submission",
                                  "out=per-query", "out=per-query via ..", "out=per-query via link"])
def test_outputs_that_would_destroy_an_input_or_each_other_are_refused_before_work(inputs, tmp_path, monkeypatch,
                                                                                     case):
    sub, man, directory = inputs
    submission, manifest = str(sub), str(man)
    out, per_query = str(tmp_path / "r.json"), str(tmp_path / "q.parquet")
    fragment = "would destroy the input"
    if case == "out=submission":
        out = submission
    elif case == "per-query=submission":
        per_query = submission
    elif case == "out=manifest":
        out = manifest
    elif case == "per-query=manifest":
        per_query = manifest
    elif case == "out inside directory submission":
        submission, manifest, out = str(directory), None, str(directory / "results.json")
    elif case == "out=directory submission":
        submission, manifest, out = str(directory), None, str(directory)
        fragment = "is a directory"  # click's own check of the option comes first here
    else:
        fragment = "both name"
        per_query = {"out=per-query": out, "out=per-query via ..": str(tmp_path / "x" / ".." / "r.json"),
                     "out=per-query via link": str(tmp_path / "link.json")}[case]
        if case.endswith("link"):
            (tmp_path / "r.json").write_text("{}")
            os.symlink(tmp_path / "r.json", tmp_path / "link.json")
    before = {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()}
    _no_work(monkeypatch)
    args = ["evaluate", submission, "--out", out, "--per-query", per_query]
    result = CliRunner().invoke(cli, args + (["--manifest", manifest] if manifest else []))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in result.stderr
    if case != "out=directory submission":
        assert "refused before any work, nothing written" in result.stderr and "Fix:" in result.stderr
    assert {p: _digest(p) for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched


def test_devices_pipes_and_unwritable_places_are_refused_before_work(inputs, tmp_path, monkeypatch):
    sub, _, _ = inputs
    # /dev/null is only ever checked here, never given to a writer: renaming a results file over
    # it (as root) would replace the device node for every process on the machine.
    with pytest.raises(UsageError, match="/dev/null is a character device, not a regular file"):
        check_output_paths({"--out": "/dev/null"}, {})
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    _no_work(monkeypatch)
    for out, fragment in ((fifo, "is a named pipe, not a regular file"),
                          (blocker / "r.json", "is not a directory")):
        result = CliRunner().invoke(cli, ["evaluate", str(sub), "--out", str(out)])
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert fragment in result.stderr and "Fix:" in result.stderr, result.stderr
    assert fifo.is_fifo() and blocker.read_text() == ""


def test_both_files_written_together_and_linked(inputs, tmp_path):
    sub, _, _ = inputs
    out, per_query = tmp_path / "deep" / "r.json", tmp_path / "q.parquet"
    result = CliRunner().invoke(cli, ["evaluate", str(sub), "--out", str(out), "--per-query", str(per_query), "-q"])
    assert result.exit_code == 0, result.output
    recorded = json.loads(out.read_text())["per_query"]
    assert recorded["sha256"] == _digest(per_query)
    assert (out.parent / recorded["path"]).resolve() == per_query.resolve()
    assert _leftovers(tmp_path) == [] and _leftovers(out.parent) == []


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("failing", ["per-query writer", "results writer", "second rename"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "old versions present"])
def test_a_failed_write_leaves_no_file_or_the_old_ones(inputs, tmp_path, monkeypatch, failing, existing):
    sub, _, _ = inputs
    out, per_query = tmp_path / "new" / "r.json", tmp_path / "q.parquet"
    if existing:
        out.parent.mkdir()
        out.write_text("old results")
        per_query.write_bytes(b"old per-query")
    if failing == "per-query writer":  # a full disk while the parquet file is written
        monkeypatch.setattr(pq, "write_table", _enospc)
    elif failing == "results writer":  # --out cannot be written: the per-query file must not stay
        monkeypatch.setattr(os, "fsync", _enospc)
    else:  # the first file is already renamed into place when the second rename fails
        real_replace, calls = os.replace, []

        def replace(src, dst):
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            real_replace(src, dst)

        monkeypatch.setattr(os, "replace", replace)
    result = CliRunner().invoke(cli, ["evaluate", str(sub), "--out", str(out), "--per-query", str(per_query), "-q"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "cannot be written" in result.stderr and "Fix:" in result.stderr
    if failing != "second rename":
        assert "No space left on device" in result.stderr
    if existing:
        assert out.read_text() == "old results" and per_query.read_bytes() == b"old per-query"
    else:
        assert not out.exists() and not per_query.exists()
        assert not out.parent.exists()  # the directory made for --out is gone again
    assert _leftovers(tmp_path) == [] and (not out.parent.exists() or _leftovers(out.parent) == [])


def test_a_writer_killed_between_its_renames_leaves_both_files(inputs, tmp_path):
    """SIGKILL a real ``ropebench evaluate`` after it renamed the per-query file and before it
    renamed the results file: its guardian process completes the step, so both files are there
    and agree (the results file records the per-query file's sha256)."""
    sub, _, _ = inputs
    out, per_query = tmp_path / "r.json", tmp_path / "q.parquet"
    env = dict(os.environ, **{PAUSE_ENV: "60"})
    child = subprocess.Popen([sys.executable, "-m", "ropebench", "evaluate", str(sub), "--out", str(out),
                              "--per-query", str(per_query), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not per_query.exists():  # the first rename is done: the child now sleeps before the next
            assert child.poll() is None, child.stderr.read() if child.stderr else b""
            assert time.monotonic() < deadline, "the child never reached its renames"
            time.sleep(0.05)
        assert not out.exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stderr:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 20
    while not out.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert out.exists() and per_query.exists()
    assert json.loads(out.read_text())["per_query"]["sha256"] == _digest(per_query)
    deadline = time.monotonic() + 5
    while _leftovers(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("committed", [False, True])
def test_the_guardian_undoes_or_finishes_a_dead_writers_step(tmp_path, committed):
    """The guardian's two outcomes, with the writer's death played by closing its pipe: before
    "commit" the temporary files go (targets keep their old contents); after it, they are
    renamed into place."""
    targets = [tmp_path / "a.parquet", tmp_path / "b.json"]
    for target in targets:
        target.write_text("old")
    guardian = _Guardian()
    assert guardian.process is not None
    for target in targets:
        tmp = tmp_path / f".{target.name}.x.tmp"
        tmp.write_text("new")
        guardian.send("tmp", str(tmp), str(target))
    if committed:
        guardian.send("commit")
    assert guardian.process.stdin is not None
    guardian.process.stdin.close()  # the writer "dies" without saying "done"
    guardian.process.wait(timeout=20)
    assert [t.read_text() for t in targets] == (["new", "new"] if committed else ["old", "old"])
    assert _leftovers(tmp_path) == []


def test_two_writers_renaming_at_once_leave_one_writers_pair(tmp_path, monkeypatch):
    """Writer A pauses long between its renames, writer B (starting 0.1 s later) briefly: without
    the directory lock B's pair would land inside A's, leaving A's second file beside B's first."""
    import threading

    from ropebench.io import files

    targets = [tmp_path / "q.parquet", tmp_path / "r.json"]
    pauses = {"A": 0.5, "B": 0.05}
    monkeypatch.setenv(PAUSE_ENV, "1")
    real_sleep = time.sleep
    monkeypatch.setattr(files.time, "sleep", lambda _: real_sleep(pauses[threading.current_thread().name]))

    def run(name: str) -> None:
        files.write_files_together([(target, lambda tmp, text=f"{name}{i}": Path(tmp).write_text(text))
                                    for i, target in enumerate(targets)])

    writers = [threading.Thread(target=run, args=(name,), name=name) for name in "AB"]
    writers[0].start()
    real_sleep(0.1)
    writers[1].start()
    for writer in writers:
        writer.join(timeout=30)
    contents = [target.read_text() for target in targets]
    assert contents in (["A0", "A1"], ["B0", "B1"]), contents
    assert _leftovers(tmp_path) == []


@pytest.mark.slow
def test_concurrent_writers_of_the_same_outputs_leave_one_runs_pair(tmp_path):
    """Three runs on different submissions write the same --out and --per-query at once, each
    pausing between its two renames: the pair left is one run's (the results file's recorded
    sha256 is the per-query file's), because the renames of one run hold the directory's lock."""
    out, per_query = tmp_path / "r.json", tmp_path / "q.parquet"
    children = []
    for seed in range(3):
        sub = tmp_path / f"sub{seed}.parquet"
        _write_submission(sub)
        table = pq.read_table(sub)
        rng = np.random.default_rng(seed + 1)
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=table.num_rows * 4), pa.float32()), 4)
        table = table.set_column(table.schema.get_field_index("embedding"), "embedding", embedding)
        pq.write_table(table, sub)
        children.append(subprocess.Popen(
            [sys.executable, "-m", "ropebench", "evaluate", str(sub), "--out", str(out), "--per-query",
             str(per_query), "--quiet", "--ks", "1,2"], env=dict(os.environ, **{PAUSE_ENV: "2"}),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    assert json.loads(out.read_text())["per_query"]["sha256"] == _digest(per_query)
    assert _leftovers(tmp_path) == []
