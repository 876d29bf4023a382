"""What the progress bar costs a training epoch inside a Jupyter kernel driven by papermill.

    MNIST_DATA_DIR=../shared/data python -m benchmarks.checks.progress_bar

Starts a kernel as `make run` does, builds the notebook's data, model and train() there (defaults,
seed 1, in the mode COMPILE and PRECISION "auto" choose), and times whole epochs of train() with
its tqdm bar as the notebook has it (tqdm's default: a redraw every 0.1 s at most), with a redraw a
second at most, and with the bar disabled, in turn, three rounds. Every redraw is a message from
the kernel to papermill. Prints the times and writes them to outputs/progress_bar.json. Run it on
an idle machine.
"""

import json
import tempfile
from pathlib import Path

import nbformat
import papermill

from workbench.provenance import REPO, provenance

OUT = REPO / "outputs" / "progress_bar.json"
ROUNDS = 3

# Runs in the kernel: the notebook's cells up to train(), then timed epochs of it.
MEASURE = """
import functools, json, time
import matplotlib
matplotlib.use("Agg")
from benchmarks.common import run_cells
from workbench import plots, speed
plots.plot_samples = lambda images, labels: None
ns = run_cells(["imports", "parameters", "checks", "data", "model", "optimiser", "train-test"],
               OUTPUT_DIR=OUTPUT_DIR)
model, loader, tqdm = ns["model"], ns["train_loader"], ns["tqdm"]
chosen = speed.choose_for(ns["bench"].params, model, loader)
stepped = speed.step_model(model, speed.mode_of(chosen))
optimizer, ema_model = ns["make_optimizer"](model)
scheduler = ns["optim"].lr_scheduler.OneCycleLR(
    optimizer, 0.1, epochs=4 * ROUNDS, steps_per_epoch=len(loader), pct_start=0.2
)
bars = {
    "the notebook's (a redraw every 0.1 s at most)": tqdm,
    "a redraw a second at most": functools.partial(tqdm, mininterval=1),
    "disabled": functools.partial(tqdm, disable=True),
}
times = {name: [] for name in bars}
for _ in range(ROUNDS):
    for name, bar in bars.items():
        ns["tqdm"] = bar
        start = time.perf_counter()
        ns["train"](stepped, ema_model, ns["device"], loader, optimizer, scheduler, 1)
        times[name].append(time.perf_counter() - start)
with open(RESULT, "w") as file:
    json.dump(dict(mode=chosen, epoch_s=times), file)
"""


def main():
    with tempfile.TemporaryDirectory(prefix="progress-bar-") as tmp:
        notebook = nbformat.v4.new_notebook()
        parameters = nbformat.v4.new_code_cell("OUTPUT_DIR = None\nRESULT = None\nROUNDS = None")
        parameters.metadata["tags"] = ["parameters"]  # papermill sets them after this cell
        notebook.cells = [parameters, nbformat.v4.new_code_cell(MEASURE)]
        notebook.metadata["kernelspec"] = {"name": "python3", "language": "python"}
        path, result = Path(tmp) / "measure.ipynb", Path(tmp) / "result.json"
        nbformat.write(notebook, path)
        papermill.execute_notebook(
            path,
            path,
            parameters=dict(OUTPUT_DIR=tmp, RESULT=str(result), ROUNDS=ROUNDS),
            cwd=REPO,
            kernel_name="python3",
            progress_bar=False,
        )
        found = json.loads(result.read_text())
    found["provenance"] = provenance()
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(found, indent=1) + "\n")
    for name, times in found["epoch_s"].items():
        print(f"{name:46} " + "  ".join(f"{t:5.2f}" for t in times) + " s an epoch")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
