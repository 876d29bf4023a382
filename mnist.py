"""The MNIST files: where they are, checking them, unpacking and downloading them.

`load_mnist` gives one split as uint8 tensors, read only from the four raw idx files that
torchvision.datasets.MNIST keeps under <data_dir>/MNIST/raw/. Importing this module reads,
downloads and prints nothing.
"""

import gzip
import math
import os
import shutil
import socket
import struct
import tempfile
import zlib
from pathlib import Path

import torch
from torchvision import datasets

from files import atomic_write, one_line

# Mean and std of the MNIST training pixels, scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# The four raw files torchvision.datasets.MNIST reads, under <data_dir>/MNIST/raw/.
RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_RAW_FILES = RAW_FILES[True] + RAW_FILES[False]
TRAIN_IMAGES = 60_000  # in the training split


class MNISTDataError(RuntimeError):
    """MNIST files are missing or unreadable; the message says how to fix it."""


# Seconds a download may wait on one socket operation: a proxy or mirror that accepts the
# connection and never answers then fails the download instead of hanging it.
DOWNLOAD_TIMEOUT_S = 20


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: `data_dir`, else $MNIST_DATA_DIR, else ./data.

    A path to the MNIST or MNIST/raw folder itself is taken to mean the folder above MNIST.
    """
    root = Path(data_dir or os.environ.get("MNIST_DATA_DIR") or "data").expanduser()
    if root.name == "raw" and root.parent.name == "MNIST":
        return root.parent.parent
    if root.name == "MNIST" and (root / "raw").is_dir():
        return root.parent
    return root


def raw_folder(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def load_mnist(
    data_dir: str | os.PathLike | None = None, train: bool = True, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """One split as (uint8 images of shape (N, 28, 28), int64 labels of shape (N,)).

    Downloads the files first when they are missing and `download` is true. Only the raw idx
    files are read: a processed/*.pt cache left by an old torchvision is ignored.
    """
    root = resolve_data_dir(data_dir)
    ensure_mnist_files(root, download)
    images_path, labels_path = (raw_folder(root) / name for name in RAW_FILES[train])
    images = read_idx_file(images_path, ndim=3)
    labels = read_idx_file(labels_path, ndim=1).long()
    if len(images) != len(labels):
        raise MNISTDataError(
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels. {_redownload_hint(raw_folder(root))}"
        )
    if int(labels.max()) > 9:
        raise MNISTDataError(
            f"{labels_path} holds labels outside 0-9, so it is corrupt. "
            + _redownload_hint(raw_folder(root))
        )
    return images, labels


def ensure_mnist_files(root: Path, download: bool) -> None:
    """Make sure the four raw files exist under root: unpack .gz copies, else download."""
    folder = raw_folder(root)
    for name in ALL_RAW_FILES:
        packed = folder / f"{name}.gz"
        if not (folder / name).is_file() and packed.is_file():
            _unpack(packed, folder / name)
    for name in ALL_RAW_FILES:
        path = folder / name
        if os.path.lexists(path) and not path.is_file():
            raise MNISTDataError(
                f"{path} is there but is not a readable file (a folder, a broken link or a "
                f"link loop). Replace it with the MNIST file {name}. " + _redownload_hint(folder)
            )
    missing = [name for name in ALL_RAW_FILES if not (folder / name).is_file()]
    if not missing:
        return  # Present files are only read: the folder may be read-only.
    reason = "download=False was given"
    if download:
        try:
            _download_missing(root, missing)
            return
        except Exception as err:  # any failure: offline, mirror down, disk full, ...
            reason = f"the download failed ({type(err).__name__}: {one_line(err)})"
    raise MNISTDataError(
        f"MNIST was not found in {folder.resolve()}: missing {', '.join(missing)}, "
        f"and {reason}. Expected the four files {', '.join(ALL_RAW_FILES)} in that folder. "
        "To fix it, either set MNIST_DATA_DIR (or pass data_dir=) to a folder that holds "
        "MNIST/raw/<those four files>, e.g. `export MNIST_DATA_DIR=../shared/data`, "
        f"or put the four files into {folder.resolve()} yourself."
    )


def _unpack(packed, target):
    """Decompress a .gz raw file beside itself, as torchvision does after a download."""
    try:
        with gzip.open(packed, "rb") as src:
            atomic_write(target, lambda f: shutil.copyfileobj(src, f))
    except (OSError, EOFError, zlib.error) as err:
        raise MNISTDataError(
            f"{packed} could not be unpacked into {target} ({type(err).__name__}: "
            f"{one_line(err)}). {_redownload_hint(packed.parent)}"
        ) from err


def _download_missing(root, missing):
    """Download MNIST next to its final place, then move the missing files in.

    Files appear under their real names only once complete, so an interrupted download
    never leaves a partial file that a later run would take for a good one; a failed one
    leaves no folder behind that was not there before.
    """
    target = raw_folder(root)
    created = [p for p in (target, *target.parents) if not p.exists()]
    target.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target))
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        datasets.MNIST(staging, train=False, download=True)
        for name in missing:
            os.replace(raw_folder(staging) / name, target / name)
    finally:
        socket.setdefaulttimeout(previous_timeout)
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:  # innermost first; after a failure they are empty, and go
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def read_idx_file(path: str | os.PathLike, ndim: int) -> torch.Tensor:
    """The uint8 tensor in the idx file at `path`, after checking that the file is complete.

    ndim 3 means (N, 28, 28) images, ndim 1 means (N,) labels; the file size must match exactly.
    """
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        # The header and the file's size are checked before the data is read, so a huge file
        # that is no idx file is refused at once instead of filling the memory.
        header = f.read(header_size)
        dims = None
        if len(header) == header_size and header[:4] == bytes([0, 0, 8, ndim]):
            dims = struct.unpack(f">{ndim}I", header[4:])
            size = os.fstat(f.fileno()).st_size
            if dims[1:] != (28, 28)[: ndim - 1] or size != header_size + math.prod(dims):
                dims = None
        data = f.read() if dims is not None else b""
    if dims is None:
        raise MNISTDataError(
            f"{path} is truncated or corrupt: it is not a complete MNIST idx file. "
            + _redownload_hint(Path(path).parent)
        )
    if dims[0] == 0:
        raise MNISTDataError(
            f"{path} is a well-formed idx file with 0 {'images' if ndim == 3 else 'labels'}. "
            + _redownload_hint(Path(path).parent)
        )
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dims)


def _redownload_hint(folder):
    return (
        "Delete the file and run again with download=True to fetch a fresh copy "
        f"(or copy a good one into {folder})."
    )
