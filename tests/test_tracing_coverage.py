"""trace_torch's dispatcher-level capture covers every matrix product of the models users
bring: each test builds a small model by hand, counts its GEMM MACs analytically and checks
the trace holds exactly those (100%), with no warning for norms, activations or
elementwise operators."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from accelsim.model.workload import gemm_shape  # noqa: E402
from accelsim.tracing import trace_torch  # noqa: E402


def _trace(model, x, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = trace_torch(model.eval(), x, **kw)
    ours = [w for w in caught if "trace_torch" in str(w.message)]
    return res, ours


def _macs(trace) -> int:
    return sum(gemm_shape(layer).macs_dense for layer in trace.layers)


def _by_name(trace) -> dict[str, int]:
    return {layer.name: gemm_shape(layer).macs_dense for layer in trace.layers}


def _assert_complete(res, ours, expected: int):
    assert ours == [] and res.skipped == ()
    assert res.trace.provenance["skipped"] == []
    assert _macs(res.trace) == expected


# --------------------------------------------------------------------------- ViT block


class ViTBlock(nn.Module):
    def __init__(self, d=16, heads=4, mlp=32, patch=4, chans=3, classes=5):
        super().__init__()
        self.patch = nn.Conv2d(chans, d, patch, stride=patch)
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d))
        self.head = nn.Linear(d, classes)

    def forward(self, img):
        x = self.patch(img).flatten(2).transpose(1, 2)  # [B, L, d]
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(1))


def test_vit_block_with_multihead_attention():
    torch.manual_seed(0)
    b, d, heads, mlp, p, c, k = 2, 16, 4, 32, 4, 3, 5
    model = ViTBlock(d, heads, mlp, p, c, k)
    img = torch.randn(b, c, 16, 16)
    res, ours = _trace(model, img)
    seq = (16 // p) ** 2
    hd = d // heads
    want = {
        "patch": b * seq * c * p * p * d,
        "attn.in_proj": b * seq * d * 3 * d,
        "attn.qk": b * heads * seq * hd * seq,
        "attn.pv": b * heads * seq * seq * hd,
        "attn.out_proj": b * seq * d * d,
        "mlp.0": b * seq * d * mlp,
        "mlp.2": b * seq * mlp * d,
        "head": b * d * k,
    }
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))
    qk, pv = res.trace["attn.qk"], res.trace["attn.pv"]
    assert qk.kind == pv.kind == "matmul"
    assert res.trace["attn.in_proj"].kind == "linear"
    # softmax rows sum to one: the A operand of softmax x V is the attention matrix
    np.testing.assert_allclose(np.asarray(pv.a).sum(-1), 1.0, rtol=1e-5)


def test_mha_with_weights_and_fast_path_module_defaults():
    """need_weights=True (the default) takes the baddbmm/bmm route; the eval fast path
    would fuse everything into one op: trace_torch turns it off while it runs."""
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8)

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x)[0]

    res, ours = _trace(Wrap(), x)
    assert sorted(_by_name(res.trace)) == ["mha.in_proj", "mha.out_proj", "mha.pv", "mha.qk"]
    _assert_complete(res, ours, 3 * 5 * 8 * 24 + 2 * 3 * 2 * 5 * 5 * 4 + 3 * 5 * 8 * 8)
    assert torch.backends.mha.get_fastpath_enabled()  # restored afterwards


# --------------------------------------------------------------------------- GPT-2 block


class Conv1D(nn.Module):
    """HF GPT-2's projection: weight [in, out], applied with torch.addmm."""

    def __init__(self, nx, nf):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        shape = x.shape[:-1] + (self.weight.shape[1],)
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(shape)


class GPT2Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.c_attn = Conv1D(d, 3 * d)
        self.c_proj = Conv1D(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d // self.heads)
        mask = torch.tril(torch.ones(t, t, dtype=torch.bool))
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = torch.matmul(att, v).transpose(1, 2).reshape(b, t, d)
        return self.c_proj(y)


class GPT2Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = GPT2Attention(d, heads)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = Conv1D(d, 4 * d)
        self.c_proj = Conv1D(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))


class TinyGPT2(nn.Module):
    def __init__(self, vocab=50, d=16, heads=2, layers=2, ctx=16):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(GPT2Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids):
        x = self.wte(ids) + self.wpe(torch.arange(ids.shape[1]))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied LM head


def test_gpt2_block_conv1d_and_causal_attention():
    torch.manual_seed(2)
    vocab, d, heads, nl, b, t = 50, 16, 2, 2, 2, 7
    res, ours = _trace(TinyGPT2(vocab, d, heads, nl), torch.randint(0, vocab, (b, t)))
    hd = d // heads
    want = {}
    for i in range(nl):
        want |= {f"h.{i}.attn.c_attn": b * t * d * 3 * d,
                 f"h.{i}.attn.qk": b * heads * t * hd * t,
                 f"h.{i}.attn.pv": b * heads * t * t * hd,
                 f"h.{i}.attn.c_proj": b * t * d * d,
                 f"h.{i}.c_fc": b * t * d * 4 * d,
                 f"h.{i}.c_proj": b * t * 4 * d * d}
    want["wte"] = b * t * d * vocab
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))
    tr = res.trace
    assert tr["h.0.attn.c_attn"].kind == "linear"
    assert tr["h.0.attn.c_attn"].w.shape == (3 * d, d)  # [out, in] like nn.Linear
    # causal mask: the upper triangle of softmax x V's A operand is exactly zero
    a = np.asarray(tr["h.1.attn.pv"].a)  # [B*heads, T, T]
    assert a.shape == (b * heads, t, t)
    upper = np.triu(np.ones((t, t), bool), 1)
    assert not a[:, upper].any() and (a[:, ~upper] > 0).all()
    assert np.count_nonzero(a) == b * heads * t * (t + 1) // 2


# --------------------------------------------------------------------------- Llama block


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class LlamaBlock(nn.Module):
    def __init__(self, d, heads, kv_heads, ffn):
        super().__init__()
        self.heads, self.kv_heads, self.hd = heads, kv_heads, d // heads
        self.input_layernorm = RMSNorm(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.post_attention_layernorm = RMSNorm(d)
        self.gate_proj = nn.Linear(d, ffn, bias=False)
        self.up_proj = nn.Linear(d, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.heads, self.hd).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kv_heads, self.hd).transpose(1, 2)
        rep = self.heads // self.kv_heads  # grouped-query attention
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, d))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class TinyLlama(nn.Module):
    def __init__(self, vocab=40, d=16, heads=4, kv_heads=2, ffn=24, layers=2):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(LlamaBlock(d, heads, kv_heads, ffn) for _ in range(layers))
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.embed_tokens(ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


def test_llama_block_rmsnorm_sdpa_gated_mlp():
    torch.manual_seed(3)
    vocab, d, heads, kvh, ffn, nl, b, t = 40, 16, 4, 2, 24, 2, 1, 6
    res, ours = _trace(TinyLlama(vocab, d, heads, kvh, ffn, nl), torch.randint(0, vocab, (b, t)))
    hd = d // heads
    want = {}
    for i in range(nl):
        p = f"layers.{i}"
        want |= {f"{p}.q_proj": b * t * d * d, f"{p}.k_proj": b * t * d * kvh * hd,
                 f"{p}.v_proj": b * t * d * kvh * hd,
                 f"{p}.qk": b * heads * t * hd * t, f"{p}.pv": b * heads * t * t * hd,
                 f"{p}.o_proj": b * t * d * d, f"{p}.gate_proj": b * t * d * ffn,
                 f"{p}.up_proj": b * t * d * ffn, f"{p}.down_proj": b * t * ffn * d}
    want["lm_head"] = b * t * d * vocab
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))  # no false warning for RMSNorm
    a = np.asarray(res.trace["layers.0.pv"].a)
    assert np.count_nonzero(a) == b * heads * t * (t + 1) // 2  # causal zeros


# --------------------------------------------------------------------------- functional


class Functional(nn.Module):
    """A module computing with its own parameters through torch.nn.functional."""

    def __init__(self):
        super().__init__()
        self.conv_w = nn.Parameter(torch.randn(6, 3, 3, 3))
        self.dw_w = nn.Parameter(torch.randn(6, 1, 3, 3))
        self.c1_w = nn.Parameter(torch.randn(4, 6, 5))
        self.proj = nn.Parameter(torch.randn(10, 24))
        self.mix = nn.Parameter(torch.randn(7, 10))
        self.basis = nn.Parameter(torch.randn(5, 10))

    def forward(self, x):
        y = F.relu(F.conv2d(x, self.conv_w, stride=2, padding=1))  # [B, 6, 4, 4]
        y = F.conv2d(y, self.dw_w, padding=2, dilation=2, groups=6)  # depthwise, [B, 6, 4, 4]
        z = F.conv1d(y.flatten(2)[..., :12], self.c1_w, padding=1)  # [B, 4, 10]
        z = F.linear(z.flatten(1)[:, :24], self.proj)  # [B, 10]
        z = torch.matmul(self.mix, z.T)  # W @ X: [7, B]
        z = z.T @ self.mix  # [B, 10]
        return torch.einsum("bk,nk->bn", z, self.basis)


def test_functional_ops_on_own_parameters():
    torch.manual_seed(4)
    b = 3
    model = Functional()
    res, ours = _trace(model, torch.randn(b, 3, 8, 8))
    want = {
        "conv_w": b * 4 * 4 * 3 * 9 * 6,
        "dw_w": b * 4 * 4 * 9 * 6,
        "c1_w": b * 10 * 6 * 5 * 4,
        "proj": b * 24 * 10,
        "mix": b * 10 * 7,
        "mix@1": b * 7 * 10,
        "basis": b * 10 * 5,
    }
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))
    tr = res.trace
    assert [tr[n].kind for n in want] == ["conv2d", "conv2d", "conv1d", "linear", "linear",
                                          "linear", "linear"]
    dw = tr["dw_w"]
    assert dw.groups == 6 and dw.dilation == (2, 2) and dw.padding == (2, 2)
    assert tr["conv_w"].stride == (2, 2)
    m = tr["mix"]  # W @ X is recorded as X^T @ W^T with W the weight
    assert m.meta["operands_swapped"] and m.w.shape == (7, 10)
    np.testing.assert_array_equal(m.w, model.mix.detach().numpy())
    np.testing.assert_array_equal(tr["mix@1"].w, model.mix.detach().numpy().T)
    assert not tr["mix@1"].meta.get("operands_swapped")


# --------------------------------------------------------------------------- CNN, LSTM


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)) if stride != 1 or cin != cout
                     else nn.Identity())

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.down(x))


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_resnet_like_cnn():
    torch.manual_seed(5)
    b, s = 2, 8
    res, ours = _trace(TinyResNet(), torch.randn(b, 3, s, s))
    o = s // 2
    want = {"stem": b * s * s * 27 * 8, "layer1.conv1": b * s * s * 72 * 8,
            "layer1.conv2": b * s * s * 72 * 8, "layer2.conv1": b * o * o * 72 * 16,
            "layer2.conv2": b * o * o * 144 * 16, "layer2.down.0": b * o * o * 8 * 16,
            "fc": b * 16 * 10}
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))


class LSTMLM(nn.Module):
    def __init__(self, vocab=30, d=8, hidden=12):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.rnn = nn.LSTM(d, hidden, num_layers=2, batch_first=True)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, ids):
        return self.out(self.rnn(self.emb(ids))[0])


def test_lstm_language_model():
    torch.manual_seed(6)
    vocab, d, hid, b, t = 30, 8, 12, 2, 5
    res, ours = _trace(LSTMLM(vocab, d, hid), torch.randint(0, vocab, (b, t)))
    want = {"rnn.l0.ih": t * b * d * 4 * hid, "rnn.l0.hh": t * b * hid * 4 * hid,
            "rnn.l1.ih": t * b * hid * 4 * hid, "rnn.l1.hh": t * b * hid * 4 * hid,
            "out": b * t * hid * vocab}
    assert _by_name(res.trace) == want  # the fused LSTM kernel is not counted twice
    _assert_complete(res, ours, sum(want.values()))


# --------------------------------------------------------------------------- warnings


def test_unlowered_products_warn_with_their_share():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.ConvTranspose2d(2, 3, 2, stride=2)
            self.up1 = nn.ConvTranspose1d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            y = self.up(x)  # [B, 3, 8, 8]
            y = self.up1(y.flatten(2))  # [B, 4, 66]
            return self.fc(y.mean(2))

    torch.manual_seed(7)
    res, ours = _trace(Odd(), torch.randn(1, 2, 4, 4))
    up = 2 * 4 * 4 * 3 * 2 * 2  # every input element meets C_out * k * k weights
    up1 = 3 * 64 * 4 * 3
    fc = 4 * 2
    assert _macs(res.trace) == fc
    got = {s.name: s for s in res.skipped}
    assert set(got) == {"up", "up1"} and got["up"].type == "ConvTranspose2d"
    assert got["up"].macs == up and got["up1"].macs == up1
    assert got["up"].share == pytest.approx(up / (up + up1 + fc))
    assert len(ours) == 1
    msg = str(ours[0].message)
    assert "up (ConvTranspose2d)" in msg and "up1 (ConvTranspose1d)" in msg
    assert f"{up / (up + up1 + fc):.1%}" in msg
    assert res.trace.provenance["skipped"][0]["macs"] == up


def test_conv3d_is_traced_and_lowers_exactly():
    from accelsim.model.workload import lower_a, lower_w

    torch.manual_seed(10)
    conv = nn.Conv3d(4, 6, (2, 3, 3), stride=(1, 2, 1), padding=(1, 1, 2), dilation=(1, 1, 2),
                     groups=2, bias=False)
    x = torch.randn(2, 4, 3, 7, 6)
    res, ours = _trace(conv, x)
    y = conv(x)
    _assert_complete(res, ours, int(y.numel()) * 2 * 3 * 3 * 2)  # out x (C_in/g * k)
    ly = res.trace[0]
    assert ly.kind == "conv3d" and ly.groups == 2 and ly.stride == (1, 2, 1)
    assert ly.padding == (1, 1, 2) and ly.dilation == (1, 1, 2)
    got = np.matmul(lower_a(ly), lower_w(ly))  # [1, G, M, N]
    n, c, *sp = y.shape
    ref = y.detach().numpy().reshape(n, 2, c // 2, -1).transpose(1, 0, 3, 2).reshape(
        1, 2, -1, c // 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_fused_attention_outside_the_math_backend_is_reported():
    """A model that picks a fused SDPA kernel itself is not silently dropped."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    class Fused(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(8, 24)

        def forward(self, x):
            q, k, v = self.qkv(x).view(1, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                return F.scaled_dot_product_attention(q, k, v)

    res, ours = _trace(Fused(), torch.randn(1, 5, 8))
    [s] = res.skipped
    assert s.name == "fused" and "flash" in s.reason
    assert s.macs == 2 * 5 * 5 * (4 + 4) and len(ours) == 1


def test_int8_matmul_layers_and_frames(tmp_path):
    import accelsim

    torch.manual_seed(8)
    model = TinyGPT2(20, 8, 2, 1)
    ids = [torch.randint(0, 20, (1, 4)) for _ in range(3)]
    res, ours = _trace(model, ids, path=tmp_path / "g", quantize="int8")
    assert ours == []
    tr = accelsim.load_trace(tmp_path / "g")
    pv = tr["h.0.attn.pv"]
    assert pv.kind == "matmul" and pv.frames and pv.num_frames == 3
    assert pv.a.dtype == np.int8 and pv.w.dtype == np.int8
    assert pv.quant_of("a").scheme == "symmetric" and pv.quant_of("b").scheme == "symmetric"
    assert pv.w.shape == (3, 2, 4, 4)


def test_torchscript_submodule_is_seen_by_the_dispatcher():
    class Mixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.sub = torch.jit.script(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.sub(x))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = Mixed()
    res, ours = _trace(model, torch.randn(2, 3))
    assert _by_name(res.trace) == {"sub.0": 2 * 3 * 4, "fc": 2 * 4 * 2}
    _assert_complete(res, ours, 2 * 3 * 4 + 2 * 4 * 2)


# --------------------------------------------------------------------------- HF transformers


def _hf_model(arch: str, attn: str):
    T = pytest.importorskip("transformers")
    T.logging.set_verbosity_error()
    torch.manual_seed(9)
    if arch == "gpt2":
        cfg = T.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32,
                           bos_token_id=0, eos_token_id=0)
        cls = T.GPT2LMHeadModel
    elif arch == "bert":
        cfg = T.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, vocab_size=64, max_position_embeddings=32)
        cls = T.BertModel
    else:
        cfg = T.LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, intermediate_size=48, vocab_size=64,
                            max_position_embeddings=32, bos_token_id=0, eos_token_id=0)
        cls = T.LlamaForCausalLM
    cfg._attn_implementation = attn
    return cls(cfg).eval()


def _hf_expected(arch: str, b: int, t: int) -> int:
    """GEMM MACs of the configs above, from their shapes."""
    d, v, nl = 32, 64, 2
    if arch == "gpt2":
        h = 2
        per = t * d * 3 * d + 2 * h * t * t * (d // h) + t * d * d + 2 * t * d * 4 * d
        return b * (nl * per + t * d * v)
    if arch == "bert":
        inter = 64
        per = 4 * t * d * d + 2 * t * t * d + 2 * t * d * inter
        return b * (nl * per + d * d)  # the pooler sees the first token
    h, kvh, inter = 4, 2, 48
    hd = d // h
    per = (2 * t * d * d + 2 * t * d * kvh * hd + 2 * h * t * t * hd + 3 * t * d * inter)
    return b * (nl * per + t * d * v)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_hf_transformers_tiny_configs(arch, attn):
    model = _hf_model(arch, attn)
    b, t = 2, 6
    ids = torch.randint(0, 64, (b, t))
    x = {"input_ids": ids} if arch == "bert" else {"input_ids": ids, "use_cache": False}
    res, ours = _trace(model, x)
    _assert_complete(res, ours, _hf_expected(arch, b, t))
    pv = [ly for ly in res.trace.layers if ly.name.endswith(".pv")]
    qk = [ly for ly in res.trace.layers if ly.name.endswith(".qk")]
    assert len(pv) == len(qk) == 2 and all(ly.kind == "matmul" for ly in pv + qk)
    if arch != "bert":  # causal: half the attention matrix (plus the diagonal) is zero
        a = np.asarray(pv[0].a)
        assert np.count_nonzero(a) == a.shape[0] * t * (t + 1) // 2


# --------------------------------------------------------------------------- mobile CNNs, audio


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 project, ReLU6."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid),
            nn.ReLU6(), nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.conv(x)
        return x + y if self.use_res else y


class SqueezeExcite(nn.Module):
    """EfficientNet's squeeze-and-excitation: 1x1 convs on the pooled features."""

    def __init__(self, c, r):
        super().__init__()
        self.fc1 = nn.Conv2d(c, r, 1)
        self.fc2 = nn.Conv2d(r, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.silu(self.fc1(s))))


class MobileNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, 2, 1, bias=False)
        self.b1 = InvertedResidual(8, 8, 1, 2)
        self.b2 = InvertedResidual(8, 12, 2, 3)
        self.se = SqueezeExcite(12, 4)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(12, 7))

    def forward(self, x):
        x = self.se(self.b2(self.b1(F.silu(self.stem(x)))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def test_mobilenet_and_efficientnet_blocks():
    torch.manual_seed(11)
    b = 2
    res, ours = _trace(MobileNetish(), torch.randn(b, 3, 16, 16))
    s1, s2 = 8 * 8, 4 * 4  # positions after the stem and after b2's stride
    want = {"stem": b * s1 * 27 * 8,
            "b1.conv.0": b * s1 * 8 * 16, "b1.conv.3": b * s1 * 9 * 16,
            "b1.conv.6": b * s1 * 16 * 8,
            "b2.conv.0": b * s1 * 8 * 24, "b2.conv.3": b * s2 * 9 * 24,
            "b2.conv.6": b * s2 * 24 * 12,
            "se.fc1": b * 12 * 4, "se.fc2": b * 4 * 12, "classifier.1": b * 12 * 7}
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))
    assert res.trace["b2.conv.3"].groups == 24


class AudioNet(nn.Module):
    """A Conv1d keyword-spotting model on raw audio (strided, dilated, depthwise)."""

    def __init__(self):
        super().__init__()
        self.front = nn.Conv1d(1, 8, 16, stride=8)
        self.dw = nn.Conv1d(8, 8, 5, padding=4, dilation=2, groups=8)
        self.pw = nn.Conv1d(8, 16, 1)
        self.gru = nn.GRU(16, 6, batch_first=True)
        self.head = nn.Linear(6, 3)

    def forward(self, wav):
        x = F.relu(self.front(wav))
        x = F.relu(self.pw(F.relu(self.dw(x))))
        y, _ = self.gru(x.transpose(1, 2))
        return self.head(y[:, -1])


def test_conv1d_audio_model():
    torch.manual_seed(12)
    b, n = 2, 200
    res, ours = _trace(AudioNet(), torch.randn(b, 1, n))
    t = (n - 16) // 8 + 1
    want = {"front": b * t * 16 * 8, "dw": b * t * 5 * 8, "pw": b * t * 8 * 16,
            "gru.l0.ih": t * b * 16 * 18, "gru.l0.hh": t * b * 6 * 18, "head": b * 6 * 3}
    assert _by_name(res.trace) == want
    _assert_complete(res, ours, sum(want.values()))


def test_transformer_encoder_with_padding_mask():
    """nn.TransformerEncoder's eval fast path (fused layer, nested tensors for the padding
    mask) is off while tracing: every projection and both attention products are traced."""
    torch.manual_seed(13)
    d, h, ff, nl, b, t = 16, 4, 32, 2, 2, 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # enable_nested_tensor note
        enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, h, ff, batch_first=True), nl)
    pad = torch.zeros(b, t, dtype=torch.bool)
    pad[1, 3:] = True
    res, ours = _trace(enc, (torch.randn(b, t, d), None, pad))
    per = t * d * 3 * d + 2 * t * t * d + t * d * d + 2 * t * d * ff
    _assert_complete(res, ours, nl * b * per)
    a = np.asarray(res.trace["layers.0.self_attn.pv"].a).reshape(b, h, t, t)
    assert not a[1, :, :, 3:].any() and (a[0] > 0).all()  # padded keys get exact zeros


def test_a_submodule_that_raises_inside_forward_is_survived():
    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            self.fc(x)
            raise ValueError("fallback")

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.flaky = Flaky()
            self.head = nn.Linear(3, 2)

        def forward(self, x):
            try:
                x = self.flaky(x)
            except ValueError:
                pass
            return self.head(x)

    res, ours = _trace(Model(), torch.randn(4, 3))
    assert _by_name(res.trace) == {"flaky.fc": 4 * 3 * 3, "head": 4 * 3 * 2}
    _assert_complete(res, ours, 4 * 3 * 3 + 4 * 3 * 2)
