"""The one-pass algorithm with its similarity blocks on a torch device.

The blocks, their pairing (cross blocks once for both directions, symmetric intra blocks once),
the rows sorted by cut-off and the readers are the default engine's
(:mod:`ropebench.engines.onepass`); what differs is where a tile is computed and how its
candidates are selected:

- the block's vectors are copied to the device once, in the screening dtype (bf16 or fp32);
- a tile's scores are one ``torch.mm`` on the device;
- only candidates (scores at or above their query's cut-off) leave the device: on a GPU the
  comparison and ``nonzero`` run there and only the indices and values are copied back; on the
  CPU the tile *is* host memory, and the comparison runs in numpy on its bits (a bf16 score is
  the top half of a float32, so ``>=`` on bf16 is ``>=`` on int16 for positive thresholds) —
  torch's own bf16 comparison costs more than the AMX GEMM itself;
- every candidate is then decided on the host by the exactness core (the pairs inside the
  bf16 band settled in float64), exactly as the default engine decides its float32 candidates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from ropebench.engines.onepass import Block, sort_out_tile, take_tile
from ropebench.engines.pool import run_tiles
from ropebench.engines.torch.bits import mask_buffer, select_bits
from ropebench.engines.torch.device import release_free_memory
from ropebench.engines.torch.tiles import select_on_device, tile_buffer

__all__ = ["run_block", "DeviceBlock", "to_device", "residual_norms",
           "CHUNK_ROWS", "TRIM_TILES"]

TRIM_TILES = 32  # tiles between two returns of free C heap pages to the system (release_free_memory)
CHUNK_ROWS = 1 << 11  # rows converted at a time (bounds the temporaries: 1 MiB per float32 copy at d = 128)


def to_device(vectors: np.ndarray | torch.Tensor, order: np.ndarray | None, device: torch.device,
              dtype: torch.dtype) -> torch.Tensor:
    """``vectors[order]`` (``(n, d)`` float32) as a ``dtype`` tensor on ``device``, converted
    :data:`CHUNK_ROWS` rows at a time, so no full-size float32 copy is ever made. ``vectors`` may
    be a tensor already on a device (a submitted tensor's prepared rows): gathered there, the
    same conversion."""
    n = len(vectors) if order is None else len(order)
    out = torch.empty((n, vectors.shape[1]), dtype=dtype, device=device)
    index = torch.from_numpy(order).to(vectors.device) \
        if isinstance(vectors, torch.Tensor) and order is not None else None
    for start in range(0, n, CHUNK_ROWS):
        rows = slice(start, start + CHUNK_ROWS)
        if isinstance(vectors, torch.Tensor):
            part = vectors[rows] if index is None else vectors.index_select(0, index[rows])
        else:
            chunk = vectors[rows] if order is None else np.take(vectors, order[rows], axis=0)
            part = torch.from_numpy(np.ascontiguousarray(chunk))
        out[rows] = part.to(device=device).to(dtype)
    return out


def residual_norms(vectors: np.ndarray | torch.Tensor, device: torch.device, dtype: torch.dtype
                   ) -> np.ndarray | None:
    """``ρ = |x̂ − x|`` per row (float64), ``x̂`` the rounding of each float32 vector to ``dtype``
    done exactly as :func:`to_device` does it (the same conversion on the same device), so ``ρ``
    is the residual of the very inputs the kernel multiplies. ``x̂ − x`` is exact in float32 (two
    float32 numbers within a factor 2 of each other); its norm is summed in float64. None on a
    device without float64 (MPS): the engine then keeps the worst-case band."""
    if device.type == "mps":
        return None
    out = np.empty(len(vectors), dtype=np.float64)
    for start in range(0, len(vectors), CHUNK_ROWS):
        part = vectors[start:start + CHUNK_ROWS]
        x = (part if isinstance(part, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(part))).to(device=device)
        residual = (x.to(dtype).to(torch.float32) - x).to(torch.float64)
        out[start:start + len(x)] = torch.sqrt((residual * residual).sum(dim=1)).cpu().numpy()
    return out


@dataclass
class DeviceBlock(Block):
    """A :class:`Block` whose vectors in tile order are made on ``device`` in the screening
    ``dtype`` from the block's vectors chunk by chunk when its tiles start (:meth:`on_device`), so
    the host keeps no sorted copy and a block prepared ahead holds no device memory yet."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    sources: tuple[torch.Tensor, torch.Tensor] | None = None  # left, right already on a device

    def sorted_copies(self) -> None:
        pass  # made by on_device, when the tiles start

    def on_device(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(left, right)``: the block's vectors in tile order on the device."""
        left_source, right_source = self.sources if self.sources is not None else (self.left, self.right)
        left = to_device(left_source, self.perm_left, self.device, self.dtype)
        if self.symmetric:
            return left, left
        order = self.perm_right if self.columns is not None else None
        return left, to_device(right_source, order, self.device, self.dtype)


def run_block(block: DeviceBlock, pool: ThreadPoolExecutor | None, buffers: threading.local,
              on_tile: Callable[[int], None]) -> int:
    """Compute ``block``'s tiles on its device copies and hand every candidate to its reader.
    Returns the candidates sent to the host."""
    left, right = block.on_device()
    rows, columns = block.rows, block.columns
    column_reader = rows if block.symmetric else columns
    edges_l, edges_r = block.edges_left, block.edges_right
    on_cpu = left.device.type == "cpu"
    bf16 = left.dtype == torch.bfloat16
    lock = threading.Lock()
    sent, done = [0], [0]

    def candidates(scores: torch.Tensor, threshold_r: np.ndarray, threshold_c: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Row, column and float32 value of every score at or above its row's or column's cut-off."""
        if not on_cpu:
            device = scores.device
            return select_on_device(scores, torch.from_numpy(threshold_r).to(device),
                                    None if threshold_c is None else torch.from_numpy(threshold_c).to(device))
        shape = tuple(scores.shape)
        tau = min(float(threshold_r.min()), float(threshold_c.min()) if threshold_c is not None else np.inf)
        mask = mask_buffer(buffers, shape[0] * shape[1], block.tile * block.tile)
        if bf16:
            return select_bits(scores.view(torch.int16).numpy(), tau, mask)
        if not np.isfinite(tau):
            return None
        plain = scores.numpy()
        flat = np.flatnonzero(np.greater_equal(plain, np.float32(tau), out=mask[: plain.size].reshape(shape)))
        r, c = np.divmod(flat, shape[1])
        return r, c, plain.reshape(-1)[flat]

    def run_tile(tile: tuple[int, int]) -> None:
        i, j = tile
        r0, r1, c0, c1 = edges_l[i], edges_l[i + 1], edges_r[j], edges_r[j + 1]
        n_rows, n_columns = int(r1 - r0), int(c1 - c0)
        if on_cpu:
            scores = tile_buffer(buffers, n_rows, n_columns, left.dtype, block.tile * block.tile)
            torch.mm(left[r0:r1], right[c0:c1].T, out=scores)
        else:
            scores = torch.mm(left[r0:r1], right[c0:c1].T)
        query_r, query_c = block.perm_left[r0:r1], block.perm_right[c0:c1]
        by_columns = column_reader is not None and not (block.symmetric and i == j)
        threshold_r = rows.lo[query_r]
        threshold_c = column_reader.lo[query_c] if column_reader is not None and by_columns else None
        found = candidates(scores, threshold_r, threshold_c)
        for_rows = for_columns = None
        if found is not None:
            r, c, values = found
            for_rows, for_columns = sort_out_tile(rows, column_reader, query_r, query_c, r, c, values,
                                                  threshold_r, threshold_c)
        n_sent = 0 if found is None else len(found[0])

        def counted(n: int) -> None:  # called by take_tile under the lock
            sent[0] += n_sent
            done[0] += n
            on_tile(n)

        take_tile(lock, rows, column_reader, for_rows, for_columns, counted)
        if done[0] % TRIM_TILES == 0:
            release_free_memory()

    run_tiles(pool, block.tiles, run_tile)
    release_free_memory()
    return sent[0]

