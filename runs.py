"""Run folders for the S5 notebook: one per training run, saved as it goes, listed and compared.

Every execution of the notebook's training cell gets a new folder under OUTPUT_DIR, named by its
start time and the parameters that matter most. It holds `params.json` from the start, then
`metrics.json` and the averaged weights `mnist_net.pt` after every finished epoch, and the plots.
Nothing a run writes can replace an earlier run's file. Importing this module does nothing.
"""

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

import checkpoints
import moved
import plots
import provenance
from files import save_json
from model import MNISTNet, count_parameters

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "mnist_net.pt"
METRIC_KEYS = (
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "lr",
    "train_time_s",
    "epoch_time_s",
)


def start_run(
    output_dir: str | os.PathLike,
    params: dict[str, Any],
    model: torch.nn.Module,
    device: str | torch.device,
    continued_from: str | os.PathLike | None = None,
) -> Path:
    """Create a new run folder under `output_dir` and write its params.json; return its path.

    `continued_from` is the run folder whose trained weights this run starts from, if any.
    """
    now = datetime.now().astimezone()
    name = "_".join(
        [
            f"{now:%Y%m%d-%H%M%S}",
            "c" + _short(params["CHANNELS"]),
            f"ep{params['EPOCHS']}",
            f"seed{params['SEED']}",
        ]
        + (["smoke"] if params["SMOKE"] else [])
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
        cpu=provenance.cpu_model(),
        git_commit=provenance.git_commit(),
    )
    save_json(info, run_dir / PARAMS_FILE)
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
    raise FileExistsError(
        f"{parent} already holds 999 runs named {name}; choose another OUTPUT_DIR."
    )


def save_epoch(
    run_dir: str | os.PathLike,
    history: dict[str, list[float]],
    model: torch.nn.Module,
    epochs_planned: int,
) -> bool:
    """Write metrics.json and, when its weights are finite, mnist_net.pt, both atomically.

    Called after every finished epoch, so any kind of stop keeps every finished epoch on disk.
    Returns False (and keeps the previous weights file) when the weights hold NaN or inf.
    """
    metrics = dict(
        epochs_done=len(history["test_acc"]), epochs_planned=epochs_planned, history=history
    )
    save_json(metrics, Path(run_dir) / METRICS_FILE)
    if not checkpoints.all_finite(model):
        return False
    checkpoints.save_weights(model, Path(run_dir) / WEIGHTS_FILE)
    return True


def save_final(run_dir: str | os.PathLike, **values: Any) -> None:
    """Add end-of-run figures (such as the test-time-augmentation accuracy) to metrics.json.

    Does nothing for a run with no finished epoch, which has no metrics to add to.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    save_json({**json.loads(path.read_text()), **values}, path)


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json, with its metrics.json (None before its first finished epoch)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / PARAMS_FILE).read_text())
    metrics_path = run_dir / METRICS_FILE
    info["metrics"] = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    info["path"] = run_dir
    return info


def list_runs(output_dir: str | os.PathLike = "outputs") -> list[dict[str, Any]]:
    """Every run under `output_dir`, oldest first."""
    found = [read_run(p.parent) for p in Path(output_dir).glob(f"*/{PARAMS_FILE}")]
    return sorted(found, key=lambda run: datetime.fromisoformat(run["started"]))


def latest_run(output_dir: str | os.PathLike = "outputs") -> Path:
    """The folder of the newest run with at least one finished epoch."""
    return _pick(output_dir, lambda runs: runs[-1], "latest")


def best_run(output_dir: str | os.PathLike = "outputs") -> Path:
    """The folder of the run with the highest final test accuracy."""
    return _pick(
        output_dir,
        lambda runs: max(runs, key=lambda r: r["metrics"]["history"]["test_acc"][-1]),
        "best",
    )


def _pick(output_dir, choose, what):
    runs = [
        r for r in list_runs(output_dir) if r["metrics"] and (r["path"] / WEIGHTS_FILE).is_file()
    ]
    if not runs:
        raise FileNotFoundError(
            f"No run with a finished epoch in {Path(output_dir).resolve()}, "
            f"so there is no {what} run. "
            "Run S5.ipynb (make run) first, or pass the OUTPUT_DIR it used."
        )
    return choose(runs)["path"]


def load_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> MNISTNet:
    """The MNISTNet that `run_dir` trained, with its saved weights, in eval mode."""
    params = read_run(run_dir)["parameters"]
    model = MNISTNet(channels=tuple(params["CHANNELS"]), dropout=params["DROPOUT"])
    return (
        checkpoints.load_weights(model, Path(run_dir) / WEIGHTS_FILE, map_location=device)
        .to(device)
        .eval()
    )


# Parameters that say where things are, not how the model is trained: never compared.
NOT_COMPARED = {"DATA_DIR", "OUTPUT_DIR", "TEST_BATCH_SIZE", "NUM_WORKERS"}


def compare_runs(
    output_dir: str | os.PathLike = "outputs", path: str | os.PathLike | None = None
) -> tuple[str, Figure]:
    """A table of every run under `output_dir` and their test-accuracy curves in one plot.

    The table shows the parameters that differ between the runs, the epochs finished (of those
    planned), the final and best test accuracy and the time. Returns (table text, figure).
    """
    runs = list_runs(output_dir)
    if not runs:
        raise FileNotFoundError(
            f"No runs in {Path(output_dir).resolve()} yet: run the training cell first."
        )
    varying = [
        name
        for name in runs[0]["parameters"]
        if name not in NOT_COMPARED and len({repr(r["parameters"].get(name)) for r in runs}) > 1
    ]
    header = ["run", *varying, "parameters", "epochs", "final %", "best %", "time"]
    rows = [header]
    for r in runs:
        m = r["metrics"]
        acc = m["history"]["test_acc"] if m else []
        rows.append(
            [
                r["name"],
                *(_short(r["parameters"].get(name)) for name in varying),
                f"{r['parameter_count']:,}",
                f"{m['epochs_done']}/{m['epochs_planned']}" if m else "0 (none finished)",
                f"{acc[-1]:.2f}" if acc else "-",
                f"{max(acc):.2f}" if acc else "-",
                f"{sum(m['history']['epoch_time_s']):.0f} s" if m else "-",
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    table = "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])
    curves = {
        ", ".join([r["name"][:15]] + [f"{k}={_short(r['parameters'][k])}" for k in varying]): r[
            "metrics"
        ]["history"]["test_acc"]
        for r in runs
        if r["metrics"]
    }
    return table, plots.plot_runs(curves, path)


def _short(value):
    """A value for a table or a folder name: (16, 32) -> "16-32"; ((8, 8), 12) -> "8x8-12"."""
    if isinstance(value, (list, tuple)):
        return "-".join(
            "x".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v) for v in value
        )
    return str(value)


# Names that lived here before parameter checks and provenance got modules of their own. They still
# work, with a DeprecationWarning naming the new home.
MOVED = moved.homes(
    parameters=("PARAMETER_RULES", "check_parameters", "check_writable"),
    provenance=("cpu_model", "git_commit"),
)
__getattr__ = moved.forwarder("runs", MOVED)
