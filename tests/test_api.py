"""The training-loop API: torch inputs as they come out of a model, the flat summary for
loggers, a short repr, results read back equal, task groups on the command line, and a cheap
``import ropebench``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ropebench
from ropebench.protocol import ALL_TASKS, CROSS_TASKS, DOMAINS, INTRA_TASKS
from tests.conftest import KS, SHORT_KS, continuous_data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small():
    return continuous_data(31, sizes=(120, 100, 80), n_products=30, dim=8, groups=True)


@pytest.fixture(scope="module")
def result(small):
    return small.evaluate("one-pass", metric="cosine", ks=KS, ci=False)


# -- torch inputs -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_torch_tensors_give_the_numbers_of_the_same_values_in_numpy(small, dtype):
    torch = pytest.importorskip("torch")
    tensor = torch.tensor(small.embeddings, dtype=getattr(torch, dtype), requires_grad=True)
    before = tensor.detach().clone()
    # The same values as numpy (numpy has no bfloat16: its values widened to float32).
    values = tensor.detach().float().numpy() if dtype == "bfloat16" else tensor.detach().numpy()
    assert values.dtype == (np.float32 if dtype == "bfloat16" else np.dtype(dtype))
    group_codes = np.array([-1 if g is None else g for g in small.groups])
    options = {"metric": "cosine", "ks": SHORT_KS, "ci": False, "threads": 2}
    from_torch = ropebench.evaluate(embeddings=tensor, domains=list(small.domains),
                                    product_ids=torch.tensor(small.products), item_ids=torch.tensor(small.item_ids),
                                    group_ids=torch.tensor(group_codes), **options)
    from_numpy = ropebench.evaluate(embeddings=values, domains=small.domains, product_ids=small.products,
                                    item_ids=small.item_ids, group_ids=group_codes, **options)
    assert from_torch.to_json()["tasks"] == from_numpy.to_json()["tasks"]
    assert from_torch.per_query.equals(from_numpy.per_query)
    assert tensor.requires_grad and torch.equal(tensor.detach(), before)  # never modified
    if dtype != "float16":  # float16 is coarse: these 8-d vectors may tie
        assert sum(cells.n_tied for cells in from_torch.tasks.values()) == 0


# -- summary and repr -------------------------------------------------------------------------


def test_summary_is_a_flat_dict_of_floats_with_group_means(result):
    summary = result.summary()
    assert all(isinstance(key, str) and type(value) is float for key, value in summary.items())
    for task in ALL_TASKS:
        for name in result.measure_names:
            assert summary[f"{task}/{name}"] == result.tasks[task][name]
    for group, tasks in (("cross", CROSS_TASKS), ("intra", INTRA_TASKS)):
        for name in result.measure_names:
            mean = sum(result.tasks[task][name] for task in tasks) / len(tasks)  # unweighted
            assert summary[f"{group}/{name}"] == pytest.approx(mean, rel=1e-12, abs=0)
    assert len(summary) == (len(ALL_TASKS) + 2) * len(result.measure_names)
    # Queries per task differ, so the unweighted mean is not the pooled one.
    pooled = sum(result.tasks[t]["R@1"] * result.tasks[t].n_queries for t in CROSS_TASKS) / sum(
        result.tasks[t].n_queries for t in CROSS_TASKS)
    assert summary["cross/R@1"] != pytest.approx(pooled, abs=1e-9)


def test_summary_of_some_tasks_has_only_their_groups(small):
    partial = small.evaluate("one-pass", tasks="cross", ks=SHORT_KS, ci=False).summary()
    assert "cross/R@1" in partial and "intra/R@1" not in partial
    assert not any(key.startswith(("P2P/", "V2V/", "L2L/")) for key in partial)


def test_repr_is_short_and_shows_the_r1_matrix(result):
    text = repr(result)
    assert len(text) < 400, text
    assert "R@1" in text
    for query in DOMAINS:
        row = next(line for line in text.splitlines() if line.strip().startswith(query + " "))
        for gallery in DOMAINS:
            assert f"{result.tasks[f'{query}2{gallery}']['R@1']:.2f}" in row, (query, gallery, row)


# -- results read back --------------------------------------------------------------------------


def test_results_written_and_loaded_are_equal(result, tmp_path):
    written = result.write(tmp_path / "results.json")
    loaded = ropebench.load_results(tmp_path / "results.json")
    assert loaded == written == result
    assert loaded.to_json() == result.to_json()
    assert loaded.summary() == result.summary() and repr(loaded) == repr(result)


def test_results_with_their_per_query_file_load_equal(small, tmp_path):
    result = small.evaluate("one-pass", ks=SHORT_KS)  # with bootstrap intervals
    written = result.write(tmp_path / "results.json", per_query=tmp_path / "per_query.parquet")
    loaded = ropebench.load_results(tmp_path / "results.json")
    assert loaded == written
    assert loaded.tasks == result.tasks and all(cells.ci for cells in loaded.tasks.values() if cells.n_queries)
    assert loaded.per_query.equals(result.per_query)


def test_a_results_file_from_before_the_engine_interface_loads(tmp_path):
    """A ropebench.results/1 file as version 0.1.0 wrote it (no engine recorded, FAISS's
    version listed), built from a committed leaderboard entry's results."""
    entry = json.loads((ROOT / "leaderboards" / "rope-sim" / "cls.json").read_text(encoding="utf-8"))
    old = {
        "schema": "ropebench.results/1",
        "ropebench_version": entry["ropebench_version"],
        "created": entry["created"],
        "protocol": entry["protocol"],
        "submission": entry["submission"],
        "manifest": entry["manifest"],
        "environment": {"python": "3.11.7", "numpy": "2.1.3", "faiss": "1.9.0", "pyarrow": "18.0.0",
                        "platform": "Linux", "cpu": "x86_64", "cpu_count": 2, "threads": 2},
        "timing": {"load_s": 0.1, "search_s": 0.2, "total_s": 0.3},
        "tasks": entry["results"],
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old, indent=2), encoding="utf-8")
    loaded = ropebench.load_results(path)
    assert loaded.to_json() == old
    assert loaded.tasks["P2V"]["R@1"] == entry["results"]["P2V"]["R@1"]
    assert loaded.summary()["cross/R@1"] == pytest.approx(
        sum(entry["results"][t]["R@1"] for t in CROSS_TASKS) / 6, rel=1e-12)
    assert loaded.per_query is None
    assert len(repr(loaded)) < 400


def test_not_a_results_file_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "entry.json"
    path.write_text((ROOT / "leaderboards" / "rope-sim" / "cls.json").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ropebench.DataError, match="schema"):
        ropebench.load_results(path)


# -- the command line's task selection ----------------------------------------------------------


@pytest.fixture(scope="module")
def submission(small, tmp_path_factory):
    path = tmp_path_factory.mktemp("submission") / "submission.parquet"
    ropebench.write_submission(path, small.item_ids, small.embeddings, small.domains, small.products)
    return path


@pytest.mark.parametrize(("options", "expected"), [
    (["--tasks", "cross"], CROSS_TASKS),
    (["--tasks", "intra"], INTRA_TASKS),
    (["--tasks", "all"], ALL_TASKS),
    (["--tasks", "P2V", "--tasks", "V2P"], ("P2V", "V2P")),  # a repeated --tasks accumulates
    (["--tasks", "L2L", "--tasks", "cross"], CROSS_TASKS + ("L2L",)),
])
def test_cli_task_groups_and_repeated_tasks_accumulate(submission, options, expected):
    from ropebench.cli import cli

    outcome = CliRunner().invoke(cli, ["evaluate", str(submission), *options, "--ks", "1,5", "--format", "json",
                                       "--quiet", "--threads", "1"])
    assert outcome.exit_code == 0, outcome.output
    tasks = json.loads(outcome.stdout)["tasks"]
    assert list(tasks) == [task for task in ALL_TASKS if task in expected]


def test_cli_results_equal_the_api_on_the_same_file(submission, tmp_path):
    from ropebench.cli import cli

    out = tmp_path / "results.json"
    outcome = CliRunner().invoke(cli, ["evaluate", str(submission), "--out", str(out), "--quiet", "--engine", "faiss"])
    assert outcome.exit_code == 0, outcome.output
    loaded = ropebench.load_results(out)
    assert loaded.environment["engine"]["name"] == "faiss"
    assert loaded.tasks == ropebench.evaluate(submission).tasks


# -- the package's surface --------------------------------------------------------------------


def test_import_ropebench_loads_no_heavy_library():
    code = ("import sys, ropebench; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'faiss', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_every_public_name_exists():
    assert len(set(ropebench.__all__)) == len(ropebench.__all__)
    for name in ropebench.__all__:
        assert getattr(ropebench, name) is not None, name
    for name in ("evaluate", "validate", "load_results", "write_submission"):
        assert callable(getattr(ropebench, name)), name
    assert issubclass(ropebench.DataError, ropebench.RopebenchError)
    assert isinstance(ropebench.evaluate(embeddings=np.eye(4, dtype=np.float32), domains=list("PPVV"),
                                         product_ids=[0, 1, 0, 1], tasks="P2V", ci=False),
                      ropebench.EvaluationResult)
