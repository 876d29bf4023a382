"""The MNIST train and test DataLoaders, their transforms, and the seed and device to train with.

`get_data_loaders()` (also named `transforms_data()`) is the entry point. It needs only torch and
torchvision: copy this file beside a notebook of your own and it works there. torchvision reads
(and, with download=True, fetches) MNIST in its usual layout, <data_dir>/MNIST/raw/.
Importing this module reads, downloads and prints nothing.
"""

import itertools
import math
import numbers
import os
import random
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

# Mean and std of the MNIST training pixels, scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# The training loader builds about this many images at a time (see MNISTLoader): enough to spread
# the per-batch overhead, few enough to stay in the CPU's cache.
CHUNK_IMAGES = 1024
# The raw files torchvision.datasets.MNIST reads under <data_dir>/MNIST/raw/, with the number of
# dimensions each holds: (N, 28, 28) images, (N,) labels.
RAW_FILES = {
    "train-images-idx3-ubyte": 3,
    "train-labels-idx1-ubyte": 1,
    "t10k-images-idx3-ubyte": 3,
    "t10k-labels-idx1-ubyte": 1,
}


class BatchRandomAffine(torch.nn.Module):
    """Rotate, shift and scale every image of a (B, 1, H, W) batch by its own random amount.

    Rotation up to +-`degrees`, shift up to +-`shift` of the image size, zoom by a factor
    in [1 - `scale`, 1 + `scale`]; pixels moved in from outside the image are 0 (background).
    """

    def __init__(self, degrees: float = 10.0, shift: float = 0.1, scale: float = 0.1):
        super().__init__()
        self.degrees = degrees
        self.shift = shift
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, height, width = x.shape
        # One draw in [-1, 1) per image for each of: angle, zoom, horizontal and vertical shift.
        # (One tensor op each, not one per image: this runs for every training batch.)
        angle, zoom, dx, dy = (torch.rand(4, n, 1, 1, 1, device=x.device) * 2 - 1).unbind()
        angle = angle * math.radians(self.degrees)
        zoom = 1 + zoom * self.scale
        # Where each output pixel reads the input, in grid_sample's (x, y) coordinates: -1 and 1
        # are the image's outer edges, so one image width is 2 units. Each pixel centre is rotated,
        # scaled (dividing by the zoom enlarges the digit) and shifted: what F.affine_grid computes,
        # here as one broadcast sum instead of a batched matrix product over a grid built per image.
        # (n, 2, 1, 1) coefficients of a pixel's x and y for its new x (first) and y (second):
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        of_x, of_y = torch.cat([cos, sin], dim=1), torch.cat([-sin, cos], dim=1)
        across = pixel_centres(width, x).view(1, 1, 1, width)
        down = pixel_centres(height, x).view(1, 1, height, 1)
        shift = torch.cat([dx, dy], dim=1) * (2 * self.shift)
        grid = (of_x * across + shift) + of_y * down  # (n, 2, height, width)
        grid = grid.permute(0, 2, 3, 1)  # the (n, height, width, 2) grid_sample reads, as a view
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)

    def extra_repr(self):
        return f"degrees={self.degrees}, shift={self.shift}, scale={self.scale}"


def pixel_centres(size: int, like: torch.Tensor) -> torch.Tensor:
    """The centres of `size` pixels in a row, in [-1, 1] coordinates whose ends are the row's
    outer edges (grid_sample's align_corners=False)."""
    return (torch.arange(size, dtype=like.dtype, device=like.device) * 2 + 1) / size - 1


def train_transform(
    augment: bool = True, rotation: float = 10.0, shift: float = 0.1, zoom: float = 0.1
) -> transforms.Compose:
    """Batch transform for training: optional random affine on [0, 1] pixels, then normalise."""
    steps = [BatchRandomAffine(rotation, shift, zoom)] if augment else []
    return transforms.Compose(steps + [transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])


def test_transform() -> transforms.Normalize:
    """Batch transform for testing: normalise only, so every pass sees the same pixels."""
    return transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))


class MNISTBatches(Dataset):
    """An MNIST split held in memory as uint8, served and transformed a whole batch at a time.

    DataLoader calls __getitems__ with all indices of a batch, so the transform runs once per
    batch on a float (B, 1, 28, 28) tensor instead of once per image through PIL. `root` is the
    folder the images were read from.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None, root=None):
        self.images = images
        self.labels = labels
        self.transform = transform
        self.root = root

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, device=self.images.device)
        # index_select gathers whole images at once (indexing with [] goes pixel by pixel).
        x = self.images.index_select(0, index).unsqueeze(1).float().div_(255)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels.index_select(0, index)


class MNISTLoader(DataLoader):
    """A DataLoader of MNISTBatches that, without workers, builds a few batches at a time.

    Every `chunk` batches of indices the sampler gives are gathered and transformed in one call,
    then handed out one batch at a time, in the sampler's order. A training batch's augmentation
    is a few dozen small tensor ops whose overhead, paid between every two training steps, costs
    more than their arithmetic; built in chunks, it costs a fraction. With workers, each worker
    builds whole batches, as in any DataLoader.
    """

    def __init__(self, dataset: MNISTBatches, *, chunk: int = 1, **kwargs):
        super().__init__(dataset, **kwargs)
        self.chunk = chunk

    def __iter__(self):
        if self.num_workers or self.chunk == 1:
            yield from super().__iter__()
            return
        batches = iter(self.batch_sampler)
        while group := list(itertools.islice(batches, self.chunk)):
            images, labels = self.dataset.__getitems__([i for batch in group for i in batch])
            if self.pin_memory:
                images, labels = images.pin_memory(), labels.pin_memory()
            sizes = [len(batch) for batch in group]
            yield from zip(images.split(sizes), labels.split(sizes))


def keep_batch(batch):
    """collate_fn for MNISTBatches: __getitems__ already returns a collated (x, y) batch."""
    return batch


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


def get_data_loaders(
    batch_size: int = 128,
    test_batch_size: int = 1000,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    augment: bool = True,
    rotation: float = 10.0,
    shift: float = 0.1,
    zoom: float = 0.1,
    num_workers: int = 0,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    max_samples: int | None = None,
) -> tuple[DataLoader, DataLoader]:
    """Build the MNIST (train_loader, test_loader).

    Both splits are normalised with the training mean and std; only the training split is
    shuffled and (with `augment`) randomly rotated (up to `rotation` degrees), shifted (up to
    `shift` of the image size) and zoomed (by up to `zoom` in or out). MNIST is read from
    `data_dir` (see resolve_data_dir) and downloaded there first when missing and `download`.
    `device` is where the data lives and batches are built: "cpu", or an accelerator to keep the
    whole set there. `num_workers=0` is the default because batches cost little to build and
    workers would compete with the model for the CPU cores. `seed` fixes the shuffling and the
    augmentation in workers. `max_samples` keeps the first n images of each split (smoke runs).
    A bad argument, or a missing or damaged file, is refused by name before any data is read.
    """
    # As plain ints: DataLoader and manual_seed refuse NumPy's integers, with misleading messages.
    batch_size = check_number("batch_size", batch_size, 1, integer=True, fix="Pass e.g. 128.")
    test_batch_size = check_number(
        "test_batch_size", test_batch_size, 1, integer=True, fix="Pass e.g. 1000."
    )
    num_workers = check_number("num_workers", num_workers, 0, integer=True, fix="Pass 0 for none.")
    fix = "Pass 0 for none, or augment=False for no augmentation."
    check_number("rotation", rotation, 0, fix=fix)
    check_number("shift", shift, 0, fix=fix)
    if shift > 0.5:  # shift=2, meant as pixels, would move most digits out of sight
        raise ValueError(f"shift must be a share of the image size up to 0.5; got {shift}. {fix}")
    check_number("zoom", zoom, 0, below=1, fix=fix)  # a zoom of 1 could scale a digit by 0
    if seed is not None:  # manual_seed's range (it takes a negative seed as 2**64 plus it)
        seed = check_number(
            "seed", seed, 0, below=2**64, integer=True, fix="Pass None for no seed."
        )
    if max_samples is not None:
        max_samples = check_number(
            "max_samples", max_samples, 1, integer=True, fix="Pass None for all images."
        )
    for name, value in (("download", download), ("augment", augment)):
        if not isinstance(value, bool):  # the string "False" is true
            raise ValueError(f"{name} must be True or False; got {value!r}. A string is true.")
    device = torch.device(device)
    if num_workers and device.type != "cpu":
        raise ValueError(
            f"num_workers={num_workers} needs the data on the CPU, but device={device}. "
            "Use num_workers=0 when the data lives on an accelerator."
        )
    check_device(device)
    root = resolve_data_dir(data_dir)
    check_mnist_files(root, download)
    splits = {}
    for train in (True, False):
        split = datasets.MNIST(root, train=train, download=download)
        images, labels = split.data[:max_samples], split.targets[:max_samples]
        splits[train] = (images.to(device), labels.to(device))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    common = dict(
        num_workers=num_workers,
        collate_fn=keep_batch,
        # Pinned memory only helps copies from the CPU to a CUDA device.
        pin_memory=device.type == "cpu" and torch.cuda.is_available(),
        # Workers started afresh for each pass draw their seeds from the loader's generator (the
        # global one for the test loader), so a run that puts the generators back after a stop
        # draws every random number as a run that never stopped.
        persistent_workers=False,
    )
    train_loader = MNISTLoader(
        MNISTBatches(*splits[True], train_transform(augment, rotation, shift, zoom), root),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        chunk=max(1, CHUNK_IMAGES // batch_size),
        **common,
    )
    test_loader = MNISTLoader(
        MNISTBatches(*splits[False], test_transform(), root),
        batch_size=test_batch_size,
        shuffle=False,
        **common,
    )
    return train_loader, test_loader


# The course template's name for the same function.
transforms_data = get_data_loaders


def check_number(
    name: str, value: object, low: int, below: float = math.inf, *, integer: bool = False, fix: str
) -> numbers.Real:
    """`value` (as an int if `integer`) when it is a number (never a bool) with
    low <= value < below; else ValueError naming `name`, ending with `fix`."""
    kind = numbers.Integral if integer else numbers.Real
    # NaN fails every comparison, and infinity is not below math.inf: both are refused.
    if not isinstance(value, bool) and isinstance(value, kind) and low <= value < below:
        return int(value) if integer else value
    number = "an int" if integer else "a finite number"
    allowed = f"{number} >= {low}" if below == math.inf else f"{number} in [{low}, {below})"
    raise ValueError(f"{name} must be {allowed}; got {value!r}. {fix}")


def missing_device(device: torch.device) -> str | None:
    """None when `device` is the CPU or this machine's accelerator, else what it has instead."""
    here = get_device()
    if device.type in ("cpu", here.type):
        return None
    return "only the CPU" if here.type == "cpu" else str(here)


def check_device(device: torch.device) -> None:
    """ValueError unless `device` is the CPU or this machine's accelerator."""
    if has := missing_device(device):
        raise ValueError(
            f"device={str(device)!r}: this machine has no {device.type} device to hold the data "
            f'({has}). Pass device=utils.get_device() or "cpu".'
        )


def check_mnist_files(root: Path, download: bool) -> None:
    """Raise, naming the folder or file and the fix, unless MNIST's raw files under `root` are
    whole, or missing and about to be downloaded."""
    raw = (root / "MNIST" / "raw").absolute()
    file = next((path for path in (root, *root.parents) if path.is_file()), None)
    if file is not None:
        raise ValueError(
            f"The data folder {root} (data_dir, else $MNIST_DATA_DIR, else ./data) is not a "
            f"folder: {file} is a file. Pass as data_dir the folder that holds MNIST/raw/."
        )
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing and not download:
        # There, but no file: a link to nowhere, a folder, a pipe.
        found = [f"{n} (there, but not a file)" if os.path.lexists(raw / n) else n for n in missing]
        raise FileNotFoundError(
            f"MNIST was not found in {raw}: missing {', '.join(found)}. Pass data_dir (or set "
            "$MNIST_DATA_DIR) to the folder that holds MNIST/raw/, or pass download=True to "
            f"download it into {raw}."
        )
    if not missing:  # else torchvision downloads all four, checking their MD5 sums
        for name, ndim in RAW_FILES.items():
            check_idx_file(raw / name, ndim)


def check_idx_file(path: Path, ndim: int) -> None:
    """Raise RuntimeError unless `path` is as long as its header says: an idx file of uint8 with
    `ndim` dimensions, as torchvision reads them (reading only the header)."""
    header_size = 4 + 4 * ndim
    with open(path, "rb") as f:
        header = f.read(header_size)
        size = os.fstat(f.fileno()).st_size
    if len(header) == header_size and header[:4] == bytes([0, 0, 8, ndim]):
        expected = header_size + math.prod(struct.unpack(f">{ndim}I", header[4:]))
        if size == expected:
            return
        problem = f"is {size:,} bytes long but its header says {expected:,}"
    else:
        problem = f"does not start with the header of {ndim}-d uint8 idx data (00 00 08 0{ndim})"
    raise RuntimeError(
        f"{path} {problem}: it is truncated or corrupt. Delete it and run again with "
        f"download=True, or copy a good {path.name} into {path.parent}."
    )


def set_seed(seed: int) -> None:
    """Seed Python's and PyTorch's random generators (CPU and every accelerator)."""
    random.seed(seed)
    torch.manual_seed(seed)


def get_device() -> torch.device:
    """The current accelerator (CUDA, MPS, XPU, ...) when there is one, else the CPU."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")
