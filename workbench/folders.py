"""A run's folder: the one module that writes and reads its files, and checks what it reads.

Every run of the training cell gets a new folder under OUTPUT_DIR, named by its start time and the
parameters that matter most. It holds `params.json` and `resume.pt` from the start, then
`metrics.json`, the averaged weights `mnist_net.pt` and a new `resume.pt` after every finished
epoch, and the plots. Nothing a run writes can replace an earlier run's file. Importing this module
does nothing.
"""

import hashlib
import json
import os
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from model import count_parameters
from workbench import checkpoints, comparison, provenance
from workbench.files import interrupts_deferred, json_writer, one_line, write_together
from workbench.schema import RunFolderError, check_metrics, check_params, damaged

PARAMS_FILE = "params.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "mnist_net.pt"
RESUME_FILE = "resume.pt"  # all that the next epoch depends on (workbench.resume)
FILES = (PARAMS_FILE, METRICS_FILE, WEIGHTS_FILE, RESUME_FILE)


def create(
    output_dir: str | os.PathLike,
    params: dict[str, Any],
    model: torch.nn.Module,
    device: str | torch.device,
    continued_from: str | os.PathLike | None,
    resume_state: dict[str, Any],
    speed: dict[str, Any],
) -> Path:
    """Create a new run folder under `output_dir` with its resume.pt and params.json; its path.

    `continued_from` is the run folder whose trained weights this run starts from, if any;
    `speed` how it trains (workbench.speed.choose).
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
    # The longest path the run will write: a plot's temporary file. One too long for the file
    # system would stop the run at its end; it stops here instead.
    probe = run_dir / ".confusion_matrix.png.12345678.tmp"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        run_dir.rmdir()
        raise _unusable(output_dir, err, probe) from err
    info = dict(
        name=run_dir.name,
        # Written into metrics.json too: files mixed up between two run folders disagree on it.
        run_id=secrets.token_hex(8),
        started=now.isoformat(timespec="microseconds"),
        parameters={k: str(v) if isinstance(v, os.PathLike) else v for k, v in params.items()},
        parameter_count=count_parameters(model),
        speed=speed,
        continued_from=None if continued_from is None else Path(continued_from).name,
        torch=torch.__version__,
        device=str(device),
        threads=torch.get_num_threads(),
        cpu=provenance.cpu_model(),
        git_commit=provenance.git_commit(),
    )
    write_together(
        {
            run_dir / RESUME_FILE: checkpoints.torch_writer(resume_state),
            run_dir / PARAMS_FILE: json_writer(info),
        }
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
        except OSError as err:  # a path too long for the file system, a file in the way, ...
            raise _unusable(parent, err, folder) from err
    raise FileExistsError(
        f"{parent} already holds 999 runs named {name}; choose another OUTPUT_DIR."
    )


def _unusable(output_dir: str | os.PathLike, err: OSError, path: Path) -> OSError:
    return OSError(
        err.errno,
        f"No run can be saved in OUTPUT_DIR = {str(output_dir)!r}: {path.name} cannot be made in "
        f"it ({err.strerror}). Choose another OUTPUT_DIR (a shorter path, for a name too long).",
    )


def check_output_dir(output_dir: str | os.PathLike) -> None:
    """ValueError when OUTPUT_DIR is a run's own folder: new runs would hide inside it."""
    if (Path(output_dir).expanduser() / PARAMS_FILE).is_file():
        raise ValueError(
            f"OUTPUT_DIR = {str(output_dir)!r} is a run's folder (it holds {PARAMS_FILE}), and a "
            "new run's folder goes inside OUTPUT_DIR: set OUTPUT_DIR to the folder that holds the "
            f"runs, {str(Path(output_dir).expanduser().parent)!r}, or set RESUME = "
            f"{str(output_dir)!r} to go on with that run."
        )


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
        run_id=read_params(run_dir)["run_id"],
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
                    run_dir / RESUME_FILE: checkpoints.torch_writer(resume_state),
                    run_dir / WEIGHTS_FILE: lambda f: f.write(weights),
                    run_dir / METRICS_FILE: json_writer(metrics),
                }
            )
    except OSError as err:
        kept = f"epoch {epoch - 1}" if epoch > 1 else "no finished epoch"
        message = (
            f"Epoch {epoch} could not be saved in {run_dir} ({type(err).__name__}: "
            f"{one_line(err) if err.strerror is None else err.strerror}), so the run stops "
            f"here; its files still hold {kept}, whole. Free disk space or make the files "
            f"writable, then go on with RESUME = {str(run_dir)!r}."
        )
        # The cause's errno, where it has one ("[Errno 28] Epoch 2 ..." for a full disk).
        raise (OSError(message) if err.errno is None else OSError(err.errno, message)) from err


def save_final(run_dir: str | os.PathLike, **values: Any) -> None:
    """Add end-of-run figures (such as the test-time-augmentation accuracy) to metrics.json."""
    path = Path(run_dir) / METRICS_FILE
    metrics = _read_json(path)
    check_metrics(metrics, path)
    try:
        check_metrics({**metrics, **values}, path)
    except RunFolderError as err:
        raise ValueError(f"{values} cannot go into {path}: {err}") from None
    write_together({path: json_writer({**metrics, **values})})


def note_resumed(run_dir: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Add `entry` (when and how the run went on) to the "resumed" list of its params.json."""
    path = Path(run_dir) / PARAMS_FILE
    info = read_params(run_dir)
    info["resumed"] = [*info.get("resumed", []), entry]
    write_together({path: json_writer(info)})


def remove_leftovers(run_dir: str | os.PathLike) -> None:
    """Delete the temporary files a hard stop in the middle of a save left in the run folder."""
    for name in FILES:
        for leftover in Path(run_dir).glob(f".{name}.*.tmp"):
            leftover.unlink()


def read_resume(run_dir: str | os.PathLike, fix: str = checkpoints.REREAD) -> object:
    """What the run's resume.pt holds, read with weights_only=True; CheckpointError if it can't,
    ending with `fix`."""
    return checkpoints.load_file(Path(run_dir) / RESUME_FILE, fix=fix)


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_params(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json, checked; RunFolderError naming the file when it is damaged."""
    path = Path(run_dir).expanduser() / PARAMS_FILE
    if path.parent.is_file():
        raise RunFolderError(
            f"{path.parent} is a file, not a run folder: give the folder that holds it, "
            f"{path.parent.parent}."
        )
    if not os.path.lexists(path):
        raise RunFolderError(
            f"{path.parent} is not a run folder: it has no {PARAMS_FILE}. Give the folder of one "
            "run (workbench.runs.list_runs(OUTPUT_DIR) lists them, runs.latest_run finds one)."
        )
    info = _read_json(path)
    check_params(info, path)
    return info


def read_run(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's params.json, with its metrics.json (None before its first finished epoch) and path.

    Raises RunFolderError naming the file when either is missing, unreadable or not in the shape
    the notebook writes (a wrong type, a value out of range, a figure that is NaN).
    """
    run_dir = Path(run_dir).expanduser()
    info = read_params(run_dir)
    info["name"] = run_dir.name  # a copied or renamed folder is known by its own name
    metrics_path = run_dir / METRICS_FILE
    info["metrics"] = None
    if os.path.lexists(metrics_path):
        info["metrics"] = _read_json(metrics_path)
        check_metrics(info["metrics"], metrics_path)
        if info["metrics"]["run_id"] != info["run_id"]:
            raise damaged(
                metrics_path,
                f"belongs to another run (run_id {info['metrics']['run_id']}) than {PARAMS_FILE} "
                f"beside it ({info['run_id']}): files were mixed up between run folders",
            )
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise damaged(path, f"cannot be read ({type(err).__name__}: {one_line(err)})") from err
