"""A baseline run end to end on tiny data: a complete run folder, then a cache hit."""
import json

import pytest

from greenlib import config, experiments, report
from greenlib.results import ResultsStore


@pytest.fixture(scope="module")
def ctx():
    cfg = config.resolve("baselines", profile="smoke", models=["resnet8"], train_size=64, test_size=64,
                         batch_size=32, iec_batch_size=16, iec_min_seconds=0.05)
    return experiments.prepare(cfg)


def test_two_epoch_run_writes_a_complete_run_folder(ctx):
    res = experiments.run_baseline(ctx, "resnet8", seed=0, progress=False)
    folder = ctx.store.root / res["run_id"]
    for name in ("config.json", "environment.json", "metrics.json", "result.json", "model.pt",
                 "stages/base_training.json", "stages/inference.json", "traces/base_training.csv.gz"):
        assert (folder / name).exists(), name
    assert not (folder / "checkpoint.pt").exists()  # removed once the run is complete
    m = res["metrics"]
    assert 0 <= m["acc"] <= 1 and m["tec_wh"] > 0 and m["iec_wh"] > 0
    assert m["energy_measured_by"] in ("cpu-estimate", "cpu-rapl") and m["params"] == 83892
    assert [e["epoch"] for e in res["stages"]["base_training"]["epochs"]] == [0, 1]
    env = json.loads((folder / "environment.json").read_text())
    assert env["dataset"] == "synthetic" and "NOT CIFAR-100" in env["dataset_description"]
    assert env["torch"] and "git_commit" in env and res["config"]["hardware"] == "cpu"


def test_finished_config_is_a_cache_hit_and_not_retrained(ctx, monkeypatch):
    first = experiments.run_baseline(ctx, "resnet8", seed=0, progress=False)

    def boom(*a, **k):
        raise AssertionError("a cached run was retrained")

    monkeypatch.setattr(experiments, "train_and_measure", boom)
    assert experiments.run_baseline(ctx, "resnet8", seed=0, progress=False) == first


def test_stored_baselines_select_the_notebook_parameters_on_any_hardware(ctx):
    experiments.run_baseline(ctx, "resnet8", seed=0, progress=False)
    runs = experiments.stored_baselines(ctx.cfg)
    assert list(runs["model"]) == ["resnet8"]
    other = config.resolve("baselines", profile="smoke", models=["resnet8"], train_size=64, test_size=64,
                           batch_size=32, iec_batch_size=16, iec_min_seconds=0.05, epochs=3)
    assert experiments.stored_baselines(other).empty  # other epochs: another run
    table = report.greeness_table(runs)
    assert table.loc[0, "G(500M)"] > 0 and "label" in table


def test_cuda_device_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(ValueError, match="device='cuda' but no CUDA GPU is visible"):
        experiments.resolve_device("cuda")


def test_cpu_work_is_traced_on_the_cpu_even_where_a_gpu_is_visible(monkeypatch):
    """``auto`` on a CPU device must not pick NVML: it would record an idle GPU as the run's energy."""
    import torch
    from test_tracer_nvml import fake_nvml

    from greenlib.tracer import sources

    monkeypatch.setattr(sources, "NvmlDevices", lambda: fake_nvml(count=1))
    gpu = sources.open_source("auto", None)  # the fake GPU is what plain ``auto`` would trace
    assert gpu.name == "counter"
    gpu.close()
    tracer = experiments.device_tracer(torch.device("cpu"), "auto", 0.1)
    assert tracer.source_name == "cpu" and tracer.gpus == [-1]  # -1: the CPU package


@pytest.mark.parametrize("source", ["counter", "nvml", "smi"])
def test_a_gpu_source_for_cpu_work_fails_before_anything_trains(source, monkeypatch):
    cfg = config.resolve("baselines", profile="smoke", device="cpu", energy_source=source)
    monkeypatch.setattr(experiments, "load_dataset", lambda *a, **k: pytest.fail("the dataset was loaded"))
    with pytest.raises(ValueError, match=f"energy_source='{source}' measures a GPU, but the work runs on "
                                         "device='cpu'; use energy_source='auto' or 'cpu'"):
        experiments.prepare(cfg)


def test_base_model_reuses_the_baseline_run_and_retrains_when_weights_are_gone(ctx):
    first = experiments.run_baseline(ctx, "resnet8", seed=0, progress=False)
    model, res = experiments.base_model(ctx, "resnet8", seed=0, epochs=ctx.cfg.epochs, progress=False)
    assert res == first and not model.training
    (ctx.store.root / res["run_id"] / "model.pt").unlink()
    with pytest.warns(UserWarning, match="no stored weights; regenerating them"):
        model2, res2 = experiments.base_model(ctx, "resnet8", seed=0, epochs=ctx.cfg.epochs, progress=False)
    assert res2 == res  # the stored measurement is kept
    assert (ctx.store.root / res["run_id"] / "model.pt").exists()


def test_regenerating_lost_weights_resumes_from_its_checkpoint(ctx, monkeypatch):
    """A lent machine can go back mid-way through the ~28 minutes a ResNet56 teacher's weights take."""
    import torch

    from greenlib.results import REGENERATE_CHECKPOINT
    from greenlib.train import Trainer

    assert ctx.cfg.epochs >= 2
    res = experiments.run_baseline(ctx, "resnet8", seed=0, progress=False)
    weights = ctx.store.root / res["run_id"] / "model.pt"
    checkpoint = weights.with_name(REGENERATE_CHECKPOINT)
    weights.unlink(missing_ok=True)
    with pytest.warns(UserWarning, match=r"regenerating them .*kept\)$"):  # nothing to resume from
        experiments.base_model(ctx, "resnet8", seed=0, epochs=ctx.cfg.epochs, progress=False)
    reference = torch.load(weights, weights_only=True)
    assert not checkpoint.exists()

    weights.unlink()
    save = Trainer._save

    def killed_after_the_first_checkpoint(self):
        save(self)
        raise KeyboardInterrupt  # the machine went back
    monkeypatch.setattr(Trainer, "_save", killed_after_the_first_checkpoint)
    with pytest.warns(UserWarning, match="regenerating them"), pytest.raises(KeyboardInterrupt):
        experiments.base_model(ctx, "resnet8", seed=0, epochs=ctx.cfg.epochs, progress=False)
    assert not weights.exists() and len(torch.load(checkpoint, weights_only=False)["history"]) == 1
    monkeypatch.undo()

    with pytest.warns(UserWarning, match=f"resuming from its {REGENERATE_CHECKPOINT}"):
        experiments.base_model(ctx, "resnet8", seed=0, epochs=ctx.cfg.epochs, progress=False)
    assert not checkpoint.exists()  # removed once the weights are written
    resumed = torch.load(weights, weights_only=True)
    assert resumed.keys() == reference.keys() and all(torch.equal(resumed[k], reference[k]) for k in reference)
