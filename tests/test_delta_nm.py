"""Delta processing and N:M features at the API and CLI level (docs/delta-and-nm.md)."""

import numpy as np
import pytest

import accelsim
from accelsim.cli.main import main
from accelsim.errors import SimulationError
from accelsim.io import trace as tr
from accelsim.io.synthetic import random_tensor, tiny_cnn_trace
from accelsim.model.sparsity import delta_error, delta_operand, nm_violation, prune_nm
from accelsim.model.workload import lower_w


def test_delta_operand_semantics():
    x = np.array([[0, 5, 9], [1, 5, 12], [4, 6, 12], [4, 6, 13]], np.int8)
    op, changed = delta_operand(x, threshold=1)
    # frame 1: d = [1, 0, 3] -> |d|>1 only the last; ref = [0, 5, 12]
    # frame 2: d = [4, 1, 0] -> first; ref = [4, 5, 12]; frame 3: d = [0, 1, 1] -> none
    np.testing.assert_array_equal(op, [[0, 5, 9], [0, 0, 3], [4, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(changed, [3, 1, 1, 0])


@pytest.mark.parametrize("name", ["moving_digits", "silero_vad"])
def test_threshold_zero_reproduces_outputs_exactly(root, name):
    trace = accelsim.load_trace(root / "traces" / name)
    for layer in trace.layers:
        if not layer.frames:
            continue
        err = delta_error(layer, 0)
        assert err["delta_exact"] == 1.0 and err["delta_err_max"] == 0.0, layer.name


def test_positive_threshold_reports_error(root):
    trace = accelsim.load_trace(root / "traces" / "moving_digits")
    df = accelsim.simulate(trace, "delta_ws_16x16", overrides={"delta.threshold": 4},
                           functional=True)
    assert (df.delta_err_rms >= 0).all() and (df.delta_err_max >= df.delta_err_rms).all()
    assert (df.delta_err_max > 0).any()


def test_per_frame_table_adds_up(root):
    trace = accelsim.load_trace(root / "traces" / "moving_digits")
    hw = accelsim.load_hwconfig("delta_ws_16x16")
    frames = accelsim.simulate(trace, hw, per_frame=True)
    layers = accelsim.simulate(trace, hw)
    by = frames.groupby("layer", sort=False)[["macs_performed", "compute_cycles"]].sum()
    assert by.macs_performed.tolist() == layers.macs_performed.tolist()
    assert by.compute_cycles.tolist() == layers.compute_cycles.tolist()
    assert (frames.frame.groupby(frames.layer).max() == 15).all()


def test_delta_does_nothing_without_frames():
    t = tiny_cnn_trace(seed=0)
    base = accelsim.simulate(t, "cnvlutin_ws_16x16")
    d = accelsim.simulate(t, "cnvlutin_ws_16x16", overrides={"delta.enabled": True})
    frameless = [not layer.frames for layer in t.layers]
    for col in ("macs_performed", "cycles", "dram_bytes"):
        assert (base[col][frameless] == d[col][frameless]).all()
    assert (d.state_bytes[frameless] == 0).all()


def test_static_video_only_state_after_frame_zero():
    rng = np.random.default_rng(0)
    x0 = random_tensor((1, 8, 10, 10), 0.6, rng)
    w = random_tensor((16, 8, 3, 3), 0.8, rng)
    one = tr.conv2d("c", x0[None], w, padding=1, frames=True)
    static = tr.conv2d("c", np.repeat(x0[None], 5, axis=0), w, padding=1, frames=True)
    hw = accelsim.load_hwconfig("delta_ws_16x16")
    r1 = accelsim.simulate(tr.Trace.from_arrays("one", [one]), hw).iloc[0]
    r5 = accelsim.simulate(tr.Trace.from_arrays("static", [static]), hw).iloc[0]
    assert r5.delta_gemms_skipped == 4
    for col in ("macs_performed", "compute_cycles", "folds", "dram_a_read_bytes",
                "dram_w_read_bytes", "glb_a_read_bytes", "glb_w_read_bytes",
                "dram_out_write_bytes"):
        assert r5[col] == r1[col], col
    assert r5.state_ref_read_bytes > 0 and r5.state_bytes > r1.state_bytes


def test_nm_check_prune_and_two_x():
    rng = np.random.default_rng(1)
    layer = tr.linear("fc", random_tensor((64, 40), 1.0, rng), random_tensor((24, 40), 1.0, rng))
    t = tr.Trace.from_arrays("dense", [layer])
    with pytest.raises(SimulationError, match=r"layer 'fc': weights are not 2:4 along K: "
                                              r"output column 0, K group 0"):
        accelsim.simulate(t, "sparse_tc_os_16x16")
    pruned, removed = prune_nm(t, 2, 4)
    assert removed["fc"] == pytest.approx(0.5)
    assert nm_violation(lower_w(pruned[0]) != 0, 2, 4) is None
    assert pruned.provenance["transforms"][-1]["prune_nm"] == "2:4"
    per_fold_fill = {"timing": "scalesim"}
    nm = accelsim.simulate(pruned, "sparse_tc_os_16x16", overrides=per_fold_fill).iloc[0]
    dense = accelsim.simulate(pruned, "sparse_tc_os_16x16",
                              overrides=per_fold_fill | {"structured.n": 0}).iloc[0]
    fill = 16 + 16 - 2
    assert (dense.compute_cycles - dense.folds * fill) == 2 * (nm.compute_cycles - nm.folds * fill)
    assert nm.macs_performed * 2 == dense.macs_performed
    assert nm.nm_mux_ops == nm.macs_performed and nm.energy_mux_pj > 0
    assert nm.dram_w_read_meta_bytes == 24 * 20 * 2 // 8  # 2-bit index per kept weight


def test_cli_delta_nm_and_inspect(root, capsys, tmp_path):
    digits = str(root / "traces" / "digits_cnn")
    assert main(["simulate", digits, "--hw", "sparse_tc_os_16x16"]) == 2
    assert "weights are not 2:4" in capsys.readouterr().err
    assert main(["simulate", digits, "--hw", "sparse_tc_os_16x16", "--prune", "nm:2:4"]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "faster" in out and "than without N:M" in out
    assert main(["simulate", digits, "--hw", "sparse_tc_os_16x16", "--prune", "2:4"]) == 2
    assert "expected nm:N:M" in capsys.readouterr().err
    video = str(root / "traces" / "moving_digits")
    assert main(["simulate", video, "--hw", "delta_ws_16x16", "--show", "delta",
                 "--functional"]) == 0
    out = capsys.readouterr().out
    assert "without delta" in out
    assert main(["simulate", video, "--hw", "delta_ws_16x16", "--show", "delta",
                 "--functional", "--format", "csv"]) == 0
    head = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")][0]
    assert "delta_density_a" in head.split(",") and "delta_err_rel" in head.split(",")
    assert main(["simulate", video, "--hw", "delta_ws_16x16", "--per-frame"]) == 0
    assert "frame" in capsys.readouterr().out
    assert main(["inspect", video, "-o", str(tmp_path / "i.csv")]) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and "TOTAL" in out
    assert (tmp_path / "i.csv").exists()
