"""python scripts/bench_window_waits.py  (OUT=dir: where window_waits.json goes; a CUDA GPU)

GPU utilisation of graphed nni-vgg16 epochs with per-epoch evaluation: closing windows waiting
for a sample (the old behaviour) against not waiting (the counter gives the energy). Random data on
the GPU (50,000 train / 10,000 test images, batch 128): the loader is not what is measured."""
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, as the other scripts do
from greenlib.models import build_model
from greenlib.tracer import Tracer
from greenlib.train import Trainer, TrainConfig

torch.manual_seed(0)
x = torch.randn(50_000, 3, 32, 32, device="cuda"); y = torch.randint(0, 100, (50_000,), device="cuda")
xt = torch.randn(10_000, 3, 32, 32, device="cuda"); yt = torch.randint(0, 100, (10_000,), device="cuda")

class Loader:
    def __init__(self, x, y, bs, shuffle):
        self.x, self.y, self.bs, self.shuffle, self.epoch = x, y, bs, shuffle, 0
    def set_epoch(self, e): self.epoch = e
    def __iter__(self):
        idx = torch.randperm(len(self.x), device="cuda") if self.shuffle else torch.arange(len(self.x), device="cuda")
        for i in range(0, len(self.x), self.bs):
            j = idx[i:i + self.bs]
            yield self.x[j], self.y[j]

out = {}
for label, wait in (("wait", True), ("no-wait", None)):
    model = build_model("nni-vgg16", num_classes=100).cuda()
    tr_ = Trainer(model, Loader(x, y, 128, True), TrainConfig(epochs=8, lr=0.05, graph_capture=True, eval_every=1),
                  "cuda", eval_loader=Loader(xt, yt, 128, False), wait_for_samples=wait)
    with Tracer(gpus=(0,), interval_s=0.1) as tr:
        s = tr_.fit(tr, "base_training", progress=False)
    e = s["epochs"]
    gaps = [b["window.start_s"] - a["window.end_s"] for a, b in zip(e, e[1:])]
    out[label] = {"stage_util_pct": s["mean_gpu_util_pct"], "epoch_util_pct": [round(r["window.mean_gpu_util_pct"], 1) for r in e],
                  "gap_s": [round(g, 3) for g in gaps], "epoch_s": [round(r["window.elapsed_s"], 3) for r in e],
                  "eval_s": [round(r["eval_elapsed_s"], 3) for r in e], "energy_j": s["energy_j"],
                  "source": s["energy_source"], "has_counter": tr.has_counter}
    print(label, json.dumps(out[label]))
out["gpu"] = torch.cuda.get_device_name(0); out["torch"] = torch.__version__
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "window_waits.json"), "w"), indent=1)
