"""trace_torch end to end on tiny models: the trace holds what the hooks saw."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import accelsim
from accelsim.errors import TraceError

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from accelsim.tracing import trace_torch  # noqa: E402
from accelsim.tracing.torch import quantize_activation, quantize_weight  # noqa: E402


def test_importing_accelsim_does_not_import_torch():
    code = ("import sys, accelsim, accelsim.tracing, accelsim.analysis.inspect; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, dilation=1)
        self.c3 = nn.Conv1d(4, 6, 3, padding="same", dilation=2, padding_mode="zeros")
        self.fc = nn.Linear(6 * 4, 5)

    def forward(self, x):
        x = F.relu(self.c1(x))
        x = F.relu(self.c2(x))  # [B, 4, 4, 4]
        x = x.flatten(2)[..., :4] * 1.0  # [B, 4, 4] as a 1-D signal
        x = F.relu(self.c3(x))
        return self.fc(x.flatten(1))


class Seen:
    """Record each module's input with an independent hook, to compare against."""

    def __init__(self, model, names):
        self.data = {n: [] for n in names}
        self.handles = [dict(model.named_modules())[n].register_forward_hook(self._h(n))
                        for n in names]

    def _h(self, n):
        def hook(mod, args, out):
            self.data[n].append(args[0].detach().clone())
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _model(cls, seed=0):
    torch.manual_seed(seed)
    return cls().eval()


def test_cnn_float_trace_equals_hooked_tensors(tmp_path):
    model = _model(TinyCNN)
    x = torch.randn(3, 1, 8, 8)
    seen = Seen(model, ["c1", "c2", "c3", "fc"])
    res = trace_torch(model, x, tmp_path / "t", quantize="none")
    seen.close()
    tr = accelsim.load_trace(tmp_path / "t")
    assert [ly.name for ly in tr] == ["c1", "c2", "c3", "fc"]
    assert res.path == tmp_path / "t" and res.skipped == ()
    mods = dict(model.named_modules())
    for ly in tr:
        assert not ly.frames
        np.testing.assert_array_equal(ly.a, seen.data[ly.name][0].numpy())
        np.testing.assert_array_equal(ly.w, mods[ly.name].weight.detach().numpy())
        assert ly.a.dtype == np.float32
    assert tr["c2"].kind == "conv2d" and tr["c2"].groups == 2 and tr["c2"].stride == (2, 2)
    assert tr["c2"].padding == (1, 1)
    # "same" with dilation 2, k=3: total 4 -> symmetric padding 2
    assert tr["c3"].kind == "conv1d" and tr["c3"].padding == (2,) and tr["c3"].dilation == (2,)
    p = tr.provenance
    assert p["model_class"].endswith("TinyCNN") and p["torch_version"] == torch.__version__
    assert p["quantize"] == "none" and "Tensor[3, 1, 8, 8]" in p["inputs"]


@pytest.mark.parametrize("mode,pad", [("reflect", 1), ("circular", 2), ("replicate", 1)])
def test_padding_modes_are_applied_to_the_recorded_input(tmp_path, mode, pad):
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=pad, padding_mode=mode)
    x = torch.randn(1, 2, 6, 7)
    tr = trace_torch(conv, x, None).trace
    ly = tr[0]
    assert ly.padding == (0, 0) and ly.meta["padding_applied"]["mode"] == mode
    y = F.conv2d(torch.from_numpy(np.array(ly.a)), torch.from_numpy(np.array(ly.w)), conv.bias)
    torch.testing.assert_close(y, conv(x))


def test_same_padding_even_kernel_is_resolved(tmp_path):
    torch.manual_seed(2)
    conv = nn.Conv1d(2, 2, 4, padding="same")
    x = torch.randn(2, 2, 9)
    ly = trace_torch(conv, x).trace[0]
    y = F.conv1d(torch.from_numpy(np.array(ly.a)), conv.weight, conv.bias,
                 padding=ly.padding)
    torch.testing.assert_close(y, conv(x))


def test_int8_quantisation_matches_scales(tmp_path):
    model = _model(TinyCNN)
    xs = [torch.randn(2, 1, 8, 8) for _ in range(3)]
    seen = Seen(model, ["c1", "c2", "c3", "fc"])
    trace_torch(model, xs, tmp_path / "q", quantize="int8")
    seen.close()
    tr = accelsim.load_trace(tmp_path / "q")
    mods = dict(model.named_modules())
    for ly in tr:
        assert ly.frames and ly.num_frames == 3
        assert ly.a.dtype == np.int8 and ly.w.dtype == np.int8
        qa, qw = ly.quant_of("input"), ly.quant_of("weight")
        assert qa.scheme == "symmetric" and qa.bits == 8
        assert qw.scheme == "per_channel" and qw.axis == 0
        a = torch.stack(seen.data[ly.name]).double().numpy()  # frames axis 0
        assert np.isclose(qa.scale, np.abs(a).max() / 127)
        np.testing.assert_array_equal(ly.a, np.clip(np.rint(a / qa.scale), -127, 127))
        w = mods[ly.name].weight.detach().double().numpy()
        s = np.asarray(qw.scale).reshape((-1,) + (1,) * (w.ndim - 1))
        np.testing.assert_allclose(s[:, 0].ravel() * 127,
                                   np.abs(w.reshape(len(w), -1)).max(1))
        np.testing.assert_array_equal(ly.w, np.rint(w / s))
        # dequantised values are within half a step
        assert np.all(np.abs(ly.a * qa.scale - a) <= qa.scale / 2 + 1e-12)
    assert tr.provenance["quantize"]["weights"].startswith("int8")
    assert "list of 3 inputs" in tr.provenance["inputs"]


def test_quantizers_keep_zeros_and_handle_all_zero():
    q, qt = quantize_activation(np.zeros((2, 3), np.float32))
    assert qt.scale == 1.0 and not q.any()
    w = np.array([[0.0, 0.0], [1.0, -2.0]], np.float32)
    q, qt = quantize_weight(w)
    assert qt.scale == (1.0, 2.0 / 127) and q.tolist() == [[0, 0], [64, -127]]


class Rec(nn.Module):
    def __init__(self, kind, **kw):
        super().__init__()
        self.rnn = getattr(nn, kind)(input_size=3, hidden_size=4, **kw)
        self.out = nn.Linear(4 * (2 if kw.get("bidirectional") else 1)
                             if not kw.get("proj_size") else kw["proj_size"], 2)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.out(y)


def _reference_lstm_steps(mod, x):
    """Independent per-step unroll with nn.LSTMCell sharing the weights (1 layer, uni)."""
    cell = nn.LSTMCell(mod.input_size, mod.hidden_size)
    cell.weight_ih.data = mod.weight_ih_l0.data
    cell.weight_hh.data = mod.weight_hh_l0.data
    cell.bias_ih.data = mod.bias_ih_l0.data
    cell.bias_hh.data = mod.bias_hh_l0.data
    h = torch.zeros(x.shape[1], mod.hidden_size)
    c = torch.zeros_like(h)
    hs = []
    for t in range(x.shape[0]):
        hs.append(h)
        h, c = cell(x[t], (h, c))
    return torch.stack(hs)


def test_lstm_records_per_step_gemms(tmp_path):
    torch.manual_seed(3)
    model = Rec("LSTM").eval()
    x = torch.randn(7, 2, 3)  # [T, B, in]
    trace_torch(model, x, tmp_path / "l", quantize="none")
    tr = accelsim.load_trace(tmp_path / "l")
    assert [ly.name for ly in tr] == ["rnn.l0.ih", "rnn.l0.hh", "out"]
    ih, hh = tr["rnn.l0.ih"], tr["rnn.l0.hh"]
    assert ih.frames and ih.num_frames == 7 and ih.kind == "linear"
    np.testing.assert_array_equal(ih.a, x.numpy())
    np.testing.assert_array_equal(ih.w, model.rnn.weight_ih_l0.detach().numpy())
    np.testing.assert_array_equal(hh.w, model.rnn.weight_hh_l0.detach().numpy())
    np.testing.assert_allclose(hh.a, _reference_lstm_steps(model.rnn, x).detach().numpy(),
                               rtol=1e-5, atol=1e-6)
    assert not hh.a[0].any()  # h_{-1} = 0
    assert hh.meta["gemm"] == "hidden" and ih.meta["recurrent"] == "LSTM"


@pytest.mark.parametrize("kind,kw", [
    ("LSTM", dict(num_layers=2, bidirectional=True, batch_first=True)),
    ("LSTM", dict(proj_size=2)),
    ("GRU", dict(num_layers=2)),
    ("RNN", dict(nonlinearity="relu", bidirectional=True)),
])
def test_recurrent_variants(kind, kw):
    torch.manual_seed(4)
    model = Rec(kind, **kw).eval()
    shape = (2, 5, 3) if kw.get("batch_first") else (5, 2, 3)
    res = trace_torch(model, torch.randn(*shape), quantize="int8")
    layers = res.trace.layers
    dirs = 2 if kw.get("bidirectional") else 1
    per = 3 if kw.get("proj_size") else 2
    assert len(layers) == kw.get("num_layers", 1) * dirs * per + 1
    for ly in layers[:-1]:
        assert ly.frames and ly.num_frames == 5 and ly.a.shape[1] == 2


def test_lstm_cell_over_list_of_inputs_is_frames(tmp_path):
    class Stream(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.LSTMCell(3, 4)
            self.head = nn.Linear(4, 1)
            self.state = None

        def forward(self, x):
            self.state = self.cell(x, self.state)
            return self.head(torch.relu(self.state[0]))

    torch.manual_seed(5)
    model = Stream().eval()
    xs = [torch.randn(1, 3) for _ in range(6)]
    hs = []
    model.cell.register_forward_hook(lambda m, a, o: hs.append(
        (a[1][0] if len(a) > 1 and a[1] is not None else torch.zeros(1, 4)).clone()))
    trace_torch(model, xs, tmp_path / "s", quantize="none")
    tr = accelsim.load_trace(tmp_path / "s")
    assert [ly.name for ly in tr] == ["cell.ih", "cell.hh", "head"]
    np.testing.assert_array_equal(tr["cell.ih"].a, torch.stack(xs).numpy())
    np.testing.assert_array_equal(tr["cell.hh"].a, torch.stack(hs).numpy())
    assert tr["head"].num_frames == 6


def test_cell_looped_inside_forward_gives_time_steps():
    class Loop(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.GRUCell(3, 4)

        def forward(self, x):
            h = None
            for t in range(x.shape[0]):
                h = self.cell(x[t], h)
            return h

    torch.manual_seed(6)
    tr = trace_torch(Loop().eval(), torch.randn(4, 2, 3)).trace
    assert [ly.name for ly in tr] == ["cell.ih", "cell.hh"]
    assert tr["cell.ih"].num_frames == 4 and tr["cell.hh"].a.shape == (4, 2, 4)


def test_module_called_twice_gives_two_layers():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    tr = trace_torch(Twice(), torch.randn(2, 3)).trace
    assert [ly.name for ly in tr] == ["fc", "fc@1"]


def test_unsupported_layers_are_listed():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(1, 2, 2)
            self.bn = nn.BatchNorm2d(2)
            self.fc = nn.Linear(2 * 5 * 5, 3)

        def forward(self, x):
            return self.fc(self.bn(self.up(x)).flatten(1))

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = trace_torch(Mixed().eval(), torch.randn(1, 1, 4, 4))
    assert [s.name for s in res.skipped] == ["up"] and res.skipped[0].type == "ConvTranspose2d"
    assert [ly.name for ly in res.trace] == ["fc"]
    assert res.trace.provenance["skipped"][0]["type"] == "ConvTranspose2d"
    assert any("ConvTranspose2d" in str(x.message) for x in w)


def test_nothing_traceable_raises():
    model = nn.Sequential(nn.ConvTranspose1d(1, 1, 2), nn.ReLU())
    with pytest.raises(TraceError, match=r"no traceable layer.*ConvTranspose1d"):
        trace_torch(model, torch.randn(1, 1, 4))


def test_bad_arguments():
    with pytest.raises(TraceError, match="quantize"):
        trace_torch(nn.Linear(2, 2), torch.randn(1, 2), quantize="int4")
    with pytest.raises(TraceError, match="TorchScript"):
        trace_torch(torch.jit.script(nn.Linear(2, 2)), torch.randn(1, 2))
    with pytest.raises(TraceError, match="empty"):
        trace_torch(nn.Linear(2, 2), [])


def test_inputs_taking_different_paths_raise():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2)
            self.b = nn.Linear(2, 2)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else self.b(x)

    with pytest.raises(TraceError, match="different layers"):
        trace_torch(Branch(), [torch.ones(1, 2), -torch.ones(1, 2)])


def test_tuple_and_dict_inputs():
    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x, y):
            return self.fc(x + y)

    x, y = torch.randn(1, 2), torch.randn(1, 2)
    a = trace_torch(Two(), (x, y)).trace[0].a
    b = trace_torch(Two(), {"x": x, "y": y}).trace[0].a
    np.testing.assert_array_equal(a, (x + y).numpy())
    np.testing.assert_array_equal(a, b)
