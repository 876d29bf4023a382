"""What the notebook's cells hand each other, checked by the objects they built."""

import copy
import re

import pytest
import torch
from torch.utils.data import DataLoader

from model import MNISTNet, stage_widths
from notebook_cells import notebook_source, run_cells
from utils import MNISTBatches, train_transform
from workbench import cells, parameters, plots
from workbench.session import Run

BUILDING_CELLS = ("imports", "parameters", "checks", "data", "model")


@pytest.fixture(scope="module")
def built(tiny_root, tmp_path_factory):
    """The namespace after the data and model cells ran on the tiny data (a smoke run)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plots, "plot_samples", lambda images, labels: None)
        return run_cells(
            BUILDING_CELLS,
            DATA_DIR=str(tiny_root),
            OUTPUT_DIR=str(tmp_path_factory.mktemp("outputs")),
            BATCH_SIZE=32,
            SMOKE=True,
        )


def objects(namespace):
    return namespace["model"], namespace["train_loader"], namespace["test_loader"]


def other_value(value):
    """A value unlike `value`, of its kind, that the parameters cell would accept."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, str):
        return value + "-other"
    if isinstance(value, tuple):
        return tuple(other_value(v) for v in value)
    raise TypeError(f"no other value known for {value!r}")


def built_parameters():
    """(cell, parameter) for every parameter cells.built_with reads from the objects.

    Collected before any test runs, from loaders of no images: built_with reads only how the
    objects were built.
    """
    empty = MNISTBatches(torch.zeros(0, 28, 28), torch.zeros(0), train_transform())
    loader = DataLoader(empty, batch_size=1)
    used = cells.built_with(MNISTNet(), loader, loader)
    return [(cell, name) for cell, names in used.items() for name in names]


BUILT = built_parameters()


def test_every_parameter_the_data_and_model_cells_read_is_checked_by_the_objects():
    for cell in ("data", "model"):
        source = notebook_source(cell)
        read = {name for name in parameters.PARAMETER_RULES if re.search(rf"\b{name}\b", source)}
        assert read == {name for c, name in BUILT if c == cell}, cell


def test_parameters_as_the_objects_were_built_pass(built):
    cells.check_built(built["bench"].params, *objects(built))


@pytest.mark.parametrize(("cell", "name"), BUILT, ids=[name for _, name in BUILT])
def test_a_parameter_changed_since_its_cell_ran_names_itself_and_that_cell(built, cell, name):
    params = built["bench"].params
    changed = other_value(params[name])
    is_ok, _ = parameters.PARAMETER_RULES[name]
    assert is_ok(changed) and changed != params[name]
    assert re.search(rf"\b{name}\b", notebook_source(cell))  # the cell named is the one reading it
    with pytest.raises(cells.StaleCellError) as info:
        cells.check_built({**params, name: changed}, *objects(built))
    assert re.match(
        rf"{name} is {re.escape(repr(changed))} but was .+ when the {cell} cell ran\. "
        rf"Run the {cell} cell again",
        str(info.value),
    ), str(info.value)


def test_the_data_folder_may_be_given_as_mnist_or_mnist_raw(built, tiny_root):
    for folder in (tiny_root / "MNIST", tiny_root / "MNIST" / "raw"):
        cells.check_built({**built["bench"].params, "DATA_DIR": str(folder)}, *objects(built))


@pytest.mark.parametrize(
    "given", [((8, 8), 12, 16, 16), [[8, 8], 12, 16, 16]], ids=["tuples", "lists"]
)
@pytest.mark.parametrize(
    "built_from", [((8, 8), 12, 16, 16), [[8, 8], 12, 16, 16]], ids=["tuples", "lists"]
)
def test_papermill_lists_and_the_cells_tuples_are_the_same_channels(built, given, built_from):
    _, train_loader, test_loader = objects(built)
    model = MNISTNet(channels=built_from, dropout=built["bench"].params["DROPOUT"])
    cells.check_built(
        {**built["bench"].params, "CHANNELS": given}, model, train_loader, test_loader
    )
    assert cells.built_with(model, train_loader, test_loader)["model"]["CHANNELS"] == stage_widths(
        given
    )


# What the cells after training read of the run: every public attribute of a Run and the ones
# its __init__ sets.
RUN_ATTRIBUTES = sorted(
    {name for name in vars(Run) if not name.startswith("_")} | {"dir", "params", "training"}
)


@pytest.mark.parametrize("name", RUN_ATTRIBUTES)
def test_not_trained_says_to_run_the_training_cell_for_every_attribute(name):
    with pytest.raises(cells.StaleCellError, match=r"run the training cell \(and let it finish"):
        getattr(cells.NOT_TRAINED, name)


def test_not_trained_has_no_private_names_so_ipython_and_copy_see_a_plain_object():
    for name in ("_repr_html_", "_ipython_display_", "__deepcopy__", "_private"):
        with pytest.raises(AttributeError):
            getattr(cells.NOT_TRAINED, name)
        assert not hasattr(cells.NOT_TRAINED, name)
    assert "run the training cell" in repr(copy.deepcopy(cells.NOT_TRAINED))
