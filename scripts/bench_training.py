"""Training throughput and energy per epoch, and IEC against inference batch size (a GPU run).

    python scripts/bench_training.py --out DIR [--model vgg16] [--epochs 2] [--smoke]

For each training setting (loader kind, eager or CUDA-graph step, batch size) it trains ``--model``
from scratch on the full-size offline dataset for ``--epochs`` epochs and reports the LAST epoch
(the first pays for cuDNN autotuning, graph capture and DataLoader start-up): images/s, seconds,
energy (J, from the tracer's best source), mean power and mean GPU utilisation. Then it measures
IEC of the trained model at several inference batch sizes. Writes ``training.csv``,
``inference.csv`` and ``meta.json`` (GPU, driver, torch, date) to DIR. ``--smoke`` runs a tiny
version on the CPU to check the script itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from greenlib import env, io  # noqa: E402
from greenlib.data import load_dataset, make_loaders  # noqa: E402
from greenlib.inference import measure_inference  # noqa: E402
from greenlib.models import build_model  # noqa: E402
from greenlib.tracer import Tracer  # noqa: E402
from greenlib.train import Trainer, TrainConfig  # noqa: E402

SETTINGS = [  # (loader, graph_capture, batch_size)
    ("gpu", False, 128), ("dataloader", False, 128), ("gpu", True, 128),
    ("gpu", False, 64), ("gpu", True, 64),
]
IEC_BATCHES = (1, 32, 128, 512)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="vgg16")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--iec-seconds", type=float, default=4.0)
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run that only checks the script")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    ds = load_dataset("synthetic")
    settings = SETTINGS
    if args.smoke:
        ds = ds.subset(256, 256)
        settings = [s for s in SETTINGS if not s[1]][:2]
    gpus = (0,) if cuda else None
    rows, model = [], None
    for loader_kind, graph, bs in settings:
        torch.manual_seed(0)
        model = build_model(args.model, ds.num_classes).to(device)
        train_loader, _ = make_loaders(ds, loader_kind, bs, device, seed=0)
        trainer = Trainer(model, train_loader, TrainConfig(epochs=args.epochs, graph_capture=graph), device)
        with Tracer(gpus=gpus, interval_s=0.1) as tr:
            summary = trainer.fit(tr, "train", progress=False)
        last = trainer.history[-1]
        w = last.window
        rows.append({"model": args.model, "loader": loader_kind, "step": "cuda-graph" if graph else "eager",
                     "batch_size": bs, "epoch_s": w["elapsed_s"], "images_per_s": last.images / w["elapsed_s"],
                     "energy_j_per_epoch": w["energy_j"], "energy_source": w["energy_source"],
                     "mean_power_w": w["mean_power_w"], "mean_gpu_util_pct": w["mean_gpu_util_pct"],
                     "train_loss_last_epoch": last.train_loss, "stage_energy_j": summary["energy_j"]})
        print(rows[-1], flush=True)
    train_df = pd.DataFrame(rows)

    # IEC of the last-trained model at several batch sizes
    _, test_loader = make_loaders(ds, "gpu", 512, device, seed=0)
    images = torch.cat([x for x, _ in test_loader])[:4096].to(device)
    iec_rows = []
    for bs in IEC_BATCHES:
        with Tracer(gpus=gpus, interval_s=0.1) as tr:
            m = measure_inference(model, images, tr, batch_size=bs, min_seconds=0.5 if args.smoke else args.iec_seconds)
        iec_rows.append({"model": args.model, "batch_size": bs, "iec_j": m["iec_j"], "iec_wh": m["iec_wh"],
                         "latency_ms": m["latency_ms"], "throughput_ips": m["throughput_ips"],
                         "mean_power_w": m["mean_power_w"], "mean_gpu_util_pct": m["mean_gpu_util_pct"],
                         "elapsed_s": m["elapsed_s"], "images": m["images"], "energy_source": m["energy_source"]})
        print(iec_rows[-1], flush=True)
    iec_df = pd.DataFrame(iec_rows)

    meta = env.environment() | {"script": "scripts/bench_training.py", "args": vars(args) | {"out": str(args.out)},
                                "dataset": ds.description, "measured_epoch": "last of each setting"}
    args.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(args.out / "training.csv", train_df.to_csv(index=False))
    io.atomic_write_text(args.out / "inference.csv", iec_df.to_csv(index=False))
    io.atomic_write_json(args.out / "meta.json", meta)
    print(train_df.to_string(index=False))
    print(iec_df.to_string(index=False))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"done in {time.perf_counter() - t0:.0f} s")
