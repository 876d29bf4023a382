import gzip
import os
import socket
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision

import mnist
import utils
from conftest import TINY_TEST, TINY_TRAIN, make_tiny_mnist, write_idx

MEAN, STD = 0.1307, 0.3081


def loaders(root, **kwargs):
    kwargs.setdefault("batch_size", 32)
    kwargs.setdefault("test_batch_size", 16)
    return utils.get_data_loaders(data_dir=root, **kwargs)


def snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in Path(root).rglob("*")}


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


def test_test_loader_is_normalised_deterministic_and_unaugmented(tiny_root):
    raw = make_tiny_mnist(tiny_root.parent / "expected")["t10k"][0]  # same seed, same pixels
    expected = ((raw.float() / 255 - MEAN) / STD).unsqueeze(1)
    _, test_loader = loaders(tiny_root)
    first = torch.cat([x for x, _ in test_loader])
    second = torch.cat([x for x, _ in test_loader])
    torch.testing.assert_close(first, expected)
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


def test_train_images_are_normalised_before_augmentation(tiny_root):
    """Unaugmented training batches are exactly the hand-normalised pixels, in some order."""
    raw = make_tiny_mnist(tiny_root.parent / "expected_train")["train"][0]
    expected = ((raw.float() / 255 - MEAN) / STD).unsqueeze(1)
    train_loader, _ = loaders(tiny_root, augment=False)
    got = torch.cat([x for x, _ in train_loader])
    torch.testing.assert_close(fingerprint(got), fingerprint(expected))


def test_augmentation_moves_pixels_but_keeps_labels(tiny_root):
    plain = loaders(tiny_root, augment=False, seed=3)[0]
    augmented = loaders(tiny_root, augment=True, seed=3)[0]
    (x0, y0), (x1, y1) = next(iter(plain)), next(iter(augmented))
    assert torch.equal(y0, y1)  # the same seed gives the same shuffle
    assert not torch.allclose(x0, x1)
    assert x1.shape == x0.shape and x1.min() >= (0 - MEAN) / STD - 1e-6


def test_affine_with_zero_range_is_identity():
    x = torch.rand(5, 1, 28, 28)
    torch.testing.assert_close(utils.BatchRandomAffine(degrees=0, shift=0, scale=0)(x), x)


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


def test_transforms_data_builds_the_same_loaders(tiny_root):
    """The user's name for the loader builder: same arguments, same batches."""
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


def test_present_files_are_only_read_and_network_untouched(tiny_root, no_network):
    before = snapshot(tiny_root)
    mode = os.stat(tiny_root).st_mode
    for path in [tiny_root, *tiny_root.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)  # read-only, as CI's ../shared is
    try:
        loaders(tiny_root, download=True)
    finally:
        for path in [tiny_root, *tiny_root.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        tiny_root.chmod(mode)
    assert snapshot(tiny_root) == before
    assert no_network == []


def test_missing_files_offline_name_folder_files_and_fixes(tmp_path, no_network):
    with pytest.raises(mnist.MNISTDataError) as info:
        loaders(tmp_path / "empty", download=True)
    message = str(info.value)
    assert str((tmp_path / "empty" / "MNIST" / "raw").resolve()) in message
    for name in mnist.ALL_RAW_FILES:
        assert name in message
    assert "MNIST_DATA_DIR" in message and "put the four files" in message
    assert "download failed" in message
    assert no_network, "the download should have been tried (and blocked)"
    leftovers = [p for p in (tmp_path / "empty").rglob("*") if p.is_file()]
    assert leftovers == []


def test_missing_files_without_download(tmp_path, no_network):
    with pytest.raises(mnist.MNISTDataError, match="download=False"):
        loaders(tmp_path, download=False)
    assert no_network == []


@pytest.mark.parametrize(
    "name, damage",
    [
        ("train-images-idx3-ubyte", lambda b: b[: len(b) // 2]),  # truncated
        ("t10k-images-idx3-ubyte", lambda b: b + b"\0" * 10),  # trailing garbage
        ("train-labels-idx1-ubyte", lambda b: b"\xff\xff" + b[2:]),  # bad magic
        ("t10k-labels-idx1-ubyte", lambda b: b[:6]),  # cut inside the header
        ("t10k-images-idx3-ubyte", lambda b: b""),  # empty
    ],
    ids=["truncated", "trailing", "magic", "header", "empty"],
)
def test_corrupt_file_is_named_with_the_fix(tiny_copy, name, damage):
    path = tiny_copy / "MNIST" / "raw" / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(mnist.MNISTDataError) as info:
        loaders(tiny_copy)
    assert str(path) in str(info.value)
    assert "truncated or corrupt" in str(info.value) and "Delete the file" in str(info.value)


def test_labels_out_of_range_are_reported(tiny_copy):
    path = tiny_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[-1] = 200
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.MNISTDataError, match="outside 0-9"):
        loaders(tiny_copy)


def fake_download(n_bytes=None, error=None):
    """A stand-in for MNIST.download: writes the files (cut to n_bytes), then raises `error`."""

    def download(self):
        written = make_tiny_mnist(Path(self.root), seed=0)
        assert written
        if n_bytes is not None:
            for path in Path(self.raw_folder).iterdir():
                path.write_bytes(path.read_bytes()[:n_bytes])
        if error is not None:
            raise error

    return download


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(
        torchvision.datasets.MNIST,
        "download",
        fake_download(n_bytes=100, error=KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        loaders(tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    # A later run with a working connection then downloads and loads normally.
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download())
    train_loader, _ = loaders(tmp_path)
    assert len(train_loader.dataset) == TINY_TRAIN
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(mnist.ALL_RAW_FILES)


def test_failed_download_reports_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "download", fake_download(error=RuntimeError("mirror down"))
    )
    with pytest.raises(mnist.MNISTDataError, match="RuntimeError: mirror down"):
        loaders(tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_accelerator_data_refuses_workers(tiny_root):
    with pytest.raises(ValueError, match="num_workers=0"):
        loaders(tiny_root, device="meta", num_workers=2)


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


def test_scale_zooms_around_the_centre():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 10:18, 10:18] = 1.0
    zoomed = utils.BatchRandomAffine(degrees=0, shift=0, scale=0.3)(
        x.expand(64, 1, 28, 28).contiguous()
    )
    areas = zoomed.sum(dim=(1, 2, 3))
    assert areas.min() < 64 * 0.9 and areas.max() > 64 * 1.1  # some shrink, some grow


@pytest.fixture
def silent_proxy(monkeypatch):
    """A proxy on the loopback that accepts connections and never answers, set for every URL."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, url)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    # urllib reads the proxy settings once, into the opener it keeps after its first request.
    monkeypatch.setattr(urllib.request, "_opener", None)
    yield server
    server.close()


def test_download_with_no_answer_fails_in_time_and_leaves_nothing(
    tmp_path, silent_proxy, monkeypatch
):
    monkeypatch.setattr(mnist, "DOWNLOAD_TIMEOUT_S", 1)
    mistyped = tmp_path / "dta"
    start = time.monotonic()
    with pytest.raises(mnist.MNISTDataError) as info:
        loaders(mistyped)
    assert time.monotonic() - start < 30  # 1 s per socket operation, a few operations
    assert "download failed" in str(info.value) and "timed out" in str(info.value)
    assert not mistyped.exists()  # no empty MNIST/raw tree, no .download-* folder
    assert list(tmp_path.iterdir()) == []


def test_download_error_keeps_its_whole_cause(tmp_path, monkeypatch):
    cause = (
        "Error downloading t10k-images-idx3-ubyte.gz:\n"
        "Tried https://mirror/, got:\n<urlopen error refused>\n"
    )
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "download", fake_download(error=RuntimeError(cause))
    )
    with pytest.raises(mnist.MNISTDataError) as info:
        loaders(tmp_path / "data")
    assert "gz: Tried https://mirror/, got: <urlopen error refused>)" in str(info.value)


def test_gz_files_alone_are_unpacked_and_read(tiny_copy):
    raw = tiny_copy / "MNIST" / "raw"
    expected = loaders(tiny_copy, augment=False)[1].dataset.images.clone()
    for name in mnist.ALL_RAW_FILES:
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
        (raw / name).unlink()
    _, test_loader = loaders(tiny_copy, download=False)
    assert torch.equal(test_loader.dataset.images, expected)
    assert all((raw / name).is_file() for name in mnist.ALL_RAW_FILES)


def test_corrupt_gz_file_is_named(tiny_copy):
    raw = tiny_copy / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").unlink()
    (raw / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(
        mnist.MNISTDataError, match="train-labels-idx1-ubyte.gz could not be unpacked"
    ):
        loaders(tiny_copy, download=False)


@pytest.mark.parametrize("inner", ["MNIST", "MNIST/raw"])
def test_data_dir_may_name_the_mnist_or_raw_folder(tiny_root, monkeypatch, no_network, inner):
    monkeypatch.setenv("MNIST_DATA_DIR", str(tiny_root / inner))
    train_loader, _ = utils.get_data_loaders(batch_size=8, download=True)
    assert len(train_loader.dataset) == TINY_TRAIN
    assert no_network == []
    assert not (tiny_root / inner / "MNIST").exists()


def test_stale_processed_cache_is_ignored(tiny_copy):
    processed = tiny_copy / "MNIST" / "processed"
    processed.mkdir()
    stale = (torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64))
    for name in ("training.pt", "test.pt"):
        torch.save(stale, processed / name)
    train_loader, test_loader = loaders(tiny_copy)
    assert (len(train_loader.dataset), len(test_loader.dataset)) == (TINY_TRAIN, TINY_TEST)


def test_file_of_zero_images_is_named(tiny_copy):
    path = tiny_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    write_idx(path, torch.zeros(0, 28, 28, dtype=torch.uint8))
    with pytest.raises(
        mnist.MNISTDataError, match=rf"{path} is a well-formed idx file with 0 images"
    ):
        loaders(tiny_copy)


@pytest.mark.parametrize("kind", ["folder", "link-loop", "broken-link"])
def test_a_raw_file_that_is_no_file_is_named_as_such(tiny_copy, no_network, kind):
    path = tiny_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "link-loop":
        path.symlink_to(path)
    else:
        path.symlink_to(tiny_copy / "nowhere")
    with pytest.raises(mnist.MNISTDataError, match="is there but is not a readable file"):
        loaders(tiny_copy)
    assert no_network == []  # refused before any download was tried


def test_a_huge_file_that_is_no_idx_file_is_refused_without_reading_it(tiny_copy):
    path = tiny_copy / "MNIST" / "raw" / "train-images-idx3-ubyte"
    with open(path, "r+b") as f:
        f.truncate(64 * 2**30)  # 64 GiB, sparse: reading it whole would exhaust the memory
    start = time.monotonic()
    with pytest.raises(mnist.MNISTDataError, match="truncated or corrupt"):
        loaders(tiny_copy)
    assert time.monotonic() - start < 5
