"""RESUME: a run stopped at any moment goes on in its folder and ends as if it never stopped."""

import errno
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pytest
import torch

import utils
from conftest import REPO, at_some, mount_read_only
from fakes import make_tiny_mnist
from notebook_cells import TRAINING_CELLS, run_cells, train_until_ctrl_c
from workbench import (
    SMOKE_IMAGES,
    StaleCellError,
    analysis,
    checkpoints,
    folders,
    mnist,
    plots,
    resume,
    runs,
    schema,
    speed,
)

# What the metrics of a resumed run must repeat exactly: all but the times.
SAME = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
EPOCHS = 3
STEPS = 3  # an epoch of the tiny data's 96 images in batches of 32
# The tiny data is no MNIST: the check cell takes it for a smoke run only. One mode for every run
# compared: "auto" measures anew in each, and may choose another (test_speed: a resumed run keeps
# the mode it chose).
SETTINGS = dict(EPOCHS=EPOCHS, BATCH_SIZE=32, SMOKE=True, COMPILE=False, PRECISION="fp32")


@pytest.fixture
def settings(tiny_root, tmp_path):
    """Parameters for a run of a few seconds on the tiny data, saving under tmp_path."""
    return dict(DATA_DIR=str(tiny_root), OUTPUT_DIR=str(tmp_path / "outputs"), **SETTINGS)


def train(namespace=None, **parameters):
    return run_cells(TRAINING_CELLS, namespace, **parameters)


def finished(run_dir):
    """(epochs done, metrics that must repeat, the saved weights) of a run folder."""
    metrics = json.loads((run_dir / folders.METRICS_FILE).read_text())
    history = {key: metrics["history"][key] for key in SAME}
    weights = torch.load(run_dir / folders.WEIGHTS_FILE, weights_only=True)
    return metrics["epochs_done"], history, weights


def assert_same_run(run_dir, reference):
    epochs, history, weights = finished(run_dir)
    expected_epochs, expected_history, expected_weights = finished(reference)
    assert epochs == expected_epochs == EPOCHS
    assert history == expected_history
    assert weights.keys() == expected_weights.keys()
    for key, tensor in weights.items():
        assert torch.equal(tensor, expected_weights[key]), key
    # The weights are the ones metrics.json was saved with, so the run loads.
    folders.check_weights_match(folders.read_run(run_dir))


@pytest.fixture(autouse=True)
def no_sample_grid(monkeypatch):
    """The data cell's grid of samples takes most of a run's time and draws no random number."""
    monkeypatch.setattr(plots, "plot_samples", lambda images, labels: None)
    yield
    plt.close("all")  # the cells' figures, as a kernel's session would


def run_never_stopped(settings, output_dir):
    return train(**{**settings, "OUTPUT_DIR": str(output_dir)})["run"].dir


@pytest.fixture
def reference(never_stopped, tmp_path):
    """A copy of the run never stopped, for a test to change: copied in milliseconds, where
    training it again takes seconds."""
    run_dir = never_stopped[0]
    return Path(shutil.copytree(run_dir, tmp_path / "reference" / run_dir.name))


# The files a run renames into place, in order: resume.pt and params.json as it starts (resume.pt
# first: a folder with a params.json can always be resumed), then after each epoch resume.pt, the
# weights and metrics.json. Each group is written whole before its first rename.
STARTING = (folders.RESUME_FILE, folders.PARAMS_FILE)
EPOCH_SAVE = (folders.RESUME_FILE, folders.WEIGHTS_FILE, folders.METRICS_FILE)
GROUPS = [STARTING] + [EPOCH_SAVE] * EPOCHS
RENAMES = [name for group in GROUPS for name in group]


@pytest.fixture(scope="module")
def never_stopped(tiny_root, tmp_path_factory):
    """The folder of the same run, never stopped, shared by the tests that only read it, and the
    names of the files it renamed into place, in order."""
    renamed, real_replace = [], os.replace

    def replace(src, dst):
        renamed.append(Path(dst).name)
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_samples", lambda images, labels: None)
        patch.setattr(os, "replace", replace)
        run_dir = run_never_stopped(
            dict(DATA_DIR=str(tiny_root), **SETTINGS), tmp_path_factory.mktemp("never")
        )
    return run_dir, renamed


def test_a_run_renames_its_files_in_the_order_the_stops_below_assume(never_stopped):
    assert never_stopped[1] == RENAMES


class Killed(BaseException):
    """Stands in for SIGKILL in this process: nothing catches it and the files stay as they are."""


def kill_at_write(patch, write, after):
    """Stop at the `write`-th file rename (write_together's last steps), before or after it.

    From then on no file is renamed or deleted, as in a process killed there: the temporary files
    of the renames not reached stay in the folder.
    """
    real_replace, real_unlink, calls = os.replace, Path.unlink, []

    def replace(src, dst):
        if len(calls) >= write:
            raise Killed(dst)
        calls.append(dst)
        if len(calls) == write and not after:
            raise Killed(dst)
        real_replace(src, dst)
        if len(calls) == write:
            raise Killed(dst)

    def unlink(path, missing_ok=False):
        if len(calls) < write:
            real_unlink(path, missing_ok=missing_ok)

    patch.setattr(os, "replace", replace)
    patch.setattr(Path, "unlink", unlink)
    return calls


def leftovers_at(write, after):
    """The temporary files a kill at that moment leaves: its group's renames not done."""
    done = write if after else write - 1
    end = 0
    for group in GROUPS:
        end += len(group)
        if write <= end:
            return end - done
    raise ValueError(write)


# Every moment a stop leaves different files: just before and just after each file is renamed
# into place, from the moment the run has a params.json (before, the folder is no run: nothing to
# resume, see the test after this one).
FIRST_RUN_FILE = RENAMES.index(folders.PARAMS_FILE) + 1  # its rename's number, counting from 1
STOPS = [
    (write, after)
    for write in range(1, len(RENAMES) + 1)
    for after in (False, True)
    if (write if after else write - 1) >= FIRST_RUN_FILE
]


@pytest.mark.parametrize(("write", "after"), at_some(STOPS))
def test_a_stop_between_any_two_saves_then_resume_is_the_run_never_stopped(
    settings, never_stopped, monkeypatch, write, after
):
    with monkeypatch.context() as patch, pytest.raises(Killed):
        calls = kill_at_write(patch, write, after)
        train(**settings)
    assert len(calls) == write
    (run_dir,) = (p.parent for p in Path(settings["OUTPUT_DIR"]).glob(f"*/{folders.PARAMS_FILE}"))
    assert len(list(run_dir.glob(".*.tmp"))) == leftovers_at(write, after)
    # A fresh process: the user runs the whole notebook again with RESUME set.
    resumed = train(**settings, RESUME=str(run_dir))
    assert resumed["run"].dir == run_dir
    assert_same_run(run_dir, never_stopped[0])
    assert not list(run_dir.glob(".*.tmp"))


# The moments before the run has a params.json.
EARLY_STOPS = [
    (write, after)
    for write in range(1, FIRST_RUN_FILE + 1)
    for after in (False, True)
    if (write if after else write - 1) < FIRST_RUN_FILE
]


@pytest.mark.parametrize(("write", "after"), at_some(EARLY_STOPS))
def test_a_stop_before_params_json_leaves_no_run_and_the_next_run_starts_afresh(
    settings, never_stopped, monkeypatch, write, after
):
    with monkeypatch.context() as patch, pytest.raises(Killed):
        kill_at_write(patch, write, after)
        train(**settings)
    assert runs.scan_runs(settings["OUTPUT_DIR"]) == ([], {})
    run_dir = train(**settings)["run"].dir
    assert_same_run(run_dir, never_stopped[0])


@pytest.mark.parametrize("step", at_some(range(1, EPOCHS * STEPS + 1)))  # every training step
def test_ctrl_c_then_the_training_cell_with_resume_is_the_run_never_stopped(
    settings, never_stopped, capsys, step
):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, step)
    run_dir = namespace["run"].dir
    assert f"set RESUME = '{run_dir}'" in capsys.readouterr().out
    done = (step - 1) // STEPS
    assert namespace["run"].epochs_done == done
    # In the same kernel: RESUME set in the parameters cell, then the training cell; a TTA_SHIFT
    # of its own does not change what is trained.
    namespace.update(RESUME=str(run_dir), TTA_SHIFT=0)
    run_cells(["training"], namespace)
    assert namespace["run"].dir == run_dir
    assert f"Resuming {run_dir} after epoch {done}" in capsys.readouterr().out
    assert_same_run(run_dir, never_stopped[0])
    [resumed] = folders.read_params(run_dir)["resumed"]
    assert (resumed["epochs_done"], resumed["TTA_SHIFT"]) == (done, 0)


# Ctrl-C (SIGINT) at every stage of the notebook, pressed at a chosen call of a function of that
# stage: what the notebook then says, holds in `run` and shows in the cells below is what the run
# folder holds, and the run goes on exactly.


def ctrl_c_at(patch, owner, name, call=1, after=False):
    """Send this process SIGINT, as Ctrl-C does, at the `call`-th call of owner.name: as it starts
    or, with `after`, as it returns. Returns the calls made."""
    in_namespace = isinstance(owner, dict)  # a function the notebook's cells define
    real, calls = owner[name] if in_namespace else getattr(owner, name), []

    def pressed(*args, **kwargs):
        calls.append(name)
        if len(calls) == call and not after:
            os.kill(os.getpid(), signal.SIGINT)
        result = real(*args, **kwargs)
        if len(calls) == call and after:
            os.kill(os.getpid(), signal.SIGINT)
        return result

    if in_namespace:
        patch.setitem(owner, name, pressed)
    else:
        patch.setattr(owner, name, pressed)
    return calls


def assert_notebook_shows_the_folder(namespace, capsys, epochs):
    """The training cell said what the folder holds, `run` holds it, and the cells below show it."""
    run = namespace["run"]
    out = capsys.readouterr().out
    assert f"Interrupted: the {epochs} finished epochs are saved in {run.dir}; " in out
    saved = folders.read_run(run.dir)
    assert not list(run.dir.glob(".*.tmp"))
    if epochs == 0:  # no metrics.json yet, and the cells below say to train first
        assert saved["metrics"] is None and run.epochs_done == 0
        with pytest.raises(StaleCellError, match="run the training cell"):
            run_cells(["curves"], namespace)
        return
    folders.check_weights_match(saved)
    assert run.epochs_done == saved["metrics"]["epochs_done"] == epochs
    assert run.history == saved["metrics"]["history"]
    run_cells(["curves", "confusion", "final-metrics"], namespace)
    assert f"epochs:         {epochs} of {EPOCHS}" in capsys.readouterr().out


# Before the run has a folder: the check cell (checking the MNIST files), the data cell (building
# the data set) and the training cell as it chooses how to train (COMPILE and PRECISION).
BEFORE_A_FOLDER = [("checks", mnist, "prepare"), ("data", utils, "MNISTBatches"),
                   ("training", speed, "choose_for")]  # fmt: skip


@pytest.mark.parametrize(("cell", "owner", "name"), BEFORE_A_FOLDER, ids=lambda v: str(v))
def test_ctrl_c_before_the_run_has_a_folder_leaves_none_and_the_cell_runs_again_exactly(
    settings, never_stopped, monkeypatch, cell, owner, name
):
    namespace = {}
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        calls = ctrl_c_at(patch, owner, name)
        run_cells(TRAINING_CELLS, namespace, **settings)
    assert calls == [name]
    assert runs.scan_runs(settings["OUTPUT_DIR"]) == ([], {})
    if "run" in namespace:  # the cells below say to train first
        with pytest.raises(StaleCellError, match="run the training cell"):
            run_cells(["curves"], namespace)
    run_cells(TRAINING_CELLS[TRAINING_CELLS.index(cell) :], namespace)
    assert_same_run(namespace["run"].dir, never_stopped[0])


def test_ctrl_c_as_the_run_folder_is_made_names_it_and_resume_is_exact(
    settings, never_stopped, monkeypatch, capsys
):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        ctrl_c_at(patch, folders, "create")  # held until the run and its folder exist
        run_cells(["training"], namespace)
    [run_dir] = (p.parent for p in Path(settings["OUTPUT_DIR"]).glob(f"*/{folders.PARAMS_FILE}"))
    out = capsys.readouterr().out
    assert f"Interrupted: the 0 finished epochs are saved in {run_dir}; to go on, set " in out
    assert sorted(p.name for p in run_dir.iterdir()) == [folders.PARAMS_FILE, folders.RESUME_FILE]
    with pytest.raises(StaleCellError, match="run the training cell"):
        run_cells(["curves"], namespace)  # `run` is still the model cell's NOT_TRAINED
    namespace["RESUME"] = str(run_dir)
    run_cells(["training"], namespace)
    assert_same_run(run_dir, never_stopped[0])


@pytest.mark.parametrize("epoch", at_some(range(1, EPOCHS + 1), fast=[1]))
def test_ctrl_c_in_an_epochs_test_pass_keeps_the_epochs_before_and_resume_is_exact(
    settings, never_stopped, capsys, epoch
):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    with pytest.MonkeyPatch.context() as patch:
        ctrl_c_at(patch, namespace, "test", call=epoch)  # the notebook's test()
        run_cells(["training"], namespace)
    assert_notebook_shows_the_folder(namespace, capsys, epoch - 1)
    namespace["RESUME"] = str(namespace["run"].dir)
    run_cells(["training"], namespace)
    assert_same_run(namespace["run"].dir, never_stopped[0])


def rename(epoch, file):
    """The number of the rename, counting from 1, that puts `file` of `epoch` in place."""
    return len(STARTING) + (epoch - 1) * len(EPOCH_SAVE) + EPOCH_SAVE.index(file) + 1


# Moments of an epoch's save: (what is called, which call, after it returned, the epoch saved).
SAVING = {
    # Issue 35's: as epoch 2's three files are written (the run's third write_together).
    "as-its-files-are-written": (folders, "write_together", 3, False, 2),
    "before-the-weights-rename": (os, "replace", rename(2, folders.WEIGHTS_FILE), False, 2),
    "after-the-last-rename": (os, "replace", rename(2, folders.METRICS_FILE), True, 2),
    "after-the-last-epochs-last-rename": (
        os, "replace", rename(EPOCHS, folders.METRICS_FILE), True, EPOCHS
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("owner", "name", "call", "after", "saved"),
    at_some(list(SAVING.values()), fast=[0]),
    ids=SAVING,
)
def test_ctrl_c_while_an_epoch_is_saved_waits_for_it_and_the_notebook_says_so(
    settings, never_stopped, capsys, owner, name, call, after, saved
):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    with pytest.MonkeyPatch.context() as patch:
        calls = ctrl_c_at(patch, owner, name, call, after)
        run_cells(["training"], namespace)  # the cell ends as a stop
    # The save went on to its end, and nothing was written after it.
    assert len(calls) == (rename(saved, folders.METRICS_FILE) if name == "replace" else call)
    assert_notebook_shows_the_folder(namespace, capsys, saved)
    namespace["RESUME"] = str(namespace["run"].dir)
    run_cells(["training"], namespace)
    assert_same_run(namespace["run"].dir, never_stopped[0])


@pytest.mark.parametrize("as_saved", [False, True], ids=["predicting", "saving-the-accuracy"])
def test_ctrl_c_in_the_analysis_cell_leaves_the_run_and_metrics_json_agreeing(
    settings, never_stopped, monkeypatch, as_saved
):
    namespace = train(**settings)
    run = namespace["run"]
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        if as_saved:  # held until metrics.json and run.analysis both have the accuracy
            ctrl_c_at(patch, folders, "write_together")
        else:
            ctrl_c_at(patch, analysis, "analyse")
        run_cells(["confusion"], namespace)
    metrics = folders.read_run(run.dir)["metrics"]
    if as_saved:
        assert metrics["final_test_acc"] == run.analysis.accuracy
    else:
        assert "final_test_acc" not in metrics
        with pytest.raises(StaleCellError, match="draws the confusion matrix first"):
            run_cells(["per-digit"], namespace)
    namespace["RESUME"] = str(run.dir)  # a finished run: trains nothing, then analyses again
    run_cells(["training", "confusion", "per-digit"], namespace)
    assert_same_run(run.dir, never_stopped[0])
    assert (
        folders.read_run(run.dir)["metrics"]["final_test_acc"] == namespace["run"].analysis.accuracy
    )


@pytest.mark.slow  # starts loader worker processes
@pytest.mark.skipif(
    torch.accelerator.is_available(),
    reason="loader workers need the data on the CPU; the data cell keeps it on the accelerator",
)
def test_with_loader_workers_too_ctrl_c_then_resume_is_the_run_never_stopped(settings, tmp_path):
    settings = {**settings, "NUM_WORKERS": 1}
    reference = run_never_stopped(settings, tmp_path / "reference")
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, STEPS + 2)  # in epoch 2
    assert namespace["run"].epochs_done == 1
    namespace.update(RESUME=str(namespace["run"].dir))
    run_cells(["training"], namespace)
    assert_same_run(namespace["run"].dir, reference)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_resuming_a_finished_run_trains_nothing_and_changes_no_file(settings, reference):
    before = snapshot(reference)
    namespace = train(**settings, RESUME=str(reference))
    assert namespace["run"].history["test_acc"] == finished(reference)[1]["test_acc"]
    assert snapshot(reference) == before


def test_resume_refuses_other_parameters_naming_each_and_the_fix(settings, reference, tmp_path):
    with pytest.raises(ValueError, match=r"EPOCHS is 5 here and 3 there.*back to the run's"):
        train(**{**settings, "EPOCHS": 5}, RESUME=str(reference))
    # Where the data lives, where new runs go and the test-time shift do not change training.
    elsewhere = str(tmp_path / "elsewhere")
    train(**{**settings, "TTA_SHIFT": 0, "OUTPUT_DIR": elsewhere}, RESUME=str(reference))


def test_resume_refuses_what_is_no_run_or_cannot_go_on(settings, reference, tmp_path):
    with pytest.raises(ValueError, match="is not a run folder"):
        train(**settings, RESUME=str(tmp_path))
    typo = str(reference) + "x"
    with pytest.raises(ValueError, match=f"^RESUME = {re.escape(repr(typo))} does not exist"):
        train(**settings, RESUME=typo)
    with pytest.raises(
        ValueError, match=f"is a file: give the run folder, such as {re.escape(str(reference))}"
    ):
        train(**settings, RESUME=str(reference / folders.PARAMS_FILE))
    (reference / folders.RESUME_FILE).unlink()
    with pytest.raises(ValueError, match="has no resume.pt.*RESUME = None"):
        train(**settings, RESUME=str(reference))


def test_a_run_whose_params_json_lacks_a_parameter_is_refused_naming_the_file(settings, reference):
    info = folders.read_params(reference)
    del info["parameters"]["WARMUP"]
    (reference / folders.PARAMS_FILE).write_text(json.dumps(info))
    path = re.escape(str(reference / folders.PARAMS_FILE))
    with pytest.raises(schema.RunFolderError, match=f"^{path} records no WARMUP: .* damaged"):
        train(**settings, RESUME=str(reference))


def test_a_resume_file_from_elsewhere_is_refused(settings, reference):
    torch.save({"model": {}}, reference / folders.RESUME_FILE)
    with pytest.raises(checkpoints.CheckpointError, match="not a resume file"):
        train(**settings, RESUME=str(reference))


def test_a_resume_file_with_damaged_parameters_is_refused(settings, reference):
    saved = torch.load(reference / folders.RESUME_FILE, weights_only=True)
    torch.save({**saved, "parameters": ["EPOCHS", 3]}, reference / folders.RESUME_FILE)
    with pytest.raises(checkpoints.CheckpointError, match="not a resume file"):
        train(**settings, RESUME=str(reference))


def test_a_resume_file_of_an_older_format_is_refused(settings, reference):
    saved = torch.load(reference / folders.RESUME_FILE, weights_only=True)
    torch.save({**saved, "format": resume.FORMAT - 1}, reference / folders.RESUME_FILE)
    with pytest.raises(
        checkpoints.CheckpointError, match=f"not a resume file.*format {resume.FORMAT}"
    ):
        train(**settings, RESUME=str(reference))


@pytest.mark.parametrize("other", [dict(SEED=7), dict(LEARNING_RATE=0.01), dict(EPOCHS=2)])
def test_the_resume_file_of_another_run_is_refused_naming_the_difference(
    settings, reference, tmp_path, other
):
    another = run_never_stopped({**settings, **other}, tmp_path / "another")
    shutil.copy(another / folders.RESUME_FILE, reference / folders.RESUME_FILE)
    name, value = next(iter(other.items()))
    with pytest.raises(
        checkpoints.CheckpointError,
        match=rf"belongs to another run: {name} is .* {value!r} in it",
    ):
        train(**settings, RESUME=str(reference))


def test_other_training_data_is_refused_on_resume(settings, reference, tmp_path):
    make_tiny_mnist(tmp_path / "other", seed=5)  # same size, other images
    with pytest.raises(
        checkpoints.CheckpointError, match="same number of images.*point DATA_DIR at that run's"
    ):
        train(**{**settings, "DATA_DIR": str(tmp_path / "other")}, RESUME=str(reference))


def test_less_training_data_is_refused_on_resume_saying_how_much(settings, reference, tmp_path):
    make_tiny_mnist(tmp_path / "fewer", n_train=64)
    with pytest.raises(checkpoints.CheckpointError, match="64 images, 2 steps an epoch, where it"):
        train(**{**settings, "DATA_DIR": str(tmp_path / "fewer")}, RESUME=str(reference))


@pytest.mark.parametrize(
    ("cut", "found"),
    [(0, "is empty (0 bytes): it holds nothing to load"), (0.5, "cannot be read: it is truncated")],
)
def test_a_truncated_resume_file_is_named_with_what_to_do(settings, reference, cut, found):
    path = reference / folders.RESUME_FILE
    path.write_bytes(path.read_bytes()[: int(cut * path.stat().st_size)])
    with pytest.raises(checkpoints.CheckpointError) as info:
        train(**settings, RESUME=str(reference))
    message = str(info.value)
    assert message.startswith(f"{path} {found}")
    assert "So the run cannot go on from it" in message and "set RESUME = None" in message
    assert "save it again" not in message  # resume.pt is no file to save again by hand
    assert message.count("PytorchStreamReader") <= 1 and info.value.__cause__ is None


def test_a_run_folder_that_cannot_be_written_is_refused_by_the_check_cell(
    settings, reference, monkeypatch
):
    """A finished run on a read-only mount: the plots after training would fail to be saved."""
    mount_read_only(monkeypatch, reference)
    with pytest.raises(ValueError) as info:
        run_cells(TRAINING_CELLS[:3], **settings, RESUME=str(reference))  # to the check cell
    message = str(info.value)
    assert message.startswith(
        f"RESUME = {str(reference)!r} cannot be written (OSError: {os.strerror(errno.EROFS)})."
    )
    copy = Path(settings["OUTPUT_DIR"]) / reference.name
    assert f"cp -r {reference} {copy}) and set RESUME to the copy" in message
    monkeypatch.undo()
    shutil.copytree(reference, copy)  # as the message says
    namespace = train(**settings, RESUME=str(copy))
    run_cells(["curves"], namespace)
    assert (copy / "curves.png").is_file()


def test_resuming_a_finished_and_analysed_run_keeps_every_result(settings, reference):
    folders.save_final(reference, tta_shift=1, final_test_acc=12.5)
    (reference / ".my notes.tmp").write_text("mine")
    before = snapshot(reference)
    train(**settings, RESUME=str(reference))
    assert snapshot(reference) == before


def test_the_last_cell_compares_the_runs_beside_a_run_resumed_from_another_output_dir(
    settings, reference, tmp_path, capsys
):
    namespace = train(
        **{**settings, "OUTPUT_DIR": str(tmp_path / "elsewhere")}, RESUME=str(reference)
    )
    capsys.readouterr()
    run_cells(["compare-runs"], namespace)
    assert reference.name in capsys.readouterr().out


def test_resume_state_loads_with_weights_only_and_the_weights_stay_a_state_dict(never_stopped):
    run_dir = never_stopped[0]
    state = torch.load(run_dir / folders.RESUME_FILE, weights_only=True)
    assert state["format"] == resume.FORMAT
    assert len(state["history"]["test_acc"]) == EPOCHS
    for name in resume.OBJECTS:
        assert isinstance(state[name], dict), name
    weights = torch.load(run_dir / folders.WEIGHTS_FILE, weights_only=True)
    assert weights and all(isinstance(v, torch.Tensor) for v in weights.values())


def child(settings, **more):
    """The training cells in a process of their own, printing as they go."""
    parameters = json.dumps({**settings, **more})
    return subprocess.Popen(
        [sys.executable, "-u", "-m", "tests.notebook_cells", parameters],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def started(process):
    """Wait for the line the training cell prints as it starts; return the run folder."""
    for line in process.stdout:
        if line.startswith(("Saving into ", "Resuming ")):
            return line.split()[2 if line.startswith("Saving") else 1]
    raise AssertionError(f"the training cell did not start (exit code {process.wait()})")


def epochs_saved(run_dir):
    metrics = Path(run_dir) / folders.METRICS_FILE
    return json.loads(metrics.read_text())["epochs_done"] if metrics.exists() else 0


# What the child prints as training goes on: train()'s progress bar ("epoch 2:  47%|####  | 15/32
# [...", redrawn after a \r, which ends a line here too) and the line the training cell prints
# between an epoch's test pass and its saving ("epoch 2/3: train loss ...").
BAR = re.compile(r"epoch (\d+):.*?\| *(\d+)/\d+ \[")
EPOCH_DONE = re.compile(r"epoch (\d+)/\d+: ")


def progress_points(epochs_done, steps):
    """The moments a child can be stopped at, from the run's state: each training step left
    (its number, counting over all epochs), and each epoch's saving (its last step + 0.5)."""
    first = epochs_done * steps + 1
    saves = [epoch * steps + 0.5 for epoch in range(epochs_done + 1, EPOCHS + 1)]
    return list(range(first, EPOCHS * steps + 1)) + saves


def wait_for(process, point, steps):
    """Read the child's output until it has passed `point` (see progress_points), or ended."""
    for line in process.stdout:
        bar, done = BAR.match(line), EPOCH_DONE.match(line)
        if bar and (int(bar[1]) - 1) * steps + int(bar[2]) >= point:
            return
        if done and int(done[1]) * steps + 0.5 >= point:
            return


@pytest.mark.slow
def test_sigkill_or_sigint_at_random_moments_then_resume_is_the_run_never_stopped(tmp_path):
    # A smoke run trains on SMOKE_IMAGES images at most: in batches of 8, 32 steps an epoch.
    make_tiny_mnist(tmp_path / "data", n_train=SMOKE_IMAGES)
    settings = dict(DATA_DIR=str(tmp_path / "data"), OUTPUT_DIR=str(tmp_path / "runs"), **SETTINGS)
    settings["BATCH_SIZE"] = 8
    steps = SMOKE_IMAGES // settings["BATCH_SIZE"]
    # The same run never stopped, in a process of its own as the stopped ones are.
    plain = child({**settings, "OUTPUT_DIR": str(tmp_path / "plain")})
    reference = started(plain)
    plain.communicate(timeout=300)
    assert plain.returncode == 0
    chooser = random.Random(17)
    stopped_after, run_dir = [], None
    for stop in (signal.SIGKILL, signal.SIGINT):  # each resumed; then the end
        process = child(settings, **({"RESUME": run_dir} if run_dir else {}))
        run_dir = started(process)
        # A step of the training left or the saving of an epoch, read as the child gets there
        # (not timed: a busy machine slows the stops as it slows the training), and a moment
        # after it: in a training step, the test pass or the files' renames.
        points = progress_points(epochs_saved(run_dir), steps)
        wait_for(process, chooser.choice(points) if points else 0, steps)  # none: finished
        time.sleep(chooser.uniform(0, 0.02))
        process.send_signal(stop)
        process.communicate(timeout=300)
        stopped_after.append(epochs_saved(run_dir))
    last = child(settings, RESUME=run_dir)
    last.communicate(timeout=300)
    assert last.returncode == 0
    assert_same_run(Path(run_dir), Path(reference))
    assert not list(Path(run_dir).glob(".*.tmp"))
    # The stops land anywhere in the training left, so some before the last epoch was saved.
    assert min(stopped_after) < EPOCHS, stopped_after
