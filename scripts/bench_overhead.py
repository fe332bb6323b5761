"""The harness's overhead: eager against whole-step CUDA graphs, one model per family (a GPU run).

    python scripts/bench_overhead.py --out DIR [--profiles quick,paper] [--epochs 2] [--train-size 25000]
        [--families baseline,distillation,pruning,nas] [--smoke]

For every (family, model, batch size) the profiles train at (:func:`greenlib.overhead.settings`)
it trains the model from scratch on the offline dataset for ``--epochs`` epochs, eagerly and then
graphed, and reports the LAST epoch (the first pays for capture and cuDNN autotuning): seconds,
energy (J, the tracer's best source), mean power and mean GPU utilisation. Writes ``overhead.csv``
and ``meta.json`` (GPU, driver, torch, date, arguments) to DIR; commit DIR under
``data/measurements/overhead/<gpu>/`` for notebook 13. ``--smoke`` runs tiny stand-ins on the CPU
(both steps eager there, recorded as such) to check the script itself.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from greenlib import env, io, overhead  # noqa: E402
from greenlib.data import load_dataset, make_loaders  # noqa: E402
from greenlib.tracer import Tracer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--profiles", default="quick,paper", help="comma-separated profiles whose batch sizes are measured")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-size", type=int, default=25_000, help="training images per epoch")
    ap.add_argument("--families", default=",".join(overhead.FAMILIES), help="comma-separated families to measure")
    ap.add_argument("--smoke", action="store_true", help="tiny CPU run that only checks the script")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    profiles = tuple(p.strip() for p in args.profiles.split(",") if p.strip())
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    settings = overhead.settings(profiles, families)
    ds = load_dataset("synthetic").subset(64 if args.smoke else args.train_size, 64)
    if args.smoke:
        settings = [overhead.Setting(s.family, s.model, 16, s.profiles) for s in settings
                    if (s.family, s.model) != ("baseline", "resnet18")]
        settings = list({(s.family, s.model): s for s in settings}.values())
    gpus = (0,) if cuda else None

    def tracer():
        return Tracer(gpus=gpus, source="auto" if cuda else "cpu", interval_s=0.1)

    rows = []
    for s in settings:
        train_loader, _ = make_loaders(ds, "gpu", s.batch_size, device, seed=0)
        for graph in (False, True):
            rows.append(overhead.measure(s, graph, train_loader, ds.num_classes, device, args.epochs, tracer,
                                         smoke=args.smoke))
            print(rows[-1], flush=True)
            if cuda:
                torch.cuda.empty_cache()
    df = pd.DataFrame(rows)
    meta = env.environment() | {"script": "scripts/bench_overhead.py", "args": vars(args) | {"out": str(args.out)},
                                "dataset": ds.description, "measured_epoch": overhead.MEASURED_EPOCH}
    args.out.mkdir(parents=True, exist_ok=True)
    io.atomic_write_text(args.out / "overhead.csv", df.to_csv(index=False))
    io.atomic_write_json(args.out / "meta.json", meta)
    print(df.to_string(index=False))
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(f"done in {time.perf_counter() - t0:.0f} s")
    sys.exit(rc)
