"""The MNIST files, checked before the notebook reads them: present, whole, and the right split.

`prepare(data_dir)` makes sure the four raw idx files that torchvision.datasets.MNIST reads are
under <data_dir>/MNIST/raw/ (unpacking .gz copies, else downloading) and checks each one, so a
missing, damaged or swapped file stops the notebook with its name and the fix before any
training. Importing this module reads, downloads and prints nothing.
"""

import errno
import gzip
import os
import shlex
import shutil
import socket
import struct
import tempfile
import zlib
from pathlib import Path

from torchvision import datasets

import utils
from workbench.files import atomic_write, one_line

# The four raw files torchvision.datasets.MNIST reads, under <data_dir>/MNIST/raw/ (utils names
# them), by split: {train: (images, labels)}.
ALL_RAW_FILES = tuple(utils.RAW_FILES)
RAW_FILES = {
    train: tuple(name for name in ALL_RAW_FILES if name.startswith(prefix))
    for train, prefix in ((True, "train-"), (False, "t10k-"))
}
# Images in each split of MNIST as published: {train: count}.
SPLIT_SIZES = {True: 60_000, False: 10_000}
TRAIN_IMAGES = SPLIT_SIZES[True]


class MNISTDataError(RuntimeError):
    """MNIST files are missing or unreadable; the message says how to fix it."""


# What the system answers where a file cannot be written: a read-only mount (EROFS), no permission.
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
# Seconds a download may wait on one socket operation: a proxy or mirror that accepts the
# connection and never answers then fails the download instead of hanging it.
DOWNLOAD_TIMEOUT_S = 20


def raw_folder(data_dir: str | os.PathLike) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def prepare(
    data_dir: str | os.PathLike | None = None, download: bool = True, subset: bool = False
) -> dict[bool, int]:
    """Make sure the four raw files are there and sound; return {train: images in that split}.

    MNIST's splits hold 60,000 and 10,000 images: other counts are refused unless `subset` (a
    smoke run, which uses only the first few images of each), and a training split smaller than
    the test split (the files swapped) always is. Raises MNISTDataError naming the file and fix.
    """
    root = utils.resolve_data_dir(data_dir)
    check_data_folder(root, data_dir)
    check_no_legacy_cache(root)
    ensure_mnist_files(root, download)
    folder = raw_folder(root)
    sizes = {}
    for train, (images_name, labels_name) in RAW_FILES.items():
        images = check_idx_file(folder / images_name, ndim=utils.RAW_FILES[images_name])
        labels = check_idx_file(folder / labels_name, ndim=utils.RAW_FILES[labels_name], read=True)
        if images != len(labels):
            raise MNISTDataError(
                f"{folder / images_name} holds {images} images but {folder / labels_name} holds "
                f"{len(labels)} labels. {_redownload_hint(folder)}"
            )
        if max(labels) > 9:
            raise MNISTDataError(
                f"{folder / labels_name} holds labels outside 0-9, so it is corrupt. "
                + _redownload_hint(folder)
            )
        sizes[train] = images
    check_split_sizes(folder, sizes, subset)
    return sizes


def check_data_folder(root: Path, data_dir: str | os.PathLike | None) -> None:
    """MNISTDataError, naming DATA_DIR, when the data folder is a file (utils' check), or when a
    raw file there is not whole."""
    try:
        utils.check_mnist_files(root, download=True)  # missing files: downloaded below
    except ValueError as err:
        given = (
            f"DATA_DIR = {str(data_dir)!r}"
            if data_dir
            else "$MNIST_DATA_DIR (DATA_DIR is None)"
            if os.environ.get("MNIST_DATA_DIR")
            else "./data (DATA_DIR is None)"
        )
        where = "is a file" if root.is_file() else "lies inside a file"
        raise MNISTDataError(
            f"{given} is not a folder: {root} {where}. Set DATA_DIR to the folder that holds "
            "MNIST/raw/ (or to None: $MNIST_DATA_DIR, else ./data)."
        ) from err
    except RuntimeError as err:  # truncated or corrupt
        raise MNISTDataError(str(err)) from None


def check_no_legacy_cache(root: Path) -> None:
    """MNISTDataError when an old torchvision's processed/ cache would be read instead of raw/."""
    processed = Path(root) / "MNIST" / "processed"
    if all((processed / name).is_file() for name in ("training.pt", "test.pt")):
        raise MNISTDataError(
            f"{processed} holds training.pt and test.pt, a cache an old torchvision wrote: "
            f"torchvision reads it instead of the raw files, which are the ones checked here. "
            f"Delete {processed} (the raw files are all that is needed)."
        )


def check_split_sizes(folder: Path, sizes: dict[bool, int], subset: bool) -> None:
    """MNISTDataError unless each split holds MNIST's count (any count when `subset`)."""
    names = {train: f"{RAW_FILES[train][0]} and {RAW_FILES[train][1]}" for train in RAW_FILES}
    if sizes[True] < sizes[False]:
        raise MNISTDataError(
            f"In {folder}, the training files ({names[True]}) hold {sizes[True]} images and the "
            f"test files ({names[False]}) {sizes[False]}: the training split is the larger one, "
            "so the two look swapped. Put the 60,000 training images under the train-* names "
            "and the 10,000 test images under the t10k-* names."
        )
    wrong = [train for train in RAW_FILES if sizes[train] != SPLIT_SIZES[train]]
    if wrong and not subset:
        what = "; ".join(
            f"{names[t]} hold {sizes[t]:,} images, not MNIST's {SPLIT_SIZES[t]:,}" for t in wrong
        )
        raise MNISTDataError(
            f"In {folder}: {what}. Accuracy measured on other files is no MNIST figure: point "
            "DATA_DIR at the real MNIST, or set SMOKE = True for a quick run on part of it."
        )


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
        "To fix it, either set MNIST_DATA_DIR (or DATA_DIR) to a folder that holds "
        "MNIST/raw/<those four files>, e.g. `export MNIST_DATA_DIR=../shared/data`, "
        f"or put the four files into {folder.resolve()} yourself."
    )


def _unpack(packed: Path, target: Path) -> None:
    """Decompress a .gz raw file beside itself, as torchvision does after a download."""
    try:
        with gzip.open(packed, "rb") as src:
            src.peek(1)  # a file that is no gzip archive fails here, before anything is written
            atomic_write(target, lambda f: shutil.copyfileobj(src, f))
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:
        raise MNISTDataError(
            f"{packed} could not be unpacked into {target} ({type(err).__name__}: "
            f"{one_line(err)}): it is damaged. {_redownload_hint(packed.parent)}"
        ) from err
    except OSError as err:
        if err.errno not in READ_ONLY:
            raise MNISTDataError(
                f"{packed} could not be unpacked into {target} ({type(err).__name__}: "
                f"{one_line(err)}). Free disk space or copy {packed.parent.parent} to a folder "
                "with room, and set DATA_DIR to that folder's parent."
            ) from err
        raise MNISTDataError(
            f"{packed} is a good archive, but {packed.parent} is read-only, so it cannot be "
            f"unpacked there for torchvision to read ({one_line(err)}). Unpack it where you can "
            f"write: copy {packed.parent.parent} to a folder of yours (e.g. `cp -r "
            f"{shlex.quote(str(packed.parent.parent))} data/`) and set DATA_DIR to that folder's "
            "parent (data)."
        ) from err


def _download_missing(root: Path, missing: list[str]) -> None:
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


def check_idx_file(path: Path, ndim: int, read: bool = False) -> int | bytes:
    """The item count of the idx file at `path` after checking that it is complete (utils'
    check) and of 28x28 images; with `read`, its data (bytes).

    ndim 3 means (N, 28, 28) images, ndim 1 means (N,) labels.
    """
    try:
        utils.check_idx_file(path, ndim)  # the header and the size it gives, only
    except RuntimeError as err:
        raise MNISTDataError(str(err)) from None
    with open(path, "rb") as f:  # as long as its header says: so a huge file is never read
        dims = struct.unpack(f">{ndim}I", f.read(4 + 4 * ndim)[4:])
        data = f.read() if read else b""
    if dims[1:] != (28, 28)[: ndim - 1]:
        raise MNISTDataError(
            f"{path} holds images of {dims[1]}x{dims[2]} pixels, not MNIST's 28x28. "
            + _redownload_hint(path.parent)
        )
    if dims[0] == 0:
        raise MNISTDataError(
            f"{path} is a well-formed idx file with 0 {'images' if ndim == 3 else 'labels'}. "
            + _redownload_hint(path.parent)
        )
    return data if read else dims[0]


def _redownload_hint(folder: Path) -> str:
    return (
        "Delete the file and run again with download=True to fetch a fresh copy "
        f"(or copy a good one into {folder})."
    )
