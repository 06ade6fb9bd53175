"""Int8 quantisation shared by the tracers (torch, ONNX): the stored values and their
``Quant`` records. Symmetric, so that zero stays exactly zero."""

from __future__ import annotations

import numpy as np

from accelsim.io.trace import Quant


def quantize_activation(x: np.ndarray) -> tuple[np.ndarray, Quant]:
    """Symmetric per-tensor int8: ``q = clip(round(x / s), -127, 127)``, ``s = max|x|/127``."""
    amax = float(np.max(np.abs(x))) if x.size else 0.0
    scale = amax / 127.0 if amax > 0 else 1.0
    q = np.clip(np.rint(x.astype(np.float64) / scale), -127, 127).astype(np.int8)
    return q, Quant("symmetric", 8, scale)


def quantize_weight(w: np.ndarray) -> tuple[np.ndarray, Quant]:
    """Symmetric int8 with one scale per output channel (axis 0)."""
    amax = np.abs(w.astype(np.float64)).reshape(w.shape[0], -1).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0)
    s = scale.reshape((-1,) + (1,) * (w.ndim - 1))
    q = np.clip(np.rint(w.astype(np.float64) / s), -127, 127).astype(np.int8)
    return q, Quant("per_channel", 8, tuple(float(v) for v in scale), axis=0)


#: what the provenance of an int8 trace says
INT8_PROVENANCE = {"activations": "int8 symmetric per-tensor",
                   "weights": "int8 symmetric per-output-channel (axis 0)"}
