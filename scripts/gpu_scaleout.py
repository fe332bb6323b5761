"""Scale-out on GPUs: one DDP run with per-GPU energy, and a 4-run grid on 2 GPUs against 1 GPU.

    python scripts/gpu_scaleout.py --out DIR [--work DIR] [--epochs 3] [--train-size 10000] [--smoke]

With two or more GPUs visible (the first two are used):

1. ``ddp``: one baseline run of resnet20 (seed 0) with DDP on 2 GPUs (torchrun, NCCL,
   ``NCCL_NVLS_ENABLE=0``): per-GPU and total energy;
2. ``grid-2gpu``: the grid resnet20 + wrn-16-2 x seeds 0, 1 (4 runs) through submitit's local
   executor on 2 GPUs, one run per GPU at a time;
3. ``grid-1gpu``: the same grid on 1 GPU, into another store (else every run would be a cache hit);
4. ``grid-again``: step 2 again: every run is skipped (the resume path, on a GPU);
5. ``eager-1gpu``: the DDP run's config on one GPU with ``graph_capture=False``, the step DDP takes
   (DDP runs eagerly): set beside the DDP run, it separates what two GPUs cost from what the eager
   step costs (the grid's single-GPU runs are graphed).

With one GPU: ``ddp`` with world size 1 (torchrun, NCCL) and ``grid-1gpu``. Every run uses the
``quick`` profile with ``--epochs`` epochs of ``--train-size`` images, so the whole script should
take about 2 minutes on an H100 (about 1.5 with one GPU; estimated, not yet run on a GPU). The
single-GPU run of the DDP run's config is the grid's ``resnet20 seed=0`` cell: the summary compares
the two.

Writes three files to ``--out``: ``summary.md`` (the tables printed at the end), ``summary.json``
(every step and run) and ``runs.tar.gz`` (the results stores without weights, the grids'
``report.json`` and job logs, the torchrun log). The work itself goes to ``--work`` (default
``<out>/work``): ``data/`` (``GREENLIB_DATA``: the dataset cache, one results store per step under
``data/stores/<step>/``) and ``logs/<step>/``. ``--smoke`` runs the same steps on the CPU (gloo, CPU
slots, profile smoke, tiny data) to check the script itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = ["resnet20", "wrn-16-2"]
SEEDS = [0, 1]
DDP_MODEL, DDP_SEED = "resnet20", 0


def _params(args) -> dict[str, Any]:
    # the offline stand-in: it measures the scale-out machinery, whose cost per image is CIFAR-100's,
    # and needs no dataset archive on the GPU host (every table says "synthetic")
    if args.smoke:
        return {"dataset": "synthetic", "train_size": 256, "test_size": 64, "batch_size": 32, "iec_batch_size": 16,
                "iec_min_seconds": 0.05, "epochs": 2, "device": "cpu"}
    return {"dataset": "synthetic", "train_size": args.train_size, "test_size": 2000, "iec_min_seconds": 1.0,
            "epochs": args.epochs}


def _result(store: Path, run_id: str) -> dict[str, Any]:
    from greenlib.results import ResultsStore

    return ResultsStore(store).get(run_id).result


def _steady_epoch(stage: dict[str, Any]) -> tuple[float, float]:
    """Mean energy (J) and time (s) of the epochs after the first (which pays for autotuning)."""
    eps = stage["epochs"][1:] or stage["epochs"]
    return (sum(e["window.energy_j"] for e in eps) / len(eps), sum(e["window.elapsed_s"] for e in eps) / len(eps))


def run_ddp(args, out: Path, world_size: int, profile: str, params: dict[str, Any]) -> dict[str, Any]:
    store = out / "data" / "stores" / "ddp"
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world_size),
            "-m", "greenlib.scaleout.ddp", "--profile", profile, "--model", DDP_MODEL, "--seed", str(DDP_SEED),
            *[a for k, v in params.items() for a in ("-p", f"{k}={v!r}")], "--store", str(store), "--no-progress"]
    t0 = time.time()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=400)
    wall = time.time() - t0
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "logs" / "ddp.log").write_text(done.stdout + "\n--- stderr ---\n" + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun exited {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    line = json.loads(done.stdout.strip().splitlines()[-1])
    res = _result(store, line["run_id"])
    st = res["stages"]["base_training"]
    e_ep, t_ep = _steady_epoch(st)
    return {"run_id": res["run_id"], "world_size": res["config"]["world_size"], "backend": res["config"]["ddp_backend"],
            "hardware": res["config"]["hardware"], "wall_s": wall, "train_elapsed_s": res["metrics"]["train_elapsed_s"],
            "tec_j": res["metrics"]["tec_j"], "tec_j_per_gpu": res["metrics"]["tec_j_per_gpu"],
            "gpu_physical_indices": res["metrics"]["gpu_physical_indices"], "epoch_j": e_ep, "epoch_s": t_ep,
            "acc": res["metrics"]["acc"], "energy_measured_by": res["metrics"]["energy_measured_by"],
            "per_gpu": st["per_gpu"]}


def run_grid_step(name: str, out: Path, profile: str, params: dict[str, Any], slots: dict[str, Any],
                  store_name: str | None = None, models: list[str] = MODELS, seeds: list[int] = SEEDS
                  ) -> dict[str, Any]:
    from greenlib.scaleout import grid

    store = out / "data" / "stores" / (store_name or name)
    entries = [("baselines", {**params, "models": models, "seeds": seeds})]
    report = grid.run_grid(entries, profile, executor="local", store_root=store, log_dir=out / "logs" / name,
                           poll_s=0.5, log=lambda s: print(f"  [{name}] {s}", flush=True), **slots)
    runs, mismatched = [], []
    for o in report.outcomes:
        if not o.run_id:
            continue
        res = _result(store, o.run_id)
        m = res["metrics"]
        e_ep, t_ep = _steady_epoch(res["stages"]["base_training"])
        runs.append({"label": o.cell.label, "status": o.status, "slot": o.slot, "run_id": o.run_id,
                     "tec_j": m["tec_j"], "iec_stage_j": res["stages"]["inference"]["energy_j"],
                     "train_elapsed_s": m["train_elapsed_s"], "epoch_j": e_ep, "epoch_s": t_ep,
                     "job_s": o.elapsed_s, "acc": m["acc"], "hardware": res["config"]["hardware"]})
        slot_hw = next((s.hardware for s in grid.local_slots(**slots) if s.name == o.slot), None) if o.slot else None
        if slot_hw and slot_hw != res["config"]["hardware"]:
            mismatched.append(f"{o.slot}: NVML {slot_hw!r} vs torch {res['config']['hardware']!r}")
    return {"wall_s": report.wall_s, "counts": report.counts(), "runs": runs,
            "failed": [f"{o.cell.describe()}: {o.error}" for o in report.failed],
            "energy_j": sum(r["tec_j"] + r["iec_stage_j"] for r in runs if r["status"] != "skipped"),
            "train_energy_j": sum(r["tec_j"] for r in runs if r["status"] != "skipped"),
            "nvml_vs_torch_names": mismatched}


def archive(work: Path, path: Path) -> None:
    """The stores (without weights and checkpoints) and the logs, as one tar.gz."""
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for sub in (work / "data" / "stores", work / "logs"):
            for f in sorted(sub.rglob("*")) if sub.is_dir() else []:
                if f.is_file() and f.suffix not in (".pt", ".pkl") and ".locks" not in f.parts:
                    tar.add(f, arcname=str(f.relative_to(work)))


def summary_markdown(s: dict[str, Any]) -> str:
    lines = [f"# Scale-out measurement ({s['device']}, {s['date_utc']})", "",
             f"Profile {s['profile']}, {s['params']}; grid: {MODELS} x seeds {SEEDS}.", ""]
    ddp = s["steps"].get("ddp", {})
    if "tec_j" in ddp:
        per_gpu = ", ".join(f"{j:.0f}" for j in ddp["tec_j_per_gpu"])
        lines += ["| run | world size | train s | energy J (total) | per GPU J | steady epoch J | steady epoch s "
                  "| acc |",
                  "|---|---|---|---|---|---|---|---|",
                  f"| DDP {DDP_MODEL} seed {DDP_SEED} | {ddp['world_size']} | {ddp['train_elapsed_s']:.1f} | "
                  f"{ddp['tec_j']:.0f} | {per_gpu} | {ddp['epoch_j']:.0f} | {ddp['epoch_s']:.2f} | {ddp['acc']:.3f} |"]
        for key, what in (("single_gpu_same_config", "1 GPU, same config (grid)"),
                          ("single_gpu_eager", "1 GPU, same config, eager")):
            single = s.get(key)
            if single:
                lines.append(f"| {what} | 1 | {single['train_elapsed_s']:.1f} | "
                             f"{single['tec_j']:.0f} | {single['tec_j']:.0f} | {single['epoch_j']:.0f} | "
                             f"{single['epoch_s']:.2f} | {single['acc']:.3f} |")
        lines.append("")
    grids = [(k, v) for k, v in s["steps"].items() if k.startswith("grid") and "wall_s" in v]
    if grids:
        lines += ["| grid | runs | wall s | energy J (train + IEC) | train energy J | statuses |",
                  "|---|---|---|---|---|---|"]
        for k, v in grids:
            counts = ", ".join(f"{a} {b}" for a, b in sorted(v["counts"].items()))
            lines.append(f"| {k} | {len(v['runs'])} | {v['wall_s']:.0f} | {v['energy_j']:.0f} | "
                         f"{v['train_energy_j']:.0f} | {counts} |")
        lines.append("")
    for k, v in s["steps"].items():
        if "error" in v:
            lines.append(f"- step {k} FAILED: {v['error']}")
        for f in v.get("failed", []):
            lines.append(f"- step {k}: failed cell {f}")
        for m in v.get("nvml_vs_torch_names", []):
            lines.append(f"- step {k}: GPU names differ ({m}): the grid's skip check will not match; jobs are cache "
                         "hits instead")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for summary.md, summary.json, runs.tar.gz")
    ap.add_argument("--work", type=Path, default=None, help="folder for stores, dataset cache, logs (<out>/work)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    ap.add_argument("--train-size", type=int, default=10_000, help="training images per epoch (default 10000)")
    ap.add_argument("--smoke", action="store_true", help="the same steps on the CPU, tiny, to check the script")
    args = ap.parse_args()
    dest = args.out.resolve()
    out = (args.work or dest / "work").resolve()  # the work folder; only the three result files go to dest
    out.mkdir(parents=True, exist_ok=True)
    dest.mkdir(parents=True, exist_ok=True)
    os.environ["GREENLIB_DATA"] = str(out / "data")
    os.environ["NCCL_NVLS_ENABLE"] = "0"  # no NVLink multicast on shared hosts
    os.environ["PYTHONPATH"] = str(REPO) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH")
                                            else "")

    from datetime import datetime, timezone

    from greenlib.data import load_dataset
    from greenlib.io import atomic_write_json, atomic_write_text
    from greenlib.tracer import visible_gpus

    gpus = [] if args.smoke else visible_gpus()
    if not args.smoke and not gpus:
        print("error: no GPU visible through NVML; use --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    profile = "smoke" if args.smoke else "quick"
    params = _params(args)
    n = 2 if args.smoke else min(len(gpus), 2)
    two = {"gpus": 0, "workers": 2} if args.smoke else {"gpus": 2}
    one = {"gpus": 0, "workers": 1} if args.smoke else {"gpus": 1}
    summary: dict[str, Any] = {"device": "CPU (smoke)" if args.smoke else f"{len(gpus)}x {gpus[0]['name']}",
                               "gpus": gpus, "profile": profile, "params": params, "steps": {},
                               "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                               "nccl_nvls_enable": os.environ["NCCL_NVLS_ENABLE"]}
    # this process only drives: it never initialises CUDA, so every GPU is left to the runs
    t0 = time.time()
    load_dataset("synthetic", seed=0)  # generated once here (CPU), not by four jobs at once
    print(f"dataset ready in {time.time() - t0:.0f} s; {summary['device']}", flush=True)

    steps = [("ddp", lambda: run_ddp(args, out, n, profile, params))]
    if n >= 2:
        steps += [("grid-2gpu", lambda: run_grid_step("grid-2gpu", out, profile, params, two)),
                  ("grid-1gpu", lambda: run_grid_step("grid-1gpu", out, profile, params, one)),
                  ("grid-again", lambda: run_grid_step("grid-again", out, profile, params, two, "grid-2gpu"))]
    else:
        steps += [("grid-1gpu", lambda: run_grid_step("grid-1gpu", out, profile, params, one))]
    steps += [("eager-1gpu", lambda: run_grid_step("eager-1gpu", out, profile, {**params, "graph_capture": False},
                                                    one, models=[DDP_MODEL], seeds=[DDP_SEED]))]
    for name, fn in steps:
        t = time.time()
        print(f"== {name}", flush=True)
        try:
            summary["steps"][name] = fn()
        except Exception as e:  # a failed step is reported in the summary; the others still run
            traceback.print_exc()
            summary["steps"][name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"== {name} took {time.time() - t:.0f} s", flush=True)
    g1 = summary["steps"].get("grid-1gpu", {})
    summary["single_gpu_same_config"] = next(
        (r for r in g1.get("runs", []) if r["label"] == f"baseline {DDP_MODEL} seed={DDP_SEED}"), None)
    summary["single_gpu_eager"] = next(iter(summary["steps"].get("eager-1gpu", {}).get("runs", [])), None)
    summary["total_s"] = time.time() - t0
    atomic_write_json(dest / "summary.json", summary)
    md = summary_markdown(summary)
    atomic_write_text(dest / "summary.md", md)
    archive(out, dest / "runs.tar.gz")
    print(md)
    bad = [k for k, v in summary["steps"].items() if "error" in v or v.get("failed")]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
