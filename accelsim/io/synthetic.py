"""Synthetic traces: random int8 values at given densities, seeded.

For tests and benchmarks only. Real sparsity is structured (ReLU patterns, pruned
channels, static backgrounds); uniform random zeros are not, so results on synthetic
traces say nothing about a trained network. Every trace made here has
``provenance.synthetic: true``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accelsim.io import trace as tr
from accelsim.io.trace import Trace


def random_tensor(shape: Sequence[int], density: float, rng: np.random.Generator,
                  dtype: str = "int8") -> np.ndarray:
    """Int tensor whose elements are nonzero with probability ``density``; nonzero
    values are uniform in [-127, 127] without 0 (or [1, 127] for uint8)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    shape = tuple(int(s) for s in shape)
    mag = rng.integers(1, 128, size=shape, dtype=np.int16)
    if dtype != "uint8":
        mag = np.where(rng.random(shape) < 0.5, -mag, mag)
    keep = rng.random(shape) < density
    return np.where(keep, mag, 0).astype(dtype)


def conv2d_layer(name: str, rng: np.random.Generator, *, cin: int, cout: int, size: int,
                 k: int, stride: int = 1, padding: int | None = None, groups: int = 1,
                 batch: int = 1, frames: int = 0, density_a: float = 0.5,
                 density_w: float = 0.5) -> tr.Layer:
    pad = k // 2 if padding is None else padding
    shape = (batch, cin, size, size)
    if frames:
        shape = (frames,) + shape
    x = random_tensor(shape, density_a, rng)
    w = random_tensor((cout, cin // groups, k, k), density_w, rng)
    return tr.conv2d(name, x, w, stride=stride, padding=pad, groups=groups,
                     frames=bool(frames))


def linear_layer(name: str, rng: np.random.Generator, *, fin: int, fout: int,
                 tokens: int = 1, frames: int = 0, density_a: float = 0.5,
                 density_w: float = 0.5) -> tr.Layer:
    shape = (tokens, fin) if not frames else (frames, tokens, fin)
    x = random_tensor(shape, density_a, rng)
    w = random_tensor((fout, fin), density_w, rng)
    return tr.linear(name, x, w, frames=bool(frames))


def resnet18_trace(density_a: float = 0.5, density_w: float = 0.4, seed: int = 0,
                   image: int = 224) -> Trace:
    """A ResNet-18-shaped synthetic trace: its 20 convolutions and the final fully
    connected layer (21 layers) at ``image`` x ``image`` input, batch 1."""
    rng = np.random.default_rng(seed)
    da, dw = density_a, density_w
    layers = [conv2d_layer("conv1", rng, cin=3, cout=64, size=image, k=7, stride=2,
                           padding=3, density_a=da, density_w=dw)]
    size = image // 4  # after the stride-2 conv1 and the stride-2 max-pool
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if (stage > 1 and block == 0) else 1
            pre = f"layer{stage}.{block}"
            layers.append(conv2d_layer(f"{pre}.conv1", rng, cin=cin, cout=cout, size=size,
                                       k=3, stride=stride, density_a=da, density_w=dw))
            if stride == 2:
                layers.append(conv2d_layer(f"{pre}.downsample", rng, cin=cin, cout=cout,
                                           size=size, k=1, stride=2, padding=0,
                                           density_a=da, density_w=dw))
                size //= 2
            layers.append(conv2d_layer(f"{pre}.conv2", rng, cin=cout, cout=cout, size=size,
                                       k=3, density_a=da, density_w=dw))
            cin = cout
    layers.append(linear_layer("fc", rng, fin=512, fout=1000, density_a=da, density_w=dw))
    return Trace(model="synthetic_resnet18", layers=tuple(layers),
                 provenance={"synthetic": True, "generator": "accelsim.synthetic.resnet18_trace",
                             "density_a": da, "density_w": dw, "seed": seed, "image": image})


def tiny_cnn_trace(density_a: float = 0.5, density_w: float = 0.5, seed: int = 0,
                   frames: int = 4) -> Trace:
    """A small synthetic network that touches every layer kind: conv2d (plain, strided,
    depthwise), conv1d, linear with frames, and an activation x activation matmul."""
    rng = np.random.default_rng(seed)
    da, dw = density_a, density_w
    layers = [
        conv2d_layer("conv1", rng, cin=3, cout=16, size=16, k=3, density_a=da,
                     density_w=dw),
        conv2d_layer("conv2_s2", rng, cin=16, cout=32, size=16, k=3, stride=2,
                     density_a=da, density_w=dw),
        conv2d_layer("dwconv3", rng, cin=32, cout=32, size=8, k=3, groups=32,
                     density_a=da, density_w=dw),
        tr.conv1d("conv1d4", random_tensor((1, 32, 64), da, rng),
                  random_tensor((24, 32, 5), dw, rng), padding=2, dilation=1),
        linear_layer("fc_frames", rng, fin=96, fout=40, frames=frames, density_a=da,
                     density_w=dw),
        tr.matmul("attn_qk", random_tensor((2, 16, 24), da, rng),
                  random_tensor((2, 24, 16), da, rng)),
    ]
    return Trace(model="synthetic_tiny_cnn", layers=tuple(layers),
                 provenance={"synthetic": True, "generator": "accelsim.synthetic.tiny_cnn_trace",
                             "density_a": da, "density_w": dw, "seed": seed})


def decode_attention_trace(blocks: int = 2, heads: int = 4, kv_heads: int = 2,
                           head_dim: int = 16, prompt: int = 8, steps: int = 3,
                           density: float = 1.0, seed: int = 0) -> Trace:
    """**Synthetic** attention of a prefill and ``steps`` decode steps: per step and
    block a ``qk`` (``q @ Kᵀ``) and a ``pv`` (``p @ V``) matmul whose ``b`` operand is
    read from the KV cache (``meta.kv_cache``, docs/kv-cache.md). Query heads share
    K/V heads in groups of ``heads // kv_heads`` (grouped-query attention), so ``b``
    repeats each K/V head for its query heads."""
    from accelsim.model.kvcache import kv_cache_meta

    if heads % kv_heads:
        raise ValueError(f"heads {heads} must be a multiple of kv_heads {kv_heads}")
    rng = np.random.default_rng(seed)
    rep = heads // kv_heads
    layers = []
    for step in range(steps + 1):
        length = prompt + step
        m = prompt if step == 0 else 1
        new = prompt if step == 0 else 1
        for b in range(blocks):
            k = np.repeat(random_tensor((kv_heads, length, head_dim), density, rng), rep, 0)
            v = np.repeat(random_tensor((kv_heads, length, head_dim), density, rng), rep, 0)
            q = random_tensor((heads, m, head_dim), density, rng)
            p = random_tensor((heads, m, length), density, rng)
            tag = "prefill" if step == 0 else f"step{step}"
            layers.append(tr.matmul(f"{tag}.b{b}.qk", q, np.ascontiguousarray(
                k.transpose(0, 2, 1)), meta={"kv_cache": kv_cache_meta(
                    "k", b, step, kv_heads, head_dim, length, new)}))
            layers.append(tr.matmul(f"{tag}.b{b}.pv", p, v, meta={"kv_cache": kv_cache_meta(
                "v", b, step, kv_heads, head_dim, length, new)}))
    return Trace(model="synthetic_decode_attention", layers=tuple(layers),
                 provenance={"synthetic": True,
                             "generator": "accelsim.synthetic.decode_attention_trace",
                             "heads": heads, "kv_heads": kv_heads, "seed": seed})


def lean_tensor(shape: Sequence[int], density: float, rng: np.random.Generator,
                block: int = 2**16) -> np.ndarray:
    """Like :func:`random_tensor` (int8, nonzeros uniform in [-127, 127] without 0 at
    ``density``), but drawn about ``block`` elements at a time, so that a large tensor
    needs about its own int8 size and no more (other values than random_tensor's)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    shape = tuple(int(s) for s in shape)
    out = np.empty(shape, np.int8)
    flat = out.reshape(-1, shape[-1]) if shape else out.reshape(1, 1)
    rows = max(1, block // max(flat.shape[1], 1))
    for i in range(0, flat.shape[0], rows):
        blk = rng.integers(1, 128, size=flat[i:i + rows].shape, dtype=np.int8)
        blk[rng.random(blk.shape, dtype=np.float32) < 0.5] *= -1
        blk[rng.random(blk.shape, dtype=np.float32) >= density] = 0
        flat[i:i + rows] = blk
    return out


#: the GEMM shapes of a 7B decoder (LLaMA-7B: hidden 4096, 32 heads, FFN 11008)
DECODER_7B = {"hidden": 4096, "ffn": 11008, "heads": 32, "tokens": 2048}


def decoder_layers(n_layers: int = 1, *, hidden: int = 4096, ffn: int = 11008,
                   heads: int = 32, tokens: int = 2048, density_a: float = 0.5,
                   density_w: float = 0.5, causal: bool = True, first: int = 0,
                   seed: int = 0):
    """**Synthetic** decoder blocks with the GEMM shapes of a 7B model's prefill of
    ``tokens`` tokens, as a generator of layers, one at a time (each block's tensors
    exist only while its layers are used, so a stack of any depth streams into
    :func:`accelsim.io.trace.write_trace` or a simulation in the memory of one layer).

    Per block ``i`` (from ``first``): ``blocks.i.attn.{q,k,v,o}_proj`` (linear hidden ->
    hidden), ``blocks.i.attn.qk`` (matmul ``q @ kᵀ`` per head: heads x tokens x
    head_dim x tokens) and ``blocks.i.attn.pv`` (``p @ v``, p causal when ``causal``:
    zero above the diagonal), ``blocks.i.mlp.{gate,up}_proj`` (hidden -> ffn) and
    ``blocks.i.mlp.down_proj`` (ffn -> hidden). Values are uniform random at the given
    densities: shapes are real, sparsity patterns are not. Block ``i``'s values depend
    only on ``seed`` and ``i``, so a slice of a stack equals the same slice of a deeper
    one."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} must be a multiple of heads {heads}")
    hd = hidden // heads
    da, dw = density_a, density_w
    for i in range(first, first + n_layers):
        rng = np.random.default_rng([seed, i])
        pre = f"blocks.{i}"
        for proj in ("q", "k", "v", "o"):
            yield tr.linear(f"{pre}.attn.{proj}_proj", lean_tensor((tokens, hidden), da, rng),
                            lean_tensor((hidden, hidden), dw, rng))
        q = lean_tensor((heads, tokens, hd), da, rng)
        kt = np.ascontiguousarray(lean_tensor((heads, tokens, hd), da, rng).transpose(0, 2, 1))
        yield tr.matmul(f"{pre}.attn.qk", q, kt)
        del q, kt
        p = lean_tensor((heads, tokens, tokens), da, rng)
        if causal:
            p *= np.tril(np.ones((tokens, tokens), np.int8))
        yield tr.matmul(f"{pre}.attn.pv", p, lean_tensor((heads, tokens, hd), da, rng))
        del p
        x = lean_tensor((tokens, hidden), da, rng)
        for proj in ("gate", "up"):
            yield tr.linear(f"{pre}.mlp.{proj}_proj", x, lean_tensor((ffn, hidden), dw, rng))
        del x
        yield tr.linear(f"{pre}.mlp.down_proj", lean_tensor((tokens, ffn), da, rng),
                        lean_tensor((hidden, ffn), dw, rng))


def write_decoder_trace(path, n_layers: int = 1, **kw) -> Trace:
    """Write :func:`decoder_layers` as a trace directory at ``path``, streaming block by
    block (the disk holds about 0.43 GB per 7B block at 2048 tokens; memory one
    layer's); returns the trace loaded back (memory-mapped)."""
    from accelsim.io.trace import load_trace, write_trace

    prov = {"synthetic": True, "generator": "accelsim.synthetic.decoder_layers",
            "n_layers": n_layers} | {k: v for k, v in kw.items()
                                     if isinstance(v, (int, float, bool))}
    write_trace(path, decoder_layers(n_layers, **kw), model="synthetic_decoder_7b",
                provenance=prov)
    return load_trace(path)
