"""The runs in an output folder: listed, the latest and the best found, loaded, compared.

A damaged run folder (a file missing, unreadable or not in the shape the notebook writes) never
stops the others from being listed: it is named in a warning, skipped, and shown as damaged in the
comparison. So is a run whose weights are not the ones its metrics.json was saved with, by the
loaders and the comparison alike. Importing this module does nothing.
"""

import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from model import MNISTNet
from workbench import checkpoints, comparison, folders, plots, schema


def scan_runs(output_dir: str | os.PathLike = "outputs") -> tuple[list[dict], dict[Path, str]]:
    """(every readable run under `output_dir`, oldest first; {damaged folder: why}).

    Given a run's folder (one with no runs inside), the runs beside it.
    """
    found, damaged = [], {}
    output_dir = Path(output_dir).expanduser()
    if not output_dir.is_dir():
        raise FileNotFoundError(
            f"There is no folder {output_dir.resolve()}, so it holds no runs: "
            "run the training cell first, or pass the OUTPUT_DIR the notebook saved into "
            "(outputs unless you changed it)."
        )
    params_files = list(output_dir.glob(f"*/{folders.PARAMS_FILE}"))
    if not params_files and (output_dir / folders.PARAMS_FILE).is_file():
        # A run's folder, with no runs inside: the runs beside it.
        params_files = list(output_dir.parent.glob(f"*/{folders.PARAMS_FILE}"))
    for folder in sorted(p.parent for p in params_files):
        try:
            found.append(folders.read_run(folder))
        except schema.RunFolderError as err:
            damaged[folder] = str(err)
    return sorted(found, key=lambda run: datetime.fromisoformat(run["started"])), damaged


def list_runs(output_dir: str | os.PathLike = "outputs") -> list[dict[str, Any]]:
    """Every readable run under `output_dir`, oldest first; a damaged one is skipped, warning."""
    found, damaged = scan_runs(output_dir)
    for why in damaged.values():
        warnings.warn(f"Skipped: {why}", stacklevel=2)
    return found


def latest_run(output_dir: str | os.PathLike = "outputs") -> Path:
    """The folder of the newest run with at least one finished epoch (given a run's folder, of the
    runs beside it, as everywhere in this module)."""
    return _pick(output_dir, lambda runs: runs[-1], "latest")


def best_run(output_dir: str | os.PathLike = "outputs") -> Path:
    """The folder of the run with the highest final test accuracy."""
    return _pick(
        output_dir,
        lambda runs: max(runs, key=lambda r: r["metrics"]["history"]["test_acc"][-1]),
        "best",
    )


def _pick(output_dir, choose, what):
    runs = [r for r in list_runs(output_dir) if r["metrics"]]
    while runs:
        run = choose(runs)
        try:
            folders.check_weights_match(run)
            return run["path"]
        except schema.RunFolderError as err:
            warnings.warn(f"Skipped: {err}", stacklevel=3)
            runs.remove(run)
    raise FileNotFoundError(
        f"No run with a finished epoch in {Path(output_dir).expanduser().resolve()}, "
        f"so there is no {what} run. "
        "Run S5.ipynb (make run) first, or pass the OUTPUT_DIR it used."
    )


def load_model(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> MNISTNet:
    """The MNISTNet that `run_dir` trained, with its saved weights, in eval mode.

    Refuses, with the reason, a run with no finished epoch, a damaged run folder, and weights that
    are not the ones the run's metrics.json was saved with.
    """
    run = folders.read_run(run_dir)
    folders.check_weights_match(run)
    params = run["parameters"]
    model = MNISTNet(channels=params["CHANNELS"], dropout=params["DROPOUT"])
    return (
        checkpoints.load_weights(model, run["path"] / folders.WEIGHTS_FILE, map_location=device)
        .to(device)
        .eval()
    )


def refusals(found: list[dict[str, Any]]) -> dict[Path, str]:
    """{run folder: why} of the runs with a finished epoch whose weights load_model refuses (not the
    ones their metrics.json was saved with), as best_run and latest_run skip them."""
    refused = {}
    for run in found:
        if run["metrics"]:
            try:
                folders.check_weights_match(run)
            except schema.RunFolderError as err:
                refused[run["path"]] = str(err)
    return refused


def compare_runs(
    output_dir: str | os.PathLike = "outputs", path: str | os.PathLike | None = None
) -> tuple[str, Figure]:
    """A table of every run under `output_dir` and their test-accuracy curves in one plot.

    Given a run's folder, the runs beside it (the notebook passes RESUME when it is set). The
    table (comparison.table) shows the parameters that differ between the runs, the epochs
    finished of those planned, the final and best test accuracy and the time; a damaged run
    folder, and a run whose weights load_model refuses, is marked, with why under the table.
    Returns (table text, figure).
    """
    found, damaged = scan_runs(output_dir)
    if not found and not damaged:
        raise FileNotFoundError(
            f"No runs in {Path(output_dir).expanduser().resolve()} yet: run the training cell "
            "first."
        )
    table = comparison.table(found, damaged, refusals(found))
    return table, plots.plot_runs(comparison.curves(found), path)
