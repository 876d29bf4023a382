"""The notebook, executed headless end to end as a user would run it."""

import json

import nbformat
import papermill
import pytest
from nbclient import NotebookClient

import utils
from conftest import REPO
from model import MNISTNet

NOTEBOOK = REPO / "S5.ipynb"
METRIC_KEYS = {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s"}


def smoke_parameters(data_dir, output_dir, epochs=2):
    return dict(
        DATA_DIR=str(data_dir), OUTPUT_DIR=str(output_dir), EPOCHS=epochs, BATCH_SIZE=32, SMOKE=True
    )


def run_notebook(tmp_path, parameters):
    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        NOTEBOOK, out, parameters=parameters, cwd=REPO, kernel_name="python3", progress_bar=False
    )
    return nbformat.read(out, as_version=4)


def run_with_fault(tmp_path, parameters, fault):
    """Inject `fault` (code) just before the epoch loop and run every cell, errors or not."""
    prepared = tmp_path / "prepared.ipynb"
    papermill.execute_notebook(NOTEBOOK, prepared, parameters=parameters, prepare_only=True)
    nb = nbformat.read(prepared, as_version=4)
    loop = next(i for i, c in enumerate(nb.cells) if c.source.startswith("history = "))
    nb.cells.insert(loop, nbformat.v4.new_code_cell(fault))
    NotebookClient(nb, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(REPO)}}).execute()
    return nb, nb.cells[loop + 1], nb.cells[loop + 3]  # the notebook, the loop cell, the curves cell


def has_image(cell):
    return any("image/png" in o.get("data", {}) for o in cell.outputs)


def read_metrics(output_dir):
    return json.loads((output_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def smoke_run(tiny_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    nb = run_notebook(tmp, smoke_parameters(tiny_root, tmp / "out"))
    return nb, tmp / "out"


def test_smoke_run_saves_metrics_curves_and_weights(smoke_run):
    nb, out = smoke_run
    metrics = read_metrics(out)
    assert set(metrics) == METRIC_KEYS
    assert all(len(values) == 2 for values in metrics.values())
    assert all(0 <= acc <= 100 for acc in metrics["test_acc"] + metrics["train_acc"])
    for png in ("curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (out / png).stat().st_size > 10_000, png
    utils.load_weights(MNISTNet(), out / "mnist_net.pt")
    # samples, curves, confusion matrix, gallery
    assert sum(has_image(c) for c in nb.cells if c.cell_type == "code") == 4


def test_same_seed_gives_the_same_metrics(smoke_run, tiny_root, tmp_path):
    _, first_out = smoke_run
    run_notebook(tmp_path, smoke_parameters(tiny_root, tmp_path / "out"))
    first, second = read_metrics(first_out), read_metrics(tmp_path / "out")
    for key in METRIC_KEYS - {"epoch_time_s"}:
        assert first[key] == second[key], key


def fault_after(calls, action):
    """Code for a forward hook that runs `action` once the model has trained on `calls` batches."""
    return f"""
training_calls = 0
def fault(module, inputs, output):
    global training_calls
    if module.training:
        training_calls += 1
        if training_calls > {calls}:
            {action}
model.register_forward_hook(fault)
"""


NAN_IN_EPOCH_2 = fault_after("len(train_loader) + 1", 'return output * float("nan")')  # at batch 2
INTERRUPT_IN_EPOCH_3 = fault_after("2 * len(train_loader)", "raise KeyboardInterrupt")


def test_nan_loss_stops_with_epoch_and_batch_and_keeps_metrics(tiny_root, tmp_path):
    nb, loop_cell, curves_cell = run_with_fault(
        tmp_path, smoke_parameters(tiny_root, tmp_path / "out", epochs=3), NAN_IN_EPOCH_2
    )
    errors = [o for o in loop_cell.outputs if o.output_type == "error"]
    assert errors and errors[0].ename == "FloatingPointError"
    assert "at epoch 2, batch 2" in errors[0].evalue
    metrics = read_metrics(tmp_path / "out")
    assert len(metrics["test_acc"]) == 1
    assert has_image(curves_cell)


def test_interrupt_keeps_metrics_and_still_plots(tiny_root, tmp_path):
    nb, loop_cell, curves_cell = run_with_fault(
        tmp_path, smoke_parameters(tiny_root, tmp_path / "out", epochs=4), INTERRUPT_IN_EPOCH_3
    )
    assert not [o for o in loop_cell.outputs if o.output_type == "error"]
    assert "keeping the 2 finished epochs" in "".join(o.get("text", "") for o in loop_cell.outputs)
    assert len(read_metrics(tmp_path / "out")["test_acc"]) == 2
    assert has_image(curves_cell)


def test_one_real_epoch_reaches_97_percent(real_data, tmp_path):
    """A broken pipeline (bad labels, normalisation or evaluation) cannot reach this."""
    run_notebook(tmp_path, dict(DATA_DIR=str(real_data), OUTPUT_DIR=str(tmp_path / "out"), EPOCHS=1))
    metrics = read_metrics(tmp_path / "out")
    assert metrics["test_acc"][0] >= 97.0
