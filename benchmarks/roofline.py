"""How close the training step comes to what this machine can compute: a roofline, measured.

    python -m benchmarks.roofline            # measure; print the table; keep it in outputs/
    python -m benchmarks.roofline --quick    # a few steps of each, uncompiled: that it runs

With the thread count the notebook uses: the GFLOP/s of a large fp32 and bf16 matrix multiply (the
machine's practical ceiling for each precision) and, for the default network and each budget's,
the arithmetic of one training step of BATCH_SIZE images (torch.utils.flop_counter) and the
GFLOP/s of workbench.speed's bare training step in every mode: fp32 and bf16, compiled or not.
benchmarks.benchmark measures it in the same run as the notebook ("roofline" in results.json).
"""

import argparse
import statistics
import time
from itertools import chain, islice, repeat
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import utils
from benchmarks import common
from benchmarks.budgets import SETTINGS
from model import MNISTNet
from workbench import speed

OUT = common.REPO / "outputs" / "roofline.json"
BATCH_SIZE = 128  # the notebook's
STEPS_PER_EPOCH = -(-common.FULL_EPOCH // BATCH_SIZE)
PRECISIONS = ("fp32", "bf16")
# Every mode by its name, as params.json's "speed" names it; the model always runs channels-last.
MODES = {m.name: m for m in (speed.Mode(p, c) for c in (False, True) for p in PRECISIONS)}


def model_settings() -> dict[str, dict[str, Any]]:
    """MNISTNet's arguments for each setting measured: the notebook's defaults and the budgets."""
    settings = {"default": common.notebook_defaults()}
    settings.update({f"< {name}": values for name, (_, values) in SETTINGS.items()})
    return {
        name: dict(channels=v["CHANNELS"], dropout=v["DROPOUT"]) for name, v in settings.items()
    }


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


def step_flops(config: dict[str, Any]) -> int:
    """Floating-point operations of one training step's forward and backward pass."""
    model = MNISTNet(**config).train()
    images = torch.randn(BATCH_SIZE, 1, 28, 28)
    with FlopCounterMode(display=False) as counter:
        F.nll_loss(model(images), torch.randint(0, 10, (BATCH_SIZE,))).backward()
    return counter.get_total_flops()


def step_times(config: dict[str, Any], mode: str, steps: int) -> list[float]:
    """The seconds of each of `steps` bare training steps in `mode`, after a warm-up (and
    compiling), on one batch of random images."""
    torch.manual_seed(0)
    step = speed.bare_step(MNISTNet(**config).train(), MODES[mode])
    images, labels = torch.randn(BATCH_SIZE, 1, 28, 28), torch.randint(0, 10, (BATCH_SIZE,))
    for _ in range(speed.WARMUP_STEPS):
        step(images, labels)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(images, labels)
        times.append(time.perf_counter() - start)
    return times


def epoch_seconds(config: dict[str, Any], mode: str, steps: int = STEPS_PER_EPOCH) -> float:
    """An epoch of bare steps in `mode`: the sum over `steps` steps, scaled to a whole epoch.

    A sum, as the notebook's train_time_s is, not a median: a busy moment counts in both alike.
    """
    return STEPS_PER_EPOCH / steps * sum(step_times(config, mode, steps))


def measure(steps: int, matmul_s: float, compile_too: bool = False, n: int = 2048) -> dict:
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {p: matmul_gflops(dtype, n, matmul_s) for p, dtype in dtypes.items()}
    models = {}
    for name, config in model_settings().items():
        flops, modes = step_flops(config), {}
        for mode in [m for m in MODES if compile_too or not MODES[m].compiled]:
            seconds = statistics.median(step_times(config, mode, steps))
            gflops, epoch = flops / seconds / 1e9, seconds * STEPS_PER_EPOCH
            share = gflops / peaks[MODES[mode].precision]
            modes[mode] = dict(step_ms=1000 * seconds, gflops=gflops, share_of_matmul=share)
            modes[mode]["epoch_of_steps_s"] = epoch
            print(f"{name:8} {mode:14} {1000 * seconds:6.1f} ms, {gflops:5.0f} GFLOP/s")
        tflop = flops * STEPS_PER_EPOCH / 1e12
        models[name] = dict(channels=config["channels"], step_gflop=flops / 1e9, epoch_tflop=tflop)
        models[name]["modes"] = modes
    found = dict(cpu=common.cpu_identity(), batch_size=BATCH_SIZE, steps_per_epoch=STEPS_PER_EPOCH)
    return dict(**found, matmul_gflops=peaks, models=models)


def fastest_mode(roofline: dict[str, Any], setting: str) -> str:
    """The mode whose bare step the roofline measured fastest for `setting`'s network."""
    modes = roofline["models"][setting]["modes"]
    return min(modes, key=lambda mode: modes[mode]["epoch_of_steps_s"])


def markdown_table(roofline: dict[str, Any]) -> str:
    """Each model's arithmetic and, per mode, its GFLOP/s, share of the multiply and epoch time."""
    peaks = roofline["matmul_gflops"]
    rows = [[f"2048x2048 matrix multiply, {p}", "-", "-", f"{peaks[p]:.0f}"] for p in PRECISIONS]
    for name, model in roofline["models"].items():
        for mode, m in model["modes"].items():
            gflops = f"{m['gflops']:.0f} ({m['share_of_matmul']:.0%})"
            rows.append([f"{name}, {mode}", f"{model['epoch_tflop']:.2f}",
                         f"{m['epoch_of_steps_s']:.1f}", gflops])  # fmt: skip
    header = (
        "what | TFLOP per epoch | an epoch of bare steps (s) | GFLOP/s (share of the "
        "multiply in that precision)"
    )
    return common.markdown_table(header, rows, "lrrr")


def profile(data_dir, steps=300):
    """Print torch.profiler's table of `steps` steps of the default network's training loop on the
    training loader, in the mode "auto" chooses here: building batches, the step's operators."""
    defaults = common.notebook_defaults()
    loader, _ = utils.get_data_loaders(defaults["BATCH_SIZE"], data_dir=data_dir, download=False)
    model = MNISTNet(defaults["CHANNELS"], defaults["DROPOUT"]).train()
    mode = speed.mode_of(speed.choose_for(defaults, model, loader))
    step, batches = speed.bare_step(model, mode), chain.from_iterable(repeat(loader))
    for images, labels in islice(batches, speed.WARMUP_STEPS):
        step(images, labels)
    with torch.profiler.profile() as profiler:
        for _ in range(steps):
            with torch.profiler.record_function("building batches"):
                images, labels = next(batches)
            step(images, labels)
    print(f"{steps} training steps of the default network, {mode.name}:")
    print(profiler.key_averages().table(sort_by="cpu_time_total", row_limit=25))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to check that it runs")
    parser.add_argument("--out", default=str(OUT), help="the JSON file to keep it in")
    args = parser.parse_args()
    speed.keep_freed_memory()  # as the notebook's training cell does
    found, quick = common.provenance(), dict(steps=5, matmul_s=0.2, n=256)
    roofline = measure(**quick) if args.quick else measure(60, 3.0, compile_too=True)
    common.save_json({"roofline": roofline, "provenance": found, "quick": args.quick}, args.out)
    print(markdown_table(roofline))


if __name__ == "__main__":
    main()
