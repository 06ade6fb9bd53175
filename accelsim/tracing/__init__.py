"""Trace dumpers for deep-learning frameworks (optional extras).

Importing this package does not import any framework; :func:`trace_torch` imports
torch when it runs.
"""

from accelsim.tracing.torch import Skipped, TorchTraceResult, trace_torch

__all__ = ["Skipped", "TorchTraceResult", "trace_torch"]
