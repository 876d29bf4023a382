"""Where and with what code were numbers made: the CPU, the commit, the machine's load.

A run's params.json and every benchmark file record these, so a figure can be traced to the
machine and the code that produced it. Importing this module does nothing.
"""

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent  # the project folder, which holds workbench/


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# The CPU features that decide how fast the training step can go: vector width and BF16 support.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
               "amx_tile", "asimd", "sve", "bf16")  # fmt: skip


def cpu_identity() -> dict[str, Any]:
    """The CPU's model name, family and model numbers and the SPEED_FLAGS it has (Linux)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return dict(
        model_name=cpu_model(),
        family=fields.get("cpu family"),
        model=fields.get("model"),
        speed_flags=[flag for flag in SPEED_FLAGS if flag in flags],
    )


def git_commit() -> str | None:
    """The commit of the code that runs (with "+changes" when files differ from it), or None."""
    try:
        commit = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


def _git(*args: str) -> str:
    """What `git args...` prints in this project's folder, stripped; raises if git fails."""
    return subprocess.run(
        ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def machine_load(seconds: float = 2.0) -> dict[str, float | None]:
    """How busy the machine is while this process waits: the share of all CPU time others use.

    Read from /proc/stat over `seconds` (Linux; None elsewhere), with the 1-minute load average
    beside it. The load average lags by a minute, so right after another job it still looks busy;
    the busy share measures the present.
    """

    def cpu_times():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    try:
        idle0, total0 = cpu_times()
        time.sleep(seconds)
        idle1, total1 = cpu_times()
        busy = 1 - (idle1 - idle0) / max(total1 - total0, 1)
    except (OSError, ValueError, IndexError):
        busy = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return dict(busy_share=busy, load_average_1min=load)


def provenance() -> dict[str, Any]:
    """Where, when and with what a set of runs was made."""
    return dict(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        git_commit=git_commit(),
        cpu=cpu_model(),
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        load_at_start=machine_load(),
    )
