"""The parameters cell's checks: every value checked, with the error naming it and the fix."""

import sys
from pathlib import Path

import pytest
import torch

from notebook_cells import notebook_source
from workbench import parameters


def test_the_rules_cover_every_parameter_of_the_notebook(notebook_defaults, params):
    assert set(notebook_defaults) == set(parameters.PARAMETER_RULES)
    assert parameters.check_parameters(params) == params


def test_the_rules_are_in_the_parameters_cells_order(notebook_defaults):
    # Errors list the parameters in this order ("The parameters are ..."), as the cell has them.
    assert list(parameters.PARAMETER_RULES) == list(notebook_defaults)


def test_good_parameters_pass_and_create_the_output_dir(params):
    assert not Path(params["OUTPUT_DIR"]).exists()
    checked = parameters.check_parameters({**params, "note": "an unrelated global"})
    assert checked == params and "note" not in checked
    assert Path(params["OUTPUT_DIR"]).is_dir()


@pytest.mark.parametrize(
    "name, value, allowed",
    [
        ("SMOKE", "False", "True or False"),  # papermill -r SMOKE False
        ("SMOKE", 0, "True or False"),
        ("EPOCHS", "1", "a positive int"),  # papermill -r EPOCHS 1
        ("EPOCHS", 0, "a positive int"),
        ("EPOCHS", 2.5, "a positive int"),
        ("EPOCHS", True, "a positive int"),
        ("SEED", "abc", "an int"),
        ("SEED", 1.5, "an int"),
        ("BATCH_SIZE", -4, "a positive int"),
        ("TEST_BATCH_SIZE", None, "a positive int"),
        ("LEARNING_RATE", 0, "a number in (0, 10]"),
        ("LEARNING_RATE", 1e308, "a number in (0, 10]"),
        ("LEARNING_RATE", float("nan"), "a number in (0, 10]"),
        ("MOMENTUM", 1.0, "a number in (0, 1)"),
        ("MOMENTUM", 0, "a number in (0, 1)"),  # SGD refuses Nesterov without momentum
        ("WEIGHT_DECAY", 1e308, "a number in [0, 1)"),
        ("SEED", 2**64, "an int in [0, 2**63 - 1]"),
        ("SEED", -1, "an int in [0, 2**63 - 1]"),
        ("CHANNELS", ((8,) * 9, 12, 16, 20), "at most 8 blocks per size"),
        ("CHANNELS", (8, 12, 16, 4096), "widths up to 1024"),
        ("WARMUP", 0, "a number in (0, 1)"),
        ("EMA_DECAY", -0.1, "a number in [0, 1)"),
        ("CHANNELS", (8, 12, 16), "four entries, each a positive int or a tuple"),
        ("CHANNELS", "(8, 12, 16, 20)", "four entries"),
        ("CHANNELS", ((8, 0), 12, 16, 20), "four entries"),
        ("CHANNELS", ((), 12, 16, 20), "four entries"),
        ("CHANNELS", (8, 12.0, 16, 20), "four entries"),
        ("DROPOUT", 1, "a number in [0, 1)"),
        ("ROTATION", -5, "degrees in [0, 180]"),
        ("SHIFT", 0.8, "[0, 0.5]"),
        ("ZOOM", 1.5, "a number in [0, 1)"),
        ("TTA_SHIFT", 0.5, "an int in [0, 4]"),
        ("NUM_WORKERS", -1, "an int >= 0"),
        ("COMPILE", 1, 'True, False or "auto"'),
        ("COMPILE", "yes", 'True, False or "auto"'),
        ("PRECISION", "bfloat16", '"fp32", "bf16" or "auto"'),
        ("PRECISION", None, '"fp32", "bf16" or "auto"'),
        ("LABEL_SMOOTHING", 1.0, "a number in [0, 1)"),
        ("DATA_DIR", 3, "None or a folder path"),
        ("OUTPUT_DIR", "", "a folder path"),
        ("RESUME", 5, "None or the folder of a run to go on with"),
    ],
)
def test_a_bad_value_is_named_with_what_is_allowed(params, name, value, allowed):
    with pytest.raises(ValueError) as info:
        parameters.check_parameters({**params, name: value})
    message = str(info.value)
    assert message.startswith(f"{name} = {value!r} ({type(value).__name__}) is not allowed")
    assert allowed in message and "\n" not in message
    if isinstance(value, str):
        assert "-p" in message  # how to pass it with papermill


def test_compile_on_a_cpu_without_a_cxx_compiler_says_what_to_install(params, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-c++")
    assert parameters.missing_cpu_compiler() == "no-such-c++"
    with pytest.raises(ValueError, match="with no-such-c\\+\\+, which is not installed.*g\\+\\+"):
        parameters.check_parameters({**params, "COMPILE": True})
    parameters.check_parameters({**params, "COMPILE": False})
    parameters.check_parameters({**params, "COMPILE": "auto"})  # which then does not compile
    parameters.check_parameters({**params, "COMPILE": True}, device="mps")  # no C++ for a GPU
    monkeypatch.setenv("CXX", '"no-such-c++')  # unbalanced quotes: still looked for, and named
    with pytest.raises(ValueError, match='with "no-such-c\\+\\+, which is not installed'):
        parameters.check_parameters({**params, "COMPILE": True})
    # A command with arguments, as Inductor accepts it ("ccache g++").
    monkeypatch.setenv("CXX", f"{sys.executable} -c pass")
    assert parameters.missing_cpu_compiler() is None
    parameters.check_parameters({**params, "COMPILE": True})


def test_deeper_channels_from_papermill_lists_are_read_as_tuples(params):
    # -y 'CHANNELS: [[8, 8], 12, 16, 16]' puts lists into the parameters cell.
    checked = parameters.check_parameters({**params, "CHANNELS": [[8, 8], 12, 16, 16]})
    assert checked["CHANNELS"] == ((8, 8), 12, 16, 16)


def test_a_missing_parameter_is_named(params):
    del params["ZOOM"]
    with pytest.raises(ValueError, match="does not define ZOOM; run it first"):
        parameters.check_parameters(params)


def test_an_output_dir_that_cannot_be_made_is_refused(params, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(
        ValueError, match=r"OUTPUT_DIR = '.*file/out' cannot be written \(NotADirectoryError"
    ):
        parameters.check_parameters({**params, "OUTPUT_DIR": str(tmp_path / "file" / "out")})


def test_an_unknown_parameter_name_is_refused_with_the_closest_known_one(params):
    with pytest.raises(ValueError, match=r"^EPOCH: did you mean EPOCHS\? EPOCH is not a parameter"):
        parameters.check_parameters({**params, "EPOCH": 3})
    with pytest.raises(ValueError, match=r"^QWERTY: QWERTY is not a parameter"):
        parameters.check_parameters({**params, "QWERTY": 3})


def names_the_imports_cell_defines():
    namespace = {}
    exec(notebook_source("imports"), namespace)
    return {name for name in namespace if name != "__builtins__"}


def test_the_names_guarded_are_the_names_the_notebook_imports():
    assert set(parameters.NOTEBOOK_IMPORTS) == names_the_imports_cell_defines()


@pytest.mark.parametrize("name", parameters.NOTEBOOK_IMPORTS)
def test_a_parameter_that_replaces_an_imported_name_is_refused(params, name):
    with pytest.raises(
        ValueError, match=f"^{name} = 5 replaces what the notebook imports as {name}"
    ):
        parameters.check_parameters({**params, name: 5})
    # The imported module, class or function itself is no parameter and passes.
    parameters.check_parameters({**params, name: torch})


def test_a_batch_too_large_for_the_memory_is_refused_before_anything_runs(params, monkeypatch):
    monkeypatch.setattr(parameters, "available_bytes", lambda device: 2**30)
    parameters.check_parameters({**params, "BATCH_SIZE": 128})
    with pytest.raises(ValueError, match=r"BATCH_SIZE = 4096 .* needs about [\d.]+ GiB to train"):
        parameters.check_parameters({**params, "BATCH_SIZE": 4096})
    # A smoke run has SMOKE_IMAGES images, so its batches never hold more.
    parameters.check_parameters({**params, "BATCH_SIZE": 4096, "SMOKE": True})
    # Where the free memory cannot be told, nothing is refused.
    monkeypatch.setattr(parameters, "available_bytes", lambda device: None)
    parameters.check_parameters({**params, "BATCH_SIZE": 4096})


def test_the_memory_estimate_grows_with_batch_and_widths():
    small = parameters.training_bytes(128, (16, 32, 64, 128))
    assert 10 * 2**20 < small < 200 * 2**20  # tens of MB for the default batch
    assert parameters.training_bytes(256, (16, 32, 64, 128)) > 1.9 * small
    assert parameters.training_bytes(128, (32, 64, 128, 256)) > 1.9 * small
    # A batch never holds more images than the split.
    assert parameters.training_bytes(4096, (16, 32, 64, 128), images=128) == small


def test_a_home_folder_path_is_expanded(params, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    checked = parameters.check_parameters({**params, "OUTPUT_DIR": "~/runs"})
    assert checked["OUTPUT_DIR"] == str(tmp_path / "runs") and (tmp_path / "runs").is_dir()
    given = {**params, "DATA_DIR": "~/data", "RESUME": "~/runs/one"}
    assert parameters.normalized(given) == {
        **params,
        "DATA_DIR": str(tmp_path / "data"),
        "RESUME": str(tmp_path / "runs" / "one"),
    }
    assert given["DATA_DIR"] == "~/data"  # the namespace's own values stay as they were


def test_loader_workers_with_the_data_on_an_accelerator_are_refused_before_the_data_cell(params):
    parameters.check_workers({**params, "NUM_WORKERS": 2}, "cpu")
    parameters.check_workers({**params, "NUM_WORKERS": 0}, "meta")
    with pytest.raises(ValueError, match="NUM_WORKERS = 2 needs the data on the CPU"):
        parameters.check_workers({**params, "NUM_WORKERS": 2}, "meta")


@pytest.mark.parametrize("name", ["epochs", "Epochs", "learning_rate"])
def test_a_parameter_name_in_the_wrong_case_is_refused_not_ignored(params, name):
    """papermill's -p epochs 3 defines `epochs`, which the notebook would never read."""
    with pytest.raises(ValueError, match=f"^{name}: did you mean {name.upper()}?"):
        parameters.check_parameters({**params, name: 3})


def test_epochs_are_capped_before_a_run_folder_name_grows_too_long(params):
    parameters.check_parameters({**params, "EPOCHS": parameters.MAX_EPOCHS})
    with pytest.raises(ValueError, match="EPOCHS must be a positive int up to 1,000,000"):
        parameters.check_parameters({**params, "EPOCHS": parameters.MAX_EPOCHS + 1})
