"""Regenerate traces/synthetic_tiny_cnn: a SYNTHETIC trace (uniform random int8 values at
fixed densities, seed 0) touching every layer kind. Not from a trained network.

    python traces/make_synthetic_tiny_cnn.py
"""

from pathlib import Path

import accelsim
from accelsim.io.synthetic import tiny_cnn_trace

if __name__ == "__main__":
    out = Path(__file__).resolve().parent / "synthetic_tiny_cnn"
    accelsim.write_trace(out, tiny_cnn_trace(density_a=0.5, density_w=0.5, seed=0))
    print(f"wrote {out}")
