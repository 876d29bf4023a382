"""Whether a Jupyter kernel driven by papermill slows training, and which part of it.

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.kernel_overhead [default|20k|8k]

Builds the notebook's data, model and train() (the setting's parameters, seed 1, in the mode
COMPILE and PRECISION "auto" choose) twice: in a kernel that papermill drives, as `make run` does,
and in a plain Python process. In each, whole epochs take turns, ROUNDS times: bare training steps
on one batch built beforehand (the benchmark's bare-step epoch), the notebook's train(), and
train() after gc.freeze(). If only train() is slower in the kernel, what slows it is the kernel's
traffic (the progress bar's messages) or its larger heap, which Python's garbage collector scans
(the seconds it takes are recorded for each train() epoch, and the objects it tracks); if the bare
steps are slower too, it is the kernel process itself. Prints the medians
and writes every time to outputs/kernel_overhead-<setting>.json. Run it on an idle machine.
"""

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat
import papermill

from benchmarks.roofline import STEPS_PER_EPOCH
from workbench import speed
from workbench.provenance import REPO, provenance

ROUNDS = 3

# Runs in the kernel and in the plain process alike.
MEASURE = """
import gc, json, time
import matplotlib
matplotlib.use("Agg")
import torch.nn.functional as F
from benchmarks import budgets
from benchmarks.common import run_cells
from workbench import plots, speed
plots.plot_samples = lambda images, labels: None
speed.keep_freed_memory()  # as the training cell does
values = budgets.SETTINGS[SETTING][1] if SETTING in budgets.SETTINGS else {}
ns = run_cells(["imports", "parameters", "checks", "data", "model", "optimiser", "train-test"],
               OUTPUT_DIR=OUTPUT_DIR, **values)
model, loader = ns["model"], ns["train_loader"]
chosen = speed.choose_for(ns["bench"].params, model, loader)
stepped = speed.step_model(model, speed.mode_of(chosen))
optimizer, ema_model = ns["make_optimizer"](model)
scheduler = ns["optim"].lr_scheduler.OneCycleLR(
    optimizer, 0.1, epochs=2 * ROUNDS + 1, steps_per_epoch=len(loader), pct_start=0.2
)
images, labels = next(iter(loader))

def bare_epoch():
    start = time.perf_counter()
    for _ in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        F.nll_loss(stepped(images), labels).backward()
        optimizer.step()
    return time.perf_counter() - start

collecting = {"since": None, "seconds": 0.0, "collections": 0}

def count_collection(phase, info):  # gc.callbacks: the time Python's garbage collector takes
    if phase == "start":
        collecting["since"] = time.perf_counter()
    elif collecting["since"] is not None:
        collecting["seconds"] += time.perf_counter() - collecting["since"]
        collecting["collections"] += info["generation"] == 2

def train_epoch(name, frozen=False):
    gc.collect()
    if frozen:
        gc.freeze()  # what exists now is never scanned again
    collecting.update(seconds=0.0, collections=0)
    try:
        start = time.perf_counter()
        ns["train"](stepped, ema_model, ns["device"], loader, optimizer, scheduler, 1)
        seconds = time.perf_counter() - start
    finally:
        gc.unfreeze()
    collector[name]["gc_s"].append(collecting["seconds"])
    collector[name]["full_collections"].append(collecting["collections"])
    return seconds

trainings = {"train()": False, "train(), gc.freeze() first": True}  # name: frozen
collector = {"objects": len(gc.get_objects()),
             **{name: {"gc_s": [], "full_collections": []} for name in trainings}}
gc.callbacks.append(count_collection)

ns["train"](stepped, ema_model, ns["device"], loader, optimizer, scheduler, 0)  # warm-up
times = {"bare steps": [], **{name: [] for name in trainings}}
for _ in range(ROUNDS):
    times["bare steps"].append(bare_epoch())
    for name, frozen in trainings.items():
        times[name].append(train_epoch(name, frozen))
with open(RESULT, "w") as file:
    json.dump(dict(mode=chosen, epoch_s=times, garbage_collector=collector), file)
"""


def in_kernel(tmp: Path, setting: str) -> dict:
    notebook = nbformat.v4.new_notebook()
    names = ("OUTPUT_DIR", "RESULT", "ROUNDS", "STEPS", "SETTING")
    parameters = nbformat.v4.new_code_cell("".join(f"{name} = None\n" for name in names))
    parameters.metadata["tags"] = ["parameters"]  # papermill sets them after this cell
    notebook.cells = [parameters, nbformat.v4.new_code_cell(MEASURE)]
    notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
    path, result = tmp / "measure.ipynb", tmp / "kernel.json"
    nbformat.write(notebook, path)
    papermill.execute_notebook(
        path,
        path,
        parameters=dict(
            OUTPUT_DIR=str(tmp),
            RESULT=str(result),
            ROUNDS=ROUNDS,
            STEPS=STEPS_PER_EPOCH,
            SETTING=setting,
        ),  # fmt: skip
        cwd=REPO,
        kernel_name="python3",
        progress_bar=False,
    )
    return json.loads(result.read_text())


def in_plain_process(tmp: Path, setting: str) -> dict:
    result = tmp / "plain.json"
    values = dict(OUTPUT_DIR=str(tmp), RESULT=str(result), ROUNDS=ROUNDS, STEPS=STEPS_PER_EPOCH,
                  SETTING=setting)  # fmt: skip
    code = "".join(f"{name} = {value!r}\n" for name, value in values.items()) + MEASURE
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def main():
    setting = sys.argv[1] if len(sys.argv) > 1 else "default"
    with tempfile.TemporaryDirectory(prefix="kernel-overhead-") as tmp:
        found = {
            "in a papermill kernel": in_kernel(Path(tmp), setting),
            "in a plain process": in_plain_process(Path(tmp), setting),
        }
    out = REPO / "outputs" / f"kernel_overhead-{setting}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(dict(setting=setting, **found, provenance=provenance()), indent=1))
    for where, measured in found.items():
        mode = speed.mode_of(measured["mode"]).name
        for what, times in measured["epoch_s"].items():
            print(f"{setting}, {mode}, {where:22} {what:26} median {statistics.median(times):5.2f} "
                  "s an epoch (" + " ".join(f"{t:.2f}" for t in times) + ")")  # fmt: skip
        print(f"{where}: garbage collector {measured.get('garbage_collector')}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
