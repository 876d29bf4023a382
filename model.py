"""MNISTNet: a small, fast CNN for 28x28 handwritten digits.

Importing this module builds nothing and reads no data:
`from model import MNISTNet` is all another notebook needs.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SHAPE = (1, 28, 28)
NUM_CLASSES = 10


class ConvBlock(nn.Module):
    """3x3 convolution, an optional 2x2 max-pool, BatchNorm, ReLU."""

    def __init__(self, in_channels, out_channels, pool=False):
        super().__init__()
        # The BatchNorm shift makes a convolution bias redundant.
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.pool = pool

    def forward(self, x):
        x = self.conv(x)
        if self.pool:
            # Pooling before BatchNorm and ReLU runs them on a quarter of the pixels,
            # a large share of the CPU time at 28x28.
            x = F.max_pool2d(x, 2)
        return F.relu(self.bn(x))


class MNISTNet(nn.Module):
    """Four conv blocks at 28 -> 14 -> 7 -> 3 pixels, dropout, a linear layer over the 3x3 map.

    Takes a float batch of shape (N, 1, 28, 28), normalised as in utils.py, and returns
    (N, 10) log-probabilities, so pair it with F.nll_loss.
    """

    def __init__(self, channels=(16, 32, 64, 128), dropout=0.2):
        super().__init__()
        c1, c2, c3, c4 = channels
        self.block1 = ConvBlock(1, c1, pool=True)  # 28x28 -> 14x14
        self.block2 = ConvBlock(c1, c2, pool=True)  # 14x14 -> 7x7
        self.block3 = ConvBlock(c2, c3)  # 7x7, then max-pooled to 3x3
        self.block4 = ConvBlock(c3, c4)  # 3x3
        # A linear layer over the whole 3x3 map keeps where each feature is,
        # which global average pooling would throw away.
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c4 * 3 * 3, NUM_CLASSES)

    def forward(self, x):
        check_input(x)
        # Channels-last makes the CPU (oneDNN) and GPU convolutions markedly faster here;
        # float64 or half-precision input is cast to the weights' dtype.
        x = x.to(dtype=self.fc.weight.dtype, memory_format=torch.channels_last)
        x = self.block3(self.block2(self.block1(x)))
        x = self.block4(F.max_pool2d(x, 2))
        return F.log_softmax(self.fc(self.dropout(x.flatten(1))), dim=1)


# (kernel, stride) of every convolution and max-pool, in the order forward() applies them.
LAYERS = ((3, 1), (2, 2), (3, 1), (2, 2), (3, 1), (2, 2), (3, 1))


def receptive_field():
    """Side, in input pixels, of the square that one output of the last convolution sees."""
    size, step = 1, 1
    for kernel, stride in LAYERS:
        size += (kernel - 1) * step
        step *= stride
    return size


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())


def check_input(x):
    """Raise ValueError unless x is a floating-point (N, 1, 28, 28) tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(
            f"MNISTNet expects a torch.Tensor of shape (N, 1, 28, 28), got {type(x).__name__}."
        )
    if x.dim() != 4 or tuple(x.shape[1:]) != INPUT_SHAPE or not x.is_floating_point():
        raise ValueError(
            f"MNISTNet expects a floating-point tensor of shape (N, 1, 28, 28); "
            f"got shape {tuple(x.shape)} with dtype {x.dtype}. "
            "Add a channel axis with x.unsqueeze(1) for (N, 28, 28) images, and convert "
            "uint8 pixels with x.float() / 255 followed by the normalisation in utils.py."
        )
