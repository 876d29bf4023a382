"""The notebook, executed headless end to end as a user would run it.

papermill, nbformat and nbclient are imported in the functions that use them: they take seconds to
import, and the quick tier (`make test-fast`) collects this module but runs none of those.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO
from notebook_cells import NOTEBOOK
from workbench import comparison, folders, parameters, runs, schema


def smoke_parameters(data_dir, output_dir, epochs=2, **extra):
    values = dict(
        DATA_DIR=str(data_dir), OUTPUT_DIR=str(output_dir), EPOCHS=epochs, BATCH_SIZE=32, SMOKE=True
    )
    # One mode for every run these tests compare ("auto" measures anew in each run, and may
    # choose another), and uncompiled: compiled code would trace the forward hooks that inject
    # faults below. test_browser runs the notebook with its defaults, "auto" both.
    return {**values, "COMPILE": False, "PRECISION": "fp32", **extra}


def run_notebook(tmp_path, parameters):
    import nbformat
    import papermill

    out = tmp_path / "executed.ipynb"
    papermill.execute_notebook(
        NOTEBOOK, out, parameters=parameters, cwd=REPO, kernel_name="python3", progress_bar=False
    )
    return nbformat.read(out, as_version=4)


def prepared(tmp_path, parameters):
    """The notebook with `parameters` injected, not yet executed."""
    import nbformat
    import papermill

    path = tmp_path / "prepared.ipynb"
    papermill.execute_notebook(NOTEBOOK, path, parameters=parameters, prepare_only=True)
    return nbformat.read(path, as_version=4)


def cell(nb, cell_id):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def run_with_fault(tmp_path, parameters, fault):
    """Inject `fault` (code) just before the training cell and run every cell, errors or not."""
    import nbformat
    from nbclient import NotebookClient

    nb = prepared(tmp_path, parameters)
    loop = nb.cells.index(cell(nb, "training"))
    nb.cells.insert(loop, nbformat.v4.new_code_cell(fault))
    NotebookClient(
        nb, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(REPO)}}
    ).execute()
    return nb


def errors(c):
    return [o for o in c.get("outputs", []) if o.output_type == "error"]


def text(c):
    return "".join(o.get("text", "") for o in c.outputs if o.output_type == "stream")


def has_image(c):
    return any("image/png" in o.get("data", {}) for o in c.outputs)


def only_run(output_dir):
    [run] = runs.list_runs(output_dir)
    return run


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def smoke_run(tiny_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    nb = run_notebook(tmp, smoke_parameters(tiny_root, tmp / "out"))
    return nb, tmp / "out"


@pytest.mark.slow
def test_smoke_run_saves_a_run_folder(smoke_run, notebook_defaults):
    nb, out = smoke_run
    run = only_run(out)
    channels, seed = notebook_defaults["CHANNELS"], notebook_defaults["SEED"]
    assert run["name"].endswith(f"_c{comparison.short(channels)}_ep2_seed{seed}_smoke")
    metrics = run["metrics"]
    assert (metrics["epochs_done"], metrics["epochs_planned"]) == (2, 2)
    assert metrics["tta_shift"] == 1 and 0 <= metrics["final_test_acc"] <= 100
    assert set(metrics["history"]) == set(schema.METRIC_KEYS)
    assert all(len(values) == 2 for values in metrics["history"].values())
    assert all(
        0 <= acc <= 100 for acc in metrics["history"]["test_acc"] + metrics["history"]["train_acc"]
    )
    assert all(
        0 < t <= e
        for t, e in zip(metrics["history"]["train_time_s"], metrics["history"]["epoch_time_s"])
    )
    for png in ("curves.png", "confusion_matrix.png", "misclassified.png"):
        assert (run["path"] / png).stat().st_size > 10_000, png
    # params.json: every value of the parameters cell, and where and with what it ran.
    assert run["parameters"]["EPOCHS"] == 2
    assert run["parameters"]["CHANNELS"] == json.loads(json.dumps(channels))
    assert set(run["parameters"]) == set(parameters.PARAMETER_RULES)
    for key in ("torch", "device", "threads", "cpu", "git_commit", "parameter_count"):
        assert run[key] is not None, key
    runs.load_model(run["path"])
    # samples, curves, confusion matrix, gallery, comparison of runs
    assert sum(has_image(c) for c in nb.cells if c.cell_type == "code") == 5


@pytest.mark.slow
def test_epoch_lines_and_progress_go_to_stdout_not_stderr(smoke_run):
    nb, _ = smoke_run
    streams = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "stream"
    ]
    assert [o for o in streams if o.name == "stderr"] == []
    training = text(cell(nb, "training"))
    assert "epoch 1: 100%" in training  # the progress bar
    assert "epoch 2/2: train loss" in training and "test loss" in training


@pytest.mark.slow
def test_a_second_run_into_the_same_output_dir_keeps_the_first_and_repeats_its_metrics(
    smoke_run, tiny_root, tmp_path
):
    """Same seed, same metrics; and the first run's folder, linked in, is left as it was."""
    _, out = smoke_run
    first = only_run(out)
    before = snapshot(first["path"])
    copy = tmp_path / "out"
    copy.mkdir()
    os.symlink(first["path"], copy / first["name"])
    run_notebook(tmp_path, smoke_parameters(tiny_root, copy))
    names = sorted(p.name for p in copy.iterdir())
    assert len(names) == 2 and names[0] == first["name"]
    assert snapshot(first["path"]) == before  # nothing of the first run was replaced
    second = folders.read_run(copy / names[1])["metrics"]["history"]
    for key in set(schema.METRIC_KEYS) - {"train_time_s", "epoch_time_s"}:
        assert first["metrics"]["history"][key] == second[key], key


@pytest.mark.slow
def test_training_cell_and_run_all_can_be_run_again(tiny_root, tmp_path):
    """Run All, then the training cell and the cells below it again, then Run All once more."""
    from nbclient import NotebookClient

    out = tmp_path / "out"
    nb = prepared(tmp_path, smoke_parameters(tiny_root, out))
    client = NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": str(REPO)}})
    training = nb.cells.index(cell(nb, "training"))
    with client.setup_kernel():
        for index, c in enumerate(nb.cells):
            client.execute_cell(c, index)
        for index in range(training, len(nb.cells)):
            client.execute_cell(nb.cells[index], index)  # raises on any error
        again = [run["name"] for run in runs.list_runs(out)]
        for index, c in enumerate(nb.cells):
            client.execute_cell(c, index)
    all_runs = runs.list_runs(out)
    assert len(all_runs) == 3
    first, continued, fresh = all_runs
    assert continued["continued_from"] == first["name"] and fresh["continued_from"] is None
    assert [r["metrics"]["epochs_done"] for r in all_runs] == [2, 2, 2]
    assert again == [first["name"], continued["name"]]
    assert all(r["name"] in text(cell(nb, "compare-runs")) for r in all_runs)


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


@pytest.mark.slow
def test_nan_loss_stops_with_epoch_and_batch_and_keeps_the_finished_epoch(tiny_root, tmp_path):
    nb = run_with_fault(
        tmp_path, smoke_parameters(tiny_root, tmp_path / "out", epochs=3), NAN_IN_EPOCH_2
    )
    [error] = errors(cell(nb, "training"))
    assert error.ename == "FloatingPointError" and "at epoch 2, batch 2" in error.evalue
    run = only_run(tmp_path / "out")
    assert run["metrics"]["epochs_done"] == 1
    runs.load_model(run["path"])  # the checkpoint of epoch 1
    # The cells below the error run (as the docs suggest) and show the finished epoch.
    assert has_image(cell(nb, "curves"))
    assert "epochs:         1 of 3" in text(cell(nb, "final-metrics"))


@pytest.mark.slow
def test_interrupt_keeps_the_finished_epochs_and_still_plots(tiny_root, tmp_path):
    # BATCH_SIZE 100000 also shows that the model summary does not scale with the batch size
    # (a summary of a whole batch of that size needs about 10 GB).
    values = smoke_parameters(tiny_root, tmp_path / "out", epochs=4, BATCH_SIZE=100_000)
    nb = run_with_fault(tmp_path, values, INTERRUPT_IN_EPOCH_3)
    training = cell(nb, "training")
    assert not errors(training)
    assert "the 2 finished epochs are saved in" in text(training)
    assert only_run(tmp_path / "out")["metrics"]["epochs_done"] == 2
    assert has_image(cell(nb, "curves"))
    summary = "".join(o.get("data", {}).get("text/plain", "") for o in cell(nb, "model").outputs)
    assert "[1, 10]" in summary


@pytest.mark.slow
def test_resume_after_an_interrupt_ends_as_the_run_never_stopped(smoke_run, tiny_root, tmp_path):
    values = smoke_parameters(tiny_root, tmp_path / "out")
    run_with_fault(
        tmp_path, values, fault_after("len(train_loader) + 1", "raise KeyboardInterrupt")
    )
    stopped = only_run(tmp_path / "out")
    assert stopped["metrics"]["epochs_done"] == 1
    nb = run_notebook(tmp_path, {**values, "RESUME": str(stopped["path"])})
    assert f"Resuming {stopped['path']} after epoch 1" in text(cell(nb, "training"))
    resumed, never = only_run(tmp_path / "out"), only_run(smoke_run[1])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert resumed["metrics"]["history"][key] == never["metrics"]["history"][key], key
    weights = runs.load_model(resumed["path"]).state_dict()
    for key, tensor in runs.load_model(never["path"]).state_dict().items():
        assert torch.equal(weights[key], tensor), key
    assert has_image(cell(nb, "curves")) and "epochs:         2 of 2" in text(
        cell(nb, "final-metrics")
    )


@pytest.mark.slow
def test_sigint_to_papermill_keeps_every_finished_epoch(tiny_root, tmp_path):
    """Ctrl-C in the terminal running `make run` signals papermill and its kernel together."""
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "papermill",
        str(NOTEBOOK),
        str(tmp_path / "executed.ipynb"),
        "--cwd",
        str(REPO),
    ]
    for name, value in smoke_parameters(tiny_root, out, epochs=10_000).items():
        command += ["-p", name, str(value)]
    process = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob(f"*/{folders.WEIGHTS_FILE}")) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, "the notebook ended before it could be interrupted"
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    run = only_run(out)
    done = run["metrics"]["epochs_done"]
    assert 1 <= done < 10_000 and len(run["metrics"]["history"]["test_acc"]) == done
    runs.load_model(run["path"])


@pytest.mark.slow
def test_bad_parameter_fails_at_once_naming_it(tiny_root, tmp_path):
    """`papermill -r SMOKE False` passes the string "False", which must not mean a smoke run."""
    import papermill

    start = time.monotonic()
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebook(tmp_path, smoke_parameters(tiny_root, tmp_path / "out", SMOKE="False"))
    assert time.monotonic() - start < 60
    assert "SMOKE = 'False' (str) is not allowed: SMOKE must be True or False" in str(info.value)
    assert not (tmp_path / "out").exists() or runs.list_runs(tmp_path / "out") == []


@pytest.mark.slow
def test_unwritable_output_dir_fails_before_training(tiny_root, tmp_path):
    import papermill

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    start = time.monotonic()
    with pytest.raises(papermill.PapermillExecutionError) as info:
        run_notebook(tmp_path, smoke_parameters(tiny_root, blocker / "out"))
    assert time.monotonic() - start < 60
    assert f"OUTPUT_DIR = {str(blocker / 'out')!r} cannot be written" in str(info.value)


def copy_project(folder, *names):
    """The named files and folders of the project, copied into `folder` as a user would."""
    folder.mkdir()
    for name in names:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, folder / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(REPO / name, folder / name)
    return folder


@pytest.mark.slow
def test_the_three_files_alone_stop_at_once_saying_what_to_copy(tiny_root, tmp_path):
    import papermill

    alone = copy_project(tmp_path / "alone", "S5.ipynb", "utils.py", "model.py")
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(
            alone / "S5.ipynb",
            tmp_path / "executed.ipynb",
            parameters=smoke_parameters(tiny_root, tmp_path / "out"),
            cwd=alone,
            kernel_name="python3",
            progress_bar=False,
        )
    assert info.value.exec_count == 1  # the first code cell
    assert "with utils.py, model.py and workbench/ beside it" in str(info.value)


@pytest.mark.slow
def test_with_the_workbench_beside_them_the_notebook_runs_anywhere(tiny_root, tmp_path):
    """The usage steps: the notebook, utils.py, model.py and workbench/ in a folder of their own."""
    import papermill

    folder = copy_project(tmp_path / "mine", "S5.ipynb", "utils.py", "model.py", "workbench")
    values = smoke_parameters(tiny_root, "outputs", epochs=1)
    papermill.execute_notebook(
        folder / "S5.ipynb",
        folder / "executed.ipynb",
        parameters=values,
        cwd=folder,
        kernel_name="python3",
        progress_bar=False,
    )
    assert only_run(folder / "outputs")["metrics"]["epochs_done"] == 1


def test_committed_notebook_is_clean_for_jupyterlab():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["metadata"]["kernelspec"] == {
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
        "name": "python3",
    }
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            assert not [o for o in c["outputs"] if o.get("name") == "stderr"], c["id"]
    assert [c["id"] for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])] == [
        "parameters"
    ]


@pytest.mark.slow
def test_one_real_epoch_reaches_97_percent(real_data, tmp_path):
    """A broken pipeline (bad labels, normalisation or evaluation) cannot reach this."""
    run_notebook(
        tmp_path, dict(DATA_DIR=str(real_data), OUTPUT_DIR=str(tmp_path / "out"), EPOCHS=1)
    )
    assert only_run(tmp_path / "out")["metrics"]["history"]["test_acc"][0] >= 97.0


class Session:
    """One kernel running the prepared notebook, its cells run by id in any order, as users do."""

    def __init__(self, nb, client):
        self.nb, self.client = nb, client

    def run(self, cell_id):
        c = cell(self.nb, cell_id)
        c.outputs = []
        self.client.execute_cell(c, self.nb.cells.index(c))
        return c

    def code(self, source):
        """Run `source` in the kernel as a cell of its own; return what it printed."""
        import nbformat

        c = nbformat.v4.new_code_cell(source)
        self.nb.cells.append(c)
        try:
            self.client.execute_cell(c, len(self.nb.cells) - 1)
        finally:
            self.nb.cells.pop()
        assert not errors(c), errors(c)
        return text(c)


@pytest.mark.slow
def test_any_order_users_run_the_cells_in_stays_right(tiny_root, tmp_path):
    from nbclient import NotebookClient

    out = tmp_path / "out"
    nb = prepared(tmp_path, smoke_parameters(tiny_root, out, epochs=1))
    client = NotebookClient(
        nb, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(REPO)}}
    )
    code_ids = [c.id for c in nb.cells if c.cell_type == "code"]
    with client.setup_kernel():
        s = Session(nb, client)
        for _ in range(2):  # Run All, twice
            assert not [e for cid in code_ids for e in errors(s.run(cid))]

        # The model cell again (fresh weights), then the training cell: the new model trains.
        s.run("model")
        s.code("initial = {k: v.detach().clone() for k, v in model.named_parameters()}")
        assert not errors(s.run("training"))
        moved = "print(all(not torch.equal(initial[k], v) for k, v in model.named_parameters()))"
        assert s.code(moved) == "True\n"

        # A parameter changed and its cell run again, then the training cell: recorded as used.
        s.code("EPOCHS, LEARNING_RATE = 2, 0.05")
        assert not errors(s.run("training"))
        newest = runs.list_runs(out)[-1]
        assert (newest["parameters"]["EPOCHS"], newest["parameters"]["LEARNING_RATE"]) == (2, 0.05)
        assert "_ep2_" in newest["name"] and newest["metrics"]["epochs_done"] == 2

        # BATCH_SIZE changed without the data cell: refused, naming it; after it: trains with it.
        s.code("BATCH_SIZE = 16")
        [error] = errors(s.run("training"))
        assert error.ename == "StaleCellError" and "Run the data cell again" in error.evalue
        s.run("data")
        assert not errors(s.run("training"))
        assert runs.list_runs(out)[-1]["parameters"]["BATCH_SIZE"] == 16

        # The cells below training before any training of the model: refused, saying what to run.
        s.run("model")
        for cid in ("curves", "confusion", "per-digit", "final-metrics"):
            [error] = errors(s.run(cid))
            assert error.ename == "StaleCellError" and "run the training cell" in error.evalue

        # Stopped in epoch 1, then the cells below: the folder holds params.json and resume.pt.
        s.code(fault_after(0, "raise KeyboardInterrupt"))
        training = s.run("training")
        assert "Interrupted: the 0 finished epochs" in text(training)
        [error] = errors(s.run("curves"))
        assert "run the training cell" in error.evalue
        stopped = runs.list_runs(out)[-1]
        assert sorted(p.name for p in stopped["path"].iterdir()) == ["params.json", "resume.pt"]
