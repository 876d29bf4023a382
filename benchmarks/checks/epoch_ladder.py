"""What each part of the notebook's training loop adds to an epoch, in the loop, not alone.

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.epoch_ladder [default|20k|8k]

Times whole epochs of four loops, each the one before plus a part of train(): bare steps on one
batch built beforehand; the same on the training loader's batches; plus the weight average's
update; plus the rest of train() (label smoothing, the isfinite check, the scheduler's step, the
loss and accuracy counts). All in the mode COMPILE and PRECISION "auto" choose here, in a plain
process (no kernel), two rounds. Unlike benchmarks.checks.epoch_breakdown, which times each part
alone at its fastest, this shows what a part costs among the others. Run it on an idle machine.
"""

import sys
import time

import torch
import torch.nn.functional as F

import utils
from benchmarks import budgets, common
from model import MNISTNet
from workbench import speed
from workbench.averaging import ExponentialAverage

LEVELS = ("bare steps", "+ the loader's batches", "+ the weight average", "+ the rest of train()")


def main():
    setting = sys.argv[1] if len(sys.argv) > 1 else "default"
    params = {**common.notebook_defaults(), **(budgets.SETTINGS[setting][1] if setting in
              budgets.SETTINGS else {})}  # fmt: skip
    loader, _ = utils.get_data_loaders(
        params["BATCH_SIZE"], data_dir=utils.resolve_data_dir(), download=False, seed=1,
        rotation=params["ROTATION"], shift=params["SHIFT"], zoom=params["ZOOM"],
    )  # fmt: skip
    torch.manual_seed(1)
    model = MNISTNet(params["CHANNELS"]).train()
    chosen = speed.choose_for(params, model, loader)
    stepped = speed.step_model(model, speed.mode_of(chosen))
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, fused=True
    )
    ema_model = ExponentialAverage(model, params["EMA_DECAY"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.01, total_steps=20 * len(loader))
    smoothing = params["LABEL_SMOOTHING"]
    one_batch = [next(iter(loader))] * len(loader)

    def epoch(level):
        start = time.perf_counter()
        for images, labels in one_batch if level == 0 else loader:
            optimizer.zero_grad(set_to_none=True)
            output = stepped(images)
            loss = F.nll_loss(output, labels)
            if level >= 3:
                loss = (1 - smoothing) * loss - smoothing * output.mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError("the loss is not finite")
            loss.backward()
            optimizer.step()
            if level >= 2:
                ema_model.update_parameters(model)
            if level >= 3:
                scheduler.step()
                loss.item(), (output.argmax(dim=1) == labels).sum().item()
        return time.perf_counter() - start

    epoch(0)  # warm-up (and compiling)
    times = {level: [] for level in LEVELS}
    for _ in range(2):
        for i, level in enumerate(LEVELS):
            times[level].append(epoch(i))
    print(f"{setting}, {speed.describe(chosen)}")
    for level, seconds in times.items():
        print(f"{level:26} " + "  ".join(f"{s:5.2f}" for s in seconds) + " s an epoch")


if __name__ == "__main__":
    main()
