"""Hypothesis strategies shared by the property tests."""

from hypothesis import strategies as st


@st.composite
def conv_geometry(draw, nsp: int, size_slack: int = 3):
    """(kernel, stride, padding, dilation, input size), one value per spatial dim, drawn so
    that the convolution has at least one output position."""
    kernel, stride, pad, dil, size = [], [], [], [], []
    for _ in range(nsp):
        k = draw(st.integers(1, 3), label="kernel")
        d = draw(st.integers(1, 2), label="dilation")
        p = draw(st.integers(0, 1), label="padding")
        s = draw(st.integers(1, 2), label="stride")
        lo = max(1, d * (k - 1) + 1 - 2 * p)
        size.append(draw(st.integers(lo, lo + size_slack), label="size"))
        kernel.append(k)
        stride.append(s)
        pad.append(p)
        dil.append(d)
    return kernel, stride, pad, dil, size


@st.composite
def sync_overrides(draw, macs_per_pe: int, simd: bool = True) -> dict:
    """Dotted overrides for the timing model (docs/timing.md): every sync mode and
    scope, look-ahead, load balancing, fold overlap or SCALE-Sim timing, and SIMD PEs
    (``array.pe_simd.width``; ``simd=False`` where the config cannot take them)."""
    mode = draw(st.sampled_from(["lockstep", "lockstep", "barrier", "fifo", "decoupled"]),
                label="sync mode")
    out = {"sync.mode": mode,
           "sync.scope": draw(st.sampled_from(["array", "array", "row", "col"]),
                              label="scope")}
    if draw(st.booleans(), label="lookahead?"):
        out["sync.lookahead"] = macs_per_pe + draw(st.integers(0, 4), label="lookahead")
    if mode == "barrier":
        out["sync.barrier_steps"] = draw(st.integers(1, 6), label="barrier_steps")
    if mode == "fifo":
        out["sync.fifo_depth"] = draw(st.integers(1, 6), label="fifo_depth")
    if mode == "decoupled":  # 8-bit streams: 1 or 2 bytes a step
        out["array.pe_buffer_bytes"] = draw(st.integers(2, 12), label="pe_buffer_bytes")
    balances = ["none", "none", "greedy_filter"]
    if mode in ("barrier", "decoupled"):
        balances.append("greedy_chunk")
    out["sync.balance"] = draw(st.sampled_from(balances), label="balance")
    if simd and macs_per_pe == 1 and out["sync.balance"] == "none":
        lanes = draw(st.sampled_from([1, 1, 2, 3]), label="simd lanes")
        if lanes > 1:
            out["array.pe_simd.width"] = lanes
            if mode == "decoupled":  # one step of the widest (os) stream, 8-bit operands
                out["array.pe_buffer_bytes"] += 1 + lanes
    timing = draw(st.sampled_from(["overlap", "overlap", "no overlap", "scalesim"]),
                  label="timing")
    if timing == "no overlap":
        out["array.fold_overlap"] = False
    elif timing == "scalesim":
        out["timing"] = "scalesim"
    return out
