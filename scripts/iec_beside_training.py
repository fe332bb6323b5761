"""IEC of one GPU with the host to itself against beside a training job on another GPU (an A/B).

The question (docs/campaign.md, session 13): the two stored ResNet20 students are one network, yet
CRD's IEC, measured on a two-GPU host while the other GPU trained, is 18% above KD's, measured alone
on a one-GPU host (latency 1.75 against 1.29 ms at batch 128). An eager ResNet20 forward at batch 128
is bound by the host's kernel launches. Is it the neighbour or the host?

On one machine with two GPUs this measures ``--model``'s IEC windows on GPU ``--gpu`` (random weights
and images: the energy of a forward does not depend on them), eager and CUDA-graphed, each
``--repeats`` times with GPU ``--busy-gpu`` idle and with it training (``--busy-model``, the
project's :class:`greenlib.train.Trainer`, CUDA-graphed on the GPU loader as the grid's jobs train).
The training job is one process, started once and paused (SIGSTOP) or resumed (SIGCONT) between
windows, in the order alone, beside, beside, alone ... so that a drift shows in both. Each window
records how much CPU time the training job used meanwhile (``busy_cpu_s``: 0 when paused).

    python scripts/iec_beside_training.py --out data/measurements/iec-beside-training/h200x2-2026-11-29
    python scripts/iec_beside_training.py --out /tmp/x --smoke     # the CPU, tiny: checks the script

Writes ``iec.csv`` and ``iec.md`` (one row a window), ``summary.csv`` and ``summary.md`` (beside
against alone, per mode) and ``environment.json`` (GPU, driver, torch, date) into ``--out``.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from greenlib import experiments  # noqa: E402
from greenlib.env import environment  # noqa: E402
from greenlib.inference import measure_inference  # noqa: E402
from greenlib.io import atomic_write_json, atomic_write_text  # noqa: E402
from greenlib.models import build_model  # noqa: E402

COLUMNS = ["model", "mode", "neighbour", "repeat", "batch_size", "images", "elapsed_s", "energy_j", "iec_wh",
           "throughput_ips", "latency_ms", "mean_power_w", "mean_gpu_util_pct", "energy_source", "busy_cpu_s"]


def train_forever(model_name: str, device: str, batch_size: int, smoke: bool) -> None:
    """The neighbour: ``model_name`` trained on the synthetic stand-in until killed."""
    from greenlib.data import load_dataset, make_loaders
    from greenlib.train import TrainConfig, Trainer

    dev = torch.device(device)
    ds = load_dataset("synthetic")
    if smoke:
        ds = ds.subset(256, 64)
    torch.manual_seed(0)
    model = build_model(model_name, ds.num_classes).to(dev)
    loader, _ = make_loaders(ds, "gpu" if dev.type == "cuda" else "dataloader", batch_size, dev, seed=0)
    trainer = Trainer(model, loader, TrainConfig(epochs=100_000, graph_capture=dev.type == "cuda"), dev)
    print("training", flush=True)
    with experiments.device_tracer(dev, "auto", 1.0) as tracer:
        trainer.fit(tracer, "neighbour", progress=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(args, log=print) -> pd.DataFrame:
    device = torch.device("cpu") if args.smoke else torch.device("cuda", args.gpu)
    busy_device = "cpu" if args.smoke else f"cuda:{args.busy_gpu}"
    model = build_model(args.model, num_classes=100).to(device).eval()
    images = torch.randn(8 * args.batch_size, 3, 32, 32, device=device)
    modes = (False,) if args.smoke else (False, True)  # graphed windows need CUDA
    job = subprocess.Popen([sys.executable, __file__, "--neighbour", "--busy-model", args.busy_model,
                            "--device", busy_device, "--busy-batch-size", str(args.busy_batch_size)]
                           + (["--smoke"] if args.smoke else []), stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        if job.stdout.readline().strip() != "training":
            raise RuntimeError(f"the training job on {busy_device} did not start (exit code {job.poll()})")
        time.sleep(args.settle_s)  # past its first epoch's graph capture
        running = True
        with experiments.device_tracer(device, args.source, 0.1) as tracer:
            for r in range(args.repeats):
                for beside in ((False, True) if r % 2 == 0 else (True, False)):
                    if beside != running:
                        os.kill(job.pid, signal.SIGCONT if beside else signal.SIGSTOP)
                        running = beside
                        time.sleep(args.switch_s)
                    for graph in modes:
                        stage = f"{'graph' if graph else 'eager'}-{'beside' if beside else 'alone'}-{r}"
                        cpu0 = cpu_seconds(job.pid)
                        out = measure_inference(model, images, tracer, batch_size=args.batch_size,
                                                min_seconds=args.min_seconds, stage=stage, graph=graph)
                        row = {"model": args.model, "mode": "graph" if graph else "eager",
                               "neighbour": "training" if beside else "idle", "repeat": r,
                               "batch_size": args.batch_size, **{k: out.get(k) for k in COLUMNS[5:-1]},
                               "busy_cpu_s": round(cpu_seconds(job.pid) - cpu0, 2)}
                        rows.append(row)
                        log(f"{stage:<18} {row['throughput_ips']:>9.0f} images/s  {row['latency_ms']:.3f} ms  "
                            f"{row['iec_wh']:.3e} W·h  GPU {row['mean_gpu_util_pct']:.0f}% busy  "
                            f"neighbour {row['busy_cpu_s']:.1f} CPU s")
        if job.poll() is not None:
            raise RuntimeError(f"the training job on {busy_device} ended early (exit code {job.returncode})")
    finally:
        if job.poll() is None:
            os.kill(job.pid, signal.SIGCONT)
            job.kill()
        job.wait()
    return pd.DataFrame(rows, columns=COLUMNS)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Per mode: the mean of each neighbour's windows, and beside / alone."""
    mean = table.groupby(["mode", "neighbour"])[["throughput_ips", "latency_ms", "iec_wh", "mean_gpu_util_pct",
                                                 "busy_cpu_s"]].mean()
    rows = []
    for mode in mean.index.get_level_values("mode").unique():
        idle, busy = mean.loc[(mode, "idle")], mean.loc[(mode, "training")]
        rows.append({"mode": mode, "windows": int((table["mode"] == mode).sum()),
                     "latency_ms_alone": idle["latency_ms"], "latency_ms_beside": busy["latency_ms"],
                     "iec_wh_alone": idle["iec_wh"], "iec_wh_beside": busy["iec_wh"],
                     "iec_beside_over_alone": busy["iec_wh"] / idle["iec_wh"],
                     "gpu_util_alone": idle["mean_gpu_util_pct"], "gpu_util_beside": busy["mean_gpu_util_pct"],
                     "neighbour_cpu_s_beside": busy["busy_cpu_s"]})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, help="folder for iec.csv, summary.csv and environment.json")
    ap.add_argument("--model", default="resnet20", help="the model whose IEC is measured")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--min-seconds", type=float, default=10.0, help="each window's length (the profiles' 10 s)")
    ap.add_argument("--repeats", type=int, default=2, help="windows per (mode, neighbour)")
    ap.add_argument("--gpu", type=int, default=1, help="the GPU the IEC windows run on")
    ap.add_argument("--busy-gpu", type=int, default=0, help="the GPU the training job runs on")
    ap.add_argument("--busy-model", default="vgg13", help="what the training job trains (session 13: vgg13)")
    ap.add_argument("--busy-batch-size", type=int, default=64)
    ap.add_argument("--settle-s", type=float, default=20.0, help="wait after the training job starts")
    ap.add_argument("--switch-s", type=float, default=3.0, help="wait after pausing or resuming it")
    ap.add_argument("--source", default="counter", help="the tracer's energy source (default: the NVML counter)")
    ap.add_argument("--smoke", action="store_true", help="the CPU, tiny windows: checks the script")
    ap.add_argument("--neighbour", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cuda:0", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.neighbour:
        train_forever(args.busy_model, args.device, args.busy_batch_size, args.smoke)
        return 0
    if args.out is None:
        ap.error("--out is required")
    if args.repeats < 1:
        print(f"error: --repeats={args.repeats}: must be >= 1", file=sys.stderr)
        return 2
    if args.smoke:
        args.min_seconds, args.settle_s, args.switch_s, args.source = 0.3, 1.0, 0.2, "auto"
    elif torch.cuda.device_count() < 2:
        print(f"error: {torch.cuda.device_count()} CUDA GPU(s) visible: this A/B needs two (or --smoke)",
              file=sys.stderr)
        return 2
    elif args.gpu == args.busy_gpu:
        print(f"error: --gpu={args.gpu} and --busy-gpu={args.busy_gpu}: give two different GPUs", file=sys.stderr)
        return 2
    table = measure(args)
    summary = summarise(table)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "iec.csv", table.to_csv(index=False))
    atomic_write_text(args.out / "iec.md", table.to_markdown(index=False) + "\n")
    atomic_write_text(args.out / "summary.csv", summary.to_csv(index=False))
    atomic_write_text(args.out / "summary.md", summary.to_markdown(index=False) + "\n")
    atomic_write_json(args.out / "environment.json", environment() | {
        "command": " ".join(["python", "scripts/iec_beside_training.py", *(argv or sys.argv[1:])])})
    print(summary.to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
