"""The CIFAR model zoo: registry, shapes, distillation features, sizes, FLOPs, traceability."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch import nn

from greenlib import config
from greenlib.models import MODELS, ZooModel, build_model, count_params, model_info

NAMES = list(MODELS)

# Exact parameter counts (num_classes=100). Each equals the count of the same model as defined in
# RepDistiller (github.com/HobbitLong/RepDistiller, models/*.py: the zoo of CRD, Tian et al.,
# ICLR 2020), checked once outside this repo by loading our state_dicts into those definitions,
# tensor for tensor, and comparing features and logits. They round to the sizes usually quoted
# for these CIFAR-100 models (resnet20 0.28M, resnet56 0.86M, resnet110 1.7M, wrn-40-2 2.26M,
# resnet8x4 1.2M, resnet32x4 7.4M, vgg8 3.9M, vgg13 9.4M). ResNet18 with a CIFAR stem
# (kuangliu/pytorch-cifar): 11,173,962 for 10 classes + 90 * 513 = 11,220,132 for 100.
PARAMS = {
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436, "vgg19": 20_086_692,
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn-16-1": 180_916, "wrn-16-2": 703_284, "wrn-40-1": 569_780, "wrn-40-2": 2_255_156,
    "resnet18": 11_220_132, "resnet34": 21_328_292, "resnet50": 23_705_252,
    "mobilenetv2": 812_836, "shufflenetv1": 949_258, "shufflenetv2": 1_355_528,
    # NNI's examples/model_compress/models/cifar10/vgg.py with a 100-class head (see test_nni_vgg_*)
    "nni-vgg16": 15_033_892, "nni-vgg19": 20_344_868,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Batch-2 forwards gain nothing from intra-op threads; on a busy 2-core machine spinning
    # OpenMP workers made this file 10x slower (100 s instead of 10 s).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    """One seeded instance per name, shared by the read-only tests (each sets the mode it needs)."""
    torch.manual_seed(0)
    return build_model(name)


def _images(n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


# --- registry -----------------------------------------------------------------------------------

def test_registry_names_are_config_zoo_names():
    assert tuple(MODELS) == config.ZOO_NAMES


def test_unknown_name_raises_naming_it_and_listing_accepted():
    with pytest.raises(ValueError, match="resnet99") as err:
        build_model("resnet99")
    for name in config.ZOO_NAMES:
        assert name in str(err.value)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "100"])
def test_bad_num_classes_raises(bad):
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet8", num_classes=bad)


def test_num_classes_sets_classifier():
    model = build_model("resnet8", num_classes=10)
    assert model.classifier.out_features == 10
    assert model(_images()).shape == (2, 10)


# --- forward and features -----------------------------------------------------------------------

# Post-activation families: a stage's output is ReLU of its preact. (WRN's preact is the next BN's
# output and MobileNetV2's stages end linearly, as in RepDistiller.)
POST_ACTIVATION = [n for n in NAMES if not n.startswith(("wrn", "mobilenet"))]


@pytest.mark.parametrize("name", NAMES)
def test_forward_and_extract(name):
    model = _model(name)
    assert isinstance(model, ZooModel)
    x = _images()
    with torch.no_grad():
        assert model.train()(x).shape == (2, 100)
        model.eval()
        logits = model(x)
        feats, ext_logits = model.extract(x)
        pre, pre_logits = model.extract(x, preact=True)
    assert logits.shape == (2, 100)
    channels = model.feature_channels()
    assert len(feats) == len(channels) >= 5  # stem, >= 3 stages, pooled vector
    assert [f.shape[1] for f in feats] == channels
    assert all(f.dim() == 4 and f.shape[0] == 2 for f in feats[:-1])
    assert feats[-1].shape == (2, channels[-1])  # the pooled vector the classifier reads
    torch.testing.assert_close(ext_logits, logits)
    torch.testing.assert_close(model.classifier(feats[-1]), logits)
    # preact swaps the stages' outputs only: same shapes, same stem, vector and logits
    torch.testing.assert_close(pre_logits, logits)
    assert [f.shape for f in pre] == [f.shape for f in feats]
    torch.testing.assert_close(pre[0], feats[0])
    torch.testing.assert_close(pre[-1], feats[-1])
    if name in POST_ACTIVATION:
        for p, f in zip(pre[1:-1], feats[1:-1]):
            torch.testing.assert_close(torch.relu(p), f)
            assert (p < 0).any()  # really taken before the ReLU


@pytest.mark.parametrize("name", ["resnet8", "wrn-16-1"])
def test_features_carry_gradients(name):
    model = build_model(name).train()
    feats, logits = model.extract(_images(), preact=True)
    sum(f.pow(2).mean() for f in feats).backward()
    assert all(p.grad is not None for p in model.feature_modules().parameters())


def test_feature_modules_exclude_classifier():
    for name in ("resnet8", "wrn-16-1", "vgg8", "mobilenetv2", "shufflenetv1"):
        model = _model(name)
        ids = {id(p) for p in model.feature_modules().parameters()}
        assert not ids & {id(p) for p in model.classifier.parameters()}
        assert next(iter(model.feature_modules())) is model.stem


# --- sizes and FLOPs ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_param_counts_match_sources(name):
    assert count_params(_model(name)) == PARAMS[name]


def test_model_info_by_name_and_by_model_agree_and_restore_mode():
    model = build_model("resnet8").train()
    assert model_info(model) == model_info("resnet8")
    assert model.training


def test_flops_count_convs_and_linear_as_two_flops_per_mac():
    # vgg8 on 32x32: 3x3 convs 3->64 @32x32, 64->128 @16x16, 128->256 @8x8, 256->512 @4x4,
    # 512->512 @4x4, then Linear(512, 100); BN, ReLU, pooling and bias adds are not counted.
    macs = 9 * (3 * 64 * 32**2 + 64 * 128 * 16**2 + 128 * 256 * 8**2 + 256 * 512 * 4**2 + 512 * 512 * 4**2) + 512 * 100
    info = model_info("vgg8")
    assert {k: info[k] for k in ("params", "flops_per_image", "macs_per_image")} == {
        "params": PARAMS["vgg8"], "flops_per_image": 2 * macs, "macs_per_image": macs}


def test_activations_count_every_element_an_operator_writes():
    # conv 4x32x32 = 4096, BN 4096, ReLU (in place: it still writes) 4096, flatten (a view) 0, Linear 10
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Flatten(),
                          nn.Linear(4096, 10))
    assert model_info(model)["activations_per_image"] == 3 * 4096 + 10
    assert model_info(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)))["activations_per_image"] == 10


def test_deep_narrow_resnets_write_more_per_flop_than_vggs():
    # why greenlib.cost scales by activations: ResNet56 has under half VGG13's FLOPs and over twice its activations
    r56, v13 = model_info("resnet56"), model_info("vgg13")
    assert r56["flops_per_image"] < 0.5 * v13["flops_per_image"]
    assert r56["activations_per_image"] > 2 * v13["activations_per_image"]


def test_flops_positive_and_ordered():
    flops = {name: model_info(_model(name))["flops_per_image"] for name in NAMES}
    assert all(f > 0 for f in flops.values())
    assert flops["resnet110"] > flops["resnet56"] > flops["resnet20"] > flops["resnet8"]
    assert flops["vgg19"] > flops["vgg16"] > flops["vgg13"] > flops["vgg11"] > flops["vgg8"]
    assert flops["nni-vgg19"] > flops["nni-vgg16"]
    assert flops["resnet32x4"] > flops["resnet8x4"]
    assert flops["wrn-40-2"] > flops["wrn-16-2"] > flops["wrn-16-1"]
    assert flops["resnet50"] > flops["resnet34"] > flops["resnet18"]
    assert flops["mobilenetv2"] < flops["shufflenetv1"] < flops["resnet20"]


# --- NNI's VGG (the paper's baselines, pruning and quantization) ------------------------------------

# NNI's defaultcfg (examples/model_compress/models/cifar10/vgg.py, lines 9-10): "M" is a max-pool.
NNI_CFG = {
    "nni-vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "nni-vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


@pytest.mark.parametrize("name, params_m, mflops", [("nni-vgg16", 15.03, 627), ("nni-vgg19", 20.34, 797)])
def test_nni_vgg_size_and_flops_as_the_issue_states(name, params_m, mflops):
    info = model_info(name)  # torch's FLOP counter, on the meta device
    assert round(info["params"] / 1e6, 2) == params_m
    assert round(info["flops_per_image"] / 1e6) == mflops


def test_repdistillers_vgg16_is_another_network():
    # three pools, global average pool, one Linear: 14.77 M parameters and 796 MFLOPs on 100 classes
    info = model_info("vgg16")
    assert (round(info["params"] / 1e6, 2), round(info["flops_per_image"] / 1e6)) == (14.77, 796)


@pytest.mark.parametrize("name", list(NNI_CFG))
def test_nni_vgg_layout_is_nnis(name):
    model = _model(name)
    cfg, feature = NNI_CFG[name], list(model.feature)
    # conv (no bias) -> BN -> ReLU per width, a max-pool per "M": NNI's make_layers, index for index
    expected, in_ch = [], 3
    for v in cfg:
        if v == "M":
            expected.append(("MaxPool2d", None))
        else:
            expected += [("Conv2d", (in_ch, v)), ("BatchNorm2d", v), ("ReLU", None)]
            in_ch = v
    got = [(type(m).__name__, (m.in_channels, m.out_channels) if isinstance(m, nn.Conv2d)
            else m.num_features if isinstance(m, nn.BatchNorm2d) else None) for m in feature]
    assert got == expected
    assert all(m.bias is None and m.kernel_size == (3, 3) and m.padding == (1, 1)
               for m in feature if isinstance(m, nn.Conv2d))
    assert [type(m).__name__ for m in model.classifier] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert (model.classifier[0].in_features, model.classifier[0].out_features, model.classifier[3].out_features) \
        == (512, 512, 100)
    # the names NNI's pruning example gives (feature.0 = conv 1, feature.24 = VGG16's conv 8) hold here
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs[0] == "feature.0"
    assert convs[7] == {"nni-vgg16": "feature.24", "nni-vgg19": "feature.23"}[name]
    # the last map is 2x2 before AvgPool2d(2)
    with torch.no_grad():
        assert model.eval().feature(_images()).shape == (2, 512, 2, 2)


def test_nni_vgg_flops_by_hand():
    # convs at 32, 16, 8, 4 and 2 pixels (four pools), then Linear(512, 512) and Linear(512, 100)
    macs, in_ch, hw = 0, 3, 32
    for v in NNI_CFG["nni-vgg16"]:
        if v == "M":
            hw //= 2
        else:
            macs += 9 * in_ch * v * hw * hw
            in_ch = v
    macs += 512 * 512 + 512 * 100
    assert model_info("nni-vgg16")["flops_per_image"] == 2 * macs


def test_nni_vgg_init_as_nni():
    model = build_model("nni-vgg16")
    bn2d = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 0.5) and torch.all(m.bias == 0) for m in bn2d)  # vgg.py line 59
    bn1d = model.classifier[1]
    assert torch.all(bn1d.weight == 1) and torch.all(bn1d.bias == 0)
    conv = model.feature[40]  # 512 -> 512: N(0, 2 / (9 * 512))
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.02)
    for lin in (model.classifier[0], model.classifier[3]):
        assert lin.weight.std().item() == pytest.approx(0.01, rel=0.1) and torch.all(lin.bias == 0)


def test_nni_vgg_names_stay_in_the_zoo_beside_repdistillers():
    assert {"vgg16", "vgg19", "nni-vgg16", "nni-vgg19"} <= set(config.ZOO_NAMES)
    assert type(_model("vgg16")).__name__ == "VGG" and type(_model("nni-vgg16")).__name__ == "NNIVGG"


# --- structure: init, pruning and graph capture ---------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_only_plain_layers_hold_parameters(name):
    # NNI's pruners and speed-up understand these; anything else would hide weights. (BatchNorm1d:
    # the head of NNI's own VGG.)
    for module in _model(name).modules():
        if any(True for _ in module.parameters(recurse=False)):
            assert type(module) in (nn.Conv2d, nn.BatchNorm2d, nn.Linear, nn.BatchNorm1d), type(module)


@pytest.mark.parametrize("name", NAMES)
def test_symbolic_trace_without_data_dependent_control_flow(name):
    # torch.fx fails on any Python branch on a tensor's value: what CUDA graph capture and NNI's
    # tracing also need.
    model = _model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


def test_init_as_sources():
    model = build_model("resnet18")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = model.stages[3][1].conv2  # 512 -> 512, 3x3: Kaiming-normal, fan_out = 9 * 512
    assert conv.weight.std().item() == pytest.approx((2 / (9 * 512)) ** 0.5, rel=0.02)
    vgg = build_model("vgg8")
    assert vgg.classifier.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert torch.all(vgg.classifier.bias == 0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_graph_capture_of_training_step(name):
    torch.manual_seed(0)
    model = build_model(name).cuda().train()
    x = torch.randn(8, 3, 32, 32, device="cuda")
    y = torch.randint(0, 100, (8,), device="cuda")
    loss_fn = nn.CrossEntropyLoss()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
        for _ in range(3):
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
    torch.cuda.current_stream().wait_stream(side)
    model.zero_grad(set_to_none=True)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_logits = model(x)
        loss_fn(static_logits, y).backward()
    graph.replay()
    torch.cuda.synchronize()
    eager = model(x).detach()  # train-mode BN: batch statistics, so the same numbers
    torch.testing.assert_close(static_logits, eager, rtol=1e-3, atol=1e-3)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
