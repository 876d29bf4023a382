"""What a careless or hostile user met across modules (docs/tests.md, "Hostile pass"): a run folder
edited by hand and resumed, a read-only run in a folder with spaces, another utils.py first on
sys.path. The findings within one module are tested in that module's test file."""

import json
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest

import workbench
from conftest import REPO, mount_read_only
from notebook_cells import TRAINING_CELLS, run_cells
from workbench import checkpoints, folders, plots

SETTINGS = dict(EPOCHS=2, BATCH_SIZE=32, SMOKE=True, COMPILE=False, PRECISION="fp32")


@pytest.fixture
def finished(tiny_root, tmp_path, monkeypatch):
    """(settings, the folder of a finished two-epoch smoke run on the tiny data)."""
    monkeypatch.setattr(plots, "plot_samples", lambda images, labels: None)
    settings = dict(DATA_DIR=str(tiny_root), OUTPUT_DIR=str(tmp_path / "outputs"), **SETTINGS)
    return settings, run_cells(TRAINING_CELLS, **settings)["run"].dir


def test_epochs_raised_by_hand_in_params_json_is_called_an_edit(finished):
    """The run's own resume.pt was called "another run's", and the fix offered was to put back
    the run's own resume.pt, which it was."""
    settings, run_dir = finished
    path = run_dir / folders.PARAMS_FILE
    info = json.loads(path.read_text())
    info["parameters"]["EPOCHS"] = 3
    path.write_text(json.dumps(info))
    with pytest.raises(checkpoints.CheckpointError) as raised:
        run_cells(TRAINING_CELLS, **{**settings, "EPOCHS": 3}, RESUME=str(run_dir))
    message = str(raised.value)
    assert message.startswith(
        f"{path} was edited after the run started: EPOCHS is 3 there and 2 in resume.pt. "
    )
    assert "a larger EPOCHS does not extend it" in message and "another run" not in message
    assert folders.read_run(run_dir)["metrics"]["epochs_done"] == 2  # nothing trained


def test_the_copy_of_a_read_only_run_to_make_is_quoted_for_a_shell(finished, monkeypatch):
    """`cp -r` was given folders with spaces unquoted: pasted into a shell, it failed."""
    settings, run_dir = finished
    spaced = Path(settings["OUTPUT_DIR"]).parent / "my runs ü"
    run_dir = run_dir.rename(spaced)
    mount_read_only(monkeypatch, run_dir)
    output_dir = Path(settings["OUTPUT_DIR"]).parent / "my outputs"
    with pytest.raises(ValueError) as info:
        run_cells(TRAINING_CELLS[:3], **{**settings, "OUTPUT_DIR": str(output_dir)},
                  RESUME=str(run_dir))  # fmt: skip
    command = re.search(r"\((cp -r .*?)\) and set RESUME", str(info.value)).group(1)
    assert shlex.split(command) == ["cp", "-r", str(run_dir), str(output_dir / run_dir.name)]


def test_another_utils_first_on_sys_path_is_named(monkeypatch):
    """A notebook of one's own with a utils.py of its own, the project appended to sys.path."""
    assert workbench._imported_from_elsewhere() == []
    other = types.ModuleType("utils")
    other.__file__ = "/somewhere/else/utils.py"
    monkeypatch.setitem(sys.modules, "utils", other)
    assert workbench._imported_from_elsewhere() == ["utils from /somewhere/else/utils.py"]


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_importing_the_workbench_behind_another_utils_says_what_to_do(tmp_path):
    """It failed with "cannot import name 'MNIST_MEAN' from 'utils'", naming neither the cause
    nor the fix."""
    (tmp_path / "utils.py").write_text("def helper():\n    return 1\n")
    code = f"import sys; sys.path.append({str(REPO)!r}); from workbench import runs"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"ImportError: workbench needs the model.py and utils.py of {REPO}, but Python imported "
        f"utils from {tmp_path / 'utils.py'}: a file of that name comes first on sys.path. Put "
        f"the project first (sys.path.insert(0, {str(REPO)!r})) before importing either, or "
        "rename yours."
    )
