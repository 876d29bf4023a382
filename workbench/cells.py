"""What the notebook's cells hand each other, checked where it is used.

A notebook is run out of order: a user changes a parameter and re-runs the training cell but not
the data cell, or runs the analysis cells before any training. The training cell compares the
parameters with what the loaders and the model really are, and the cells after it read the run
through an object that refuses, saying which cell to run, until there is something to show.
Importing this module does nothing.
"""

from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from model import stage_widths
from utils import BatchRandomAffine, resolve_data_dir
from workbench.parameters import SMOKE_IMAGES


class StaleCellError(RuntimeError):
    """A cell depends on one that has not run, or ran with other parameter values than now."""


def built_with(
    model: nn.Module, train_loader: DataLoader, test_loader: DataLoader
) -> dict[str, dict[str, Any]]:
    """{cell: {parameter: the value its objects were built with}}, read from the objects."""
    dataset = train_loader.dataset
    data = dict(
        BATCH_SIZE=train_loader.batch_size,
        TEST_BATCH_SIZE=test_loader.batch_size,
        NUM_WORKERS=train_loader.num_workers,
        SEED=None if train_loader.generator is None else train_loader.generator.initial_seed(),
        DATA_DIR=dataset.root,
        SMOKE=len(dataset) <= SMOKE_IMAGES,
    )
    affine = next(
        (
            t
            for t in getattr(dataset.transform, "transforms", ())
            if isinstance(t, BatchRandomAffine)
        ),
        BatchRandomAffine(0, 0, 0),
    )
    data.update(ROTATION=affine.degrees, SHIFT=affine.shift, ZOOM=affine.scale)
    return dict(data=data, model=dict(CHANNELS=model.channels, DROPOUT=model.dropout.p))


def check_built(
    params: dict[str, Any],
    model: nn.Module,
    train_loader: DataLoader,
    test_loader: DataLoader,
    seeded: int | None = None,
) -> None:
    """StaleCellError when a parameter differs from the value the loaders or model were built with,
    or SEED from the one the check cell seeded the model's initial weights with (`seeded`).

    The message names the parameter, both values and the cell to run again.
    """
    wanted = dict(
        params,
        CHANNELS=stage_widths(params["CHANNELS"]),
        DATA_DIR=resolve_data_dir(params["DATA_DIR"]),
    )
    built = built_with(model, train_loader, test_loader)
    if seeded is not None:
        built = dict(check=dict(SEED=seeded), **built)
    for cell, used in built.items():
        changed = [name for name, value in used.items() if wanted[name] != value]
        if changed:
            what = ", ".join(f"{n} is {params[n]!r} but was {used[n]!r}" for n in changed)
            raise StaleCellError(
                f"{what} when the {cell} cell ran. Run the {cell} cell again (and the cells "
                "between it and this one), then this cell."
            )


def not_trained() -> StaleCellError:
    return StaleCellError(
        "No epoch has finished since the model cell ran, so there is nothing to plot or "
        "analyse yet: run the training cell (and let it finish an epoch) first."
    )


class NotTrained:
    """Stands for `run` until the training cell starts one: every attribute says what to run."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # IPython's display hooks and copy's probes: plain absence
            raise AttributeError(name)
        raise not_trained()

    def __repr__(self) -> str:
        return "NOT_TRAINED (run the training cell)"


NOT_TRAINED = NotTrained()
