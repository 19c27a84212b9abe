"""``--index FACTORY``: approximate FAISS search, marked as such, with an agreement with exact
search that this file recomputes independently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

import ropebench
from ropebench.engines.approximate import agreement_sample
from ropebench.errors import UsageError
from tests.catalogue_data import Distractors, combined, write_catalogue
from tests.conftest import KS, Data, continuous_data, per_query_counts
from tests.reference import p_hit, rr


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Data, Distractors, Path]:
    data = continuous_data(21, sizes=(300, 250, 200), dim=16)
    rng = np.random.default_rng(21)
    distractors = Distractors((1.3 * rng.normal(size=(1500, 16))).astype(np.float32),
                              rng.choice(np.array(list("PVL")), 1500), 50_000 + np.arange(1500))
    path = write_catalogue(tmp_path_factory.mktemp("approx") / "d.parquet", distractors, 250)
    return data, distractors, path


def _approximate(setup: tuple[Data, Distractors, Path], factory: str, **options: Any) -> ropebench.EvaluationResult:
    data, _, path = setup
    return ropebench.evaluate(**data.arrays(), distractors=[path], index=factory, ci=False, **options)


def test_an_exhaustive_ivf_search_agrees_with_exact_search(setup):
    data, distractors, path = setup
    approx = _approximate(setup, "IVF8,Flat", nprobe=8, agreement_queries=100)
    exact = ropebench.evaluate(**data.arrays(), distractors=[path], ci=False)
    assert approx.protocol["search"] == "approximate"
    assert approx.protocol["index"] == {"factory": "IVF8,Flat", "nprobe": 8, "ef_search": None,
                                        "train_size": 100_000, "seed": 0, "agreement_queries": 100}
    for task in exact.tasks:
        for name in exact.measure_names:
            assert approx.tasks[task][name] == pytest.approx(exact.tasks[task][name], abs=1e-9), (task, name)
        assert approx.tasks[task]["n_gallery"] == exact.tasks[task]["n_gallery"]
        agreement = approx.extra["agreement"][task]
        assert agreement["unchanged"] == 1.0 and set(agreement["delta"].values()) == {0.0}
        assert agreement["queries"] == min(100, approx.tasks[task]["n_queries"])


def test_agreement_numbers_recomputed_independently(setup):
    """One probed list of eight: the agreement, recomputed here from the approximate per-query
    counts and an independent exact search of the combined gallery on the same seeded queries."""
    data, distractors, _ = setup
    approx = _approximate(setup, "IVF8,Flat", nprobe=1, agreement_queries=60, seed=3)
    exact = ropebench.evaluate(**combined(data, distractors), engine="faiss", ci=False)
    max_k = max(KS)
    changed_somewhere = False
    for task in approx.tasks:
        members = np.flatnonzero(data.domains == task[0])
        mine, theirs = per_query_counts(approx, task), per_query_counts(exact, task)
        scored = np.flatnonzero(np.isin(data.item_ids[members], list(theirs)))
        sample = data.item_ids[members[agreement_sample(task, scored, 60, 3)]]
        same = [mine[q][:3] == theirs[q][:3] or (mine[q][0] >= max_k and theirs[q][0] >= max_k) for q in sample]
        recorded = approx.extra["agreement"][task]
        assert recorded["queries"] == len(sample)
        assert recorded["unchanged"] == pytest.approx(np.mean(same), abs=1e-12)
        for k in KS:
            value = [100 * (p_hit(*mine[q][:3], k, "expected") - p_hit(*theirs[q][:3], k, "expected")) for q in sample]
            assert recorded["delta"][f"R@{k}"] == pytest.approx(abs(np.mean(value)), abs=1e-9), (task, k)
        value = [100 * (rr(*mine[q][:3], max_k, "expected") - rr(*theirs[q][:3], max_k, "expected")) for q in sample]
        assert recorded["delta"][f"MRR@{max_k}"] == pytest.approx(abs(np.mean(value)), abs=1e-9)
        changed_somewhere |= recorded["unchanged"] < 1.0
    assert changed_somewhere  # one list of eight does miss first hits


def test_hnsw_runs_and_the_result_says_approximate_everywhere(setup, tmp_path):
    result = _approximate(setup, "HNSW16", ef_search=32, agreement_queries=20, tasks="P2V,V2V")
    assert result.protocol["index"]["ef_search"] == 32 and set(result.extra["agreement"]) == {"P2V", "V2V"}
    assert {"index_build_s", "index_search_s", "agreement_s"} <= set(result.timing)
    result.write(tmp_path / "r.json", per_query=tmp_path / "q.parquet")
    metadata = json.loads(pq.read_schema(tmp_path / "q.parquet").metadata[b"ropebench"])
    assert metadata["protocol"]["search"] == "approximate"
    assert ropebench.load_results(tmp_path / "r.json").protocol["index"]["factory"] == "HNSW16"
    from ropebench.leaderboard.schema import check_protocol

    assert any("exact search" in problem for problem in check_protocol(result.protocol))


def test_without_distractors_and_without_agreement(setup):
    data, _, _ = setup
    result = ropebench.evaluate(**data.arrays(), index="Flat", agreement_queries=0, ci=False)  # the public API
    exact = ropebench.evaluate(**data.arrays(), ci=False)
    assert result.extra["agreement"] == {} and result.protocol["search"] == "approximate"
    assert [result.tasks[t]["R@1"] for t in exact.tasks] == pytest.approx([exact.tasks[t]["R@1"] for t in exact.tasks])


def test_index_options_that_do_not_apply_are_refused(setup):
    with pytest.raises(UsageError, match="--nprobe does not apply to index 'HNSW16'"):
        _approximate(setup, "HNSW16", nprobe=4)
    with pytest.raises(UsageError, match="FAISS cannot build it"):
        _approximate(setup, "NoSuchIndex12")
    with pytest.raises(UsageError, match="one catalogue size"):
        _approximate(setup, "Flat", distractor_sizes="0,all")
    with pytest.raises(UsageError, match="in this process"):
        _approximate(setup, "Flat", engine="dask")
    with pytest.raises(UsageError, match="at least 0"):
        _approximate(setup, "Flat", agreement_queries=-1)
