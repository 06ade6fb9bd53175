"""Trace dumpers for deep-learning frameworks (optional extras).

Importing this package does not import any framework; :func:`trace_torch` imports
torch and :func:`trace_onnx` onnx and onnxruntime when they run.
"""

from accelsim.tracing.onnx import OnnxTraceResult, trace_onnx
from accelsim.tracing.torch import Skipped, TorchTraceResult, trace_torch

__all__ = ["OnnxTraceResult", "Skipped", "TorchTraceResult", "trace_onnx", "trace_torch"]
