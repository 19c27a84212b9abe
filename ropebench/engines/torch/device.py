"""Where and how the torch engine screens: the device, the screening precision (given, or measured
once per process), and the kernel settings that keep the certified bound true. No search here.

Only this subpackage imports torch (``import ropebench`` never does).
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ropebench.engines.core.precision import BF16, BF16_TENSOR_CORES, FP32, Precision
from ropebench.errors import UsageError

__all__ = ["resolve_device", "device_name", "precision_for", "measured_screen", "exact_kernels", "SCREENS",
           "screen_dtype", "release_free_memory"]

SCREENS = ("fp32", "bf16")
# Automatic choice: bf16 is chosen only when its screen (GEMM and selection) is at least this much
# faster than fp32's, since its wider band sends more pairs to the float64 settlement.
BF16_GAIN = 1.5
_measured: dict[tuple[str, int], tuple[str, float]] = {}


def resolve_device(device: str | None) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` as a torch device; None: cuda when available, else cpu.

    Raises:
        UsageError: an unknown spelling, or a device this machine does not have.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {device!r}: choose from cpu, cuda, cuda:N, mps") from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: this torch build or machine has no CUDA device. Fix: use "
                             "--device cpu, or install a CUDA build of torch on a machine with a GPU")
        if chosen.index is not None and chosen.index >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif chosen.type == "mps":
        if not torch.backends.mps.is_available():
            raise UsageError(f"--device {device}: MPS is not available here. Fix: use --device cpu")
    elif chosen.type != "cpu":
        raise UsageError(f"--device {device!r}: choose from cpu, cuda, cuda:N, mps")
    return chosen


def device_name(device: torch.device) -> str:
    """A readable name of the device (the GPU's name; the CPU's model)."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    if device.type == "mps":
        return "Apple MPS"
    from ropebench.provenance import cpu_name

    return str(cpu_name())


def precision_for(screen: str, device: torch.device) -> Precision:
    """The certified rounding model of ``screen`` on ``device`` (docs/screening.md)."""
    if screen == "fp32":
        return FP32
    if screen == "bf16":
        return BF16 if device.type == "cpu" else BF16_TENSOR_CORES
    raise UsageError(f"--screen {screen!r}: choose from {', '.join(SCREENS)}")


def screen_dtype(screen: str) -> torch.dtype:
    return torch.bfloat16 if screen == "bf16" else torch.float32


def measured_screen(device: torch.device, dim: int, rows: int = 1024, columns: int = 4096) -> tuple[str, float]:
    """``(screen, bf16 speed-up)``: bf16 when its tile (GEMM and the engine's selection) runs at
    least :data:`BF16_GAIN` times faster than fp32's on this device (one torch thread on the CPU,
    as the engine's workers run); measured once per process and dimension."""
    key = (str(device), dim)
    if key not in _measured:
        generator = torch.Generator().manual_seed(0)
        # Made on the CPU in float32 whatever the caller's default device and dtype (a training
        # loop's set_default_device("cuda") would refuse the CPU generator), then moved.
        left = torch.randn(rows, dim, generator=generator, device="cpu", dtype=torch.float32).to(device)
        right = torch.randn(columns, dim, generator=generator, device="cpu", dtype=torch.float32).to(device)
        seconds = {}
        threads = torch.get_num_threads()
        if device.type == "cpu":
            torch.set_num_threads(1)
        with exact_kernels(device):
            for screen in SCREENS:
                a, b = left.to(screen_dtype(screen)), right.to(screen_dtype(screen))
                best = np.inf
                for _ in range(3):
                    start = time.perf_counter()
                    _select(torch.mm(a, b.T))
                    best = min(best, time.perf_counter() - start)
                seconds[screen] = best
        torch.set_num_threads(threads)
        gain = seconds["fp32"] / max(seconds["bf16"], 1e-9)
        _measured[key] = ("bf16" if gain >= BF16_GAIN else "fp32", float(gain))
    return _measured[key]


def _select(scores: torch.Tensor) -> int:
    """The engine's selection of one tile (for timing): numpy on the CPU (on the bits of a bf16
    tile, as :mod:`.blocks` does), a comparison and ``nonzero`` on other devices."""
    if scores.device.type != "cpu":
        return len(torch.nonzero(scores >= 1.0))  # copies the indices back: waits for the device
    from ropebench.engines.torch.bits import bf16_at_least

    mask = np.empty(tuple(scores.shape), dtype=bool)
    if scores.dtype == torch.bfloat16:
        return len(np.flatnonzero(bf16_at_least(scores.view(torch.int16).numpy(), 1.0, mask)))
    return len(np.flatnonzero(np.greater_equal(scores.numpy(), np.float32(1.0), out=mask)))


_KERNELS = threading.Lock()  # guards the process-wide matmul flags below
_kernels_depth = 0  # exact_kernels entries open now, in any thread
_kernels_saved: dict[str, Any] = {}  # the caller's flags, restored when the last entry closes


def _new_api() -> bool:
    """Whether torch has the per-backend ``fp32_precision`` flags (2.9+), which must not be mixed
    with the legacy ones: reading ``allow_tf32`` or ``get_float32_matmul_precision()`` raises once
    a caller set them through the new API (``torch.backends.fp32_precision = "tf32"``)."""
    return hasattr(torch._C, "_get_fp32_precision_getter")


def _legacy_precision() -> str:
    """The legacy ``float32_matmul_precision`` even where torch refuses to read it (a caller mixed
    the legacy and new APIs): deduced from the two checks torch makes on it."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        pass
    getter = torch._C._get_fp32_precision_getter
    cuda, mkldnn = getter("cuda", "matmul"), getter("mkldnn", "matmul")
    try:
        torch._C._get_cublas_allow_tf32()  # raises iff (legacy != highest) != (cuda == tf32)
        legacy_tf32 = cuda == "tf32"
    except RuntimeError:
        legacy_tf32 = cuda != "tf32"
    if not legacy_tf32:
        return "highest"
    # Refused with the legacy flag above highest: mkldnn's bf16 wants medium, its tf32 wants high.
    return "high" if mkldnn == "bf16" else "medium" if mkldnn == "tf32" else "high"


def _save_kernel_flags() -> dict[str, Any]:
    matmul = torch.backends.cuda.matmul
    saved: dict[str, Any] = {"bf16": matmul.allow_bf16_reduced_precision_reduction}
    try:  # newer torch also keeps whether split-K is allowed: (reduced precision, split-K)
        saved["bf16"] = (saved["bf16"], bool(matmul.allow_bf16_reduced_precision_reduction_split_k))
    except (AttributeError, RuntimeError):
        pass
    if _new_api():
        getter = torch._C._get_fp32_precision_getter
        saved.update(precision=_legacy_precision(), cuda=getter("cuda", "matmul"),
                     mkldnn=getter("mkldnn", "matmul"))
    else:
        saved.update(precision=torch.get_float32_matmul_precision(), tf32=matmul.allow_tf32)
    return saved


def _restore_kernel_flags(saved: dict[str, Any]) -> None:
    torch.set_float32_matmul_precision(saved["precision"])  # the legacy flag (and, 2.9+, the new ones)
    if _new_api():  # then the new ones exactly as they were (only the new API's setters: no mix)
        torch._C._set_fp32_precision_setter("cuda", "matmul", saved["cuda"])
        torch._C._set_fp32_precision_setter("mkldnn", "matmul", saved["mkldnn"])
    else:
        torch.backends.cuda.matmul.allow_tf32 = saved["tf32"]
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = saved["bf16"]


@contextlib.contextmanager
def exact_kernels(device: torch.device) -> Iterator[None]:
    """Kernels as the bound assumes them, restored afterwards: float32 matmuls in full float32
    (no TF32 or bf16 passes, which a training loop may have allowed, through the legacy flags or
    torch 2.9's ``fp32_precision`` ones: cuBLAS and oneDNN both set to IEEE), no autocast (an
    evaluation called inside ``torch.autocast`` would otherwise multiply float32 tensors in
    fp16/bf16; autocast is per thread, so each thread that multiplies enters this) and bf16 GEMMs
    without reduced-precision split-K reductions.

    The matmul flags are process-wide: the first entry (in any thread) saves the caller's and
    sets them, the last exit restores them, so engine workers entering and leaving in any order
    never run a matmul under the caller's flags, and the caller gets back exactly what it had."""
    global _kernels_depth, _kernels_saved
    with _KERNELS:
        if _kernels_depth == 0:
            _kernels_saved = _save_kernel_flags()
            torch.set_float32_matmul_precision("highest")  # legacy flag; 2.9+: cuBLAS and oneDNN IEEE too
            if not _new_api():
                torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        _kernels_depth += 1
    try:
        try:
            no_autocast: Any = torch.autocast(device_type=device.type, enabled=False)
        except RuntimeError:  # a device type without autocast
            no_autocast = contextlib.nullcontext()
        with no_autocast:
            yield
    finally:
        with _KERNELS:
            _kernels_depth -= 1
            if _kernels_depth == 0:
                _restore_kernel_flags(_kernels_saved)


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None (another C library, or not Linux)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
        return trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the operating system (glibc ``malloc_trim(0)``; a no-op
    elsewhere). It frees nothing that is in use and changes no allocator setting: it only undoes
    what glibc keeps. The tiles' temporaries (candidates, float64 settlement batches) are freed in
    two worker threads' arenas of varying sizes, and glibc keeps those pages resident (its mmap
    threshold rises after the first large free); called between blocks and every
    :data:`TRIM_TILES` tiles, it took the engine's peak RSS down by about 50 MiB at ROPE-test
    size for well under a millisecond a call (docs/screening.md)."""
    if _TRIM is not None:
        _TRIM(0)
