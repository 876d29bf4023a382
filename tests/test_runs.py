"""Run folders: checked parameters, one folder per run, saved epochs, finding and comparing runs."""

import json
import os
import sys

import pytest
import torch

import parameters
import runs
from conftest import fake_run
from model import MNISTNet, count_parameters


def test_the_rules_cover_every_parameter_of_the_notebook(notebook_defaults, params):
    assert list(notebook_defaults) == list(parameters.PARAMETER_RULES)
    assert parameters.check_parameters(params) == params


def test_good_parameters_pass_and_create_the_output_dir(params):
    checked = parameters.check_parameters({**params, "note": "an unrelated global"})
    assert checked == params and "note" not in checked
    assert runs.Path(params["OUTPUT_DIR"]).is_dir()


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
        ("COMPILE", 1, "True or False"),
        ("LABEL_SMOOTHING", 1.0, "a number in [0, 1)"),
        ("DATA_DIR", 3, "None or a folder path"),
        ("OUTPUT_DIR", "", "a folder path"),
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
    with pytest.raises(ValueError, match="with no-such-c\\+\\+, which is not installed.*g\\+\\+"):
        parameters.check_parameters({**params, "COMPILE": True})
    parameters.check_parameters({**params, "COMPILE": False})
    parameters.check_parameters({**params, "COMPILE": True}, device="mps")  # no C++ for a GPU
    monkeypatch.setenv("CXX", '"no-such-c++')  # unbalanced quotes: still looked for, and named
    with pytest.raises(ValueError, match='with "no-such-c\\+\\+, which is not installed'):
        parameters.check_parameters({**params, "COMPILE": True})
    # A command with arguments, as Inductor accepts it ("ccache g++").
    monkeypatch.setenv("CXX", f"{sys.executable} -c pass")
    parameters.check_parameters({**params, "COMPILE": True})


def test_parameters_added_later_fill_in_after_the_recorded_ones_in_their_order():
    recorded = {"BATCH_SIZE": 64, "COMPILE": True, "EPOCHS": 3}
    filled = parameters.with_added_later(recorded)
    assert list(filled) == ["BATCH_SIZE", "COMPILE", "EPOCHS", "LABEL_SMOOTHING"]
    assert filled["COMPILE"] is True and filled["LABEL_SMOOTHING"] == 0.0


def test_deeper_channels_from_papermill_lists_are_read_as_tuples(params):
    # -y 'CHANNELS: [[8, 8], 12, 16, 16]' puts lists into the parameters cell.
    checked = parameters.check_parameters({**params, "CHANNELS": [[8, 8], 12, 16, 16]})
    assert checked["CHANNELS"] == ((8, 8), 12, 16, 16)


def test_a_deeper_run_is_named_by_its_widths_and_loads_back(params):
    channels = ((8, 8), (12, 12), 16, 12)
    model = MNISTNet(channels=channels, dropout=0.0)
    run_dir = fake_run(params, model, [98.0], CHANNELS=channels, DROPOUT=0.0)
    assert f"_c8x8-12x12-16-12_ep{params['EPOCHS']}_seed{params['SEED']}" in run_dir.name
    loaded = runs.load_model(run_dir)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x))


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


def test_every_run_gets_a_new_folder_even_within_a_second(params):
    model = MNISTNet(params["CHANNELS"])
    folders = [runs.start_run(params["OUTPUT_DIR"], params, model, "cpu") for _ in range(3)]
    assert len({folder.name for folder in folders}) == 3
    assert all((folder / "params.json").is_file() for folder in folders)
    info = json.loads((folders[0] / "params.json").read_text())
    assert info["parameters"]["CHANNELS"] == json.loads(json.dumps(params["CHANNELS"]))
    assert info["parameter_count"] == count_parameters(model)
    assert info["threads"] == torch.get_num_threads()


def test_a_run_with_no_finished_epoch_has_no_result_files(params):
    run_dir = fake_run(params, MNISTNet(params["CHANNELS"]), [])
    assert sorted(p.name for p in run_dir.iterdir()) == ["params.json"]
    assert runs.read_run(run_dir)["metrics"] is None
    with pytest.raises(FileNotFoundError, match="No run with a finished epoch"):
        runs.latest_run(params["OUTPUT_DIR"])


def test_weights_with_nan_stop_the_run_and_keep_the_last_good_epoch(params):
    model = MNISTNet(params["CHANNELS"])
    run_dir = fake_run(params, model, [90.0])
    good = (run_dir / runs.WEIGHTS_FILE).read_bytes()
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    history = runs.read_run(run_dir)["metrics"]["history"]
    history["test_acc"].append(10.0)
    with pytest.raises(FloatingPointError, match="NaN or inf after epoch 2, so they were not"):
        runs.save_epoch(run_dir, history, model, 12)
    assert (run_dir / runs.WEIGHTS_FILE).read_bytes() == good
    assert runs.read_run(run_dir)["metrics"]["epochs_done"] == 1


def test_latest_and_best_run_and_their_models(params):
    torch.manual_seed(0)
    small = MNISTNet(channels=(8, 12, 16, 20))
    best = fake_run(params, small, [98.0, 99.5], CHANNELS=(8, 12, 16, 20), SEED=2)
    latest = fake_run(params, MNISTNet(params["CHANNELS"]), [99.0, 99.1])
    fake_run(params, MNISTNet(params["CHANNELS"]), [])  # started, nothing finished: never picked
    assert runs.latest_run(params["OUTPUT_DIR"]) == latest
    assert runs.best_run(params["OUTPUT_DIR"]) == best
    loaded = runs.load_model(best)
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), small.eval()(x))


def test_compare_runs_tables_what_differs_and_plots_every_curve(params):
    fake_run(params, MNISTNet(params["CHANNELS"]), [98.0, 99.5, 99.4], SEED=1)
    fake_run(params, MNISTNet(params["CHANNELS"]), [98.5, 99.2], SEED=2, EPOCHS=3)
    fake_run(params, MNISTNet(params["CHANNELS"]), [], SEED=3)
    table, fig = runs.compare_runs(params["OUTPUT_DIR"])
    header, rule, *rows = table.splitlines()
    assert header.split() == [
        "run",
        "EPOCHS",
        "SEED",
        "parameters",
        "epochs",
        "final",
        "%",
        "best",
        "%",
        "time",
    ]
    epochs, count = params["EPOCHS"], f"{count_parameters(MNISTNet(params['CHANNELS'])):,}"
    assert rows[0].split()[1:] == [
        str(epochs),
        "1",
        count,
        f"3/{epochs}",
        "99.40",
        "99.50",
        "3",
        "s",
    ]
    assert rows[1].split()[1:6] == ["3", "2", count, "2/3", "99.20"]
    assert "0 (none finished)" in rows[2]
    assert len(fig.axes[0].lines) == 2


def test_compare_runs_writes_deeper_channels_as_the_folder_names_do(params):
    fake_run(params, MNISTNet(params["CHANNELS"]), [99.0])
    fake_run(
        params, MNISTNet(((8, 8), (12, 12), 16, 12)), [98.0], CHANNELS=((8, 8), (12, 12), 16, 12)
    )
    table, fig = runs.compare_runs(params["OUTPUT_DIR"])
    assert [row.split()[1] for row in table.splitlines()[2:]] == [
        "16-32x32-64-128",
        "8x8-12x12-16-12",
    ]
    assert fig.axes[0].get_legend_handles_labels()[1][1].endswith("CHANNELS=8x8-12x12-16-12")


def test_compare_runs_on_an_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the training cell first"):
        runs.compare_runs(tmp_path)


def test_saved_files_follow_the_umask(params):
    old = os.umask(0o022)
    try:
        run_dir = fake_run(params, MNISTNet(params["CHANNELS"]), [99.0])
    finally:
        os.umask(old)
    for name in ("params.json", "metrics.json", "mnist_net.pt"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name
