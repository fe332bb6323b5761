import math

import pytest
import torch
from torch import nn

from greenlib.tracer import Tracer
from greenlib.train import Trainer, TrainConfig, evaluate, lr_at, merge_windows


def test_step_schedule_divides_at_milestones():
    lrs = [lr_at(e, 160, 0.1, "step") for e in (0, 79, 80, 119, 120, 159)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_schedule_starts_at_lr_and_decays_monotonically():
    lrs = [lr_at(e, 10, 0.05, "cosine") for e in range(10)]
    assert lrs[0] == 0.05 and all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] > 0


@pytest.mark.parametrize("kw, word", [({"epochs": 0}, "epochs=0"), ({"epochs": 2, "lr": 0}, "lr=0"),
                                      ({"epochs": 2, "schedule": "linear"}, "schedule='linear'")])
def test_train_config_rejects_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**kw)


def test_graph_capture_needs_cuda():
    with pytest.raises(ValueError, match="graph_capture=True needs a CUDA device"):
        Trainer(nn.Linear(2, 2), [], TrainConfig(epochs=1, graph_capture=True), "cpu")


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


def _fit(checkpoint, loader, epochs=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    trainer = Trainer(model, loader, TrainConfig(epochs=epochs, lr=0.1), "cpu", checkpoint=checkpoint)
    with Tracer(source="cpu", interval_s=0.05) as tr:
        summary = trainer.fit(tr, "base_training", progress=False)
    return model, trainer, summary


def test_killed_run_resumes_from_checkpoint_and_ends_like_an_uninterrupted_one(tmp_path):
    ref, _, ref_summary = _fit(tmp_path / "ref.pt", Batches())
    with pytest.raises(Interrupt):
        _fit(tmp_path / "ck.pt", Batches(die_at_epoch=2))
    state = torch.load(tmp_path / "ck.pt", weights_only=False)
    assert len(state["history"]) == 2  # epochs 0 and 1 were finished and kept
    resumed, trainer, summary = _fit(tmp_path / "ck.pt", Batches())
    for p, q in zip(ref.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert [e["epoch"] for e in summary["epochs"]] == [0, 1, 2, 3]
    assert summary["n_windows"] == 4 and summary["energy_source"] in ("cpu-estimate", "cpu-rapl")
    assert summary["elapsed_s"] > 0 and summary["energy_j"] > 0
    assert trainer.history[-1].train_loss < trainer.history[0].train_loss  # it learned


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
