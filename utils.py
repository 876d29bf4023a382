"""Data loaders and the small helpers the S5 notebook needs.

Importing this module reads, downloads and prints nothing; every function does its work
only when called.
"""

import gzip
import json
import math
import os
import pickle
import random
import shutil
import socket
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

# Mean and std of the MNIST training pixels, scaled to [0, 1].
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

# The four raw files torchvision.datasets.MNIST reads, under <data_dir>/MNIST/raw/.
RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ALL_RAW_FILES = RAW_FILES[True] + RAW_FILES[False]


class MNISTDataError(RuntimeError):
    """MNIST files are missing or unreadable; the message says how to fix it."""


class CheckpointError(ValueError):
    """A weights file cannot be loaded safely into the model; the message says why."""


# Seconds a download may wait on one socket operation: a proxy or mirror that accepts the
# connection and never answers then fails the download instead of hanging it.
DOWNLOAD_TIMEOUT_S = 20


def resolve_data_dir(data_dir=None):
    """The data folder: `data_dir`, else $MNIST_DATA_DIR, else ./data.

    A path to the MNIST or MNIST/raw folder itself is taken to mean the folder above MNIST.
    """
    root = Path(data_dir or os.environ.get("MNIST_DATA_DIR") or "data")
    if root.name == "raw" and root.parent.name == "MNIST":
        return root.parent.parent
    if root.name == "MNIST" and (root / "raw").is_dir():
        return root.parent
    return root


def raw_folder(data_dir):
    return Path(data_dir) / "MNIST" / "raw"


def load_mnist(data_dir=None, train=True, download=True):
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


def ensure_mnist_files(root, download):
    """Make sure the four raw files exist under root: unpack .gz copies, else download."""
    folder = raw_folder(root)
    for name in ALL_RAW_FILES:
        packed = folder / f"{name}.gz"
        if not (folder / name).is_file() and packed.is_file():
            _unpack(packed, folder / name)
    missing = [name for name in ALL_RAW_FILES if not (folder / name).is_file()]
    if not missing:
        return  # Present files are only read: the folder may be read-only.
    reason = "download=False was given"
    if download:
        try:
            _download_missing(root, missing)
            return
        except Exception as err:  # any failure: offline, mirror down, disk full, ...
            reason = f"the download failed ({type(err).__name__}: {_one_line(err)})"
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
            f"{_one_line(err)}). {_redownload_hint(packed.parent)}"
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


def read_idx_file(path, ndim):
    """The uint8 tensor in the idx file at `path`, after checking that the file is complete.

    ndim 3 means (N, 28, 28) images, ndim 1 means (N,) labels; the file size must match exactly.
    """
    header_size = 4 + 4 * ndim
    data = Path(path).read_bytes()
    header = data[:header_size]
    dims = None
    if len(header) == header_size and header[:4] == bytes([0, 0, 8, ndim]):
        dims = struct.unpack(f">{ndim}I", header[4:])
        if dims[1:] != (28, 28)[: ndim - 1] or len(data) != header_size + math.prod(dims):
            dims = None
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
    return torch.frombuffer(bytearray(data[header_size:]), dtype=torch.uint8).view(dims)


def _redownload_hint(folder):
    return (
        "Delete the file and run again with download=True to fetch a fresh copy "
        f"(or copy a good one into {folder})."
    )


def _one_line(err):
    """The whole message of `err` on one line (a download error spans several)."""
    return " ".join(str(err).split())


class BatchRandomAffine(torch.nn.Module):
    """Rotate, shift and scale every image of a (B, 1, H, W) batch by its own random amount.

    Rotation up to +-`degrees`, shift up to +-`shift` of the image size, zoom by a factor
    in [1 - `scale`, 1 + `scale`]; pixels moved in from outside the image are 0 (background).
    """

    def __init__(self, degrees=10.0, shift=0.1, scale=0.1):
        super().__init__()
        self.degrees = degrees
        self.shift = shift
        self.scale = scale

    def forward(self, x):
        n = x.shape[0]
        uniform = lambda *size: torch.rand(*size, device=x.device) * 2 - 1  # noqa: E731
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


def train_transform(augment=True, rotation=10.0, shift=0.1, zoom=0.1):
    """Batch transform for training: optional random affine on [0, 1] pixels, then normalise."""
    steps = [BatchRandomAffine(rotation, shift, zoom)] if augment else []
    return transforms.Compose(steps + [transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])


def test_transform():
    """Batch transform for testing: normalise only, so every pass sees the same pixels."""
    return transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))


class MNISTBatches(Dataset):
    """An MNIST split held in memory as uint8, served and transformed a whole batch at a time.

    DataLoader calls __getitems__ with all indices of a batch, so the transform runs once per
    batch on a float (B, 1, 28, 28) tensor instead of once per image through PIL.
    """

    def __init__(self, images, labels, transform=None):
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
    batch_size=128,
    test_batch_size=1000,
    data_dir=None,
    download=True,
    augment=True,
    rotation=10.0,
    shift=0.1,
    zoom=0.1,
    num_workers=0,
    seed=None,
    device="cpu",
    max_samples=None,
):
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
        persistent_workers=num_workers > 0,
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


def set_seed(seed):
    """Seed Python's and PyTorch's random generators (CPU and every accelerator)."""
    random.seed(seed)
    torch.manual_seed(seed)


def get_device():
    """The current accelerator (CUDA, MPS, XPU, ...) when there is one, else the CPU."""
    if torch.accelerator.is_available():
        return torch.accelerator.current_accelerator()
    return torch.device("cpu")


def atomic_write(path, write):
    """Call write(file) on a temporary file beside `path`, then rename it to `path`.

    A crash or an interrupt never leaves a half-written file under the real name. The file gets
    the permissions the umask gives new files, and a read-only `path` is never replaced.
    """
    path = Path(path)
    if path.exists() and not path.stat().st_mode & 0o222:
        raise PermissionError(
            f"{path} is read-only, so it was not replaced. Make it writable (chmod u+w) "
            "to replace it, or write to another path."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode open() would have.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask():
    mask = os.umask(0)  # the only way to read it is to set it, so set it straight back
    os.umask(mask)
    return mask


def save_weights(model, path):
    """Save model.state_dict() to `path` atomically."""
    atomic_write(path, lambda f: torch.save(model.state_dict(), f))


def save_json(data, path):
    """Write `data` as indented JSON to `path` atomically."""
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=2).encode()))


def all_finite(model):
    """True when no parameter or buffer of `model` holds NaN or inf."""
    return all(t.isfinite().all() for t in model.state_dict().values() if t.is_floating_point())


def load_weights(model, path, map_location="cpu"):
    """Load a state_dict saved by save_weights into `model`, refusing anything but plain tensors.

    Also takes the state_dict of the moving-average wrapper (AveragedModel) and training
    checkpoints that keep the state_dict under "model" or "state_dict".
    """
    check_checkpoint_format(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{path} was refused: it holds pickled objects or code, not only tensors, and loading "
            "it could run that code. Load only weights files saved with save_weights (or "
            "torch.save(model.state_dict(), path)) from a source you trust."
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"{path} is truncated or corrupt ({_one_line(err)}). Save the weights again."
        ) from err
    state = unwrap_state_dict(state, path)
    check_state_dict(model, state, path)
    model.load_state_dict(state)
    return model


def check_checkpoint_format(path):
    """Raise CheckpointError unless `path` starts like a file written by torch.save."""
    with open(path, "rb") as f:
        head = f.read(8)
    # torch.save writes a zip archive; files from PyTorch before 1.6 are a bare pickle (0x80).
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return
    kinds = {b"\x89PNG": "a PNG image", b"{": "JSON", b"[": "JSON", b"\x1f\x8b": "a gzip archive"}
    kind = next((name for magic, name in kinds.items() if head.lstrip().startswith(magic)), None)
    raise CheckpointError(
        f"{path} is not a PyTorch checkpoint{f' (it looks like {kind})' if kind else ''}: "
        "load a weights file written by save_weights or torch.save, such as a run's mnist_net.pt."
    )


def unwrap_state_dict(state, path):
    """The model's state_dict inside `state`, a plain or wrapped state_dict."""
    if isinstance(state, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path} holds a {type(state).__name__} that is not a state_dict (a dict of tensors), "
            'nor a dict with one under "model" or "state_dict".'
        )
    if "n_averaged" in state and all(k.startswith("module.") for k in state if k != "n_averaged"):
        # AveragedModel's own state_dict: the averaged model's keys behind a "module." prefix.
        state = {k.removeprefix("module."): v for k, v in state.items() if k != "n_averaged"}
    return state


def check_state_dict(model, state, path):
    """Raise CheckpointError naming every key that does not fit `model`."""
    expected = model.state_dict()
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    mismatched = sorted(
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected.keys() & state.keys()
        if state[key].shape != expected[key].shape
    )
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{path} was saved from a different architecture than {type(model).__name__}: "
            f"missing keys {missing}, unexpected keys {unexpected}, "
            f"shape mismatches (file vs model) {mismatched}. "
            "Build the model that saved it, or train this one afresh."
        )


def denormalize(x):
    """Undo the MNIST normalisation, giving pixels in [0, 1]."""
    return (x * MNIST_STD + MNIST_MEAN).clamp(0, 1)


def image_grid(images, titles, ncols=8, title_color="black"):
    """A figure of normalised (B, 1, 28, 28) images in rows of `ncols`, each with its title."""
    nrows = max(1, math.ceil(len(titles) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.7 * nrows), squeeze=False)
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(denormalize(image.cpu()).squeeze(0).numpy(), cmap="gray_r")
        ax.set_title(title, fontsize=9, color=title_color)
    for ax in axes.flat:
        ax.axis("off")
    return fig


def plot_samples(images, labels, ncols=8, nrows=4):
    """The first ncols x nrows images of a batch, titled with their labels."""
    n = min(len(labels), ncols * nrows)
    return finish(image_grid(images[:n], [str(int(label)) for label in labels[:n]], ncols))


def finish(fig, path=None):
    """Tighten the layout of `fig` and, when `path` is given, save it there as PNG."""
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig


CURVE_PANELS = (
    ("train_loss", "Training loss"),
    ("train_acc", "Training accuracy (%)"),
    ("test_loss", "Test loss"),
    ("test_acc", "Test accuracy (%)"),
)


def plot_curves(history, path=None):
    """The 2x2 loss and accuracy curves per epoch; saved as PNG when `path` is given.

    Each panel draws as many epochs as it has values, so a run stopped half-way still plots.
    """
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    for ax, (key, title) in zip(axes.flat, CURVE_PANELS):
        values = history.get(key, [])
        ax.plot(range(1, len(values) + 1), values, marker="o")
        ax.set_title(title)
        epoch_axis(ax, len(values))
        if "acc" in key:
            cap_percent_axis(ax)
        ax.grid(alpha=0.3)
    return finish(fig, path)


def epoch_axis(ax, epochs):
    """Label the x axis "epoch", with ticks on whole epochs only, however few there are."""
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def cap_percent_axis(ax):
    """Keep a percentage axis from running past 100, which autoscaling does for a single point."""
    bottom, top = ax.get_ylim()
    if top > 100:
        ax.set_ylim(min(bottom, 99.9), 100)


def predict(model, loader, device, tta_shift=0):
    """Predicted labels, their probabilities and the true labels for all of `loader`, on the CPU.

    With `tta_shift` > 0 the probabilities are averaged over five views of each image: as it is,
    and moved by `tta_shift` pixels up, down, left and right (test-time augmentation).
    """
    model.eval()
    predictions, confidences, targets = [], [], []
    with torch.inference_mode():
        for data, target in loader:
            data = data.to(device)
            probabilities = torch.stack([model(view).exp() for view in shifted_views(data, tta_shift)])
            confidence, prediction = probabilities.mean(dim=0).max(dim=1)
            predictions.append(prediction.cpu())
            confidences.append(confidence.cpu())
            targets.append(target.cpu())
    return torch.cat(predictions), torch.cat(confidences), torch.cat(targets)


def shifted_views(x, shift):
    """x, then x moved by `shift` pixels in each of the four directions (none when shift is 0).

    Pixels moved in from outside the image take the value of the background (a normalised 0).
    """
    if shift == 0:
        return [x]
    background = (0 - MNIST_MEAN) / MNIST_STD
    padded = F.pad(x, (shift,) * 4, value=background)
    size = x.shape[-1]
    corners = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [padded[..., top:top + size, left:left + size] for top, left in corners]


def confusion_matrix(predictions, targets, num_classes=10):
    """Counts[i, j]: how many images of true class i were predicted as class j."""
    pairs = targets.long() * num_classes + predictions.long()
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(matrix):
    """Accuracy (%) for each true class, from a confusion matrix."""
    return 100 * matrix.diag() / matrix.sum(dim=1).clamp(min=1)


def plot_confusion_matrix(matrix, path=None):
    """The confusion matrix with a count in every cell; off-diagonal errors stand out in colour."""
    n = len(matrix)
    errors = matrix.clone().fill_diagonal_(0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(errors.numpy(), cmap="Reds", vmin=0, vmax=max(int(errors.max()), 1))
    fig.colorbar(image, ax=ax, label="misclassified images")
    dark = errors > errors.max() / 2  # white text there: black would not read on dark red
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                    fontweight="bold" if i == j else "normal", color="white" if dark[i, j] else "black")
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix ({int(matrix.sum())} test images, {int(errors.sum())} wrong)")
    return finish(fig, path)


def misclassified(predictions, confidences, targets, n=24):
    """Indices of up to n wrong predictions, the most confident mistakes first."""
    wrong = (predictions != targets).nonzero().flatten()
    order = confidences[wrong].argsort(descending=True)
    return wrong[order][:n]


def plot_misclassified(dataset, predictions, confidences, targets, n=24, ncols=8, path=None):
    """A grid of the most confident mistakes, titled true -> predicted (confidence)."""
    indices = misclassified(predictions, confidences, targets, n).tolist()
    images = dataset.__getitems__(indices)[0] if indices else []
    titles = [f"{int(targets[i])} -> {int(predictions[i])} ({100 * float(confidences[i]):.0f}%)" for i in indices]
    fig = image_grid(images, titles, ncols, title_color="darkred")
    fig.suptitle(f"Misclassified test images: true -> predicted (confidence), {len(indices)} shown")
    return finish(fig, path)
