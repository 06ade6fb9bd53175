"""The demand-driven stall timeline (docs/memory-model.md, "Stalls").

The engine's numba recurrence (``accelsim.model.memory.timeline_cycles``) against the
reference's job stepping (``accelsim.reference.memory._timeline``) on random sub-fold
sequences; closed-form cases worked by hand; and the properties the text promises:
unlimited bandwidth costs nothing, more bandwidth never costs cycles, double buffering
never costs cycles, and no sub-fold starts before its tile's data has arrived.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_memory_property import check_gemm, layer_of
from test_memory_property import make_hw as mem_hw

from accelsim import SimulationError, load_hwconfig, reference
from accelsim.reference.memory import _timeline

memory = pytest.importorskip("accelsim.model.memory")
engine = pytest.importorskip("accelsim.model.engine")

INF = math.inf
BANDWIDTHS = (0.5, 1.0, 3.0, 7.5, 64.0, INF)
FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_hw(dram_bw=INF, glb_bw=INF, db=True):
    return load_hwconfig({
        "name": "t", "array": {"rows": 2, "cols": 2}, "dataflow": "os",
        "memory": {"dram": {"bandwidth_bytes_per_cycle": dram_bw},
                   "glb": {"bandwidth_bytes_per_cycle": glb_bw, "double_buffer": db}}})


def fold(compute, fetch=None, glb_rd=0, glb_wr=0, dram_wr=0):
    """One sub-fold; ``fetch`` not None starts a GLB tile whose DRAM fetch it is."""
    return {"compute": compute, "new_tile": int(fetch is not None),
            "dram_rd": fetch or 0, "glb_rd": glb_rd, "glb_wr": glb_wr, "dram_wr": dram_wr}


def engine_cycles(folds, hw) -> int:
    col = {key: np.array([f[key] for f in folds], np.int64)
           for key in ("new_tile", "dram_rd", "compute", "glb_rd", "glb_wr", "dram_wr")}
    return memory.timeline_cycles(col["new_tile"], col["dram_rd"], col["compute"],
                                  col["glb_rd"], col["glb_wr"], col["dram_wr"], hw)


def both(folds, hw) -> int:
    ref = _timeline(folds, hw)
    assert engine_cycles(folds, hw) == ref
    return ref


@st.composite
def sequences(draw):
    """Up to 12 sub-folds in 1 to 12 GLB tiles; zero bytes and zero compute included."""
    n = draw(st.integers(0, 12))
    out = []
    for i in range(n):
        starts = i == 0 or draw(st.booleans())
        out.append(fold(draw(st.integers(0, 20)),
                        draw(st.integers(0, 80)) if starts else None,
                        draw(st.integers(0, 40)), draw(st.integers(0, 40)),
                        draw(st.integers(0, 40))))
    return out


bandwidth = st.sampled_from(BANDWIDTHS)


# --------------------------------------------------------------------------- hand cases


def test_two_tiles_closed_form():
    """Two GLB tiles of one sub-fold, 100-byte fetches at 1 B/cycle, 50 cycles of compute,
    40 bytes of DRAM writes each, GLB unlimited.

    Double buffered: both fetches are issued at 0 (two tile buffers): tile 0 lands at
    100, tile 1 at 200. Sub-fold 0 computes 100-150; its write (issued at 150) queues
    behind fetch 1: 200-240. Sub-fold 1 waits for its data: 200-250, its write
    250-290. Without: fetch 0 0-100, sub-fold 0 100-150, its write 150-190, fetch 1
    (issued when sub-fold 0 freed the only buffer, behind the write) 190-290, sub-fold
    1 290-340, its write 340-380."""
    folds = [fold(50, 100, dram_wr=40), fold(50, 100, dram_wr=40)]
    assert both(folds, make_hw(dram_bw=1.0)) == 290
    assert both(folds, make_hw(dram_bw=1.0, db=False)) == 380
    assert both(folds, make_hw()) == 100  # unlimited: compute only


def test_next_fetch_overlaps_the_whole_tile():
    """Tile 0 has two sub-folds of 50 cycles, tile 1 one; fetches 100 bytes at 1 B/cycle.
    Tile 1's fetch runs 100-200, under both of tile 0's sub-folds (100-150, 150-200), so
    tile 1 computes 200-250: 250 cycles. (The previous model let a fetch hide only under
    the one sub-fold before it: 100 + 50 + max(50, 100) + 50 = 300.) Without double
    buffering tile 1's fetch waits for tile 0's end: 100 + 100 + 100 + 50 = 350."""
    folds = [fold(50, 100), fold(50), fold(50, 100)]
    assert both(folds, make_hw(dram_bw=1.0)) == 250
    assert both(folds, make_hw(dram_bw=1.0, db=False)) == 350


def test_third_tile_waits_for_a_free_buffer():
    """Three tiles of one 10-cycle sub-fold, 10-byte fetches at 1 B/cycle. Fetches 0 and
    1 run 0-10 and 10-20; fetch 2 may start only when tile 0 has finished computing
    (10-20) and the channel is free (20): 20-30. Tiles compute 10-20, 20-30, 30-40."""
    folds = [fold(10, 10), fold(10, 10), fold(10, 10)]
    assert both(folds, make_hw(dram_bw=1.0)) == 40
    # compute 1: fetch 2 is issued at 11, after fetch 1 (10-20): 20-30, tile 2 30-31
    folds = [fold(1, 10), fold(1, 10), fold(1, 10)]
    assert both(folds, make_hw(dram_bw=1.0)) == 31


def test_glb_reads_run_beside_the_fetch():
    """One tile fetched in 20 cycles; two sub-folds read 30 and 10 bytes at 10 B/cycle
    and compute 5 each. The levels work in parallel: read 0 runs 0-3, read 1 3-4 (two
    register halves), while the tile lands at 20; sub-fold 0 computes 20-25, sub-fold 1
    25-30. Without double buffering read 1 waits for sub-fold 0: 25-26, sub-fold 1
    26-31. With a slow GLB (1 B/cycle) the reads bound: read 0 0-30, sub-fold 0 30-35,
    read 1 30-40 (issued at 0 behind read 0), sub-fold 1 40-45."""
    folds = [fold(5, 20, glb_rd=30), fold(5, glb_rd=10)]
    assert both(folds, make_hw(dram_bw=1.0, glb_bw=10.0)) == 30
    assert both(folds, make_hw(dram_bw=1.0, glb_bw=10.0, db=False)) == 31
    assert both(folds, make_hw(dram_bw=1.0, glb_bw=1.0)) == 45


def test_zero_byte_fetch_does_not_queue_behind_writes():
    """A tile that fetches nothing (its data is held) does not wait for the writes queued
    on the DRAM channel: sub-fold 0 writes 100 bytes (10-110); tile 1 fetches nothing
    and computes 10-20 at once; the layer ends when the write has drained, at 110."""
    folds = [fold(10, 0, dram_wr=100), fold(10, 0)]
    assert both(folds, make_hw(dram_bw=1.0)) == 110
    assert both(folds, make_hw(dram_bw=1.0, db=False)) == 110


def test_empty_sequence():
    assert both([], make_hw(dram_bw=1.0)) == 0


# --------------------------------------------------------------------------- properties


@FAST
@given(folds=sequences(), dram=bandwidth, glb=bandwidth, db=st.booleans())
def test_engine_matches_reference(folds, dram, glb, db):
    hw = make_hw(dram, glb, db)
    cycles = both(folds, hw)
    compute = sum(f["compute"] for f in folds)
    assert cycles >= compute
    def cyc(nbytes, bw):
        return 0 if bw == INF else math.ceil(nbytes / bw)

    if folds:  # the first sub-fold starts after its tile's data and its reads
        assert cycles >= max(cyc(folds[0]["dram_rd"], dram),
                             cyc(folds[0]["glb_rd"], glb)) + compute
    # one DRAM channel and one GLB port, each moving one transfer at a time
    assert cycles >= sum(cyc(f["dram_rd"], dram) + cyc(f["dram_wr"], dram) for f in folds)
    assert cycles >= sum(cyc(f["glb_rd"], glb) + cyc(f["glb_wr"], glb) for f in folds)
    if dram == glb == INF:
        assert cycles == compute


@FAST
@given(folds=sequences(), dram=bandwidth, glb=bandwidth, db=st.booleans(),
       which=st.sampled_from(["dram", "glb"]), faster=bandwidth)
def test_more_bandwidth_never_more_cycles(folds, dram, glb, db, which, faster):
    bw = {"dram": dram, "glb": glb}
    if faster < bw[which]:
        return
    slow = both(folds, make_hw(dram, glb, db))
    bw[which] = faster
    assert both(folds, make_hw(bw["dram"], bw["glb"], db)) <= slow


@FAST
@given(folds=sequences(), dram=bandwidth, glb=bandwidth)
def test_double_buffering_never_more_cycles(folds, dram, glb):
    assert both(folds, make_hw(dram, glb, True)) <= both(folds, make_hw(dram, glb, False))


# --------------------------------------------------------------------------- layers


def test_two_glb_tiles_of_a_gemm():
    """os on 2x2, A 4x2 and W 2x2 all ones, dense int8, DRAM 1 B/cycle, GLB unlimited,
    GLB tile pinned to (2, 2, 2) in order mnk: two M tiles of one fold each. Tile 0
    fetches its A tile and W (4 + 4 bytes), tile 1 only its A tile (W is held); each fold
    computes 4 cycles and writes 4 output bytes to DRAM.

    Double buffered: fetch 0 0-8, fetch 1 8-12; fold 0 8-12, its write 12-16; fold 1
    12-16 (its data landed at 12), its write 16-20: 20 cycles. Without: fetch 0 0-8,
    fold 0 8-12, its write 12-16, fetch 1 (issued at 12, behind the write) 16-20, fold 1
    20-24, its write 24-28: 28 cycles."""
    a, w = np.ones((4, 2), np.int8), np.ones((2, 2), np.int8)
    pin = {"mapping.loop_order": "mnk", "mapping.glb_tile": [2, 2, 2]}
    for db, cycles in ((True, 20), (False, 28)):
        hw = mem_hw(2, 2, 1, "os", dram_bw=1.0, db=db, timing="scalesim").with_overrides(pin)
        res = reference.simulate_gemm(a, w, hw)
        assert (res["compute_cycles"], res["dram_a_read_bytes"], res["dram_w_read_bytes"],
                res["dram_out_write_bytes"]) == (8, 8, 4, 8)
        assert res["cycles"] == cycles
        check_gemm(a, w, hw)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(layer=layer_of(), flow=st.sampled_from(("os", "ws", "is")),
       dram=st.sampled_from((0.5, 2.0, 8.0)), glb=st.sampled_from((1.0, 8.0, INF)),
       kib=st.sampled_from((64 / 1024, 256 / 1024, 64.0)))
def test_layer_cycles_follow_bandwidth_and_buffering(layer, flow, dram, glb, kib):
    """Whole layers on the engine, on one pinned GLB mapping (small partitions: many
    tiles): more DRAM or GLB bandwidth never adds cycles, dropping double buffering
    never removes any, unlimited bandwidth leaves compute alone."""
    hw = mem_hw(2, 2, 1, flow, dram_bw=dram, glb_bw=glb, a_kib=kib, w_kib=kib, out_kib=kib)
    try:
        st_ = engine.simulate_layer(layer, hw)
    except SimulationError:  # no legal GLB tile in these partitions
        return
    base = st_.as_dict()
    order, tm, tn, tk = st_.mem.mapping
    pin = {"mapping.loop_order": order, "mapping.glb_tile": [tm, tn, tk]}

    def cycles(**over):
        return engine.simulate_layer(layer, hw.with_overrides({**pin, **over})).cycles

    assert base["cycles"] == cycles()
    assert cycles(**{"memory.dram.bandwidth_bytes_per_cycle": dram * 4}) <= base["cycles"]
    assert cycles(**{"memory.glb.bandwidth_bytes_per_cycle": INF}) <= base["cycles"]
    assert cycles(**{"memory.glb.double_buffer": False}) >= base["cycles"]
    assert cycles(**{"memory.dram.bandwidth_bytes_per_cycle": INF,
                     "memory.glb.bandwidth_bytes_per_cycle": INF}) == base["compute_cycles"]
