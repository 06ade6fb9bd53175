import os
import sys
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


#: set by pytest itself, or by torch on its first import (whichever test imports it)
_SET_BY_IMPORTS = frozenset({"PYTEST_CURRENT_TEST", "KMP_DUPLICATE_LIB_OK", "KMP_INIT_AT_FORK",
                             "TORCHINDUCTOR_CACHE_DIR"})


@pytest.fixture(autouse=True)
def _no_leaked_process_state():
    """Every test leaves ``sys.path``, the working directory and the environment as it
    found them (issue 12: the suite passes in any order, and pytest-randomly runs it in a
    random one). Use ``monkeypatch`` for changes a test needs."""
    def environ() -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k not in _SET_BY_IMPORTS}

    path, cwd, env = list(sys.path), os.getcwd(), environ()
    yield
    leaked = []
    if sys.path != path:
        leaked.append(f"sys.path (+{[p for p in sys.path if p not in path]}, "
                      f"-{[p for p in path if p not in sys.path]})")
        sys.path[:] = path
    if os.getcwd() != cwd:
        leaked.append(f"cwd ({os.getcwd()})")
        os.chdir(cwd)
    if environ() != env:
        changed = sorted(set(environ().items()) ^ set(env.items()))
        leaked.append(f"os.environ ({sorted({k for k, _ in changed})})")
        for key in set(environ()) - set(env):
            del os.environ[key]
        os.environ.update(env)
    if leaked:
        pytest.fail("test left process state behind: " + "; ".join(leaked), pytrace=False)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Name the random order's seed even under ``-q`` (pytest-randomly prints it only in
    the header, which ``-q`` hides), so that a failing order can be run again."""
    seed = getattr(config.option, "randomly_seed", None)
    if seed is not None and config.pluginmanager.hasplugin("randomly"):
        terminalreporter.write_line(f"test order: random, reproduce with "
                                    f"-p randomly --randomly-seed={seed}")
