"""The notebook's parameters: every value of its parameters cell checked before anything runs.

`check_parameters(globals())` returns the values, or raises ValueError naming the first bad one,
the value given and what is allowed. Importing this module does nothing.
"""

import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model import stage_widths


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
    "CHANNELS": (
        _channels,
        "four entries, each a positive int or a tuple of them, e.g. (16, 32, 64, 128) "
        "or ((8, 8), 12, 16, 16)",
    ),
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


def check_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
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
                hint = (
                    " (a string: with papermill, pass numbers and True/False with -p, which "
                    "parses them, not -r, and a list with -y, e.g. -y 'CHANNELS: [8, 12, 16, 20]')"
                )
            raise ValueError(
                f"{name} = {value!r} ({type(value).__name__}) is not allowed: {name} must be "
                f"{allowed}{hint}."
            )
    # papermill passes lists (-y 'CHANNELS: [[8, 8], 12, 16, 16]'); tuples read as in the cell.
    params["CHANNELS"] = tuple(c if _is_int(c) else tuple(c) for c in params["CHANNELS"])
    check_writable(params["OUTPUT_DIR"])
    return params


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and prove a file can be written there; ValueError otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        raise ValueError(
            f"OUTPUT_DIR = {str(folder)!r} cannot be written "
            f"({type(err).__name__}: {err.strerror or err}). "
            "Set OUTPUT_DIR to a folder you can write to."
        ) from err
