"""Resume a stopped run exactly: in its own folder, from its last finished epoch.

When a run starts and after every finished epoch, the run folder keeps (`resume.pt`) everything the
next epoch depends on: the training objects' states (`Training`), the random generators (PyTorch's,
Python's, the training loader's, an accelerator's) and the per-epoch history. With `RESUME` set to
the run's folder, the training cell puts all of it back and trains the epochs that are left, so the
finished run's metrics and weights are those of a run that never stopped (same seed, same thread
count, same machine). workbench.folders writes and reads the files. Importing this module does
nothing.
"""

import dataclasses
import hashlib
import os
import random
import shlex
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn, optim
from torch.utils.data import DataLoader

from utils import get_device
from workbench import checkpoints, folders, provenance, schema
from workbench.files import check_writable
from workbench.parameters import CHANGE_NO_RESULT, normalized

# Bumped when what resume.pt holds changes, so an older file is refused by name, not by a KeyError.
FORMAT = 1
# Parameters that may differ from the run's own: they change nothing that is trained (TTA_SHIFT
# only changes the analysis after training).
MAY_DIFFER = (*CHANGE_NO_RESULT, "TTA_SHIFT")


@dataclass(frozen=True)
class Training:
    """The objects training changes: resume.pt holds a state_dict of each."""

    model: nn.Module
    optimizer: optim.Optimizer
    scheduler: optim.lr_scheduler.LRScheduler
    ema_model: optim.swa_utils.AveragedModel

    def state_dicts(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name).state_dict() for f in dataclasses.fields(self)}

    def load_state_dicts(self, saved: dict[str, Any]) -> None:
        for f in dataclasses.fields(self):
            getattr(self, f.name).load_state_dict(saved[f.name])


OBJECTS = tuple(f.name for f in dataclasses.fields(Training))


def state(
    training: Training, history: dict[str, list[float]], params: dict[str, Any], loader: DataLoader
) -> dict[str, Any]:
    """Everything the next epoch depends on, as tensors and plain data (for torch.save).

    With it, what it belongs to: the parameters that shape training and the training data's
    fingerprint, so a resume.pt of another run, or other data, is refused.
    """
    return dict(
        format=FORMAT,
        history=history,
        rng=rng_state(loader),
        parameters=shaping(params),
        data=data_fingerprint(loader),
        **training.state_dicts(),
    )


def shaping(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters that change what is trained: all but MAY_DIFFER, as the run uses them."""
    return {name: value for name, value in normalized(params).items() if name not in MAY_DIFFER}


def data_fingerprint(loader: DataLoader) -> dict[str, Any]:
    """The training set's size, steps per epoch and a digest of its labels and middle rows."""
    dataset = loader.dataset
    found = dict(images=len(dataset), steps_per_epoch=len(loader))
    if isinstance(getattr(dataset, "images", None), torch.Tensor):
        digest = hashlib.sha256(dataset.labels.cpu().numpy().tobytes())
        digest.update(dataset.images[:, dataset.images.shape[1] // 2].cpu().numpy().tobytes())
        found["digest"] = digest.hexdigest()
    return found


def rng_state(loader: DataLoader) -> dict[str, Any]:
    """The state of every random generator training draws from."""
    accelerator = get_device()
    return dict(
        torch=torch.get_rng_state(),
        python=random.getstate(),
        loader=None if loader.generator is None else loader.generator.get_state(),
        accelerator=None
        if accelerator.type == "cpu"
        else dict(
            device=accelerator.type,
            state=torch.get_device_module(accelerator).get_rng_state(),
        ),
    )


def set_rng_state(saved: dict[str, Any], loader: DataLoader) -> None:
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["python"])
    if loader.generator is not None and saved["loader"] is not None:
        loader.generator.set_state(saved["loader"])
    accelerator = get_device()
    before = saved["accelerator"]
    if before is not None and before["device"] == accelerator.type:
        torch.get_device_module(accelerator).set_rng_state(before["state"])


def jsonable(value: Any) -> Any:
    """`value` as params.json keeps it: a folder (a Path) as its text, anything else as it is."""
    return str(value) if isinstance(value, os.PathLike) else value


def check_resumable(params: dict[str, Any]) -> None:
    """ValueError, saying what to do, unless RESUME is None or a run these parameters can go on.

    The run must hold a resume.pt and must have started with the same values of every parameter
    that changes what is trained (all but MAY_DIFFER).
    """
    folder = params.get("RESUME")
    if folder is None:
        return
    run_dir = Path(folder)
    if not run_dir.exists():
        raise ValueError(
            f"RESUME = {str(folder)!r} does not exist ({run_dir.resolve()}): give the folder of "
            "the run to go on with (workbench.runs.list_runs(OUTPUT_DIR) lists them), or set "
            "RESUME = None to start a new run."
        )
    if run_dir.is_file():
        raise ValueError(
            f"RESUME = {str(folder)!r} is a file: give the run folder, such as {run_dir.parent}."
        )
    if not (run_dir / folders.PARAMS_FILE).is_file():
        raise ValueError(
            f"RESUME = {str(folder)!r} ({run_dir.resolve()}) is not a run folder: it has no "
            f"{folders.PARAMS_FILE}. Give the folder of the run to go on with, e.g. "
            f"{Path(params['OUTPUT_DIR']) / '20261130-120000_c16-32x32-64-128_ep16_seed1'}."
        )
    if not (run_dir / folders.RESUME_FILE).is_file():
        raise ValueError(
            f"{run_dir} cannot be resumed: it has no {folders.RESUME_FILE} (it was copied without "
            "it, or it was deleted). Set RESUME = None to start a new run."
        )
    recorded = normalized(folders.read_params(run_dir)["parameters"])
    differ = differences(shaping(params), recorded, "here", "there")
    if differ:
        raise ValueError(
            f"RESUME goes on with {run_dir} as it started, but {differ}. Set the parameters cell "
            "back to the run's values, or set RESUME = None to start a new run with these."
        )
    # Training, the plots and the analysis all write into the run's folder, even a finished run's.
    check_writable(
        run_dir,
        "RESUME",
        f"The run goes on in its own folder, and the cells after training write its plots and "
        f"metrics.json there: copy the folder to one you can write to (cp -r "
        f"{shlex.join([str(run_dir), str(Path(params['OUTPUT_DIR']) / run_dir.name)])}) and set "
        "RESUME to the copy.",
    )


def differences(mine: dict[str, Any], other: dict[str, Any], this: str, that: str) -> str:
    """ "EPOCHS is 5 here and 3 there, ..." for each value of `mine` that `other` has otherwise."""
    return ", ".join(
        f"{name} is {value!r} {this} and {other.get(name)!r} {that}"
        for name, value in mine.items()
        if value != other.get(name)
    )


def load_state(
    run_dir: Path, params: dict[str, Any], model: nn.Module, loader: DataLoader
) -> dict[str, Any]:
    """The run's resume.pt, read safely and checked to belong to this run and this data."""
    path = run_dir / folders.RESUME_FILE
    fix = (
        f"So the run cannot go on from it: {path.name} is the one record of the state its next "
        f"epoch starts from. Put back a whole copy of the run's {path.name} if there is one, or "
        "set RESUME = None to start a new run; the epochs it finished stay in its folder "
        "(workbench.runs.load_model loads their weights)."
    )
    try:
        saved = folders.read_resume(run_dir, fix)
    except OSError as err:
        raise checkpoints.CheckpointError(
            f"{path} cannot be read ({type(err).__name__}: {err.strerror or err}). {fix}"
        ) from None
    expected = {"format", "history", "rng", "parameters", "data", *OBJECTS}
    if (
        not isinstance(saved, dict)
        or saved.get("format") != FORMAT
        or expected - saved.keys()
        or not isinstance(saved["parameters"], dict)
    ):
        raise checkpoints.CheckpointError(
            f"{path} is not a resume file this notebook wrote (format {FORMAT}, with "
            f"{', '.join(sorted(expected))}), so the run cannot go on exactly. Set RESUME = None "
            "to start a new run."
        )
    differ = differences(shaping(params), saved["parameters"], "for this run", "in it")
    if differ and own_history(run_dir, saved):  # the run's own resume.pt: params.json was edited
        edited = differences(shaping(params), saved["parameters"], "there", f"in {path.name}")
        raise checkpoints.CheckpointError(
            f"{run_dir / folders.PARAMS_FILE} was edited after the run started: {edited}. A run's "
            "parameters cannot change once it started (a larger EPOCHS does not extend it): put "
            "back the values it started with, or set RESUME = None to start a new run."
        )
    if differ:
        raise checkpoints.CheckpointError(
            f"{path} belongs to another run: {differ}. Put back the run's own "
            f"{folders.RESUME_FILE}, or set RESUME = None to start a new run."
        )
    data, before = data_fingerprint(loader), saved["data"]
    if data != before:
        how = (
            f"{data['images']} images, {data['steps_per_epoch']} steps an epoch, where it had "
            f"{before['images']} and {before['steps_per_epoch']}"
            if (data["images"], data["steps_per_epoch"])
            != (before["images"], before["steps_per_epoch"])
            else "the same number of images, but other images or labels"
        )
        raise checkpoints.CheckpointError(
            f"The training data now is not the data {run_dir} was trained on ({how}): point "
            "DATA_DIR at that run's data."
        )
    checkpoints.check_state_dict(model, saved["model"], path)
    return saved


def own_history(run_dir: Path, saved: dict[str, Any]) -> bool:
    """Whether the run's metrics.json records the epochs of `saved`, a resume.pt's state."""
    try:
        metrics = folders.read_run(run_dir)["metrics"]
    except schema.RunFolderError:
        return False
    return metrics is not None and metrics["history"] == saved["history"]


def restore(
    params: dict[str, Any], training: Training, loader: DataLoader
) -> tuple[Path, dict[str, list[float]]]:
    """Put back the state of params["RESUME"] after its last finished epoch; (run folder, history).

    When a hard stop came between two of the run's saves, its weights and metrics.json are
    written again from that state, so the run is whole again before training goes on. `params`
    have passed check_resumable (Workbench.check runs it before every run).
    """
    run_dir = Path(params["RESUME"])
    saved = load_state(run_dir, params, training.model, loader)
    training.load_state_dicts(saved)
    set_rng_state(saved["rng"], loader)
    history = saved["history"]
    folders.remove_leftovers(run_dir)
    done = len(history["test_acc"])
    if done and not folders.is_whole(run_dir, done):  # what was loaded is what state() gives now
        folders.save_epoch(run_dir, history, training.ema_model.module, params["EPOCHS"], saved)
    if done < params["EPOCHS"]:
        note_resumed(run_dir, done, params, next(training.model.parameters()).device)
    return run_dir, history


def note_resumed(run_dir: Path, epochs_done: int, params: dict[str, Any], device) -> None:
    """Record in params.json when, after which epoch, how and with which data the run went on.

    Warns when the thread count, device, CPU or PyTorch differ from the run's: the results then
    differ from those of a run never stopped in the last bits.
    """
    info = folders.read_params(run_dir)
    now = dict(
        threads=torch.get_num_threads(),
        device=str(device),
        cpu=provenance.cpu_model(),
        torch=torch.__version__,
    )
    changed = [f"{key} {info.get(key)!r} -> {value!r}" for key, value in now.items()
               if info.get(key) != value]  # fmt: skip
    if changed:
        warnings.warn(
            f"{run_dir} goes on with other {', '.join(changed)}: the results will not be "
            "bit-for-bit those of a run that never stopped.",
            stacklevel=4,
        )
    entry = dict(
        at=datetime.now().astimezone().isoformat(timespec="seconds"),
        epochs_done=epochs_done,
        **now,
        git_commit=provenance.git_commit(),
        **{name: jsonable(params[name]) for name in MAY_DIFFER},
    )
    folders.note_resumed(run_dir, entry)
