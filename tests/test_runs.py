"""workbench.runs: the runs of an output folder listed, the latest and best found, loaded and
compared, with a damaged run folder named and skipped, never fatal."""

import json
import re
import shutil

import matplotlib.pyplot as plt
import pytest
import torch

from fakes import fake_run
from model import MNISTNet, count_parameters
from test_folders import DAMAGE, damage
from workbench import folders, runs, schema


@pytest.fixture(autouse=True)
def close_figures():
    """compare_runs opens a figure each time: close them, as the notebook's session would."""
    yield
    plt.close("all")


def outputs(params):
    return params["OUTPUT_DIR"]


def test_latest_and_best_run_and_their_models(params):
    torch.manual_seed(0)
    small = MNISTNet(channels=(8, 12, 16, 20))
    best = fake_run(params, small, [98.0, 99.5], CHANNELS=(8, 12, 16, 20), SEED=2)
    latest = fake_run(params, MNISTNet(), [99.0, 99.1])
    fake_run(params, MNISTNet(), [])  # started, nothing finished: never picked
    assert runs.latest_run(outputs(params)) == latest
    assert runs.best_run(outputs(params)) == best
    loaded = runs.load_model(best)
    assert not loaded.training
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), small.eval()(x))


def test_a_deeper_run_loads_back_from_the_lists_json_holds(params):
    channels = ((8, 8), (12, 12), 16, 12)
    model = MNISTNet(channels=channels, dropout=0.25).eval()
    run_dir = fake_run(params, model, [98.0], CHANNELS=channels, DROPOUT=0.25)
    loaded = runs.load_model(run_dir)
    assert loaded.channels == model.channels and loaded.dropout.p == 0.25
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))


def test_runs_are_listed_oldest_first_by_their_start_not_their_folder_name(params, model):
    older = fake_run(params, model, [98.0])
    newer = fake_run(params, model, [97.0])
    renamed = older.rename(older.with_name("zz-renamed"))  # now sorts after the newer one
    assert [r["path"] for r in runs.list_runs(outputs(params))] == [renamed, newer]
    assert runs.latest_run(outputs(params)) == newer


def test_a_copied_run_folder_is_listed_by_its_own_name(params, model):
    run_dir = fake_run(params, model, [98.0])
    copy = run_dir.with_name(run_dir.name + "-copy")
    shutil.copytree(run_dir, copy)
    assert [r["name"] for r in runs.list_runs(outputs(params))] == [run_dir.name, copy.name]


@pytest.mark.parametrize("pick", [runs.latest_run, runs.best_run], ids=["latest", "best"])
def test_with_no_finished_epoch_there_is_no_latest_or_best_run(params, model, pick):
    fake_run(params, model, [])
    what = pick.__name__.removesuffix("_run")
    with pytest.raises(FileNotFoundError, match=f"No run with a finished epoch .* no {what} run"):
        pick(outputs(params))


def test_load_model_on_a_run_with_no_finished_epoch_says_so_and_how_to_go_on(params, model):
    run_dir = fake_run(params, model, [])
    with pytest.raises(schema.RunFolderError, match="has no finished epoch yet") as info:
        runs.load_model(run_dir)
    assert f"RESUME = {str(run_dir)!r}" in str(info.value)


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_weights_that_do_not_belong_to_the_metrics_are_refused_and_skipped(params, model, how):
    older = fake_run(params, model, [99.0])
    newer = fake_run(params, model, [99.5])
    # A stop between two saves, or a hand: weights that are not the ones the metrics describe.
    if how == "replaced":
        torch.save(MNISTNet().state_dict(), newer / folders.WEIGHTS_FILE)
    else:
        (newer / folders.WEIGHTS_FILE).unlink()
    with pytest.raises(schema.RunFolderError, match="is not the weights file .* was saved with"):
        runs.load_model(newer)
    skipped = f"Skipped: {re.escape(str(newer / folders.WEIGHTS_FILE))} is not the weights file"
    with pytest.warns(UserWarning, match=skipped):
        assert runs.latest_run(outputs(params)) == older
    with pytest.warns(UserWarning, match=skipped):
        assert runs.best_run(outputs(params)) == older
    # The comparison marks the run the loaders refuse, with the same reason.
    with pytest.raises(schema.RunFolderError) as refused:
        runs.load_model(newer)
    table, _ = runs.compare_runs(outputs(params))
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[2:4]] == [older.name, newer.name]
    assert not lines[2].endswith("refused") and lines[3].endswith("weights refused")
    assert lines[4:] == [f"{newer.name}  weights refused: {refused.value}"]
    assert runs.refusals(runs.list_runs(outputs(params))) == {newer: str(refused.value)}


def test_best_run_never_picks_a_run_whose_accuracy_is_nan(params, model):
    # First and written by hand: max() keeps a NaN it meets first, as nothing compares above it.
    nan_run = fake_run(params, model, [99.9])
    good = fake_run(params, model, [98.0])
    metrics = nan_run / folders.METRICS_FILE
    text = metrics.read_text()
    assert text.count("99.9") == 1
    metrics.write_text(text.replace("99.9", "NaN"))
    damaged = rf"Skipped: {re.escape(str(metrics))} gives history\.test_acc = \[nan\].* damaged"
    with pytest.warns(UserWarning, match=damaged):
        assert runs.best_run(outputs(params)) == good
    table, _ = runs.compare_runs(outputs(params))
    assert f"{nan_run.name}  damaged: {metrics} " in table


@pytest.mark.parametrize(("name", "change", "named"), DAMAGE)
def test_one_damaged_run_folder_is_named_and_skipped_and_the_others_still_work(
    params, model, name, change, named
):
    good = fake_run(params, model, [99.0])
    damaged = fake_run(params, model, [99.5])  # the latest and the best, were it whole
    damage(damaged / name, change)
    skipped = f"Skipped: {re.escape(str(damaged / name))} "
    with pytest.warns(UserWarning, match=skipped):
        assert [r["path"] for r in runs.list_runs(outputs(params))] == [good]
    with pytest.warns(UserWarning, match=skipped):
        assert runs.latest_run(outputs(params)) == good
    with pytest.warns(UserWarning, match=skipped):
        assert runs.best_run(outputs(params)) == good
    found, why = runs.scan_runs(outputs(params))
    assert [r["path"] for r in found] == [good] and list(why) == [damaged]
    assert why[damaged].startswith(f"{damaged / name} ") and named in why[damaged]
    table, fig = runs.compare_runs(outputs(params))
    *rows, last = table.splitlines()[2:]
    assert [row.split()[0] for row in rows] == [good.name, damaged.name]
    assert rows[0].split()[-1] == "s" and rows[1].split()[-1] == "damaged"  # the note column
    assert last == f"{damaged.name}  damaged: {why[damaged]}"
    assert len(fig.axes[0].lines) == 1
    with pytest.raises(schema.RunFolderError, match=re.escape(why[damaged])):
        runs.load_model(damaged)


def test_a_start_date_without_a_time_zone_does_not_stop_the_listing(params, model):
    good = fake_run(params, model, [99.0])
    edited = fake_run(params, model, [99.5])
    damage(edited / folders.PARAMS_FILE, lambda p: p.update(started="2024-01-01T10:00:00"))
    with pytest.warns(UserWarning, match="not a date with its time zone"):
        listed = [r["path"] for r in runs.list_runs(outputs(params))]
    assert listed == [good]
    with pytest.warns(UserWarning, match=edited.name):
        assert runs.latest_run(outputs(params)) == good
    with pytest.warns(UserWarning, match=edited.name):
        assert runs.best_run(outputs(params)) == good
    table = runs.compare_runs(outputs(params))[0]
    assert good.name in table and f"{edited.name}  damaged:" in table


def test_compare_runs_tables_what_differs_and_plots_every_curve(params, tmp_path):
    fake_run(params, MNISTNet(), [98.0, 99.5, 99.4], SEED=1)
    fake_run(params, MNISTNet(), [98.5, 99.2], SEED=2, EPOCHS=3)
    fake_run(params, MNISTNet(), [], SEED=3)
    png = tmp_path / "runs.png"
    table, fig = runs.compare_runs(outputs(params), png)
    header, rule, *rows = table.splitlines()
    assert header.split() == [
        "run", "EPOCHS", "SEED", "parameters", "epochs", "final", "%", "best", "%", "time"
    ]  # fmt: skip
    assert set(rule) == {"-", " "}
    epochs, count = params["EPOCHS"], f"{count_parameters(MNISTNet()):,}"
    # fake_run records 1 s for every epoch.
    assert [row.split()[1:] for row in rows] == [
        [str(epochs), "1", count, f"3/{epochs}", "99.40", "99.50", "3", "s"],
        ["3", "2", count, "2/3", "99.20", "99.20", "2", "s"],
        [str(epochs), "3", count, "0", "(none", "finished)", "-", "-", "-"],
    ]
    assert [len(line.get_ydata()) for line in fig.axes[0].lines] == [3, 2]
    assert png.stat().st_size > 0


def test_compare_runs_writes_deeper_channels_as_the_folder_names_do(params):
    deeper = ((8, 8), (12, 12), 16, 12)
    default = fake_run(params, MNISTNet(), [99.0])
    other = fake_run(params, MNISTNet(deeper), [98.0], CHANNELS=deeper)
    table, fig = runs.compare_runs(outputs(params))
    # A folder is named <time>_c<CHANNELS>_ep<EPOCHS>_seed<SEED>.
    in_names = [folder.name.split("_")[1].removeprefix("c") for folder in (default, other)]
    assert in_names[1] == "8x8-12x12-16-12"
    assert [row.split()[1] for row in table.splitlines()[2:]] == in_names
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert [label.split("CHANNELS=")[1] for label in labels] == in_names


def test_compare_runs_on_an_empty_folder_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the training cell first"):
        runs.compare_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="There is no folder .* run the training cell"):
        runs.compare_runs(tmp_path / "outputs")


def test_compare_runs_given_a_run_folder_compares_the_runs_beside_it(params, model):
    """The notebook's last cell passes RESUME, when set: its run may live outside OUTPUT_DIR."""
    first, second = fake_run(params, model, [99.0]), fake_run(params, model, [98.0], SEED=2)
    from_run, _ = runs.compare_runs(second)
    assert from_run == runs.compare_runs(outputs(params))[0]
    assert first.name in from_run and second.name in from_run


def test_compare_runs_with_only_damaged_folders_still_shows_them(params, model):
    run_dir = fake_run(params, model, [99.0])
    (run_dir / folders.PARAMS_FILE).write_text(json.dumps([]))
    table, fig = runs.compare_runs(outputs(params))
    assert table.splitlines()[-1].startswith(f"{run_dir.name}  damaged: ")
    assert len(fig.axes[0].lines) == 0


def test_files_mixed_up_between_two_runs_mark_the_run_damaged(params, model):
    first, second = fake_run(params, model, [99.0]), fake_run(params, model, [98.0])
    shutil.copy(second / folders.PARAMS_FILE, first / folders.PARAMS_FILE)
    with pytest.raises(schema.RunFolderError, match="belongs to another run"):
        runs.load_model(first)
    with pytest.warns(UserWarning, match="files were mixed up between run folders"):
        assert [r["path"] for r in runs.list_runs(outputs(params))] == [second]


def test_a_missing_output_folder_is_said_to_be_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="There is no folder"):
        runs.list_runs(tmp_path / "typo")


def test_an_output_folder_given_for_a_run_is_named_as_no_run_folder(params, model, monkeypatch):
    run_dir = fake_run(params, model, [99.0])
    with pytest.raises(schema.RunFolderError, match="is not a run folder: it has no params.json"):
        runs.load_model(run_dir.parent)
    monkeypatch.setenv("HOME", str(run_dir.parent.parent))
    assert runs.load_model(f"~/{run_dir.parent.name}/{run_dir.name}") is not None


def test_given_a_run_folder_the_loaders_take_the_runs_beside_it(params, model):
    """As compare_runs does: best_run(run_dir) said "No run with a finished epoch in" a run that
    had two, and list_runs(run_dir) gave [] without a word."""
    best = fake_run(params, model, [98.0, 99.0])
    latest = fake_run(params, model, [97.0])
    for given in (best, latest):
        assert runs.best_run(given) == best and runs.latest_run(given) == latest
        assert [r["path"] for r in runs.list_runs(given)] == [best, latest]


def test_a_stray_params_json_does_not_make_the_output_folder_a_run(params, model, tmp_path):
    """A params.json copied into the output folder itself: compare_runs compared the folders
    beside the output folder instead of the runs in it."""
    run_dir = fake_run(params, model, [98.0])
    shutil.copy(run_dir / folders.PARAMS_FILE, tmp_path / "outputs" / folders.PARAMS_FILE)
    table, _ = runs.compare_runs(outputs(params))
    assert [row.split()[0] for row in table.splitlines()[2:]] == [run_dir.name]
    assert runs.latest_run(outputs(params)) == run_dir


@pytest.mark.parametrize("name", [folders.PARAMS_FILE, folders.WEIGHTS_FILE])
def test_load_model_given_a_file_of_a_run_names_its_folder(params, model, name):
    run_dir = fake_run(params, model, [98.0])
    with pytest.raises(schema.RunFolderError) as info:
        runs.load_model(run_dir / name)
    assert str(info.value) == (
        f"{run_dir / name} is a file, not a run folder: give the folder that holds it, {run_dir}."
    )
