"""greenlib.nas: both NNI strategies search a tiny space, export an architecture that builds, retrain it, store it."""
from __future__ import annotations

import json

import pytest
import torch

from greenlib import config, experiments, nas
from greenlib.config import ConfigError
from greenlib.data import load_dataset, variant
from greenlib.models import model_info
from greenlib.nas import run as nas_run
from greenlib.nas.spaces import SpaceError, SpaceSize
from greenlib.nas.strategies import StrategyError
from greenlib.train import Trainer

# two architecture steps and two weight steps per search epoch (16 + 16 images, batch 8)
TINY = dict(train_size=32, test_size=16, batch_size=8, search_classes=[100], search_epochs=1,
            darts_retrain_epochs=1, proxyless_retrain_epochs=1, iec_min_seconds=0.1)


def _tiny_cfg(**over):
    return config.resolve("nas", profile="smoke", **{**TINY, **over})


@pytest.fixture(scope="module")
def ctx():
    return experiments.prepare(_tiny_cfg())


@pytest.fixture(scope="module")
def runs(ctx):
    """One tiny run per strategy (searched, retrained, measured), shared by the tests below."""
    return {s: nas.run_nas(ctx, s, seed=0, progress=False) for s in ("darts", "proxyless")}


def _refuse(*a, **k):
    raise AssertionError("trained although it should not have")


# -- registries and parameters ---------------------------------------------------------------
def test_registry_matches_the_config_choices():
    assert tuple(nas.STRATEGIES) == config.SECTIONS["nas"]["strategies"].choices
    assert config.SECTIONS["nas"]["search_classes"].choices == nas.SEARCH_CLASSES
    for spec in nas.STRATEGIES.values():
        assert spec.space in nas.SPACES and spec.space not in spec.incompatible


def test_every_strategy_has_its_own_retraining_epochs():
    for profile in config.PROFILES:
        cfg = config.resolve("nas", profile=profile)
        for strategy in nas.STRATEGIES:
            assert nas.retrain_epochs(cfg, strategy) == cfg[f"{strategy}_retrain_epochs"]
    with pytest.raises(StrategyError, match="unknown NAS strategy 'enas'"):
        nas.retrain_epochs(config.resolve("nas", profile="smoke"), "enas")


def test_paper_profile_retrains_proxyless_300_and_darts_600_epochs():
    # DARTS' 600 (its paper and NNI's example); ProxylessNAS 300 (NNI's example): 600 cannot fit the
    # paper's 280.78 W·h (docs/nas.md, "Faithfulness")
    cfg = config.resolve("nas", profile="paper")
    assert nas.nas_config(cfg, "darts", 0)["retrain_epochs"] == 600
    assert nas.nas_config(cfg, "proxyless", 0)["retrain_epochs"] == 300
    assert nas_run.retrain_config(cfg, "proxyless").epochs == 300
    mixed = config.resolve("nas", profile="smoke", darts_retrain_epochs=3, proxyless_retrain_epochs=2)
    assert [nas_run.retrain_config(mixed, s).epochs for s in ("darts", "proxyless")] == [3, 2]


def test_cost_plan_prices_each_strategys_own_retraining():
    from greenlib import cost

    p = cost.plan("paper")
    retrain = p[p.kind == "nas_retrain"].set_index("key")["epochs"]
    assert retrain.to_dict() == {"darts": 600, "proxyless": 300}


@pytest.mark.parametrize("bad, words", [
    ({"strategies": ["enas"]}, ["'enas'", "darts, proxyless"]),
    ({"search_classes": [50]}, ["50", "100, 10"]),
    ({"cells": 2}, ["cells=2", ">= 3"]),
    ({"dataset": "imagenet"}, ["'imagenet'", "synthetic10", "cifar10"]),
])
def test_bad_parameters_fail_in_one_line(bad, words):
    with pytest.raises(ConfigError) as info:
        config.resolve("nas", profile="smoke", **bad)
    assert "\n" not in str(info.value) and all(w in str(info.value) for w in words)


def test_unknown_strategy_is_refused_before_anything_trains(ctx, monkeypatch):
    monkeypatch.setattr(nas_run, "search", _refuse)
    with pytest.raises(StrategyError, match=r"unknown NAS strategy 'enas'; accepted: darts, proxyless"):
        nas.run_nas(ctx, "enas", seed=0)


def test_proxyless_on_the_darts_space_is_refused_before_anything_trains(ctx, monkeypatch):
    monkeypatch.setattr(nas_run, "search", _refuse)
    monkeypatch.setattr(Trainer, "fit", _refuse)
    before = set(ctx.store.root.glob("*")) if ctx.store.root.exists() else set()
    with pytest.raises(StrategyError) as info:
        nas.run_nas(ctx, "proxyless", seed=0, space="darts")
    msg = str(info.value)
    assert "\n" not in msg and "'proxyless'" in msg and "'darts' space" in msg
    assert "stack expects each tensor to be equal size" in msg and "accepted spaces for it: proxyless" in msg
    after = set(ctx.store.root.glob("*")) if ctx.store.root.exists() else set()
    assert after == before  # no run folder was opened
    with pytest.raises(StrategyError, match="does not work on the 'darts' space"):
        nas.check_plan(ctx.cfg, space="darts")


def test_unknown_space_and_bad_sizes_fail_clearly():
    with pytest.raises(SpaceError, match=r"unknown search space 'pyramidnet'; accepted: darts, proxyless"):
        nas.check_pair("darts", "pyramidnet")
    with pytest.raises(SpaceError, match=r"darts space: cells=2 is not accepted; accepted: an int >= 3"):
        nas.build_space("darts", SpaceSize(width=4, cells=2), 100)
    with pytest.raises(SpaceError, match="proxyless space: the architecture does not fit it"):
        nas.build_fixed("proxyless", {"s2_i0": "k9e9"}, SpaceSize(width=4, blocks=1), 100)


# -- the search, the exported architecture, the fixed model -----------------------------------
@pytest.mark.parametrize("strategy", ["darts", "proxyless"])
def test_search_exports_an_architecture_that_builds_and_runs(runs, ctx, strategy):
    res = runs[strategy]
    arch = nas.load_architecture(res)
    space = nas.STRATEGIES[strategy].space
    labels = set(nas.build_space(space, nas.space_size(ctx.cfg), 100).simplify())
    assert set(arch) == labels  # one choice per mutable of the space
    json.dumps(arch)  # plain JSON
    search = res["stages"]["search"]
    assert search["n_windows"] == 1 and search["epochs"][0]["images"] == 16  # the weight steps' half
    model = nas.build_model(res, num_classes=100).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    info = model_info(model)
    assert info["params"] == res["metrics"]["params"] > 0 and info["flops_per_image"] == res["metrics"]["flops_per_image"] > 0


def test_darts_space_gets_the_datasets_classes_and_the_retrain_size(ctx, runs):
    arch = nas.load_architecture(runs["darts"])
    small = nas.build_fixed("darts", arch, SpaceSize(width=4, cells=3, retrain_width=4, retrain_cells=3), 10)
    big = nas.build_fixed("darts", arch, SpaceSize(width=4, cells=3, retrain_width=8, retrain_cells=6), 10)
    assert small.classifier.out_features == 10 and small(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert model_info(big)["params"] > model_info(small)["params"]  # the cells, stacked deeper and wider


# -- the stored run --------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["darts", "proxyless"])
def test_run_lands_in_the_store_with_both_stages_and_tec_adds_up(runs, ctx, strategy):
    res = runs[strategy]
    run = ctx.store.get(res["run_id"])
    assert {"search", "retrain", "inference"} <= set(res["stages"])
    m, c = res["metrics"], res["config"]
    assert m["tec_wh"] == pytest.approx(m["tec_search_wh"] + m["tec_retrain_wh"])
    assert m["tec_search_wh"] == res["stages"]["search"]["energy_wh"] > 0
    assert m["tec_retrain_wh"] == res["stages"]["retrain"]["energy_wh"] > 0
    assert m["iec_wh"] > 0 and 0 <= m["acc"] <= 1 and m["test_images"] == 16
    assert m["method"] == nas.STRATEGIES[strategy].method  # CPU work: the CPU's energy, RAPL else an estimate
    assert set(m["energy_measured_by"].split("+")) <= {"cpu-rapl", "cpu-estimate"}
    assert m["estimated"] == ("cpu-estimate" in m["energy_measured_by"])
    assert "NOT CIFAR-100" in m["dataset_description"] and "NOT CIFAR-100" in m["search_dataset_description"]
    assert c["kind"] == "nas" and c["strategy"] == strategy and c["search_dataset"] == "synthetic"
    stored = json.loads((run.folder / nas.ARCHITECTURE_FILE).read_text())
    assert stored["architecture"] == m["architecture"]
    assert (run.folder / "model.pt").exists() and not (run.folder / "checkpoint.pt").exists()


def test_the_stored_model_reloads_with_its_weights(runs, ctx):
    res = runs["proxyless"]
    model = nas.load_model(ctx, res)
    x = torch.randn(4, 3, 32, 32)
    again = nas.load_model(ctx, res)
    assert torch.equal(model(x), again(x))


def test_a_cached_rerun_trains_nothing(runs, ctx, monkeypatch):
    monkeypatch.setattr(nas_run, "search", _refuse)
    monkeypatch.setattr(Trainer, "fit", _refuse)
    for strategy, res in runs.items():
        assert nas.run_nas(ctx, strategy, seed=0) == res


def test_stored_runs_are_selected_by_the_notebook_parameters(runs, ctx):
    df = nas.stored_nas(ctx.cfg)
    assert sorted(df["strategy"]) == ["darts", "proxyless"] and set(df["search_classes"]) == {100}
    assert set(df["run_id"]) == {r["run_id"] for r in runs.values()}
    # each strategy's retraining epochs select its own runs only
    assert list(nas.stored_nas(_tiny_cfg(proxyless_retrain_epochs=2))["strategy"]) == ["darts"]
    assert nas.stored_nas(_tiny_cfg(darts_retrain_epochs=2, proxyless_retrain_epochs=2)).empty


def test_a_run_killed_in_retraining_resumes_without_searching_again(ctx, monkeypatch):
    rctx = experiments.prepare(_tiny_cfg(seeds=[1]))

    def killed(self, *a, **k):
        raise KeyboardInterrupt("killed")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "fit", killed)
        with pytest.raises(KeyboardInterrupt):
            nas.run_nas(rctx, "proxyless", seed=1, progress=False)
    searched = [f for f in rctx.store.root.glob("nas-proxyless-*") if (f / nas.ARCHITECTURE_FILE).exists()
                and not (f / "result.json").exists()]
    assert len(searched) == 1
    monkeypatch.setattr(nas_run, "search", _refuse)
    res = nas.run_nas(rctx, "proxyless", seed=1, progress=False)
    arch = json.loads((searched[0] / nas.ARCHITECTURE_FILE).read_text())["architecture"]
    assert res["run_id"] == searched[0].name and res["metrics"]["architecture"] == arch
    assert set(res["stages"]) >= {"search", "retrain", "inference"}


# -- the CIFAR-10-shaped search (the paper's second NAS rows) ---------------------------------
def test_search_on_the_cifar10_shaped_variant_retrains_on_the_dataset(ctx):
    assert nas.search_dataset("synthetic", 10) == "synthetic10" and nas.search_dataset("cifar100", 10) == "cifar10"
    ds10 = load_dataset(variant("synthetic", 10))
    assert ds10.num_classes == 10 and torch.bincount(ds10.train_y[:1000]).tolist() == [100] * 10
    assert "NOT CIFAR-10" in ds10.description
    res = nas.run_nas(ctx, "proxyless", seed=0, search_classes=10, progress=False)
    assert res["config"]["search_dataset"] == "synthetic10" and res["config"]["dataset"] == "synthetic"
    assert "NOT CIFAR-10" in res["metrics"]["search_dataset_description"]
    assert nas.build_model(res, 100)(torch.zeros(1, 3, 32, 32)).shape == (1, 100)  # retrained for 100 classes


def test_nni_nas_imports_without_websockets():
    """A bare GPU image may lack websockets, which NNI imports only for its manager's channel."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['websockets'] = None\n"
            "from greenlib.nas.backend import import_nni; import_nni()\n"
            "import nni.nas.strategy, websockets; assert websockets.__greenlib_stub__; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# -- the grid (issue 21: the campaign runs NAS through it) -------------------------------------
def test_a_grid_nas_cell_is_the_run_the_notebook_makes(runs, ctx, tmp_path):
    from greenlib.results import run_id
    from greenlib.scaleout import cells as cellmod
    from greenlib.scaleout import grid

    plan = grid.make_plan([("nas", TINY)], "smoke", ctx.store.root, hardware=["cpu"])
    assert sorted(c.label for c in plan.cells) == ["nas darts searched on 100 classes seed=0",
                                                   "nas proxyless searched on 100 classes seed=0"]
    assert plan.waves[0] == []  # a NAS run needs no shared run
    # the notebook's runs (the fixture's) are the cells' runs: the grid finds them complete
    assert {c.args[0]: rid for c, rid in plan.done.items()} == {s: r["run_id"] for s, r in runs.items()}
    # priced as greenlib.cost prices notebook 05: a search and a retraining per strategy
    rows = sorted((r["kind"], r["key"], r["epochs"]) for c in plan.cells for r in cellmod.stages(c))
    assert rows == [("nas_retrain", "darts", 1), ("nas_retrain", "proxyless", 1),
                    ("nas_search", "darts", 1), ("nas_search", "proxyless", 1)]
    # a cell a job runs (another seed, another store) lands under the id its selector names
    cell = grid.make_plan([("nas", {**TINY, "strategies": ["proxyless"], "seeds": [2]})], "smoke",
                          tmp_path).cells[0]
    out = grid.run_cell(cell, str(tmp_path), progress=False)
    assert out["status"] == "done" and out["run_id"] == run_id({**cellmod.selector(cell), "hardware": "cpu"})
    assert (tmp_path / out["run_id"] / "result.json").exists()
    with pytest.raises(ConfigError, match="enas"):
        grid.make_plan([("nas", {**TINY, "strategies": ["enas"]})], "smoke", tmp_path)


class _Killed(Exception):
    pass


def _dying(base, kill_at, trained=None):
    """The search's epoch callback (``base``: the unpatched ``greenlib.nas.search._callback_class``)
    raising :class:`_Killed` before epoch ``kill_at``; ``trained`` lists the epochs it let start."""
    class Dying(base()):  # one class every time: Lightning keys a callback's state by its name
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == kill_at:
                raise _Killed("killed")
            if trained is not None:
                trained.append(trainer.current_epoch)
            super().on_train_epoch_start(trainer, pl_module)
    return Dying


def test_a_run_killed_in_the_search_resumes_from_its_last_search_epoch(monkeypatch):
    import importlib

    search_mod = importlib.import_module("greenlib.nas.search")  # the module (greenlib.nas.search is also its function)
    rctx = experiments.prepare(_tiny_cfg(seeds=[3], search_epochs=3, proxyless_retrain_epochs=1))
    base = search_mod._callback_class
    trained = []
    monkeypatch.setattr(search_mod, "_callback_class", lambda: _dying(base, 2, trained))
    with pytest.raises(_Killed):
        nas.run_nas(rctx, "proxyless", seed=3, progress=False)
    folder, = [f for f in rctx.store.root.glob("nas-proxyless-*") if (f / nas.SEARCH_CHECKPOINT).exists()]
    assert not (folder / nas.ARCHITECTURE_FILE).exists() and trained == [0, 1]
    saved = torch.load(folder / nas.SEARCH_CHECKPOINT, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1  # written after the last finished epoch

    trained.clear()
    monkeypatch.setattr(search_mod, "_callback_class", lambda: _dying(base, None, trained))
    res = nas.run_nas(rctx, "proxyless", seed=3, progress=False)
    assert trained == [2]  # only the epoch the kill cut off is trained again
    search_stage = res["stages"]["search"]
    assert [e["epoch"] for e in search_stage["epochs"]] == [0, 1, 2] and search_stage["resumed_epochs"] == 2
    assert search_stage["n_windows"] == 3 and search_stage["energy_j"] == pytest.approx(
        sum(e["window.energy_j"] for e in search_stage["epochs"]))
    assert not (folder / nas.SEARCH_CHECKPOINT).exists() and (folder / nas.ARCHITECTURE_FILE).exists()
    assert res["run_id"] == folder.name
    assert "arch_optimizer_reset_epoch" not in search_stage  # its checkpoint named the optimizers' parameters
    assert "search_arch_optimizer_reset_epoch" not in res["metrics"]


@pytest.mark.filterwarnings("ignore:When using training service")
def test_a_run_resumed_from_a_checkpoint_that_does_not_name_its_optimizers_parameters_says_so(monkeypatch):
    # session 12's ProxylessNAS checkpoint (written before 2026-11-29): the run's search stage says
    # where the architecture optimizer's moments started anew, and notebook 05 shows it
    import importlib

    search_mod = importlib.import_module("greenlib.nas.search")
    rctx = experiments.prepare(_tiny_cfg(seeds=[4], search_epochs=2, proxyless_retrain_epochs=1))
    base = search_mod._callback_class
    monkeypatch.setattr(search_mod, "_callback_class", lambda: _dying(base, 1))
    with pytest.raises(_Killed):
        nas.run_nas(rctx, "proxyless", seed=4, progress=False)
    monkeypatch.setattr(search_mod, "_callback_class", lambda: _dying(base, None))
    ckpt, = rctx.store.root.glob(f"nas-proxyless-*/{nas.SEARCH_CHECKPOINT}")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    for state in saved["callbacks"].values():
        del state["optimizer_order"]
    torch.save(saved, ckpt)
    with pytest.warns(UserWarning, match="starts its moments anew at epoch 1"):
        res = nas.run_nas(rctx, "proxyless", seed=4, progress=False)
    assert res["stages"]["search"]["resumed_epochs"] == 1
    assert res["stages"]["search"]["arch_optimizer_reset_epoch"] == 1
    runs = nas.stored_nas(rctx.cfg)
    assert runs.set_index("seed").loc[4, "search_arch_optimizer_reset_epoch"] == 1  # what notebook 05 reads


def _search_state(tmp_path, name, strategy, space, size):
    """A search of 4 + 4 steps on the CPU: its architecture, epoch records and checkpointed state,
    and how many candidate paths the ProxylessNAS backward ran in the architecture steps and in the
    weight steps."""
    import importlib

    from greenlib.experiments import device_tracer
    from greenlib.nas import backend, spaces, strategies
    from greenlib.nas.search import SearchConfig, search

    backend.import_nni()
    from nni.nas.oneshot.pytorch.supermodule import proxyless

    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    net = spaces.build_space(space, size, 10)
    search_mod = importlib.import_module("greenlib.nas.search")
    runs, step, apply, module_class = {"arch": 0, "weights": 0}, ["arch"], proxyless._ProxylessFunction.apply, \
        search_mod._module_class

    def counting(forward_path, *args):
        def counted(k, *inp):
            runs[step[0]] += 1  # the backward runs after the step that built its graph
            return forward_path(k, *inp)
        return apply(counted, *args)

    def stepping():
        class Stepping(module_class()):
            def training_step(self, batch, batch_idx):
                step[0] = "weights" if batch_idx % 2 else "arch"
                return super().training_step(batch, batch_idx)
        return Stepping

    proxyless._ProxylessFunction.apply, search_mod._module_class = counting, stepping
    try:
        with device_tracer(torch.device("cpu"), "auto", 0.1) as tracer:
            arch, summary = search(net, strategies.get(strategy).make(), loader, loader, torch.device("cpu"),
                                   SearchConfig(epochs=1), tracer, tmp_path / name, progress=False,
                                   checkpoint=tmp_path / name / "search.ckpt")
    finally:
        proxyless._ProxylessFunction.apply, search_mod._module_class = apply, module_class
    saved = torch.load(tmp_path / name / "search.ckpt", map_location="cpu", weights_only=False)
    state = dict(saved["state_dict"])
    for i, opt in enumerate(saved["optimizer_states"]):  # both optimizers' momentum and Adam's moments, in
        for k in {k for st in opt["state"].values() for k in st}:  # an order of their own (NNI lists the
            values = sorted((st[k] for st in opt["state"].values()),  # path weights from a set)
                            key=lambda v: (tuple(v.shape), v.flatten().tolist()))
            state |= {f"optimizer{i}/{k}/{j}": v for j, v in enumerate(values)}
    return arch, [(e["train_loss"], e["train_acc"]) for e in summary["epochs"]], state, runs


@pytest.mark.filterwarnings("ignore:When using training service")  # NNI on the plain DataLoader of this test
@pytest.mark.parametrize("strategy, space, size", [("proxyless", "proxyless", SpaceSize(width=4, blocks=2)),
                                                   ("darts", "darts", SpaceSize(width=4, cells=3))])
def test_a_search_step_builds_no_gradient_the_next_step_throws_away_and_searches_the_same(
        tmp_path, monkeypatch, strategy, space, size):
    # NNI's architecture step also computes the weights' gradients and its weight step the path
    # weights', each zeroed before use; ours builds neither: the same architecture, losses and state
    import contextlib
    import importlib

    search_mod = importlib.import_module("greenlib.nas.search")
    arch, records, state, runs = _search_state(tmp_path, "ours", strategy, space, size)
    monkeypatch.setattr(search_mod, "_without_gradients", lambda params: contextlib.nullcontext())
    nni_arch, nni_records, nni_state, nni_runs = _search_state(tmp_path, "nni", strategy, space, size)
    assert arch == nni_arch and records == nni_records
    assert state.keys() == nni_state.keys()
    running = ("running_mean", "running_var", "num_batches_tracked")  # the candidates NNI ran only for the
    for k in state:                                                   # path weights' gradient update theirs
        if not k.endswith(running):
            assert torch.equal(state[k], nni_state[k]), k
    if strategy == "proxyless":  # NNI runs the other candidates of every mixed layer in every step's
        assert runs == {"arch": nni_runs["arch"], "weights": 0} and nni_runs["weights"] > 0  # backward
    else:
        assert runs == nni_runs == {"arch": 0, "weights": 0}  # DARTS runs every candidate in its forward


def test_a_search_checkpoint_that_does_not_load_is_dropped_with_a_warning(tmp_path):
    from greenlib.nas.search import _readable

    bad = tmp_path / "search_checkpoint.ckpt"
    bad.write_bytes(b"cut off")
    with pytest.warns(UserWarning, match="does not load"):
        assert _readable(bad) is False
    assert not bad.exists() and _readable(tmp_path / "missing.ckpt") is False


def test_a_run_searched_on_the_jpeg_copy_is_found_where_the_copy_is_not(tmp_path, monkeypatch):
    # measured on a GPU machine that had only cifar10-jpeg; redrawn where nothing is found (variant: cifar10)
    from greenlib.results import ResultsStore
    monkeypatch.setenv("GREENLIB_DATA", str(tmp_path))
    cfg = _tiny_cfg(dataset="cifar100", data_root=str(tmp_path / "no-datasets"), search_classes=[10],
                    strategies=["darts"])
    want = nas_run.nas_config(cfg, "darts", 0, 10)
    assert want["search_dataset"] == "cifar10"
    run = ResultsStore(tmp_path / "results" / "smoke").open({**want, "search_dataset": "cifar10-jpeg"})
    run.finish({"acc": 0.3})
    df = nas.stored_nas(cfg)
    assert list(df["run_id"]) == [run.id] and list(df["search_classes"]) == [10]
    assert list(df["search_dataset"]) == ["cifar10-jpeg"]
    assert nas.stored_nas(_tiny_cfg(dataset="cifar100", data_root=str(tmp_path), search_classes=[100],
                                    strategies=["darts"])).empty  # 100 classes: not this run


def test_proxyless_architecture_gradient_is_nnis_in_tensor_form():
    # greenlib.nas puts a vectorised backward in place of NNI's double loop of scalar operations:
    # the same gradient of the path weights, and the same pass-through gradient, on every path sampled
    from nni.nas.oneshot.pytorch.supermodule.proxyless import _ProxylessFunction

    from greenlib.nas.backend import _proxyless_backward, import_nni

    import_nni()
    assert _ProxylessFunction.backward is _proxyless_backward and _ProxylessFunction.nni_backward is not None
    torch.manual_seed(0)
    paths = [torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(3, 4, 5, padding=2),
             torch.nn.Sequential(torch.nn.AvgPool2d(3, 1, 1), torch.nn.Conv2d(3, 4, 1))]
    alpha = torch.nn.Parameter(torch.randn(4))
    x, target = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8)

    def forward_path(k, inp):
        return paths[k](inp)

    def grads(backward, index):  # what NNI's ProxylessMixedLayer.forward does with the path sampled
        _ProxylessFunction.backward = staticmethod(backward)
        alpha.grad = None
        xi = x.clone().requires_grad_()
        out = _ProxylessFunction.apply(forward_path, index, 1, torch.nn.Softmax(-1), alpha, xi, forward_path(index, xi))
        ((out - target) ** 2).mean().backward()
        return alpha.grad.clone(), xi.grad.clone()

    try:
        for index in range(4):
            ours, nnis = grads(_proxyless_backward, index), grads(_ProxylessFunction.nni_backward, index)
            assert ours[0].abs().sum() > 0
            torch.testing.assert_close(ours[0], nnis[0], rtol=1e-5, atol=1e-8)
            assert torch.equal(ours[1], nnis[1])
    finally:
        _ProxylessFunction.backward = staticmethod(_proxyless_backward)


def test_a_proxyless_search_records_which_architecture_gradient_it_ran(runs):
    assert runs["proxyless"]["stages"]["search"]["arch_gradient"] == "vectorised"
    assert "arch_gradient" not in runs["darts"]["stages"]["search"]  # DARTS' gradient is NNI's, unchanged
    assert {s: runs[s]["stages"]["search"]["unused_gradients"] for s in runs} == {
        "darts": "not computed", "proxyless": "not computed"}


def _resumable_search(tmp_path, strategy, space, size, kill_at=None, edit=None, epochs=2):
    """A search of ``epochs`` epochs on the CPU whose steps start from seeds of their own (Lightning's
    checkpoint holds no random state), killed before epoch ``kill_at``; ``edit`` changes its
    checkpoint before a resume. Returns (summary, the checkpoint's weights and optimizer states by
    parameter name)."""
    import importlib

    from greenlib.experiments import device_tracer
    from greenlib.nas import spaces, strategies
    from greenlib.nas.search import SearchConfig, search

    search_mod = importlib.import_module("greenlib.nas.search")
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
    base = search_mod._callback_class

    def seeded():
        class Seeded(_dying(base, kill_at)):
            def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
                torch.manual_seed(1000 * trainer.current_epoch + batch_idx)
        return Seeded

    ckpt = tmp_path / "search.ckpt"
    if edit is not None:
        saved = torch.load(ckpt, map_location="cpu", weights_only=False)
        edit(saved)
        torch.save(saved, ckpt)
    search_mod._callback_class = seeded
    try:
        with device_tracer(torch.device("cpu"), "auto", 0.1) as tracer:
            _, summary = search(spaces.build_space(space, size, 10), strategies.get(strategy).make(), loader, loader,
                                torch.device("cpu"), SearchConfig(epochs=epochs), tracer, tmp_path, progress=False,
                                checkpoint=ckpt)
    finally:
        search_mod._callback_class = base
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    state = dict(saved["state_dict"])
    order, = [v["optimizer_order"] for v in saved["callbacks"].values()]
    for names, opt in zip(order, saved["optimizer_states"]):
        for j, name in enumerate(names):
            state |= {f"{name}/{k}": v for k, v in opt["state"].get(j, {}).items()}
    return summary, state


def _reverse_arch_optimizer(saved, keep_order=True):
    """The checkpoint as a process would have written it whose set listed the architecture
    parameters the other way round (and, without ``keep_order``, before the checkpoint named them)."""
    key, = saved["callbacks"]
    order = saved["callbacks"][key]["optimizer_order"]
    i, = [i for i, names in enumerate(order) if all("arch" in n for n in names)]
    n = len(order[i])
    opt = saved["optimizer_states"][i]
    opt["state"] = {n - 1 - j: st for j, st in opt["state"].items()}
    order[i] = order[i][::-1]
    if not keep_order:
        del saved["callbacks"][key]["optimizer_order"]


@pytest.mark.filterwarnings("ignore:When using training service")
@pytest.mark.parametrize("strategy, space, size", [("proxyless", "proxyless", SpaceSize(width=4, blocks=2)),
                                                   ("darts", "darts", SpaceSize(width=4, cells=3))])
def test_a_resumed_search_gives_each_architecture_parameter_its_own_adam_state(tmp_path, strategy, space, size):
    # NNI lists the architecture parameters from a set: another order in the process that resumes
    # (a ProxylessNAS search on the H200 failed on it: Adam's moments of 6 paths for a choice of 2)
    _, whole = _resumable_search(tmp_path / "whole", strategy, space, size)
    with pytest.raises(_Killed):
        _resumable_search(tmp_path / "cut", strategy, space, size, kill_at=1)
    summary, resumed = _resumable_search(tmp_path / "cut", strategy, space, size, edit=_reverse_arch_optimizer)
    assert summary["resumed_epochs"] == 1 and "arch_optimizer_reset_epoch" not in summary
    assert resumed.keys() == whole.keys() and any("arch" in k and "exp_avg" in k for k in whole)
    for k in whole:
        assert torch.equal(resumed[k], whole[k]), k


@pytest.mark.filterwarnings("ignore:When using training service")
def test_a_checkpoint_that_does_not_name_the_optimizers_parameters_resumes_with_new_architecture_moments(
        tmp_path):
    size = SpaceSize(width=4, blocks=2)
    with pytest.raises(_Killed):
        _resumable_search(tmp_path, "proxyless", "proxyless", size, kill_at=1)
    with pytest.warns(UserWarning, match="starts its moments anew at epoch 1"):
        summary, state = _resumable_search(tmp_path, "proxyless", "proxyless", size,
                                           edit=lambda saved: _reverse_arch_optimizer(saved, keep_order=False))
    assert summary["resumed_epochs"] == 1 and summary["arch_optimizer_reset_epoch"] == 1
    steps = {k: v for k, v in state.items() if "arch" in k and k.endswith("/step")}
    # counted from epoch 1's 4 architecture steps (a path weight without a gradient in a step skips it)
    assert steps and max(float(v) for v in steps.values()) == 4


def test_the_nas_accuracy_gap_names_each_methods_budget_and_whether_it_is_the_papers():
    import pandas as pd

    from greenlib.nas import tables

    table = pd.DataFrame({"method": ["ProxylessNAS", "Darts"], "strategy": ["proxyless", "darts"],
                          "search_classes": [100, 100], "acc_percent": [74.53, 70.0]})
    published = tables.published_rows()
    gap = tables.accuracy_gap(table, published, 50, {"darts": 200, "proxyless": 300}).set_index("method")
    assert gap.loc["ProxylessNAS", "published_acc_percent"] == pytest.approx(77.61)
    assert gap.loc["ProxylessNAS", "note"] == "more than 2 points short, at the same epochs"
    assert gap.loc["Darts", "note"] == "more than 2 points short"  # 200 of DARTS' 600 retraining epochs
    assert gap.loc["Darts", "our_epochs"] == \
        "ProxylessNAS: search 50 + retraining 300 / Darts: search 50 + retraining 200 epochs"
    with pytest.raises(ValueError, match="strategy 'darts'"):
        tables.accuracy_gap(table, published, 50, {"proxyless": 300})
