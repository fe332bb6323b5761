#!/usr/bin/env python
"""CPU cost of tracing: CPU time the sampling thread uses per second traced, for each source.

For every source that works here (``counter``, ``nvml``, ``smi``, ``cpu``) a tracer samples at
``--interval`` (0.1 s) for ``--seconds`` while the main thread sleeps. Reported per source:

- ``sampler_cpu_pct``: the sampling thread's own CPU time (``time.thread_time`` inside the thread)
  per second of tracing, in % of one core. Target for ``nvml``/``counter``: under 1%.
- ``children_cpu_pct``: CPU time of reaped child processes (the ``nvidia-smi`` calls of ``smi``).
- ``process_cpu_pct``: the whole process (thread + main thread + interpreter), for reference.

Writes ``overhead.csv`` / ``overhead.json`` and ``meta.json`` to ``--out``. Runs on a CPU-only
machine too (only the ``cpu`` source is then available).
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import math
import platform
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # runnable as `python scripts/bench_tracer_overhead.py`
    sys.path.insert(0, str(REPO_ROOT))

from greenlib import io as gio  # noqa: E402
from greenlib.tracer import Tracer, available_sources  # noqa: E402

ORDER = ("counter", "nvml", "smi", "cpu")
TARGET_PCT = {"counter": 1.0, "nvml": 1.0}  # % of one core
COLUMNS = ("source", "interval_s", "seconds", "n_samples", "achieved_interval_s", "sampler_cpu_s",
           "sampler_cpu_pct", "children_cpu_pct", "process_cpu_pct", "target_pct", "meets_target")


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench(source: str, interval_s: float, seconds: float) -> dict:
    tracer = Tracer(source=source, interval_s=interval_s, sync_cuda=False)
    child0, proc0 = _children_cpu_s(), time.process_time()
    tracer.start()
    wall0 = time.perf_counter()
    with tracer.window("bench"):
        time.sleep(seconds)  # an idle main thread: what is left is the tracer's cost
    wall = time.perf_counter() - wall0
    tracer.stop()
    child, proc = _children_cpu_s() - child0, time.process_time() - proc0
    w = tracer.windows["bench"]
    pct = 100.0 * tracer.sampler_cpu_s / wall
    target = TARGET_PCT.get(source, math.nan)
    return {"source": source, "interval_s": interval_s, "seconds": wall, "n_samples": w.n_samples,
            "achieved_interval_s": w.achieved_interval_s, "sampler_cpu_s": tracer.sampler_cpu_s,
            "sampler_cpu_pct": pct, "children_cpu_pct": 100.0 * child / wall, "process_cpu_pct": 100.0 * proc / wall,
            "target_pct": target, "meets_target": (pct < target) if math.isfinite(target) else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--seconds", type=float, default=10.0, help="seconds traced per source")
    ap.add_argument("--interval", type=float, default=0.1, help="sampling interval, s")
    ap.add_argument("--sources", nargs="*", default=None, choices=ORDER, help="default: every available one")
    args = ap.parse_args(argv)

    avail = available_sources()
    sources = args.sources or [s for s in ORDER if avail[s] == "ok"]
    rows = []
    for s in sources:
        if avail[s] != "ok":
            print(f"skip {s}: {avail[s]}", file=sys.stderr)
            continue
        r = bench(s, args.interval, args.seconds)
        rows.append(r)
        verdict = "" if r["meets_target"] is None else (" (target < 1%: ok)" if r["meets_target"] else
                                                         " (target < 1%: MISSED)")
        print(f"{s:8} sampler {r['sampler_cpu_pct']:6.3f}% of a core{verdict}; children "
              f"{r['children_cpu_pct']:6.2f}%; process {r['process_cpu_pct']:6.2f}%; "
              f"{r['n_samples']} samples every {r['achieved_interval_s']:.3f} s", flush=True)

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    gio.atomic_write_text(args.out / "overhead.csv", buf.getvalue())
    gio.atomic_write_json(args.out / "overhead.json", rows)
    meta = {"date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "hostname": platform.node(),
            "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
            "sources": avail, "interval_s": args.interval, "seconds": args.seconds}
    try:
        from greenlib.env import gpu_inventory

        meta["gpus"] = gpu_inventory()
    except Exception as e:  # provenance only
        meta["gpus_error"] = str(e)
    gio.atomic_write_json(args.out / "meta.json", meta)
    print(f"wrote {args.out}")
    return 0 if all(r["meets_target"] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
