"""The cross-method analysis (notebook 20) on hand-made runs: every number is checked by hand."""
import math

import pandas as pd
import pytest

from greenlib import analysis, metric, paper
from greenlib.config import ConfigError


def _run(family, label, acc, tec, iec, *, model="vgg16", seed=0, hardware="GPU A", estimated=False, **extra):
    return {"family": family, "label": label, "method": label.split()[-1], "model": model, "seed": seed,
            "hardware": hardware, "dataset": "synthetic", "dataset_description": "stand-in",
            "energy_measured_by": "counter", "estimated": estimated, "acc": acc, "tec_wh": tec, "iec_wh": iec,
            "params": 1, "flops_per_image": 1, "run_id": f"{label}-{seed}-{hardware}", **extra}


@pytest.fixture()
def runs():
    return pd.DataFrame([
        _run("baseline", "vgg16 baseline", 0.80, 100.0, 1e-6),
        _run("pruning", "vgg16 apoz", 0.78, 110.0, 5e-7, seed=0),
        _run("pruning", "vgg16 apoz", 0.76, 130.0, 5e-7, seed=1),
        _run("quantization", "vgg16 fp32", 0.80, 100.0, 1e-6),
        _run("quantization", "vgg16 fp16", 0.80, 100.0, 4e-7),
        _run("quantization", "vgg16 int8", 0.79, 100.5, 3e-6, estimated=True),
        _run("distillation", "vgg13→vgg8 CRD", 0.70, 300.0, 1e-7, model="vgg8"),
        _run("nas", "proxyless", 0.75, 1000.0, 5e-8, model="proxyless"),
    ])


def test_method_table_averages_seeds_with_their_sd(runs):
    t = analysis.method_table(runs).set_index("label")
    apoz = t.loc["vgg16 apoz"]
    assert apoz.n_seeds == 2 and apoz.acc_percent == pytest.approx(77.0) and apoz.tec_wh == pytest.approx(120.0)
    assert apoz.tec_wh_sd == pytest.approx(math.sqrt(200.0)) and apoz.acc_percent_sd == pytest.approx(math.sqrt(2.0))
    assert t.loc["vgg16 baseline"].n_seeds == 1 and math.isnan(t.loc["vgg16 baseline"].acc_percent_sd)
    assert bool(t.loc["vgg16 int8"].estimated) and not bool(t.loc["vgg16 fp16"].estimated)


def test_g_columns_follow_the_papers_conventions(runs):
    t = analysis.method_table(runs)
    t3 = analysis.g_columns(t, [1e9], [2], paper.TABLE3).set_index("label")
    t5 = analysis.g_columns(t, [5e8], [5], paper.TABLE5).set_index("label")
    assert t3.loc["vgg16 baseline", "G(1B, tau=2)"] == pytest.approx(1e4 * 0.8 ** 2 / (1e9 * 1e-6 + 100))
    assert t5.loc["vgg16 baseline", "G(500M, tau=5)"] == pytest.approx(80.0 ** 5 / (5e8 * 1e-6 + 100))


def test_pick_keeps_order_reports_missing_and_refuses_none(runs):
    t = analysis.method_table(runs)
    rows, missing = analysis.pick(t, ["nas-x", "vgg16 apoz", "vgg16 baseline"])
    assert list(rows.label) == ["vgg16 apoz", "vgg16 baseline"] and missing == ["nas-x"]
    with pytest.raises(ConfigError, match="none of the representatives.*labels stored: .*vgg16 apoz"):
        analysis.pick(t, ["nope"])


def test_best_family_and_the_usage_guidelines(runs):
    t = analysis.method_table(runs)
    # at tiny MUI the smallest TEC wins among compressed families: quantization fp16 (100 W·h, 80%)
    low = analysis.best_family(t[t.family != "baseline"], 1e3)
    assert low.iloc[0].label == "vgg16 fp16"
    verdicts = analysis.check_guidelines(t, 1e3, 1e13, taus=[2])
    low_v, high_v, quant_v = verdicts
    assert low_v.holds is False and "quantization: vgg16 fp16" in low_v.evidence
    # at huge MUI the lowest IEC wins: NAS (5e-8 W·h)
    assert high_v.holds is True and high_v.evidence.index("nas: proxyless") < high_v.evidence.index("pruning")
    assert "does not hold" in low_v.sentence() and "**holds**" in high_v.sentence()


def test_quantization_helps_compares_each_precision_with_its_fp32(runs):
    t = analysis.method_table(runs)
    v = analysis.quantization_helps(t, 1e6, 1e11)
    assert v.holds is False and "1 of 2 quantized models help" in v.evidence and "Not helping: vgg16 int8 (IEC estimated on the CPU)." in v.evidence
    g = lambda acc, tec, iec, m: metric.greeness(acc, tec, iec, m)  # noqa: E731
    expected = g(0.79, 100.5, 3e-6, 1e11) / g(0.80, 100.0, 1e-6, 1e11)
    assert f"{expected:.3f} at 1e+11" in v.evidence and "IEC estimated on the CPU" in v.evidence
    only_fp16 = t[t.label != "vgg16 int8"]
    assert analysis.quantization_helps(only_fp16, 1e6, 1e11).holds is True
    assert analysis.quantization_helps(t[t.family != "quantization"], 1e6, 1e11).holds is None


def test_a_family_without_runs_cannot_be_tested(runs):
    t = analysis.method_table(runs[~runs.family.isin(["nas", "distillation"])])
    high = analysis.check_guidelines(t, 1e3, 1e13, taus=[2])[1]
    assert high.holds is None and "cannot be tested" in high.sentence()


def test_winners_carry_the_family_and_cover_the_range(runs):
    t = analysis.method_table(runs)
    rows, _ = analysis.pick(t, ["vgg16 fp16", "proxyless"])
    w = analysis.winners(rows, 1e3, 1e13, [2, 5])
    for tau, part in w.groupby("tau"):
        assert part.mui_from.iloc[0] == 1e3 and part.mui_to.iloc[-1] == 1e13
        assert list(part.family) == ["quantization", "nas"]
        cross = analysis.crossovers(rows, [tau]).mui.iloc[0]
        assert part.mui_to.iloc[0] == pytest.approx(cross)


def test_figure3_panels_pick_their_rows(runs):
    extra = pd.DataFrame([_run("distillation", "resnet56→resnet20 KD", 0.6, 50, 1e-7, model="resnet20"),
                          _run("pruning", "resnet18 fpgm", 0.7, 80, 1e-6, model="resnet18")])
    panels = analysis.figure3_panels(analysis.method_table(pd.concat([runs, extra], ignore_index=True)))
    assert list(panels["a"][1].label) == ["vgg13→vgg8"]
    assert list(panels["b"][1].label) == ["KD"]
    assert list(panels["c"][1].label) == ["vgg16 int8"]
    assert list(panels["d"][1].label) == ["fpgm"]


def test_seeds_statement(runs):
    assert "one seed" in analysis.seeds_statement(analysis.method_table(runs[runs.seed == 0]))
    assert "1 to 2 seeds" in analysis.seeds_statement(analysis.method_table(runs))


def test_collect_labels_each_family_and_splits_a_method_run_on_two_gpus(monkeypatch):
    def stored(cfg):
        return pd.DataFrame([{"model": "vgg16", "pruner": "l1", "hardware": h, "acc": 0.5, "tec_wh": 1.0,
                              "iec_wh": 1e-6, "seed": 0, "run_id": h} for h in ("GPU A", "GPU B")])

    fam = analysis.Family("pruning", "pruning", stored, lambda r: f"{r['model']} {r['pruner']}", lambda r: r["pruner"])
    monkeypatch.setattr(analysis, "FAMILIES", {"pruning": fam})
    runs = analysis.collect("smoke")
    assert sorted(runs.label) == ["vgg16 l1 · GPU A", "vgg16 l1 · GPU B"]
    assert list(runs.method) == ["l1", "l1"] and set(analysis.RUN_COLUMNS) <= set(runs.columns)
    with pytest.raises(ConfigError, match="unknown method family 'quant'; accepted: pruning"):
        analysis.collect("smoke", ["quant"])


def test_collect_on_an_empty_store_is_empty():
    runs = analysis.collect("paper")  # the tests' store holds no paper-profile run
    assert runs.empty and list(runs.columns) == list(analysis.RUN_COLUMNS)
