"""``--engine dask``: the shards on a real local Dask cluster give the in-process numbers bit for
bit; the result records the cluster; mixed library versions and a missing extra are refused."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ropebench
from ropebench.errors import MissingExtraError, UsageError
from tests.catalogue_data import integer_distractors, random_row_groups, write_catalogue
from tests.conftest import Data, tied_data

distributed = pytest.importorskip("distributed")

from ropebench.engines.dask import DaskRunner, library_versions  # noqa: E402


@pytest.fixture(scope="module")
def threads_cluster() -> Iterator[DaskRunner]:
    """A local cluster of two thread workers (in this process, Dask's in-process transport)."""
    runner = DaskRunner(workers=2, processes=False)
    assert runner.workers == 2
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> tuple[Data, Path]:
    data = tied_data(12, "ip", groups=True)
    rng = np.random.default_rng(12)
    path = tmp_path_factory.mktemp("dask") / "d.parquet"
    write_catalogue(path, integer_distractors(data, 12, 800, copies=100), random_row_groups(rng, 800, 60))
    return data, path


def _evaluate(data: Data, path: Path, **options: Any) -> Any:
    return ropebench.evaluate(**data.arrays(), metric="ip", distractors=[path], distractor_sizes="0,250,all",
                          shard_rows=40, ci=False, **options)


def test_dask_gives_the_in_process_numbers_bit_for_bit(threads_cluster, catalogue):
    data, path = catalogue
    here = _evaluate(data, path, threads=2)
    there = _evaluate(data, path, runner=threads_cluster)
    assert there.to_json()["tasks"] == here.to_json()["tasks"]
    assert there.extra["distractor_curve"] == here.extra["distractor_curve"]
    assert there.per_query.equals(here.per_query)
    engine = there.environment["engine"]
    assert engine["name"] == "dask" and engine["runner"] == "dask" and engine["workers"] == 2
    assert engine["test_engine"] == "one-pass"
    assert engine["worker_versions"]["numpy"] == np.__version__
    assert engine["counters"]["distractor_shards"] == here.environment["engine"]["counters"]["distractor_shards"] > 10


def test_a_process_cluster_on_the_loopback_interface(catalogue):
    data, path = catalogue
    here = _evaluate(data, path, threads=1)
    there = _evaluate(data, path, engine="dask", workers=2)  # starts and stops its own local cluster
    assert there.to_json()["tasks"] == here.to_json()["tasks"]
    assert there.environment["engine"]["scheduler"].startswith("local (processes) tcp://127.0.0.1:")
    assert there.environment["engine"]["workers"] == 2


def test_workers_with_other_numpy_or_faiss_are_refused(monkeypatch):
    versions = library_versions()
    runner = DaskRunner(workers=1, processes=False)
    odd = {"inproc://worker-1": {**versions, "numpy": "1.0.0", "faiss": "0.1"}}
    monkeypatch.setattr(DaskRunner, "_worker_versions", lambda self: odd)
    with pytest.raises(UsageError, match=r"numpy: .*1\.0\.0 on inproc://worker-1.*faiss: "):
        assert runner.workers
    runner.close()


def test_a_missing_extra_names_the_install_command(monkeypatch, catalogue):
    data, path = catalogue
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'ropebench\[dask\]'"):
        _evaluate(data, path, engine="dask")


def test_an_existing_cluster_by_its_scheduler_address(threads_cluster, catalogue):
    data, path = catalogue
    address = threads_cluster.describe()["scheduler"].split()[-1]
    runner = DaskRunner(address)
    there = _evaluate(data, path, runner=runner)
    runner.close()  # closes this client only: the cluster keeps running
    assert threads_cluster.workers == 2
    assert there.environment["engine"]["scheduler"] == address
    assert there.to_json()["tasks"] == _evaluate(data, path, threads=1).to_json()["tasks"]


def test_options_that_need_a_cluster_or_refuse_one():
    with pytest.raises(UsageError, match="drop one of them"):
        DaskRunner("tcp://127.0.0.1:1", workers=2)
    with pytest.raises(UsageError, match="at least 1"):
        DaskRunner(workers=0)
    with pytest.raises(UsageError, match="cannot connect"):
        assert DaskRunner("tcp://127.0.0.1:1", timeout=0.5).workers  # nothing listens there


def _slow_square(item: int, shared: float) -> int:
    time.sleep(shared)
    return item * item


@pytest.mark.slow
def test_a_lost_worker_is_replaced_and_every_shard_answers_once():
    """Kill a worker process mid-run: Dask runs its shards again elsewhere; each answer arrives once."""
    runner = DaskRunner(workers=2, processes=True)
    try:
        client = runner._connect()
        answers: list[int] = []
        done = threading.Event()

        def collect() -> None:
            answers.extend(runner.map(_slow_square, range(40), 0.2))
            done.set()

        worker = threading.Thread(target=collect)
        worker.start()
        time.sleep(1.5)
        victim = sorted(client.scheduler_info()["workers"])[0]
        client.run(os._exit, 1, workers=[victim], on_error="ignore")
        assert done.wait(120)
        worker.join()
        assert sorted(answers) == [i * i for i in range(40)]
        assert victim not in client.scheduler_info()["workers"]  # it really was lost (and replaced)
    finally:
        runner.close()
