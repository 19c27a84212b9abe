"""Where shard tasks run: in this process on a thread pool (the default and the reference), or on
a Dask cluster (:mod:`ropebench.engines.dask`). Both map one function over shards with one shared
object and yield answers as they complete; answers are sums, so their order changes nothing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Protocol, TextIO, TypeVar

__all__ = ["Runner", "ThreadRunner", "Eta"]

T = TypeVar("T")
R = TypeVar("R")


class Runner(Protocol):
    """Runs ``function(item, shared)`` for every item; ``shared`` is sent once."""

    name: str

    @property
    def workers(self) -> int: ...

    def map(self, function: Callable[[Any, Any], R], items: Iterable[Any], shared: Any) -> Iterator[R]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ThreadRunner:
    """``threads`` worker threads in this process, each running whole shards with single-threaded
    BLAS (OpenBLAS's own threads spin after every GEMM and starve the selection threads).

    At most ``2 × threads`` shards are in flight, so memory holds a few shards, never the catalogue.
    """

    name = "in-process"

    def __init__(self, threads: int = 1) -> None:
        self.threads = max(1, int(threads))

    @property
    def workers(self) -> int:
        return self.threads

    def map(self, function: Callable[[Any, Any], R], items: Iterable[Any], shared: Any) -> Iterator[R]:
        from threadpoolctl import threadpool_limits

        pending = iter(items)
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=self.threads) as pool:
            running: set[Future[R]] = set()

            def refill() -> None:
                while len(running) < 2 * self.threads:
                    item = next(pending, None)
                    if item is None:
                        return
                    running.add(pool.submit(function, item, shared))

            refill()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    running.discard(future)
                    result = future.result()  # an error in a shard stops the run here
                    refill()
                    yield result

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "workers": self.threads}

    def close(self) -> None:
        pass


class Eta:
    """Progress of a long pass in items, with the rate and the time left, on stderr.

    Drawn at most twice a second, on one line when stderr is a terminal, else one line every ten
    seconds (a log). ``enabled=False`` draws nothing.
    """

    def __init__(self, label: str, total: int, *, unit: str = "items", enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.label, self.total, self.unit = label, max(1, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.done += int(n)
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= (0.5 if self.tty else 10.0) or self.done >= self.total):
            self._drawn = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = "?" if left != left else _clock(left)
        line = (f"{self.label} {self.done:,}/{self.total:,} {self.unit} ({100 * self.done / self.total:.0f}%), "
                f"{rate:,.0f} {self.unit}/s, {eta} left")
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
