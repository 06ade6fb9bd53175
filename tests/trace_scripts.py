"""Load a bundled trace's script (``traces/make_<name>.py``) as a module without leaving
anything behind: the scripts put ``traces/`` on ``sys.path`` themselves and import
their helpers (``_digits``, ``_tiny_lm``, ``make_digits_cnn``) from it; both are undone
here, so that ``traces/silero_vad/`` cannot shadow the ``silero_vad`` package, nor one
script's helper module serve the next script, in whatever order the tests run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

TRACES = Path(__file__).resolve().parents[1] / "traces"


def _from_traces(mod: ModuleType) -> bool:
    f = getattr(mod, "__file__", None)
    paths = [f] if f else list(getattr(mod, "__path__", []) or [])
    return any(Path(p).resolve().is_relative_to(TRACES) for p in paths)


def load_script(name: str) -> ModuleType:
    """``traces/make_<name>.py`` as a module; ``sys.path`` and ``sys.modules`` as before
    (the script's own helpers stay reachable from its globals)."""
    saved_path = list(sys.path)
    before = set(sys.modules)
    try:
        spec = importlib.util.spec_from_file_location(f"_trace_script_{name}",
                                                      TRACES / f"make_{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved_path
        for key in set(sys.modules) - before:
            if _from_traces(sys.modules[key]):
                del sys.modules[key]
    return mod
