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
from workbench.folders import METRIC_KEYS
from workbench.provenance import machine_load


class S5TemplateNet(nn.Module):
    """The course template's CNN: four unpadded 3x3 convs, two max-pools, 4096 -> 50 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.conv3 = nn.Conv2d(64, 128, 3)
        self.conv4 = nn.Conv2d(128, 256, 3)
        self.fc1 = nn.Linear(4096, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.max_pool2d(F.relu(self.conv4(F.relu(self.conv3(x)))), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return F.log_softmax(self.fc2(x), dim=1)


class ExamplesNet(nn.Module):
    """pytorch/examples' MNIST CNN: two 3x3 convs, a max-pool, dropout, 9216 -> 128 -> 10."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(self.dropout1(x).flatten(1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


def pil_loaders(data_dir, train_images, train_transform, batch_size, test_batch_size, num_workers):
    """Per-image PIL loaders over torchvision's MNIST, as both baselines use them."""
    normalize = [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
    train_set = datasets.MNIST(
        data_dir, train=True, transform=transforms.Compose(train_transform + normalize)
    )
    if train_images is not None:
        train_set = Subset(train_set, range(min(train_images, len(train_set))))
    test_set = datasets.MNIST(data_dir, train=False, transform=transforms.Compose(normalize))
    workers = dict(num_workers=num_workers, persistent_workers=num_workers > 0)
    return (
        DataLoader(train_set, batch_size=batch_size, shuffle=True, **workers),
        DataLoader(test_set, batch_size=test_batch_size, shuffle=False, **workers),
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
    model = S5TemplateNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
    return model, optimizer, scheduler, train_loader, test_loader


def setup_examples(data_dir, train_images):
    # pytorch/examples shuffles only on CUDA; shuffling here gives the baseline its best case.
    train_loader, test_loader = pil_loaders(data_dir, train_images, [], 64, 1000, num_workers=0)
    model = ExamplesNet()
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
    """Train one baseline; return its record. An epoch's time counts its training and test pass.

    With `stop_at`, training stops after the first epoch at that test accuracy (%) or more.
    """
    utils.set_seed(seed)
    model, optimizer, scheduler, train_loader, test_loader = SETUPS[name](data_dir, train_images)
    n = len(train_loader.dataset)
    load = machine_load()
    history = {key: [] for key in METRIC_KEYS}
    for epoch in range(1, epochs + 1):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        total_loss, correct = 0.0, 0
        start = time.perf_counter()
        progress = tqdm(
            train_loader, desc=f"{name} seed {seed} epoch {epoch}/{epochs}", leave=False
        )
        for data, target in progress:
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
        values = (
            total_loss / n,
            100 * correct / n,
            test_loss,
            test_acc,
            lr,
            train_s,
            time.perf_counter() - start,
        )
        for key, value in zip(METRIC_KEYS, values):
            history[key].append(value)
        tqdm.write(
            f"{name} seed {seed} epoch {epoch}: train {train_s:.1f} s, "
            f"test accuracy {test_acc:.2f}%"
        )
        if stop_at is not None and test_acc >= stop_at:
            break
    metrics = dict(epochs_done=len(history["test_acc"]), epochs_planned=epochs, history=history)
    return common.record(name, seed, count_parameters(model), metrics, load, train_images=n)
