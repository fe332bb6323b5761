#!/usr/bin/env python
"""How far each power source's sampled energy is from the NVML energy counter, on one GPU.

Two loads run back to back on one GPU, each for ``--seconds`` (default 30):

- ``steady``: back-to-back bf16 8192x8192 matrix products;
- ``bursty``: ~50 ms of the same products, then 150 ms idle, repeated (5 Hz).

During each load several tracers run *at once* on the same GPU:

- one NVML tracer on the ``counter`` source sampling every ``--base-interval`` (0.02 s): it reads the
  energy counter synchronously at the window edges (the reference) and records both power fields
  (1 s average and instantaneous) every 20 ms. The 0.1 / 0.5 / 1 s NVML series are *subsampled*
  from it (nearest sample to a regular grid, for several grid phases), so every interval sees the
  same load and the phase spread shows the aliasing;
- three ``smi`` tracers (``nvidia-smi -q -x`` per sample, the paper's method) at 0.1, 0.5 and 1 s;
  their achieved intervals are reported.

The load window is the same time range for every series (the counter tracer's window, mapped to
each tracer's clock). For each (load, source, field, interval): energy, relative error against the
counter, raw and lag-corrected (the averaged field shifted back by half its 1 s window; each tracer
keeps sampling ``--tail`` s after the load so the shifted series covers it).

Writes to ``--out``: ``energy_table.csv`` / ``.json`` (tidy, one row per combination),
``meta.json`` (GPU, driver, torch, date, nvidia-smi call time, load details) and every raw series
under ``traces/<load>/<tracer>/`` (``samples.csv.gz`` + ``windows.json``). With the defaults: two
30 s loads, 10 s of idle lead and tail, a few seconds of warm-up and set-up. ``--dry-run`` runs the same code on the CPU (cpu source, tiny matrices, 2 s loads) to
check the script without a GPU.

Needs numpy, torch, nvidia-ml-py and (for the smi tracers) xmltodict; pandas is not needed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import math
import platform
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable as `python scripts/measure_tracer.py` without installing
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from greenlib import io as gio  # noqa: E402
from greenlib.tracer import NvmlDevices, SubprocessRunner, Tracer, available_sources  # noqa: E402
from greenlib.tracer.accuracy import (MAX_PHASES, NVML_INTERVALS_S, SMI_INTERVALS_S,  # noqa: E402
                                      TABLE_COLUMNS, compare_to_counter, trace_all_sources)
from greenlib.tracer.smi import SMI_COMMAND  # noqa: E402

BURST_ON_S, BURST_OFF_S = 0.05, 0.15


# -- loads ---------------------------------------------------------------------------------------

class Load:
    """Matrix products on one device; ``steady`` and ``bursty`` run until a deadline."""

    def __init__(self, torch, device: str, dry_run: bool):
        self.torch, self.device = torch, device
        n, dtype = (256, torch.float32) if dry_run else (8192, torch.bfloat16)
        g = torch.Generator(device="cpu").manual_seed(0)
        self.a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        self.b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        self.n = n
        self.per_mm_s = math.nan
        self.n_on = 1

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            self.torch.cuda.synchronize(self.device)

    def calibrate(self, warmup_s: float = 2.0) -> None:
        """Warm up (clocks, cuBLAS), then time one product to size a 50 ms burst."""
        end = time.perf_counter() + warmup_s
        while time.perf_counter() < end:
            for _ in range(10):
                self.a @ self.b
            self.sync()
        reps = 20
        t0 = time.perf_counter()
        for _ in range(reps):
            self.a @ self.b
        self.sync()
        self.per_mm_s = (time.perf_counter() - t0) / reps
        self.n_on = max(1, round(BURST_ON_S / self.per_mm_s))

    def steady(self, seconds: float) -> dict:
        end, count = time.perf_counter() + seconds, 0
        while time.perf_counter() < end:
            for _ in range(20):
                self.a @ self.b
            count += 20
            self.sync()  # keeps the queue short so the load stops on time
        return {"matmuls": count}

    def bursty(self, seconds: float) -> dict:
        end, count, on = time.perf_counter() + seconds, 0, 0.0
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            for _ in range(self.n_on):
                self.a @ self.b
            self.sync()
            on += time.perf_counter() - t0
            count += self.n_on
            time.sleep(BURST_OFF_S)
        return {"matmuls": count, "on_s": on, "bursts": count // self.n_on}


# -- environment ---------------------------------------------------------------------------------

def environment(torch, gpu: int, dry_run: bool) -> dict:
    info = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "hostname": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "numpy": np.__version__, "dry_run": dry_run,
            "sources": available_sources()}
    if not dry_run:
        info["gpu_name"] = torch.cuda.get_device_name(gpu)
        dev = NvmlDevices()
        try:
            dev.init()
            info["driver"] = dev.driver_version()
            import pynvml

            info["nvml_version"] = pynvml.nvmlSystemGetNVMLVersion()
        except Exception as e:  # provenance only; the measurement itself reports NVML failures
            info["driver_error"] = str(e)
        finally:
            dev.shutdown()
    return info


def time_smi_calls(n: int = 10) -> dict:
    """Wall time of ``nvidia-smi -q -x`` on an idle GPU (before the loads)."""
    runner, times = SubprocessRunner(), []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            runner(SMI_COMMAND, 5.0)
            times.append(time.perf_counter() - t0)
    except Exception as e:  # recorded in meta.json; the smi tracers report their own failures
        return {"n": len(times), "error": str(e)}
    return {"n": n, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


# -- main ----------------------------------------------------------------------------------------

def run_load(name: str, load: Load, fn, seconds: float, args, fast_source: str, smi_ok: bool,
             out: Path) -> tuple[list[dict], dict]:
    fast, smi, details = trace_all_sources(
        lambda _fast: fn(seconds), gpus=None if args.dry_run else (args.gpu,), fast_source=fast_source,
        base_interval_s=args.base_interval, smi_intervals_s=SMI_INTERVALS_S if smi_ok else (),
        lead_s=args.lead, tail_s=args.tail, sync=load.sync, tracer=Tracer)
    fast.save(out / "traces" / name / f"{fast.source_name}-{args.base_interval:g}s")
    for x, tr in smi.items():
        tr.save(out / "traces" / name / f"smi-{x:g}s")
    rows, info = compare_to_counter(name, fast, smi, args.base_interval)
    info["load"] = details
    return rows, info


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else str(v)


def write_table(rows: list[dict], out: Path) -> None:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k)) for k in TABLE_COLUMNS})
    gio.atomic_write_text(out / "energy_table.csv", buf.getvalue())
    gio.atomic_write_json(out / "energy_table.json", rows)


def print_table(rows: list[dict]) -> None:
    print(f"{'load':7} {'source':7} {'field':8} {'interval':>8} {'n':>5} {'got_s':>6} {'energy_J':>10} "
          f"{'err%':>7} {'err%min':>8} {'err%max':>8} {'corr%':>7}")
    for r in rows:
        f = lambda k, w, p: (f"{r[k]:{w}.{p}f}" if isinstance(r[k], float) and math.isfinite(r[k])  # noqa: E731
                             else f"{'-':>{w}}")
        n = r["n_samples"] if isinstance(r["n_samples"], int) else "-"
        print(f"{r['load']:7} {r['source']:7} {r['field']:8} {f('interval_s', 8, 2)} {n:>5} "
              f"{f('achieved_interval_s', 6, 3)} {f('energy_j', 10, 1)} {f('rel_err_pct', 7, 2)} "
              f"{f('rel_err_pct_min', 8, 2)} {f('rel_err_pct_max', 8, 2)} {f('rel_err_corrected_pct', 7, 2)}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder (e.g. data/measurements/tracer/h100)")
    ap.add_argument("--seconds", type=float, default=None, help="seconds per load (default 30; 2 with --dry-run)")
    ap.add_argument("--gpu", type=int, default=0, help="CUDA ordinal of the GPU to load and trace")
    ap.add_argument("--base-interval", type=float, default=0.02, help="NVML sampling interval, s")
    ap.add_argument("--lead", type=float, default=3.0, help="idle seconds traced before each load")
    ap.add_argument("--tail", type=float, default=2.0, help="seconds sampled after each load")
    ap.add_argument("--dry-run", action="store_true", help="CPU only: check the script without a GPU")
    args = ap.parse_args(argv)

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA GPU visible: this script measures a GPU; use --dry-run to check it on a CPU", file=sys.stderr)
        return 2
    seconds = args.seconds if args.seconds is not None else (2.0 if args.dry_run else 30.0)
    if args.dry_run:
        args.lead, args.tail = min(args.lead, 0.5), min(args.tail, 0.6)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    env = environment(torch, args.gpu, args.dry_run)
    sources = env["sources"]
    if args.dry_run:
        fast_source = "cpu"
    elif sources["counter"] == "ok":
        fast_source = "counter"
    else:  # no counter: errors cannot be computed, the series are still recorded
        fast_source = "nvml"
        print(f"warning: no energy counter ({sources['counter']}); relative errors will be NaN", file=sys.stderr)
    smi_ok = sources["smi"] == "ok"
    if not smi_ok:
        print(f"note: smi tracers skipped ({sources['smi']})", file=sys.stderr)
    env["smi_call"] = time_smi_calls() if smi_ok else None

    device = "cpu" if args.dry_run else f"cuda:{args.gpu}"
    if not args.dry_run:
        torch.cuda.set_device(args.gpu)
    load = Load(torch, device, args.dry_run)
    load.calibrate(0.5 if args.dry_run else 2.0)

    rows, per_load = [], {}
    for name, fn in (("steady", load.steady), ("bursty", load.bursty)):
        print(f"load {name}: {seconds:g} s ...", flush=True)
        r, info = run_load(name, load, fn, seconds, args, fast_source, smi_ok, out)
        rows += r
        per_load[name] = info

    meta = {**env, "seconds_per_load": seconds, "base_interval_s": args.base_interval, "lead_s": args.lead,
            "tail_s": args.tail, "gpu": args.gpu, "device": device, "matrix_n": load.n,
            "matrix_dtype": str(load.a.dtype), "per_matmul_s": load.per_mm_s, "burst_matmuls": load.n_on,
            "burst_on_s": BURST_ON_S, "burst_off_s": BURST_OFF_S, "smi_intervals_s": SMI_INTERVALS_S,
            "nvml_intervals_s": NVML_INTERVALS_S, "max_phases": MAX_PHASES, "loads": per_load,
            "runtime_s": time.perf_counter() - t_start,
            "method": ("one counter-source tracer at base_interval_s records both NVML power fields and the "
                       "counter at the window edges; NVML intervals are subsampled from it (nearest sample "
                       "to a grid, n_phases grid phases; the row reports phase 0, min/max over phases); smi "
                       "rows come from separate nvidia-smi tracers running at the same time")}
    gio.atomic_write_json(out / "meta.json", meta)
    provenance = {k: meta.get(k) for k in ("gpu_name", "driver", "torch", "date_utc")}
    if args.dry_run:
        provenance["gpu_name"] = "none (dry run on the CPU)"
    rows = [r | provenance for r in rows]
    write_table(rows, out)
    print_table(rows)
    print(f"wrote {out} in {meta['runtime_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
