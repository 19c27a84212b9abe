"""The one-pass engine's compiled tile selection (ropebench/engines/kernels/select.py): exactly the
scores at or above their row's or their column's cut-off, against numpy, with exact ties at the
cut-offs, ±inf cut-offs, rows only, and tiles whose candidates outgrow the first outputs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ropebench.engines import onepass

pytest.importorskip("numba")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 70), m=st.integers(1, 140),
       rows_only=st.booleans(), dense=st.booleans())
def test_the_compiled_selection_is_numpys(seed, n, m, rows_only, dense):
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(n, m)) * 10.0 ** rng.uniform(-3, 3)).astype(np.float32)
    scores[:, rng.random(m) < 0.2] = scores[:, :1]  # exact duplicates across columns
    level = -1.0 if dense else 1.5
    threshold_r = np.where(rng.random(n) < 0.5, rng.choice(scores.ravel(), n), level).astype(np.float32)
    threshold_c = np.where(rng.random(m) < 0.5, rng.choice(scores.ravel(), m), level).astype(np.float32)
    threshold_r[rng.random(n) < 0.1] = np.inf
    threshold_c[rng.random(m) < 0.1] = -np.inf
    buffers = threading.local()
    if seed % 2:  # odd seeds: outputs with room for one, grown as needed
        buffers.selection = onepass._selection_buffers(1)
    r, c, v = onepass._select_compiled(scores, threshold_r, None if rows_only else threshold_c, buffers)
    cut = threshold_r[:, None] if rows_only else np.minimum(threshold_r[:, None], threshold_c[None, :])
    expected_r, expected_c = np.nonzero(scores >= cut)
    assert r.tolist() == expected_r.tolist() and c.tolist() == expected_c.tolist()
    assert np.array_equal(v, scores[expected_r, expected_c])
    assert len(buffers.selection[0]) >= len(r)


def test_a_tile_with_more_candidates_than_the_first_room_is_selected_whole():
    scores = np.arange(100 * 100, dtype=np.float32).reshape(100, 100)
    buffers = threading.local()
    r, c, v = onepass._select_compiled(scores, np.full(100, -1, np.float32), np.full(100, np.inf, np.float32),
                                       buffers)
    assert len(r) == 10_000 > 1 << 12 and np.array_equal(v, scores.ravel())


@pytest.mark.parametrize("large", [False, True])
def test_the_compiled_selection_runs_by_default_only_on_large_searches(monkeypatch, large):
    """Importing numba and loading the kernel cost about half a second: by default (``compiled``
    None) a search uses it from ``COMPILED_WORK`` multiply-adds on, numpy below; the numbers are the
    same either way."""
    from tests.conftest import continuous_data

    calls = []
    select = onepass._select_compiled
    monkeypatch.setattr(onepass, "_select_compiled", lambda *args: calls.append(1) or select(*args))
    if large:
        monkeypatch.setattr(onepass, "COMPILED_WORK", 0)
    data = continuous_data(3, (300, 250, 200), n_products=30, dim=8)
    engine = onepass.OnePassEngine(onepass.OnePassSettings(tile=64, small_block=0))
    found = data.evaluate(engine, ci=False, threads=1)
    assert bool(calls) == large
    plain = data.evaluate(onepass.OnePassEngine(onepass.OnePassSettings(tile=64, small_block=0, compiled=False)),
                          ci=False, threads=1)
    assert found.to_json()["tasks"] == plain.to_json()["tasks"]


def test_kernels_that_cannot_load_leave_numpy_to_compute_with_a_warning(monkeypatch):
    """Where numba is installed but its kernels cannot load (e.g. nowhere to write their cache: its
    "no locator available" error at import), ``available()`` is False with one warning saying how
    to fix it, and the searches run on numpy with the same numbers."""
    import sys

    from ropebench.engines import kernels

    monkeypatch.setattr(kernels, "_AVAILABLE", [])
    monkeypatch.setitem(sys.modules, "ropebench.engines.kernels.select", None)  # its import fails
    with pytest.warns(RuntimeWarning, match="NUMBA_CACHE_DIR"):
        assert kernels.available() is False
    assert kernels.available() is False  # answered once
    monkeypatch.setattr(onepass, "COMPILED_WORK", 0)
    from tests.conftest import continuous_data

    data = continuous_data(5, (120, 100, 90), n_products=20, dim=8)
    found = data.evaluate(onepass.OnePassEngine(onepass.OnePassSettings(tile=32, small_block=0)), ci=False)
    assert found.tasks["P2V"].measures["R@1"] >= 0


def test_asking_for_the_compiled_selection_without_numba_says_how_to_install_it(monkeypatch):
    from ropebench.engines import kernels
    from tests.conftest import continuous_data

    monkeypatch.setattr(kernels, "_AVAILABLE", [False])
    data = continuous_data(5, (120, 100, 90), n_products=20, dim=8)
    with pytest.raises(ImportError, match=r"compiled tile selection: numba is needed, pip install 'ropebench\[fast\]'"):
        data.evaluate(onepass.OnePassEngine(onepass.OnePassSettings(tile=32, small_block=0, compiled=True)), ci=False)
    found = data.evaluate(onepass.OnePassEngine(onepass.OnePassSettings(tile=32, small_block=0)), ci=False)
    assert found.tasks["P2V"].measures  # by default: numpy
