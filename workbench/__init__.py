"""The machinery behind S5.ipynb, out of the lesson's way: checks, run folders, resume, plots.

The notebook calls `Workbench` (its check cell), `Workbench.start_run` (its training cell) and the
`Run` that gives; `NOT_TRAINED` stands for the run until there is one; `ExponentialAverage` is
the moving average of the weights its optimiser cell makes. `runs` lists, loads and
compares saved runs from any notebook; `analysis` and `plots` draw the figures. One topic a module:

- session: Workbench and Run;         cells: what the cells hand each other, checked;
- parameters: the parameters cell's checks;   mnist: the MNIST files, checked before reading;
- folders: a run folder's files;      schema: what its JSON files must hold;
- resume: what a stopped run needs to go on exactly;   speed: COMPILE and PRECISION, measured;
- averaging: ExponentialAverage, the moving average of the weights the notebook tests;
- runs, comparison: saved runs found, loaded and compared;
- checkpoints, files: weights files loaded safely, files written whole;
- analysis, plots: predictions and figures;   provenance: the machine and code behind a figure.

Importing it reads, writes and prints nothing.
"""

import sys
from pathlib import Path

# The project's folder, which holds the model.py and utils.py the workbench imports.
HOME = Path(__file__).resolve().parent.parent


def _imported_from_elsewhere() -> list[str]:
    """The seed files Python took from elsewhere than HOME: another utils.py first on sys.path."""
    found = {name: getattr(sys.modules.get(name), "__file__", None) for name in ("model", "utils")}
    return [f"{name} from {file}" for name, file in found.items()
            if file and Path(file).resolve() != HOME / f"{name}.py"]  # fmt: skip


try:
    from workbench import analysis, plots, runs
    from workbench.averaging import ExponentialAverage
    from workbench.cells import NOT_TRAINED, StaleCellError
    from workbench.parameters import SMOKE_IMAGES
    from workbench.session import Run, Workbench
except (ImportError, AttributeError) as err:
    if not _imported_from_elsewhere():
        raise
    raise ImportError(
        f"workbench needs the model.py and utils.py of {HOME}, but Python imported "
        f"{', '.join(_imported_from_elsewhere())}: a file of that name comes first on sys.path. "
        f"Put the project first (sys.path.insert(0, {str(HOME)!r})) before importing either, or "
        "rename yours."
    ) from err

__all__ = [
    "NOT_TRAINED", "SMOKE_IMAGES", "ExponentialAverage", "Run", "StaleCellError", "Workbench",
    "analysis", "plots", "runs",
]  # fmt: skip
