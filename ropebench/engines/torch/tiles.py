"""A tile's pieces shared by the test set's blocks (:mod:`.blocks`) and the catalogue's shards
(:mod:`.shards`): this thread's CPU tile buffer and the candidates selected on the device (their
selection on the host, on a bf16 tile's bits, is :mod:`.bits`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["select_on_device", "tile_buffer"]


def select_on_device(scores: torch.Tensor, lo: torch.Tensor, lo_columns: torch.Tensor | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Row, column and float32 value of every score at or above its row's cut-off ``lo`` (or its
    column's, ``lo_columns``), both on the scores' device: the comparison and ``nonzero`` run there
    and only the candidates come back."""
    keep = scores >= lo[:, None]
    if lo_columns is not None:
        keep |= scores >= lo_columns[None, :]
    index = torch.nonzero(keep)
    if not len(index):
        return None
    values = scores[index[:, 0], index[:, 1]].float().cpu().numpy()
    found = index.cpu().numpy()
    return found[:, 0], found[:, 1], values


def tile_buffer(buffers: Any, rows: int, columns: int, dtype: torch.dtype, least: int) -> torch.Tensor:
    """A ``(rows, columns)`` view of this thread's CPU tile buffer of ``dtype`` in ``buffers`` (a
    ``threading.local``), made with ``least`` elements (one full tile) or more and reused across
    tiles."""
    tiles: dict[torch.dtype, torch.Tensor] | None = getattr(buffers, "tiles", None)
    if tiles is None:
        tiles = buffers.tiles = {}
    buffer = tiles.get(dtype)
    if buffer is None or buffer.numel() < rows * columns:
        buffer = tiles[dtype] = torch.empty(  # on the CPU, whatever the caller's default device
            max(rows * columns, least), dtype=dtype, device="cpu")
    return buffer[: rows * columns].view(rows, columns)
