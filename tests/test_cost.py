"""Predicting a profile's cost from measured per-epoch rates (greenlib.cost) on a hand-made store."""
import math

import pandas as pd
import pytest

from greenlib import cost
from greenlib.results import ResultsStore


def _stage(energy_j, elapsed_s, epochs):
    return {"energy_j": energy_j, "energy_wh": energy_j / 3600, "elapsed_s": elapsed_s,
            "epochs": [{"epoch": i} for i in range(epochs)]}


def _add(store, config, stages):
    run = store.open(config | {"hardware": config.get("hardware", "GPU A")}, environment={"gpu_model": "GPU A"})
    for name, summary in stages.items():
        run.save_stage(name, summary)
    run.finish({"acc": 0.5})


@pytest.fixture()
def store(tmp_path):
    s = ResultsStore(tmp_path / "store")
    # vgg16 baseline: 2 epochs of 100 images, 3600 J and 40 s -> 18 J and 0.2 s per image-epoch
    _add(s, {"kind": "baseline", "model": "vgg16", "batch_size": 128, "train_size": 100, "epochs": 2},
         {"base_training": _stage(3600.0, 40.0, 2), "inference": {"energy_j": 1.0, "elapsed_s": 1.0}})
    # a pruning run copies the base stage (not counted again) and fine-tunes: 1 epoch, 500 J
    _add(s, {"kind": "pruning", "model": "vgg16", "pruner": "l1", "batch_size": 128, "train_size": 100,
             "finetune_epochs": 1}, {"base_training": _stage(3600.0, 40.0, 2), "finetuning": _stage(500.0, 5.0, 1)})
    # KD of one pair at two batch sizes (notebook 10) and another pair at 128 only
    for bs, j in ((64, 300.0), (128, 200.0)):
        _add(s, {"kind": "distillation", "model": "wrn-16-2", "teacher": "wrn-40-2", "student": "wrn-16-2",
                 "method": "KD", "batch_size": bs, "train_size": 100, "epochs": 1},
             {"distillation": _stage(j, j / 10, 1)})
    _add(s, {"kind": "distillation", "model": "vgg8", "teacher": "vgg13", "student": "vgg8", "method": "KD",
             "batch_size": 128, "train_size": 100, "epochs": 1}, {"distillation": _stage(100.0, 10.0, 1)})
    # CRD on one pair, at 2.4 times KD's energy there (its memory bank and embedding heads)
    _add(s, {"kind": "distillation", "model": "vgg8", "teacher": "vgg13", "student": "vgg8", "method": "CRD",
             "batch_size": 128, "train_size": 100, "epochs": 1}, {"distillation": _stage(240.0, 24.0, 1)})
    return s


def test_measured_rates_per_image_epoch_without_copied_stages(store):
    r = cost.measured_rates(store).set_index(["kind", "key", "batch_size"])
    assert r.loc[("train", "vgg16", 128), "j_per_image_epoch"] == pytest.approx(18.0)
    assert r.loc[("train", "vgg16", 128), "s_per_image_epoch"] == pytest.approx(0.2)
    assert r.loc[("finetune", "vgg16/l1", 128), "j_per_image_epoch"] == pytest.approx(5.0)
    assert len(r.loc[("train", "vgg16")]) == 1  # the pruning run's copy of the base stage is not a rate
    assert r.loc[("distill", "wrn-40-2:wrn-16-2/KD", 64), "j_per_image_epoch"] == pytest.approx(3.0)


def _plan(rows):
    return pd.DataFrame([dict(zip(["notebook", "kind", "key", "batch_size", "epochs", "images", "runs"], r))
                         for r in rows])


def test_predict_prices_each_stage_and_says_how(store):
    rates = cost.measured_rates(store)
    planned = _plan([
        ("01", "train", "vgg16", 128, 160, 50_000, 3),            # measured
        ("04", "distill", "vgg13:vgg8/KD", 64, 240, 50_000, 1),   # another batch, scaled by the wrn pair's ratio
        ("04", "distill", "resnet56:resnet20/KD", 128, 240, 50_000, 1),  # scaled by activations from KD's other pairs
        ("04", "distill", "resnet56:resnet20/CRD", 128, 240, 50_000, 1),  # ... from CRD's one pair
        ("04", "distill", "resnet56:resnet20/AT", 128, 240, 50_000, 1),  # never measured: from every distiller
        ("05", "nas_search", "darts", 128, 50, 50_000, 1),        # nothing to go on
    ])
    p = cost.predict(planned, rates).set_index("key")
    assert p.loc["vgg16", "basis"] == "measured"
    assert p.loc["vgg16", "energy_kwh"] == pytest.approx(18.0 * 160 * 50_000 * 3 / 3.6e6)
    assert p.loc["vgg16", "gpu_hours"] == pytest.approx(0.2 * 160 * 50_000 * 3 / 3600)
    assert p.loc["vgg13:vgg8/KD", "basis"] == "batch 128 scaled to 64"
    assert p.loc["vgg13:vgg8/KD", "energy_kwh"] == pytest.approx(1.0 * 1.5 * 240 * 50_000 / 3.6e6)
    assert p.loc["resnet56:resnet20/KD", "basis"] == "scaled by activations, same method"
    assert p.loc["resnet56:resnet20/CRD", "basis"] == "scaled by activations, same method"
    f = (cost.training_activations("distill", "resnet56:resnet20/CRD")
         / cost.training_activations("distill", "vgg13:vgg8/CRD"))
    assert p.loc["resnet56:resnet20/CRD", "energy_kwh"] == pytest.approx(2.4 * f * 240 * 50_000 / 3.6e6)
    assert p.loc["resnet56:resnet20/KD", "energy_kwh"] < p.loc["resnet56:resnet20/AT", "energy_kwh"] \
        < p.loc["resnet56:resnet20/CRD", "energy_kwh"]  # KD its own rate, AT every distiller's median
    assert p.loc["resnet56:resnet20/AT", "basis"] == "scaled by activations"
    assert p.loc["darts", "basis"] == "no measurement" and math.isnan(p.loc["darts", "energy_kwh"])
    per = cost.per_notebook(p.reset_index()).set_index("notebook")
    assert math.isnan(per.loc["05", "energy_kwh"]) and per.loc["05", "not_estimated"] == 1
    assert per.loc["total", "energy_kwh"] == pytest.approx(p["energy_kwh"].sum())
    assert per.loc["01", "measured_share"] == 1.0


def test_predict_refuses_without_rates_or_for_an_unmeasured_gpu(store):
    with pytest.raises(ValueError, match="no measured training stages"):
        cost.predict(_plan([]), cost.measured_rates(ResultsStore(store.root.parent / "empty")))
    with pytest.raises(ValueError, match="no rates measured on 'GPU Z'; measured on: GPU A"):
        cost.predict(_plan([]), cost.measured_rates(store), hardware="GPU Z")


def test_plan_counts_every_stage_once():
    p = cost.plan("smoke")
    assert not p.duplicated(["kind", "key", "batch_size", "epochs", "images", "runs"]).any()
    base = p[(p.kind == "train") & (p.key == "nni-vgg16")]
    assert list(base.notebook) == ["01_baselines"]  # 02 and 03 reuse notebook 01's base model
    finetunes = p[p.kind == "finetune"]
    assert set(finetunes.key) == {"nni-vgg16/l1", "nni-vgg16/fpgm", "nni-vgg16/apoz"}
    assert sorted(finetunes.epochs.unique()) == [1, 2]  # notebook 02's short and long fine-tunes
    assert {"nas_search", "nas_retrain"} <= set(p.kind)


def test_plan_trains_teachers_at_repdistillers_batch():
    p = cost.plan("paper")
    teachers = p[(p.kind == "train") & p.notebook.isin(["04_distillation", "10_batch_size", "12_gpu_type"])]
    assert len(teachers) and (teachers.batch_size == 64).all() and (teachers.epochs == 240).all()


def test_graphed_stages_are_priced_from_graphed_rates_and_say_when_none_exist(tmp_path):
    s = ResultsStore(tmp_path / "store")
    # vgg16 eager: 18 J per image-epoch; graphed: 12 J (the stage record says which)
    for graphed, j in ((False, 3600.0), (True, 2400.0)):
        _add(s, {"kind": "baseline", "model": "vgg16", "batch_size": 128, "train_size": 100, "epochs": 2,
                 "graph_capture": graphed}, {"base_training": _stage(j, 40.0, 2) | {"graph_captured": graphed}})
    # a fine-tuning measured eagerly only (a run stored before graph_captured was recorded has no such key)
    _add(s, {"kind": "pruning", "model": "vgg16", "pruner": "l1", "batch_size": 128, "train_size": 100,
             "finetune_epochs": 1}, {"finetuning": _stage(1000.0, 10.0, 1)})
    rates = cost.measured_rates(s)
    assert sorted(rates["graph_captured"]) == [False, False, True]
    planned = _plan([("01", "train", "vgg16", 128, 1, 100, 1), ("02", "finetune", "vgg16/l1", 128, 1, 100, 1),
                     ("01", "train", "vgg19", 128, 1, 100, 1)])
    graphed = cost.predict(planned.assign(graph_capture=True), rates).set_index("key")
    assert graphed.loc["vgg16", "basis"] == "measured"
    assert graphed.loc["vgg16", "energy_kwh"] == pytest.approx(12.0 * 100 / 3.6e6)
    assert graphed.loc["vgg19", "basis"] == "scaled by activations"  # from the graphed vgg16 rate
    assert graphed.loc["vgg19", "energy_kwh"] == pytest.approx(
        12.0 * cost.training_activations("train", "vgg19") / cost.training_activations("train", "vgg16") * 100 / 3.6e6)
    assert graphed.loc["vgg16/l1", "basis"] == "measured, eager rate"  # no graphed fine-tuning: said, not invented
    assert graphed.loc["vgg16/l1", "energy_kwh"] == pytest.approx(10.0 * 100 / 3.6e6)
    eager = cost.predict(planned.assign(graph_capture=False), rates).set_index("key")
    assert eager.loc["vgg16", "energy_kwh"] == pytest.approx(18.0 * 100 / 3.6e6)
    assert cost.per_notebook(graphed.reset_index()).set_index("notebook").loc["02", "other_step_rate"] == 1
    # a plan without the column (the scale-out grid's) is priced from every rate, as before
    assert cost.predict(planned, rates).set_index("key").loc["vgg16", "energy_kwh"] == pytest.approx(
        15.0 * 100 / 3.6e6)


def test_the_paper_plan_trains_graphed_except_where_a_stage_cannot_be_captured():
    p = cost.plan("paper")
    assert p[p.kind.isin(["train", "finetune", "distill", "pretrain", "nas_retrain"])
             & (p.notebook != "11_sampling_rate")].graph_capture.all()
    assert not p[p.kind == "nas_search"].graph_capture.any()
    assert not cost.plan("smoke").graph_capture.any()  # the CPU profile trains eagerly


def test_reference_rate_stores_price_what_no_profile_store_measures(tmp_path):
    # a committed rate store: one NAS run at the paper's batch size, 2 retraining epochs of 1,000 images
    ref = ResultsStore(tmp_path / "rates" / "gpu-a-nas")
    _add(ref, {"kind": "nas", "strategy": "darts", "batch_size": 64, "train_size": 1000, "search_epochs": 1,
               "retrain_epochs": 2}, {"search": _stage(500.0, 5.0, 1), "retrain": _stage(4000.0, 20.0, 2)})
    (tmp_path / "rates" / "empty").mkdir()
    r = cost.reference_rates(tmp_path / "rates")
    assert set(r["rates_store"]) == {"gpu-a-nas"}
    retrain = r[r["kind"] == "nas_retrain"].iloc[0]
    assert retrain["j_per_image_epoch"] == pytest.approx(2.0) and retrain["s_per_image_epoch"] == pytest.approx(0.01)
    assert cost.reference_rates(tmp_path / "none").empty
    planned = pd.DataFrame([{"notebook": "05_nas", "kind": "nas_retrain", "key": "darts", "batch_size": 64,
                             "epochs": 600, "images": 50_000, "runs": 1}])
    p = cost.predict(planned, r).iloc[0]
    assert p["basis"] == "measured" and p["gpu_hours"] == pytest.approx(0.01 * 600 * 50_000 / 3600)


def test_the_committed_nas_rates_price_the_paper_profiles_nas_stages():
    r = cost.reference_rates()
    assert {("nas_search", "darts"), ("nas_retrain", "darts"), ("nas_search", "proxyless"),
            ("nas_retrain", "proxyless")} <= set(zip(r["kind"], r["key"]))
    nas = cost.predict(cost.plan("paper").query("notebook == '05_nas'"), r)
    assert len(nas) == 4 and (nas["basis"] == "measured").all() and (nas["gpu_hours"] > 0).all()


def test_training_activations_count_a_teachers_forward_and_a_students_step():
    def acts(model):
        from greenlib.models import model_info
        return model_info(model)["activations_per_image"]

    assert cost.training_activations("train", "resnet56") == 3 * acts("resnet56")
    assert cost.training_activations("finetune", "nni-vgg16/apoz") == 3 * acts("nni-vgg16")
    assert cost.training_activations("distill", "resnet56:resnet20/KD") == acts("resnet56") + 3 * acts("resnet20")
    assert math.isnan(cost.training_activations("nas_search", "proxyless"))
    assert math.isnan(cost.training_activations("train", "no-such-model"))


def test_leave_one_out_prices_each_measured_stage_from_the_others(tmp_path):
    s = ResultsStore(tmp_path / "store")
    # J per image-epoch: 1e-6 per training activation for vgg8 and vgg13, twice that for resnet20
    for model, per_act in (("vgg8", 1e-6), ("vgg13", 1e-6), ("resnet20", 2e-6)):
        j = per_act * cost.training_activations("train", model)
        _add(s, {"kind": "baseline", "model": model, "batch_size": 128, "train_size": 100, "epochs": 1},
             {"base_training": _stage(j * 100, j * 10, 1)})
    # a NAS stage has no zoo model: left out, not priced
    _add(s, {"kind": "nas", "strategy": "darts", "batch_size": 64, "train_size": 100, "search_epochs": 1},
         {"search": _stage(50.0, 5.0, 1)})
    loo = cost.leave_one_out(cost.measured_rates(s)).set_index("key")
    assert set(loo.index) == {"vgg8", "vgg13", "resnet20"}
    assert (loo["basis"] == "scaled by activations").all()
    # each VGG from the median of (1, 2) = 1.5 per activation: 50% high; resnet20 from 1: 50% low
    assert loo.loc["vgg8", "j_error"] == pytest.approx(0.5)
    assert loo.loc["vgg13", "j_error"] == pytest.approx(0.5)
    assert loo.loc["resnet20", "j_error"] == pytest.approx(-0.5)
    assert loo.loc["resnet20", "s_error"] == pytest.approx(-0.5)
    assert loo.loc["vgg8", "measured_j"] == pytest.approx(1e-6 * cost.training_activations("train", "vgg8"))
    # a kind with one key has nothing to be priced from
    one = cost.leave_one_out(cost.measured_rates(s)[lambda r: r["key"] == "vgg8"])
    assert one.loc[0, "basis"] == cost.NO_MEASUREMENT and math.isnan(one.loc[0, "j_error"])
    assert cost.leave_one_out(cost.measured_rates(ResultsStore(tmp_path / "empty"))).empty
