"""Make ``traces/moving_digits``: a small ReLU CNN trained on still 32x32 canvases (one
scikit-learn 8x8 digit, scaled 2x, at a random position), traced over short clips of
test digits moving across the canvas: 4 clips x 16 frames, int8. The frames axis is
what temporal-delta processing works on.

    pip install -e ".[torch]" && pip install scikit-learn==1.9.1
    python traces/make_moving_digits.py            # uses traces/checkpoints/moving_digits.pt
    python traces/make_moving_digits.py --retrain  # trains again (2-4 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits as D  # noqa: E402

from accelsim.analysis.inspect import inspect_trace  # noqa: E402
from accelsim.tracing import trace_torch  # noqa: E402

NAME = "moving_digits"
CANVAS = 32
SCALE = 2  # an 8x8 digit becomes 16x16
CLIPS, FRAMES = 4, 16
EPOCHS = 16
TRAIN_CANVASES = 16000
TEST_CANVASES = 2000


class CanvasCNN(nn.Module):
    """3 conv + ReLU + 2x2 max-pool stages (32 -> 4), then 2 linear layers."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def place(digit: np.ndarray, r: int, c: int) -> np.ndarray:
    big = np.kron(digit, np.ones((SCALE, SCALE), np.float32))
    canvas = np.zeros((CANVAS, CANVAS), np.float32)
    canvas[r:r + big.shape[0], c:c + big.shape[1]] = big
    return canvas


def still_canvases(x: np.ndarray, y: np.ndarray, n: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), n)
    hi = CANVAS - 8 * SCALE + 1
    pos = rng.integers(0, hi, (n, 2))
    imgs = np.stack([place(x[i], r, c) for i, (r, c) in zip(idx, pos, strict=True)])
    return imgs, y[idx]


def clips(x: np.ndarray, y: np.ndarray, seed: int):
    """[FRAMES, CLIPS, 1, 32, 32] frames of digits moving with constant velocity (1-2 px
    per frame in each direction), bouncing off the canvas edges; and the labels."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), CLIPS, replace=False)
    hi = CANVAS - 8 * SCALE
    out = np.zeros((FRAMES, CLIPS, 1, CANVAS, CANVAS), np.float32)
    for k, i in enumerate(idx):
        pos = rng.integers(0, hi + 1, 2)
        vel = rng.integers(1, 3, 2) * rng.choice([-1, 1], 2)
        for t in range(FRAMES):
            out[t, k, 0] = place(x[i], *pos)
            nxt = pos + vel
            for d in range(2):
                if not 0 <= nxt[d] <= hi:
                    vel[d] = -vel[d]
            pos = pos + vel
    return out, y[idx]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retrain", action="store_true",
                    help="train instead of loading the checkpoint")
    ap.add_argument("--out", default=str(D.HERE / NAME))
    args = ap.parse_args(argv)
    D.seed_everything()
    x_tr, y_tr, x_te, y_te = D.load_split()
    model = CanvasCNN()
    if args.retrain or not D.load_checkpoint(model, NAME):
        cx, cy = still_canvases(x_tr, y_tr, TRAIN_CANVASES, seed=1)
        secs = D.train(model, cx, cy, epochs=EPOCHS)
        D.save_checkpoint(model, NAME)
        print(f"trained {NAME} in {secs:.1f} s")
    tx, ty = still_canvases(x_te, y_te, TEST_CANVASES, seed=2)
    acc = D.accuracy(model, tx, ty)
    video, labels = clips(x_te, y_te, seed=3)
    with torch.no_grad():
        pred = model(torch.from_numpy(video.reshape(-1, 1, CANVAS, CANVAS))).argmax(1).numpy()
    clip_acc = float((pred == np.tile(labels, FRAMES)).mean())
    frames = [torch.from_numpy(f) for f in video]
    res = trace_torch(
        model, frames, args.out, quantize="int8", model_name=NAME,
        input_description=(f"{CLIPS} clips x {FRAMES} frames: a test digit (sklearn "
                           f"load_digits, scaled {SCALE}x, pixels/16) moving at 1-2 px/frame "
                           f"on a {CANVAS}x{CANVAS} canvas, bouncing off the edges; frame t "
                           f"is one batch of {CLIPS} canvases"),
        provenance={
            "dataset": "sklearn.datasets.load_digits, train_test_split(test_size=0.25, "
                       f"stratify=y, random_state={D.SEED}); canvases made from the training "
                       "split for training and from the test split for testing",
            "training": (f"{TRAIN_CANVASES} still canvases (seed 1), Adam lr 2e-3 cosine, "
                         f"batch 64, {EPOCHS} epochs"),
            "test_accuracy": round(acc, 4),
            "test_accuracy_note": f"{TEST_CANVASES} still canvases of test digits (seed 2)",
            "clip_frame_accuracy": round(clip_acc, 4),
            "clip_labels": [int(v) for v in labels],
            "accuracy_note": "fp32 model; the trace stores int8 operands",
            "script": f"traces/make_{NAME}.py",
            "checkpoint": f"traces/checkpoints/{NAME}.pt",
        })
    print(f"test accuracy {acc:.4f} (still canvases), {clip_acc:.4f} (clip frames); "
          f"wrote {res.path}")
    print(inspect_trace(res.path).to_string())


if __name__ == "__main__":
    main()
