"""workbench.plots: the sample and mistake galleries, the curves, the confusion matrix, the runs."""

import pytest
import torch
from matplotlib.figure import Figure

import utils
from workbench import analysis, plots


def titles(fig):
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_denormalize_undoes_the_loaders_normalisation():
    pixels = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(plots.denormalize(utils.test_transform()(pixels)), pixels)
    assert plots.denormalize(torch.tensor([-100.0, 100.0])).tolist() == [0.0, 1.0]


def test_sample_grid_titles_each_image_with_its_label():
    labels = torch.arange(12) % 10
    fig = plots.plot_samples(torch.zeros(12, 1, 28, 28), labels, ncols=4, nrows=2)
    assert titles(fig) == [str(int(label)) for label in labels[:8]]


@pytest.fixture
def found(tiny_root, model):
    _, test_loader = utils.get_data_loaders(data_dir=tiny_root)
    return test_loader.dataset, analysis.analyse(model, test_loader, "cpu")


def test_gallery_shows_the_most_confident_mistakes(found, tmp_path):
    dataset, result = found
    assert result.wrong > 0  # an untrained network on random pixels
    fig = plots.plot_misclassified(dataset, result, n=20, path=tmp_path / "g.png")
    shown = analysis.misclassified(result.predictions, result.confidences, result.targets, 20)
    expected = [
        f"{int(result.targets[i])} -> {int(result.predictions[i])} "
        f"({100 * float(result.confidences[i]):.0f}%)"
        for i in shown
    ]
    assert titles(fig) == expected and len(expected) == min(20, result.wrong)
    assert f"{len(expected)} shown" in fig.get_suptitle()
    first = fig.axes[0].images[0].get_array()
    denormalised = plots.denormalize(dataset[int(shown[0])][0]).squeeze(0).numpy()
    assert (first == denormalised).all()  # the image of that mistake, not another
    assert (tmp_path / "g.png").stat().st_size > 5_000


def test_gallery_of_no_mistakes_is_an_empty_figure(found):
    dataset, result = found
    perfect = analysis.Analysis(result.targets, result.confidences, result.targets, 0)
    fig = plots.plot_misclassified(dataset, perfect)
    assert titles(fig) == [] and "0 shown" in fig.get_suptitle()


def test_confusion_matrix_plot_labels_every_cell(tmp_path):
    matrix = torch.arange(100).view(10, 10)
    fig = plots.plot_confusion_matrix(matrix, path=tmp_path / "cm.png")
    ax = fig.axes[0]
    assert len(ax.texts) == 100 and {t.get_text() for t in ax.texts} == {str(i) for i in range(100)}
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    wrong = int(matrix.sum() - matrix.diag().sum())
    assert ax.get_title() == f"Confusion matrix ({int(matrix.sum())} test images, {wrong} wrong)"
    assert (tmp_path / "cm.png").is_file()


def test_confusion_matrix_counts_stay_readable_on_dark_cells():
    matrix = torch.eye(10, dtype=torch.long) * 900
    matrix[3, 5] = 40  # the darkest error cell
    matrix[3, 8] = 2
    texts = {t.get_position(): t for t in plots.plot_confusion_matrix(matrix).axes[0].texts}
    assert texts[(5, 3)].get_color() == "white"
    assert texts[(8, 3)].get_color() == texts[(3, 3)].get_color() == "black"


def test_curves_plot_has_four_panels_and_partial_histories(tmp_path):
    history = {
        "train_loss": [1.0, 0.5, 0.4],
        "train_acc": [80, 90, 95],
        "test_loss": [0.6, 0.5],
        "test_acc": [85, 92],
    }
    fig = plots.plot_curves(history, tmp_path / "c.png")
    assert [ax.get_title() for ax in fig.axes] == [title for _, title in plots.CURVE_PANELS]
    assert [list(ax.lines[0].get_ydata()) for ax in fig.axes] == list(history.values())
    assert (tmp_path / "c.png").is_file()


def test_a_plot_stopped_while_it_is_saved_leaves_the_file_before_it(tmp_path, monkeypatch):
    """Ctrl-C in the curves cell: the run folder keeps the whole figure it had, no half file."""
    path = tmp_path / "c.png"
    history = dict(train_loss=[0.2], train_acc=[99.0], test_loss=[0.03], test_acc=[98.0])
    plots.plot_curves(history, path)
    before = path.read_bytes()
    real_savefig = Figure.savefig

    def stopped_half_way(fig, f, **kwargs):
        real_savefig(fig, f, **kwargs)
        f.truncate(100)
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", stopped_half_way)
    with pytest.raises(KeyboardInterrupt):
        plots.plot_curves({key: values * 2 for key, values in history.items()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.png"]  # no temporary left


def test_curves_of_one_epoch_have_whole_epoch_ticks_and_stop_at_100_percent():
    history = dict(train_loss=[0.2], train_acc=[99.98], test_loss=[0.03], test_acc=[100.0])
    fig = plots.plot_curves(history)
    for ax, (key, _) in zip(fig.axes, plots.CURVE_PANELS):
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), key
        if "acc" in key:
            assert ax.get_ylim()[1] == 100, key


def test_runs_plot_draws_a_labelled_line_per_run(tmp_path):
    curves = {"seed 0": [97.0, 98.5, 99.1], "seed 1": [96.5, 98.9]}
    fig = plots.plot_runs(curves, tmp_path / "runs.png")
    ax = fig.axes[0]
    assert [list(line.get_ydata()) for line in ax.lines] == list(curves.values())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(curves)
    assert ax.get_title() == "Test accuracy of 2 runs" and (tmp_path / "runs.png").is_file()
    assert plots.plot_runs({}).axes[0].get_legend() is None
