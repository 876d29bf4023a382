"""Fakes the tests build: tiny MNIST-format files, the default network, run folders.

Kept out of conftest.py, which imports no PyTorch (see its docstring).
"""

import struct
from pathlib import Path

import torch

from model import MNISTNet
from workbench import folders, schema, speed

# params.json's "speed" record of a run that trains as the parameters cell sets it.
AS_SET = speed.record(speed.Mode(), "as the parameters cell sets it")
TINY_TRAIN = 96
TINY_TEST = 40


def write_idx(path, tensor):
    """Write a uint8 tensor as an idx file, the format of the MNIST raw files."""
    header = bytes([0, 0, 8, tensor.dim()]) + struct.pack(f">{tensor.dim()}I", *tensor.shape)
    path.write_bytes(header + tensor.contiguous().numpy().tobytes())


def make_tiny_mnist(root, n_train=TINY_TRAIN, n_test=TINY_TEST, seed=0):
    """Write random MNIST-format files under root/MNIST/raw; return the tensors written."""
    g = torch.Generator().manual_seed(seed)
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g)
        labels = torch.arange(n, dtype=torch.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
        data[prefix] = (images, labels)
    return data


def default_model():
    """MNISTNet(), the notebook's default network: fixed initial weights, eval mode."""
    torch.manual_seed(0)
    return MNISTNet().eval()


def fake_run(params, model, accuracies, **changes):
    """A run folder as the training cell leaves it after len(accuracies) epochs."""
    params = {**params, **changes}
    run_dir = folders.create(
        params["OUTPUT_DIR"], params, model, "cpu", None, resume_state={}, speed=AS_SET
    )
    history = {key: [] for key in schema.METRIC_KEYS}
    for acc in accuracies:
        for key in schema.METRIC_KEYS:
            history[key].append(acc if key == "test_acc" else 1.0)
        folders.save_epoch(run_dir, history, model, params["EPOCHS"], resume_state={})
    return run_dir
