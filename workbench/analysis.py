"""Where the model errs: predictions with test-time augmentation, the confusion matrix, mistakes.

Importing this module does nothing.
"""

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from utils import MNIST_MEAN, MNIST_STD


@dataclass(frozen=True)
class Analysis:
    """Every test image predicted once: labels, confidences, the true labels and what they give."""

    predictions: torch.Tensor
    confidences: torch.Tensor
    targets: torch.Tensor
    tta_shift: int

    @property
    def accuracy(self) -> float:
        """Test accuracy (%) of these predictions."""
        return 100 * (self.predictions == self.targets).float().mean().item()

    @property
    def wrong(self) -> int:
        return int((self.predictions != self.targets).sum())

    @property
    def matrix(self) -> torch.Tensor:
        return confusion_matrix(self.predictions, self.targets)


def analyse(
    model: nn.Module, loader: Iterable, device: str | torch.device, tta_shift: int = 0
) -> Analysis:
    """Predict all of `loader` with `model` (and test-time augmentation when `tta_shift` > 0)."""
    return Analysis(*predict(model, loader, device, tta_shift), tta_shift=tta_shift)


def predict(
    model: nn.Module, loader: Iterable, device: str | torch.device, tta_shift: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicted labels, their probabilities and the true labels for all of `loader`, on the CPU.

    With `tta_shift` > 0 the probabilities are averaged over five views of each image: as it is,
    and moved by `tta_shift` pixels up, down, left and right (test-time augmentation).
    """
    model.eval()
    predictions, confidences, targets = [], [], []
    with torch.inference_mode():
        for data, target in loader:
            data = data.to(device)
            probabilities = torch.stack(
                [model(view).exp() for view in shifted_views(data, tta_shift)]
            )
            confidence, prediction = probabilities.mean(dim=0).max(dim=1)
            predictions.append(prediction.cpu())
            confidences.append(confidence.cpu())
            targets.append(target.cpu())
    return torch.cat(predictions), torch.cat(confidences), torch.cat(targets)


def shifted_views(x: torch.Tensor, shift: int) -> list[torch.Tensor]:
    """x, then x moved by `shift` pixels in each of the four directions (none when shift is 0).

    Pixels moved in from outside the image take the value of the background (a normalised 0).
    """
    if shift == 0:
        return [x]
    background = (0 - MNIST_MEAN) / MNIST_STD
    padded = F.pad(x, (shift,) * 4, value=background)
    size = x.shape[-1]
    corners = [(shift, shift), (0, shift), (2 * shift, shift), (shift, 0), (shift, 2 * shift)]
    return [padded[..., top : top + size, left : left + size] for top, left in corners]


def confusion_matrix(
    predictions: torch.Tensor, targets: torch.Tensor, num_classes: int = 10
) -> torch.Tensor:
    """Counts[i, j]: how many images of true class i were predicted as class j."""
    pairs = targets.long() * num_classes + predictions.long()
    return torch.bincount(pairs, minlength=num_classes**2).view(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Accuracy (%) for each true class, from a confusion matrix; NaN for a class with no image."""
    return 100 * matrix.diag() / matrix.sum(dim=1)


def misclassified(
    predictions: torch.Tensor, confidences: torch.Tensor, targets: torch.Tensor, n: int = 24
) -> torch.Tensor:
    """Indices of up to n wrong predictions, the most confident mistakes first."""
    wrong = (predictions != targets).nonzero().flatten()
    order = confidences[wrong].argsort(descending=True)
    return wrong[order][:n]
