"""Issue 14 items 2, 3 and 6: the compute backend seam (numpy, torch), exact integer
mask products (K split where float sums would round), chunked products equal to
unchunked ones, and fold steps from products equal to the per-PE walk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accelsim import load_hwconfig
from accelsim.errors import ConfigError
from accelsim.model import backend as bk
from accelsim.model import syncprod
from accelsim.model.dataflow import make_plan
from accelsim.model.sync import fold_steps


def _backends() -> list[bk.Backend]:
    out = [bk.get_backend("numpy")]
    try:
        import torch  # noqa: F401
    except ImportError:
        return out
    out.append(bk.TorchBackend("cpu"))
    return out


BACKENDS = _backends()
IDS = [f"{b.name}-{b.device}" for b in BACKENDS]


@pytest.mark.parametrize("be", BACKENDS, ids=IDS)
@pytest.mark.parametrize("piece", [None, 1, 7])
def test_mm_is_the_exact_integer_product(be, piece, monkeypatch):
    rng = np.random.default_rng(3)
    if piece:  # force the K split on small shapes
        monkeypatch.setattr(be, "k_piece", piece)
    for shape in [(5, 33, 9), (1, 1, 1), (17, 64, 24)]:
        m, k, n = shape
        x = (rng.random((m, k)) < 0.6).astype(np.uint8)
        y = (rng.random((n, k)) < 0.4).astype(np.uint8)
        want = x.astype(np.int64) @ y.astype(np.int64).T
        assert np.array_equal(be.host(be.mm(be.load(x), be.load(y))), want)
        xb = (rng.random((3, m, k)) < 0.5).astype(np.uint8)
        yb = (rng.random((3, n, k)) < 0.5).astype(np.uint8)
        want = np.einsum("bmk,bnk->bmn", xb.astype(np.int64), yb.astype(np.int64))
        assert np.array_equal(be.host(be.mm(be.load(xb), be.load(yb))), want)


@pytest.mark.parametrize("be", BACKENDS, ids=IDS)
def test_sums_above_2_24_are_exact_through_the_k_split(be):
    k = 2**24 + 7  # a float32 sum of this many ones rounds to 2**24 + 8
    x = np.ones((1, k), np.uint8)
    y = np.ones((2, k), np.uint8)
    y[1, :3] = 0
    assert int(np.float32(k)) != k  # float32 cannot hold the sum: the split must
    got = be.host(be.mm(be.load(x), be.load(y)))
    assert got.tolist() == [[k, k - 3]]


def _case(rng, trial):
    m, k, n = (int(v) for v in rng.integers(1, 60, 3))
    nf = 1 + trial % 2
    az = rng.random((nf, 1, m, k)) < rng.random()
    wz = rng.random((1, 1, k, n)) < rng.random()
    rz = (rng.random((1, 1, m, k)) < 0.8) if trial % 3 == 0 else None
    if rz is not None:
        az &= rz
    return az, wz, rz


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1), flow=st.sampled_from(["os", "ws", "is"]),
       mode=st.sampled_from(["lockstep", "barrier", "decoupled"]),
       scope=st.sampled_from(["array", "row", "col"]),
       policy=st.sampled_from(["none", "gate", "skip_a", "skip_w", "skip_both"]),
       rows=st.integers(1, 5), cols=st.integers(1, 5), lanes=st.sampled_from([1, 1, 2]),
       steps=st.integers(1, 9), budget=st.sampled_from([None, 1, 300, 3000]),
       be=st.sampled_from(BACKENDS))
def test_fold_steps_from_products_equal_the_walk(seed, flow, mode, scope, policy, rows,
                                                 cols, lanes, steps, budget, be):
    """Every sync mode the product path takes, with and without chunking (budget 1:
    every chunk is one block of PE rows, columns and barrier chunks; 300, 3000: chunks
    of several blocks, the last one short)."""
    rng = np.random.default_rng(seed)
    ov = {"dataflow": flow, "zero_policy": policy, "sync.mode": mode, "sync.scope": scope,
          "array.rows": rows, "array.cols": cols, "sync.barrier_steps": steps,
          "array.pe_simd.width": lanes}
    if mode == "decoupled":
        ov["array.pe_buffer_bytes"] = 3 + steps
    if flow == "is":
        ov["array.pe_simd.width"] = 1
    hw = load_hwconfig("sparse_os_16x16", ov)
    assert syncprod.applies(hw, None)
    az, wz, rz = _case(rng, seed % 6)
    act = np.ones(az.shape[:2], bool)
    act[-1, 0] = bool(seed % 5)
    plan = make_plan(hw)
    walk = fold_steps(az, wz, hw, plan, None, act, rz, method="walk")
    import accelsim.model.backend as backend_mod

    orig = backend_mod.get_backend
    try:
        backend_mod.get_backend = lambda name, device=None: be
        if budget is not None:
            backend_mod.chunk_budget, keep = (lambda nbytes: budget), backend_mod.chunk_budget
            try:
                got = fold_steps(az, wz, hw, plan, None, act, rz, method="product")
            finally:
                backend_mod.chunk_budget = keep
        else:
            got = fold_steps(az, wz, hw, plan, None, act, rz, method="product")
    finally:
        backend_mod.get_backend = orig
    assert got.dtype == np.int64
    assert np.array_equal(walk, got), (ov, walk, got)


def test_chunked_equals_unchunked_on_a_layer_many_chunks_long():
    rng = np.random.default_rng(7)
    a = (rng.random((203, 150)) < 0.3).astype(np.uint8)
    w = (rng.random((97, 150)) < 0.5).astype(np.uint8)
    be = bk.get_backend("numpy")
    for mode, scope in [("lockstep", "array"), ("lockstep", "row"), ("lockstep", "col"),
                        ("barrier", "array"), ("barrier", "row"), ("barrier", "col")]:
        whole = syncprod.gemm_steps(a, w, None, 0, 0, 8, 4, mode, 16, scope, be, 2**30)
        for budget in (1, 5000, 20000):
            parts = syncprod.gemm_steps(a, w, None, 0, 0, 8, 4, mode, 16, scope, be, budget)
            assert np.array_equal(whole, parts), (mode, scope, budget)


def test_product_path_is_refused_where_it_does_not_apply():
    hw = load_hwconfig("sparse_os_16x16", {"sync.mode": "fifo"})
    assert not syncprod.applies(hw, None)
    az = np.ones((1, 1, 4, 4), bool)
    with pytest.raises(ValueError, match="mask products need no N:M"):
        fold_steps(az, az, hw, make_plan(hw), None, np.ones((1, 1), bool), None,
                   method="product")
    for ov in ({"array.macs_per_pe": 2}, {"sync.balance": "greedy_filter"}):
        assert not syncprod.applies(load_hwconfig("sparse_os_16x16", ov), None)
    assert not syncprod.applies(load_hwconfig("sparse_os_16x16"), object())  # N:M
    for flow in ("os", "ws", "is"):
        assert syncprod.applies(load_hwconfig("sparse_os_16x16", {"dataflow": flow}), None)


def test_backend_key_is_not_part_of_the_config_hash():
    a = load_hwconfig("sparse_os_16x16")
    b = load_hwconfig("sparse_os_16x16", {"backend": "numpy"})
    assert a.backend == "auto" and b.backend == "numpy"
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != load_hwconfig("sparse_os_16x16",
                                            {"array.rows": 8}).config_hash()
    with pytest.raises(ConfigError, match="backend"):
        load_hwconfig("sparse_os_16x16", {"backend": "cupy"})
    with pytest.raises(ConfigError, match="backend: expected one of"):
        bk.get_backend("cupy")


def test_auto_keeps_small_gemms_on_numpy_and_needs_no_torch_without_a_gpu():
    assert bk.backend_for("auto", bk.AUTO_MIN_MACS - 1).name == "numpy"
    assert bk.backend_for("numpy", 2**40).name == "numpy"
    big = bk.backend_for("auto", bk.AUTO_MIN_MACS)
    assert big.name == ("torch" if bk._nvidia_device() and _cuda() else "numpy")


def test_simulate_results_do_not_depend_on_the_backend():
    import accelsim
    from accelsim.io.synthetic import tiny_cnn_trace

    trace = tiny_cnn_trace()
    hw = load_hwconfig("sparse_os_16x16")
    base = accelsim.simulate(trace, hw.with_overrides({"backend": "numpy"}))
    for be in BACKENDS[1:]:
        orig = bk.get_backend
        try:
            bk.get_backend = lambda name, device=None, _be=be: _be
            got = accelsim.simulate(trace, hw.with_overrides({"backend": "torch"}))
        finally:
            bk.get_backend = orig
        assert got.equals(base)


def test_cli_backend_flag_and_progress_bar(tmp_path, capsys, root):
    from accelsim.cli.main import main

    out = tmp_path / "r.csv"
    assert main(["simulate", str(root / "traces" / "digits_cnn"), "--hw", "sparse_os_16x16",
                 "--backend", "numpy", "--progress", "-o", str(out)]) == 0
    assert out.stat().st_size > 0
    err = capsys.readouterr().err
    assert "simulate: 100%" in err and "layer" in err
    with pytest.raises(SystemExit):
        main(["simulate", str(root / "traces" / "digits_cnn"), "--hw", "sparse_os_16x16",
              "--backend", "cupy"])


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@pytest.mark.skipif(not _cuda(), reason="no CUDA device")
def test_cuda_backend_is_exact_and_matches_numpy():
    """The GPU path: int8 tensor-core and float16 products equal numpy's, also across
    the float16 K pieces, and a bundled trace simulates to the same table."""
    import accelsim

    be = bk.get_backend("torch")
    assert be.device.startswith("cuda")
    rng = np.random.default_rng(0)
    for m, k, n in [(3, 5, 2), (40, 4100, 33), (300, 70, 129)]:
        x = (rng.random((m, k)) < 0.7).astype(np.uint8)
        y = (rng.random((n, k)) < 0.7).astype(np.uint8)
        want = x.astype(np.int64) @ y.astype(np.int64).T
        assert np.array_equal(be.host(be.mm(be.load(x), be.load(y))), want)
        xb, yb = x[None].repeat(2, 0), y[None].repeat(2, 0)
        assert np.array_equal(be.host(be.mm(be.load(xb), be.load(yb))), np.stack([want] * 2))
    for cfg in ("sparse_os_16x16", "cnvlutin_brick_16x16", "sparten_decoupled_16x16"):
        hw = load_hwconfig(cfg)
        a = accelsim.simulate("traces/digits_cnn", hw.with_overrides({"backend": "numpy"}))
        b = accelsim.simulate("traces/digits_cnn", hw.with_overrides({"backend": "torch"}))
        assert a.equals(b), cfg


# ------------------------------------------------------------- LLM-scale synthetic traces

SMALL = {"hidden": 128, "ffn": 352, "heads": 4, "tokens": 64}


def test_decoder_layers_have_the_7b_shapes_and_slice_consistently():
    from accelsim.io.synthetic import DECODER_7B, decoder_layers
    from accelsim.model.workload import gemm_shape

    h, f, nh, t = (DECODER_7B[k] for k in ("hidden", "ffn", "heads", "tokens"))
    # shapes only: the generator is lazy, so peek at the names without drawing 7B values
    names = [la.name for la in decoder_layers(1, **SMALL)]
    assert names == [f"blocks.0.{x}" for x in ("attn.q_proj", "attn.k_proj", "attn.v_proj",
                                               "attn.o_proj", "attn.qk", "attn.pv",
                                               "mlp.gate_proj", "mlp.up_proj",
                                               "mlp.down_proj")]
    shapes = [(gemm_shape(la).batch, gemm_shape(la).m, gemm_shape(la).k, gemm_shape(la).n)
              for la in decoder_layers(1, **SMALL)]
    hd = SMALL["hidden"] // SMALL["heads"]
    tk, hid, ffn = SMALL["tokens"], SMALL["hidden"], SMALL["ffn"]
    assert shapes == [(1, tk, hid, hid)] * 4 + [(4, tk, hd, tk), (4, tk, tk, hd)] + [
        (1, tk, hid, ffn)] * 2 + [(1, tk, ffn, hid)]
    assert (h, f, nh, t) == (4096, 11008, 32, 2048)
    two = list(decoder_layers(2, **SMALL))
    second = list(decoder_layers(1, first=1, **SMALL))
    for x, y in zip(two[9:], second, strict=True):
        assert x.name == y.name and np.array_equal(x.a, y.a) and np.array_equal(x.w, y.w)
    pv = two[5]
    assert not np.triu(np.asarray(pv.a), 1).any()  # causal: nothing above the diagonal


def test_decoder_trace_streams_to_disk_and_simulates_as_in_memory(tmp_path):
    import tracemalloc

    import accelsim
    from accelsim.io.synthetic import decoder_layers, write_decoder_trace

    total = sum(np.asarray(t).nbytes for la in decoder_layers(4, **SMALL)
                for t in la.tensors.values())
    from accelsim.io.trace import load_trace, write_trace

    write_decoder_trace(tmp_path / "warm", 1, **SMALL)  # imports outside the measurement
    tracemalloc.start()
    try:
        write_trace(tmp_path / "dec", decoder_layers(4, **SMALL))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < total / 2  # one block at a time, not the stack
    write_decoder_trace(tmp_path / "dec", 4, **SMALL)
    trace = load_trace(tmp_path / "dec")
    assert len(trace) == 36 and trace.provenance["synthetic"] is True
    hw = load_hwconfig("sparse_os_16x16")
    mem = accelsim.simulate(accelsim.Trace(model="m", layers=tuple(decoder_layers(1, **SMALL))),
                            hw)
    disk = accelsim.simulate(trace, hw)
    cols = [c for c in mem.columns if c.startswith(("macs_", "cycles", "compute_cycles"))]
    assert mem[cols].equals(disk[cols].iloc[:9].reset_index(drop=True))


def test_budget_counts_the_chunked_products_and_the_layer_runs_within_it():
    import tracemalloc

    from accelsim.io.trace import linear
    from accelsim.model.budget import estimate_layer
    from accelsim.model.engine import simulate_layer

    rng = np.random.default_rng(1)
    m, k, n = 512, 1024, 4096
    layer = linear("big", (rng.random((m, k), dtype=np.float32) < 0.5).astype(np.int8),
                   (rng.random((n, k), dtype=np.float32) < 0.4).astype(np.int8))
    hw = load_hwconfig("sparse_os_16x16", {"sync.mode": "barrier"})
    est = estimate_layer(layer, hw)
    # bounded by the chunk budget, not the M x N x chunks counts of an unchunked product
    assert est.parts["mask_products"] == bk.chunk_budget(m * k + k * n)
    assert est.parts["mask_products"] < 16 * m * n * (k // 16)
    walk = estimate_layer(layer, hw.with_overrides({"sync.mode": "fifo"}))
    assert "fold_walk" in walk.parts and "mask_products" not in walk.parts
    simulate_layer(layer, hw, max_memory=est.total)  # warm
    tracemalloc.start()
    try:
        simulate_layer(layer, hw, max_memory=est.total)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= est.total


def test_release_pages_keeps_a_mapped_trace_readable(tmp_path):
    from accelsim.io.synthetic import decoder_layers
    from accelsim.io.trace import load_trace, release_pages, write_trace

    layers = list(decoder_layers(1, **SMALL))
    write_trace(tmp_path / "t", layers)
    trace = load_trace(tmp_path / "t")
    for mem, disk in zip(layers, trace.layers, strict=True):
        assert np.array_equal(np.asarray(disk.a), mem.a)
        release_pages(disk)
        release_pages(mem)  # in memory: nothing to do
        assert np.array_equal(np.asarray(disk.a), mem.a)
        assert np.array_equal(np.asarray(disk.w), mem.w)
