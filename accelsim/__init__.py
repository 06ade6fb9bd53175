"""accelsim: a cycle-level simulator of sparse DNN accelerators on real traces.

The public names below are imported on first use (PEP 562 module ``__getattr__``), so
that ``import accelsim`` and ``accelsim --help`` do not load numba, pandas, pyarrow or
matplotlib; ``from accelsim import simulate`` and ``accelsim.simulate`` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from accelsim.errors import AccelsimError, ConfigError, SimulationError, TraceError

__version__ = "0.1.0"

#: public name -> (module, attribute; None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "HwConfig": ("accelsim.io.hwconfig", "HwConfig"),
    "Layer": ("accelsim.io.trace", "Layer"),
    "Trace": ("accelsim.io.trace", "Trace"),
    # ``accelsim.inspect(trace)``: per-layer shapes, densities and delta densities
    "inspect": ("accelsim.analysis.inspect", "inspect_trace"),
    "inspect_totals": ("accelsim.analysis.inspect", "inspect_totals"),
    "inspect_trace": ("accelsim.analysis.inspect", "inspect_trace"),
    "load_energy_table": ("accelsim.model.energy", "load_energy_table"),
    "load_hwconfig": ("accelsim.io.hwconfig", "load_hwconfig"),
    "load_results": ("accelsim.analysis.sweep", "load_results"),
    "load_trace": ("accelsim.io.trace", "load_trace"),
    "prune_nm": ("accelsim.model.sparsity", "prune_nm"),
    "pareto": ("accelsim.analysis.sweep", "pareto"),
    "plot": ("accelsim.analysis.plot", None),
    "reprice": ("accelsim.model.energy", "reprice"),
    "resolve_thresholds": ("accelsim.model.threshold", "resolve_thresholds"),
    "simulate": ("accelsim.analysis.report", "simulate"),
    "sweep": ("accelsim.analysis.sweep", "sweep"),
    "totals": ("accelsim.analysis.report", "totals"),
    "trace_onnx": ("accelsim.tracing.onnx", "trace_onnx"),
    "trace_torch": ("accelsim.tracing.torch", "trace_torch"),
    "validate": ("accelsim.analysis.validate", "validate"),
    "with_totals": ("accelsim.analysis.report", "with_totals"),
    "write_trace": ("accelsim.io.trace", "write_trace"),
}

#: the same names as before the imports became lazy (a test checks it against _LAZY)
__all__ = [
    "AccelsimError",
    "ConfigError",
    "HwConfig",
    "Layer",
    "SimulationError",
    "Trace",
    "TraceError",
    "inspect",
    "inspect_totals",
    "inspect_trace",
    "load_energy_table",
    "load_hwconfig",
    "load_results",
    "load_trace",
    "pareto",
    "plot",
    "prune_nm",
    "reprice",
    "resolve_thresholds",
    "simulate",
    "sweep",
    "totals",
    "trace_onnx",
    "trace_torch",
    "validate",
    "with_totals",
    "write_trace",
]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'accelsim' has no attribute {name!r}") from None
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from accelsim.analysis import plot
    from accelsim.analysis.inspect import inspect_totals, inspect_trace
    from accelsim.analysis.inspect import inspect_trace as inspect
    from accelsim.analysis.report import simulate, totals, with_totals
    from accelsim.analysis.sweep import load_results, pareto, sweep
    from accelsim.analysis.validate import validate
    from accelsim.io.hwconfig import HwConfig, load_hwconfig
    from accelsim.io.trace import Layer, Trace, load_trace, write_trace
    from accelsim.model.energy import load_energy_table, reprice
    from accelsim.model.sparsity import prune_nm
    from accelsim.model.threshold import resolve_thresholds
    from accelsim.tracing import trace_onnx, trace_torch
