"""Knowledge distillation: RepDistiller's 13 methods, one loss per file, found through a registry.

    from greenlib import distill
    distill.names()                                   # ['KD', 'FitNet', ..., 'CRD']
    d = distill.build("AT", "resnet56", "resnet20", train_labels)
    loss = d(student_outputs, teacher_outputs)        # Outputs(feats, logits, index)
    distill.run_distillation(ctx, "resnet56", "resnet20", "AT", seed=0)   # traced, cached

Each method is a :class:`Distiller` (``base.py``) in its own file: its auxiliary modules, its
RepDistiller defaults, its loss ``forward(s, t)`` and, for AB, FT and FSP, a pre-training loss.
``registry.py`` maps names to classes; ``teacher.py`` trains the teachers (RepDistiller's
``train_teacher.py`` recipe, a run kind of their own); ``run.py`` trains and measures one (teacher,
student, method, seed); ``tables.py`` turns stored runs into the notebook's tables. See ``docs/distillation.md``.
"""
from .base import Distiller, IncompatiblePairError, Outputs, Pair
from .indexed import IndexedLoader
from .registry import DISTILLERS, build, check_plan, feature_shapes, get, make_pair, names
from .run import (distill_config, make_loss_fn, parse_pairs, pretrain_epochs, run_distillation,
                  stored_distillations, stored_teachers, student_iec, student_lr, student_train_config,
                  teacher_run_id)
from .teacher import run_teacher, teacher_config, teacher_model, teacher_train_config

__all__ = ["DISTILLERS", "Distiller", "IncompatiblePairError", "IndexedLoader", "Outputs", "Pair", "build",
           "check_plan", "distill_config", "feature_shapes", "get", "make_loss_fn", "make_pair", "names",
           "parse_pairs", "pretrain_epochs", "run_distillation", "stored_distillations", "stored_teachers",
           "student_iec", "student_lr", "student_train_config", "run_teacher", "teacher_config", "teacher_model",
           "teacher_run_id", "teacher_train_config"]
