"""What a run folder's JSON files must hold: one schema each, checked wherever they are read.

A file that fails is damage: `RunFolderError` names the file and the value, and the folder is
skipped and shown as damaged. Importing this module does nothing.
"""

import math
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from model import MNISTNet, count_parameters
from workbench import parameters

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


def damaged(path: Path, what: str) -> RunFolderError:
    return RunFolderError(
        f"{path} {what}: the run folder is damaged. Move it out of the output folder, or delete it."
    )


def _is_count(value, least=0):
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _is_finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_params(info: Any, path: Path) -> None:
    """RunFolderError unless `info` has the shape of the params.json that create() writes."""
    if not isinstance(info, dict):
        raise damaged(path, f"holds a {type(info).__name__}, not an object")
    checks = {
        "name": (lambda v: isinstance(v, str), "a string"),
        "started": (_is_date, "a date with its time zone"),
        "parameters": (lambda v: isinstance(v, dict), "an object"),
        "parameter_count": (lambda v: _is_count(v, 1), "a positive int"),
        "continued_from": (lambda v: v is None or isinstance(v, str), "null or a run's name"),
        "run_id": (_is_run_id, "a run id (16 hex digits)"),
        "speed": (_is_speed, "how the run trains (workbench.speed)"),
    }
    _check_fields(info, checks, path)
    recorded = info["parameters"]
    missing = [name for name in parameters.PARAMETER_RULES if name not in recorded]
    if missing:
        raise damaged(path, f"records no {', '.join(missing)}")
    for name, (is_ok, allowed) in parameters.PARAMETER_RULES.items():
        if not is_ok(recorded[name]):
            raise damaged(path, f"gives {name} = {recorded[name]!r}, but {name} is {allowed}")
    size = network_size(recorded["CHANNELS"])
    if info["parameter_count"] != size:
        raise damaged(
            path,
            f"gives parameter_count = {info['parameter_count']:,}, but CHANNELS = "
            f"{recorded['CHANNELS']!r} makes a network of {size:,} parameters: one of the two was "
            "edited, and the weights fit at most one",
        )
    if not isinstance(info.get("resumed", []), list):
        raise damaged(path, f"gives resumed = {info['resumed']!r}, not a list")


def network_size(channels) -> int:
    """The parameter count of MNISTNet(channels), built on the meta device: no memory, no time."""
    with torch.device("meta"):
        return count_parameters(MNISTNet(channels))


def _is_speed(value):
    return (
        isinstance(value, dict)
        and value.get("precision") in ("fp32", "bf16")
        and isinstance(value.get("compiled"), bool)
        and isinstance(value.get("why"), str)
    )


def _is_run_id(value):
    return isinstance(value, str) and len(value) == 16 and set(value) <= set("0123456789abcdef")


def _is_date(value):
    """An ISO date with its time zone, as create() writes it: runs are sorted by it."""
    try:
        return datetime.fromisoformat(value).tzinfo is not None
    except (TypeError, ValueError):
        return False


def check_metrics(metrics: Any, path: Path) -> None:
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
        "run_id": (_is_run_id, "a run id (16 hex digits)"),
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
