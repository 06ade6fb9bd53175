"""Make ``traces/digits_cnn``: a small ReLU CNN trained on scikit-learn's 8x8 digits,
traced on 100 test images with int8 quantisation.

    pip install -e ".[torch]" && pip install scikit-learn==1.9.1
    python traces/make_digits_cnn.py            # uses traces/checkpoints/digits_cnn.pt
    python traces/make_digits_cnn.py --retrain  # trains again (about 15 s on 2 cores)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _digits as D  # noqa: E402

from accelsim.analysis.inspect import inspect_trace  # noqa: E402

NAME = "digits_cnn"
EPOCHS = 40
N_TRACE = 100


def trained_model(retrain: bool = False) -> tuple[D.DigitsCNN, dict]:
    D.seed_everything()
    x_tr, y_tr, x_te, y_te = D.load_split()
    model = D.DigitsCNN()
    info: dict = {"checkpoint": f"traces/checkpoints/{NAME}.pt"}
    if retrain or not D.load_checkpoint(model, NAME):
        secs = D.train(model, x_tr, y_tr, epochs=EPOCHS)
        D.save_checkpoint(model, NAME)
        print(f"trained {NAME} in {secs:.1f} s")
    info["training"] = (f"Adam lr 2e-3 cosine, batch 64, {EPOCHS} epochs, seed {D.SEED}, "
                        f"on {len(x_tr)} training images")
    return model, info


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retrain", action="store_true",
                    help="train instead of loading the checkpoint")
    ap.add_argument("--out", default=str(D.HERE / NAME))
    args = ap.parse_args(argv)
    model, info = trained_model(args.retrain)
    _, _, x_te, y_te = D.load_split()
    res, acc = D.trace_test_images(model, args.out, NAME, x_te, y_te, N_TRACE, {}, info)
    print(f"test accuracy {acc:.4f} ({len(y_te)} images); wrote {res.path}")
    print(inspect_trace(res.path).to_string())


if __name__ == "__main__":
    main()
