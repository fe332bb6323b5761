"""The harness's own overhead: one model of each family trained eagerly and graphed, per epoch.

A benchmark of method energy must not charge a method for Python launch overhead. This measures
what the eager step costs against the whole-step CUDA graph (``graph_capture``) for one model of
each family at a profile's batch sizes: seconds, energy and mean GPU utilisation per epoch.
``scripts/bench_overhead.py`` runs it on a GPU and writes ``overhead.csv`` and ``meta.json`` into a
folder (committed under ``data/measurements/overhead/<gpu>/``); notebook 13 reads them back
(:func:`load`, :func:`compare`).

Families and their model (the quick profile's first of each): ``baseline`` VGG16 and ResNet18;
``distillation`` KD of vgg13 -> vgg8 (the student trained, the teacher run every step);
``pruning`` fine-tuning VGG16 after L1 pruning at 50% and speed-up; ``nas`` retraining a fixed
DARTS model at the quick profile's retraining size (the paper's 20 cells x 36 channels would not
fit the study in one GPU call of a few minutes). Weights are random: the cost of a step does not
depend on their values.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

from . import config
from .train import LossFn, Trainer, TrainConfig, cross_entropy_loss

FAMILIES: tuple[str, ...] = ("baseline", "distillation", "pruning", "nas")
MEASURED_EPOCH = "last"  # the first epoch pays for capture, cuDNN autotuning and allocator growth
SMOKE_MODELS = {"nni-vgg16": "vgg8", "resnet18": "resnet8", "vgg13": "resnet20"}  # --smoke: tiny CPU stand-ins


@dataclass(frozen=True)
class Setting:
    """One model of one family at one batch size (the profiles whose section trains at it)."""

    family: str
    model: str
    batch_size: int
    profiles: tuple[str, ...]


def settings(profiles: tuple[str, ...] = ("quick", "paper"), families: tuple[str, ...] = FAMILIES) -> list[Setting]:
    """Every (family, model, batch size) the profiles train at, each once; ValueError names an
    unknown family or profile."""
    bad = [f for f in families if f not in FAMILIES]
    if bad:
        raise ValueError(f"unknown family {bad[0]!r}; accepted: {', '.join(FAMILIES)}")
    for p in profiles:
        config.check_profile(p)
    out: dict[tuple[str, str, int], set[str]] = {}

    def add(family, model, section, profile):
        bs = config.resolve(section, profile=profile).batch_size
        out.setdefault((family, model, bs), set()).add(profile)

    for p in profiles:
        for m in ("nni-vgg16", "resnet18"):  # Table 3's baselines (NNI's VGG16)
            add("baseline", m, "baselines", p)
        add("distillation", "vgg13:vgg8", "distillation", p)
        add("pruning", "nni-vgg16/l1", "pruning", p)
        add("nas", "darts", "nas", p)
    return [Setting(f, m, bs, tuple(sorted(ps))) for (f, m, bs), ps in out.items() if f in families]


def _darts_model(num_classes: int, smoke: bool) -> nn.Module:
    from .nas import build_fixed, build_space
    from .nas.run import space_size

    size = space_size(config.resolve("nas", profile="smoke" if smoke else "quick"))
    mutables = build_space("darts", size, num_classes).simplify()
    # a fixed mixed architecture: every operation the space offers, in turn (no search needed)
    arch = {k: m.values[i % len(m.values)] if "op_" in k else m.default() for i, (k, m) in enumerate(mutables.items())}
    return build_fixed("darts", arch, size, num_classes)


def build(setting: Setting, num_classes: int, device: torch.device, smoke: bool = False
          ) -> tuple[nn.Module, LossFn, list[nn.Module]]:
    """``(model, loss_fn, extra_modules)`` of a setting, on ``device``, freshly initialised."""
    from .models import build_model

    name = lambda m: SMOKE_MODELS.get(m, m) if smoke else m  # noqa: E731
    if setting.family == "baseline":
        return build_model(name(setting.model), num_classes=num_classes).to(device), cross_entropy_loss, []
    if setting.family == "distillation":
        from .distill import registry
        from .distill.run import make_loss_fn

        teacher, student = (name(m) for m in setting.model.split(":"))
        t = build_model(teacher, num_classes=num_classes).to(device).requires_grad_(False).eval()
        s = build_model(student, num_classes=num_classes).to(device)
        labels = torch.arange(1000) % num_classes
        kd = registry.build("KD", teacher, student, labels, num_classes).to(device)
        return s, make_loss_fn(kd, t), [kd]
    if setting.family == "pruning":
        from .prune import prune
        from .tracer import Tracer

        model_name, pruner = setting.model.split("/")
        model = build_model(name(model_name), num_classes=num_classes).to(device)
        example = torch.randn(2, 3, 32, 32, device=device)
        gpus = (device.index or 0,) if device.type == "cuda" else None
        with Tracer(gpus=gpus, source="auto" if gpus else "cpu", interval_s=0.1) as tr:
            pruned = prune(model, pruner, 0.5, tr, example, progress=False).model
        return copy.deepcopy(pruned).train(), cross_entropy_loss, []
    if setting.family == "nas":
        return _darts_model(num_classes, smoke).to(device), cross_entropy_loss, []
    raise ValueError(f"unknown family {setting.family!r}; accepted: {', '.join(FAMILIES)}")


def measure(setting: Setting, graph: bool, train_loader, num_classes: int, device: torch.device, epochs: int,
            tracer_factory: Callable[[], Any], smoke: bool = False) -> dict[str, Any]:
    """Train ``setting`` for ``epochs`` epochs, eagerly or graphed; the last epoch's figures."""
    torch.manual_seed(0)
    model, loss_fn, extra = build(setting, num_classes, device, smoke)
    trainer = Trainer(model, train_loader, TrainConfig(epochs=epochs, graph_capture=graph), device, loss_fn=loss_fn,
                      extra_modules=extra)
    with tracer_factory() as tr:
        summary = trainer.fit(tr, "train", progress=False)
    last = trainer.history[-1]
    w = last.window
    return {"family": setting.family, "model": setting.model, "batch_size": setting.batch_size,
            "profiles": "+".join(setting.profiles), "step": "graphed" if graph else "eager",
            "graph_captured": summary["graph_captured"], "graph_reason": summary["graph_reason"],
            "epoch_s": w["elapsed_s"], "images_per_s": last.images / w["elapsed_s"], "images": last.images,
            "energy_j_per_epoch": w["energy_j"], "energy_source": w["energy_source"],
            "mean_power_w": w["mean_power_w"], "mean_gpu_util_pct": w.get("mean_gpu_util_pct", float("nan")),
            "train_loss_last_epoch": last.train_loss, "epochs": epochs}


def load(root: str | Path) -> pd.DataFrame:
    """Every ``overhead.csv`` under ``root`` (one folder per GPU run), with its folder as ``source``;
    an empty frame where none is committed yet."""
    frames = [pd.read_csv(p).assign(source=p.parent.name) for p in sorted(Path(root).glob("*/overhead.csv"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def compare(df: pd.DataFrame) -> pd.DataFrame:
    """Eager against graphed per (source, family, model, batch size): the graph's speed-up, its
    energy saving in %, and both utilisations. Rows measured in one step only are left out."""
    keys = ["source", "family", "model", "batch_size"]
    wide = df.pivot_table(index=keys, columns="step",
                          values=["epoch_s", "energy_j_per_epoch", "mean_gpu_util_pct", "mean_power_w"])
    if "eager" not in wide.columns.get_level_values(1) or "graphed" not in wide.columns.get_level_values(1):
        return pd.DataFrame(columns=[*keys, "speedup", "energy_saving_pct", "eager_util_pct", "graphed_util_pct"])
    out = pd.DataFrame({
        "eager_epoch_s": wide[("epoch_s", "eager")], "graphed_epoch_s": wide[("epoch_s", "graphed")],
        "speedup": wide[("epoch_s", "eager")] / wide[("epoch_s", "graphed")],
        "eager_energy_j": wide[("energy_j_per_epoch", "eager")],
        "graphed_energy_j": wide[("energy_j_per_epoch", "graphed")],
        "energy_saving_pct": 100.0 * (1 - wide[("energy_j_per_epoch", "graphed")]
                                      / wide[("energy_j_per_epoch", "eager")]),
        "eager_util_pct": wide[("mean_gpu_util_pct", "eager")],
        "graphed_util_pct": wide[("mean_gpu_util_pct", "graphed")]})
    return out.dropna(subset=["speedup"]).reset_index()
