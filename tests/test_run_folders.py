"""Run folders that disagree, break or are damaged, and parameters that would fail later."""

import json
import os
import re
import shutil

import pytest
import torch

import parameters
import runs
from conftest import fake_run
from model import MNISTNet


def test_an_unknown_parameter_name_is_refused_with_the_closest_known_one(params):
    with pytest.raises(ValueError, match=r"^EPOCH: did you mean EPOCHS\? EPOCH is not a parameter"):
        parameters.check_parameters({**params, "EPOCH": 3})


def test_a_parameter_that_replaces_an_imported_module_is_refused(params):
    with pytest.raises(ValueError, match="runs = 5 replaces what the notebook imports as runs"):
        parameters.check_parameters({**params, "runs": 5})


def test_a_batch_too_large_for_the_memory_is_refused_before_anything_runs(params, monkeypatch):
    monkeypatch.setattr(parameters, "available_bytes", lambda device: 2**30)
    parameters.check_parameters({**params, "BATCH_SIZE": 128})
    with pytest.raises(ValueError, match=r"BATCH_SIZE = 4096 .* needs about [\d.]+ GiB to train"):
        parameters.check_parameters({**params, "BATCH_SIZE": 4096})
    # A smoke run has 256 images, so its batches never hold more.
    parameters.check_parameters({**params, "BATCH_SIZE": 4096, "SMOKE": True})


def test_the_memory_estimate_grows_with_batch_and_widths():
    small = parameters.training_bytes(128, (16, 32, 64, 128))
    assert 10 * 2**20 < small < 200 * 2**20  # tens of MB for the default batch
    assert parameters.training_bytes(256, (16, 32, 64, 128)) > 1.9 * small
    assert parameters.training_bytes(128, (32, 64, 128, 256)) > 1.9 * small


def test_a_home_folder_path_is_expanded(params, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    checked = parameters.check_parameters({**params, "OUTPUT_DIR": "~/runs"})
    assert checked["OUTPUT_DIR"] == str(tmp_path / "runs") and (tmp_path / "runs").is_dir()


def test_a_read_only_weights_file_stops_the_run_and_the_files_still_agree(params):
    model = MNISTNet(params["CHANNELS"])
    run_dir = fake_run(params, model, [90.0])
    (run_dir / runs.WEIGHTS_FILE).chmod(0o444)
    history = runs.read_run(run_dir)["metrics"]["history"]
    history["test_acc"].append(95.0)
    with torch.no_grad():
        model.fc.bias.add_(1)
    with pytest.raises(OSError, match=f"Epoch 2 could not be saved in {re.escape(str(run_dir))}"):
        runs.save_epoch(run_dir, history, model, 12)
    assert runs.read_run(run_dir)["metrics"]["epochs_done"] == 1
    runs.load_model(run_dir)  # epoch 1's weights, which metrics.json describes


def test_weights_that_do_not_belong_to_the_metrics_are_refused_and_skipped(params):
    older = fake_run(params, MNISTNet(params["CHANNELS"]), [99.0])
    newer = fake_run(params, MNISTNet(params["CHANNELS"]), [98.0])
    # A stop between two saves: weights that are not the ones the metrics describe.
    torch.save(MNISTNet(params["CHANNELS"]).state_dict(), newer / runs.WEIGHTS_FILE)
    with pytest.raises(runs.RunFolderError, match="is not the weights file .* was saved with"):
        runs.load_model(newer)
    with pytest.warns(UserWarning, match="Skipped: .*is not the weights file"):
        assert runs.latest_run(params["OUTPUT_DIR"]) == older


def test_a_run_folder_removed_while_training_is_not_recreated(params):
    model = MNISTNet(params["CHANNELS"])
    run_dir = fake_run(params, model, [90.0])
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()
    history = {key: [1.0, 1.0] for key in runs.METRIC_KEYS}
    with pytest.raises(FileNotFoundError, match="moved or deleted while training"):
        runs.save_epoch(run_dir, history, model, 12)
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("metrics.json", b""),
        ("metrics.json", b'{"epochs_done": 2, "hist'),
        ("metrics.json", bytes(range(256))),
        ("metrics.json", b'{"epochs_done": 1, "epochs_planned": 2}'),
        ("params.json", b"[1, 2]"),
        ("params.json", b'{"name": "x", "started": "not a date", "parameters": {}, '
                        b'"parameter_count": 1}'),
    ],
    ids=["empty", "truncated", "binary", "missing-key", "not-a-dict", "bad-date"],
)  # fmt: skip
def test_a_damaged_run_folder_is_named_and_skipped_never_fatal(params, name, content):
    good = fake_run(params, MNISTNet(params["CHANNELS"]), [99.0])
    damaged = fake_run(params, MNISTNet(params["CHANNELS"]), [99.5])
    (damaged / name).write_bytes(content)
    with pytest.warns(UserWarning, match=rf"Skipped: {re.escape(str(damaged / name))} "):
        assert [r["path"] for r in runs.list_runs(params["OUTPUT_DIR"])] == [good]
    with pytest.warns(UserWarning):
        assert runs.best_run(params["OUTPUT_DIR"]) == good
    table, _ = runs.compare_runs(params["OUTPUT_DIR"])
    assert f"{damaged.name}  damaged: {damaged / name}" in table


def test_a_params_file_asking_for_a_giant_network_is_refused_before_building_it(params):
    run_dir = fake_run(params, MNISTNet(params["CHANNELS"]), [99.0])
    info = json.loads((run_dir / runs.PARAMS_FILE).read_text())
    info["parameters"]["CHANNELS"] = [4096, 4096, 4096, 4096]
    (run_dir / runs.PARAMS_FILE).write_text(json.dumps(info))
    with pytest.raises(runs.RunFolderError, match="CHANNELS = \\[4096, 4096, 4096, 4096\\]"):
        runs.load_model(run_dir)


def test_old_run_folders_without_a_weights_digest_still_load(params):
    model = MNISTNet(params["CHANNELS"]).eval()
    run_dir = fake_run(params, model, [99.0])
    metrics = json.loads((run_dir / runs.METRICS_FILE).read_text())
    del metrics["weights_sha256"]
    (run_dir / runs.METRICS_FILE).write_text(json.dumps(metrics))
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(runs.load_model(run_dir)(x), model(x))
    assert os.access(run_dir / runs.WEIGHTS_FILE, os.R_OK)


def test_a_copied_run_folder_is_listed_by_its_own_name(params, model):
    run_dir = fake_run(params, model, [98.0])
    copy = run_dir.with_name(run_dir.name + "-copy")
    shutil.copytree(run_dir, copy)
    assert [r["name"] for r in runs.list_runs(params["OUTPUT_DIR"])] == [run_dir.name, copy.name]
