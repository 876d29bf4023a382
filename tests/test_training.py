"""The notebook's train(), run from the committed cells on one batch of known images."""

import pytest
import torch
import torch.nn.functional as F
from notebook_cells import run_cells
from torch import nn, optim


class Loader(list):
    """One batch, as the notebook's loaders give them, with a dataset of its size."""

    def __init__(self, images, labels):
        super().__init__([(images, labels)])
        self.dataset = images


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_train_reports_the_loss_against_the_smoothed_target(smoothing):
    namespace = run_cells(["imports", "parameters", "train-test"], LABEL_SMOOTHING=smoothing)
    torch.manual_seed(0)
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10), nn.LogSoftmax(dim=1))
    optimizer = optim.SGD(model.parameters(), lr=0.0)  # the weights stay as they are
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    ema_model = optim.swa_utils.AveragedModel(model)
    with torch.no_grad():
        log_probs = model(images)
    # PyTorch's own smoothed cross-entropy (log_softmax leaves log-probabilities unchanged).
    expected = F.cross_entropy(log_probs, labels, label_smoothing=smoothing).item()
    plain = F.nll_loss(log_probs, labels).item()

    loss, _ = namespace["train"](
        model, ema_model, "cpu", Loader(images, labels), optimizer, scheduler, epoch=1
    )

    assert loss == pytest.approx(expected, rel=1e-5)
    assert (loss == pytest.approx(plain, rel=1e-5)) == (smoothing == 0)
