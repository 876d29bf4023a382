"""Weights files: saved whole, loaded safely.

A run folder writes its files whole (workbench.files); `load_weights` reads a state_dict back with
`torch.load(..., weights_only=True)` and refuses, with the reason, anything that is not a plain
state_dict for that model: pickled code, another file type, a truncated file, another architecture.
Importing this module does nothing.
"""

import io
import os
import pickle
import zipfile

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from utils import missing_device
from workbench.files import one_line


class CheckpointError(ValueError):
    """A weights file cannot be loaded safely into the model; the message says why."""


def torch_writer(obj: object):
    """What torch.saves `obj` into a file, for atomic_write and write_together."""
    return lambda f: torch.save(obj, f)


def state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """The bytes torch.save writes for `state`: what a weights file holds."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def all_finite(model: nn.Module) -> bool:
    """True when no parameter or buffer of `model` holds NaN or inf."""
    return not nonfinite(model.state_dict())


def nonfinite(state: dict[str, torch.Tensor]) -> list[str]:
    """The keys of `state` whose floating-point tensor holds NaN or inf."""
    return [k for k, v in state.items() if v.is_floating_point() and not v.isfinite().all()]


def load_weights(
    model: nn.Module, path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load a state_dict (a run's mnist_net.pt, or torch.save(model.state_dict(), path)) into
    `model`, refusing anything but finite tensors.

    Also takes the state_dict of the moving-average wrapper (AveragedModel) and training
    checkpoints that keep the state_dict under "model" or "state_dict".
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"load_weights(model, path) takes the model first, then the path; got a "
            f"{type(model).__name__} as the model."
        )
    if isinstance(model, AveragedModel):  # its state_dict holds "module."-prefixed keys
        raise CheckpointError(
            f"{type(model).__name__} is a moving average that holds the network: load the weights "
            f"into that network, load_weights(average.module, {str(path)!r})."
        )
    state = unwrap_state_dict(load_file(path, map_location), path)
    for key in model.state_dict().keys() - state.keys():
        if key.endswith(".num_batches_tracked"):  # saved before PyTorch 0.4.1 counted batches
            state[key] = torch.tensor(0)  # as BatchNorm itself loads such a file
    check_state_dict(model, state, path)
    bad = nonfinite(state)
    if bad:
        raise CheckpointError(
            f"{path} holds NaN or inf in {', '.join(bad)}: a model with these weights predicts "
            "nothing useful. Load the weights of an epoch before the loss diverged, or train again."
        )
    model.load_state_dict(state)
    return model


# What to do with a weights file that cannot be read.
REREAD = "Load another copy of it, or save the weights again: torch.save(model.state_dict(), path)."


def load_file(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", fix: str = REREAD
) -> object:
    """What torch_writer wrote to `path`, read with weights_only=True: tensors and plain data only.

    Raises CheckpointError saying why for another kind of file, pickled code or a truncated file;
    the message of a file that is no checkpoint, or not a whole one, ends with `fix`.
    """
    check_checkpoint_format(path, fix)
    device = torch.device(map_location)
    if has := missing_device(device):
        raise CheckpointError(
            f"map_location={str(map_location)!r}: this machine has no {device.type} device "
            f'({has}), so {path} cannot be loaded there. Load it to "cpu" (or to the device '
            "utils.get_device() gives)."
        )
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} was refused: it holds pickled objects or code, not only tensors, and loading "
            "it could run that code. Load only weights files saved with "
            "torch.save(model.state_dict(), path) from a source you trust."
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        # torch's first sentence says what it found; the rest is advice that fix replaces.
        found = one_line(err).split(". ")[0]
        raise CheckpointError(
            f"{path} cannot be read: it is truncated or corrupt, or an archive that torch.save did "
            f"not write ({type(err).__name__}: {found}). {fix}"
        ) from None
    return obj


def check_checkpoint_format(path: str | os.PathLike, fix: str = REREAD) -> None:
    """Raise CheckpointError unless `path` starts like a file written by torch.save."""
    with open(path, "rb") as f:
        head = f.read(8)
    # torch.save writes a zip archive; files from PyTorch before 1.6 are a bare pickle (0x80).
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return
    if not head:
        raise CheckpointError(f"{path} is empty (0 bytes): it holds nothing to load. {fix}")
    kinds = {b"\x89PNG": "a PNG image", b"{": "JSON", b"[": "JSON", b"\x1f\x8b": "a gzip archive"}
    kind = next((name for magic, name in kinds.items() if head.lstrip().startswith(magic)), None)
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint{f' (it looks like {kind})' if kind else ''}: "
        f"torch.save did not write it. {fix}"
    )


# What wrappers put before a model's keys in their own state_dict.
WRAPPERS = ("module.", "_orig_mod.")


def unwrap_state_dict(state: object, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model's state_dict inside `state`, a plain or wrapped state_dict."""
    if isinstance(state, dict) and {"ema_model", "rng", "history"} <= state.keys():
        raise CheckpointError(
            f"{path} is a run's resume.pt, the state to go on training, not its weights: load "
            "the run's mnist_net.pt (or the whole run with workbench.runs.load_model(run_dir))."
        )
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__} that is not a state_dict (a dict of tensors), "
            'nor a dict with one under "model" or "state_dict".'
        )
    if "n_averaged" in state and all(k.startswith("module.") for k in state if k != "n_averaged"):
        # AveragedModel's own state_dict: the averaged model's keys behind a "module." prefix.
        state = {k: v for k, v in state.items() if k != "n_averaged"}
    # The keys of a wrapped model, in any nesting: behind "module." (AveragedModel, DataParallel,
    # DistributedDataParallel) or "_orig_mod." (torch.compile).
    while prefix := next(
        (p for p in WRAPPERS if state and all(k.startswith(p) for k in state)), ""
    ):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    odd = [k for k, v in state.items() if v.is_meta or v.layout != torch.strided]
    if odd:
        raise CheckpointError(
            f"{path} holds {', '.join(odd)} without plain data (sparse, or on the meta device), "
            "so they are no weights to load. Save the weights of a model that holds them, on the "
            "CPU: torch.save(model.state_dict(), path)."
        )
    return state


def check_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike
) -> None:
    """Raise CheckpointError naming every key that does not fit `model`."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        if state[key].shape != expected[key].shape
        else f"{key} {state[key].dtype} vs {expected[key].dtype}"
        for key in expected.keys() & state.keys()
        if state[key].shape != expected[key].shape
        # load_state_dict casts between float types, but integer weights would become zeros.
        or state[key].is_floating_point() != expected[key].is_floating_point()
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path} was saved from a different architecture than {type(model).__name__}: "
            f"missing keys {missing}, unexpected keys {unexpected}, "
            f"shape or type mismatches (file vs model) {mismatched}. "
            "Build the model that saved it, or train this one afresh."
        )
