"""``--engine torch``: what it records, how it is chosen, its CPU selection on bf16 bits, the
settings it restores, and (where CUDA exists) the GPU path. The property suite and the planted
near ties run it too (tests/conftest.py: once per screen)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import ropebench
from ropebench.cli import cli
from ropebench.errors import MissingExtraError, UsageError
from tests.conftest import Spy, assert_same_per_query, configured_engine, continuous_data

torch = pytest.importorskip("torch", reason="torch is not installed (extra ropebench[torch])")

SAMPLE = Path(__file__).resolve().parents[1] / "sample_embeddings"
KS = (1, 5, 10)


def test_importing_ropebench_never_imports_torch():
    code = ("import sys, ropebench, ropebench.engines, ropebench.cli; "
            "from ropebench.engines import engine_names; assert 'torch' in engine_names(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("screen", ["bf16", "fp32"])
def test_the_result_records_device_screen_band_and_torch(screen):
    data = continuous_data(3, sizes=(150, 120, 100))
    spy = Spy(configured_engine("torch", screen=screen))
    result = data.evaluate(spy, metric="cosine", ks=KS, ci=False)
    recorded = result.environment["engine"]
    assert recorded["name"] == "torch" and recorded["device"] == "cpu" and recorded["screen"] == screen
    assert recorded["screen_choice"] == "given" and recorded["torch"] == torch.__version__
    assert recorded["device_name"] and recorded["pairs_sent"] > 0
    # cosine, d = 16: bf16's worst-case band is 2⁻⁷ + 2⁻⁸|ŝ| wide; its residual band (each vector's
    # own rounding, about 0.4 · 2⁻⁸ relative, twice, plus half an ulp of ŝ) well below that, but
    # above 2⁻⁹; float32's about 16 · 2⁻²⁴.
    assert (0.002 < recorded["band_median"] < 0.0078) if screen == "bf16" else (recorded["band_median"] < 2e-6)
    assert_same_per_query(result, data.evaluate(configured_engine("one-pass"), metric="cosine", ks=KS, ci=False))


def test_the_screen_is_measured_once_when_not_given(monkeypatch):
    from ropebench.engines.torch import TorchEngine, device

    calls = []
    original = device.measured_screen

    def counting(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(device, "_measured", {})
    monkeypatch.setattr("ropebench.engines.torch.measured_screen", counting)
    data = continuous_data(4, sizes=(90, 80, 70))
    for _ in range(2):
        result = data.evaluate(TorchEngine(device="cpu"), metric="ip", ks=KS, ci=False)
        recorded = result.environment["engine"]
        assert recorded["screen_choice"] == "measured" and recorded["screen"] in ("fp32", "bf16")
        assert (recorded["screen"] == "bf16") == (recorded["bf16_speedup"] >= device.BF16_GAIN)
    assert len(calls) == 2 and len(device._measured) == 1  # measured on the first call, then cached


def test_inputs_outside_bf16s_normal_range_screen_in_fp32():
    data = continuous_data(5, sizes=(80, 70, 60))
    emb = data.embeddings.copy()
    emb[::7, 0] = np.float32(2.0 ** -130)  # subnormal: a bf16 kernel would drop it
    data = data.with_embeddings(emb)
    result = data.evaluate(configured_engine("torch", screen="bf16"), metric="ip", ks=KS, ci=False)
    assert result.environment["engine"]["screen"] == "fp32"
    assert "screen_fallback" in result.environment["engine"]
    assert_same_per_query(result, data.evaluate(configured_engine("one-pass"), metric="ip", ks=KS, ci=False))


def test_the_callers_torch_settings_are_restored():
    threads, precision = torch.get_num_threads(), torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")  # as a training loop might have set it
    try:
        continuous_data(6, sizes=(80, 70, 60)).evaluate(configured_engine("torch"), metric="cosine", ks=KS,
                                                        ci=False, threads=2)
        assert torch.get_float32_matmul_precision() == "medium"
        assert torch.get_num_threads() == threads
    finally:
        torch.set_float32_matmul_precision(precision)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=64),
       tau=st.floats(-1e4, 1e4, allow_nan=False, width=32) | st.sampled_from([0.0, -0.0, 1e-40, -1e-40]))
def test_selection_on_bf16_bits_keeps_every_score_at_or_above_the_cut_off(values, tau):
    """The CPU selection compares int16 bit patterns; it must keep every finite bf16 value >= tau
    (and may keep a few more below it, the ones rounding tau down to bf16 lets through)."""
    from ropebench.engines.torch.bits import bf16_at_least

    bits = np.array(values, dtype=np.uint16).view(np.int16)
    floats = (bits.astype(np.int32) << 16).view(np.float32)
    finite = np.isfinite(floats)
    mask = bf16_at_least(bits, float(np.float32(tau)), np.empty(len(bits), dtype=bool))
    assert mask[finite & (floats >= np.float32(tau))].all()
    # Nothing below the largest bf16 value at or below tau (every bf16 pattern's value, listed: a
    # relative allowance fails among the subnormals, where bf16's spacing is absolute).
    every = (np.arange(1 << 16, dtype=np.uint32) << 16).view(np.float32)
    lowest = every[np.isfinite(every) & (every <= np.float32(tau))].max()
    assert not mask[finite & (floats < lowest)].any()


def test_the_cli_runs_the_torch_engine_with_the_default_engines_numbers(tmp_path):
    runner = CliRunner()
    common = [str(SAMPLE / "cls_cd.parquet"), "-m", str(SAMPLE / "manifest.parquet"), "--quiet"]
    torch_run = runner.invoke(cli, ["evaluate", *common, "--engine", "torch", "--screen", "bf16",
                                     "--device", "cpu", "--out", str(tmp_path / "t.json")])
    assert torch_run.exit_code == 0, torch_run.output
    default = runner.invoke(cli, ["evaluate", *common, "--out", str(tmp_path / "d.json")])
    assert default.exit_code == 0, default.output
    assert torch_run.output == default.output
    mine, theirs = (json.loads((tmp_path / name).read_text()) for name in ("t.json", "d.json"))
    assert mine["tasks"] == theirs["tasks"]
    assert mine["environment"]["engine"]["screen"] == "bf16"


def test_device_and_screen_need_the_torch_engine_and_a_real_device():
    runner = CliRunner()
    common = [str(SAMPLE / "cls_cd.parquet"), "-m", str(SAMPLE / "manifest.parquet")]
    result = runner.invoke(cli, ["evaluate", *common, "--screen", "bf16"])
    assert result.exit_code == 2 and "--device and --screen go with --engine torch" in result.output
    result = runner.invoke(cli, ["evaluate", *common, "--engine", "torch", "--device", "tpu"])
    assert result.exit_code == 2 and "--device 'tpu'" in result.output
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA device"):
            ropebench.engines.get_engine("torch", device="cuda")


def test_a_missing_torch_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("ropebench.engines.torch")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingExtraError, match=r"ropebench\[torch\]"):
        ropebench.engines.get_engine("torch")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the GPU path is not run")
@pytest.mark.parametrize("screen", ["bf16", "fp32"])
def test_cuda_tensors_give_the_default_engines_numbers(screen):
    data = continuous_data(7, sizes=(400, 350, 300))
    tensor = torch.from_numpy(data.embeddings).cuda()
    arrays = {**data.arrays(), "embeddings": tensor}
    result = ropebench.evaluate(**arrays, engine="torch", screen=screen, ks=KS, ci=False)
    assert result.environment["engine"]["device"].startswith("cuda")  # the tensor's device by default
    assert_same_per_query(result, data.evaluate(configured_engine("one-pass"), ks=KS, ci=False))



def test_device_copies_and_residuals_are_made_chunk_by_chunk_with_the_same_bits(monkeypatch):
    """Converted a few rows at a time (chunks that do not divide the rows), the block's device
    copy is the bf16 rounding of the rows in tile order, bit for bit, and each residual norm is
    |x̂ − x| of that rounding; a whole evaluation run with such chunks gives the default engine's counts."""
    from ropebench.engines.torch import blocks

    monkeypatch.setattr(blocks, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    order = rng.permutation(40)
    copy = blocks.to_device(x, order, torch.device("cpu"), torch.bfloat16)
    assert torch.equal(copy.view(torch.int16), torch.from_numpy(x[order]).bfloat16().view(torch.int16))
    rounded = torch.from_numpy(x).bfloat16().float().numpy().astype(np.float64)
    expected = np.linalg.norm(rounded - x.astype(np.float64), axis=1)
    got = blocks.residual_norms(x, torch.device("cpu"), torch.bfloat16)
    assert got is not None and np.allclose(got, expected, rtol=1e-14, atol=0) and (got > 0).all()
    data = continuous_data(8, sizes=(90, 80, 70))
    result = data.evaluate(configured_engine("torch", screen="bf16"), metric="cosine", ks=KS, ci=False)
    assert_same_per_query(result, data.evaluate(configured_engine("one-pass"), metric="cosine", ks=KS, ci=False))


def _matmul_flags() -> dict[str, object]:
    """Every matmul-precision flag a caller can see, each as its value or "raises" (torch 2.9+
    refuses to read the legacy ones once the legacy and new APIs were mixed)."""
    def read(getter):
        try:
            return getter()
        except RuntimeError:
            return "raises"

    flags = {"precision": read(torch.get_float32_matmul_precision),
             "allow_tf32": read(lambda: torch.backends.cuda.matmul.allow_tf32),
             "bf16_reduction": torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction,
             "bf16_split_k": read(lambda: torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction_split_k)}
    if hasattr(torch._C, "_get_fp32_precision_getter"):
        for backend, op in (("generic", "all"), ("cuda", "matmul"), ("mkldnn", "matmul")):
            flags[f"{backend}.{op}"] = torch._C._get_fp32_precision_getter(backend, op)
    return flags


@pytest.fixture
def pristine_matmul_flags():
    """The process's matmul flags put back as torch starts them, whatever a test set."""
    yield
    if hasattr(torch._C, "_get_fp32_precision_getter"):
        torch._C._set_fp32_precision_setter("generic", "all", "none")
    torch.set_float32_matmul_precision("highest")
    if hasattr(torch._C, "_get_fp32_precision_getter"):
        for backend in ("cuda", "mkldnn"):
            torch._C._set_fp32_precision_setter(backend, "matmul", "none")
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (True, True)


def _set_tf32_legacy():
    torch.backends.cuda.matmul.allow_tf32 = True


def _set_high():
    torch.set_float32_matmul_precision("high")


def _set_medium():
    torch.set_float32_matmul_precision("medium")


def _set_new_cuda():
    torch.backends.cuda.matmul.fp32_precision = "tf32"


def _set_new_global():
    torch.backends.fp32_precision = "tf32"  # what recent transformers' enable_tf32 does


def _set_new_mkldnn():
    torch.backends.mkldnn.matmul.fp32_precision = "bf16"


def _set_no_split_k():
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = (False, False)


def _set_mixed():
    torch.set_float32_matmul_precision("high")
    torch.backends.cuda.matmul.fp32_precision = "ieee"


CALLER_FLAGS = [_set_tf32_legacy, _set_high, _set_medium, _set_new_cuda, _set_new_global, _set_new_mkldnn, _set_mixed,
                _set_no_split_k]


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("setup", CALLER_FLAGS, ids=lambda f: f.__name__.removeprefix("_set_"))
def test_tf32_and_bf16_passes_are_off_inside_and_the_callers_flags_come_back_exactly(
        pristine_matmul_flags, setup, device):
    """A training loop may allow TF32 (or oneDNN's bf16 passes) through the legacy flags or torch
    2.9's ``fp32_precision`` ones: inside, every float32 matmul must be IEEE float32 (the fp32
    band assumes it), entering must not raise on a mix of the two APIs, and afterwards the caller
    reads back exactly what it had. Only flags are touched: a CUDA device object works here."""
    from ropebench.engines.torch.device import exact_kernels

    if setup in (_set_new_cuda, _set_new_global, _set_new_mkldnn, _set_mixed) and \
            not hasattr(torch._C, "_get_fp32_precision_getter"):
        pytest.skip("torch before 2.9 has no fp32_precision flags")
    setup()
    before = _matmul_flags()
    with exact_kernels(torch.device(device)):
        inside = _matmul_flags()
    assert inside["precision"] == "highest" and inside["allow_tf32"] is False
    assert inside["bf16_reduction"] is False
    assert inside.get("cuda.matmul", "ieee") == "ieee" and inside.get("mkldnn.matmul", "ieee") == "ieee"
    assert _matmul_flags() == before


def test_the_flags_stay_exact_while_any_worker_is_inside(pristine_matmul_flags):
    """Engine workers enter and leave in any order: the caller's flags come back only when the
    last one leaves, never while another thread still multiplies."""
    import threading

    from ropebench.engines.torch.device import exact_kernels

    _set_high()
    before = _matmul_flags()
    entered, release = threading.Event(), threading.Event()
    seen: list[object] = []

    def worker():
        with exact_kernels(torch.device("cpu")):
            entered.set()
            release.wait(10)
            seen.append(_matmul_flags()["precision"])

    thread = threading.Thread(target=worker)
    with exact_kernels(torch.device("cpu")):
        thread.start()
        assert entered.wait(10)
    assert _matmul_flags()["precision"] == "highest"  # the worker is still inside
    release.set()
    thread.join(10)
    assert seen == ["highest"]
    assert _matmul_flags() == before


def test_an_evaluation_runs_under_the_new_tf32_api(pristine_matmul_flags):
    """torch 2.9+ raised on reading the legacy flag after ``torch.backends.fp32_precision =
    "tf32"``: the engine must run (in IEEE float32) and leave the caller's setting as it was."""
    if not hasattr(torch._C, "_get_fp32_precision_getter"):
        pytest.skip("torch before 2.9 has no fp32_precision flags")
    data = continuous_data(6, sizes=(80, 70, 60))
    expected = data.evaluate(configured_engine("one-pass"), metric="cosine", ks=KS, ci=False)
    _set_new_global()
    before = _matmul_flags()
    result = data.evaluate(configured_engine("torch", screen="fp32"), metric="cosine", ks=KS, ci=False, threads=2)
    assert_same_per_query(result, expected)
    assert _matmul_flags() == before
