"""One distillation run: the teacher from the results store, the student distilled (traced), then Acc and IEC.

    ctx = experiments.prepare(config.resolve("distillation", profile="quick"))
    res = run_distillation(ctx, "resnet56", "resnet20", "CRD", seed=0)
    res["metrics"]["tec_wh"]   # teacher training + pre-training + distillation, W·h

Stages (Table 2 of the paper: "train original model" + "distillation"):

1. ``teacher``: the teacher's run of kind ``teacher`` (``greenlib.distill.teacher``: RepDistiller's
   ``train_teacher.py`` recipe), trained once per (teacher, seed, epochs, data) and shared by every
   student, method and study. Its energy is its own run's ``teacher_training`` stage; each distilled
   model's TEC counts it in full.
2. ``pretrain`` (AB, FT, FSP only): RepDistiller's ``init`` stage, 30/240 of the student's epochs.
3. ``distillation``: the student trained on ``ce_weight * CE + loss_weight * loss`` with the frozen
   teacher run in eval mode, without gradients, on every batch.
4. ``inference``: IEC of the student, in this run, or (``iec_shared``) once per student
   architecture in a run of kind ``iec`` that every method's student shares.
"""
from __future__ import annotations

from itertools import product
from typing import Any, Mapping, Sequence

import torch

from .. import experiments
from ..config import ConfigError, Resolved
from ..experiments import Context, hardware_name, shared_config
from ..io import atomic_torch_save
from ..models import MODELS, build_model, model_info
from ..results import Run
from ..train import LossFn, Trainer, TrainConfig, evaluate, seed_everything
from . import registry, teacher as teachers
from .base import Distiller, Outputs
from .indexed import IndexedLoader
from .teacher import MILESTONES

PRETRAIN_FRACTION = 30 / 240  # its init_epochs (30) per 240 distillation epochs
LOW_LR_STUDENTS: tuple[str, ...] = teachers.LOW_LR_MODELS  # RepDistiller trains these at teacher.LOW_LR, whatever lr says


def parse_pairs(pairs: Sequence[str]) -> list[tuple[str, str]]:
    """``["resnet56:resnet20"]`` -> ``[("resnet56", "resnet20")]``; ConfigError names a bad entry."""
    out = []
    for p in pairs:
        parts = p.split(":") if isinstance(p, str) else []
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"distillation.pairs: {p!r} is not 'teacher:student' (e.g. 'resnet56:resnet20')")
        for name in parts:
            if name not in MODELS:
                raise ConfigError(f"distillation.pairs: {name!r} in {p!r} is not a zoo model; accepted: "
                                  f"{', '.join(MODELS)}")
        out.append((parts[0], parts[1]))
    return out


def student_lr(student: str, lr: float) -> float:
    """RepDistiller's rule: 0.01 for MobileNetV2 and the ShuffleNets, else ``lr``."""
    return teachers.recipe_lr(student, lr)


def pretrain_epochs(student_epochs: int) -> int:
    """Epochs of the pre-training stage: 30 per 240 distillation epochs, at least 1."""
    return max(1, round(student_epochs * PRETRAIN_FRACTION))


def student_train_config(cfg: Resolved, student: str) -> TrainConfig:
    """The distillation stage: SGD (momentum 0.9, weight decay 5e-4), step schedule at 150/180/210 of 240."""
    return TrainConfig(epochs=cfg.student_epochs, lr=student_lr(student, cfg.lr), schedule="step",
                       milestones=MILESTONES, graph_capture=cfg.graph_capture, eval_every=cfg.eval_every)


def pretrain_train_config(cfg: Resolved, student: str, cls: type[Distiller]) -> TrainConfig:
    """The pre-training stage: the same optimizer at a constant learning rate (RepDistiller's ``init``)."""
    return TrainConfig(epochs=pretrain_epochs(cfg.student_epochs),
                       lr=cls.pretrain_lr(student, student_lr(student, cfg.lr)), schedule="step", milestones=(),
                       graph_capture=cfg.graph_capture, eval_every=cfg.eval_every)


def distill_config(cfg: Resolved, teacher: str, student: str, method: str, seed: int,
                   hparams: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A distillation run's config without hardware and teacher run id (what selects stored runs).

    Holds the method's hyper-parameters (``ce_weight``, ``loss_weight``, ...) as flat keys.
    """
    cls = registry.get(method)
    t = student_train_config(cfg, student)
    pre = pretrain_train_config(cfg, student, cls) if cls.pretrains else None
    tt = teachers.teacher_train_config(cfg, teacher)
    return {"kind": "distillation", "model": student, "teacher": teacher, "student": student, "method": method,
            "seed": seed, "teacher_epochs": cfg.teacher_epochs, "teacher_kind": teachers.KIND,
            "teacher_batch_size": teachers.TEACHER_BATCH_SIZE, "teacher_lr": tt.lr,
            "teacher_milestones": list(tt.milestones), "epochs": t.epochs,
            "pretrain_epochs": pre.epochs if pre else 0, "pretrain_lr": pre.lr if pre else None,
            "batch_size": cfg.batch_size, "lr": t.lr, "schedule": t.schedule, "milestones": list(t.milestones),
            "gamma": t.gamma, "momentum": t.momentum, "weight_decay": t.weight_decay, "iec_shared": cfg.iec_shared,
            "graph_capture": t.graph_capture, "eval_every": t.eval_every,
            **cls.settle(dict(hparams or {}), cfg.train_size), **shared_config(cfg)}


def teacher_run_id(ctx: Context, teacher: str, seed: int) -> str:
    """The id of the teacher run :func:`greenlib.distill.teacher.run_teacher` gives, without running it,
    so a complete distillation run is a cache hit even where the teacher's weights are gone."""
    return teachers.teacher_run_id(ctx, teacher, seed)


def make_loss_fn(distiller: Distiller, teacher: torch.nn.Module, batches: IndexedLoader | None = None,
                 pretrain: bool = False) -> LossFn:
    """``loss_fn(student, x, y) -> (loss, student logits)`` for :class:`~greenlib.train.Trainer`.

    The teacher runs as it is (eval mode, set by the caller) under ``no_grad``; the student's
    ``extract`` gives its features. ``pretrain`` gives the pre-training stage's loss; where that
    stage does not train the student (FT), the student runs in eval mode without gradients.
    ``batches`` supplies the batch's training-set indices (CRD).
    """
    preact = distiller.preact
    student_frozen = pretrain and not distiller.pretrains_student

    def outputs(model: torch.nn.Module, x: torch.Tensor) -> Outputs:
        feats, logits = model.extract(x, preact=preact)
        return Outputs(feats, logits, batches.index if batches is not None else None)

    def loss_fn(student: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t = outputs(teacher, x)
        if student_frozen:
            student.eval()  # RepDistiller's init runs the student in eval mode
            with torch.no_grad():
                s = outputs(student, x)
            return distiller.pretrain_loss(s, t), s.logits
        s = outputs(student, x)
        loss = distiller.pretrain_loss(s, t) if pretrain else distiller.total_loss(s, t, y)
        return loss, s.logits

    return loss_fn


def run_distillation(ctx: Context, teacher: str, student: str, method: str, seed: int,
                     hparams: Mapping[str, Any] | None = None, progress: bool = True,
                     teacher_ctx: Context | None = None) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` with ``method``; cached in the store (a complete run is returned).

    ``hparams`` override the method's RepDistiller defaults (recorded in the run's config).
    ``teacher_ctx`` (default ``ctx``) gives the data and measurement parameters the teacher is
    trained with (its recipe, batch size included, is RepDistiller's whatever ``ctx`` says).
    An unknown method or model, a bad hyper-parameter or a pair the method cannot connect raises
    (ValueError / IncompatiblePairError) before anything is trained. The stored metrics account
    for TEC explicitly: ``tec_wh = tec_teacher_wh + tec_pretrain_wh + tec_distill_wh``.
    """
    cfg = ctx.cfg
    cls = registry.get(method)
    seed_everything(seed)
    model = build_model(student, num_classes=ctx.dataset.num_classes)
    distiller = registry.build(method, teacher, student, ctx.dataset.train_y, ctx.dataset.num_classes,
                               **dict(hparams or {}))
    tctx = teacher_ctx or ctx
    t_id = teacher_run_id(tctx, teacher, seed)
    config = {**distill_config(cfg, teacher, student, method, seed, hparams), "hardware": hardware_name(ctx.device),
              "teacher_run_id": t_id}
    run = ctx.store.open(config, environment=ctx.environment, force=cfg.force)
    if run.complete:
        return run.result

    teacher_model, teacher_res = teachers.teacher_model(tctx, teacher, seed, progress=progress)
    if teacher_res["run_id"] != t_id:
        raise RuntimeError(f"teacher run {teacher_res['run_id']} is not the expected {t_id}: "
                           "greenlib.distill.run.teacher_run_id is out of step with teacher.run_teacher")
    teacher_model.requires_grad_(False).eval()
    teacher_weights_acc = teacher_weights_accuracy(tctx, teacher_model, seed)
    metrics = _distill_and_measure(ctx, run, model, teacher_model, distiller, cls, student, seed, progress)
    if cfg.iec_shared:
        iec = student_iec(ctx, student, seed)
        metrics |= {k: iec["metrics"].get(k) for k in (*experiments.IEC_FIELDS, "iec_stack")}
        metrics |= {"iec_run_id": iec["run_id"],
                    "estimated": metrics["estimated"] or bool(iec["metrics"]["estimated"])}
    tm = teacher_res["metrics"]
    info = model_info(student, num_classes=ctx.dataset.num_classes)
    sources = dict.fromkeys([metrics.pop("_source"), tm["energy_measured_by"]])
    metrics |= {
        "tec_teacher_wh": tm["tec_wh"],
        "tec_wh": tm["tec_wh"] + metrics["tec_pretrain_wh"] + metrics["tec_distill_wh"],
        "tec_j": tm["tec_j"] + metrics.pop("_student_j"),
        "teacher_train_elapsed_s": tm["train_elapsed_s"], "teacher_acc": tm["acc"], "teacher_params": tm["params"],
        "teacher_weights_acc": teacher_weights_acc,
        "energy_measured_by": "+".join(map(str, sources)),
        "estimated": metrics["estimated"] or bool(tm["estimated"]),
        "params": info["params"], "flops_per_image": info["flops_per_image"],
        "dataset_description": ctx.dataset.description,
    }
    return run.finish(metrics)


def teacher_weights_accuracy(tctx: Context, teacher: torch.nn.Module, seed: int) -> float:
    """Top-1 accuracy (a fraction) on ``tctx``'s test set of the teacher weights a student learns from.

    It equals the teacher run's stored ``acc`` where the weights are that run's own; where they were
    lost and trained again (:func:`greenlib.experiments.stored_model`, which keeps the stored
    measurement), it says how good the teacher this student actually had is. Outside every traced
    window (bookkeeping, not the method), and before the student's stages seed the random state, so
    that the student trains as it would without it."""
    _, test_loader = tctx.loaders(seed)
    return evaluate(teacher, test_loader, tctx.device)["acc"]


def _distill_and_measure(ctx: Context, run: Run, student: torch.nn.Module, teacher: torch.nn.Module,
                         distiller: Distiller, cls: type[Distiller], student_name: str, seed: int,
                         progress: bool) -> dict[str, Any]:
    """The traced stages of one run (pre-training, distillation, [inference]); its student metrics."""
    cfg, device = ctx.cfg, ctx.device
    train_loader, test_loader = ctx.loaders(seed)
    batches = IndexedLoader(train_loader)
    distiller.to(device)
    stages = []
    with ctx.tracer() as tracer:
        if cls.pretrains:
            seed_everything(seed)
            pre = Trainer(student, batches, pretrain_train_config(cfg, student_name, cls), device,
                          loss_fn=make_loss_fn(distiller, teacher, batches, pretrain=True), extra_modules=[distiller],
                          checkpoint=run.folder / "pretrain_checkpoint.pt", eval_loader=test_loader)
            stages.append(pre.fit(tracer, "pretrain", progress=progress))
            run.save_stage("pretrain", stages[-1], experiments.stage_samples(tracer, stages[-1]))
        distiller.start_distillation()
        seed_everything(seed)
        trainer = Trainer(student, batches, student_train_config(cfg, student_name), device,
                          loss_fn=make_loss_fn(distiller, teacher, batches), extra_modules=[distiller],
                          checkpoint=run.folder / "checkpoint.pt", eval_loader=test_loader)
        stages.append(trainer.fit(tracer, "distillation", progress=progress))
        run.save_stage("distillation", stages[-1], experiments.stage_samples(tracer, stages[-1]))
        acc = evaluate(student, test_loader, device)
        iec = {}
        if not cfg.iec_shared:
            iec = experiments.measure_iec(ctx, run, student, tracer, test_loader)
    atomic_torch_save(student.state_dict(), run.folder / "model.pt")
    for name in ("checkpoint.pt", "pretrain_checkpoint.pt"):
        (run.folder / name).unlink(missing_ok=True)
    pre_s = stages[0] if cls.pretrains else {"energy_wh": 0.0, "energy_j": 0.0, "elapsed_s": 0.0}
    dist_s = stages[-1]
    out = {**experiments.acc_metrics(acc),
           "tec_pretrain_wh": pre_s["energy_wh"], "tec_distill_wh": dist_s["energy_wh"],
           "_student_j": pre_s["energy_j"] + dist_s["energy_j"],
           "train_elapsed_s": pre_s["elapsed_s"] + dist_s["elapsed_s"],
           "_source": "+".join(dict.fromkeys(s["energy_source"] for s in stages)),
           "estimated": any(bool(s.get("estimated")) for s in [*stages, iec]),
           "final_train_loss": trainer.history[-1].train_loss, "final_train_acc": trainer.history[-1].train_acc}
    if iec:
        out |= experiments.iec_metrics(iec)
    return out


def student_iec(ctx: Context, student: str, seed: int) -> dict[str, Any]:
    """IEC of the ``student`` architecture, measured once and shared by every method's student.

    The energy of an inference depends on the architecture, not on the values of its weights,
    so a freshly initialised (seeded) student stands in for the distilled ones. Stored as a run of
    kind ``iec`` (stage ``inference``); a cache hit when complete (``force`` does not redo it).
    """
    config = {"kind": "iec", "model": student, "seed": seed, **ctx.base_config()}
    run = ctx.store.open(config, environment=ctx.environment)
    if run.complete:
        return run.result
    seed_everything(seed)
    model = build_model(student, num_classes=ctx.dataset.num_classes).to(ctx.device).eval()
    _, test_loader = ctx.loaders(seed)
    with ctx.tracer() as tracer:
        iec = experiments.measure_iec(ctx, run, model, tracer, test_loader)
    info = model_info(student, num_classes=ctx.dataset.num_classes)
    return run.finish({**experiments.iec_metrics(iec), "energy_measured_by": iec["energy_source"],
                       "estimated": bool(iec.get("estimated")), "params": info["params"],
                       "flops_per_image": info["flops_per_image"], "dataset_description": ctx.dataset.description})


def stored_distillations(cfg: Resolved) -> "pandas.DataFrame":
    """The complete distillation runs these notebook parameters ask for, measured on any hardware."""
    import pandas as pd

    from ..paths import results_dir
    from ..results import ResultsStore, config_mask

    df = ResultsStore(results_dir(cfg.profile)).load_results()
    if df.empty or "kind" not in df:
        return df.iloc[0:0]
    df = df[df["kind"] == "distillation"]
    keep = pd.Series(False, index=df.index)
    for (teacher, student), method, seed in product(parse_pairs(cfg.pairs), cfg.methods, cfg.seeds):
        want = distill_config(cfg, teacher, student, method, seed)
        match = config_mask(df, want)
        keep |= match
    return df[keep].reset_index(drop=True)


def stored_teachers(cfg: Resolved) -> "pandas.DataFrame":
    """The complete teacher runs behind these notebook parameters (each pair's teacher, each seed, the
    teacher recipe at ``cfg.teacher_epochs``), measured on any hardware, whether or not a student has
    been distilled from them yet."""
    import pandas as pd

    from ..report import load_runs

    parts = [load_runs(cfg.profile, **{**teachers.teacher_config(cfg, t, cfg.seeds[0]), "seed": list(cfg.seeds)})
             for t in dict.fromkeys(t for t, _ in parse_pairs(cfg.pairs))]  # the recipe's lr depends on the model
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
