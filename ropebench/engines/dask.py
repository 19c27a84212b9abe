"""``--engine dask``: distractor shards on a Dask cluster (``dask.distributed``, extra ``ropebench[dask]``).

The test set is searched in this process by the one-pass engine (the reference); the catalogue's
shards run on the cluster. Only shard *plans* travel to the workers (file path and row-group
indices: each worker reads its own shards), the query vectors and their bands are broadcast once
(``Client.scatter(..., broadcast=True)``), and each shard sends back small count arrays and its few
band entries. A worker lost mid-run is replaced by Dask and its shards run again elsewhere; an
answer is accepted once per shard, and the answers are sums, so the result is unchanged.

Workers must run the same numpy and FAISS as this process (checked before any work), so the
numbers are those of the in-process run, bit for bit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ropebench.errors import MissingExtraError, UsageError

__all__ = ["DaskRunner", "library_versions", "INSTALL_HINT", "CHECKED_LIBRARIES"]

R = TypeVar("R")
INSTALL_HINT = "pip install 'ropebench[dask]'  (or: pip install 'dask[distributed]')"
CHECKED_LIBRARIES = ("numpy", "faiss")  # a mix of versions would change the numbers: refused


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingExtraError(f"--engine dask needs dask.distributed, which is not installed. Fix: {INSTALL_HINT}") \
            from None
    return distributed


def library_versions() -> dict[str, str]:
    """The versions that decide the numbers (read from package metadata; FAISS is not imported)."""
    import platform
    import sys
    from importlib import metadata

    import numpy

    from ropebench._version import __version__

    def version(*names: str) -> str:
        for name in names:
            try:
                return metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
        return "missing"

    return {"python": sys.version.split()[0], "numpy": numpy.__version__,
            "faiss": version("faiss-cpu", "faiss", "faiss-gpu"), "pyarrow": version("pyarrow"),
            "torch": version("torch"), "ropebench": __version__, "machine": platform.machine()}


def _on_worker(function: Callable[[Any, Any], R], item: Any, shared: Any) -> R:
    """Run one shard with single-threaded BLAS: the worker's threads are the parallelism."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return function(item, shared)


class DaskRunner:
    """Shard tasks on a Dask cluster: an existing one (``scheduler="tcp://HOST:8786"``) or a local
    cluster of ``workers`` processes on 127.0.0.1, with one thread each and no dashboard.

    Args:
        scheduler: address of a running scheduler; None starts a local cluster.
        workers: local cluster size (default 2); refused together with ``scheduler``.
        processes: local cluster of processes (default) or of threads in this process (tests).
        timeout: seconds to wait for the scheduler and the workers.
        require: more libraries the workers must run in this process's version (``torch`` when the
            torch engine screens the shards there).
    """

    name = "dask"

    def __init__(self, scheduler: str | None = None, workers: int | None = None, *, processes: bool = True,
                 timeout: float = 60.0, require: tuple[str, ...] = ()) -> None:
        if scheduler is not None and workers is not None:
            raise UsageError("--workers sizes a local cluster; with --scheduler the cluster has its own workers. "
                             "Fix: drop one of them")
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be at least 1, got {workers}")
        self.scheduler, self.n_local, self.processes, self.timeout = scheduler, workers or 2, processes, timeout
        self.require = tuple(require)
        self._client: Any = None
        self._cluster: Any = None
        self._versions: dict[str, dict[str, str]] = {}

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        distributed = _distributed()
        if self.scheduler is not None:
            try:
                self._client = distributed.Client(self.scheduler, timeout=self.timeout)
            except OSError as error:
                raise UsageError(f"--scheduler {self.scheduler}: cannot connect ({error}). Fix: start the scheduler "
                                 "(dask scheduler) and its workers, or drop --scheduler for a local cluster") from None
        else:
            # Processes talk TCP on the loopback interface only; threads use Dask's in-process
            # transport. The scheduler and workers always serve a few HTTP routes (health,
            # metrics), on every interface unless told otherwise: loopback, any free port.
            network = {"host": "127.0.0.1"} if self.processes else {"protocol": "inproc://"}
            import dask

            # Workers sample their own stacks every 10 ms by default (for the dashboard's profile):
            # a few percent of every core, which a cluster for one evaluation does not need.
            quiet = {"distributed.worker.profile.enabled": False,
                     "distributed.admin.system-monitor.gil.enabled": False}
            with dask.config.set(quiet):
                self._cluster = distributed.LocalCluster(
                    n_workers=self.n_local, threads_per_worker=1, processes=self.processes, dashboard_address=None,
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                    worker_dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR, **network)
            self._client = distributed.Client(self._cluster, timeout=self.timeout)
        if not self._client.scheduler_info().get("workers"):
            self._client.wait_for_workers(1, timeout=self.timeout)
        self._check_versions()
        return self._client

    def _worker_versions(self) -> dict[str, dict[str, str]]:
        """``{worker address: library_versions()}`` as each worker reports it."""
        return dict(self._client.run(library_versions))

    def _check_versions(self) -> None:
        """Refuse a cluster whose workers run other numpy / FAISS versions than this process."""
        found = self._worker_versions()
        found["client"] = library_versions()
        self._versions = found
        problems = []
        for library in (*CHECKED_LIBRARIES, *self.require):
            seen: dict[str, list[str]] = {}
            for worker, versions in found.items():
                seen.setdefault(versions.get(library, "missing"), []).append(worker)
            if len(seen) > 1:
                found_versions = "; ".join(f"{v} on {', '.join(sorted(w)[:3])}" for v, w in seen.items())
                problems.append(f"{library}: {found_versions}")
        if problems:
            self.close()
            raise UsageError("the Dask workers run other library versions than this process, which would change "
                             "the numbers: " + " | ".join(problems) + ". Fix: install the same versions everywhere")

    @property
    def workers(self) -> int:
        return len(self._connect().scheduler_info().get("workers", {}))

    def map(self, function: Callable[[Any, Any], R], items: Iterable[Any], shared: Any) -> Iterator[R]:
        distributed = _distributed()
        client = self._connect()
        [shared_future] = client.scatter([shared], broadcast=True, hash=False)
        token = uuid.uuid4().hex[:12]
        futures = [client.submit(_on_worker, function, item, shared_future, key=f"ropebench-{token}-{number}",
                                 pure=False) for number, item in enumerate(items)]
        try:
            for future, result in distributed.as_completed(futures, with_results=True):
                future.release()
                yield result
        finally:
            client.cancel(futures + [shared_future])

    def describe(self) -> dict[str, Any]:
        """Runner, worker count, scheduler and the library versions the workers run."""
        client = self._connect()
        workers = [name for name in self._versions if name != "client"]
        versions = dict(self._versions[workers[0]] if workers else {})  # checked equal on every worker
        return {"runner": self.name, "workers": self.workers,
                "scheduler": self.scheduler if self.scheduler is not None else
                f"local ({'processes' if self.processes else 'threads'}) {client.scheduler.address}",
                "worker_versions": versions}

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None

    def __enter__(self) -> DaskRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
