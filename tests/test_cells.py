"""What the notebook's cells hand each other: checked where it is used."""

import pytest

import cells


def test_a_parameter_changed_since_the_data_cell_ran_names_that_cell(params):
    data = cells.used_by("data", params)
    model = cells.used_by("model", params)
    cells.check_unchanged(params, data=data, model=model)
    with pytest.raises(
        cells.StaleCellError, match="BATCH_SIZE is 32 but was 128 when the data cell"
    ):
        cells.check_unchanged({**params, "BATCH_SIZE": 32}, data=data, model=model)
    with pytest.raises(cells.StaleCellError, match="Run the model cell again"):
        cells.check_unchanged({**params, "DROPOUT": 0.5}, data=data, model=model)


def test_papermill_lists_and_the_cells_tuples_are_the_same_channels(params):
    model = cells.used_by("model", {**params, "CHANNELS": [[8, 8], 12, 16, 16]})
    cells.check_unchanged({**params, "CHANNELS": ((8, 8), 12, 16, 16)}, model=model)


@pytest.mark.parametrize(
    "namespace",
    [{}, {"run_dir": None, "history": None}, {"run_dir": "r", "history": {"test_acc": []}}],
    ids=["nothing-ran", "fresh-model", "stopped-in-epoch-1"],
)
def test_the_cells_below_training_refuse_until_an_epoch_finished(namespace):
    with pytest.raises(cells.StaleCellError, match="run the training cell"):
        cells.require_trained(namespace)


def test_the_analysis_cells_refuse_predictions_of_an_earlier_run():
    namespace = {"run_dir": "second", "history": {"test_acc": [99.0]}, "analysed_run": "first"}
    cells.require_trained(namespace)
    with pytest.raises(cells.StaleCellError, match="draws the confusion matrix first"):
        cells.require_trained(namespace, analysed=True)
