import os

import pytest
import torch

import utils
from model import MNISTNet


class RunsCode:
    """Unpickling this makes a folder: proof that loading the file ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return MNISTNet().eval()


def test_round_trip_gives_the_same_predictions(model, tmp_path):
    path = tmp_path / "w.pt"
    utils.save_weights(model, path)
    torch.manual_seed(1)
    other = MNISTNet().eval()
    x = torch.randn(4, 1, 28, 28)
    assert not torch.equal(other(x), model(x))
    utils.load_weights(other, path)
    assert torch.equal(other(x), model(x))


def test_crash_while_saving_keeps_the_old_file(model, tmp_path, monkeypatch):
    path = tmp_path / "w.pt"
    utils.save_weights(model, path)
    good = path.read_bytes()

    def crash(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        utils.save_weights(model, path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temporary file left


def test_checkpoint_with_pickled_code_is_refused(model, tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"block1.conv.weight": RunsCode(marker)}, path)
    with pytest.raises(utils.CheckpointError, match="refused.*pickled objects or code"):
        utils.load_weights(model, path)
    assert not marker.exists()
    # The file really is dangerous: an unsafe load runs its code.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_other_architecture_names_the_mismatched_keys(model, tmp_path):
    path = tmp_path / "small.pt"
    torch.save(MNISTNet(channels=(8, 16, 32, 64)).state_dict(), path)
    with pytest.raises(utils.CheckpointError) as info:
        utils.load_weights(model, path)
    message = str(info.value)
    assert "different architecture" in message
    assert "block1.conv.weight (8, 1, 3, 3) vs (16, 1, 3, 3)" in message


def test_missing_and_unexpected_keys_are_named(model, tmp_path):
    state = model.state_dict()
    state["extra.weight"] = state.pop("fc.bias")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(utils.CheckpointError, match=r"missing keys \['fc.bias'\], unexpected keys \['extra.weight'\]"):
        utils.load_weights(model, path)


def test_truncated_checkpoint_is_reported(model, tmp_path):
    path = tmp_path / "w.pt"
    utils.save_weights(model, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(utils.CheckpointError, match="truncated or corrupt"):
        utils.load_weights(model, path)


def test_save_json_writes_readable_json(tmp_path):
    utils.save_json({"test_acc": [98.5, 99.1]}, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text().startswith("{")
