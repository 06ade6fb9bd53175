"""Make ``traces/digits_cnn_pruned``: the digits CNN of ``make_digits_cnn.py`` with 75% of
every layer's weights magnitude-pruned, then fine-tuned with the pruning masks fixed;
traced on the same 100 test images, int8.

    python traces/make_digits_cnn_pruned.py            # uses the checkpoints
    python traces/make_digits_cnn_pruned.py --retrain  # prunes and fine-tunes again
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits as D  # noqa: E402
import make_digits_cnn as base  # noqa: E402

from accelsim.analysis.inspect import inspect_trace  # noqa: E402

NAME = "digits_cnn_pruned"
SPARSITY = 0.75
FINETUNE_EPOCHS = 30


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retrain", action="store_true",
                    help="prune and fine-tune again instead of loading the checkpoint")
    ap.add_argument("--out", default=str(D.HERE / NAME))
    args = ap.parse_args(argv)
    x_tr, y_tr, x_te, y_te = D.load_split()
    dense, _ = base.trained_model()
    acc_dense = D.accuracy(dense, x_te, y_te)
    model = D.DigitsCNN()
    model.load_state_dict(dense.state_dict())
    masks = D.magnitude_masks(model, SPARSITY)
    with torch.no_grad():
        for n, p in D.weight_params(model).items():
            p.mul_(masks[n])
    acc_pruned = D.accuracy(model, x_te, y_te)
    if args.retrain or not D.load_checkpoint(model, NAME):
        D.seed_everything()
        secs = D.train(model, x_tr, y_tr, epochs=FINETUNE_EPOCHS, lr=2e-3, masks=masks)
        D.save_checkpoint(model, NAME)
        print(f"fine-tuned {NAME} in {secs:.1f} s")
    zeros = sum(int((p == 0).sum()) for p in D.weight_params(model).values())
    total = sum(p.numel() for p in D.weight_params(model).values())
    res, acc = D.trace_test_images(
        model, args.out, NAME, x_te, y_te, base.N_TRACE,
        {"dense_test_accuracy": round(acc_dense, 4),
         "pruned_before_finetune_test_accuracy": round(acc_pruned, 4),
         "pruning": (f"per-layer magnitude pruning of {SPARSITY:.0%} of each conv/linear "
                     f"weight tensor (biases kept), then {FINETUNE_EPOCHS} epochs of "
                     f"fine-tuning (Adam lr 2e-3 cosine) with the masks fixed"),
         "weight_sparsity": round(zeros / total, 4)},
        {"checkpoint": f"traces/checkpoints/{NAME}.pt"})
    print(f"dense {acc_dense:.4f}, pruned {acc_pruned:.4f}, fine-tuned {acc:.4f}; "
          f"weight sparsity {zeros / total:.3f}; wrote {res.path}")
    print(inspect_trace(res.path).to_string())


if __name__ == "__main__":
    main()
