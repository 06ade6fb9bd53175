"""Work reuse across sweep points (accelsim/model/reuse.py): results with the cache are
identical to results without it, in simulate and in a whole sweep's store; the cache
stays within its budget, hands out read-only arrays and never serves stale work."""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import accelsim
from accelsim.analysis.report import simulate
from accelsim.errors import AccelsimError
from accelsim.io.hwconfig import load_hwconfig
from accelsim.io.trace import Trace, linear, load_trace, write_trace
from accelsim.model.engine import layer_operands
from accelsim.model.reuse import WorkCache, layer_identity, tensor_identity

ROOT = Path(__file__).resolve().parent.parent

CASES = [  # trace, base config, overrides: conv, delta, gemv, N:M-free matmul traces
    ("digits_cnn", "sparse_os_16x16", {"zero_policy": "skip_both", "array.rows": 8}),
    ("digits_cnn", "cnvlutin_ws_16x16", {}),
    ("digits_cnn", "sparten_decoupled_16x16", {}),
    ("moving_digits", "delta_ws_16x16", {}),
    ("moving_digits", "delta_ws_16x16", {"zero_policy": "skip_both"}),
    ("silero_vad", "edgedrnn_gemv", {}),
    ("tiny_lm_relu", "sparse_os_16x16", {"zero_policy": "gate"}),
]


@pytest.mark.parametrize("trace, base, over", CASES)
def test_simulate_with_cache_is_identical(trace, base, over):
    tr = load_trace(ROOT / "traces" / trace)
    cache = WorkCache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w_kib in (16, 64):  # the second config reuses the first one's compute work
            hw = load_hwconfig(base, {**over, "memory.glb.w_kib": w_kib})
            plain = simulate(tr, hw)
            first = simulate(tr, hw, cache=cache)
            again = simulate(tr, hw, cache=cache)
            pd.testing.assert_frame_equal(plain, first, check_exact=True)
            pd.testing.assert_frame_equal(plain, again, check_exact=True)
    assert cache.hits > 0 and len(cache) > 0


def test_compute_work_is_shared_by_points_that_differ_in_memory_only():
    tr = load_trace(ROOT / "traces" / "digits_cnn")
    cache = WorkCache()
    simulate(tr, "sparse_os_16x16", {"memory.glb.w_kib": 16}, cache=cache)
    n = len(cache)
    misses = cache.misses
    simulate(tr, "sparse_os_16x16", {"memory.glb.w_kib": 32, "clock_ghz": 2.0}, cache=cache)
    assert len(cache) == n and cache.misses == misses  # every lookup hit
    simulate(tr, "sparse_os_16x16", {"array.rows": 8}, cache=cache)  # new compute config
    assert len(cache) == n + len(tr.layers)  # gemm results added, operands reused


def test_cached_arrays_are_read_only():
    tr = load_trace(ROOT / "traces" / "digits_cnn")
    hw = load_hwconfig("sparse_os_16x16")
    cache = WorkCache()
    ops = layer_operands(tr.layers[0], hw, cache)
    assert layer_operands(tr.layers[0], hw, cache) is ops
    with pytest.raises(ValueError, match="read-only"):
        ops.az[0, 0, 0, 0] = True


def test_budget_evicts_least_recently_used_and_skips_oversized():
    cache = WorkCache(max_bytes=3000)
    cache.put("a", np.zeros(1000, np.uint8))
    cache.put("b", np.zeros(1000, np.uint8))
    assert cache.get("a") is not None  # a is now the most recently used
    cache.put("c", np.zeros(1500, np.uint8))
    assert cache.get("b") is None and cache.get("a") is not None
    assert cache.bytes <= 3000 and cache.evictions == 1
    cache.put("huge", np.zeros(4000, np.uint8))
    assert cache.get("huge") is None and cache.bytes <= 3000
    zero = WorkCache(max_bytes=0)
    tr = load_trace(ROOT / "traces" / "digits_cnn")
    a = simulate(tr, "sparse_os_16x16", cache=zero)
    pd.testing.assert_frame_equal(a, simulate(tr, "sparse_os_16x16"), check_exact=True)
    assert len(zero) == 0


def test_rewritten_trace_is_a_miss_and_in_memory_tensors_are_not_cached(tmp_path):
    path = tmp_path / "tr"
    x = np.ones((4, 8), np.int8)
    write_trace(path, [linear("fc", x, np.ones((6, 8), np.int8))])
    cache = WorkCache()
    first = simulate(load_trace(path), "sparse_os_16x16", cache=cache)
    assert first.macs_performed.sum() == 4 * 8 * 6
    x[:, :4] = 0  # same shapes, new content, rewritten in place
    write_trace(path, [linear("fc", x, np.ones((6, 8), np.int8))])
    second = simulate(load_trace(path), "sparse_os_16x16", cache=cache)
    pd.testing.assert_frame_equal(second, simulate(load_trace(path), "sparse_os_16x16"),
                                  check_exact=True)
    assert second.nnz_a.sum() == 16
    mem = linear("fc", x, np.ones((6, 8), np.int8))  # numpy arrays, no file behind them
    assert tensor_identity(mem.a) is None and layer_identity(mem) is None
    size = len(cache)
    simulate(Trace("m", [mem]), "sparse_os_16x16", cache=cache)
    assert len(cache) == size


def _spec(tmp_path: Path) -> Path:
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "base": "sparse_os_16x16", "traces": [str(ROOT / "traces" / "digits_cnn"),
                                               str(ROOT / "traces" / "moving_digits")],
        "grid": {"array.rows": [4, 64], "zero_policy": ["none", "skip_both"],
                 "memory.glb.w_kib": [0.5, 16, 64]}}))
    return spec


@pytest.mark.parametrize("workers", [1, 2])
def test_sweep_with_and_without_cache_store_identical_results(tmp_path, workers):
    spec = _spec(tmp_path)
    with_cache, without = tmp_path / "on", tmp_path / "off"
    a = accelsim.sweep(spec, with_cache, workers=workers)
    b = accelsim.sweep(spec, without, workers=1, cache_bytes=0)
    assert (a.ok, a.failed) == (b.ok, b.failed) and a.ok > 0 and a.failed > 0
    da = accelsim.load_results(with_cache).drop(columns=["sim_s"])
    db = accelsim.load_results(without).drop(columns=["sim_s"])
    pd.testing.assert_frame_equal(da, db, check_exact=True)
    assert da.attrs == db.attrs


def test_sweep_rejects_a_negative_budget(tmp_path):
    with pytest.raises(AccelsimError, match="cache_bytes"):
        accelsim.sweep(_spec(tmp_path), tmp_path / "r", workers=1, cache_bytes=-1)


def test_trace_copied_elsewhere_has_its_own_identity(tmp_path):
    src = ROOT / "traces" / "digits_cnn"
    dst = tmp_path / "copy"
    shutil.copytree(src, dst)
    a, b = load_trace(src), load_trace(dst)
    assert layer_identity(a.layers[0]) != layer_identity(b.layers[0])
    os.utime(dst / "manifest.yaml")
    assert layer_identity(b.layers[0]) == layer_identity(load_trace(dst).layers[0])
