"""workbench.mnist: the raw MNIST files made present (unpacked or downloaded) and checked."""

import errno
import gzip
import os
import re
import shlex
import shutil
import socket
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision

import utils
from conftest import read_only, snapshot
from fakes import TINY_TEST, TINY_TRAIN, make_tiny_mnist, write_idx
from workbench import mnist

# The images in each split of MNIST as published: {train: count}.
MNIST_SIZES = {True: 60_000, False: 10_000}
TINY = {True: TINY_TRAIN, False: TINY_TEST}


def raw(root):
    return Path(root) / "MNIST" / "raw"


def files_under(root):
    return [p for p in Path(root).rglob("*") if p.is_file()]


def write_sized_mnist(root, sizes):
    """MNIST-format files holding sizes[train] images each (blank, and sparse: written at once)."""
    folder = raw(root)
    folder.mkdir(parents=True, exist_ok=True)
    for train, (images_name, labels_name) in mnist.RAW_FILES.items():
        n = sizes[train]
        write_idx(folder / labels_name, torch.zeros(n, dtype=torch.uint8))
        write_idx(folder / images_name, torch.zeros(1, 28, 28, dtype=torch.uint8))
        with open(folder / images_name, "r+b") as f:
            f.seek(4)
            f.write(n.to_bytes(4, "big"))  # the count in the header, then the size to match it
            f.truncate(16 + n * 28 * 28)


def test_tiny_files_pass_as_a_subset_and_give_their_sizes(tiny_root, no_network):
    before = snapshot(tiny_root)
    assert mnist.prepare(tiny_root, subset=True) == TINY
    assert snapshot(tiny_root) == before
    assert no_network == []


def test_files_of_mnists_sizes_pass_without_subset(tmp_path):
    write_sized_mnist(tmp_path, MNIST_SIZES)
    assert mnist.prepare(tmp_path, download=False) == MNIST_SIZES


def test_the_real_data_passes_with_its_sizes(real_data):
    expected = {
        train: len(torchvision.datasets.MNIST(real_data, train=train)) for train in (True, False)
    }
    assert mnist.prepare(real_data, download=False) == expected


def test_other_sizes_are_refused_unless_a_subset(tiny_root):
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tiny_root)
    message = str(info.value)
    for name in mnist.ALL_RAW_FILES:
        assert name in message
    assert f"hold {TINY_TRAIN:,} images, not MNIST's {MNIST_SIZES[True]:,}" in message
    assert f"hold {TINY_TEST:,} images, not MNIST's {MNIST_SIZES[False]:,}" in message
    assert "SMOKE = True" in message and "DATA_DIR" in message


def test_one_split_of_another_size_is_named_alone(tmp_path):
    write_sized_mnist(tmp_path, {True: MNIST_SIZES[True] - 1, False: MNIST_SIZES[False]})
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tmp_path, download=False)
    message = str(info.value)
    assert f"hold {MNIST_SIZES[True] - 1:,} images" in message
    assert all(name in message for name in mnist.RAW_FILES[True])
    assert not any(name in message for name in mnist.RAW_FILES[False])
    assert mnist.prepare(tmp_path, download=False, subset=True)[True] == MNIST_SIZES[True] - 1


@pytest.mark.parametrize("subset", [False, True])
def test_swapped_train_and_test_files_are_refused(tiny_copy, subset):
    folder = raw(tiny_copy)
    for train_name, test_name in zip(mnist.RAW_FILES[True], mnist.RAW_FILES[False]):
        (folder / train_name).rename(folder / "swap")
        (folder / test_name).rename(folder / train_name)
        (folder / "swap").rename(folder / test_name)
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tiny_copy, subset=subset)
    message = str(info.value)
    assert "look swapped" in message and str(folder) in message  # the folder's name has "swapped"
    for name in mnist.ALL_RAW_FILES:
        assert name in message


def test_present_files_are_only_read_and_network_untouched(tiny_root, no_network):
    before = snapshot(tiny_root)
    with read_only(tiny_root):
        mnist.prepare(tiny_root, download=True, subset=True)
    assert snapshot(tiny_root) == before
    assert no_network == []


@pytest.mark.parametrize("inner", ["MNIST", "MNIST/raw"])
def test_data_dir_may_name_the_mnist_or_raw_folder(tiny_root, no_network, inner):
    assert mnist.prepare(tiny_root / inner, subset=True) == TINY
    assert no_network == []
    assert not (tiny_root / inner / "MNIST").exists()


def test_missing_files_offline_name_folder_files_and_fixes(tmp_path, no_network):
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tmp_path / "empty", download=True)
    message = str(info.value)
    assert str(raw(tmp_path / "empty").resolve()) in message
    for name in mnist.ALL_RAW_FILES:
        assert name in message
    assert "MNIST_DATA_DIR" in message and "put the four files" in message
    assert "download failed" in message
    assert no_network, "the download should have been tried (and blocked)"
    assert files_under(tmp_path / "empty") == []


def test_missing_files_without_download(tmp_path, no_network):
    with pytest.raises(mnist.MNISTDataError, match="download=False"):
        mnist.prepare(tmp_path, download=False)
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
    path = raw(tiny_copy) / name
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tiny_copy, subset=True)
    assert str(path) in str(info.value)
    assert "truncated or corrupt" in str(info.value) and "Delete it" in str(info.value)
    # The check is utils' own, so the notebook and utils.get_data_loaders say the same.
    with pytest.raises(RuntimeError) as direct:
        utils.check_idx_file(path, 3 if "images" in name else 1)
    assert str(info.value) == str(direct.value)


def test_images_of_another_size_than_28x28_are_named(tiny_copy):
    path = raw(tiny_copy) / "t10k-images-idx3-ubyte"
    write_idx(path, torch.zeros(TINY_TEST, 27, 27, dtype=torch.uint8))
    with pytest.raises(mnist.MNISTDataError, match=rf"{path} holds images of 27x27 pixels, not"):
        mnist.prepare(tiny_copy, subset=True)


@pytest.mark.parametrize("inside", [False, True], ids=["a-file", "inside-a-file"])
def test_a_data_dir_that_is_a_file_says_so(tiny_copy, no_network, inside):
    """DATA_DIR set to one of the MNIST files, or to a path below one."""
    path = raw(tiny_copy) / "t10k-labels-idx1-ubyte"
    data_dir = path / "data" if inside else path
    before = snapshot(tiny_copy)
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(data_dir, subset=True)
    where = "lies inside a file" if inside else "is a file"
    assert str(info.value).startswith(
        f"DATA_DIR = {str(data_dir)!r} is not a folder: {data_dir} {where}. Set DATA_DIR to "
        "the folder that holds MNIST/raw/"
    )
    assert no_network == []  # nothing was downloaded into it
    assert snapshot(tiny_copy) == before


def test_mnist_data_dir_that_is_a_file_is_named_as_that(tiny_copy, monkeypatch):
    path = raw(tiny_copy) / "t10k-labels-idx1-ubyte"
    monkeypatch.setenv("MNIST_DATA_DIR", str(path))
    with pytest.raises(mnist.MNISTDataError, match=r"^\$MNIST_DATA_DIR \(DATA_DIR is None\) is"):
        mnist.prepare(None, subset=True)


def test_labels_out_of_range_are_reported(tiny_copy):
    path = raw(tiny_copy) / "train-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    data[-1] = 200
    path.write_bytes(bytes(data))
    with pytest.raises(mnist.MNISTDataError, match=f"{path} holds labels outside 0-9"):
        mnist.prepare(tiny_copy, subset=True)


def test_images_and_labels_of_different_counts_are_reported(tiny_copy):
    path = raw(tiny_copy) / "t10k-labels-idx1-ubyte"
    write_idx(path, torch.zeros(TINY_TEST - 1, dtype=torch.uint8))
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tiny_copy, subset=True)
    assert f"holds {TINY_TEST} images but {path} holds {TINY_TEST - 1} labels" in str(info.value)


def test_file_of_zero_images_is_named(tiny_copy):
    path = raw(tiny_copy) / "t10k-images-idx3-ubyte"
    write_idx(path, torch.zeros(0, 28, 28, dtype=torch.uint8))
    with pytest.raises(
        mnist.MNISTDataError, match=rf"{path} is a well-formed idx file with 0 images"
    ):
        mnist.prepare(tiny_copy, subset=True)


@pytest.mark.parametrize("kind", ["folder", "link-loop", "broken-link"])
def test_a_raw_file_that_is_no_file_is_named_as_such(tiny_copy, no_network, kind):
    path = raw(tiny_copy) / "t10k-labels-idx1-ubyte"
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "link-loop":
        path.symlink_to(path)
    else:
        path.symlink_to(tiny_copy / "nowhere")
    with pytest.raises(mnist.MNISTDataError, match=f"{path} is there but is not a readable file"):
        mnist.prepare(tiny_copy, subset=True)
    assert no_network == []  # refused before any download was tried


def test_a_huge_file_that_is_no_idx_file_is_refused_without_reading_it(tiny_copy):
    path = raw(tiny_copy) / "train-images-idx3-ubyte"
    with open(path, "r+b") as f:
        f.truncate(64 * 2**30)  # 64 GiB, sparse: reading it whole would exhaust the memory
    start = time.monotonic()
    with pytest.raises(mnist.MNISTDataError, match="truncated or corrupt"):
        mnist.prepare(tiny_copy, subset=True)
    assert time.monotonic() - start < 5


def pack(folder):
    """Replace the four raw files in `folder` by .gz copies of them."""
    for name in mnist.ALL_RAW_FILES:
        (folder / f"{name}.gz").write_bytes(gzip.compress((folder / name).read_bytes()))
        (folder / name).unlink()


def test_gz_files_alone_are_unpacked_and_read(tiny_copy, no_network):
    folder = raw(tiny_copy)
    expected = utils.get_data_loaders(data_dir=tiny_copy)[1].dataset.images.clone()
    pack(folder)
    assert mnist.prepare(tiny_copy, download=False, subset=True) == TINY
    assert all((folder / name).is_file() for name in mnist.ALL_RAW_FILES)
    _, test_loader = utils.get_data_loaders(data_dir=tiny_copy, download=False)
    assert torch.equal(test_loader.dataset.images, expected)
    assert no_network == []


def test_corrupt_gz_file_is_named(tiny_copy):
    folder = raw(tiny_copy)
    (folder / "train-labels-idx1-ubyte").unlink()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tiny_copy, download=False, subset=True)
    message = str(info.value)
    assert f"{folder / 'train-labels-idx1-ubyte.gz'} could not be unpacked" in message
    assert "damaged" in message and "Delete the file" in message
    assert not (folder / "train-labels-idx1-ubyte").exists()


@pytest.mark.parametrize("code", mnist.READ_ONLY, ids=errno.errorcode.get)
def test_good_gz_files_in_a_read_only_folder_say_where_to_copy_them(
    tiny_copy, monkeypatch, no_network, code
):
    """A read-only mount (EROFS), or a folder one may not write to (EACCES, EPERM)."""
    folder = raw(tiny_copy)
    pack(folder)
    before = snapshot(tiny_copy)

    def refuse(*args, dir=None, **kwargs):
        # What the system answers there (chmod does not stop root, so it is played here).
        raise OSError(code, os.strerror(code), dir)

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tiny_copy)
    message = str(info.value)
    assert f"{folder / mnist.ALL_RAW_FILES[0]}.gz is a good archive" in message
    assert f"{folder} is read-only" in message
    assert f"cp -r {folder.parent} data/" in message and "DATA_DIR" in message
    assert "Delete the file" not in message and "damaged" not in message
    assert "Free disk space" not in message and os.strerror(code) in message
    assert snapshot(tiny_copy) == before
    assert no_network == []


def test_a_full_disk_while_unpacking_says_to_free_space(tiny_copy, monkeypatch):
    folder = raw(tiny_copy)
    pack(folder)

    def full(*args, dir=None, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), dir)

    monkeypatch.setattr(tempfile, "mkstemp", full)
    with pytest.raises(mnist.MNISTDataError, match="could not be unpacked.*Free disk space"):
        mnist.prepare(tiny_copy, subset=True)


def fake_download(n_bytes=None, error=None):
    """A stand-in for MNIST.download: writes the files (cut to n_bytes), then raises `error`."""

    def download(self):
        make_tiny_mnist(Path(self.root), seed=0)
        if n_bytes is not None:
            for path in Path(self.raw_folder).iterdir():
                path.write_bytes(path.read_bytes()[:n_bytes])
        if error is not None:
            raise error

    return download


def test_a_download_fills_the_missing_files(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download())
    timeout = socket.getdefaulttimeout()
    assert mnist.prepare(tmp_path, subset=True) == TINY
    assert sorted(p.name for p in files_under(tmp_path)) == sorted(mnist.ALL_RAW_FILES)
    assert socket.getdefaulttimeout() == timeout  # the download's timeout was put back


def test_interrupted_download_leaves_no_partial_file(tmp_path, monkeypatch):
    monkeypatch.setattr(
        torchvision.datasets.MNIST,
        "download",
        fake_download(n_bytes=100, error=KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        mnist.prepare(tmp_path, subset=True)
    assert files_under(tmp_path) == []
    # A later run with a working connection then downloads, and the loaders read the files.
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", fake_download())
    assert mnist.prepare(tmp_path, subset=True) == TINY
    assert sorted(p.name for p in files_under(tmp_path)) == sorted(mnist.ALL_RAW_FILES)
    train_loader, _ = utils.get_data_loaders(data_dir=tmp_path, download=False)
    assert len(train_loader.dataset) == TINY_TRAIN


def test_failed_download_reports_the_cause(tmp_path, monkeypatch):
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "download", fake_download(error=RuntimeError("mirror down"))
    )
    with pytest.raises(mnist.MNISTDataError, match="RuntimeError: mirror down"):
        mnist.prepare(tmp_path)
    assert files_under(tmp_path) == []


def test_download_error_keeps_its_whole_cause(tmp_path, monkeypatch):
    cause = (
        "Error downloading t10k-images-idx3-ubyte.gz:\n"
        "Tried https://mirror/, got:\n<urlopen error refused>\n"
    )
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "download", fake_download(error=RuntimeError(cause))
    )
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(tmp_path / "data")
    assert "gz: Tried https://mirror/, got: <urlopen error refused>)" in str(info.value)


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
    monkeypatch.setattr(mnist, "DOWNLOAD_TIMEOUT_S", 0.25)
    mistyped = tmp_path / "dta"
    timeout = socket.getdefaulttimeout()
    start = time.monotonic()
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(mistyped)
    assert time.monotonic() - start < 10  # 0.25 s per socket operation, a few operations
    assert "download failed" in str(info.value) and "timed out" in str(info.value)
    assert not mistyped.exists()  # no empty MNIST/raw tree, no .download-* folder
    assert list(tmp_path.iterdir()) == []
    assert socket.getdefaulttimeout() == timeout


def test_an_old_torchvision_cache_is_refused_naming_it(tiny_copy):
    """torchvision reads MNIST/processed/*.pt before the raw files, which are the ones checked."""
    processed = tiny_copy / "MNIST" / "processed"
    processed.mkdir()
    stale = (torch.zeros(5, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64))
    for name in ("training.pt", "test.pt"):
        torch.save(stale, processed / name)
    with pytest.raises(mnist.MNISTDataError, match=f"Delete {processed}"):
        mnist.prepare(tiny_copy, subset=True)


def test_the_copy_to_make_of_a_read_only_folder_with_spaces_is_quoted(
    tiny_root, tmp_path, monkeypatch
):
    """`cp -r <folder> data/` was given unquoted, so pasted into a shell it copied nothing."""
    root = tmp_path / "my data ü"
    shutil.copytree(tiny_root, root)
    pack(raw(root))

    def read_only_mount(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), dir)

    monkeypatch.setattr(tempfile, "mkstemp", read_only_mount)
    with pytest.raises(mnist.MNISTDataError) as info:
        mnist.prepare(root)
    command = re.search(r"`(cp -r .*?)`", str(info.value)).group(1)
    assert shlex.split(command) == ["cp", "-r", str(raw(root).parent), "data/"]
