"""Make ``traces/tiny_lm_relu``: a small decoder-only transformer with a RELU FFN,
trained on the Python documentation text that ships with the standard library
(``pydoc_data``), traced on a prompt's prefill and 3 decode steps with the KV cache;
int16 activations, int8 weights.

    pip install -e ".[torch]"
    python traces/make_tiny_lm_relu.py            # uses traces/checkpoints/tiny_lm_relu.pt
    python traces/make_tiny_lm_relu.py --retrain  # trains again (about a minute on a GPU)

See traces/_tiny_lm.py for the data, the model and how the trace is assembled.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _tiny_lm as T  # noqa: E402

NAME = "tiny_lm_relu"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--retrain", action="store_true",
                    help="train instead of loading the checkpoint")
    ap.add_argument("--out", default=str(T.HERE / NAME))
    args = ap.parse_args(argv)
    T.make(NAME, "relu", args.out, retrain=args.retrain)


if __name__ == "__main__":
    main()
