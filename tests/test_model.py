"""model.py: MNISTNet, the notebook's default network, its checks of input and widths."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO
from model import MAX_WIDTH, MNISTNet, count_parameters, receptive_field, stage_widths


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_output_shape_and_dtype(model, batch_size):
    out = model(torch.randn(batch_size, 1, 28, 28))
    assert out.shape == (batch_size, 10)
    assert out.dtype == torch.float32


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_outputs_are_log_probabilities(model, mode):
    getattr(model, mode)()
    out = model(torch.randn(16, 1, 28, 28))
    assert (out <= 0).all()
    torch.testing.assert_close(out.exp().sum(dim=1), torch.ones(16))


def test_gradients_reach_every_parameter(model):
    model.train()
    model.zero_grad()
    torch.nn.functional.nll_loss(model(torch.randn(8, 1, 28, 28)), torch.arange(8)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "x",
    [
        torch.randn(1, 28, 28),  # rank 3: no batch or no channel axis
        torch.randn(2, 3, 28, 28),  # RGB
        torch.randn(2, 1, 32, 28),  # wrong height
        torch.randn(2, 1, 28, 20),  # wrong width
        torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.uint8),  # raw pixels
        torch.randint(0, 255, (2, 1, 28, 28), dtype=torch.int64),
    ],
    ids=["rank3", "channels", "height", "width", "uint8", "int64"],
)
def test_bad_input_raises_clear_error(model, x):
    with pytest.raises(ValueError) as info:
        model(x)
    message = str(info.value)
    assert f"got shape {tuple(x.shape)} with dtype {x.dtype}" in message
    assert "(N, 1, 28, 28)" in message and "floating-point" in message


def test_non_tensor_input_raises(model):
    with pytest.raises(ValueError, match="got list"):
        model([[0.0] * 28] * 28)


def test_a_numpy_batch_is_refused_saying_how_to_convert_it(model):
    images = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match=r"got ndarray\. Convert .* torch\.from_numpy\(x\)"):
        model(images)
    assert model(torch.from_numpy(images)).shape == (2, 10)


@pytest.mark.parametrize(
    "channels",
    [
        (np.int64(8), (np.int32(12), 12), 16, np.int64(20)),  # widths computed with NumPy
        np.array([8, 12, 16, 20]),
        torch.tensor([8, 12, 16, 20]),
    ],
    ids=["numpy-ints", "numpy-array", "tensor"],
)
def test_widths_from_numpy_or_torch_build_the_same_network(channels):
    """They were refused as "an int from 1 to 4096", which a NumPy integer reads as."""
    model = MNISTNet(channels)
    as_ints = tuple(tuple(int(w) for w in np.atleast_1d(c)) for c in channels)
    assert model.channels == as_ints == stage_widths(as_ints)
    assert all(type(w) is int for stage in model.channels for w in stage)


def test_input_on_another_device_than_the_weights_raises(model):
    with pytest.raises(ValueError) as info:
        model(torch.randn(2, 1, 28, 28, device="meta"))
    message = str(info.value)
    assert "weights are on cpu but the input is on meta" in message
    assert "x.to('cpu')" in message and "model.to('meta')" in message


@pytest.mark.slow  # a fresh interpreter imports torch and torchvision: seconds
def test_imports_from_another_directory_without_side_effects(tmp_path):
    modules = ["model", "utils"]  # the root's modules (a glob would take in scratch files)
    code = (
        "from model import MNISTNet\n"
        f"import {', '.join(modules)}\n"
        "import torch\n"
        "print(tuple(MNISTNet()(torch.zeros(2, 1, 28, 28)).shape))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "(2, 10)\n"  # importing printed nothing
    assert list(tmp_path.iterdir()) == []  # and wrote nothing (no ./data download)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_cast_to_the_weights(model, dtype):
    model.eval()
    x = torch.randn(3, 1, 28, 28)
    out = model(x.to(dtype))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x.to(dtype).float()))


def test_receptive_field_of_the_last_convolution():
    # The default: 3x3 conv, 2x2 pool, 3x3 conv, 3x3 conv, 2x2 pool, 3x3 conv, 2x2 pool, 3x3 conv.
    # Each layer widens the field by (kernel - 1) times the product of the strides before it:
    # 1 + 2 + 1 + 2*2 + 2*2 + 1*2 + 2*4 + 1*4 + 2*8 = 42.
    assert receptive_field() == 42


def test_receptive_field_grows_with_the_blocks_added():
    # 3x3 conv, 3x3 conv, 2x2 pool, 3x3 conv, 2x2 pool, 3x3 conv, 2x2 pool, 3x3 conv:
    # 1 + 2 + 2 + 1 + 2*2 + 1*2 + 2*4 + 1*4 + 2*8 = 40.
    assert receptive_field(((8, 8), 12, 16, 16)) == 40


def expected_parameters(channels):
    """Parameters of MNISTNet(channels), counted from its layers: bias-free 3x3 convolutions,
    BatchNorm (a weight and a bias per channel), and a linear layer over the 3x3 map."""
    stages = [(stage,) if isinstance(stage, int) else stage for stage in channels]
    widths = [1] + [width for stage in stages for width in stage]
    convs = sum(9 * c_in * c_out + 2 * c_out for c_in, c_out in zip(widths, widths[1:]))
    return convs + (widths[-1] * 3 * 3 + 1) * 10


def test_the_default_network_is_the_notebooks(notebook_defaults):
    channels = notebook_defaults["CHANNELS"]
    model = MNISTNet()
    assert model.channels == stage_widths(channels)
    assert count_parameters(model) == expected_parameters(channels)
    # Checkpoints load by name: block1, block2, ... in the order they run, then fc.
    blocks = sum(map(len, model.channels))
    names = [name for name, _ in model.named_parameters()]
    per_block = ("conv.weight", "bn.weight", "bn.bias")
    expected = [f"block{i}.{p}" for i in range(1, blocks + 1) for p in per_block]
    assert names == expected + ["fc.weight", "fc.bias"]


def test_weights_of_a_default_run_load_into_MNISTNet(notebook_defaults, tmp_path):
    """A run of the notebook with its default CHANNELS saves weights that MNISTNet() loads."""
    torch.manual_seed(0)
    trained = MNISTNet(channels=notebook_defaults["CHANNELS"]).eval()
    torch.save(trained.state_dict(), tmp_path / "mnist_net.pt")
    model = MNISTNet().eval()
    model.load_state_dict(torch.load(tmp_path / "mnist_net.pt", weights_only=True))
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), trained(x))


@pytest.mark.parametrize(
    "channels", [(8, 12, 16, 20), ((8, 8), (12, 12), 16, 12), (4, (6, 6, 6), 8, (10, 10))]
)
def test_the_parameter_count_follows_the_layers(channels):
    assert count_parameters(MNISTNet(channels)) == expected_parameters(channels)


def test_several_blocks_per_resolution():
    model = MNISTNet(channels=((8, 8), (12, 12), 16, 12), dropout=0.0)
    widths = [model.get_submodule(f"block{i}").conv.out_channels for i in range(1, 7)]
    assert widths == [8, 8, 12, 12, 16, 12]
    assert model.channels == ((8, 8), (12, 12), (16,), (12,))
    assert model.fc.in_features == 12 * 3 * 3
    assert model(torch.randn(5, 1, 28, 28)).shape == (5, 10)
    # An int is one block: (8, 12, 16, 20) and ((8,), (12,), (16,), (20,)) are the same network.
    assert count_parameters(MNISTNet((8, 12, 16, 20))) == count_parameters(
        MNISTNet(((8,), (12,), (16,), (20,)))
    )


@pytest.mark.parametrize(
    "channels",
    [(8, 12, 16), (8, 12, 16, 20, 24), ((), 12, 16, 20), (8, 0, 16, 20), (8, 1.5, 16, 20)],
)
def test_bad_channels_raise_clear_error(channels):
    with pytest.raises(
        ValueError, match=r"channels must have four entries, one per resolution .* got "
    ):
        MNISTNet(channels=channels)


@pytest.mark.parametrize("dropout", ["0.1", 1.0, -0.1, True])
def test_a_dropout_outside_0_to_1_is_refused_at_once(dropout):
    with pytest.raises(ValueError, match=r"dropout must be a number in \[0, 1\)"):
        MNISTNet(dropout=dropout)


def test_widths_beyond_the_maximum_are_refused_before_anything_is_allocated():
    for channels in [(2**40, 1, 1, 1), (8, (8, MAX_WIDTH + 1), 8, 8)]:
        with pytest.raises(ValueError, match=rf"channels must .* from 1 to {MAX_WIDTH}\) .*; got "):
            MNISTNet(channels=channels)
    assert MNISTNet(channels=(MAX_WIDTH, 1, 1, 1)).block1.conv.out_channels == MAX_WIDTH


# Another number of blocks per resolution: the loop over them must follow it when compiled.
SHAPES = [(16, (32, 32), 64, 128), ((8, 8), (12, 12), 16, (10, 10))]


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("channels", SHAPES)
def test_torch_jit_script_computes_what_the_model_does(channels):
    model = MNISTNet(channels).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(scripted(x), model(x))
    assert list(scripted.state_dict()) == list(model.state_dict())


@pytest.mark.slow  # Dynamo traces the network
@pytest.mark.parametrize("channels", SHAPES)
def test_torch_export_computes_what_the_model_does_for_any_batch_size(channels):
    model = MNISTNet(channels).eval()
    batch = torch.export.Dim("batch")
    exported = torch.export.export(
        model, (torch.randn(3, 1, 28, 28),), dynamic_shapes={"x": {0: batch}}
    ).module()
    for n in (2, 5):
        x = torch.randn(n, 1, 28, 28)
        assert torch.equal(exported(x), model(x))


@pytest.mark.slow  # Dynamo traces the network
def test_torch_compile_traces_the_checks_without_a_graph_break(model):
    # The "eager" backend runs what Dynamo traced without generating code, so no C++ compiler.
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(compiled(x), model(x))
