"""Outputs written in the consumer's format (docs/memory-model.md, "Output writes"):
the digits_cnn conv1 -> conv2 numbers, dense where no exact consumer is known, the
manifest fields' errors, trace_torch recording the chain, and engine == reference on
random producer/consumer pairs (array and GEMV engines)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import accelsim
from accelsim import TraceError, load_hwconfig, reference
from accelsim.analysis.report import simulate
from accelsim.io.trace import Trace, conv2d, linear, write_trace
from accelsim.model import engine
from accelsim.model.outwrite import consumers, shares
from accelsim.model.workload import gemm_shape

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "traces" / "digits_cnn"
KEYS = reference.ALL_FIELDS


@pytest.fixture(scope="module")
def digits_df():
    return simulate(DIGITS, "sparse_os_16x16").set_index("layer")


def test_digits_conv1_writes_what_conv2_reads(digits_df):
    c1, c2 = digits_df.loc["conv1"], digits_df.loc["conv2"]
    assert (c1.out_format, c1.out_consumer) == ("bitmask", "conv2")
    # conv2's A is resident: it reads the unique tensor once, as conv1 now writes it
    assert c1.dram_out_write_bytes == c2.dram_a_read_bytes == 67_478
    assert c1.dram_out_write_meta_bytes == c2.dram_a_read_meta_bytes == 12_800
    assert c1.glb_out_write_bytes == 67_478 and c1.glb_out_write_meta_bytes == 12_800
    # the dense write it replaces: 100 images x 16 channels x 8 x 8, int8
    assert 100 * 16 * 8 * 8 == 102_400 > c1.dram_out_write_bytes + c1.dram_out_write_meta_bytes


def test_digits_dense_without_an_exact_consumer(digits_df):
    # conv2 -> relu -> maxpool -> conv3: the trace holds the pooled tensor, not conv2's
    # output; fc2 is the last layer
    for name, elems in (("conv2", 100 * 32 * 8 * 8), ("conv3", 100 * 64 * 4 * 4),
                        ("fc2", 100 * 10)):
        row = digits_df.loc[name]
        assert (row.out_format, row.out_consumer) == ("dense", "")
        assert row.dram_out_write_bytes == elems and row.dram_out_write_meta_bytes == 0
    assert digits_df.loc["fc1"].out_consumer == "fc2"


def test_energy_prices_the_meta_bytes(digits_df):
    from accelsim.model.energy import energy_of, load_energy_table, prices

    hw = load_hwconfig("sparse_os_16x16")
    p = prices(hw, load_energy_table(hw.energy))
    row = digits_df.loc["conv1"].to_dict()
    base = energy_of(row, p)
    more = energy_of({**row, "dram_out_write_meta_bytes": row["dram_out_write_meta_bytes"]
                      + 1000}, p)
    assert more["energy_dram_pj"] - base["energy_dram_pj"] == pytest.approx(1000 * p["dram"])


def test_old_manifest_without_chain_is_dense(tmp_path):
    tr = accelsim.load_trace(DIGITS)
    plain = [type(ly)(ly.name, ly.kind, ly.tensors, ly.frames, ly.stride, ly.padding,
                      ly.dilation, ly.groups, ly.quant, {"module": ly.name})
             for ly in tr.layers]
    df = simulate(Trace("d", plain), "sparse_os_16x16").set_index("layer")
    assert (df.out_format == "dense").all() and (df.out_consumer == "").all()
    assert df.loc["conv1", "dram_out_write_bytes"] == 102_400


def test_delta_consumer_reads_dense():
    df = simulate(ROOT / "traces" / "moving_digits", "delta_ws_16x16").set_index("layer")
    assert (df.out_format == "dense").all()  # every consumer runs on deltas


def _tiny(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(-3, 4, (4, 6)).astype(np.int8)
    h = np.maximum(rng.integers(-3, 4, (4, 5)), 0).astype(np.int8)
    a = linear("a", x, rng.integers(-3, 4, (5, 6)).astype(np.int8))
    b = linear("b", h, rng.integers(-3, 4, (3, 5)).astype(np.int8),
               meta={"input_from": "a", "input_ops": ["aten.relu"]})
    return write_trace(tmp_path / "t", [a, b])


@pytest.mark.parametrize("meta, msg", [
    ({"input_from": 3}, "meta.input_from: expected a layer name"),
    ({"input_from": ""}, "meta.input_from: expected a layer name"),
    ({"input_from": "a", "input_ops": "aten.relu"}, "meta.input_ops: expected a list"),
    ({"input_from": "a", "input_ops": [1]}, "meta.input_ops: expected a list"),
    ({"input_ops": ["aten.relu"]}, "meta.input_ops: given without meta.input_from"),
    ({"input_from": "nope"}, "'nope' is not a layer before this one"),
    ({"input_from": "b"}, "'b' is not a layer before this one"),
])
def test_manifest_field_errors(tmp_path, meta, msg):
    path = _tiny(tmp_path)
    m = yaml.safe_load((path / "manifest.yaml").read_text())
    m["layers"][1]["meta"] = meta
    (path / "manifest.yaml").write_text(yaml.safe_dump(m, sort_keys=False))
    with pytest.raises(TraceError, match=msg) as ex:
        accelsim.load_trace(path)
    assert "\n" not in str(ex.value) and "layer 'b'" in str(ex.value)


def test_manifest_round_trip(tmp_path):
    tr = accelsim.load_trace(_tiny(tmp_path))
    assert tr["b"].meta["input_from"] == "a" and tr["b"].meta["input_ops"] == ["aten.relu"]
    assert consumers(tr)["a"].name == "b"


def test_trace_torch_records_the_chain():
    torch = pytest.importorskip("torch")
    from accelsim.tracing import trace_torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 4, 3, padding=1)
            self.fc1 = torch.nn.Linear(4 * 5 * 5, 8)
            self.fc2 = torch.nn.Linear(8, 6)
            self.fc3 = torch.nn.Linear(6, 3)

        def forward(self, x):
            h = torch.relu(self.conv(x)).flatten(1)
            h = torch.relu(self.fc1(h))
            h = self.fc2(h)
            return self.fc3(h.t().contiguous().t() + 1.0)  # transposes and an add

    torch.manual_seed(0)
    tr = trace_torch(Net().eval(), torch.randn(3, 2, 5, 5), None, quantize="int8").trace
    assert "input_from" not in tr["conv"].meta
    assert tr["fc1"].meta["input_from"] == "conv"
    assert tr["fc1"].meta["input_ops"] == ["aten.relu", "aten.view"]
    assert tr["fc2"].meta["input_from"] == "fc1"
    assert tr["fc2"].meta["input_ops"] == ["aten.relu"]
    # recorded as they ran; the model decides (transposes, add: not an output stage)
    assert tr["fc3"].meta["input_from"] == "fc2"
    assert tr["fc3"].meta["input_ops"] == ["aten.t", "aten.clone", "aten.t", "aten.add"]
    found = {p: c.name for p, c in consumers(tr).items()}
    assert found == {"conv": "fc1", "fc1": "fc2"}
    df = simulate(tr, "sparse_os_16x16").set_index("layer")
    assert list(df.out_consumer) == ["fc1", "fc2", "", ""]


def test_transposed_chain_stays_dense():
    rng = np.random.default_rng(1)
    a = linear("a", rng.integers(-3, 4, (4, 6)).astype(np.int8),
               rng.integers(-3, 4, (5, 6)).astype(np.int8))
    b = linear("b", np.maximum(rng.integers(-3, 4, (4, 5)), 0).astype(np.int8),
               rng.integers(-3, 4, (3, 5)).astype(np.int8),
               meta={"input_from": "a", "input_ops": ["aten.transpose"]})
    assert consumers(Trace("t", [a, b])) == {}
    # a producer named after its consumer (an in-memory trace, not loaded) is ignored
    later = type(a)(a.name, a.kind, a.tensors, meta={"input_from": "b"})
    b2 = type(b)(b.name, b.kind, b.tensors, meta={"input_from": "a"})
    assert {p: c.name for p, c in consumers(Trace("t", [later, b2])).items()} == {"a": "b"}
    assert consumers(Trace("t", [b2, a])) == {}  # b2 names a, which comes after it


def test_shares_sum_per_frame():
    dense = np.array([[[3, 0, 5]], [[0, 0, 0]]], np.int64)
    got = shares(dense, np.array([7, 9]))
    assert got.tolist() == [[[2, 0, 5]], [[0, 0, 0]]]
    big = shares(np.array([[2**40, 2**40]]), np.array([2**40]))
    assert big.tolist() == [[2**39, 2**39]]


# --------------------------------------------------------------------- engine == reference


def _hw(cfg):
    fmt = {"kind": cfg["fa"], "run_bits": 2, "index_bits": "auto", "ptr_bits": "auto"}
    d = {"name": "o", "array": {"rows": cfg["r"], "cols": cfg["c"]},
         "dataflow": cfg["flow"], "zero_policy": cfg["policy"],
         "precision": {"a_bits": cfg["bits"]},
         "memory": {"dram": {"bandwidth_bytes_per_cycle": cfg["bw"]},
                    "glb": {"a_kib": 64.0, "out_kib": cfg["out_kib"],
                            "bandwidth_bytes_per_cycle": cfg["bw"] * 2,
                            "double_buffer": cfg["db"]}},
         "formats": {"a": fmt, "w": {"kind": "dense"}}}
    if cfg["gemv"]:
        d.update(array={"rows": 1, "cols": cfg["c"]}, dataflow="os",
                 engine={"kind": "gemv", "lanes": cfg["c"], "pipeline": 1})
    return load_hwconfig(d)


@st.composite
def chains(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    dens = draw(st.sampled_from([0.0, 0.3, 0.7, 1.0]), label="density")

    def vals(shape, d=0.6):
        v = rng.integers(-4, 5, shape) * (rng.random(shape) < d)
        return v.astype(np.int8)

    kind = draw(st.sampled_from(["linear", "conv2d", "frames"]), label="kind")
    if kind == "conv2d":
        n, c, h = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(2, 4))
        co = draw(st.integers(1, 3))
        x = vals((n, c, h, h))
        prod = conv2d("p", x, vals((co, c, 3, 3)), padding=1)
        y = np.maximum(vals((n, co, h, h), dens), 0).astype(np.int8)
        cons = conv2d("q", y, vals((2, co, 1, 1)), meta={"input_from": "p"})
    else:
        frames = kind == "frames"
        lead = (draw(st.integers(1, 3)),) if frames else ()
        m, k, n = (draw(st.integers(1, 5)) for _ in range(3))
        prod = linear("p", vals(lead + (m, k)), vals((n, k)), frames=frames)
        y = np.maximum(vals(lead + (m, n), dens), 0).astype(np.int8)
        cons = linear("q", y, vals((2, n)), frames=frames,
                      meta={"input_from": "p", "input_ops": ["aten.relu"]})
    return prod, cons


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chains(), st.fixed_dictionaries({
    "r": st.integers(1, 3), "c": st.integers(1, 3),
    "flow": st.sampled_from(["os", "ws", "is"]),
    "policy": st.sampled_from(["none", "skip_a", "skip_both"]),
    "fa": st.sampled_from(["dense", "bitmask", "rle", "csr", "coo"]),
    "bits": st.sampled_from([8, 4, 3]), "bw": st.sampled_from([1.0, 3.0, math.inf]),
    "out_kib": st.sampled_from([0.1, 64.0]), "db": st.booleans(),
    "gemv": st.booleans()}))
def test_engine_matches_reference(pair, cfg):
    prod, cons = pair
    try:
        hw = _hw(cfg)
    except accelsim.ConfigError:
        return
    if cfg["gemv"] and prod.kind != "linear":
        hw = _hw({**cfg, "gemv": False})
    st_e = engine.simulate_layer(prod, hw, consumer=cons)
    got = st_e.as_dict()
    want = reference.simulate_layer(prod, hw, consumer=cons)
    bad = {k: (got[k], want[k]) for k in KEYS if int(got[k]) != int(want[k])}
    assert not bad, bad
    assert st_e.out_write.consumer == "q"
    # the write is what the consumer reads of its unique A when its mapping holds A in one
    # GLB tile; split into tiles, each tile's bytes round up, so the read is no smaller
    st_c = engine.simulate_layer(cons, hw)
    c = st_c.as_dict()
    sc = gemm_shape(cons)
    one_tile = (st_c.mem.mapping is None or not st_c.mem.mapping[0]
                or (st_c.mem.mapping[1] >= sc.m and st_c.mem.mapping[3] >= sc.k))
    for w_key, r_key in (("dram_out_write_bytes", "dram_a_read_bytes"),
                         ("dram_out_write_meta_bytes", "dram_a_read_meta_bytes")):
        if one_tile:
            assert got[w_key] == c[r_key], w_key
        else:
            assert got[w_key] <= c[r_key], w_key
    dense = engine.simulate_layer(prod, hw).as_dict()
    for k in KEYS:
        if "out_write" not in k and k not in ("stall_cycles", "cycles"):
            assert got[k] == dense[k], k
