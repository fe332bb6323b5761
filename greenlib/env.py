"""The machine and software a run happened on: stored with every result."""
from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from typing import Any

from .paths import REPO_ROOT


def git_state() -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the repo this package lives in."""
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_inventory() -> list[dict[str, Any]]:
    """One dict per visible CUDA GPU: index, name, memory, and the driver where NVML answers."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    driver = None
    try:
        import pynvml

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        pynvml.nvmlShutdown()
    except Exception:  # NVML missing or refused: the driver stays unknown, nothing else depends on it
        pass
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": p.name, "memory_mib": p.total_memory // 2**20,
                     "capability": f"{p.major}.{p.minor}", "driver": driver})
    return gpus


def environment() -> dict[str, Any]:
    """Everything a stored result must say about where it came from."""
    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        **{f"git_{k}": v for k, v in git_state().items()},
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda_runtime"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        info["torch"] = None
    gpus = gpu_inventory()
    info["gpus"] = gpus
    info["gpu_model"] = gpus[0]["name"] if gpus else None
    info["driver"] = gpus[0]["driver"] if gpus else None
    info["hardware"] = hardware_label(info)
    return info


def hardware_label(info: dict[str, Any]) -> str:
    """A short name for captions: the GPU model (``2x NVIDIA H200`` for several), or ``CPU (model)``."""
    if info.get("gpu_model"):
        n = len(info.get("gpus") or [])
        return f"{n}x {info['gpu_model']}" if n > 1 else str(info["gpu_model"])
    return f"CPU ({info.get('cpu', 'unknown')})"
