"""scripts/build_device_wheels.py: every distribution greenlib imports is on the GPU machine or among
the wheels carried to it, and the folders a campaign carries stay out of git."""
from __future__ import annotations

import ast
import importlib.metadata as md
import importlib.util
import subprocess

from packaging.utils import canonicalize_name

from greenlib.paths import REPO_ROOT

spec = importlib.util.spec_from_file_location("build_device_wheels", REPO_ROOT / "scripts" / "build_device_wheels.py")
wheels = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wheels)

# Imported by greenlib but never on the GPU machine: notebooks execute here (papermill and its
# kernel), and TensorRT is the optional path (docs/quantization.md) the grid skips without it.
NOT_CARRIED = {"papermill", "nbclient", "nbformat", "jupyter-client", "jupyter-core", "ipykernel", "tensorrt"}


def _imported_top_level_names() -> set[str]:
    """The absolute imports anywhere in greenlib's source, function bodies included (lazy imports)."""
    names = set()
    for path in (REPO_ROOT / "greenlib").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_distribution_greenlib_imports_reaches_the_gpu_machine():
    by_module = md.packages_distributions()
    dists = {d for name in _imported_top_level_names() for d in by_module.get(name, [])}
    assert {"nni", "submitit", "xmltodict", "torch"} <= {canonicalize_name(d) for d in dists}  # the scan sees lazy imports
    missing = [d for d in wheels.missing_on_device(dists) if d not in NOT_CARRIED]
    assert missing == [], f"add to WHEELS in scripts/build_device_wheels.py (or say why not): {missing}"


def test_missing_on_device_names_what_neither_holds():
    assert wheels.missing_on_device(["torch", "NNI", "json_tricks", "Some.New_Dist"]) == ["some-new-dist"]
    assert wheels.missing_on_device(["pytorch-lightning", "XmlToDict"]) == []


def test_carried_folders_are_ignored_by_git():
    names = [".whs/x.whl", ".pa1/c100.part.aa", ".pa3/SHA256SUMS", ".cr10/carry.json", ".cr10+2/carry.tar.003"]
    done = subprocess.run(["git", "check-ignore", "--no-index", *names], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.stdout.split() == names
