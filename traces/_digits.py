"""Shared pieces of the scripts that make the digits traces (not part of accelsim).

Data: scikit-learn's bundled 8x8 ``load_digits`` (1,797 images, no download), split
75/25 stratified with a fixed seed. Pixels 0..16 are scaled to 0..1.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
CHECKPOINTS = HERE / "checkpoints"
SEED = 0


def seed_everything(seed: int = SEED) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test); images float32 [N, 8, 8] in 0..1."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target.astype(np.int64), test_size=0.25,
                                              stratify=d.target, random_state=SEED)
    return x_tr, y_tr, x_te, y_te


class DigitsCNN(nn.Module):
    """A small ReLU CNN for 8x8 digits: 3 convs (2 max-pools), 2 linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 2 * 2, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # 8 -> 4
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)  # 4 -> 2
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def weight_params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if n.endswith("weight")}


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float = 2e-3,
          batch: int = 64, masks: dict[str, torch.Tensor] | None = None,
          log=print) -> float:
    """Adam with a cosine schedule; ``masks`` keep pruned weights at zero. Returns seconds."""
    t0 = time.time()
    xt = torch.from_numpy(x)
    if xt.dim() == 3:
        xt = xt[:, None]
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(xt) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(SEED)
    params = weight_params(model)
    model.train()
    for ep in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if masks:
                with torch.no_grad():
                    for n, m in masks.items():
                        params[n].mul_(m)
            total += float(loss.detach()) * len(idx)
        if log and (ep % 5 == 4 or ep == epochs - 1):
            log(f"  epoch {ep + 1}/{epochs}: loss {total / len(xt):.4f}")
    model.eval()
    return time.time() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    xt = torch.from_numpy(x)
    if xt.dim() == 3:
        xt = xt[:, None]
    pred = model(xt).argmax(1).numpy()
    return float((pred == y).mean())


def magnitude_masks(model: nn.Module, sparsity: float) -> dict[str, torch.Tensor]:
    """Per-layer masks keeping the largest (1 - sparsity) of each weight tensor by |w|."""
    masks = {}
    for n, p in weight_params(model).items():
        k = int(round(sparsity * p.numel()))
        thresh = p.detach().abs().flatten().kthvalue(k).values if k else -1.0
        masks[n] = (p.detach().abs() > thresh).float()
    return masks


def save_checkpoint(model: nn.Module, name: str) -> Path:
    CHECKPOINTS.mkdir(exist_ok=True)
    path = CHECKPOINTS / f"{name}.pt"
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, path)
    return path


def load_checkpoint(model: nn.Module, name: str) -> bool:
    path = CHECKPOINTS / f"{name}.pt"
    if not path.exists():
        return False
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return True


def trace_test_images(model: nn.Module, out: str, name: str, x_te: np.ndarray,
                      y_te: np.ndarray, n_trace: int, extra: dict, tail: dict):
    """Trace ``model`` on the first ``n_trace`` test images (one batch, int8) with the
    provenance both digits traces share; ``extra`` goes after the accuracies and ``tail``
    after the script name. Returns ``(trace_torch result, test accuracy)``."""
    from accelsim.tracing import trace_torch

    acc = accuracy(model, x_te, y_te)
    x = torch.from_numpy(x_te[:n_trace])[:, None]
    res = trace_torch(
        model, x, out, quantize="int8", model_name=name,
        input_description=(f"the first {n_trace} images of the digits test split "
                           f"(sklearn load_digits, 8x8, pixels/16), one batch"),
        provenance={
            "dataset": "sklearn.datasets.load_digits, train_test_split(test_size=0.25, "
                       f"stratify=y, random_state={SEED})",
            "test_accuracy": round(acc, 4),
            "test_images": int(len(y_te)),
            "traced_images_accuracy": round(accuracy(model, x_te[:n_trace],
                                                     y_te[:n_trace]), 4),
            **extra,
            "accuracy_note": "fp32 model; the trace stores int8 operands",
            "script": f"traces/make_{name}.py",
            **tail,
        })
    return res, acc
