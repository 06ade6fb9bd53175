"""Add ``meta.input_from`` / ``meta.input_ops`` (docs/trace-format.md) to the bundled
traces' manifests, leaving every tensor as it is.

The chains (which layer's output is a layer's input, through which operators) are a
property of the model's forward pass, not of its values, so they are read off
``accelsim.trace_torch`` run on each bundled model class (random inputs of the traced
shapes; the tiny LMs run their own trace_generation from their checkpoints). The
manifests are then rewritten with the same YAML options as ``write_trace``. The
make_*.py scripts write the same fields themselves (trace_torch records them).

    python traces/add_input_chains.py            # patches traces/*/manifest.yaml
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from accelsim.tracing import trace_torch  # noqa: E402

KEYS = ("input_from", "input_ops")


def chains(layers) -> dict[str, dict]:
    return {ly.name: {k: ly.meta[k] for k in KEYS if k in ly.meta} for ly in layers}


def digits() -> dict[str, dict]:
    import _digits as D

    torch.manual_seed(0)
    return chains(trace_torch(D.DigitsCNN().eval(), torch.rand(2, 1, 8, 8), None).trace)


def moving_digits() -> dict[str, dict]:
    import make_moving_digits as M

    torch.manual_seed(0)
    size = M.CANVAS
    frames = [torch.rand(2, 1, size, size) for _ in range(2)]
    return chains(trace_torch(M.CanvasCNN().eval(), frames, None).trace)


def silero_vad() -> dict[str, dict]:
    import make_silero_vad as S

    torch.manual_seed(0)
    model = S.SileroVAD16k().eval()
    chunks = [torch.rand(1, S.CHUNK) - 0.5 for _ in range(2)]
    return chains(trace_torch(model, chunks, None).trace)


def tiny_lm(name: str, act: str) -> dict[str, dict]:
    import _tiny_lm as T

    model, _ = T.trained_model(name, act)
    layers, _, _ = T.trace_generation(model, T.PROMPT, T.DECODE_STEPS)
    return chains(layers)


def patch(name: str, found: dict[str, dict]) -> int:
    path = HERE / name / "manifest.yaml"
    m = yaml.safe_load(path.read_text())
    n = 0
    for entry in m["layers"]:
        meta = {k: v for k, v in (entry.get("meta") or {}).items() if k not in KEYS}
        meta.update(found.get(entry["name"], {}))
        n += "input_from" in meta
        entry["meta"] = meta
    with open(path, "w") as fh:
        yaml.safe_dump(m, fh, sort_keys=False, default_flow_style=None, width=100)
    return n


def main() -> None:
    d = digits()
    for name, found in (("digits_cnn", d), ("digits_cnn_pruned", d),
                        ("moving_digits", moving_digits()), ("silero_vad", silero_vad()),
                        ("tiny_lm_gelu", tiny_lm("tiny_lm_gelu", "gelu")),
                        ("tiny_lm_relu", tiny_lm("tiny_lm_relu", "relu"))):
        print(f"{name}: {patch(name, found)} layers with input_from")


if __name__ == "__main__":
    main()
