"""utils.py: the MNIST loaders, their transforms, the seed and the device; usable on its own."""

import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import utils
from conftest import REPO, read_only, snapshot
from fakes import TINY_TEST, TINY_TRAIN, make_tiny_mnist
from model import MNISTNet

# MNIST's published training-set statistics, which every image is normalised with.
MEAN, STD = 0.1307, 0.3081


def loaders(root, **kwargs):
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("test_batch_size", 16)
    return utils.get_data_loaders(data_dir=root, **kwargs)


def normalised(images):
    """uint8 (N, 28, 28) images as the loaders should serve them, normalised by hand."""
    return ((images.float() / 255 - MEAN) / STD).unsqueeze(1)


def test_batch_shapes_and_types(tiny_root):
    for loader, size in zip(loaders(tiny_root), (32, 16)):
        x, y = next(iter(loader))
        assert x.shape == (size, 1, 28, 28) and x.dtype == torch.float32
        assert y.shape == (size,) and y.dtype == torch.int64
        assert y.min() >= 0 and y.max() <= 9


def test_every_image_is_served_once_per_epoch(tiny_root):
    train_loader, test_loader = loaders(tiny_root)
    assert sum(len(y) for _, y in train_loader) == TINY_TRAIN
    assert sum(len(y) for _, y in test_loader) == TINY_TEST


def test_test_loader_is_normalised_deterministic_and_unaugmented(tiny_root, tmp_path):
    raw = make_tiny_mnist(tmp_path)["t10k"][0]  # same seed, same pixels
    _, test_loader = loaders(tiny_root)
    first = torch.cat([x for x, _ in test_loader])
    second = torch.cat([x for x, _ in test_loader])
    torch.testing.assert_close(first, normalised(raw))
    assert torch.equal(first, second)


def test_train_loader_is_shuffled(tiny_root):
    train_loader, _ = loaders(tiny_root, augment=False, seed=0)
    in_order = torch.arange(TINY_TRAIN) % 10
    epoch1 = torch.cat([y for _, y in train_loader])
    epoch2 = torch.cat([y for _, y in train_loader])
    assert not torch.equal(epoch1, in_order)
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(epoch1.sort().values, in_order.sort().values)


def fingerprint(images):
    """The sorted per-image pixel sums: equal for the same images in any order."""
    return images.flatten(1).sum(1).sort().values


def test_train_images_are_normalised_before_augmentation(tiny_root, tmp_path):
    """Unaugmented training batches are exactly the hand-normalised pixels, in some order."""
    raw = make_tiny_mnist(tmp_path)["train"][0]
    train_loader, _ = loaders(tiny_root, augment=False)
    got = torch.cat([x for x, _ in train_loader])
    torch.testing.assert_close(fingerprint(got), fingerprint(normalised(raw)))


def test_augmentation_moves_pixels_but_keeps_labels(tiny_root):
    plain = loaders(tiny_root, augment=False, seed=3)[0]
    augmented = loaders(tiny_root, augment=True, seed=3)[0]
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(augmented))
    assert torch.equal(y0, y1)  # the same seed gives the same shuffle
    assert not torch.allclose(x0, x1)
    assert x1.shape == x0.shape and x1.min() >= (0 - MEAN) / STD - 1e-6


def test_max_samples_keeps_the_first_images_of_each_split(tiny_root):
    full = loaders(tiny_root, augment=False)
    cut = loaders(tiny_root, augment=False, max_samples=10)
    for whole, part in zip(full, cut):
        assert len(part.dataset) == 10
        assert torch.equal(part.dataset.images, whole.dataset.images[:10])
        assert torch.equal(part.dataset.labels, whole.dataset.labels[:10])


def test_a_chunked_loader_serves_the_samplers_batches_in_its_order():
    # Image i is filled with the value i, so each served image says which one it is.
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1).expand(10, 28, 28).contiguous()
    dataset = utils.MNISTBatches(images, torch.arange(10) * 7)
    loader = utils.MNISTLoader(dataset, batch_size=3, shuffle=True, chunk=2,
                               generator=torch.Generator().manual_seed(0),
                               collate_fn=utils.keep_batch)  # fmt: skip
    state = loader.generator.get_state()
    expected = list(loader.batch_sampler)
    loader.generator.set_state(state)
    served = list(loader)
    assert [len(labels) for _, labels in served] == [3, 3, 3, 1]  # the last one short
    indices = [(x[:, 0, 0, 0] * 255).round().long().tolist() for x, _ in served]
    assert indices == expected and sorted(sum(indices, [])) == list(range(10))
    assert [(y // 7).tolist() for _, y in served] == expected  # each label with its image
    assert len(loader) == 4 and loader.batch_size == 3


def test_affine_with_zero_range_is_identity():
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(utils.BatchRandomAffine(degrees=0, shift=0, scale=0)(x), x)


def test_the_affine_samples_where_affine_grid_says():
    # BatchRandomAffine builds its sampling grid by hand, for speed; F.affine_grid, given the
    # same rotation, zoom and shift, is the definition it must match (any image size).
    x = torch.rand(6, 1, 20, 24)
    augment = utils.BatchRandomAffine(degrees=30, shift=0.2, scale=0.2)
    torch.manual_seed(0)
    out = augment(x)
    torch.manual_seed(0)
    angle, zoom, dx, dy = torch.rand(4, 6) * 2 - 1
    angle, zoom = angle * math.radians(30), 1 + zoom * 0.2
    cos, sin = angle.cos() / zoom, angle.sin() / zoom
    theta = torch.stack([cos, -sin, dx * 0.4, sin, cos, dy * 0.4], 1).view(6, 2, 3)
    grid = F.affine_grid(theta, [6, 1, 20, 24], align_corners=False)
    expected = F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_shift_moves_a_pixel_without_losing_it():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    torch.manual_seed(0)
    out = utils.BatchRandomAffine(degrees=0, shift=0.1, scale=0)(x)
    assert out.sum() == pytest.approx(1.0, abs=1e-4)  # moved, not lost
    assert out[0, 0, 14, 14] < 1.0


def test_each_image_gets_its_own_transform():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10:18, 12:16] = 1.0
    out = utils.BatchRandomAffine()(x.expand(8, 1, 28, 28).contiguous())
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_scale_zooms_around_the_centre():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10:18, 10:18] = 1.0
    zoomed = utils.BatchRandomAffine(degrees=0, shift=0, scale=0.3)(
        x.expand(64, 1, 28, 28).contiguous()
    )
    areas = zoomed.sum(dim=(1, 2, 3))
    assert areas.min() < 64 * 0.9 and areas.max() > 64 * 1.1  # some shrink, some grow


def first_batch(root, global_seed, **kwargs):
    torch.manual_seed(global_seed)
    train_loader, _ = loaders(root, **kwargs)
    return next(iter(train_loader))


def test_same_seed_gives_same_batches(tiny_root):
    # Without workers the augmentation draws from the global generator, which set_seed fixes.
    a, b = (first_batch(tiny_root, 123, seed=7) for _ in range(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_workers_are_seeded_by_the_loader_seed(tiny_root):
    """Shuffling and the augmentation in worker processes follow `seed`, not the global state."""
    a = first_batch(tiny_root, 1, seed=7, num_workers=2)
    b = first_batch(tiny_root, 2, seed=7, num_workers=2)
    c = first_batch(tiny_root, 1, seed=8, num_workers=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_set_seed_fixes_python_and_torch():
    def draw():
        return random.random(), torch.rand(3)

    utils.set_seed(5)
    first = draw()
    utils.set_seed(5)
    again = draw()
    utils.set_seed(6)
    other = draw()
    assert first[0] == again[0] and torch.equal(first[1], again[1])
    assert first[0] != other[0] and not torch.equal(first[1], other[1])


def test_get_device_is_the_accelerator_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert utils.get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda: torch.device("meta"))
    assert utils.get_device() == torch.device("meta")


def test_transforms_data_builds_the_same_loaders(tiny_root):
    """The course template's name for the loader builder: same arguments, same batches."""
    batches = []
    for build in (utils.transforms_data, utils.get_data_loaders):
        train_loader, test_loader = build(data_dir=tiny_root, batch_size=8, augment=False, seed=3)
        assert len(train_loader.dataset) == TINY_TRAIN and len(test_loader.dataset) == TINY_TEST
        batches.append(next(iter(train_loader)))
    (x1, y1), (x2, y2) = batches
    assert x1.shape == (8, 1, 28, 28) and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_data_dir_from_environment(tiny_root, monkeypatch):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_root))
    train_loader, _ = utils.get_data_loaders(batch_size=8)
    assert len(train_loader.dataset) == TINY_TRAIN
    assert train_loader.dataset.root == tiny_root


@pytest.mark.parametrize("inner", ["MNIST", "MNIST/raw"])
def test_data_dir_may_name_the_mnist_or_raw_folder(tiny_root, monkeypatch, no_network, inner):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_root / inner))
    train_loader, test_loader = utils.get_data_loaders(batch_size=8, download=True)
    assert len(train_loader.dataset) == TINY_TRAIN
    assert train_loader.dataset.root == test_loader.dataset.root == tiny_root
    assert no_network == []
    assert not (tiny_root / inner / "MNIST").exists()


def test_present_files_are_only_read_and_network_untouched(tiny_root, no_network):
    before = snapshot(tiny_root)
    with read_only(tiny_root):
        loaders(tiny_root, download=True)
    assert snapshot(tiny_root) == before
    assert no_network == []


def test_accelerator_data_refuses_workers(tiny_root):
    with pytest.raises(ValueError, match="num_workers=0"):
        loaders(tiny_root, device="meta", num_workers=2)


@pytest.mark.slow  # a fresh interpreter imports torch: seconds
def test_workers_start_with_spawn(tiny_root):
    """macOS and Windows start workers with spawn, pickling the dataset, transform and collate."""
    train_loader, _ = loaders(tiny_root, seed=0)
    spawned = torch.utils.data.DataLoader(
        train_loader.dataset,
        batch_size=32,
        num_workers=1,
        multiprocessing_context="spawn",
        collate_fn=train_loader.collate_fn,
    )
    x, y = next(iter(spawned))
    assert x.shape == (32, 1, 28, 28) and y.shape == (32,)


def test_pin_memory_only_with_cuda(tiny_root, monkeypatch):
    assert not any(loader.pin_memory for loader in loaders(tiny_root))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert all(loader.pin_memory for loader in loaders(tiny_root))


def test_the_normalisation_is_the_real_training_sets(real_data):
    """MNIST_MEAN and MNIST_STD are the mean and std of the real training pixels.

    The customary 0.3081 is 0.00014 below the std of the pixels (0.30824), hence the tolerance.
    """
    train_loader, _ = utils.get_data_loaders(data_dir=real_data, download=False)
    pixels = train_loader.dataset.images.double() / 255
    assert abs(utils.MNIST_MEAN - pixels.mean().item()) < 5e-4
    assert abs(utils.MNIST_STD - pixels.std().item()) < 5e-4


# What a user of the two seed files writes in a notebook of their own, beside copies of them.
STANDALONE = """
import importlib.util
import torch
import torch.nn.functional as F
from utils import get_data_loaders, transforms_data
from model import MNISTNet

assert importlib.util.find_spec("workbench") is None, "the project's package is importable here"
assert transforms_data is get_data_loaders
train_loader, test_loader = get_data_loaders(batch_size=32, download=False)  # from ./data
model = MNISTNet()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
x, y = next(iter(train_loader))
before = [p.detach().clone() for p in model.parameters()]
optimizer.zero_grad()
loss = F.nll_loss(model(x), y)
loss.backward()
optimizer.step()
changed = sum(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
print(len(train_loader.dataset), len(test_loader.dataset), bool(torch.isfinite(loss)), changed)
"""


@pytest.mark.slow  # a fresh interpreter imports torch and torchvision: seconds
def test_the_seed_files_stand_alone(tmp_path):
    """utils.py and model.py, copied alone into a folder, load ./data and train there."""
    for name in ("utils.py", "model.py"):
        shutil.copy(REPO / name, tmp_path / name)
    make_tiny_mnist(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MNIST_DATA_DIR")}
    result = subprocess.run(
        [sys.executable, "-c", STANDALONE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    every_parameter = len(list(MNISTNet().parameters()))  # one step moves every one of them
    assert result.stdout.split() == [str(TINY_TRAIN), str(TINY_TEST), "True", str(every_parameter)]


@pytest.fixture
def no_reading(monkeypatch):
    """torchvision's MNIST made to fail the test: what a test passes is refused before it runs."""

    def read(*args, **kwargs):
        raise AssertionError("MNIST was read before the arguments and files were checked")

    monkeypatch.setattr(utils.datasets, "MNIST", read)


@pytest.mark.parametrize(
    "name, value",
    [
        ("batch_size", 0),  # was a ZeroDivisionError
        ("batch_size", "64"),
        ("batch_size", True),
        ("batch_size", 32.0),
        ("test_batch_size", -1),
        ("num_workers", -1),
        ("num_workers", 1.5),
        ("rotation", math.nan),
        ("rotation", -10),
        ("shift", math.nan),  # was accepted, and made every training pixel NaN
        ("shift", math.inf),
        ("shift", "0.1"),
        ("zoom", 1),  # a zoom of 1 would scale some digits by 0
        ("zoom", -0.1),
        ("zoom", False),
        ("seed", -1),
        ("seed", 2**64),
        ("seed", "1"),
        ("max_samples", 0),
        ("max_samples", 2.5),
        ("max_samples", True),
        ("shift", 2),  # meant as pixels: most digits were moved out of sight
        ("shift", 0.51),
        ("download", "False"),  # a string is true: it downloaded
        ("augment", "no"),  # and it augmented
        ("augment", None),
    ],
)
def test_a_bad_argument_is_refused_naming_it_before_any_data_is_read(
    tiny_root, no_reading, name, value
):
    with pytest.raises(ValueError, match=rf"^{name} must be .*; got {re.escape(repr(value))}\. "):
        utils.get_data_loaders(data_dir=tiny_root, **{name: value})


def test_the_edges_of_each_range_are_allowed(tiny_root):
    train_loader, test_loader = utils.get_data_loaders(
        data_dir=tiny_root, batch_size=1, test_batch_size=1, num_workers=0, rotation=0, shift=0,
        zoom=0.999, seed=2**64 - 1, max_samples=1,
    )  # fmt: skip
    assert [len(y) for _, y in train_loader] == [1] and [len(y) for _, y in test_loader] == [1]
    utils.get_data_loaders(data_dir=tiny_root, shift=0.5)  # the notebook's largest SHIFT


def test_numpy_integers_are_taken_as_the_ints_they_are(tiny_root):
    """DataLoader refused batch_size=np.int64(32) as "not a positive integer", and manual_seed
    a NumPy seed as "an integer is required"."""
    train_loader, test_loader = loaders(
        tiny_root, batch_size=np.int64(32), test_batch_size=np.int32(16), seed=np.int64(5),
        max_samples=np.int64(64), num_workers=np.int64(0),
    )  # fmt: skip
    assert train_loader.batch_size == 32 and test_loader.batch_size == 16
    assert train_loader.generator.initial_seed() == 5
    assert [len(y) for _, y in train_loader] == [32, 32]


@pytest.mark.parametrize("device", ["cuda", "meta"])
def test_a_device_this_machine_lacks_is_refused_before_any_data_is_read(
    tiny_root, no_reading, device, monkeypatch
):
    monkeypatch.setattr(utils, "get_device", lambda: torch.device("cpu"))
    with pytest.raises(ValueError) as info:
        loaders(tiny_root, device=device)
    assert str(info.value) == (
        f"device={device!r}: this machine has no {device} device to hold the data (only the "
        'CPU). Pass device=utils.get_device() or "cpu".'
    )


@pytest.mark.parametrize("odd", ["broken link", "folder", "fifo"])
def test_a_raw_file_that_is_there_but_no_file_is_named_as_such(tiny_copy, no_reading, odd):
    """It was called missing, while ls shows it."""
    path = tiny_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.unlink()
    if odd == "broken link":
        path.symlink_to(tiny_copy / "nowhere")
    elif odd == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    with pytest.raises(FileNotFoundError) as info:
        utils.get_data_loaders(data_dir=tiny_copy, download=False)
    assert ": missing t10k-labels-idx1-ubyte (there, but not a file). " in str(info.value)


def test_missing_mnist_names_the_folder_looked_in_and_the_fix(tmp_path, no_reading):
    with pytest.raises(FileNotFoundError) as info:
        utils.get_data_loaders(data_dir=tmp_path / "nope", download=False)
    message = str(info.value)
    assert f"MNIST was not found in {tmp_path / 'nope' / 'MNIST' / 'raw'}: missing " in message
    assert all(name in message for name in utils.RAW_FILES)
    assert "data_dir" in message and "$MNIST_DATA_DIR" in message and "download=True" in message


def test_a_missing_file_is_named_alone(tiny_copy, no_reading):
    raw = tiny_copy / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError) as info:
        utils.get_data_loaders(data_dir=tiny_copy, download=False)
    assert f"in {raw}: missing t10k-labels-idx1-ubyte. " in str(info.value)


def test_a_data_dir_that_is_a_file_is_refused(tiny_root, no_reading, no_network):
    file = tiny_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    for data_dir in (file, file / "data"):
        with pytest.raises(ValueError) as info:
            utils.get_data_loaders(data_dir=data_dir, download=True)
        assert f"is not a folder: {file} is a file. Pass as data_dir the folder" in str(info.value)
    assert no_network == []


def cut(path):
    path.write_bytes(path.read_bytes()[:-1])


def pad(path):
    path.write_bytes(path.read_bytes() + b"\0")


def unmark(path):
    path.write_bytes(b"\0\0\x0d" + path.read_bytes()[3:])  # float data, not torchvision's uint8


@pytest.mark.parametrize("damage", [cut, pad, unmark])
@pytest.mark.parametrize("name", utils.RAW_FILES)
def test_a_truncated_or_corrupt_file_is_named(tiny_copy, no_reading, no_network, name, damage):
    path = tiny_copy / "MNIST" / "raw" / name
    damage(path)
    with pytest.raises(RuntimeError) as info:
        utils.get_data_loaders(data_dir=tiny_copy, download=True)
    assert str(info.value).startswith(f"{path} ")
    assert "truncated or corrupt. Delete it and run again with download=True" in str(info.value)
    assert no_network == []


def test_a_file_cut_short_is_named_with_both_sizes(tiny_copy, no_reading):
    """MNIST's training images cut to 1,000,000 bytes, where torchvision's error names no file."""
    path = tiny_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60_000, 28, 28)
    path.write_bytes(header + bytes(1_000_000 - len(header)))
    expected = len(header) + 60_000 * 28 * 28
    with pytest.raises(RuntimeError) as info:
        utils.get_data_loaders(data_dir=tiny_copy, download=False)
    assert f"{path} is 1,000,000 bytes long but its header says {expected:,}: " in str(info.value)
