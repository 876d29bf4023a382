"""How close the training step comes to what this machine can compute: a roofline, measured.

    python -m benchmarks.roofline --compile  # measure; print the table; keep it in outputs/
    python -m benchmarks.roofline --quick    # a few steps of each, to check that it runs

Measures, with the thread count the notebook uses: the GFLOP/s of a large fp32 and bf16 matrix
multiply (the machine's practical ceiling for each precision), and for each model setting (the
default and the two parameter budgets) the arithmetic of one training step of BATCH_SIZE images
(forward and backward, counted by torch.utils.flop_counter) and the GFLOP/s a bare training step
(forward, loss, backward, SGD step) achieves in each precision, compiled or not.
benchmarks.benchmark measures it in the same run as the notebook (its "roofline" in results.json,
with the CPU's identity); alone, this script keeps it in outputs/roofline.json. docs/results.md
explains it.
"""

import argparse
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from benchmarks.budgets import SETTINGS
from model import MNISTNet
from workbench import speed
from workbench.files import save_json
from workbench.provenance import REPO, cpu_identity, provenance

OUT = REPO / "outputs" / "roofline.json"
QUICK_OUT = REPO / "outputs" / "roofline-quick.json"  # a check that it runs, never a result
BATCH_SIZE = 128  # the notebook's
STEPS_PER_EPOCH = -(-common.FULL_EPOCH // BATCH_SIZE)


def model_settings() -> dict[str, dict[str, Any]]:
    """MNISTNet's arguments for each setting measured: the notebook's defaults and the budgets."""
    defaults = common.notebook_defaults()
    return {
        "default": dict(channels=defaults["CHANNELS"], dropout=defaults["DROPOUT"]),
        **{
            f"< {name}": dict(channels=values["CHANNELS"], dropout=values["DROPOUT"])
            for name, (_, values) in SETTINGS.items()
        },
    }


# The modes tried for every model: each precision as it is, and with --compile also compiled.
# (The model always runs channels-last: its forward() converts the input, so no layout is tried.)
PRECISIONS = ("fp32", "bf16")
# Each mode by its name, as the roofline and params.json's "speed" name it.
MODES = {m.name: m for m in (speed.Mode(p, c) for c in (False, True) for p in PRECISIONS)}


def matmul_gflops(dtype: torch.dtype, n: int = 2048, seconds: float = 2.0) -> float:
    """GFLOP/s of an n x n matrix multiply in `dtype`, the best of repeated timings."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def make_step(model, precision, forward=None):
    """A bare training step: forward (through `forward`, the model's by default), negative
    log-likelihood, backward, Nesterov SGD (fused, as the notebook's)."""
    forward = model if forward is None else forward
    optimizer = torch.optim.SGD(
        model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4, fused=True
    )

    def step(images, labels):
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            loss = F.nll_loss(forward(images), labels)
        loss.backward()
        optimizer.step()

    return step


def autocast(precision):
    return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


def step_flops(config: dict[str, Any]) -> int:
    """Floating-point operations of one training step's forward and backward pass."""
    model = MNISTNet(**config).train()
    images = torch.randn(BATCH_SIZE, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.nll_loss(model(images), torch.randint(0, 10, (BATCH_SIZE,))).backward()
    return counter.get_total_flops()


def step_seconds(config, precision, steps, compiled=False):
    """The median time of `steps` training steps, after a warm-up (and compiling)."""
    torch.manual_seed(0)
    model = MNISTNet(**config).train()
    if compiled:
        model = torch.compile(model)
    images, labels = torch.randn(BATCH_SIZE, 1, 28, 28), torch.randint(0, 10, (BATCH_SIZE,))
    step = make_step(model, precision)
    for _ in range(5):
        step(images, labels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, labels)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def epoch_seconds(config: dict[str, Any], mode: str, steps: int = STEPS_PER_EPOCH) -> float:
    """The time of a whole epoch of bare training steps in `mode` ("bf16 compiled", ...), each as
    the notebook steps: the model as workbench.speed runs it, the loss, backward, Nesterov SGD.

    A sum over every step, as the notebook's train_time_s is, not a median times the step count:
    the steps a busy moment of the machine slows count in both alike.
    """
    torch.manual_seed(0)
    model = MNISTNet(**config).train()
    stepped = speed.step_model(model, MODES[mode])
    step = make_step(model, "fp32", stepped)
    images, labels = torch.randn(BATCH_SIZE, 1, 28, 28), torch.randint(0, 10, (BATCH_SIZE,))
    for _ in range(5):  # warm-up (and compiling)
        step(images, labels)
    start = time.perf_counter()
    for _ in range(steps):
        step(images, labels)
    return time.perf_counter() - start


def measure(steps: int, matmul_s: float, compile_too: bool = False) -> dict[str, Any]:
    peaks = {
        "fp32": matmul_gflops(torch.float32, seconds=matmul_s),
        "bf16": matmul_gflops(torch.bfloat16, seconds=matmul_s),
    }
    models = {}
    for name, config in model_settings().items():
        flops = step_flops(config)
        modes = {}
        tried = [(p, False) for p in PRECISIONS]
        if compile_too:
            tried += [(p, True) for p in PRECISIONS]
        for precision, compiled in tried:
            seconds = step_seconds(config, precision, steps, compiled)
            gflops = flops / seconds / 1e9
            mode = precision + (" compiled" if compiled else "")
            modes[mode] = dict(
                step_ms=1000 * seconds,
                gflops=gflops,
                share_of_matmul=gflops / peaks[precision],
                epoch_of_steps_s=seconds * STEPS_PER_EPOCH,
            )
            print(f"{name:8} {mode:14} {1000 * seconds:6.1f} ms, {gflops:5.0f} GFLOP/s")
        models[name] = dict(
            channels=config["channels"],
            step_gflop=flops / 1e9,
            epoch_tflop=flops * STEPS_PER_EPOCH / 1e12,
            modes=modes,
        )
    return dict(
        cpu=cpu_identity(),
        batch_size=BATCH_SIZE,
        steps_per_epoch=STEPS_PER_EPOCH,
        matmul_gflops=peaks,
        models=models,
    )


def fastest_mode(roofline: dict[str, Any], setting: str) -> str:
    """The mode whose bare step the roofline measured fastest for `setting`'s network."""
    modes = roofline["models"][setting]["modes"]
    return min(modes, key=lambda mode: modes[mode]["epoch_of_steps_s"])


def markdown_table(roofline: dict[str, Any]) -> str:
    """Each model's arithmetic and, per mode, its GFLOP/s, share of the multiply and epoch time."""
    peaks = roofline["matmul_gflops"]
    rows = [[f"2048x2048 matrix multiply, {p}", "-", "-", f"{peaks[p]:.0f}"] for p in PRECISIONS]
    modes = list(next(iter(roofline["models"].values()))["modes"])
    for name, model in roofline["models"].items():
        for mode in modes:
            m = model["modes"][mode]
            rows.append(
                [
                    f"{name}, {mode}",
                    f"{model['epoch_tflop']:.2f}",
                    f"{m['epoch_of_steps_s']:.1f}",
                    f"{m['gflops']:.0f} ({m['share_of_matmul']:.0%})",
                ]
            )
    header = [
        "what",
        "TFLOP per epoch",
        "an epoch of bare steps (s)",
        "GFLOP/s (share of the multiply in that precision)",
    ]
    return common.markdown_table(header, rows, "lrrr")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to check that it runs")
    parser.add_argument(
        "--out", help="the JSON file to keep it in (default: outputs/roofline.json)"
    )
    parser.add_argument("--compile", action="store_true", help="also each precision compiled")
    args = parser.parse_args()
    speed.keep_freed_memory()  # as the notebook's training cell does
    found = provenance()
    roofline = measure(
        steps=5 if args.quick else 60, matmul_s=0.2 if args.quick else 3.0, compile_too=args.compile
    )
    roofline["provenance"] = found
    roofline["quick"] = args.quick
    out = Path(args.out or (QUICK_OUT if args.quick else OUT))
    save_json({"roofline": roofline}, out)
    print(markdown_table(roofline))


if __name__ == "__main__":
    main()
