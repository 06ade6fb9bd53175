"""`accelsim validate`'s EdgeDRNN check: weight traffic of a batch-1 delta GEMV with and
without fetch skipping, over silero_vad's delta frames."""

import re

import pytest
from conftest import ROOT

import accelsim
from accelsim.analysis import validate as v

NAME = "edgedrnn_weight_traffic"


@pytest.fixture(scope="module")
def row():
    t = accelsim.validate(ROOT / "traces", checks=[NAME])
    return t.iloc[0]


def test_the_check_passes_in_its_range(row):
    assert row.status == "pass", row.detail
    got = [float(x) for x in re.findall(r"([\d.]+)x", row.accelsim_value)]
    bytes_ratio, cycle_ratio, vs_dense, cycles_dense = got
    lo, hi = v.EDGEDRNN_RANGE
    assert lo <= bytes_ratio <= hi and lo <= vs_dense <= hi
    assert abs(cycle_ratio / bytes_ratio - 1) <= v.EDGEDRNN_FOLLOW
    assert vs_dense > bytes_ratio  # the no-delta twin also runs the unchanged frames


def test_it_measures_the_delta_frames_at_density_about_0_14(row):
    dens = float(re.search(r"delta density ([\d.]+)", row.detail).group(1))
    assert 0.12 <= dens <= 0.16
    assert "frames 1-168" in row.detail


def test_latency_follows_the_dram_bandwidth(row):
    """Memory-bound: every cycle count is at least the weight bytes over 8 B/cycle."""
    b_off, b_on = map(int, re.search(r"DRAM W bytes (\d+) fetch_skip off / (\d+) on",
                                     row.detail).groups())
    c_off, c_on = map(int, re.search(r"cycles (\d+) / (\d+)", row.detail).groups())
    bw = accelsim.load_hwconfig("edgedrnn_gemv").memory.dram.bandwidth_bytes_per_cycle
    assert c_off >= b_off / bw and c_on >= b_on / bw
    assert c_on <= b_on / bw * 1.01 + 168  # at most one rounded-up cycle per frame


def test_the_check_fails_when_fetch_skipping_does_nothing(monkeypatch):
    real = v._hw

    def no_skip(base, overrides=None):
        return real(base, {**(overrides or {}), "fetch_skip.unit_rows": 128})

    monkeypatch.setattr(v, "_hw", no_skip)  # one unit = all of W: nothing is skipped
    t = accelsim.validate(ROOT / "traces", checks=[NAME])
    assert t.status.iloc[0] == "fail"


def test_missing_trace_skips(tmp_path):
    t = accelsim.validate(tmp_path, checks=[NAME])
    assert t.status.iloc[0] == "skipped" and "not found" in t.detail.iloc[0]
