"""The notebook's cells run without a kernel, in this process or a child one.

Resume tests stop training at chosen moments and start it again many times; running the cells'
code directly takes a fraction of a second where a kernel takes seconds.
`python -m tests.notebook_cells '{"EPOCHS": 3, ...}'`, from the repository's root, runs the cells up
to training in a child process, with those parameters in place of the parameters cell's.
"""

import json
import sys

from benchmarks.common import run_cells

TRAINING_CELLS = (
    "imports", "parameters", "checks", "data", "model", "optimiser", "train-test", "training"
)  # fmt: skip


def train_until_ctrl_c(namespace, step):
    """Run the training cell in `namespace`, pressing Ctrl-C (Jupyter's stop button) as the
    `step`-th training batch of the cell's run is drawn.

    train() draws its batches through tqdm, so a compiled model, whose hooks would be traced into
    the compiled code, stops at the same moment as a plain one.
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
    return namespace


if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")
    run_cells(TRAINING_CELLS, **json.loads(sys.argv[1]))
