"""What produced a number: commit, library versions, hardware, threads. Recorded in every result row."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

PACKAGES = (
    "torch", "torchvision", "torch-pruning", "tensorflow", "tf-keras", "tensorflow-model-optimization",
    "ai-edge-litert", "numpy", "pandas", "seaborn", "safetensors",
)
# CPU features that decide which int8/bf16 kernels exist (oneDNN/fbgemm/XNNPACK dispatch on these).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")
REPO = Path(__file__).resolve().parent.parent


COMMIT_ENV = "CNN_STUDY_GIT_COMMIT"  # set by the Ray driver for workers that run a shipped copy of the code


@lru_cache(maxsize=1)
def git_commit() -> str:
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "cpu_flags": [f for f in CPU_FLAGS if f in flags]}


def versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def environment(framework: str, device: str, threads: int) -> dict:
    return {
        "framework": framework,
        "device": device,
        "threads": threads,
        "git_commit": git_commit(),
        "platform": platform.platform(),
        "host": platform.node(),
        **cpu_info(),
        "versions": versions(),
    }
