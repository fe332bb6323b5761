"""Eager against CUDA-graphed IEC windows of one model at each GPU precision (docs/quantization.md).

The question: how much of a PyTorch fp16/bf16 IEC at batch 128 is the launch path rather than the
GPU? Each (precision, mode) window is measured ``--repeats`` times, in the order eager, graph, graph,
eager ... so that a drift in clocks or temperature shows in both modes. The weights are random (the
energy of a forward does not depend on them) and so are the images (normal, at the deployable's dtype).

    python scripts/measure_graphed_iec.py --out data/measurements/graphed-iec/h200
    python scripts/measure_graphed_iec.py --model nni-vgg16 --min-seconds 10 --repeats 2 --out DIR

Writes ``iec.csv`` and ``iec.md`` (one row a window) and ``environment.json`` (GPU, driver, torch,
date: ``greenlib.env.environment``) into ``--out``. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import torch

from greenlib import experiments
from greenlib.env import environment
from greenlib.inference import measure_inference
from greenlib.io import atomic_write_json, atomic_write_text
from greenlib.models import build_model
from greenlib.quantize import quantize

COLUMNS = ["model", "precision", "mode", "repeat", "batch_size", "images", "elapsed_s", "energy_j", "iec_wh",
           "throughput_ips", "latency_ms", "mean_power_w", "mean_gpu_util_pct", "energy_source", "stack"]


def measure(model_name: str, precisions, batch_size: int, min_seconds: float, repeats: int, source: str,
            log=print) -> pd.DataFrame:
    device = torch.device("cuda", 0)
    model = build_model(model_name, num_classes=100).eval()
    rows = []
    with experiments.device_tracer(device, source, 0.1) as tracer:
        for precision in precisions:
            dep = quantize(model, precision, [], backend="pytorch", device=device, batch_size=batch_size,
                           name=model_name)
            images = torch.randn(8 * batch_size, 3, 32, 32, device=device).to(dep.input_dtype)
            for r in range(repeats):
                for graph in ((False, True) if r % 2 == 0 else (True, False)):
                    stage = f"{precision}-{'graph' if graph else 'eager'}-{r}"
                    out = measure_inference(dep, images, tracer, batch_size=batch_size, min_seconds=min_seconds,
                                            stage=stage, precision=precision, backend="pytorch", graph=graph)
                    row = {"model": model_name, "precision": precision, "mode": "graph" if graph else "eager",
                           "repeat": r, **{k: out.get(k) for k in COLUMNS[4:]}}
                    rows.append(row)
                    log(f"{stage:<16} {row['throughput_ips']:>9.0f} images/s  {row['iec_wh']:.3e} W·h  "
                        f"{row['mean_power_w']:.0f} W  GPU {row['mean_gpu_util_pct']:.0f}% busy")
    return pd.DataFrame(rows, columns=COLUMNS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for iec.csv, iec.md, environment.json")
    ap.add_argument("--model", default="nni-vgg16")
    ap.add_argument("--precisions", default="fp32,fp16,bf16", help="comma-separated GPU precisions")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--min-seconds", type=float, default=10.0, help="each window's length (the profiles' 10 s)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--source", default="counter", help="the tracer's energy source (default: the NVML counter)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("error: no CUDA GPU visible: this script measures GPU inference", file=sys.stderr)
        return 2
    if args.repeats < 1:
        print(f"error: --repeats={args.repeats}: must be >= 1", file=sys.stderr)
        return 2
    table = measure(args.model, [p for p in args.precisions.split(",") if p], args.batch_size, args.min_seconds,
                    args.repeats, args.source)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "iec.csv", table.to_csv(index=False))
    atomic_write_text(args.out / "iec.md", table.to_markdown(index=False) + "\n")
    atomic_write_json(args.out / "environment.json", environment() | {
        "command": " ".join(["python", "scripts/measure_graphed_iec.py", *(argv or sys.argv[1:])])})
    summary = table.groupby(["precision", "mode"])[["throughput_ips", "iec_wh", "mean_gpu_util_pct"]].mean()
    print(summary.to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
