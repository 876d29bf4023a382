"""The notebook of an older commit, run beside this code's (`benchmark --against COMMIT`): the
same default settings and seeds, each older run right after this code's run of its seed, so that
both stand in the same minutes of the machine; the older code runs from a git worktree.
"""

import statistics
import subprocess
import tempfile
from pathlib import Path

from benchmarks import common

SEEDS = 3  # the older code runs on the first this many of the benchmark's seeds


def worktree(commit):
    """A git worktree of `commit` in a new temporary folder."""
    path = Path(tempfile.mkdtemp(prefix="s5-before-")) / "repo"
    git = ["git", "-C", str(common.REPO), "worktree", "add", "--detach", str(path), commit]
    subprocess.run(git, check=True, capture_output=True)
    return path


def remove(path):
    """Forget the worktree at `path` and delete it."""
    git = ["git", "-C", str(common.REPO), "worktree", "remove", "--force", str(path)]
    subprocess.run(git, check=True, capture_output=True)


def compare(records):
    """The default runs of the code before (--against) and of this code on the seeds both ran:
    the whole notebook's wall time (median), choosing the mode, the accuracy; {} without them."""
    seeds = {r["seed"] for r in records if r["label"] == "before"}
    if not seeds:
        return {}
    result = {}
    for label in ("before", "ours"):
        mine = [r for r in records if r["label"] == label and r["seed"] in seeds]
        result[label] = dict(
            seeds=[r["seed"] for r in mine],
            notebook_wall_s=[r["notebook_wall_s"] for r in mine],
            choosing_s=[common.choosing_s(r) for r in mine],
            final_acc=[common.final_acc(r) for r in mine],
            notebook_wall_s_median=statistics.median(r["notebook_wall_s"] for r in mine),
        )
    walls = [result[label]["notebook_wall_s_median"] for label in ("ours", "before")]
    return {**result, "wall_ratio": walls[0] / walls[1]}
