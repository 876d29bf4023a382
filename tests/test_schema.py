"""workbench.schema: the one shape of a run folder's params.json and metrics.json, checked."""

import copy
import json
import math
import re
from pathlib import Path

import pytest

from fakes import default_model, fake_run
from model import MNISTNet, count_parameters
from workbench import folders, parameters, runs, schema

PATH = Path("outputs") / "run" / "file.json"


@pytest.fixture(scope="module")
def written(notebook_defaults, tmp_path_factory):
    """(params.json, metrics.json) as the notebook writes them after two epochs: written once for
    the module, since saving a network takes longer than most tests here, and never changed (each
    test changes a copy)."""
    params = {**notebook_defaults, "OUTPUT_DIR": str(tmp_path_factory.mktemp("outputs"))}
    run_dir = fake_run(params, default_model(), [97.0, 98.5])
    return tuple(
        json.loads((run_dir / name).read_text())
        for name in (folders.PARAMS_FILE, folders.METRICS_FILE)
    )


def refused(check, data):
    """The message `check` refuses `data` with (it names the file and calls the folder damaged)."""
    with pytest.raises(schema.RunFolderError) as info:
        check(data, PATH)
    message = str(info.value)
    assert message.startswith(f"{PATH} ") and message.endswith(
        ": the run folder is damaged. Move it out of the output folder, or delete it."
    )
    return message


def changed(data, change):
    data = copy.deepcopy(data)
    change(data)
    return data


def test_what_the_notebook_writes_passes(written):
    info, metrics = written
    schema.check_params(info, PATH)
    schema.check_metrics(metrics, PATH)
    schema.check_metrics({**metrics, "final_test_acc": 99.0, "tta_shift": 1}, PATH)


@pytest.mark.parametrize("data", [[], "text", None, 3])
def test_a_file_that_holds_no_object_is_damaged(data):
    for check in (schema.check_params, schema.check_metrics):
        assert f"holds a {type(data).__name__}, not an object" in refused(check, data)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("name", 5, "a string"),
        ("started", "2024-01-01T10:00:00", "a date with its time zone"),  # runs sort by it
        ("started", "yesterday", "a date with its time zone"),
        ("parameters", [], "an object"),
        ("parameter_count", 0, "a positive int"),
        ("parameter_count", True, "a positive int"),
        ("continued_from", 3, "null or a run's name"),
        ("run_id", "ABCDEF0123456789", "a run id (16 hex digits)"),
        ("run_id", "0123", "a run id (16 hex digits)"),
        ("speed", {"precision": "fp16", "compiled": False, "why": ""}, "how the run trains"),
        ("speed", {"precision": "fp32", "compiled": "no", "why": ""}, "how the run trains"),
    ],
)
def test_each_field_of_params_json_is_checked_naming_the_value(written, field, value, expected):
    info = changed(written[0], lambda i: i.update({field: value}))
    assert f"gives {field} = {value!r}, not {expected}" in refused(schema.check_params, info)


@pytest.mark.parametrize("field", ["name", "started", "run_id", "speed", "parameters"])
def test_a_missing_field_of_params_json_is_named(written, field):
    info = changed(written[0], lambda i: i.pop(field))
    assert f"lacks {field}" in refused(schema.check_params, info)


@pytest.mark.parametrize("name", parameters.PARAMETER_RULES)
def test_a_run_recorded_without_a_parameter_is_damaged(written, name):
    """A run from before the parameter existed: its value is unknown, so it cannot be compared."""
    info = changed(written[0], lambda i: i["parameters"].pop(name))
    assert f"records no {name}:" in refused(schema.check_params, info)


@pytest.mark.parametrize(
    ("name", "value"), [("EPOCHS", 0), ("CHANNELS", [8, 12, 16]), ("SMOKE", "no"), ("SEED", -1)]
)
def test_a_recorded_parameter_the_check_cell_would_refuse_is_named_with_the_rule(
    written, name, value
):
    info = changed(written[0], lambda i: i["parameters"].update({name: value}))
    allowed = parameters.PARAMETER_RULES[name][1]
    assert f"gives {name} = {value!r}, but {name} is {allowed}" in refused(
        schema.check_params, info
    )


def test_resumed_must_be_a_list(written):
    info = changed(written[0], lambda i: i.update(resumed={"at": "now"}))
    assert "gives resumed = {'at': 'now'}, not a list" in refused(schema.check_params, info)
    schema.check_params(changed(written[0], lambda i: i.update(resumed=[])), PATH)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("epochs_done", 0, "a positive int"),
        ("epochs_planned", 2.0, "a positive int"),
        ("weights_sha256", "0" * 63, "a SHA-256 digest"),
        ("weights_sha256", "G" * 64, "a SHA-256 digest"),
        ("history", [], "an object"),
        ("run_id", None, "a run id (16 hex digits)"),
        ("final_test_acc", 100.5, "a percentage"),
        ("final_test_acc", math.nan, "a percentage"),
        ("tta_shift", -1, "an int >= 0"),
    ],
)
def test_each_field_of_metrics_json_is_checked_naming_the_value(written, field, value, expected):
    metrics = changed(written[1], lambda m: m.update({field: value}))
    message = refused(schema.check_metrics, metrics)
    assert f"gives {field} = {value!r}, not {expected}" in message


@pytest.mark.parametrize("key", schema.METRIC_KEYS)
def test_every_metric_holds_one_finite_figure_per_finished_epoch(written, key):
    metrics = written[1]
    epochs = metrics["epochs_done"]
    for values in ([1.0] * (epochs - 1), [1.0] * (epochs - 1) + [math.inf], None):
        bad = changed(metrics, lambda m, v=values: m["history"].update({key: v}))
        expected = f"gives history.{key} = {values!r}, not {epochs} finite numbers (epochs_done)"
        assert expected in refused(schema.check_metrics, bad)


@pytest.mark.parametrize("key", ["test_acc", "train_acc"])
@pytest.mark.parametrize("accuracy", [-0.5, 100.5])
def test_an_accuracy_outside_0_to_100_percent_is_damage(written, key, accuracy):
    metrics = changed(written[1], lambda m: m["history"][key].__setitem__(-1, accuracy))
    assert "gives an accuracy outside 0-100%" in refused(schema.check_metrics, metrics)


def test_the_damage_message_says_what_to_do():
    err = schema.damaged(PATH, "is odd")
    assert isinstance(err, ValueError)
    assert re.fullmatch(rf"{re.escape(str(PATH))} is odd: the run folder is damaged\. .*", str(err))


def test_channels_edited_away_from_the_parameter_count_are_damage(written, params, model):
    """A params.json whose CHANNELS was edited by hand: load_model said the weights came from "a
    different architecture" and to build it, while compare_runs and best_run took the run."""
    info = changed(written[0], lambda i: i["parameters"].update(CHANNELS=[8, 8, 8, 8]))
    size = schema.network_size([8, 8, 8, 8])
    assert size == count_parameters(MNISTNet(channels=(8, 8, 8, 8)))
    assert (
        f"gives parameter_count = {count_parameters(model):,}, but CHANNELS = [8, 8, 8, 8] makes "
        f"a network of {size:,} parameters: one of the two was edited"
    ) in refused(schema.check_params, info)
    run_dir = fake_run(params, model, [98.0])
    (run_dir / folders.PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(schema.RunFolderError, match="one of the two was edited"):
        runs.load_model(run_dir)
    with pytest.warns(UserWarning, match="one of the two was edited"):
        assert run_dir not in [r["path"] for r in runs.list_runs(params["OUTPUT_DIR"])]
