"""Re-derive the stored runs' GPU-utilisation means from their traces (greenlib.results.restate_utilisation).

    python scripts/restate_utilisation.py data/results/quick [more stores ...]

Runs traced before the tracer left out each window's first driver sample period (0.2 s) averaged in
readings that describe the time before the window; this rewrites their utilisation means as the
tracer computes them now. Energy and time are untouched; a stage already restated is left alone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from greenlib.results import restate_utilisation  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stores", nargs="+", type=Path, help="results-store roots (folders of run folders)")
    args = ap.parse_args(argv)
    for root in args.stores:
        if not root.is_dir():
            print(f"error: {root} is not a folder", file=sys.stderr)
            return 2
        changed = restate_utilisation(root)
        print(f"{root}: {len(changed)} stages restated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
