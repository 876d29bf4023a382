"""Where a notebook training epoch's time goes: the default settings on the real data, seed 1.

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.epoch_breakdown

Times, in the mode COMPILE and PRECISION "auto" choose on this machine, in this order: building
the batches alone (indexing, augmentation), a bare training step on batches already built, the
weight average's update and the per-step isfinite and .item() calls (each on its own), then the
notebook's own train() for one epoch and test() once. Run it on an idle machine.
"""

import tempfile
import time

import matplotlib
import torch
import torch.nn.functional as F

from benchmarks.common import run_cells
from workbench import plots, speed


def seconds_per_call(call, args_list, repeats=5):
    """The fastest over `repeats` of the mean seconds `call(*args)` takes over `args_list`.

    The fastest, because the machine's shared cores only ever slow a repeat down.
    """
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for args in args_list:
            call(*args)
        times.append((time.perf_counter() - start) / len(args_list))
    return min(times)


def main():
    matplotlib.use("Agg")
    plots.plot_samples = lambda images, labels: None  # no figure: only times are wanted
    with tempfile.TemporaryDirectory() as out:
        ns = run_cells(
            ["imports", "parameters", "checks", "data", "model", "optimiser", "train-test"],
            OUTPUT_DIR=out,
        )
    loader, model = ns["train_loader"], ns["model"].train()
    # Every part as the notebook runs it: in the mode COMPILE and PRECISION choose here.
    chosen = speed.choose_for(ns["bench"].params, model, loader)
    stepped = speed.step_model(model, speed.mode_of(chosen))
    steps = len(loader)
    start = time.perf_counter()
    for _ in loader:
        pass
    build = time.perf_counter() - start
    batches = [batch for _, batch in zip(range(100), loader)]
    optimizer, ema_model = ns["make_optimizer"](model)

    smoothing = ns["LABEL_SMOOTHING"]

    def bare(images, labels):  # train()'s step without its checks, average and counts
        optimizer.zero_grad(set_to_none=True)
        output = stepped(images)
        loss = (1 - smoothing) * F.nll_loss(output, labels) - smoothing * output.mean()
        loss.backward()
        optimizer.step()
        return output, loss, labels

    def items(output, loss, labels):
        torch.isfinite(loss).item()
        loss.item(), (output.argmax(dim=1) == labels).sum().item()

    # Each extra is timed on its own: as the difference of two timed steps it would be smaller
    # than the steps' own variation.
    seconds_per_call(bare, batches, 1)  # warm-up
    step_s = seconds_per_call(bare, batches)
    average_s = seconds_per_call(ema_model.update_parameters, [(model,)] * len(batches))
    results = [bare(*batch) for batch in batches[:10]]
    items_s = seconds_per_call(items, results * 10)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=ns["LEARNING_RATE"],
        epochs=ns["EPOCHS"],
        steps_per_epoch=steps,
        pct_start=ns["WARMUP"],
    )
    start = time.perf_counter()
    ns["train"](stepped, ema_model, ns["device"], loader, optimizer, scheduler, 1)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    ns["test"](ema_model, ns["device"], ns["test_loader"])
    test_s = time.perf_counter() - start
    print(f"{steps} steps an epoch, {torch.get_num_threads()} threads; {speed.describe(chosen)}")
    print(
        f"building the batches:      {build:5.2f} s an epoch ({1000 * build / steps:.2f} ms a step)"
    )
    print(f"bare training steps:       {step_s * steps:5.2f} s an epoch ({1000 * step_s:.2f} ms)")
    print(f"the weight average:        {average_s * steps:5.2f} s an epoch")
    print(f"isfinite and .item():      {items_s * steps:5.2f} s an epoch")
    print(f"the notebook's train():    {train_s:5.2f} s for one epoch")
    print(f"the notebook's test():     {test_s:5.2f} s")


if __name__ == "__main__":
    main()
