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

from workbench import analysis, plots, runs
from workbench.averaging import ExponentialAverage
from workbench.cells import NOT_TRAINED, StaleCellError
from workbench.parameters import SMOKE_IMAGES
from workbench.session import Run, Workbench

__all__ = [
    "NOT_TRAINED", "SMOKE_IMAGES", "ExponentialAverage", "Run", "StaleCellError", "Workbench",
    "analysis", "plots", "runs",
]  # fmt: skip
