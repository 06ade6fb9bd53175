"""The fuzzing harness's default run: a few hundred cases over every input family.

Each case seed is drawn by Hypothesis and fully determines the mutated input (see
fuzz_harness.py); a failure names the family and seed, and
``python tests/fuzz/run.py --family FAMILY --replay SEED`` reproduces it.
"""

from __future__ import annotations

import pytest
from fuzz_harness import FAMILIES, run_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

#: cases per family in the default run (5 families: 250 cases)
CASES_PER_FAMILY = 50
#: per-case CPU limit here: generous, since CI machines are shared (run.py uses 20 s)
TIME_LIMIT_S = 60


@pytest.mark.parametrize("family", FAMILIES)
@settings(max_examples=CASES_PER_FAMILY, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_every_case_runs_or_fails_cleanly(family, seed):
    r = run_case(family, seed, TIME_LIMIT_S)
    assert r.outcome in ("ok", "clean error"), f"{family} seed={seed}: {r.outcome}: {r.detail}"
