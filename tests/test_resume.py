"""RESUME: a run stopped at any moment goes on in its folder and ends as if it never stopped."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from notebook_cells import TRAINING_CELLS, run_cells, train_until_ctrl_c

import plots
import resume
import runs
from conftest import REPO, make_tiny_mnist

# What the metrics of a resumed run must repeat exactly: all but the times.
SAME = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")
EPOCHS = 3
SETTINGS = dict(EPOCHS=EPOCHS, BATCH_SIZE=32)  # with the tiny data: 3 steps an epoch


@pytest.fixture
def settings(tiny_root, tmp_path):
    """Parameters for a run of a few seconds on the tiny data, saving under tmp_path."""
    return dict(DATA_DIR=str(tiny_root), OUTPUT_DIR=str(tmp_path / "outputs"), **SETTINGS)


def train(namespace=None, **parameters):
    return run_cells(TRAINING_CELLS, namespace, **parameters)


def finished(run_dir):
    """(metrics that must repeat, the saved weights) of a run folder."""
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    history = {key: metrics["history"][key] for key in SAME}
    weights = torch.load(run_dir / runs.WEIGHTS_FILE, weights_only=True)
    return metrics["epochs_done"], history, weights


def assert_same_run(run_dir, reference):
    epochs, history, weights = finished(run_dir)
    expected_epochs, expected_history, expected_weights = finished(reference)
    assert epochs == expected_epochs == EPOCHS
    assert history == expected_history
    assert weights.keys() == expected_weights.keys()
    for key, tensor in weights.items():
        assert torch.equal(tensor, expected_weights[key]), key
    assert runs.load_model(run_dir) is not None  # the weights match metrics.json's digest


@pytest.fixture(autouse=True)
def no_sample_grid(monkeypatch):
    """The data cell's grid of samples takes most of a run's time and draws no random number."""
    monkeypatch.setattr(plots, "plot_samples", lambda images, labels: None)


def run_never_stopped(settings, output_dir):
    return train(**{**settings, "OUTPUT_DIR": str(output_dir)})["run_dir"]


@pytest.fixture
def reference(settings, tmp_path):
    """The folder of the same run, never stopped, for a test to change."""
    return run_never_stopped(settings, tmp_path / "reference")


@pytest.fixture(scope="module")
def never_stopped(tiny_root, tmp_path_factory):
    """The folder of the same run, never stopped, shared by the tests that only read it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_samples", lambda images, labels: None)
        return run_never_stopped(
            dict(DATA_DIR=str(tiny_root), **SETTINGS), tmp_path_factory.mktemp("never")
        )


class Killed(BaseException):
    """Stands in for SIGKILL in this process: nothing catches it and the files stay as they are."""


def kill_at_write(patch, write, after):
    """Stop at the `write`-th file rename (atomic_write's last step), before or after it."""
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == write and not after:
            raise Killed(dst)
        real_replace(src, dst)
        if len(calls) == write:
            raise Killed(dst)

    patch.setattr(os, "replace", replace)
    return calls


# Every moment a stop leaves different files: just before and just after each file is renamed into
# place. A run writes resume.pt and params.json as it starts (a folder without params.json is no
# run: nothing to resume), then resume.pt, the weights and metrics.json after each epoch.
STOPS = [(2, True)] + [(write, after) for write in range(3, 3 + 3 * EPOCHS) for after in (0, 1)]


@pytest.mark.parametrize(("write", "after"), STOPS)
def test_a_stop_between_any_two_saves_then_resume_is_the_run_never_stopped(
    settings, never_stopped, monkeypatch, write, after
):
    with monkeypatch.context() as patch, pytest.raises(Killed):
        calls = kill_at_write(patch, write, after)
        train(**settings)
    assert len(calls) == write
    (run_dir,) = (p.parent for p in Path(settings["OUTPUT_DIR"]).glob(f"*/{runs.PARAMS_FILE}"))
    # A fresh process: the user runs the whole notebook again with RESUME set.
    resumed = train(**settings, RESUME=str(run_dir))
    assert resumed["run_dir"] == run_dir
    assert_same_run(run_dir, never_stopped)
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.parametrize("step", [1, 4, 9])  # in epoch 1, 2 and 3 (3 steps an epoch)
def test_ctrl_c_then_the_training_cell_with_resume_is_the_run_never_stopped(
    settings, never_stopped, capsys, step
):
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, step)
    run_dir = namespace["run_dir"]
    assert f"set RESUME = '{run_dir}'" in capsys.readouterr().out
    assert len(namespace["history"]["test_acc"]) == (step - 1) // 3
    # In the same kernel: RESUME set in the parameters cell, then the training cell; a TTA_SHIFT
    # of its own does not change what is trained.
    namespace.update(RESUME=str(run_dir), TTA_SHIFT=0)
    run_cells(["training"], namespace)
    assert namespace["run_dir"] == run_dir
    assert_same_run(run_dir, never_stopped)
    [resumed] = runs.read_params(run_dir)["resumed"]
    assert (resumed["epochs_done"], resumed["TTA_SHIFT"]) == ((step - 1) // 3, "0")


def test_with_loader_workers_too_ctrl_c_then_resume_is_the_run_never_stopped(settings, tmp_path):
    settings = {**settings, "NUM_WORKERS": 1}
    reference = run_never_stopped(settings, tmp_path / "reference")
    namespace = run_cells(TRAINING_CELLS[:-1], **settings)
    train_until_ctrl_c(namespace, 5)  # in epoch 2
    namespace.update(RESUME=str(namespace["run_dir"]))
    run_cells(["training"], namespace)
    assert_same_run(namespace["run_dir"], reference)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_resuming_a_finished_run_trains_nothing_and_changes_no_file(settings, reference):
    before = snapshot(reference)
    namespace = train(**settings, RESUME=str(reference))
    assert namespace["history"]["test_acc"] == finished(reference)[1]["test_acc"]
    assert snapshot(reference) == before


def test_resume_refuses_other_parameters_naming_each_and_the_fix(settings, reference):
    with pytest.raises(ValueError, match=r"EPOCHS is 5 here and 3 there.*back to the run's"):
        train(**{**settings, "EPOCHS": 5}, RESUME=str(reference))
    # Where the data lives, where new runs go and the test-time shift do not change training.
    train(**{**settings, "TTA_SHIFT": 0, "OUTPUT_DIR": "elsewhere"}, RESUME=str(reference))


def test_resume_refuses_what_is_no_run_or_cannot_go_on(settings, reference, tmp_path):
    with pytest.raises(ValueError, match="is not a run folder"):
        train(**settings, RESUME=str(tmp_path))
    with pytest.raises(ValueError, match=f"is a file: give the run folder, such as {reference}"):
        train(**settings, RESUME=str(reference / runs.PARAMS_FILE))
    (reference / runs.RESUME_FILE).unlink()
    with pytest.raises(ValueError, match="has no resume.pt.*RESUME = None"):
        train(**settings, RESUME=str(reference))


def test_a_run_from_a_version_that_lacked_a_parameter_is_refused_saying_so(settings, reference):
    info = runs.read_params(reference)
    del info["parameters"]["WARMUP"]
    (reference / runs.PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="does not record WARMUP: the run was made by another"):
        train(**settings, RESUME=str(reference))


def forget(run_dir, name):
    """Make run_dir look saved by a notebook that did not have the parameter `name` yet."""
    info = runs.read_params(run_dir)
    del info["parameters"][name]
    (run_dir / runs.PARAMS_FILE).write_text(json.dumps(info))
    saved = torch.load(run_dir / runs.RESUME_FILE, weights_only=True)
    del saved["parameters"][name]
    torch.save(saved, run_dir / runs.RESUME_FILE)


def test_a_run_saved_before_label_smoothing_existed_goes_on_exactly(settings, tmp_path):
    older = {**settings, "LABEL_SMOOTHING": 0.0}  # how the notebook trained before it had one
    reference = run_never_stopped(older, tmp_path / "reference")
    namespace = run_cells(TRAINING_CELLS[:-1], **older)
    train_until_ctrl_c(namespace, 5)  # in epoch 2
    run_dir = namespace["run_dir"]
    forget(run_dir, "LABEL_SMOOTHING")
    # Going on with a smoothed target would be another run.
    with pytest.raises(ValueError, match="LABEL_SMOOTHING is 0.1 here and 0.0 there"):
        train(**{**settings, "LABEL_SMOOTHING": 0.1}, RESUME=str(run_dir))
    train(**older, RESUME=str(run_dir))
    assert_same_run(run_dir, reference)
    assert runs.read_run(run_dir)["parameters"]["LABEL_SMOOTHING"] == 0.0


def test_a_resume_file_from_elsewhere_is_refused(settings, reference):
    torch.save({"model": {}}, reference / runs.RESUME_FILE)
    with pytest.raises(resume.checkpoints.CheckpointError, match="not a resume file"):
        train(**settings, RESUME=str(reference))


def test_a_resume_file_with_damaged_parameters_is_refused(settings, reference):
    saved = torch.load(reference / runs.RESUME_FILE, weights_only=True)
    torch.save({**saved, "parameters": ["EPOCHS", 3]}, reference / runs.RESUME_FILE)
    with pytest.raises(resume.checkpoints.CheckpointError, match="not a resume file"):
        train(**settings, RESUME=str(reference))


@pytest.mark.parametrize("other", [dict(SEED=7), dict(LEARNING_RATE=0.01), dict(EPOCHS=2)])
def test_the_resume_file_of_another_run_is_refused_naming_the_difference(
    settings, reference, tmp_path, other
):
    another = run_never_stopped({**settings, **other}, tmp_path / "another")
    shutil.copy(another / runs.RESUME_FILE, reference / runs.RESUME_FILE)
    name, value = next(iter(other.items()))
    with pytest.raises(
        resume.checkpoints.CheckpointError,
        match=rf"belongs to another run: {name} is .* {value!r} in it",
    ):
        train(**settings, RESUME=str(reference))


def test_other_training_data_is_refused_on_resume(settings, reference, tmp_path):
    make_tiny_mnist(tmp_path / "other", seed=5)  # same size, other images
    with pytest.raises(resume.checkpoints.CheckpointError, match="point DATA_DIR at that run's"):
        train(**{**settings, "DATA_DIR": str(tmp_path / "other")}, RESUME=str(reference))


@pytest.mark.parametrize("cut", [0, 0.5], ids=["empty", "half"])
def test_a_truncated_resume_file_is_named_with_what_to_do(settings, reference, cut):
    path = reference / runs.RESUME_FILE
    path.write_bytes(path.read_bytes()[: int(cut * path.stat().st_size)])
    with pytest.raises(resume.checkpoints.CheckpointError, match="cannot be used to resume.*None"):
        train(**settings, RESUME=str(reference))


def test_resuming_a_finished_and_analysed_run_keeps_every_result(settings, reference):
    runs.save_final(reference, tta_shift=1, final_test_acc=12.5)
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


def test_resume_state_loads_with_weights_only_and_the_weights_stay_a_state_dict(reference):
    state = torch.load(reference / runs.RESUME_FILE, weights_only=True)
    assert len(state["history"]["test_acc"]) == EPOCHS
    weights = torch.load(reference / runs.WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in weights.values())


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
    metrics = Path(run_dir) / runs.METRICS_FILE
    return json.loads(metrics.read_text())["epochs_done"] if metrics.exists() else 0


@pytest.mark.slow
def test_sigkill_or_sigint_at_random_moments_then_resume_is_the_run_never_stopped(tmp_path):
    make_tiny_mnist(tmp_path / "data", n_train=1024)  # 32 steps an epoch: stops land in training
    settings = dict(DATA_DIR=str(tmp_path / "data"), OUTPUT_DIR=str(tmp_path / "runs"), **SETTINGS)
    # The same run never stopped, in a process of its own as the stopped ones are.
    plain = child({**settings, "OUTPUT_DIR": str(tmp_path / "plain")})
    reference = started(plain)
    begun, training = time.monotonic(), None
    for line in plain.stdout:
        if line.startswith(f"epoch {EPOCHS}/{EPOCHS}"):
            training = time.monotonic() - begun
    assert plain.wait(timeout=120) == 0 and training is not None
    chooser = random.Random(17)
    stopped_after = []
    for chain in range(2):
        run_dir = None
        for stop in range(3):
            process = child(settings, **({"RESUME": run_dir} if run_dir else {}))
            run_dir = started(process)
            left = training * (EPOCHS - epochs_saved(run_dir)) / EPOCHS
            time.sleep(chooser.uniform(0, left))
            process.send_signal(signal.SIGKILL if stop % 2 == chain else signal.SIGINT)
            process.wait(timeout=120)
            stopped_after.append(epochs_saved(run_dir))
        last = child(settings, RESUME=run_dir)
        last.communicate(timeout=120)
        assert last.returncode == 0
        assert_same_run(Path(run_dir), Path(reference))
        assert not list(Path(run_dir).glob(".*.tmp"))
    # Stops land anywhere in the training time left, so some before the last epoch was saved.
    assert min(stopped_after) < EPOCHS, stopped_after
