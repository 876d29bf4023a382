"""What each speed-up of the training loop is worth, in whole epochs of the notebook's train().

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.loop_parts [SETTING [VARIANT...]]

Builds the notebook's data, model and train() in a plain process (the setting's parameters, seed
1, in the mode COMPILE and PRECISION "auto" choose) and times whole epochs, taking turns, ROUNDS
times: bare steps on one batch built beforehand; bare steps on the loader's batches; train() as
the notebook has it; train() with its training batches built 1, 2, 4 or 16 at a time instead of
8 (CHUNK_IMAGES 1,024 over BATCH_SIZE 128); train() with one speed-up undone at a time: torch's
AveragedModel update instead of ExponentialAverage's, SGD without fused=True; train() with one
part of its work left out at a time: the weight average, the label smoothing, the learning-rate
schedule, the progress bar; and train() with subnormal floats flushed to zero. Counts the
subnormal values left in the weights, gradients, momentum and average. Prints the medians and
writes every time to outputs/loop_parts-<setting>.json. SETTING: default, 20k or 8k; names of
variants after it time only those (e.g. "bare steps" "train(), as the notebook's"). Run it on an
idle machine.
"""

import contextlib
import io
import itertools
import json
import statistics
import sys
import time

import matplotlib
import torch
import torch.nn.functional as F
from torch import optim

from benchmarks import budgets
from benchmarks.common import run_cells
from benchmarks.roofline import STEPS_PER_EPOCH
from workbench import plots, speed
from workbench.provenance import REPO, provenance

ROUNDS = 3


def main():
    matplotlib.use("Agg")
    setting = sys.argv[1] if len(sys.argv) > 1 else "default"
    values = budgets.SETTINGS[setting][1] if setting in budgets.SETTINGS else {}
    plots.plot_samples = lambda images, labels: None
    speed.keep_freed_memory()  # as the training cell does
    cells = ["imports", "parameters", "checks", "data", "model", "optimiser", "train-test"]
    ns = run_cells(cells, OUTPUT_DIR=str(REPO / "outputs" / "loop-parts"), **values)
    model, loader, device = ns["model"], ns["train_loader"], ns["device"]
    chosen = speed.choose_for(ns["bench"].params, model, loader)
    stepped = speed.step_model(model, speed.mode_of(chosen))
    optimizer, ema_model = ns["make_optimizer"](model)
    unfused = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    averaged_model = optim.swa_utils.AveragedModel(
        model, multi_avg_fn=optim.swa_utils.get_ema_multi_avg_fn(ns["EMA_DECAY"]), use_buffers=True
    )
    schedules = {
        id(o): optim.lr_scheduler.OneCycleLR(o, 0.01, total_steps=(ROUNDS * 15 + 1) * len(loader))
        for o in (optimizer, unfused)
    }
    images, labels = next(iter(loader))

    def bare(batches):
        for batch_images, batch_labels in batches:
            optimizer.zero_grad(set_to_none=True)
            F.nll_loss(stepped(batch_images), batch_labels).backward()
            optimizer.step()

    def train(sgd=optimizer, average=ema_model, chunk=loader.chunk, schedule=None, **changed):
        """The notebook's train() for an epoch, with `changed` notebook globals for its length."""
        kept = {"chunk": loader.chunk, **{name: ns[name] for name in changed}}
        schedule = schedule or schedules[id(sgd)]
        loader.chunk = chunk
        ns.update(changed)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
                ns["train"](stepped, average, device, loader, sgd, schedule, 1)
        finally:
            loader.chunk = kept.pop("chunk")
            ns.update(kept)

    variants = {
        # First, so that the subnormal values counted at the end were written with them kept.
        "  subnormal floats flushed": lambda: flushing(train),
        "bare steps": lambda: bare(itertools.repeat((images, labels), STEPS_PER_EPOCH)),
        "bare steps, loader's batches": lambda: bare(loader),
        "train(), as the notebook's": train,
        "  batches built one by one": lambda: train(chunk=1),
        **{
            f"  batches built {chunk} at a time": lambda chunk=chunk: train(chunk=chunk)
            for chunk in (2, 4, 16)
            if chunk != loader.chunk
        },
        "  AveragedModel's update": lambda: train(average=averaged_model),
        "  SGD not fused": lambda: train(sgd=unfused),
        "  no weight average": lambda: train(average=NoAverage()),
        "  no label smoothing": lambda: train(LABEL_SMOOTHING=0.0),
        "  no schedule": lambda: train(schedule=NoSchedule()),
        "  no progress bar": lambda: train(tqdm=NoProgress),
    }
    if only := [name.strip() for name in sys.argv[2:]]:
        unknown = set(only) - {name.strip() for name in variants}
        if unknown:
            raise SystemExit(f"No variant {sorted(unknown)}; the variants: {list(variants)}")
        variants = {name: run for name, run in variants.items() if name.strip() in only}
    train()  # warm-up (and compiling)
    times = {name: [] for name in variants}
    for _ in range(ROUNDS):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    tensors = {
        "weights": list(model.parameters()),
        "gradients": [p.grad for p in model.parameters() if p.grad is not None],
        "momentum": [s["momentum_buffer"] for s in optimizer.state.values()],
        "average": list(ema_model.parameters()),
    }
    subnormal = {name: count_subnormal(found) for name, found in tensors.items()}
    out = REPO / "outputs" / f"loop_parts-{setting}.json"
    out.write_text(json.dumps(dict(setting=setting, mode=chosen, epoch_s=times,
                                   subnormal_values=subnormal, provenance=provenance()),
                              indent=1))  # fmt: skip
    print(f"{setting}, {speed.describe(chosen)}")
    for name, seconds in times.items():
        print(f"{name:28} median {statistics.median(seconds):5.2f} s an epoch ("
              + " ".join(f"{s:.2f}" for s in seconds) + ")")  # fmt: skip
    print(f"subnormal values at the end (of all): {subnormal}")
    print(f"wrote {out}")


def flushing(run):
    torch.set_flush_denormal(True)
    try:
        run()
    finally:
        torch.set_flush_denormal(False)  # PyTorch's default (it has no getter to restore from)


def count_subnormal(tensors):
    """[subnormal values, all values] in `tensors` (float32: nonzero, smaller than 2**-126)."""
    values = torch.cat([t.detach().flatten().float() for t in tensors])
    tiny = torch.finfo(torch.float32).tiny
    return [int(((values != 0) & (values.abs() < tiny)).sum()), values.numel()]


class NoAverage:
    def update_parameters(self, model):
        pass


class NoProgress:
    def __init__(self, loader, **_):
        self.loader = loader

    def __iter__(self):
        return iter(self.loader)

    def set_postfix(self, **_):
        pass


class NoSchedule:
    def step(self):
        pass


if __name__ == "__main__":
    main()
