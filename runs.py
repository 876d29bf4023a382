"""Run folders for the S5 notebook: one per training run, saved as it goes, listed and compared.

Every execution of the notebook's training cell gets a new folder under OUTPUT_DIR, named by its
start time and the parameters that matter most. It holds `params.json` from the start, then
`metrics.json` and the averaged weights `mnist_net.pt` after every finished epoch, and the plots.
Nothing a run writes can replace an earlier run's file. Importing this module does nothing.
"""

import hashlib
import json
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

import checkpoints
import comparison
import moved
import parameters
import plots
import provenance
from files import interrupts_deferred, one_line, save_json
from model import MNISTNet, count_parameters

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "mnist_net.pt"
RESUME_FILE = "resume.pt"  # what resume.py needs to go on exactly
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
    resume_state: dict[str, Any] | None = None,
) -> Path:
    """Create a new run folder under `output_dir` and write its params.json; return its path.

    `continued_from` is the run folder whose trained weights this run starts from, if any.
    `resume_state` (resume.state()) is saved first, so a run stopped at any moment can be resumed.
    """
    now = datetime.now().astimezone()
    name = "_".join(
        [
            f"{now:%Y%m%d-%H%M%S}",
            "c" + comparison.short(params["CHANNELS"]),
            f"ep{params['EPOCHS']}",
            f"seed{params['SEED']}",
        ]
        + (["smoke"] if params["SMOKE"] else [])
    )
    run_dir = _new_folder(Path(output_dir).expanduser(), name)
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
    if resume_state is not None:
        checkpoints.save_file(resume_state, run_dir / RESUME_FILE)
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
    resume_state: dict[str, Any] | None = None,
) -> None:
    """After an epoch, save `resume_state` (resume.pt), the weights (mnist_net.pt), metrics.json.

    Each is written atomically. metrics.json counts only epochs whose weights are on disk, and
    records the SHA-256 of the weights it goes with, so weights that do not belong to it are found
    when they are loaded; a stop between the saves is made whole by resuming the run.
    Raises, naming the file, when the weights hold NaN or inf or a file cannot be written: the
    run stops there, and the epoch saved before stays whole.
    """
    run_dir = Path(run_dir)
    epoch = len(history["test_acc"])
    if not (run_dir / PARAMS_FILE).is_file():
        raise FileNotFoundError(
            f"{run_dir / PARAMS_FILE} is gone: the run folder was moved or deleted while "
            f"training, so epoch {epoch} was not saved and the run stops here."
        )
    if not checkpoints.all_finite(model):
        raise FloatingPointError(
            f"The averaged weights hold NaN or inf after epoch {epoch}, so they were not saved: "
            f"{run_dir} keeps epoch {epoch - 1}. Lower LEARNING_RATE and run again."
        )
    # Ctrl-C between the two saves would leave weights that metrics.json does not describe.
    try:
        with interrupts_deferred():
            if resume_state is not None:
                checkpoints.save_file(resume_state, run_dir / RESUME_FILE)
            checkpoints.save_weights(model, run_dir / WEIGHTS_FILE)
            metrics = dict(
                epochs_done=epoch,
                epochs_planned=epochs_planned,
                weights_sha256=sha256(run_dir / WEIGHTS_FILE),
                history=history,
            )
            save_json(metrics, run_dir / METRICS_FILE)
    except OSError as err:
        raise OSError(
            f"Epoch {epoch} could not be saved in {run_dir} ({type(err).__name__}: {err}), so "
            "the run stops here. Free disk space or make the folder writable, then run again."
        ) from err


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_final(run_dir: str | os.PathLike, **values: Any) -> None:
    """Add end-of-run figures (such as the test-time-augmentation accuracy) to metrics.json.

    Does nothing for a run with no finished epoch, which has no metrics to add to.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    save_json({**json.loads(path.read_text()), **values}, path)


class RunFolderError(ValueError):
    """A run folder's params.json or metrics.json cannot be read; the message names the file."""


# What a readable params.json and metrics.json hold at least.
PARAMS_KEYS = ("name", "started", "parameters", "parameter_count")
METRICS_KEYS = ("epochs_done", "epochs_planned", "history")


def read_params(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json; RunFolderError naming the file when it is damaged."""
    path = Path(run_dir) / PARAMS_FILE
    info = _read_json(path, PARAMS_KEYS)
    if not isinstance(info["parameters"], dict):
        raise RunFolderError(f"{path} holds no parameters: the run folder is damaged.")
    info["parameters"] = parameters.with_added_later(info["parameters"])
    return info


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json, with its metrics.json (None before its first finished epoch).

    Raises RunFolderError naming the file when either is missing, empty, truncated or incomplete.
    """
    run_dir = Path(run_dir)
    info = read_params(run_dir)
    info["name"] = run_dir.name  # a copied or renamed folder is known by its own name
    metrics_path = run_dir / METRICS_FILE
    info["metrics"] = _read_json(metrics_path, METRICS_KEYS) if metrics_path.exists() else None
    if info["metrics"] is not None and not info["metrics"]["history"].get("test_acc"):
        raise RunFolderError(f"{metrics_path} holds no test accuracy: it is damaged.")
    info["path"] = run_dir
    return info


def _read_json(path, keys):
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise RunFolderError(
            f"{path} cannot be read ({type(err).__name__}: {one_line(err)}): the run "
            "folder is damaged. Move it out of the output folder, or delete it."
        ) from err
    missing = [key for key in keys if not isinstance(data, dict) or key not in data]
    if missing:
        raise RunFolderError(f"{path} lacks {', '.join(missing)}: the run folder is damaged.")
    if "started" in keys:  # list_runs sorts by it
        try:
            datetime.fromisoformat(data["started"])
        except (TypeError, ValueError) as err:
            raise RunFolderError(
                f"{path} gives started = {data['started']!r}, which is no date: the run folder "
                "is damaged."
            ) from err
    return data


def scan_runs(output_dir: str | os.PathLike = "outputs") -> tuple[list[dict], dict[Path, str]]:
    """(every readable run under `output_dir`, oldest first; {damaged folder: why})."""
    found, damaged = [], {}
    for folder in sorted(p.parent for p in Path(output_dir).expanduser().glob(f"*/{PARAMS_FILE}")):
        try:
            found.append(read_run(folder))
        except RunFolderError as err:
            damaged[folder] = str(err)
    return sorted(found, key=lambda run: datetime.fromisoformat(run["started"])), damaged


def list_runs(output_dir: str | os.PathLike = "outputs") -> list[dict[str, Any]]:
    """Every readable run under `output_dir`, oldest first; a damaged one is skipped, warning."""
    found, damaged = scan_runs(output_dir)
    for why in damaged.values():
        warnings.warn(f"Skipped: {why}", stacklevel=2)
    return found


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
    while runs:
        run = choose(runs)
        try:
            check_weights_match(run)
            return run["path"]
        except RunFolderError as err:
            warnings.warn(f"Skipped: {err}", stacklevel=3)
            runs.remove(run)
    raise FileNotFoundError(
        f"No run with a finished epoch in {Path(output_dir).expanduser().resolve()}, "
        f"so there is no {what} run. "
        "Run S5.ipynb (make run) first, or pass the OUTPUT_DIR it used."
    )


def check_weights_match(run: dict[str, Any]) -> None:
    """RunFolderError unless the run's weights file is the one its metrics.json was saved with."""
    expected = (run["metrics"] or {}).get("weights_sha256")
    weights = run["path"] / WEIGHTS_FILE
    if expected is not None and (not weights.is_file() or sha256(weights) != expected):
        raise RunFolderError(
            f"{weights} is not the weights file {run['path'] / METRICS_FILE} was saved with "
            "(the run stopped between the two saves, or the file was replaced), so its "
            f"accuracy is not the one recorded. Resume it (RESUME = '{run['path']}') to save "
            "them again together, or train it again."
        )


def load_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> MNISTNet:
    """The MNISTNet that `run_dir` trained, with its saved weights, in eval mode.

    Refuses, before building anything, a params.json that asks for a network the notebook would
    not build, and weights that are not the ones the run's metrics.json was saved with.
    """
    run = read_run(run_dir)
    params = run["parameters"]
    is_ok, allowed = parameters.PARAMETER_RULES["CHANNELS"]
    if not is_ok(params.get("CHANNELS")):
        raise RunFolderError(
            f"{run['path'] / PARAMS_FILE} gives CHANNELS = {params.get('CHANNELS')!r}, which "
            f"the notebook does not build: CHANNELS must be {allowed}."
        )
    check_weights_match(run)
    model = MNISTNet(channels=tuple(params["CHANNELS"]), dropout=params["DROPOUT"])
    return (
        checkpoints.load_weights(model, Path(run_dir) / WEIGHTS_FILE, map_location=device)
        .to(device)
        .eval()
    )


def compare_runs(
    output_dir: str | os.PathLike = "outputs", path: str | os.PathLike | None = None
) -> tuple[str, Figure]:
    """A table of every run under `output_dir` and their test-accuracy curves in one plot.

    The table (comparison.table) shows the parameters that differ between the runs, the epochs
    finished of those planned, the final and best test accuracy and the time; a damaged run
    folder gets a row that says so. Returns (table text, figure).
    """
    found, damaged = scan_runs(output_dir)
    if not found and not damaged:
        raise FileNotFoundError(
            f"No runs in {Path(output_dir).expanduser().resolve()} yet: "
            "run the training cell first."
        )
    return comparison.table(found, damaged), plots.plot_runs(comparison.curves(found), path)


def plot_runs(runs: list[dict[str, Any]], varying=None, path=None) -> Figure:
    """Deprecated: runs.compare_runs draws this plot; plots.plot_runs draws any curves."""
    warnings.warn(
        "runs.plot_runs has moved to plots.plot_runs(comparison.curves(runs), path).",
        DeprecationWarning,
        stacklevel=2,
    )
    return plots.plot_runs(comparison.curves(runs), path)


# Names that lived here before parameter checks and provenance got modules of their own. They still
# work, with a DeprecationWarning naming the new home.
MOVED = moved.homes(
    parameters=("PARAMETER_RULES", "check_parameters", "check_writable"),
    provenance=("cpu_model", "git_commit"),
    comparison=("NOT_COMPARED",),
)
__getattr__ = moved.forwarder("runs", MOVED)
__all__ = [
    "METRICS_FILE", "METRIC_KEYS", "PARAMS_FILE", "RESUME_FILE", "WEIGHTS_FILE", "RunFolderError",
    "best_run", "compare_runs", "latest_run", "list_runs", "load_model", "read_params", "read_run",
    "save_epoch", "save_final", "scan_runs", "start_run", "plot_runs", *MOVED,
]  # fmt: skip
