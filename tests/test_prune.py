"""greenlib.prune: the six pruners, the torch compatibility fixes, speed-up and the pruning run."""
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from greenlib import config, experiments, paper, paths
from greenlib.data import make_loaders, make_synthetic
from greenlib.models import build_model, model_info
from greenlib.tracer import Tracer

prune = pytest.importorskip("greenlib.prune", reason="nni is not installed")
from greenlib.prune import compat  # noqa: E402
from greenlib.prune.speedup import conv_bn_pairs, trace  # noqa: E402

TORCH_2_3 = tuple(int(v) for v in torch.__version__.split(".")[:2]) >= (2, 3)


@pytest.fixture(scope="module")
def data():
    ds = make_synthetic(0, n_train=64, n_test=32)
    train, test = make_loaders(ds, "gpu", 32, "cpu", seed=0)
    return ds, train, next(iter(test))[0][:2]


def _randomize_batchnorm(model: nn.Module, seed: int = 1) -> nn.Module:
    # as after training: BN shifts a pruned (all-zero) channel to a non-zero constant
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.5)
    return model


# -- registry ----------------------------------------------------------------------------------

def test_registry_holds_the_papers_six_pruners_by_config_name():
    assert tuple(prune.PRUNERS) == config.SECTIONS["pruning"]["pruners"].choices
    assert {n for n, s in prune.PRUNERS.items() if s.schedule == "one-shot"} == {"l1", "l2", "fpgm"}
    assert {n for n, s in prune.PRUNERS.items() if s.iterative} == {"apoz", "taylor", "activation_mean"}
    table5 = paper.load_table5().query("family == 'Pruning'")
    assert {s.method for s in prune.PRUNERS.values()} == set(table5["method"])


@pytest.mark.parametrize("name", [None, "l3", "APoZ", ["l1"]])
def test_unknown_pruner_is_a_clear_error(name):
    with pytest.raises(ValueError, match=r"unknown pruner .*; accepted: l1, l2, fpgm, apoz, taylor, activation_mean"):
        prune.get_pruner(name)


@pytest.mark.parametrize("sparsity", [0, 0.0, 1, 1.0, 1.5, -0.1, True, "0.5", float("nan")])
def test_sparsity_outside_zero_one_is_a_clear_error_before_anything_runs(sparsity):
    # tracer and example are None: anything past the checks would fail differently
    with pytest.raises(ValueError, match=r"sparsity=.*must lie in \(0, 1\)"):
        prune.prune(build_model("resnet8"), "l1", sparsity, None, None)


def test_unknown_pruner_fails_in_prune_before_anything_runs():
    with pytest.raises(ValueError, match="unknown pruner 'l3'"):
        prune.prune(build_model("resnet8"), "l3", 0.5, None, None)


def test_iterative_pruner_without_loader_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a training loader"):
        prune.prune(build_model("resnet8"), "apoz", 0.5, None, None)
    with pytest.raises(ValueError, match="iterations=0"):
        prune.prune(build_model("resnet8"), "apoz", 0.5, None, None, loader=[(1, 2)], iterations=0)


# -- the compatibility fixes (NNI issue #5768) ---------------------------------------------------

def test_compat_knows_what_this_torch_needs_and_is_idempotent():
    need = compat.needed()
    assert set(need) == {"tensorbase_qualname", "is_impure_args"}
    if TORCH_2_3:
        assert need == {"tensorbase_qualname": True, "is_impure_args": True}
    assert compat.apply() is compat.apply()  # applied once per process
    from nni.common.concrete_trace_utils.concrete_tracer import ConcreteTracer

    table = ConcreteTracer.default_autowrap_leaf_function
    assert not [f for f in table if getattr(f, "__qualname__", "").startswith("TensorBase.")]
    compat._fix_tensorbase_qualnames(ConcreteTracer)  # a second pass changes nothing
    assert len(table) == len(ConcreteTracer.default_autowrap_leaf_function)


def test_tensorbase_alias_calls_the_method_under_the_old_name():
    alias = compat.TensorBaseAlias(torch.Tensor.add)
    assert alias.__qualname__ == "_TensorBase.add" and alias.__name__ == "add"
    assert torch.equal(alias(torch.ones(2), torch.ones(2)), torch.full((2,), 2.0))


def test_is_impure_replacement_takes_torchs_new_argument():
    from nni.common.concrete_trace_utils import concrete_tracer

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    graph.output(x)
    node = next(iter(graph.nodes))
    assert concrete_tracer.node_is_impure_wrapper(node, True) is True  # placeholders are impure


def test_concrete_trace_of_a_residual_model_works_after_the_fixes(data):
    _, _, x = data
    model = build_model("resnet8").eval()
    gm = trace(model, x)  # concrete_trace with dead-code elimination: both fixes on the path
    assert torch.allclose(gm(x), model(x))
    assert all("tensor_meta" in n.meta for n in gm.graph.nodes if n.op != "output")


@pytest.mark.skipif(not TORCH_2_3, reason="the upstream bug needs torch >= 2.3")
def test_without_the_fixes_nni_fails_as_in_issue_5768():
    # documents why compat exists: if a future NNI traces on this torch, this test says so
    code = ("import torch, nni.compression.speedup\n"
            "from nni.common.concrete_trace_utils import concrete_trace\n"
            "m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
            "concrete_trace(m, {'input': torch.rand(1, 3, 8, 8)})\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # Python >= 3.12 stops earlier, at the functools.wraps(type) that compat also fixes
    symptom = ("__type_params__ must be set to a tuple" if sys.version_info >= (3, 12)
               else "has no attribute 'startswith'")
    assert out.returncode != 0 and symptom in out.stderr, out.stderr[-2000:]


# -- pruning and speed-up -------------------------------------------------------------------------

def test_config_list_groups_residual_convs_and_aligns_each_batchnorm(data):
    _, _, x = data
    model = build_model("resnet8")
    cfg = prune.config_list(model, 0.5, x)
    convs = [c for c in cfg if "sparse_ratio" in c]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    group = {c["op_names"][0]: c.get("dependency_group_id") for c in convs}
    # the stem and the two convs whose outputs are added to it (identity shortcuts) drop the same filters
    assert group["stem.0"] is not None and group["stem.0"] == group["stages.0.0.conv2"]
    aligned = {c["op_names"][0]: c["target_settings"]["weight"]["align"]["module_name"]
               for c in cfg if "target_settings" in c}
    assert aligned == conv_bn_pairs(trace(model, x)) and aligned["stem.1"] == "stem.0"


@pytest.mark.parametrize("name", list(prune.PRUNERS))
def test_every_pruner_runs_end_to_end_and_makes_the_model_physically_smaller(name, data):
    _, train, x = data
    model = build_model("resnet8")
    with Tracer(source="auto", interval_s=0.05) as tracer:
        result = prune.prune(model, name, 0.5, tracer, x, loader=train, epochs=1, iterations=2, progress=False)
    assert result.model is model and not any(m.training for m in model.modules())
    assert result.after["params"] < 0.5 * result.before["params"]
    assert result.after["flops_per_image"] < 0.5 * result.before["flops_per_image"]
    assert result.after == model_info(model) and model(x).shape == (2, 100)
    spec = prune.PRUNERS[name]
    assert result.mask_updates == (2 if spec.iterative else 1)
    windows = result.summary["windows"]
    assert windows == ["pruning/setup", "pruning/epoch0" if spec.iterative else "pruning/masks", "pruning/speedup"]
    assert result.summary["energy_j"] > 0 and result.summary["elapsed_s"] > 0


def test_an_iterative_pruning_short_of_its_mask_updates_fails_loudly(data):
    _, train, x = data
    batches = list(train)

    class Overstated:  # claims twice the batches it yields
        def __len__(self):
            return 2 * len(batches)

        def __iter__(self):
            return iter(batches)

    with Tracer(source="auto", interval_s=0.05) as tracer, pytest.raises(RuntimeError, match="of 4 mask updates"):
        prune.prune(build_model("resnet8"), "activation_mean", 0.5, tracer, x, loader=Overstated(), iterations=4,
                    progress=False)


@pytest.mark.parametrize("model_name", ["resnet8", "vgg8"])
def test_sped_up_model_outputs_equal_the_masked_models_in_eval_mode(model_name, data):
    from nni.compression.pruning import L1NormPruner

    _, _, x = data
    model = _randomize_batchnorm(build_model(model_name)).eval()
    pruner = L1NormPruner(model, prune.config_list(model, 0.5, x))
    _, masks = pruner.compress()
    with torch.no_grad():
        masked = model(x)  # wrapped: masks applied to convs and their BatchNorms
    pruner.unwrap_model()
    with torch.no_grad():
        assert not torch.allclose(model(x), masked, atol=1e-3)  # the masks do change the outputs
    before = model_info(model)["params"]
    prune.speedup_model(model, masks, x)
    assert model_info(model)["params"] < before
    with torch.no_grad():
        assert torch.allclose(model(x), masked, atol=1e-5)


def test_eval_is_reapplied_after_speedup(data):
    from nni.compression.pruning import L1NormPruner
    from nni.compression.speedup import ModelSpeedup

    _, _, x = data

    def masked_model():
        model = build_model("vgg8").eval()
        pruner = L1NormPruner(model, prune.config_list(model, 0.5, x))
        _, masks = pruner.compress()
        pruner.unwrap_model()
        return model, masks

    raw, masks = masked_model()
    ModelSpeedup(raw, x, masks, graph_module=trace(raw, x), logger=prune.backend.SPEEDUP_LOGGER).speedup_model()
    assert any(m.training for m in raw.modules())  # NNI's replacement layers come back in training mode ...
    model, masks = masked_model()
    assert not any(m.training for m in prune.speedup_model(model, masks, x).modules())  # ... ours do not


def test_vectorised_fpgm_scores_and_masks_equal_nnis(data):
    from nni.compression.pruning import FPGMPruner as NNIFPGMPruner

    _, _, x = data
    scores, masks = [], []
    for cls in (NNIFPGMPruner, prune.fpgm.FPGMPruner):
        torch.manual_seed(0)
        model = build_model("resnet8")  # small enough for NNI's loop
        pruner = cls(model, prune.config_list(model, 0.5, x))
        scores.append(pruner._calculate_metrics(pruner._collect_data()))
        masks.append(pruner.compress()[1])
    for layer, by_target in scores[0].items():
        assert torch.allclose(by_target["weight"], scores[1][layer]["weight"], rtol=1e-4)
        assert torch.equal(masks[0][layer]["weight"], masks[1][layer]["weight"])


# -- the two activation pruners rank by their own criterion ----------------------------------------

# Four channels of a 1x1 identity conv, 10 positions each, with a known answer:
#            zeros  APoZ importance (1 - APoZ)   mean activation
#   ch0:      9/10        0.1                       10      (one 100, nine negatives)
#   ch1:      0/10        1.0                        0.5
#   ch2:      5/10        0.5                        2
#   ch3:      2/10        0.8                        0.08
# At 50% sparsity APoZ keeps ch1 and ch3, Activation Mean keeps ch0 and ch2: opposite answers, and
# the weights (an identity) give the norm-based pruners nothing to choose by.
_CHANNELS = torch.tensor([
    [100.0] + [-1.0] * 9,
    [0.5] * 10,
    [4.0] * 5 + [-3.0] * 5,
    [0.1] * 8 + [-2.0] * 2,
])
_KEPT = {"apoz": [1, 3], "activation_mean": [0, 2]}


def _hand_made_pruner(name: str, iterations: int = 1):
    import nni
    from nni.compression.pruning import LinearPruner
    from nni.compression.utils import TorchEvaluator

    model = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.eye(4).view(4, 4, 1, 1))
    x = _CHANNELS.view(1, 4, 1, 10)

    def training_func(m, optimizer, training_step, lr_schedulers=None, max_steps=None, max_epochs=None):
        for _ in range(max_steps):
            optimizer.zero_grad()
            training_step((x, None), m).backward()
            optimizer.step()

    evaluator = TorchEvaluator(training_func, nni.trace(torch.optim.SGD)(model.parameters(), lr=0.0),
                               lambda batch, m: m(batch[0]).mean())
    pruner = prune.PRUNERS[name].build(model, [{"op_names": ["0"], "sparse_ratio": 0.5}], evaluator, training_steps=2)
    if iterations > 1:
        pruner = LinearPruner(pruner, interval_steps=2, total_times=iterations)
    return model, pruner


@pytest.mark.parametrize("name", ["apoz", "activation_mean"])
def test_activation_pruners_rank_filters_by_their_own_criterion(name):
    _, pruner = _hand_made_pruner(name)
    _, masks = pruner.compress()
    kept = masks["0"]["weight"].flatten(1).any(1).nonzero().flatten().tolist()
    assert kept == _KEPT[name]


def test_activation_statistics_are_collected_through_the_evaluators_hooks():
    model, pruner = _hand_made_pruner("apoz")
    pruner.compress()
    hook = pruner.hooks["0"]
    assert hook.handle is None  # registered through the evaluator, removed by it when training ended
    assert not model[0]._forward_hooks


@pytest.mark.parametrize("name", ["apoz", "activation_mean", "taylor"])
def test_iterative_schedule_raises_sparsity_linearly_to_its_target(name, monkeypatch):
    _, scheduled = _hand_made_pruner(name, iterations=2)
    seen = []
    bound = scheduled.bound_pruner
    original = bound.update_masks

    def record(masks):
        seen.append(1 - float(masks["0"]["weight"].flatten(1).any(1).float().mean()))
        original(masks)

    monkeypatch.setattr(bound, "update_masks", record)
    scheduled.compress(max_steps=4, max_epochs=None)
    assert seen == [0.25, 0.5]


# -- NNI 2.x's schedule for the iterative pruners (issue 17, item 3) --------------------------------

def test_schedules_and_scopes_are_the_configs_choices():
    schema = config.SECTIONS["pruning"]
    assert tuple(prune.ITERATIVE_SCHEDULES) == schema["iterative_schedule"].choices
    assert tuple(prune.SCOPES) == schema["scope"].choices
    with pytest.raises(ValueError, match=r"unknown iterative schedule 'agp'; accepted: nni2, linear"):
        prune.get_iterative_schedule("agp")
    with pytest.raises(ValueError, match=r"unknown pruning scope 'A'; accepted: pruned-a, every-conv"):
        prune.check_scope("A")


@pytest.mark.parametrize("profile", config.PROFILES)
def test_profiles_prune_as_nnis_example(profile):
    cfg = config.resolve("pruning", profile=profile)
    assert cfg.scope == "pruned-a" and cfg.iterative_schedule == "nni2"
    assert "nni-vgg16" in cfg.models and "vgg16" not in cfg.models
    short, long = prune.finetune_lengths(cfg)
    assert short < long
    if profile == "paper":
        assert (short, long, cfg.prune_epochs) == (20, 160, 1)  # Table 3's TEC vs the text's 160; NNI: 1 epoch
        assert cfg.prune_iterations == 4  # the "4 updates" variant, used with iterative_schedule="linear"


@pytest.mark.parametrize("name", ["apoz", "activation_mean", "taylor"])
def test_nni2_schedule_masks_once_at_the_target_from_the_first_batch_and_trains_on(name, data, monkeypatch):
    _, train, x = data
    assert len(train) == 2  # two batches: statistics from all steps would read both
    from nni.compression.pruning import TaylorPruner

    updates, collected = [], []
    target_cls = {"apoz": prune.APoZPruner, "activation_mean": prune.ActivationMeanPruner, "taylor": TaylorPruner}[name]
    original = target_cls.update_masks

    def record(self, masks):
        kept = [float(m["weight"].flatten(1).any(1).float().mean()) for m in masks.values()
                if m.get("weight") is not None and m["weight"].dim() > 1]  # conv weights, not BatchNorm's
        updates.append((self._current_step, min(kept)))
        original(self, masks)

    monkeypatch.setattr(target_cls, "update_masks", record)
    if name != "taylor":
        totals = target_cls.channel_totals
        monkeypatch.setattr(target_cls, "channel_totals", lambda self, a: collected.append(1) or totals(self, a))
    model = build_model("resnet8")
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    with Tracer(source="auto", interval_s=0.05) as tracer:
        result = prune.prune(model, name, 0.5, tracer, x, loader=train, epochs=1, iterations=4, schedule="nni2",
                             progress=False)
    assert updates == [(1, 0.5)]  # one update, after the first step, at the target sparsity (not ramped)
    assert result.mask_updates == 1 and result.summary["iterative_schedule"] == "nni2"
    assert result.summary["statistic_steps"] == 1 and result.summary["interval_steps"] == 2
    if name != "taylor":
        assert len(collected) == n_convs  # each pruned conv's activations of one batch, not of both
    epochs = result.summary["epochs"]
    assert len(epochs) == 1 and epochs[0]["images"] == 64  # both batches: the epoch goes on after the masks
    assert result.after["flops_per_image"] < 0.5 * result.before["flops_per_image"]


def test_linear_schedule_reads_every_step_and_keeps_its_updates(data, monkeypatch):
    _, train, x = data
    collected = []
    totals = prune.APoZPruner.channel_totals
    monkeypatch.setattr(prune.APoZPruner, "channel_totals", lambda self, a: collected.append(1) or totals(self, a))
    model = build_model("resnet8")
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    with Tracer(source="auto", interval_s=0.05) as tracer:
        result = prune.prune(model, "apoz", 0.5, tracer, x, loader=train, epochs=1, iterations=1, schedule="linear",
                             progress=False)
    assert len(collected) == 2 * n_convs and result.summary["statistic_steps"] == 2


# -- the pruning scope (issue 17, item 2) -----------------------------------------------------------

def test_pruned_a_is_nnis_example_list_on_nnis_vgg16():
    model = build_model("nni-vgg16")
    choice = prune.resolve_scope("pruned-a", "nni-vgg16", model)
    # basic_pruners_torch.py (NNI v2.3) line 255, verbatim
    assert choice.layers == ("feature.0", "feature.24", "feature.27", "feature.30", "feature.34", "feature.37")
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert [convs.index(n) + 1 for n in choice.layers] == [1, 8, 9, 10, 11, 12]
    assert choice.applied == "pruned-a" and "convs 1, 8, 9, 10, 11, 12 of 13" in choice.note


def test_pruned_a_on_nnis_vgg19_skips_the_names_that_are_batchnorms_as_nnis_example():
    model = build_model("nni-vgg19")
    choice = prune.resolve_scope("pruned-a", "nni-vgg19", model)
    assert choice.layers == ("feature.0", "feature.27", "feature.30")
    assert all(isinstance(model.get_submodule(n), nn.BatchNorm2d) for n in ("feature.24", "feature.34", "feature.37"))
    assert "convs 1, 9, 10 of 16" in choice.note and "skipped" in choice.note


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "vgg16"])
def test_pruned_a_falls_back_to_every_conv_where_nnis_list_names_no_layer_and_says_so(name):
    choice = prune.resolve_scope("pruned-a", name, build_model(name))
    assert choice.requested == "pruned-a" and choice.applied == "every-conv" and choice.layers is None
    assert f"names no layer of {name}" in choice.note and "dependency-aware" in choice.note


def test_config_list_with_layers_prunes_only_those_and_rejects_others(data):
    _, _, x = data
    model = build_model("nni-vgg16")
    layers = prune.resolve_scope("pruned-a", "nni-vgg16", model).layers
    cfg = prune.config_list(model, 0.5, x, layers=layers)
    pruned = sorted(n for c in cfg if "sparse_ratio" in c for n in c["op_names"])
    assert pruned == sorted(layers)
    aligned = sorted(c["target_settings"]["weight"]["align"]["module_name"] for c in cfg if "target_settings" in c)
    assert aligned == sorted(layers)  # only the pruned convs' BatchNorms follow
    with pytest.raises(ValueError, match=r"layers \['feature.1'\] are not Conv2d modules"):
        prune.config_list(model, 0.5, x, layers=["feature.0", "feature.1"])


@pytest.mark.parametrize("scope, low, high", [("pruned-a", 0.55, 0.72), ("every-conv", 0.2, 0.3)])
def test_default_scope_on_nnis_vgg16_keeps_pruned_a_flops(scope, low, high, data):
    # the issue: pruned-A keeps about 0.6 of VGG16's FLOPs (the paper's APoZ/baseline IEC: 0.63);
    # every conv at 50% keeps a quarter (what greenlib did before)
    assert config.resolve("pruning", profile="paper").scope == "pruned-a"
    _, _, x = data
    model = build_model("nni-vgg16")
    layers = prune.resolve_scope(scope, "nni-vgg16", model).layers
    with Tracer(source="auto", interval_s=0.05) as tracer:
        result = prune.prune(model, "l1", 0.5, tracer, x, layers=layers, progress=False)
    ratio = result.after["flops_per_image"] / result.before["flops_per_image"]
    assert low <= ratio <= high
    if scope == "pruned-a":
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        assert [c.out_channels for c in convs] == [32, 64, 128, 128, 256, 256, 256, 256, 256, 256, 256, 256, 512]


# -- the paper's numbers beside ours (issue 17, items 2 and 4) ----------------------------------------

def test_paper_pruning_rows_imply_a_short_fine_tune_and_an_iec_ratio_near_pruned_a():
    rows = prune.compare.paper_pruning()
    assert set(rows["model"]) == {"nni-vgg16"} and len(rows) == 6
    apoz = rows.set_index("method").loc["APoZ Pruner"]
    assert apoz["iec_ratio"] == pytest.approx(5.612e-7 / 8.931e-7)  # ~0.63
    # Table 3/5 pruning TEC is 8-20 W·h above VGG16's 138.59: 9-23 epochs of the 160-epoch base
    over = rows["tec_over_base_wh"]
    assert over.min() == pytest.approx(8.11) and over.max() == pytest.approx(19.77)
    assert 9 < rows["base_epochs_equivalent"].min() < 10 and 22 < rows["base_epochs_equivalent"].max() < 23
    assert rows["crossover_mui"].between(1e7, 1e9).all()  # each pruner overtakes the baseline at some MUI


def _fake_runs():
    base = {"model": "nni-vgg16", "hardware": "GPU", "base_acc": 0.8, "tec_base_wh": 100.0, "base_iec_wh": 1e-6,
            "dataset": "synthetic", "flops_ratio": 0.66, "params_ratio": 0.41, "scope_applied": "pruned-a"}
    rows = []
    for ft, tec_ft, acc in ((20, 10.0, 0.78), (160, 80.0, 0.79)):
        for seed in (0, 1):
            rows.append(base | {"pruner": "apoz", "method": "APoZ Pruner", "seed": seed, "finetune_epochs": ft,
                                "acc": acc, "tec_finetune_wh": tec_ft, "tec_wh": 100.0 + 1.0 + tec_ft,
                                "iec_wh": 6e-7})
    return pd.DataFrame(rows)


def test_finetune_comparison_gives_g_and_the_crossover_with_the_base_per_length():
    comp = prune.compare.finetune_comparison(_fake_runs(), muis=(1e9,)).set_index("label")
    assert list(comp.index) == ["nni-vgg16 baseline", "apoz · 20 ft epochs", "apoz · 160 ft epochs"]
    short, long = comp.loc["apoz · 20 ft epochs"], comp.loc["apoz · 160 ft epochs"]
    # crossover by hand: A (m Ib + Tb) = B (m Ia + Ta), A = 0.78^2 (pruned), B = 0.8^2 (base)
    a, b = 0.78 ** 2, 0.8 ** 2
    assert short["crossover_mui"] == pytest.approx((a * 100.0 - b * 111.0) / (b * 6e-7 - a * 1e-6))
    assert long["crossover_mui"] > short["crossover_mui"]  # the long fine-tune pays off only at a higher MUI
    assert short["G(1B)"] == pytest.approx(1e4 * 0.78 ** 2 / (1e9 * 6e-7 + 111.0))
    assert comp.loc["nni-vgg16 baseline", "G(1B)"] == pytest.approx(1e4 * 0.64 / (1e3 + 100.0))
    assert short["n_seeds"] == 2 and np.isnan(comp.loc["nni-vgg16 baseline", "crossover_mui"])


def test_size_ratios_sit_beside_the_papers_iec_ratio():
    ratios = prune.compare.size_ratios(_fake_runs()).iloc[0]
    assert (ratios["flops_ratio"], ratios["params_ratio"]) == (0.66, 0.41)
    assert ratios["iec_ratio"] == pytest.approx(0.6)
    assert ratios["paper_iec_ratio"] == pytest.approx(5.612e-7 / 8.931e-7)


# -- the pruning run -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ctx():
    # sampling_interval_s=0.07: a base configuration no other test trains, so this file's base is its own
    cfg = config.resolve("pruning", profile="smoke", models=["resnet8"], pruners=["l1", "apoz"], train_size=64,
                         test_size=64, batch_size=32, iec_batch_size=16, iec_min_seconds=0.05, base_epochs=1,
                         sampling_interval_s=0.07)
    return experiments.prepare(cfg)


def test_run_pruning_writes_complete_folders_and_reuses_the_base(ctx, monkeypatch):
    trained = []
    train_and_measure = experiments.train_and_measure

    def counting(*args, **kwargs):
        trained.append(kwargs.get("stage", "base_training"))
        return train_and_measure(*args, **kwargs)

    monkeypatch.setattr(experiments, "train_and_measure", counting)
    results = {p: prune.run_pruning(ctx, "resnet8", p, seed=0, progress=False) for p in ("l1", "apoz")}
    assert trained == ["base_training", "finetuning", "finetuning"]  # the base trained once ...
    bases = {r["metrics"]["base_run_id"] for r in results.values()}
    assert len(bases) == 1  # ... and shared by both pruners, as the stored baseline run
    base = ctx.store.open(json.loads((ctx.store.root / bases.pop() / "config.json").read_text())).result
    assert base["config"]["kind"] == "baseline" and base["config"]["epochs"] == 1
    for pruner, res in results.items():
        folder = ctx.store.root / res["run_id"]
        for name in ("config.json", "environment.json", "metrics.json", "result.json", "model.pt", "pruned_model.pt",
                     "stages/base_training.json", "stages/pruning.json", "stages/finetuning.json",
                     "stages/inference.json", "traces/pruning.csv.gz", "traces/finetuning.csv.gz"):
            assert (folder / name).exists(), (pruner, name)
        assert not (folder / "checkpoint.pt").exists()
        m, cfg = res["metrics"], res["config"]
        assert cfg["kind"] == "pruning" and cfg["pruner"] == pruner and cfg["sparsity"] == 0.5
        assert cfg["prune_epochs"] == (1 if pruner == "apoz" else 0)
        assert cfg["scope"] == "pruned-a" and cfg["iterative_schedule"] == ("nni2" if pruner == "apoz" else "none")
        assert cfg["prune_iterations"] == 1 and cfg["finetune_epochs"] == ctx.cfg.finetune_epochs
        # NNI's example names no resnet8 layer: every conv, and the record says so
        assert m["scope_applied"] == "every-conv" and m["pruned_layers"] is None and "names no layer" in m["scope_note"]
        assert m["flops_ratio"] == m["flops_per_image"] / m["flops_before"] and 0 < m["flops_ratio"] < 0.5
        assert m["params_ratio"] == m["params"] / m["params_before"]
        assert m["tec_base_wh"] == base["metrics"]["tec_wh"] == res["stages"]["base_training"]["energy_wh"]
        assert res["stages"]["base_training"]["reused_from"] == base["run_id"]
        assert m["tec_prune_wh"] == res["stages"]["pruning"]["energy_wh"] > 0
        assert m["tec_finetune_wh"] == res["stages"]["finetuning"]["energy_wh"] > 0
        assert m["tec_wh"] == pytest.approx(m["tec_base_wh"] + m["tec_prune_wh"] + m["tec_finetune_wh"])
        assert m["params"] < m["params_before"] == 83892 and m["flops_per_image"] < m["flops_before"]
        assert 0 <= m["acc"] <= 1 and m["iec_wh"] > 0 and m["method"] == prune.PRUNERS[pruner].method
        # the stored weights reload into the stored pruned module
        model = torch.load(folder / "pruned_model.pt", weights_only=False)
        model.load_state_dict(torch.load(folder / "model.pt", weights_only=True))
        assert model_info(model)["params"] == m["params"]
    stored = prune.stored_prunings(ctx.cfg)
    assert sorted(stored["pruner"]) == ["apoz", "l1"]


def test_finished_pruning_run_is_a_cache_hit(ctx, monkeypatch):
    first = prune.run_pruning(ctx, "resnet8", "l1", seed=0, progress=False)

    def boom(*a, **k):
        raise AssertionError("a cached run was recomputed")

    monkeypatch.setattr(experiments, "base_model", boom)
    monkeypatch.setattr("greenlib.prune.run.prune", boom)
    assert prune.run_pruning(ctx, "resnet8", "l1", seed=0, progress=False) == first


def test_a_run_killed_during_finetuning_resumes_without_pruning_again(ctx, monkeypatch):
    first = prune.run_pruning(ctx, "resnet8", "l1", seed=0, progress=False)
    folder = ctx.store.root / first["run_id"]
    for name in ("result.json", "metrics.json", "stages/finetuning.json", "stages/inference.json"):
        (folder / name).unlink()

    def boom(*a, **k):
        raise AssertionError("pruned again although the pruned model was stored")

    monkeypatch.setattr("greenlib.prune.run.prune", boom)
    again = prune.run_pruning(ctx, "resnet8", "l1", seed=0, progress=False)
    assert again["stages"]["pruning"] == first["stages"]["pruning"]
    assert again["metrics"]["params"] == first["metrics"]["params"]


def test_bad_pruner_or_sparsity_fails_before_anything_trains_or_is_stored(ctx, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("trained before the arguments were checked")

    monkeypatch.setattr(experiments, "base_model", boom)
    monkeypatch.setattr(experiments, "train_and_measure", boom)
    folders = sorted(ctx.store.root.iterdir()) if ctx.store.root.exists() else []
    with pytest.raises(ValueError, match="unknown pruner 'l3'"):
        prune.run_pruning(ctx, "resnet8", "l3", seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown model 'resnet9'"):
        prune.run_pruning(ctx, "resnet9", "l1", seed=0, progress=False)
    bad = config.Resolved("pruning", "smoke", ctx.cfg.to_dict() | {"sparsity": 1.5})  # past config's own check
    bad_ctx = experiments.Context(bad, ctx.device, ctx.dataset, ctx.store, ctx.environment)
    with pytest.raises(ValueError, match=r"sparsity=1.5: .*\(0, 1\)"):
        prune.run_pruning(bad_ctx, "resnet8", "l1", seed=0, progress=False)
    assert (sorted(ctx.store.root.iterdir()) if ctx.store.root.exists() else []) == folders
    with pytest.raises(config.ConfigError, match="sparsity"):
        config.resolve("pruning", sparsity=1.0)


def test_run_result_is_plain_json(ctx):
    res = prune.run_pruning(ctx, "resnet8", "l1", seed=0, progress=False)
    assert json.loads(json.dumps(res)) == res


# -- the slim wheel carried to machines without PyPI ------------------------------------------------

def test_slim_wheel_drops_the_web_ui_and_stays_installable(tmp_path):
    import importlib.util
    import zipfile

    script = paths.REPO_ROOT / "scripts" / "build_nni_wheel.py"
    spec = importlib.util.spec_from_file_location("build_nni_wheel", script)
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    upstream = tmp_path / "nni-3.0-py3-none-manylinux1_x86_64.whl"
    info = "nni-3.0.dist-info/"
    with zipfile.ZipFile(upstream, "w") as z:
        z.writestr("nni/__init__.py", "VERSION = 3\n")
        z.writestr("nni_node/main.js", "// web UI\n")
        z.writestr(info + "METADATA", "Metadata-Version: 2.1\nName: nni\nVersion: 3.0\n\nbody\n")
        z.writestr(info + "WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-manylinux1_x86_64\n")
        z.writestr(info + "top_level.txt", "nni\nnni_node\n")
        z.writestr(info + "RECORD", "stale\n")
    out = build.slim(upstream, tmp_path / "out")
    assert out.name == "nni-3.0+slim-py3-none-any.whl"
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        new = "nni-3.0+slim.dist-info/"
        assert not any(n.startswith("nni_node") for n in names) and "nni/__init__.py" in names
        assert "Version: 3.0+slim" in z.read(new + "METADATA").decode()
        assert "Tag: py3-none-any" in z.read(new + "WHEEL").decode()
        assert z.read(new + "top_level.txt").decode() == "nni\n"
        record = z.read(new + "RECORD").decode().splitlines()
        assert sorted(r.split(",")[0] for r in record) == sorted(names)
    assert build.slim(upstream, tmp_path / "again").read_bytes() == out.read_bytes()  # byte-stable
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                           str(site), str(out)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (site / "nni" / "__init__.py").exists() and not (site / "nni_node").exists()


def test_wraps_type_fix_skips_type_params_only_for_type(monkeypatch):
    """Python 3.12's functools.wraps(type) failure (seen on the GPU machine), simulated on any Python."""
    import functools

    from greenlib.prune import compat

    seen = []

    def strict(wrapper, wrapped, assigned=functools.WRAPPER_ASSIGNMENTS, updated=functools.WRAPPER_UPDATES):
        if wrapped is type and "__type_params__" in assigned:
            raise TypeError("__type_params__ must be set to a tuple")
        seen.append((wrapped, tuple(assigned)))
        return wrapper

    monkeypatch.setattr(functools, "update_wrapper", strict)
    assert compat._fix_wraps_type() is True
    assert compat._fix_wraps_type() is False  # idempotent
    functools.update_wrapper(lambda: None, type, assigned=("__doc__", "__type_params__"))
    functools.update_wrapper(lambda: None, int, assigned=("__doc__", "__type_params__"))
    assert seen == [(type, ("__doc__",)), (int, ("__doc__", "__type_params__"))]
