"""Build ``.whs/``: the wheels a lent GPU machine lacks for the campaign grid (docs/campaign.md).

The GPU machine has Python 3.12 and an image with torch and many packages (``DEVICE_HAS``, from
the device tool's KINDS.md, read 2026-11-17) but no package index. What the grid's jobs import
beyond that travels as wheels in ``.whs/`` (git-ignored), which ``scripts/device_env.sh``
installs once a machine into ``$DEVICE_TMP/site``:

    python scripts/build_device_wheels.py            # -> .whs/ (about 2 MB)
    python scripts/build_device_wheels.py --out DIR

NNI is the slim wheel of ``scripts/build_nni_wheel.py`` (its web UI dropped); the others are
downloaded for CPython 3.12 on manylinux or as pure-Python wheels, without their dependencies
(each is named here). ``tests/test_device_wheels.py`` imports every greenlib module the grid's
jobs can reach and fails when one needs a distribution that is neither here nor on the machine.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]

# The versions the project's environment resolves (pyproject.toml); NNI 3.0 pins typeguard<4.1.3.
WHEELS = {
    "json-tricks": "3.17.3",
    "schema": "0.7.8",
    "typeguard": "4.1.2",
    "submitit": "1.5.4",
    "xmltodict": "1.0.4",
    "websockets": "17.4",
    "defusedxml": "0.7.1",
}
NNI = "nni"  # built by scripts/build_nni_wheel.py, not downloaded

# The distributions of the GPU machine's image that the grid's jobs use (KINDS.md, "Python
# packages already there", 2026-11-17; normalised names). Not the whole list: only what matters.
DEVICE_HAS = frozenset("""
certifi charset-normalizer cloudpickle colorama contourpy cuda-bindings cuda-pathfinder cycler
filelock fonttools fsspec idna jinja2 kiwisolver lightning lightning-utilities markupsafe
matplotlib mpmath networkx numpy nvidia-ml-py onnx onnxruntime packaging pandas pillow psutil pyparsing
python-dateutil pytorch-lightning pytz pyyaml requests scipy seaborn setuptools simplejson six
sympy tabulate torch torchmetrics torchvision tqdm triton typing-extensions tzdata urllib3
""".split())

PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")


def missing_on_device(distributions) -> list[str]:
    """The distributions (of those given) that neither the machine's image nor ``.whs/`` holds."""
    have = DEVICE_HAS | {canonicalize_name(n) for n in WHEELS} | {NNI, "greenlib"}
    return sorted({canonicalize_name(d) for d in distributions} - have)


def build(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "build_nni_wheel.py"), "--out", str(out)],
                   check=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(out)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in WHEELS.items()], check=True)
    return sorted(out.glob("*.whl"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".whs", help="folder for the wheels (default .whs/)")
    args = ap.parse_args(argv)
    wheels = build(args.out)
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(f"{len(wheels)} wheels, {size:.1f} MiB in {args.out}:")
    for w in wheels:
        print(f"  {w.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
