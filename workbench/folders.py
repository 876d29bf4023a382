"""A run's folder: the one module that writes and reads its files, and checks what it reads.

Every run of the training cell gets a new folder under OUTPUT_DIR, named by its start time and the
parameters that matter most. It holds `params.json` and `resume.pt` from the start, then
`metrics.json`, the averaged weights `mnist_net.pt` and a new `resume.pt` after every finished
epoch, and the plots. Nothing a run writes can replace an earlier run's file. Importing this module
does nothing.
"""

import hashlib
import json
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from model import count_parameters
from workbench import checkpoints, comparison, parameters, provenance
from workbench.files import interrupts_deferred, one_line, write_together

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "mnist_net.pt"
RESUME_FILE = "resume.pt"  # all that the next epoch depends on (workbench.resume)
FILES = (PARAMS_FILE, METRICS_FILE, WEIGHTS_FILE, RESUME_FILE)
METRIC_KEYS = (
    "train_loss",
    "train_acc",
    "test_loss",
    "test_acc",
    "lr",
    "train_time_s",
    "epoch_time_s",
)


class RunFolderError(ValueError):
    """A run folder's file is missing, unreadable or not what the notebook writes; the message
    names the file."""


def create(
    output_dir: str | os.PathLike,
    params: dict[str, Any],
    model: torch.nn.Module,
    device: str | torch.device,
    continued_from: str | os.PathLike | None,
    resume_state: dict[str, Any],
) -> Path:
    """Create a new run folder under `output_dir` with its resume.pt and params.json; its path.

    `continued_from` is the run folder whose trained weights this run starts from, if any.
    resume.pt goes first: a folder with a params.json can always be resumed.
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
    write_together(
        {run_dir / RESUME_FILE: _torch_file(resume_state), run_dir / PARAMS_FILE: _json_file(info)}
    )
    return run_dir


def _new_folder(parent: Path, name: str) -> Path:
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


def _torch_file(obj):
    return lambda f: torch.save(obj, f)


def _json_file(data):
    return lambda f: f.write(json.dumps(data, indent=2).encode())


def save_epoch(
    run_dir: str | os.PathLike,
    history: dict[str, list[float]],
    model: torch.nn.Module,
    epochs_planned: int,
    resume_state: dict[str, Any],
) -> None:
    """After an epoch, replace resume.pt, the weights (mnist_net.pt) and metrics.json together.

    metrics.json records the SHA-256 of the weights it goes with, so weights that do not belong to
    it are found when they are loaded. The three are written in full before any is replaced, so a
    file that cannot be written (a full disk, a read-only file) leaves the epoch before whole; a
    hard stop between the renames is made whole by resuming the run. Raises, naming the file and
    the RESUME value to go on with, when the weights hold NaN or inf or a file cannot be written.
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
    weights = checkpoints.state_bytes(model.state_dict())
    metrics = dict(
        epochs_done=epoch,
        epochs_planned=epochs_planned,
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        history=history,
    )
    # Ctrl-C between the renames would leave weights that metrics.json does not describe.
    try:
        with interrupts_deferred():
            write_together(
                {
                    run_dir / RESUME_FILE: _torch_file(resume_state),
                    run_dir / WEIGHTS_FILE: lambda f: f.write(weights),
                    run_dir / METRICS_FILE: _json_file(metrics),
                }
            )
    except OSError as err:
        kept = f"epoch {epoch - 1}" if epoch > 1 else "no finished epoch"
        raise OSError(
            err.errno,
            f"Epoch {epoch} could not be saved in {run_dir} ({type(err).__name__}: "
            f"{one_line(err)}), so the run stops here; its files still hold {kept}, whole. "
            f"Free disk space or make the files writable, then go on with "
            f"RESUME = {str(run_dir)!r}.",
        ) from err


def save_final(run_dir: str | os.PathLike, **values: Any) -> None:
    """Add end-of-run figures (such as the test-time-augmentation accuracy) to metrics.json."""
    path = Path(run_dir) / METRICS_FILE
    metrics = _read_json(path)
    _check_metrics(metrics, path)
    try:
        _check_metrics({**metrics, **values}, path)
    except RunFolderError as err:
        raise ValueError(f"{values} cannot go into {path}: {err}") from None
    write_together({path: _json_file({**metrics, **values})})


def note_resumed(run_dir: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Add `entry` (when and how the run went on) to the "resumed" list of its params.json."""
    path = Path(run_dir) / PARAMS_FILE
    info = read_params(run_dir)
    info["resumed"] = [*info.get("resumed", []), entry]
    write_together({path: _json_file(info)})


def remove_leftovers(run_dir: str | os.PathLike) -> None:
    """Delete the temporary files a hard stop in the middle of a save left in the run folder."""
    for name in FILES:
        for leftover in Path(run_dir).glob(f".{name}.*.tmp"):
            leftover.unlink()


def read_resume(run_dir: str | os.PathLike) -> object:
    """What the run's resume.pt holds, read with weights_only=True; CheckpointError if it can't."""
    return checkpoints.load_file(Path(run_dir) / RESUME_FILE)


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_params(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json, checked; RunFolderError naming the file when it is damaged."""
    path = Path(run_dir) / PARAMS_FILE
    info = _read_json(path)
    _check_params(info, path)
    return info


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json, with its metrics.json (None before its first finished epoch) and path.

    Raises RunFolderError naming the file when either is missing, unreadable or not in the shape
    the notebook writes (a wrong type, a value out of range, a figure that is NaN).
    """
    run_dir = Path(run_dir)
    info = read_params(run_dir)
    info["name"] = run_dir.name  # a copied or renamed folder is known by its own name
    metrics_path = run_dir / METRICS_FILE
    info["metrics"] = None
    if os.path.lexists(metrics_path):
        info["metrics"] = _read_json(metrics_path)
        _check_metrics(info["metrics"], metrics_path)
    info["path"] = run_dir
    return info


def check_weights_match(run: dict[str, Any]) -> None:
    """RunFolderError unless the run's weights file is the one its metrics.json was saved with."""
    if run["metrics"] is None:
        raise RunFolderError(
            f"{run['path']} has no finished epoch yet (no {METRICS_FILE}), so it has no trained "
            f"weights. Go on with it (RESUME = {str(run['path'])!r}) to train it, or use "
            "another run."
        )
    weights = run["path"] / WEIGHTS_FILE
    if not weights.is_file() or sha256(weights) != run["metrics"]["weights_sha256"]:
        raise RunFolderError(
            f"{weights} is not the weights file {run['path'] / METRICS_FILE} was saved with "
            "(the run stopped between the two saves, or the file was replaced or deleted), so "
            f"its accuracy is not the one recorded. Resume it (RESUME = {str(run['path'])!r}) "
            "to save them again together, or train it again."
        )


def is_whole(run_dir: str | os.PathLike, epochs: int) -> bool:
    """Whether the run's metrics.json counts `epochs` epochs and its weights are the ones saved."""
    try:
        run = read_run(run_dir)
        check_weights_match(run)
    except RunFolderError:
        return False
    return run["metrics"]["epochs_done"] == epochs


def damaged(path: Path, what: str) -> RunFolderError:
    return RunFolderError(
        f"{path} {what}: the run folder is damaged. Move it out of the output folder, or delete it."
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise damaged(path, f"cannot be read ({type(err).__name__}: {one_line(err)})") from err


def _is_count(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_params(info: Any, path: Path) -> None:
    """RunFolderError unless `info` has the shape of the params.json that create() writes."""
    if not isinstance(info, dict):
        raise damaged(path, f"holds a {type(info).__name__}, not an object")
    checks = {
        "name": (lambda v: isinstance(v, str), "a string"),
        "started": (_is_date, "a date with its time zone"),
        "parameters": (lambda v: isinstance(v, dict), "an object"),
        "parameter_count": (lambda v: _is_count(v, 1), "a positive int"),
        "continued_from": (lambda v: v is None or isinstance(v, str), "null or a run's name"),
    }
    _check_fields(info, checks, path)
    recorded = info["parameters"]
    missing = [name for name in parameters.PARAMETER_RULES if name not in recorded]
    if missing:
        raise damaged(path, f"records no {', '.join(missing)}")
    for name, (is_ok, allowed) in parameters.PARAMETER_RULES.items():
        if not is_ok(recorded[name]):
            raise damaged(path, f"gives {name} = {recorded[name]!r}, but {name} is {allowed}")
    if not isinstance(info.get("resumed", []), list):
        raise damaged(path, f"gives resumed = {info['resumed']!r}, not a list")


def _is_date(value):
    """An ISO date with its time zone, as create() writes it: runs are sorted by it."""
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except (TypeError, ValueError):
        return False


def _check_metrics(metrics: Any, path: Path) -> None:
    """RunFolderError unless `metrics` has the shape of the metrics.json save_epoch writes."""
    if not isinstance(metrics, dict):
        raise damaged(path, f"holds a {type(metrics).__name__}, not an object")
    checks = {
        "epochs_done": (lambda v: _is_count(v, 1), "a positive int"),
        "epochs_planned": (lambda v: _is_count(v, 1), "a positive int"),
        "weights_sha256": (
            lambda v: isinstance(v, str) and len(v) == 64 and set(v) <= set("0123456789abcdef"),
            "a SHA-256 digest",
        ),
        "history": (lambda v: isinstance(v, dict), "an object"),
    }
    optional = {
        "final_test_acc": (lambda v: _is_finite(v) and 0 <= v <= 100, "a percentage"),
        "tta_shift": (lambda v: _is_count(v), "an int >= 0"),
    }
    _check_fields(metrics, checks, path)
    _check_fields(metrics, optional, path, required=False)
    epochs = metrics["epochs_done"]
    for key in METRIC_KEYS:
        values = metrics["history"].get(key)
        if not (
            isinstance(values, list) and len(values) == epochs and all(map(_is_finite, values))
        ):
            raise damaged(
                path, f"gives history.{key} = {values!r}, not {epochs} finite numbers (epochs_done)"
            )
    accuracies = metrics["history"]["test_acc"] + metrics["history"]["train_acc"]
    if not all(0 <= acc <= 100 for acc in accuracies):
        raise damaged(path, "gives an accuracy outside 0-100%")


def _check_fields(data: dict, checks: dict, path: Path, required: bool = True) -> None:
    for key, (is_ok, allowed) in checks.items():
        if key not in data:
            if required:
                raise damaged(path, f"lacks {key}")
            continue
        if not is_ok(data[key]):
            raise damaged(path, f"gives {key} = {data[key]!r}, not {allowed}")
