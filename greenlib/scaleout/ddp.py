"""One baseline run trained on several GPUs with PyTorch DDP, launched by torchrun.

    torchrun --standalone --nproc_per_node 2 -m greenlib.scaleout.ddp --profile quick --model resnet20 \\
        [--seed 0] [-p epochs=3 -p train_size=10000] [--store DIR]

NCCL on CUDA (set ``NCCL_NVLS_ENABLE=0`` on shared hosts), gloo on the CPU (tests). Rank ``r`` trains on
``cuda:<LOCAL_RANK>``; every global batch of the notebook's loader (``batch_size`` images, the same
order and augmentation as a single-GPU run) is cut into ``world_size`` pieces, one per rank, so
the run takes the single-GPU run's optimizer steps on the same data. BatchNorm statistics are per
rank (plain ``BatchNorm``, as DDP leaves them).

**Measurement.** Every rank traces the GPU it trains on (``Tracer(gpus=(local_rank,))``, mapped to its
physical GPU through ``CUDA_VISIBLE_DEVICES``), with the same per-epoch windows as
:class:`greenlib.train.Trainer`. This scales to several nodes (no process reads another node's GPU),
creates no CUDA context on a GPU a process does not use, and each window's edges are synchronised
with the GPU measured. DDP's all-reduce keeps the ranks in step, so their epochs cover the same
work. After each epoch the ranks' window summaries are gathered; the run's energy is their sum over
*distinct devices* (a GPU two ranks share is counted once; ``cpu-rapl`` measures the whole package
and is counted once per host), its time the longest rank's.

**Storage.** Rank 0 alone writes the run: config ``{**baseline_config, kind: "baseline_ddp", model,
seed, hardware, world_size, ddp_backend}`` (a DDP run and a single-GPU run are different runs), the
``base_training`` stage with the total energy and a ``per_gpu`` list, every rank's samples (column
``rank``), ``inference`` (IEC on rank 0's GPU alone, as a single-GPU run measures it), and the
metrics of :func:`greenlib.experiments.train_and_measure` plus ``tec_j_per_gpu``, ``tec_wh_per_gpu``,
``gpu_names``, ``gpu_physical_indices``, ``hosts``. A checkpoint (rank 0 writes it, every rank reads
it) holds every rank's epoch windows, so a killed run resumes and still reports each GPU's energy of
the whole stage.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import socket
import sys
from typing import Any, Sequence

import torch
import torch.distributed as dist

from .. import config as _config
from .. import env as envmod
from .. import experiments
from ..config import ConfigError, Resolved
from ..data import load_dataset
from ..io import atomic_torch_save
from ..models import build_model, model_info
from ..paths import results_dir
from ..train import Trainer, evaluate, merge_windows, seed_everything
from ..results import LockingStore

KIND = "baseline_ddp"
STAGE = "base_training"

_SUM = ("energy_j", "energy_wh", "sampled_energy_j", "sampled_energy_corrected_j", "counter_energy_j",
        "estimated_energy_j", "net_energy_j", "n_samples", "n_missing_samples")
_MAX = ("elapsed_s", "max_mem_used_mib", "max_gap_s")
_MEAN = ("mean_gpu_util_pct", "mean_mem_util_pct", "requested_interval_s", "achieved_interval_s")


def dist_env() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` from torchrun's variables (``0, 1, 0`` without them)."""
    def num(name: str, default: int) -> int:
        value = os.environ.get(name, str(default))
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{name}={value!r} is not an int (set by torchrun)") from None

    return num("RANK", 0), num("WORLD_SIZE", 1), num("LOCAL_RANK", 0)


def ddp_config(cfg: Resolved, model_name: str, seed: int, hardware: str, world_size: int,
               backend: str) -> dict[str, Any]:
    """The run's config: a baseline's, with the kind, world size and communication backend."""
    return {**experiments.baseline_config(cfg), "kind": KIND, "model": model_name, "seed": seed,
            "hardware": hardware, "world_size": world_size, "ddp_backend": backend}


class RankShard:
    """Rank ``rank``'s piece of every global batch of ``loader`` (``tensor_split`` into ``world_size``).

    Every rank iterates the same global batches (same seed and epoch), so all take the same number
    of steps; a batch smaller than ``world_size`` images is skipped by every rank alike.
    """

    def __init__(self, loader, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not accepted; accepted: 0..{world_size - 1}")
        self.loader, self.rank, self.world_size = loader, rank, world_size

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    def __iter__(self):
        for x, y in self.loader:
            if y.shape[0] < self.world_size:
                continue
            yield x.tensor_split(self.world_size)[self.rank], y.tensor_split(self.world_size)[self.rank]


def device_key(summary: dict[str, Any], host: str, physical: Sequence[int], pid: int) -> str:
    """What a rank measured: a GPU of a host, the CPU package of a host (RAPL), or its own process."""
    if physical:
        return f"{host}:gpu{','.join(map(str, physical))}"
    if summary.get("energy_source") == "cpu-rapl":
        return f"{host}:cpu-package"
    return f"{host}:pid{pid}"


def combine_devices(parts: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    """One summary for the same window measured by several ranks (``parts``, rank order).

    Energies and sample counts add over distinct devices (``keys``; the first rank of a device
    counts), times and maxima take the largest, utilisation and intervals the mean over devices;
    ``mean_power_w`` is total energy / longest time. A device with NaN energy makes the total NaN.
    ``gpu_energy_j`` lists every rank's own figure.
    """
    if not parts or len(parts) != len(keys):
        raise ValueError(f"combine_devices: {len(parts)} summaries for {len(keys)} device keys")
    first: dict[str, dict[str, Any]] = {}
    for k, p in zip(keys, parts):
        first.setdefault(k, p)
    uniq = list(first.values())
    out: dict[str, Any] = {"name": parts[0].get("name"), "n_ranks": len(parts), "n_devices": len(uniq)}
    for fields, reduce in ((_SUM, sum), (_MAX, max), (_MEAN, lambda v: sum(v) / len(v))):
        for k in fields:
            vals = [p.get(k) for p in uniq if p.get(k) is not None]
            if vals:
                out[k] = float(reduce(vals))
    e, t = out.get("energy_j", math.nan), out.get("elapsed_s", math.nan)
    out["mean_power_w"] = e / t if t and t > 0 else math.nan
    out["energy_source"] = "+".join(dict.fromkeys(str(p.get("energy_source")) for p in uniq))
    out["estimated"] = any(bool(p.get("estimated")) for p in uniq)
    out["reason"] = "; ".join(dict.fromkeys(str(p["reason"]) for p in uniq if p.get("reason"))) or None
    out["gpu_energy_j"] = [p.get("energy_j", math.nan) for p in parts]
    out["device_keys"] = list(keys)
    return out


class DDPTrainer(Trainer):
    """:class:`Trainer` for one rank of a DDP run: after each epoch the ranks' windows are gathered;
    rank 0 writes the one checkpoint (with every rank's windows) that every rank resumes from."""

    def __init__(self, *args, rank: int, world_size: int, group=None, **kwargs):
        # eager whatever graph_capture asks (train.EAGER_STAGES); _save gathers every epoch's windows
        super().__init__(*args, eager="ddp", checkpoint_every_s=0.0, **kwargs)
        self.rank, self.world_size, self.group = rank, world_size, group
        self.rank_epochs: list[list[dict[str, Any]]] = []  # [epoch][rank] -> window, loss, acc, images

    def _save(self) -> None:
        h = self.history[-1]
        mine = {"window": h.window, "train_loss": h.train_loss, "train_acc": h.train_acc, "images": h.images}
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, mine, group=self.group)
        self.rank_epochs.append(gathered)
        if self.rank == 0 and self.checkpoint is not None:
            atomic_torch_save(self._state() | {"rank_epochs": self.rank_epochs, "world_size": self.world_size},
                              self.checkpoint)
        dist.barrier(group=self.group)  # no rank starts an epoch another could not resume from

    def _load(self) -> None:
        super()._load()
        if not self.history:
            return
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        if state.get("world_size") != self.world_size:
            raise RuntimeError(f"checkpoint {self.checkpoint} is from world_size={state.get('world_size')}, "
                               f"this run has {self.world_size}; remove it")
        self.rank_epochs = state["rank_epochs"][:len(self.history)]
        for h, ranks in zip(self.history, self.rank_epochs):  # this rank's own figures, not rank 0's
            mine = ranks[self.rank]
            h.window, h.train_loss, h.train_acc, h.images = (mine["window"], mine["train_loss"],
                                                             mine["train_acc"], mine["images"])

    def combined_stage(self, stage: str, keys: Sequence[str]) -> dict[str, Any]:
        """The stage's summary over every rank (see :func:`combine_devices`), with its epochs."""
        per_rank = [merge_windows(stage, [ep[r]["window"] for ep in self.rank_epochs])
                    for r in range(self.world_size)]
        out = combine_devices(per_rank, keys)
        out["name"] = stage
        epochs = []
        for i, (h, ranks) in enumerate(zip(self.history, self.rank_epochs)):
            images = sum(r["images"] for r in ranks)
            w = combine_devices([r["window"] for r in ranks], keys)
            epochs.append({"epoch": h.epoch, "lr": h.lr, "images": images,
                           "train_loss": sum(r["train_loss"] * r["images"] for r in ranks) / max(images, 1),
                           "train_acc": sum(r["train_acc"] * r["images"] for r in ranks) / max(images, 1),
                           **{f"window.{k}": v for k, v in w.items()}})
        out["epochs"] = epochs
        return out | {"graph_capture": self.cfg.graph_capture, "graph_captured": False, "graph_reason": "ddp",
                      "eval_every": self.cfg.eval_every}


def check_ddp(cfg: Resolved, world_size: int) -> None:
    """Raise ValueError (one line) for parameters a DDP run cannot take."""
    if world_size < 1:
        raise ValueError(f"WORLD_SIZE={world_size} is not accepted; accepted: an int >= 1")
    if cfg.batch_size % world_size:
        raise ValueError(f"batch_size={cfg.batch_size} is not divisible by world_size={world_size}; the global batch "
                         "is split evenly across ranks")


def _device(cfg: Resolved, local_rank: int) -> torch.device:
    device = experiments.resolve_device(cfg.device)
    if device.type != "cuda":
        return device
    n = torch.cuda.device_count()
    if local_rank >= n:
        raise ValueError(f"LOCAL_RANK={local_rank} but this process sees {n} GPU(s) (CUDA_VISIBLE_DEVICES="
                         f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}); start at most {n} processes per node")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def run_ddp_baseline(cfg: Resolved, model_name: str, seed: int, store_root: str | None = None,
                     progress: bool = True) -> dict[str, Any] | None:
    """Train ``model_name`` as a baseline on every rank of this torchrun job; rank 0 stores the run.

    Initialises the process group from torchrun's variables when it is not (NCCL on CUDA, gloo on
    the CPU). Returns the stored result on rank 0 (a cache hit when complete), None elsewhere.
    Raises ValueError (before any rank trains) for a ``batch_size`` not divisible by the world size,
    or a LOCAL_RANK past the GPUs visible. The step runs eagerly (``graph_capture`` is recorded in the
    config, ``graph_captured: false`` in the stage).
    """
    rank, world_size, local_rank = dist_env()
    check_ddp(cfg, world_size)
    device = _device(cfg, local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    try:
        # object collectives and barriers on the CPU: waiting ranks do not spin on their GPUs
        group = dist.new_group(backend="gloo") if dist.get_backend() == "nccl" else None
        return _run(cfg, model_name, seed, store_root, progress, rank, world_size, local_rank, device,
                    dist.get_backend(), group)
    finally:
        if own_group:
            dist.destroy_process_group()


def _run(cfg, model_name, seed, store_root, progress, rank, world_size, local_rank, device, backend, group):
    # the dataset cache is written once per node, then read by the other ranks
    if local_rank != 0:
        dist.barrier(group=group)
    ds = load_dataset(cfg.dataset, seed=experiments.DATASET_SEED, data_root=cfg.get("data_root") or None).subset(
        cfg.train_size, cfg.test_size)
    if local_rank == 0:
        dist.barrier(group=group)
    host = socket.gethostname()
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, (experiments.hardware_name(device), host), group=group)
    names, hosts = [g[0] for g in gathered], [g[1] for g in gathered]
    hardware = names[0] if len(set(names)) == 1 else "mixed: " + " + ".join(dict.fromkeys(names))

    store = LockingStore(store_root or results_dir(cfg.profile)) if rank == 0 else None
    run = None
    header: list[Any] = [None]
    if rank == 0:
        environment = envmod.environment() | {
            "dataset": ds.name, "dataset_description": ds.description, "device": str(device),
            "launcher": {"torchrun": True, "world_size": world_size, "ddp_backend": backend, "hosts": sorted(set(
                hosts)), "master_addr": os.environ.get("MASTER_ADDR"),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}}
        run = store.open(ddp_config(cfg, model_name, seed, hardware, world_size, backend), environment=environment,
                         force=cfg.force)
        header = [{"folder": str(run.folder), "complete": run.complete}]
    dist.broadcast_object_list(header, src=0, group=group)
    if header[0]["complete"]:
        return run.result if rank == 0 else None
    try:
        return _train(cfg, model_name, seed, ds, store, run, header[0]["folder"], rank, world_size, local_rank,
                      device, group, host, names, progress)
    finally:
        if store is not None:
            store.release_all()


def _train(cfg, model_name, seed, ds, store, run, folder, rank, world_size, local_rank, device, group, host, names,
           progress):
    from pathlib import Path

    from torch.nn.parallel import DistributedDataParallel as DDP

    ctx = experiments.Context(cfg, device, ds, store, {})
    checkpoint = Path(folder) / "checkpoint.pt"
    train_loader, test_loader = ctx.loaders(seed)
    seed_everything(seed)
    model = build_model(model_name, num_classes=ds.num_classes).to(device)
    ddp = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
    with ctx.tracer() as tracer:
        # no per-epoch test pass under DDP: the stage record says eval_every=0
        train_cfg = dataclasses.replace(experiments.baseline_train_config(cfg), eval_every=0)
        trainer = DDPTrainer(ddp, RankShard(train_loader, rank, world_size), train_cfg,
                             device, checkpoint=checkpoint, rank=rank, world_size=world_size, group=group)
        trainer.fit(tracer, STAGE, progress=progress and rank == 0)
        physical = [p for p in tracer.physical_gpus if p >= 0]
        mine = {"host": host, "pid": os.getpid(), "physical": physical, "samples": experiments.stage_samples(
            tracer, {}), "summary": merge_windows(STAGE, [ep[rank]["window"] for ep in trainer.rank_epochs])}
        every: list[Any] = [None] * world_size
        dist.all_gather_object(every, mine, group=group)
        result = None
        if rank == 0:
            keys = [device_key(e["summary"], e["host"], e["physical"], e["pid"]) for e in every]
            stage = trainer.combined_stage(STAGE, keys)
            stage["per_gpu"] = [{"rank": r, "host": e["host"], "physical_index": e["physical"][0] if e["physical"]
                                 else None, "gpu_name": names[r], "energy_j": e["summary"]["energy_j"],
                                 "energy_wh": e["summary"]["energy_wh"], "elapsed_s": e["summary"]["elapsed_s"],
                                 "mean_power_w": e["summary"]["mean_power_w"],
                                 "energy_source": e["summary"]["energy_source"]} for r, e in enumerate(every)]
            run.save_stage(STAGE, stage, _samples(every))
            acc = evaluate(model, test_loader, device)
            iec = experiments.measure_iec(ctx, run, model, tracer, test_loader)
            result = _finish(run, stage, acc, iec, model, model_name, ds, every, names)
            checkpoint.unlink(missing_ok=True)
        dist.barrier(group=group)  # the others wait (on the CPU) while rank 0 measures accuracy and IEC
    return result


def _samples(every: Sequence[dict[str, Any]]):
    import pandas as pd

    frames = [e["samples"].assign(rank=r) for r, e in enumerate(every) if e["samples"] is not None]
    return pd.concat(frames, ignore_index=True) if frames else None


def _finish(run, stage, acc, iec, model, model_name, ds, every, names) -> dict[str, Any]:
    atomic_torch_save(model.state_dict(), run.folder / "model.pt")
    info = model_info(model_name, num_classes=ds.num_classes)
    last = stage["epochs"][-1]
    per_gpu_j = [e["summary"]["energy_j"] for e in every]
    return run.finish({
        **experiments.acc_metrics(acc),
        "tec_wh": stage["energy_wh"], "tec_j": stage["energy_j"], "train_elapsed_s": stage["elapsed_s"],
        **experiments.iec_metrics(iec), "energy_measured_by": stage["energy_source"],
        "estimated": bool(stage.get("estimated") or iec.get("estimated")),
        "final_train_loss": last["train_loss"], "final_train_acc": last["train_acc"],
        "params": info["params"], "flops_per_image": info["flops_per_image"],
        "dataset_description": ds.description,
        "tec_j_per_gpu": per_gpu_j, "tec_wh_per_gpu": [j / 3600 for j in per_gpu_j], "gpu_names": list(names),
        "gpu_physical_indices": [e["physical"][0] if e["physical"] else None for e in every],
        "hosts": [e["host"] for e in every], "n_devices_measured": stage["n_devices"]})


# -- command line ------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    from ..pipeline import PipelineError, parse_overrides

    p = argparse.ArgumentParser(prog="torchrun --nproc_per_node N -m greenlib.scaleout.ddp",
                                description="One baseline run trained with DDP on every process of a torchrun job.")
    p.add_argument("--profile", default="quick", help="smoke, quick or paper (default quick)")
    p.add_argument("--model", required=True, help="a zoo model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
                   help="a baselines parameter (a Python literal), repeatable")
    p.add_argument("--store", default=None, help="results store root (default data/results/<profile>)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        rank, world_size, _ = dist_env()
        overrides = parse_overrides(args.param)
        for k in ("models", "seeds"):
            if k in overrides:
                raise ConfigError(f"-p {k}=... is not accepted here; give --model and --seed")
        cfg = _config.resolve("baselines", profile=args.profile, **overrides, models=[args.model], seeds=[args.seed])
        check_ddp(cfg, world_size)
    except (ConfigError, PipelineError, ValueError) as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr)
        return 2
    res = run_ddp_baseline(cfg, args.model, args.seed, store_root=args.store, progress=not args.no_progress)
    if rank == 0 and res is not None:
        m = res["metrics"]
        print(json.dumps({"run_id": res["run_id"], "world_size": res["config"]["world_size"],
                          "hardware": res["config"]["hardware"], "tec_j": m["tec_j"],
                          "tec_j_per_gpu": m["tec_j_per_gpu"], "train_elapsed_s": m["train_elapsed_s"],
                          "acc": m["acc"], "energy_measured_by": m["energy_measured_by"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
