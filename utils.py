"""The MNIST train and test DataLoaders, their transforms, and the seed and device to train with.

`get_data_loaders()` (also named `transforms_data()`) is the entry point. The other helpers of the
notebook live in modules of their own beside this one (mnist: the files; files; checkpoints;
plots; analysis; parameters; cells; runs; resume; provenance); `moved` keeps old names working.
Importing this module reads, downloads and prints nothing.
"""

import math
import os
import random

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import moved
from mnist import MNIST_MEAN, MNIST_STD, load_mnist


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
        n = x.shape[0]

        def uniform(*size):
            return torch.rand(*size, device=x.device) * 2 - 1

        angle = uniform(n) * math.radians(self.degrees)
        zoom = 1 + uniform(n) * self.scale
        # affine_grid maps output to input coordinates in [-1, 1]: one image width is 2 units,
        # and dividing by the zoom enlarges the digit.
        offset = uniform(n, 2) * (2 * self.shift)
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        theta = torch.stack(
            [torch.stack([cos, -sin, offset[:, 0]], 1), torch.stack([sin, cos, offset[:, 1]], 1)], 1
        )
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)

    def extra_repr(self):
        return f"degrees={self.degrees}, shift={self.shift}, scale={self.scale}"


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
    batch on a float (B, 1, 28, 28) tensor instead of once per image through PIL.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None):
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        x, y = self.__getitems__([index])
        return x[0], y[0]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, device=self.images.device)
        x = self.images[index].unsqueeze(1).float().div_(255)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]


def keep_batch(batch):
    """collate_fn for MNISTBatches: __getitems__ already returns a collated (x, y) batch."""
    return batch


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
    `shift` of the image size) and zoomed (by up to `zoom` in or out). `device` is where the data
    lives and batches are built: "cpu", or an accelerator to keep the whole set there.
    `num_workers=0` is the default because batches cost little to build and workers would
    compete with the model for the CPU cores. `seed` fixes the shuffling and the augmentation
    in workers. `max_samples` keeps the first n images of each split (for smoke runs).
    """
    device = torch.device(device)
    if num_workers and device.type != "cpu":
        raise ValueError(
            f"num_workers={num_workers} needs the data on the CPU, but device={device}. "
            "Use num_workers=0 when the data lives on an accelerator."
        )
    splits = {}
    for train in (True, False):
        images, labels = load_mnist(data_dir, train=train, download=download)
        splits[train] = (images[:max_samples].to(device), labels[:max_samples].to(device))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    common = dict(
        num_workers=num_workers,
        collate_fn=keep_batch,
        # Pinned memory only helps copies from the CPU to a CUDA device.
        pin_memory=device.type == "cpu" and torch.cuda.is_available(),
        # Workers started afresh for each pass draw their seeds from the loader's generator (the
        # global one for the test loader), so a resumed run (resume.py puts the generators back)
        # draws every random number as a run that never stopped.
        persistent_workers=False,
    )
    train_loader = DataLoader(
        MNISTBatches(*splits[True], train_transform(augment, rotation, shift, zoom)),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        **common,
    )
    test_loader = DataLoader(
        MNISTBatches(*splits[False], test_transform()),
        batch_size=test_batch_size,
        shuffle=False,
        **common,
    )
    return train_loader, test_loader


# The name the user's description gives the loader builder; one implementation behind both.
transforms_data = get_data_loaders


def set_seed(seed: int) -> None:
    """Seed Python's and PyTorch's random generators (CPU and every accelerator)."""
    random.seed(seed)
    torch.manual_seed(seed)


def get_device() -> torch.device:
    """The current accelerator (CUDA, MPS, XPU, ...) when there is one, else the CPU."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")


# Names that lived here before the helpers got modules of their own. They still work, with a
# DeprecationWarning naming the new home; the notebook and the project import from there.
MOVED = moved.homes(
    mnist=("MNISTDataError", "RAW_FILES", "ALL_RAW_FILES", "DOWNLOAD_TIMEOUT_S", "resolve_data_dir",
           "raw_folder", "ensure_mnist_files", "read_idx_file"),
    files=("atomic_write", "current_umask", "save_json"),
    checkpoints=("CheckpointError", "save_weights", "load_weights", "all_finite",
                 "check_checkpoint_format", "unwrap_state_dict", "check_state_dict"),
    analysis=("predict", "shifted_views", "confusion_matrix", "per_class_accuracy",
              "misclassified"),
    plots=("denormalize", "image_grid", "plot_samples", "finish", "CURVE_PANELS", "plot_curves",
           "epoch_axis", "cap_percent_axis", "plot_confusion_matrix", "plot_misclassified"),
)  # fmt: skip
__getattr__ = moved.forwarder("utils", MOVED)
__all__ = [
    "MNIST_MEAN", "MNIST_STD", "BatchRandomAffine", "MNISTBatches", "get_data_loaders",
    "get_device", "keep_batch", "load_mnist", "set_seed", "test_transform", "train_transform",
    "transforms_data", *MOVED,
]  # fmt: skip
