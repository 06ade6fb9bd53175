import json

import numpy as np
import pandas as pd
import pytest
from conftest import hw_dict

import accelsim
from accelsim.cli.main import main
from accelsim.io.synthetic import resnet18_trace, tiny_cnn_trace
from accelsim.model.dataflow import dense_cycles
from accelsim.model.engine import layer_masks, simulate_layer

POLICIES = ["none", "gate", "skip_a", "skip_w", "skip_both"]


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_skip_both_performed_equals_mask_product(dataflow):
    """Oracle: under skip_both, performed MACs == ((A != 0) @ (W != 0)).sum() per layer."""
    hw = accelsim.load_hwconfig(hw_dict(8, 4, dataflow, "skip_both"))
    trace = tiny_cnn_trace(density_a=0.4, density_w=0.6, seed=5)
    for layer in trace.layers:
        az, wz = layer_masks(layer)
        expect = int((az.astype(np.int64) @ wz.astype(np.int64)).sum())
        assert simulate_layer(layer, hw).gemm.macs_performed == expect, layer.name


def test_mac_identity_and_dense_closed_form():
    trace = tiny_cnn_trace(seed=2)
    for df_ in ("os", "ws", "is"):
        dense_hw = accelsim.load_hwconfig(hw_dict(5, 3, df_, "none", p=2))
        for pol in POLICIES:
            hw = accelsim.load_hwconfig(hw_dict(5, 3, df_, pol, p=2))
            df = accelsim.simulate(trace, hw)
            assert (df.macs_performed + df.macs_gated + df.macs_skipped + df.macs_padding
                    == df.macs_dense).all()
            assert df.macs_dense.dtype == np.int64 and df.cycles.dtype == np.int64
            if pol in ("none", "gate"):
                # a pack of s groups (array.pack_groups) is a dense M x sK x sN GEMM
                dense = [sum(dense_cycles(dense_hw, r.m, s * r.k, s * r.n)
                             for s in (min(r.packed_groups, r.groups - g0)
                                       for g0 in range(0, r.groups, r.packed_groups)))
                         * (r.gemms // r.groups) for r in df.itertuples()]
                assert (df.cycles <= dense).all()  # padding pairs take no slot
                padded = accelsim.simulate(trace, hw, {"skip_padding": False})
                assert padded.cycles.tolist() == dense
                assert (padded.macs_padding == 0).all()
            else:
                base = accelsim.simulate(trace, dense_hw)
                assert (df.cycles <= base.cycles).all()


def test_resnet18_shape_trace():
    t = resnet18_trace(image=32)  # small image keeps the test fast
    assert len(t) == 21
    kinds = [layer.kind for layer in t.layers]
    assert kinds.count("conv2d") == 20 and kinds[-1] == "linear"


def test_simulate_dataframe_and_totals():
    trace = tiny_cnn_trace(seed=0)
    df = accelsim.simulate(trace, accelsim.load_hwconfig("sparse_os_16x16"))
    for col in ("layer", "kind", "m", "k", "n", "frames", "macs_dense", "macs_performed",
                "macs_gated", "macs_skipped", "cycles", "util", "density_a", "density_w"):
        assert col in df.columns
    tot = accelsim.totals(df)
    assert tot["cycles"] == df.cycles.sum()
    assert tot["macs_dense"] == df.macs_dense.sum()
    assert 0 < tot["util"] <= 1
    full = accelsim.with_totals(df)
    assert full.iloc[-1]["layer"] == "TOTAL" and len(full) == len(df) + 1


def test_depthwise_uses_array_badly():
    t = tiny_cnn_trace(seed=0)
    df = accelsim.simulate(t, accelsim.load_hwconfig("dense_os_32x32"))
    dw = df.set_index("layer").loc["dwconv3"]
    assert dw.n == 1 and dw.gemms == 32 and dw.util < 0.05


def test_overflow_guard():
    from accelsim.errors import SimulationError
    from accelsim.model.engine import _mac_counts

    az = np.lib.stride_tricks.as_strided(np.ones(1, bool), (1, 2**20, 2**21, 1), (0, 0, 0, 0))
    wz = np.lib.stride_tricks.as_strided(np.ones(1, bool), (1, 2**20, 1, 2**21), (0, 0, 0, 0))
    with pytest.raises(SimulationError, match="overflows 64-bit"):
        _mac_counts(az, wz, "skip_both", None)


def test_cli_simulate_table_and_outputs(tmp_path, capsys, root):
    trace = str(root / "traces/synthetic_tiny_cnn")
    out_csv = tmp_path / "o.csv"
    assert main(["simulate", trace, "--hw", "sparse_os_16x16", "--set", "array.rows=8",
                 "-o", str(out_csv)]) == 0
    text = capsys.readouterr().out
    assert "TOTAL" in text and "performed" in text and "8x16 PEs" in text
    df = pd.read_csv(out_csv, comment="#")
    assert df.iloc[-1]["layer"] == "TOTAL"
    api = accelsim.simulate(trace, "sparse_os_16x16", overrides={"array.rows": 8})
    assert df.iloc[:-1]["cycles"].tolist() == api.cycles.tolist()
    out_json = tmp_path / "o.json"
    assert main(["simulate", trace, "--hw", "sparse_os_16x16", "-o", str(out_json),
                 "--columns", "layer,cycles"]) == 0
    doc = json.loads(out_json.read_text())
    assert doc["rows"][-1]["layer"] == "TOTAL" and list(doc["rows"][0]) == ["layer", "cycles"]
    assert doc["provenance"]["hw"]["name"] == "sparse_os_16x16"
    assert main(["simulate", trace, "--hw", "sparse_os_16x16", "--columns", "nope"]) == 2
    assert "unknown column 'nope'" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "simulate" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert "--set" in out and "--hw" in out
