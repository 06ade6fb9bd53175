import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import accelsim
from accelsim.cli.main import main
from accelsim.errors import TraceError
from accelsim.io import trace as tr
from accelsim.io.synthetic import random_tensor, tiny_cnn_trace
from accelsim.model.workload import gemm_shape, lower_a, lower_w


def test_roundtrip_memmap(tmp_path):
    t = tiny_cnn_trace(seed=3)
    p = accelsim.write_trace(tmp_path / "t", t)
    back = accelsim.load_trace(p)
    assert back.model == t.model and len(back) == len(t)
    assert back.provenance["synthetic"] is True
    for a, b in zip(t.layers, back.layers, strict=True):
        assert a.name == b.name and a.kind == b.kind and a.frames == b.frames
        assert a.stride == b.stride and a.padding == b.padding and a.groups == b.groups
        for role in a.tensors:
            np.testing.assert_array_equal(a.tensors[role], b.tensors[role])
            assert isinstance(b.tensors[role], np.memmap)


def test_conv3d_roundtrip(tmp_path):
    rng = np.random.default_rng(4)
    x = random_tensor((2, 1, 4, 3, 6, 5), 0.6, rng)  # [T, N, C, D, H, W]
    w = random_tensor((4, 2, 2, 3, 3), 0.6, rng)
    layer = tr.conv3d("vid", x, w, stride=(1, 1, 2), padding=1, dilation=(2, 1, 1), groups=2,
                      frames=True)
    back = accelsim.load_trace(accelsim.write_trace(tmp_path / "v", [layer]))["vid"]
    assert back.kind == "conv3d" and back.stride == (1, 1, 2) and back.padding == (1, 1, 1)
    assert back.dilation == (2, 1, 1) and back.groups == 2 and back.num_frames == 2
    np.testing.assert_array_equal(back.a, x)
    s = gemm_shape(back)
    assert (s.per_frame, s.m, s.k, s.n) == (2, 1 * 3 * 6 * 3, 2 * 2 * 3 * 3, 2)
    with pytest.raises(TraceError, match=r"expected 5 dims \[N, C, D, H, W\]"):
        tr.validate_layer(tr.conv3d("bad", x[0, 0], w), "test")


def test_write_replaces_atomically(tmp_path):
    p = tmp_path / "t"
    accelsim.write_trace(p, tiny_cnn_trace(seed=1))
    accelsim.write_trace(p, tiny_cnn_trace(seed=2))
    assert sorted(x.name for x in tmp_path.iterdir()) == ["t"]
    np.testing.assert_array_equal(accelsim.load_trace(p)[0].a, tiny_cnn_trace(seed=2)[0].a)


def test_quant_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = random_tensor((2, 8), 0.5, rng)
    w = random_tensor((4, 8), 0.5, rng)
    q = {"input": tr.Quant("symmetric", 8, 0.05),
         "weight": tr.Quant("per_channel", 8, (0.1, 0.2, 0.3, 0.4), 0)}
    p = accelsim.write_trace(tmp_path / "q", [tr.linear("fc", x, w, quant=q)], model="m")
    back = accelsim.load_trace(p)[0]
    assert back.quant_of("input") == q["input"]
    assert back.quant_of("weight") == q["weight"]
    # per-channel scales live in a .npy file beside the tensor, not in the YAML
    m = yaml.safe_load((p / "manifest.yaml").read_text())
    wq = m["layers"][0]["tensors"]["weight"]["quant"]
    assert "scale" not in wq and wq["scale_file"] == "0000_fc.weight.scale.npy"
    np.testing.assert_array_equal(np.load(p / wq["scale_file"]), [0.1, 0.2, 0.3, 0.4])


def _per_channel_trace(tmp_path):
    rng = np.random.default_rng(1)
    q = {"weight": tr.Quant("per_channel", 8, (0.5, 0.25, 0.125), 0)}
    layer = tr.linear("fc", random_tensor((2, 4), 0.5, rng), random_tensor((3, 4), 0.5, rng),
                      quant=q)
    return accelsim.write_trace(tmp_path / "pc", [layer])


def test_inline_per_channel_scales_still_load(tmp_path):
    p = _per_channel_trace(tmp_path)

    def inline(m):
        wq = m["layers"][0]["tensors"]["weight"]["quant"]
        del wq["scale_file"]
        wq["scale"] = [0.5, 0.25, 0.125]
    _edit(p, inline)
    assert accelsim.load_trace(p)[0].quant_of("weight").scale == (0.5, 0.25, 0.125)


@pytest.mark.parametrize("change,msg", [
    ({"scale_file": "../x.npy"}, "scale_file: ../x.npy points outside the trace directory"),
    ({"scale_file": "nope.npy"}, "scale_file: nope.npy not found"),
    ({"scale_file": "0000_fc.input.npy"}, "expected a 1-d array of finite floats"),
    ({"scale": [1.0, 1.0, 1.0]}, "give scale or scale_file, not both"),
])
def test_bad_scale_file_one_line(tmp_path, change, msg):
    p = _per_channel_trace(tmp_path)
    _edit(p, lambda m: m["layers"][0]["tensors"]["weight"]["quant"].update(change))
    with pytest.raises(TraceError, match=re.escape(msg)) as ei:
        accelsim.load_trace(p)
    assert "\n" not in str(ei.value)


def test_manifests_use_libyaml_when_present():
    from accelsim.io.yamlio import _Loader as SAFE_LOADER

    if yaml.__with_libyaml__:
        assert SAFE_LOADER is yaml.CSafeLoader


def _naive_conv(x, w, stride, pad, dil, groups):
    """Direct convolution by loops: x[N, C, *sp], w[Co, C/g, *k]."""
    nsp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pad]).astype(np.int64)
    ks = w.shape[2:]
    out = [(xp.shape[2 + i] - dil[i] * (ks[i] - 1) - 1) // stride[i] + 1 for i in range(nsp)]
    co = w.shape[0]
    cg = w.shape[1]
    y = np.zeros((x.shape[0], co) + tuple(out), dtype=np.int64)
    for o in range(co):
        g = o // (co // groups)
        for idx in np.ndindex(*out):
            for kidx in np.ndindex(*ks):
                pos = tuple(idx[i] * stride[i] + kidx[i] * dil[i] for i in range(nsp))
                patch = xp[(slice(None), slice(g * cg, (g + 1) * cg)) + pos]
                y[(slice(None), o) + idx] += patch @ w[(o, slice(None)) + kidx].astype(np.int64)
    return y


@pytest.mark.parametrize("case", [
    dict(kind="conv2d", cin=4, cout=6, sp=(7, 6), k=(3, 2), s=(2, 1), p=(1, 0), d=(1, 2), g=2),
    dict(kind="conv2d", cin=3, cout=3, sp=(5, 5), k=(3, 3), s=(1, 1), p=(1, 1), d=(1, 1), g=3),
    dict(kind="conv2d", cin=2, cout=5, sp=(6, 6), k=(1, 1), s=(2, 2), p=(0, 0), d=(1, 1), g=1),
    dict(kind="conv1d", cin=6, cout=4, sp=(11,), k=(3,), s=(2,), p=(2,), d=(2,), g=2),
    dict(kind="conv3d", cin=4, cout=2, sp=(3, 5, 4), k=(2, 3, 1), s=(1, 2, 1), p=(1, 0, 1),
         d=(1, 1, 2), g=2),
])
@pytest.mark.parametrize("frames", [False, True])
def test_conv_lowering_matches_direct_conv(case, frames):
    rng = np.random.default_rng(1)
    nb = 2
    x = random_tensor((nb, case["cin"]) + case["sp"], 0.7, rng)
    w = random_tensor((case["cout"], case["cin"] // case["g"]) + case["k"], 0.7, rng)
    xs = np.stack([x, random_tensor(x.shape, 0.7, rng)]) if frames else x
    build = {"conv1d": tr.conv1d, "conv2d": tr.conv2d, "conv3d": tr.conv3d}[case["kind"]]
    layer = build("c", xs, w, stride=case["s"], padding=case["p"], dilation=case["d"],
                  groups=case["g"], frames=frames)
    tr.validate_layer(layer, "test")
    shape = gemm_shape(layer)
    a = lower_a(layer).astype(np.int64)
    wl = lower_w(layer).astype(np.int64)
    assert a.shape == (shape.frames, shape.per_frame, shape.m, shape.k)
    assert wl.shape == (1, shape.per_frame, shape.k, shape.n)
    y = a @ wl  # [F, G, M, N]
    for f in range(shape.frames):
        xf = xs[f] if frames else xs
        ref = _naive_conv(xf, w, case["s"], case["p"], case["d"], case["g"])
        # ref [N, Co, *out] -> per group [N*out, Co/g]
        g = case["g"]
        ref = ref.reshape(nb, g, case["cout"] // g, -1).transpose(1, 0, 3, 2)
        ref = ref.reshape(g, -1, case["cout"] // g)
        np.testing.assert_array_equal(y[f], ref)


def test_linear_and_matmul_lowering():
    rng = np.random.default_rng(2)
    x = random_tensor((3, 2, 5, 7), 0.6, rng)  # frames=3, leading dims 2x5
    w = random_tensor((4, 7), 0.6, rng)
    layer = tr.linear("fc", x, w, frames=True)
    s = gemm_shape(layer)
    assert (s.frames, s.m, s.k, s.n) == (3, 10, 7, 4)
    y = lower_a(layer).astype(int) @ lower_w(layer).astype(int)
    np.testing.assert_array_equal(y[:, 0], (x.astype(int) @ w.T.astype(int)).reshape(3, 10, 4))
    a = random_tensor((2, 3, 4, 5), 0.6, rng)
    b = random_tensor((2, 3, 5, 6), 0.6, rng)
    mm = tr.matmul("mm", a, b)
    s = gemm_shape(mm)
    assert (s.frames, s.per_frame, s.m, s.k, s.n) == (1, 6, 4, 5, 6)
    y = lower_a(mm).astype(int) @ lower_w(mm).astype(int)
    np.testing.assert_array_equal(y.reshape(2, 3, 4, 6), a.astype(int) @ b.astype(int))


# ------------------------------------------------------------------ bad traces


@pytest.fixture
def good(tmp_path):
    rng = np.random.default_rng(0)
    layers = [tr.conv2d("conv", random_tensor((1, 4, 6, 6), 0.5, rng),
                        random_tensor((8, 4, 3, 3), 0.5, rng), padding=1),
              tr.linear("fc", random_tensor((1, 16), 0.5, rng),
                        random_tensor((10, 16), 0.5, rng))]
    return accelsim.write_trace(tmp_path / "good", layers, model="good")


def _edit(path: Path, fn):
    m = yaml.safe_load((path / "manifest.yaml").read_text())
    fn(m)
    (path / "manifest.yaml").write_text(yaml.safe_dump(m))


def _bad_version(m):
    m["version"] = 2


def _bad_kind(m):
    m["layers"][0]["kind"] = "conv4d"


def _bad_groups(m):
    m["layers"][0]["groups"] = 3


def _bad_dtype(m):
    m["layers"][1]["tensors"]["weight"]["dtype"] = "complex64"


def _missing_file(m):
    m["layers"][1]["tensors"]["input"]["file"] = "nope.npy"


def _escape(m):
    m["layers"][1]["tensors"]["input"]["file"] = "../../etc/passwd"


def _unknown_key(m):
    m["layers"][0]["paddin"] = [1, 1]


def _no_layers(m):
    m["layers"] = []


def _bad_format(m):
    m["format"] = "something-else"


def _bad_stride(m):
    m["layers"][0]["stride"] = [0, 1]


MANIFEST_CASES = [
    (_bad_version, "version: expected 1"),
    (_bad_kind, "kind: expected one of linear, conv1d, conv2d, conv3d, matmul, got 'conv4d'"),
    (_bad_groups, "layer 'conv': groups: expected a divisor of C_in=4 and C_out=8, got 3"),
    (_bad_dtype, "layer 'fc'.tensors.weight.dtype: expected one of"),
    (_missing_file, "layer 'fc'.tensors.input.file: nope.npy not found"),
    (_escape, "points outside the trace directory"),
    (_unknown_key, "layer 'conv': unknown key 'paddin'"),
    (_no_layers, "layers: expected at least one layer"),
    (_bad_format, "format: expected 'accelsim-trace'"),
    (_bad_stride, "layer 'conv': stride: expected 2 integers >= 1, got [0, 1]"),
]


@pytest.mark.parametrize("edit,msg", MANIFEST_CASES, ids=[c[0].__name__ for c in MANIFEST_CASES])
def test_bad_manifest_one_line(good, edit, msg):
    _edit(good, edit)
    with pytest.raises(TraceError) as ei:
        accelsim.load_trace(good)
    assert msg in str(ei.value)
    assert "\n" not in str(ei.value)


def test_shape_mismatch(good):
    f = good / "0001_fc.weight.npy"
    np.save(f, np.zeros((10, 15), np.int8))
    _edit(good, lambda m: m["layers"][1]["tensors"]["weight"].update(shape=[10, 15]))
    with pytest.raises(TraceError, match="layer 'fc': input last dim 16 != weight in_features 15"):
        accelsim.load_trace(good)


def test_nan_rejected(good):
    np.save(good / "0001_fc.input.npy", np.array([[np.nan] * 16], np.float32))
    _edit(good, lambda m: m["layers"][1]["tensors"]["input"].update(dtype="float32"))
    with pytest.raises(TraceError, match="tensor 'input': contains NaN or Inf"):
        accelsim.load_trace(good)


def test_pickle_never_loaded(good):
    np.save(good / "0001_fc.input.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TraceError, match="not a plain .npy array"):
        accelsim.load_trace(good)


def test_not_a_directory_and_missing_manifest(tmp_path):
    with pytest.raises(TraceError, match="not a trace directory"):
        accelsim.load_trace(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TraceError, match="missing manifest.yaml"):
        accelsim.load_trace(tmp_path / "empty")


def test_manifest_yaml_not_executed(good):
    (good / "manifest.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(TraceError, match="invalid YAML"):
        accelsim.load_trace(good)


def test_from_arrays_validates():
    rng = np.random.default_rng(0)
    bad = tr.conv2d("c", random_tensor((1, 3, 4, 4), 0.5, rng),
                    random_tensor((4, 2, 3, 3), 0.5, rng))
    with pytest.raises(TraceError, match="weight dim 1 is 2, expected C_in/groups = 3"):
        tr.Trace.from_arrays("m", [bad])
    with pytest.raises(TraceError, match="duplicate layer name"):
        good = tr.linear("x", np.ones((1, 2), np.int8), np.ones((3, 2), np.int8))
        tr.Trace.from_arrays("m", [good, good])


def test_cli_bad_trace_exits_2(good, capsys, root):
    shutil.rmtree(good / "0001_fc.input.npy", ignore_errors=True)
    (good / "0001_fc.input.npy").unlink()
    rc = main(["simulate", str(good), "--hw", "sparse_os_16x16"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "not found" in err
    assert "Traceback" not in err
