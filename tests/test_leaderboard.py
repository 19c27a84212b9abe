"""Leaderboard entries, `leaderboard add` and `leaderboard verify`.

A tiny computed suite is built in tmp_path for every test that changes files: a 20-product
manifest and submission written with pyarrow, evaluated by ropebench itself.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import ropebench
from ropebench import leaderboard as lb
from ropebench.cli.leaderboard import leaderboard
from ropebench.errors import DataError, UsageError
from ropebench.io import files
from ropebench.leaderboard.schema import check_entry, check_results

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "leaderboards"


def write_dataset(directory: Path, *, seed: int = 0, n_products: int = 20) -> None:
    """manifest.parquet + sub.parquet: two items per product and domain, noisy class centres."""
    rng = np.random.default_rng(seed)
    ids, domains, products = [], [], []
    for product in range(n_products):
        for domain in "PVL":
            for copy in range(2):
                ids.append(f"{domain}{product}-{copy}")
                domains.append(domain)
                products.append(product)
    centres = rng.normal(size=(n_products, 8))
    embeddings = (centres[products] + 0.9 * rng.normal(size=(len(ids), 8))).astype(np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item_id": ids, "domain": domains, "product_id": products}),
                   directory / "manifest.parquet")
    pq.write_table(pa.table({"item_id": ids, "embedding": pa.array(
        list(embeddings), type=pa.list_(pa.float32()))}), directory / "sub.parquet")


@pytest.fixture
def base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository-like directory: data/, leaderboards/tiny (computed, one entry), results.json."""
    write_dataset(tmp_path / "data")
    lb.init_suite(tmp_path / "leaderboards", "tiny", manifest=tmp_path / "data" / "manifest.parquet", title="Tiny",
                  description="t", label_column="model", captions={"1": "Cross", "2": "Intra"})
    monkeypatch.chdir(tmp_path)  # results record paths relative to where evaluate ran
    result = ropebench.evaluate("data/sub.parquet", manifest="data/manifest.parquet", ci=False)
    result.write_json(tmp_path / "results.json")
    lb.add_entry(tmp_path / "results.json", root=tmp_path / "leaderboards", suite="tiny",
                 name="model-a", label="A")
    return tmp_path


def invoke(*args: str) -> Result:
    return CliRunner().invoke(leaderboard, list(args), catch_exceptions=False)


def entry_path(base: Path) -> Path:
    return base / "leaderboards" / "tiny" / "model-a.json"


def edit_entry(base: Path, change: Any) -> None:
    data = json.loads(entry_path(base).read_text())
    change(data)
    entry_path(base).write_text(json.dumps(data, indent=2))


# ----------------------------------------------------------------------------- schema


def test_committed_entries_are_valid() -> None:
    for name in lb.suite_names(ROOT):
        suite = lb.load_suite(ROOT, name)
        assert len(suite.entries) == len(suite.spec["entries"])
    rope_test = lb.load_suite(ROOT, "rope-test")
    kinds = {e["name"]: (e["kind"], e["label"], len(e["results"])) for e in rope_test.entries}
    assert kinds == {"paper-cls": ("published", "w/o L_cd", 9),
                     "paper-cls-cd": ("published", "w L_cd", 6)}


def test_entry_schema_reports_every_problem_at_once() -> None:
    entry = json.loads((ROOT / "rope-test" / "paper-cls.json").read_text())
    assert check_entry(entry) == []
    broken = {**entry, "kind": "computed", "label": "", "colour": "red",
              "results": {"P2V": {"R@1": 101.0}, "X2Y": {}}}
    problems = "\n".join(check_entry(broken))
    for expected in ("'label' must be a non-empty string", "'colour' is not an entry field",
                     "'protocol' must be an object", "'submission' must be an object",
                     "'manifest' is missing", "results.P2V.R@1 = 101.0",
                     "unknown task 'X2Y'"):
        assert expected in problems


def test_published_entries_need_no_counts_but_computed_ones_do() -> None:
    published = {"schema": "ropebench.entry/1", "name": "p", "label": "P", "suite": "s",
                 "description": "d", "source": "paper", "kind": "published",
                 "results": {"P2V": {"R@1": 50.0}}}
    assert check_entry(published) == []
    assert "'submission' is only for computed entries" in "\n".join(
        check_entry({**published, "submission": {"path": "x", "sha256": "0" * 64}}))
    computed = {**published, "kind": "computed", "manifest": None,
                "submission": {"path": "x.parquet", "sha256": "0" * 64},
                "protocol": {"metric": "cosine", "ties": "expected", "ks": [1],
                             "search": "exact", "group_exclusion": False}}
    problems = check_entry(computed)
    assert {"results.P2V.n_queries is missing", "results.P2V.MRR@1 is missing"} <= set(problems)
    computed["results"] = {"P2V": {"n_queries": 2, "n_skipped": 0, "n_gallery": 4, "n_tied": 0,
                                   "R@1": 50.0, "MRR@1": 50.0}}
    assert check_entry(computed) == []


def test_results_file_checks() -> None:
    assert "'schema' is None" in "\n".join(check_results({}))
    assert check_results([]) == ["a results file must be a JSON object"]


# -------------------------------------------------------------------------- root discovery


def test_find_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert lb.find_root(ROOT) == ROOT
    with pytest.raises(UsageError, match="no such directory"):
        lb.find_root(tmp_path / "missing")
    (tmp_path / "leaderboards" / "x").mkdir(parents=True)
    (tmp_path / "leaderboards" / "x" / "suite.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert lb.find_root() == Path("leaderboards")
    monkeypatch.chdir(tmp_path / "leaderboards")  # no ./leaderboards here: the source copy
    assert lb.find_root().resolve() == ROOT


# --------------------------------------------------------------------------------- add


def test_add_records_relative_paths_sha256_and_rerenders(base: Path) -> None:
    entry = json.loads(entry_path(base).read_text())
    assert entry["kind"] == "computed" and entry["label"] == "A"
    assert entry["submission"]["path"] == "data/sub.parquet"
    assert entry["submission"]["sha256"] == files.sha256_file(base / "data" / "sub.parquet")
    assert entry["manifest"] == {"path": "data/manifest.parquet",
                                 "sha256": files.sha256_file(base / "data" / "manifest.parquet")}
    assert check_entry(entry) == []
    suite = json.loads((base / "leaderboards" / "tiny" / "suite.json").read_text())
    assert suite["entries"] == ["model-a"]
    readme = (base / "leaderboards" / "README.md").read_text()
    assert lb.rendered_block(lb.load_suite(base / "leaderboards", "tiny")) in readme
    assert "| P2V   | " in readme


def test_second_add_without_force_is_refused(base: Path) -> None:
    before = entry_path(base).read_text()
    with pytest.raises(UsageError, match="exists: pass --force"):
        invoke("add", str(base / "results.json"), "--suite", "tiny", "--name", "model-a",
               "--label", "B", "--root", str(base / "leaderboards"))
    assert entry_path(base).read_text() == before
    result = invoke("add", "results.json", "--suite", "tiny", "--name", "model-a",
                    "--label", "B", "--force", "--root", "leaderboards")
    assert result.exit_code == 0 and "added tiny/model-a" in result.stderr
    assert json.loads(entry_path(base).read_text())["label"] == "B"
    assert json.loads((base / "leaderboards/tiny/suite.json").read_text())["entries"] == [
        "model-a"]


def test_add_is_atomic(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = entry_path(base).read_bytes()

    def fail_to_rename(*args: Any) -> None:
        raise OSError("disk full")

    # the temporary files are fully written, then the rename fails: the old entry must survive
    monkeypatch.setattr(os, "replace", fail_to_rename)
    with pytest.raises(DataError, match="disk full.*nothing was changed"):
        lb.add_entry(base / "results.json", root=base / "leaderboards", suite="tiny",
                     name="model-a", label="changed", force=True)
    monkeypatch.undo()
    assert entry_path(base).read_bytes() == before
    assert sorted(p.name for p in (base / "leaderboards" / "tiny").iterdir()) == [
        "model-a.json", "suite.json"]  # no temporary file left behind


def rewrite_results(base: Path, change: Any) -> Path:
    data = json.loads((base / "results.json").read_text())
    change(data)
    path = base / "changed.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r["protocol"].update(ties="pessimistic"),
     "protocol.ties: the results have 'pessimistic', suite 'tiny' requires 'expected'"),
    (lambda r: r["protocol"].update(metric="l2"), "protocol.metric"),
    (lambda r: r["protocol"].update(search="ivf"), "protocol.search"),
    (lambda r: r["protocol"].pop("search"), "protocol.search: the results have None"),
    (lambda r: r["manifest"].update(sha256="f" * 64), "manifest"),
    (lambda r: r["submission"].update(sha256="0" * 64), "re-run evaluate"),
])
def test_add_refuses_another_protocol_naming_the_field(base: Path, change: Any,
                                                       message: str) -> None:
    results = rewrite_results(base, change)
    with pytest.raises(DataError, match="cannot be added|not a usable") as error:
        lb.add_entry(results, root=base / "leaderboards", suite="tiny", name="b", label="B")
    assert message in str(error.value)
    assert not (base / "leaderboards" / "tiny" / "b.json").exists()


def test_add_refuses_other_ks(base: Path) -> None:
    result = ropebench.evaluate("data/sub.parquet", manifest="data/manifest.parquet", ks=(1, 10), ci=False)
    result.write_json(base / "ks.json")
    with pytest.raises(DataError, match="protocol.ks: the results have \\[1, 10\\], suite 'tiny' "
                       "requires \\[1, 5, 10, 20, 50\\]"):
        lb.add_entry(base / "ks.json", root=base / "leaderboards", suite="tiny", name="b",
                     label="B")


def test_add_refuses_a_manifest_other_than_the_suites(base: Path) -> None:
    write_dataset(base / "other", seed=1, n_products=10)
    result = ropebench.evaluate("other/sub.parquet", manifest="other/manifest.parquet", ci=False)
    result.write_json(base / "other.json")
    with pytest.raises(DataError, match="suite 'tiny' is about data/manifest.parquet") as error:
        lb.add_entry(base / "other.json", root=base / "leaderboards", suite="tiny", name="b",
                     label="B")
    assert ("the result has 20/20/20 items (P/V/L) and 10 products; suite 'tiny' is about 40/40/40 items "
            "and 20 products") in str(error.value)


def test_add_refuses_files_outside_the_repository(base: Path, tmp_path_factory: Any) -> None:
    outside = tmp_path_factory.mktemp("outside")
    shutil.copy(base / "data" / "sub.parquet", outside / "sub.parquet")
    with pytest.raises(DataError, match="outside"):
        lb.add_entry(base / "results.json", root=base / "leaderboards", suite="tiny", name="b",
                     label="B", submission=str(outside / "sub.parquet"))


# ------------------------------------------------------------------------------ verify


def test_verify_passes_on_a_fresh_suite(base: Path) -> None:
    result = invoke("verify", "--root", str(base / "leaderboards"))
    assert result.exit_code == 0, result.output
    n_cells = 9 * 6  # nine tasks, R@1..R@50 and MRR@50
    assert result.stdout.count("\n") == 1
    assert "1 suite(s), 1 entries (1 computed" in result.stdout
    assert f"{n_cells} metric cells re-checked within one query's worth" in result.stdout
    assert "36 counts exactly" in result.stdout


def test_verify_names_a_tampered_number(base: Path) -> None:
    stored = json.loads(entry_path(base).read_text())["results"]["V2L"]
    edit_entry(base, lambda e: e["results"]["V2L"].update({"R@5": stored["R@5"] - 7.5}))
    edit_entry(base, lambda e: e["results"]["P2P"].update({"n_tied": 3}))
    result = invoke("verify", "--root", str(base / "leaderboards"))
    assert result.exit_code == 1
    tolerance = 100 / stored["n_queries"]
    assert (f"tiny/model-a: V2L R@5: stored {stored['R@5'] - 7.5:.6f}, recomputed "
            f"{stored['R@5']:.6f} (tolerance {tolerance:.6f} = 100/{stored['n_queries']} "
            "queries)") in result.stdout
    assert "tiny/model-a: P2P n_tied: stored 3, recomputed 0" in result.stdout
    # the README was rendered from the true numbers: it no longer matches either
    assert "differs from a fresh rendering" in result.stdout
    assert "verify failed: 3 problem(s)" in result.stderr


def test_verify_tolerates_less_than_one_query(base: Path) -> None:
    stored = json.loads(entry_path(base).read_text())["results"]["P2V"]
    nudge = 0.9 * 100 / stored["n_queries"]
    edit_entry(base, lambda e: e["results"]["P2V"].update({"R@1": stored["R@1"] - nudge}))
    lb.render_readme(base / "leaderboards")
    assert lb.verify(base / "leaderboards").ok
    edit_entry(base, lambda e: e["results"]["P2V"].update({"R@1": stored["R@1"] - 2 * nudge}))
    lb.render_readme(base / "leaderboards")
    assert ["P2V R@1" in p for p in lb.verify(base / "leaderboards").problems] == [True]


def test_verify_names_a_changed_embedding_file(base: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dataset(base / "data", seed=7)  # same ids, other embeddings
    (base / "data" / "manifest.parquet").write_bytes(b"")  # and a broken manifest
    monkeypatch.setattr(ropebench, "evaluate", never_called)
    result = invoke("verify", "--root", str(base / "leaderboards"))
    assert result.exit_code == 1
    assert "tiny/model-a: submission data/sub.parquet sha256 mismatch: entry records" in (
        result.stdout)
    assert "tiny/model-a: manifest data/manifest.parquet sha256 mismatch" in result.stdout


def test_verify_names_a_missing_file(base: Path) -> None:
    (base / "data" / "sub.parquet").unlink()
    result = invoke("verify", "--root", str(base / "leaderboards"))
    assert result.exit_code == 1
    assert (f"tiny/model-a: submission data/sub.parquet is not at {base / 'data' / 'sub.parquet'} (verify "
            "re-evaluates computed entries from their files") in result.stdout


def never_called(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a published entry must never be re-evaluated")


def test_published_entries_are_never_reevaluated(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(ROOT, tmp_path / "leaderboards")
    monkeypatch.setattr(ropebench, "evaluate", never_called)
    result = invoke("verify", "--suite", "rope-test", "--root", str(tmp_path / "leaderboards"))
    assert result.exit_code == 0, result.output
    assert "2 entries (0 computed re-evaluated, 2 published schema-checked)" in result.stdout
    # a published entry is still schema-checked
    path = tmp_path / "leaderboards" / "rope-test" / "paper-cls.json"
    path.write_text(path.read_text().replace('"published"', '"pubished"'))
    result = invoke("verify", "--suite", "rope-test", "--root", str(tmp_path / "leaderboards"))
    assert result.exit_code == 1 and "'kind' is 'pubished'" in result.stdout


def test_verify_catches_an_edited_rendered_leaderboard(tmp_path: Path) -> None:
    shutil.copytree(ROOT, tmp_path / "leaderboards")
    readme = tmp_path / "leaderboards" / "README.md"
    readme.write_text(readme.read_text().replace("| 65.20 |", "| 65.21 |"))
    result = invoke("verify", "--suite", "rope-test", "--root", str(tmp_path / "leaderboards"))
    assert result.exit_code == 1
    assert "rendered leaderboard of suite 'rope-test' differs" in result.stdout
    invoke("render", "--root", str(tmp_path / "leaderboards"))
    result = invoke("verify", "--suite", "rope-test", "--root", str(tmp_path / "leaderboards"))
    assert result.exit_code == 0, result.output


def test_verify_catches_unlisted_and_missing_entries(base: Path) -> None:
    shutil.copy(entry_path(base), base / "leaderboards" / "tiny" / "stray.json")
    spec = base / "leaderboards" / "tiny" / "suite.json"
    spec.write_text(json.dumps({**json.loads(spec.read_text()), "entries": ["model-a", "ghost"]}))
    problems = "\n".join(lb.verify(base / "leaderboards").problems)
    assert "stray.json: not listed in" in problems
    assert "ghost.json: no such file" in problems


def test_committed_leaderboards_verify() -> None:
    report = lb.verify(ROOT)
    assert report.ok, "\n".join(report.problems)
    assert report.suites == len(lb.suite_names(ROOT)) >= 2


def test_list_command() -> None:
    result = invoke("list", "--root", str(ROOT))
    assert "rope-test\tpaper-cls\tpublished\tw/o L_cd\tP2V,V2P,P2L,L2P,V2L,L2V,P2P,V2V,L2L" in (
        result.stdout)


@pytest.mark.parametrize("args", [["table"], ["leaderboard"], ["leaderboard", "add"],
                                  ["leaderboard", "verify"], ["leaderboard", "render"],
                                  ["leaderboard", "list"]])
def test_every_command_has_an_example(args: list[str]) -> None:
    from ropebench.cli.table import table

    command = table if args[0] == "table" else leaderboard
    result = CliRunner().invoke(command, [*args[1:], "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    example = result.stdout.split("Example:\n", 1)[1]
    assert example.lstrip().startswith("ropebench ")


def test_exit_codes_through_the_main_command(base: Path) -> None:
    from ropebench.cli import cli

    runner = CliRunner()
    root = str(base / "leaderboards")
    result = runner.invoke(cli, ["leaderboard", "add", "results.json", "--suite", "tiny",
                                 "--name", "model-a", "--label", "A", "--root", root])
    assert result.exit_code == 2 and "pass --force" in result.stderr
    assert "Traceback" not in result.output
    result = runner.invoke(cli, ["table", "--suite", "nope", "--root", root])
    assert result.exit_code == 2 and "unknown suite 'nope'" in result.stderr
    assert runner.invoke(cli, ["leaderboard", "verify", "--root", root]).exit_code == 0
    edit_entry(base, lambda e: e["results"]["P2V"].update({"R@1": 0.0}))
    result = runner.invoke(cli, ["leaderboard", "verify", "--root", root])
    assert result.exit_code == 1 and "tiny/model-a: P2V R@1: stored 0.000000" in result.stdout


def test_add_refuses_a_label_already_used_before_writing_anything(base: Path) -> None:
    suite_file = base / "leaderboards" / "tiny" / "suite.json"
    before = suite_file.read_text()
    with pytest.raises(DataError, match="label 'A' is already used by entry 'model-a'"):
        lb.add_entry(base / "results.json", root=base / "leaderboards", suite="tiny", name="b", label="A")
    assert not (base / "leaderboards" / "tiny" / "b.json").exists()
    assert suite_file.read_text() == before
    assert lb.load_suite(base / "leaderboards", "tiny").entries  # the suite still loads


def test_fewshot_and_relevant_measures_are_kept_and_reverified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """An entry from `evaluate --measures ... --fewshot` keeps MAP@R/RP and the few-shot section
    (without intervals), `verify` recomputes both, and an edited few-shot number is caught."""
    write_dataset(tmp_path / "data")
    lb.init_suite(tmp_path / "leaderboards", "tiny", manifest=tmp_path / "data" / "manifest.parquet", title="Tiny",
                  description="t", label_column="model", captions={"1": "Cross", "2": "Intra"})
    monkeypatch.chdir(tmp_path)
    result = ropebench.evaluate("data/sub.parquet", manifest="data/manifest.parquet", ci=False,
                                measures="R@K,MRR,MAP@R,RP", fewshot=True, shots=(1, 2), draws=2)
    result.write_json(tmp_path / "results.json")
    lb.add_entry(tmp_path / "results.json", root=tmp_path / "leaderboards", suite="tiny", name="model-a",
                 label="A")
    entry = json.loads((tmp_path / "leaderboards" / "tiny" / "model-a.json").read_text())
    assert entry["fewshot"]["protocol"] == {"shots": [1, 2], "draws": 2, "seed": 0}
    assert "ci" not in entry["fewshot"]["tasks"]["P2V"]["1-shot"] and "MAP@R" in entry["results"]["P2V"]
    assert check_entry(entry) == []
    done = invoke("verify", "--suite", "tiny", "--root", str(tmp_path / "leaderboards"))
    assert done.exit_code == 0, done.output
    path = tmp_path / "leaderboards" / "tiny" / "model-a.json"
    entry["fewshot"]["tasks"]["P2V"]["1-shot"]["acc"] = 100.0 - entry["fewshot"]["tasks"]["P2V"]["1-shot"]["acc"]
    path.write_text(json.dumps(entry))
    done = invoke("verify", "--suite", "tiny", "--root", str(tmp_path / "leaderboards"))
    assert done.exit_code == 1 and "few-shot P2V 1-shot acc: stored" in done.stdout
    entry["fewshot"]["tasks"]["P2V"]["1-shot"]["acc"] = "high"
    assert any("fewshot.tasks.P2V.1-shot.acc must be a number" in problem for problem in check_entry(entry))
