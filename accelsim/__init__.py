"""accelsim: a cycle-level simulator of sparse DNN accelerators on real traces."""

from accelsim.analysis import plot
from accelsim.analysis.inspect import inspect_totals, inspect_trace
from accelsim.analysis.report import simulate, totals, with_totals
from accelsim.analysis.sweep import load_results, pareto, sweep
from accelsim.analysis.validate import validate
from accelsim.errors import AccelsimError, ConfigError, SimulationError, TraceError
from accelsim.io.hwconfig import HwConfig, load_hwconfig
from accelsim.io.trace import Layer, Trace, load_trace, write_trace
from accelsim.model.energy import load_energy_table, reprice
from accelsim.model.sparsity import prune_nm
from accelsim.model.threshold import resolve_thresholds
from accelsim.tracing import trace_onnx, trace_torch

#: ``accelsim.inspect(trace)``: per-layer shapes, densities and delta densities
inspect = inspect_trace

__version__ = "0.1.0"

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
    "prune_nm",
    "pareto",
    "plot",
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
