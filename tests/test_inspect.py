"""inspect_trace against plain numpy computations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import accelsim
from accelsim.analysis.inspect import COLUMNS, inspect_totals, inspect_trace
from accelsim.io.trace import Quant, conv1d, conv2d, linear, matmul, write_trace

TRACES = Path(__file__).resolve().parents[1] / "traces"
BUNDLED = [p.parent.name for p in sorted(TRACES.glob("*/manifest.yaml"))]


def _sparse(rng, shape, density, dtype=np.float32):
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) >= density] = 0
    return x.astype(dtype)


def _int8(rng, shape, density):
    x = rng.integers(-127, 128, shape).astype(np.int8)
    x[rng.random(shape) >= density] = 0
    x.flat[:5] = [1, -1, 2, -2, 0]  # make |q| <= 1 happen
    return x


@pytest.fixture
def trace():
    rng = np.random.default_rng(0)
    # temporal redundancy: frames that repeat most of the previous frame
    base = _int8(rng, (2, 3, 6, 5), 0.6)
    frames = [base]
    for _ in range(3):
        nxt = frames[-1].copy()
        nxt[rng.random(nxt.shape) < 0.2] = 7
        frames.append(nxt)
    video = np.stack(frames)
    layers = [
        conv2d("c", video, _int8(rng, (4, 3, 3, 2), 0.5), stride=(2, 1), padding=(1, 0),
               frames=True, quant={"input": Quant("symmetric", 8, 0.1),
                                   "weight": Quant("per_channel", 8, (1.0,) * 4, axis=0)}),
        conv1d("g", _sparse(rng, (2, 6, 9), 0.3), _sparse(rng, (4, 3, 3), 0.7), groups=2,
               dilation=2),
        linear("fc", _sparse(rng, (5, 2, 7), 0.4), _sparse(rng, (3, 7), 0.9)),
        matmul("mm", _sparse(rng, (3, 2, 4, 5), 0.5), _sparse(rng, (3, 2, 5, 6), 0.8),
               frames=True),
    ]
    return accelsim.Trace.from_arrays("t", layers)


def test_columns_and_shapes(trace):
    df = inspect_trace(trace)
    assert list(df.columns) == list(COLUMNS)
    assert list(df["layer"]) == ["c", "g", "fc", "mm"]
    rows = df.set_index("layer")
    # conv2d: H_out = (6 + 2 - 3)//2 + 1 = 3, W_out = (5 - 2)//1 + 1 = 4
    assert tuple(rows.loc["c", ["m", "k", "n", "groups", "frames"]]) == (2 * 3 * 4, 3 * 3 * 2,
                                                                          4, 1, 4)
    # conv1d groups 2, dilation 2: L_out = 9 - 2*2 = 5
    assert tuple(rows.loc["g", ["m", "k", "n", "groups", "frames"]]) == (2 * 5, 3 * 3, 2, 2, 1)
    assert tuple(rows.loc["fc", ["m", "k", "n", "groups", "frames"]]) == (10, 7, 3, 1, 1)
    assert tuple(rows.loc["mm", ["m", "k", "n", "groups", "frames"]]) == (4, 5, 6, 2, 3)
    for name in rows.index:
        r = rows.loc[name]
        assert r["macs_dense"] == r["frames"] * r["groups"] * r["m"] * r["k"] * r["n"]
    assert df["macs_dense"].dtype.kind == "i"


def test_densities_equal_numpy(trace):
    df = inspect_trace(trace).set_index("layer")
    for layer in trace:
        a, w = np.asarray(layer.a), np.asarray(layer.w)
        r = df.loc[layer.name]
        assert r["density_a"] == np.count_nonzero(a) / a.size
        assert r["density_w"] == np.count_nonzero(w) / w.size
        assert r["size_a"] == a.size and r["size_w"] == w.size
        assert r["bytes"] == a.nbytes + w.nbytes
        if a.dtype == np.int8:
            assert r["density_a_q1"] == np.mean(np.abs(a.astype(int)) > 1)
            assert r["density_w_q1"] == np.mean(np.abs(w.astype(int)) > 1)
        else:
            assert np.isnan(r["density_a_q1"]) and np.isnan(r["density_w_q1"])
        if layer.frames:
            d = np.diff(a.astype(np.float64), axis=0)
            assert r["delta_density_a"] == pytest.approx(np.count_nonzero(d) / d.size,
                                                         abs=1e-15)
            assert r["unchanged_frac_a"] == pytest.approx(1 - np.count_nonzero(d) / d.size,
                                                          abs=1e-15)
        else:
            assert np.isnan(r["delta_density_a"]) and np.isnan(r["unchanged_frac_a"])


def test_totals(trace):
    df = inspect_trace(trace)
    tot = inspect_totals(df)
    assert isinstance(tot, pd.Series)
    a_all = [np.asarray(ly.a) for ly in trace]
    w_all = [np.asarray(ly.w) for ly in trace]
    assert tot["layers"] == 4 and isinstance(tot["macs_dense"], int)
    assert tot["macs_dense"] == df["macs_dense"].sum()
    assert tot["bytes"] == sum(x.nbytes for x in a_all + w_all)
    nnz = sum(np.count_nonzero(x) for x in a_all)
    assert tot["density_a"] == pytest.approx(nnz / sum(x.size for x in a_all))
    nnzw = sum(np.count_nonzero(x) for x in w_all)
    assert tot["density_w"] == pytest.approx(nnzw / sum(x.size for x in w_all))
    diffs = [np.diff(np.asarray(ly.a).astype(float), axis=0) for ly in trace if ly.frames]
    dd = sum(np.count_nonzero(d) for d in diffs) / sum(d.size for d in diffs)
    assert tot["delta_density_a"] == pytest.approx(dd)
    assert tot["unchanged_frac_a"] == pytest.approx(1 - dd)


def test_accepts_a_path(trace, tmp_path):
    write_trace(tmp_path / "t", trace)
    pd.testing.assert_frame_equal(inspect_trace(tmp_path / "t"), inspect_trace(trace))
    pd.testing.assert_frame_equal(inspect_trace(str(tmp_path / "t")), inspect_trace(trace))


def test_single_frame_has_no_delta():
    x = np.ones((1, 2, 3), np.float32)
    tr = accelsim.Trace.from_arrays("one", [linear("l", x, np.ones((4, 3), np.float32),
                                                   frames=True)])
    r = inspect_trace(tr).iloc[0]
    assert r["frames"] == 1 and np.isnan(r["delta_density_a"])
    tot = inspect_totals(inspect_trace(tr))
    assert np.isnan(tot["delta_density_a"])


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_traces_equal_numpy(name):
    trace = accelsim.load_trace(TRACES / name)
    df = inspect_trace(trace).set_index("layer")
    for layer in trace:
        a = np.asarray(layer.a)
        r = df.loc[layer.name]
        assert r["density_a"] == np.count_nonzero(a) / a.size
        assert r["density_w"] == np.count_nonzero(layer.w) / layer.w.size
        if layer.frames and layer.num_frames > 1:
            d = a[1:].astype(np.int32) - a[:-1] if a.dtype.kind == "i" else np.diff(a, axis=0)
            assert r["delta_density_a"] == np.count_nonzero(d) / d.size
