"""ProxylessNAS search at the paper's size (NNI's space, at most 4 blocks, width 16, batch 64) on random
images: NNI's steps, which also compute the gradients the next step throws away, against greenlib's,
which do not (docs/nas.md). Same seed, same steps; searches alternate, NNI's first.

    N=1024 python scripts/nas_unused_gradients.py          # the GPU if there is one, else the CPU
    N=12800 REPEATS=2 python scripts/nas_unused_gradients.py   # on a GPU; writes $OUT/nas_unused_gradients.json

Each search is one epoch of N images (N/2 for the architecture steps, N/2 for the weight steps), in
its own tracer; a row per search: seconds, milliseconds per step pair, energy (J) and mean GPU
utilisation of the search window, and its loss (the same in both, or the two differ)."""
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.getcwd())
import torch  # noqa: E402

from greenlib.env import environment  # noqa: E402
from greenlib.experiments import device_tracer  # noqa: E402
from greenlib.nas import spaces, strategies  # noqa: E402
from greenlib.nas.search import SearchConfig, search  # noqa: E402

search_mod = importlib.import_module("greenlib.nas.search")
ours = search_mod._without_gradients
n, repeats = int(os.environ.get("N", "1024")), int(os.environ.get("REPEATS", "1"))
device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
warnings.filterwarnings("ignore")
rows = []
for i, variant in enumerate(["nni", "greenlib"] * repeats):
    search_mod._without_gradients = ours if variant == "greenlib" else (lambda params: contextlib.nullcontext())
    torch.manual_seed(0)
    x, y = torch.randn(n, 3, 32, 32, device=device), torch.randint(0, 100, (n,), device=device)
    half = n // 2
    loader = [torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[a:b], y[a:b]), batch_size=64)
              for a, b in ((0, half), (half, n))]
    net = spaces.build_space("proxyless", spaces.SpaceSize(width=16, blocks=4), 100)
    with device_tracer(device, "auto", 0.1) as tracer:
        t = time.perf_counter()
        arch, s = search(net, strategies.get("proxyless").make(), loader[0], loader[1], device,
                         SearchConfig(epochs=1), tracer, tempfile.mkdtemp(), progress=False)
        wall = time.perf_counter() - t
    row = {"search": i, "gradients": variant, "search_s": round(s["elapsed_s"], 2),
           "ms_per_step_pair": round(1000 * s["elapsed_s"] / (half // 64), 1), "energy_j": round(s["energy_j"], 1),
           "gpu_util_pct": round(s.get("mean_gpu_util_pct", float("nan")), 1), "wall_s": round(wall, 1),
           "train_loss": s["epochs"][0]["train_loss"], "architecture": arch}
    rows.append(row)
    print(json.dumps({k: v for k, v in row.items() if k != "architecture"}), flush=True)
print("same loss and architecture:", all(r["train_loss"] == rows[0]["train_loss"] and r["architecture"] ==
                                          rows[0]["architecture"] for r in rows))
out = os.environ.get("OUT", "/tmp")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "nas_unused_gradients.json"), "w") as f:
    json.dump({"environment": environment(), "images": n, "rows": rows}, f, indent=1, default=str)
