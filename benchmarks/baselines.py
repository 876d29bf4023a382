"""The two baselines the benchmark runs beside the notebook, re-implemented from their published
descriptions: the course's "S5 template" this project descends from, and pytorch/examples' mnist.

Each trains as its source does (per-image PIL transforms, its own optimiser and schedule) and
returns the same record as a notebook run (benchmarks.common).
"""

import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms
from tqdm import tqdm

import utils
from benchmarks import common
from model import count_parameters
from utils import MNIST_MEAN, MNIST_STD
from workbench.schema import METRIC_KEYS


def conv(in_channels, out_channels):
    return [nn.Conv2d(in_channels, out_channels, 3), nn.ReLU()]  # unpadded, as both sources


def s5_template_net():
    """The course template's CNN: four unpadded 3x3 convs, two max-pools, 4096 -> 50 -> 10."""
    features = [*conv(1, 32), *conv(32, 64), nn.MaxPool2d(2), *conv(64, 128), *conv(128, 256)]
    head = [nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4096, 50), nn.ReLU(), nn.Linear(50, 10)]
    return nn.Sequential(*features, *head, nn.LogSoftmax(dim=1))


def examples_net():
    """pytorch/examples' MNIST CNN: two 3x3 convs, a max-pool, dropout, 9216 -> 128 -> 10."""
    features = [*conv(1, 32), *conv(32, 64), nn.MaxPool2d(2), nn.Dropout(0.25), nn.Flatten()]
    head = [nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10)]
    return nn.Sequential(*features, *head, nn.LogSoftmax(dim=1))


def pil_loaders(data_dir, images, train_transform, batch_size, test_batch_size, num_workers):
    """Per-image PIL loaders over torchvision's MNIST, as both baselines use them; the first
    `images` of each split only, when given."""
    normalize = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    sets = [
        datasets.MNIST(data_dir, train=train, transform=transforms.Compose(steps + normalize))
        for train, steps in ((True, train_transform), (False, []))
    ]
    sets = [Subset(s, range(min(images, len(s)))) if images else s for s in sets]
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
    return (
        DataLoader(sets[0], batch_size=batch_size, shuffle=True, **workers),
        DataLoader(sets[1], batch_size=test_batch_size, shuffle=False, **workers),
    )


def setup_s5_template(data_dir, train_images):
    train_transform = [
        transforms.RandomApply([transforms.CenterCrop(22)], p=0.1),
        transforms.Resize((28, 28)),
        transforms.RandomRotation((-15.0, 15.0), fill=0),
    ]
    train_loader, test_loader = pil_loaders(
        data_dir, train_images, train_transform, 512, 512, num_workers=2
    )
    model = s5_template_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
    return model, optimizer, scheduler, train_loader, test_loader


def setup_examples(data_dir, train_images):
    # pytorch/examples shuffles only on CUDA; shuffling here gives the baseline its best case.
    train_loader, test_loader = pil_loaders(data_dir, train_images, [], 64, 1000, num_workers=0)
    model = examples_net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    return model, optimizer, scheduler, train_loader, test_loader


SETUPS = {"s5_template": setup_s5_template, "pytorch_examples": setup_examples}


def evaluate(model, loader):
    """Summed test loss over the set divided by its size, and accuracy in %."""
    model.eval()
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for data, target in loader:
            output = model(data)
            total_loss += F.nll_loss(output, target, reduction="sum").item()
            correct += (output.argmax(dim=1) == target).sum().item()
    n = len(loader.dataset)
    return total_loss / n, 100 * correct / n


def train_run(name, data_dir, train_images, epochs, seed, stop_at=None):
    """Train one baseline; return its record. An epoch's time counts its training and test pass;
    with `stop_at`, training stops after the first epoch at that test accuracy (%) or more."""
    utils.set_seed(seed)
    model, optimizer, scheduler, train_loader, test_loader = SETUPS[name](data_dir, train_images)
    n = len(train_loader.dataset)
    load = common.machine_load()
    history = {key: [] for key in METRIC_KEYS}
    for epoch in range(1, epochs + 1):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        total_loss, correct = 0.0, 0
        start = time.perf_counter()
        for data, target in tqdm(train_loader, desc=f"{name} epoch {epoch}", leave=False):
            optimizer.zero_grad(set_to_none=True)
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(target)
            correct += (output.argmax(dim=1) == target).sum().item()
        scheduler.step()
        train_s = time.perf_counter() - start
        test_loss, test_acc = evaluate(model, test_loader)
        epoch_s = time.perf_counter() - start
        values = (total_loss / n, 100 * correct / n, test_loss, test_acc, lr, train_s, epoch_s)
        for key, value in zip(METRIC_KEYS, values):
            history[key].append(value)
        tqdm.write(f"{name} seed {seed} epoch {epoch}: {train_s:.1f} s, {test_acc:.2f}%")
        if stop_at is not None and test_acc >= stop_at:
            break
    metrics = dict(epochs_done=len(history["test_acc"]), epochs_planned=epochs, history=history)
    return common.record(name, seed, count_parameters(model), metrics, load, train_images=n)
