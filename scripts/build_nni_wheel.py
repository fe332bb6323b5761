"""Build a slim NNI 3.0 wheel (its Python packages only) for machines that cannot reach PyPI.

NNI 3.0's wheel is 61 MB, about 95% of it the web UI (``nni_node``: node.js and its modules),
which pruning never imports (only ``nnictl`` experiments do). This script downloads the wheel
(or takes ``--wheel``), drops ``nni_node/``, marks the result pure Python (``py3-none-any``) and
versions it ``3.0+slim`` so ``pip show nni`` tells it apart; RECORD is rewritten with the kept
files' hashes. Writes are deterministic (fixed zip timestamps), so a rebuild is byte-identical.

    python scripts/build_nni_wheel.py --out .whl            # -> .whl/nni-3.0+slim-py3-none-any.whl

The other packages NNI's pruning imports and a bare torch image may lack are pure Python;
docs/pruning.md lists them and the ``pip download`` line that fetches them.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

NAME, VERSION, SLIM_VERSION = "nni", "3.0", "3.0+slim"
DROPPED = ("nni_node/",)  # the web UI: node.js runtime, modules and static files
EPOCH = (1980, 1, 1, 0, 0, 0)  # zip timestamps: the earliest zip allows, for byte-stable output


def download(dest: Path) -> Path:
    """The upstream wheel, fetched with pip into ``dest``."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                    "-d", str(dest), f"{NAME}=={VERSION}"], check=True)
    found = sorted(dest.glob(f"{NAME}-{VERSION}-*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download left no {NAME}-{VERSION} wheel in {dest}")
    return found[0]


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def slim(wheel: Path, out_dir: Path) -> Path:
    """Write the slim wheel into ``out_dir``; returns its path."""
    old_info, new_info = f"{NAME}-{VERSION}.dist-info/", f"{NAME}-{SLIM_VERSION}.dist-info/"
    out = out_dir / f"{NAME}-{SLIM_VERSION}-py3-none-any.whl"
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in sorted(src.infolist(), key=lambda i: i.filename):
            name = info.filename
            if name.endswith("/") or name.startswith(DROPPED) or name == old_info + "RECORD":
                continue
            data = src.read(name)
            if name.startswith(old_info):
                name = new_info + name[len(old_info):]
                if name.endswith("/METADATA"):
                    data = data.replace(f"\nVersion: {VERSION}\n".encode(), f"\nVersion: {SLIM_VERSION}\n".encode(), 1)
                elif name.endswith("/WHEEL"):
                    data = b"".join(b"Tag: py3-none-any\n" if line.startswith(b"Tag:") else line + b"\n"
                                    for line in data.splitlines())
                elif name.endswith("/top_level.txt"):
                    data = b"".join(line + b"\n" for line in data.splitlines() if line.strip() != b"nni_node")
            zi = zipfile.ZipInfo(name, EPOCH)
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, data, zipfile.ZIP_DEFLATED)
            records.append(f"{name},{_record_hash(data)},{len(data)}")
        records.append(f"{new_info}RECORD,,")
        zi = zipfile.ZipInfo(new_info + "RECORD", EPOCH)
        zi.external_attr = 0o644 << 16
        dst.writestr(zi, "\n".join(records) + "\n", zipfile.ZIP_DEFLATED)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".whl", help="folder the slim wheel goes to (default: .whl)")
    ap.add_argument("--wheel", help=f"an upstream {NAME}-{VERSION} wheel to slim (default: download it)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else download(Path(tmp))
        out = slim(wheel, Path(args.out))
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
