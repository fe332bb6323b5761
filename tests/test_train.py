import math

import pytest
import torch
from torch import nn

from greenlib.tracer import Tracer
from greenlib.train import (EAGER_STAGES, Trainer, TrainConfig, accuracy_curve, eager_stage, evaluate, graph_reason,
                            lr_at, merge_windows)


def test_step_schedule_divides_at_milestones():
    lrs = [lr_at(e, 160, 0.1, "step") for e in (0, 79, 80, 119, 120, 159)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_schedule_starts_at_lr_and_decays_monotonically():
    lrs = [lr_at(e, 10, 0.05, "cosine") for e in range(10)]
    assert lrs[0] == 0.05 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0


@pytest.mark.parametrize("kw, word", [({"epochs": 0}, "epochs=0"), ({"epochs": 2, "lr": 0}, "lr=0"),
                                      ({"epochs": 2, "schedule": "linear"}, "schedule='linear'"),
                                      ({"epochs": 2, "eval_every": -1}, "eval_every=-1"),
                                      ({"epochs": 2, "eval_every": True}, "eval_every=True")])
def test_train_config_rejects_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**kw)


def test_graph_reason_says_why_a_stage_runs_eagerly():
    assert graph_reason(True, torch.device("cuda")) is None
    assert graph_reason(False, torch.device("cuda")) == "graph_capture=False"
    assert graph_reason(True, torch.device("cpu")) == "cpu"
    assert graph_reason(True, torch.device("cuda"), "ddp") == "ddp"
    assert eager_stage("search", "nas search") == {"graph_captured": False, "graph_reason": "nas search"}
    with pytest.raises(ValueError, match="'warm-up' is not documented; accepted: ddp"):
        eager_stage("search", "warm-up")


def test_trainer_rejects_an_undocumented_eager_stage_and_eval_without_a_loader():
    with pytest.raises(ValueError, match="eager='slow' is not a documented eager stage; accepted: ddp"):
        Trainer(nn.Linear(2, 2), [], TrainConfig(epochs=1, graph_capture=True), "cpu", eager="slow")
    with pytest.raises(ValueError, match="eval_every=1 needs an eval_loader"):
        Trainer(nn.Linear(2, 2), [], TrainConfig(epochs=1, eval_every=1), "cpu")
    assert set(EAGER_STAGES) == {"ddp", "pruning statistics", "nas search"}


def test_merge_windows_adds_energy_and_time_weights_means():
    a = {"elapsed_s": 1.0, "energy_j": 100.0, "energy_wh": 100 / 3600, "mean_power_w": 100.0,
         "energy_source": "counter", "estimated": False}
    b = {"elapsed_s": 3.0, "energy_j": 600.0, "energy_wh": 600 / 3600, "mean_power_w": 200.0,
         "energy_source": "counter", "estimated": False}
    m = merge_windows("s", [a, b])
    assert m["energy_j"] == 700.0 and m["elapsed_s"] == 4.0
    assert m["mean_power_w"] == pytest.approx(175.0)
    assert m["energy_source"] == "counter" and m["n_windows"] == 2
    nan = merge_windows("s", [a, {**b, "energy_j": float("nan"), "reason": "no sample"}])
    assert math.isnan(nan["energy_j"]) and nan["reason"] == "no sample"
    # utilisation: a window shorter than the driver's lag has none, and is left out of the stage's
    util = merge_windows("s", [{**a, "mean_gpu_util_pct": 90.0, "util_lag_s": 0.2},
                               {**b, "mean_gpu_util_pct": 98.0, "util_lag_s": 0.2},
                               {**b, "elapsed_s": 0.1, "mean_gpu_util_pct": float("nan"), "util_lag_s": 0.2}])
    assert util["mean_gpu_util_pct"] == pytest.approx(96.0) and util["util_lag_s"] == 0.2
    assert util["mean_power_w"] == pytest.approx((100 + 600 + 20) / 4.1)


class Interrupt(Exception):
    pass


class Batches:
    """A tiny deterministic loader that can be told to die mid-epoch (a killed run)."""

    def __init__(self, die_at_epoch=None):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()
        self.epoch, self.die_at_epoch = 0, die_at_epoch

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(64, generator=torch.Generator().manual_seed(self.epoch))
        for i in range(0, 64, 16):
            if self.epoch == self.die_at_epoch and i == 32:
                raise Interrupt("killed")
            idx = order[i:i + 16]
            yield self.x[idx], self.y[idx]


def _fit(checkpoint, loader, epochs=4, **cfg):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    eval_loader = [(Batches().x, Batches().y)] if cfg.get("eval_every") else None
    trainer = Trainer(model, loader, TrainConfig(epochs=epochs, lr=0.1, **cfg), "cpu", checkpoint=checkpoint,
                      eval_loader=eval_loader)
    with Tracer(source="cpu", interval_s=0.05) as tr:
        summary = trainer.fit(tr, "base_training", progress=False)
        windows = dict(tr.windows)
    return model, trainer, summary | {"_windows": windows}


def test_graph_capture_on_a_cpu_runs_eagerly_and_says_so(tmp_path):
    # a profile that asks for capture (quick: device=auto) must still run on a CPU host, and say it was eager
    eager, _, _ = _fit(None, Batches(), epochs=2)
    asked, trainer, summary = _fit(None, Batches(), epochs=2, graph_capture=True)
    for p, q in zip(eager.parameters(), asked.parameters()):
        assert torch.equal(p, q)
    assert summary["graph_capture"] is True and summary["graph_captured"] is False
    assert summary["graph_reason"] == "cpu"
    assert summary["eager_steps"] == 8 and summary["graphed_steps"] == 0  # 4 batches x 2 epochs
    assert [e["eager_steps"] for e in summary["epochs"]] == [4, 4]
    _, _, off = _fit(None, Batches(), epochs=1)
    assert off["graph_captured"] is False and off["graph_reason"] == "graph_capture=False"


def test_per_epoch_evaluation_is_stored_outside_the_stage_energy(tmp_path):
    _, trainer, summary = _fit(None, Batches(), epochs=3, eval_every=2)
    # epoch 1 (every 2nd) and epoch 2 (the last) are evaluated; epoch 0 is not
    assert [e["test_acc"] is not None for e in summary["epochs"]] == [False, True, True]
    assert all(0.0 <= e["test_acc"] <= 1.0 for e in summary["epochs"][1:])
    w = summary["_windows"]
    assert set(w) == {"base_training/epoch0", "base_training/epoch1", "base_training/epoch2",
                      "base_training/eval1", "base_training/eval2"}
    # the stage's energy and time are the epochs' alone; the evaluations' are reported beside them
    epochs_j = sum(w[f"base_training/epoch{i}"].energy_j for i in range(3))
    assert summary["energy_j"] == pytest.approx(epochs_j)
    evals_j = w["base_training/eval1"].energy_j + w["base_training/eval2"].energy_j
    assert summary["eval_energy_j"] == pytest.approx(evals_j) and summary["eval_energy_j"] > 0
    assert summary["eval_epochs"] == 2 and summary["eval_elapsed_s"] > 0
    assert summary["epochs"][1]["eval_energy_j"] == pytest.approx(w["base_training/eval1"].energy_j)
    assert summary["final_test_acc"] == summary["epochs"][2]["test_acc"]
    assert trainer.model.training  # back in training mode after evaluating


def test_accuracy_curve_accumulates_training_energy_across_stages():
    def st(name, epochs):
        return {"name": name, "epochs": [{"epoch": i, "test_acc": a, "window.energy_j": j, "window.elapsed_s": 1.0}
                                         for i, (a, j) in enumerate(epochs)]}
    df = accuracy_curve([st("pretrain", [(None, 3600.0)]), st("distillation", [(0.2, 7200.0), (0.4, 3600.0)])])
    assert list(df["stage"]) == ["pretrain", "distillation", "distillation"]
    assert list(df["cumulative_energy_wh"]) == [1.0, 3.0, 4.0] and list(df["cumulative_elapsed_s"]) == [1, 2, 3]
    assert math.isnan(df["test_acc"][0]) and list(df["test_acc"][1:]) == [0.2, 0.4]


def test_killed_run_resumes_from_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    ref, _, ref_summary = _fit(tmp_path / "ref.pt", Batches())
    with pytest.raises(Interrupt):
        _fit(tmp_path / "ck.pt", Batches(die_at_epoch=2))
    state = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert len(state["history"]) == 2  # epochs 0 and 1 were finished and kept
    resumed, trainer, summary = _fit(tmp_path / "ck.pt", Batches())
    for p, q in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert summary["graph_captured"] is False and summary["eager_steps"] == 16  # the resumed run counts all epochs
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1, 2, 3]
    assert summary["n_windows"] == 4 and summary["energy_source"] in ("cpu-estimate", "cpu-rapl")
    assert summary["elapsed_s"] > 0 and summary["energy_j"] > 0
    assert trainer.history[-1].train_loss < trainer.history[0].train_loss  # it learned


def test_a_resumed_run_keeps_the_per_epoch_test_accuracy_of_the_epochs_before_the_kill(tmp_path):
    _, _, ref = _fit(tmp_path / "ref.pt", Batches(), eval_every=1)
    with pytest.raises(Interrupt):
        _fit(tmp_path / "ck.pt", Batches(die_at_epoch=2), eval_every=1)
    _, _, resumed = _fit(tmp_path / "ck.pt", Batches(), eval_every=1)
    assert [e["test_acc"] for e in resumed["epochs"]] == [e["test_acc"] for e in ref["epochs"]]
    assert set(resumed["_windows"]) == {"base_training/epoch2", "base_training/epoch3", "base_training/eval2",
                                        "base_training/eval3"}  # only the epochs left ran in this process
    assert resumed["eval_epochs"] == 4 and resumed["eval_energy_j"] > 0


def test_evaluate_reports_accuracy_fraction():
    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
        model.bias.zero_()
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 1, 1])
    assert evaluate(model, [(x, y)], "cpu")["acc"] == 0.75
    with pytest.raises(ValueError, match="no samples"):
        evaluate(model, [], "cpu")


class _Clock:
    """A stand-in for ``time`` in greenlib.train: 30 s pass at the start of every epoch."""

    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t


def test_checkpoints_are_written_once_a_minute_and_after_the_last_epoch(tmp_path, monkeypatch):
    import greenlib.train as train_mod

    clock = _Clock()
    monkeypatch.setattr(train_mod, "time", clock)

    class Slow(Batches):
        def __iter__(self):
            clock.t += 30.0
            yield from super().__iter__()

    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(model, Slow(), TrainConfig(epochs=5, lr=0.1), "cpu", checkpoint=tmp_path / "ck.pt",
                      checkpoint_every_s=50.0)
    saved = []
    real_save = trainer._save
    monkeypatch.setattr(trainer, "_save", lambda: (saved.append(len(trainer.history)), real_save()))
    with Tracer(source="cpu", interval_s=0.05) as tr:
        trainer.fit(tr, "base_training", progress=False)
    # epochs end at 30, 60, 90, 120, 150 s: written at 60 s (>= 50 s after the start) and 120 s
    # (60 s after that), and after the last epoch
    assert saved == [2, 4, 5]
    assert len(torch.load(tmp_path / "ck.pt", weights_only=False)["history"]) == 5
    every, _, _ = _fit(tmp_path / "every.pt", Batches(), epochs=2)  # the tests' GREENLIB_CHECKPOINT_EVERY_S=0
    assert len(torch.load(tmp_path / "every.pt", weights_only=False)["history"]) == 2


def test_a_bad_checkpoint_interval_is_refused_in_one_line():
    import subprocess
    import sys

    with pytest.raises(ValueError, match=r"checkpoint_every_s=-1\.0 must be"):
        Trainer(nn.Linear(2, 2), [], TrainConfig(epochs=1), "cpu", checkpoint_every_s=-1.0)
    env = {**__import__("os").environ, "GREENLIB_CHECKPOINT_EVERY_S": "often"}
    out = subprocess.run([sys.executable, "-c", "import greenlib.train"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "GREENLIB_CHECKPOINT_EVERY_S='often' is not a number" in out.stderr


@pytest.mark.parametrize("has_counter, wait_for_samples, waits", [
    (True, None, False),   # the counter gives the energy: no epoch or evaluation window waits for a sample
    (False, None, True),   # the samples give it: every window waits for its closing sample
    (True, True, True),    # asked for (the sampling-rate study compares the sampled figures)
])
def test_epoch_windows_wait_for_a_closing_sample_only_where_the_samples_give_the_energy(
        monkeypatch, has_counter, wait_for_samples, waits):
    monkeypatch.setattr(Tracer, "has_counter", property(lambda self: has_counter))
    waited = []
    real_wait = Tracer._wait_for_coverage
    monkeypatch.setattr(Tracer, "_wait_for_coverage", lambda self, until: (waited.append(until), real_wait(self, until)))
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(model, Batches(), TrainConfig(epochs=2, lr=0.1, eval_every=1), "cpu",
                      eval_loader=[(Batches().x, Batches().y)], wait_for_samples=wait_for_samples)
    with Tracer(source="cpu", interval_s=0.05) as tr:
        summary = trainer.fit(tr, "base_training", progress=False)
        n_windows = len(tr.windows)
    assert n_windows == 4 and summary["n_windows"] == 2 and summary["energy_j"] > 0
    assert len(waited) == (4 if waits else 0)
