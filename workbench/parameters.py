"""The notebook's parameters: every value of its parameters cell checked before anything runs.

`check_parameters(globals())` returns the values, or raises ValueError naming the first bad one,
the value given and what is allowed. Importing this module does nothing.
"""

import ast
import difflib
import math
import os
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from model import MAX_WIDTH, stage_widths
from workbench.files import check_writable
from workbench.mnist import TRAIN_IMAGES

# The largest values the notebook accepts: beyond them a run fails later (an overflowing seed, a
# run folder name too long for the file system) or is no longer the small network this is.
MAX_SEED = 2**63 - 1
MAX_EPOCHS = 1_000_000
MAX_BLOCKS_PER_SIZE = 8
# The widest block is MNISTNet's own MAX_WIDTH (model.py): one bound, not a second, lower one.
# A wide network that would not fit in memory is refused by check_memory, for this machine.
# Where the files are and which run goes on: they change no result, so runs are never compared
# by them, and a resumed run may have them otherwise.
CHANGE_NO_RESULT = ("DATA_DIR", "OUTPUT_DIR", "RESUME")
# Images of each split a smoke run (SMOKE = True) uses: enough for every cell to run.
SMOKE_IMAGES = 256
# Share of the memory available now that training may take, by the estimate below.
MEMORY_SHARE = 0.8
# The names the notebook imports: a papermill parameter with one of these names (-p runs 5) would
# replace the module and break a later cell.
NOTEBOOK_IMPORTS = (
    "workbench", "analysis", "plots", "runs", "utils", "torch", "optim", "F", "sys", "time",
    "summary", "tqdm", "MNISTNet",
)  # fmt: skip
# How papermill's "injected-parameters" cell starts (its Python translator's comment line).
PAPERMILL_CELL = "# Parameters\n"


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def _positive_int(v):
    return _is_int(v) and v > 0


def _fraction(v):  # [0, 1)
    return _is_number(v) and 0 <= v < 1


def _is_width(v):
    if not _is_int(v):  # a NumPy integer would reach params.json, which cannot hold it
        return False
    try:
        stage_widths(((v,), 1, 1, 1))  # model.py's rule for a width, on this one alone
    except ValueError:
        return False
    return True


def channels_problem(value: Any) -> str | None:
    """What makes `value` no CHANNELS, naming the entry at fault; None when it is one."""
    if not isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} is not a tuple of four entries"
    if len(value) != 4:
        return f"it has {len(value)} entries, not four"
    for i, entry in enumerate(value, start=1):
        widths = entry if isinstance(entry, (tuple, list)) else (entry,)
        bad = [w for w in widths if not _is_width(w)]
        if not widths:
            return f"entry {i} is empty"
        if bad:
            held = f" holds {bad[0]!r}, which" if widths is entry else ""
            return f"entry {i}, {entry!r},{held} is not a width"
        if len(widths) > MAX_BLOCKS_PER_SIZE:
            return f"entry {i} stacks {len(widths)} blocks, more than {MAX_BLOCKS_PER_SIZE}"
    return None


def _folder(v):  # not "", not " " (a folder named by a space), no NUL (no path holds one)
    return isinstance(v, (str, os.PathLike)) and str(v).strip() != "" and "\0" not in str(v)


# name: (test, what is allowed). The order is the parameters cell's.
PARAMETER_RULES = {
    "BATCH_SIZE": (_positive_int, "a positive int"),
    "TEST_BATCH_SIZE": (_positive_int, "a positive int"),
    "LEARNING_RATE": (lambda v: _is_number(v) and 0 < v <= 10, "a number in (0, 10]"),
    # SGD refuses Nesterov momentum of 0.
    "MOMENTUM": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "WEIGHT_DECAY": (_fraction, "a number in [0, 1)"),
    "WARMUP": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "EMA_DECAY": (_fraction, "a number in [0, 1)"),
    "LABEL_SMOOTHING": (_fraction, "a number in [0, 1)"),
    "EPOCHS": (lambda v: _positive_int(v) and v <= MAX_EPOCHS, "a positive int up to 1,000,000"),
    "CHANNELS": (
        lambda v: channels_problem(v) is None,
        "four entries, one per resolution (28, 14, 7, 3 pixels), each a width (an int from 1 "
        f"to {MAX_WIDTH}) or a tuple of up to {MAX_BLOCKS_PER_SIZE} widths, e.g. "
        "(16, 32, 64, 128) or ((8, 8), 12, 16, 16)",
    ),
    "DROPOUT": (_fraction, "a number in [0, 1)"),
    "ROTATION": (lambda v: _is_number(v) and 0 <= v <= 180, "degrees in [0, 180]"),
    "SHIFT": (lambda v: _is_number(v) and 0 <= v <= 0.5, "a share of the image size in [0, 0.5]"),
    "ZOOM": (_fraction, "a number in [0, 1)"),
    "SEED": (lambda v: _is_int(v) and 0 <= v <= MAX_SEED, "an int in [0, 2**63 - 1]"),
    "DATA_DIR": (lambda v: v is None or _folder(v), "None or a folder path"),
    "OUTPUT_DIR": (_folder, "a folder path"),
    "NUM_WORKERS": (lambda v: _is_int(v) and v >= 0, "an int >= 0"),
    "COMPILE": (lambda v: isinstance(v, bool) or v == "auto", 'True, False or "auto"'),
    "PRECISION": (lambda v: v in ("fp32", "bf16", "auto"), '"fp32", "bf16" or "auto"'),
    "SMOKE": (lambda v: isinstance(v, bool), "True or False"),
    "RESUME": (lambda v: v is None or _folder(v), "None or the folder of a run to go on with"),
    "TTA_SHIFT": (lambda v: _is_int(v) and 0 <= v <= 4, "pixels, an int in [0, 4]"),
}


def check_parameters(
    namespace: Mapping[str, Any], device: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The parameters-cell values found in `namespace` (e.g. globals()), checked.

    Raises ValueError naming the first bad parameter, the value given and what is allowed; an
    unknown parameter name (papermill's -p EPOCH for EPOCHS) with the closest known one; and
    training that would not fit in `device`'s memory. Makes sure OUTPUT_DIR can be created and
    written, so a run fails in seconds, not at the end.
    """
    check_names(namespace)
    missing = [name for name in PARAMETER_RULES if name not in namespace]
    if missing:
        raise ValueError(f"The parameters cell does not define {', '.join(missing)}; run it first.")
    params = {name: namespace[name] for name in PARAMETER_RULES}
    for name, value in params.items():
        check_value(name, value)
    params = normalized(params)
    check_memory(params, device)
    check_compiler(params, device)
    check_workers(params, device)
    check_writable(params["OUTPUT_DIR"])
    return params


def check_value(name: str, value: Any) -> None:
    """ValueError naming the parameter, the value given and what is allowed, unless it is."""
    is_ok, allowed = PARAMETER_RULES[name]
    if is_ok(value):
        return
    problem = f": {channels_problem(value)};" if name == "CHANNELS" else ":"  # name the entry
    hint = ""
    if isinstance(value, str):
        hint = (
            " (a string: with papermill, pass numbers and True/False with -p, which "
            "parses them, not -r, and a list with -y, e.g. -y 'CHANNELS: [8, 12, 16, 20]')"
        )
    elif name in CHANGE_NO_RESULT and _is_number(value):  # -p OUTPUT_DIR 2026 gives an int
        hint = f" (papermill's -p reads {value!r} as a number: pass a folder name with -r)"
    raise ValueError(
        f"{name} = {value!r} ({type(value).__name__}) is not allowed{problem} {name} must be "
        f"{allowed}{hint}."
    )


def normalized(params: dict[str, Any]) -> dict[str, Any]:
    """`params` with CHANNELS as tuples and folders with ~ expanded, as the run will use them."""
    params = dict(params)
    # papermill passes lists (-y 'CHANNELS: [[8, 8], 12, 16, 16]'); tuples read as in the cell.
    if "CHANNELS" in params:
        params["CHANNELS"] = tuple(c if _is_int(c) else tuple(c) for c in params["CHANNELS"])
    for name in ("DATA_DIR", "OUTPUT_DIR", "RESUME"):
        if isinstance(params.get(name), (str, os.PathLike)):
            params[name] = os.path.expanduser(params[name])
    return params


def check_names(namespace: Mapping[str, Any]) -> None:
    """Refuse names papermill injected that the parameters cell does not know.

    Upper-case names, lower-case forms of the parameters and the notebook's imports are refused
    wherever they come from. A lower-case name may be one of the notebook's own variables, so it
    is refused where papermill's injected-parameters cell assigned it (injected_names).
    """
    for name in NOTEBOOK_IMPORTS:
        value = namespace.get(name)
        if value is not None and isinstance(value, (int, float, str, list, bool)):
            raise ValueError(
                f"{name} = {value!r} replaces what the notebook imports as {name}: {name} is not "
                f"a parameter. The parameters are {', '.join(PARAMETER_RULES)}."
            )
    for name in namespace:
        if name != name.upper() and name.upper() in PARAMETER_RULES:  # papermill's -p epochs 3
            raise ValueError(
                f"{name}: did you mean {name.upper()}? Parameter names are upper case, and "
                f"{name} is not a parameter of this notebook."
            )
        if name.isupper() and len(name) > 1 and name not in PARAMETER_RULES:
            raise ValueError(
                f"{name}: {_guess(name)}{name} is not a parameter of this notebook (an upper-case "
                f"name is taken for one: name a variable of yours in lower case, or del {name}). "
                f"The parameters are {', '.join(PARAMETER_RULES)}."
            )
    for name in injected_names(namespace):
        if name not in PARAMETER_RULES:  # papermill's -p lr 0.01
            raise ValueError(
                f"{name}: {_guess(name.upper())}papermill passed {name}, but {name} is not a "
                f"parameter of this notebook, so it would change nothing. The parameters are "
                f"{', '.join(PARAMETER_RULES)}."
            )


def _guess(name: str) -> str:
    close = difflib.get_close_matches(name, PARAMETER_RULES, n=1)
    return f"did you mean {close[0]}? " if close else ""


def injected_names(namespace: Mapping[str, Any]) -> list[str]:
    """The names papermill's injected-parameters cell assigned in this kernel, read from
    IPython's record of the cells run (`In`); none outside IPython or papermill."""
    history = namespace.get("In")
    names = []
    for source in history if isinstance(history, list) else ():
        if isinstance(source, str) and source.startswith(PAPERMILL_CELL):
            try:
                body = ast.parse(source).body
            except SyntaxError:
                continue
            for node in body:
                targets = node.targets if isinstance(node, ast.Assign) else []
                names += [target.id for target in targets if isinstance(target, ast.Name)]
    return names


def training_bytes(batch_size: int, channels: tuple, images: int = TRAIN_IMAGES) -> int:
    """A rough upper estimate of the memory one training step takes, in bytes.

    Every block keeps its convolution, BatchNorm and ReLU outputs for the backward pass, which
    needs as much again; the weights come four times (themselves, gradients, momentum, average).
    """
    batch = min(batch_size, images)
    floats, weights, width_in, size = 28 * 28, 0, 1, 28
    for stage in stage_widths(channels):
        for width in stage:
            floats += 3 * width * size * size
            weights += 9 * width_in * width
            width_in = width
        size //= 2
    weights += 9 * width_in * 10
    return 4 * (2 * batch * floats + 4 * weights)


def available_bytes(device: str | torch.device = "cpu") -> int | None:
    """Memory free for training on `device` now: MemAvailable on a Linux CPU, the free memory of a
    CUDA device; None where it cannot be told."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            pass
    return None


def check_memory(params: dict[str, Any], device: str | torch.device = "cpu") -> None:
    """ValueError when BATCH_SIZE x CHANNELS would not fit in the memory free on `device`."""
    images = SMOKE_IMAGES if params["SMOKE"] else TRAIN_IMAGES
    needed = training_bytes(params["BATCH_SIZE"], params["CHANNELS"], images)
    free = available_bytes(device)
    if free is not None and needed > MEMORY_SHARE * free:
        raise ValueError(
            f"BATCH_SIZE = {params['BATCH_SIZE']} with CHANNELS = {params['CHANNELS']} needs about "
            f"{needed / 2**30:.1f} GiB to train, and {device} has {free / 2**30:.1f} GiB free: "
            "lower BATCH_SIZE or narrow CHANNELS."
        )


def check_workers(params: dict[str, Any], device: str | torch.device = "cpu") -> None:
    """ValueError when NUM_WORKERS asks for workers but the data lives on an accelerator."""
    if params["NUM_WORKERS"] and torch.device(device).type != "cpu":
        raise ValueError(
            f"NUM_WORKERS = {params['NUM_WORKERS']} needs the data on the CPU, but it lives on "
            f"{device}, where batches are built in the notebook's process: set NUM_WORKERS = 0."
        )


def check_compiler(params: dict[str, Any], device: str | torch.device = "cpu") -> None:
    """ValueError when COMPILE is True for the CPU and torch.compile's C++ compiler is missing.

    (With COMPILE = "auto" a missing compiler only leaves compiling out: workbench.speed.)
    """
    if params["COMPILE"] is not True or torch.device(device).type != "cpu":
        return
    compiler = missing_cpu_compiler()
    if compiler:
        raise ValueError(
            f"COMPILE = True builds the training step's CPU code with {compiler}, which is not "
            "installed: install it (Debian and Ubuntu: apt-get install g++; macOS: "
            "xcode-select --install), point $CXX at another C++ compiler, or set COMPILE = "
            '"auto" (which then leaves compiling out) or False.'
        )


def missing_cpu_compiler() -> str | None:
    """The C++ compiler TorchInductor builds CPU kernels with, when it is not installed; else None.

    That is $CXX (which may carry arguments: "ccache g++"), else g++, or clang++ on macOS. On
    Windows Inductor calls MSVC's cl from a developer prompt, which is not looked for here.
    """
    if sys.platform == "win32":
        return None
    compiler = os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")
    try:
        command = shlex.split(compiler) or [compiler]
    except ValueError:  # unbalanced quotes: look for its first word all the same
        command = compiler.split()
    return compiler if shutil.which(command[0]) is None else None
