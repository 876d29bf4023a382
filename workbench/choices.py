"""The modes COMPILE and PRECISION "auto" chose before on this machine, remembered.

Measuring once per machine and remembering the answer, as FFTW keeps its "wisdom" and cuDNN its
benchmark per shape: the next run of the same network on the same machine chooses without
measuring. One JSON file, $S5_SPEED_CACHE or speed.json in the user's cache folder; delete it to
measure again. Importing this module does nothing.
"""

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.files import atomic_write, json_writer
from workbench.provenance import cpu_model


def key(model: nn.Module, modes: list[str], batch_size: int) -> str:
    """What a choice holds for: this CPU or accelerator, its threads, PyTorch, the network's widths,
    the batch size and the modes allowed."""
    device = next(model.parameters()).device
    where = cpu_model() if device.type == "cpu" else torch.accelerator.current_accelerator()
    network = getattr(model, "channels", None) or sum(p.numel() for p in model.parameters())
    found = [str(where), device.type, torch.get_num_threads(), torch.__version__]
    return json.dumps([*found, repr(network), batch_size, modes])


def path() -> Path:
    """$S5_SPEED_CACHE, else s5-mnist/speed.json in $XDG_CACHE_HOME or ~/.cache."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(os.environ.get("S5_SPEED_CACHE") or Path(cache) / "s5-mnist" / "speed.json")


def read() -> dict[str, Any]:
    """Every choice remembered; none when the file is missing or damaged (it is then rewritten)."""
    try:
        found = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def recall(choice_key: str) -> dict[str, Any] | None:
    """The choice made for `choice_key` before, its "why" saying when and where it is kept; None
    if none was, or the entry is not one this module wrote."""
    found = read().get(choice_key)
    fields = ("precision", "compiled", "why", "at", "step_ms", "skipped")
    if not isinstance(found, dict) or not all(name in found for name in fields):
        return None
    kept = f"measured {found['at']}, remembered in {path()}: delete it to measure again"
    return {**found, "why": f"{found['why']} ({kept})"}


def remember(choice_key: str, choice: dict[str, Any]) -> None:
    """Keep `choice` for `choice_key`; a cache that cannot be written only costs the next run a
    measurement."""
    at = datetime.now().astimezone().isoformat(timespec="seconds")
    try:
        atomic_write(path(), json_writer({**read(), choice_key: {**choice, "at": at}}))
    except OSError:
        return
