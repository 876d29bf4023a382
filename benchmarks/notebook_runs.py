"""Execute S5.ipynb with papermill and read back what it saved: the benchmark's "ours" runs.

The numbers come from the notebook people run, not from a second copy of its recipe.
"""

import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import papermill

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
import runs  # noqa: E402
from model import receptive_field  # noqa: E402


def machine_load(seconds=2.0):
    """How busy the machine is while this process waits: the share of all CPU time that others use.

    Read from /proc/stat over `seconds` (Linux; None elsewhere), with the 1-minute load average
    beside it. The load average lags by a minute, so right after another job (or this benchmark's
    previous model) it still looks busy; the busy share measures the present.
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
    return dict(busy_share=busy, load_average_1min=os.getloadavg()[0] if hasattr(os, "getloadavg") else None)


def notebook_run(name, parameters, seed, data_dir, output_dir=None):
    """Run the notebook once with `parameters` and `seed`; return its record in the run format.

    The record has the per-epoch training time, wall time (training and test passes, summed),
    test loss and accuracy, plus the parameter count, receptive field and the run's params.json.
    The run folder goes into `output_dir` when given (kept), else into a temporary folder.
    """
    with tempfile.TemporaryDirectory(prefix="s5-run-") as tmp:
        out = Path(output_dir or tmp)
        values = {**parameters, "SEED": seed, "DATA_DIR": str(data_dir), "OUTPUT_DIR": str(out)}
        load = machine_load()
        papermill.execute_notebook(
            REPO / "S5.ipynb", Path(tmp) / "S5.ipynb", parameters=values, cwd=REPO,
            kernel_name="python3", progress_bar=False,
        )
        run = runs.read_run(runs.latest_run(out))
        run["path"] = str(run["path"]) if output_dir else None  # a temporary folder is gone
    history = run["metrics"]["history"]
    epochs, wall = [], 0.0
    for i, (train_s, epoch_s) in enumerate(zip(history["train_time_s"], history["epoch_time_s"])):
        wall += epoch_s
        epochs.append(dict(epoch=i + 1, train_s=train_s, wall_s=wall, test_loss=history["test_loss"][i],
                           test_acc=history["test_acc"][i]))
    return dict(
        name=name, seed=seed, params=run["parameter_count"], receptive_field=receptive_field(run["parameters"]["CHANNELS"]),
        load_at_start=load, notebook=run, epochs=epochs,
        tta_test_acc=run["metrics"].get("final_test_acc"),
    )


def provenance():
    """Where and with what a set of runs was made."""
    import torch

    return dict(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        git_commit=runs.git_commit(),
        cpu=runs.cpu_model(),
        threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        load_at_start=machine_load(),
    )
