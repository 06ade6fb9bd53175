"""SCALE-Sim .cfg and topology files (accelsim.io.scalesim) and `simulate --scalesim-cfg`.

The reference is tests/golden/scalesim_cycles.csv: real SCALE-Sim v3 runs, whose "Total
Cycles" is the index of the last cycle, so accelsim's count is SCALE-Sim's + 1.
"""

import csv
import math
from pathlib import Path

import numpy as np
import pytest

import accelsim
from accelsim.cli import main
from accelsim.errors import ConfigError, TraceError
from accelsim.io.scalesim import (
    load_scalesim,
    load_scalesim_hwconfig,
    load_topology,
    read_scalesim_cfg,
    read_topology,
    scalesim_gemm,
)
from accelsim.model.sparsity import check_nm
from accelsim.model.workload import gemm_shape, lower_w

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "scalesim"
GOLDEN = list(csv.DictReader((ROOT / "tests" / "golden" / "scalesim_cycles.csv").open()))
CONV_HEADER = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
               "Channels, Num Filter, Strides,")


def _cfg(rows, cols, dataflow, sram=(64, 64, 32), style=":", mode="CALC", extra=""):
    d = style if style == ":" else " ="
    return (f"[general]\nrun_name = golden_{rows}x{cols}_{dataflow}\n\n"
            f"[architecture_presets]\nArrayHeight{d} {rows}\nArrayWidth{d} {cols}\n"
            f"IfmapSramSzkB{d} {sram[0]}\nFilterSramSzkB{d} {sram[1]}\n"
            f"OfmapSramSzkB{d} {sram[2]}\nDataflow{d} {dataflow}\nBandwidth{d} 10\n\n"
            f"[run_presets]\nInterfaceBandwidth{d} {mode}\n{extra}")


def _topologies(rows):
    conv = [CONV_HEADER] + [
        f"{r['layer']}, {r['ifmap_h']}, {r['ifmap_w']}, {r['filt_h']}, {r['filt_w']}, "
        f"{r['channels']}, {r['num_filters']}, {r['stride']}," for r in rows
        if r["kind"] == "conv2d"]
    gemm = ["Layer name, M, N, K,"] + [f"{r['layer']}, {r['m']}, {r['n']}, {r['k']},"
                                        for r in rows if r["kind"] == "gemm"]
    return "\n".join(conv) + "\n", "\n".join(gemm) + "\n"


GROUPS = sorted({(int(r["array_rows"]), int(r["array_cols"]), r["dataflow"]) for r in GOLDEN})


@pytest.mark.parametrize("group", GROUPS, ids=[f"{r}x{c}-{d}" for r, c, d in GROUPS])
def test_topology_and_cfg_reproduce_scalesim_cycles(tmp_path, group):
    rows, cols, dataflow = group
    sel = [r for r in GOLDEN if (int(r["array_rows"]), int(r["array_cols"]), r["dataflow"])
           == group]
    assert {(r["ifmap_sram_kb"], r["filter_sram_kb"], r["ofmap_sram_kb"]) for r in sel} == \
        {("64", "64", "32")}
    cfg = tmp_path / "golden.cfg"
    cfg.write_text(_cfg(rows, cols, dataflow))
    conv_text, gemm_text = _topologies(sel)
    (tmp_path / "conv.csv").write_text(conv_text)
    (tmp_path / "gemm.csv").write_text(gemm_text)
    want = {r["layer"]: int(r["scalesim_total_cycles"]) + 1 for r in sel}
    got = {}
    for topo in ("conv.csv", "gemm.csv"):
        trace, hw = load_scalesim(cfg, tmp_path / topo)
        assert (hw.array.rows, hw.array.cols, hw.dataflow) == group
        df = accelsim.simulate(trace, hw)
        assert (df["stall_cycles"] == 0).all()  # CALC mode: no stalls
        for layer, m_k_n in zip(df["layer"], zip(df["m"], df["k"], df["n"], strict=True),
                                strict=True):
            row = next(r for r in sel if r["layer"] == layer)
            assert m_k_n == (int(row["m"]), int(row["k"]), int(row["n"]))  # SCALE-Sim's GEMM
        got.update(zip(df["layer"], (int(c) for c in df["compute_cycles"]), strict=True))
    assert got == want


def test_cli_runs_the_shipped_golden_topologies(tmp_path):
    """`accelsim simulate --scalesim-cfg --topology` on examples/scalesim/ gives SCALE-Sim's
    32x32 os cycles + 1 for every golden shape."""
    sel = {r["layer"]: int(r["scalesim_total_cycles"]) + 1 for r in GOLDEN
           if (r["array_rows"], r["array_cols"], r["dataflow"]) == ("32", "32", "os")}
    got = {}
    for topo in ("golden_conv.csv", "golden_gemm.csv"):
        out = tmp_path / f"{topo}.out.csv"
        rc = main(["simulate", "--scalesim-cfg", str(EXAMPLES / "scale_os_32x32.cfg"),
                   "--topology", str(EXAMPLES / topo), "-o", str(out)])
        assert rc == 0
        for r in csv.DictReader(x for x in out.open() if not x.startswith("#")):
            if r["layer"] != "TOTAL":
                got[r["layer"]] = int(r["compute_cycles"])
    assert got == sel


def test_shipped_golden_topologies_hold_the_golden_shapes():
    conv_text, gemm_text = _topologies([r for r in GOLDEN if (r["array_rows"], r["array_cols"],
                                                                r["dataflow"]) == ("8", "8", "os")])
    for name, text in (("golden_conv.csv", conv_text), ("golden_gemm.csv", gemm_text)):
        shipped = [(t.name, dict(t.dims)) for t in read_topology(EXAMPLES / name)]
        tmp = [line for line in text.splitlines() if line]
        assert len(shipped) == len(tmp) - 1
        for (lname, dims), line in zip(shipped, tmp[1:], strict=True):
            cells = [c.strip() for c in line.rstrip(",").split(",")]
            assert lname == cells[0]
            assert list(dims.values()) == [int(c) for c in cells[1:]]


def _closed_form(m, k, n, rows, cols, dataflow):
    """SCALE-Sim's stall-free cycles + 1 (tests/golden/README.md; holds on all 234 rows)."""
    sr, sc, t = {"os": (m, n, k), "ws": (k, n, m), "is": (k, m, n)}[dataflow]
    per_fold = rows + cols + t - 2 if dataflow == "os" else 2 * rows + cols + t - 2
    return math.ceil(sr / rows) * math.ceil(sc / cols) * per_fold


@pytest.mark.parametrize("topo,cfg", [("vit_s_block.csv", "scale_os_32x32.cfg"),
                                      ("vit_s_block.csv", "eyeriss_ws.cfg"),
                                      ("resnet18.csv", "scale_os_32x32.cfg"),
                                      ("mobilenet_dp.csv", "eyeriss_ws.cfg")])
def test_scalesim_example_topologies_follow_scalesims_fold_formula(topo, cfg):
    """SCALE-Sim's own example topologies (shapes transcribed in examples/scalesim/) and a
    depthwise one: per layer, the cycles of SCALE-Sim's GEMMs (one per channel for DP)."""
    rows = read_topology(EXAMPLES / topo)
    trace, hw = load_scalesim(EXAMPLES / cfg, EXAMPLES / topo)
    hw = hw.with_overrides({"memory.dram.bandwidth_bytes_per_cycle": math.inf})
    df = accelsim.simulate(trace, hw)
    for row, cycles in zip(rows, df["compute_cycles"], strict=True):
        m, k, n = scalesim_gemm(row)
        per = _closed_form(m, k, n, hw.array.rows, hw.array.cols, hw.dataflow)
        copies = row.dims["channels"] if row.depthwise else 1
        assert int(cycles) == copies * per, row.name


EXAMPLE_ROWS = list(csv.DictReader(
    (ROOT / "tests" / "golden" / "scalesim_examples.csv").open()))
EXAMPLE_RUNS = sorted({(r["topology"], r["config"]) for r in EXAMPLE_ROWS})


@pytest.mark.parametrize("topo,cfg", EXAMPLE_RUNS, ids=[f"{t}-{c}" for t, c in EXAMPLE_RUNS])
def test_example_topologies_match_real_scalesim_runs(topo, cfg):
    """tests/golden/scalesim_examples.csv: SCALE-Sim 3.0.0 run on the example files as they
    are (make_scalesim_examples_golden.py, CALC mode). A DP layer is one SCALE-Sim row per
    channel; accelsim's layer is their sum, each + 1."""
    rows = [r for r in EXAMPLE_ROWS if (r["topology"], r["config"]) == (topo, cfg)]
    want: dict[str, int] = {}
    for r in rows:
        want[r["layer"]] = want.get(r["layer"], 0) + int(r["scalesim_total_cycles"]) + 1
    trace, hw = load_scalesim(EXAMPLES / cfg, EXAMPLES / topo,
                              overrides={"memory.dram.bandwidth_bytes_per_cycle": math.inf})
    assert (hw.array.rows, hw.array.cols, hw.dataflow) == (
        int(rows[0]["array_rows"]), int(rows[0]["array_cols"]), rows[0]["dataflow"])
    df = accelsim.simulate(trace, hw)
    assert dict(zip(df["layer"], (int(c) for c in df["compute_cycles"]), strict=True)) == want


# --------------------------------------------------------------------------- .cfg


def test_both_key_styles_and_any_case_read_the_same(tmp_path):
    a, b = tmp_path / "a.cfg", tmp_path / "b.cfg"
    a.write_text(_cfg(16, 8, "ws", style=":"))
    b.write_text(_cfg(16, 8, "ws", style="=").replace("ArrayHeight", "arrayheight"))
    ha, hb = load_scalesim_hwconfig(a), load_scalesim_hwconfig(b)
    assert ha.with_overrides({"description": ""}).to_dict() == \
        hb.with_overrides({"description": ""}).to_dict()
    assert (ha.array.rows, ha.array.cols, ha.dataflow) == (16, 8, "ws")
    assert (ha.memory.glb.a_kib, ha.memory.glb.w_kib, ha.memory.glb.out_kib) == (64, 64, 32)
    assert ha.memory.dram.bandwidth_bytes_per_cycle == math.inf  # CALC
    assert ha.zero_policy == "none" and ha.name == "golden_16x8_ws"


def test_shipped_scalesim_cfgs_load():
    for cfg in sorted(EXAMPLES.glob("*.cfg")):
        hw = load_scalesim_hwconfig(cfg)
        assert hw.array.rows >= 1
    eye = read_scalesim_cfg(EXAMPLES / "eyeriss_ws.cfg")
    assert eye.interface_bandwidth == "USER" and eye.bandwidths == (10,)
    # USER: one value per interface (ifmap, filter, ofmap); accelsim's one DRAM gets the sum
    assert load_scalesim_hwconfig(EXAMPLES / "eyeriss_ws.cfg") \
        .memory.dram.bandwidth_bytes_per_cycle == 30
    scale = read_scalesim_cfg(EXAMPLES / "scale_os_32x32.cfg")
    assert "architecture_presets.IfmapOffset" in scale.ignored


def test_overrides_apply_on_top(tmp_path):
    hw = load_scalesim_hwconfig(EXAMPLES / "scale_os_32x32.cfg", {"zero_policy": "skip_both"})
    assert hw.zero_policy == "skip_both"
    with pytest.raises(ConfigError, match=r"scale_os_32x32.cfg: arr: unknown key"):
        load_scalesim_hwconfig(EXAMPLES / "scale_os_32x32.cfg", {"arr.rows": 3})


BAD_CFGS = [
    ("ArrayHeight: 32", "ArrayHeigth: 32", r"\[architecture_presets\] arrayheigth: unknown key"),
    ("ArrayHeight: 32", "ArrayHeight: big", r"ArrayHeight: expected an integer, got 'big'"),
    ("ArrayHeight: 32", "ArrayHeight: 0", r"ArrayHeight: expected an integer >= 1, got 0"),
    ("ArrayHeight: 32", "", r"ArrayHeight: missing required key"),
    ("Dataflow: os", "Dataflow: rs", r"Dataflow: expected one of os, ws, is, got 'rs'"),
    ("InterfaceBandwidth: CALC", "InterfaceBandwidth: FAST",
     r"InterfaceBandwidth: expected CALC or USER"),
    ("Bandwidth: 10", "Bandwidth: 10,x", r"Bandwidth: expected words per cycle"),
    ("[run_presets]", "[runpresets]", r"\[runpresets\]: unknown section"),
    ("ArrayWidth: 32", "ArrayWidth: 32\nArrayWidth: 16", r"line \d+: .*arraywidth given twice"),
    ("ArrayWidth: 32", "ArrayWidth 32", r"line \d+: expected 'Key: value' or 'Key = value'"),
]


@pytest.mark.parametrize("old,new,msg", BAD_CFGS, ids=[m[:30] for _, _, m in BAD_CFGS])
def test_bad_cfg_is_one_line_naming_file_and_key(tmp_path, old, new, msg):
    text = _cfg(32, 32, "os")
    assert old in text
    p = tmp_path / "bad.cfg"
    p.write_text(text.replace(old, new))
    with pytest.raises(ConfigError, match=msg) as e:
        load_scalesim_hwconfig(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_user_mode_needs_bandwidth(tmp_path):
    p = tmp_path / "u.cfg"
    p.write_text(_cfg(8, 8, "os", mode="USER").replace("Bandwidth: 10\n", ""))
    with pytest.raises(ConfigError, match="Bandwidth: missing"):
        read_scalesim_cfg(p)
    p.write_text(_cfg(8, 8, "os", mode="USER").replace("Bandwidth: 10", "Bandwidth: 4,5,6"))
    assert load_scalesim_hwconfig(p).memory.dram.bandwidth_bytes_per_cycle == 15


def test_tiny_sram_fails_like_any_config(tmp_path):
    p = tmp_path / "t.cfg"
    p.write_text(_cfg(256, 256, "os", sram=(1, 64, 64)))
    with pytest.raises(ConfigError, match=r"t.cfg: memory.glb.a_kib: expected at least 64 KiB"):
        load_scalesim_hwconfig(p)


# --------------------------------------------------------------------------- topologies


def test_conv_topology_shapes_padding_and_ceil(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text(CONV_HEADER + "\nc, 8, 8, 3, 3, 4, 5, 2,\nd, 9, 9, 3, 3, 4, 5, 2\n")
    trace = load_topology(p)
    c, d = trace.layers
    assert c.a.shape == (1, 4, 9, 9)  # extended: SCALE-Sim's ceil gives a 4x4 ofmap
    assert c.meta["scalesim"]["ifmap_extended"] == {"from": [8, 8], "to": [9, 9]}
    assert "ifmap_extended" not in d.meta["scalesim"]  # no trailing comma: fine too
    for layer in (c, d):
        g = gemm_shape(layer)
        assert (g.m, g.k, g.n) == (16, 36, 5) and layer.padding == (0, 0)
    assert trace.provenance["synthetic"] is True
    assert all(np.count_nonzero(la.a) == la.a.size for la in trace.layers)  # dense default


def test_gemm_topology_and_duplicate_names(tmp_path):
    # SCALE-Sim v3's own sparsity example repeats a layer name
    p = tmp_path / "g.csv"
    p.write_text("Layer Name, M, N, K, Sparsity,\nGEMM_1, 3, 5, 16, 3:4,\nGEMM_1, 1, 5, 16, 1:4,\n")
    trace = load_topology(p)
    assert [la.name for la in trace.layers] == ["GEMM_1", "GEMM_1_2"]
    for layer, (m, n) in zip(trace.layers, ((3, 3), (1, 1)), strict=True):
        g = gemm_shape(layer)
        assert (g.m, g.k, g.n) == (m, 16, 5)
        groups = np.count_nonzero(layer.w.reshape(5, 4, 4), axis=-1)
        assert (groups == n).all()  # exactly N of every M along K at density_w = 1


def test_depthwise_and_nm_weights():
    trace = load_topology(EXAMPLES / "mobilenet_dp.csv", density_w=0.7, seed=3)
    dp = trace["Conv2_DP"]
    assert dp.groups == 32 and dp.w.shape == (32, 1, 3, 3)
    for layer in trace.layers:
        check_nm(layer, lower_w(layer) != 0, 2, 4)  # N:M along accelsim's K
    pw = trace["Conv2_PW"]
    assert 0.3 < np.count_nonzero(pw.w) / pw.w.size < 0.4  # 2:4 x density 0.7


def test_densities_and_seed(tmp_path):
    p = EXAMPLES / "vit_s_block.csv"
    t1 = load_topology(p, density_a=0.3, density_w=0.6, seed=1)
    t2 = load_topology(p, density_a=0.3, density_w=0.6, seed=1)
    a = np.concatenate([la.a.ravel() for la in t1.layers])
    w = np.concatenate([la.w.ravel() for la in t1.layers])
    assert abs(np.count_nonzero(a) / a.size - 0.3) < 0.01
    assert abs(np.count_nonzero(w) / w.size - 0.6) < 0.01
    assert all(np.array_equal(x.a, y.a) for x, y in zip(t1.layers, t2.layers, strict=True))
    assert t1.provenance["density_a"] == 0.3
    with pytest.raises(TraceError, match="density_a: expected a number in"):
        load_topology(p, density_a=1.5)


BAD_TOPOLOGIES = [
    ("Layer, Height, Width,\n", r"line 1: header: expected SCALE-Sim's conv header"),
    (CONV_HEADER + "\nc1, 8, 8, 3, x, 4, 5, 1,\n",
     r"line 2: layer 'c1': Filter Width: expected an integer >= 1, got 'x'"),
    (CONV_HEADER + "\nc1, 8, 8, 3, 3, 4, 5,\n", r"layer 'c1': expected 8 columns"),
    (CONV_HEADER + "\nc1, 2, 8, 3, 3, 4, 5, 1,\n",
     r"layer 'c1': Filter Height 3 is larger than IFMAP Height 2"),
    (CONV_HEADER + "\nc1, 8, 8, 3, 3, 4, 5, 1, 3:2,\n", r"layer 'c1': sparsity: expected N:M"),
    (CONV_HEADER + "\n, 8, 8, 3, 3, 4, 5, 1,\n", r"line 2: layer name: expected a name"),
    (CONV_HEADER + "\n", r"no layers after the header"),
    ("", r"empty topology file"),
    ("Layer name, M, N, K,\ng, 0, 2, 2,\n", r"layer 'g': M: expected an integer >= 1"),
]


@pytest.mark.parametrize("text,msg", BAD_TOPOLOGIES, ids=[m[:30] for _, m in BAD_TOPOLOGIES])
def test_bad_topology_is_one_line_naming_file_line_and_column(tmp_path, text, msg):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(TraceError, match=msg) as e:
        load_topology(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_sparsity_support_turns_on_nm_from_the_topology(tmp_path):
    trace, hw = load_scalesim(EXAMPLES / "sparse_ws_16x16.cfg", EXAMPLES / "mobilenet_dp.csv")
    assert (hw.structured.n, hw.structured.m) == (2, 4)
    df = accelsim.simulate(trace, hw)
    assert (df["macs_performed"] < df["macs_dense"]).all()
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("Layer name, M, N, K, Sparsity,\na, 4, 4, 16, 2:4,\nb, 4, 4, 16, 1:4,\n")
    with pytest.raises(ConfigError, match=r"mixed.csv: layers give N:M ratios 1:4, 2:4"):
        load_scalesim(EXAMPLES / "sparse_ws_16x16.cfg", mixed)
    # without SparsitySupport the ratios are only values: the array stays dense
    _, hw = load_scalesim(EXAMPLES / "scale_os_32x32.cfg", mixed)
    assert hw.structured.n == 0


def test_cli_inputs_and_errors(tmp_path, capsys):
    rc = main(["simulate", "--hw", "sparse_os_16x16", "--topology",
               str(EXAMPLES / "vit_s_block.csv"), "--density-a", "0.5"])
    assert rc == 0
    assert "trace vit_s_block (5 layers) on sparse_os_16x16" in capsys.readouterr().out
    cases = [
        (["simulate", "--hw", "sparse_os_16x16"], "give a trace directory or --topology"),
        (["simulate", "traces/digits_cnn", "--topology", "x.csv", "--hw", "x"],
         "give a trace directory or --topology"),
        (["simulate", "traces/digits_cnn"], "give --hw CONFIG or --scalesim-cfg"),
        (["simulate", "traces/digits_cnn", "--hw", "sparse_os_16x16", "--density-a", "0.5"],
         "--density-a/--density-w: only with --topology"),
        (["simulate", "--topology", str(EXAMPLES / "vit_s_block.csv"), "--hw",
          "sparse_os_16x16", "--density-w", "abc"], "--density-w 'abc': expected a number"),
        (["simulate", "--topology", str(tmp_path / "none.csv"), "--scalesim-cfg",
          str(EXAMPLES / "scale_os_32x32.cfg")], "none.csv: cannot read"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, (argv, err)


def test_interop_doc_python_examples_run(monkeypatch):
    import re

    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "interop.md").read_text(), re.S)
    scalesim = [b for b in blocks if "load_scalesim" in b]
    assert scalesim
    for code in scalesim:
        scope: dict = {}
        exec(compile(code, "<docs/interop.md>", "exec"), scope)
        assert len(scope["df"]) == 13
