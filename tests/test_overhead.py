"""The harness-overhead study (greenlib.overhead, scripts/bench_overhead.py) on the CPU."""
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from greenlib import overhead

REPO = Path(__file__).resolve().parent.parent


def test_settings_are_each_familys_model_at_the_profiles_batch_sizes():
    got = {(s.family, s.model, s.batch_size): s.profiles for s in overhead.settings(("quick", "paper"))}
    # quick trains everything at 128; the paper profile distils and retrains NAS at RepDistiller's/DARTS' 64
    assert got[("baseline", "nni-vgg16", 128)] == ("paper", "quick")
    assert got[("distillation", "vgg13:vgg8", 64)] == ("paper",)
    assert got[("distillation", "vgg13:vgg8", 128)] == ("quick",)
    assert got[("nas", "darts", 64)] == ("paper",) and ("pruning", "nni-vgg16/l1", 128) in got
    assert {s.family for s in overhead.settings(("quick",), ("nas",))} == {"nas"}
    with pytest.raises(ValueError, match="unknown family 'quant'; accepted: baseline"):
        overhead.settings(("quick",), ("quant",))


def test_compare_gives_speedup_and_saving_per_setting():
    rows = [{"source": "h100", "family": "baseline", "model": "vgg16", "batch_size": 128, "step": step,
             "epoch_s": t, "energy_j_per_epoch": j, "mean_gpu_util_pct": u, "mean_power_w": j / t}
            for step, t, j, u in (("eager", 4.0, 1200.0, 50.0), ("graphed", 2.0, 900.0, 99.0))]
    rows.append({**rows[0], "model": "resnet18"})  # eager only: no comparison
    c = overhead.compare(pd.DataFrame(rows))
    assert len(c) == 1 and c.loc[0, "model"] == "vgg16"
    assert c.loc[0, "speedup"] == 2.0 and c.loc[0, "energy_saving_pct"] == pytest.approx(25.0)
    assert c.loc[0, "graphed_util_pct"] == 99.0
    assert overhead.load(REPO / "no-such-folder").empty


def test_bench_overhead_script_smoke(tmp_path):
    out = tmp_path / "cpu"
    done = subprocess.run([sys.executable, "scripts/bench_overhead.py", "--out", str(out), "--smoke", "--families",
                           "baseline", "--epochs", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    df = pd.read_csv(out / "overhead.csv")
    assert list(df["step"]) == ["eager", "graphed"] and set(df["family"]) == {"baseline"}
    # on a CPU both steps run eagerly, and the graphed row says why
    assert list(df["graph_reason"]) == ["graph_capture=False", "cpu"] and not df["graph_captured"].any()
    assert (df["energy_j_per_epoch"] > 0).all() and (out / "meta.json").exists()
    loaded = overhead.load(tmp_path)
    assert list(loaded["source"].unique()) == ["cpu"] and math.isfinite(loaded["epoch_s"].sum())
