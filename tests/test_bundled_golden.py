"""Every bundled trace on every shipped config reproduces tests/golden/bundled_traces.csv
(regenerate with tests/golden/make_bundled_golden.py and review the diff)."""

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_bundled_traces_match_golden():
    spec = importlib.util.spec_from_file_location("mbg", GOLDEN / "make_bundled_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    got = mod.results()
    want = pd.read_csv(GOLDEN / "bundled_traces.csv")
    assert list(got.columns) == list(want.columns)
    assert got[["trace", "hw", "layer"]].values.tolist() == \
        want[["trace", "hw", "layer"]].values.tolist()
    ints = [c for c in got.columns if c not in ("trace", "hw", "layer", "energy_pj")]
    for col in ints:
        bad = got[col].to_numpy() != want[col].to_numpy()
        assert not bad.any(), (col, got.loc[bad, ["trace", "hw", "layer", col]].head(),
                               want.loc[bad, col].head())
    np.testing.assert_allclose(got.energy_pj, want.energy_pj, rtol=1e-9)
