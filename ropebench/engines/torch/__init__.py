"""``--engine torch``: the one-pass algorithm with its similarity blocks on a torch device (CPU, CUDA,
MPS), screened in float32 or bfloat16, every comparison decided by the exactness core in float64.

A bf16 screen rounds both inputs and the score to 8 significant bits; the core's band for
:data:`~ropebench.engines.core.precision.BF16` (docs/screening.md) covers that, so the pairs
within it are settled in float64 and the counts are the default engine's, bit for bit. Since the
engine rounds the vectors itself, it measures each one's residual ``|x̂ − x|`` and, for cosine and
ip, uses the core's narrower :func:`~ropebench.engines.core.bound.residual_bound`. The screen
is given (``screen="fp32"|"bf16"``) or chosen once per process by measuring both on a small block.

Only this subpackage imports torch; the registry imports it when ``torch`` is chosen.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ropebench.engines.base import COUNTERS, FirstHits, SearchRequest, SearchRun, TaskData
from ropebench.engines.core import FP32, Precision, judge_task, row_counts
from ropebench.engines.core.bound import pair_widths
from ropebench.engines.core.stored import stored
from ropebench.engines.onepass import SMALL_BLOCK, TaskReader, _edges, _plan
from ropebench.engines.torch.blocks import CHUNK_ROWS, DeviceBlock, residual_norms, run_block
from ropebench.engines.torch.device import (
    SCREENS,
    device_name,
    exact_kernels,
    measured_screen,
    precision_for,
    resolve_device,
    screen_dtype,
)
from ropebench.engines.torch.resident import DeviceRows
from ropebench.errors import UsageError

__all__ = ["TorchEngine", "TorchSettings", "TILE"]

TILE = 2048  # tile side: (TILE, TILE) scores per worker (8 MiB in bf16)


@dataclass(frozen=True)
class TorchSettings:
    """Tile and small-block sizes (tests shrink them so small data reaches every path)."""

    tile: int = TILE
    small_block: int = SMALL_BLOCK


@contextlib.contextmanager
def _cpu_threads(device: torch.device, threads: int) -> Iterator[ThreadPoolExecutor | None]:
    """On the CPU, ``threads`` workers each running whole tiles with one torch thread (as the
    default engine runs single-threaded BLAS per tile); torch's thread count is restored after.
    Elsewhere the device parallelises a tile and one host thread feeds it."""
    if device.type != "cpu":
        yield None
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    pool = ThreadPoolExecutor(max_workers=threads, initializer=torch.set_num_threads, initargs=(1,)) \
        if threads > 1 else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown()
        torch.set_num_threads(saved)


class TorchEngine:
    """``torch``: see the module docstring.

    Args:
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; None: cuda when available, else cpu.
        screen: ``fp32`` or ``bf16``; None: the request's precision when it is not float32, else
            measured once per process (bf16 when it is clearly faster on this device).
        settings: tile and small-block sizes.
    """

    name = "torch"

    def __init__(self, device: str | None = None, screen: str | None = None,
                 settings: TorchSettings | None = None) -> None:
        if screen is not None and screen not in SCREENS:
            raise UsageError(f"--screen {screen!r}: choose from {', '.join(SCREENS)}")
        self.device = resolve_device(device)
        self.screen = screen
        self.settings = settings or TorchSettings()

    def _choose(self, request: SearchRequest, dim: int) -> tuple[str, str, float | None]:
        """``(screen, how it was chosen, measured bf16 speed-up)``."""
        if self.screen is not None:
            return self.screen, "given", None
        if request.precision is not FP32:
            return request.precision.name, "given", None
        screen, gain = measured_screen(self.device, dim)
        return screen, "measured", gain

    def search(self, request: SearchRequest) -> SearchRun:
        data = request.task_data
        dim = next((data[t].queries.shape[1] for t in request.tasks), 1)
        screen, how, gain = self._choose(request, dim)
        record: dict[str, Any] = {"name": self.name, "device": str(self.device),
                                  "device_name": device_name(self.device), "torch": torch.__version__,
                                  "screen": screen, "screen_choice": how}
        if gain is not None:
            record["bf16_speedup"] = round(gain, 3)
        precision = precision_for(screen, self.device)
        if screen == "bf16" and not _covered(precision, [data[t].queries for t in request.tasks]
                                             + [data[t].gallery for t in request.tasks]):
            # Subnormal inputs are dropped by bf16 kernels (and huge ones overflow): outside the bound.
            screen, precision = "fp32", FP32
            record.update(screen="fp32", screen_fallback="elements outside bf16's normal range")
        counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        hits, widths, sent = self._first_hits(request, precision, counters)
        record["pairs_sent"] = sent  # candidates that left the device (for the host's decisions)
        counters["queries_censored"] = sum(int(h.censored.sum()) for h in hits.values())
        record["band_median"] = float(np.median(widths)) if len(widths) else 0.0
        return SearchRun(hits=hits, counters=counters, engine=record)

    def shard_screen(self, run: SearchRun) -> Any:
        """How a distractor catalogue's shards are screened (the catalogue composition asks): on
        this engine's device, in the screen its test set ran in (after any fallback to fp32)."""
        from ropebench.engines.torch.shards import TorchShardScreen

        return TorchShardScreen(str(self.device), str(run.engine.get("screen", "fp32")), self.settings.tile)

    def _first_hits(self, request: SearchRequest, precision: Precision, counters: dict[str, int]
                    ) -> tuple[dict[str, FirstHits], np.ndarray, int]:
        settings, device = self.settings, self.device
        task_data, tasks = request.task_data, request.tasks
        plan: list[tuple[str, str | None, bool]] = []
        small: list[str] = []
        for row_task, column_task, symmetric in _plan(task_data, tasks, request.symmetric_scores):
            left, right = task_data[row_task].queries, task_data[row_task].gallery
            both = [row_task] + ([column_task] if column_task else [])
            if min(len(left), len(right)) < 2 or len(left) * len(right) * left.shape[1] <= settings.small_block:
                small += both
            else:
                plan.append((row_task, column_task, symmetric))
        if request.on_start is not None:
            total = 0
            for row_task, _, symmetric in plan:
                n_l = len(_edges(len(task_data[row_task].queries), settings.tile)) - 1
                n_r = len(_edges(len(task_data[row_task].gallery), settings.tile)) - 1
                total += n_l * (n_l + 1) // 2 if symmetric else n_l * n_r
            request.on_start(total, "tiles")
        progress = request.on_progress or (lambda n: None)
        dtype = screen_dtype(precision.name)
        readers: dict[str, TaskReader] = {}
        buffers = threading.local()
        sent = 0
        residuals = _Residuals(device, dtype, enabled=precision.u_in > 0)
        with exact_kernels(device), _cpu_threads(device, request.threads) as pool:
            # As in the default engine, a worker prepares the next block (thresholds, residuals,
            # device copies) while this one's tiles run.
            upcoming = None
            for index, (row_task, column_task, symmetric) in enumerate(plan):
                block = upcoming.result() if upcoming is not None else \
                    self._block(task_data, row_task, column_task, symmetric, precision, request, residuals)
                upcoming = None
                if pool is not None and index + 1 < len(plan):
                    upcoming = pool.submit(self._block, task_data, *plan[index + 1], precision, request, residuals)
                readers[row_task] = block.rows
                if column_task is not None and block.columns is not None:
                    readers[column_task] = block.columns
                sent += run_block(block, pool, buffers, progress)
                del block
        hits: dict[str, FirstHits] = {}
        widths: list[np.ndarray] = []
        for task in small:
            data = task_data[task]
            judge = judge_task(data, FP32)  # counted on the host in float32, as the default engine does
            scored = np.isfinite(judge.best)
            a, t, n = row_counts(data, judge, np.flatnonzero(scored))
            hits[task] = FirstHits(scored=scored, a=a, t=t, p=judge.p[scored], censored=np.zeros(len(a), dtype=bool))
            counters["pairs_settled"] += n
            counters["relevant_settled"] += judge.relevant_settled
        for task, reader in readers.items():
            hits[task] = reader.finish()
            counters["pairs_settled"] += reader.settled
            counters["relevant_settled"] += reader.judge.relevant_settled
            widths.append(_band_widths(reader))
        counters["blocks_tiled"] += len(plan)
        counters["blocks_small"] += len(small)
        return {task: hits[task] for task in tasks}, np.concatenate(widths) if widths else np.zeros(0), sent

    def _block(self, task_data: Mapping[str, TaskData], row_task: str, column_task: str | None, symmetric: bool,
               precision: Precision, request: SearchRequest, residuals: _Residuals) -> DeviceBlock:
        def reader(task: str) -> TaskReader:
            data = task_data[task]
            judge = judge_task(data, precision, residuals=residuals.of(data))
            return TaskReader(data, judge, request.max_k, request.exact_censored)

        data = task_data[row_task]
        rows = reader(row_task)
        columns = None if column_task is None else reader(column_task)
        return DeviceBlock(data.queries, data.gallery, rows, columns, symmetric, self.settings.tile,
                           device=self.device, dtype=residuals.dtype, sources=_on_device(data))


def _on_device(data: TaskData) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The task's prepared vectors as tensors on their device, where the submitted tensor stayed
    there (:class:`~ropebench.engines.torch.resident.DeviceRows`); else None."""
    if isinstance(data.queries, DeviceRows) and isinstance(data.gallery, DeviceRows):
        return data.queries.tensor, data.gallery.tensor
    return None


def _covered(precision: Precision, arrays: list[np.ndarray]) -> bool:
    """Whether ``precision`` covers every element of every array (each distinct array checked
    once, :data:`CHUNK_ROWS` rows at a time, so no full-size temporary)."""
    distinct = {id(array): array for array in arrays}.values()
    return all(array.covers(precision) if stored(array)  # checked on the device (resident.DeviceRows)
               else all(precision.covers(array[start:start + CHUNK_ROWS]) for start in range(0, len(array), CHUNK_ROWS))
               for array in distinct)


class _Residuals:
    """Residual norms ``|x̂ − x|`` of each item set's screened vectors, computed once per array
    (tasks of one item set share their arrays) when the screen rounds its inputs (bf16)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, *, enabled: bool) -> None:
        self.device, self.dtype, self.enabled = device, dtype, enabled
        self._norms: dict[int, tuple[np.ndarray | torch.Tensor, np.ndarray | None]] = {}

    def _norms_of(self, vectors: np.ndarray | torch.Tensor) -> np.ndarray | None:
        if id(vectors) not in self._norms:  # the array is kept with its norms, so its id stays its own
            self._norms[id(vectors)] = (vectors, residual_norms(vectors, self.device, self.dtype))
        return self._norms[id(vectors)][1]

    def of(self, data: TaskData) -> tuple[np.ndarray, np.ndarray] | None:
        """``(queries', gallery's)`` residual norms, or None (no rounding, or no float64 on the device)."""
        if not self.enabled or data.metric not in ("cosine", "ip"):
            return None
        # From the device copies when the submitted tensor stayed there (the same rows, bit for bit).
        sources = _on_device(data) or (data.queries, data.gallery)
        queries, gallery = self._norms_of(sources[0]), self._norms_of(sources[1])
        return None if queries is None or gallery is None else (queries, gallery)


def _band_widths(reader: TaskReader) -> np.ndarray:
    """Each scored query's band width at its threshold, for a gallery item of median norm (and,
    with a residual band, median residual)."""
    judge = reader.judge
    scored = np.isfinite(judge.best)
    n = int(scored.sum())
    if not n or judge.bound.exact:
        return np.zeros(n)
    g_norm = np.full(n, float(np.median(reader.g_norm)) if len(reader.g_norm) else 0.0)
    q_residual = g_residual = None
    if judge.q_residual is not None and judge.g_residual is not None:
        q_residual = judge.q_residual[scored]
        g_residual = np.full(n, float(np.median(judge.g_residual)) if len(judge.g_residual) else 0.0)
    return pair_widths(judge.bound, judge.q_norm[scored], g_norm, judge.screen[scored], q_residual,
                       g_residual) + judge.extra[scored]


