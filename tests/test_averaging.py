"""workbench.averaging: the notebook's moving average of the weights, as AveragedModel makes it."""

import pytest
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from model import MNISTNet
from workbench.averaging import ExponentialAverage
from workbench.speed import Autocast

SMALL = ((4,), (6, 6), (8,), (8,))


def train_both(model, averages, steps, wrap=lambda m: m):
    """Train `model` a few SGD steps, updating every average after each."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
        optimizer.zero_grad()
        F.nll_loss(model(images), labels).backward()
        optimizer.step()
        model.block1.bn.num_batches_tracked += 37  # an integer buffer that moves a lot
        for average in averages:
            average.update_parameters(wrap(model))


@pytest.mark.parametrize("wrap", [lambda m: m, lambda m: Autocast(m, "cpu")])
def test_the_average_is_exactly_averaged_models_exponential_one(wrap):
    torch.manual_seed(0)
    model = MNISTNet(SMALL).train()
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    average = ExponentialAverage(model, 0.9)
    for steps in (1, 5):  # the first update copies; the others average
        train_both(model, [reference, average], steps, wrap)
        expected, found = reference.state_dict(), average.state_dict()
        assert found.keys() == expected.keys()
        for key, value in expected.items():
            assert torch.equal(found[key], value), key
    assert isinstance(average, AveragedModel) and average.n_averaged.item() == 6
    # And it did average: the weights are neither the model's nor the first ones.
    assert not torch.equal(average.module.fc.weight, model.fc.weight)


def test_it_loads_an_averaged_models_state_and_refuses_another_network():
    torch.manual_seed(0)
    model = MNISTNet(SMALL).train()
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    train_both(model, [reference], 3)
    average = ExponentialAverage(MNISTNet(SMALL), 0.9)
    average.load_state_dict(reference.state_dict())
    assert average.n_averaged.item() == 3
    with pytest.raises(ValueError, match="Pass the model the average was made from"):
        average.update_parameters(MNISTNet(((4,), (4,), (4,), (4,))))
