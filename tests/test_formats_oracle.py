"""Compressed tile sizes: a vectorised numpy oracle of every format, held against the
reference's element-walking ``tile_sizes`` and the engine's ``accelsim.model.memory.tile_sizes``.

Definitions (``docs/memory-model.md``): a tile is flattened row-major, its rows are the
fibers; ``b`` bits per element.

| kind    | data bits | metadata bits                  |
|---------|-----------|--------------------------------|
| dense   | numel*b   | 0                              |
| bitmask | nnz*b     | numel                          |
| rle     | entries*b | entries*r                      |
| csr     | nnz*b     | nnz*i + (fibers + 1)*p         |
| coo     | nnz*b     | nnz*2*i                        |

with ``entries = nnz + sum over the gaps g before each nonzero of g // 2**r``.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from accelsim import reference

KINDS = ("dense", "bitmask", "rle", "csr", "coo")


def oracle(tile, kind, bits, run_bits=4, index_bits=8, ptr_bits=16) -> tuple[int, int]:
    """(data bits, metadata bits) of a 2-D tile, vectorised numpy."""
    tile = np.asarray(tile)
    flat = tile.reshape(-1) != 0
    numel = flat.size
    nnz = int(np.count_nonzero(flat))
    fibers = tile.shape[0]
    if kind == "dense":
        return numel * bits, 0
    if kind == "bitmask":
        return nnz * bits, numel
    if kind == "csr":
        return nnz * bits, nnz * index_bits + (fibers + 1) * ptr_bits
    if kind == "coo":
        return nnz * bits, nnz * 2 * index_bits
    assert kind == "rle"
    pos = np.flatnonzero(flat)
    gaps = np.diff(np.concatenate([[-1], pos])) - 1  # zeros before each nonzero
    entries = nnz + int((gaps // 2**run_bits).sum())
    return entries * bits, entries * run_bits


def engine_tile_sizes():
    try:
        mod = importlib.import_module("accelsim.model.memory")
    except ImportError as e:  # written in parallel with these tests
        pytest.skip(f"accelsim.model.memory not importable: {e}")
    if not hasattr(mod, "tile_sizes"):
        pytest.skip("accelsim.model.memory.tile_sizes not there yet")
    return mod.tile_sizes


@pytest.fixture(params=["reference", "engine"])
def sizes(request):
    """``tile_sizes(tile, kind, bits, run_bits, index_bits, ptr_bits)`` of one
    implementation, returning a pair of Python ints."""
    fn = reference.tile_sizes if request.param == "reference" else engine_tile_sizes()

    def run(tile, kind, bits, run_bits=4, index_bits=8, ptr_bits=16):
        if request.param == "engine":
            tile = np.asarray(tile) != 0  # the engine takes a mask
        data, meta = fn(tile, kind, bits, run_bits=run_bits, index_bits=index_bits,
                        ptr_bits=ptr_bits)
        return int(data), int(meta)

    return run


# --------------------------------------------------------------------------- hand cases


def test_rle_hand(sizes):
    # r = 2: a run field holds up to 3 zeros; a gap of 4..7 needs one explicit zero
    row = [0, 0, 0, 5, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    # gaps 3, 4, 8 -> extra 0, 1, 2; trailing zeros are free
    assert sizes(np.array([row]), "rle", 8, run_bits=2) == ((3 + 3) * 8, (3 + 3) * 2)
    # r = 1: gaps of 1 fit, 2 and 3 need one extra entry
    row = [1, 0, 2, 0, 0, 3, 0, 0, 0, 4]
    assert sizes(np.array([row]), "rle", 4, run_bits=1) == ((4 + 2) * 4, (4 + 2) * 1)
    # rows are concatenated: the run continues across a fiber boundary
    tile = np.array([[0, 0, 0], [0, 0, 9]])
    assert sizes(tile, "rle", 8, run_bits=2) == (2 * 8, 2 * 2)


def test_all_zero_and_all_dense(sizes):
    z = np.zeros((3, 5), np.int8)
    d = np.ones((3, 5), np.int8)
    assert sizes(z, "dense", 8) == (120, 0)
    assert sizes(z, "bitmask", 8) == (0, 15)
    assert sizes(z, "rle", 8, run_bits=1) == (0, 0)
    assert sizes(z, "csr", 8, index_bits=3, ptr_bits=5) == (0, 4 * 5)
    assert sizes(z, "coo", 8, index_bits=3) == (0, 0)
    assert sizes(d, "bitmask", 4) == (60, 15)
    assert sizes(d, "rle", 4, run_bits=2) == (60, 30)
    assert sizes(d, "csr", 4, index_bits=3, ptr_bits=5) == (60, 45 + 20)
    assert sizes(d, "coo", 4, index_bits=3) == (60, 90)


# --------------------------------------------------------------------------- properties


@st.composite
def tiles(draw):
    shape = draw(st.tuples(st.integers(1, 6), st.integers(1, 12)), label="shape")
    if draw(st.booleans(), label="by density"):
        dens = draw(st.sampled_from([0.0, 1.0, 0.05, 0.2, 0.5, 0.8]), label="density")
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1), label="seed"))
        return np.where(rng.random(shape) < dens, rng.integers(1, 100, shape), 0)
    return draw(hnp.arrays(np.int8, shape, elements=st.sampled_from([0, 0, 0, 0, 1, -3])))


fmt_params = st.fixed_dictionaries({
    "kind": st.sampled_from(KINDS),
    "bits": st.sampled_from([1, 3, 4, 8, 16]),
    "run_bits": st.integers(1, 4),
    "index_bits": st.integers(1, 8),
    "ptr_bits": st.integers(1, 16),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tile=tiles(), fmt=fmt_params)
def test_sizes_match_numpy_oracle(tile, fmt):
    kw = {k: fmt[k] for k in ("run_bits", "index_bits", "ptr_bits")}
    expect = oracle(tile, fmt["kind"], fmt["bits"], **kw)
    assert reference.tile_sizes(tile, fmt["kind"], fmt["bits"], **kw) == expect
    eng = engine_tile_sizes()
    got = eng(tile != 0, fmt["kind"], fmt["bits"], **kw)
    assert (int(got[0]), int(got[1])) == expect, (tile.tolist(), fmt)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tile=tiles(), fmt=fmt_params, data=st.data())
def test_zeroing_an_element_never_grows_a_tile(tile, fmt, data):
    nz = np.argwhere(tile != 0)
    if len(nz) == 0:
        return
    r, c = nz[data.draw(st.integers(0, len(nz) - 1), label="which nonzero")]
    less = tile.copy()
    less[r, c] = 0
    kw = {k: fmt[k] for k in ("run_bits", "index_bits", "ptr_bits")}
    eng = engine_tile_sizes()
    for fn in (oracle, reference.tile_sizes, lambda t, *a, **k: eng(t != 0, *a, **k)):
        before = fn(tile, fmt["kind"], fmt["bits"], **kw)
        after = fn(less, fmt["kind"], fmt["bits"], **kw)
        before, after = tuple(map(int, before)), tuple(map(int, after))
        assert after[0] <= before[0] and after[1] <= before[1]
        # and so do the whole bytes of a transfer
        assert -(-after[0] // 8) + -(-after[1] // 8) <= -(-before[0] // 8) + -(-before[1] // 8)
