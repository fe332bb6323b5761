"""ProxylessNAS search at the paper's size (NNI's space, 4 blocks x 16 channels, batch 64) on the stand-in:
NNI's scalar-loop architecture gradient against greenlib's vectorised one, same seed, same steps.

    N=12800 python scripts/nas_arch_gradient.py     # on a GPU; writes $OUT/nasprof.json

Four searches of one epoch (N images: half architecture steps, half weight steps), alternating the two
backward functions, each into a fresh store; results in data/measurements/nas-arch-gradient/."""
import json, os, sys, time
sys.path.insert(0, os.getcwd())
import torch
from greenlib import config, experiments, nas
from greenlib.results import ResultsStore
from greenlib.nas.backend import import_nni, _proxyless_backward
import_nni()
from nni.nas.oneshot.pytorch.supermodule.proxyless import _ProxylessFunction
n = int(os.environ.get("N", "5120"))
cfg = config.resolve("nas", profile="paper", dataset="synthetic", train_size=n, test_size=512, search_epochs=1,
                     proxyless_retrain_epochs=1, search_classes=[100], seeds=[0], iec_min_seconds=0.5)
ctx = experiments.prepare(cfg)
out = []
for i, (name, bw) in enumerate([("nni", _ProxylessFunction.nni_backward), ("vectorised", _proxyless_backward),
                                ("vectorised", _proxyless_backward), ("nni", _ProxylessFunction.nni_backward)]):
    _ProxylessFunction.backward = staticmethod(bw)
    ctx.store = ResultsStore(f"/tmp/nasprof/{i}")
    t = time.time()
    res = nas.run_nas(ctx, "proxyless", 0, search_classes=100, progress=False)
    s = res["stages"]["search"]
    steps = n // 2 // 64
    row = {"run": i, "arch_grad": name, "search_s": round(s["elapsed_s"], 2), "ms_per_step_pair": round(1000 * s["elapsed_s"] / steps, 1),
           "energy_j": round(s["energy_j"], 1), "util_pct": round(s["mean_gpu_util_pct"], 1), "power_w": round(s["mean_power_w"], 1),
           "arch": res["metrics"]["architecture"], "wall_s": round(time.time() - t, 1)}
    out.append(row); print(json.dumps({k: v for k, v in row.items() if k != "arch"}), flush=True)
print("same architecture exported:", all(r["arch"] == out[0]["arch"] for r in out))
os.makedirs(os.environ.get("OUT", "/tmp"), exist_ok=True)
json.dump({"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__, "images": n, "rows": out},
          open(os.path.join(os.environ.get("OUT", "/tmp"), "nasprof.json"), "w"), indent=1)
