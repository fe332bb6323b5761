"""Print the Markdown tables of docs/measurement.md from a measure_tracer / bench_tracer_overhead run.

    python scripts/tracer_table.py data/measurements/tracer/h100
"""
import sys
from pathlib import Path

import pandas as pd


def _cell(r: pd.Series, col: str) -> str:
    if pd.isna(r[col]):
        return ""
    out = f"{r[col]:+.2f}"
    if r["n_phases"] > 1 and pd.notna(r[f"{col}_min"]):
        out += f" ({r[f'{col}_min']:+.1f} to {r[f'{col}_max']:+.1f})"
    return out


def main(folder: Path) -> None:
    t = pd.read_csv(folder / "energy_table.csv")
    ref = t[t.source == "counter"][["load", "counter_energy_j", "window_s"]]
    rows = [{"load": r.load, "source": r.source, "field": r.field,
             "interval s (achieved)": f"{r.interval_s:g} ({r.achieved_interval_s:.2f})",
             "error % raw (over phases)": _cell(r, "rel_err_pct"),
             "error % lag-corrected": _cell(r, "rel_err_corrected_pct")}
            for _, r in t[t.source != "counter"].iterrows()]
    print(ref.to_markdown(index=False), "\n")
    print(pd.DataFrame(rows).to_markdown(index=False), "\n")
    o = pd.read_csv(folder / "overhead" / "overhead.csv")
    print(o[["source", "interval_s", "achieved_interval_s", "sampler_cpu_pct", "children_cpu_pct"]]
          .round(3).to_markdown(index=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
