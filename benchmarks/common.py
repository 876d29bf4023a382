"""What the benchmark scripts share: running the notebook, the run record and its figures, where
and with what code a figure was made, and markdown tables.

Every run, the notebook's or a baseline's, becomes one record of the same shape: its label, seed,
parameter count and the machine's load as it started, with `metrics` exactly as the notebook's
metrics.json holds them (`history`, one value per epoch for each of schema.METRIC_KEYS, and
`final_test_acc`, with test-time augmentation).
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import torch

from model import receptive_field
from workbench import folders, runs
from workbench.files import atomic_write, json_writer
from workbench.mnist import TRAIN_IMAGES
from workbench.provenance import REPO, cpu_model, git_commit

SEEDS = [1, 2, 3, 4, 5]  # the seeds of every figure the docs quote
FULL_EPOCH = TRAIN_IMAGES  # training images in an epoch of the full training split
NOTEBOOK = REPO / "S5.ipynb"
# The CPU features that decide how fast the training step can go: vector width and BF16 support.
SPEED_FLAGS = (
    "avx2 fma avx512f avx512_bf16 avx512_fp16 avx512_vnni amx_bf16 amx_tile asimd sve bf16"
)


def notebook_defaults() -> dict[str, Any]:
    """The values S5.ipynb's parameters cell defines, read from the cell (it imports nothing)."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = "".join(next(c for c in cells if c.get("id") == "parameters")["source"])
    defined = {}
    exec(source, {}, defined)
    return defined


def cpu_identity() -> dict[str, Any]:
    """The CPU's model name, family and model numbers and the SPEED_FLAGS it has (Linux)."""
    fields = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    found = dict(model_name=cpu_model(), family=fields.get("cpu family"), model=fields.get("model"))
    return dict(**found, speed_flags=[flag for flag in SPEED_FLAGS.split() if flag in flags])


def machine_load(seconds: float = 2.0) -> dict[str, float | None]:
    """How busy the machine is while this process waits: the share of all CPU time others use,
    from /proc/stat over `seconds` (Linux; None elsewhere), and the 1-minute load average, which
    lags a minute behind."""

    def cpu_times():
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)  # idle + iowait, all

    try:
        idle0, total0 = cpu_times()
        time.sleep(seconds)
        idle1, total1 = cpu_times()
        busy = 1 - (idle1 - idle0) / max(total1 - total0, 1)
    except (OSError, ValueError, IndexError):
        busy = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return dict(busy_share=busy, load_average_1min=load)


def provenance() -> dict[str, Any]:
    """Where, when and with what a set of runs was made."""
    created = datetime.now(UTC).isoformat(timespec="seconds")
    found = dict(created=created, git_commit=git_commit(), cpu=cpu_model())
    versions = dict(python=platform.python_version(), torch=torch.__version__)
    return dict(**found, threads=torch.get_num_threads(), **versions, load_at_start=machine_load())


def save_json(data: Any, path: str | os.PathLike) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    atomic_write(path, json_writer(data))


def record(label, seed, parameter_count, metrics, load_at_start, **extra) -> dict[str, Any]:
    """One run's record: who ran, and its metrics in metrics.json's shape."""
    who = dict(label=label, seed=seed, parameter_count=parameter_count)
    return dict(**who, load_at_start=load_at_start, **extra, metrics=metrics)


def run_notebook(
    label, parameters, seed, data_dir, output_dir=None, repo=REPO, compile_cache=None, keep=None
) -> dict[str, Any]:
    """Execute `repo`'s S5.ipynb once with `parameters` and `seed`, TorchInductor's cache in the
    folder `compile_cache` when given; return its record, with the numbers of the run folder it
    saved, kept in `output_dir` when given, else in a temporary folder, and the whole notebook's
    wall time.

    With `keep`, the run is the committed notebook's record: the parameters cell's own values but
    `parameters` (no cell injected without them; MNIST from $MNIST_DATA_DIR, the run folder in
    outputs/), the executed notebook written to `keep`."""
    import papermill  # only here: summaries and tables need no kernel

    with tempfile.TemporaryDirectory(prefix="s5-run-") as tmp:
        out, data_dir = Path(output_dir or tmp), Path(data_dir).resolve()  # any `repo`'s cwd
        values = {**parameters, "SEED": seed, "DATA_DIR": str(data_dir), "OUTPUT_DIR": str(out)}
        env = {"TORCHINDUCTOR_CACHE_DIR": str(compile_cache)} if compile_cache else {}
        if keep:
            defaults = notebook_defaults()
            if seed != defaults["SEED"]:
                raise ValueError(f"the notebook's record runs its own SEED, {defaults['SEED']}")
            values, out = parameters, repo / defaults["OUTPUT_DIR"]
            env["MNIST_DATA_DIR"] = str(data_dir)
            Path(keep).parent.mkdir(parents=True, exist_ok=True)
        load, start = machine_load(), time.perf_counter()
        # The kernel starts with this process's environment: `env` for the while of the run.
        with mock.patch.dict(os.environ, env):
            executed = keep or Path(tmp) / "S5.ipynb"
            papermill.execute_notebook(
                repo / "S5.ipynb", executed, parameters=values, cwd=repo, progress_bar=False
            )
        notebook_wall_s = time.perf_counter() - start
        run = folders.read_run(runs.latest_run(out))
    return record(
        label,
        seed,
        run["parameter_count"],
        run["metrics"],
        load,
        receptive_field=receptive_field(run["parameters"]["CHANNELS"]),
        changed=parameters,
        parameters=run["parameters"],
        speed=run.get("speed"),  # the mode COMPILE and PRECISION chose, and what was measured
        notebook_wall_s=notebook_wall_s,  # the whole notebook: kernel, data, training, TTA, plots
        run=str(run["path"]) if output_dir or keep else run["name"],
    )


def history(run: dict[str, Any]) -> dict[str, list[float]]:
    return run["metrics"]["history"]


def final_acc(run: dict[str, Any]) -> float:
    """Test accuracy (%) from test() after the run's last epoch."""
    return history(run)["test_acc"][-1]


def choosing_s(run: dict[str, Any]) -> float:
    """Seconds COMPILE and PRECISION "auto" spent choosing the mode (0 for a baseline's run)."""
    return (run.get("speed") or {}).get("seconds", 0.0)


def wall_times(run: dict[str, Any]) -> list[float]:
    """Seconds from choosing the mode (speed "seconds" and "compile_s") to each epoch's end."""
    total, walls = choosing_s(run) + (run.get("speed") or {}).get("compile_s", 0.0), []
    for seconds in history(run)["epoch_time_s"]:
        total += seconds
        walls.append(total)
    return walls


def time_to(run: dict[str, Any], target: float) -> float | None:
    """Wall time to the first epoch at `target`% test accuracy or more; None if never reached."""
    pairs = zip(wall_times(run), history(run)["test_acc"])
    return next((wall for wall, acc in pairs if acc >= target), None)


def tta_accs(records: Iterable[dict[str, Any]]) -> list[float]:
    """The test-time-augmentation accuracy of every record that has one."""
    accs = (r["metrics"].get("final_test_acc") for r in records)
    return [acc for acc in accs if acc is not None]


def lowest_of_last(records: Iterable[dict[str, Any]], epochs: int = 3) -> float:
    """The lowest test accuracy any record has in its last `epochs` epochs."""
    return min(min(history(r)["test_acc"][-epochs:]) for r in records)


def median_epoch_train_s(records: Iterable[dict[str, Any]]) -> float:
    """The median training time of an epoch, over every epoch of every record."""
    return statistics.median(t for r in records for t in history(r)["train_time_s"])


def add_run_options(parser: argparse.ArgumentParser) -> None:
    """The options every script that runs the notebook takes: the data folder and the seeds."""
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DATA_DIR, else ./data)")
    parser.add_argument("--seeds", type=int, nargs="+", default=SEEDS, help="the runs' seeds")


def spread(values: Iterable[float], name: str) -> dict[str, float]:
    """{name_median, name_min, name_max} of `values`."""
    values = list(values)
    median, low, high = statistics.median(values), min(values), max(values)
    return {f"{name}_median": median, f"{name}_min": low, f"{name}_max": high}


def markdown_table(header: str, rows: Iterable[Sequence[Any]], align: str) -> str:
    """A markdown table: `header` its column names joined by " | ", `align` a letter per column,
    l (left) or r (right)."""
    rules = {"l": "---", "r": "---:"}
    lines = [header.split(" | "), [rules[a] for a in align], *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)
