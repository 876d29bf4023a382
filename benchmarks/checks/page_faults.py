"""What glibc's returning freed memory to the system costs a training epoch: page faults and time.

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.page_faults

For fp32 and bf16 (not compiled), in a fresh process each, once as glibc's malloc behaves by
default and once after workbench.speed.keep_freed_memory() (as the training cell calls it): the
notebook's data, model and train() (defaults, seed 1), then whole epochs of bare steps on one batch
and of train(), taking turns, ROUNDS times, each with the page faults it caused (the process's
minor faults: memory mapped afresh). Prints them and writes outputs/page_faults.json. Run it on an
idle machine.
"""

import json
import subprocess
import sys

from workbench.provenance import REPO, provenance

ROUNDS = 2

# Runs in a fresh process for each precision and allocator setting.
MEASURE = """
import contextlib, io, json, resource, sys, time
import matplotlib
matplotlib.use("Agg")
import torch.nn.functional as F
from benchmarks.common import run_cells
from workbench import plots, speed
if KEEP:
    assert speed.keep_freed_memory()
plots.plot_samples = lambda images, labels: None
ns = run_cells(["imports", "parameters", "checks", "data", "model", "optimiser", "train-test"],
               OUTPUT_DIR=OUTPUT_DIR)
model, loader = ns["model"], ns["train_loader"]
stepped = speed.step_model(model, speed.Mode(PRECISION))
optimizer, ema_model = ns["make_optimizer"](model)
scheduler = ns["optim"].lr_scheduler.OneCycleLR(optimizer, 0.01, total_steps=9 * len(loader))
images, labels = next(iter(loader))

def bare():
    for _ in range(len(loader)):
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(stepped(images), labels).backward()
        optimizer.step()

def train():
    with contextlib.redirect_stdout(io.StringIO()):  # the progress bar
        ns["train"](stepped, ema_model, ns["device"], loader, optimizer, scheduler, 1)

def timed(run):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    return dict(s=seconds, page_faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)

train()  # warm-up
found = {"bare steps": [], "train()": []}
for _ in range(ROUNDS):
    found["bare steps"].append(timed(bare))
    found["train()"].append(timed(train))
print(json.dumps(found))
"""


def measure(precision: str, keep: bool) -> dict:
    values = dict(PRECISION=precision, KEEP=keep, ROUNDS=ROUNDS,
                  OUTPUT_DIR=str(REPO / "outputs" / "page-faults"))  # fmt: skip
    code = "".join(f"{name} = {value!r}\n" for name, value in values.items()) + MEASURE
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    found = {}
    for precision in ("fp32", "bf16"):
        for keep in (False, True):
            name = f"{precision}, " + ("memory kept" if keep else "glibc's default")
            found[name] = measure(precision, keep)
            for what, epochs in found[name].items():
                print(f"{name:26} {what:11} " + "  ".join(
                    f"{e['s']:5.2f} s, {e['page_faults']:7,} faults" for e in epochs))  # fmt: skip
    out = REPO / "outputs" / "page_faults.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(epochs=found, provenance=provenance()), indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
