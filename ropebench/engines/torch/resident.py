"""A torch tensor evaluated where it lives: validation and preparation on its device, and one
counted way back to the host.

``ropebench.evaluate(embeddings=tensor, engine="torch")`` with a tensor on a GPU takes this path
(:func:`applies`): the matrix is checked by reductions on the device (only the indices of offending
rows come back, to name example ids), l2's centre is taken there, each domain is prepared there
(cosine normalised, l2 translated) with the fixed-order float64 tree sum of the exact score, so
the prepared float32 rows are bit-identical to numpy's (:func:`ropebench.engines.exact.prepare_vectors`),
and the torch engine screens from these device copies instead of uploading host ones.

The exactness core sees each prepared array as :class:`DeviceRows`
(:class:`ropebench.engines.core.stored.StoredVectors`): it asks for the norms, l2's offsets, the
integer check, the relevant pairs' float32 screens and the float64 settlement (the fixed-order
tree sum again, bit-identical), which are computed on the device; only their results (a float
per row or per pair) and the candidates' indices cross. Any other read of rows (the small blocks'
whole-row counting, the all-relevant measures' levels) goes through :func:`to_host`, the one way
rows of a resident matrix reach host memory, which counts them (``environment.engine.counters``
``host_rows`` / ``host_bytes``; a whole array is copied at most once). The results record's
``sha256`` of the arrays is streamed :data:`DEVICE_ROWS` rows at a time (``digest_rows``): no full
copy is held.

Only this subpackage imports torch; :mod:`ropebench.evaluation` asks :func:`applies` only for an
object that already is a torch tensor.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

__all__ = ["FORCE_CPU", "ResidentMatrix", "applies", "tree_sum", "prepare_vectors",
           "embedding_masks", "checked_on_device", "tensor_kind", "with_host_matrix", "to_host", "DeviceRows",
           "DEVICE_ROWS"]

# Tests: take the device path for CPU tensors too (a CPU tensor otherwise goes the numpy way).
FORCE_CPU = False
DEVICE_ROWS = 1 << 12  # rows per device float64 block and per streamed digest chunk
_COUNTING = threading.Lock()  # engine workers may copy rows at once


def applies(embeddings: Any, device: Any = None) -> bool:
    """Whether an evaluation by the torch engine keeps ``embeddings`` on its device: a CUDA tensor
    (or a CPU one with :data:`FORCE_CPU`) screened on a device of the same kind (``device``, None:
    the tensor's). MPS has no float64, which the preparation and the settlement need: an MPS
    tensor is copied to the host as before; so is a CUDA tensor screened on the CPU."""
    if not isinstance(embeddings, torch.Tensor):
        return False
    kind = embeddings.device.type
    if device is not None and torch.device(device).type != kind:
        return False
    return kind == "cuda" or (FORCE_CPU and kind == "cpu")


def tree_sum(terms: torch.Tensor, overwrite: bool = False) -> torch.Tensor:
    """Row sums of a ``(n, d)`` float64 tensor in the fixed pairwise order of
    :func:`ropebench.engines.core.scores.tree_sum` (zero-padded to a power of two, the second half
    added onto the first): float64 addition is correctly rounded on every device, so the bits are
    numpy's. With ``overwrite``, a contiguous ``terms`` of power-of-two width is the scratch space."""
    n, d = terms.shape
    if d == 0:
        return torch.zeros(n, dtype=torch.float64, device=terms.device)
    width = 1 << max(0, (d - 1).bit_length())
    if overwrite and width == d and terms.is_contiguous():
        scratch = terms
    else:
        scratch = torch.zeros((n, width), dtype=torch.float64, device=terms.device)
        scratch[:, :d] = terms
    while width > 1:
        width //= 2
        torch.add(scratch[:, :width], scratch[:, width:2 * width], out=scratch[:, :width])
    return scratch[:, 0].clone()


def prepare_vectors(embeddings: torch.Tensor, metric: str, center: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`ropebench.engines.exact.prepare_vectors` on the tensor's device, bit for bit:
    ``(queries, gallery)`` float32 (the same tensor unless ``l2``)."""
    n, d = embeddings.shape
    device = embeddings.device
    if metric == "ip":
        vectors = embeddings.to(torch.float32).contiguous()
        return vectors, vectors
    if metric == "cosine":
        out = torch.empty((n, d), dtype=torch.float32, device=device)
        for start in range(0, n, DEVICE_ROWS):
            block = embeddings[start:start + DEVICE_ROWS].to(torch.float64)
            norm = torch.sqrt(tree_sum(block * block))
            block /= torch.where(norm > 0, norm, torch.ones_like(norm))[:, None]
            out[start:start + len(block)] = block
        return out, out
    queries = torch.empty((n, d + 1), dtype=torch.float32, device=device)
    gallery = torch.empty_like(queries)
    shift = torch.zeros(d, dtype=torch.float64, device=device) if center is None else center.to(torch.float64)
    for start in range(0, n, DEVICE_ROWS):
        block = embeddings[start:start + DEVICE_ROWS].to(torch.float64) - shift
        rows = slice(start, start + len(block))
        queries[rows, :-1] = block
        centred = queries[rows, :-1]
        gallery[rows, :-1] = centred * 2.0
        wide = centred.to(torch.float64)
        gallery[rows, -1] = -tree_sum(wide * wide)
    queries[:, -1] = 1.0
    return queries, gallery


def to_host(counters: dict[str, int], tensor: torch.Tensor, rows: np.ndarray | None = None) -> np.ndarray:
    """``tensor[rows]`` (all rows when None) as a C-contiguous numpy array, counted in
    ``counters`` (``host_rows``, ``host_bytes``): the only way a resident matrix, or anything made
    from it row by row, reaches host memory."""
    part = tensor if rows is None else tensor.index_select(
        0, torch.as_tensor(np.asarray(rows, dtype=np.int64), device=tensor.device))
    out = np.ascontiguousarray(part.detach().cpu().numpy())
    with _COUNTING:
        counters["host_rows"] += int(part.shape[0])
        counters["host_bytes"] += int(out.nbytes)
    return out


def tensor_kind(tensor: torch.Tensor) -> tuple[tuple[int, ...], str, bool]:
    """``(shape, dtype name, floating)`` as the numpy path names them (a bfloat16 tensor is read
    as float32 there, which holds every bfloat16 exactly)."""
    dtype = torch.float32 if tensor.dtype == torch.bfloat16 else tensor.dtype
    return tuple(int(v) for v in tensor.shape), str(dtype).removeprefix("torch."), tensor.is_floating_point()


def checked_on_device(tensor: torch.Tensor, metric: str, limit: float) -> tuple[ResidentMatrix, dict[str, np.ndarray]]:
    """The float32 matrix of ``tensor`` on its device (the tensor itself when it already is one,
    never modified) and the row masks of the embedding checks (:func:`embedding_masks`)."""
    matrix = tensor.detach().to(torch.float32).contiguous()
    return ResidentMatrix(matrix), embedding_masks(matrix, tensor, metric, limit)


def _rows(mask: torch.Tensor, n: int) -> np.ndarray:
    """A host bool mask from a device one, only the True rows' indices crossing."""
    out = np.zeros(n, dtype=bool)
    out[torch.nonzero(mask).reshape(-1).cpu().numpy()] = True
    return out


def embedding_masks(matrix: torch.Tensor, source: torch.Tensor, metric: str, limit: float
                    ) -> dict[str, np.ndarray]:
    """The row masks of the embedding checks (``finite``, ``overflow``, ``big``, ``zero``,
    ``rounded``; see :func:`ropebench.io.validation._check_embeddings`) by reductions on the
    device, :data:`DEVICE_ROWS` rows at a time (the temporaries of a float64 input's range checks
    are several times its size: a whole-matrix pass could run a GPU that holds the matrix out of
    memory). ``matrix``: the float32 tensor; ``source``: the caller's tensor (wider than float32
    for a float64 input, whose rows that overflow or vanish in the cast are named for it)."""
    n = len(matrix)
    wide = source.dtype.itemsize > 4 if source.is_floating_point() else False
    names = ["finite"] + (["overflow"] if wide else []) + (["big"] if metric in ("ip", "l2") else []) \
        + (["zero"] + (["rounded"] if wide else []) if metric == "cosine" else [])
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    for start in range(0, n, DEVICE_ROWS):
        block = matrix[start:start + DEVICE_ROWS]
        finite = torch.isfinite(block).all(dim=1)
        parts["finite"].append(finite)
        biggest = None
        if wide:
            values = source[start:start + DEVICE_ROWS].detach().to(torch.float64)
            finite_values = torch.isfinite(values)
            biggest = values.abs().where(finite_values, 0.0).amax(dim=1)
            parts["overflow"].append(~finite & finite_values.all(dim=1)
                                     & (biggest > float(np.finfo(np.float32).max)))
            del values, finite_values
        if "big" in parts:
            parts["big"].append(finite & (block.abs().amax(dim=1) > limit))
        if "zero" in parts:
            zero = finite & ~(block != 0).any(dim=1)
            parts["zero"].append(zero)
            if biggest is not None:
                parts["rounded"].append(zero & (biggest > 0))
    masks = {name: _rows(torch.cat(chunks), n) if chunks else np.zeros(n, dtype=bool)
             for name, chunks in parts.items()}
    masks.setdefault("overflow", np.zeros(n, dtype=bool))
    if metric == "cosine":
        masks.setdefault("rounded", np.zeros(n, dtype=bool))
    return masks


SETTLE_PAIRS = 1 << 14  # pairs per float64 block of the device settlement


class DeviceRows:
    """One item set's prepared vectors on the device, as the core sees them
    (:class:`ropebench.engines.core.stored.StoredVectors`): norms, offsets, the integer check, the
    relevant pairs' screens and the float64 settlement are computed on the device and only their
    results come back; any other read of rows goes through :func:`to_host`
    (counted), the whole array at most once (kept for later reads)."""

    def __init__(self, tensor: torch.Tensor, counters: dict[str, int]) -> None:
        self.tensor, self.counters = tensor, counters  # the counters only: the matrix can be freed
        self.shape = tuple(int(v) for v in tensor.shape)
        self.ndim = 2
        self.dtype = np.dtype(np.float32)
        self._whole: np.ndarray | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if self._whole is None:
            self._whole = to_host(self.counters, self.tensor)
        return self._whole if dtype is None else self._whole.astype(dtype)

    @property
    def T(self) -> np.ndarray:  # noqa: N802 (numpy's name)
        return np.asarray(self).T

    def __getitem__(self, key: Any) -> np.ndarray:
        if self._whole is not None:
            return self._whole[key]
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        if isinstance(key, slice) and key.step in (None, 1):
            return to_host(self.counters, self.tensor[key])
        if isinstance(key, np.ndarray) and key.dtype.kind in "iu":
            flat = key.reshape(-1).astype(np.int64)
            if flat.size and (flat.min() < -len(self) or flat.max() >= len(self)):
                raise IndexError(f"index out of bounds for axis 0 with size {len(self)}")
            # numpy's negative indices count from the end (index_select refuses them)
            distinct, inverse = np.unique(np.where(flat < 0, flat + len(self), flat), return_inverse=True)
            rows = to_host(self.counters, self.tensor, distinct)
            return rows[inverse.reshape(key.shape)]
        return np.asarray(self)[key]

    def _index(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64)).to(self.tensor.device)

    def screen_norms(self, metric: str, side: str) -> np.ndarray:
        body = self.tensor[:, :-1] if metric == "l2" else self.tensor
        out = torch.empty(len(body), dtype=torch.float64, device=body.device)
        for start in range(0, len(body), DEVICE_ROWS):
            block = body[start:start + DEVICE_ROWS].to(torch.float64)
            out[start:start + len(block)] = torch.sqrt(tree_sum(block * block))
        if metric == "l2" and side == "gallery":
            out /= 2.0
        return np.asarray(out.cpu().numpy())

    def translated_norms(self, center: np.ndarray | None) -> np.ndarray:
        shift = torch.zeros(self.shape[1], dtype=torch.float64, device=self.tensor.device) if center is None \
            else torch.from_numpy(np.asarray(center, dtype=np.float64)).to(self.tensor.device)
        out = torch.empty(len(self), dtype=torch.float64, device=self.tensor.device)
        for start in range(0, len(self), DEVICE_ROWS):
            block = self.tensor[start:start + DEVICE_ROWS].to(torch.float64) - shift
            out[start:start + len(block)] = tree_sum(block * block)
        return np.asarray(out.cpu().numpy())

    def _blocks(self) -> Iterator[torch.Tensor]:
        """The rows :data:`DEVICE_ROWS` at a time (no temporary of the whole array's size)."""
        for start in range(0, len(self), DEVICE_ROWS):
            yield self.tensor[start:start + DEVICE_ROWS]

    def integer_max(self) -> float | None:
        if not all(bool(torch.equal(block, torch.round(block))) for block in self._blocks()):
            return None
        return max((float(block.abs().amax()) for block in self._blocks() if block.numel()), default=0.0)

    def unit_scores(self, rows_q: np.ndarray, gallery: DeviceRows, rows_g: np.ndarray) -> np.ndarray:
        from ropebench.engines.torch.device import exact_kernels

        left = self.tensor.index_select(0, self._index(rows_q.reshape(-1))).reshape(*rows_q.shape, -1)
        right = gallery.tensor.index_select(0, gallery._index(rows_g.reshape(-1))).reshape(*rows_g.shape, -1)
        with exact_kernels(self.tensor.device):  # float32 products and sums (no TF32)
            scores = torch.bmm(left, right.transpose(1, 2))
        return np.asarray(scores.cpu().numpy())

    def exact_scores(self, gallery: DeviceRows, q: np.ndarray, g: np.ndarray, metric: str) -> np.ndarray:
        out = np.empty(len(q), dtype=np.float64)
        for start in range(0, len(q), SETTLE_PAIRS):
            left = self.tensor.index_select(0, self._index(q[start:start + SETTLE_PAIRS])).to(torch.float64)
            right = gallery.tensor.index_select(0, gallery._index(g[start:start + SETTLE_PAIRS])).to(torch.float64)
            if metric == "l2":
                left.sub_(right)
                scores = -tree_sum(left.mul_(left), overwrite=True)
            else:
                scores = tree_sum(left.mul_(right), overwrite=True)
            out[start:start + len(left)] = scores.cpu().numpy()
        return out

    def covers(self, precision: Any) -> bool:
        """:meth:`ropebench.engines.core.precision.Precision.covers` by reductions on the device."""
        for block in self._blocks():
            if not block.numel():
                continue
            magnitude = block.abs()
            if float(magnitude.amax()) > precision.max_input:
                return False
            if precision.min_input and bool(((magnitude > 0) & (magnitude < precision.min_input)).any()):
                return False
        return True


@dataclass
class ResidentMatrix:
    """The validated float32 ``(n, d)`` matrix on its device, with the count of what it copied
    to the host (``host_rows``, ``host_bytes``) and of the rows streamed for its digest."""

    tensor: torch.Tensor
    counters: dict[str, int] = field(default_factory=lambda: {"host_rows": 0, "host_bytes": 0, "digest_rows": 0})

    def host_matrix(self) -> np.ndarray:
        """The whole matrix on the host, counted (the compositions that read it there: catalogues,
        compression, few-shot, approximate search)."""
        return to_host(self.counters, self.tensor)

    def digest(self) -> str:
        """sha256 of the float32 matrix's bytes in row order (what the numpy path hashes),
        streamed :data:`DEVICE_ROWS` rows at a time."""
        digest = hashlib.sha256()
        for start in range(0, len(self.tensor), DEVICE_ROWS):
            chunk = np.ascontiguousarray(self.tensor[start:start + DEVICE_ROWS].cpu().numpy())
            digest.update(memoryview(chunk).cast("B"))  # type: ignore[arg-type]
            self.counters["digest_rows"] += len(chunk)
        return digest.hexdigest()

    def l2_center(self) -> np.ndarray:
        """:func:`ropebench.engines.exact.l2_center` on the device: each coordinate's lower median
        (``(d,)`` float64, the only part that comes back)."""
        n, d = self.tensor.shape
        if n == 0:
            return np.zeros(d, dtype=np.float64)
        values = torch.kthvalue(self.tensor, (n - 1) // 2 + 1, dim=0).values
        return np.asarray(values.to(torch.float64).cpu().numpy()) + 0.0  # -0.0 -> +0.0, as numpy's

    def prepare_domains(self, members: Mapping[str, np.ndarray], domains: Sequence[str], metric: str,
                        center: np.ndarray | None) -> dict[str, tuple[Any, Any, Any]]:
        """Per domain, what the core reads, ``(queries, gallery, exact)`` as :class:`DeviceRows`
        of the prepared tensors (the fields of :class:`ropebench.tasks.Vectors`, which the caller
        makes: an engine does not import the task registry above it); the torch engine screens
        from the same tensors (``DeviceRows.tensor``)."""
        shift = None if center is None else torch.from_numpy(np.asarray(center, dtype=np.float64)).to(
            self.tensor.device)
        host: dict[str, tuple[Any, Any, Any]] = {}
        for code in domains:
            rows = self.tensor.index_select(0, torch.as_tensor(members[code], device=self.tensor.device))
            queries, gallery = prepare_vectors(rows, metric, shift)
            exact = rows if metric == "l2" else None
            host_queries = DeviceRows(queries, self.counters)
            host_gallery = host_queries if gallery is queries else DeviceRows(gallery, self.counters)
            host[code] = (host_queries, host_gallery, None if exact is None else DeviceRows(exact, self.counters))
        return host


def with_host_matrix(dataset: Any) -> Any:
    """``dataset`` with its resident matrix copied to the host (counted), for a composition that
    reads the matrix there."""
    resident: ResidentMatrix = dataset.resident
    return replace(dataset, embeddings=resident.host_matrix(), resident=None)
