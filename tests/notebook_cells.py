"""The notebook's cells run without a kernel, in this process or a child one.

Resume tests stop training at chosen moments and start it again many times; running the cells'
code directly takes a fraction of a second where a kernel takes seconds. The cells hand each other
what a kernel would: after the training cell, `namespace["run"]` is the workbench.Run it started
(`.dir`, `.history`, `.epochs_done`), before it `workbench.NOT_TRAINED`.
`python -m tests.notebook_cells '{"EPOCHS": 3, ...}'`, from the repository's root, runs the cells up
to training in a child process, with those parameters in place of the parameters cell's. The
check cell refuses MNIST files of other sizes than MNIST's unless SMOKE is True: runs on the tiny
test data pass "SMOKE": true.
"""

import json
import sys
from pathlib import Path
from typing import Any

NOTEBOOK = Path(__file__).resolve().parent.parent / "S5.ipynb"


def notebook_source(cell_id: str) -> str:
    """The source of S5.ipynb's cell with this id, as committed."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    return "".join(next(c for c in cells if c.get("id") == cell_id)["source"])


def notebook_defaults() -> dict[str, Any]:
    """The values S5.ipynb's parameters cell defines, read from the cell (it imports nothing)."""
    defined = {}
    exec(notebook_source("parameters"), {}, defined)
    return defined


def run_cells(cell_ids, namespace=None, **parameters) -> dict[str, Any]:
    """Run S5.ipynb's cells `cell_ids` in `namespace`, without a kernel; return the namespace.

    `namespace` is a new one by default; `parameters` replace the parameters cell's values.
    """
    namespace = {} if namespace is None else namespace
    for cell_id in cell_ids:
        exec(compile(notebook_source(cell_id), f"S5.ipynb:{cell_id}", "exec"), namespace)
        if cell_id == "parameters":
            namespace.update(parameters)
    return namespace


TRAINING_CELLS = (
    "imports", "parameters", "checks", "data", "model", "optimiser", "train-test", "training"
)  # fmt: skip


def train_until_ctrl_c(namespace, step):
    """Run the training cell in `namespace`, pressing Ctrl-C (Jupyter's stop button) as the
    `step`-th training batch of the cell's run is drawn.

    The cell ends as it does in Jupyter: it prints how to go on and `namespace["run"]` keeps the
    epochs that finished. train() draws its batches through tqdm, so a compiled model, whose hooks
    would be traced into the compiled code, stops at the same moment as a plain one. Raises
    AssertionError when the cell drew fewer than `step` batches, so never pressed Ctrl-C.
    """
    from tqdm import tqdm

    drawn = []

    class StoppingBar(tqdm):
        def __iter__(self):
            for batch in super().__iter__():
                drawn.append(batch)
                if len(drawn) == step:
                    raise KeyboardInterrupt
                yield batch

    namespace["tqdm"] = StoppingBar
    try:
        run_cells(["training"], namespace)
    finally:
        namespace["tqdm"] = tqdm
    if len(drawn) < step:
        raise AssertionError(
            f"the training cell drew {len(drawn)} batches, so Ctrl-C at batch {step} never came"
        )
    return namespace


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    run_cells(TRAINING_CELLS, **json.loads(sys.argv[1]))
