"""Thresholded activation sparsity (docs/thresholds.md): calibration, the transform, MAC
counts under every policy, the functional error, config, API and CLI errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import accelsim
from accelsim.cli.main import main
from accelsim.errors import ConfigError
from accelsim.io import trace as tr
from accelsim.io.synthetic import tiny_cnn_trace
from accelsim.model.threshold import (
    LayerThreshold,
    apply_threshold,
    calibrate,
    real_thresholds,
    resolve_thresholds,
    sparsity_at,
    threshold_error,
    threshold_layer,
)
from tests.conftest import hw_dict

POLICIES = ("none", "gate", "skip_a", "skip_w", "skip_both")


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.int8, st.integers(1, 60)), target=st.integers(0, 99).map(lambda v: v / 100))
def test_calibrate_is_the_closest_achievable_sparsity(x, target):
    t = calibrate(x, target)
    got = sparsity_at(x, t)
    mags = np.unique(np.abs(x.astype(np.int64)))
    best = min(abs(sparsity_at(x, float(v)) - target) for v in mags)
    if target == 0:
        assert t == 0
    else:
        assert abs(got - target) == pytest.approx(best)
    # a threshold is always a magnitude that occurs (or 0)
    assert t == 0 or t in mags


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.int8, (3, 7)), t=st.integers(0, 130))
def test_apply_threshold_zeroes_exactly_the_small_values(x, t):
    y = apply_threshold(x, t)
    assert y.dtype == x.dtype
    small = np.abs(x.astype(np.int64)) <= t
    assert (y[small] == 0).all() and (y[~small] == x[~small]).all()


def _linear_trace(a, w):
    return tr.Trace.from_arrays("t", [tr.linear("fc", a, w)])


@settings(max_examples=30, deadline=None)
@given(a=arrays(np.int8, (5, 9)), w=arrays(np.int8, (6, 9)), t=st.integers(0, 60),
       policy=st.sampled_from(POLICIES), df=st.sampled_from(["os", "ws", "is"]))
def test_thresholded_simulation_equals_the_zeroed_trace(a, w, t, policy, df):
    hw = accelsim.load_hwconfig(hw_dict(dataflow=df, policy=policy))
    got = accelsim.simulate(_linear_trace(a, w), hw, thresholds={"fc": t})
    want = accelsim.simulate(_linear_trace(apply_threshold(a, t), w), hw)
    from accelsim.analysis.report import COUNT_COLUMNS

    assert got[COUNT_COLUMNS].equals(want[COUNT_COLUMNS])
    row = got.iloc[0]
    assert row.macs_performed + row.macs_gated + row.macs_skipped == row.macs_dense
    if policy == "skip_a":
        assert row.macs_performed == int((np.abs(a.astype(int)) > t).sum()) * w.shape[0]


@settings(max_examples=25, deadline=None)
@given(a=arrays(np.int8, (4, 8)), w=arrays(np.int8, (5, 8)), t1=st.integers(0, 80),
       dt=st.integers(0, 50))
def test_a_larger_threshold_never_performs_more(a, w, t1, dt):
    hw = accelsim.load_hwconfig(hw_dict(policy="skip_both"))
    lo = accelsim.simulate(_linear_trace(a, w), hw, thresholds={"fc": t1}).iloc[0]
    hi = accelsim.simulate(_linear_trace(a, w), hw, thresholds={"fc": t1 + dt}).iloc[0]
    assert hi.macs_performed <= lo.macs_performed
    assert hi.compute_cycles <= lo.compute_cycles


@settings(max_examples=30, deadline=None)
@given(a=arrays(np.int8, (2, 3, 4)), b=arrays(np.int8, (2, 4, 5)), ta=st.integers(0, 90),
       tb=st.integers(0, 90), policy=st.sampled_from(POLICIES))
def test_matmul_layers_threshold_both_operands_under_every_policy(a, b, ta, tb, policy):
    layer = tr.matmul("qk", a, b)
    th = LayerThreshold(a=ta, b=tb)
    out = threshold_layer(layer, th)
    np.testing.assert_array_equal(out.a, apply_threshold(a, ta))
    np.testing.assert_array_equal(out.w, apply_threshold(b, tb))
    hw = accelsim.load_hwconfig(hw_dict(policy=policy))
    trace = tr.Trace.from_arrays("t", [layer])
    got = accelsim.simulate(trace, hw, thresholds={"qk": {"value": ta}},
                            overrides={"threshold.operands": "both"}).iloc[0]
    # only a is thresholded by the API value; b by the same value (operands: both)
    ref = tr.Trace.from_arrays("t", [tr.matmul("qk", apply_threshold(a, ta),
                                               apply_threshold(b, ta))])
    want = accelsim.simulate(ref, hw).iloc[0]
    assert got.macs_performed == want.macs_performed and got.cycles == want.cycles
    assert got.macs_performed + got.macs_gated + got.macs_skipped == got.macs_dense


def test_error_is_zero_at_threshold_zero_and_grows():
    trace = tiny_cnn_trace(density_a=0.9, seed=3)
    errs = []
    for t in (0, 5, 30, 90):
        row = accelsim.simulate(trace, hw_dict(policy="skip_a"),
                                thresholds={"fc_frames": t}).set_index("layer").loc["fc_frames"]
        errs.append(row.thr_err_rel)
        assert row.thr_err_max >= row.thr_err_rms >= 0
    assert errs[0] == 0.0 and errs[1] > 0
    assert errs == sorted(errs)


def test_error_matches_a_direct_computation_in_real_units():
    rng = np.random.default_rng(0)
    a = rng.integers(-20, 20, (6, 10)).astype(np.int8)
    w = rng.integers(-50, 50, (3, 10)).astype(np.int8)
    sw = (0.1, 0.2, 0.3)
    layer = tr.linear("fc", a, w, quant={"input": tr.Quant("symmetric", 8, 0.5),
                                         "weight": tr.Quant("per_channel", 8, sw, 0)})
    err = threshold_error(layer, LayerThreshold(a=4))
    exact = (a * 0.5) @ (w * np.array(sw)[:, None]).T
    approx = (apply_threshold(a, 4) * 0.5) @ (w * np.array(sw)[:, None]).T
    d = approx - exact
    assert err["thr_err_max"] == pytest.approx(np.abs(d).max())
    assert err["thr_err_rel"] == pytest.approx(np.sqrt((d ** 2).mean() / (exact ** 2).mean()))
    assert err["thr_sparsity_a"] == pytest.approx((np.abs(a.astype(int)) <= 4).mean())


def test_no_threshold_leaves_results_and_columns_alone(root):
    base = accelsim.simulate(root / "traces" / "digits_cnn", "sparse_os_16x16")
    zero = accelsim.simulate(root / "traces" / "digits_cnn", "sparse_os_16x16",
                             overrides={"threshold.value": 0})
    assert "thr_err_rel" not in base.columns and base.equals(zero)


def test_config_target_applies_per_layer_and_kind(root):
    trace = accelsim.load_trace(root / "traces" / "digits_cnn")
    hw = accelsim.load_hwconfig("sparse_os_16x16", {"threshold.target": 0.8,
                                                    "threshold.kinds": "linear"})
    res = resolve_thresholds(trace, hw)
    assert set(res) == {"fc1", "fc2"}
    for name, th in res.items():
        assert th.a == calibrate(trace[name].a, 0.8)
    hw = accelsim.load_hwconfig("sparse_os_16x16", {"threshold.value": 3,
                                                    "threshold.layers": "conv*"})
    assert set(resolve_thresholds(trace, hw)) == {"conv1", "conv2", "conv3"}
    # the API keyword wins over the config for the layers it names
    res = resolve_thresholds(trace, hw, {"conv2": 7})
    assert res["conv2"].a == 7 and res["conv1"].a == 3


def test_real_thresholds_match_quantisation():
    layer = tr.linear("fc", np.array([[0, 3, -4]], np.int8), np.ones((2, 3), np.int8),
                      quant={"input": tr.Quant("symmetric", 8, 0.25)})
    trace = tr.Trace.from_arrays("t", [layer])
    assert real_thresholds(trace, {"fc": LayerThreshold(3)}) == {"fc": 0.875}
    assert real_thresholds(trace, {"fc": LayerThreshold(0)}) == {"fc": 0.0}


@pytest.mark.parametrize("over, msg", [
    ({"threshold.value": 2, "threshold.target": 0.5}, "threshold.target: expected 0 when"),
    ({"threshold.target": 1.0}, "threshold.target: expected a number >= 0 and <="),
    ({"threshold.kinds": "linear,lstm"}, "threshold.kinds: expected comma-separated"),
    ({"threshold.operands": "b"}, "threshold.operands: expected one of a, both"),
])
def test_config_errors(over, msg):
    with pytest.raises(ConfigError, match=msg):
        accelsim.load_hwconfig("sparse_os_16x16", over)


@pytest.mark.parametrize("spec, msg", [
    ({"nosuch*": 1}, "pattern 'nosuch\\*' matches no layer"),
    ({"fc1": -1}, "value: expected a number >= 0"),
    ({"fc1": {"target": 1.5}}, "target: expected 0 <= target < 1"),
    ({"fc1": {"level": 2}}, "expected a number or"),
])
def test_api_errors(root, spec, msg):
    with pytest.raises(ConfigError, match=msg):
        accelsim.simulate(root / "traces" / "digits_cnn", "sparse_os_16x16", thresholds=spec)


def test_cli_threshold(root, capsys):
    trace = str(root / "traces" / "digits_cnn")
    assert main(["simulate", trace, "--hw", "sparse_os_16x16", "--threshold", "60%@fc*",
                 "--show", "threshold"]) == 0
    out = capsys.readouterr().out
    assert "thr" in out and "rel" in out and "fc1" in out
    assert main(["simulate", trace, "--hw", "sparse_os_16x16", "--threshold", "lots"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("accelsim: error: --threshold 'lots': expected VALUE")
    assert len(err.strip().splitlines()) == 1
