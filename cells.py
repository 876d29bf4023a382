"""What the notebook's cells hand each other, checked where it is used.

A notebook is run out of order: a user re-runs the parameters cell and the training cell but not
the data cell, or runs the analysis cells before any training. Each cell that depends on another
checks here that what it is handed is current, and says which cell to run when it is not.
Importing this module does nothing.
"""

from collections.abc import Mapping
from typing import Any

from parameters import normalized

# The parameters each cell builds its objects with: the training cell refuses to run with values
# that differ from those its data and model were built with.
USED_BY = {
    "data": ("BATCH_SIZE", "TEST_BATCH_SIZE", "ROTATION", "SHIFT", "ZOOM", "NUM_WORKERS", "SEED",
             "DATA_DIR", "SMOKE"),
    "model": ("CHANNELS", "DROPOUT"),
}  # fmt: skip


class StaleCellError(RuntimeError):
    """A cell depends on one that has not run, or ran with other parameter values than now."""


def used_by(cell: str, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The values of the parameters `cell` ("data" or "model") builds with, as it runs."""
    return normalized({name: namespace[name] for name in USED_BY[cell]})


def check_unchanged(params: Mapping[str, Any], **built: Mapping[str, Any]) -> None:
    """StaleCellError when a parameter differs from the value a cell built its objects with.

    `built` maps a cell's name to what used_by() gave as that cell ran, e.g. data=data_params.
    """
    for cell, used in built.items():
        changed = [name for name, value in used.items() if params[name] != value]
        if changed:
            what = ", ".join(f"{n} is {params[n]!r} but was {used[n]!r}" for n in changed)
            raise StaleCellError(
                f"{what} when the {cell} cell ran. Run the {cell} cell again (and the cells "
                "between it and this one), then this cell."
            )


def require_trained(namespace: Mapping[str, Any], analysed: bool = False) -> None:
    """StaleCellError unless the training cell finished an epoch since the model cell ran.

    With `analysed`, also unless the cell that predicts every test image ran for that run.
    """
    run_dir, history = namespace.get("run_dir"), namespace.get("history")
    if run_dir is None or not history or not history.get("test_acc"):
        raise StaleCellError(
            "No epoch has finished since the model cell ran, so there is nothing to plot or "
            "analyse yet: run the training cell (and let it finish an epoch) first."
        )
    if analysed and namespace.get("analysed_run") != run_dir:
        raise StaleCellError(
            f"The test images have not been predicted with the model of {run_dir} yet: run the "
            "cell that draws the confusion matrix first."
        )
