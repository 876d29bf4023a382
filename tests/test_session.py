"""The check cell's Workbench and the training cell's Run, run from the notebook's cells."""

import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

from notebook_cells import NOTEBOOK, TRAINING_CELLS, run_cells, train_until_ctrl_c
from workbench import StaleCellError, analysis, folders, plots, runs, schema
from workbench.mnist import MNISTDataError

EPOCHS = 2
STEPS = 3  # an epoch of the tiny data's 96 images in batches of 32


@pytest.fixture
def settings(tiny_root, tmp_path):
    """A smoke run of two short epochs on the tiny data, saving under tmp_path."""
    return dict(
        DATA_DIR=str(tiny_root),
        OUTPUT_DIR=str(tmp_path / "outputs"),
        EPOCHS=EPOCHS,
        BATCH_SIZE=32,
        SMOKE=True,
        # Choosing a mode costs seconds, and is not what is tested here (test_speed).
        COMPILE=False,
        PRECISION="fp32",
    )


@pytest.fixture(autouse=True)
def no_sample_grid(monkeypatch):
    """The data cell's grid of samples takes most of a run's time and is not what is tested."""
    monkeypatch.setattr(plots, "plot_samples", lambda images, labels: None)
    yield
    plt.close("all")  # the cells' figures, as a kernel's session would


def cells_after(cell_id):
    """The ids of the notebook's code cells after `cell_id`, in order."""
    ids = [c.get("id") for c in json.loads(NOTEBOOK.read_text())["cells"]
           if c["cell_type"] == "code"]  # fmt: skip
    return ids[ids.index(cell_id) + 1 :]


# The cells that show the run. The last cell compares every run in the folder, this one's or not.
SHOWING_CELLS = [cell for cell in cells_after("training") if cell != "compare-runs"]


def run_folders(settings):
    return sorted(p.parent for p in Path(settings["OUTPUT_DIR"]).glob("*/params.json"))


def one_epoch(value=1.0):
    """The values save_epoch takes for an epoch, all `value`."""
    return {key: value for key in schema.METRIC_KEYS}


def test_the_cells_that_show_the_run_are_known():
    assert SHOWING_CELLS  # else the refusal tests below test nothing
    assert "training" not in SHOWING_CELLS and "curves" in SHOWING_CELLS


@pytest.mark.parametrize("stopped", [False, True], ids=["fresh-model", "stopped-in-epoch-1"])
def test_the_cells_after_training_refuse_until_an_epoch_finished(settings, stopped):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    if stopped:
        train_until_ctrl_c(namespace, 1)
        assert namespace["run"].epochs_done == 0
    for cell in SHOWING_CELLS:
        with pytest.raises(StaleCellError, match="run the training cell"):
            run_cells([cell], namespace)


def test_the_analysis_cells_refuse_until_the_confusion_cell_ran_for_the_last_epoch(settings):
    namespace = run_cells(TRAINING_CELLS, **settings)
    run = namespace["run"]
    for cell in ("per-digit", "misclassified", "final-metrics"):
        with pytest.raises(StaleCellError, match="draws the confusion matrix first"):
            run_cells([cell], namespace)
    run_cells(["confusion", "per-digit", "misclassified", "final-metrics"], namespace)
    assert run.analysis is namespace["result"]
    metrics = folders.read_run(run.dir)["metrics"]
    assert metrics["final_test_acc"] == run.analysis.accuracy
    assert metrics["tta_shift"] == namespace["TTA_SHIFT"]
    # Another epoch saved: its weights have not been predicted with.
    run.save_epoch(**one_epoch())
    with pytest.raises(StaleCellError, match="draws the confusion matrix first"):
        run.analysis  # noqa: B018


def test_the_history_is_the_saved_metrics_of_each_finished_epoch(settings):
    run = run_cells(TRAINING_CELLS, **settings)["run"]
    assert run.epochs_done == EPOCHS
    assert run.history == folders.read_run(run.dir)["metrics"]["history"]
    assert all(len(values) == EPOCHS for values in run.history.values())


def break_weights(run):
    with torch.no_grad():
        for weight in run.training.ema_model.module.parameters():
            weight.fill_(math.nan)


def lock_weights_file(run):
    (run.dir / folders.WEIGHTS_FILE).chmod(0o444)


@pytest.mark.parametrize(
    ("damage", "error", "message"),
    [
        (break_weights, FloatingPointError, "NaN or inf after epoch 3"),
        (lock_weights_file, OSError, r"^\[Errno 13\] Epoch 3 could not be saved .*is read-only"),
    ],
    ids=["nan-weights", "read-only-file"],
)
def test_an_epoch_that_cannot_be_saved_leaves_the_history_at_the_epochs_saved(
    settings, damage, error, message
):
    run = run_cells(TRAINING_CELLS, **settings)["run"]
    before = json.loads(json.dumps(run.history))
    damage(run)
    with pytest.raises(error, match=message):
        run.save_epoch(**one_epoch())
    assert run.epochs_done == EPOCHS
    assert run.history == before == folders.read_run(run.dir)["metrics"]["history"]


def test_save_epoch_takes_exactly_the_metrics_and_keeps_nothing_else(settings):
    run = run_cells(TRAINING_CELLS, **settings)["run"]
    before = json.loads(json.dumps(run.history))
    values = one_epoch()
    del values["lr"]
    with pytest.raises(TypeError, match="save_epoch takes exactly train_loss"):
        run.save_epoch(**values)
    with pytest.raises(TypeError):
        run.save_epoch(**one_epoch(), extra=1.0)
    assert run.history == before
    run.save_epoch(**one_epoch(50.0))
    assert run.epochs_done == EPOCHS + 1
    assert folders.read_run(run.dir)["metrics"]["history"]["test_acc"][-1] == 50.0


def test_ctrl_c_in_the_training_cell_keeps_the_finished_epochs_and_says_how_to_go_on(
    settings, capsys
):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, STEPS + 1)  # in epoch 2
    run = namespace["run"]
    out = capsys.readouterr().out
    assert (
        f"Interrupted: the 1 finished epochs are saved in {run.dir}; to go on, set "
        f"RESUME = {str(run.dir)!r} and run the notebook again." in out
    )
    assert run.epochs_done == 1 == folders.read_run(run.dir)["metrics"]["epochs_done"]
    run_cells(["curves", "confusion", "final-metrics"], namespace)  # the cells show epoch 1
    assert f"epochs:         1 of {EPOCHS}" in capsys.readouterr().out


def test_other_errors_in_the_training_loop_are_not_swallowed(settings):
    run = run_cells(TRAINING_CELLS, **settings)["run"]
    with pytest.raises(ZeroDivisionError), run:
        1 / 0  # noqa: B018


def test_a_model_trained_again_records_the_run_it_continues(settings):
    namespace = run_cells(TRAINING_CELLS, **settings)
    first = namespace["run"]
    run_cells(["training"], namespace)  # the same model object trains on
    second = namespace["run"]
    run_cells(["model", "training"], namespace)  # fresh weights
    third = namespace["run"]
    assert len({first.dir, second.dir, third.dir}) == 3
    recorded = {
        run.dir: folders.read_params(run.dir)["continued_from"] for run in (first, second, third)
    }
    assert recorded == {first.dir: None, second.dir: first.dir.name, third.dir: None}


def test_the_training_cell_uses_the_parameters_as_they_are_now(settings):
    namespace = run_cells(TRAINING_CELLS[:-2], **settings)
    namespace["EPOCHS"] = 1  # changed after the check cell ran
    run_cells(TRAINING_CELLS[-2:], namespace)
    run = namespace["run"]
    assert run.params["EPOCHS"] == run.epochs_done == 1
    assert folders.read_params(run.dir)["parameters"]["EPOCHS"] == 1
    assert "_ep1_" in run.dir.name


# Values the optimiser and the schedule would refuse first, in words of their own, were they
# built before the check: SGD's "Nesterov momentum requires a momentum and zero dampening",
# OneCycleLR's "Expected positive integer epochs, but got -1".
@pytest.mark.parametrize(
    ("name", "value"), [("LABEL_SMOOTHING", 1.0), ("EPOCHS", -1), ("MOMENTUM", 0), ("WARMUP", 1.5)]
)
def test_the_training_cell_refuses_a_bad_value_set_after_the_check_cell(settings, name, value):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    namespace[name] = value
    with pytest.raises(ValueError, match=rf"^{name} = {value} \({type(value).__name__}\) is not"):
        run_cells(["training"], namespace)
    assert run_folders(settings) == []


def test_the_training_cell_refuses_loaders_built_with_other_parameters(settings):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    built, now = settings["BATCH_SIZE"], settings["BATCH_SIZE"] // 2
    namespace["BATCH_SIZE"] = now
    with pytest.raises(
        StaleCellError, match=f"BATCH_SIZE is {now} but was {built}.*data cell again"
    ):
        run_cells(["training"], namespace)
    assert run_folders(settings) == []
    run_cells(["data", "training"], namespace)
    assert namespace["run"].epochs_done == EPOCHS


def test_the_check_cell_takes_files_of_other_sizes_than_mnists_for_a_smoke_run_only(settings):
    with pytest.raises(MNISTDataError, match="not MNIST's 60,000.*set SMOKE = True"):
        run_cells(TRAINING_CELLS[:3], **{**settings, "SMOKE": False})
    bench = run_cells(TRAINING_CELLS[:3], **settings)["bench"]
    assert bench.params["SMOKE"] is True


def test_after_a_stop_in_the_middle_of_an_epoch_the_analysis_is_of_the_saved_weights(settings):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, STEPS + 2)  # epoch 2 has taken a step past the saved epoch 1
    run = namespace["run"]
    saved = torch.load(run.dir / folders.WEIGHTS_FILE, weights_only=True)
    moved = run.training.ema_model.module.state_dict()
    assert any(not torch.equal(moved[key], saved[key]) for key in saved)
    run_cells(["confusion"], namespace)
    loader, shift = namespace["test_loader"], namespace["TTA_SHIFT"]
    expected = analysis.analyse(runs.load_model(run.dir), loader, "cpu", shift)
    assert torch.equal(run.analysis.predictions, expected.predictions)
    assert folders.read_run(run.dir)["metrics"]["final_test_acc"] == run.analysis.accuracy


def test_a_tta_shift_the_check_cell_would_refuse_is_refused_by_the_analysis(settings):
    namespace = run_cells(TRAINING_CELLS, **settings)
    for bad in (30, -1):
        namespace["TTA_SHIFT"] = bad
        with pytest.raises(ValueError, match=rf"TTA_SHIFT = {bad} \(int\) is not allowed"):
            run_cells(["confusion"], namespace)
    assert "final_test_acc" not in folders.read_run(namespace["run"].dir)["metrics"]


def test_a_seed_changed_without_the_check_cell_is_refused(settings):
    """The check cell seeds the model's initial weights: a run must not record another seed."""
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    namespace["SEED"] += 1
    run_cells(["data", "model"], namespace)
    with pytest.raises(StaleCellError, match="Run the check cell again"):
        run_cells(["training"], namespace)
    assert run_folders(settings) == []


def test_the_last_cell_compares_the_runs_even_run_before_any_other_cell_but_the_first_two(
    settings, capsys
):
    """Right after the imports and parameters cells: no `run`, no check cell, no data."""
    before = run_cells(TRAINING_CELLS, **settings)["run"]
    capsys.readouterr()
    namespace = run_cells(["imports", "parameters", "compare-runs"], **settings)
    assert "run" not in namespace
    assert before.dir.name in capsys.readouterr().out
    empty = {**settings, "OUTPUT_DIR": settings["OUTPUT_DIR"] + "-none"}
    with pytest.raises(FileNotFoundError, match="run the training cell first"):
        run_cells(["imports", "parameters", "compare-runs"], **empty)


def test_the_analysis_of_the_training_loader_is_refused(settings):
    """run.analyse(train_loader, ...) recorded the accuracy on augmented training images as the
    final test accuracy in metrics.json."""
    namespace = run_cells(TRAINING_CELLS, **settings)
    with pytest.raises(ValueError, match=r"given a loader that shuffles, .* Pass test_loader\.$"):
        namespace["run"].analyse(namespace["train_loader"], 0)
    assert "final_test_acc" not in folders.read_run(namespace["run"].dir)["metrics"]


def test_the_check_cell_refuses_a_run_folder_as_output_dir_but_resumes_it(settings):
    """New runs went inside the run folder, where the last cell, comparing the runs beside it,
    missed them."""
    run_dir = run_cells(TRAINING_CELLS, **settings)["run"].dir
    with pytest.raises(ValueError, match=r"is a run's folder \(it holds params\.json\)"):
        run_cells(TRAINING_CELLS[:3], **{**settings, "OUTPUT_DIR": str(run_dir)})
    assert [p.name for p in run_dir.iterdir() if p.is_dir()] == []
    resumed = run_cells(
        TRAINING_CELLS, **{**settings, "OUTPUT_DIR": str(run_dir)}, RESUME=str(run_dir)
    )
    assert resumed["run"].dir == run_dir
