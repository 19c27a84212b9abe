"""Everyday use, tried as a new user would: what `evaluate --out` writes by default, reading it
back, categories with nulls, and what the text output says about a run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import ropebench
from ropebench.cli import cli


def _arrays(seed: int = 0, n_products: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    products = np.repeat(np.arange(n_products), 3)
    domains = np.tile(["P", "V", "L"], n_products)
    centres = rng.normal(size=(n_products, 8))
    embeddings = (centres[products] + rng.normal(scale=0.8, size=(len(products), 8))).astype(np.float32)
    return {"embeddings": embeddings, "domains": domains, "product_ids": [f"c{p}" for p in products],
            "item_ids": [f"{d}{i}" for i, d in enumerate(domains)]}


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    arrays = _arrays()
    ropebench.write_submission(tmp_path / "sub.parquet", arrays["item_ids"], arrays["embeddings"])
    categories = [None if i % 3 == 0 else ("None" if i % 3 == 1 else "shoes") for i in range(len(arrays["item_ids"]))]
    pq.write_table(pa.table({"item_id": arrays["item_ids"], "domain": arrays["domains"],
                             "product_id": arrays["product_ids"], "category": pa.array(categories, pa.string())}),
                   tmp_path / "manifest.parquet")
    return tmp_path


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args))


def test_out_writes_the_per_query_file_beside_it_recorded_with_its_sha256(files: Path) -> None:
    from ropebench.io.files import sha256_file

    result = _run("evaluate", str(files / "sub.parquet"), "-m", str(files / "manifest.parquet"),
                  "--out", str(files / "r.json"))
    assert result.exit_code == 0, result.output
    written = files / "r.per_query.parquet"
    assert written.is_file() and f"wrote {written}" in result.stderr
    record = json.loads((files / "r.json").read_text())["per_query"]
    assert record == {"path": "r.per_query.parquet", "sha256": sha256_file(written)}
    # and what needs it works at once, without evaluating again
    compared = _run("compare", str(files / "r.json"), str(files / "r.json"), "--resamples", "20")
    assert compared.exit_code == 0, compared.output


def test_no_per_query_opts_out_and_contradictions_are_refused(files: Path) -> None:
    args = ["evaluate", str(files / "sub.parquet"), "-m", str(files / "manifest.parquet")]
    result = _run(*args, "--out", str(files / "r.json"), "--no-per-query")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in files.iterdir()) == ["manifest.parquet", "r.json", "sub.parquet"]
    assert "per_query" not in json.loads((files / "r.json").read_text())
    refused = _run(*args, "--out", str(files / "s.json"), "--per-query", str(files / "q.parquet"), "--no-per-query")
    assert refused.exit_code == 2 and "contradict" in refused.stderr and "Fix:" in refused.stderr
    assert not (files / "s.json").exists() and not (files / "q.parquet").exists()


def test_default_per_query_file_that_is_an_input_is_refused(files: Path) -> None:
    (files / "sub.per_query.parquet").write_bytes((files / "sub.parquet").read_bytes())
    before = (files / "sub.per_query.parquet").read_bytes()
    result = _run("evaluate", str(files / "sub.per_query.parquet"), "-m", str(files / "manifest.parquet"),
                  "--out", str(files / "sub.json"))
    assert result.exit_code == 2 and "per-query file written beside --out" in result.stderr, result.output
    assert "--no-per-query" in result.stderr and not (files / "sub.json").exists()
    assert (files / "sub.per_query.parquet").read_bytes() == before


def test_load_results_equals_the_result_written_with_its_per_query_file(files: Path) -> None:
    result = ropebench.evaluate(files / "sub.parquet", manifest=files / "manifest.parquet")
    result.write(files / "results.json", per_query=files / "per_query.parquet")
    loaded = ropebench.load_results(files / "results.json")
    assert loaded == result
    assert loaded.per_query.equals(result.per_query)


def test_null_categories_are_not_merged_with_a_category_named_none(files: Path) -> None:
    result = _run("evaluate", str(files / "sub.parquet"), "-m", str(files / "manifest.parquet"), "--by", "category",
                  "--out", str(files / "r.json"), "--format", "json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    table = pq.read_table(files / "r.per_query.parquet")
    categories = table.column("category").to_pylist()
    for task, cells in document["by_category"]["None"].items():
        assert cells["n_queries"] == sum(1 for t, c in zip(table.column("task").to_pylist(), categories)
                                         if t == task and c == "None")
    missing = document["by_category_missing"]
    for task, cells in missing.items():
        assert cells["n_queries"] == sum(1 for t, c in zip(table.column("task").to_pylist(), categories)
                                         if t == task and c is None)
    assert sum(c is None for c in categories) == sum(cells["n_queries"] for cells in missing.values()) > 0
    text = _run("evaluate", str(files / "sub.parquet"), "-m", str(files / "manifest.parquet"), "--by", "category")
    assert "(no category)" in text.stdout and "\nNone " in text.stdout


def test_evaluate_without_out_imports_no_pandas_when_writing_per_query(files: Path) -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom ropebench.cli import main\n"
            f"sys.argv = ['ropebench', 'evaluate', {str(files / 'sub.parquet')!r}, '-m', "
            f"{str(files / 'manifest.parquet')!r}, '--out', {str(files / 'r.json')!r}, '-q']\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert (files / "r.per_query.parquet").is_file()


def _distractors(path: Path, n: int = 30) -> Path:
    rng = np.random.default_rng(5)
    ropebench.write_submission(path, [f"dx{i}" for i in range(n)], rng.normal(size=(n, 8)).astype(np.float32),
                               domains=["P", "V", "L"] * (n // 3), product_ids=[f"zz{i}" for i in range(n)])
    return path


def test_text_output_shows_the_catalogue_and_its_curve(files: Path) -> None:
    catalogue = _distractors(files / "distractors.parquet")
    result = _run("evaluate", str(files / "sub.parquet"), "-m", str(files / "manifest.parquet"),
                  "--distractors", str(catalogue), "--distractor-sizes", "0,15,all", "-q")
    assert result.exit_code == 0, result.output
    assert f"Distractor catalogue: {catalogue} (30 items: P 10, V 10, L 10)" in result.stdout
    curve = result.stdout.split("R@1 against catalogue size")[1].splitlines()
    assert [line.split()[0] for line in curve[4:7]] == ["0", "15", "30"]


def test_text_output_shows_the_agreement_of_an_approximate_run(files: Path) -> None:
    result = _run("evaluate", str(files / "sub.parquet"), "-m", str(files / "manifest.parquet"),
                  "--index", "IVF2,Flat", "--nprobe", "1", "-q")
    assert result.exit_code == 0, result.output
    assert "Agreement with exact search (--index IVF2,Flat, nprobe 1)" in result.stdout
    assert "unchanged" in result.stdout and "|ΔR@1|" in result.stdout


def _leaderboard(files: Path) -> Path:
    root = files / "leaderboards"
    init = _run("leaderboard", "init", "mine", "--manifest", str(files / "manifest.parquet"), "--root", str(root))
    assert init.exit_code == 0, init.output
    return root


@pytest.mark.parametrize("extra, fragments", [
    (["--index", "IVF2,Flat"], ["approximate search (--index IVF2,Flat)", "leaderboard entries are exact",
                                "Fix: evaluate again without --index"]),
    (["--distractors", "CATALOGUE"], ["distractor catalogue (30 extra gallery items)",
                                      "Fix: evaluate again without --distractors"]),
])
def test_leaderboard_add_says_plainly_why_a_special_run_cannot_be_an_entry(
        files: Path, monkeypatch: pytest.MonkeyPatch, extra: list[str], fragments: list[str]) -> None:
    monkeypatch.chdir(files)
    root = _leaderboard(files)
    extra = [str(_distractors(files / "d.parquet")) if item == "CATALOGUE" else item for item in extra]
    evaluated = _run("evaluate", "sub.parquet", "-m", "manifest.parquet", *extra, "--out", "r.json", "-q")
    assert evaluated.exit_code == 0, evaluated.output
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    readme = (root / "README.md").read_bytes()
    result = _run("leaderboard", "add", "r.json", "--suite", "mine", "--name", "x", "--label", "X", "--root", str(root))
    assert result.exit_code == 2, result.output
    assert "cannot be a leaderboard entry; nothing written" in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "edited or combined" not in result.stderr and "not a protocol field" not in result.stderr
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    assert (root / "README.md").read_bytes() == readme


def test_leaderboard_add_help_does_not_promise_the_shipped_copy() -> None:
    result = _run("leaderboard", "add", "--help")
    assert "read-only" in result.output and "else the copy shipped" not in result.output


def test_a_killed_single_file_write_leaves_no_temporary_file_or_directory(tmp_path: Path) -> None:
    """compare --out, the converters and write_submission write one file: a SIGKILL while it is
    being written must leave neither the temporary file nor the directories made for it."""
    import signal
    import subprocess
    import sys
    import time

    target = tmp_path / "new" / "deeper" / "out.json"
    code = ("import time\nfrom ropebench.io.files import atomic_write_text, atomic_write_with\n"
            "def slow(tmp):\n    open(tmp, 'w').write('partial')\n    print('writing', flush=True)\n"
            "    time.sleep(60)\n"
            f"atomic_write_with({str(target)!r}, slow)\n")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "writing"
    assert [p.name for p in (tmp_path / "new" / "deeper").iterdir()][0].endswith(".tmp")
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    deadline = time.monotonic() + 10
    while (tmp_path / "new").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == []


def test_small_things_a_new_user_meets(files: Path) -> None:
    from ropebench.errors import UsageError
    from ropebench.render.numbers import _markdown_cell

    result = ropebench.evaluate(files / "sub.parquet", manifest=files / "manifest.parquet", ks="1,5")
    with pytest.raises(UsageError, match="'R@3' was not computed in this run .*R@1, R@5"):
        result.matrix("R@3")
    assert result.matrix("R@5")["P"]["V"] == result.tasks["P2V"]["R@5"]
    # markdown: a p-value reads <0.0001, while a tag is still escaped
    assert _markdown_cell("<0.0001") == "<0.0001" and _markdown_cell("<b>") == "&lt;b&gt;"
    # LaTeX captions: no raw ±, †, α (pdflatex stops at them)
    latex = _run("table", "--suite", "rope-sim", "--format", "latex", "--significance", "--ci")
    assert latex.exit_code == 0, latex.output
    captions = [line for line in latex.stdout.splitlines() if line.startswith("\\caption")]
    assert captions and not any(char in line for line in captions for char in "±†α")


def test_distractor_curves_have_headroom_above_the_top_point() -> None:
    pytest.importorskip("matplotlib")
    from ropebench.render import plots

    figure = plots.distractors({"sizes": [0, 10, 100], "tasks": {"P2V": {"R@1": [100.0, 100.0, 99.0]}}})
    low, high = figure.axes[0].get_ylim()
    assert low == 0 and high >= 102


def test_mixing_exact_and_approximate_results_gets_a_note(files: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(files)
    for name, extra in (("exact", []), ("approx", ["--index", "IVF2,Flat"])):
        done = _run("evaluate", "sub.parquet", "-m", "manifest.parquet", *extra, "--out", f"{name}.json", "-q")
        assert done.exit_code == 0, done.output
    table = _run("table", "--table", "matrix", "--entry", "exact.json", "--entry", "approx.json")
    assert table.exit_code == 0, table.output
    assert "note: these results were not computed alike (exact.json: exact search; approx.json: approximate " \
           "search (IVF2,Flat))" in table.stderr
    same = _run("table", "--table", "matrix", "--entry", "exact.json")
    assert "note:" not in same.stderr
    compared = _run("compare", "exact.json", "approx.json", "--resamples", "20")
    assert compared.exit_code == 0, compared.output
    assert "note: A used exact search, B approximate search (IVF2,Flat)" in compared.stderr


@pytest.mark.parametrize("command", ["compare", "plot", "convert"])
@pytest.mark.parametrize("fault", ["write", "rename"])
def test_a_full_disk_leaves_the_old_output_and_no_temporary_file(files: Path, monkeypatch: pytest.MonkeyPatch,
                                                                command: str, fault: str) -> None:
    import errno
    import importlib.util
    import os

    if command == "plot" and importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib is not installed (extra ropebench[plot])")
    monkeypatch.chdir(files)
    assert _run("evaluate", "sub.parquet", "-m", "manifest.parquet", "--out", "r.json", "-q").exit_code == 0
    np.savez(files / "arrays.npz", embeddings=np.eye(3), item_ids=[1, 2, 3])
    args = {"compare": ["compare", "r.json", "r.json", "--resamples", "20", "--out", "out/c.json"],
            "plot": ["plot", "r.json", "--kind", "matrix", "--out", "out", "--format", "png,svg"],
            "convert": ["convert", "npz", "arrays.npz", "--out", "out/s.parquet"]}[command]
    (files / "out").mkdir()
    (files / "out" / "old.txt").write_text("an older output stays")
    before = sorted(str(p.relative_to(files)) for p in files.rglob("*"))

    def full(*_: object, **__: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fault == "rename":
        monkeypatch.setattr(os, "replace", full)
    else:
        import ropebench.io.files as files_module

        real = files_module._temp_beside

        def temp_then_full(path: Path, created: list[Path]) -> str:
            tmp = real(path, created)
            monkeypatch.setattr(files_module, "_temp_beside", full)  # the next file finds the disk full
            return tmp

        monkeypatch.setattr(files_module, "_temp_beside", temp_then_full)
        if command != "plot":  # one file only: fail inside its writer instead
            import builtins

            real_open = builtins.open

            def open_full(file: object, mode: str = "r", *a: object, **k: object) -> object:
                if "w" in mode and str(file).endswith(".tmp"):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real_open(file, mode, *a, **k)  # type: ignore[call-overload]

            monkeypatch.setattr(builtins, "open", open_full)
            import pyarrow.parquet as pq_module

            monkeypatch.setattr(pq_module, "write_table", full)
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "Fix:" in result.stderr, result.stderr
    assert sorted(str(p.relative_to(files)) for p in files.rglob("*")) == before


def test_leaderboard_site_removes_what_a_killed_build_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ropebench.cli.site import _building

    monkeypatch.chdir(tmp_path)
    for name in (".site.0123456789ab.tmp", ".site.abcdefabcdef.old", ".site.notastaging.tmp",
                 ".other.0123456789ab.tmp"):
        (tmp_path / name).mkdir()
    with _building(Path("site")):
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.0123456789ab.tmp", ".site.notastaging.tmp"]


def test_load_results_never_opens_a_pipe_or_device(tmp_path: Path) -> None:
    import os

    from ropebench.errors import DataError

    os.mkfifo(tmp_path / "pipe.json")
    os.symlink("/dev/zero", tmp_path / "zero.json")
    for name, kind in (("pipe.json", "named pipe"), ("zero.json", "character device")):
        with pytest.raises(DataError, match=f"results file .*{name}: not a regular file \\(a {kind}\\)"):
            ropebench.load_results(tmp_path / name)
