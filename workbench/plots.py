"""Figures: sample and mistake galleries, loss and accuracy curves, the confusion matrix, runs.

Each function returns its matplotlib figure and, given `path`, saves it there as PNG.
Importing this module does nothing.
"""

import math
import os
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from utils import MNIST_MEAN, MNIST_STD
from workbench.analysis import Analysis, misclassified
from workbench.files import atomic_write

PathLike = str | os.PathLike | None


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo the MNIST normalisation, giving pixels in [0, 1]."""
    return (x * MNIST_STD + MNIST_MEAN).clamp(0, 1)


def image_grid(
    images: torch.Tensor | Sequence,
    titles: Sequence[str],
    ncols: int = 8,
    title_color: str = "black",
) -> Figure:
    """A figure of normalised (B, 1, 28, 28) images in rows of `ncols`, each with its title."""
    nrows = max(1, math.ceil(len(titles) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.5 * ncols, 1.7 * nrows), squeeze=False)
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(denormalize(image.cpu()).squeeze(0).numpy(), cmap="gray_r")
        ax.set_title(title, fontsize=9, color=title_color)
    for ax in axes.flat:
        ax.axis("off")
    return fig


def plot_samples(
    images: torch.Tensor, labels: torch.Tensor, ncols: int = 8, nrows: int = 4
) -> Figure:
    """The first ncols x nrows images of a batch, titled with their labels."""
    n = min(len(labels), ncols * nrows)
    return finish(image_grid(images[:n], [str(int(label)) for label in labels[:n]], ncols))


def finish(fig: Figure, path: PathLike = None) -> Figure:
    """Tighten the layout of `fig` and, when `path` is given, save it there as PNG."""
    fig.tight_layout()
    if path is not None:  # whole or not at all, as every file of a run folder
        atomic_write(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    return fig


CURVE_PANELS = (
    ("train_loss", "Training loss"),
    ("train_acc", "Training accuracy (%)"),
    ("test_loss", "Test loss"),
    ("test_acc", "Test accuracy (%)"),
)


def plot_curves(history: Mapping[str, Sequence[float]], path: PathLike = None) -> Figure:
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


def epoch_axis(ax, epochs: int) -> None:
    """Label the x axis "epoch", with ticks on whole epochs only, however few there are."""
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(epochs, 1) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def cap_percent_axis(ax) -> None:
    """Keep a percentage axis from running past 100, which autoscaling does for a single point."""
    bottom, top = ax.get_ylim()
    if top > 100:
        ax.set_ylim(min(bottom, 99.9), 100)


def plot_confusion_matrix(matrix: torch.Tensor, path: PathLike = None) -> Figure:
    """The confusion matrix with a count in every cell; off-diagonal errors stand out in colour."""
    n = len(matrix)
    errors = matrix.clone().fill_diagonal_(0)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(errors.numpy(), cmap="Reds", vmin=0, vmax=max(int(errors.max()), 1))
    fig.colorbar(image, ax=ax, label="misclassified images")
    dark = errors > errors.max() / 2  # white text there: black would not read on dark red
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(int(matrix[i, j])),
                ha="center",
                va="center",
                fontsize=8,
                fontweight="bold" if i == j else "normal",
                color="white" if dark[i, j] else "black",
            )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"Confusion matrix ({int(matrix.sum())} test images, {int(errors.sum())} wrong)")
    return finish(fig, path)


def plot_misclassified(
    dataset, found: Analysis, n: int = 24, ncols: int = 8, path: PathLike = None
) -> Figure:
    """A grid of the most confident mistakes in `found`, titled true -> predicted (confidence).

    `dataset` is the one `found` predicted, in the same order (the test loader's).
    """
    predictions, confidences, targets = found.predictions, found.confidences, found.targets
    indices = misclassified(predictions, confidences, targets, n).tolist()
    images = dataset.__getitems__(indices)[0] if indices else []
    titles = [
        f"{int(targets[i])} -> {int(predictions[i])} ({100 * float(confidences[i]):.0f}%)"
        for i in indices
    ]
    fig = image_grid(images, titles, ncols, title_color="darkred")
    fig.suptitle(f"Misclassified test images: true -> predicted (confidence), {len(indices)} shown")
    return finish(fig, path)


def plot_runs(curves: Mapping[str, Sequence[float]], path: PathLike = None) -> Figure:
    """Test accuracy per epoch of several runs, one line each; `curves` maps labels to values."""
    fig, ax = plt.subplots(figsize=(10, 5.5))
    for label, accuracies in curves.items():
        ax.plot(range(1, len(accuracies) + 1), accuracies, marker="o", markersize=3, label=label)
    epoch_axis(ax, max(map(len, curves.values()), default=1))
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"Test accuracy of {len(curves)} run{'s' * (len(curves) != 1)}")
    cap_percent_axis(ax)
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8, loc="lower right")
    return finish(fig, path)
