"""What the benchmark scripts share: running the notebook, the run record, statistics, tables.

Every run, the notebook's or a baseline's, becomes one record of the same shape, from the run to
the JSON files and logs: its label, seed, parameter count and the machine's load as it started,
with `metrics` exactly as the notebook's metrics.json holds them (`history` with one value per
epoch for each of folders.METRIC_KEYS, and `final_test_acc` with test-time augmentation).
"""

import argparse
import json
import statistics
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from model import receptive_field
from workbench import folders, runs
from workbench.mnist import TRAIN_IMAGES
from workbench.provenance import REPO, machine_load

SEEDS = [1, 2, 3, 4, 5]  # the seeds of every figure the docs quote
FULL_EPOCH = TRAIN_IMAGES  # training images in an epoch of the full training split
NOTEBOOK = REPO / "S5.ipynb"


def notebook_source(cell_id: str) -> str:
    """The source of S5.ipynb's cell with this id, as committed."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    return "".join(next(c for c in cells if c.get("id") == cell_id)["source"])


def run_cells(
    cell_ids: Iterable[str], namespace: dict[str, Any] | None = None, **parameters: Any
) -> dict[str, Any]:
    """Run S5.ipynb's cells `cell_ids` in `namespace`, without a kernel; return the namespace.

    `namespace` is a new one by default; `parameters` replace the parameters cell's values.
    """
    namespace = {} if namespace is None else namespace
    for cell_id in cell_ids:
        exec(compile(notebook_source(cell_id), f"S5.ipynb:{cell_id}", "exec"), namespace)
        if cell_id == "parameters":
            namespace.update(parameters)
    return namespace


def notebook_defaults() -> dict[str, Any]:
    """The values S5.ipynb's parameters cell defines, read from the cell (it imports nothing)."""
    defined = {}
    exec(notebook_source("parameters"), {}, defined)
    return defined


def record(
    label: str,
    seed: int,
    parameter_count: int,
    metrics: dict[str, Any],
    load_at_start: dict[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """One run's record: who ran, and its metrics in metrics.json's shape."""
    return dict(
        label=label,
        seed=seed,
        parameter_count=parameter_count,
        load_at_start=load_at_start,
        **extra,
        metrics=metrics,
    )


def run_notebook(
    label: str,
    parameters: dict[str, Any],
    seed: int,
    data_dir: str | Path,
    output_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Execute S5.ipynb once with `parameters` and `seed`; return its record.

    The numbers are the notebook's own, read back from the run folder it saved. That folder goes
    into `output_dir` when given (and is kept), else into a temporary folder.
    """
    import papermill  # only here: summaries and tables need no kernel

    with tempfile.TemporaryDirectory(prefix="s5-run-") as tmp:
        out = Path(output_dir or tmp)
        values = {**parameters, "SEED": seed, "DATA_DIR": str(data_dir), "OUTPUT_DIR": str(out)}
        load = machine_load()
        papermill.execute_notebook(
            NOTEBOOK,
            Path(tmp) / "S5.ipynb",
            parameters=values,
            cwd=REPO,
            kernel_name="python3",
            progress_bar=False,
        )
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
        run=str(run["path"]) if output_dir else run["name"],
    )


def history(run: dict[str, Any]) -> dict[str, list[float]]:
    return run["metrics"]["history"]


def final_acc(run: dict[str, Any]) -> float:
    """Test accuracy (%) from test() after the run's last epoch."""
    return history(run)["test_acc"][-1]


def wall_times(run: dict[str, Any]) -> list[float]:
    """Seconds from the start of training to the end of each epoch's test pass, counting the
    seconds workbench.speed.choose took before training started (measuring the modes COMPILE and
    PRECISION "auto" allow, compiling the mode chosen)."""
    total, walls = (run.get("speed") or {}).get("seconds", 0.0), []
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
    parser.add_argument(
        "--data-dir", default=None, help="MNIST folder (default: $MNIST_DATA_DIR, else ./data)"
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=SEEDS, help="seeds of the notebook runs"
    )


def spread(values: Iterable[float], name: str) -> dict[str, float]:
    """{name_median, name_min, name_max} of `values`."""
    values = list(values)
    return {
        f"{name}_median": statistics.median(values),
        f"{name}_min": min(values),
        f"{name}_max": max(values),
    }


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str) -> str:
    """A markdown table; `align` has one letter per column: l (left) or r (right)."""
    rules = {"l": "---", "r": "---:"}
    lines = [header, [rules[a] for a in align], *rows]
    return "\n".join("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines)


def percent(value: float) -> str:
    return f"{value:.2f}%"
