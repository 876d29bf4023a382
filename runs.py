"""Run folders for the S5 notebook: one per training run, saved as it goes, listed and compared.

Every execution of the notebook's training cell gets a new folder under OUTPUT_DIR, named by its
start time and the parameters that matter most. It holds `params.json` from the start, then
`metrics.json` and the averaged weights `mnist_net.pt` after every finished epoch, and the plots.
Nothing a run writes can replace an earlier run's file. Importing this module does nothing.
"""

import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import utils
from model import MNISTNet, count_parameters, stage_widths

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "mnist_net.pt"
METRIC_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "train_time_s", "epoch_time_s")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _positive_int(v):
    return _is_int(v) and v > 0


def _fraction(v):  # [0, 1)
    return _is_number(v) and 0 <= v < 1


def _channels(v):
    try:
        return bool(stage_widths(v))
    except ValueError:
        return False


def _folder(v):
    return isinstance(v, (str, os.PathLike)) and str(v) != ""


# name: (test, what is allowed). The order is the parameters cell's.
PARAMETER_RULES = {
    "BATCH_SIZE": (_positive_int, "a positive int"),
    "TEST_BATCH_SIZE": (_positive_int, "a positive int"),
    "LEARNING_RATE": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "MOMENTUM": (_fraction, "a number in [0, 1)"),
    "WEIGHT_DECAY": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "WARMUP": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "EMA_DECAY": (_fraction, "a number in [0, 1)"),
    "EPOCHS": (_positive_int, "a positive int"),
    "CHANNELS": (_channels, "four entries, each a positive int or a tuple of them, e.g. (16, 32, 64, 128) "
                 "or ((8, 8), 12, 16, 16)"),
    "DROPOUT": (_fraction, "a number in [0, 1)"),
    "ROTATION": (lambda v: _is_number(v) and 0 <= v <= 180, "degrees in [0, 180]"),
    "SHIFT": (lambda v: _is_number(v) and 0 <= v <= 0.5, "a share of the image size in [0, 0.5]"),
    "ZOOM": (_fraction, "a number in [0, 1)"),
    "TTA_SHIFT": (lambda v: _is_int(v) and 0 <= v <= 4, "pixels, an int in [0, 4]"),
    "NUM_WORKERS": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "SEED": (_is_int, "an int"),
    "DATA_DIR": (lambda v: v is None or _folder(v), "None or a folder path"),
    "OUTPUT_DIR": (_folder, "a folder path"),
    "SMOKE": (lambda v: isinstance(v, bool), "True or False"),
}


def check_parameters(namespace):
    """The parameters-cell values found in `namespace` (e.g. globals()), checked.

    Raises ValueError naming the first bad parameter, the value given and what is allowed, and
    makes sure OUTPUT_DIR can be created and written, so a run fails in seconds, not at the end.
    """
    missing = [name for name in PARAMETER_RULES if name not in namespace]
    if missing:
        raise ValueError(f"The parameters cell does not define {', '.join(missing)}; run it first.")
    params = {name: namespace[name] for name in PARAMETER_RULES}
    for name, (is_ok, allowed) in PARAMETER_RULES.items():
        value = params[name]
        if not is_ok(value):
            hint = ""
            if isinstance(value, str):
                hint = (" (a string: with papermill, pass numbers and True/False with -p, which "
                        "parses them, not -r, and a list with -y, e.g. -y 'CHANNELS: [8, 12, 16, 20]')")
            raise ValueError(
                f"{name} = {value!r} ({type(value).__name__}) is not allowed: {name} must be "
                f"{allowed}{hint}."
            )
    # papermill passes lists (-y 'CHANNELS: [[8, 8], 12, 16, 16]'); tuples read as in the cell.
    params["CHANNELS"] = tuple(c if _is_int(c) else tuple(c) for c in params["CHANNELS"])
    check_writable(params["OUTPUT_DIR"])
    return params


def check_writable(folder):
    """Create `folder` if needed and prove a file can be written there; ValueError otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise ValueError(
            f"OUTPUT_DIR = {str(folder)!r} cannot be written ({type(err).__name__}: {err.strerror or err}). "
            "Set OUTPUT_DIR to a folder you can write to."
        ) from err


def start_run(output_dir, params, model, device, continued_from=None):
    """Create a new run folder under `output_dir` and write its params.json; return its path.

    `continued_from` is the run folder whose trained weights this run starts from, if any.
    """
    now = datetime.now().astimezone()
    name = "_".join(
        [f"{now:%Y%m%d-%H%M%S}", "c" + _short(params["CHANNELS"]),
         f"ep{params['EPOCHS']}", f"seed{params['SEED']}"] + (["smoke"] if params["SMOKE"] else [])
    )
    run_dir = _new_folder(Path(output_dir), name)
    info = dict(
        name=run_dir.name,
        started=now.isoformat(timespec="microseconds"),
        parameters={k: str(v) if isinstance(v, os.PathLike) else v for k, v in params.items()},
        parameter_count=count_parameters(model),
        continued_from=None if continued_from is None else Path(continued_from).name,
        torch=torch.__version__,
        device=str(device),
        threads=torch.get_num_threads(),
        cpu=cpu_model(),
        git_commit=git_commit(),
    )
    utils.save_json(info, run_dir / PARAMS_FILE)
    return run_dir


def _new_folder(parent, name):
    """parent/name, or parent/name-2, -3, ... if taken: a folder no other run has used."""
    for n in range(1, 1000):
        folder = parent / (name if n == 1 else f"{name}-{n}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise FileExistsError(f"{parent} already holds 999 runs named {name}; choose another OUTPUT_DIR.")


def save_epoch(run_dir, history, model, epochs_planned):
    """Write metrics.json and, when its weights are finite, mnist_net.pt, both atomically.

    Called after every finished epoch, so any kind of stop keeps every finished epoch on disk.
    Returns False (and keeps the previous weights file) when the weights hold NaN or inf.
    """
    metrics = dict(epochs_done=len(history["test_acc"]), epochs_planned=epochs_planned, history=history)
    utils.save_json(metrics, Path(run_dir) / METRICS_FILE)
    if not utils.all_finite(model):
        return False
    utils.save_weights(model, Path(run_dir) / WEIGHTS_FILE)
    return True


def save_final(run_dir, **values):
    """Add end-of-run figures (such as the test-time-augmentation accuracy) to metrics.json.

    Does nothing for a run with no finished epoch, which has no metrics to add to.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    utils.save_json({**json.loads(path.read_text()), **values}, path)


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux), else what platform knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit():
    """The commit of the code that runs (with "+changes" when files differ from it), or None."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+changes" if dirty else "")


def read_run(run_dir):
    """A run's params.json, with its metrics.json (None before its first finished epoch)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / PARAMS_FILE).read_text())
    metrics_path = run_dir / METRICS_FILE
    info["metrics"] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    info["path"] = run_dir
    return info


def list_runs(output_dir="outputs"):
    """Every run under `output_dir`, oldest first."""
    found = [read_run(p.parent) for p in Path(output_dir).glob(f"*/{PARAMS_FILE}")]
    return sorted(found, key=lambda run: datetime.fromisoformat(run["started"]))


def latest_run(output_dir="outputs"):
    """The folder of the newest run with at least one finished epoch."""
    return _pick(output_dir, lambda runs: runs[-1], "latest")


def best_run(output_dir="outputs"):
    """The folder of the run with the highest final test accuracy."""
    return _pick(output_dir, lambda runs: max(runs, key=lambda r: r["metrics"]["history"]["test_acc"][-1]),
                 "best")


def _pick(output_dir, choose, what):
    runs = [r for r in list_runs(output_dir) if r["metrics"] and (r["path"] / WEIGHTS_FILE).is_file()]
    if not runs:
        raise FileNotFoundError(
            f"No run with a finished epoch in {Path(output_dir).resolve()}, so there is no {what} run. "
            "Run S5.ipynb (make run) first, or pass the OUTPUT_DIR it used."
        )
    return choose(runs)["path"]


def load_model(run_dir, device="cpu"):
    """The MNISTNet that `run_dir` trained, with its saved weights, in eval mode."""
    params = read_run(run_dir)["parameters"]
    model = MNISTNet(channels=tuple(params["CHANNELS"]), dropout=params["DROPOUT"])
    return utils.load_weights(model, Path(run_dir) / WEIGHTS_FILE, map_location=device).to(device).eval()


# Parameters that say where things are, not how the model is trained: never compared.
NOT_COMPARED = {"DATA_DIR", "OUTPUT_DIR", "TEST_BATCH_SIZE", "NUM_WORKERS"}


def compare_runs(output_dir="outputs", path=None):
    """A table of every run under `output_dir` and their test-accuracy curves in one plot.

    The table shows the parameters that differ between the runs, the epochs finished (of those
    planned), the final and best test accuracy and the time. Returns (table text, figure).
    """
    runs = list_runs(output_dir)
    if not runs:
        raise FileNotFoundError(f"No runs in {Path(output_dir).resolve()} yet: run the training cell first.")
    varying = [
        name for name in runs[0]["parameters"]
        if name not in NOT_COMPARED and len({repr(r["parameters"].get(name)) for r in runs}) > 1
    ]
    header = ["run", *varying, "params", "epochs", "final %", "best %", "time"]
    rows = [header]
    for r in runs:
        m = r["metrics"]
        acc = m["history"]["test_acc"] if m else []
        rows.append([
            r["name"], *(_short(r["parameters"].get(name)) for name in varying),
            f"{r['parameter_count']:,}",
            f"{m['epochs_done']}/{m['epochs_planned']}" if m else "0 (none finished)",
            f"{acc[-1]:.2f}" if acc else "-", f"{max(acc):.2f}" if acc else "-",
            f"{sum(m['history']['epoch_time_s']):.0f} s" if m else "-",
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    table = "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
    return table, plot_runs(runs, varying, path)


def _short(value):
    """A value for a table or a folder name: (16, 32) -> "16-32"; ((8, 8), 12) -> "8x8-12"."""
    if isinstance(value, (list, tuple)):
        return "-".join("x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value)
    return str(value)


def plot_runs(runs, varying, path=None):
    """Test accuracy per epoch of every run with a finished epoch, one line each."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for r in runs:
        if not r["metrics"]:
            continue
        acc = r["metrics"]["history"]["test_acc"]
        label = ", ".join([r["name"][:15]] + [f"{k}={_short(r['parameters'][k])}" for k in varying])
        ax.plot(range(1, len(acc) + 1), acc, marker="o", markersize=3, label=label)
    utils.epoch_axis(ax, max((len(r["metrics"]["history"]["test_acc"]) for r in runs if r["metrics"]), default=1))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy of {len(runs)} run{'s' * (len(runs) != 1)}")
    utils.cap_percent_axis(ax)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")
    return utils.finish(fig, path)
