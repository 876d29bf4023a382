"""workbench.checkpoints: weights files saved whole, loaded safely or refused with the reason."""

import errno
import os
import resource
import signal

import pytest
import torch

from model import MNISTNet
from workbench import checkpoints, files


class RunsCode:
    """Unpickling this makes a folder: proof that loading the file ran code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def other_model(model, x):
    """MNISTNet() with weights of its own: its predictions for x differ from `model`'s."""
    torch.manual_seed(1)
    other = MNISTNet().eval()
    assert not torch.equal(other(x), model(x))
    return other


def test_round_trip_gives_the_same_predictions(model, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    x = torch.randn(4, 1, 28, 28)
    other = other_model(model, x)
    assert checkpoints.load_weights(other, path) is other
    assert torch.equal(other(x), model(x))


def test_state_bytes_are_a_weights_file(model, tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(checkpoints.state_bytes(model.state_dict()))
    x = torch.randn(4, 1, 28, 28)
    other = checkpoints.load_weights(other_model(model, x), path)
    assert torch.equal(other(x), model(x))


def test_torch_writer_round_trips_tensors_and_plain_data(tmp_path):
    data = {"epoch": 3, "name": "run", "rng": torch.arange(5), "history": [1.5, {"lr": 0.1}]}
    files.atomic_write(tmp_path / "resume.pt", checkpoints.torch_writer(data))
    loaded = checkpoints.load_file(tmp_path / "resume.pt")
    assert loaded.keys() == data.keys() and torch.equal(loaded.pop("rng"), data["rng"])
    assert loaded == {k: v for k, v in data.items() if k != "rng"}
    assert [p.name for p in tmp_path.iterdir()] == ["resume.pt"]


def test_a_full_disk_while_saving_keeps_the_old_file_and_names_it(model, tmp_path, monkeypatch):
    """A file-size limit below the weights' size makes torch.save fail as a full disk does."""
    path = tmp_path / "w.pt"
    path.write_bytes(b"the weights of the epoch before")
    save = torch.save

    def save_into_a_full_disk(obj, f):
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        # Past the limit, write() fails with EFBIG instead of the process being killed.
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
        try:
            save(obj, f)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)
            signal.signal(signal.SIGXFSZ, previous)

    monkeypatch.setattr(torch, "save", save_into_a_full_disk)
    with pytest.raises(OSError, match=f"while writing {path}") as info:
        files.atomic_write(path, checkpoints.torch_writer(model.state_dict()))
    assert info.value.errno == errno.EFBIG
    assert path.read_bytes() == b"the weights of the epoch before"
    assert [p.name for p in tmp_path.iterdir()] == ["w.pt"]  # no temporary file left


def test_checkpoint_with_pickled_code_is_refused(model, tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"block1.conv.weight": RunsCode(marker)}, path)
    with pytest.raises(checkpoints.CheckpointError, match="refused.*pickled objects or code"):
        checkpoints.load_weights(model, path)
    assert not marker.exists()


def test_other_architecture_names_the_mismatched_keys(model, tmp_path):
    path = tmp_path / "small.pt"
    torch.save(MNISTNet(channels=(8, 16, 32, 64)).state_dict(), path)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_weights(model, path)
    message = str(info.value)
    assert "different architecture" in message
    assert f"block1.conv.weight (8, 1, 3, 3) vs {tuple(model.block1.conv.weight.shape)}" in message


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
    torch.save(model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(checkpoints.CheckpointError, match="truncated or corrupt") as info:
        checkpoints.load_weights(model, path)
    message = str(info.value)
    # torch's finding once, in the message alone, without its advice; then what to do.
    assert message.count("PytorchStreamReader") == 1 and "likelihood" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert message.endswith(checkpoints.REREAD)


def test_an_empty_file_is_called_empty(model, tmp_path):
    path = tmp_path / "w.pt"
    path.write_bytes(b"")
    with pytest.raises(
        checkpoints.CheckpointError, match=rf"^{path} is empty \(0 bytes\): it holds nothing"
    ):
        checkpoints.load_weights(model, path)


@pytest.mark.slow  # loads torch.compile's machinery
def test_a_compiled_models_state_dict_loads(model, tmp_path):
    """torch.compile's wrapper keeps the model under _orig_mod, so its keys carry that prefix."""
    path = tmp_path / "compiled.pt"
    state = torch.compile(model).state_dict()  # compiles nothing until it is called
    assert all(key.startswith("_orig_mod.") for key in state)
    torch.save(state, path)
    x = torch.randn(2, 1, 28, 28)
    loaded = checkpoints.load_weights(other_model(model, x), path)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.slow  # loads torch.compile's machinery
def test_the_average_of_a_compiled_model_loads(model, tmp_path):
    ema = torch.optim.swa_utils.AveragedModel(torch.compile(model), use_buffers=True)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)  # module._orig_mod.<key>, and n_averaged
    x = torch.randn(2, 1, 28, 28)
    loaded = checkpoints.load_weights(other_model(model, x), path)
    torch.testing.assert_close(loaded(x), model(x))


def test_the_moving_average_wrappers_state_dict_loads(model, tmp_path):
    ema = torch.optim.swa_utils.AveragedModel(model, use_buffers=True)
    path = tmp_path / "ema.pt"
    torch.save(ema.state_dict(), path)
    x = torch.randn(2, 1, 28, 28)
    loaded = checkpoints.load_weights(other_model(model, x), path)
    torch.testing.assert_close(loaded(x), model(x))


@pytest.mark.parametrize("key", ["model", "state_dict", "model_state_dict"])
def test_a_training_checkpoint_dict_loads_its_model(model, tmp_path, key):
    path = tmp_path / "checkpoint.pt"
    torch.save({key: model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)
    x = torch.randn(2, 1, 28, 28)
    loaded = checkpoints.load_weights(other_model(model, x), path)
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
        (b"\x1f\x8b\x08" + bytes(32), "a gzip archive"),
        (b"hello", None),
    ],
    ids=["json", "png", "gzip", "text"],
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


@pytest.mark.parametrize(
    "key, value",
    [("fc.weight", float("nan")), ("block1.bn.running_var", float("inf"))],
    ids=["nan-parameter", "inf-buffer"],
)
def test_all_finite_spots_nan_and_inf_weights(model, key, value):
    assert checkpoints.all_finite(model) and checkpoints.nonfinite(model.state_dict()) == []
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] = value  # a buffer counts as much as a parameter
    assert not checkpoints.all_finite(model)
    assert checkpoints.nonfinite(model.state_dict()) == [key]


def test_a_resume_file_is_not_taken_for_weights(model, tmp_path):
    path = tmp_path / "resume.pt"
    torch.save(dict(model=model.state_dict(), ema_model={}, rng={}, history={}), path)
    with pytest.raises(checkpoints.CheckpointError, match="is a run's resume.pt"):
        checkpoints.load_weights(MNISTNet(), path)


def test_integer_weights_of_the_right_shapes_are_refused(model, tmp_path):
    path = tmp_path / "int8.pt"
    state = {
        k: v.to(torch.int8) if v.is_floating_point() else v for k, v in model.state_dict().items()
    }
    torch.save(state, path)
    with pytest.raises(checkpoints.CheckpointError, match="block1.conv.weight torch.int8 vs"):
        checkpoints.load_weights(MNISTNet(), path)


def test_a_device_this_machine_lacks_is_named_not_called_corruption(model, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    missing = "meta" if torch.accelerator.is_available() else "cuda"
    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator; the check is for one without")
    with pytest.raises(checkpoints.CheckpointError, match=f"has no {missing} device"):
        checkpoints.load_weights(MNISTNet(), path, map_location=missing)


@pytest.mark.parametrize(
    "prefix",
    ["module.", "_orig_mod.module.", "module._orig_mod."],
    ids=["ddp", "compiled-ddp", "ddp-compiled"],
)
def test_a_data_parallel_models_state_dict_loads(model, tmp_path, prefix):
    """DataParallel and DistributedDataParallel keep the model under "module.": it was refused as
    "a different architecture", naming every key."""
    path = tmp_path / "ddp.pt"
    torch.save({prefix + key: value for key, value in model.state_dict().items()}, path)
    x = torch.randn(2, 1, 28, 28)
    loaded = checkpoints.load_weights(other_model(model, x), path)
    torch.testing.assert_close(loaded(x), model(x))


def test_the_arguments_swapped_are_named(model, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    for swapped in (path, str(path)):
        with pytest.raises(TypeError, match=r"takes the model first, then the path; got a "):
            checkpoints.load_weights(swapped, model)


def test_loading_into_the_moving_average_says_to_load_into_its_network(model, tmp_path):
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    average = torch.optim.swa_utils.AveragedModel(MNISTNet())
    with pytest.raises(checkpoints.CheckpointError, match=r"load_weights\(average\.module, "):
        checkpoints.load_weights(average, path)
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(checkpoints.load_weights(average.module, path).eval()(x), model(x))


@pytest.mark.filterwarnings("ignore:Validating sparse tensor invariants")
@pytest.mark.parametrize("kind", ["meta", "sparse"])
def test_tensors_without_plain_data_are_refused_by_name(model, tmp_path, kind):
    """They failed inside the NaN check: "Tensor.item() cannot be called on meta tensors", or
    NotImplementedError for a sparse tensor."""
    state = model.state_dict()
    state["fc.weight"] = state["fc.weight"].to("meta" if kind == "meta" else "cpu")
    if kind == "sparse":
        state["fc.weight"] = state["fc.weight"].to_sparse()
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(checkpoints.CheckpointError) as info:
        checkpoints.load_weights(MNISTNet(), path)
    assert str(info.value).startswith(f"{path} holds fc.weight without plain data (sparse, or on ")


def test_weights_saved_before_batchnorm_counted_its_batches_load(model, tmp_path):
    """A state_dict without BatchNorm's num_batches_tracked (PyTorch before 0.4.1) was refused as
    "a different architecture"; BatchNorm itself loads such a file with a count of 0."""
    path = tmp_path / "old.pt"
    torch.save({k: v for k, v in model.state_dict().items() if "num_batches" not in k}, path)
    x = torch.randn(2, 1, 28, 28)
    loaded = checkpoints.load_weights(other_model(model, x), path)
    torch.testing.assert_close(loaded(x), model(x))
    assert loaded.block1.bn.num_batches_tracked == 0
