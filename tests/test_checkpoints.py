import json
import os
import signal

import pytest
import torch

import checkpoints
import files
from model import MNISTNet


class RunsCode:
    """Unpickling this makes a folder: proof that loading the file ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_round_trip_gives_the_same_predictions(model, tmp_path):
    path = tmp_path / "w.pt"
    checkpoints.save_weights(model, path)
    torch.manual_seed(1)
    other = MNISTNet().eval()
    x = torch.randn(4, 1, 28, 28)
    assert not torch.equal(other(x), model(x))
    checkpoints.load_weights(other, path)
    assert torch.equal(other(x), model(x))


def test_crash_while_saving_keeps_the_old_file(model, tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    checkpoints.save_weights(model, path)
    good = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_weights(model, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temporary file left


def test_checkpoint_with_pickled_code_is_refused(model, tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"block1.conv.weight": RunsCode(marker)}, path)
    with pytest.raises(checkpoints.CheckpointError, match="refused.*pickled objects or code"):
        checkpoints.load_weights(model, path)
    assert not marker.exists()
    # The file really is dangerous: an unsafe load runs its code.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_other_architecture_names_the_mismatched_keys(model, tmp_path):
    path = tmp_path / "small.pt"
    torch.save(MNISTNet(channels=(8, 16, 32, 64)).state_dict(), path)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_weights(model, path)
    message = str(info.value)
    assert "different architecture" in message
    assert "block1.conv.weight (8, 1, 3, 3) vs (16, 1, 3, 3)" in message


def test_missing_and_unexpected_keys_are_named(model, tmp_path):
    state = model.state_dict()
    state["extra.weight"] = state.pop("fc.bias")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(
        checkpoints.CheckpointError,
        match=r"missing keys \['fc.bias'\], unexpected keys \['extra.weight'\]",
    ):
        checkpoints.load_weights(model, path)


def test_truncated_checkpoint_is_reported(model, tmp_path):
    path = tmp_path / "w.pt"
    checkpoints.save_weights(model, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoints.CheckpointError, match="truncated or corrupt"):
        checkpoints.load_weights(model, path)


def test_save_json_round_trips_and_replaces_the_file_whole(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("an older, longer file that must not show through")
    data = {"test_acc": [98.5, 99.1], "name": "run", "nested": {"epochs_done": 2}}
    files.save_json(data, path)
    assert json.loads(path.read_text()) == data
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]  # no temporary file left


def test_saved_files_follow_the_umask(model, tmp_path):
    old = os.umask(0o027)
    try:
        checkpoints.save_weights(model, tmp_path / "w.pt")
        files.save_json({}, tmp_path / "m.json")
    finally:
        os.umask(old)
    assert (tmp_path / "w.pt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o640


def test_a_read_only_file_is_not_replaced(model, tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"keep me")
    path.chmod(0o444)
    with pytest.raises(PermissionError, match="w.pt is read-only, so it was not replaced"):
        checkpoints.save_weights(model, path)
    assert path.read_bytes() == b"keep me"


def test_the_moving_average_wrappers_state_dict_loads(model, tmp_path):
    ema = torch.optim.swa_utils.AveragedModel(model, use_buffers=True)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    assert "n_averaged" in ema.state_dict()
    loaded = checkpoints.load_weights(MNISTNet().eval(), path)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("key", ["model", "state_dict"])
def test_a_training_checkpoint_dict_loads_its_model(model, tmp_path, key):
    path = tmp_path / "checkpoint.pt"
    torch.save({key: model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    loaded = checkpoints.load_weights(MNISTNet().eval(), path)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))


def test_a_dict_without_a_state_dict_is_explained(model, tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"epoch": 3, "lr": 0.1}, path)
    with pytest.raises(checkpoints.CheckpointError, match="not a state_dict"):
        checkpoints.load_weights(model, path)


@pytest.mark.parametrize(
    "content, kind",
    [
        (b'{"test_acc": [99.1]}', "JSON"),
        (b"\x89PNG\r\n\x1a\n" + bytes(32), "a PNG image"),
        (b"hello", None),
    ],
    ids=["json", "png", "text"],
)
def test_a_file_that_is_no_checkpoint_is_called_that(model, tmp_path, content, kind):
    path = tmp_path / "not-weights.pt"
    path.write_bytes(content)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_weights(model, path)
    message = str(info.value)
    assert "is not a PyTorch checkpoint" in message and "pickled" not in message
    if kind:
        assert f"it looks like {kind}" in message


def test_weights_holding_nan_are_refused_on_load(model, tmp_path):
    state = model.state_dict()
    state["fc.weight"][0, 0] = float("nan")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(checkpoints.CheckpointError, match="holds NaN or inf in fc.weight"):
        checkpoints.load_weights(MNISTNet(), tmp_path / "w.pt")


def test_ctrl_c_while_files_are_written_together_waits_for_the_pair(tmp_path):
    with pytest.raises(KeyboardInterrupt), files.interrupts_deferred():
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the two writes
        files.save_json({"second": True}, tmp_path / "second.json")
    assert json.loads((tmp_path / "second.json").read_text()) == {"second": True}
