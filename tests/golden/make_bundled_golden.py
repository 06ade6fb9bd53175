"""Pinned results of every bundled trace on every shipped hardware config.

    python tests/golden/make_bundled_golden.py     # rewrites tests/golden/bundled_traces.csv

tests/test_bundled_golden.py re-simulates and requires every integer to match exactly (and
energy to 1e-9 relative). When a model change is intended, rerun this script and review the
diff of the CSV (`git diff --stat`, then the rows that moved) before committing it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

import accelsim
from accelsim.analysis.report import COUNT_COLUMNS
from accelsim.io.hwconfig import HWCONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
TRACES = ("digits_cnn", "digits_cnn_pruned", "moving_digits", "silero_vad",
          "synthetic_tiny_cnn", "tiny_lm_relu", "tiny_lm_gelu")
COLUMNS = ["trace", "hw", "layer", *COUNT_COLUMNS, "energy_pj"]


def results() -> pd.DataFrame:
    frames = []
    for name in TRACES:
        trace = accelsim.load_trace(ROOT / "traces" / name)
        for cfg in sorted(HWCONFIG_DIR.glob("*.yaml")):
            hw = accelsim.load_hwconfig(cfg)
            t = accelsim.prune_nm(trace, hw.structured.n, hw.structured.m)[0] \
                if hw.structured.n else trace
            df = accelsim.simulate(t, hw)
            df.insert(0, "hw", hw.name)
            df.insert(0, "trace", name)
            frames.append(df[COLUMNS])
    return pd.concat(frames, ignore_index=True)


if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "bundled_traces.csv"
    results().to_csv(out, index=False, float_format="%.17g")
    print(f"wrote {out}")
