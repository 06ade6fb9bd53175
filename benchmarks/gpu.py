"""accelsim's layer simulation on a torch backend against torch's own dense GEMM.

On the given device (default: CUDA when torch sees one, else the CPU), for ResNet-18's
conv shapes and a 7B decoder block's shapes (2048 tokens), time:

* ``accelsim``: :func:`accelsim.model.engine.simulate_layer` of the layer with
  ``backend: torch`` (full simulation: MAC counts, fold timing from mask products on
  the device, memory traffic and stalls on the CPU), and the fold timing alone;
* ``dense``: torch's matmul of the same GEMM shapes in float16 and bfloat16 on the
  device (random values; conv layers as their im2col GEMMs, batched for groups and
  attention heads);

and print the ratios accelsim / dense. It also checks that the torch backend gives the
same integers as numpy on every layer. Needs only torch, numpy, numba, pandas, pyyaml
and the repository on PYTHONPATH::

    PYTHONPATH=. python benchmarks/gpu.py --json gpu.json
    PYTHONPATH=. python benchmarks/gpu.py --device cpu --quick   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import accelsim  # noqa: E402
from accelsim.io.synthetic import decoder_layers, resnet18_trace  # noqa: E402
from accelsim.model.workload import gemm_shape  # noqa: E402

HW = {"dataflow": "os", "zero_policy": "skip_both", "formats.a.kind": "bitmask",
      "formats.w.kind": "bitmask"}


def _sync(torch, device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fn, repeat: int, torch=None, device: str = "cpu") -> float:
    best = float("inf")
    for _ in range(repeat):
        if torch is not None:
            _sync(torch, device)
        t = time.perf_counter()
        fn()
        if torch is not None:
            _sync(torch, device)
        best = min(best, time.perf_counter() - t)
    return best


def dense_gemm_time(torch, device: str, shape, dtype, repeat: int) -> float:
    """Seconds of torch's matmul of the layer's GEMMs (batch x [m, k] @ [k, n])."""
    b = shape.frames * shape.groups if shape.batch == 1 else shape.batch
    b = max(1, b)
    x = torch.randn((b, shape.m, shape.k), device=device).to(dtype)
    w = torch.randn((b, shape.k, shape.n), device=device).to(dtype)
    torch.matmul(x, w)  # warm-up (kernel selection)
    return best_of(lambda: torch.matmul(x, w), repeat, torch, device)


def fold_timing_time(layer, hw, repeat: int, torch, device: str) -> float:
    """Seconds of the fold timing alone (the product path) on ``hw``'s backend."""
    from accelsim.model.dataflow import make_plan
    from accelsim.model.engine import layer_masks
    from accelsim.model.sync import fold_steps

    az, wz = layer_masks(layer)
    plan = make_plan(hw)
    act = np.ones(az.shape[:2], bool)
    return best_of(lambda: fold_steps(az, wz, hw, plan, None, act, None), repeat,
                   torch, device)


def run_set(name: str, layers, hw_t, hw_n, torch, device: str, repeat: int,
            check: bool) -> list[dict]:
    from accelsim.model.engine import simulate_layer

    rows = []
    for layer in layers:
        s = gemm_shape(layer)
        simulate_layer(layer, hw_t, max_memory="1T")  # warm-up: compilation, transfers
        t_sim = best_of(lambda layer=layer: simulate_layer(layer, hw_t, max_memory="1T"),
                        repeat, torch, device)
        t_fold = fold_timing_time(layer, hw_t, repeat, torch, device)
        t16 = dense_gemm_time(torch, device, s, torch.float16, repeat)
        tbf = dense_gemm_time(torch, device, s, torch.bfloat16, repeat)
        row = {"set": name, "layer": layer.name, "m": s.m, "k": s.k, "n": s.n,
               "batch": max(1, s.frames * s.groups if s.batch == 1 else s.batch),
               "macs_dense": s.macs_dense, "accelsim_s": t_sim, "fold_timing_s": t_fold,
               "dense_fp16_s": t16, "dense_bf16_s": tbf,
               "ratio_fp16": t_sim / t16, "ratio_bf16": t_sim / tbf}
        if check:
            a = simulate_layer(layer, hw_t, max_memory="1T").as_dict()
            b = simulate_layer(layer, hw_n, max_memory="1T").as_dict()
            row["exact_vs_numpy"] = a == b
        rows.append(row)
        print(f"{name:8s} {layer.name:24s} {s.m:6d}x{s.k:6d}x{s.n:6d} b{row['batch']:3d}  "
              f"accelsim {t_sim:8.4f} s (fold timing {t_fold:7.4f})  fp16 {t16:8.5f} s  "
              f"bf16 {tbf:8.5f} s  ratio {row['ratio_fp16']:7.1f}x / {row['ratio_bf16']:7.1f}x"
              + ("" if not check else f"  exact {row['exact_vs_numpy']}"), flush=True)
    return rows


def summary(rows: list[dict], name: str) -> dict:
    sel = [r for r in rows if r["set"] == name]
    if not sel:
        return {}
    t_sim = sum(r["accelsim_s"] for r in sel)
    out = {"layers": len(sel), "accelsim_s": t_sim,
           "fold_timing_s": sum(r["fold_timing_s"] for r in sel),
           "dense_fp16_s": sum(r["dense_fp16_s"] for r in sel),
           "dense_bf16_s": sum(r["dense_bf16_s"] for r in sel)}
    out["ratio_fp16"] = t_sim / out["dense_fp16_s"]
    out["ratio_bf16"] = t_sim / out["dense_bf16_s"]
    if "exact_vs_numpy" in sel[0]:
        out["exact_vs_numpy"] = all(r["exact_vs_numpy"] for r in sel)
    return out


def bundled_exactness() -> list[dict]:
    """Every bundled trace on every shipped config, simulated with backend torch and with
    numpy: are the result tables identical?"""
    import warnings

    from accelsim.io.hwconfig import shipped_configs

    out = []
    for trace in sorted(p for p in (HERE.parent / "traces").iterdir()
                        if (p / "manifest.yaml").exists()):
        for path in shipped_configs():
            cfg = path.stem
            hw = accelsim.load_hwconfig(cfg)
            res = []
            for backend in ("numpy", "torch"):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        res.append(accelsim.simulate(trace, hw.with_overrides(
                            {"backend": backend})))
                    except accelsim.AccelsimError as e:  # e.g. 2:4 configs on dense weights
                        res.append(str(e))
            a, b = res
            same = a == b if isinstance(a, str) or isinstance(b, str) else a.equals(b)
            out.append({"trace": trace.name, "config": cfg, "identical": bool(same),
                        "refused": isinstance(a, str)})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    ap.add_argument("--repeat", type=int, default=3, help="best of N timings (3)")
    ap.add_argument("--sets", default="resnet18,7b", help="resnet18, 7b or both (default)")
    ap.add_argument("--quick", action="store_true",
                    help="small shapes (ResNet-18 at 64x64, a 7B block at 1/8 width and "
                         "256 tokens): a smoke run, not a measurement")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the torch == numpy exactness check")
    ap.add_argument("--bundled", action="store_true",
                    help="also simulate every bundled trace on every shipped config with "
                         "backend torch and numpy and compare the tables")
    ap.add_argument("--json", metavar="PATH", help="write the figures as JSON")
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from accelsim.model import backend as bk

    be = bk.TorchBackend(device)
    orig = bk.get_backend
    bk.get_backend = lambda name="auto", device=None: be if name == "torch" else orig(name)
    base = accelsim.load_hwconfig("dense_os_32x32", HW)
    hw_t = base.with_overrides({"backend": "torch"})
    hw_n = base.with_overrides({"backend": "numpy"})
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    rows: list[dict] = []
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor()
    print(f"device: {device} ({name}); torch {torch.__version__}; hw: 32x32 os skip_both "
          f"lockstep, bitmask operands; best of {args.repeat}")
    if "resnet18" in sets:
        trace = resnet18_trace(image=64 if args.quick else 224)
        rows += run_set("resnet18", trace.layers, hw_t, hw_n, torch, device, args.repeat,
                        not args.no_check)
    if "7b" in sets:
        kw = ({"hidden": 512, "ffn": 1376, "heads": 4, "tokens": 256} if args.quick
              else {})
        rows += run_set("7b", decoder_layers(1, **kw), hw_t, hw_n, torch, device,
                        args.repeat, not args.no_check)
    out = {"device": device, "device_name": name, "torch": torch.__version__,
           "quick": args.quick, "repeat": args.repeat, "layers": rows,
           "summary": {s: summary(rows, s) for s in sets}}
    if args.bundled:
        out["bundled"] = bundled_exactness()
        same = sum(r["identical"] for r in out["bundled"])
        print(f"bundled traces x shipped configs: {same} of {len(out['bundled'])} tables "
              f"identical on torch ({device}) and numpy")
        for r in out["bundled"]:
            if not r["identical"]:
                print(f"  differs: {r['trace']} on {r['config']}")
    for s, v in out["summary"].items():
        if v:
            print(f"{s}: accelsim {v['accelsim_s']:.3f} s (fold timing {v['fold_timing_s']:.3f}"
                  f" s) vs torch dense fp16 {v['dense_fp16_s']:.4f} s / bf16 "
                  f"{v['dense_bf16_s']:.4f} s: ratio {v['ratio_fp16']:.1f}x / "
                  f"{v['ratio_bf16']:.1f}x" + (f"; torch == numpy on every layer: "
                                              f"{v['exact_vs_numpy']}"
                                              if "exact_vs_numpy" in v else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
