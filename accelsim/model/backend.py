"""Compute backends for the engine's mask products: numpy on the CPU, torch on a CUDA
device (``backend: auto | numpy | torch``, docs/performance.md).

A backend does a handful of things to 0/1 masks held on its device: load a uint8 mask,
take the exact integer product of two masks (:meth:`Backend.mm`, both operands with K
last, the "NT" form ``x[..., M, K] @ y[..., N, K]ᵀ``), and reduce blocks of the result
(max, sum, any). Every result is an exact integer, whatever the device:

* float32 matmul (numpy's BLAS, torch on the CPU) is exact on a piece of K of at most
  2**24 elements: every partial sum of 0/1 products is an integer in [0, 2**24], which
  float32 represents exactly, in any summation order, with or without FMA. Longer K is
  split into such pieces and the pieces are summed in int64.
* on CUDA, ``torch._int_mm`` (int8 x int8 -> int32 on the tensor cores) is exact while
  K < 2**31; its shape rules (more than 16 rows, K and N multiples of 8) are met by
  zero padding, which adds nothing to any sum. Batched products (and a fallback where
  ``_int_mm`` is missing) use float16 on pieces of K of at most 2048: every partial
  sum is then an integer in [0, 2048], exact in float16 whatever the accumulator.

Results are identical on every backend, so ``backend`` is left out of the config hash.
torch is imported only when the torch backend is asked for.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from accelsim.errors import ConfigError

BACKENDS = ("auto", "numpy", "torch")
#: longest piece of K whose 0/1 product float32 sums exactly
K_PIECE_F32 = 2**24
#: longest piece of K whose 0/1 product float16 sums exactly
K_PIECE_F16 = 2**11
#: bytes of temporaries a chunked product may hold at once, at least (the budget of
#: :func:`chunk_budget` never goes below it)
MIN_CHUNK_BYTES = 16 * 2**20


def chunk_budget(operand_bytes: int) -> int:
    """Bytes of temporaries the chunked mask products of a layer may hold at once: half
    its int8 operands, at least :data:`MIN_CHUNK_BYTES` (docs/performance.md)."""
    return max(MIN_CHUNK_BYTES, operand_bytes // 2)


def _nvidia_device() -> bool:
    """An NVIDIA device node exists (a cheap test before importing torch)."""
    import glob
    import os

    return os.path.exists("/dev/nvidiactl") or bool(glob.glob("/dev/nvidia[0-9]*"))


def torch_cuda_available() -> bool:
    """torch is importable and sees a CUDA device (imports torch: call only when asked)."""
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # a broken driver reads as no device
        return False


class Backend:
    """numpy on the CPU; the base of the torch backend."""

    name = "numpy"
    device = "cpu"
    #: elements of K per exact product piece
    k_piece = K_PIECE_F32
    #: bytes per mask element while a product runs (the float32 copies)
    work_bytes = 4

    def load(self, x: np.ndarray) -> Any:
        """A uint8 0/1 numpy array onto the device."""
        return x

    def host(self, x: Any) -> np.ndarray:
        """int64 numpy array of a device result."""
        return np.asarray(x, dtype=np.int64)

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return np.zeros(shape, np.int64)

    def amax(self, x: Any, dims: tuple[int, ...]) -> Any:
        return x.max(axis=dims)

    def transpose01(self, x: Any) -> Any:
        """[a, b, c] -> [b, a, c]."""
        return x.transpose(1, 0, 2)

    def prep(self, x: Any) -> Any:
        """A loaded mask in the dtype :meth:`mm_raw` multiplies."""
        return np.ascontiguousarray(x, dtype=np.float32)

    def mm_raw(self, x: Any, y: Any) -> Any:
        """``x @ yᵀ`` of two :meth:`prep` masks whose K is at most :attr:`k_piece`: the
        exact counts, in the work dtype (pass them through :meth:`to_int` before any
        sum that could exceed the piece)."""
        if x.ndim != 3:
            return np.matmul(x, np.swapaxes(y, -1, -2))
        # a 2-D BLAS call per batch entry: numpy's stacked matmul is slower on thin K
        out = np.empty((x.shape[0], x.shape[1], y.shape[1]), np.float32)
        for i in range(x.shape[0]):
            np.matmul(x[i], y[i].T, out=out[i])
        return out

    def to_int(self, x: Any) -> Any:
        return x.astype(np.int64)

    def mm(self, x: Any, y: Any) -> Any:
        """Exact ``x[..., M, K] @ y[..., N, K]ᵀ`` of 0/1 masks: int64 [..., M, N]."""
        k = x.shape[-1]
        out = None
        for k0 in range(0, max(k, 1), self.k_piece):
            xs = x[..., k0:k0 + self.k_piece].astype(np.float32)
            ys = y[..., k0:k0 + self.k_piece].astype(np.float32)
            part = np.matmul(xs, np.swapaxes(ys, -1, -2)).astype(np.int64)
            out = part if out is None else out + part
        return out


class TorchBackend(Backend):
    """torch on ``device`` (CUDA when present; the CPU path serves the tests)."""

    name = "torch"

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        self.cuda = device.startswith("cuda")
        self.k_piece = K_PIECE_F16 if self.cuda else K_PIECE_F32
        self.work_bytes = 2 if self.cuda else 4
        self.int_mm = self.cuda and hasattr(torch, "_int_mm")

    def load(self, x: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

    def host(self, x: Any) -> np.ndarray:
        return x.to("cpu", self.torch.int64).numpy()

    def zeros(self, shape: tuple[int, ...]) -> Any:
        return self.torch.zeros(shape, dtype=self.torch.int64, device=self.device)

    def amax(self, x: Any, dims: tuple[int, ...]) -> Any:
        return self.torch.amax(x, dim=dims)

    def transpose01(self, x: Any) -> Any:
        return x.permute(1, 0, 2)

    def prep(self, x: Any) -> Any:
        return x.to(self.torch.float16 if self.cuda else self.torch.float32).contiguous()

    def mm_raw(self, x: Any, y: Any) -> Any:
        return self.torch.matmul(x, y.transpose(-1, -2))

    def to_int(self, x: Any) -> Any:
        return x.to(self.torch.int64)

    def _int_mm_2d(self, x: Any, y: Any) -> Any:
        """int8 tensor-core product, zero-padded to _int_mm's shape rules."""
        torch = self.torch
        m, k = x.shape
        n = y.shape[0]
        # more than 16 rows, K and N multiples of 8 (K above 16: torchao's safe_int_mm
        # notes wrong results at K <= 16 on one path); zeros add nothing to any sum
        mp, kp, np_ = max(m, 17), max(-(-k // 8) * 8, 32), max(-(-n // 8) * 8, 16)
        xa = torch.zeros((mp, kp), dtype=torch.int8, device=self.device)
        xa[:m, :k] = x
        ya = torch.zeros((np_, kp), dtype=torch.int8, device=self.device)
        ya[:n, :k] = y
        return torch._int_mm(xa, ya.t())[:m, :n].to(torch.int64)

    def mm(self, x: Any, y: Any) -> Any:
        torch = self.torch
        if self.int_mm and x.ndim == 2 and x.shape[-1] < 2**31:
            try:
                return self._int_mm_2d(x, y)
            except RuntimeError:  # a shape or build _int_mm refuses: the float16 path
                self.int_mm = False
        dt = torch.float16 if self.cuda else torch.float32
        k = x.shape[-1]
        out = None
        for k0 in range(0, max(k, 1), self.k_piece):
            xs = x[..., k0:k0 + self.k_piece].to(dt)
            ys = y[..., k0:k0 + self.k_piece].to(dt)
            part = torch.matmul(xs, ys.transpose(-1, -2)).to(torch.int64)
            out = part if out is None else out + part
        return out


#: ``auto`` sends a GEMM to the GPU only from this many dense MACs on (smaller ones cost
#: more in transfers and launches than they save)
AUTO_MIN_MACS = 2**26


def backend_for(name: str, macs: int) -> Backend:
    """The backend for one GEMM batch of ``macs`` dense MACs under config ``name``:
    ``auto`` keeps GEMMs under :data:`AUTO_MIN_MACS` on numpy."""
    if name == "auto" and macs < AUTO_MIN_MACS:
        return get_backend("numpy")
    return get_backend(name)


@functools.lru_cache(maxsize=8)
def _make(name: str, device: str | None) -> Backend:
    if name == "numpy":
        return Backend()
    return TorchBackend(device or ("cuda" if torch_cuda_available() else "cpu"))


def get_backend(name: str = "auto", device: str | None = None) -> Backend:
    """The backend called ``name``: ``numpy``; ``torch`` (on ``device``, default CUDA
    when present, else the CPU); ``auto``: torch on CUDA when torch is importable and
    sees a device, else numpy."""
    if name not in BACKENDS:
        raise ConfigError(f"backend: expected one of {', '.join(BACKENDS)}, got "
                          f"{str(name)[:40]!r}")
    if name == "auto":
        import importlib.util

        # no NVIDIA device node: no CUDA, and no need to import torch to learn it
        if (not _nvidia_device() or importlib.util.find_spec("torch") is None
                or not torch_cuda_available()):
            return _make("numpy", None)
        return _make("torch", device or "cuda")
    if name == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError("backend: torch: torch is not installed (pip install "
                              "'accelsim[torch]'), or use backend numpy")
    return _make(name, device)
