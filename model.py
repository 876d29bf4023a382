"""MNISTNet: a small, fast CNN for 28x28 handwritten digits.

Importing this module builds nothing and reads no data:
`from model import MNISTNet` is all another notebook needs.
"""

import numbers
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10
# One entry per resolution (28, 14, 7, 3 pixels): a width, or a sequence of widths.
Channels = Sequence[int | Sequence[int]]
# MNISTNet()'s widths, the notebook's default: two blocks at 14x14, 118,202 parameters.
DEFAULT_CHANNELS = (16, (32, 32), 64, 128)
# The widest block MNISTNet builds. Two 4096-wide blocks in a row already hold 151M weights (604 MB
# in float32), far more than 28x28 digits need; a wider one is a typo (2**40) that would otherwise
# reach the allocator as a request for terabytes.
MAX_WIDTH = 4096


class ConvBlock(nn.Module):
    """3x3 convolution, an optional 2x2 max-pool, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool = False):
        super().__init__()
        # The BatchNorm shift makes a convolution bias redundant.
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.pool:
            # Pooling before BatchNorm and ReLU runs them on a quarter of the pixels,
            # a large share of the CPU time at 28x28.
            x = F.max_pool2d(x, 2)
        return F.relu(self.bn(x))


class MNISTNet(nn.Module):
    """Conv blocks at 28 -> 14 -> 7 -> 3 pixels, dropout, a linear layer over the 3x3 map.

    `channels` has one entry per resolution: an int is one conv block of that width, a tuple
    several blocks in a row at that resolution (deeper, as small parameter budgets need).
    Takes a float batch of shape (N, 1, 28, 28), normalised as in utils.py, and returns
    (N, 10) log-probabilities, so pair it with F.nll_loss. `MNISTNet()` is the notebook's
    default network, so a default run's mnist_net.pt loads into it with load_state_dict.
    torch.compile, torch.export and torch.jit.script take it; scripted, it skips check_input,
    whose messages format what TorchScript cannot (a dtype, a type's name).
    """

    def __init__(self, channels: Channels = DEFAULT_CHANNELS, dropout: float = 0.0):
        super().__init__()
        if (
            isinstance(dropout, bool)
            or not isinstance(dropout, (int, float))
            or not 0 <= dropout < 1
        ):
            raise ValueError(
                f"dropout must be a number in [0, 1); got {dropout!r}. "
                "Pass 0 for no dropout, or a fraction of the features to drop, e.g. 0.1."
            )
        self.channels = stage_widths(channels)  # as four tuples, whatever form was given
        # block1, block2, ... in the order they run: the names the default network's checkpoints
        # have, registered on the model itself (not in a ModuleList) so that they stay the names.
        in_channels, number = 1, 0
        for stage, widths in enumerate(self.channels):
            for i, width in enumerate(widths):
                number += 1
                # The last block at 28x28 and at 14x14 halves the size (its pool runs before
                # BatchNorm).
                pool = stage < 2 and i == len(widths) - 1
                self.add_module(f"block{number}", ConvBlock(in_channels, width, pool))
                in_channels = width
            if stage == 2:
                self.last_at_7x7 = f"block{number}"  # forward() max-pools its output to 3x3
        # A linear layer over the whole 3x3 map keeps where each feature is,
        # which global average pooling would throw away.
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels * 3 * 3, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():
            check_input(x, self.fc.weight.device)
        # Channels-last makes the CPU (oneDNN) and GPU convolutions markedly faster here;
        # float64 or half-precision input is cast to the weights' dtype.
        x = x.to(dtype=self.fc.weight.dtype, memory_format=torch.channels_last)
        # A loop over the children: TorchScript compiles no lookup by a name computed at run time,
        # and its isinstance(block, ConvBlock) is False for blocks of other widths than block1's.
        for name, block in self.named_children():
            if name.startswith("block"):
                x = block(x)
                if name == self.last_at_7x7:
                    x = F.max_pool2d(x, 2)  # 7x7 -> 3x3
        logits = self.fc(self.dropout(x.flatten(1)))
        # In the weights' precision, also when autocast ran the layers in bfloat16.
        return F.log_softmax(logits.to(self.fc.weight.dtype), dim=1)


def stage_widths(channels: Channels) -> tuple[tuple[int, ...], ...]:
    """`channels` as four tuples of widths, one per resolution; ValueError if it is not one."""
    stages = ()
    if hasattr(channels, "tolist"):  # a NumPy array or a tensor of widths
        channels = channels.tolist()
    if isinstance(channels, (tuple, list)):
        stages = tuple(tuple(c) if isinstance(c, (tuple, list)) else (c,) for c in channels)
    widths = [w for stage in stages for w in stage]
    if (
        len(stages) != 4
        or not all(stages)
        # NumPy's integers are widths too (numbers.Integral); a bool is not.
        or not all(isinstance(w, numbers.Integral) and not isinstance(w, bool) for w in widths)
        or not all(0 < w <= MAX_WIDTH for w in widths)
    ):
        raise ValueError(
            f"channels must have four entries, one per resolution (28, 14, 7, 3 pixels), each a "
            f"width (an int from 1 to {MAX_WIDTH}) or a tuple of widths; got {channels!r}. "
            "Pass e.g. (16, 32, 64, 128), or ((8, 8), 12, 16, 16) for two blocks at 28x28."
        )
    return tuple(tuple(int(w) for w in stage) for stage in stages)


def layers(channels: Channels = DEFAULT_CHANNELS) -> tuple[tuple[int, int], ...]:
    """(kernel, stride) of every convolution and max-pool, in the order forward() applies them."""
    result = []
    for stage, widths in enumerate(stage_widths(channels)):
        result += [(3, 1)] * len(widths)
        if stage < 3:  # 28 -> 14 -> 7 -> 3: a 2x2 max-pool after each stage but the last
            result.append((2, 2))
    return tuple(result)


def receptive_field(channels: Channels = DEFAULT_CHANNELS) -> int:
    """Side, in input pixels, of the square that one output of the last convolution sees."""
    size, step = 1, 1
    for kernel, stride in layers(channels):
        size += (kernel - 1) * step
        step *= stride
    return size


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_input(x: object, device: torch.device | None = None) -> None:
    """Raise ValueError unless x is a floating-point (N, 1, 28, 28) tensor, on `device` if given."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"MNISTNet expects a torch.Tensor of shape (N, 1, 28, 28), got {type(x).__name__}. "
            "Convert a NumPy array with torch.from_numpy(x), anything else with torch.tensor(x)."
        )
    if x.dim() != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or not x.is_floating_point():
        raise ValueError(
            f"MNISTNet expects a floating-point tensor of shape (N, 1, 28, 28); "
            f"got shape {tuple(x.shape)} with dtype {x.dtype}. "
            "Add a channel axis with x.unsqueeze(1) for (N, 28, 28) images, and convert "
            "uint8 pixels with x.float() / 255 followed by the normalisation in utils.py."
        )
    if device is not None and x.device != device:
        raise ValueError(
            f"MNISTNet's weights are on {device} but the input is on {x.device}. Move the input "
            f"with x.to({str(device)!r}) (or the model with model.to({str(x.device)!r}))."
        )
