"""trace_onnx / `accelsim trace-onnx`: ONNX models run with onnxruntime (extra `onnx`)."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import accelsim  # noqa: E402
from accelsim.cli import main  # noqa: E402
from accelsim.errors import TraceError  # noqa: E402
from accelsim.model.workload import gemm_shape, lower_a, lower_w  # noqa: E402
from accelsim.tracing.onnx import load_inputs_npz, trace_onnx  # noqa: E402


def _torch_model():
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.dw = torch.nn.Conv2d(8, 8, 3, stride=2, groups=8, dilation=1)
            self.c1d = torch.nn.Conv1d(8, 4, 3, padding=1)
            self.mha = torch.nn.MultiheadAttention(12, 2, batch_first=True)
            self.fc = torch.nn.Linear(12, 6)

        def forward(self, x):
            y = torch.relu(self.c1(x))
            y = torch.relu(self.dw(y)).flatten(2)           # [B, 8, 9]
            y = torch.relu(self.c1d(y))                     # [B, 4, 9]
            t = y.reshape(y.shape[0], 3, 12)                # 3 tokens of 12
            a, _ = self.mha(t, t, t, need_weights=False)
            h = self.fc(a)                                  # [B, 3, 6]
            return h @ h.transpose(1, 2)                    # activation x activation

    torch.manual_seed(0)
    return torch, Net().eval()


def _export(torch, model, x, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the legacy exporter: the dynamo one needs onnxscript, not installed
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"])
    return path


def _dims(layer):
    g = gemm_shape(layer)
    return g.frames, g.per_frame, g.m, g.k, g.n, g.groups


def _macs(trace):
    return sorted((layer.kind, gemm_shape(layer).macs_dense) for layer in trace.layers)


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_exported_torch_model_traces_like_trace_torch(tmp_path, quantize):
    torch, model = _torch_model()
    x = torch.randn(2, 3, 8, 8)
    path = _export(torch, model, x, tmp_path / "net.onnx")
    ref = accelsim.trace_torch(model, x, quantize=quantize).trace
    got = trace_onnx(path, {"x": x.numpy()}, tmp_path / "trace", quantize=quantize)
    assert not got.skipped
    assert _macs(got.trace) == _macs(ref)
    assert sum(m for _, m in _macs(got.trace)) == sum(m for _, m in _macs(ref))
    kinds = [layer.kind for layer in got.trace.layers]
    assert kinds.count("matmul") == 3  # attention qk, pv and h @ h^T
    # same products in the same order, with the same operand values
    for r, g in zip(ref.layers, got.trace.layers, strict=True):
        assert (r.kind, _dims(r)) == (g.kind, _dims(g)), (r.name, g.name)
        if quantize == "int8":
            assert g.a.dtype == np.int8 and g.quant_of("input" if g.kind != "matmul"
                                                       else "a").scheme == "symmetric"
            for low in (lower_a, lower_w):  # rounding of float differences: 1 step at most
                diff = np.asarray(low(r)).astype(int) - np.asarray(low(g)).astype(int)
                assert np.abs(diff).max() <= 1 and np.mean(diff != 0) < 0.01
        else:
            np.testing.assert_allclose(np.asarray(lower_a(g)), np.asarray(lower_a(r)),
                                       rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(np.asarray(lower_w(g)), np.asarray(lower_w(r)),
                                       rtol=1e-4, atol=1e-5)
    assert [g.name for g in got.trace.layers][:3] == ["c1", "dw", "c1d"]
    loaded = accelsim.load_trace(tmp_path / "trace")
    assert loaded.provenance["tracer"] == "accelsim.trace_onnx"
    df = accelsim.simulate(loaded, "sparse_os_16x16")
    assert int(df["macs_dense"].sum()) == sum(m for _, m in _macs(ref))


def test_list_of_inputs_is_frames(tmp_path):
    torch, model = _torch_model()
    xs = [torch.randn(1, 3, 8, 8) for _ in range(3)]
    path = _export(torch, model, xs[0], tmp_path / "net.onnx")
    res = trace_onnx(path, [{"x": x.numpy()} for x in xs])
    c1 = res.trace["c1"]
    assert c1.frames and c1.num_frames == 3
    np.testing.assert_array_equal(c1.a, np.stack([x.numpy() for x in xs]))
    ref = accelsim.trace_torch(model, xs).trace
    assert _macs(res.trace) == _macs(ref)


def test_cli_trace_onnx(tmp_path, capsys):
    torch, model = _torch_model()
    x = torch.randn(4, 3, 8, 8)
    path = _export(torch, model, x[:1], tmp_path / "net.onnx")
    np.savez(tmp_path / "in.npz", x=x.numpy()[:, None])  # 4 frames of [1, 3, 8, 8]
    assert main(["trace-onnx", str(path), str(tmp_path / "in.npz"), str(tmp_path / "t"),
                 "--quantize", "int8", "--frames"]) == 0
    out = capsys.readouterr().out
    trace = accelsim.load_trace(tmp_path / "t")
    assert f"traced {len(trace)} layers" in out and "matmul" in out
    assert trace["c1"].num_frames == 4 and trace["c1"].a.dtype == np.int8
    assert main(["simulate", str(tmp_path / "t"), "--hw", "sparse_os_16x16"]) == 0
    # errors: one line, exit 2
    np.savez(tmp_path / "bad.npz", y=x.numpy())
    for argv, msg in [
        (["trace-onnx", str(path), str(tmp_path / "bad.npz"), str(tmp_path / "u")],
         "unknown input 'y' (the model's inputs: x)"),
        (["trace-onnx", str(tmp_path / "in.npz"), str(tmp_path / "in.npz"),
          str(tmp_path / "u")], "in.npz: not a readable ONNX model"),
        (["trace-onnx", str(path), str(tmp_path / "none.npz"), str(tmp_path / "u")],
         "none.npz: not a readable .npz file"),
    ]:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


# --------------------------------------------------------------------------- hand-built graphs


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _ort(model, feeds, names):
    import onnxruntime as ort

    m = onnx.ModelProto()
    m.CopyFrom(model)
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, feeds), strict=True))


def _product(layer):
    """The layer's GEMM output from its recorded operands (accelsim's lowering)."""
    return np.matmul(np.asarray(lower_a(layer), np.float64), np.asarray(lower_w(layer),
                                                                         np.float64))


def test_gemm_matmul_variants_and_padding_lower_to_the_models_products():
    rng = np.random.default_rng(0)
    inits = {"g.weight": rng.standard_normal((6, 5)).astype(np.float32),   # Gemm B, transB=1
             "left": rng.standard_normal((4, 6)).astype(np.float32),        # W @ X
             "lin.weight": rng.standard_normal((7, 6)).astype(np.float32),  # via Transpose
             "conv.weight": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
             "same.weight": rng.standard_normal((2, 2, 3, 2)).astype(np.float32)}
    nodes = [  # in topological order
        helper.make_node("Gemm", ["xt", "g.weight"], ["g_out"], name="/g/Gemm", transA=1,
                         transB=1),                                            # [3, 6]
        helper.make_node("Transpose", ["g_out"], ["g_out_t"]),
        helper.make_node("MatMul", ["left", "g_out_t"], ["wx"], name="wx"),    # W @ X
        helper.make_node("Transpose", ["lin.weight"], ["lin_wt"]),
        helper.make_node("MatMul", ["g_out", "lin_wt"], ["lin_out"]),          # [3, 7]
        helper.make_node("Transpose", ["lin_out"], ["lin_out_t"]),
        helper.make_node("MatMul", ["lin_out", "lin_out_t"], ["aa"]),          # act x act
        helper.make_node("Conv", ["img", "conv.weight"], ["c_out"], name="conv",
                         pads=[1, 0, 2, 1], strides=[2, 1]),                   # asymmetric
        helper.make_node("Conv", ["img", "same.weight"], ["s_out"], name="same",
                         auto_pad="SAME_UPPER", strides=[2, 2]),
        helper.make_node("ConvTranspose", ["img", "same.weight"], ["ct_out"], name="ct"),
    ]
    model = _model(nodes, [_vi("xt", [5, 3]), _vi("img", [1, 2, 7, 6])],
                   [_vi("aa", None), _vi("wx", None), _vi("c_out", None), _vi("s_out", None),
                    _vi("ct_out", None)], inits)
    feeds = {"xt": rng.standard_normal((5, 3)).astype(np.float32),
             "img": rng.standard_normal((1, 2, 7, 6)).astype(np.float32)}
    with pytest.warns(UserWarning, match=r"ct \(ConvTranspose\)"):
        res = trace_onnx(model, feeds)
    assert [s.op_type for s in res.skipped] == ["ConvTranspose"]
    assert res.trace.provenance["skipped"][0]["name"] == "ct"
    t = res.trace
    assert [la.name for la in t.layers] == ["g", "wx", "lin", "MatMul_6", "conv", "same"]
    assert [la.kind for la in t.layers] == ["linear", "linear", "linear", "matmul", "conv2d",
                                            "conv2d"]
    ref = _ort(model, feeds, ["g_out", "wx", "lin_out", "aa", "c_out", "s_out"])
    np.testing.assert_allclose(_product(t["g"])[0, 0], ref["g_out"], rtol=1e-4, atol=1e-4)
    assert t["wx"].meta["onnx"]["transposed"] is True  # (W X)^T = X^T W^T
    np.testing.assert_allclose(_product(t["wx"])[0, 0], ref["wx"].T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(_product(t["lin"])[0, 0], ref["lin_out"], rtol=1e-4,
                               atol=1e-4)
    np.testing.assert_allclose(_product(t["MatMul_6"])[0, 0], ref["aa"], rtol=1e-4,
                               atol=1e-4)
    # asymmetric padding is applied to the input; SAME_UPPER here is symmetric (1, 0)
    for name, key, pad in (("conv", "c_out", (0, 0)), ("same", "s_out", (1, 0))):
        layer = t[name]
        assert layer.padding == pad
        y = ref[key]  # [1, C, H, W] -> [H*W, C], accelsim's (batch, h, w) by channel order
        np.testing.assert_allclose(_product(layer)[0, 0],
                                   y[0].reshape(y.shape[1], -1).T, rtol=1e-4, atol=1e-4)
    assert t["conv"].a.shape == (1, 2, 10, 7)
    assert gemm_shape(t["same"]).m == 4 * 3  # SAME_UPPER: ceil(7/2) x ceil(6/2)


def test_symmetric_conv_padding_is_kept():
    w = np.ones((2, 1, 3, 3), np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [_vi("x", [1, 1, 4, 4])], [_vi("y", None)], {"w": w})
    layer = trace_onnx(model, {"x": np.ones((1, 1, 4, 4), np.float32)}).trace.layers[0]
    assert layer.padding == (1, 1) and layer.a.shape == (1, 1, 4, 4)


def test_errors_are_one_line(tmp_path):
    w = np.ones((3, 2), np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [4, 3])],
                   [_vi("y", None)], {"w": w})
    good = {"x": np.ones((4, 3), np.float32)}
    assert len(trace_onnx(model, good).trace) == 1
    relu = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [4, 3])],
                  [_vi("y", None)], {})
    conv_act = _model([helper.make_node("Conv", ["x", "k"], ["y"])],
                      [_vi("x", [1, 1, 4, 4]), _vi("k", [1, 1, 3, 3])], [_vi("y", None)], {})
    cases = [
        (lambda: trace_onnx(model, {}), "missing input 'x'"),
        (lambda: trace_onnx(model, {"x": good["x"], "z": 1}), "unknown input 'z'"),
        (lambda: trace_onnx(model, {"x": np.ones((4, 5), np.float32)}),
         "onnxruntime failed on the inputs"),
        (lambda: trace_onnx(model, good, quantize="int4"), "quantize: expected one of"),
        (lambda: trace_onnx(relu, {"x": good["x"]}), "no Conv, Gemm or MatMul node"),
        (lambda: trace_onnx(conv_act, {"x": np.ones((1, 1, 4, 4), np.float32),
                                       "k": np.ones((1, 1, 3, 3), np.float32)}),
         "Conv weight 'k' depends on the model's inputs"),
        (lambda: trace_onnx(tmp_path / "none.onnx", good), "ONNX model not found"),
        (lambda: trace_onnx(model, []), "the list of inputs is empty"),
    ]
    for call, msg in cases:
        with pytest.raises(TraceError, match=msg) as e:
            call()
        assert "\n" not in str(e.value)


def test_npz_inputs(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.zeros((3, 2, 4)), y=np.zeros((3, 1)))
    frames = load_inputs_npz(tmp_path / "a.npz", frames=True)
    assert len(frames) == 3 and frames[0]["x"].shape == (2, 4)
    np.savez(tmp_path / "b.npz", x=np.zeros((3, 2)), y=np.zeros((2, 1)))
    with pytest.raises(TraceError, match="same leading"):
        load_inputs_npz(tmp_path / "b.npz", frames=True)
    np.savez(tmp_path / "c.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(TraceError, match="c.npz: not a readable .npz"):
        load_inputs_npz(tmp_path / "c.npz")


def test_same_lower_asymmetric_padding_matches_onnxruntime():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((2, 1, 2, 2)).astype(np.float32)
    model = _model([helper.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER")],
                   [_vi("x", [1, 1, 4, 4])], [_vi("y", None)], {"w": w})
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    layer = trace_onnx(model, {"x": x}).trace.layers[0]
    assert layer.padding == (0, 0) and layer.a.shape == (1, 1, 5, 5)  # 1 before, 0 after
    y = _ort(model, {"x": x}, ["y"])["y"]
    np.testing.assert_allclose(_product(layer)[0, 0], y[0].reshape(2, -1).T, rtol=1e-5,
                               atol=1e-5)
