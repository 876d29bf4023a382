"""Where a notebook training epoch's time goes: the default settings on the real data, seed 1.

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.epoch_breakdown

Times, in this order: building the batches alone (indexing, augmentation), a bare training step on
batches already built, the weight average's update and the per-step .item() calls, then the
notebook's own train() for one epoch and test() once. Run it on an idle machine.
"""

import statistics
import sys
import tempfile
import time

import matplotlib
import torch
import torch.nn.functional as F

from provenance import REPO

matplotlib.use("Agg")
sys.path.insert(0, str(REPO / "tests"))
from notebook_cells import run_cells  # noqa: E402 (the tests' helper that runs the cells)

import plots  # noqa: E402


def per_step(step, batches, repeats=3):
    """The median over `repeats` of the mean seconds per step over `batches`."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for images, labels in batches:
            step(images, labels)
        times.append((time.perf_counter() - start) / len(batches))
    return statistics.median(times)


def main():
    plots.plot_samples = lambda images, labels: None  # no figure: only times are wanted
    with tempfile.TemporaryDirectory() as out:
        ns = run_cells(
            ["imports", "parameters", "checks", "data", "model", "optimiser", "train-test"],
            OUTPUT_DIR=out,
        )
    loader, model = ns["train_loader"], ns["model"].train()
    steps = len(loader)
    start = time.perf_counter()
    for _ in loader:
        pass
    build = time.perf_counter() - start
    batches = [batch for _, batch in zip(range(100), loader)]
    optimizer, ema_model = ns["make_optimizer"](model)

    def bare(images, labels):
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(model(images), labels).backward()
        optimizer.step()

    def with_average(images, labels):
        bare(images, labels)
        ema_model.update_parameters(model)

    def with_items(images, labels):
        optimizer.zero_grad(set_to_none=True)
        output = model(images)
        loss = F.nll_loss(output, labels)
        torch.isfinite(loss).item()
        loss.backward()
        optimizer.step()
        ema_model.update_parameters(model)
        loss.item(), (output.argmax(dim=1) == labels).sum().item()

    per_step(bare, batches, 1)  # warm-up
    times = [per_step(step, batches) for step in (bare, with_average, with_items)]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, epochs=20, steps_per_epoch=steps, pct_start=0.2
    )
    start = time.perf_counter()
    ns["train"](model, ema_model, ns["device"], loader, optimizer, scheduler, 1)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    ns["test"](ema_model, ns["device"], ns["test_loader"])
    test_s = time.perf_counter() - start
    print(f"{steps} steps an epoch, {torch.get_num_threads()} threads")
    print(
        f"building the batches:      {build:5.2f} s an epoch ({1000 * build / steps:.2f} ms a step)"
    )
    print(
        f"bare training steps:       {times[0] * steps:5.2f} s an epoch ({1000 * times[0]:.2f} ms)"
    )
    print(f"+ the weight average:      {(times[1] - times[0]) * steps:5.2f} s an epoch")
    print(f"+ isfinite and .item():    {(times[2] - times[1]) * steps:5.2f} s an epoch")
    print(f"the notebook's train():    {train_s:5.2f} s for one epoch")
    print(f"the notebook's test():     {test_s:5.2f} s")


if __name__ == "__main__":
    main()
