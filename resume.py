"""Resume a stopped run exactly: in its own folder, from its last finished epoch.

When a run starts and after every finished epoch, the training cell saves beside the weights
(`resume.pt`) everything the next epoch depends on: the model being trained, the optimiser's
momentum, the learning-rate schedule's step, the weight average, the random generators (PyTorch's,
Python's, the training loader's, an accelerator's) and the per-epoch history. With `RESUME` set to
the run's folder, the training cell puts all of it back and trains the epochs that are left, so the
finished run's metrics and weights are those of a run that never stopped (same seed, same thread
count, same machine). Importing this module does nothing.
"""

import os
import random
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn, optim
from torch.utils.data import DataLoader

import checkpoints
import provenance
import runs
from files import save_json
from parameters import PARAMETER_RULES, normalized

# Bumped when what resume.pt holds changes, so an older file is refused by name, not by a KeyError.
FORMAT = 1
# Parameters that may differ from the run's own: they do not change what is trained.
MAY_DIFFER = ("RESUME", "DATA_DIR", "OUTPUT_DIR", "TTA_SHIFT")
# What resume.pt holds, besides FORMAT: a state_dict for each of these.
TRAINING_OBJECTS = ("model", "optimizer", "scheduler", "ema_model")


def state(
    history: dict[str, list[float]],
    model: nn.Module,
    optimizer: optim.Optimizer,
    scheduler: optim.lr_scheduler.LRScheduler,
    ema_model: nn.Module,
    loader: DataLoader,
) -> dict[str, Any]:
    """Everything the next epoch depends on, as tensors and plain data (for torch.save)."""
    objects = dict(model=model, optimizer=optimizer, scheduler=scheduler, ema_model=ema_model)
    return dict(
        format=FORMAT,
        history=history,
        rng=rng_state(loader),
        **{name: obj.state_dict() for name, obj in objects.items()},
    )


def rng_state(loader: DataLoader) -> dict[str, Any]:
    """The state of every random generator training draws from."""
    return dict(
        torch=torch.get_rng_state(),
        python=random.getstate(),
        loader=None if loader.generator is None else loader.generator.get_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
        mps=torch.mps.get_rng_state() if torch.backends.mps.is_available() else None,
    )


def set_rng_state(saved: dict[str, Any], loader: DataLoader) -> None:
    torch.set_rng_state(saved["torch"])
    random.setstate(saved["python"])
    if loader.generator is not None and saved["loader"] is not None:
        loader.generator.set_state(saved["loader"])
    if saved["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda"])
    if saved["mps"] is not None and torch.backends.mps.is_available():
        torch.mps.set_rng_state(saved["mps"])


def check_resumable(params: dict[str, Any]) -> None:
    """ValueError, saying what to do, unless RESUME is None or a run these parameters can go on.

    The run must hold a resume.pt and must have started with the same values of every parameter
    that changes what is trained (all but MAY_DIFFER).
    """
    folder = params.get("RESUME")
    if folder is None:
        return
    run_dir = Path(folder)
    if not (run_dir / runs.PARAMS_FILE).is_file():
        raise ValueError(
            f"RESUME = {str(folder)!r} is not a run folder (it has no {runs.PARAMS_FILE}): give "
            "the folder of the run to go on with, e.g. "
            f"{Path(params['OUTPUT_DIR']) / '20261130-120000_c16-32-64-128_ep20_seed1'}."
        )
    if not (run_dir / runs.RESUME_FILE).is_file():
        raise ValueError(
            f"{run_dir} cannot be resumed: it has no {runs.RESUME_FILE} (it was saved by a version "
            "of the notebook from before resuming, or copied without it). Set RESUME = None to "
            "start a new run."
        )
    saved = normalized(runs.read_params(run_dir)["parameters"])
    differ = [
        name
        for name in PARAMETER_RULES
        if name not in MAY_DIFFER and params[name] != saved.get(name, "(not recorded)")
    ]
    if differ:
        raise ValueError(
            f"RESUME goes on with {run_dir} as it started, but "
            + ", ".join(f"{n} is {params[n]!r} here and {saved.get(n)!r} there" for n in differ)
            + ". Set the parameters cell back to the run's values, or set RESUME = None to start "
            "a new run with these."
        )


def load_state(run_dir: str | os.PathLike, model: nn.Module) -> dict[str, Any]:
    """The run's resume.pt, read safely and checked against `model`."""
    path = Path(run_dir) / runs.RESUME_FILE
    saved = checkpoints.load_file(path)
    expected = {"format", "history", "rng", *TRAINING_OBJECTS}
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or expected - saved.keys():
        raise checkpoints.CheckpointError(
            f"{path} is not a resume file this notebook wrote (format {FORMAT}, with "
            f"{', '.join(sorted(expected))}), so the run cannot go on exactly. Set RESUME = None "
            "to start a new run."
        )
    checkpoints.check_state_dict(model, saved["model"], path)
    return saved


def resume_run(
    params: dict[str, Any],
    model: nn.Module,
    optimizer: optim.Optimizer,
    scheduler: optim.lr_scheduler.LRScheduler,
    ema_model: nn.Module,
    loader: DataLoader,
) -> tuple[Path, dict[str, list[float]]]:
    """Put back the state of params["RESUME"] after its last finished epoch; (run folder, history).

    The folder's weights and metrics.json are written again from that state, so a run stopped
    between two of its saves is whole again before training goes on.
    """
    check_resumable(params)
    run_dir = Path(params["RESUME"])
    saved = load_state(run_dir, model)
    objects = dict(model=model, optimizer=optimizer, scheduler=scheduler, ema_model=ema_model)
    for name, obj in objects.items():
        obj.load_state_dict(saved[name])
    set_rng_state(saved["rng"], loader)
    history = saved["history"]
    for leftover in run_dir.glob(".*.tmp"):  # from saves a hard stop cut short
        leftover.unlink()
    if history["test_acc"]:
        again = state(history, **objects, loader=loader)
        runs.save_epoch(run_dir, history, ema_model.module, params["EPOCHS"], again)
    note_resumed(run_dir, len(history["test_acc"]))
    return run_dir, history


def note_resumed(run_dir: Path, epochs_done: int) -> None:
    """Add when, after which epoch and how the run was resumed to its params.json."""
    info = runs.read_params(run_dir)
    if info.get("threads") != torch.get_num_threads():
        warnings.warn(
            f"{run_dir} was trained on {info.get('threads')} threads and goes on with "
            f"{torch.get_num_threads()}: the results will not be bit-for-bit those of a run that "
            "never stopped.",
            stacklevel=3,
        )
    resumed = dict(
        at=datetime.now().astimezone().isoformat(timespec="seconds"),
        epochs_done=epochs_done,
        threads=torch.get_num_threads(),
        cpu=provenance.cpu_model(),
        git_commit=provenance.git_commit(),
    )
    info["resumed"] = [*info.get("resumed", []), resumed]
    save_json(info, run_dir / runs.PARAMS_FILE)
