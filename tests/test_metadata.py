"""Entry metadata (``leaderboard add --metadata``) and compressed results as leaderboard entries,
through the command line: add, list, table --metadata, verify and the site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import ropebench
from ropebench.cli import cli
from ropebench.leaderboard.metadata import metadata_problems
from ropebench.leaderboard.schema import check_entry
from tests.test_leaderboard import base  # noqa: F401 (the fixture: a tiny computed suite in tmp_path)

META = {"model": {"name": "Tiny encoder", "parameters": 86_000_000},
        "training_data": {"rope_train": False, "zero_shot": True, "other": "web images"}}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_metadata_problems_are_all_reported() -> None:
    problems = metadata_problems({"model": {"name": "", "parameters": -1, "size": 3, "embedding_dtype": "fp4"},
                                  "training_data": {"rope_train": True, "zero_shot": True, "other": 5}})
    text = "\n".join(problems)
    for expected in ("model.name", "model.parameters is -1", "model.size is not a known field",
                     "model.embedding_dtype is 'fp4'", "training_data.other is 5", "is not zero-shot"):
        assert expected in text
    assert metadata_problems(META) == []


def test_add_with_metadata_then_list_table_and_verify(base: Path) -> None:  # noqa: F811
    (base / "meta.json").write_text(json.dumps(META))
    root = str(base / "leaderboards")
    result = run("leaderboard", "add", "results.json", "--suite", "tiny", "--name", "model-a", "--label", "A",
                 "--metadata", "meta.json", "--force", "--root", root)
    assert result.exit_code == 0, result.output
    entry = json.loads((base / "leaderboards" / "tiny" / "model-a.json").read_text())
    # bytes_per_item, embedding_dim and dtype filled from the submission (d = 8, float32)
    assert entry["model"] == {"name": "Tiny encoder", "parameters": 86_000_000, "embedding_dim": 8,
                              "embedding_dtype": "float32", "bytes_per_item": 32}
    assert entry["training_data"] == META["training_data"]
    assert check_entry(entry) == []
    listed = run("leaderboard", "list", "--root", root).stdout
    assert "tiny\tmodel-a\tcomputed\tA\t" in listed
    assert listed.rstrip("\n").split("\t")[-2:] == ["Tiny encoder (86M); d=8 float32; 32 B/item",
                                                     "zero-shot + web images"]
    table = run("table", "--suite", "tiny", "--table", "1", "--metadata", "--format", "csv", "--root", root).stdout
    assert table.splitlines()[0].startswith("table,task,entry,model,about,R@1")
    assert "Tiny encoder (86M); d=8 float32; 32 B/item; zero-shot + web images" in table
    assert run("leaderboard", "verify", "--root", root).exit_code == 0


def test_bad_metadata_is_refused_before_anything_is_written(base: Path) -> None:  # noqa: F811
    (base / "meta.json").write_text(json.dumps({"model": {"parameters": "86M"}, "extra": 1}))
    before = (base / "leaderboards" / "tiny" / "model-a.json").read_text()
    result = CliRunner().invoke(cli, ["leaderboard", "add", "results.json", "--suite", "tiny", "--name", "model-a",
                                      "--label", "A", "--metadata", "meta.json", "--force",
                                      "--root", str(base / "leaderboards")])
    assert result.exit_code == 2
    assert "model.parameters is '86M'" in result.output and "'extra' is not a metadata field" in result.output
    assert (base / "leaderboards" / "tiny" / "model-a.json").read_text() == before


def test_a_compressed_result_is_an_entry_marked_as_such_and_verifies(base: Path) -> None:  # noqa: F811
    result = ropebench.evaluate("data/sub.parquet", manifest="data/manifest.parquet", compress="binary")
    result.write(base / "binary.json", per_query=base / "binary.parquet")
    root = str(base / "leaderboards")
    added = run("leaderboard", "add", "binary.json", "--suite", "tiny", "--name", "model-a-binary",
                "--label", "A (binary)", "--root", root)
    assert added.exit_code == 0, added.output
    entry = json.loads((base / "leaderboards" / "tiny" / "model-a-binary.json").read_text())
    assert entry["protocol"]["compression"] == "binary" and entry["protocol"]["bytes_per_item"] == 1
    assert entry["model"] == {"embedding_dim": 8, "embedding_dtype": "binary", "bytes_per_item": 1}
    assert "compressed binary" in run("leaderboard", "list", "--root", root).stdout
    verified = run("leaderboard", "verify", "--root", root)
    assert verified.exit_code == 0, verified.output
    # verify re-applies the compression: a tampered compression is a drift
    path = base / "leaderboards" / "tiny" / "model-a-binary.json"
    entry["protocol"]["compression"] = "int8"
    path.write_text(json.dumps(entry, indent=2))
    assert CliRunner().invoke(cli, ["leaderboard", "verify", "--root", root]).exit_code == 1


@pytest.mark.parametrize("value", ["fp8", "dims=0", 3])
def test_entry_schema_checks_the_compression(value) -> None:
    from ropebench.leaderboard.schema import check_protocol

    protocol = {"metric": "cosine", "ties": "expected", "ks": [1], "search": "exact", "group_exclusion": False,
                "compression": value, "bytes_per_item": 16}
    assert any("compression" in p for p in check_protocol(protocol))
    assert check_protocol({**protocol, "compression": "dims=4"}) == []
    assert any("bytes_per_item" in p for p in check_protocol({**protocol, "compression": "int8",
                                                              "bytes_per_item": 0}))
