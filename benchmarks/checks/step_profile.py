"""The operators a bare training step spends its time in, for a model setting of the roofline.

    python -m benchmarks.checks.step_profile default     # or "< 20k", "< 8k"

30 steps of BATCH_SIZE random images after 10 of warm-up, under torch.profiler; prints the 15
operators with the most time of their own. Run it on an idle machine.
"""

import sys

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.roofline import BATCH_SIZE, make_step, model_settings
from model import MNISTNet


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "default"
    torch.manual_seed(0)
    step = make_step(MNISTNet(**model_settings()[name]).train(), "fp32")
    images, labels = torch.randn(BATCH_SIZE, 1, 28, 28), torch.randint(0, 10, (BATCH_SIZE,))
    for _ in range(10):
        step(images, labels)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(30):
            step(images, labels)
    print(f"{name}: 30 training steps of {BATCH_SIZE} images, {torch.get_num_threads()} threads")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
