"""The parameters cell's checks: every value checked, with the error naming it and the fix."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO
from model import MAX_WIDTH, stage_widths
from notebook_cells import NOTEBOOK, notebook_source
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
        ("CHANNELS", ((8,) * 9, 12, 16, 20), "a tuple of up to 8 widths"),
        ("CHANNELS", (8, 12, 16, MAX_WIDTH + 1), f"a width (an int from 1 to {MAX_WIDTH})"),
        ("WARMUP", 0, "a number in (0, 1)"),
        ("EMA_DECAY", -0.1, "a number in [0, 1)"),
        ("CHANNELS", (8, 12, 16), "four entries, one per resolution"),
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
        ("OUTPUT_DIR", " ", "a folder path"),  # made a folder named by a space
        ("OUTPUT_DIR", "out\0put", "a folder path"),  # was ValueError: embedded null byte
        ("DATA_DIR", "\t", "None or a folder path"),
        ("CHANNELS", (np.int64(8), 12, 16, 20), "entry 1, np.int64(8), is not a width"),
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


@pytest.mark.parametrize("name", ["OUTPUT_DIR", "DATA_DIR", "RESUME"])
def test_a_folder_papermill_read_as_a_number_says_to_pass_it_with_r(params, name):
    """-p OUTPUT_DIR 2026 gives the int 2026: "must be a folder path" alone left no way to pass
    a folder of that name."""
    with pytest.raises(ValueError) as info:
        parameters.check_parameters({**params, name: 2026})
    assert str(info.value).endswith(
        "(papermill's -p reads 2026 as a number: pass a folder name with -r)."
    )


def test_an_upper_case_variable_of_ones_own_is_refused_saying_how_to_keep_it(params):
    with pytest.raises(ValueError) as info:
        parameters.check_parameters({**params, "TOTAL": 5})
    assert str(info.value).startswith(
        "TOTAL: TOTAL is not a parameter of this notebook (an upper-case name is taken for one: "
        "name a variable of yours in lower case, or del TOTAL). The parameters are BATCH_SIZE, "
    )
    assert parameters.check_parameters({**params, "total": 5}) == params


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


@pytest.mark.parametrize(
    ("channels", "problem"),
    [
        ((16, 0, 64, 128), "entry 2, 0, is not a width"),
        ((16, (32, 32.5), 64, 128), "entry 2, (32, 32.5), holds 32.5, which is not a width"),
        ((16, 32, 64, MAX_WIDTH + 1), f"entry 4, {MAX_WIDTH + 1}, is not a width"),
        ((16, (), 64, 128), "entry 2 is empty"),
        ((16, 32, (64,) * 9, 128), "entry 3 stacks 9 blocks, more than 8"),
        ((16, 32, 64), "it has 3 entries, not four"),
        ("16, 32, 64, 128", "a str is not a tuple of four entries"),
    ],
)
def test_a_bad_channels_value_names_the_entry_at_fault(params, channels, problem):
    with pytest.raises(ValueError) as info:
        parameters.check_parameters({**params, "CHANNELS": channels})
    assert str(info.value).startswith(
        f"CHANNELS = {channels!r} ({type(channels).__name__}) is not allowed: {problem}; "
        "CHANNELS must be four entries"
    )


def test_the_widest_block_allowed_is_the_one_mnistnet_builds(params):
    assert parameters.MAX_WIDTH is MAX_WIDTH  # one bound, model.py's
    widest = (8, 8, 8, MAX_WIDTH)
    stage_widths(widest)  # the model builds it: so the notebook takes it, memory allowing
    parameters.check_parameters({**params, "CHANNELS": widest})
    # Both messages describe a width in the same words.
    with pytest.raises(ValueError) as model_says:
        stage_widths((8, 8, 8, 0))
    with pytest.raises(ValueError) as notebook_says:
        parameters.check_value("CHANNELS", (8, 8, 8, 0))
    width = f"a width (an int from 1 to {MAX_WIDTH}) or a tuple of"
    assert width in str(model_says.value) and width in str(notebook_says.value)


def papermill_ran(*assignments):
    """IPython's record of the cells run (`In`) in a kernel papermill ran, with its injected
    parameters cell, as in `papermill -p lr 0.01`."""
    injected = parameters.PAPERMILL_CELL + "\n".join(assignments)
    return ["", notebook_source("imports"), notebook_source("parameters"), injected]


@pytest.mark.parametrize("name", ["lr", "epochs_", "batchsize", "output"])
def test_a_lower_case_name_papermill_passed_is_refused(params, name):
    namespace = {**params, name: 0.01, "In": papermill_ran("EPOCHS = 3", f"{name} = 0.01")}
    with pytest.raises(
        ValueError, match=f"^{name}: .*papermill passed {name}, but {name} is not a"
    ):
        parameters.check_parameters(namespace)


def test_papermills_own_parameters_and_the_notebooks_variables_pass(params):
    """A lower-case name not injected by papermill is one of the notebook's variables (the
    training cell's `lr`), or the user's: the check cell may run again after them."""
    namespace = {**params, "lr": 0.05, "In": papermill_ran("EPOCHS = 3", "SEED = 2")}
    assert parameters.check_parameters(namespace) == params
    assert parameters.injected_names(namespace) == ["EPOCHS", "SEED"]
    assert parameters.injected_names({"In": ["# Parameters\nlr = (", "x = 1"]}) == []


def test_a_guess_is_offered_for_a_papermill_name_close_to_a_parameter(params):
    namespace = {**params, "seeds": 2, "In": papermill_ran("seeds = 2")}
    with pytest.raises(ValueError, match="^seeds: did you mean SEED\\? papermill passed seeds"):
        parameters.check_parameters(namespace)


@pytest.mark.slow
def test_papermill_with_an_unknown_lower_case_name_stops_at_the_check_cell(tiny_root, tmp_path):
    import papermill

    # A smoke run's values besides, should the check let lr through: a short run, then.
    passed = dict(lr=0.01, DATA_DIR=str(tiny_root), OUTPUT_DIR=str(tmp_path / "outputs"),
                  SMOKE=True, EPOCHS=1, COMPILE=False, PRECISION="fp32")  # fmt: skip
    with pytest.raises(papermill.PapermillExecutionError) as info:
        papermill.execute_notebook(
            NOTEBOOK, tmp_path / "out.ipynb", parameters=passed, cwd=REPO,
            kernel_name="python3", progress_bar=False,
        )  # fmt: skip
    assert "lr: papermill passed lr, but lr is not a parameter" in str(info.value)
    assert not list((tmp_path / "outputs").glob("*/params.json"))
