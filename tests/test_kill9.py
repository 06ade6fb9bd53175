"""``kill -9`` at random moments during ``simulate -o``, ``write_trace`` and ``sweep``,
then a rerun: the target holds the old content or the new one (never neither, never a
half-written file), and after the rerun no temporary file is left and nothing is lost.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from accelsim.io.trace import linear, load_trace, write_trace

TRIALS = 3


def _debris(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if "accelsim-tmp" in p.name
                  or "accelsim-old" in p.name or p.name.endswith(".tmp"))


def _spawn(code: str, cwd: Path) -> subprocess.Popen:
    """Start a writer; it prints 'ready' once imports are done, then loops."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                            text=True)


def _kill_after_ready(proc: subprocess.Popen, rng: random.Random, upto_s: float) -> None:
    line = proc.stdout.readline()
    assert line.strip() == "ready", line
    time.sleep(rng.uniform(0, upto_s))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _trace(path: Path, value: int) -> None:
    x = np.full((4, 8), value, np.int8)
    write_trace(path, [linear("fc", x, np.ones((6, 8), np.int8))], model=f"v{value}")


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_write_trace(tmp_path, trial):
    rng = random.Random(trial)
    target = tmp_path / "tr"
    _trace(target, 1)
    proc = _spawn(f"""
        import numpy as np
        from accelsim.io.trace import linear, write_trace
        print("ready")
        i = 0
        while True:
            i = i % 100 + 2
            x = np.full((4, 8), i, np.int8)
            write_trace({str(target)!r}, [linear("fc", x, np.ones((6, 8), np.int8))],
                        model=f"v{{i}}")
        """, tmp_path)
    _kill_after_ready(proc, rng, 1.5)
    t = load_trace(target)  # old or new, never missing or partial
    assert t.model.startswith("v")
    assert int(np.asarray(t.layers[0].a)[0, 0]) == int(t.model[1:])
    _trace(target, 7)  # the rerun cleans up after the killed writer
    assert load_trace(target).model == "v7"
    assert _debris(tmp_path) == []


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_simulate_o(tmp_path, trial, root):
    from accelsim.cli.main import main

    rng = random.Random(100 + trial)
    trace = tmp_path / "tr"
    _trace(trace, 3)
    out = tmp_path / "out.csv"
    assert main(["simulate", str(trace), "--hw", "sparse_os_16x16", "-o", str(out)]) == 0
    expected = pd.read_csv(out, comment="#")
    proc = _spawn(f"""
        import contextlib, io
        from accelsim.cli.main import main
        print("ready")
        while True:
            with contextlib.redirect_stdout(io.StringIO()):
                main(["simulate", {str(trace)!r}, "--hw", "sparse_os_16x16", "-o",
                      {str(out)!r}])
        """, tmp_path)
    _kill_after_ready(proc, rng, 2.0)
    pd.testing.assert_frame_equal(pd.read_csv(out, comment="#"), expected)  # whole, never partial
    assert main(["simulate", str(trace), "--hw", "sparse_os_16x16", "-o", str(out)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out, comment="#"), expected)
    assert _debris(tmp_path) == []


@pytest.mark.parametrize("trial", range(TRIALS))
def test_kill9_sweep_then_resume(tmp_path, trial):
    from accelsim.analysis.sweep import load_results, sweep

    rng = random.Random(200 + trial)
    trace = tmp_path / "tr"
    _trace(trace, 5)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({"base": "sparse_os_16x16", "traces": [str(trace)],
                                    "grid": {"array.rows": [2, 4, 8, 16],
                                             "zero_policy": ["none", "skip_a"]}}))
    res = tmp_path / "res"
    proc = _spawn(f"""
        from accelsim.analysis.sweep import sweep
        print("ready")
        sweep({str(spec)!r}, {str(res)!r}, workers=1)
        """, tmp_path)
    _kill_after_ready(proc, rng, 3.0)
    s = sweep(spec, res, workers=1)  # resume: stored points are kept, the rest run
    assert s.ok + s.skipped == 8 and s.failed == 0 and s.lost == 0
    df = load_results(res)
    tot = df[df["scope"] == "total"]
    assert len(tot) == 8 and (tot["status"] == "ok").all()
    assert _debris(tmp_path) == []
    assert not (res / "points" / "bad").exists()
