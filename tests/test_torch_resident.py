"""A torch tensor searched by the torch engine stays on its device (docs/screening.md, "CUDA
tensors"): validated and prepared there, bit for bit as numpy does it, the core's norms,
thresholds and float64 settlement computed there, and every row that reaches the host counted.

The machines that run this suite have no GPU, so the device path is forced for CPU tensors
(``resident.FORCE_CPU``) and a test marked ``gpu`` runs it on CUDA where there is one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ropebench
from ropebench.errors import DataError
from tests.conftest import assert_same_per_query, configured_engine, continuous_data, tied_data

torch = pytest.importorskip("torch", reason="torch is not installed (extra ropebench[torch])")

from ropebench.engines.core import scores  # noqa: E402
from ropebench.engines.exact import l2_center, prepare_vectors  # noqa: E402
from ropebench.engines.torch import resident  # noqa: E402

KS = (1, 5, 10)
NEW_COUNTERS = ("host_rows", "host_bytes", "digest_rows")


@pytest.fixture
def forced(monkeypatch):
    """CPU tensors take the device path."""
    monkeypatch.setattr(resident, "FORCE_CPU", True)


def _bits(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array).view(np.uint32 if array.dtype == np.float32 else np.uint64)


def _matrices() -> st.SearchStrategy[np.ndarray]:
    """Float32 matrices with odd d, d not a power of two, and magnitudes from subnormal to near
    float32's largest (rows of one scale each, so cosine's norms stay finite in float64)."""
    shape = st.tuples(st.integers(1, 12), st.sampled_from([1, 2, 3, 5, 7, 8, 13, 16, 33, 100]))
    return shape.flatmap(lambda s: st.tuples(
        st.just(s), st.integers(0, 2**32 - 1), st.lists(st.integers(-148, 120), min_size=s[0], max_size=s[0])
    )).map(_draw_matrix)


def _draw_matrix(args: tuple[tuple[int, int], int, list[int]]) -> np.ndarray:
    (n, d), seed, exponents = args
    rng = np.random.default_rng(seed)
    mantissa = rng.normal(size=(n, d))
    mantissa[rng.random(size=(n, d)) < 0.1] = 0.0
    matrix = (mantissa * np.exp2(np.array(exponents, dtype=np.float64))[:, None]).astype(np.float32)
    matrix[matrix.any(axis=1) == 0, 0] = 1.0  # no all-zero rows (validation refuses them under cosine)
    return matrix


def _check_prepared_and_exact(matrix: np.ndarray, metric: str, center: np.ndarray, counters: dict
                              ) -> tuple[tuple[torch.Tensor, ...], resident.DeviceRows]:
    """Assert the device's prepared rows and exact scores of every pair are numpy's bits; return
    the prepared tensors and the rows the exact scores were read from."""
    tensor = torch.from_numpy(matrix)
    n = len(matrix)
    q, g = np.repeat(np.arange(n), n), np.tile(np.arange(n), n)
    expected = prepare_vectors(matrix, metric, center=center if metric == "l2" else None)
    got = resident.prepare_vectors(tensor, metric, torch.from_numpy(center) if metric == "l2" else None)
    for mine, theirs in zip(got, expected):
        assert np.array_equal(_bits(mine.numpy()), _bits(theirs)), metric
    exact = resident.DeviceRows(tensor if metric == "l2" else got[0], counters)
    definition = matrix if metric == "l2" else expected[0]
    assert np.array_equal(_bits(exact.exact_scores(exact, q, g, metric)),
                          _bits(scores.exact_scores(definition, definition, q, g, metric)))
    return got, exact


@settings(max_examples=150, deadline=None)
@given(_matrices())
def test_prepared_rows_norms_and_exact_scores_are_numpys_bit_for_bit(matrix):
    tensor = torch.from_numpy(matrix)
    counters = {"host_rows": 0, "host_bytes": 0}
    wide = matrix.astype(np.float64)
    assert np.array_equal(_bits(resident.tree_sum(torch.from_numpy(wide * wide)).numpy()),
                          _bits(scores.tree_sum(wide * wide)))
    center = l2_center(matrix)
    on_device = resident.ResidentMatrix(tensor)
    assert np.array_equal(_bits(on_device.l2_center()), _bits(center))
    for metric in ("cosine", "ip", "l2"):
        got, exact = _check_prepared_and_exact(matrix, metric, center, counters)
        rows_q, rows_g = resident.DeviceRows(got[0], counters), resident.DeviceRows(got[1], counters)
        if metric == "l2":
            assert np.array_equal(_bits(exact.translated_norms(center)),
                                  _bits(scores.translated_norms(matrix, center)))
        for side, rows in (("queries", rows_q), ("gallery", rows_g)):
            # Norms are summed in the fixed order on the device (numpy's einsum has its own): within
            # an ulp or two, far inside the bound's margin for the rounding of the norms.
            host = np.asarray(rows.tensor.numpy())
            assert np.allclose(rows.screen_norms(metric, side), scores.screen_norms(host, metric, side),
                               rtol=1e-14, atol=0)
    assert counters == {"host_rows": 0, "host_bytes": 0}


def _forbid_full_copies(monkeypatch, n: int) -> None:
    """Fail on any host copy of a tensor with ``n`` rows or more of the matrix's shape family (the
    submitted matrix, or a prepared copy of all of it)."""
    original_cpu, original_numpy = torch.Tensor.cpu, torch.Tensor.numpy

    def check(tensor):
        if tensor.dim() == 2 and tensor.shape[0] >= n and tensor.dtype in (torch.float32, torch.float64):
            raise AssertionError(f"a full {tuple(tensor.shape)} matrix was copied to the host")

    def cpu(self, *args, **kwargs):
        check(self)
        return original_cpu(self, *args, **kwargs)

    def numpy(self, *args, **kwargs):
        check(self)
        return original_numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    monkeypatch.setattr(torch.Tensor, "numpy", numpy)
    monkeypatch.setattr(resident, "DEVICE_ROWS", 64)  # the digest's chunks: far below n
    with pytest.raises(AssertionError, match="copied to the host"):  # the guard itself works
        torch.zeros((n, 3)).numpy()


def _smallest_domain(data) -> int:
    return int(min(np.unique(data.domains, return_counts=True)[1]))


def _same_results(first, second) -> None:
    """Same numbers, per query and per task, same record; the same work counters too (runs on
    one thread: with more, which tile finishes a query first moves the settled pairs)."""
    assert_same_per_query(first, second)
    assert {t: r.to_json() for t, r in first.tasks.items()} == {t: r.to_json() for t, r in second.tasks.items()}
    assert first.submission == second.submission  # sha256 of the float32 matrix, n, d, dtype
    assert first.protocol == second.protocol
    mine, theirs = first.environment["engine"]["counters"], second.environment["engine"]["counters"]
    assert {k: v for k, v in mine.items() if k not in NEW_COUNTERS} == theirs


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("screen", ["fp32", "bf16"])
def test_a_resident_tensor_gives_the_numpy_paths_results_and_no_row_reaches_the_host(
        forced, monkeypatch, metric, screen):
    data = continuous_data(7, sizes=(240, 200, 180))
    arrays = data.arrays()
    expected = ropebench.evaluate(**arrays, engine=configured_engine("torch", screen=screen), metric=metric,
                                  ks=KS, ci=False, threads=1)
    _forbid_full_copies(monkeypatch, _smallest_domain(data))
    result = ropebench.evaluate(**{**arrays, "embeddings": torch.from_numpy(arrays["embeddings"])},
                                engine=configured_engine("torch", screen=screen), metric=metric, ks=KS, ci=False,
                                threads=1)
    _same_results(result, expected)
    counters = result.environment["engine"]["counters"]
    # Tiled blocks only (small_block=0): the core's reads all ran on the device.
    assert counters["host_rows"] == 0 and counters["host_bytes"] == 0
    assert counters["digest_rows"] == len(arrays["embeddings"])


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("ties", ["expected", "pessimistic", "optimistic"])
def test_tied_data_under_every_policy_and_groups(forced, metric, ties):
    """Exact ties (integer vectors screened exactly for ip/l2, bit-identical rows for cosine):
    the device path's prepared rows, integer check and settlement must tie as numpy's do."""
    data = tied_data(3, metric, sizes=(150, 120, 100), groups=True)
    arrays = data.arrays()
    engine = configured_engine("torch", screen="bf16")
    expected = ropebench.evaluate(**arrays, engine=engine, metric=metric, ties=ties, ks=KS, ci=False, threads=1)
    result = ropebench.evaluate(**{**arrays, "embeddings": torch.from_numpy(arrays["embeddings"])},
                                engine=engine, metric=metric, ties=ties, ks=KS, ci=False, threads=1)
    _same_results(result, expected)
    assert result.environment["engine"]["counters"]["host_rows"] == 0


def test_all_relevant_measures_read_rows_on_the_host_counted(forced):
    """MAP@R and RP count every relevant item's rank: their levels read whole rows on the host,
    through the counted copy, and give numpy's numbers."""
    data = continuous_data(9, sizes=(120, 100, 80))
    arrays = data.arrays()
    options = {"engine": configured_engine("torch", screen="bf16"), "measures": "R@K,MRR,MAP@R,RP", "ks": KS,
               "ci": False, "threads": 1}
    expected = ropebench.evaluate(**arrays, **options)
    result = ropebench.evaluate(**{**arrays, "embeddings": torch.from_numpy(arrays["embeddings"])}, **options)
    _same_results(result, expected)
    assert result.environment["engine"]["counters"]["host_rows"] > 0


def test_an_evaluation_inside_autocast_multiplies_in_float32(forced):
    """A training loop may call evaluate inside ``torch.autocast``: the engine's matmuls (tiles and
    the thresholds' relevant pairs on the device) must still be float32, or the band is wrong."""
    data = continuous_data(4, sizes=(120, 100, 80))
    arrays = data.arrays()
    expected = ropebench.evaluate(**arrays, engine="one-pass", ks=KS, ci=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = ropebench.evaluate(**{**arrays, "embeddings": torch.from_numpy(arrays["embeddings"])},
                                    engine=configured_engine("torch", screen="fp32"), ks=KS, ci=False)
    assert_same_per_query(result, expected)


def test_a_float64_tensor_and_the_default_settings(forced):
    """A float64 tensor is rounded to float32 on its device (the record names float64, as numpy's
    path does); with the engine's default settings small blocks count rows on the host, counted."""
    data = continuous_data(5, sizes=(120, 100, 80))
    arrays = {**data.arrays(), "embeddings": data.embeddings.astype(np.float64) * 3.0}
    expected = ropebench.evaluate(**arrays, engine="torch", screen="fp32", device="cpu", ks=KS, ci=False, threads=1)
    result = ropebench.evaluate(**{**arrays, "embeddings": torch.from_numpy(arrays["embeddings"])},
                                engine="torch", screen="fp32", device="cpu", ks=KS, ci=False, threads=1)
    _same_results(result, expected)
    assert result.submission["dtype"] == "float64"
    assert 0 < result.environment["engine"]["counters"]["host_rows"] <= 2 * len(arrays["embeddings"])


def test_compositions_that_read_the_matrix_on_the_host_copy_it_once_counted(forced):
    data = continuous_data(6, sizes=(120, 100, 80))
    arrays = data.arrays()
    expected = ropebench.evaluate(**arrays, engine=configured_engine("torch"), compress="fp16", ks=KS, ci=False,
                                  threads=1)
    result = ropebench.evaluate(**{**arrays, "embeddings": torch.from_numpy(arrays["embeddings"])},
                                engine=configured_engine("torch"), compress="fp16", ks=KS, ci=False, threads=1)
    _same_results(result, expected)
    counters = result.environment["engine"]["counters"]
    assert counters["host_rows"] == len(arrays["embeddings"])
    assert counters["host_bytes"] == arrays["embeddings"].nbytes


def test_other_engines_and_cpu_tensors_keep_the_numpy_path(monkeypatch):
    data = continuous_data(6, sizes=(60, 50, 40))
    arrays = {**data.arrays(), "embeddings": torch.from_numpy(data.embeddings)}
    assert not resident.applies(arrays["embeddings"])  # a CPU tensor, not forced
    monkeypatch.setattr(resident, "FORCE_CPU", True)
    from ropebench.evaluation import _resident

    assert _resident(arrays["embeddings"], "torch") and not _resident(arrays["embeddings"], "one-pass")
    result = ropebench.evaluate(**arrays, engine="one-pass", ks=KS, ci=False, threads=1)
    assert "host_rows" not in result.environment["engine"]["counters"]
    # Screened on another kind of device than the tensor's: the host path (the blocks are made there).

    assert _resident(arrays["embeddings"], "torch") and _resident(arrays["embeddings"], "torch", "cpu")
    assert not _resident(arrays["embeddings"], "torch", "cuda") and not _resident(arrays["embeddings"], "one-pass")
    assert not _resident(data.embeddings, "torch")  # numpy


def _bad_inputs() -> list[tuple[str, str, np.ndarray]]:
    rng = np.random.default_rng(2)
    base = rng.normal(size=(30, 6))
    cases = []
    for name, metric, rows, value in (("nan", "cosine", [3, 7], np.nan), ("inf", "ip", [0], -np.inf),
                                      ("zero", "cosine", [4, 5, 29], 0.0), ("big", "ip", [2], 1e19),
                                      ("big-l2", "l2", [9], -2e19), ("norms", "ip", [8], 2e18),
                                      ("overflow", "cosine", [1], 1e300), ("underflow", "cosine", [6], 1e-300)):
        matrix = base.copy()
        matrix[rows] = value
        if name == "overflow":
            matrix[2, 0] = np.nan  # a broken row beside it: both named, each for what it is
        cases.append((name, metric, matrix))
    return cases


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bad_rows_give_the_numpy_paths_message(forced, case, dtype):
    name, metric, matrix = case
    if dtype == "float32" and name in ("overflow", "underflow"):
        pytest.skip("a float64-only case")
    with np.errstate(over="ignore", under="ignore"):
        matrix = matrix.astype(dtype)
    labels = {"domains": np.array(["P", "V", "L"] * 10), "product_ids": np.arange(30) % 7,
              "item_ids": [f"item{i}" for i in range(30)]}
    with pytest.raises(DataError) as numpy_error:
        ropebench.evaluate(embeddings=matrix, **labels, engine="torch", metric=metric, ci=False)
    with pytest.raises(DataError) as device_error:
        ropebench.evaluate(embeddings=torch.from_numpy(matrix), **labels, engine="torch", metric=metric, ci=False)
    assert str(device_error.value) == str(numpy_error.value)
    # Validation names example ids; the range check (norms whose scores overflow) names the norm.
    assert ("item_id" in str(device_error.value)) == (name != "norms")


def test_bad_shapes_give_the_numpy_paths_message(forced):
    labels = {"domains": ["P", "V"], "product_ids": [1, 1]}
    for tensor in (torch.zeros(2, dtype=torch.int64), torch.zeros((2, 3), dtype=torch.int32), torch.zeros((2, 0))):
        with pytest.raises(DataError) as numpy_error:
            ropebench.evaluate(embeddings=tensor.numpy(), **labels, engine="torch", ci=False)
        with pytest.raises(DataError) as device_error:
            ropebench.evaluate(embeddings=tensor, **labels, engine="torch", ci=False)
        assert str(device_error.value) == str(numpy_error.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the device path is not run on one")
@pytest.mark.parametrize("metric", ["cosine", "l2"])
@pytest.mark.parametrize("screen", ["bf16", "fp32"])
def test_a_cuda_tensor_stays_on_the_gpu_and_gives_the_default_engines_numbers(monkeypatch, metric, screen):
    from ropebench.engines.torch import TorchEngine, TorchSettings

    data = continuous_data(7, sizes=(2000, 1500, 1200), dim=64)
    arrays = data.arrays()
    expected = ropebench.evaluate(**arrays, engine=configured_engine("one-pass"), metric=metric, ks=KS, ci=False,
                                  threads=1)
    tensor = torch.from_numpy(arrays["embeddings"]).cuda()
    _forbid_full_copies(monkeypatch, _smallest_domain(data))
    engine = TorchEngine(device=None, screen=screen, settings=TorchSettings(tile=512, small_block=0))
    result = ropebench.evaluate(**{**arrays, "embeddings": tensor}, engine=engine, metric=metric, ks=KS, ci=False,
                                threads=1)
    assert result.environment["engine"]["device"].startswith("cuda")
    assert_same_per_query(result, expected)
    assert result.environment["engine"]["counters"]["host_rows"] == 0


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("forced_path", [True, False], ids=["resident", "host"])
def test_a_callers_default_device_and_dtype_change_nothing(monkeypatch, metric, forced_path):
    """A training loop may have called ``torch.set_default_device("cuda")`` or
    ``torch.set_default_dtype(torch.float64)``: every tensor the engine makes names its device and
    dtype (the meta device stands in for CUDA here: anything made there fails), on one thread (the
    default device is per thread: the caller's is the one that runs the tiles)."""
    monkeypatch.setattr(resident, "FORCE_CPU", forced_path)
    data = continuous_data(8, sizes=(120, 100, 80))
    arrays = data.arrays()
    expected = ropebench.evaluate(**arrays, engine="one-pass", metric=metric, ks=KS, ci=False, threads=1)
    tensor = torch.from_numpy(arrays["embeddings"])
    for screen in ("fp32", "bf16"):
        torch.set_default_device("meta")
        torch.set_default_dtype(torch.float64)
        try:
            result = ropebench.evaluate(**{**arrays, "embeddings": tensor},
                                        engine=configured_engine("torch", screen=screen), metric=metric, ks=KS,
                                        ci=False, threads=1)
        finally:
            torch.set_default_device(None)
            torch.set_default_dtype(torch.float32)
        assert_same_per_query(result, expected)


def test_an_empty_matrix_is_recorded_alike_on_both_paths(forced):
    """No rows: the numpy path's array digest raised TypeError (a memoryview cast of a zero extent)
    where the device path hashed nothing; both now record the same empty evaluation."""
    labels = {"domains": np.array([], dtype=str), "product_ids": np.array([], dtype=np.int64)}
    matrix = np.zeros((0, 6), dtype=np.float32)
    expected = ropebench.evaluate(embeddings=matrix, **labels, engine="torch", ks=KS, ci=False)
    result = ropebench.evaluate(embeddings=torch.from_numpy(matrix), **labels, engine="torch", ks=KS, ci=False)
    assert result.submission == expected.submission
    assert {t: r.to_json() for t, r in result.tasks.items()} == {t: r.to_json() for t, r in expected.tasks.items()}


@pytest.mark.parametrize("case", _bad_inputs(), ids=lambda c: c[0])
def test_validation_runs_in_row_chunks_with_the_same_messages(forced, monkeypatch, case):
    """The device checks run :data:`resident.DEVICE_ROWS` rows at a time: no temporary of the whole
    matrix's size (a float64 input's range checks made several, enough to run a GPU that holds a
    large matrix out of memory), and the chunk edges change no message."""
    name, metric, matrix = case
    labels = {"domains": np.array(["P", "V", "L"] * 10), "product_ids": np.arange(30) % 7,
              "item_ids": [f"item{i}" for i in range(30)]}
    with pytest.raises(DataError) as numpy_error:
        ropebench.evaluate(embeddings=matrix, **labels, engine="torch", metric=metric, ci=False)
    monkeypatch.setattr(resident, "DEVICE_ROWS", 7)
    widest = [0]
    original_isfinite, original_abs = torch.isfinite, torch.Tensor.abs

    def isfinite(tensor):
        widest[0] = max(widest[0], len(tensor))
        return original_isfinite(tensor)

    def absolute(tensor):
        widest[0] = max(widest[0], len(tensor))
        return original_abs(tensor)

    monkeypatch.setattr(torch, "isfinite", isfinite)
    monkeypatch.setattr(torch.Tensor, "abs", absolute)
    with pytest.raises(DataError) as device_error:
        ropebench.evaluate(embeddings=torch.from_numpy(matrix), **labels, engine="torch", metric=metric, ci=False)
    assert str(device_error.value) == str(numpy_error.value)
    assert 0 < widest[0] <= 7


def test_device_rows_index_as_numpy_does():
    """Any read the core makes of a :class:`resident.DeviceRows` gives numpy's rows: negative
    indices count from the end (``index_select`` refuses them), out-of-range ones raise IndexError."""
    matrix = np.arange(24, dtype=np.float32).reshape(6, 4)
    counters = {"host_rows": 0, "host_bytes": 0}
    rows = resident.DeviceRows(torch.from_numpy(matrix), counters)
    for key in (-1, 0, 5, np.int64(-6), np.array([-1, 0, -2, 3]), np.array([[5, -5], [0, 0]]), slice(-3, None),
                np.array([], dtype=np.int64)):
        assert np.array_equal(rows[key], matrix[key]), key
    for key in (6, -7, np.array([0, 6]), np.array([-7])):
        with pytest.raises(IndexError):
            matrix[key]
        with pytest.raises(IndexError):
            rows[key]
    assert counters["host_rows"] == 1 + 1 + 1 + 1 + 4 + 3 + 3 + 0  # distinct rows, each read counted


def test_the_integer_and_range_checks_run_in_row_chunks_with_numpys_answers(monkeypatch):
    """``integer_max`` and ``covers`` (the bf16 range check) read the prepared rows in chunks, as
    the host path's check does (no temporary of the whole array's size), with numpy's answers."""
    from ropebench.engines.core.precision import BF16

    rng = np.random.default_rng(5)
    integers = rng.integers(-50, 50, size=(20, 6)).astype(np.float32)
    fractions = integers.copy()
    fractions[17, 2] += 0.5
    subnormal = rng.normal(size=(20, 6)).astype(np.float32)
    subnormal[13, 1] = np.float32(2.0 ** -130)
    huge = rng.normal(size=(20, 6)).astype(np.float32)
    huge[19, 5] = np.float32(3e38)
    monkeypatch.setattr(resident, "DEVICE_ROWS", 3)
    widest = [0]
    original_round, original_abs = torch.round, torch.Tensor.abs

    def rounded(tensor, *args, **kwargs):
        widest[0] = max(widest[0], len(tensor))
        return original_round(tensor, *args, **kwargs)

    def absolute(tensor):
        widest[0] = max(widest[0], len(tensor))
        return original_abs(tensor)

    monkeypatch.setattr(torch, "round", rounded)
    monkeypatch.setattr(torch.Tensor, "abs", absolute)
    for matrix in (integers, fractions, subnormal, huge, np.zeros((0, 6), dtype=np.float32)):
        rows = resident.DeviceRows(torch.from_numpy(matrix), {"host_rows": 0, "host_bytes": 0})
        exact = np.array_equal(matrix, np.round(matrix))
        assert rows.integer_max() == (float(np.abs(matrix).max(initial=0.0)) if exact else None)
        assert rows.covers(BF16) == BF16.covers(matrix)
    assert 0 < widest[0] <= 3


def test_the_screen_measurement_ignores_a_callers_default_device_and_dtype(monkeypatch):
    """The automatic screen choice times random tiles once per process: made with a CPU generator,
    they must name the CPU and float32 (a default device of "cuda" refused the CPU generator; the
    meta device stands in for it here)."""
    from ropebench.engines.torch import device as device_module

    monkeypatch.setattr(device_module, "_measured", {})
    data = continuous_data(8, sizes=(60, 50, 40))
    arrays = data.arrays()
    expected = ropebench.evaluate(**arrays, engine="one-pass", ks=KS, ci=False, threads=1)
    torch.set_default_device("meta")
    torch.set_default_dtype(torch.float64)
    try:
        result = ropebench.evaluate(**arrays, engine="torch", device="cpu", ks=KS, ci=False, threads=1)
    finally:
        torch.set_default_device(None)
        torch.set_default_dtype(torch.float32)
    assert result.environment["engine"]["screen_choice"] == "measured"
    assert_same_per_query(result, expected)


def _odd_tensors(matrix: np.ndarray) -> dict[str, object]:
    base = torch.from_numpy(matrix)
    with torch.inference_mode():
        inference = base.clone()
    wide = torch.from_numpy(np.repeat(matrix, 2, axis=1))
    return {"transposed": base.T.contiguous().T, "strided": wide[:, ::2], "non-leaf with grad":
            base.clone().requires_grad_(True) * 1.0, "inference tensor": inference,
            "float16": base.half(), "bfloat16": base.bfloat16()}


@pytest.mark.parametrize("kind", list(_odd_tensors(np.zeros((1, 1), dtype=np.float32))))
def test_odd_tensors_give_the_numpy_paths_results(monkeypatch, kind):
    """Transposed and strided views, a tensor that requires grad, an inference-mode tensor,
    float16 and bfloat16: the device path reads each as the numpy path does (same numbers, same
    record: the dtype a bfloat16 tensor is read as is float32 on both)."""
    data = continuous_data(10, sizes=(90, 80, 70))
    arrays = data.arrays()
    tensor = _odd_tensors(arrays["embeddings"])[kind]
    options = {"engine": configured_engine("torch", screen="bf16"), "metric": "l2", "ks": KS, "ci": False,
               "threads": 1}
    expected = ropebench.evaluate(**{**arrays, "embeddings": tensor}, **options)
    assert "host_rows" not in expected.environment["engine"]["counters"]
    monkeypatch.setattr(resident, "FORCE_CPU", True)
    result = ropebench.evaluate(**{**arrays, "embeddings": tensor}, **options)
    _same_results(result, expected)


def _cuda_scalar_division(monkeypatch) -> None:
    """Emulate CUDA's division by a Python number on the CPU: PyTorch's CUDA kernel multiplies by
    the reciprocal (rounded once in the tensor's own precision; its source says it "may lose one
    bit of precision"), and ``number / tensor`` is ``tensor.reciprocal() * number``, while the CPU
    kernels divide. A CPU test would miss a bit it changes; with this it cannot."""
    original_div, original_rdiv, original_idiv = torch.Tensor.__truediv__, torch.Tensor.__rtruediv__, \
        torch.Tensor.__itruediv__

    def reciprocal(tensor, number):
        return torch.tensor(1.0, dtype=tensor.dtype) / torch.tensor(float(number), dtype=tensor.dtype)

    def div(self, other):
        if isinstance(other, (int, float)) and self.is_floating_point():
            return self * reciprocal(self, other)
        return original_div(self, other)

    def rdiv(self, other):
        if isinstance(other, (int, float)) and self.is_floating_point():
            return original_rdiv(self, 1.0) * other
        return original_rdiv(self, other)

    def idiv(self, other):
        if isinstance(other, (int, float)) and self.is_floating_point():
            return self.mul_(reciprocal(self, other))
        return original_idiv(self, other)

    monkeypatch.setattr(torch.Tensor, "__truediv__", div)
    monkeypatch.setattr(torch.Tensor, "__rtruediv__", rdiv)
    monkeypatch.setattr(torch.Tensor, "__itruediv__", idiv)
    monkeypatch.setattr(torch, "div", lambda *args, **kwargs: pytest.fail("torch.div: check its CUDA rounding"))
    monkeypatch.setattr(torch, "true_divide", lambda *args, **kwargs: pytest.fail("torch.true_divide"))


@settings(max_examples=40, deadline=None)
@given(_matrices())
def test_the_bits_hold_under_cudas_division_by_a_number(matrix):
    """Preparation and settlement divide only by tensors (and by 2.0, exact either way): under
    CUDA's reciprocal division by a Python number the bits stay numpy's."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _cuda_scalar_division(monkeypatch)
        tensor = torch.from_numpy(matrix)
        center = l2_center(matrix)
        counters = {"host_rows": 0, "host_bytes": 0}
        for metric in ("cosine", "ip", "l2"):
            _, rows = _check_prepared_and_exact(matrix, metric, center, counters)
            rows.screen_norms(metric, "gallery")  # divides by 2.0: runs under the emulation
        assert np.array_equal(_bits(resident.DeviceRows(tensor, counters).translated_norms(center)),
                              _bits(scores.translated_norms(matrix, center)))
