import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("NUMBA_CACHE_DIR", str(ROOT / ".numba_cache"))


@pytest.fixture
def root() -> Path:
    return ROOT


def hw_dict(rows=4, cols=4, dataflow="os", policy="none", p=1, **extra):
    d = {"name": "t", "array": {"rows": rows, "cols": cols, "macs_per_pe": p},
         "dataflow": dataflow, "zero_policy": policy}
    d.update(extra)
    return d
