"""A distractor catalogue's shards screened by torch: the catalogue composition's
:class:`~ropebench.engines.catalogue.ShardScreen` for ``--engine torch``.

The shard is read and prepared where it runs (this process's threads or a Dask worker), exactly as
for the numpy screen; then, per task:

- the task's collecting queries go to the device once per process, in the screening dtype,
  sorted by cut-off (so a tile's rows have close cut-offs and the tile's row maximum rejects most
  rows at once), and the shard's items of the task's gallery domain go there per shard;
- a tile of scores is one ``torch.mm``; candidates (scores at or above their query's cut-off) are
  selected on the host on the CPU — on the bf16 bit patterns, as :mod:`.blocks` does — and on the
  device elsewhere, so only their indices and values come back;
- every candidate is decided by the task's judge, whose band is the screen's precision (the
  composition builds the judges with :attr:`TorchShardScreen.precision`): the pairs within it
  settled in float64 there and then, exactly as the numpy screen's float32 candidates are.

A shard whose prepared vectors bf16 does not cover (subnormal or huge elements) is screened in
float32 instead, and recorded so. The judges keep the bf16 band, which is wider than float32's
in every term (docs/screening.md), so it holds for a float32 screen too.

On the CPU each shard runs with one torch thread: the runner's threads (or Dask's workers) are the
parallelism, as the default engine runs single-threaded BLAS per shard. Only this subpackage
imports torch; a Dask worker imports it when it unpickles the screen.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ropebench.engines.catalogue import ScanContext, ScanTask, TaskCounts, TaskPart, TaskScan, scan_numpy, segment_tiles
from ropebench.engines.core import Precision
from ropebench.engines.torch.bits import bf16_values, mask_buffer, select_bits
from ropebench.engines.torch.device import exact_kernels, precision_for, resolve_device, screen_dtype
from ropebench.engines.torch.tiles import select_on_device, tile_buffer

__all__ = ["TorchShardScreen", "row_bits", "select_on_host", "select_on_device", "SHAPE_STEP"]

# Tiles are computed in shapes rounded up to this step (zero rows and columns, never selected):
# oneDNN caches a primitive, with its memory, per GEMM shape, and a shard's last tile has a width
# of its own, so exact shapes grew the memory with the catalogue (about 0.8 MiB per shape).
SHAPE_STEP = 256

_session_lock = threading.Lock()
_session: dict[str, Any] = {"active": 0}


@contextlib.contextmanager
def _shard_session(device: torch.device) -> Iterator[None]:
    """One torch thread on the CPU while any shard of this process runs; the first shard in saves
    the thread count, the last one out restores it (shards run concurrently on the runner's
    threads, which share torch's process-wide thread count). The bound's kernel settings are not
    part of it: autocast is per thread, so each shard's thread enters
    :func:`~ropebench.engines.torch.device.exact_kernels` itself (reference-counted there)."""
    with _session_lock:
        if _session["active"] == 0:
            stack = contextlib.ExitStack()
            if device.type == "cpu":
                threads = torch.get_num_threads()
                torch.set_num_threads(1)
                stack.callback(torch.set_num_threads, threads)
            _session["stack"] = stack
        _session["active"] += 1
    try:
        yield
    finally:
        with _session_lock:
            _session["active"] -= 1
            if _session["active"] == 0:
                _session.pop("stack").close()


def row_bits(lo: np.ndarray) -> np.ndarray | None:
    """Each positive float32 cut-off rounded down to bf16, as int16 bit patterns (for positive
    values bf16 order is int16 order); None when some cut-off is not positive (+inf is fine:
    nothing finite reaches it)."""
    if not bool((lo > 0).all()):
        return None
    return (np.ascontiguousarray(lo, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16).view(np.int16)


def select_on_host(scores: np.ndarray, lo: np.ndarray, bits: np.ndarray | None, mask: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row, column and float32 value of every score at or above its row's cut-off ``lo`` (or a
    superset of them). ``scores``: a float32 tile, or a bf16 tile's int16 bit patterns (then
    ``bits`` are :func:`row_bits` of ``lo``, or None: one comparison with the smallest cut-off);
    ``mask``: scratch of at least the tile's size.

    The row maxima come first (one cheap pass): a tile with no candidate ends there, a few hot
    rows are compared alone, and otherwise the whole tile is compared in place and its flat
    indices found (cheaper than copying most rows out).
    """
    if scores.dtype == np.int16 and bits is None:
        picked = select_bits(scores, float(lo.min()), mask)
        if picked is None:
            return None
        r, c, values = picked
        keep = values >= lo[r]  # the smallest cut-off let other rows' lower scores through
        return (r[keep], c[keep], values[keep]) if keep.any() else None
    cut = lo if bits is None else bits
    hot = np.flatnonzero(scores.max(axis=1) >= cut)
    if not len(hot):
        return None
    if 8 * len(hot) < len(scores):
        r, c = np.nonzero(scores[hot] >= cut[hot][:, None])
        r = hot[r]
        found = scores[r, c]
    else:
        flat = np.flatnonzero(np.greater_equal(scores, cut[:, None], out=mask[: scores.size].reshape(scores.shape)))
        r, c = np.divmod(flat, scores.shape[1])
        found = scores.reshape(-1)[flat]
    values = bf16_values(found) if scores.dtype == np.int16 else found
    return r, c, values


class TorchShardScreen:
    """Screens catalogue shards with ``torch.mm`` on ``device`` in ``screen`` (``fp32``/``bf16``),
    in tiles of ``tile`` queries by ``tile`` items (see the module docstring).

    ``on_device``: select candidates on the device (the default off the CPU; tests set it to run
    that path on the CPU). Pickles as its settings (for Dask workers); device tensors and buffers
    are per process.
    """

    def __init__(self, device: str, screen: str, tile: int, *, on_device: bool | None = None) -> None:
        self.device, self.screen, self.tile, self.on_device = device, screen, int(tile), on_device
        self._prepare()

    def _prepare(self) -> None:
        self._device = resolve_device(self.device)
        self._precision = precision_for(self.screen, self._device)
        self._lock = threading.Lock()
        self._queries: dict[tuple[int, str], tuple[ScanTask, np.ndarray, torch.Tensor]] = {}
        self._buffers = threading.local()

    def __getstate__(self) -> dict[str, Any]:
        return {"device": self.device, "screen": self.screen, "tile": self.tile, "on_device": self.on_device}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.device, self.screen, self.tile, self.on_device = (state["device"], state["screen"], state["tile"],
                                                               state["on_device"])
        self._prepare()

    @property
    def name(self) -> str:
        return f"torch-{self.screen}"

    @property
    def precision(self) -> Precision:
        return self._precision

    def describe(self) -> dict[str, Any]:
        return {"screen": self.name, "device": str(self._device)}

    def session(self) -> contextlib.AbstractContextManager[Any]:
        """One torch thread (CPU) for a whole pass of this process's runner: setting torch's
        process-wide thread count per shard would let a shard that ends restore it while another
        shard's GEMM runs. The bound's kernel settings are entered per shard, in its own thread."""
        return _shard_session(self._device)

    def _sorted_queries(self, task: ScanTask, queries: np.ndarray, screen: str) -> tuple[np.ndarray, torch.Tensor]:
        """The task's collecting queries sorted by cut-off (the order) and on the device in
        ``screen``'s dtype, followed by zero rows up to a multiple of :data:`SHAPE_STEP`; made once
        per process and task."""
        key = (id(task), screen)
        with self._lock:
            found = self._queries.get(key)
            if found is None:
                order = np.argsort(task.lo, kind="stable")
                vectors = _padded(np.take(queries, task.rows[order], axis=0))
                tensor = torch.from_numpy(vectors).to(device=self._device, dtype=screen_dtype(screen))
                found = self._queries[key] = (task, order, tensor)  # the task kept: its id stays its own
        return found[1], found[2]

    def scan(self, task: ScanTask, queries: np.ndarray, items: np.ndarray, exact_items: np.ndarray,
             item_norms: np.ndarray, segments: np.ndarray, n_segments: int, context: ScanContext) -> TaskScan:
        m = len(task.rows)
        if m == 0 or len(items) == 0:
            part, work, settled = scan_numpy(task, queries, items, exact_items, item_norms, segments, n_segments,
                                             context)  # nothing to screen: the empty part
            return TaskScan(part, work, settled, self.name)
        screen = self.screen
        if screen == "bf16" and not self._precision.covers(items):
            screen = "fp32"  # outside bf16's normal range; the bf16 band still holds (module docstring)
        with _shard_session(self._device), exact_kernels(self._device):  # autocast off in this thread
            part, work, settled = self._scan(task, queries, items, exact_items, item_norms, segments, n_segments,
                                             context, screen)
        return TaskScan(part, work, settled, f"torch-{screen}")

    def _scan(self, task: ScanTask, queries: np.ndarray, items: np.ndarray, exact_items: np.ndarray,
              item_norms: np.ndarray, segments: np.ndarray, n_segments: int, context: ScanContext, screen: str
              ) -> tuple[TaskPart, int, int]:
        """:func:`~ropebench.engines.catalogue.scan_numpy` with torch tiles: catalogue order within
        each query block, so a query stops collecting only after its earlier segments were counted."""
        m = len(task.rows)
        order, left = self._sorted_queries(task, queries, screen)
        padded = len(left)  # m and the zero rows after them
        dtype = screen_dtype(screen)
        on_host = self._device.type == "cpu" if self.on_device is None else not self.on_device
        right = torch.from_numpy(_padded(items, extra=SHAPE_STEP)).to(device=self._device, dtype=dtype)
        # In sorted order; +inf once a query stops collecting, and for the zero rows (never selected).
        lo = np.full(padded, np.inf, dtype=np.float32)
        lo[:m] = task.lo[order]
        lo_device = None if on_host else torch.from_numpy(lo).to(self._device)
        base = np.zeros(padded, dtype=np.int64)
        base[:m] = task.base[order]
        counts = TaskCounts(n_segments, base, context)  # in sorted order
        work = settled = 0
        tile = self.tile
        tiles = segment_tiles(segments, len(items), tile)
        for r0 in range(0, m, tile):
            stop = min(m, r0 + tile)  # the block's queries; the GEMM's rows run on to r1 (a rounded shape)
            r1 = min(padded, r0 + _round_up(stop - r0))
            bits = row_bits(lo[r0:r1]) if on_host and screen == "bf16" else None
            for segment, c0, c1 in tiles:
                if not np.isfinite(lo[r0:stop]).any():
                    break  # every query of the block has stopped collecting
                wide = c0 + _round_up(c1 - c0)  # columns c0..wide, the zero items from c1 on
                if on_host:
                    scores = tile_buffer(self._buffers, r1 - r0, wide - c0, dtype, tile * tile)
                    torch.mm(left[r0:r1], right[c0:wide].T, out=scores)
                    plain = scores.view(torch.int16).numpy() if screen == "bf16" else scores.numpy()
                    found = select_on_host(plain, lo[r0:r1], bits,
                                           mask_buffer(self._buffers, plain.size, tile * tile))
                else:
                    assert lo_device is not None
                    found = select_on_device(torch.mm(left[r0:r1], right[c0:wide].T), lo_device[r0:r1])
                work += (stop - r0) * (c1 - c0) * items.shape[1]
                if found is not None and (wide > c1 or r1 > stop):
                    # Rows past the block (the next block's, or zero rows) and columns past the tile
                    # (the next tile's, or zero items, whose score 0 may pass a cut-off <= 0).
                    real = (found[0] < stop - r0) & (found[1] < c1 - c0)
                    found = (found[0][real], found[1][real], found[2][real]) if real.any() else None
                if found is None:
                    continue
                local, c, values = found
                position = r0 + local  # sorted position of each candidate's query
                decision = task.judge.decide(order[position], c0 + c, values, exact_items, item_norms[c0 + c])
                settled += decision.settled
                counts.add(segment, r0, r1, local, decision)
                done = counts.stopped(np.arange(r0, stop))
                if len(done) and np.isfinite(lo[done]).any():
                    lo[done] = np.inf
                    if lo_device is not None:
                        lo_device[torch.from_numpy(done).to(self._device)] = float("inf")
                    if bits is not None:
                        bits = row_bits(lo[r0:r1])
        return counts.part(order), work, settled  # back to the task's own query order (zero rows never counted)


def _round_up(n: int) -> int:
    return -(-n // SHAPE_STEP) * SHAPE_STEP


def _padded(vectors: np.ndarray, extra: int = 0) -> np.ndarray:
    """``vectors`` followed by zero rows up to a multiple of :data:`SHAPE_STEP` (plus ``extra``)."""
    rows = _round_up(len(vectors)) + extra
    out = np.zeros((rows, vectors.shape[1]), dtype=vectors.dtype)
    out[: len(vectors)] = vectors
    return out
