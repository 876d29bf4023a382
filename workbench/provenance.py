"""Where and with what code a run was made: the CPU and the commit, in its params.json.

So a figure can be traced to the machine and the code that produced it. Importing this module
does nothing.
"""

import platform
import subprocess
from pathlib import Path

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
