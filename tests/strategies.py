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
