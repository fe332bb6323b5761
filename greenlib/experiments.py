"""One function per kind of run, each a cache hit when the results store already holds it.

A run's config (what its id hashes) holds everything that changes its numbers, the hardware
included, so the same config on an H100 and on an H200 are two runs (notebook 12 compares them).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any, Mapping

import torch

from . import config as _config
from . import env as envmod
from .config import Resolved
from .data import Dataset, auto_dataset, load_dataset, make_loaders
from .inference import measure_inference
from .io import atomic_torch_save
from .models import build_model, model_info
from .paths import results_dir
from .results import REGENERATE_CHECKPOINT, LockingStore, ResultsStore, Run
from .tracer import SOURCES, Tracer
from .train import Trainer, TrainConfig, evaluate, seed_everything

DATASET_SEED = 0  # the offline dataset is generated once, from this seed, for every run


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``. ``cuda`` without a GPU raises."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA GPU is visible; use device='auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r}; accepted: auto, cpu, cuda")
    return torch.device(device)


GPU_SOURCES = tuple(s for s in SOURCES if s not in ("auto", "cpu"))  # counter, nvml, smi


def check_energy_source(device: torch.device, source: str) -> None:
    """A GPU source cannot measure work that runs on the CPU: it would record an idle GPU."""
    if device.type != "cuda" and source in GPU_SOURCES:
        raise ValueError(f"energy_source={source!r} measures a GPU, but the work runs on device={device.type!r}; "
                         "use energy_source='auto' or 'cpu' there")


def device_tracer(device: torch.device, source: str, interval_s: float) -> Tracer:
    """A tracer for work on ``device``: that GPU, or the CPU (``auto`` means ``cpu`` for CPU work)."""
    check_energy_source(device, source)
    if device.type == "cuda":
        return Tracer(gpus=(device.index or 0,), source=source, interval_s=interval_s)
    return Tracer(gpus=None, source="cpu", interval_s=interval_s)


def hardware_name(device: torch.device) -> str:
    """What the run's energy was measured on: the GPU model, or ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


@dataclass
class Context:
    """What every run of one notebook shares: device, data, loaders, store, environment."""

    cfg: Resolved
    device: torch.device
    dataset: Dataset
    store: ResultsStore
    environment: dict[str, Any]

    def loaders(self, seed: int, batch_size: int | None = None):
        """(train, test) loaders; the training batch is ``batch_size`` (None: the notebook's), the test
        batch always the notebook's (accuracy and the IEC images do not depend on the training batch)."""
        return make_loaders(self.dataset, self.cfg.loader, batch_size or self.cfg.batch_size, self.device, seed=seed,
                            test_batch_size=self.cfg.batch_size)

    def tracer(self) -> Tracer:
        """The tracer of the device the work runs on: its GPU, or the CPU even where GPUs are visible."""
        return device_tracer(self.device, self.cfg.energy_source, self.cfg.sampling_interval_s)

    def base_config(self) -> dict[str, Any]:
        """Config entries that change every run's numbers, the hardware included."""
        return shared_config(self.cfg) | {"hardware": hardware_name(self.device)}


def shared_config(cfg: Resolved) -> dict[str, Any]:
    """The data, measurement and hardware-independent entries of every run's config."""
    return {"dataset": cfg.dataset, "train_size": cfg.train_size, "test_size": cfg.test_size, "loader": cfg.loader,
            "energy_source": cfg.energy_source, "sampling_interval_s": cfg.sampling_interval_s,
            "iec_batch_size": cfg.iec_batch_size, "iec_min_seconds": cfg.iec_min_seconds}


def prepare(cfg: Resolved) -> Context:
    """Resolve the device, load the dataset (generated, decoded or cached), open the profile's store.

    The store is a :class:`LockingStore`: a run another process (a second notebook on the same
    profile, a grid job) is computing is waited for and then reused, never trained twice.

    The dataset comes from ``cfg.data_root`` (None or '': ``$GREENLIB_DATASETS``, else data/datasets/;
    see greenlib.data.locate); a dataset that cannot be found stops here, before anything trains,
    with one line saying how to provide it. Where the profile's dataset is ``auto`` (smoke), the
    first line printed says which dataset that picked and why. The run environment's
    ``dataset_record`` is :meth:`Dataset.record`: name, source, counts, pixel sha256.
    """
    device = resolve_device(cfg.device)
    check_energy_source(device, cfg.energy_source)  # before anything loads or trains
    data_root = cfg.get("data_root") or None
    if _config.profile_defaults(cfg.section, cfg.profile).get("dataset") == "auto":
        picked, line = auto_dataset(data_root)
        if picked == cfg.dataset:
            print(line)
    ds = load_dataset(cfg.dataset, seed=DATASET_SEED, data_root=data_root).subset(cfg.train_size, cfg.test_size)
    environment = envmod.environment() | {"dataset": ds.name, "dataset_description": ds.description,
                                          "dataset_record": ds.record(), "device": str(device)}
    return Context(cfg, device, ds, LockingStore(results_dir(cfg.profile)), environment)


def stage_samples(tracer: Tracer, summary: Mapping[str, Any]):
    df = tracer.samples()
    if df is None or not len(df) or "t_s" not in df:
        return None
    return df[(df["t_s"] >= summary["start_s"]) & (df["t_s"] <= summary["end_s"])] if "start_s" in summary else df


def inference_images(ctx: Context, loader, n: int) -> torch.Tensor:
    """Up to ``n`` normalised test images on the device, for the IEC window."""
    xs = [x for x, _ in itertools.islice(loader, max(1, -(-n // ctx.cfg.batch_size)))]
    return torch.cat(xs)[:n].to(ctx.device)


def measure_iec(ctx: Context, run: Run, model: torch.nn.Module, tracer: Tracer, test_loader) -> dict[str, Any]:
    """IEC of ``model`` with the notebook's batch size and window, stored as the run's ``inference`` stage."""
    images = inference_images(ctx, test_loader, max(ctx.cfg.iec_batch_size * 8, 512))
    iec = measure_inference(model, images, tracer, batch_size=ctx.cfg.iec_batch_size,
                            min_seconds=ctx.cfg.iec_min_seconds)
    run.save_stage("inference", iec, stage_samples(tracer, iec))
    return iec


ACC_FIELDS = ("acc", "test_loss", "test_images")  # of train.evaluate
IEC_FIELDS = ("iec_wh", "iec_j", "latency_ms", "throughput_ips")  # of inference.measure_inference


def acc_metrics(acc: Mapping[str, Any]) -> dict[str, Any]:
    """The accuracy entries every run's metrics carry, from :func:`evaluate`'s result."""
    return {k: acc[k] for k in ACC_FIELDS}


def iec_metrics(iec: Mapping[str, Any]) -> dict[str, Any]:
    """The IEC entries every run's metrics carry, from :func:`measure_iec`'s result, and the stack
    it ran on (``iec_stack``, e.g. ``PyTorch fp32, batch 128, TF32 off``; None for an IEC stored
    before stacks were recorded)."""
    return {k: iec[k] for k in IEC_FIELDS} | {"iec_stack": iec.get("stack")}


def train_and_measure(ctx: Context, run: Run, model: torch.nn.Module, seed: int, train_cfg: TrainConfig,
                      stage: str = "base_training", progress: bool = True,
                      batch_size: int | None = None) -> dict[str, Any]:
    """Train ``model`` (traced, resumable), then its accuracy and IEC; returns the run's metrics.

    ``batch_size``: the training batch (None: the notebook's); a teacher trains at its recipe's.
    """
    train_loader, test_loader = ctx.loaders(seed, batch_size)
    seed_everything(seed)
    with ctx.tracer() as tracer:
        trainer = Trainer(model, train_loader, train_cfg, ctx.device, checkpoint=run.folder / "checkpoint.pt",
                          eval_loader=test_loader)
        summary = trainer.fit(tracer, stage, progress=progress)
        run.save_stage(stage, summary, stage_samples(tracer, summary))
        acc = evaluate(model, test_loader, ctx.device)
        iec = measure_iec(ctx, run, model, tracer, test_loader)
    atomic_torch_save(model.state_dict(), run.folder / "model.pt")
    (run.folder / "checkpoint.pt").unlink(missing_ok=True)
    return {**acc_metrics(acc),
            "tec_wh": summary["energy_wh"], "tec_j": summary["energy_j"], "train_elapsed_s": summary["elapsed_s"],
            **iec_metrics(iec), "energy_measured_by": summary["energy_source"],
            "estimated": bool(summary.get("estimated") or iec.get("estimated")),
            "final_train_loss": trainer.history[-1].train_loss, "final_train_acc": trainer.history[-1].train_acc}


def baseline_train_config(cfg: Resolved) -> TrainConfig:
    return TrainConfig(epochs=cfg.epochs, lr=cfg.lr, schedule=cfg.schedule, amp=cfg.amp,
                       graph_capture=cfg.graph_capture, eval_every=cfg.eval_every)


def baseline_config(cfg: Resolved) -> dict[str, Any]:
    """A baseline run's config without model, seed and hardware (what selects stored runs)."""
    t = baseline_train_config(cfg)
    return {"kind": "baseline", "batch_size": cfg.batch_size, "epochs": t.epochs, "lr": t.lr,
            "schedule": t.schedule, "momentum": t.momentum, "weight_decay": t.weight_decay, "amp": t.amp,
            "graph_capture": t.graph_capture, "eval_every": t.eval_every, **shared_config(cfg)}


def stored_baselines(cfg: Resolved) -> "pandas.DataFrame":
    """The stored runs these notebook parameters ask for, measured on any hardware."""
    from .report import load_runs

    return load_runs(cfg.profile, model=cfg.models, seed=cfg.seeds, **baseline_config(cfg))


def run_baseline(ctx: Context, model_name: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """Train ``model_name`` from scratch (the paper's baseline rows); cached in the store."""
    train_cfg = baseline_train_config(ctx.cfg)
    config = {**baseline_config(ctx.cfg), "model": model_name, "seed": seed, "hardware": hardware_name(ctx.device)}
    run = ctx.store.open(config, environment=ctx.environment, force=ctx.cfg.force)
    if run.complete:
        return run.result
    seed_everything(seed)
    model = build_model(model_name, num_classes=ctx.dataset.num_classes)
    info = model_info(model_name, num_classes=ctx.dataset.num_classes)
    metrics = train_and_measure(ctx, run, model, seed, train_cfg, progress=progress)
    return run.finish(metrics | {"params": info["params"], "flops_per_image": info["flops_per_image"],
                                 "dataset_description": ctx.dataset.description})


def baseline_weights(ctx: Context, model_name: str, seed: int, progress: bool = True) -> dict[str, Any]:
    """The stored baseline run's result, its weights (``model.pt``) trained again first where they are
    gone (:func:`stored_model`; the measurement is kept): a grid's one job for a base model whose
    weights several cells start from, so that they do not each train it again."""
    res = run_baseline(ctx, model_name, seed, progress=progress)
    stored_model(ctx, res, model_name, seed, baseline_train_config(ctx.cfg), progress=progress)
    return res


def base_baseline_config(ctx: Context, model_name: str, seed: int, epochs: int | None = None) -> Resolved:
    """The baselines parameters of the base run a family starts from (see :func:`base_model`).

    Only the data and measurement parameters every section shares, and how the family trains
    (``graph_capture``, ``eval_every``), are carried over: a family's own lr or epochs are not the
    base model's.
    """
    carried = (*_config.COMMON_PARAMS, *_config.TRAINING_PARAMS)
    shared = {k: ctx.cfg[k] for k in carried if k in ctx.cfg and k not in ("seeds", "force")}
    return _config.resolve("baselines", profile=ctx.cfg.profile, **shared, models=[model_name], seeds=[seed],
                           epochs=epochs)


def base_run_id(ctx: Context, model_name: str, seed: int, epochs: int | None = None) -> str:
    """The id of the run :func:`base_model` gives, known before anything trains (so a derived
    run is a cache hit even where the base weights are gone)."""
    from .results import run_id

    bcfg = base_baseline_config(ctx, model_name, seed, epochs)
    return run_id({**baseline_config(bcfg), "model": model_name, "seed": seed, "hardware": hardware_name(ctx.device)})


def base_model(ctx: Context, model_name: str, seed: int, epochs: int | None = None,
               progress: bool = True) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained base model a compression method starts from, and its stored baseline result.

    The base is the baseline run (notebook 01's) with ``ctx``'s data, measurement and profile and
    ``epochs`` (None: the profile's baseline epochs), so every method family shares one base run
    per (model, seed) and its TEC counts that run's ``base_training`` energy. Its weights come from
    the run folder; where they are gone (weights are not committed) the same config is trained
    again for them, with a warning, and the stored measurement is kept.
    """
    bcfg = base_baseline_config(ctx, model_name, seed, epochs)
    bctx = Context(bcfg, ctx.device, ctx.dataset, ctx.store, ctx.environment)
    res = run_baseline(bctx, model_name, seed, progress=progress)
    return stored_model(bctx, res, model_name, seed, baseline_train_config(bcfg), progress=progress), res


def stored_model(ctx: Context, res: Mapping[str, Any], model_name: str, seed: int, train_cfg: TrainConfig,
                 batch_size: int | None = None, progress: bool = True) -> torch.nn.Module:
    """The weights of the stored run ``res`` (a baseline or a teacher) in ``model_name``, in eval mode on
    ``ctx.device``.

    Weights are not committed. Where they are gone, the run's training (``train_cfg`` at ``batch_size``,
    seeded from ``seed``) is repeated for them, with a warning; the stored measurement stays the run's
    (every family that counted it keeps counting the same figure). That training checkpoints like any
    other (:data:`greenlib.results.REGENERATE_CHECKPOINT` in the run's folder, removed once the weights
    are written), so a machine that goes back mid-way loses at most a minute of it where the
    checkpoint travels (:mod:`greenlib.scaleout.carry` packs it): a ResNet56 teacher's 240 epochs take
    about 28 minutes on an H200, a whole lent session.
    """
    import warnings

    weights = ctx.store.root / res["run_id"] / "model.pt"
    checkpoint = weights.with_name(REGENERATE_CHECKPOINT)
    if not weights.exists():
        resume = f", resuming from its {REGENERATE_CHECKPOINT}" if checkpoint.exists() else ""
        warnings.warn(f"run {res['run_id']} has no stored weights; regenerating them by training the same "
                      f"config again (the stored measurement is kept){resume}", stacklevel=3)
        seed_everything(seed)
        model = build_model(model_name, num_classes=ctx.dataset.num_classes)
        train_loader, _ = ctx.loaders(seed, batch_size)
        with ctx.tracer() as tracer:  # the same steps; the per-epoch test accuracy is stored already
            Trainer(model, train_loader, replace(train_cfg, eval_every=0), ctx.device, checkpoint=checkpoint).fit(
                tracer, "regenerate_weights", progress=progress)
        atomic_torch_save(model.state_dict(), weights)
    checkpoint.unlink(missing_ok=True)
    model = build_model(model_name, num_classes=ctx.dataset.num_classes)
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(ctx.device).eval()
