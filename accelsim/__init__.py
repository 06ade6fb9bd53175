"""accelsim: a cycle-level simulator of sparse DNN accelerators on real traces."""

from .energy import load_energy_table, reprice
from .errors import AccelsimError, ConfigError, SimulationError, TraceError
from .hwconfig import HwConfig, load_hwconfig
from .report import simulate, totals, with_totals
from .trace import Layer, Trace, load_trace, write_trace

__version__ = "0.1.0"

__all__ = [
    "AccelsimError",
    "ConfigError",
    "HwConfig",
    "Layer",
    "SimulationError",
    "Trace",
    "TraceError",
    "load_energy_table",
    "load_hwconfig",
    "load_trace",
    "reprice",
    "simulate",
    "totals",
    "with_totals",
    "write_trace",
]
